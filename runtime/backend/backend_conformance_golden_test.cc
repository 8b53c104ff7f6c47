// The ModelBackend contract on the golden fixtures, for every (backend, model):
// transformers' logits and greedy tokens, chunked prefill and decode, K/V
// through the block table and forks, batch composition, output rows, and
// ForwardSample against the host Sampler (see backend_conformance_test_util.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_conformance_test_util.h"
#include "runtime/sampling/sampler.h"

namespace arbor::runtime {
namespace {

// ------------------------------------------------------------------ golden fixtures

// Every prompt in one pass, every row: transformers' logits within the
// backend's tolerance, and every row's argmax transformers' unless the
// fixture's margin is within the measured error. A backend other than the
// reference is also within its tolerance of the CPU backend.
TEST_P(GoldenConformanceTest, LogitsMatchTransformers) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  EXPECT_EQ(backend->name(), backend_kind().name);
  std::unique_ptr<ModelBackend> cpu;
  if (!backend_kind().reference) {
    cpu = MakeBackend("cpu", dir());
    ASSERT_NE(cpu, nullptr);
  }
  const int vocab = backend->output_dim();
  EXPECT_EQ(vocab, backend->config().vocab_size);
  const nlohmann::json golden = ReadJson(dir() + "/logits.json");
  ASSERT_GE(golden.size(), 4u);
  BlockAllocator alloc(backend->num_kv_blocks());
  BlockAllocator cpu_alloc(cpu != nullptr ? cpu->num_kv_blocks() : 0);
  for (const nlohmann::json& entry : golden) {
    const std::vector<int32_t> ids = entry["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(absl::StrCat("prompt of ", ids.size(), " tokens"));
    std::vector<float> expected;
    for (const nlohmann::json& row : entry["logits"]) {
      ASSERT_EQ(row.size(), static_cast<size_t>(vocab));
      for (double v : row) expected.push_back(static_cast<float>(v));
    }
    Seq s;
    const std::vector<float> got = Step(backend.get(), &alloc, {{&s, ids, {-1}}});
    const double err = RelError(got, expected);
    EXPECT_LE(err, backend_kind().golden_tolerance);
    RecordProperty(absl::StrCat("rel_error_", ids.size()), absl::StrCat(err));
    for (size_t r = 0; (r + 1) * vocab <= got.size() && (r + 1) * vocab <= expected.size(); ++r) {
      const float* g = got.data() + r * vocab;
      const float* e = expected.data() + r * vocab;
      EXPECT_TRUE(ArgMaxExplainedBy(e, vocab, MaxAbsDiff(g, e, vocab), ArgMax(g, vocab)))
          << "row " << r;
    }
    if (cpu != nullptr) {
      Seq c;
      const std::vector<float> cpu_got = Step(cpu.get(), &cpu_alloc, {{&c, ids, {-1}}});
      EXPECT_LE(RelError(got, cpu_got), backend_kind().golden_tolerance) << "vs the CPU backend";
    }
  }
}

// transformers' greedy continuations (32 tokens), all prompts prefilled
// together, then one token per step (the decode path) for all of them, fed
// back as transformers generated them (teacher forcing, so that one flip does
// not carry over). The reference backend picks transformers' token every
// time; another backend picks it or one whose fp32 logit (the CPU backend's,
// fed the same tokens) is within twice its measured logit error of the best:
// a near-tie that its rounding may flip.
TEST_P(GoldenConformanceTest, GreedyContinuationMatchesTransformers) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  std::unique_ptr<ModelBackend> cpu;
  if (!backend_kind().reference) {
    cpu = MakeBackend("cpu", dir());
    ASSERT_NE(cpu, nullptr);
  }
  const int vocab = backend->output_dim();
  const nlohmann::json golden = ReadJson(dir() + "/greedy.json");
  const size_t num = golden.size();
  std::vector<std::vector<int32_t>> expected(num);
  std::vector<Seq> seqs(num), cpu_seqs(num);
  std::vector<Chunk> chunks, cpu_chunks;
  for (size_t i = 0; i < num; ++i) {
    expected[i] = golden[i]["continuation"].get<std::vector<int32_t>>();
    ASSERT_EQ(expected[i].size(), expected[0].size());
    const std::vector<int32_t> ids = golden[i]["ids"].get<std::vector<int32_t>>();
    chunks.push_back({&seqs[i], ids, {static_cast<int>(ids.size()) - 1}});
    cpu_chunks.push_back({&cpu_seqs[i], ids, {static_cast<int>(ids.size()) - 1}});
  }
  BlockAllocator alloc(backend->num_kv_blocks());
  BlockAllocator cpu_alloc(cpu != nullptr ? cpu->num_kv_blocks() : 0);
  int same = 0, total = 0;
  for (size_t step = 0; step < expected[0].size(); ++step) {
    const std::vector<float> out = Step(backend.get(), &alloc, chunks);
    std::vector<float> ref;
    if (cpu != nullptr) ref = Step(cpu.get(), &cpu_alloc, cpu_chunks);
    chunks.clear();
    cpu_chunks.clear();
    for (size_t i = 0; i < num; ++i) {
      const float* g = out.data() + i * vocab;
      const int32_t want = expected[i][step], picked = ArgMax(g, vocab);
      if (cpu == nullptr) {
        EXPECT_EQ(picked, want) << "prompt " << i << " step " << step;
      } else {
        const float* r = ref.data() + i * vocab;
        EXPECT_EQ(ArgMax(r, vocab), want) << "CPU backend, prompt " << i << " step " << step;
        const float delta = MaxAbsDiff(g, r, vocab);
        EXPECT_TRUE(picked == want || ArgMaxExplainedBy(r, vocab, delta, picked))
            << "prompt " << i << " step " << step << ": picked " << picked << ", transformers "
            << want << "; fp32 logits " << r[picked] << " vs " << r[want] << ", error " << delta;
      }
      same += picked == want;
      ++total;
      chunks.push_back({&seqs[i], {want}, {0}});
      cpu_chunks.push_back({&cpu_seqs[i], {want}, {0}});
    }
  }
  RecordProperty("greedy_tokens_equal", absl::StrCat(same, "/", total));
}

// ------------------------------------------------------------------ KV cache

// A prompt prefilled in two chunks (the second against the cached KV) at
// every kind of split (inside the first block, at a block boundary, inside
// the second, one token before the end) gives the logits of one pass.
TEST_P(GoldenConformanceTest, ChunkedPrefillMatchesOnePass) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const std::vector<int32_t> ids = LongPrompt(dir());
  ASSERT_GE(ids.size(), 36u);
  const int n = static_cast<int>(ids.size());
  BlockAllocator alloc(backend->num_kv_blocks());
  Seq whole;
  const std::vector<float> one_pass = Step(backend.get(), &alloc, {{&whole, ids, {-1}}});
  for (int split : {1, kKvBlockSize, 21, n - 1}) {
    SCOPED_TRACE(absl::StrCat("split at ", split));
    Seq s;
    std::vector<float> joined = Step(backend.get(), &alloc, {{&s, Slice(ids, 0, split), {-1}}});
    Append(&joined, Step(backend.get(), &alloc, {{&s, Slice(ids, split, n), {-1}}}));
    EXPECT_LE(RelError(joined, one_pass), backend_kind().self_tolerance);
  }
}

