// MCTS: the PUCT rule (OpenR's constants) and the search in the fake world.
#include "search/mcts.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "search/steps.h"
#include "search/strategy.h"
#include "search/strategy_test_util.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using ::arbor::search::testing::FakeGenerator;
using ::arbor::search::testing::FakeProblem;
using ::arbor::search::testing::FakeScorer;
using ::arbor::search::testing::IsRightAnswer;

constexpr double kBase = 19652.0;
constexpr double kInit = 1.25;

TEST(PuctTest, ExplorationConstantFollowsOpenR) {
  EXPECT_NEAR(PuctExploration(0, kBase, kInit), std::log((kBase + 1) / kBase) + kInit, 1e-12);
  // c(s) grows (slowly) with the parent's visits.
  EXPECT_GT(PuctExploration(100000, kBase, kInit), PuctExploration(10, kBase, kInit));
  const PuctChild child{.q = 0.3, .prior = 0.5, .visits = 3};
  EXPECT_NEAR(PuctScore(child, 16, kBase, kInit),
              0.3 + PuctExploration(16, kBase, kInit) * 0.5 * 4.0 / 4.0, 1e-12);
}

// The selection order a parent with 3 children and equal priors produces as
// each pick is visited (value backed up = the child's own Q): the best Q
// first, then the exploration term brings the others in.
TEST(PuctTest, SelectionOrderTradesValueAgainstVisits) {
  std::vector<PuctChild> children = {{.q = 0.5, .prior = 1.0 / 3},
                                     {.q = 0.9, .prior = 1.0 / 3},
                                     {.q = 0.7, .prior = 1.0 / 3}};
  int64_t parent = 0;
  std::vector<size_t> order;
  for (int i = 0; i < 6; ++i) {
    const size_t pick = SelectPuct(children, parent, kBase, kInit);
    order.push_back(pick);
    children[pick].visits += 1;
    parent += 1;
  }
  // 0 visits: Q alone (U = 0 at N(s) = 0) picks 1; then 1's U shrinks, and
  // by hand: scores at N(s)=1: c=1.25005, U0=U2=0.41668, U1=0.20834 ->
  // 0: 0.917, 1: 1.108, 2: 1.117 -> 2; and so on.
  EXPECT_EQ(order, (std::vector<size_t>{1, 2, 1, 0, 1, 2}));
  // Priors break the tie between equal values.
  std::vector<PuctChild> tied = {{.q = 0.5, .prior = 0.2}, {.q = 0.5, .prior = 0.8}};
  EXPECT_EQ(SelectPuct(tied, 4, kBase, kInit), 1u);
}

TEST(PuctTest, PriorsAreASoftmaxOverMeanTokenLogprobs) {
  const std::vector<double> p = StepPriors({-2.0, -8.0, 0.0}, {2, 4, 0});
  ASSERT_EQ(p.size(), 3u);
  const double z = std::exp(-1.0) + std::exp(-2.0) + 1.0;
  EXPECT_NEAR(p[0], std::exp(-1.0) / z, 1e-12);
  EXPECT_NEAR(p[1], std::exp(-2.0) / z, 1e-12);
  EXPECT_NEAR(p[2], 1.0 / z, 1e-12);
}

TEST(MctsTest, ExpandsWithMaxWidthSamplesOfOneBranchAndFindsTheAnswer) {
  int solved = 0;
  for (int id = 0; id < 20; ++id) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    const FakeProblem problem{.id = id, .p = 0.5, .num_steps = 4};
    auto result = RunStrategy(Config(MctsConfig{.num_simulations = 24, .max_width = 4}),
                              Job(problem, 5), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->strategy, "mcts");
    ASSERT_FALSE(generator.call_log().empty());
    EXPECT_EQ(generator.call_log().front().samples, std::vector<int>{4});
    for (const auto& call : generator.call_log()) {
      ASSERT_EQ(call.samples.size(), 1u);  // one node per expansion
      // max_width, or a widening round's missing width.
      EXPECT_GE(call.samples[0], 1);
      EXPECT_LE(call.samples[0], 4);
    }
    EXPECT_LE(result->usage.steps, 24);
    if (IsRightAnswer(problem, result->answer)) ++solved;
  }
  // A noiseless PRM steers the tree: far above greedy's p^4 = 6%.
  EXPECT_GE(solved, 15);
}

