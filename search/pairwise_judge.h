// PairwiseJudge: what tournament selection needs from a reward model that
// compares two whole solutions (a generative pairwise judge: an LLM asked
// which of "Solution A" and "Solution B" is correct). Beside Scorer: a
// Scorer whose reward model also judges pairs hands out its judge
// (Scorer::pairwise_judge). Implemented by the coordinator over gRPC
// (arbor.v1.Verifier.Compare) and by fakes in tests.
//
// Contract:
//  - Compare returns one probability per pair, in order: P(a is the correct
//    one of the two) in [0, 1]. An implementation removes the judge's
//    position bias itself (the verifier judges both orders and averages), so
//    swapping a and b gives 1 - p.
//  - usage.reward_tokens is what the judge actually ran; it must not exceed
//    MaxRewardTokens(request). One Compare is one reward call.
// Thread-safety: a strategy calls one judge from one thread at a time.
#ifndef ARBOR_SEARCH_PAIRWISE_JUDGE_H_
#define ARBOR_SEARCH_PAIRWISE_JUDGE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "search/scorer.h"

namespace arbor::search {

struct PairwiseMatch {
  // The two solutions' steps. Valid only during the call.
  absl::Span<const std::string> a;
  absl::Span<const std::string> b;
};

struct PairwiseRequest {
  std::string_view question;
  std::vector<PairwiseMatch> pairs;
  absl::Time deadline = absl::InfiniteFuture();
};

struct PairwiseResult {
  std::vector<float> prob_a;  // parallel to PairwiseRequest::pairs
  ScoringUsage usage;
};

class PairwiseJudge {
 public:
  virtual ~PairwiseJudge() = default;

  virtual absl::StatusOr<PairwiseResult> Compare(const PairwiseRequest& request) = 0;

  // An upper bound on the reward tokens that Compare(request) can run, used
  // to keep the reward-token budget from being passed. The default assumes a
  // byte-level tokenizer with a cold cache and both orders of every pair:
  // 2 x (question + both solutions' bytes + a template allowance per
  // sequence and per step). The sequence allowance covers the verifier's
  // default compare template (about 140 bytes) with a chat template's head
  // and tail.
  virtual int64_t MaxRewardTokens(const PairwiseRequest& request) const;

  // Template allowance of the default bound (tokens per sequence / per step).
  static constexpr int64_t kTemplateTokensPerSequence = 256;
  static constexpr int64_t kTemplateTokensPerStep = 8;
};

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_PAIRWISE_JUDGE_H_
