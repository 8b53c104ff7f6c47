// Engine parity with transformers and with itself: the golden fixtures'
// logits and greedy continuations, scoring, and the same tokens whatever the
// batching, forking or prefix caching (helpers in engine_test_util.h).
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/engine_test_util.h"

namespace arbor::runtime {
namespace {

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

}  // namespace
}  // namespace arbor::runtime
