// MCTS over steps: select by PUCT, expand a leaf with max_width sampled steps
// (one Extend: one branch, max_width samples), evaluate the best new child by
// its PRM score (or a rollout's), back the value up. One simulation is
// one strategy iteration (one step of the budget).
#include "search/mcts.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/status_macros.h"
#include "search/extend_and_score.h"
#include "search/search_run.h"
#include "search/selection.h"

namespace arbor::search {

double PuctExploration(int64_t parent_visits, double pb_c_base, double pb_c_init) {
  return std::log((static_cast<double>(parent_visits) + pb_c_base + 1.0) / pb_c_base) + pb_c_init;
}

double PuctScore(const PuctChild& child, int64_t parent_visits, double pb_c_base,
                 double pb_c_init) {
  const double c = PuctExploration(parent_visits, pb_c_base, pb_c_init);
  return child.q + c * child.prior * std::sqrt(static_cast<double>(parent_visits)) /
                       (1.0 + static_cast<double>(child.visits));
}

size_t SelectPuct(absl::Span<const PuctChild> children, int64_t parent_visits, double pb_c_base,
                  double pb_c_init) {
  ARBOR_CHECK(!children.empty());
  size_t best = 0;
  double best_score = PuctScore(children[0], parent_visits, pb_c_base, pb_c_init);
  for (size_t i = 1; i < children.size(); ++i) {
    const double s = PuctScore(children[i], parent_visits, pb_c_base, pb_c_init);
    if (s > best_score) {
      best = i;
      best_score = s;
    }
  }
  return best;
}

int64_t WideningRounds(int64_t visits, double widen_c, double widen_alpha, int64_t max_rounds) {
  if (widen_c <= 0.0 || visits <= 0) return 0;
  const double r = std::ceil(widen_c * std::pow(static_cast<double>(visits), widen_alpha));
  return std::min<int64_t>(max_rounds, static_cast<int64_t>(r));
}

std::vector<double> StepPriors(absl::Span<const double> logprobs, absl::Span<const int64_t> tokens) {
  ARBOR_CHECK(logprobs.size() == tokens.size());
  std::vector<double> p(logprobs.size());
  double top = -INFINITY;
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] = tokens[i] > 0 ? logprobs[i] / static_cast<double>(tokens[i]) : 0.0;
    top = std::max(top, p[i]);
  }
  double sum = 0.0;
  for (double& v : p) {
    v = std::exp(v - top);
    sum += v;
  }
  for (double& v : p) v /= sum;
  return p;
}

namespace internal {
namespace {

struct Node {
  Branch branch;
  double prior = 1.0;
  double prior_mass = 0.0;  // summed softmax mass of its samples, each weighted by its round's size
  double value = 0.0;       // the node's PRM score (aggregated)
  double value_sum = 0.0;
  int64_t visits = 0;
  int depth = 0;  // steps
  bool expanded = false;
  int64_t rounds = 0;  // sampling rounds (the first expansion and widenings)
  int64_t drawn = 0;   // samples drawn over them
  std::vector<std::unique_ptr<Node>> children;

