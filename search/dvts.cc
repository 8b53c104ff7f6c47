// Diverse verifier tree search (search-and-learn semantics, STRATEGIES.md):
// N/M independent subtrees; each iteration every live subtree samples M
// candidate steps and greedily keeps the best by PRM score. A subtree ends on
// EOS or a final answer (\boxed). Returns the last M candidates of every
// subtree, so N answers. All generated tokens are counted.
#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "search/extend_and_score.h"
#include "search/search_run.h"

namespace arbor::search::internal {

absl::StatusOr<SolveResult> RunDvts(SearchRun& run, const DvtsConfig& config) {
  struct Subtree {
    Branch current;
    std::vector<Branch> leaves;  // the candidates of its last expansion
    bool done = false;
  };
  const int m = config.beam_width;
  std::vector<Subtree> subtrees(static_cast<size_t>(config.n / m));
  bool finish = false;  // a cap is near: finish the best subtrees greedily
  for (int iteration = 0; iteration < config.num_iterations; ++iteration) {
    absl::StatusOr<SearchRun::Iteration> gate = run.BeginTreeIteration();
    if (!gate.ok()) return gate.status();
    if (*gate != SearchRun::Iteration::kPlay) {
      finish = *gate != SearchRun::Iteration::kStop;
      break;
    }
    const bool final_iteration = iteration == config.num_iterations - 1;

    std::vector<const Branch*> parents;
    std::vector<int> samples;
    std::vector<size_t> index;
    for (size_t t = 0; t < subtrees.size(); ++t) {
      if (!subtrees[t].done) index.push_back(t);
    }
    // Best subtrees first: a budget-shaped step takes samples from the weakest.
    std::stable_sort(index.begin(), index.end(), [&](size_t a, size_t b) {
      return subtrees[a].current.score > subtrees[b].current.score;
    });
    for (size_t t : index) {
      parents.push_back(&subtrees[t].current);
      samples.push_back(m);
    }
    StepOptions options;
    options.final_iteration = final_iteration;
    options.final_answer_ends = true;
    options.aggregation = config.aggregation;
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
      // Reward budget spent: every extended subtree goes on from its first
      // (unscored) new candidate, which the finish completes.
      for (Child& c : children) {
        Subtree& tree = subtrees[index[c.parent]];
        if (c.sample == 0) {
          tree.current = c.branch;
          tree.done = tree.current.done;
          tree.leaves.clear();
        }
        tree.leaves.push_back(std::move(c.branch));
      }
      finish = true;
      break;
    }

    // Children come grouped by parent, in parent order.
    for (size_t begin = 0; begin < children.size();) {
      size_t end = begin;
      const size_t parent = children[begin].parent;
      while (end < children.size() && children[end].parent == parent) ++end;
      Subtree& tree = subtrees[index[parent]];
      size_t best = begin;
      uint64_t best_tie = run.tie_rng().NextBits();
      for (size_t i = begin + 1; i < end; ++i) {
        const uint64_t tie = run.tie_rng().NextBits();
        const double s = children[i].branch.score;
        const double best_score = children[best].branch.score;
        if (std::make_tuple(-s, tie) < std::make_tuple(-best_score, best_tie)) {
          best = i;
          best_tie = tie;
        }
      }
      tree.current = children[best].branch;
      tree.done = tree.current.done;
      tree.leaves.clear();
      for (size_t i = begin; i < end; ++i) tree.leaves.push_back(std::move(children[i].branch));
      begin = end;
    }
    std::vector<const Branch*> live, done;
    for (const Subtree& t : subtrees) (t.done ? done : live).push_back(&t.current);
    run.Report(iteration, live, done);
    if (live.empty() || last) break;
  }

  if (finish) {
    // The live subtrees, best first, finish their current branch; it joins
    // the subtree's candidates.
    std::vector<size_t> live;
    for (size_t t = 0; t < subtrees.size(); ++t) {
      if (!subtrees[t].done) live.push_back(t);
    }
    std::stable_sort(live.begin(), live.end(), [&](size_t a, size_t b) {
      return subtrees[a].current.score > subtrees[b].current.score;
    });
    std::vector<Branch*> ranked;
    for (size_t t : live) ranked.push_back(&subtrees[t].current);
    ARBOR_RETURN_IF_ERROR(run.FinishBranches(ranked));
    for (size_t t : live) {
      Subtree& tree = subtrees[t];
      if (tree.current.steps.empty()) continue;
      if (tree.current.done || tree.leaves.empty()) {
        tree.leaves.push_back(tree.current);
        tree.done = tree.current.done;
      }
    }
  }
  std::vector<Branch> candidates;
  for (Subtree& t : subtrees) {
    if (!t.leaves.empty()) {
      for (Branch& b : t.leaves) candidates.push_back(std::move(b));
    } else if (!t.current.steps.empty()) {
      candidates.push_back(std::move(t.current));
    }
  }
  std::vector<int> tiers;
  for (const Branch& b : candidates) tiers.push_back(b.done ? 0 : 1);
  RankOptions rank;
  rank.tiers = tiers;
  return run.Finish(std::move(candidates), rank);
}

}  // namespace arbor::search::internal
