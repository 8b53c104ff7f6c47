// arbor.v1.Verifier served in process on loopback, called through a real gRPC
// client: the bundled reference PRM (models/prm, a token-logit PRM), the golden
// Qwen2 model read as a token-logit PRM, and tiny value-head models (PRM and
// ORM) written at test time.
#include "verifier/verifier_service.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "rpc/server.h"
#include "runtime/testing/tiny_model.h"
#include "serving/engine_metrics.h"
#include "serving/prompt_renderer.h"
#include "serving/served_model.h"
#include "serving/testing/service_test_util.h"
#include "verifier/reward_config.h"
#include "verifier/reward_scorer.h"
#include "verifier/verifier_stack.h"

namespace arbor::verifier {
namespace {

using ::arbor::test_util::HttpGet;
using ::arbor::test_util::SourcePath;
using ::arbor::test_util::WaitFor;
using serving::EngineMetrics;
using serving::ServedModel;
using serving::ServedModelOptions;
using ::testing::HasSubstr;

constexpr char kReferencePrm[] = "models/prm";
constexpr char kQwen2[] = "tests/fixtures/golden/qwen2";

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct VerifierOptions {
  std::string model_dir;
  // nullopt: the folder's prm_config.json (or the defaults).
  std::optional<RewardConfig> config;
  int max_queued_requests = 1024;
  int64_t kv_cache_tokens = 16384;
  int score_cache_entries = 1 << 16;
  bool http_metrics = false;
};

class VerifierServiceTest : public ::testing::Test {
 protected:
  void StartVerifier(const VerifierOptions& options) {
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<EngineMetrics>(*registry_, "verifier");
    ServedModelOptions model;
    model.model_dir = options.model_dir;
    model.kv_cache_tokens = options.kv_cache_tokens;
    model.threads = 2;
    model.engine.max_queued_requests = options.max_queued_requests;
    EngineMetrics* metrics = metrics_.get();
    model.engine.step_observer = [metrics](const runtime::StepInfo& s) { metrics->ObserveStep(s); };
    auto served = serving::LoadServedModel(model);
    ASSERT_TRUE(served.ok()) << served.status();
    served_ = *std::move(served);
    metrics_->Attach(served_.engine.get());
    const bool value_head = served_.engine->model_config().is_value_head();
    RewardConfig config;
    if (options.config.has_value()) {
      config = *options.config;
    } else {
      auto loaded = LoadRewardConfig(served_.model_dir, value_head);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      config = *loaded;
    }
    auto renderer = serving::MakePromptRenderer(served_.model_dir);
    ASSERT_TRUE(renderer.ok()) << renderer.status();
    RewardScorerOptions scorer_options;
    scorer_options.score_cache_entries = options.score_cache_entries;
    auto scorer = RewardScorer::ForModel(served_.engine.get(), served_.tokenizer.get(), config,
                                         renderer->render, scorer_options);
    ASSERT_TRUE(scorer.ok()) << scorer.status();
    scorer_ = *std::move(scorer);
    auto service =
        VerifierService::Create({.model_name = served_.name}, scorer_.get(), metrics_.get());
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    arbor::rpc::ServerOptions server_options;
    server_options.name = "verifier";
    server_options.host = "127.0.0.1";
    server_options.metrics_host = "127.0.0.1";
    server_options.metrics_port = options.http_metrics ? 0 : -1;
    server_options.announce = false;
    auto server = arbor::rpc::Server::Start(server_options, {service_.get()}, registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = arbor::v1::Verifier::NewStub(channel_);
  }

  void TearDown() override {
    server_.reset();
    service_.reset();
    scorer_.reset();
    if (metrics_) metrics_->Detach();
    served_.engine.reset();
  }

  grpc::Status Score(const arbor::v1::ScoreRequest& request, arbor::v1::ScoreResponse* response,
                     absl::Duration timeout = absl::Seconds(120)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Score(&context, request, response);
  }

  bool EngineIdle() const {
    const runtime::EngineStats stats = served_.engine->stats();
    return stats.active_requests == 0 && stats.kv_blocks_used == 0;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<EngineMetrics> metrics_;
  ServedModel served_;
  std::unique_ptr<RewardScorer> scorer_;
  std::unique_ptr<VerifierService> service_;
  std::unique_ptr<arbor::rpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<arbor::v1::Verifier::Stub> stub_;
};

arbor::v1::ScoreRequest MakeRequest(const std::string& question,
                                    const std::vector<std::vector<std::string>>& candidates,
                                    bool last_step_only = false) {
  arbor::v1::ScoreRequest request;
  request.set_job_id("job");
  request.set_question(question);
  request.set_last_step_only(last_step_only);
  for (const auto& steps : candidates) {
    arbor::v1::ScoreCandidate* c = request.add_candidates();
    for (const auto& s : steps) c->add_steps(s);
  }
  return request;
}

std::vector<std::vector<float>> Scores(const arbor::v1::ScoreResponse& response) {
  std::vector<std::vector<float>> out;
  for (const auto& r : response.results()) out.emplace_back(r.scores().begin(), r.scores().end());
  return out;
}

// A token-logit PRM reading of the golden Qwen2 model (a random LM): scores
// mean nothing, the plumbing is what is tested.
RewardConfig GoldenTokenLogitConfig() {
  RewardConfig config = DefaultRewardConfig(RewardKind::kTokenLogitPrm, false);
  config.chat_template = "chatml";
  config.step_tag = "<|im_end|>";  // a special token of its tokenizer
  config.step_separator = "\n\n";
  config.positive_token = "+";
  config.negative_token = "-";
  return config;
}

const char kQuestion[] = "Start with 417. Add 325, multiply by 3, subtract 96. What is the result?";
const std::vector<std::string> kGoodSteps = {"417 + 325 = 742\n\n", "742 * 3 = 2226\n\n",
                                             "2226 - 96 = 2130\n\n", "The answer is 2130"};

// ------------------------------------------------------------ reference PRM

TEST_F(VerifierServiceTest, ReferencePrmInputIsItsTrainingFormat) {
  StartVerifier({.model_dir = SourcePath(kReferencePrm)});
  // prm_config.json carries an example of the exact text the PRM was trained
  // on; the verifier's piecewise tokens must equal that text's tokens, with
  // the scores read at its step tags.
  const nlohmann::json config =
      nlohmann::json::parse(ReadText(SourcePath(kReferencePrm) + "/prm_config.json"));
  const std::string example = config["example"].get<std::string>();
  auto expected = served_.tokenizer->Encode(example, /*add_special_tokens=*/false);
  ASSERT_TRUE(expected.ok());
  const std::string question = "Start with 17. Add 25, multiply by 3. What is the result?";
  const std::vector<std::string> steps = {"17 + 25 = 42\n\n", "42 * 3 = 126\n\n",
                                          "The answer is 126"};
  auto prompt = scorer_->input().EncodePrompt(question);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  auto sequences = scorer_->input().Build(*prompt, steps, false);
  ASSERT_TRUE(sequences.ok()) << sequences.status();
  ASSERT_EQ(sequences->size(), 1u);
  EXPECT_EQ((*sequences)[0].tokens, *expected);
  const int32_t tag = config["step_tag_id"].get<int32_t>();
  std::vector<int32_t> tag_positions;
  for (size_t i = 0; i < expected->size(); ++i) {
    if ((*expected)[i] == tag) tag_positions.push_back(static_cast<int32_t>(i));
  }
  EXPECT_EQ((*sequences)[0].positions, tag_positions);
}

TEST_F(VerifierServiceTest, ReferencePrmInfoAndScores) {
  StartVerifier({.model_dir = SourcePath(kReferencePrm)});
  grpc::ClientContext context;
  arbor::v1::VerifierInfo info;
  ASSERT_TRUE(stub_->Info(&context, arbor::v1::VerifierInfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "prm");
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.kind(), "token_logit_prm");
  EXPECT_EQ(info.max_context_tokens(), 512);
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_EQ(info.step_tag(), "<|step|>");
  EXPECT_EQ(info.positive_token(), "+");
  EXPECT_EQ(info.negative_token(), "-");

  // Held-out problems' reference solutions: one probability per step. (That
  // these equal an independent NumPy reading of the PRM is checked by
  // tests/python/grpc_worker_verifier_client.py.)
  std::ifstream heldout(SourcePath("models/data/heldout.jsonl"));
  std::string line;
  for (int n = 0; n < 8 && std::getline(heldout, line); ++n) {
    const nlohmann::json p = nlohmann::json::parse(line);
    const auto steps = p["steps"].get<std::vector<std::string>>();
    arbor::v1::ScoreResponse response;
    grpc::Status status = Score(MakeRequest(p["question"].get<std::string>(), {steps}), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const auto scores = Scores(response);
    ASSERT_EQ(scores.size(), 1u);
    ASSERT_EQ(scores[0].size(), steps.size());
    for (float s : scores[0]) EXPECT_TRUE(s > 0.0f && s < 1.0f) << s;
    EXPECT_GT(response.usage().reward_tokens(), 0);
  }
}

TEST_F(VerifierServiceTest, RescoringALongerCandidateCostsOnlyItsNewTokens) {
  StartVerifier({.model_dir = SourcePath(kReferencePrm)});
  std::vector<std::string> steps(kGoodSteps.begin(), kGoodSteps.begin() + 2);
  arbor::v1::ScoreResponse first;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {steps}), &first).ok());
  const auto first_scores = Scores(first);
  ASSERT_EQ(first_scores[0].size(), 2u);
  EXPECT_EQ(first.usage().reward_cache_hit_tokens(), 0);
  EXPECT_EQ(first.usage().reward_calls(), 1);

