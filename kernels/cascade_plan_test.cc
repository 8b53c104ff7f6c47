#include "kernels/cascade_plan.h"

#include <vector>

#include "gtest/gtest.h"

namespace arbor::kernels {
namespace {

TEST(CascadePlanTest, GroupsConsecutiveSequencesThatShareLeadingBlocks) {
  const int mb = 4;
  // Sequences 0-2 share blocks 7, 8 (and 0, 1 also share 9); 3 shares
  // nothing; 4-5 share block 20 only.
  const std::vector<int32_t> tables = {7,  8,  9,  1,   //
                                       7,  8,  9,  2,   //
                                       7,  8,  3,  -1,  //
                                       11, 12, -1, -1,  //
                                       20, 21, -1, -1,  //
                                       20, 22, -1, -1};
  const std::vector<int32_t> ctx = {60, 55, 40, 20, 30, 17};
  const CascadePlan plan = CascadePlan::Plan(tables, ctx, mb, 16);
  EXPECT_TRUE(plan.worthwhile);
  EXPECT_EQ(plan.levels[0].group_starts, (std::vector<int32_t>{0, 3, 4, 6}));
  EXPECT_EQ(plan.levels[0].group_kv_len, (std::vector<int32_t>{32, 0, 16}));
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{32, 32, 32, 0, 16, 16}));
  EXPECT_EQ(plan.levels[0].group_tables,
            (std::vector<int32_t>{7, 8, 9, 1, 11, 12, -1, -1, 20, 21, -1, -1}));
  EXPECT_EQ(plan.levels[0].max_group_size, 3);
  EXPECT_EQ(plan.levels[0].max_kv_len, 32);
  EXPECT_EQ(plan.max_suffix, 28);  // sequence 0: 60 - 32
}

TEST(CascadePlanTest, PrefixStopsAtEveryMembersFullBlocks) {
  // Both tables hold blocks 1, 2, 3 but the second context has 2 full blocks.
  const std::vector<int32_t> tables = {1, 2, 3, 4, 1, 2, 3, 5};
  const CascadePlan plan = CascadePlan::Plan(tables, {64, 40}, 4, 16);
  EXPECT_EQ(plan.levels[0].group_kv_len, (std::vector<int32_t>{32}));
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{32, 32}));
}

TEST(CascadePlanTest, ShortSharedPrefixesAreNotWorthACascade) {
  const std::vector<int32_t> tables = {1, 2, 3, 1, 4, 5};
  const CascadePlan plan = CascadePlan::Plan(tables, {40, 40}, 3, 256);
  EXPECT_FALSE(plan.worthwhile);
  EXPECT_EQ(plan.levels[0].group_starts, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(plan.levels[0].group_kv_len, (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(plan.max_suffix, 40);
}

TEST(CascadePlanTest, OneLevelIsThePromptLevelOnly) {
  const std::vector<int32_t> tables = {1, 2, 3, 4, 1, 2, 3, 5};
  const CascadePlan plan = CascadePlan::Plan(tables, {64, 64}, 4, 16, /*max_levels=*/1);
  EXPECT_EQ(plan.levels.size(), 1u);
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{48, 48}));
}

// A beam-search batch: job A's four branches share a prompt (blocks 1, 2);
// below it three share a step (3) and two of those a further two (4, 7);
// job B's two branches share only their prompt.
TEST(CascadePlanTest, DeeperLevelsFollowTheSearchTreeDown) {
  const int mb = 6;
  const std::vector<int32_t> tables = {1,  2,  3,  4,  7,  8,   //
                                       1,  2,  3,  4,  7,  9,   //
                                       1,  2,  3,  5,  -1, -1,  //
                                       1,  2,  6,  -1, -1, -1,  //
                                       20, 21, 22, -1, -1, -1,  //
                                       20, 21, 23, -1, -1, -1};
  const std::vector<int32_t> ctx = {90, 90, 60, 40, 40, 40};
  const CascadePlan plan = CascadePlan::Plan(tables, ctx, mb, 32, /*max_levels=*/3,
                                             /*min_level_tokens=*/16);
  ASSERT_TRUE(plan.worthwhile);
  ASSERT_EQ(plan.levels.size(), 3u);
  // Level 0: the prompts.
  EXPECT_EQ(plan.levels[0].group_starts, (std::vector<int32_t>{0, 4, 6}));
  EXPECT_EQ(plan.levels[0].group_kv_len, (std::vector<int32_t>{32, 32}));
  // Level 1: block 3 for the first three; the rest in empty groups no wider
  // than that run (so they add no rows to the launch's grid).
  const CascadeLevel& l1 = plan.levels[1];
  EXPECT_EQ(l1.group_starts, (std::vector<int32_t>{0, 3, 6}));
  EXPECT_EQ(l1.group_kv_len, (std::vector<int32_t>{16, 0}));
  EXPECT_EQ(std::vector<int32_t>(l1.group_tables.begin(), l1.group_tables.begin() + mb),
            (std::vector<int32_t>{3, 4, 7, 8, -1, -1}));
  EXPECT_EQ(l1.max_group_size, 3);
  EXPECT_EQ(l1.max_kv_len, 16);
  // Level 2: blocks 4, 7 for the first pair; the empty groups are now at
  // most two wide.
  const CascadeLevel& l2 = plan.levels[2];
  EXPECT_EQ(l2.group_starts, (std::vector<int32_t>{0, 2, 4, 6}));
  EXPECT_EQ(l2.group_kv_len, (std::vector<int32_t>{32, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(l2.group_tables.begin(), l2.group_tables.begin() + mb),
            (std::vector<int32_t>{4, 7, 8, -1, -1, -1}));
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{80, 80, 48, 32, 32, 32}));
  EXPECT_EQ(plan.max_suffix, 12);  // sequence 2: 60 - 48
}

TEST(CascadePlanTest, ShortDeeperSharingStaysInTheSuffix) {
  // Two of the three share one block past the prompt: under min_level_tokens 32.
  const std::vector<int32_t> tables = {1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 6, 7};
  const CascadePlan plan = CascadePlan::Plan(tables, {64, 64, 64}, 4, 32, /*max_levels=*/4,
                                             /*min_level_tokens=*/32);
  EXPECT_EQ(plan.levels.size(), 1u);
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{32, 32, 32}));
}

}  // namespace
}  // namespace arbor::kernels
