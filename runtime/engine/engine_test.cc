// Engine tests on the real CPU backend and the golden fixtures
// (tests/fixtures/golden/{llama,qwen2}: small random models saved by
// transformers, with expected logits and greedy continuations).
#include "runtime/engine/engine.h"

#include <atomic>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::string FixtureDir(const std::string& model) {
  const char* root = std::getenv("ARBOR_SOURCE_DIR");
  return std::string(root != nullptr ? root : ".") + "/tests/fixtures/golden/" + model;
}

nlohmann::json ReadJson(const std::string& path) {
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

std::vector<std::vector<int32_t>> GoldenPrompts(const std::string& model) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& item : ReadJson(FixtureDir(model) + "/greedy.json")) {
    prompts.push_back(item["ids"].get<std::vector<int32_t>>());
  }
  return prompts;
}

GenerateRequest Sampled(std::vector<int32_t> prompt, int max_tokens, uint64_t seed,
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

void ExpectSameOutput(const SampleOutput& a, const SampleOutput& b, const std::string& what) {
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.finish_reason, b.finish_reason) << what;
  EXPECT_NEAR(a.logprob, b.logprob, 1e-3 * (1 + std::abs(a.logprob))) << what;
  ASSERT_EQ(a.token_logprobs.size(), b.token_logprobs.size()) << what;
  for (size_t i = 0; i < a.token_logprobs.size(); ++i) {
    EXPECT_NEAR(a.token_logprobs[i], b.token_logprobs[i], 1e-4) << what << " token " << i;
  }
}

TEST_F(EngineTest, GreedyContinuationMatchesTransformers) {
  for (const std::string model : {"llama", "qwen2"}) {
    EngineSetup setup;
    setup.model = model;
    setup.options.max_batch_tokens = 24;  // prompts run in several chunks
    auto engine = MakeEngine(setup);
    ASSERT_NE(engine, nullptr);
    for (const auto& item : ReadJson(FixtureDir(model) + "/greedy.json")) {
      GenerateRequest r;
      r.prompt_tokens = item["ids"].get<std::vector<int32_t>>();
      const auto expected = item["continuation"].get<std::vector<int32_t>>();
      r.branches.push_back({});
      r.sampling.temperature = 0.0f;
      r.stop.max_step_tokens = static_cast<int>(expected.size());
      r.stop.ignore_eos = true;
      auto result = engine->Generate(r);
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_EQ(result->outputs.size(), 1u);
      const auto& got = result->outputs[0].tokens;
      ASSERT_EQ(got.size(), expected.size());
      const size_t diverged =
          std::mismatch(got.begin(), got.end(), expected.begin()).first - got.begin();
      if (diverged < got.size()) {
        // fp32 on the CPU and on the GPU may order a near-tie differently; then
        // the two candidates' logits must be that close, and the rest is moot.
        ScoreRequest tie;
        ScoreSequence seq;
        seq.tokens = r.prompt_tokens;
        seq.tokens.insert(seq.tokens.end(), got.begin(), got.begin() + diverged);
        seq.positions = {static_cast<int32_t>(seq.tokens.size()) - 1};
        tie.sequences.push_back(seq);
        tie.columns = {got[diverged], expected[diverged]};
        auto rows = engine->Score(tie);
        ASSERT_TRUE(rows.ok()) << rows.status();
        EXPECT_NEAR(rows->rows[0][0], rows->rows[0][1], 0.01)
            << model << ": greedy continuation diverges from transformers at token " << diverged
            << " without a near-tie";
        EXPECT_GE(diverged, 8u) << model;
      }
      EXPECT_EQ(result->outputs[0].finish_reason, FinishReason::kLength);
      EXPECT_EQ(result->usage.generated_tokens, static_cast<int64_t>(expected.size()));
    }
    ExpectAllBlocksReturned(*engine);
  }
}

