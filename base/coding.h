// Byte coding helpers for the hand-written row codecs: fixed-width big-endian
// integers (which sort as bytes in numeric order) and LEB128 varints.
//
// Decoders consume from the front of a std::string_view and return false on
// truncated or malformed input; they never read past the view.
#ifndef TIDEMAP_BASE_CODING_H_
#define TIDEMAP_BASE_CODING_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tidemap {

void PutFixed64BE(std::string* dst, uint64_t v);
void PutFixed32BE(std::string* dst, uint32_t v);
void PutVarint64(std::string* dst, uint64_t v);
// A varint length followed by the bytes.
void PutLengthPrefixed(std::string* dst, std::string_view bytes);

uint64_t DecodeFixed64BE(const char* p);
uint32_t DecodeFixed32BE(const char* p);

bool GetFixed64BE(std::string_view* in, uint64_t* v);
bool GetFixed32BE(std::string_view* in, uint32_t* v);
bool GetVarint64(std::string_view* in, uint64_t* v);
bool GetLengthPrefixed(std::string_view* in, std::string_view* bytes);
bool GetByte(std::string_view* in, uint8_t* v);

// Lowercase hex of arbitrary bytes, and its inverse (false on odd length or non-hex).
std::string ToHex(std::string_view bytes);
bool FromHex(std::string_view hex, std::string* out);

// True when `bytes` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view bytes);

// A short printable form of a byte string for messages: printable ASCII kept,
// everything else as \xNN, cut to `max_chars` with "…".
std::string Printable(std::string_view bytes, size_t max_chars = 64);

}  // namespace tidemap

#endif  // TIDEMAP_BASE_CODING_H_
