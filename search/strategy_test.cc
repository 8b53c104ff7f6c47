// What every strategy does, end to end in the fake world
// (search/testing/fake_world.h): config checks, determinism, usage, caps,
// budgets, deadlines, cancellation, errors and progress events. Each family's
// own behaviour is in strategy_families_test.cc.
#include "search/strategy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "search/strategy_test_util.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using ::arbor::search::testing::FakeGenerator;
using ::arbor::search::testing::FakeProblem;
using ::arbor::search::testing::FakeScorer;
using ::arbor::search::testing::IsRightAnswer;
using ::testing::HasSubstr;

struct NamedStrategy {
  std::string name;
  StrategyVariant strategy;
};

// Every strategy and its main variants, small enough to run in milliseconds.
std::vector<NamedStrategy> AllStrategies() {
  using S = BestOfNConfig::Selection;
  using PF = ParticleFilterConfig;
  std::vector<NamedStrategy> all;
  all.push_back({"greedy", GreedyConfig{}});
  all.push_back({"greedy_sampled", GreedyConfig{.temperature = 0.8f}});
  for (auto [name, selection] : {std::pair{"bon_reward", S::kReward},
                                 {"bon_majority", S::kMajorityVote},
                                 {"bon_weighted", S::kWeightedVote},
                                 {"bon_best_of_majority", S::kBestOfMajority}}) {
    all.push_back({name, BestOfNConfig{.n = 8, .selection = selection}});
  }
  all.push_back({"bon_min", BestOfNConfig{.n = 8, .aggregation = Aggregation::kMin}});
  all.push_back({"beam", BeamSearchConfig{.n = 8, .beam_width = 2, .num_iterations = 8}});
  all.push_back({"beam_lookahead",
                 BeamSearchConfig{.n = 8, .beam_width = 4, .num_iterations = 8, .lookahead = 2}});
  all.push_back({"dvts", DvtsConfig{.n = 8, .beam_width = 4, .num_iterations = 8}});
  all.push_back({"pf", PF{.n = 8, .num_iterations = 8}});
  all.push_back({"pf_systematic_cumulative", PF{.n = 8,
                                                .resampling = PF::Resampling::kSystematic,
                                                .weight_update = PF::WeightUpdate::kCumulative,
                                                .num_iterations = 8}});
  all.push_back({"pf_ess_absorb_vote", PF{.n = 8,
                                          .ess_threshold = 0.5f,
                                          .absorb_finished = true,
                                          .final_selection = PF::FinalSelection::kWeightedVote,
                                          .num_iterations = 8}});
  all.push_back({"pf_sample", PF{.n = 8,
                                 .temperature = 2.0f,
                                 .final_selection = PF::FinalSelection::kSample,
                                 .num_iterations = 8}});
  return all;
}

void ExpectSameResult(const SolveResult& a, const SolveResult& b) {
  ASSERT_EQ(a.candidates.size(), b.candidates.size());
  for (size_t i = 0; i < a.candidates.size(); ++i) {
    EXPECT_EQ(a.candidates[i].text, b.candidates[i].text);
    EXPECT_EQ(a.candidates[i].step_scores, b.candidates[i].step_scores);
    EXPECT_EQ(a.candidates[i].score, b.candidates[i].score);
    EXPECT_EQ(a.candidates[i].votes, b.candidates[i].votes);
  }
  EXPECT_EQ(a.answer, b.answer);
  EXPECT_EQ(a.usage.generated_tokens, b.usage.generated_tokens);
  EXPECT_EQ(a.usage.reward_tokens, b.usage.reward_tokens);
  EXPECT_EQ(a.usage.steps, b.usage.steps);
}