TEST_F(EngineTest, ScoreRowsMatchTransformersLogitsFromScratchAndFromCache) {
  // The engine's chunking, caching and probes must not change the rows.
  for (const std::string model : {"llama", "qwen2"}) {
    auto engine = MakeEngine(EngineSetup().Model(model).BatchTokens(7));
    ASSERT_NE(engine, nullptr);
    const auto golden = ReadJson(FixtureDir(model) + "/logits.json");
    for (int pass = 0; pass < 2; ++pass) {  // the second pass is served partly from the cache
      ScoreRequest request;
      std::vector<std::vector<std::vector<float>>> expected;
      for (const auto& item : golden) {
        ScoreSequence s;
        s.tokens = item["ids"].get<std::vector<int32_t>>();
        expected.push_back(item["logits"].get<std::vector<std::vector<float>>>());
        // Every position, given in reverse order to check the slot mapping.
        for (int p = static_cast<int>(s.tokens.size()) - 1; p >= 0; --p) s.positions.push_back(p);
        if (pass == 1) s.positions.resize(3);  // only the last three: the rest may come from cache
        request.sequences.push_back(std::move(s));
      }
      auto result = engine->Score(request);
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_EQ(result->row_width, engine->output_dim());
      int64_t total = 0;
      for (size_t i = 0; i < request.sequences.size(); ++i) {
        const auto& s = request.sequences[i];
        total += static_cast<int64_t>(s.tokens.size());
        ASSERT_EQ(result->rows[i].size(), s.positions.size() * result->row_width);
        for (size_t k = 0; k < s.positions.size(); ++k) {
          const auto& want = expected[i][s.positions[k]];
          double max_err = 0, max_ref = 0;
          for (int c = 0; c < result->row_width; ++c) {
            max_err = std::max(
                max_err, std::abs(double(result->rows[i][k * result->row_width + c]) - want[c]));
            max_ref = std::max(max_ref, std::abs(double(want[c])));
          }
          EXPECT_LE(max_err, 1e-4 * max_ref + 1e-5)
              << model << " sequence " << i << " position " << s.positions[k] << " pass " << pass;
        }
      }
      if (pass == 0) {
        EXPECT_EQ(result->computed_tokens + result->cached_tokens, total);
      } else {  // rows inside the cached prefix are computed again by probes
        EXPECT_GE(result->computed_tokens + result->cached_tokens, total);
      }
      if (pass == 1) {
        EXPECT_GT(result->cached_tokens, 0);
      }
    }
    ExpectAllBlocksReturned(*engine);
  }
}

TEST_F(EngineTest, ScoreColumnsAndSharedPrefixComputedOnce) {
  auto engine = MakeEngine(EngineSetup().BatchTokens(64));
  ASSERT_NE(engine, nullptr);
  // Four candidates sharing a 48-token question: the question is computed once.
  std::vector<int32_t> question;
  for (int i = 0; i < 48; ++i) question.push_back(10 + (i * 7) % 500);
  ScoreRequest request;
  request.columns = {5, 17};
  for (int c = 0; c < 4; ++c) {
    ScoreSequence s;
    s.tokens = question;
    for (int i = 0; i < 10 + c; ++i) s.tokens.push_back(100 + c * 20 + i);
    s.positions = {static_cast<int32_t>(s.tokens.size()) - 1};
    request.sequences.push_back(s);
  }
  auto result = engine->Score(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->row_width, 2);
  EXPECT_EQ(result->cached_tokens, 3 * 48) << "the shared question's 3 blocks, for 3 candidates";
  EXPECT_EQ(result->computed_tokens, 48 + 10 + 11 + 12 + 13);
  // A row inside the cached question is computed by a probe that reruns the
  // block holding it (tokens 32..47) over the 2 cached blocks before it; the
  // rest of each candidate still comes from the cache.
  for (auto& s : request.sequences) s.positions.push_back(47);
  result = engine->Score(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->cached_tokens, 4 * 48 + 4 * 32);
  EXPECT_EQ(result->computed_tokens, 10 + 11 + 12 + 13 + 4 * 16);
  // The selected columns equal the full rows' columns.
  ScoreRequest full = request;
  full.columns.clear();
  auto full_result = engine->Score(full);
  ASSERT_TRUE(full_result.ok());
  const int dim = engine->output_dim();
  for (size_t i = 0; i < request.sequences.size(); ++i) {
    for (int k = 0; k < 2; ++k) {
      EXPECT_NEAR(result->rows[i][k * 2 + 0], full_result->rows[i][k * dim + 5], 1e-4);
      EXPECT_NEAR(result->rows[i][k * 2 + 1], full_result->rows[i][k * dim + 17], 1e-4);
    }
  }
  ExpectAllBlocksReturned(*engine);
}