  steps.push_back(kGoodSteps[2]);
  arbor::v1::ScoreResponse second;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {steps}), &second).ok());
  const auto second_scores = Scores(second);
  ASSERT_EQ(second_scores[0].size(), 3u);
  EXPECT_FLOAT_EQ(second_scores[0][0], first_scores[0][0]);
  EXPECT_FLOAT_EQ(second_scores[0][1], first_scores[0][1]);

  // The tokens the longer candidate adds: separator, step, tag.
  auto prompt = scorer_->input().EncodePrompt(kQuestion);
  ASSERT_TRUE(prompt.ok());
  const auto shorter = *scorer_->input().Build(*prompt, {kGoodSteps[0], kGoodSteps[1]}, false);
  const auto longer = *scorer_->input().Build(*prompt, steps, false);
  const int64_t new_tokens =
      static_cast<int64_t>(longer[0].tokens.size() - shorter[0].tokens.size());
  const int64_t old_tokens = static_cast<int64_t>(shorter[0].tokens.size());
  EXPECT_EQ(first.usage().reward_tokens(), old_tokens);
  // Only whole 16-token blocks are cached: at most 15 old tokens run again.
  EXPECT_GE(second.usage().reward_tokens(), new_tokens);
  EXPECT_LE(second.usage().reward_tokens(), new_tokens + 15);
  EXPECT_GE(second.usage().reward_cache_hit_tokens(), old_tokens - 15);
  EXPECT_EQ(second.usage().reward_tokens() + second.usage().reward_cache_hit_tokens(),
            static_cast<int64_t>(longer[0].tokens.size()));

  // The same candidate again: nothing runs.
  arbor::v1::ScoreResponse third;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {steps}), &third).ok());
  EXPECT_EQ(Scores(third), second_scores);
  EXPECT_EQ(third.usage().reward_tokens(), 0);
  EXPECT_EQ(third.usage().reward_cache_hit_tokens(), static_cast<int64_t>(longer[0].tokens.size()));
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));
}

