#include "search/answer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace arbor::search {
namespace {

std::string Extract(std::string_view text, std::string_view pattern = "") {
  auto extractor = AnswerExtractor::Create(pattern);
  EXPECT_TRUE(extractor.ok()) << extractor.status();
  return (*extractor)->Extract(text);
}

TEST(ExtractBoxedTest, KeepsNestedBracesBalanced) {
  EXPECT_EQ(ExtractBoxed("so \\boxed{\\frac{1}{2}} done"), "\\frac{1}{2}");
  EXPECT_EQ(ExtractBoxed("\\boxed{1} then \\boxed{{a}+{b}}"), "{a}+{b}");
  EXPECT_EQ(ExtractBoxed("\\boxed{\\{1,2\\}}"), "\\{1,2\\}");
  EXPECT_EQ(ExtractBoxed("\\boxed 5$"), "5");
  EXPECT_EQ(ExtractBoxed("\\boxed{unclosed"), std::nullopt);
  EXPECT_EQ(ExtractBoxed("no box"), std::nullopt);
}

TEST(AnswerExtractorTest, BuiltInChainInOrder) {
  // \boxed wins over everything else.
  EXPECT_EQ(Extract("The answer is 3. Actually \\boxed{4}. #### 5"), "4");
  EXPECT_EQ(Extract("First 12 apples.\nThe answer is: 42.\nCheck: 7"), "42");
  EXPECT_EQ(Extract("so 3 + 4 = 7\n#### 1,234"), "1234");
  EXPECT_EQ(Extract("we get 3, then 17.50 in total"), "17.5");
  EXPECT_EQ(Extract("ratio is 3/4"), "3/4");
  EXPECT_EQ(Extract("no digits here"), "");
}

TEST(AnswerExtractorTest, UnfinishedSolutionsNeedAnExplicitAnswer) {
  auto extractor = AnswerExtractor::Create("");
  ASSERT_TRUE(extractor.ok());
  EXPECT_EQ((*extractor)->Extract("so far 3 + 4 = 7", /*finished=*/false), "");
  EXPECT_EQ((*extractor)->Extract("so far 3 + 4 = 7", /*finished=*/true), "7");
  EXPECT_EQ((*extractor)->Extract("thus \\boxed{7} and", /*finished=*/false), "7");
}

TEST(AnswerExtractorTest, UserPatternTakesLastMatchFirstGroup) {
  EXPECT_EQ(Extract("Final: 3\nFinal: 9\n", R"(Final:\s*(\d+))"), "9");
  EXPECT_EQ(Extract("nothing", R"(Final:\s*(\d+))"), "");
  // A user pattern replaces the chain: \boxed is not consulted.
  EXPECT_EQ(Extract("\\boxed{1} ANSWER=(B)", R"(ANSWER=\((\w)\))"), "B");
}

TEST(AnswerExtractorTest, RejectsBadPatternsNamingTheField) {
  auto bad = AnswerExtractor::Create("(unclosed");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              ::testing::HasSubstr("answer_extraction.pattern"));
  auto no_group = AnswerExtractor::Create("\\d+");
  ASSERT_FALSE(no_group.ok());
  EXPECT_THAT(std::string(no_group.status().message()), ::testing::HasSubstr("capture group"));
}

TEST(NormalizeAnswerTest, EqualAnswersCompareEqual) {
  EXPECT_EQ(NormalizeAnswer(" $42$ "), "42");
  EXPECT_EQ(NormalizeAnswer("42."), "42");
  EXPECT_EQ(NormalizeAnswer("+42.000"), "42");
  EXPECT_EQ(NormalizeAnswer("1,000"), "1000");
  EXPECT_EQ(NormalizeAnswer("-0.50"), "-0.5");
  EXPECT_EQ(NormalizeAnswer(".5"), "0.5");
  EXPECT_EQ(NormalizeAnswer("x = 7"), "7");
  EXPECT_EQ(NormalizeAnswer("\\dfrac{3}{4}"), "3/4");
  EXPECT_EQ(NormalizeAnswer("\\frac34"), "3/4");
  EXPECT_EQ(NormalizeAnswer("\\frac{3}{4}"), NormalizeAnswer("\\tfrac{3}{4}"));
  EXPECT_EQ(NormalizeAnswer("90^\\circ"), "90");
  EXPECT_EQ(NormalizeAnswer("50\\%"), "50");
  EXPECT_EQ(NormalizeAnswer("\\text{(B)}"), "(B)");
  EXPECT_EQ(NormalizeAnswer("\\left( 1, 2 \\right)"), "(1,2)");
  EXPECT_EQ(NormalizeAnswer("\\sqrt{2}"), "\\sqrt{2}");
  EXPECT_EQ(NormalizeAnswer("\\boxed{5}"), "5");
  EXPECT_EQ(NormalizeAnswer("007"), "7");
  EXPECT_EQ(NormalizeAnswer("-0"), "0");
}

}  // namespace
}  // namespace arbor::search
