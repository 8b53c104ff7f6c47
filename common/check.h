// ARBOR_CHECK: aborts with file:line when an internal invariant is broken.
// For conditions that can fail at run time (bad input, I/O, capacity), return
// absl::Status instead. Header-only; thread-safe.
#ifndef ARBOR_COMMON_CHECK_H_
#define ARBOR_COMMON_CHECK_H_

#include <cstdio>
#include <cstdlib>

namespace arbor::internal {
[[noreturn]] inline void CheckFailed(const char* file, int line, const char* expr,
                                     const char* message) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, expr, message);
  std::fflush(stderr);
  std::abort();
}
}  // namespace arbor::internal

#define ARBOR_CHECK(cond)                                                 \
  do {                                                                    \
    if (!(cond)) ::arbor::internal::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define ARBOR_CHECK_MSG(cond, msg)                                        \
  do {                                                                    \
    if (!(cond)) ::arbor::internal::CheckFailed(__FILE__, __LINE__, #cond, msg); \
  } while (0)

#endif  // ARBOR_COMMON_CHECK_H_
