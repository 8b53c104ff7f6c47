// Strategy auto (AutoConfig) in the fake world: the first round's estimate,
// the band it falls in and what runs after it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "search/strategy.h"
#include "search/strategy_test_util.h"
#include "search/testing/fake_world.h"

namespace arbor::search {
namespace {

using ::arbor::search::testing::FakeGenerator;
using ::arbor::search::testing::FakeProblem;
using ::arbor::search::testing::FakeScorer;
using ::arbor::search::testing::IsRightAnswer;

TEST(AutoTest, EasyPromptStopsAfterTheFirstRound) {
  const FakeProblem easy{.id = 2, .p = 0.999, .num_steps = 4};
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result = RunStrategy(Config(AutoConfig{.n = 16}), Job(easy, 1), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  const AutoChoice& choice = result->usage.auto_choice;
  EXPECT_EQ(result->strategy, "auto");
  EXPECT_EQ(choice.band, "easy");
  EXPECT_EQ(choice.strategy, "stop");
  EXPECT_EQ(choice.first_round_samples, 4);
  EXPECT_EQ(choice.agreement, 1.0);
  EXPECT_GT(choice.mean_score, 0.9);
  EXPECT_NEAR(choice.difficulty, 1.0 - (choice.agreement + choice.mean_score) / 2, 1e-12);
  EXPECT_EQ(result->candidates.size(), 4u);
  EXPECT_TRUE(IsRightAnswer(easy, result->answer));
}

TEST(AutoTest, HardPromptSpendsTheRestOnBeamSearch) {
  // Every step wrong: the PRM scores every sample low.
  const FakeProblem hard{.id = 6, .p = 0.001, .num_steps = 4};
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result = RunStrategy(Config(AutoConfig{.n = 16}), Job(hard, 1), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  const AutoChoice& choice = result->usage.auto_choice;
  EXPECT_EQ(choice.band, "hard");
  EXPECT_LT(choice.mean_score, 0.2);
  EXPECT_EQ(choice.strategy, "beam_search");
  EXPECT_EQ(choice.n, 12);
  // The beams and the first round are all candidates.
  EXPECT_GT(result->candidates.size(), 4u);
  bool beam_calls = false;
  for (const auto& call : generator.call_log()) beam_calls = beam_calls || call.samples.size() > 1;
  EXPECT_TRUE(beam_calls);  // several parents in one call: a beam step
}

TEST(AutoTest, MediumPromptDrawsTheRestAndVotesOverAll) {
  // Bands that no estimate reaches leave every prompt medium.
  AutoConfig config{.n = 12, .first_round_samples = 3};
  config.easy_agreement = 1.0f, config.easy_score = 1.0f;
  config.hard_agreement = 0.0f, config.hard_score = 0.0f;
  FakeGenerator generator;
  FakeScorer scorer(0.5, 2);
  auto result = RunStrategy(Config(config), Job(kProblem, 4), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  const AutoChoice& choice = result->usage.auto_choice;
  EXPECT_EQ(choice.band, "medium");
  EXPECT_EQ(choice.strategy, "best_of_n");
  EXPECT_EQ(choice.n, 9);
  EXPECT_EQ(result->candidates.size(), 12u);
  for (const Candidate& c : result->candidates) EXPECT_FALSE(c.step_scores.empty());
  // The first round is scored once: 12 candidates, two scoring calls.
  EXPECT_EQ(result->usage.reward_calls, 2);
}

TEST(AutoTest, SharesOneBudget) {
  StrategyConfig config = Config(AutoConfig{.n = 32});
  config.budget.max_generated_tokens = 300;
  const FakeProblem hard{.id = 6, .p = 0.001, .num_steps = 6};
  FakeGenerator generator;
  FakeScorer scorer(0.0);
  auto result = RunStrategy(config, Job(hard, 2), generator, &scorer);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->usage.generated_tokens, 300);
  EXPECT_FALSE(result->answer.empty());
}

TEST(AutoTest, InvalidSettingsNameTheField) {
  EXPECT_THAT(
      ValidateStrategyConfig(Config(AutoConfig{.n = 4, .first_round_samples = 4})).message(),
      ::testing::HasSubstr("auto.first_round_samples"));
  AutoConfig bad{.n = 8};
  bad.easy_score = 1.5f;
  EXPECT_THAT(ValidateStrategyConfig(Config(bad)).message(),
              ::testing::HasSubstr("auto.easy_score"));
  EXPECT_TRUE(StrategyNeedsScorer(Config(AutoConfig{})));
}

}  // namespace
}  // namespace arbor::search