// A prefill followed by one decode step per remaining token (across two block
// boundaries) gives the logits of one long prefill, row for row.
TEST_P(GoldenConformanceTest, PrefillThenDecodeMatchesOnePrefill) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const std::vector<int32_t> ids = LongPrompt(dir());
  const int n = static_cast<int>(ids.size());
  const int vocab = backend->output_dim();
  BlockAllocator alloc(backend->num_kv_blocks());
  Seq whole;
  const std::vector<float> one_pass = Step(backend.get(), &alloc, {{&whole, ids, {-1}}});
  for (int prefill : {1, 10}) {
    SCOPED_TRACE(absl::StrCat("prefill of ", prefill));
    Seq s;
    std::vector<float> last =
        Step(backend.get(), &alloc, {{&s, Slice(ids, 0, prefill), {prefill - 1}}});
    std::vector<float> decoded = last;
    for (int t = prefill; t < n; ++t)
      Append(&decoded, Step(backend.get(), &alloc, {{&s, {ids[t]}, {0}}}));
    EXPECT_LE(RelError(decoded, Rows(one_pass, vocab, prefill - 1, n)),
              backend_kind().self_tolerance);
  }
}

// K/V is read and written only where the block table points: the same prompt
// with its blocks taken from the top of the pool down (tables that are not
// the identity, a chunk boundary inside a block) gives the same logits.
TEST_P(GoldenConformanceTest, KvIsAddressedThroughTheBlockTable) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const std::vector<int32_t> ids = LongPrompt(dir());
  const int n = static_cast<int>(ids.size());
  BlockAllocator up(backend->num_kv_blocks());
  Seq a;
  const std::vector<float> want = Step(backend.get(), &up, {{&a, ids, {-1}}});
  BlockAllocator down(backend->num_kv_blocks(), /*reversed=*/true);
  Seq b;
  std::vector<float> got = Step(backend.get(), &down, {{&b, Slice(ids, 0, 20), {-1}}});
  Append(&got, Step(backend.get(), &down, {{&b, Slice(ids, 20, n), {-1}}}));
  EXPECT_NE(a.blocks, b.blocks);
  EXPECT_LE(RelError(got, want), backend_kind().self_tolerance);
}