TEST_F(VerifierServiceTest, ScoresDoNotDependOnBatchingOrTheScoreCache) {
  StartVerifier({.model_dir = SourcePath(kReferencePrm), .score_cache_entries = 0});
  const std::vector<std::string> wrong = {"417 + 325 = 742", "742 * 3 = 2236", "The answer is 9"};
  arbor::v1::ScoreResponse together;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {kGoodSteps, wrong}), &together).ok());
  const auto both = Scores(together);
  ASSERT_EQ(both.size(), 2u);
  ASSERT_EQ(both[0].size(), 4u);
  ASSERT_EQ(both[1].size(), 3u);
  // Both candidates share their first step: the same score, one computation.
  EXPECT_NEAR(both[0][0], both[1][0], 1e-5);
  arbor::v1::ScoreResponse alone;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {wrong}), &alone).ok());
  const auto one = Scores(alone);
  for (size_t i = 0; i < wrong.size(); ++i) EXPECT_NEAR(one[0][i], both[1][i], 1e-4);
  // last_step_only: the last step's score only.
  arbor::v1::ScoreResponse last;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {kGoodSteps, wrong}, true), &last).ok());
  const auto lasts = Scores(last);
  ASSERT_EQ(lasts[0].size(), 1u);
  ASSERT_EQ(lasts[1].size(), 1u);
  EXPECT_NEAR(lasts[0][0], both[0][3], 1e-4);
  EXPECT_NEAR(lasts[1][0], both[1][2], 1e-4);
}

