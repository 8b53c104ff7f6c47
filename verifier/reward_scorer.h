// RewardScorer: scores candidates' steps with a reward model served by a
// worker Engine (its prefill-only Score path and its prefix KV cache).
//
// Re-scoring a longer version of a candidate costs only its new tokens: the
// engine's radix cache holds the KV of what was run before, and a step-score
// cache (keyed by a 128-bit hash of the tokens up to the step's tag) holds the
// scores of steps already scored, so the engine is asked only for rows at new
// tags and can start from the cached prefix (it recomputes from the first row
// it must return).
//
// Usage reported per call: reward_tokens = tokens the model ran,
// reward_cache_hit_tokens = tokens served by the prefix cache (plus the whole
// sequence of a candidate whose every wanted score was already cached).
//
// Thread-safety: all methods are thread-safe; the engine must outlive the
// scorer.
#ifndef ARBOR_VERIFIER_REWARD_SCORER_H_
#define ARBOR_VERIFIER_REWARD_SCORER_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "serving/prompt_renderer.h"
#include "verifier/reward_input.h"

namespace arbor::runtime {
class Tokenizer;
}

namespace arbor::verifier {

struct ScoreJob {
  std::string job_id;
  std::string question;
  std::vector<std::vector<std::string>> candidates;
  bool last_step_only = false;
  absl::Time deadline = absl::InfiniteFuture();
};

struct ScoreOutcome {
  // Parallel to ScoreJob::candidates: one score per step, or one with
  // last_step_only.
  std::vector<std::vector<float>> scores;
  int64_t reward_tokens = 0;
  int64_t cache_hit_tokens = 0;
  // The engine request's queue and compute time (0 when all was cached).
  int64_t queue_us = 0;
  int64_t compute_us = 0;
};

// Pairwise judgement (Verifier.Compare; LLM judges only).
struct CompareJob {
  std::string job_id;
  std::string question;
  // (a, b) step lists, each non-empty.
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> pairs;
  absl::Time deadline = absl::InfiniteFuture();
};

struct CompareOutcome {
  // Parallel to CompareJob::pairs: P(verdict A) with a shown first, P(verdict
  // B) with b shown first (a second), and their mean, P(a is correct).
  std::vector<float> a_first;
  std::vector<float> b_first;
  std::vector<float> prob_a;
  int64_t reward_tokens = 0;
  int64_t cache_hit_tokens = 0;
  int64_t queue_us = 0;
  int64_t compute_us = 0;
};

struct RewardScorerOptions {
  // Step scores remembered (LRU); 0 disables the step-score cache.
  int score_cache_entries = 1 << 16;
};

// A ScoreJob tokenized and checked, with the engine work it still needs.
class PreparedScore {
 public:
  bool needs_engine() const { return !engine_request_.sequences.empty(); }
  // The engine request (moved out; call once, only when needs_engine()).
  runtime::ScoreRequest TakeEngineRequest() { return std::move(engine_request_); }

 private:
  friend class RewardScorer;
  struct Key {
    uint64_t a = 0, b = 0;
    bool operator==(const Key& o) const { return a == o.a && b == o.b; }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.a, k.b);
    }
  };
  // Where each score comes from: a cached value, or row `row` of engine
  // sequence `sequence`.
  struct Slot {
    Key key;
    float cached = 0.0f;
    int sequence = -1;
    int row = -1;
  };
  std::vector<std::vector<Slot>> slots_;  // [candidate][scored step]
  runtime::ScoreRequest engine_request_;
  int64_t fully_cached_tokens_ = 0;
};

class RewardScorer {
 public:
  // Errors: the reward config does not fit the engine's model (see RewardInput::Create).
  static absl::StatusOr<std::unique_ptr<RewardScorer>> Create(runtime::Engine* engine,
                                                              RewardInput input,
                                                              RewardScorerOptions options = {});

  // Tokenizes the job and looks up cached step scores. Errors:
  // INVALID_ARGUMENT naming the candidate whose reward input is longer than
  // the model's context window, or a tokenizer error.
  absl::StatusOr<std::unique_ptr<PreparedScore>> Prepare(const ScoreJob& job) const;
  // The scores of a prepared job from the engine's result (null when the job
  // needed no engine work); remembers the new step scores.
  ScoreOutcome Complete(const PreparedScore& prepared, const runtime::ScoreResult* result);

  // The scorer of `engine`'s model read through `tokenizer` (both must
  // outlive it); `render_prompt` renders the question when
  // config.chat_template is set (may be empty otherwise). Errors: the config
  // does not fit the model or tokenizer.
  static absl::StatusOr<std::unique_ptr<RewardScorer>> ForModel(
      runtime::Engine* engine, const runtime::Tokenizer* tokenizer, const RewardConfig& config,
      serving::PromptRenderer render_prompt, RewardScorerOptions options = {});

  // The engine request of a comparison job: sequences 2p (a as Solution A)
  // and 2p + 1 (b as Solution A) for pair p, one row each at the verdict,
  // columns {A, B}: both orders in one batch, sharing the question prefix in
  // the prefix cache. Errors: FAILED_PRECONDITION when the model does not
  // compare (RewardInput::compare_status); INVALID_ARGUMENT naming the pair
  // whose input is longer than the context window.
  absl::StatusOr<runtime::ScoreRequest> PrepareCompare(const CompareJob& job) const;
  // The comparison outcome of PrepareCompare's request's result.
  static CompareOutcome CompleteCompare(const runtime::ScoreResult& result);
  // PrepareCompare, run, CompleteCompare: blocking, for in-process callers.
  absl::StatusOr<CompareOutcome> Compare(const CompareJob& job,
                                         const std::function<bool()>& is_cancelled = {});

  // Prepare, run on the engine, Complete: blocking, for in-process callers.
  absl::StatusOr<ScoreOutcome> Score(const ScoreJob& job,
                                     const std::function<bool()>& is_cancelled = {});

  runtime::Engine* engine() const { return engine_; }
  const RewardInput& input() const { return input_; }

 private:
  RewardScorer(runtime::Engine* engine, RewardInput input, RewardScorerOptions options)
      : engine_(engine), input_(std::move(input)), options_(options) {}

  bool LookupScore(const PreparedScore::Key& key, float* score) const;
  void RememberScore(const PreparedScore::Key& key, float score);

  runtime::Engine* engine_;
  RewardInput input_;
  RewardScorerOptions options_;

  mutable absl::Mutex cache_mu_;
  // LRU: most recent at the front.
  mutable std::list<std::pair<PreparedScore::Key, float>> lru_ ABSL_GUARDED_BY(cache_mu_);
  absl::flat_hash_map<PreparedScore::Key, std::list<std::pair<PreparedScore::Key, float>>::iterator>
      index_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace arbor::verifier

#endif  // ARBOR_VERIFIER_REWARD_SCORER_H_
