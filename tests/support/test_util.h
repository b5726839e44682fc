// Small helpers shared by the test suites.
#ifndef TIDEMAP_TESTS_SUPPORT_TEST_UTIL_H_
#define TIDEMAP_TESTS_SUPPORT_TEST_UTIL_H_

#include <cstdint>
#include <ostream>
#include <string>

#include <tidemap/hlc/hlc.h>

namespace tidemap {
// Readable gtest failure messages for our value types (found by ADL).
void PrintTo(const Timestamp& t, std::ostream* os);
void PrintTo(const Version& v, std::ostream* os);
}  // namespace tidemap

namespace tidemap::testing {

// The seed a randomized test runs with: the value of environment variable
// `env_var` when set (to replay a failure), else `default_seed`. Prints it.
uint64_t SeedFromEnv(const char* env_var, uint64_t default_seed);

// An integer from the environment, or `fallback`.
uint64_t IntFromEnv(const char* env_var, uint64_t fallback);

// A fresh empty directory under the system temp dir; removed by the caller.
std::string MakeTempDir(const std::string& prefix);

// Overwrites 4 KiB in the middle of the largest LevelDB table (*.ldb) in
// `db_dir`, so that a block's checksum fails; returns its path ("" when the
// directory holds no table).
std::string DamageLargestTable(const std::string& db_dir);

// Every byte of every regular file under `dir` (recursively), concatenated:
// for checking that some bytes are stored nowhere on disk.
std::string BytesOfFilesUnder(const std::string& dir);

}  // namespace tidemap::testing

#endif  // TIDEMAP_TESTS_SUPPORT_TEST_UTIL_H_
