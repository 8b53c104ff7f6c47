// SearchRun: the machinery every strategy shares (internal to search/):
// branches, budget-sized Extend and Score calls split to the services' limits,
// per-branch seeds, cancellation, progress events, final ranking.
// Thread-safety: not thread-safe; one per job, on the job's thread.
#ifndef ARBOR_SEARCH_SEARCH_RUN_H_
#define ARBOR_SEARCH_SEARCH_RUN_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "search/answer.h"
#include "search/budget.h"
#include "search/generator.h"
#include "search/random.h"
#include "search/scorer.h"
#include "search/selection.h"
#include "search/strategy.h"

namespace arbor::search::internal {

// The services' per-call limits (generator.proto, verifier.proto).
inline constexpr int kMaxSamplesPerBranch = 256;
inline constexpr int kMaxBranchesPerCall = 1024;
inline constexpr int kMaxOutputsPerCall = 4096;
inline constexpr int kMaxCandidatesPerScore = 1024;
inline constexpr int kMaxStepsPerCandidate = 512;
inline constexpr int kMaxPairsPerCompare = 512;
// A budget-shrunk step keeps at least this many tokens (or the whole step cap
// when smaller) before the number of branches shrinks instead.
inline constexpr int kMinUsefulStepTokens = 16;
// In the budget endgame every finishing branch gets at least this many step
// caps of tokens (fewer branches finish rather than all being cut).
inline constexpr int kEndgameStepCapsPerBranch = 2;

// One partial or complete solution.
struct Branch {
  std::vector<int32_t> tokens;  // generated tokens after the prompt
  std::vector<std::string> steps;
  std::vector<size_t> step_ends;   // per step: tokens.size() after it
  std::vector<float> step_scores;  // one per scored step
  // Per step: generated with no step delimiter (to EOS or a token cap in one
  // piece), so it may hold several steps; ScoreBranches scores it as the
  // steps it holds. Entries past its end count as false.
  std::vector<bool> whole_steps;
  double score = 0.0;              // ranking score (aggregated)
  double logprob = 0.0;
  bool done = false;      // no longer extended
  bool finished = false;  // ended with EOS (or a final answer, for DVTS)
  bool scored = false;
  // The certainty probe: tokens.size() at the last probe, and the probes'
  // answers, oldest first ("" for a probe that hedged or found none).
  size_t probed_at = 0;
  std::vector<std::string> probe_answers;
  bool certain = false;  // stopped by a certain probe

  std::string Text() const;
};

// A new branch: its parent's index in the Extend call and its sample index.
struct Child {
  size_t parent = 0;
  int sample = 0;
  Branch branch;
};

struct ExtendOptions {
  SamplingOptions sampling;
  StopOptions stop;
  bool final_iteration = false;    // every child is done afterwards
  bool final_answer_ends = false;  // a step with "\boxed{" finishes the branch (DVTS)
  // Budget shaping (tree strategies): the request keeps its step cap and the
  // number of outputs shrinks to what the search share of the generated-token
  // budget affords (BudgetTracker::SearchGeneratedTokens), granted round-robin
  // over the parents (ranked best first, so the weakest lose samples first).
  // None fits: no children, and the budget is marked "generated_tokens".
  bool shaped = false;
  // The reserve finish: the whole remaining budget may be spent, the step cap
  // shrinks before the outputs do, and a step cut by its cap (kLength) leaves
  // the branch live (final_iteration must be false).
  bool finishing = false;
};

class SearchRun {
 public:
  SearchRun(const StrategyConfig& config, const JobContext& job, Generator& generator,
            Scorer* scorer);

  // Compiles the answer extractor and encodes the prompt.
  absl::Status Start();

  // CANCELLED when the job was cancelled; false when the budget (steps,
  // deadline, or an earlier exhaustion) ends the search; else counts a step.
  absl::StatusOr<bool> BeginIteration();

  // Extends parents[i] by samples[i] samples each. The request is sized to the
  // budget (trailing samples dropped first) and split to the service limits.
  // Returns the children in (parent, sample) order: fewer than asked when the
  // budget shrank the request; none when the budget or deadline ended it.
  absl::StatusOr<std::vector<Child>> Extend(const std::vector<const Branch*>& parents,
                                            const std::vector<int>& samples,
                                            const ExtendOptions& options);

