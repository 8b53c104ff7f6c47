// ExtendAndScore: one step of a tree strategy (beam search, DVTS, particle
// filtering, MCTS), internal to search/: one budget-shaped Extend of the
// parents with the step's (or the last iteration's) stop rules, then one
// scoring of the children. When the budget can no longer afford a step, the
// strategy finishes its best branches with SearchRun::FinishBranches. The budget is charged by SearchRun's Extend and
// ScoreBranches, exactly as when a strategy calls them itself.
// Thread-safety: as SearchRun (one job's thread).
#ifndef ARBOR_SEARCH_EXTEND_AND_SCORE_H_
#define ARBOR_SEARCH_EXTEND_AND_SCORE_H_

#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "search/search_run.h"
#include "search/strategy.h"

namespace arbor::search::internal {

struct StepOptions {
  // The strategy's last configured iteration (generates to EOS).
  bool final_iteration = false;
  // ExtendOptions::final_answer_ends (DVTS).
  bool final_answer_ends = false;
  // How ScoreBranches aggregates the children's step scores.
  Aggregation aggregation = Aggregation::kLast;
  // When set, scores the children of a step that is not the last instead of
  // ScoreBranches(newest step): true when all were scored, false when the
  // budget stopped it (beam search's lookahead).
  std::function<absl::StatusOr<bool>(std::vector<Child>& children)> score_unless_last;
};

struct StepResult {
  // In (parent, sample) order; empty when the budget or deadline ended the
  // search before any child (nothing was scored then). A shaped step has
  // fewer children than samples asked for (the trailing samples of each
  // parent, the weakest parents' first).
  std::vector<Child> children;
  // Whether this step was the last iteration.
  bool last = false;
  // Whether every child was scored; false when the reward budget stopped it.
  bool scored = false;
};

// Extends `parents` (ranked best first) by `samples`, shaped to the budget,
// with SearchRun's sampling and StepStop (FinalStop on the last iteration),
// and scores the children's newest step. Errors are
// Extend's and the scorer's.
absl::StatusOr<StepResult> ExtendAndScore(SearchRun& run, const std::vector<const Branch*>& parents,
                                          std::vector<int> samples, const StepOptions& options);

}  // namespace arbor::search::internal

#endif  // ARBOR_SEARCH_EXTEND_AND_SCORE_H_
