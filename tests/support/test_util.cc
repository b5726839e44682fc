#include "tests/support/test_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <tidemap/base/check.h>

namespace tidemap {
void PrintTo(const Timestamp& t, std::ostream* os) { *os << t.ToString() << " (" << t.raw << ")"; }
void PrintTo(const Version& v, std::ostream* os) { *os << v.ToString(); }
}  // namespace tidemap

namespace tidemap::testing {

uint64_t IntFromEnv(const char* env_var, uint64_t fallback) {
  const char* v = std::getenv(env_var);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

uint64_t SeedFromEnv(const char* env_var, uint64_t default_seed) {
  const uint64_t seed = IntFromEnv(env_var, default_seed);
  std::fprintf(stderr, "seed %llu (replay with %s=%llu)\n", static_cast<unsigned long long>(seed),
               env_var, static_cast<unsigned long long>(seed));
  return seed;
}

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  char* made = mkdtemp(tmpl.data());
  TIDEMAP_CHECK(made != nullptr);
  return tmpl;
}

std::string BytesOfFilesUnder(const std::string& dir) {
  std::string all;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return all;
}

std::string DamageLargestTable(const std::string& db_dir) {
  namespace fs = std::filesystem;
  std::string table;
  for (const auto& e : fs::directory_iterator(db_dir)) {
    if (e.path().extension() == ".ldb" && (table.empty() || e.file_size() > fs::file_size(table))) {
      table = e.path().string();
    }
  }
  if (table.empty()) return table;
  std::fstream f(table, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(fs::file_size(table) / 2));
  const std::string junk(4096, '\x5a');
  f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  return table;
}

}  // namespace tidemap::testing
