// Flags of who may use the client API and how much, shared by
// arbor-coordinator and arbor-allinone:
//   --auth_token_file                    bearer tokens required (rpc/auth.h)
//   --max_jobs_per_client                concurrent jobs per client (0: off)
//   --max_tokens_per_minute_per_client   tokens per client per minute (0: off)
// Thread-safety: call after flags are parsed, from main.
#ifndef ARBOR_COORDINATOR_CLIENT_FLAGS_H_
#define ARBOR_COORDINATOR_CLIENT_FLAGS_H_

#include "absl/status/status.h"
#include "coordinator/coordinator.h"

namespace arbor::coordinator {

// Sets options->client_tokens (reading the token file) and
// options->client_quotas; an unreadable or malformed token file is an error
// naming it.
absl::Status ApplyClientAccessFlags(CoordinatorOptions* options);

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_CLIENT_FLAGS_H_
