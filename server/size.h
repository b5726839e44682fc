// Sizes as users type them (`serve --storage-quota 512MB`): a whole number
// and a unit, B, kB/KB, MB, GB or TB (powers of 1000) or KiB, MiB, GiB or TiB
// (powers of 1024), e.g. 512MB, 2GiB, 4096B, with nothing before, between or
// after. A bare number is bytes.
#ifndef TIDEMAP_SERVER_SIZE_H_
#define TIDEMAP_SERVER_SIZE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include <tidemap/base/status.h>

namespace tidemap {

// The size `text` in bytes. InvalidArgument, naming `what` and the text, for
// anything else: an unknown unit, a sign, spaces, a fraction, or over
// 2^64 - 1 bytes.
Result<uint64_t> ParseSizeBytes(std::string_view what, std::string_view text);

// `bytes` for people: "512.0 MiB", "2.0 GiB", "900 B" (binary units).
std::string FormatSizeBytes(uint64_t bytes);

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_SIZE_H_