TEST(StrategyTest, InvalidConfigsAreRejectedNamingTheField) {
  struct Case {
    std::function<void(StrategyConfig&)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& c) { c.strategy = BeamSearchConfig{.n = 6, .beam_width = 4}; },
       "beam_search.n (6) must be divisible by beam_width (4)"},
      {[](auto& c) { c.strategy = BeamSearchConfig{.n = 8, .beam_width = 16}; },
       "beam_search.beam_width (16)"},
      {[](auto& c) { c.strategy = BeamSearchConfig{.lookahead = 9}; }, "beam_search.lookahead (9)"},
      {[](auto& c) { c.strategy = BeamSearchConfig{.num_iterations = 0}; },
       "beam_search.num_iterations (0)"},
      {[](auto& c) { c.strategy = DvtsConfig{.n = 0}; }, "dvts.n (0)"},
      {[](auto& c) { c.strategy = DvtsConfig{.n = 10, .beam_width = 4}; },
       "dvts.n (10) must be divisible by beam_width (4)"},
      {[](auto& c) { c.strategy = BestOfNConfig{.n = 5000}; }, "best_of_n.n (5000)"},
      {[](auto& c) {
         c.strategy = BestOfNConfig{.selection = BestOfNConfig::Selection::kBestOfMajority,
                                    .min_vote_fraction = 0.0f};
       },
       "best_of_n.min_vote_fraction"},
      {[](auto& c) { c.strategy = ParticleFilterConfig{.temperature = 0.0f}; },
       "particle_filter.temperature"},
      {[](auto& c) { c.strategy = ParticleFilterConfig{.ess_threshold = 1.5f}; },
       "particle_filter.ess_threshold"},
      {[](auto& c) { c.strategy = ParticleFilterConfig{.n = 2000}; }, "particle_filter.n (2000)"},
      {[](auto& c) { c.strategy = GreedyConfig{.temperature = -1.0f}; }, "sampling.temperature"},
      {[](auto& c) { c.sampling.top_p = 0.0f; }, "sampling.top_p"},
      {[](auto& c) { c.sampling.top_k = -3; }, "sampling.top_k"},
      {[](auto& c) { c.stop.max_step_tokens = 0; }, "stop.max_step_tokens (0)"},
      {[](auto& c) { c.stop.step_delimiters = {""}; }, "stop.step_delimiters[0]"},
      {[](auto& c) { c.budget.max_generated_tokens = -1; }, "budget.max_generated_tokens"},
      {[](auto& c) { c.budget.deadline = absl::Milliseconds(-5); }, "budget.deadline_ms"},
      {[](auto& c) { c.answer_extraction.pattern = "(unclosed"; }, "answer_extraction.pattern"},
      {[](auto& c) { c.max_candidates = 0; }, "max_candidates (0)"},
  };
  for (const Case& test : cases) {
    StrategyConfig config = Config(BestOfNConfig{});
    test.mutate(config);
    FakeGenerator generator;
    FakeScorer scorer;
    auto result = RunStrategy(config, Job(kProblem, 1), generator, &scorer);
    ASSERT_FALSE(result.ok()) << test.message;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(test.message));
    EXPECT_EQ(generator.calls(), 0);
  }
}

TEST(StrategyTest, ReRankingStrategiesNeedAScorer) {
  FakeGenerator generator;
  for (const StrategyVariant& s :
       {StrategyVariant{BeamSearchConfig{}}, StrategyVariant{DvtsConfig{}},
        StrategyVariant{ParticleFilterConfig{}}, StrategyVariant{BestOfNConfig{}}}) {
    auto result = RunStrategy(Config(s), Job(kProblem, 1), generator, nullptr);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()), HasSubstr("reward_model"));
  }
  EXPECT_TRUE(StrategyNeedsScorer(Config(BeamSearchConfig{})));
  EXPECT_FALSE(StrategyNeedsScorer(Config(GreedyConfig{})));
  EXPECT_FALSE(StrategyNeedsScorer(
      Config(BestOfNConfig{.selection = BestOfNConfig::Selection::kMajorityVote})));
  // Majority vote and greedy need none.
  auto vote = RunStrategy(
      Config(BestOfNConfig{.n = 4, .selection = BestOfNConfig::Selection::kMajorityVote}),
      Job(kProblem, 1), generator, nullptr);
  ASSERT_TRUE(vote.ok()) << vote.status();
  EXPECT_EQ(vote->usage.reward_calls, 0);
  EXPECT_TRUE(RunStrategy(Config(GreedyConfig{}), Job(kProblem, 1), generator, nullptr).ok());
}

