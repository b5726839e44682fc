// Files that hold secrets (a node's identity key, an HTTP bearer token, a key
// for values at rest) are refused when group or others may read or write
// them: a secret others could read has already leaked, and one others could
// write may have been replaced.
#ifndef TIDEMAP_BASE_PRIVATE_FILE_H_
#define TIDEMAP_BASE_PRIVATE_FILE_H_

#include <string>
#include <string_view>

#include <tidemap/base/status.h>

namespace tidemap {

// Checks the open file `fd` (named `what`, e.g. "token file /etc/t", in
// messages) before a byte of it is read. Refused when its mode grants group
// or others any access ("... has mode 0644, must be 0600 ...; run `chmod 600
// PATH` if the secret has not leaked"); Corruption when it is not a regular
// file; IOError when fstat fails.
Status CheckPrivateFile(int fd, const std::string& what, const std::string& path);

// Reads the whole of the private file `path` (named `what` in messages), after
// CheckPrivateFile on the open file, into the returned string alone (no other
// copy is left in memory: the caller wipes it when the bytes are secret).
// NotFound when it does not exist; Corruption when it holds more than
// `bytes_max` bytes; IOError otherwise.
Result<std::string> ReadPrivateFile(const std::string& path, const std::string& what,
                                    size_t bytes_max);

// Writes `contents` to `path` with mode 0600, durably (the file and its
// directory synced). With `replace` false the file must not exist yet
// (Refused when it does: a secret is never overwritten) and appears whole
// (written under `path`.tmp-PID-N, then linked to `path`); with `replace`
// true it is written to `path`.tmp and renamed over `path`, so a crash
// leaves either the old file or the new one whole.
Status WritePrivateFile(const std::string& path, const std::string& what, std::string_view contents,
                        bool replace);

// fsyncs the directory `dir`, which makes the entries created in it durable.
Status SyncDir(const std::string& dir);

}  // namespace tidemap

#endif  // TIDEMAP_BASE_PRIVATE_FILE_H_
