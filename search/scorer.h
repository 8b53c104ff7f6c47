// Scorer: what a strategy needs from a reward model (PRM or ORM). Candidates
// travel as step texts, so the reward model may use its own tokenizer.
// Implemented by the coordinator over gRPC (arbor.v1.Verifier), in process by
// the all-in-one mode, and by fakes in tests.
//
// Contract:
//  - Score returns one entry per candidate, in order. Without last_step_only
//    an entry has one score per step; with it, exactly one score (the last
//    step's). Scores lie in [0, 1]: the probability that the solution up to
//    that step is correct. A step's score must not depend on later steps
//    (causal PRM), so strategies score only new steps and keep earlier scores.
//  - usage.reward_tokens is what the reward model actually ran (after its own
//    prefix cache); it must not exceed MaxRewardTokens(request).
// Thread-safety: a strategy calls one Scorer from one thread at a time.
#ifndef ARBOR_SEARCH_SCORER_H_
#define ARBOR_SEARCH_SCORER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace arbor::search {

class PairwiseJudge;

struct ScoreRequest {
  std::string_view question;
  // Each candidate's steps so far, in order. Valid only during the call.
  std::vector<absl::Span<const std::string>> candidates;
  bool last_step_only = false;
  absl::Time deadline = absl::InfiniteFuture();
};

struct ScoringUsage {
  int64_t reward_tokens = 0;            // tokens the reward model ran
  int64_t reward_cache_hit_tokens = 0;  // tokens served from its prefix cache
  // As GenerationUsage's times.
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  int64_t call_us = 0;
};

struct ScoreResult {
  std::vector<std::vector<float>> scores;  // parallel to ScoreRequest::candidates
  ScoringUsage usage;
};

class Scorer {
 public:
  virtual ~Scorer() = default;

  virtual absl::StatusOr<ScoreResult> Score(const ScoreRequest& request) = 0;

  // An upper bound on the reward tokens that Score(request) can run, used to
  // keep the reward-token budget from being passed. The default assumes a
  // byte-level tokenizer (at most one token per byte) with a cold cache:
  // question + all step bytes + a per-step and per-candidate template
  // allowance. Implementations that know better may return less.
  virtual int64_t MaxRewardTokens(const ScoreRequest& request) const;

  // The pairwise judge of this reward model (search/pairwise_judge.h), or
  // null when it only scores (the default). Owned by the scorer.
  virtual PairwiseJudge* pairwise_judge() { return nullptr; }

  // Template allowance of the default bound (tokens per candidate / per step).
  static constexpr int64_t kTemplateTokensPerCandidate = 64;
  static constexpr int64_t kTemplateTokensPerStep = 8;
};

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_SCORER_H_
