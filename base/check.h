// TIDEMAP_CHECK: always-on assertions for our own bugs.
//
// A failed check prints the condition and its location and aborts. It is never
// used on bytes from a peer or a disk: those are operating conditions and come
// back as a Status.
#ifndef TIDEMAP_BASE_CHECK_H_
#define TIDEMAP_BASE_CHECK_H_

namespace tidemap::internal {
[[noreturn]] void CheckFailed(const char* condition, const char* file, int line, const char* msg);
}  // namespace tidemap::internal

#define TIDEMAP_CHECK(cond)                                                       \
  do {                                                                            \
    if (!(cond)) ::tidemap::internal::CheckFailed(#cond, __FILE__, __LINE__, ""); \
  } while (0)

#define TIDEMAP_CHECK_MSG(cond, msg)                                                 \
  do {                                                                               \
    if (!(cond)) ::tidemap::internal::CheckFailed(#cond, __FILE__, __LINE__, (msg)); \
  } while (0)

#endif  // TIDEMAP_BASE_CHECK_H_
