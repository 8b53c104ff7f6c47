// Shared by the engine tests (engine_parity_test.cc, engine_lifecycle_test.cc):
// engines on the real CPU backend over the golden fixtures
// (tests/fixtures/golden/{llama,qwen2}: small random models saved by
// transformers, with expected logits and greedy continuations), and helpers
// to build requests and compare outputs. Header-only; test code only.
#ifndef ARBOR_RUNTIME_ENGINE_ENGINE_TEST_UTIL_H_
#define ARBOR_RUNTIME_ENGINE_ENGINE_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {

inline std::string FixtureDir(const std::string& model) {
  const char* root = std::getenv("ARBOR_SOURCE_DIR");
  return std::string(root != nullptr ? root : ".") + "/tests/fixtures/golden/" + model;
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

struct EngineSetup {
  std::string model = "llama";
  int num_kv_blocks = 256;
  EngineOptions options;
  bool with_tokenizer = false;

  EngineSetup& Model(const std::string& name) {
    model = name;
    return *this;
  }
  EngineSetup& Blocks(int n) {
    num_kv_blocks = n;
    return *this;
  }
  EngineSetup& BatchTokens(int n) {
    options.max_batch_tokens = n;
    return *this;
  }
  EngineSetup& Context(int n) {
    options.max_context_tokens = n;
    return *this;
  }
  EngineSetup& QueueLimit(int n) {
    options.max_queued_requests = n;
    return *this;
  }
  EngineSetup& NoPrefixCache() {
    options.prefix_cache = false;
    return *this;
  }
  EngineSetup& SamplerThreads(int n) {
    options.num_sampler_threads = n;
    return *this;
  }
  // Draws through ModelBackend::ForwardSample (the CPU backend's is Forward +
  // the host Sampler, one row per draw) instead of the engine's sampler threads.
  EngineSetup& BackendSampling() {
    options.sampling = EngineOptions::Sampling::kBackend;
    return *this;
  }
  EngineSetup& WithTokenizer() {
    with_tokenizer = true;
    return *this;
  }
};

class EngineTest : public ::testing::Test {
 protected:
  std::unique_ptr<Engine> MakeEngine(const EngineSetup& setup) {
    CpuBackendOptions backend_options;
    backend_options.num_kv_blocks = setup.num_kv_blocks;
    backend_options.num_threads = 2;
    // make_golden.py ran the bf16 Qwen2 model after a bf16 round trip, which
    // also rounded its RoPE frequencies; the backend emulates that on request.
    backend_options.bf16_rope_frequencies = setup.model == "qwen2";
    auto backend = CpuBackend::Create(FixtureDir(setup.model), backend_options);
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    const Tokenizer* tokenizer = nullptr;
    if (setup.with_tokenizer) {
      auto tok = Tokenizer::FromModelDir(FixtureDir(setup.model));
      EXPECT_TRUE(tok.ok()) << tok.status();
      if (!tok.ok()) return nullptr;
      tokenizers_.push_back(*std::move(tok));
      tokenizer = tokenizers_.back().get();
    }
    auto engine = Engine::Create(setup.options, *std::move(backend), tokenizer);
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  // After a workload nothing is held and every block is free or cached.
  static void ExpectAllBlocksReturned(const Engine& engine) {
    const EngineStats s = engine.stats();
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.running_seqs, 0);
    EXPECT_EQ(s.waiting_seqs, 0);
    EXPECT_EQ(s.active_requests, 0);
    EXPECT_EQ(s.kv_blocks_free + s.kv_blocks_cached, s.kv_blocks_total);
  }

  std::vector<std::unique_ptr<Tokenizer>> tokenizers_;
};

inline std::vector<std::vector<int32_t>> GoldenPrompts(const std::string& model) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& item : ReadJson(FixtureDir(model) + "/greedy.json")) {
    prompts.push_back(item["ids"].get<std::vector<int32_t>>());
  }
  return prompts;
}

inline GenerateRequest Sampled(std::vector<int32_t> prompt, int max_tokens, uint64_t seed,
                               int num_samples = 1) {
  GenerateRequest r;
  r.prompt_tokens = std::move(prompt);
  r.branches.push_back({{}, num_samples, seed});
  r.sampling = {0.9f, 0.95f, 0};
  r.stop.max_step_tokens = max_tokens;
  r.stop.ignore_eos = true;
  r.return_token_logprobs = true;
  return r;
}

inline void ExpectSameOutput(const SampleOutput& a, const SampleOutput& b,
                             const std::string& what) {
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.finish_reason, b.finish_reason) << what;
  EXPECT_NEAR(a.logprob, b.logprob, 1e-3 * (1 + std::abs(a.logprob))) << what;
  ASSERT_EQ(a.token_logprobs.size(), b.token_logprobs.size()) << what;
  for (size_t i = 0; i < a.token_logprobs.size(); ++i) {
    EXPECT_NEAR(a.token_logprobs[i], b.token_logprobs[i], 1e-4) << what << " token " << i;
  }
}

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_ENGINE_TEST_UTIL_H_
