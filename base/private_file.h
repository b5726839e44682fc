// Files that hold secrets (a node's identity key, an HTTP bearer token, a key
// for values at rest) are refused when group or others may read or write
// them: a secret others could read has already leaked, and one others could
// write may have been replaced.
#ifndef TIDEMAP_BASE_PRIVATE_FILE_H_
#define TIDEMAP_BASE_PRIVATE_FILE_H_

#include <string>

#include <tidemap/base/status.h>

namespace tidemap {

// Checks the open file `fd` (named `what`, e.g. "token file /etc/t", in
// messages) before a byte of it is read. Refused when its mode grants group
// or others any access ("... has mode 0644, must be 0600 ...; run `chmod 600
// PATH` if the secret has not leaked"); Corruption when it is not a regular
// file; IOError when fstat fails.
Status CheckPrivateFile(int fd, const std::string& what, const std::string& path);

}  // namespace tidemap

#endif  // TIDEMAP_BASE_PRIVATE_FILE_H_
