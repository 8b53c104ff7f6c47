// BudgetTracker: the compute budget of one job (arbor.v1.Budget) and its usage
// so far. Strategies ask it to size every request BEFORE sending it, so that
// no cap can be passed: a generation request is planned so that
// outputs x max_step_tokens <= generated tokens left, a scoring request is sent
// only when its token upper bound fits. When a cap (or the deadline) is
// reached the tracker records which, and the strategy returns its best
// candidate so far flagged budget_exhausted.
// Thread-safety: not thread-safe; owned by the job's strategy thread.
#ifndef ARBOR_SEARCH_BUDGET_H_
#define ARBOR_SEARCH_BUDGET_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "search/generator.h"
#include "search/scorer.h"

namespace arbor::search {

// Mirrors arbor.v1.Budget. Zero means "no cap" for that counter.
struct BudgetLimits {
  int64_t max_generated_tokens = 0;
  int64_t max_reward_tokens = 0;
  int64_t max_reward_calls = 0;
  int32_t max_steps = 0;
  absl::Duration deadline = absl::ZeroDuration();  // from job acceptance
  // The anytime reserve of the tree strategies (beam search, DVTS, particle
  // filtering, particle Gibbs, MCTS): this share of max_generated_tokens (and
  // of the deadline) is kept out of the step-by-step search and spent to
  // finish the best `finish_branches` live branches greedily to EOS when a cap
  // is near (tokens, steps, reward calls, reward tokens, deadline), so a
  // capped search still returns finished answers. [0, 0.9]; 0 keeps no token
  // reserve (the finish then gets only what the search left).
  float reserve_fraction = 0.2f;
  int32_t finish_branches = 4;  // [1, 64]
};

// Field names in errors are the proto's ("budget.max_steps ...").
absl::Status ValidateBudgetLimits(const BudgetLimits& limits);

// What strategy auto measured on its first round and what it chose
// (not in arbor.v1.Usage yet); empty band when the job was not auto.
struct AutoChoice {
  std::string band;      // "easy", "medium", "hard"
  std::string strategy;  // "stop", "best_of_n", "beam_search"
  int32_t n = 0;         // second-phase samples or beams
  int32_t first_round_samples = 0;
  double agreement = 0.0;
  double mean_score = 0.0;
  double difficulty = 0.0;
};

// Cumulative compute accounting of a job (mirrors arbor.v1.Usage; wall time
// and retries are the coordinator's).
struct Usage {
  int64_t generated_tokens = 0;
  int64_t prefill_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t reward_tokens = 0;
  int64_t reward_cache_hit_tokens = 0;
  int64_t reward_calls = 0;
  int64_t worker_calls = 0;
  int64_t steps = 0;
  // Sums of the calls' times (microseconds; see GenerationUsage).
  int64_t worker_queue_us = 0;
  int64_t worker_compute_us = 0;
  int64_t worker_call_us = 0;
  int64_t verifier_queue_us = 0;
  int64_t verifier_compute_us = 0;
  int64_t verifier_call_us = 0;
  // The anytime reserve (BudgetLimits::reserve_fraction): tokens generated to
  // finish branches greedily once a cap was near (or, for MCTS, once its
  // simulations ended with no path finished), and how many it finished.
  int64_t reserve_generated_tokens = 0;
  int64_t reserve_finished_branches = 0;
  // Steps whose expansion the generated-token budget shrank (fewer outputs,
  // each with the full step cap).
  int64_t shaped_steps = 0;
  // The certainty probe: probes sent, the tokens they generated (also in
  // generated_tokens), branches a certain probe stopped.
  int64_t probes = 0;
  int64_t probe_generated_tokens = 0;
  int64_t certain_branches = 0;
  AutoChoice auto_choice;
  // Tournament selection: PairwiseJudge::Compare calls (also in
  // reward_calls), pairs judged, rounds played, and whether the budget
  // stopped the bracket (the majority vote picked among the answers still in).
  int64_t compare_calls = 0;
  int64_t compared_pairs = 0;
  int32_t tournament_rounds = 0;
  bool tournament_fallback = false;
};

// The cap names used in exhausted_by.
inline constexpr std::string_view kCapGeneratedTokens = "generated_tokens";
inline constexpr std::string_view kCapRewardTokens = "reward_tokens";
inline constexpr std::string_view kCapRewardCalls = "reward_calls";
inline constexpr std::string_view kCapSteps = "steps";
inline constexpr std::string_view kCapDeadline = "deadline";

// A generation request sized to fit the budget.
struct GenerationPlan {
  int32_t num_outputs = 0;      // <= the outputs asked for
  int32_t max_step_tokens = 0;  // <= the step cap asked for
};

class BudgetTracker {
 public:
  using Clock = std::function<absl::Time()>;