TEST(StrategyTest, EveryStrategyIsDeterministicForASeed) {
  for (const NamedStrategy& s : AllStrategies()) {
    SCOPED_TRACE(s.name);
    std::vector<SolveResult> results;
    for (uint64_t seed : {5, 5, 6}) {
      FakeGenerator generator;
      FakeScorer scorer(/*noise=*/1.0);
      auto result = RunStrategy(Config(s.strategy), Job(kProblem, seed), generator, &scorer);
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_FALSE(result->candidates.empty());
      EXPECT_FALSE(result->budget_exhausted);
      EXPECT_EQ(result->strategy, std::string(StrategyName(Config(s.strategy))));
      results.push_back(*std::move(result));
    }
    ExpectSameResult(results[0], results[1]);
    if (s.name == "greedy") {
      ExpectSameResult(results[0], results[2]);  // temperature 0 ignores the seed
    } else {
      std::vector<std::string> a, b;
      for (const Candidate& c : results[0].candidates) a.push_back(c.text);
      for (const Candidate& c : results[2].candidates) b.push_back(c.text);
      EXPECT_NE(a, b) << "another seed should sample other solutions";
    }
  }
}

TEST(StrategyTest, UsageMatchesWhatTheServicesCounted) {
  for (const NamedStrategy& s : AllStrategies()) {
    SCOPED_TRACE(s.name);
    FakeGenerator generator;
    FakeScorer scorer(0.5);
    auto result = RunStrategy(Config(s.strategy), Job(kProblem, 9), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->usage.generated_tokens, generator.generated_tokens());
    EXPECT_EQ(result->usage.worker_calls, generator.calls());
    EXPECT_EQ(result->usage.reward_tokens, scorer.reward_tokens());
    EXPECT_EQ(result->usage.reward_calls, scorer.calls());
    EXPECT_GT(result->usage.prefill_tokens, 0);
    int64_t candidate_tokens = 0;
    for (const Candidate& c : result->candidates) {
      EXPECT_EQ(c.steps.size() > 0, true);
      candidate_tokens = std::max<int64_t>(candidate_tokens, c.num_tokens);
    }
    EXPECT_LE(candidate_tokens, result->usage.generated_tokens);
  }
}

