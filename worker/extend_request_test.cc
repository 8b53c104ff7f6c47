#include "worker/extend_request.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

GeneratorLimits Limits() {
  GeneratorLimits limits;
  limits.model_name = "qwen2";
  limits.vocab_size = 600;
  limits.max_context_tokens = 1024;
  return limits;
}

arbor::v1::ExtendRequest GoodRequest() {
  arbor::v1::ExtendRequest request;
  request.set_job_id("job-1");
  request.add_prompt_tokens(1);
  request.add_prompt_tokens(2);
  arbor::v1::BranchInput* branch = request.add_branches();
  branch->add_suffix_tokens(3);
  branch->set_num_samples(2);
  branch->set_seed(42);
  request.add_branches();
  return request;
}

std::string Error(const arbor::v1::ExtendRequest& request) {
  absl::Status st = ValidateExtendRequest(request, Limits());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  return std::string(st.message());
}

TEST(ValidateExtendRequestTest, AcceptsAGoodRequest) {
  EXPECT_TRUE(ValidateExtendRequest(GoodRequest(), Limits()).ok());
  arbor::v1::ExtendRequest text;
  text.set_prompt_text("What is 2 + 2? \xE2\x82\xAC");
  text.set_chat_template("chatml");
  text.add_branches();
  EXPECT_TRUE(ValidateExtendRequest(text, Limits()).ok());
}

TEST(ValidateExtendRequestTest, EachBadFieldIsNamed) {
  auto r = GoodRequest();
  r.mutable_branches(1)->add_suffix_tokens(70000);
  EXPECT_EQ(Error(r), "branches[1].suffix_tokens[0]: token id 70000 outside vocabulary [0, 600)");

  r = GoodRequest();
  r.add_prompt_tokens(-3);
  EXPECT_EQ(Error(r), "prompt_tokens[2]: token id -3 outside vocabulary [0, 600)");

  r = GoodRequest();
  r.set_prompt_text("also text");
  EXPECT_THAT(Error(r), HasSubstr("prompt_tokens: set together with prompt_text"));

  r = GoodRequest();
  r.clear_prompt_tokens();
  EXPECT_THAT(Error(r), HasSubstr("prompt_tokens: empty, and so is prompt_text"));

  r = GoodRequest();
  r.clear_prompt_tokens();
  r.set_prompt_text("bad \xC3");
  EXPECT_EQ(Error(r), "prompt_text: invalid UTF-8 at byte 4");

  r = GoodRequest();
  r.clear_branches();
  EXPECT_THAT(Error(r), HasSubstr("branches: empty"));

  r = GoodRequest();
  for (int i = 0; i < 1100; ++i) r.add_branches();
  EXPECT_THAT(Error(r), HasSubstr("branches: 1102 branches, at most 1024"));

  r = GoodRequest();
  r.mutable_branches(0)->set_num_samples(257);
  EXPECT_EQ(Error(r), "branches[0].num_samples: 257 outside [1, 256]");
  r.mutable_branches(0)->set_num_samples(-1);
  EXPECT_EQ(Error(r), "branches[0].num_samples: -1 outside [1, 256]");

  r = GoodRequest();
  for (int i = 0; i < 20; ++i) r.add_branches()->set_num_samples(256);
  EXPECT_THAT(Error(r), HasSubstr("branches: ask for 5123 samples in all, at most 4096"));

  r = GoodRequest();
  r.set_job_id(std::string(200, 'j'));
  EXPECT_EQ(Error(r), "job_id: 200 bytes, at most 128");

  r = GoodRequest();
  r.set_model("llama");
  EXPECT_THAT(Error(r), HasSubstr("model: this server serves \"qwen2\""));

  r = GoodRequest();
  r.mutable_sampling()->set_temperature(11.0f);
  EXPECT_THAT(Error(r), HasSubstr("sampling.temperature: 11 outside [0, 10]"));
  r.mutable_sampling()->set_temperature(-0.5f);
  EXPECT_THAT(Error(r), HasSubstr("sampling.temperature"));

  r = GoodRequest();
  r.mutable_sampling()->set_top_p(0.0f);
  EXPECT_THAT(Error(r), HasSubstr("sampling.top_p: 0 outside (0, 1]"));

  r = GoodRequest();
  r.mutable_sampling()->set_top_k(601);
  EXPECT_THAT(Error(r), HasSubstr("sampling.top_k: 601 outside [0, 600]"));

  r = GoodRequest();
  r.mutable_stop()->add_step_delimiters("");
  EXPECT_EQ(Error(r), "stop.step_delimiters[0]: empty");
  r = GoodRequest();
  r.mutable_stop()->add_step_delimiters(std::string(65, '-'));
  EXPECT_EQ(Error(r), "stop.step_delimiters[0]: 65 bytes, at most 64");
  r = GoodRequest();
  for (int i = 0; i < 9; ++i) r.mutable_stop()->add_step_delimiters("x");
  EXPECT_THAT(Error(r), HasSubstr("stop.step_delimiters: 9 strings, at most 8"));
  r = GoodRequest();
  r.mutable_stop()->add_step_delimiters("\n");
  r.mutable_stop()->set_no_step_delimiter(true);
  EXPECT_THAT(Error(r), HasSubstr("stop.no_step_delimiter"));
  r = GoodRequest();
  r.mutable_stop()->set_max_step_tokens(40000);
  EXPECT_THAT(Error(r), HasSubstr("stop.max_step_tokens: 40000 outside [1, 32768]"));

  r = GoodRequest();
  r.mutable_branches(1)->set_suffix_text("bad \xC3");
  EXPECT_EQ(Error(r), "branches[1].suffix_text: invalid UTF-8 at byte 4");
  r.mutable_branches(1)->set_suffix_text(std::string(4097, 'a'));
  EXPECT_THAT(Error(r), HasSubstr("branches[1].suffix_text: 4097 bytes, at most 4096"));
}