// A fork after 35 tokens: the branch shares the trunk's two full blocks and
// gets a copy of its partial third block (CopyBlocks, the copy-on-write of
// branching); both continue in one batch with different tokens. The trunk's
// rows are those of one pass over the prompt, the branch's those of a
// from-scratch run of the prefix and its own suffix; the trunk's later writes
// to its partial block do not reach the branch's copy.
TEST_P(GoldenConformanceTest, ForkThroughCopyBlocksReadsTheSharedPrefix) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const int vocab = backend->output_dim();
  const std::vector<int32_t> ids = LongPrompt(dir());
  const int n = static_cast<int>(ids.size());
  constexpr int kPrefix = 35;
  ASSERT_GE(n, kPrefix + 3);
  BlockAllocator alloc(backend->num_kv_blocks());
  Seq whole;
  const std::vector<float> one_pass = Step(backend.get(), &alloc, {{&whole, ids, {-1}}});

  Seq trunk;
  Step(backend.get(), &alloc, {{&trunk, Slice(ids, 0, kPrefix), {}}});
  ASSERT_EQ(trunk.blocks.size(), 3u);
  Seq branch;
  branch.blocks = {trunk.blocks[0], trunk.blocks[1], alloc.Allocate()};
  branch.context_len = kPrefix;
  const std::pair<int32_t, int32_t> copy = {trunk.blocks[2], branch.blocks[2]};
  ASSERT_TRUE(backend->CopyBlocks({&copy, 1}).ok());
  const std::vector<int32_t> other_suffix = {ids[kPrefix + 2], ids[kPrefix + 1], ids[kPrefix]};
  const std::vector<float> out =
      Step(backend.get(), &alloc,
           {{&trunk, Slice(ids, kPrefix, n), {-1}}, {&branch, other_suffix, {-1}}});
  EXPECT_LE(RelError(Rows(out, vocab, 0, n - kPrefix), Rows(one_pass, vocab, kPrefix, n)),
            backend_kind().self_tolerance)
      << "trunk";
  std::vector<int32_t> branch_ids = Slice(ids, 0, kPrefix);
  branch_ids.insert(branch_ids.end(), other_suffix.begin(), other_suffix.end());
  Seq scratch;
  const std::vector<float> from_scratch =
      Step(backend.get(), &alloc, {{&scratch, branch_ids, {-1}}});
  EXPECT_LE(RelError(Rows(out, vocab, n - kPrefix, n - kPrefix + 3),
                     Rows(from_scratch, vocab, kPrefix, kPrefix + 3)),
            backend_kind().self_tolerance)
      << "branch";
  // A second branch forked from the first one's partial block (a chain of
  // copies within one call is not asked for: one pair).
  Seq twig;
  twig.blocks = {branch.blocks[0], branch.blocks[1], alloc.Allocate()};
  twig.context_len = branch.context_len;
  const std::pair<int32_t, int32_t> copy2 = {branch.blocks[2], twig.blocks[2]};
  ASSERT_TRUE(backend->CopyBlocks({&copy2, 1}).ok());
  const std::vector<float> twig_out = Step(backend.get(), &alloc, {{&twig, {ids[3]}, {0}}});
  std::vector<int32_t> twig_ids = branch_ids;
  twig_ids.push_back(ids[3]);
  Seq scratch2;
  const std::vector<float> twig_want =
      Step(backend.get(), &alloc, {{&scratch2, twig_ids, {static_cast<int>(twig_ids.size()) - 1}}});
  EXPECT_LE(RelError(twig_out, twig_want), backend_kind().self_tolerance) << "twig";
}