// The verifier's pattern: a solution grows by one step per call and every
// step end is scored again. Each call computes the new step plus at most a
// block per earlier step end, and the rows equal a from-scratch run's.
TEST_F(EngineTest, RescoringALongerCandidateReusesTheCache) {
  auto engine = MakeEngine(EngineSetup());
  std::vector<int32_t> tokens = GoldenPrompts("llama")[4];  // 40-token question
  std::vector<int32_t> step_ends;
  std::mt19937 rng(5);
  for (int step = 0; step < 4; ++step) {
    const int before = static_cast<int>(tokens.size());
    for (int i = 0; i < 21 + step * 5; ++i) tokens.push_back(rng() % 600);
    step_ends.push_back(static_cast<int32_t>(tokens.size()) - 1);
    ScoreRequest request;
    request.sequences.push_back({tokens, step_ends});
    request.columns = {3, 4};
    auto result = engine->Score(request);
    ASSERT_TRUE(result.ok()) << result.status();
    if (step > 0) {
      EXPECT_LE(result->computed_tokens,
                static_cast<int64_t>(tokens.size()) - before + kKvBlockSize * (1 + step))
          << "step " << step;
    }
    auto fresh = MakeEngine(EngineSetup());
    auto scratch = fresh->Score(request);
    ASSERT_TRUE(scratch.ok());
    EXPECT_EQ(scratch->computed_tokens, static_cast<int64_t>(tokens.size()));
    ASSERT_EQ(result->rows[0].size(), scratch->rows[0].size());
    for (size_t c = 0; c < result->rows[0].size(); ++c) {
      EXPECT_NEAR(result->rows[0][c], scratch->rows[0][c], 1e-4) << "step " << step;
    }
  }
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, BranchTokensDoNotDependOnBatching) {
  const auto prompts = GoldenPrompts("llama");
  // Alone: one request at a time on a fresh engine each.
  std::vector<SampleOutput> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto engine = MakeEngine(EngineSetup());
    auto result = engine->Generate(Sampled(prompts[i], 20, 1000 + i, 2));
    ASSERT_TRUE(result.ok()) << result.status();
    for (auto& o : result->outputs) alone.push_back(o);
  }
  // Together: all submitted at once into one engine with a small batch budget,
  // so prefills, chunks and decodes of different requests interleave.
  auto engine = MakeEngine(EngineSetup().BatchTokens(13));
  std::vector<absl::StatusOr<GenerateResult>> results(prompts.size(),
                                                      absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back(
        [&, i] { results[i] = engine->Generate(Sampled(prompts[i], 20, 1000 + i, 2)); });
  }
  for (auto& t : threads) t.join();
  std::vector<SampleOutput> together;
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    for (auto& o : r->outputs) together.push_back(o);
  }
  ASSERT_EQ(alone.size(), together.size());
  for (size_t i = 0; i < alone.size(); ++i) {
    ExpectSameOutput(alone[i], together[i], "output " + std::to_string(i));
  }
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, ForkedBranchesMatchFromScratchRuns) {
  const auto prompt = GoldenPrompts("llama")[4];  // 40 tokens: 2 full blocks + 8
  GenerateRequest forked = Sampled(prompt, 12, 0);
  forked.branches.clear();
  forked.branches.push_back({{}, 3, 7});
  forked.branches.push_back({{11, 12, 13}, 2, 8});
  forked.branches.push_back({{11, 12, 13}, 1, 9});  // same suffix as branch 1, other seed
  std::vector<int32_t> long_suffix;
  for (int i = 0; i < 30; ++i) long_suffix.push_back(200 + i);
  forked.branches.push_back({long_suffix, 2, 10});
  auto engine = MakeEngine(EngineSetup().BatchTokens(32));
  auto result = engine->Generate(forked);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->outputs.size(), 8u);
  // The prompt is computed once: 40 prompt tokens (minus nothing cached) + suffixes 3 + 30.
  EXPECT_EQ(result->usage.prefill_tokens, 40 + 3 + 30);
  EXPECT_EQ(result->usage.prefix_cache_hit_tokens, 0);
  ExpectAllBlocksReturned(*engine);

  // From scratch: each branch alone, its suffix folded into the prompt.
  int o = 0;
  for (size_t b = 0; b < forked.branches.size(); ++b) {
    auto fresh = MakeEngine(EngineSetup());
    GenerateRequest single = forked;
    single.prompt_tokens.insert(single.prompt_tokens.end(),
                                forked.branches[b].suffix_tokens.begin(),
                                forked.branches[b].suffix_tokens.end());
    single.branches = {{{}, forked.branches[b].num_samples, forked.branches[b].seed}};
    auto r = fresh->Generate(single);
    ASSERT_TRUE(r.ok()) << r.status();
    for (const auto& out : r->outputs) {
      EXPECT_EQ(result->outputs[o].branch_index, static_cast<int>(b));
      EXPECT_EQ(result->outputs[o].sample_index, out.sample_index);
      ExpectSameOutput(result->outputs[o], out, "branch " + std::to_string(b));
      ++o;
    }
  }
  // Samples of one branch differ from each other (different streams).
  EXPECT_NE(result->outputs[0].tokens, result->outputs[1].tokens);
}

