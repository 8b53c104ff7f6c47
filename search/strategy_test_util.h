// Shared by the strategy tests (strategy_test.cc, strategy_families_test.cc):
// a strategy's config and a job over the fake world
// (search/testing/fake_world.h). Header-only; test code only.
#ifndef ARBOR_SEARCH_STRATEGY_TEST_UTIL_H_
#define ARBOR_SEARCH_STRATEGY_TEST_UTIL_H_

#include <cstdint>

#include "search/strategy.h"
#include "search/testing/fake_world.h"

namespace arbor::search {

// `strategy` with room for every candidate it makes.
inline StrategyConfig Config(const StrategyVariant& strategy) {
  StrategyConfig config;
  config.strategy = strategy;
  config.max_candidates = 1024;
  return config;
}

inline JobContext Job(const testing::FakeProblem& problem, uint64_t seed) {
  JobContext job;
  job.question = problem.Question();
  job.seed = seed;
  return job;
}

inline const testing::FakeProblem kProblem{.id = 3, .p = 0.6, .num_steps = 4};

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_STRATEGY_TEST_UTIL_H_