// ------------------------------------------------------------------ batches

// A sequence's rows do not depend on the batch around it: run alone, or
// batched first or last with other sequences' prefill chunks and decode
// tokens, it gets the same logits at every step.
TEST_P(GoldenConformanceTest, BatchCompositionDoesNotChangeResults) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const std::vector<int32_t> ids = LongPrompt(dir());
  const nlohmann::json greedy = ReadJson(dir() + "/greedy.json");
  const std::vector<int32_t> other_a = greedy[0]["ids"].get<std::vector<int32_t>>();
  const std::vector<int32_t> other_b = greedy[1]["ids"].get<std::vector<int32_t>>();
  // The sequence under test: a 24-token prefill, then 4 decode steps.
  auto run = [&](int layout) {
    BlockAllocator alloc(backend->num_kv_blocks());
    Seq s, a, b;
    std::vector<float> rows;
    auto step = [&](Chunk mine, std::vector<Chunk> others, bool first) {
      std::vector<Chunk> chunks;
      if (first) chunks.push_back(mine);
      for (Chunk& c : others) chunks.push_back(c);
      if (!first) chunks.push_back(mine);
      const std::vector<float> out = Step(backend.get(), &alloc, chunks);
      // Our rows: the first ones, or the last (`mine` lists its rows).
      const int dim = backend->output_dim();
      const int ours = static_cast<int>(mine.outputs.size());
      const int total = static_cast<int>(out.size()) / dim;
      Append(&rows, first ? Rows(out, dim, 0, ours) : Rows(out, dim, total - ours, total));
    };
    std::vector<int> every_row(24);
    for (int i = 0; i < 24; ++i) every_row[i] = i;
    const Chunk prefill = {&s, Slice(ids, 0, 24), every_row};
    if (layout == 0) {
      step(prefill, {}, true);
    } else {
      step(prefill, {{&a, other_a, {-1}}, {&b, Slice(other_b, 0, 5), {2}}}, layout == 1);
    }
    for (int t = 24; t < 28; ++t) {
      const Chunk decode = {&s, {ids[t]}, {0}};
      if (layout == 0) {
        step(decode, {}, true);
      } else {
        // The others decode too, or prefill another chunk.
        std::vector<Chunk> others = {{&a, {other_a[t % other_a.size()]}, {0}}};
        if (t == 25) others.push_back({&b, Slice(other_b, 5, other_b.size()), {-1}});
        step(decode, others, layout == 1);
      }
    }
    return rows;
  };
  const std::vector<float> alone = run(0);
  ASSERT_FALSE(alone.empty());
  EXPECT_LE(RelError(run(1), alone), backend_kind().self_tolerance) << "batched first";
  EXPECT_LE(RelError(run(2), alone), backend_kind().self_tolerance) << "batched last";
}

