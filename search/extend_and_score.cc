#include "search/extend_and_score.h"

#include <utility>

namespace arbor::search::internal {

absl::StatusOr<StepResult> ExtendAndScore(SearchRun& run, const std::vector<const Branch*>& parents,
                                          std::vector<int> samples, const StepOptions& options) {
  StepResult result;
  result.last = options.final_iteration;
  ExtendOptions extend;
  extend.sampling = run.config().sampling;
  extend.stop = result.last ? run.FinalStop(parents) : run.StepStop();
  extend.final_iteration = result.last;
  extend.final_answer_ends = options.final_answer_ends;
  extend.shaped = true;
  absl::StatusOr<std::vector<Child>> children = run.Extend(parents, samples, extend);
  if (!children.ok()) return children.status();
  result.children = *std::move(children);
  if (result.children.empty()) return result;

  absl::StatusOr<bool> scored;
  if (options.score_unless_last && !result.last) {
    scored = options.score_unless_last(result.children);
  } else {
    std::vector<Branch*> to_score;
    to_score.reserve(result.children.size());
    for (Child& c : result.children) to_score.push_back(&c.branch);
    scored = run.ScoreBranches(to_score, /*full=*/false, options.aggregation);
  }
  if (!scored.ok()) return scored.status();
  result.scored = *scored;
  return result;
}

}  // namespace arbor::search::internal
