// Conversions between absl::Status (used everywhere inside Arbor) and
// grpc::Status (only at the RPC edge). The numeric codes of both are the
// canonical google.rpc codes, so the mapping is one to one and the message is
// kept. Stateless; thread-safe.
#ifndef ARBOR_RPC_STATUS_UTIL_H_
#define ARBOR_RPC_STATUS_UTIL_H_

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace arbor::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status ToAbslStatus(const grpc::Status& status);

// "OK", "INVALID_ARGUMENT", ...: the label value used in metrics.
std::string_view GrpcCodeName(grpc::StatusCode code);

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_STATUS_UTIL_H_