  // The budget endgame. When the generated-token budget can no longer give
  // every wanted output a full step (outputs x stop.max_step_tokens), the
  // strategy plays its last iteration now: it generates to EOS from its best
  // branches only, so that some solutions finish instead of all being cut.
  // `samples` are the wanted samples per parent, parents ranked best first.
  // Returns nullopt while the budget affords a normal step; else the samples
  // to draw, spread round-robin over the ranked parents (at most
  // remaining / (kEndgameStepCapsPerBranch x max_step_tokens), at least 1),
  // and marks the budget exhausted ("generated_tokens").
  std::optional<std::vector<int>> PlanEndgame(const std::vector<int>& samples);

  // A tree strategy's iteration gate: BeginIteration, then NearCap.
  enum class Iteration {
    kPlay,        // play a normal step
    kStop,        // the budget (steps, deadline) ended the search
    kCapReached,  // a cap was reached within the last step (e.g. by a lookahead)
    kCapNear,     // NearCap: this is the moment to finish the best branches
  };
  // CANCELLED when the job was cancelled. After kCapReached and kCapNear the
  // strategy finishes its best branches (FinishBranches).
  absl::StatusOr<Iteration> BeginTreeIteration();

  // The anytime reserve. At the start of a tree strategy's iteration (after
  // BeginIteration): the cap that is near, so that the strategy should finish
  // its best branches now rather than play a normal step: "steps" (this is
  // the last step the cap allows), "reward_calls" (none is left to score the
  // step) or "deadline" (its reserve share is reached). Marks the budget
  // exhausted with it. "" to play a normal step. (A generated-token cap shows
  // as a shaped Extend that returns no children; a reward-token cap as a step
  // that could not be scored.)
  std::string_view NearCap();

  // Finishes up to BudgetLimits::finish_branches of `ranked` (best first; done
  // ones are skipped) greedily (temperature 0, no delimiter) to EOS, in place,
  // with whatever generated-token budget is left, reserve included: one call
  // for all of them when every one can get max_solution_tokens, else (and for
  // any still cut) best first, one at a time, each with all that is left. Finished branches keep their score (the
  // finish is not scored). Charges Usage::reserve_*.
  absl::Status FinishBranches(const std::vector<Branch*>& ranked);

  // Scores candidates given as step lists, in calls of at most
  // kMaxCandidatesPerScore. Returns the scores of a prefix of `candidates`:
  // all of them, or fewer when the budget (reward calls/tokens, deadline)
  // stopped it. Without `allow_partial` it is all or none: nothing is sent
  // unless every call fits.
  absl::StatusOr<std::vector<std::vector<float>>> ScoreSteps(
      const std::vector<const std::vector<std::string>*>& candidates, bool last_step_only,
      bool allow_partial = false);

  // Judges pairs (a, b) of whole solutions with the scorer's pairwise judge
  // (Scorer::pairwise_judge, which must be set), in calls of at most
  // kMaxPairsPerCompare; returns P(a is correct) per pair. All or nothing:
  // nothing is sent unless every call fits the budget (reward calls, the
  // judge's reward-token bound, deadline); nullopt when the budget (or the
  // job's deadline) stopped it, marked exhausted. Charges each call
  // (BudgetTracker::ChargeComparison).
  using StepList = std::vector<std::string>;
  absl::StatusOr<std::optional<std::vector<float>>> ComparePairs(
      const std::vector<std::pair<const StepList*, const StepList*>>& pairs);

  // Scores each branch's newest step (all steps when `full`), stores the step
  // scores and score = aggregate, marking them scored. True when every branch
  // was scored; false when the budget stopped it (without `allow_partial`, no
  // branch changed; with it, a prefix of `branches` was scored).
  // With StrategyConfig::split_whole_steps and `split_whole_steps`, a whole
  // step (Branch::whole_steps) goes to the scorer as the pieces
  // SplitAtDelimiters (steps.h) cuts it into at the job's step delimiters,
  // as a step-by-step generation would have written them; the branch keeps
  // its steps, and the whole step's score is its pieces' aggregate (the
  // scorer is asked for every step's score when that needs more than the
  // last one). A list that would pass kMaxStepsPerCandidate goes unsplit.
  absl::StatusOr<bool> ScoreBranches(const std::vector<Branch*>& branches, bool full,
                                     Aggregation aggregation, bool allow_partial = false,
                                     bool split_whole_steps = true);

  // The stop rules of a normal step, and of the last iteration (no delimiter,
  // up to max_solution_tokens less the shortest of `branches`).
  StopOptions StepStop() const;
  StopOptions FinalStop(const std::vector<const Branch*>& branches) const;

  // Emits one progress event (when the job has a callback).
  void Report(int iteration, const std::vector<const Branch*>& live,
              const std::vector<const Branch*>& finished);