TEST_F(EngineTest, LaterCallsReuseCachedPrefixes) {
  const auto prompt = GoldenPrompts("llama")[4];
  auto engine = MakeEngine(EngineSetup());
  auto first = engine->Generate(Sampled(prompt, 40, 3));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->usage.prefix_cache_hit_tokens, 0);
  EXPECT_EQ(first->usage.prefill_tokens, 40);
  // The next step of that branch: prompt + the generated step as its suffix.
  GenerateRequest next = Sampled(prompt, 10, 4);
  next.branches[0].suffix_tokens = first->outputs[0].tokens;
  auto second = engine->Generate(next);
  ASSERT_TRUE(second.ok()) << second.status();
  // 80 tokens of context; the last token's KV was never computed, so 79 were,
  // of which the 4 full blocks (64 tokens) are cached.
  EXPECT_EQ(second->usage.prefix_cache_hit_tokens, 64);
  EXPECT_EQ(second->usage.prefill_tokens, 80 - 64);
  // Same as from scratch.
  auto fresh = MakeEngine(EngineSetup());
  auto scratch = fresh->Generate(next);
  ASSERT_TRUE(scratch.ok());
  EXPECT_EQ(scratch->usage.prefix_cache_hit_tokens, 0);
  ExpectSameOutput(second->outputs[0], scratch->outputs[0], "cached vs scratch");
  ExpectAllBlocksReturned(*engine);
  EXPECT_EQ(engine->stats().prefix_hit_tokens, 64) << "the engine's counter sums the usages";
}

TEST_F(EngineTest, WithoutThePrefixCacheEveryCallComputesItsWholePrefix) {
  const auto prompt = GoldenPrompts("llama")[4];
  auto engine = MakeEngine(EngineSetup().NoPrefixCache());
  auto first = engine->Generate(Sampled(prompt, 40, 3));
  ASSERT_TRUE(first.ok()) << first.status();
  GenerateRequest next = Sampled(prompt, 10, 4);
  next.branches[0].suffix_tokens = first->outputs[0].tokens;
  auto second = engine->Generate(next);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->usage.prefix_cache_hit_tokens, 0);
  EXPECT_EQ(second->usage.prefill_tokens, 80);
  // The same tokens as with the cache: only where the KV comes from differs.
  auto cached = MakeEngine(EngineSetup());
  ASSERT_TRUE(cached->Generate(Sampled(prompt, 40, 3)).ok());
  auto reused = cached->Generate(next);
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(reused->usage.prefix_cache_hit_tokens, 64);
  ExpectSameOutput(second->outputs[0], reused->outputs[0], "no cache vs cache");
  // Nothing stays cached: every block is free again, none evictable.
  ExpectAllBlocksReturned(*engine);
  EXPECT_EQ(engine->stats().kv_blocks_cached, 0);
  EXPECT_EQ(engine->stats().prefix_hit_tokens, 0);
}

TEST_F(EngineTest, PreemptionUnderATinyPoolGivesIdenticalOutput) {
  const auto prompts = GoldenPrompts("llama");
  auto make_requests = [&] {
    std::vector<GenerateRequest> requests;
    for (size_t i = 0; i < prompts.size(); ++i) {
      requests.push_back(Sampled(prompts[i], 40, 50 + i, 3));
    }
    return requests;
  };
  auto run_all = [&](Engine* engine) {
    std::vector<absl::StatusOr<GenerateResult>> results(prompts.size(),
                                                        absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    auto requests = make_requests();
    for (size_t i = 0; i < requests.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = engine->Generate(requests[i]); });
    }
    for (auto& t : threads) t.join();
    return results;
  };
  auto roomy = MakeEngine(EngineSetup().Blocks(512));
  auto reference = run_all(roomy.get());
  EXPECT_EQ(roomy->stats().preemptions, 0);
  // 15 samples of up to 80 tokens need ~70 blocks at once; give 8.
  auto tiny = MakeEngine(EngineSetup().Blocks(8).BatchTokens(32));
  auto squeezed = run_all(tiny.get());
  EXPECT_GT(tiny->stats().preemptions, 0);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(reference[i].ok()) << reference[i].status();
    ASSERT_TRUE(squeezed[i].ok()) << squeezed[i].status();
    ASSERT_EQ(reference[i]->outputs.size(), squeezed[i]->outputs.size());
    for (size_t k = 0; k < reference[i]->outputs.size(); ++k) {
      ExpectSameOutput(reference[i]->outputs[k], squeezed[i]->outputs[k],
                       "request " + std::to_string(i) + " output " + std::to_string(k));
    }
  }
  ExpectAllBlocksReturned(*tiny);
  ExpectAllBlocksReturned(*roomy);
}

