// Early returns on a failed absl::Status or absl::StatusOr, the one copy every
// folder uses. Header-only; the macros evaluate their argument once.
//
//   ARBOR_RETURN_IF_ERROR(file.Write(bytes));
//   ARBOR_ASSIGN_OR_RETURN(Config config, ParseConfig(text));
#ifndef ARBOR_COMMON_STATUS_MACROS_H_
#define ARBOR_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ARBOR_RETURN_IF_ERROR(expr)                                   \
  do {                                                                \
    if (::absl::Status arbor_status_ = (expr); !arbor_status_.ok()) { \
      return arbor_status_;                                           \
    }                                                                 \
  } while (0)

#define ARBOR_STATUS_CONCAT_INNER_(a, b) a##b
#define ARBOR_STATUS_CONCAT_(a, b) ARBOR_STATUS_CONCAT_INNER_(a, b)

// `lhs` may declare a variable (`auto x`, `Foo x`) or name an existing one.
#define ARBOR_ASSIGN_OR_RETURN(lhs, expr) \
  ARBOR_ASSIGN_OR_RETURN_IMPL_(ARBOR_STATUS_CONCAT_(arbor_statusor_, __LINE__), lhs, expr)

#define ARBOR_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)  \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = *std::move(statusor)

#endif  // ARBOR_COMMON_STATUS_MACROS_H_
