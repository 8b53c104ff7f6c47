// PRM-guided beam search with search-and-learn semantics (STRATEGIES.md):
// N candidates per iteration; finished ones set aside; the top N/M of the
// rest survive and share the next N samples (M each); optional greedy
// lookahead for scoring only; stops when N beams finished, none is left, or
// after num_iterations (the last one generates to EOS).
#include <algorithm>
#include <numeric>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "search/extend_and_score.h"
#include "search/search_run.h"

namespace arbor::search::internal {
namespace {

// Scores children through a greedy lookahead of `lookahead` steps: the PRM
// sees each child's steps plus its lookahead steps; the child keeps the scores
// of its own steps and is ranked by the aggregate over all of them.
absl::StatusOr<bool> ScoreWithLookahead(SearchRun& run, std::vector<Child>& children, int lookahead,
                                        Aggregation aggregation) {
  std::vector<Branch> look;
  look.reserve(children.size());
  for (const Child& c : children) look.push_back(c.branch);
  ExtendOptions options;
  options.sampling = run.config().sampling;
  options.sampling.temperature = 0.0f;
  options.stop = run.StepStop();
  options.shaped = true;
  for (int k = 0; k < lookahead; ++k) {
    std::vector<const Branch*> parents;
    std::vector<int> samples;
    std::vector<size_t> index;
    for (size_t i = 0; i < look.size(); ++i) {
      if (look[i].done) continue;
      parents.push_back(&look[i]);
      samples.push_back(1);
      index.push_back(i);
    }
    if (parents.empty()) break;
    absl::StatusOr<std::vector<Child>> extended = run.Extend(parents, samples, options);
    if (!extended.ok()) return extended.status();
    if (extended->empty()) break;  // budget: score what we have
    for (Child& c : *extended) look[index[c.parent]] = std::move(c.branch);
  }
  std::vector<Branch*> to_score;
  for (Branch& b : look) to_score.push_back(&b);
  absl::StatusOr<bool> ok = run.ScoreBranches(to_score, /*full=*/true, aggregation);
  if (!ok.ok() || !*ok) return ok;
  for (size_t i = 0; i < children.size(); ++i) {
    Branch& b = children[i].branch;
    b.step_scores.assign(look[i].step_scores.begin(),
                         look[i].step_scores.begin() + static_cast<long>(b.steps.size()));
    b.score = look[i].score;
    b.scored = true;
  }
  return true;
}

}  // namespace

absl::StatusOr<SolveResult> RunBeamSearch(SearchRun& run, const BeamSearchConfig& config,
                                          std::vector<Branch> extra) {
  const int n = config.n;
  const size_t keep = static_cast<size_t>(n / config.beam_width);
  std::vector<Branch> active(1);  // the empty root
  std::vector<Branch> completed;
  bool finish = false;  // a cap is near: finish the best beams greedily
  for (int iteration = 0; iteration < config.num_iterations; ++iteration) {
    absl::StatusOr<SearchRun::Iteration> gate = run.BeginTreeIteration();
    if (!gate.ok()) return gate.status();
    if (*gate != SearchRun::Iteration::kPlay) {
      finish = *gate != SearchRun::Iteration::kStop;
      break;
    }
    const bool final_iteration = iteration == config.num_iterations - 1;

    // The survivors share N samples: M each when N/M survive (ranked best
    // first, so a budget-shaped step takes samples from the weakest).
    std::vector<const Branch*> parents;
    std::vector<int> samples;
    const int k = static_cast<int>(active.size());
    for (int i = 0; i < k; ++i) {
      parents.push_back(&active[i]);
      samples.push_back(n / k + (i < n % k ? 1 : 0));
    }
    StepOptions options;
    options.final_iteration = final_iteration;
    options.aggregation = config.aggregation;
    if (config.lookahead > 0) {
      options.score_unless_last = [&](std::vector<Child>& children) {
        return ScoreWithLookahead(run, children, config.lookahead, config.aggregation);
      };
    }
    absl::StatusOr<StepResult> step = ExtendAndScore(run, parents, std::move(samples), options);
    if (!step.ok()) return step.status();
    std::vector<Child>& children = step->children;
    if (children.empty()) {
      finish = run.budget().exhausted();
      break;
    }
    const bool last = step->last;
    if (last) run.set_stop_reason(kStopIterations);

    if (!step->scored) {
      // Reward budget spent: the new beams (ranked by their parents, best
      // first) are finished as they are.
      active.clear();
      for (Child& c : children) {
        (c.branch.done ? completed : active).push_back(std::move(c.branch));
      }
      finish = true;
      break;
    }

    int certain = 0;
    if (config.certainty.enabled && !last) {
      // Beams whose probed answer is certain are set aside as finished.
      std::vector<Branch*> probe;
      for (Child& c : children) {
        if (!c.branch.done) probe.push_back(&c.branch);
      }
      absl::StatusOr<int> stopped = run.ProbeBranches(probe, config.certainty);
      if (!stopped.ok()) return stopped.status();
      certain = *stopped;
    }
    std::vector<Branch> live;
    std::vector<uint64_t> tie;
    for (Child& c : children) {
      if (c.branch.done) {
        completed.push_back(std::move(c.branch));
      } else {
        live.push_back(std::move(c.branch));
        tie.push_back(run.tie_rng().NextBits());
      }
    }
    std::vector<size_t> order(live.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::make_tuple(-live[a].score, tie[a]) < std::make_tuple(-live[b].score, tie[b]);
    });
    active.clear();
    if (static_cast<int>(completed.size()) < n) {
      for (size_t i = 0; i < std::min(keep, order.size()); ++i) {
        active.push_back(std::move(live[order[i]]));
      }
    }
    std::vector<const Branch*> live_view, done_view;
    for (const Branch& b : active) live_view.push_back(&b);
    for (const Branch& b : completed) done_view.push_back(&b);
    run.Report(iteration, live_view, done_view);
    // The probes ended the search: they stopped the last live beams, or
    // filled the N finished ones.
    if (active.empty() && certain > 0) run.set_stop_reason(kStopCertainty);
    if (active.empty() || last) break;
  }
  if (finish) {
    std::vector<Branch*> ranked;
    for (Branch& b : active) ranked.push_back(&b);
    ARBOR_RETURN_IF_ERROR(run.FinishBranches(ranked));
  }

  std::vector<Branch> candidates = std::move(completed);
  for (Branch& b : active) {
    if (!b.steps.empty()) candidates.push_back(std::move(b));
  }
  for (Branch& b : extra) candidates.push_back(std::move(b));
  std::vector<int> tiers;
  for (const Branch& b : candidates) tiers.push_back(b.done ? 0 : 1);
  RankOptions rank;
  rank.tiers = tiers;
  return run.Finish(std::move(candidates), rank);
}

}  // namespace arbor::search::internal
