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
  EXPECT_EQ(plan.group_starts, (std::vector<int32_t>{0, 3, 4, 6}));
  EXPECT_EQ(plan.group_kv_len, (std::vector<int32_t>{32, 0, 16}));
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{32, 32, 32, 0, 16, 16}));
  EXPECT_EQ(plan.group_tables, (std::vector<int32_t>{7, 8, 9, 1, 11, 12, -1, -1, 20, 21, -1, -1}));
  EXPECT_EQ(plan.max_group_size, 3);
  EXPECT_EQ(plan.max_prefix, 32);
  EXPECT_EQ(plan.max_suffix, 28);  // sequence 0: 60 - 32
}

TEST(CascadePlanTest, PrefixStopsAtEveryMembersFullBlocks) {
  // Both tables hold blocks 1, 2, 3 but the second context has 2 full blocks.
  const std::vector<int32_t> tables = {1, 2, 3, 4, 1, 2, 3, 5};
  const CascadePlan plan = CascadePlan::Plan(tables, {64, 40}, 4, 16);
  EXPECT_EQ(plan.group_kv_len, (std::vector<int32_t>{32}));
  EXPECT_EQ(plan.suffix_begin, (std::vector<int32_t>{32, 32}));
}

TEST(CascadePlanTest, ShortSharedPrefixesAreNotWorthACascade) {
  const std::vector<int32_t> tables = {1, 2, 3, 1, 4, 5};
  const CascadePlan plan = CascadePlan::Plan(tables, {40, 40}, 3, 256);
  EXPECT_FALSE(plan.worthwhile);
  EXPECT_EQ(plan.group_starts, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(plan.group_kv_len, (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(plan.max_suffix, 40);
}

}  // namespace
}  // namespace arbor::kernels
