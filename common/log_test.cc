#include "common/log.h"

#include <gtest/gtest.h>

#include "common/check.h"

namespace arbor {
namespace {

TEST(LogTest, MessageCarriesLevelFileAndText) {
  testing::internal::CaptureStderr();
  ARBOR_LOG(WARNING) << "cache is " << 93 << "% full";
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out[0], 'W');
  EXPECT_NE(out.find("log_test.cc:"), std::string::npos);
  EXPECT_NE(out.find("cache is 93% full\n"), std::string::npos);
}

TEST(LogTest, DebugIsDroppedAtDefaultLevel) {
  testing::internal::CaptureStderr();
  ARBOR_LOG(DEBUG) << "hidden";
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(CheckDeathTest, FailedCheckAbortsWithExpression) {
  EXPECT_DEATH(ARBOR_CHECK_MSG(1 + 1 == 3, "arithmetic"), "CHECK failed: 1 \\+ 1 == 3 arithmetic");
}

}  // namespace
}  // namespace arbor
