#include "coordinator/client_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "common/log.h"
#include "rpc/auth.h"

ABSL_FLAG(std::string, auth_token_file, "",
          "File of bearer tokens ('NAME:TOKEN' or 'TOKEN' per line) the client API requires "
          "(gRPC 'authorization: Bearer TOKEN', HTTP Authorization header); empty: none");
ABSL_FLAG(int, max_jobs_per_client, 0,
          "Jobs one client (token name, certificate CN or address) may have in flight; more get "
          "RESOURCE_EXHAUSTED; 0: no limit");
ABSL_FLAG(int64_t, max_tokens_per_minute_per_client, 0,
          "Generated + reward-model tokens one client may use per minute; a client over it gets "
          "RESOURCE_EXHAUSTED until its usage of the last minute falls below; 0: no limit");

namespace arbor::coordinator {

absl::Status ApplyClientAccessFlags(CoordinatorOptions* options) {
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  if (!token_file.empty()) {
    auto tokens = rpc::TokenSet::FromFile(token_file);
    if (!tokens.ok()) return tokens.status();
    ARBOR_LOG(INFO) << "client API requires a bearer token (" << (*tokens)->size()
                    << " configured in " << token_file << ")";
    options->client_tokens = *std::move(tokens);
  }
  options->client_quotas.max_jobs = absl::GetFlag(FLAGS_max_jobs_per_client);
  options->client_quotas.max_tokens_per_minute =
      absl::GetFlag(FLAGS_max_tokens_per_minute_per_client);
  return absl::OkStatus();
}

}  // namespace arbor::coordinator
