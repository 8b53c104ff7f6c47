#include "search/budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

namespace arbor::search {
namespace {

TEST(BudgetTrackerTest, UncappedCountersHaveNoLimit) {
  BudgetTracker budget(BudgetLimits{});
  EXPECT_EQ(budget.RemainingGeneratedTokens(), std::numeric_limits<int64_t>::max());
  auto plan = budget.PlanGeneration(1000, 256);
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->num_outputs, 1000);
  EXPECT_EQ(plan->max_step_tokens, 256);
  EXPECT_TRUE(budget.BeginStep());
  EXPECT_TRUE(budget.CanScore(1'000'000));
  EXPECT_FALSE(budget.exhausted());
}

TEST(BudgetTrackerTest, PlanShrinksStepTokensThenOutputsAndNeverExceedsWhatIsLeft) {
  BudgetLimits limits;
  limits.max_generated_tokens = 1000;
  BudgetTracker budget(limits);
  // 4 x 256 > 1000: the step cap shrinks to 250.
  auto plan = budget.PlanGeneration(4, 256, 16);
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->num_outputs, 4);
  EXPECT_EQ(plan->max_step_tokens, 250);
  // 100 outputs: 10 each would be below the 16-token floor, so 62 outputs of 16.
  plan = budget.PlanGeneration(100, 256, 16);
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->num_outputs, 62);
  EXPECT_EQ(plan->max_step_tokens, 16);
  EXPECT_LE(int64_t{plan->num_outputs} * plan->max_step_tokens, 1000);
  // Exhaustive: every plan fits.
  for (int64_t used : {0, 1, 500, 990, 999}) {
    BudgetTracker b(limits);
    b.ChargeGeneration({.generated_tokens = used});
    for (int outputs : {1, 3, 17, 1000}) {
      for (int cap : {1, 8, 256}) {
        auto p = b.PlanGeneration(outputs, cap, 16);
        if (!p) continue;
        EXPECT_LE(int64_t{p->num_outputs} * p->max_step_tokens, 1000 - used);
        EXPECT_LE(p->num_outputs, outputs);
        EXPECT_LE(p->max_step_tokens, cap);
        EXPECT_GE(p->num_outputs, 1);
      }
    }
  }
}

TEST(BudgetTrackerTest, ExhaustionIsRecordedWithTheFirstCap) {
  BudgetLimits limits;
  limits.max_generated_tokens = 100;
  limits.max_steps = 2;
  BudgetTracker budget(limits);
  EXPECT_TRUE(budget.BeginStep());
  budget.ChargeGeneration({.generated_tokens = 100, .prefill_tokens = 5});
  EXPECT_TRUE(budget.exhausted());
  EXPECT_EQ(budget.exhausted_by(), "generated_tokens");
  EXPECT_FALSE(budget.BeginStep());
  EXPECT_FALSE(budget.PlanGeneration(1, 1).has_value());
  EXPECT_EQ(budget.exhausted_by(), "generated_tokens");
  EXPECT_EQ(budget.usage().generated_tokens, 100);
  EXPECT_EQ(budget.usage().prefill_tokens, 5);
  EXPECT_EQ(budget.usage().worker_calls, 1);
  EXPECT_EQ(budget.usage().steps, 1);
}

TEST(BudgetTrackerTest, StepCap) {
  BudgetLimits limits;
  limits.max_steps = 3;
  BudgetTracker budget(limits);
  EXPECT_TRUE(budget.BeginStep());
  EXPECT_TRUE(budget.BeginStep());
  EXPECT_TRUE(budget.BeginStep());
  EXPECT_FALSE(budget.BeginStep());
  EXPECT_EQ(budget.exhausted_by(), "steps");
  EXPECT_EQ(budget.usage().steps, 3);
}

TEST(BudgetTrackerTest, RewardCallsAndTokens) {
  BudgetLimits limits;
  limits.max_reward_calls = 2;
  limits.max_reward_tokens = 100;
  BudgetTracker budget(limits);
  EXPECT_TRUE(budget.CanScore(60));
  budget.ChargeScoring({.reward_tokens = 50, .reward_cache_hit_tokens = 7});
  EXPECT_FALSE(budget.CanScore(60));  // 50 + 60 > 100
  EXPECT_EQ(budget.exhausted_by(), "reward_tokens");
  EXPECT_EQ(budget.usage().reward_calls, 1);
  EXPECT_EQ(budget.usage().reward_cache_hit_tokens, 7);

  BudgetTracker calls(limits);
  calls.ChargeScoring({.reward_tokens = 1});
  calls.ChargeScoring({.reward_tokens = 1});
  EXPECT_FALSE(calls.CanScore(1));
  EXPECT_EQ(calls.exhausted_by(), "reward_calls");
}

TEST(BudgetTrackerTest, DeadlineFromAcceptanceWithInjectedClock) {
  const absl::Time start = absl::FromUnixSeconds(1000);
  absl::Time now = start;
  BudgetLimits limits;
  limits.deadline = absl::Milliseconds(500);
  BudgetTracker budget(limits, start, [&] { return now; });
  EXPECT_EQ(budget.deadline(), start + absl::Milliseconds(500));
  EXPECT_TRUE(budget.BeginStep());
  now += absl::Milliseconds(499);
  EXPECT_FALSE(budget.DeadlinePassed());
  now += absl::Milliseconds(1);
  EXPECT_FALSE(budget.BeginStep());
  EXPECT_EQ(budget.exhausted_by(), "deadline");
}

TEST(BudgetLimitsTest, NegativeCapsAreRejectedNamingTheField) {
  BudgetLimits limits;
  limits.max_reward_calls = -1;
  const absl::Status status = ValidateBudgetLimits(limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("budget.max_reward_calls"));
  EXPECT_TRUE(ValidateBudgetLimits(BudgetLimits{}).ok());
}

}  // namespace
}  // namespace arbor::search