  bool Terminal() const { return branch.done; }
  double Q() const { return visits > 0 ? value_sum / static_cast<double>(visits) : value; }
};

// Whether an expanded node may be sampled again: fewer distinct children
// than max_width and rounds left.
bool CanWiden(const Node& node, const MctsConfig& config) {
  return config.widen_c > 0.0 && node.expanded && !node.Terminal() &&
         node.rounds < config.widen_max_rounds &&
         static_cast<int64_t>(node.children.size()) < config.max_width;
}

// Whether its visits call for the next round now.
bool WidenDue(const Node& node, const MctsConfig& config) {
  return CanWiden(node, config) &&
         node.rounds < WideningRounds(node.visits, config.widen_c, config.widen_alpha,
                                      config.widen_max_rounds);
}

// Whether every path under `node` has ended and no node under it may widen
// (nothing left to explore).
bool Exhausted(const Node& node, const MctsConfig& config) {
  if (node.Terminal()) return true;
  if (!node.expanded) return false;
  if (CanWiden(node, config)) return false;
  if (node.children.empty()) return true;
  for (const auto& c : node.children) {
    if (!Exhausted(*c, config)) return false;
  }
  return true;
}

// Scores a rollout (its last step generated to EOS in one piece) and sets
// its score: ScoreBranches scores such a step as the steps it holds (the
// PRM is trained with a tag after each step; docs/SCALING.md, round 6)
// unless split_rollout_steps is off, the piece keeping one score, its
// steps' aggregate. False when the reward budget stopped it.
absl::StatusOr<bool> ScoreRollout(SearchRun& run, Branch& b, const MctsConfig& config) {
  return run.ScoreBranches({&b}, /*full=*/false, config.aggregation, /*allow_partial=*/false,
                           /*split_whole_steps=*/config.split_rollout_steps);
}

}  // namespace

absl::StatusOr<SolveResult> RunMcts(SearchRun& run, const MctsConfig& config) {
  Node root;
  root.visits = 0;
  std::vector<Branch> rollouts;
  bool finish = false;
  for (int sim = 0; sim < config.num_simulations; ++sim) {
    if (Exhausted(root, config)) break;
    absl::StatusOr<SearchRun::Iteration> gate = run.BeginTreeIteration();
    if (!gate.ok()) return gate.status();
    if (*gate != SearchRun::Iteration::kPlay) {
      finish = *gate != SearchRun::Iteration::kStop;
      break;
    }
    // Selection: PUCT down to a leaf, skipping exhausted subtrees; a node
    // due for widening (or whose children are all exhausted but that may
    // widen) is sampled again instead.
    std::vector<Node*> path = {&root};
    Node* node = &root;
    while (node->expanded && !node->Terminal()) {
      if (WidenDue(*node, config)) break;
      std::vector<PuctChild> view;
      std::vector<Node*> open;
      for (const auto& c : node->children) {
        if (Exhausted(*c, config)) continue;
        view.push_back({c->Q(), c->prior, c->visits});
        open.push_back(c.get());
      }
      if (open.empty()) break;
      node = open[SelectPuct(view, node->visits, config.pb_c_base, config.pb_c_init)];
      path.push_back(node);
    }

    double value = node->Q();
    if (!node->Terminal() && (!node->expanded || CanWiden(*node, config))) {
      // Expansion: max_width sampled steps in one call (one branch, so the
      // worker forks the node's cached prefix); a widening round samples
      // the missing width.
      const bool widening = node->expanded;
      const int32_t width =
          widening ? config.max_width - static_cast<int32_t>(node->children.size())
                   : config.max_width;
      StepOptions options;
      options.final_iteration = node->depth + 1 >= config.max_depth;
      options.aggregation = config.aggregation;
      absl::StatusOr<StepResult> step = ExtendAndScore(run, {&node->branch}, {width}, options);
      if (!step.ok()) return step.status();
      if (step->children.empty() || !step->scored) {
        finish = run.budget().exhausted();
        if (!step->scored && !step->children.empty()) {
          // Unscored children inherit the leaf's value and are finished as they are.
          for (Child& c : step->children) {
            auto child = std::make_unique<Node>();
            child->branch = std::move(c.branch);
            child->value = node->value;
            child->depth = node->depth + 1;
            node->children.push_back(std::move(child));
          }
          node->expanded = true;
        }
        break;
      }
      std::vector<double> logprobs;
      std::vector<int64_t> tokens;
      for (const Child& c : step->children) {
        const size_t before = node->branch.tokens.size();
        tokens.push_back(static_cast<int64_t>(c.branch.tokens.size() - before));
        logprobs.push_back(c.branch.logprob - node->branch.logprob);
      }
      const std::vector<double> priors = StepPriors(logprobs, tokens);
      const double round_size = static_cast<double>(step->children.size());
      // Samples that wrote the same step are one child: the same state, so
      // copies would split its visits and let PUCT spend simulations on
      // width (a small policy writes the same arithmetic step in most of
      // its samples; docs/SCALING.md). The child's prior is its copies'
      // summed prior: how often the policy chose that step. Over several
      // rounds, its share of all rounds' mass (a round weighing by its size).
      std::vector<Node*> fresh;
      for (size_t i = 0; i < step->children.size(); ++i) {
        Branch& b = step->children[i].branch;
        Node* same = nullptr;
        for (const auto& c : node->children) {
          if (c->branch.tokens == b.tokens) same = c.get();
        }
        if (same != nullptr) {
          same->prior += priors[i];
          same->prior_mass += priors[i] * round_size;
          continue;
        }
        auto child = std::make_unique<Node>();
        child->value = b.score;
        child->prior = priors[i];
        child->prior_mass = priors[i] * round_size;
        child->branch = std::move(b);
        child->depth = node->depth + 1;
        fresh.push_back(child.get());
        node->children.push_back(std::move(child));
      }
      node->expanded = true;
      node->rounds += 1;
      node->drawn += static_cast<int64_t>(step->children.size());
      if (widening) {
        for (auto& c : node->children) {
          c->prior = c->prior_mass / static_cast<double>(node->drawn);
        }
      }
      // Evaluation: the new child PUCT would pick next (unvisited: Q = its
      // PRM score). A round of copies only adds a visit to the node.
      Node* pick = nullptr;
      if (!fresh.empty()) {
        std::vector<PuctChild> view;
        for (const Node* c : fresh) view.push_back({c->Q(), c->prior, c->visits});
        pick = fresh[SelectPuct(view, node->visits + 1, config.pb_c_base, config.pb_c_init)];
        path.push_back(pick);
        value = pick->value;
      }
      if (pick != nullptr && config.rollouts && !pick->Terminal()) {
        // A rollout to EOS, its tail scored as the steps it holds
        // (ScoreRollout): its PRM score is the value, and it is a
        // candidate. Drawn at the job's sampling options with a
        // seed of its own (sampled_rollouts, the default), or greedily
        // (greedy rollouts from siblings mostly write the same tail, so the
        // vote has little to count: docs/SCALING.md, round 5).
        ExtendOptions rollout;
        rollout.sampling = run.config().sampling;
        if (!config.sampled_rollouts) rollout.sampling.temperature = 0.0f;
        rollout.stop = run.FinalStop({&pick->branch});
        rollout.final_iteration = true;
        rollout.shaped = true;
        absl::StatusOr<std::vector<Child>> done = run.Extend({&pick->branch}, {1}, rollout);
        if (!done.ok()) return done.status();
        if (!done->empty()) {
          Branch& b = done->front().branch;
          absl::StatusOr<bool> scored = ScoreRollout(run, b, config);
          if (!scored.ok()) return scored.status();
          if (!*scored) b.score = pick->value;
          value = b.score;
          rollouts.push_back(std::move(b));
        }
      }
    }
    // Backup.
    for (Node* n : path) {
      n->visits += 1;
      n->value_sum += value;
    }
    if (sim == config.num_simulations - 1) run.set_stop_reason(kStopIterations);

    std::vector<const Branch*> live, done;
    std::vector<Node*> stack = {&root};
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      if (n != &root && n->children.empty()) (n->Terminal() ? done : live).push_back(&n->branch);
      for (auto& c : n->children) stack.push_back(c.get());
    }
    run.Report(sim, live, done);
    if (run.budget().exhausted()) {
      finish = true;
      break;
    }
  }

