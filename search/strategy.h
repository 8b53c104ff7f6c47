// The strategy library's entry point: one config struct per strategy
// (mirroring arbor.v1 reasoning.proto, same defaults), a job context with
// progress and cancellation hooks, and RunStrategy, which runs greedy,
// best-of-N, PRM beam search, DVTS or particle filtering against a Generator
// and a Scorer and returns ranked candidates with a full compute account.
//
// Semantics follow ../shared/STRATEGIES.md (search-and-learn, its_hub, OpenR):
//  - steps end at the step delimiters; the last iteration of beam search, DVTS
//    and particle filtering drops the delimiters and generates to EOS (cap:
//    max_solution_tokens less the shortest branch's tokens, at least
//    stop.max_step_tokens); such a step is PRM-scored as the steps it holds
//    (StrategyConfig::split_whole_steps);
//  - every random choice (per-branch seeds, tie-breaks, resampling) derives
//    from JobContext::seed: same config, question, seed and Generator/Scorer
//    answers give the same result;
//  - a step cut by stop.max_step_tokens (FinishReason::kLength) continues in
//    the next iteration; EOS finishes a branch; a full context ends it unfinished;
//  - the budget is never passed (see budget.h); when it ends, the best
//    candidates so far are returned with budget_exhausted and exhausted_by.
//    Budget shaping (tree strategies): a generated-token cap shrinks a step's
//    expansion (fewer outputs, each with the full step cap, the weakest
//    branches losing samples first) and so the number of steps, never the
//    step: every step still ends at its delimiter. Anytime reserve (tree
//    strategies): BudgetLimits::reserve_fraction of the token budget (and of
//    the deadline) is kept out of the search; when a cap is near (no step
//    affordable from the search share, the last step the step cap allows, no
//    reward call left, a step the reward-token cap could not score, the
//    deadline's reserve reached) the best finish_branches live branches are
//    finished greedily to EOS with what is left (Usage::reserve_*).
//    Greedy and best-of-N keep their endgame: once the token budget cannot
//    give every sample a full step, they play their last iteration at once,
//    to EOS, from the longest samples only (each gets >= 2 step caps of
//    tokens). The reward-token cap is enforced on Scorer::MaxRewardTokens (by
//    default a byte-count bound, much above what a verifier with a warm
//    prefix cache runs); best-of-N then scores the finished candidates that
//    fit and ranks them first;
//  - JobContext::is_cancelled is polled between steps; when it returns true
//    RunStrategy returns CANCELLED.
// Thread-safety: RunStrategy runs on the caller's thread; callbacks run on it.
#ifndef ARBOR_SEARCH_STRATEGY_H_
#define ARBOR_SEARCH_STRATEGY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "search/budget.h"
#include "search/generator.h"
#include "search/pairwise_judge.h"
#include "search/scorer.h"

