// The workload the replica and network benchmarks share: 16-byte keys spread
// over the key space, 100-byte values that do not compress to nothing, one
// map, and temporary directories that clean up after themselves.
#ifndef TIDEMAP_BENCH_WORKLOAD_H_
#define TIDEMAP_BENCH_WORKLOAD_H_

#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include <tidemap/base/random.h>

namespace tidemap::bench {

inline constexpr size_t kKeyBytes = 16;
inline constexpr size_t kValueBytes = 100;
inline constexpr int64_t kPayloadBytes = kKeyBytes + kValueBytes;
inline constexpr std::string_view kMap = "bench";

// A count from environment variable `name`: `fallback` when it is unset or
// empty; else its value when that is a whole number in [min, max], and
// otherwise `fallback` after a warning on stderr that the value is ignored (a
// benchmark run should not silently measure something other than what was
// asked for).
inline uint64_t CountFromEnv(const char* name, uint64_t fallback, uint64_t min, uint64_t max) {
  const char* env = getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long n = strtoull(env, &end, 10);
  if (*end == '\0' && *env != '-' && n >= min && n <= max) return n;
  std::fprintf(stderr, "warning: %s=%s is not a whole number in [%llu, %llu]; ignored\n", name, env,
               static_cast<unsigned long long>(min), static_cast<unsigned long long>(max));
  return fallback;
}

// Sets *write_buffer_bytes (ReplicaOptions::write_buffer_bytes) from
// TIDEMAP_BENCH_WRITE_BUFFER_MB when it is set to 1..1024; else leaves the
// default. For measuring the memtable trade-off with the same binary. The
// variable is read (and a bad value reported) once per process.
inline void WriteBufferFromEnv(size_t* write_buffer_bytes) {
  static const uint64_t mb = CountFromEnv("TIDEMAP_BENCH_WRITE_BUFFER_MB", 0, 1, 1024);
  if (mb != 0) *write_buffer_bytes = static_cast<size_t>(mb) << 20;
}

// splitmix64's finalizer: a bijection on 64-bit values, so distinct indexes
// give distinct keys that are spread uniformly over the key space.
inline uint64_t Mix(uint64_t x) {
  x += 0x9e37'79b9'7f4a'7c15;
  x = (x ^ (x >> 30)) * 0xbf58'476d'1ce4'e5b9;
  x = (x ^ (x >> 27)) * 0x94d0'49bb'1331'11eb;
  return x ^ (x >> 31);
}

// Writes the 16 hex digits of `x` into `out`.
inline void Hex16(uint64_t x, char out[kKeyBytes]) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < kKeyBytes; ++i) {
    out[kKeyBytes - 1 - i] = kHex[x & 0xf];
    x >>= 4;
  }
}
inline std::string Hex16(uint64_t x) {
  std::string s(kKeyBytes, '\0');
  Hex16(x, s.data());
  return s;
}

// The 16-byte key of logical write `index` (hex of Mix(index)).
inline void KeyAt(uint64_t index, char out[kKeyBytes]) { Hex16(Mix(index), out); }
inline std::string KeyString(uint64_t index) { return Hex16(Mix(index)); }

// 100-byte values cut from a random buffer, so that blocks do not compress to
// nothing (LevelDB snappy-compresses tables).
class Values {
 public:
  Values() : bytes_(kBufferBytes, '\0') {
    SeededRandom rng(20'240'601);
    for (char& c : bytes_) c = static_cast<char>(rng.Next64());
  }
  std::string_view At(uint64_t index) const {
    return std::string_view(bytes_).substr((index * 101) % (kBufferBytes - kValueBytes),
                                           kValueBytes);
  }

 private:
  static constexpr size_t kBufferBytes = size_t{1} << 20;
  std::string bytes_;
};

inline const Values& TheValues() {
  static const Values values;
  return values;
}

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const char* prefix = "tidemap-bench") {
    std::string pattern =
        std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX");
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  // A database directory inside (LevelDB creates it).
  std::string db() const { return path_ + "/db"; }

 private:
  std::string path_;
};

}  // namespace tidemap::bench

#endif  // TIDEMAP_BENCH_WORKLOAD_H_