TEST(MctsTest, DepthCapGeneratesToEosAndRolloutsAreCandidates) {
  FakeGenerator generator;
  FakeScorer scorer(0.5);
  auto result = RunStrategy(
      Config(MctsConfig{.num_simulations = 6, .max_width = 2, .max_depth = 2, .rollouts = true,
                        .sampled_rollouts = false}),
      Job(FakeProblem{.id = 2, .p = 0.7, .num_steps = 6}, 1), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  bool rollout = false, depth_cap = false;
  for (const auto& call : generator.call_log()) {
    if (call.to_eos && call.temperature == 0.0f) rollout = true;
    if (call.to_eos && call.temperature > 0.0f) depth_cap = true;
  }
  EXPECT_TRUE(rollout);
  EXPECT_TRUE(depth_cap);
  ASSERT_FALSE(result->candidates.empty());
  EXPECT_TRUE(result->candidates[0].finished);
}

// Samples that write the same step are one child: with 16 samples of a
// near-sure step (12 possible lengths in the fake world) some are copies, and
// the tree keeps each step once.
TEST(MctsTest, IdenticalSampledStepsAreOneChild) {
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  const FakeProblem problem{.id = 3, .p = 0.99, .num_steps = 4};
  auto result = RunStrategy(Config(MctsConfig{.num_simulations = 1, .max_width = 16}),
                            Job(problem, 2), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(generator.call_log().front().outputs, 16);
  std::set<std::string> first_steps;
  for (const Candidate& c : result->candidates) {
    ASSERT_FALSE(c.steps.empty());
    EXPECT_TRUE(first_steps.insert(c.steps[0]).second) << c.steps[0];
  }
  EXPECT_LT(result->candidates.size(), 16u);
  EXPECT_GE(result->candidates.size(), 2u);
}

// When the simulations end before any path did, the principal and deepest
// leaves are finished greedily; each finish is a candidate ranked by its own
// PRM score (a score for every step, the finish's included), not by the
// value of the unfinished prefix it grew from.
TEST(MctsTest, GreedyFinishesAreRankedByTheirOwnScore) {
  int solved = 0;
  for (int id = 0; id < 20; ++id) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    const FakeProblem problem{.id = id, .p = 0.6, .num_steps = 6};
    // 3 simulations reach depth 3 at most: no path of 6 steps ends.
    auto result = RunStrategy(Config(MctsConfig{.num_simulations = 3, .max_width = 4}),
                              Job(problem, 7), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_FALSE(result->candidates.empty());
    int finished = 0;
    for (const Candidate& c : result->candidates) {
      if (!c.finished) continue;
      ++finished;
      ASSERT_EQ(c.step_scores.size(), c.steps.size());
      EXPECT_DOUBLE_EQ(c.score, c.step_scores.back());
    }
    EXPECT_GE(finished, 1);
    const Candidate& top = result->candidates[0];
    EXPECT_TRUE(top.finished);
    // Noiseless PRM: a right finish (0.953) outranks every wrong one (0.047).
    bool any_right = false;
    for (const Candidate& c : result->candidates) {
      any_right = any_right || (c.finished && IsRightAnswer(problem, c.answer));
    }
    EXPECT_EQ(IsRightAnswer(problem, top.answer), any_right) << id;
    solved += IsRightAnswer(problem, top.answer) ? 1 : 0;
  }
  EXPECT_GT(solved, 0);
}

TEST(PuctTest, WideningRoundsGrowWithTheSquareRootOfVisits) {
  // ceil(sqrt(v)): a second round at 2 visits, a third at 5, a fourth at 10.
  std::vector<int64_t> rounds;
  for (int64_t v : {0, 1, 2, 4, 5, 9, 10, 100}) rounds.push_back(WideningRounds(v, 1.0, 0.5, 4));
  EXPECT_EQ(rounds, (std::vector<int64_t>{0, 1, 2, 2, 3, 3, 4, 4}));
  EXPECT_EQ(WideningRounds(100, 0.0, 0.5, 4), 0);  // widen_c = 0: off
  EXPECT_EQ(WideningRounds(9, 2.0, 0.5, 64), 6);
}

// A near-sure first step gives the root fewer distinct children than
// max_width. With widening by visits (widen_alpha 0.5), the root is sampled again (the missing width,
// from the root's prefix) only once its visits reach the threshold: the
// third simulation (2 visits: ceil(sqrt(2)) = 2 rounds), not the second.
TEST(MctsTest, WideningResamplesANodeOnlyAfterTheVisitThreshold) {
  const FakeProblem problem{.id = 3, .p = 0.99, .num_steps = 6};
  for (int sims : {2, 3}) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    auto result = RunStrategy(
        Config(MctsConfig{.num_simulations = sims, .max_width = 4, .widen_c = 1.0, .widen_alpha = 0.5}),
        Job(problem, 2), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    const auto& log = generator.call_log();
    ASSERT_GE(log.size(), static_cast<size_t>(sims));
    ASSERT_EQ(log[0].suffix_lengths, std::vector<size_t>{0});  // the root's expansion
    EXPECT_EQ(log[0].samples, std::vector<int>{4});
    EXPECT_NE(log[1].suffix_lengths, std::vector<size_t>{0});  // 1 visit: no widening yet
    EXPECT_EQ(log[1].samples, std::vector<int>{4});
    if (sims == 3) {
      // The root again, with the missing width: 4 minus its distinct
      // first steps (fewer than 4 with p = 0.99 and 12 possible lengths).
      ASSERT_EQ(log[2].suffix_lengths, std::vector<size_t>{0});
      EXPECT_GE(log[2].samples[0], 1);
      EXPECT_LE(log[2].samples[0], 3);
    }
  }
  // widen_c = 0: the third simulation goes down the tree as before.
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result = RunStrategy(
      Config(MctsConfig{.num_simulations = 3, .max_width = 4, .widen_c = 0.0}), Job(problem, 2),
      generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_GE(generator.call_log().size(), 3u);
  EXPECT_NE(generator.call_log()[2].suffix_lengths, std::vector<size_t>{0});
}

// Where no node has fewer distinct children than max_width (max_width 1),
// widening never applies: the calls, and so the PUCT order, are the same
// with and without it.
TEST(MctsTest, WideningLeavesThePuctOrderWhereItDoesNotApply) {
  for (int id = 0; id < 5; ++id) {
    const FakeProblem problem{.id = id, .p = 0.6, .num_steps = 4};
    std::vector<std::vector<size_t>> prefixes[2];
    std::string answers[2];
    for (int on = 0; on < 2; ++on) {
      FakeGenerator generator;
      FakeScorer scorer(0.0);
      auto result = RunStrategy(Config(MctsConfig{.num_simulations = 12, .max_width = 1,
                                                  .widen_c = on ? 1.0 : 0.0}),
                                Job(problem, 4), generator, &scorer);
      ASSERT_TRUE(result.ok()) << result.status();
      for (const auto& call : generator.call_log()) prefixes[on].push_back(call.suffix_lengths);
      answers[on] = result->answer;
    }
    EXPECT_EQ(prefixes[0], prefixes[1]) << id;
    EXPECT_EQ(answers[0], answers[1]) << id;
  }
}

// More simulations than distinct paths: widening keeps sampling fresh steps
// where the tree without it has ended every path and stopped early.
TEST(MctsTest, WideningSpendsSimulationsOnNewPaths) {
  const FakeProblem problem{.id = 5, .p = 0.95, .num_steps = 3};
  int64_t steps[2];
  size_t finished[2];
  for (int on = 0; on < 2; ++on) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    auto result = RunStrategy(Config(MctsConfig{.num_simulations = 64, .max_width = 4,
                                                .widen_c = on ? 1.0 : 0.0}),
                              Job(problem, 3), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    steps[on] = result->usage.steps;
    finished[on] = 0;
    for (const Candidate& c : result->candidates) finished[on] += c.finished ? 1 : 0;
    EXPECT_LE(result->usage.steps, 64);
  }
  EXPECT_GT(steps[1], steps[0]);
  EXPECT_GT(finished[1], finished[0]);
}

// The PRM-weighted vote over the finished candidates (the default): the
// winner's answer has the largest summed score; argmax picks the top-scored one.
TEST(MctsTest, FinalPickIsThePrmWeightedVoteOrTheArgmax) {
  int differ = 0;
  for (int id = 0; id < 10; ++id) {
    const FakeProblem problem{.id = id, .p = 0.5, .num_steps = 3};
    std::string picked[2];
    for (auto selection :
         {MctsConfig::FinalSelection::kWeightedVote, MctsConfig::FinalSelection::kArgmaxScore}) {
      FakeGenerator generator;
      FakeScorer scorer(1.5, 9);  // noisy: scores spread, answers split
      auto result = RunStrategy(Config(MctsConfig{.num_simulations = 16, .max_width = 4,
                                                  .final_selection = selection}),
                                Job(problem, 11), generator, &scorer);
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_FALSE(result->candidates.empty());
      std::map<std::string, double> sums;
      double top_score = -1.0;
      for (const Candidate& c : result->candidates) {
        if (!c.finished || c.answer.empty()) continue;
        sums[c.answer] += c.score;
        top_score = std::max(top_score, c.score);
      }
      ASSERT_FALSE(sums.empty()) << id;
      const Candidate& top = result->candidates[0];
      ASSERT_TRUE(top.finished);
      if (selection == MctsConfig::FinalSelection::kWeightedVote) {
        for (const auto& [answer, sum] : sums) EXPECT_GE(sums[top.answer], sum) << id << answer;
      } else {
        EXPECT_DOUBLE_EQ(top.score, top_score) << id;
      }
      picked[selection == MctsConfig::FinalSelection::kWeightedVote ? 0 : 1] = top.answer;
    }
    differ += picked[0] != picked[1] ? 1 : 0;
  }
  // The two rules are not the same rule in this world.
  EXPECT_GE(differ, 1);
}

// With rollouts every simulation ends in a finished, PRM-scored candidate
// (its rollout), so nothing is finished greedily after the search even when
// no tree path has ended: the only calls to EOS are the rollouts, one per
// simulation. Without rollouts the same search finishes its leaves greedily.
TEST(MctsTest, RolloutsAreTheCandidatesWhenNoPathEnded) {
  const FakeProblem problem{.id = 4, .p = 0.6, .num_steps = 6};
  for (bool rollouts : {true, false}) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    // 3 simulations reach depth 3 at most: no path of 6 steps ends in the tree.
    auto result = RunStrategy(Config(MctsConfig{.num_simulations = 3, .max_width = 4,
                                                .rollouts = rollouts, .sampled_rollouts = false}),
                              Job(problem, 7), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    int to_eos = 0;
    for (const auto& call : generator.call_log()) {
      if (!call.to_eos) continue;
      ++to_eos;
      EXPECT_EQ(call.temperature, 0.0f);  // greedy rollouts and finishes
      if (rollouts) EXPECT_EQ(call.outputs, 1);
    }
    int finished = 0;
    for (const Candidate& c : result->candidates) {
      if (!c.finished) continue;
      ++finished;
      ASSERT_EQ(c.step_scores.size(), c.steps.size());  // scored whole
    }
    if (rollouts) {
      EXPECT_EQ(to_eos, 3);
      EXPECT_EQ(finished, 3);
    } else {
      EXPECT_GE(to_eos, 1);  // the greedy finishes of the leaves
      EXPECT_GE(finished, 1);
    }
    ASSERT_FALSE(result->candidates.empty());
    EXPECT_TRUE(result->candidates[0].finished);
  }
}

// sampled_rollouts (the default): each rollout draws at the job's temperature
// with its own seed, so rollouts from one tree are independent samples of the
// tail, where greedy ones follow the policy's mode.
TEST(MctsTest, SampledRolloutsDrawAtTheJobsTemperature) {
  const FakeProblem problem{.id = 6, .p = 0.6, .num_steps = 6};
  for (bool sampled : {true, false}) {
    FakeGenerator generator;
    FakeScorer scorer(0.0);
    StrategyConfig config = Config(MctsConfig{
        .num_simulations = 4, .max_width = 2, .rollouts = true, .sampled_rollouts = sampled});
    config.sampling.temperature = 0.7f;
    auto result = RunStrategy(config, Job(problem, 3), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    std::set<uint64_t> seeds;
    int rollouts = 0;
    for (const auto& call : generator.call_log()) {
      if (!call.to_eos) continue;
      ++rollouts;
      EXPECT_EQ(call.temperature, sampled ? 0.7f : 0.0f);
      seeds.insert(call.seeds.begin(), call.seeds.end());
    }
    EXPECT_EQ(rollouts, 4);
    if (sampled) EXPECT_EQ(seeds.size(), 4u);  // a seed of its own per rollout
  }
}

// The fake PRM, recording the step lists it was asked to score.
class RecordingScorer : public Scorer {
 public:
  absl::StatusOr<ScoreResult> Score(const ScoreRequest& request) override {
    for (absl::Span<const std::string> c : request.candidates) seen.emplace_back(c.begin(), c.end());
    return inner.Score(request);
  }
  FakeScorer inner{0.5, 11};
  std::vector<std::vector<std::string>> seen;
};

// A rollout is generated to EOS in one piece, which holds several steps. The
// PRM tags each step it is given, so split_rollout_steps (the default) sends
// the rollout's tail as its steps, one tag each, as a step-by-step candidate
// would be; off, the tail goes as one step. Either way the candidate keeps
// the steps it was generated with, a score per step, and its score is the
// tail's last step's (aggregation last) under a scorer that sees it split.
TEST(MctsTest, RolloutsAreScoredAsTheStepsTheyHold) {
  const FakeProblem problem{.id = 9, .p = 0.7, .num_steps = 6};
  for (bool split : {true, false}) {
    FakeGenerator generator;
    RecordingScorer scorer;
    auto result = RunStrategy(
        Config(MctsConfig{.num_simulations = 3, .max_width = 2, .rollouts = true,
                          .sampled_rollouts = false, .split_rollout_steps = split}),
        Job(problem, 5), generator, &scorer);
    ASSERT_TRUE(result.ok()) << result.status();
    // Scored lists that end in an answer: the rollouts (no tree path of 6
    // steps ends in 3 simulations).
    int rollouts = 0, multi_step_pieces = 0;
    for (const std::vector<std::string>& steps : scorer.seen) {
      if (steps.back().find("answer is") == std::string::npos) continue;
      ++rollouts;
      EXPECT_EQ(steps.size() == 6u, split);  // the whole solution, a step each
      for (const std::string& step : steps) {
        const size_t at = step.find("\n\n");
        if (at != std::string::npos && at + 2 < step.size()) ++multi_step_pieces;
      }
    }
    EXPECT_EQ(rollouts, 3);
    EXPECT_EQ(multi_step_pieces == 0, split);
    int finished = 0;
    for (const Candidate& c : result->candidates) {
      if (!c.finished) continue;
      ++finished;
      ASSERT_EQ(c.step_scores.size(), c.steps.size());
      EXPECT_LT(c.steps.size(), 6u);  // the tail stays one generated step
      if (!split) continue;
      std::vector<std::string> cut(c.steps.begin(), c.steps.end() - 1);
      for (std::string& piece : SplitAtDelimiters(c.steps.back(), {"\n\n"})) {
        cut.push_back(std::move(piece));
      }
      FakeScorer check(0.5, 11);
      const std::string question = problem.Question();
      ScoreRequest request{.question = question, .last_step_only = true};
      request.candidates.push_back(cut);
      auto want = check.Score(request);
      ASSERT_TRUE(want.ok());
      EXPECT_FLOAT_EQ(static_cast<float>(c.score), want->scores[0][0]);
      EXPECT_FLOAT_EQ(c.step_scores.back(), want->scores[0][0]);
    }
    EXPECT_EQ(finished, 3);
  }
}

TEST(MctsTest, InvalidConfigsNameTheField) {
  StrategyConfig config = Config(MctsConfig{.max_width = 0});
  EXPECT_NE(ValidateStrategyConfig(config).message().find("mcts.max_width"), std::string::npos);
  config = Config(MctsConfig{.pb_c_base = 0});
  EXPECT_NE(ValidateStrategyConfig(config).message().find("mcts.pb_c_base"), std::string::npos);
  config = Config(MctsConfig{.widen_alpha = 1.5});
  EXPECT_NE(ValidateStrategyConfig(config).message().find("mcts.widen_alpha"), std::string::npos);
  config = Config(MctsConfig{.widen_max_rounds = 0});
  EXPECT_NE(ValidateStrategyConfig(config).message().find("mcts.widen_max_rounds"),
            std::string::npos);
}

}  // namespace
}  // namespace arbor::search