TEST(ValidateExtendContextTest, SuffixTextCountsTowardTheWindow) {
  auto r = GoodRequest();
  r.mutable_branches(0)->set_suffix_text("probe");
  const std::vector<std::vector<int32_t>> text = {{7, 8, 9}, {}};
  EXPECT_TRUE(ValidateExtendContext(r, 1019, Limits(), text).ok());
  absl::Status st = ValidateExtendContext(r, 1020, Limits(), text);
  EXPECT_THAT(st.message(), HasSubstr("branches[0].suffix_text: prompt (1020 tokens) + suffix (1) "
                                      "+ suffix_text (3) = 1024 tokens leave no room"));
}

TEST(ValidateExtendContextTest, EveryBranchNeedsRoomForOneToken) {
  auto r = GoodRequest();
  EXPECT_TRUE(ValidateExtendContext(r, 2, Limits()).ok());
  EXPECT_TRUE(ValidateExtendContext(r, 1022, Limits()).ok());
  absl::Status st = ValidateExtendContext(r, 1023, Limits());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("branches[0].suffix_tokens: prompt (1023 tokens) + suffix "
                                      "(1) = 1024 tokens leave no room in the context window"));
  EXPECT_THAT(ValidateExtendContext(r, 5000, Limits()).message(),
              HasSubstr("prompt_tokens: 5000 tokens leave no room"));
}

TEST(ToGenerateRequestTest, AppliesTheProtocolDefaults) {
  runtime::GenerateRequest g = ToGenerateRequest(GoodRequest(), {1, 2});
  EXPECT_EQ(g.job_id, "job-1");
  EXPECT_THAT(g.prompt_tokens, ElementsAre(1, 2));
  ASSERT_EQ(g.branches.size(), 2u);
  EXPECT_THAT(g.branches[0].suffix_tokens, ElementsAre(3));
  EXPECT_EQ(g.branches[0].num_samples, 2);
  EXPECT_EQ(g.branches[0].seed, 42u);
  EXPECT_EQ(g.branches[1].num_samples, 1);  // 0 means the default
  EXPECT_FLOAT_EQ(g.sampling.temperature, 0.8f);
  EXPECT_FLOAT_EQ(g.sampling.top_p, 1.0f);
  EXPECT_EQ(g.sampling.top_k, 0);
  EXPECT_THAT(g.stop.step_delimiters, ElementsAre("\n\n"));
  EXPECT_EQ(g.stop.max_step_tokens, 256);
  EXPECT_FALSE(g.stop.ignore_eos);

  auto r = GoodRequest();
  r.mutable_sampling()->set_temperature(0.0f);  // explicit greedy, not the default
  r.mutable_sampling()->set_top_p(0.9f);
  r.mutable_sampling()->set_top_k(5);
  r.mutable_stop()->set_no_step_delimiter(true);
  r.mutable_stop()->set_max_step_tokens(7);
  r.mutable_stop()->set_ignore_eos(true);
  g = ToGenerateRequest(r, {1, 2});
  EXPECT_FLOAT_EQ(g.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(g.sampling.top_p, 0.9f);
  EXPECT_EQ(g.sampling.top_k, 5);
  EXPECT_TRUE(g.stop.step_delimiters.empty());
  EXPECT_EQ(g.stop.max_step_tokens, 7);
  EXPECT_TRUE(g.stop.ignore_eos);
}

TEST(ToGenerateRequestTest, SuffixTextTokensFollowTheBranchTokens) {
  runtime::GenerateRequest g = ToGenerateRequest(GoodRequest(), {1, 2}, {{7, 8}, {}});
  ASSERT_EQ(g.branches.size(), 2u);
  EXPECT_THAT(g.branches[0].suffix_tokens, ElementsAre(3, 7, 8));
  EXPECT_TRUE(g.branches[1].suffix_tokens.empty());
}

TEST(FillExtendResponseTest, CopiesOutputsAndUsage) {
  runtime::GenerateResult result;
  runtime::SampleOutput s;
  s.branch_index = 1;
  s.sample_index = 0;
  s.tokens = {5, 6};
  s.text = "ok\xE2\x82";  // a cut character never reaches the wire
  s.logprob = -1.5;
  s.token_logprobs = {-1.0f, -0.5f};
  s.finish_reason = runtime::FinishReason::kEos;
  result.outputs.push_back(s);
  result.usage = {.prefill_tokens = 10, .prefix_cache_hit_tokens = 32, .generated_tokens = 3};
  arbor::v1::ExtendResponse response;
  FillExtendResponse(result, true, &response);
  ASSERT_EQ(response.outputs_size(), 1);
  const auto& out = response.outputs(0);
  EXPECT_EQ(out.branch_index(), 1);
  EXPECT_THAT(out.tokens(), ElementsAre(5, 6));
  EXPECT_EQ(out.text(), "ok\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_DOUBLE_EQ(out.logprob(), -1.5);
  EXPECT_EQ(out.finish_reason(), arbor::v1::FINISH_REASON_EOS);
  EXPECT_THAT(out.token_logprobs(), ElementsAre(-1.0f, -0.5f));
  EXPECT_EQ(response.usage().prefill_tokens(), 10);
  EXPECT_EQ(response.usage().prefix_cache_hit_tokens(), 32);
  EXPECT_EQ(response.usage().generated_tokens(), 3);
  EXPECT_EQ(response.usage().worker_calls(), 1);

  arbor::v1::ExtendResponse without;
  FillExtendResponse(result, false, &without);
  EXPECT_EQ(without.outputs(0).token_logprobs_size(), 0);
}

}  // namespace
}  // namespace arbor::worker