// The heart of the budget contract: for every strategy and every cap, the
// usage never passes the cap, every single request was sized to what was left,
// and a binding cap is reported.
TEST(StrategyTest, NoCapIsEverPassed) {
  struct Cap {
    std::string name;
    BudgetLimits limits;
  };
  std::vector<Cap> caps;
  for (int64_t tokens : {1, 15, 50, 333, 1000}) {
    caps.push_back({"generated_tokens", BudgetLimits{.max_generated_tokens = tokens}});
  }
  for (int64_t calls : {1, 2, 3}) {
    caps.push_back({"reward_calls", BudgetLimits{.max_reward_calls = calls}});
  }
  for (int64_t tokens : {100, 400, 1500}) {
    caps.push_back({"reward_tokens", BudgetLimits{.max_reward_tokens = tokens}});
  }
  for (int32_t steps : {1, 2, 3}) caps.push_back({"steps", BudgetLimits{.max_steps = steps}});

  for (const NamedStrategy& s : AllStrategies()) {
    // Unconstrained usage tells which caps bind.
    FakeGenerator free_generator;
    FakeScorer free_scorer(0.5);
    const FakeProblem problem{.id = 5, .p = 0.7, .num_steps = 5};
    auto unconstrained =
        RunStrategy(Config(s.strategy), Job(problem, 3), free_generator, &free_scorer);
    ASSERT_TRUE(unconstrained.ok());
    for (const Cap& cap : caps) {
      SCOPED_TRACE(s.name + " " + cap.name + " " +
                   std::to_string(cap.limits.max_generated_tokens + cap.limits.max_reward_calls +
                                  cap.limits.max_reward_tokens + cap.limits.max_steps));
      StrategyConfig config = Config(s.strategy);
      config.budget = cap.limits;
      FakeGenerator generator;
      FakeScorer scorer(0.5);
      auto result = RunStrategy(config, Job(problem, 3), generator, &scorer);
      ASSERT_TRUE(result.ok()) << result.status();
      const Usage& u = result->usage;
      const Usage& free = unconstrained->usage;
      EXPECT_EQ(u.generated_tokens, generator.generated_tokens());
      EXPECT_EQ(u.reward_calls, scorer.calls());
      EXPECT_EQ(u.reward_tokens, scorer.reward_tokens());
      bool binds = false;
      // Token caps are enforced on upper bounds (step cap x outputs, the
      // scorer's MaxRewardTokens), so they may end a search that would have
      // fit; call and step caps are exact.
      const bool exact = cap.name == "reward_calls" || cap.name == "steps";
      if (cap.limits.max_generated_tokens > 0) {
        EXPECT_LE(u.generated_tokens, cap.limits.max_generated_tokens);
        for (const auto& call : generator.call_log()) {
          EXPECT_LE(int64_t{call.outputs} * call.max_step_tokens,
                    cap.limits.max_generated_tokens - call.generated_before);
        }
        binds = free.generated_tokens > cap.limits.max_generated_tokens;
      }
      if (cap.limits.max_reward_calls > 0) {
        EXPECT_LE(u.reward_calls, cap.limits.max_reward_calls);
        binds = free.reward_calls > cap.limits.max_reward_calls;
      }
      if (cap.limits.max_reward_tokens > 0) {
        EXPECT_LE(u.reward_tokens, cap.limits.max_reward_tokens);
        binds = free.reward_tokens > cap.limits.max_reward_tokens;
      }
      if (cap.limits.max_steps > 0) {
        EXPECT_LE(u.steps, cap.limits.max_steps);
        binds = free.steps > cap.limits.max_steps;
      }
      // A token cap may shape a tree search (fewer outputs per step) that then
      // completes: it bound, but did not stop the search early.
      if (binds) EXPECT_TRUE(result->budget_exhausted || u.shaped_steps > 0);
      if (exact) EXPECT_EQ(result->budget_exhausted, binds);
      if (result->budget_exhausted) {
        EXPECT_EQ(result->exhausted_by, cap.name);
      } else if (u.shaped_steps == 0) {
        ExpectSameResult(*result, *unconstrained);
      }
      // Anytime: whatever was generated and kept is returned.
      if (cap.name == "steps" ||
          (cap.name == "generated_tokens" && cap.limits.max_generated_tokens >= 50)) {
        EXPECT_FALSE(result->candidates.empty());
      }
    }
  }
}