// ------------------------------------------------------------ bad input, overload

TEST_F(VerifierServiceTest, BadRequestsAreRejectedNamingTheField) {
  StartVerifier({.model_dir = SourcePath(kReferencePrm)});
  auto expect_invalid = [&](const arbor::v1::ScoreRequest& request, const std::string& message) {
    arbor::v1::ScoreResponse response;
    grpc::Status status = Score(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  };
  expect_invalid(MakeRequest("", {kGoodSteps}), "question: empty");
  expect_invalid(MakeRequest(kQuestion, {}), "candidates: empty");
  expect_invalid(MakeRequest(kQuestion, {kGoodSteps, {}}), "candidates[1].steps: empty");
  expect_invalid(MakeRequest(kQuestion, {kGoodSteps, std::vector<std::string>(513, "1 + 1 = 2")}),
                 "candidates[1].steps: 513 steps, at most 512");
  std::string long_step;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&long_step, i, " + 1 = ", i + 1, ", ");
  expect_invalid(MakeRequest(kQuestion, {kGoodSteps, {long_step}}),
                 "candidates[1]: the reward model's input is");
  expect_invalid(MakeRequest(kQuestion, {kGoodSteps, {long_step}}),
                 "longer than its context window of 512 tokens");
  arbor::v1::ScoreRequest other = MakeRequest(kQuestion, {kGoodSteps});
  other.set_model("orm");
  expect_invalid(other, "model: this server serves \"prm\", not \"orm\"");
  other = MakeRequest(kQuestion, {kGoodSteps});
  other.set_job_id(std::string(300, 'j'));
  expect_invalid(other, "job_id: 300 bytes, at most 128");
  EXPECT_EQ(served_.engine->stats().steps, 0);
}

