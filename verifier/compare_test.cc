// Verifier.Compare: the bundled policy model (models/policy, ChatML template)
// served as an LLM judge over loopback gRPC, asked which of two solutions is
// correct. Its probabilities are checked against the model's full logit rows
// of both orders, the cost of the shared question prefix against the prefix
// cache, and the errors of bad requests and of models that cannot compare.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "arbor/v1/verifier.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "rpc/server.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"
#include "serving/testing/service_test_util.h"
#include "verifier/reward_input.h"
#include "verifier/verifier_stack.h"

namespace arbor::verifier {
namespace {

using ::arbor::test_util::SourcePath;
using ::testing::HasSubstr;

constexpr char kQuestion[] = "Start with 17. Add 25, multiply by 3. What is the result?";
const std::vector<std::string> kRight = {"17 + 25 = 42\n\n", "42 * 3 = 126\n\n",
                                         "The answer is 126"};
const std::vector<std::string> kWrong = {"17 + 25 = 43\n\n", "43 * 3 = 129\n\n",
                                         "The answer is 129"};
const std::vector<std::string> kOther = {"17 + 25 = 42\n\n", "42 * 3 = 124\n\n",
                                         "The answer is 124"};

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

class CompareTest : public ::testing::Test {
 protected:
  // The tiny policy's vocabulary has no "Yes"/"No": "Y"/"N" stand in for
  // Score's verdicts; "A"/"B" (the defaults) are single tokens.
  void Start(const std::string& model_dir,
             RewardConfigOverrides overrides = {.kind = "llm_judge",
                                                .positive_token = "Y",
                                                .negative_token = "N"}) {
    registry_ = std::make_shared<prometheus::Registry>();
    VerifierStackOptions options;
    options.model.model_dir = SourcePath(model_dir);
    options.model.threads = 2;
    options.model.kv_cache_tokens = 16384;
    options.overrides = std::move(overrides);
    auto stack = VerifierStack::Create(std::move(options), *registry_);
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = *std::move(stack);
    arbor::rpc::ServerOptions server_options;
    server_options.name = "verifier";
    server_options.host = "127.0.0.1";
    server_options.metrics_port = -1;
    server_options.announce = false;
    auto server = arbor::rpc::Server::Start(server_options, {stack_->service()}, registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = arbor::v1::Verifier::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    server_.reset();
    stack_.reset();
  }

  grpc::Status Compare(const arbor::v1::CompareRequest& request,
                       arbor::v1::CompareResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    return stub_->Compare(&context, request, response);
  }

  arbor::v1::VerifierInfo Info() {
    grpc::ClientContext context;
    arbor::v1::VerifierInfo info;
    EXPECT_TRUE(stub_->Info(&context, arbor::v1::VerifierInfoRequest(), &info).ok());
    return info;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<VerifierStack> stack_;
  std::unique_ptr<arbor::rpc::Server> server_;
  std::unique_ptr<arbor::v1::Verifier::Stub> stub_;
};

arbor::v1::CompareRequest MakeRequest(
    const std::string& question,
    const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>& pairs) {
  arbor::v1::CompareRequest request;
  request.set_job_id("job");
  request.set_question(question);
  for (const auto& [a, b] : pairs) {
    arbor::v1::ComparePair* pair = request.add_pairs();
    for (const auto& s : a) pair->mutable_a()->add_steps(s);
    for (const auto& s : b) pair->mutable_b()->add_steps(s);
  }
  return request;
}

TEST_F(CompareTest, AsksInTheModelsTemplateAndAveragesBothOrdersOfTheFullLogitRows) {
  Start("models/policy");
  const arbor::v1::VerifierInfo info = Info();
  EXPECT_EQ(info.kind(), "llm_judge");
  EXPECT_TRUE(info.supports_compare());
  EXPECT_EQ(info.compare_a_token(), "A");
  EXPECT_EQ(info.compare_b_token(), "B");

  const RewardInput& input = stack_->scorer()->input();
  auto prompt = input.EncodeComparePrompt(kQuestion);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  auto ab = input.BuildComparison(*prompt, kRight, kWrong);
  ASSERT_TRUE(ab.ok()) << ab.status();
  EXPECT_EQ(stack_->tokenizer()->Decode(ab->tokens, /*skip_special_tokens=*/false),
            "<|im_start|>user\nHere is a math problem and two candidate solutions.\n\n"
            "Problem: Start with 17. Add 25, multiply by 3. What is the result?\n\n"
            "Solution A:\n17 + 25 = 42\n42 * 3 = 126\nThe answer is 126\n\n"
            "Solution B:\n17 + 25 = 43\n43 * 3 = 129\nThe answer is 129\n\n"
            "Which solution is correct? Answer A or B.<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_EQ(ab->positions.size(), 1u);
  EXPECT_EQ(ab->positions[0], static_cast<int32_t>(ab->tokens.size()) - 1);

  // The reference: the model's whole output rows at the verdict position of
  // each order (a first, then b first), from a separate engine request.
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> pairs = {
      {kRight, kWrong}, {kWrong, kOther}, {kOther, kRight}};
  runtime::ScoreRequest whole;
  whole.job_id = "reference";
  for (const auto& [a, b] : pairs) {
    for (const auto* first : {&a, &b}) {
      auto seq = input.BuildComparison(*prompt, *first, first == &a ? b : a);
      ASSERT_TRUE(seq.ok()) << seq.status();
      whole.sequences.push_back({.tokens = seq->tokens, .positions = seq->positions});
    }
  }
  auto rows = stack_->engine()->Score(whole);
  ASSERT_TRUE(rows.ok()) << rows.status();
  const int a_id = input.compare_columns()[0], b_id = input.compare_columns()[1];

  arbor::v1::CompareResponse response;
  grpc::Status status = Compare(MakeRequest(kQuestion, pairs), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 3);
  for (int p = 0; p < 3; ++p) {
    const std::vector<float>& first = rows->rows[2 * p];
    const std::vector<float>& second = rows->rows[2 * p + 1];
    const double a_first = Sigmoid(double{first[a_id]} - double{first[b_id]});
    const double b_first = Sigmoid(double{second[b_id]} - double{second[a_id]});
    const arbor::v1::CompareResult& r = response.results(p);
    EXPECT_NEAR(r.a_first(), a_first, 1e-5) << "pair " << p;
    EXPECT_NEAR(r.b_first(), b_first, 1e-5) << "pair " << p;
    EXPECT_NEAR(r.prob_a(), 0.5 * (a_first + b_first), 1e-5) << "pair " << p;
    EXPECT_GT(r.prob_a(), 0.0f);
    EXPECT_LT(r.prob_a(), 1.0f);
  }
  EXPECT_EQ(response.usage().reward_calls(), 1);
  EXPECT_EQ(response.usage().compare_calls(), 1);
  EXPECT_EQ(response.usage().compared_pairs(), 3);
  EXPECT_GT(response.usage().reward_tokens(), 0);

  // Both orders make the judgement symmetric: swapping a and b gives 1 - p.
  arbor::v1::CompareResponse swapped;
  ASSERT_TRUE(Compare(MakeRequest(kQuestion, {{kWrong, kRight}}), &swapped).ok());
  EXPECT_NEAR(swapped.results(0).prob_a(), 1.0f - response.results(0).prob_a(), 1e-6);
  EXPECT_NEAR(swapped.results(0).a_first(), 1.0f - response.results(0).b_first(), 1e-6);
}

TEST_F(CompareTest, TheSharedQuestionPrefixComesFromThePrefixCache) {
  Start("models/policy");
  auto prompt = stack_->scorer()->input().EncodeComparePrompt(kQuestion);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  const int64_t prefix = static_cast<int64_t>(prompt->size());
  arbor::v1::CompareResponse first, second;
  ASSERT_TRUE(Compare(MakeRequest(kQuestion, {{kRight, kWrong}}), &first).ok());
  // Within one call both orders share the chat head and the question.
  EXPECT_GE(first.usage().reward_cache_hit_tokens(), prefix - 16) << "prefix " << prefix;
  // A new pair of the same question: the chat head, the question and (for
  // the order with kRight first) kRight come from the cache.
  ASSERT_TRUE(Compare(MakeRequest(kQuestion, {{kRight, kOther}}), &second).ok());
  EXPECT_GE(second.usage().reward_cache_hit_tokens(), 2 * (prefix - 16));
  EXPECT_LT(second.usage().reward_tokens(), first.usage().reward_tokens());
}

TEST_F(CompareTest, BadRequestsAreRejectedNamingTheField) {
  Start("models/policy");
  auto expect_invalid = [&](const arbor::v1::CompareRequest& request, const std::string& message) {
    arbor::v1::CompareResponse response;
    grpc::Status status = Compare(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  };
  expect_invalid(MakeRequest("", {{kRight, kWrong}}), "question: empty");
  expect_invalid(MakeRequest(kQuestion, {}), "pairs: empty");
  expect_invalid(MakeRequest(kQuestion, {{kRight, kWrong}, {kRight, {}}}), "pairs[1].b.steps: empty");
  expect_invalid(MakeRequest(kQuestion, {{{}, kWrong}}), "pairs[0].a.steps: empty");
  expect_invalid(MakeRequest(kQuestion, std::vector<std::pair<std::vector<std::string>,
                                                              std::vector<std::string>>>(
                                            513, {kRight, kWrong})),
                 "pairs: 513 pairs, at most 512");
  arbor::v1::CompareRequest other = MakeRequest(kQuestion, {{kRight, kWrong}});
  other.set_model("prm");
  expect_invalid(other, "model: this server serves \"policy\", not \"prm\"");
  std::string long_step;
  for (int i = 0; i < 100; ++i) long_step += std::to_string(i) + " + 1 = " + std::to_string(i + 1);
  expect_invalid(MakeRequest(kQuestion, {{kRight, kWrong}, {{long_step}, kWrong}}),
                 "pairs[1]: the judge's input is");
}

TEST_F(CompareTest, APrmCannotCompare) {
  Start("models/prm", {});
  EXPECT_FALSE(Info().supports_compare());
  arbor::v1::CompareResponse response;
  grpc::Status status = Compare(MakeRequest(kQuestion, {{kRight, kWrong}}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("only an llm_judge compares"));
}

TEST_F(CompareTest, AJudgeWhoseCompareVerdictIsNotOneTokenStillScoresButCannotCompare) {
  Start("models/policy", {.kind = "llm_judge",
                          .positive_token = "Y",
                          .negative_token = "N",
                          .compare_a_token = "Solution"});
  EXPECT_FALSE(Info().supports_compare());
  arbor::v1::CompareResponse response;
  grpc::Status status = Compare(MakeRequest(kQuestion, {{kRight, kWrong}}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("compare_a_token \"Solution\" encodes to"));
  // Score still works.
  ScoreJob job;
  job.job_id = "score";
  job.question = kQuestion;
  job.candidates = {kRight};
  EXPECT_TRUE(stack_->scorer()->Score(job).ok());
}

}  // namespace
}  // namespace arbor::verifier