// A tight token budget: best-of-N plays its endgame (the longest samples to
// EOS); the tree strategies shrink their expansions and, when no full step is
// affordable any more, finish their best branches greedily from the reserve.
// Either way the best candidate is finished.
TEST(StrategyTest, TightTokenBudgetStillFinishesTheBestBranches) {
  for (const NamedStrategy& s : AllStrategies()) {
    SCOPED_TRACE(s.name);
    StrategyConfig config = Config(s.strategy);
    config.stop.max_step_tokens = 32;
    config.budget.max_generated_tokens = 300;
    const FakeProblem problem{.id = 8, .p = 0.8, .num_steps = 5};
    FakeGenerator generator;
    FakeScorer scorer(0.5);
    auto result = RunStrategy(config, Job(problem, 7), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    const Usage& u = result->usage;
    EXPECT_LE(u.generated_tokens, 300);
    ASSERT_FALSE(result->candidates.empty());
    EXPECT_TRUE(result->candidates[0].finished)
        << result->candidates[0].text << "\n" << u.generated_tokens << " tokens, " << u.steps
        << " steps, " << u.shaped_steps << " shaped, " << u.reserve_generated_tokens
        << " reserve tokens, " << u.reserve_finished_branches << " finished by the reserve";
    EXPECT_FALSE(result->answer.empty());
    if (s.name.rfind("greedy", 0) == 0) continue;
    const bool tree = s.name.rfind("bon", 0) != 0;
    if (tree) {
      // The cap shaped the search: fewer outputs, each step at its full cap.
      EXPECT_GT(u.shaped_steps, 0);
      for (const auto& call : generator.call_log()) {
        if (!call.to_eos) EXPECT_EQ(call.max_step_tokens, 32);
      }
    }
    if (result->budget_exhausted) {
      EXPECT_EQ(result->exhausted_by, "generated_tokens");
      EXPECT_TRUE(generator.call_log().back().to_eos);
      if (tree) {
        EXPECT_EQ(generator.call_log().back().temperature, 0.0f);
        EXPECT_GT(u.reserve_generated_tokens, 0);
      }
    } else {
      EXPECT_TRUE(tree) << "best-of-N cannot give 8 samples a full step: its endgame ends it";
    }
  }
}

TEST(StrategyTest, DeadlineEndsTheSearchWithTheBestSoFar) {
  for (const NamedStrategy& s : AllStrategies()) {
    SCOPED_TRACE(s.name);
    absl::Time now = absl::FromUnixSeconds(100);
    FakeGenerator::Options options;
    options.on_extend = [&] { now += absl::Milliseconds(100); };
    FakeGenerator generator(options);
    FakeScorer scorer(0.5);
    StrategyConfig config = Config(s.strategy);
    config.budget.deadline = absl::Milliseconds(250);
    JobContext job = Job(FakeProblem{.id = 1, .p = 0.7, .num_steps = 6}, 2);
    job.start = now;
    job.now = [&] { return now; };
    auto result = RunStrategy(config, job, generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->budget_exhausted);
    EXPECT_EQ(result->exhausted_by, "deadline");
    EXPECT_LE(generator.calls(), 3);  // calls start before the deadline only
    EXPECT_FALSE(result->candidates.empty());
  }
}

TEST(StrategyTest, AnRpcDeadlineAtTheJobDeadlineEndsTheSearchNotTheJob) {
  absl::Time now = absl::FromUnixSeconds(100);
  FakeGenerator::Options options;
  options.on_extend = [&] { now += absl::Milliseconds(600); };
  options.fail_after_calls = 1;
  options.fail_code = absl::StatusCode::kDeadlineExceeded;
  FakeGenerator generator(options);
  StrategyConfig config =
      Config(BestOfNConfig{.n = 4, .selection = BestOfNConfig::Selection::kMajorityVote});
  config.budget.deadline = absl::Milliseconds(1000);
  JobContext job = Job(kProblem, 2);
  job.start = now;
  job.now = [&] { return now; };
  auto result = RunStrategy(config, job, generator, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exhausted_by, "deadline");
  EXPECT_EQ(result->candidates.size(), 4u);  // the first step of each sample
  // Before the job's deadline the same error is the worker's, and is returned.
  now = absl::FromUnixSeconds(100);
  config.budget.deadline = absl::Seconds(10);
  FakeGenerator early(options);
  auto failed = RunStrategy(config, job, early, nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(StrategyTest, CancellationStopsBetweenSteps) {
  for (const NamedStrategy& s : AllStrategies()) {
    SCOPED_TRACE(s.name);
    FakeGenerator generator;
    FakeScorer scorer(0.5);
    int events = 0;
    int64_t calls_at_cancel = -1;
    JobContext job = Job(FakeProblem{.id = 1, .p = 0.7, .num_steps = 6}, 2);
    job.on_progress = [&](const IterationProgress& p) {
      EXPECT_EQ(p.iteration, events);
      if (++events == 2) calls_at_cancel = generator.calls();
    };
    job.is_cancelled = [&] { return events >= 2; };
    auto result = RunStrategy(Config(s.strategy), job, generator, &scorer);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(events, 2);
    EXPECT_EQ(generator.calls(), calls_at_cancel);
  }
}

TEST(StrategyTest, GeneratorErrorsPropagate) {
  FakeGenerator::Options options;
  options.fail_after_calls = 1;
  FakeGenerator generator(options);
  FakeScorer scorer;
  auto result = RunStrategy(Config(BeamSearchConfig{.n = 4, .beam_width = 2}), Job(kProblem, 1),
                            generator, &scorer);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
}

TEST(StrategyTest, ProgressEventsDescribeEachIteration) {
  FakeGenerator generator;
  FakeScorer scorer(0.5);
  std::vector<IterationProgress> events;
  JobContext job = Job(kProblem, 4);
  job.on_progress = [&](const IterationProgress& p) { events.push_back(p); };
  auto result = RunStrategy(Config(BeamSearchConfig{.n = 8, .beam_width = 2, .num_iterations = 10}),
                            job, generator, &scorer);
  ASSERT_TRUE(result.ok());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(static_cast<int64_t>(events.size()), result->usage.steps);
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].iteration, static_cast<int>(i));
    EXPECT_EQ(events[i].branch_scores.size(), static_cast<size_t>(events[i].live));
    EXPECT_LE(events[i].live, 4);
    EXPECT_FALSE(events[i].best_text.empty());
    EXPECT_GE(events[i].usage.generated_tokens, i == 0 ? 1 : events[i - 1].usage.generated_tokens);
  }
  EXPECT_EQ(events.back().live, 0);
}