TEST_F(VerifierServiceTest, OverloadIsResourceExhaustedAndCancellingReleasesTheBlocks) {
  StartVerifier({.model_dir = SourcePath(kQwen2),
                 .config = GoldenTokenLogitConfig(),
                 .max_queued_requests = 1,
                 .kv_cache_tokens = 1 << 17});
  // Many long candidates that share nothing but the question.
  std::vector<std::vector<std::string>> candidates;
  for (int c = 0; c < 256; ++c) {
    std::string step;
    for (int i = 0; i < 60; ++i) absl::StrAppend(&step, (c * 7919 + i * 104729) % 100000, " ");
    candidates.push_back({step, step});
  }
  arbor::v1::ScoreRequest big = MakeRequest(kQuestion, candidates);
  arbor::v1::ScoreResponse big_response;
  grpc::ClientContext big_context;
  absl::Notification big_done;
  grpc::Status big_status;
  arbor::test_util::InFlightCall in_flight(&big_context, &big_done);
  stub_->async()->Score(&big_context, &big, &big_response, [&](grpc::Status s) {
    big_status = std::move(s);
    big_done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return served_.engine->stats().kv_blocks_used > 0; }));
  arbor::v1::ScoreResponse response;
  grpc::Status status = Score(MakeRequest(kQuestion, {kGoodSteps}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  big_context.TryCancel();
  ASSERT_TRUE(big_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(big_status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));
  EXPECT_TRUE(Score(MakeRequest(kQuestion, {kGoodSteps}), &response).ok());
}

TEST_F(VerifierServiceTest, HealthAndMetrics) {
  StartVerifier({.model_dir = SourcePath(kReferencePrm), .http_metrics = true});
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse reply;
  ASSERT_TRUE(health->Check(&context, grpc::health::v1::HealthCheckRequest(), &reply).ok());
  EXPECT_EQ(reply.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  arbor::v1::ScoreResponse response;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {kGoodSteps}), &response).ok());
  ASSERT_TRUE(WaitFor([&] { return EngineIdle(); }));
  metrics_->Refresh();
  const std::string text = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_THAT(text, HasSubstr("arbor_engine_kv_blocks{role=\"verifier\",state=\"total\"} 1024"));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("arbor_engine_tokens_total{kind=\"prefill\",role=\""
                                           "verifier\"} ",
                                           response.usage().reward_tokens())));
  EXPECT_THAT(text, HasSubstr("code=\"OK\",method=\"/arbor.v1.Verifier/Score\""));
}

// ------------------------------------------------------------ value heads

class ValueHeadTest : public VerifierServiceTest {
 protected:
  // A tiny random Qwen2 PRM with a 2-label score head and the golden Qwen2
  // tokenizer.
  void WriteValueHeadModel(int num_labels) {
    runtime::test_util::TinyModelSpec spec;
    spec.architecture = "Qwen2ForProcessRewardModel";
    spec.vocab_size = 500;
    spec.qkv_bias = true;
    spec.num_labels = num_labels;
    runtime::test_util::WriteTinyModel(dir_.path(), spec);
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      runtime::test_util::WriteFile(dir_.file(file),
                                    ReadText(SourcePath(std::string(kQwen2) + "/" + file)));
    }
  }

  runtime::test_util::TempDir dir_;
};

TEST_F(ValueHeadTest, ValueHeadPrmReadsASoftmaxAtEveryTag) {
  WriteValueHeadModel(2);
  runtime::test_util::WriteFile(dir_.file("prm_config.json"),
                                R"({"kind": "value_head_prm", "step_tag": "<|endoftext|>",
                                   "prompt_template": "chatml"})");
  StartVerifier({.model_dir = dir_.path()});
  grpc::ClientContext context;
  arbor::v1::VerifierInfo info;
  ASSERT_TRUE(stub_->Info(&context, arbor::v1::VerifierInfoRequest(), &info).ok());
  EXPECT_EQ(info.kind(), "value_head_prm");
  EXPECT_EQ(info.architecture(), "Qwen2ForProcessRewardModel");
  EXPECT_EQ(info.step_tag(), "<|endoftext|>");

  arbor::v1::ScoreResponse response;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {kGoodSteps}), &response).ok());
  const auto scores = Scores(response);
  ASSERT_EQ(scores[0].size(), 4u);
  // Each score is softmax(row)[1] of the head's row at the step's tag.
  auto prompt = scorer_->input().EncodePrompt(kQuestion);
  const auto seqs = *scorer_->input().Build(*prompt, kGoodSteps, false);
  runtime::ScoreRequest raw;
  raw.sequences.push_back({seqs[0].tokens, seqs[0].positions});
  auto rows = served_.engine->Score(raw);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->row_width, 2);
  for (size_t i = 0; i < 4; ++i) {
    const float a = rows->rows[0][2 * i], b = rows->rows[0][2 * i + 1];
    EXPECT_NEAR(scores[0][i], std::exp(b) / (std::exp(a) + std::exp(b)), 1e-5);
    EXPECT_EQ(seqs[0].tokens[seqs[0].positions[i]], 0);  // <|endoftext|>
  }
}