  // `start` is the job's acceptance time; `now` defaults to absl::Now.
  explicit BudgetTracker(const BudgetLimits& limits, absl::Time start = absl::Now(),
                         Clock now = nullptr);

  const BudgetLimits& limits() const { return limits_; }
  const Usage& usage() const { return usage_; }
  // InfiniteFuture when there is no deadline.
  absl::Time deadline() const { return deadline_; }

  bool exhausted() const { return !exhausted_by_.empty(); }
  // "" while not exhausted, else one of the kCap* names (the first cap hit).
  const std::string& exhausted_by() const { return exhausted_by_; }
  // Records that `cap` stopped the search (first call wins).
  void MarkExhausted(std::string_view cap);

  // Remaining headroom; INT64_MAX for an uncapped counter.
  int64_t RemainingGeneratedTokens() const;
  int64_t RemainingRewardTokens() const;
  int64_t RemainingRewardCalls() const;
  int64_t RemainingSteps() const;
  // The generated tokens the step-by-step search may still spend: what is
  // left less the unspent reserve (reserve_fraction x max_generated_tokens).
  // INT64_MAX when uncapped.
  int64_t SearchGeneratedTokens() const;
  // Whether the search has reached the reserve share of its deadline
  // (elapsed >= (1 - reserve_fraction) x deadline); false without a deadline.
  // Marks nothing.
  bool DeadlineNear() const;
  // Records generated tokens spent by the reserve finish and the branches it
  // finished; counts a step whose expansion the budget shrank.
  void ChargeReserve(int64_t generated_tokens, int64_t finished_branches);
  void CountShapedStep() { usage_.shaped_steps += 1; }
  // Records probes (their tokens are charged by ChargeGeneration) and the
  // branches they stopped; sets strategy auto's report.
  void CountProbes(int64_t probes, int64_t generated_tokens, int64_t certain_branches) {
    usage_.probes += probes;
    usage_.probe_generated_tokens += generated_tokens;
    usage_.certain_branches += certain_branches;
  }
  void SetAutoChoice(AutoChoice choice) { usage_.auto_choice = std::move(choice); }
  // Records one tournament round played, or the bracket's fallback.
  void CountTournamentRound() { usage_.tournament_rounds += 1; }
  void MarkTournamentFallback() { usage_.tournament_fallback = true; }

  // Checks the deadline (less `slack`); marks the budget exhausted when it
  // has passed.
  bool DeadlinePassed(absl::Duration slack = absl::ZeroDuration());

  // Starts one strategy iteration: false when the budget is already exhausted,
  // the step cap is reached or the deadline has passed (the latter two mark
  // it); otherwise counts the step.
  bool BeginStep();

  // Sizes a request that wants `desired_outputs` outputs of at most
  // `max_step_tokens` tokens each: first the step cap shrinks (down to
  // `min_step_tokens`, clamped to [1, max_step_tokens]), then the number of
  // outputs. Returns nullopt (and marks "generated_tokens") when not even one
  // output of min_step_tokens fits. Never plans more than what is left.
  std::optional<GenerationPlan> PlanGeneration(int64_t desired_outputs, int32_t max_step_tokens,
                                               int32_t min_step_tokens = 1);

  // Whether a scoring call whose reward-token upper bound is `max_tokens` fits;
  // when not, marks "reward_calls" or "reward_tokens" and returns false.
  bool CanScore(int64_t max_tokens);

  // Charges what a call actually cost. A call that cost more than was planned
  // is a broken Generator/Scorer contract: it is charged, and the cap marked.
  void ChargeGeneration(const GenerationUsage& usage);
  void ChargeScoring(const ScoringUsage& usage);
  // A PairwiseJudge::Compare call of `pairs` pairs: charged as a scoring call
  // (reward tokens, one reward call) and counted in compare_calls.
  void ChargeComparison(const ScoringUsage& usage, int64_t pairs);

 private:
  absl::Time Now() const;

  BudgetLimits limits_;
  absl::Time deadline_;
  Clock now_;
  Usage usage_;
  std::string exhausted_by_;
};

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_BUDGET_H_