// With a perfect reward model, a re-ranking strategy returns a right answer
// whenever one of its candidates is right.
TEST(StrategyTest, PerfectScorerFindsARightAnswerWheneverOneWasSampled) {
  using PF = ParticleFilterConfig;
  const std::vector<NamedStrategy> strategies = {
      {"bon_reward", BestOfNConfig{.n = 8}},
      {"bon_prod", BestOfNConfig{.n = 8, .aggregation = Aggregation::kProd}},
      {"beam", BeamSearchConfig{.n = 8, .beam_width = 2, .num_iterations = 10}},
      {"dvts", DvtsConfig{.n = 8, .beam_width = 2, .num_iterations = 10}},
      {"pf", PF{.n = 8, .num_iterations = 10}},
      {"pf_absorb", PF{.n = 8, .absorb_finished = true, .num_iterations = 10}},
  };
  for (const NamedStrategy& s : strategies) {
    SCOPED_TRACE(s.name);
    int mixed = 0;
    for (uint64_t seed = 0; seed < 30; ++seed) {
      const FakeProblem problem{.id = static_cast<int>(seed), .p = 0.45, .num_steps = 3};
      FakeGenerator generator;
      FakeScorer scorer(/*noise=*/0.0);
      auto result = RunStrategy(Config(s.strategy), Job(problem, seed), generator, &scorer);
      ASSERT_TRUE(result.ok());
      int right = 0;
      for (const Candidate& c : result->candidates) right += IsRightAnswer(problem, c.answer);
      if (right > 0) {
        EXPECT_TRUE(IsRightAnswer(problem, result->answer)) << "seed " << seed;
      }
      if (right > 0 && right < static_cast<int>(result->candidates.size())) ++mixed;
    }
    EXPECT_GT(mixed, 0) << "the test should see both right and wrong candidates";
  }
}

}  // namespace
}  // namespace arbor::search