TEST_F(ValueHeadTest, OrmScoresEachCutSolutionAtItsEnd) {
  WriteValueHeadModel(1);
  runtime::test_util::WriteFile(dir_.file("prm_config.json"), R"({"kind": "orm"})");
  StartVerifier({.model_dir = dir_.path()});
  grpc::ClientContext context;
  arbor::v1::VerifierInfo info;
  ASSERT_TRUE(stub_->Info(&context, arbor::v1::VerifierInfoRequest(), &info).ok());
  EXPECT_EQ(info.kind(), "orm");

  arbor::v1::ScoreResponse all;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {kGoodSteps}), &all).ok());
  const auto every = Scores(all);
  ASSERT_EQ(every[0].size(), 4u);
  // The ORM's score of the first two steps is the score of that solution whole.
  arbor::v1::ScoreResponse cut;
  ASSERT_TRUE(Score(MakeRequest(kQuestion, {{kGoodSteps[0], kGoodSteps[1]}}, true), &cut).ok());
  const auto cut_scores = Scores(cut);
  ASSERT_EQ(cut_scores[0].size(), 1u);
  EXPECT_NEAR(cut_scores[0][0], every[0][1], 1e-5);
  // One output: a sigmoid.
  for (float s : every[0]) EXPECT_TRUE(s > 0.0f && s < 1.0f);
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));
}

TEST_F(ValueHeadTest, ALabelTokenConfigOnAValueHeadModelIsRefused) {
  WriteValueHeadModel(2);
  ServedModelOptions model;
  model.model_dir = dir_.path();
  auto served = serving::LoadServedModel(model);
  ASSERT_TRUE(served.ok()) << served.status();
  auto renderer = serving::MakePromptRenderer(dir_.path());
  ASSERT_TRUE(renderer.ok());
  auto scorer = RewardScorer::ForModel(served->engine.get(), served->tokenizer.get(),
                                       GoldenTokenLogitConfig(), renderer->render);
  EXPECT_THAT(scorer.status().message(), HasSubstr("value head"));
}

}  // namespace
}  // namespace arbor::verifier

namespace arbor::verifier {
namespace {

TEST(VerifierStackTest, BuildsFromTheFolderAndAppliesOverrides) {
  prometheus::Registry registry;
  VerifierStackOptions options;
  options.model.model_dir = SourcePath(kReferencePrm);
  options.model.threads = 2;
  auto stack = VerifierStack::Create(options, registry);
  ASSERT_TRUE(stack.ok()) << stack.status();
  EXPECT_EQ((*stack)->model_name(), "prm");
  EXPECT_EQ((*stack)->config().chat_template, "chatml");
  EXPECT_EQ((*stack)->service()->MakeInfo().kind(), "token_logit_prm");
  ScoreJob job;
  job.question = kQuestion;
  job.candidates = {kGoodSteps};
  auto scores = (*stack)->scorer()->Score(job);
  ASSERT_TRUE(scores.ok()) << scores.status();

  // Swapped label tokens read 1 - P(correct).
  options.overrides.positive_token = "-";
  options.overrides.negative_token = "+";
  prometheus::Registry registry2;
  auto swapped = VerifierStack::Create(options, registry2);
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  auto flipped = (*swapped)->scorer()->Score(job);
  ASSERT_TRUE(flipped.ok()) << flipped.status();
  ASSERT_EQ(flipped->scores[0].size(), kGoodSteps.size());
  for (size_t i = 0; i < kGoodSteps.size(); ++i) {
    EXPECT_NEAR(flipped->scores[0][i], 1.0f - scores->scores[0][i], 1e-5);
  }

  options.overrides = {.kind = "value_head_prm"};
  prometheus::Registry registry3;
  EXPECT_THAT(VerifierStack::Create(options, registry3).status().message(),
              HasSubstr("the model has none"));
  options.overrides = {.kind = "bayesian"};
  EXPECT_THAT(VerifierStack::Create(options, registry3).status().message(),
              HasSubstr("reward config overrides: prm_config.kind"));
}

}  // namespace
}  // namespace arbor::verifier
