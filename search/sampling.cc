// Greedy and best-of-N: independent samples of whole solutions; adaptive
// best-of-N draws them in rounds and stops once the (PRM-weighted) vote is
// decided; tournament selection (tournament.cc) judges the distinct answers
// pairwise at the end. They are
// generated one step per iteration (all live samples in one Extend, sharing
// the prompt) so that the budget, deadline and progress events work step by
// step like the tree strategies; a step boundary does not change the
// distribution of the sampled text (the prefix cache keeps the cost down).
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "search/search_run.h"
#include "search/selection.h"

namespace arbor::search::internal {

absl::StatusOr<bool> DrawSamples(SearchRun& run, int count, const SamplingOptions& sampling,
                                 const CertaintyConfig* certainty, std::vector<Branch>& branches,
                                 int& iteration) {
  const Branch root;
  ExtendOptions options;
  options.sampling = sampling;
  const size_t first = branches.size();
  for (int round_step = 0;; ++round_step, ++iteration) {
    absl::StatusOr<bool> go = run.BeginIteration();
    if (!go.ok()) return go.status();
    if (!*go) return false;
    std::vector<const Branch*> parents;
    std::vector<int> samples;
    std::vector<size_t> index;  // parent -> position in `branches`
    if (round_step == 0) {
      parents.push_back(&root);
      samples.push_back(count);
    } else {
      // Longest first: in the budget endgame those are closest to an answer.
      for (size_t i = first; i < branches.size(); ++i) {
        if (!branches[i].done) index.push_back(i);
      }
      std::stable_sort(index.begin(), index.end(), [&](size_t a, size_t b) {
        return branches[a].tokens.size() > branches[b].tokens.size();
      });
      for (size_t i : index) {
        parents.push_back(&branches[i]);
        samples.push_back(1);
      }
    }
    std::optional<std::vector<int>> endgame = run.PlanEndgame(samples);
    if (endgame.has_value()) samples = *endgame;
    options.stop = endgame.has_value() ? run.FinalStop(parents) : run.StepStop();
    options.final_iteration = endgame.has_value();
    absl::StatusOr<std::vector<Child>> children = run.Extend(parents, samples, options);
    if (!children.ok()) return children.status();
    for (Child& c : *children) {
      if (round_step == 0) {
        branches.push_back(std::move(c.branch));
      } else {
        branches[index[c.parent]] = std::move(c.branch);
      }
    }
    int certain = 0;
    if (certainty != nullptr && certainty->enabled && !children->empty() && !endgame.has_value()) {
      std::vector<Branch*> live;
      for (size_t i = first; i < branches.size(); ++i) {
        if (!branches[i].done) live.push_back(&branches[i]);
      }
      absl::StatusOr<int> stopped = run.ProbeBranches(live, *certainty);
      if (!stopped.ok()) return stopped.status();
      certain = *stopped;
    }
    std::vector<const Branch*> live, done;
    for (const Branch& b : branches) (b.done ? done : live).push_back(&b);
    run.Report(iteration, live, done);
    if (children->empty() || endgame.has_value()) return false;
    bool round_live = false;
    for (size_t i = first; i < branches.size(); ++i) round_live = round_live || !branches[i].done;
    if (!round_live) {
      // The probes stopped this round's last live samples.
      if (certain > 0) run.set_stop_reason(kStopCertainty);
      ++iteration;
      return true;
    }
  }
}

absl::StatusOr<bool> ScoreSamples(SearchRun& run, std::vector<Branch>& branches,
                                  Aggregation aggregation) {
  // Finished candidates first, so that a reward budget too small for all of
  // them scores those; ones already scored (auto's first round) are kept.
  std::vector<Branch*> all;
  for (Branch& b : branches) {
    if (b.done && !b.scored) all.push_back(&b);
  }
  for (Branch& b : branches) {
    if (!b.done && !b.scored) all.push_back(&b);
  }
  if (!all.empty()) {
    absl::StatusOr<bool> ok =
        run.ScoreBranches(all, /*full=*/true, aggregation, /*allow_partial=*/true);
    if (!ok.ok()) return ok.status();
  }
  for (const Branch& b : branches) {
    if (!b.scored) return false;
  }
  return !branches.empty();
}

SolveResult FinishSamples(SearchRun& run, std::vector<Branch> branches,
                          const BestOfNConfig& best_of_n, bool scored) {
  RankOptions rank;
  std::vector<int> tiers;
  std::vector<double> weights;
  using Selection = BestOfNConfig::Selection;
  switch (best_of_n.selection) {
    case Selection::kReward:
      // Without scores (reward budget spent) a vote is the best fallback.
      rank.rule = scored ? VoteRule::kNone : VoteRule::kMajority;
      break;
    case Selection::kMajorityVote:
      rank.rule = VoteRule::kMajority;
      break;
    case Selection::kWeightedVote:
      rank.rule = scored ? VoteRule::kWeighted : VoteRule::kMajority;
      for (const Branch& b : branches) weights.push_back(b.score);
      rank.vote_weights = weights;
      break;
    case Selection::kTournament:  // FinishTournament; here (strategy auto) a vote
      rank.rule = VoteRule::kMajority;
      break;
    case Selection::kBestOfMajority:
      rank.rule = VoteRule::kBestOfMajority;
      rank.min_votes = std::max(
          1, static_cast<int>(std::ceil(
                 best_of_n.min_vote_fraction * static_cast<double>(branches.size()) - 1e-9)));
      break;
  }
  // Scored before unscored (reward budget), finished before cut.
  for (const Branch& b : branches) tiers.push_back((b.scored ? 0 : 2) + (b.done ? 0 : 1));
  rank.tiers = tiers;
  return run.Finish(std::move(branches), rank);
}

absl::StatusOr<SolveResult> RunSampling(SearchRun& run, int n, const SamplingOptions& sampling,
                                        const BestOfNConfig* best_of_n) {
  std::vector<Branch> branches;
  int iteration = 0;
  const CertaintyConfig* certainty = best_of_n != nullptr ? &best_of_n->certainty : nullptr;
  const int round = best_of_n != nullptr && best_of_n->round_size > 0 ? best_of_n->round_size : n;
  while (static_cast<int>(branches.size()) < n) {
    absl::StatusOr<bool> more = DrawSamples(
        run, std::min(round, n - static_cast<int>(branches.size())), sampling, certainty, branches,
        iteration);
    if (!more.ok()) return more.status();
    if (!*more || round >= n) break;
    if (static_cast<int>(branches.size()) >= n) break;
    // Adaptive best-of-N: stop once the vote is decided, judged on PRM-weighted
    // votes (each round is scored as it ends; a sample is scored once, so this
    // costs no reward tokens over scoring at the end) or raw votes for the
    // majority vote (BestOfNConfig::stop_agreement).
    std::vector<std::string> answers;
    std::vector<double> weights;
    // The tournament judges pairs at the end; its stop rule counts raw votes.
    const bool weighted = best_of_n->selection != BestOfNConfig::Selection::kMajorityVote &&
                          best_of_n->selection != BestOfNConfig::Selection::kTournament;
    if (weighted) {
      absl::StatusOr<bool> ok = ScoreSamples(run, branches, best_of_n->aggregation);
      if (!ok.ok()) return ok.status();
    }
    for (const Branch& b : branches) {
      answers.push_back(run.AnswerOf(b));
      weights.push_back(!weighted ? 1.0 : (b.scored ? b.score : 0.0));
    }
    if (LeaderConfidence(answers, weights) >= best_of_n->stop_agreement) {
      run.set_stop_reason(kStopAgreement);
      break;
    }
  }
  if (best_of_n == nullptr || branches.empty()) {
    std::vector<int> tiers;
    for (const Branch& b : branches) tiers.push_back(b.done ? 0 : 1);
    RankOptions rank;
    rank.tiers = tiers;
    return run.Finish(std::move(branches), rank);
  }
  if (best_of_n->selection == BestOfNConfig::Selection::kTournament) {
    return FinishTournament(run, std::move(branches));
  }
  bool scored = false;
  if (best_of_n->selection != BestOfNConfig::Selection::kMajorityVote) {
    absl::StatusOr<bool> ok = ScoreSamples(run, branches, best_of_n->aggregation);
    if (!ok.ok()) return ok.status();
    // As before: the first-ranked (a finished one) being scored means a vote by score works.
    for (const Branch& b : branches) scored = scored || b.scored;
  }
  return FinishSamples(run, std::move(branches), *best_of_n, scored);
}

}  // namespace arbor::search::internal
