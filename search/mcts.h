// Monte-Carlo tree search over reasoning steps (OpenR's PUCT; STRATEGIES.md):
// the selection rule, exposed for tests. The search itself is RunMcts
// (search_run.h), configured by MctsConfig (strategy.h). Every node's prefix
// is a branch the worker's radix cache already holds, so walking the tree and
// expanding a leaf never re-prefills its path.
// Pure functions; thread-safe.
#ifndef ARBOR_SEARCH_MCTS_H_
#define ARBOR_SEARCH_MCTS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace arbor::search {

// One child as PUCT sees it.
struct PuctChild {
  double q = 0.0;      // mean backed-up value; the node's PRM score before its first visit
  double prior = 0.0;  // P(s, a), the siblings' priors summing to 1
  int64_t visits = 0;  // N(s, a)
};

// c(s) = log((N(s) + pb_c_base + 1) / pb_c_base) + pb_c_init.
double PuctExploration(int64_t parent_visits, double pb_c_base, double pb_c_init);

// Q + c(s) P(s, a) sqrt(N(s)) / (1 + N(s, a)).
double PuctScore(const PuctChild& child, int64_t parent_visits, double pb_c_base,
                 double pb_c_init);

// The index of the child with the highest PuctScore (the first on ties);
// children must not be empty.
size_t SelectPuct(absl::Span<const PuctChild> children, int64_t parent_visits, double pb_c_base,
                  double pb_c_init);

// Progressive widening: the sampling rounds a node of `visits` visits may
// have had, ceil(widen_c * visits^widen_alpha) capped at max_rounds (0 with
// widen_c = 0: no widening). A node whose rounds are fewer, and that holds
// fewer distinct children than max_width, is sampled again.
int64_t WideningRounds(int64_t visits, double widen_c, double widen_alpha, int64_t max_rounds);

// Priors of sibling steps from their policy logprobs: softmax over the mean
// token logprob of each step (steps of 0 tokens count as logprob 0).
std::vector<double> StepPriors(absl::Span<const double> logprobs, absl::Span<const int64_t> tokens);

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_MCTS_H_
