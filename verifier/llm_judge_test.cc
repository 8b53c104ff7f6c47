// An LLM judge served from a plain causal LM: the bundled policy model
// (models/policy, ChatML template) asked whether each cut of a solution is
// correct, its score read at the verdict tokens.
#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"
#include "serving/testing/service_test_util.h"
#include "verifier/reward_config.h"
#include "verifier/reward_input.h"
#include "verifier/reward_scorer.h"
#include "verifier/verifier_stack.h"

namespace arbor::verifier {
namespace {

using ::arbor::test_util::SourcePath;
using ::testing::HasSubstr;

constexpr char kQuestion[] = "Start with 17. Add 25, multiply by 3. What is the result?";
const std::vector<std::string> kSteps = {"17 + 25 = 42", "42 * 3 = 126", "The answer is 126"};

// The tiny policy's vocabulary has no "Yes"/"No"; its single-letter tokens
// stand in for them.
std::unique_ptr<VerifierStack> StartJudge(prometheus::Registry& registry,
                                          RewardConfigOverrides overrides = {
                                              .kind = "llm_judge",
                                              .positive_token = "Y",
                                              .negative_token = "N"}) {
  VerifierStackOptions options;
  options.model.model_dir = SourcePath("models/policy");
  options.model.threads = 2;
  options.model.kv_cache_tokens = 16384;
  options.overrides = std::move(overrides);
  auto stack = VerifierStack::Create(std::move(options), registry);
  EXPECT_TRUE(stack.ok()) << stack.status();
  return stack.ok() ? *std::move(stack) : nullptr;
}

TEST(LlmJudgeTest, AsksTheModelInItsOwnTemplateAndReadsTheVerdictTokens) {
  prometheus::Registry registry;
  auto judge = StartJudge(registry);
  ASSERT_NE(judge, nullptr);
  EXPECT_EQ(judge->service()->MakeInfo().kind(), "llm_judge");
  // The policy's tokenizer_config.json carries a (ChatML) Jinja template.
  EXPECT_EQ(judge->config().chat_template, "model");

  const RewardInput& input = judge->scorer()->input();
  auto prompt = input.EncodePrompt(kQuestion);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  auto cuts = input.Build(*prompt, kSteps, /*last_step_only=*/false);
  ASSERT_TRUE(cuts.ok()) << cuts.status();
  ASSERT_EQ(cuts->size(), kSteps.size());
  const runtime::Tokenizer* tokenizer = judge->tokenizer();
  EXPECT_EQ(tokenizer->Decode((*cuts)[1].tokens, /*skip_special_tokens=*/false),
            "<|im_start|>user\nHere is a math problem and the first steps of a solution.\n\n"
            "Problem: Start with 17. Add 25, multiply by 3. What is the result?\n\n"
            "Solution so far:\n17 + 25 = 42\n42 * 3 = 126\n\nIs the last step of the solution "
            "correct? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n");

  runtime::ScoreRequest whole;
  whole.job_id = "reference";
  for (const auto& cut : *cuts) {
    whole.sequences.push_back({.tokens = cut.tokens, .positions = cut.positions});
  }
  auto rows = judge->scorer()->engine()->Score(whole);  // every logit of the row
  ASSERT_TRUE(rows.ok()) << rows.status();

  ScoreJob job;
  job.job_id = "judge";
  job.question = kQuestion;
  job.candidates = {kSteps};
  auto scored = judge->scorer()->Score(job);
  ASSERT_TRUE(scored.ok()) << scored.status();
  ASSERT_EQ(scored->scores[0].size(), kSteps.size());
  const int yes = input.positive_token_id(), no = input.negative_token_id();
  for (size_t i = 0; i < kSteps.size(); ++i) {
    const std::vector<float>& row = rows->rows[i];
    ASSERT_EQ(static_cast<int>(row.size()), rows->row_width);
    const double expected = 1.0 / (1.0 + std::exp(double{row[no]} - double{row[yes]}));
    EXPECT_NEAR(scored->scores[0][i], expected, 1e-5) << "step " << i;
    EXPECT_GT(scored->scores[0][i], 0.0f);
    EXPECT_LT(scored->scores[0][i], 1.0f);
  }
}

TEST(LlmJudgeTest, ALongerSolutionCostsItsNewStepAndTheClosingQuestion) {
  prometheus::Registry registry;
  auto judge = StartJudge(registry);
  ASSERT_NE(judge, nullptr);
  ScoreJob first;
  first.job_id = "a";
  first.question = kQuestion;
  first.candidates = {{kSteps[0], kSteps[1]}};
  auto a = judge->scorer()->Score(first);
  ASSERT_TRUE(a.ok()) << a.status();
  ScoreJob longer = first;
  longer.job_id = "b";
  longer.candidates = {kSteps};
  auto b = judge->scorer()->Score(longer);
  ASSERT_TRUE(b.ok()) << b.status();
  // The first two cuts come from the score cache, unchanged.
  EXPECT_FLOAT_EQ(b->scores[0][0], a->scores[0][0]);
  EXPECT_FLOAT_EQ(b->scores[0][1], a->scores[0][1]);
  // Only the new step, its separator and the closing question (plus at most
  // a block recomputed at the boundary) run through the model.
  auto tokens = judge->tokenizer()->Encode(
      "\nThe answer is 126\n\nIs the last step of the solution correct? Answer Yes or "
      "No.<|im_end|>\n<|im_start|>assistant\n",
      false);
  ASSERT_TRUE(tokens.ok());
  EXPECT_GT(b->cache_hit_tokens, 0);
  EXPECT_LE(b->reward_tokens, static_cast<int64_t>(tokens->size()) + 16);
}

TEST(LlmJudgeTest, ClearErrorsForLabelsTheVocabularyLacks) {
  prometheus::Registry registry;
  VerifierStackOptions options;
  options.model.model_dir = SourcePath("models/policy");
  options.model.threads = 1;
  options.overrides = {.kind = "llm_judge"};  // "Yes" is several tokens here
  auto stack = VerifierStack::Create(std::move(options), registry);
  ASSERT_FALSE(stack.ok());
  EXPECT_THAT(stack.status().message(), HasSubstr("positive_token \"Yes\" encodes to"));
}

}  // namespace
}  // namespace arbor::verifier