// Many threads submit a random mix of Generate (branches, shared suffixes,
// samples) and Score requests to an engine whose pool holds a few sequences:
// every result equals the one a roomy engine gives, and every block comes back.
TEST_F(EngineTest, MixedWorkloadUnderPressureMatchesARoomyEngine) {
  const auto prompts = GoldenPrompts("llama");
  struct Job {
    bool score = false;
    GenerateRequest gen;
    ScoreRequest sc;
  };
  std::vector<Job> jobs;
  std::mt19937 rng(99);
  for (int j = 0; j < 16; ++j) {
    Job job;
    const auto& prompt = prompts[rng() % prompts.size()];
    if (j % 4 == 3) {
      job.score = true;
      for (int k = 0; k < 3; ++k) {
        ScoreSequence seq;
        seq.tokens = prompt;
        for (int i = 0; i < static_cast<int>(rng() % 20); ++i) seq.tokens.push_back(rng() % 600);
        seq.positions = {static_cast<int32_t>(seq.tokens.size()) - 1, 2};
        job.sc.sequences.push_back(seq);
      }
      job.sc.columns = {1, 2, 3};
    } else {
      job.gen = Sampled(prompt, 5 + static_cast<int>(rng() % 25), rng());
      job.gen.branches.clear();
      std::vector<int32_t> shared_suffix;
      for (int i = 0; i < 17; ++i) shared_suffix.push_back(rng() % 600);
      for (int b = 0; b < 1 + static_cast<int>(rng() % 3); ++b) {
        BranchSpec branch;
        if (rng() % 2) branch.suffix_tokens = shared_suffix;
        branch.num_samples = 1 + static_cast<int>(rng() % 3);
        branch.seed = rng();
        job.gen.branches.push_back(branch);
      }
    }
    jobs.push_back(std::move(job));
  }
  auto run = [&](Engine* engine, bool concurrently) {
    std::vector<absl::StatusOr<GenerateResult>> gens(jobs.size(), absl::UnknownError("-"));
    std::vector<absl::StatusOr<ScoreResult>> scores(jobs.size(), absl::UnknownError("-"));
    auto one = [&](size_t j) {
      if (jobs[j].score) {
        scores[j] = engine->Score(jobs[j].sc);
      } else {
        gens[j] = engine->Generate(jobs[j].gen);
      }
    };
    if (concurrently) {
      std::vector<std::thread> threads;
      for (size_t j = 0; j < jobs.size(); ++j) threads.emplace_back(one, j);
      for (auto& t : threads) t.join();
    } else {
      for (size_t j = 0; j < jobs.size(); ++j) one(j);
    }
    return std::make_pair(std::move(gens), std::move(scores));
  };
  auto roomy = MakeEngine(EngineSetup());
  auto expected = run(roomy.get(), /*concurrently=*/false);
  // Under pressure, with host sampling and with backend sampling (whose steps
  // fall back to logits whenever a score row is in the batch).
  for (const bool backend_sampling : {false, true}) {
    SCOPED_TRACE(backend_sampling ? "backend sampling" : "host sampling");
    EngineSetup setup = EngineSetup().Blocks(10).BatchTokens(24);
    if (backend_sampling) setup.BackendSampling();
    auto tight = MakeEngine(setup);
    auto got = run(tight.get(), /*concurrently=*/true);
    EXPECT_GT(tight->stats().preemptions, 0);
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (jobs[j].score) {
        ASSERT_TRUE(expected.second[j].ok()) << expected.second[j].status();
        ASSERT_TRUE(got.second[j].ok()) << got.second[j].status();
        ASSERT_EQ(expected.second[j]->rows.size(), got.second[j]->rows.size());
        for (size_t k = 0; k < got.second[j]->rows.size(); ++k) {
          ASSERT_EQ(expected.second[j]->rows[k].size(), got.second[j]->rows[k].size());
          for (size_t c = 0; c < got.second[j]->rows[k].size(); ++c) {
            EXPECT_NEAR(expected.second[j]->rows[k][c], got.second[j]->rows[k][c], 1e-4);
          }
        }
      } else {
        ASSERT_TRUE(expected.first[j].ok()) << expected.first[j].status();
        ASSERT_TRUE(got.first[j].ok()) << got.first[j].status();
        ASSERT_EQ(expected.first[j]->outputs.size(), got.first[j]->outputs.size());
        for (size_t k = 0; k < got.first[j]->outputs.size(); ++k) {
          ExpectSameOutput(expected.first[j]->outputs[k], got.first[j]->outputs[k],
                           "job " + std::to_string(j) + " output " + std::to_string(k));
        }
      }
    }
    ExpectAllBlocksReturned(*tight);
  }
  ExpectAllBlocksReturned(*roomy);
}

