// ExtendAndScore: one step of a tree strategy (beam search, DVTS, particle
// filtering), internal to search/: the budget endgame plan, one Extend of the
// parents with the step's (or the last iteration's) stop rules, then one
// scoring of the children. The budget is charged by SearchRun's Extend and
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
  // The strategy's last configured iteration (the endgame also makes a step
  // the last).
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
  // search before any child (nothing was scored then).
  std::vector<Child> children;
  // The samples per parent the endgame drew, when it played this step.
  std::optional<std::vector<int>> endgame;
  // Whether this step was the last iteration (final or endgame).
  bool last = false;
  // Whether every child was scored; false when the reward budget stopped it.
  bool scored = false;
};

// Plans the endgame over `samples` (parents ranked best first), extends
// `parents` by the samples with SearchRun's sampling and StepStop (FinalStop
// on the last iteration), and scores the children's newest step. Errors are
// Extend's and the scorer's.
absl::StatusOr<StepResult> ExtendAndScore(SearchRun& run, const std::vector<const Branch*>& parents,
                                          std::vector<int> samples, const StepOptions& options);

}  // namespace arbor::search::internal

#endif  // ARBOR_SEARCH_EXTEND_AND_SCORE_H_