namespace arbor::search {

// How per-step scores become one score (arbor.v1.ScoreAggregation).
enum class Aggregation { kLast, kMin, kProd, kMean };

// Certainty probe: Dynasor-style early stop (Certaindex); search library only
// for now (no arbor.v1 field sets it yet: docs/SCALING.md, "Certainty probe"). After every
// interval_tokens generated tokens of a branch (checked at step boundaries:
// the generator extends whole steps) the branch is probed: probe_text is
// appended to a copy of it and up to max_probe_tokens are generated greedily,
// to the end of the line; the probe's answer is the job's answer extraction
// over probe_text plus that output. The probe's tokens are charged to the
// budget (Usage::probe_generated_tokens, within generated_tokens) and never
// kept in the branch. When the last `window` probes of a branch gave the same
// non-empty answer and none of their outputs holds a hedge word (whole words,
// case-insensitive), the branch stops, finished, with one more step:
// probe_text + the last probe's output (unscored). Probes that the budget
// cannot afford are skipped (the search goes on).
inline constexpr std::string_view kDynasorProbeText =
    "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{";
struct CertaintyConfig {
  bool enabled = false;
  int32_t interval_tokens = 64;  // K, [1, 32768]
  int32_t window = 3;            // k, [1, 64]
  std::string probe_text;        // "" = kDynasorProbeText; <= 1024 bytes
  int32_t max_probe_tokens = 20;  // [1, 256]
  // Empty: Dynasor's wait, hold, but, okay, no, hmm (DynasorHedgeWords).
  std::vector<std::string> hedge_words;
};
const std::vector<std::string>& DynasorHedgeWords();

// Dynasor's effort presets (window k, interval K): the higher, the earlier a
// branch stops. kMid is the default.
enum class CertaintyEffort { kMild, kLow, kMid, kHigh, kCrazy };
void ApplyCertaintyEffort(CertaintyEffort effort, CertaintyConfig& config);

// arbor.v1.Greedy: temperature 0 unless the request sets one (the coordinator
// copies sampling.temperature here when has_temperature), then one sample.
struct GreedyConfig {
  float temperature = 0.0f;
};

// arbor.v1.BestOfN.
struct BestOfNConfig {
  // kTournament: a single-elimination knockout over the distinct answers,
  // judged pairwise by the scorer's PairwiseJudge (Scorer::pairwise_judge;
  // search/pairwise_judge.h), one Compare call per round; the samples are
  // not scored. Representatives, seeds, byes, ties, the budget fallback
  // (majority vote among the answers still in; Usage::tournament_fallback)
  // and the ranking are described in tournament.cc.
  enum class Selection { kReward, kMajorityVote, kWeightedVote, kBestOfMajority, kTournament };
  int32_t n = 8;  // [1, 4096]
  Selection selection = Selection::kReward;
  Aggregation aggregation = Aggregation::kLast;
  float min_vote_fraction = 0.2f;  // (0, 1], for kBestOfMajority
  // Adaptive best-of-N: when round_size > 0, samples are drawn in rounds of
  // round_size (up to n in all) and after each round the job stops as soon as
  // the vote is decided (stop_reason "agreement"): LeaderConfidence
  // (selection.h), the posterior probability that the leading answer beats
  // the runner-up given the votes so far, reaches stop_agreement. Votes are
  // weighted by the samples' PRM scores (aggregation), so the round is scored
  // as it ends; with kMajorityVote each sample counts 1 (Adaptive-Consistency
  // as published). The selection then runs over what was drawn. 0 (default)
  // draws all n at once. The default 0.65 was chosen on the PRM-scored
  // samples of the first 120 reference problems (docs/SCALING.md).
  int32_t round_size = 0;        // [0, n]
  float stop_agreement = 0.65f;  // (0, 1]: 0.5 stops after the first round
  CertaintyConfig certainty;     // each sample stops once its answer is certain
};

// arbor.v1.BeamSearch (search-and-learn semantics).
struct BeamSearchConfig {
  int32_t n = 16;               // [1, 1024] active beams / candidates per step
  int32_t beam_width = 4;       // M; n % M == 0; top n/M survive, each expanded M times
  int32_t num_iterations = 40;  // [1, 512]
  int32_t lookahead = 0;        // [0, 8] greedy steps generated for scoring only
  Aggregation aggregation = Aggregation::kLast;
  CertaintyConfig certainty;  // a beam whose answer is certain is set aside, finished
};

// arbor.v1.Dvts.
struct DvtsConfig {
  int32_t n = 16;               // [1, 1024] total leaves; n/M subtrees
  int32_t beam_width = 4;       // M candidates per subtree per step; n % M == 0
  int32_t num_iterations = 40;  // [1, 512]
  Aggregation aggregation = Aggregation::kLast;
};

// arbor.v1.ParticleFilter (Puri et al. 2025; its_hub).
struct ParticleFilterConfig {
  enum class Resampling { kMultinomial, kSystematic };
  enum class WeightUpdate { kReplace, kCumulative };
  enum class FinalSelection { kArgmaxWeight, kSample, kWeightedVote };
  int32_t n = 16;            // [1, 1024]
  float temperature = 1.0f;  // (0, 100]: softmax(log_weight / temperature)
  Resampling resampling = Resampling::kMultinomial;
  float ess_threshold = 0.0f;  // [0, 1]; 0 resamples every step
  WeightUpdate weight_update = WeightUpdate::kReplace;
  bool absorb_finished = false;
  FinalSelection final_selection = FinalSelection::kArgmaxWeight;
  int32_t num_iterations = 40;  // [1, 512]
  // Entropic resampling (its_hub): while the ESS ratio of the step's weights
  // is below entropic_ess_threshold, the softmax temperature is raised to
  // temperature x max(1, (1 / ess_ratio) x (1 - iteration / num_iterations)),
  // so early, overconfident scores do not collapse the pool.
  bool entropic = false;
  float entropic_ess_threshold = 0.5f;  // (0, 1]
};

// arbor.v1.ParticleGibbs (its_hub): num_sweeps particle-filter sweeps of n
// particles; from the second on, num_ref_particles reference particles drawn
// by final weight from the previous sweep follow their own trajectory (no
// generation, their recorded step scores) and are never resampled away; the
// n - num_ref_particles free particles are resampled over all n. The final
// pick runs over every sweep's particles.
struct ParticleGibbsConfig {
  ParticleFilterConfig filter;  // n, weights, resampling, num_iterations per sweep
  int32_t num_sweeps = 4;         // [1, 64]
  int32_t num_ref_particles = 1;  // [0, n - 1]
};

// arbor.v1.Mcts: Monte-Carlo tree search over steps (OpenR defaults). Each
// simulation selects from the root by PUCT, Q + c(s) P(s,a) sqrt(N(s)) /
// (1 + N(s,a)) with c(s) = log((N(s) + pb_c_base + 1) / pb_c_base) +
// pb_c_init, the prior P from the step's mean token logprob (softmax over
// siblings) and Q the mean backed-up value (a node's own PRM score before its
// first visit); expands the leaf with max_width sampled steps (to EOS at
// max_depth), samples that wrote the same step being one child whose prior
// is their summed prior; evaluates the best new child by its PRM score or,
// with rollouts, by the PRM score of a rollout to EOS from it (itself a
// candidate; its tail scored as the steps it holds, split_rollout_steps),
// drawn at the job's sampling options (sampled_rollouts, the default) or
// greedily; and backs the value up the path. Finished nodes and
// rollouts are the candidates. When the simulations end before any path did
// and no rollout ran, the principal path's leaf (most visits from the root
// down) and the deepest leaves are finished greedily, as the reserve does
// under a cap, and PRM-scored whole: they rank by their own score. The final
// pick is, by default, the PRM-weighted vote over the finished candidates'
// answers (kWeightedVote: the answer with the largest summed score, then its
// best-scored candidate); kArgmaxScore picks the candidate of the top score.
// On the reference task the vote measured within 0.6 points of the argmax
// without rollouts, and 0.7 to 2.3 points above it with sampled rollouts
// (width 2, N = 4 to 32; docs/SCALING.md, rounds 4 and 5). Greedy rollouts
// from sibling steps mostly write the same tail (1.4 distinct answers in 4,
// against 2.2 sampled), so the vote has little to count: sampled ones
// measured 1.4 to 8.6 points above them at N = 4 to 32.
//
// Progressive widening (widen_c > 0): copies of a step being one child, a
// node of a near-deterministic policy holds fewer than max_width distinct
// children. Such a node is sampled again (a widening round of max_width
// minus its distinct children fresh samples, merged like the first) when its
// rounds so far are fewer than ceil(widen_c * visits^widen_alpha), or when
// every path under it has ended; at most widen_max_rounds rounds per node
// (the first expansion included). A round's samples add to the children's
// priors by frequency (each child's prior is its share of the node's
// samples' softmax mass, so the first expansion's priors are unchanged). The
// search ends early once every path has ended and no node may widen (with
// few distinct steps, before num_simulations). widen_c = 0 (the default):
// no widening; it cost more tokens than it gained accuracy on the reference
// task (docs/SCALING.md, round 4).
struct MctsConfig {
  enum class FinalSelection { kWeightedVote, kArgmaxScore };
  int32_t num_simulations = 16;  // [1, 4096]
  int32_t max_width = 10;        // [1, 64] children per expansion
  int32_t max_depth = 10;        // [1, 512] steps; the last generates to EOS
  double pb_c_base = 19652.0;    // > 0
  double pb_c_init = 1.25;       // >= 0
  bool rollouts = false;
  Aggregation aggregation = Aggregation::kLast;
  FinalSelection final_selection = FinalSelection::kWeightedVote;
  // Search library only for now: no arbor.v1.Mcts field sets the widening yet.
  double widen_c = 0.0;          // [0, inf); 0: no widening (default: docs/SCALING.md, round 4)
  double widen_alpha = 0.5;      // [0, 1]; 0: widen only where every path has ended
  int32_t widen_max_rounds = 4;  // [1, 64] sampling rounds per node
  // Rollouts at the job's sampling options (temperature, top-p, top-k), each
  // with its own seed; false: greedy rollouts (arbor.v1.Mcts.greedy_rollouts;
  // docs/SCALING.md, round 5).
  bool sampled_rollouts = true;
  // A rollout's tail is PRM-scored as the steps it holds (cut at the job's
  // step delimiters), not as one step; false: as one step (rounds 3 to 5).
  // Rollouts are split when this and StrategyConfig::split_whole_steps are
  // both on; the latter alone governs MCTS's other whole steps (the deepest
  // expansion, the finishes). Search library only (docs/SCALING.md, round 6).
  bool split_rollout_steps = true;
};

// Strategy auto (search library only for now: no arbor.v1 field selects it
// yet; docs/SCALING.md, "Auto"): compute-optimal allocation per prompt (Snell et al.
// 2024). A first round of first_round_samples samples, PRM-scored (last
// step), estimates the difficulty: agreement a (share of the most common
// answer) and mean score s. Easy (a >= easy_agreement and s >= easy_score):
// stop, the first round's PRM-weighted vote. Hard (a <= hard_agreement or
// s < hard_score): a PRM beam search with the rest, n - first_round_samples
// beams rounded down to a multiple of beam_width (beam width = the rest when
// it is smaller); the first round's samples stay candidates, ranked with the
// beams by PRM score.
// Medium: n - first_round_samples more samples, PRM-weighted vote over all n.
// The budget is shared by both phases. Usage::auto_choice reports it.
struct AutoConfig {
  int32_t n = 16;                    // [2, 1024]
  int32_t first_round_samples = 4;   // [2, n - 1]
  float easy_agreement = 0.75f;      // [0, 1]
  float easy_score = 0.6f;           // [0, 1]
  float hard_agreement = 0.25f;      // [0, 1]
  float hard_score = 0.2f;           // [0, 1]
  int32_t beam_width = 4;            // [1, 64]
};

// arbor.v1.AnswerExtraction: RE2 pattern whose first capture group is the
// answer; empty takes the built-in chain (see answer.h).
struct AnswerExtractionConfig {
  std::string pattern;
};

using StrategyVariant = std::variant<GreedyConfig, BestOfNConfig, BeamSearchConfig, DvtsConfig,
                                     ParticleFilterConfig, MctsConfig, ParticleGibbsConfig,
                                     AutoConfig>;

struct StrategyConfig {
  StrategyVariant strategy = BestOfNConfig{};
  SamplingOptions sampling;
  StopOptions stop;
  BudgetLimits budget;
  AnswerExtractionConfig answer_extraction;
  // Soft cap on one candidate's tokens (search-and-learn's max_tokens): greedy
  // and best-of-N stop extending a candidate past it; the tree strategies'
  // last iteration generates up to it.
  int32_t max_solution_tokens = 2048;  // [1, 1 << 20]
  // Candidates kept in SolveResult (votes count all of them). [1, 1024].
  int32_t max_candidates = 8;
  // A step generated to EOS in one piece (no step delimiter: the tree
  // strategies' last iteration, MCTS's deepest expansion, rollouts and
  // finishes, best-of-N's endgame) is PRM-scored as the steps it holds, cut
  // after each step delimiter, as step-by-step candidates are: the PRM is
  // trained with a tag after each step. The candidate keeps the step as
  // generated, with one score, the aggregate of its pieces' scores (with
  // kLast, the last piece's). false: scored as one step (rounds 1 to 6 for
  // all but MCTS's rollouts). Search library only (docs/SCALING.md, round 7).
  bool split_whole_steps = true;
};

// "greedy", "best_of_n", "beam_search", "dvts", "particle_filter", "mcts",
// "particle_gibbs", "auto".
std::string_view StrategyName(const StrategyConfig& config);

// Whether the strategy calls a reward model (all but greedy and best-of-N
// majority vote).
bool StrategyNeedsScorer(const StrategyConfig& config);

// INVALID_ARGUMENT naming the field, e.g.
// "beam_search.n (6) must be divisible by beam_width (4)".
absl::Status ValidateStrategyConfig(const StrategyConfig& config);

struct Candidate {
  std::string text;                // all steps concatenated
  std::vector<std::string> steps;  // in order
  std::vector<float> step_scores;  // per step, [0, 1]; empty without a reward model
  double score = 0.0;              // aggregated score (particle filter: normalised weight)
  std::string answer;              // extracted, normalised; "" when none
  int32_t votes = 0;               // candidates (of all) sharing this answer
  double logprob = 0.0;            // sum of the policy's token logprobs
  bool finished = false;           // ended with EOS (not cut by budget/length)
  int32_t num_tokens = 0;          // generated tokens in this candidate
};

struct SolveResult {
  // Ranked best first (ended branches before ones the budget cut; then by the
  // strategy's selection), at most max_candidates.
  std::vector<Candidate> candidates;
  std::string answer;  // the selected answer (normalised)
  std::string text;    // the selected candidate's text
  Usage usage;
  bool budget_exhausted = false;
  std::string exhausted_by;  // kCap* name or ""
  std::string strategy;      // StrategyName
  // Why the search stopped: the cap (exhausted_by) when one did; else
  // "completed" (every branch ended), "iterations" (num_iterations or
  // num_simulations played out), "agreement" (adaptive best-of-N) or
  // "certainty" (the certainty probe stopped the last live branches).
  std::string stop_reason;
};

inline constexpr std::string_view kStopCertainty = "certainty";
inline constexpr std::string_view kStopCompleted = "completed";
inline constexpr std::string_view kStopIterations = "iterations";
inline constexpr std::string_view kStopAgreement = "agreement";

// One event per strategy iteration, for SolveStream.
struct IterationProgress {
  int32_t iteration = 0;  // from 0
  int32_t live = 0;       // unfinished branches after this step
  int32_t finished = 0;   // finished (set aside / done) branches
  double best_score = 0.0;
  std::string best_text;
  std::vector<double> branch_scores;  // live branches' aggregated scores
  Usage usage;                        // cumulative
};

struct JobContext {
  std::string question;
  uint64_t seed = 0;
  // Job acceptance time: the deadline is measured from here.
  absl::Time start = absl::Now();
  // Called once per iteration; may be empty.
  std::function<void(const IterationProgress&)> on_progress;
  // Polled between steps; true stops the job with CANCELLED. May be empty.
  std::function<bool()> is_cancelled;
  // Clock for the deadline; empty takes absl::Now (tests inject one).
  std::function<absl::Time()> now;
};

// Validates `config`, then runs it. `scorer` may be null only for strategies
// that need no reward model (greedy, best-of-N majority vote); else
// INVALID_ARGUMENT. Tournament selection needs a scorer with a pairwise
// judge; else FAILED_PRECONDITION. Generator/Scorer errors are returned as they are, except
// DEADLINE_EXCEEDED after the job's deadline, which ends the search with the
// best so far (exhausted_by "deadline").
absl::StatusOr<SolveResult> RunStrategy(const StrategyConfig& config, const JobContext& job,
                                        Generator& generator, Scorer* scorer);

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_STRATEGY_H_