// output_rows picks rows in any order, repeats them, or asks for none; with
// none the K/V is still written.
TEST_P(GoldenConformanceTest, OutputRowsSelectRepeatAndReorder) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const int vocab = backend->output_dim();
  const std::vector<int32_t> ids = LongPrompt(dir());
  const int n = static_cast<int>(ids.size());
  BlockAllocator alloc(backend->num_kv_blocks());
  Seq whole;
  const std::vector<float> all = Step(backend.get(), &alloc, {{&whole, ids, {-1}}});
  Seq picked;
  const std::vector<int> rows = {n - 1, 3, n - 1, 0, 17};
  const std::vector<float> got = Step(backend.get(), &alloc, {{&picked, ids, rows}});
  std::vector<float> want;
  for (int r : rows) Append(&want, Rows(all, vocab, r, r + 1));
  EXPECT_LE(RelError(got, want), backend_kind().self_tolerance);

  Seq silent;
  EXPECT_TRUE(Step(backend.get(), &alloc, {{&silent, Slice(ids, 0, 30), {}}}).empty());
  const std::vector<float> last =
      Step(backend.get(), &alloc, {{&silent, Slice(ids, 30, n), {n - 31}}});
  EXPECT_LE(RelError(last, Rows(all, vocab, n - 1, n)), backend_kind().self_tolerance);
}

// ------------------------------------------------------------------ sampling

// ForwardSample draws, for every row of the prompts and every kind of
// truncation, the token the host Sampler draws from the same batch's Forward
// logits; logprobs agree to float rounding.
TEST_P(GoldenConformanceTest, ForwardSampleDrawsWhatTheSamplerDrawsFromForward) {
  MAKE_BACKEND_OR_SKIP(backend, dir());
  const int vocab = backend->output_dim();
  const nlohmann::json golden = ReadJson(dir() + "/greedy.json");
  std::vector<Seq> seqs(golden.size());
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < golden.size(); ++i) {
    chunks.push_back({&seqs[i], golden[i]["ids"].get<std::vector<int32_t>>(), {-1}});
  }
  BlockAllocator alloc(backend->num_kv_blocks());
  const ForwardBatch batch = BuildBatch(&alloc, chunks);
  const size_t rows = batch.output_rows.size();
  std::vector<float> logits;
  ASSERT_TRUE(backend->Forward(batch, &logits).ok());
  const SamplingParams kinds[] = {{0.0f, 1.0f, 0},  {0.8f, 1.0f, 0},  {1.0f, 0.9f, 0},
                                  {0.7f, 1.0f, 20}, {1.3f, 0.5f, 10}, {0.8f, 0.95f, 1}};
  Sampler sampler;
  for (const SamplingParams& kind : kinds) {
    for (uint64_t seed : {1u, 77u}) {
      std::vector<RowSampling> sampling = SamplingFor(rows, kind.temperature, seed);
      for (size_t r = 0; r < rows; ++r) {
        sampling[r].params = kind;
        sampling[r].stream = r % 3;
        sampling[r].position = batch.positions[batch.output_rows[r]] + 1;
      }
      std::vector<SampledToken> drawn;
      // The same batch again rewrites the same K/V.
      ASSERT_TRUE(backend->ForwardSample(batch, sampling, &drawn).ok());
      ASSERT_EQ(drawn.size(), rows);
      for (size_t r = 0; r < rows; ++r) {
        const SampledToken want =
            sampler.Sample({logits.data() + r * vocab, static_cast<size_t>(vocab)},
                           sampling[r].params, seed, sampling[r].stream, sampling[r].position);
        ASSERT_EQ(drawn[r].token, want.token)
            << "row " << r << " T " << kind.temperature << " top_p " << kind.top_p << " top_k "
            << kind.top_k << " seed " << seed;
        EXPECT_NEAR(drawn[r].logprob, want.logprob, 1e-4 * std::max(1.0f, std::abs(want.logprob)));
      }
    }
  }
}

// ------------------------------------------------------------------ instantiation

std::string KindModelName(
    const ::testing::TestParamInfo<std::tuple<BackendKind, std::string>>& info) {
  return std::get<0>(info.param).name + "_" + std::get<1>(info.param);
}

INSTANTIATE_TEST_SUITE_P(Backends, GoldenConformanceTest,
                         ::testing::Combine(::testing::Values(kCpu, kCuda),
                                            ::testing::Values("llama", "qwen2")),
                         KindModelName);

}  // namespace
}  // namespace arbor::runtime
