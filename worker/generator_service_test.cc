// arbor.v1.Generator served in process on loopback over the golden Qwen2
// model (tests/fixtures/golden/qwen2), called through a real gRPC client.
#include "worker/generator_service.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "common/prefix_hash.h"
#include "common/sha256.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "rpc/server.h"
#include "serving/engine_metrics.h"
#include "serving/prompt_renderer.h"
#include "serving/served_model.h"
#include "serving/testing/service_test_util.h"
#include "worker/worker_stack.h"

namespace arbor::worker {
namespace {

using ::arbor::test_util::HttpGet;
using ::arbor::test_util::SourcePath;
using ::arbor::test_util::WaitFor;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr char kQwen2[] = "tests/fixtures/golden/qwen2";
constexpr char kLlama[] = "tests/fixtures/golden/llama";  // sharded checkpoint

struct WorkerOptions {
  std::string model = kQwen2;
  int max_queued_requests = 1024;
  int64_t kv_cache_tokens = 16384;
  // /metrics over HTTP (its server takes a while to stop, so only when needed).
  bool http_metrics = false;
};

class GeneratorServiceTest : public ::testing::Test {
 protected:
  void StartWorker(const WorkerOptions& options = {}) {
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<serving::EngineMetrics>(*registry_, "worker");
    serving::ServedModelOptions model;
    model.model_dir = SourcePath(options.model);
    model.kv_cache_tokens = options.kv_cache_tokens;
    model.threads = 2;
    model.engine.max_queued_requests = options.max_queued_requests;
    serving::EngineMetrics* metrics = metrics_.get();
    std::atomic<int>* max_seqs = &max_batch_seqs_;
    model.engine.step_observer = [metrics, max_seqs](const runtime::StepInfo& step) {
      metrics->ObserveStep(step);
      int seen = max_seqs->load();
      while (step.num_seqs > seen && !max_seqs->compare_exchange_weak(seen, step.num_seqs)) {
      }
    };
    auto served = serving::LoadServedModel(model);
    ASSERT_TRUE(served.ok()) << served.status();
    served_ = *std::move(served);
    metrics_->Attach(served_.engine.get());
    auto renderer = serving::MakePromptRenderer(served_.model_dir);
    ASSERT_TRUE(renderer.ok()) << renderer.status();
    GeneratorServiceOptions service_options;
    service_options.model_name = served_.name;
    service_options.default_chat_template = renderer->default_template;
    auto service =
        GeneratorService::Create(service_options, served_.engine.get(), served_.tokenizer.get(),
                                 renderer->render, metrics_.get());
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = *std::move(service);
    arbor::rpc::ServerOptions server_options;
    server_options.name = "worker";
    server_options.host = "127.0.0.1";
    server_options.metrics_host = "127.0.0.1";
    server_options.announce = false;
    server_options.metrics_port = options.http_metrics ? 0 : -1;
    server_options.drain_grace = absl::Seconds(2);
    auto server = arbor::rpc::Server::Start(server_options, {service_.get()}, registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = arbor::v1::Generator::NewStub(channel_);
  }

  void TearDown() override {
    server_.reset();
    service_.reset();
    if (metrics_) metrics_->Detach();
    served_.engine.reset();
  }

  grpc::Status Extend(const arbor::v1::ExtendRequest& request, arbor::v1::ExtendResponse* response,
                      absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Extend(&context, request, response);
  }

  // The engine holds no request and no KV block for one.
  bool EngineIdle() const {
    const runtime::EngineStats stats = served_.engine->stats();
    return stats.active_requests == 0 && stats.kv_blocks_used == 0;
  }

  // Extend on every golden prompt of `model` (the one served), split between
  // the shared prompt and two branches (1 and 2 samples): greedy steps equal
  // transformers' continuation.
  void CheckGreedySteps(const std::string& model);

  // `got` equals transformers' greedy continuation, except that fp32 here
  // and the reference may order a near-tie differently: then the two
  // candidates' logits must be that close (and the rest is moot).
  void ExpectGreedyMatches(const std::vector<int32_t>& prompt, const std::vector<int32_t>& got,
                           const std::vector<int32_t>& expected) {
    ASSERT_EQ(got.size(), expected.size());
    const size_t diverged =
        std::mismatch(got.begin(), got.end(), expected.begin()).first - got.begin();
    if (diverged == got.size()) return;
    EXPECT_GE(diverged, 8u);
    runtime::ScoreRequest tie;
    runtime::ScoreSequence seq;
    seq.tokens = prompt;
    seq.tokens.insert(seq.tokens.end(), got.begin(), got.begin() + diverged);
    seq.positions = {static_cast<int32_t>(seq.tokens.size()) - 1};
    tie.sequences.push_back(seq);
    tie.columns = {got[diverged], expected[diverged]};
    auto rows = served_.engine->Score(tie);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_NEAR(rows->rows[0][0], rows->rows[0][1], 0.01)
        << "greedy continuation diverges at token " << diverged << " without a near-tie";
  }

  static nlohmann::json ReadJson(const std::string& relative) {
    std::ifstream in(SourcePath(relative));
    std::stringstream text;
    text << in.rdbuf();
    return nlohmann::json::parse(text.str());
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<serving::EngineMetrics> metrics_;
  serving::ServedModel served_;
  std::unique_ptr<GeneratorService> service_;
  std::unique_ptr<arbor::rpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<arbor::v1::Generator::Stub> stub_;
  std::atomic<int> max_batch_seqs_{0};
};

// A request that generates `tokens` tokens per sample, ignoring EOS and delimiters.
arbor::v1::ExtendRequest LongRequest(int samples, int tokens) {
  arbor::v1::ExtendRequest request;
  for (int t : {400, 391, 223, 19, 25, 16}) request.add_prompt_tokens(t);
  request.add_branches()->set_num_samples(samples);
  request.mutable_stop()->set_no_step_delimiter(true);
  request.mutable_stop()->set_ignore_eos(true);
  request.mutable_stop()->set_max_step_tokens(tokens);
  return request;
}

TEST_F(GeneratorServiceTest, InfoDescribesTheModelAndTheCache) {
  StartWorker();
  grpc::ClientContext context;
  arbor::v1::GeneratorInfo info;
  ASSERT_TRUE(stub_->Info(&context, arbor::v1::InfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "qwen2");
  EXPECT_EQ(info.architecture(), "Qwen2ForCausalLM");
  EXPECT_EQ(info.max_context_tokens(), 1024);
  EXPECT_EQ(info.vocab_size(), 500);
  std::ifstream in(SourcePath(std::string(kQwen2) + "/tokenizer.json"), std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  EXPECT_EQ(info.tokenizer_fingerprint(), Sha256Hex(bytes.str()));
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_EQ(info.kv_block_size(), 16);
  EXPECT_EQ(info.kv_blocks_total(), 1024);
  EXPECT_EQ(info.kv_capacity_tokens(), 16384);
  EXPECT_EQ(info.kv_blocks_used(), 0);
  EXPECT_EQ(info.max_batch_tokens(), 2048);
  EXPECT_FALSE(info.chat_template().empty());
  EXPECT_THAT(info.eos_token_ids(), ElementsAreArray({2}));
}

TEST_F(GeneratorServiceTest, InfoReportsLoadAndWhichPromptPrefixesAreCached) {
  // 32 blocks: one long request later evicts every cached prompt.
  StartWorker({.kv_cache_tokens = 512});
  auto info = [&] {
    grpc::ClientContext context;
    arbor::v1::GeneratorInfo out;
    EXPECT_TRUE(stub_->Info(&context, arbor::v1::InfoRequest(), &out).ok());
    return out;
  };
  arbor::v1::GeneratorInfo idle = info();
  EXPECT_EQ(idle.prefix_key_chunk_bytes(), kPrefixChunkBytes);
  EXPECT_EQ(idle.cached_prefix_keys_size(), 0);
  EXPECT_EQ(idle.kv_blocks_free(), 32);
  EXPECT_EQ(idle.kv_blocks_cached(), 0);
  EXPECT_EQ(idle.active_requests(), 0);
  EXPECT_EQ(idle.queued_tokens(), 0);

  // A prompt sent as text: its prefix keys are listed once its blocks are cached.
  std::string question = "You are a careful tutor. Show each step, then the answer.";
  while (question.size() < 4 * kPrefixChunkBytes + 10) question += " Add 25 to 17 and halve it.";
  arbor::v1::ExtendRequest request;
  request.set_prompt_text(question);
  request.set_chat_template("chatml");
  request.add_branches();
  request.mutable_stop()->set_max_step_tokens(4);
  arbor::v1::ExtendResponse response;
  ASSERT_TRUE(Extend(request, &response).ok());
  const std::vector<uint64_t> keys = PrefixChunkKeys("chatml", question);
  ASSERT_EQ(keys.size(), 4u);
  arbor::v1::GeneratorInfo cached = info();
  ASSERT_GT(cached.cached_prefix_keys_size(), 0);
  for (uint64_t key : cached.cached_prefix_keys()) {
    EXPECT_NE(std::find(keys.begin(), keys.end(), key), keys.end()) << key;
  }
  // The deepest full chunk is covered, hence listed (first: most recent).
  EXPECT_EQ(cached.cached_prefix_keys(0), keys.back());
  EXPECT_GT(cached.kv_blocks_cached(), 0);
  EXPECT_EQ(cached.kv_blocks_free() + cached.kv_blocks_cached(), 32);
  // Another question with the same first chunk shares that key only.
  EXPECT_EQ(PrefixChunkKeys("chatml", question.substr(0, kPrefixChunkBytes) + std::string(80, 'x'))
                .front(),
            keys.front());

  // A busy worker says so.
  arbor::v1::ExtendRequest long_request = LongRequest(4, 120);
  arbor::v1::ExtendResponse long_response;
  grpc::ClientContext long_context;
  absl::Notification long_done;
  arbor::test_util::InFlightCall in_flight(&long_context, &long_done);
  stub_->async()->Extend(&long_context, &long_request, &long_response,
                         [&](grpc::Status) { long_done.Notify(); });
  ASSERT_TRUE(WaitFor([&] {
    const arbor::v1::GeneratorInfo busy = info();
    return busy.active_requests() == 1 && busy.running_seqs() + busy.waiting_seqs() > 0;
  }));
  ASSERT_TRUE(long_done.WaitForNotificationWithTimeout(absl::Seconds(60)));

  // A request that needs the whole pool evicts the prompt: its keys go.
  ASSERT_TRUE(Extend(LongRequest(1, 500), &response).ok());
  arbor::v1::GeneratorInfo evicted = info();
  EXPECT_EQ(evicted.cached_prefix_keys_size(), 0);
  EXPECT_EQ(evicted.active_requests(), 0);
  EXPECT_EQ(evicted.queued_tokens(), 0);
}

void GeneratorServiceTest::CheckGreedySteps(const std::string& model) {
  const nlohmann::json golden = ReadJson(model + "/greedy.json");
  ASSERT_FALSE(golden.empty());
  for (const auto& example : golden) {
    const std::vector<int32_t> ids = example["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> expected = example["continuation"].get<std::vector<int32_t>>();
    // The prompt is split between the shared prompt and the branches' suffixes:
    // branch 0 carries the rest of the prompt, branch 1 the same with 2 samples.
    const size_t shared = ids.size() / 2;
    arbor::v1::ExtendRequest request;
    request.set_job_id("greedy");
    request.mutable_prompt_tokens()->Add(ids.begin(), ids.begin() + shared);
    for (int samples : {1, 2}) {
      arbor::v1::BranchInput* branch = request.add_branches();
      branch->mutable_suffix_tokens()->Add(ids.begin() + shared, ids.end());
      branch->set_num_samples(samples);
    }
    request.mutable_sampling()->set_temperature(0.0f);
    request.mutable_stop()->set_no_step_delimiter(true);
    request.mutable_stop()->set_ignore_eos(true);
    request.mutable_stop()->set_max_step_tokens(static_cast<int>(expected.size()));
    request.set_return_token_logprobs(true);
    arbor::v1::ExtendResponse response;
    grpc::Status status = Extend(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.outputs_size(), 3);
    const std::pair<int, int> order[] = {{0, 0}, {1, 0}, {1, 1}};
    for (int i = 0; i < 3; ++i) {
      const arbor::v1::BranchOutput& out = response.outputs(i);
      EXPECT_EQ(out.branch_index(), order[i].first);
      EXPECT_EQ(out.sample_index(), order[i].second);
      ExpectGreedyMatches(ids, std::vector<int32_t>(out.tokens().begin(), out.tokens().end()),
                          expected);
      EXPECT_EQ(out.finish_reason(), arbor::v1::FINISH_REASON_LENGTH);
      ASSERT_EQ(out.token_logprobs_size(), out.tokens_size());
      double sum = 0;
      for (float lp : out.token_logprobs()) {
        EXPECT_LE(lp, 0.0f);
        sum += lp;
      }
      EXPECT_NEAR(out.logprob(), sum, 1e-3);
      EXPECT_EQ(out.text(), served_.tokenizer->Decode(
                                std::vector<int32_t>(out.tokens().begin(), out.tokens().end())));
    }
    EXPECT_TRUE(response.prompt_tokens().empty());  // sent as tokens
    EXPECT_EQ(response.usage().worker_calls(), 1);
    EXPECT_EQ(response.usage().generated_tokens(), 3 * static_cast<int64_t>(expected.size()));
    EXPECT_GT(response.usage().prefill_tokens(), 0);
  }
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));
}

TEST_F(GeneratorServiceTest, GreedyStepsMatchTransformers) {
  StartWorker();
  CheckGreedySteps(kQwen2);
}

TEST_F(GeneratorServiceTest, ServesTheShardedLlamaWithItsOwnLlama3Template) {
  StartWorker({.model = kLlama});
  grpc::ClientContext context;
  arbor::v1::GeneratorInfo info;
  ASSERT_TRUE(stub_->Info(&context, arbor::v1::InfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "llama");
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.vocab_size(), 600);
  EXPECT_EQ(info.chat_template(), "model");  // its own Llama 3 Instruct template
  EXPECT_THAT(info.eos_token_ids(), ElementsAreArray({4}));
  CheckGreedySteps(kLlama);

  // The model's template writes BOS itself: it is not added twice.
  arbor::v1::ExtendRequest request;
  request.set_prompt_text("Start with 17. Add 25. What is the result?");
  request.add_branches();
  request.mutable_stop()->set_max_step_tokens(4);
  arbor::v1::ExtendResponse response;
  grpc::Status status = Extend(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto expected = served_.tokenizer->Encode(
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nStart with 17. Add 25. "
      "What is the result?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
      /*add_special_tokens=*/false);
  ASSERT_TRUE(expected.ok());
  EXPECT_THAT(response.prompt_tokens(), ElementsAreArray(*expected));
  ASSERT_TRUE(served_.tokenizer->bos_id().has_value());
  EXPECT_EQ(std::count(response.prompt_tokens().begin(), response.prompt_tokens().end(),
                       *served_.tokenizer->bos_id()),
            1);
}

TEST_F(GeneratorServiceTest, SamplesAreSeededAndIndependentOfTheirBatch) {
  StartWorker();
  arbor::v1::ExtendRequest alone;
  for (int t : {400, 391, 223, 19, 25, 16, 397, 223}) alone.add_prompt_tokens(t);
  arbor::v1::BranchInput* branch = alone.add_branches();
  branch->add_suffix_tokens(20);
  branch->set_num_samples(2);
  branch->set_seed(7);
  alone.mutable_stop()->add_step_delimiters(" ");  // a short step
  alone.mutable_stop()->set_max_step_tokens(24);
  arbor::v1::ExtendResponse a;
  ASSERT_TRUE(Extend(alone, &a).ok());

  // The same branch next to others, with another seed before it.
  arbor::v1::ExtendRequest batched = alone;
  batched.clear_branches();
  arbor::v1::BranchInput* other = batched.add_branches();
  other->add_suffix_tokens(21);
  other->add_suffix_tokens(22);
  other->set_num_samples(3);
  other->set_seed(1);
  *batched.add_branches() = alone.branches(0);
  arbor::v1::ExtendResponse b;
  ASSERT_TRUE(Extend(batched, &b).ok());
  ASSERT_EQ(a.outputs_size(), 2);
  ASSERT_EQ(b.outputs_size(), 5);
  for (int s = 0; s < 2; ++s) {
    const arbor::v1::BranchOutput& x = a.outputs(s);
    const arbor::v1::BranchOutput& y = b.outputs(3 + s);
    EXPECT_EQ(y.branch_index(), 1);
    EXPECT_EQ(y.sample_index(), s);
    EXPECT_THAT(y.tokens(), ElementsAreArray(x.tokens()));
    EXPECT_EQ(y.text(), x.text());
    EXPECT_NEAR(y.logprob(), x.logprob(), 1e-4);
    EXPECT_EQ(y.finish_reason(), x.finish_reason());
    if (x.finish_reason() == arbor::v1::FINISH_REASON_STEP) {
      EXPECT_THAT(x.text(), HasSubstr(" "));
    }
  }
  // Different seeds draw different samples (with 24 tokens of a random model).
  EXPECT_NE(std::vector<int32_t>(a.outputs(0).tokens().begin(), a.outputs(0).tokens().end()),
            std::vector<int32_t>(b.outputs(0).tokens().begin(), b.outputs(0).tokens().end()));
}

TEST_F(GeneratorServiceTest, ASecondCallReusesThePrefixCache) {
  StartWorker();
  arbor::v1::ExtendRequest request = LongRequest(1, 4);
  request.clear_prompt_tokens();
  for (int i = 0; i < 70; ++i) request.add_prompt_tokens(100 + i);
  arbor::v1::ExtendResponse first, second;
  ASSERT_TRUE(Extend(request, &first).ok());
  ASSERT_TRUE(Extend(request, &second).ok());
  EXPECT_EQ(first.usage().prefix_cache_hit_tokens(), 0);
  EXPECT_GE(first.usage().prefill_tokens(), 70);
  // The prompt's 4 full blocks come from the cache the second time.
  EXPECT_GE(second.usage().prefix_cache_hit_tokens(), 64);
  EXPECT_LE(second.usage().prefill_tokens(), 70 - 64 + 4);
}

TEST_F(GeneratorServiceTest, PromptTextIsTemplatedAndTokenized) {
  StartWorker();
  arbor::v1::ExtendRequest request;
  request.set_prompt_text("Start with 17. Add 25. What is the result?");
  request.set_chat_template("chatml");
  request.add_branches();
  request.mutable_stop()->set_max_step_tokens(8);
  arbor::v1::ExtendResponse response;
  grpc::Status status = Extend(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto expected = served_.tokenizer->Encode(
      "<|im_start|>user\nStart with 17. Add 25. What is the result?<|im_end|>\n"
      "<|im_start|>assistant\n",
      /*add_special_tokens=*/false);
  ASSERT_TRUE(expected.ok());
  EXPECT_THAT(response.prompt_tokens(), ElementsAreArray(*expected));
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_GT(response.outputs(0).tokens_size(), 0);

  // The tokens sent back give the same step.
  arbor::v1::ExtendRequest again;
  *again.mutable_prompt_tokens() = response.prompt_tokens();
  *again.mutable_branches() = request.branches();
  *again.mutable_stop() = request.stop();
  arbor::v1::ExtendResponse response2;
  ASSERT_TRUE(Extend(again, &response2).ok());
  EXPECT_THAT(response2.outputs(0).tokens(), ElementsAreArray(response.outputs(0).tokens()));
  EXPECT_TRUE(response2.prompt_tokens().empty());
}

// The certainty probe's phrase: suffix_text continues a branch for one call,
// tokenized raw; greedy, it gives the same step as its tokens sent in
// suffix_tokens, and the output never holds them.
TEST_F(GeneratorServiceTest, SuffixTextIsTokenizedAfterTheBranchTokens) {
  StartWorker();
  auto prompt = served_.tokenizer->Encode(
      "<|im_start|>user\nStart with 17. Add 25. What is the result?<|im_end|>\n"
      "<|im_start|>assistant\n",
      /*add_special_tokens=*/false);
  ASSERT_TRUE(prompt.ok());
  const std::string phrase = "The answer is ";
  auto phrase_tokens = served_.tokenizer->Encode(phrase, /*add_special_tokens=*/false);
  ASSERT_TRUE(phrase_tokens.ok());
  const std::vector<int32_t> branch_tokens(prompt->end() - 4, prompt->end());
  auto request = [&](bool as_text) {
    arbor::v1::ExtendRequest r;
    r.mutable_prompt_tokens()->Add(prompt->begin(), prompt->end() - 4);
    arbor::v1::BranchInput* b = r.add_branches();
    b->mutable_suffix_tokens()->Add(branch_tokens.begin(), branch_tokens.end());
    if (as_text) {
      b->set_suffix_text(phrase);
    } else {
      b->mutable_suffix_tokens()->Add(phrase_tokens->begin(), phrase_tokens->end());
    }
    r.mutable_sampling()->set_temperature(0.0f);
    r.mutable_stop()->add_step_delimiters("\n");
    r.mutable_stop()->set_max_step_tokens(12);
    return r;
  };
  arbor::v1::ExtendResponse with_text, with_tokens;
  grpc::Status status = Extend(request(true), &with_text);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_TRUE(Extend(request(false), &with_tokens).ok());
  ASSERT_EQ(with_text.outputs_size(), 1);
  EXPECT_GT(with_text.outputs(0).tokens_size(), 0);
  EXPECT_THAT(with_text.outputs(0).tokens(), ElementsAreArray(with_tokens.outputs(0).tokens()));
  EXPECT_EQ(with_text.outputs(0).text(), with_tokens.outputs(0).text());
  EXPECT_EQ(with_text.outputs(0).text().find(phrase), std::string::npos);

  arbor::v1::ExtendRequest bad = request(true);
  arbor::v1::ExtendResponse response;
  bad.mutable_branches(0)->set_suffix_text(std::string(5000, 'a'));
  status = Extend(bad, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("branches[0].suffix_text"));
}

TEST_F(GeneratorServiceTest, BadRequestsAreRejectedNamingTheField) {
  StartWorker();
  auto expect_invalid = [&](const arbor::v1::ExtendRequest& request, const std::string& message) {
    arbor::v1::ExtendResponse response;
    grpc::Status status = Extend(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message;
    EXPECT_THAT(status.error_message(), HasSubstr(message));
  };
  arbor::v1::ExtendRequest good = LongRequest(1, 2);

  arbor::v1::ExtendRequest r = good;
  for (int i = 0; i < 4; ++i) r.add_branches();
  for (int i = 0; i < 8; ++i) r.mutable_branches(3)->add_suffix_tokens(i == 7 ? 70000 : 5);
  expect_invalid(r, "branches[3].suffix_tokens[7]: token id 70000 outside vocabulary [0, 500)");

  r = good;
  r.add_prompt_tokens(500);
  expect_invalid(r, "prompt_tokens[6]: token id 500 outside vocabulary [0, 500)");

  r = good;
  r.clear_prompt_tokens();
  for (int i = 0; i < 1024; ++i) r.add_prompt_tokens(7);
  expect_invalid(r, "prompt_tokens: 1024 tokens leave no room in the context window of 1024");

  r = good;
  for (int i = 0; i < 1020; ++i) r.mutable_branches(0)->add_suffix_tokens(7);
  expect_invalid(r, "branches[0].suffix_tokens: prompt (6 tokens) + suffix (1020)");

  r = good;
  r.clear_branches();
  expect_invalid(r, "branches: empty");

  r = good;
  r.mutable_branches(0)->set_num_samples(257);
  expect_invalid(r, "branches[0].num_samples: 257 outside [1, 256]");

  r = good;
  for (int i = 0; i < 17; ++i) r.add_branches()->set_num_samples(256);
  expect_invalid(r, "at most 4096");

  r = good;
  r.set_model("llama");
  expect_invalid(r, "model: this server serves \"qwen2\", not \"llama\"");

  r = good;
  r.set_chat_template("no-such-template");
  expect_invalid(r, "chat_template");

  r = good;
  r.clear_prompt_tokens();
  r.set_prompt_text("What is 2 + 2?");
  r.set_chat_template("vicuna");
  expect_invalid(r, "chat_template");

  r = good;
  r.mutable_sampling()->set_top_p(1.5f);
  expect_invalid(r, "sampling.top_p");

  r = good;
  r.mutable_stop()->set_max_step_tokens(40000);
  expect_invalid(r, "stop.max_step_tokens");

  r = good;
  r.clear_prompt_tokens();
  expect_invalid(r, "prompt_tokens: empty, and so is prompt_text");

  // Nothing was started for any of them.
  EXPECT_TRUE(EngineIdle());
  EXPECT_EQ(served_.engine->stats().steps, 0);
}

TEST_F(GeneratorServiceTest, InvalidUtf8NeverReachesTheEngine) {
  StartWorker();
  // proto3 strings must be UTF-8: a client that sends other bytes is refused
  // and never served. (gRPC's protobuf parser refuses such a message before
  // the service sees it; ValidateExtendRequest names the field for in-process
  // callers and for parsers that let it through.)
  arbor::v1::ExtendRequest r = LongRequest(1, 2);
  r.clear_prompt_tokens();
  r.set_prompt_text("bad \xC3(");
  arbor::v1::ExtendResponse response;
  grpc::Status status = Extend(r, &response);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(served_.engine->stats().steps, 0);
}

TEST_F(GeneratorServiceTest, OverloadIsResourceExhaustedAndCancellingReleasesTheBlocks) {
  StartWorker({.max_queued_requests = 1});
  arbor::v1::ExtendRequest long_request = LongRequest(16, 900);
  arbor::v1::ExtendResponse long_response;
  grpc::ClientContext long_context;
  absl::Notification long_done;
  grpc::Status long_status;
  arbor::test_util::InFlightCall in_flight(&long_context, &long_done);
  stub_->async()->Extend(&long_context, &long_request, &long_response, [&](grpc::Status s) {
    long_status = std::move(s);
    long_done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return served_.engine->stats().active_requests == 1; }));

  arbor::v1::ExtendResponse response;
  grpc::Status status = Extend(LongRequest(1, 2), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("queue is full"));

  ASSERT_TRUE(WaitFor([&] { return served_.engine->stats().kv_blocks_used > 0; }));
  long_context.TryCancel();
  ASSERT_TRUE(long_done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(long_status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));

  // The worker serves again.
  EXPECT_TRUE(Extend(LongRequest(1, 2), &response).ok());
}

TEST_F(GeneratorServiceTest, APassedDeadlineCancelsTheEngineRequest) {
  StartWorker();
  arbor::v1::ExtendResponse response;
  grpc::Status status = Extend(LongRequest(16, 900), &response, absl::Milliseconds(200));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));
}

TEST_F(GeneratorServiceTest, ConcurrentCallsShareOneBatch) {
  StartWorker();
  constexpr int kCalls = 6;
  std::vector<std::thread> threads;
  std::vector<grpc::Status> statuses(kCalls);
  std::vector<arbor::v1::ExtendResponse> responses(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      arbor::v1::ExtendRequest request = LongRequest(2, 200);
      request.set_job_id("job-" + std::to_string(i));
      request.mutable_branches(0)->set_seed(i);
      statuses[i] = Extend(request, &responses[i]);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    ASSERT_EQ(responses[i].outputs_size(), 2);
    EXPECT_EQ(responses[i].outputs(0).tokens_size(), 200);
  }
  // Steps ran samples of several calls together (each call has 2).
  EXPECT_GT(max_batch_seqs_.load(), 2);
  EXPECT_TRUE(WaitFor([&] { return EngineIdle(); }));
}

TEST_F(GeneratorServiceTest, HealthAndMetrics) {
  StartWorker({.http_metrics = true});
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest check;
  grpc::health::v1::HealthCheckResponse reply;
  ASSERT_TRUE(health->Check(&context, check, &reply).ok());
  EXPECT_EQ(reply.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  arbor::v1::ExtendResponse response;
  ASSERT_TRUE(Extend(LongRequest(2, 8), &response).ok());
  arbor::v1::ExtendRequest bad = LongRequest(1, 1);
  bad.clear_branches();
  EXPECT_FALSE(Extend(bad, &response).ok());
  ASSERT_TRUE(WaitFor([&] { return EngineIdle(); }));
  metrics_->Refresh();
  const std::string text = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_THAT(text, HasSubstr("arbor_engine_kv_blocks{role=\"worker\",state=\"total\"} 1024"));
  EXPECT_THAT(text, HasSubstr("arbor_engine_kv_blocks{role=\"worker\",state=\"used\"} 0"));
  EXPECT_THAT(text, HasSubstr("arbor_engine_queue_depth{role=\"worker\"} 0"));
  EXPECT_THAT(text, HasSubstr("arbor_engine_tokens_total{kind=\"generated\",role=\"worker\"} 16"));
  EXPECT_THAT(text, HasSubstr("arbor_engine_step_seconds_count{role=\"worker\"}"));
  EXPECT_THAT(text, HasSubstr("arbor_engine_batch_sequences_bucket"));
  EXPECT_THAT(text, HasSubstr("arbor_service_tokens_total{direction=\"out\",role=\"worker\"} 16"));
  EXPECT_THAT(text, HasSubstr("arbor_engine_tokens_total{kind=\"prefix_hit\",role=\"worker\"}"));
  EXPECT_THAT(text, HasSubstr("code=\"INVALID_ARGUMENT\",method=\"/arbor.v1.Generator/Extend\""));
  EXPECT_THAT(text, HasSubstr("code=\"OK\",method=\"/arbor.v1.Generator/Extend\""));
  // The CPU backend ran the decode steps eagerly, reading every key per sequence.
  auto value = [&](const std::string& series) {
    const size_t at = text.find("\n" + series + " ");
    EXPECT_NE(at, std::string::npos) << series;
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + series.size() + 2));
  };
  const std::string steps = "arbor_engine_decode_steps_total";
  const std::string keys = "arbor_engine_decode_attention_keys_total";
  EXPECT_GT(value(steps + "{graph=\"eager\",role=\"worker\"}"), 0);
  EXPECT_EQ(value(steps + "{graph=\"replay\",role=\"worker\"}"), 0);
  EXPECT_EQ(value(steps + "{graph=\"capture\",role=\"worker\"}"), 0);
  const double context_keys = value(keys + "{kind=\"context\",role=\"worker\"}");
  EXPECT_GT(context_keys, 0);
  EXPECT_EQ(value(keys + "{kind=\"own\",role=\"worker\"}"), context_keys);
  EXPECT_EQ(value(keys + "{kind=\"prompt_shared\",role=\"worker\"}"), 0);
  EXPECT_EQ(value(keys + "{kind=\"tree_shared\",role=\"worker\"}"), 0);
}

TEST_F(GeneratorServiceTest, DrainFinishesInFlightCalls) {
  StartWorker();
  arbor::v1::ExtendRequest request = LongRequest(4, 400);
  arbor::v1::ExtendResponse response;
  grpc::ClientContext context;
  absl::Notification done;
  grpc::Status status;
  arbor::test_util::InFlightCall in_flight(&context, &done);
  stub_->async()->Extend(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return served_.engine->stats().active_requests == 1; }));
  server_->Drain(absl::Seconds(30));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.outputs_size(), 4);
  EXPECT_EQ(response.outputs(3).tokens_size(), 400);
  EXPECT_TRUE(EngineIdle());
}

TEST(ServedModelTest, ErrorsNameTheFlag) {
  serving::ServedModelOptions options;
  EXPECT_THAT(serving::LoadServedModel(options).status().message(), HasSubstr("--model"));
  options.model_dir = "/nonexistent/model";
  EXPECT_THAT(serving::LoadServedModel(options).status().message(), HasSubstr("is not a folder"));
  options.model_dir = SourcePath(kQwen2);
  options.backend = "tpu";
  EXPECT_THAT(serving::LoadServedModel(options).status().message(), HasSubstr("--backend"));
  options.backend = "cuda";
  options.kv_memory_fraction = 1.5;
  EXPECT_THAT(serving::LoadServedModel(options).status().message(),
              HasSubstr("--kv_memory_fraction"));
  options.kv_memory_fraction = 0;
  options.kv_memory_share = 1.0;
  EXPECT_THAT(serving::LoadServedModel(options).status().message(),
              HasSubstr("--kv_memory_share"));
  options.kv_memory_share = 0;
  // Without a GPU (or a CUDA build) the error names the flag; with one, it serves.
  auto cuda = serving::LoadServedModel(options);
  if (cuda.ok()) {
    EXPECT_EQ(cuda->engine->backend_name(), "cuda");
  } else {
    EXPECT_THAT(cuda.status().message(), HasSubstr("--backend=cuda"));
  }
  options.backend = "cpu";
  options.kv_cache_dtype = "fp8_e4m3";  // the CPU backend has no fp8 cache
  EXPECT_THAT(serving::LoadServedModel(options).status().message(),
              HasSubstr("--kv_cache_dtype=fp8_e4m3 needs --backend=cuda"));
  options.kv_cache_dtype = "int4";
  EXPECT_THAT(serving::LoadServedModel(options).status().message(),
              HasSubstr("--kv_cache_dtype: unknown type \"int4\""));
  options.kv_cache_dtype = "auto";
  options.kv_cache_tokens = 3;
  EXPECT_THAT(serving::LoadServedModel(options).status().message(), HasSubstr("--kv_cache_tokens"));
  EXPECT_EQ(serving::ModelNameFromDir("models/prm/"), "prm");
  EXPECT_EQ(serving::ModelNameFromDir("/a/b/qwen2"), "qwen2");
}

}  // namespace
}  // namespace arbor::worker