TEST_F(EngineTest, ParallelSamplingDrawsTheSameTokens) {
  // 600 samples per step: enough work for the sampler threads to share.
  GenerateRequest r = Sampled(GoldenPrompts("llama")[2], 6, 77, 300);
  r.branches.push_back({{5, 6, 7}, 300, 78});
  auto serial = MakeEngine(EngineSetup().SamplerThreads(1).Blocks(1024));
  auto parallel = MakeEngine(EngineSetup().SamplerThreads(4).Blocks(1024));
  // The prompt's one row is drawn from 300 times per branch: 600 output rows.
  auto backend = MakeEngine(EngineSetup().BackendSampling().Blocks(1024));
  auto a = serial->Generate(r);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->outputs.size(), 600u);
  for (Engine* engine : {parallel.get(), backend.get()}) {
    auto b = engine->Generate(r);
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(b->outputs.size(), 600u);
    for (size_t k = 0; k < a->outputs.size(); ++k) {
      ExpectSameOutput(a->outputs[k], b->outputs[k], "output " + std::to_string(k));
    }
    ExpectAllBlocksReturned(*engine);
  }
}

TEST_F(EngineTest, CancellationStopsTheRequestAndReleasesItsBlocks) {
  auto engine = MakeEngine(EngineSetup());
  GenerateRequest r = Sampled(GoldenPrompts("llama")[0], 900, 1, 4);
  absl::Notification done;
  absl::StatusOr<GenerateResult> result;
  auto id = engine->SubmitGenerate(r, [&](absl::StatusOr<GenerateResult> res) {
    result = std::move(res);
    done.Notify();
  });
  ASSERT_TRUE(id.ok()) << id.status();
  // Let it generate a little, then cancel.
  while (engine->stats().generated_tokens < 8) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_GT(engine->stats().kv_blocks_used, 0);
  engine->Cancel(*id);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  ASSERT_TRUE(result.ok()) << result.status();
  for (const auto& o : result->outputs) {
    EXPECT_EQ(o.finish_reason, FinishReason::kCancelled);
    EXPECT_LT(o.tokens.size(), 900u);
  }
  ExpectAllBlocksReturned(*engine);

  // The blocking form with a cancellation predicate; and a deadline.
  std::atomic<bool> flag{false};
  std::thread tripper([&] {
    while (engine->stats().generated_tokens < 40) absl::SleepFor(absl::Milliseconds(1));
    flag = true;
  });
  auto blocking = engine->Generate(r, [&] { return flag.load(); });
  tripper.join();
  ASSERT_TRUE(blocking.ok());
  EXPECT_EQ(blocking->outputs[0].finish_reason, FinishReason::kCancelled);
  GenerateRequest late = r;
  late.deadline = absl::Now() + absl::Milliseconds(30);
  auto timed = engine->Generate(late);
  ASSERT_TRUE(timed.ok());
  EXPECT_EQ(timed->outputs[0].finish_reason, FinishReason::kCancelled);
  // A cancelled Score completes with CANCELLED.
  ScoreRequest score;
  score.sequences.push_back({GoldenPrompts("llama")[4], {39}});
  score.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_EQ(engine->Score(score).status().code(), absl::StatusCode::kDeadlineExceeded);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, MaxStepTokensAndContextLimit) {
  const auto prompt = GoldenPrompts("llama")[2];  // 8 tokens
  auto engine = MakeEngine(EngineSetup().Context(20));
  auto r = engine->Generate(Sampled(prompt, 5, 1, 2));
  ASSERT_TRUE(r.ok());
  for (const auto& o : r->outputs) {
    EXPECT_EQ(o.tokens.size(), 5u);
    EXPECT_EQ(o.finish_reason, FinishReason::kLength);
  }
  auto c = engine->Generate(Sampled(prompt, 100, 1, 2));
  ASSERT_TRUE(c.ok());
  for (const auto& o : c->outputs) {
    EXPECT_EQ(o.tokens.size(), 12u) << "8 prompt tokens + 12 fill the 20-token window";
    EXPECT_EQ(o.finish_reason, FinishReason::kContext);
  }
  // A branch already at the limit finishes at once.
  GenerateRequest full = Sampled(prompt, 5, 1);
  full.branches[0].suffix_tokens.assign(12, 7);
  auto f = engine->Generate(full);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->outputs[0].tokens.empty());
  EXPECT_EQ(f->outputs[0].finish_reason, FinishReason::kContext);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, EosEndsTheStepAndIsNotReturned) {
  const auto prompt = GoldenPrompts("llama")[3];
  auto engine = MakeEngine(EngineSetup());
  const int32_t eos = engine->model_config().eos_token_ids.at(0);
  // Hot sampling with EOS ignored: find samples that emit EOS somewhere.
  GenerateRequest hot = Sampled(prompt, 60, 5, 48);
  hot.sampling = {1.5f, 1.0f, 0};
  auto ignored = engine->Generate(hot);
  ASSERT_TRUE(ignored.ok());
  hot.stop.ignore_eos = false;
  auto stopped = engine->Generate(hot);
  ASSERT_TRUE(stopped.ok());
  int hits = 0;
  for (size_t k = 0; k < ignored->outputs.size(); ++k) {
    const auto& full = ignored->outputs[k].tokens;
    const auto& cut = stopped->outputs[k];
    auto at = std::find(full.begin(), full.end(), eos);
    if (at == full.end()) {
      EXPECT_EQ(cut.tokens, full);
      EXPECT_EQ(cut.finish_reason, FinishReason::kLength);
      continue;
    }
    ++hits;
    EXPECT_EQ(cut.finish_reason, FinishReason::kEos);
    EXPECT_EQ(cut.tokens, std::vector<int32_t>(full.begin(), at));
    // The step's logprob includes the EOS token's.
    double sum = 0;
    for (size_t i = 0; i <= static_cast<size_t>(at - full.begin()); ++i) {
      sum += ignored->outputs[k].token_logprobs[i];
    }
    EXPECT_NEAR(cut.logprob, sum, 1e-3);
  }
  EXPECT_GT(hits, 0) << "no sample emitted EOS; pick another seed";
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, StepDelimiterEndsTheStepAndIsKept) {
  auto engine = MakeEngine(EngineSetup().WithTokenizer());
  const Tokenizer* tok = engine->tokenizer();
  ASSERT_NE(tok, nullptr);
  const auto prompt = GoldenPrompts("llama")[0];
  GenerateRequest r = Sampled(prompt, 40, 21, 16);
  r.sampling.temperature = 1.2f;
  auto free_run = engine->Generate(r);
  ASSERT_TRUE(free_run.ok());
  // Use as delimiter the text of a token that some sample emits mid-step.
  std::string delimiter;
  for (const auto& o : free_run->outputs) {
    EXPECT_EQ(o.finish_reason, FinishReason::kLength);
    for (size_t i = 3; i < o.tokens.size() && delimiter.empty(); ++i) {
      std::string t = tok->Decode({o.tokens[i]});
      if (t.size() >= 2 && t.size() <= 4 && (unsigned char)t[0] < 0x80) delimiter = t;
    }
  }
  ASSERT_FALSE(delimiter.empty());
  r.stop.step_delimiters = {delimiter};
  auto stepped = engine->Generate(r);
  ASSERT_TRUE(stepped.ok());
  int steps = 0;
  for (size_t k = 0; k < stepped->outputs.size(); ++k) {
    const auto& full = free_run->outputs[k];
    const auto& cut = stepped->outputs[k];
    // The cut output is a prefix of the free run (same seed and positions) ...
    ASSERT_LE(cut.tokens.size(), full.tokens.size());
    EXPECT_TRUE(std::equal(cut.tokens.begin(), cut.tokens.end(), full.tokens.begin()));
    EXPECT_EQ(cut.text, tok->Decode(cut.tokens));
    if (cut.finish_reason == FinishReason::kStep) {
      ++steps;
      // ... ending at the first token that completes the delimiter, which is kept.
      EXPECT_THAT(cut.text, HasSubstr(delimiter));
      std::vector<int32_t> shorter(cut.tokens.begin(), cut.tokens.end() - 1);
      EXPECT_EQ(tok->Decode(shorter).find(delimiter), std::string::npos);
    } else {
      EXPECT_EQ(cut.finish_reason, FinishReason::kLength);
      EXPECT_EQ(cut.text.find(delimiter), std::string::npos);
    }
  }
  EXPECT_GT(steps, 0);
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, RejectsBadRequestsWithClearErrors) {
  auto engine = MakeEngine(EngineSetup().Blocks(16).QueueLimit(1));
  const auto prompt = GoldenPrompts("llama")[0];
  auto expect_error = [&](GenerateRequest r, absl::StatusCode code, const std::string& needle) {
    auto result = engine->Generate(std::move(r));
    EXPECT_EQ(result.status().code(), code) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(needle));
  };
  GenerateRequest r = Sampled(prompt, 4, 1);
  r.prompt_tokens.clear();
  expect_error(r, absl::StatusCode::kInvalidArgument, "prompt_tokens");
  r = Sampled(prompt, 4, 1);
  r.prompt_tokens[2] = 600;
  expect_error(r, absl::StatusCode::kInvalidArgument, "prompt_tokens[2]");
  r = Sampled(prompt, 4, 1);
  r.branches.push_back({{-1}, 1, 0});
  expect_error(r, absl::StatusCode::kInvalidArgument, "branches[1].suffix_tokens[0]");
  r = Sampled(prompt, 4, 1);
  r.branches[0].num_samples = 0;
  expect_error(r, absl::StatusCode::kInvalidArgument, "num_samples");
  r = Sampled(prompt, 4, 1);
  r.sampling.top_p = 0;
  expect_error(r, absl::StatusCode::kInvalidArgument, "top_p");
  r = Sampled(prompt, 4, 1);
  r.stop.max_step_tokens = 0;
  expect_error(r, absl::StatusCode::kInvalidArgument, "max_step_tokens");
  r = Sampled(prompt, 4, 1);
  r.stop.step_delimiters = {"\n\n"};
  expect_error(r, absl::StatusCode::kInvalidArgument, "tokenizer");
  r = Sampled(prompt, 500, 1);  // needs 33 blocks, the pool has 16
  expect_error(r, absl::StatusCode::kResourceExhausted, "KV blocks");
  ScoreRequest s;
  EXPECT_EQ(engine->Score(s).status().code(), absl::StatusCode::kInvalidArgument);
  s.sequences.push_back({prompt, {static_cast<int32_t>(prompt.size())}});
  EXPECT_THAT(std::string(engine->Score(s).status().message()), HasSubstr("positions[0]"));
  s.sequences[0].positions = {0};
  s.columns = {600};
  EXPECT_THAT(std::string(engine->Score(s).status().message()), HasSubstr("columns[0]"));

  // A full queue is RESOURCE_EXHAUSTED.
  absl::Notification done;
  auto id = engine->SubmitGenerate(Sampled(prompt, 200, 1),
                                   [&](absl::StatusOr<GenerateResult>) { done.Notify(); });
  ASSERT_TRUE(id.ok());
  auto second = engine->SubmitGenerate(Sampled(prompt, 4, 1), [](auto) {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  engine->Cancel(*id);
  done.WaitForNotification();
  ExpectAllBlocksReturned(*engine);
}

TEST_F(EngineTest, StatsAndStepObserver) {
  std::atomic<int> steps{0};
  std::atomic<int> max_tokens{0};
  EngineSetup setup;
  setup.options.max_batch_tokens = 16;
  setup.options.step_observer = [&](const StepInfo& info) {
    ++steps;
    max_tokens = std::max(max_tokens.load(), info.batch_tokens);
    EXPECT_EQ(info.batch_tokens, info.prefill_tokens + info.decode_tokens);
  };
  auto engine = MakeEngine(setup);
  auto r = engine->Generate(Sampled(GoldenPrompts("llama")[4], 10, 1, 3));
  ASSERT_TRUE(r.ok());
  const EngineStats s = engine->stats();
  EXPECT_EQ(s.steps, steps.load());
  EXPECT_LE(max_tokens.load(), 16);
  EXPECT_EQ(s.generated_tokens, 30);
  EXPECT_EQ(s.prefill_tokens, 40);
  EXPECT_EQ(s.kv_blocks_total, 256);
  EXPECT_GT(s.kv_blocks_cached, 0);
  ExpectAllBlocksReturned(*engine);
  // Destroying an engine with work in flight completes it with UNAVAILABLE.
  absl::Notification done;
  absl::Status status;
  ASSERT_TRUE(engine
                  ->SubmitGenerate(Sampled(GoldenPrompts("llama")[4], 900, 1, 2),
                                   [&](absl::StatusOr<GenerateResult> res) {
                                     status = res.status();
                                     done.Notify();
                                   })
                  .ok());
  engine.reset();
  ASSERT_TRUE(done.HasBeenNotified());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace arbor::runtime