  // The certainty probe (CertaintyConfig): probes every live branch of
  // `branches` with at least interval_tokens new tokens since its last probe
  // (as many as the search share of the token budget affords, in order), in
  // one Extend call; a branch whose last `window` answers agree is stopped,
  // finished, with the step probe_text + the probe's output. Returns how many
  // it stopped. The probe's tokens are charged (Usage::probe_*) and never
  // added to a branch's tokens.
  absl::StatusOr<int> ProbeBranches(const std::vector<Branch*>& branches,
                                    const CertaintyConfig& certainty);

  // The share of `branches` whose (non-empty, normalised) answer is the most
  // common one; 0 for none.
  double Agreement(const std::vector<Branch>& branches) const;
  // The normalised answer of a branch ("" when none).
  std::string AnswerOf(const Branch& branch) const;

  // Extracts answers, ranks `branches` with `options` (tiers, vote rule,
  // vote weights) and fills the result: candidates, answer, usage, budget.
  SolveResult Finish(std::vector<Branch> branches, RankOptions options);

  // Why the search stopped when no cap did (kStopCompleted by default).
  void set_stop_reason(std::string_view reason) { stop_reason_ = std::string(reason); }

  const StrategyConfig& config() const { return config_; }
  const JobContext& job() const { return job_; }
  BudgetTracker& budget() { return budget_; }
  Scorer* scorer() { return scorer_; }
  JobRandom& tie_rng() { return tie_rng_; }
  JobRandom& resample_rng() { return resample_rng_; }
  JobRandom& final_rng() { return final_rng_; }

 private:
  bool Cancelled() const;
  // Handles a failed call: the job's deadline ends the search (true); other
  // errors are returned to the caller (false).
  bool EndedByDeadline(const absl::Status& status);

  const StrategyConfig& config_;
  const JobContext& job_;
  Generator& generator_;
  Scorer* scorer_;
  BudgetTracker budget_;
  std::unique_ptr<AnswerExtractor> extractor_;
  std::vector<int32_t> prompt_;
  uint64_t call_index_ = 0;
  uint64_t probe_call_index_ = 0;
  std::string stop_reason_ = std::string(kStopCompleted);
  JobRandom tie_rng_;
  JobRandom resample_rng_;
  JobRandom final_rng_;
};

// Whether `text` holds one of `words` as a whole word (ASCII case-insensitive).
bool HasHedgeWord(std::string_view text, const std::vector<std::string>& words);

// Strategies (one file each).
// Greedy (`best_of_n` null: one sample, no scoring) and best-of-N.
absl::StatusOr<SolveResult> RunSampling(SearchRun& run, int n, const SamplingOptions& sampling,
                                        const BestOfNConfig* best_of_n);
// The parts of best-of-N, for strategy auto. DrawSamples adds `count`
// samples to `branches`, step by step until all of them ended (certainty
// probe when set); false when the budget ended it. ScoreSamples scores the
// unscored ones (full steps; finished first) and says whether all are scored.
// FinishSamples ranks them by `best_of_n`'s selection.
absl::StatusOr<bool> DrawSamples(SearchRun& run, int count, const SamplingOptions& sampling,
                                 const CertaintyConfig* certainty, std::vector<Branch>& branches,
                                 int& iteration);
absl::StatusOr<bool> ScoreSamples(SearchRun& run, std::vector<Branch>& branches,
                                  Aggregation aggregation);
SolveResult FinishSamples(SearchRun& run, std::vector<Branch> branches,
                          const BestOfNConfig& best_of_n, bool scored);
// Tournament selection (tournament.cc; BestOfNConfig::Selection::kTournament).
absl::StatusOr<SolveResult> FinishTournament(SearchRun& run, std::vector<Branch> branches);
// `extra` (scored, ended candidates: auto's first round) are ranked with
// the beams.
absl::StatusOr<SolveResult> RunBeamSearch(SearchRun& run, const BeamSearchConfig& config,
                                          std::vector<Branch> extra = {});
absl::StatusOr<SolveResult> RunAuto(SearchRun& run, const AutoConfig& config);
absl::StatusOr<SolveResult> RunDvts(SearchRun& run, const DvtsConfig& config);
absl::StatusOr<SolveResult> RunParticleFilter(SearchRun& run, const ParticleFilterConfig& config);
absl::StatusOr<SolveResult> RunParticleGibbs(SearchRun& run, const ParticleGibbsConfig& config);
absl::StatusOr<SolveResult> RunMcts(SearchRun& run, const MctsConfig& config);

}  // namespace arbor::search::internal

#endif  // ARBOR_SEARCH_SEARCH_RUN_H_
