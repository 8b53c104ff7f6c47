// Checks an arbor.v1.ScoreRequest (or CompareRequest) against the protocol's bounds
// (proto/arbor/v1/verifier.proto). Rejections are INVALID_ARGUMENT naming the
// field ("candidates[2].steps[0]: invalid UTF-8 at byte 5"). The context
// window is checked later, on the tokens (RewardScorer). Pure functions.
#ifndef ARBOR_VERIFIER_SCORE_REQUEST_H_
#define ARBOR_VERIFIER_SCORE_REQUEST_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "arbor/v1/verifier.pb.h"

namespace arbor::verifier {

struct VerifierLimits {
  std::string model_name;
  int max_candidates = 1024;
  int max_steps = 512;
  int max_pairs = 512;  // CompareRequest.pairs
  size_t max_job_id_bytes = 128;
};

absl::Status ValidateScoreRequest(const arbor::v1::ScoreRequest& request,
                                  const VerifierLimits& limits);

// The same checks for a CompareRequest ("pairs[1].b.steps[0]: ...").
absl::Status ValidateCompareRequest(const arbor::v1::CompareRequest& request,
                                    const VerifierLimits& limits);

}  // namespace arbor::verifier

#endif  // ARBOR_VERIFIER_SCORE_REQUEST_H_