  // Candidates: every finished node and rollout; the live leaves after them.
  std::vector<Node*> finished_nodes, live_leaves;
  std::vector<Node*> stack = {&root};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (n != &root) {
      if (n->Terminal()) {
        finished_nodes.push_back(n);
      } else if (n->children.empty()) {
        live_leaves.push_back(n);
      }
    }
    for (auto& c : n->children) stack.push_back(c.get());
  }
  // Anytime: when a cap ended the search, or the simulations ran out before
  // any path ended, live leaves are finished greedily: first the end of the
  // principal path (the most visited child from the root down, as OpenR
  // answers), then the deepest (closest to an answer), by Q among equals;
  // with nothing expanded yet, the root.
  // With rollouts every simulation gave a finished candidate: nothing is
  // finished greedily unless a cap ended the search.
  if (!finish && finished_nodes.empty() && rollouts.empty() && !live_leaves.empty()) finish = true;
  std::vector<const Branch*> rescored;  // finished below and scored whole
  if (finish) {
    Node* principal = &root;
    while (!principal->children.empty()) {
      Node* next = nullptr;
      for (const auto& c : principal->children) {
        if (c->Terminal()) continue;
        if (next == nullptr || c->visits > next->visits ||
            (c->visits == next->visits && c->Q() > next->Q())) {
          next = c.get();
        }
      }
      if (next == nullptr) break;
      principal = next;
    }
    std::vector<Node*> ranked_leaves = live_leaves;
    std::stable_sort(ranked_leaves.begin(), ranked_leaves.end(), [&](const Node* a, const Node* b) {
      if ((a == principal) != (b == principal)) return a == principal;
      return a->depth != b->depth ? a->depth > b->depth : a->Q() > b->Q();
    });
    std::vector<Branch*> ranked;
    for (Node* n : ranked_leaves) ranked.push_back(&n->branch);
    if (ranked.empty() && root.children.empty()) ranked.push_back(&root.branch);
    std::vector<bool> was_done;
    for (const Branch* b : ranked) was_done.push_back(b->done);
    ARBOR_RETURN_IF_ERROR(run.FinishBranches(ranked));
    // The finishes are candidates like any finished node: ranked by their own
    // PRM score, not by the unfinished prefix's value (which says nothing of
    // the steps the finish wrote; ranking by it picked the answer from an
    // unfinished node). Unscored when the reward budget is spent: those keep
    // the prefix's value.
    std::vector<Branch*> to_score;
    for (size_t i = 0; i < ranked.size(); ++i) {
      if (!was_done[i] && ranked[i]->done) to_score.push_back(ranked[i]);
    }
    if (!to_score.empty()) {
      absl::StatusOr<bool> scored =
          run.ScoreBranches(to_score, /*full=*/true, config.aggregation, /*allow_partial=*/true);
      if (!scored.ok()) return scored.status();
      for (Branch* b : to_score) {
        // Scored whole: a score per step, the finish's included.
        if (b->step_scores.size() == b->steps.size()) rescored.push_back(b);
      }
    }
    if (!root.branch.steps.empty()) finished_nodes.push_back(&root);
  }
  auto score_of = [&](Node* n) {
    for (const Branch* b : rescored) {
      if (b == &n->branch) return b->score;
    }
    return n->Q();
  };
  std::vector<Branch> candidates;
  std::vector<int> tiers;
  for (Node* n : finished_nodes) {
    n->branch.score = score_of(n);
    tiers.push_back(n->branch.done ? 0 : 1);
    candidates.push_back(std::move(n->branch));
  }
  for (Branch& b : rollouts) {
    tiers.push_back(0);
    candidates.push_back(std::move(b));
  }
  for (Node* n : live_leaves) {
    if (n->branch.steps.empty()) continue;
    n->branch.score = score_of(n);
    tiers.push_back(n->branch.done ? 0 : 1);
    candidates.push_back(std::move(n->branch));
  }
  RankOptions rank;
  rank.tiers = tiers;
  // The weighted vote counts the finished candidates only: an unfinished
  // node's text has no answer of its own.
  std::vector<double> weights;
  if (config.final_selection == MctsConfig::FinalSelection::kWeightedVote) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      weights.push_back(tiers[i] == 0 ? candidates[i].score : 0.0);
    }
    rank.rule = VoteRule::kWeighted;
    rank.vote_weights = weights;
  }
  return run.Finish(std::move(candidates), rank);
}

}  // namespace internal
}  // namespace arbor::search
