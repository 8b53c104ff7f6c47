// CudaBackend against the CPU backend and the transformers golden fixtures.
// bf16 weights and activations: logits within 3e-2 of the fp32 references
// (max |a - b| / max |b|); greedy continuations identical for 32 tokens. Skips
// without a CUDA device; without CUDA in the build, checks that Create says so.
#include "worker/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/cpu_backend.h"

namespace arbor::worker {
namespace {

constexpr double kBf16ModelTolerance = 3e-2;

std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}
std::string GoldenDir(const std::string& model) {
  return SourceDir() + "/tests/fixtures/golden/" + model;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// max|a - b| / max|b|.
double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{a[i]} - double{b[i]}));
    max_ref = std::max(max_ref, std::abs(double{b[i]}));
  }
  return max_ref == 0.0 ? max_diff : max_diff / max_ref;
}

int ArgMax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

struct Seq {
  std::vector<int32_t> blocks;
  int context_len = 0;
};

// Hands out block ids in order; the same sequence of calls gives the same ids
// on both backends.
class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks) : num_blocks_(num_blocks) {}
  void Reserve(Seq* seq, int context_len) {
    while (static_cast<int>(seq->blocks.size()) * kKvBlockSize < context_len) {
      seq->blocks.push_back(Allocate());
    }
  }
  int32_t Allocate() {
    ARBOR_CHECK(next_ < num_blocks_);
    return next_++;
  }

 private:
  int num_blocks_;
  int32_t next_ = 0;
};

struct Chunk {
  Seq* seq;
  std::vector<int32_t> tokens;
  std::vector<int> outputs;  // indices into tokens; -1 means every token
};

// One Forward over the chunks; returns the output rows in chunk order.
std::vector<float> Step(ModelBackend* backend, BlockAllocator* alloc, std::vector<Chunk> chunks) {
  ForwardBatch batch;
  batch.seq_starts.push_back(0);
  int max_blocks = 1;
  for (Chunk& c : chunks) {
    alloc->Reserve(c.seq, c.seq->context_len + static_cast<int>(c.tokens.size()));
    max_blocks = std::max<int>(max_blocks, c.seq->blocks.size());
  }
  batch.max_blocks_per_seq = max_blocks;
  for (Chunk& c : chunks) {
    const int base = batch.num_tokens();
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      batch.tokens.push_back(c.tokens[i]);
      batch.positions.push_back(c.seq->context_len + static_cast<int>(i));
    }
    if (c.outputs == std::vector<int>{-1}) {
      c.outputs.clear();
      for (size_t i = 0; i < c.tokens.size(); ++i) c.outputs.push_back(static_cast<int>(i));
    }
    for (int o : c.outputs) batch.output_rows.push_back(base + o);
    c.seq->context_len += static_cast<int>(c.tokens.size());
    batch.seq_starts.push_back(batch.num_tokens());
    batch.context_lens.push_back(c.seq->context_len);
    std::vector<int32_t> table = c.seq->blocks;
    table.resize(max_blocks, -1);
    batch.block_tables.insert(batch.block_tables.end(), table.begin(), table.end());
  }
  std::vector<float> out;
  const absl::Status s = backend->Forward(batch, &out);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(out.size(), batch.output_rows.size() * backend->output_dim());
  return out;
}

bool Bf16Model(const std::string& dir) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  return config.ok() && config->torch_dtype == "bfloat16";
}

// nullptr (and the test skips) without a device or CUDA; other errors fail.
std::unique_ptr<CudaBackend> MakeCudaBackend(const std::string& dir, int max_batch_tokens = 8192,
                                             int cascade_min_shared_tokens = 256) {
  CudaBackendOptions options;
  options.num_kv_blocks = 128;
  options.max_batch_tokens = max_batch_tokens;
  options.cascade_min_shared_tokens = cascade_min_shared_tokens;
  // Same emulation as the CPU golden tests (make_golden.py cast the bf16
  // model with .to(bfloat16), rounding its RoPE buffer).
  options.bf16_rope_frequencies = Bf16Model(dir);
  absl::StatusOr<std::unique_ptr<CudaBackend>> backend = CudaBackend::Create(dir, options);
  if (!backend.ok()) {
    const absl::StatusCode code = backend.status().code();
    EXPECT_TRUE(code == absl::StatusCode::kFailedPrecondition ||  // no device
                code == absl::StatusCode::kUnimplemented)         // no CUDA in the build
        << backend.status();
    return nullptr;
  }
  return *std::move(backend);
}

std::unique_ptr<CpuBackend> MakeCpuBackend(const std::string& dir) {
  CpuBackendOptions options;
  options.num_kv_blocks = 128;
  options.num_threads = 2;
  options.bf16_rope_frequencies = Bf16Model(dir);
  absl::StatusOr<std::unique_ptr<CpuBackend>> backend = CpuBackend::Create(dir, options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? *std::move(backend) : nullptr;
}

#if !ARBOR_HAVE_CUDA
TEST(CudaBackendTest, CreateSaysTheBuildHasNoCuda) {
  absl::StatusOr<std::unique_ptr<CudaBackend>> backend =
      CudaBackend::Create(GoldenDir("llama"), CudaBackendOptions{});
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnimplemented);
}
#endif

class CudaGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return GoldenDir(GetParam()); }
};

#define MAKE_CUDA_OR_SKIP(var, ...)                                \
  std::unique_ptr<CudaBackend> var = MakeCudaBackend(__VA_ARGS__); \
  if (var == nullptr) GTEST_SKIP() << "no CUDA device (or no CUDA)"

TEST_P(CudaGoldenTest, LogitsMatchTransformersAndCpuBackend) {
  MAKE_CUDA_OR_SKIP(cuda, dir());
  std::unique_ptr<CpuBackend> cpu = MakeCpuBackend(dir());
  ASSERT_NE(cpu, nullptr);
  const int vocab = cuda->output_dim();
  ASSERT_EQ(vocab, cpu->output_dim());
  BlockAllocator cuda_alloc(cuda->num_kv_blocks()), cpu_alloc(cpu->num_kv_blocks());
  for (const nlohmann::json& entry : ReadJson(dir() + "/logits.json")) {
    const std::vector<int32_t> ids = entry["ids"].get<std::vector<int32_t>>();
    std::vector<float> expected;
    for (const nlohmann::json& row : entry["logits"]) {
      for (double v : row) expected.push_back(static_cast<float>(v));
    }
    Seq a, b;
    const std::vector<float> got = Step(cuda.get(), &cuda_alloc, {{&a, ids, {-1}}});
    const std::vector<float> cpu_got = Step(cpu.get(), &cpu_alloc, {{&b, ids, {-1}}});
    EXPECT_LE(RelError(got, expected), kBf16ModelTolerance) << "prompt of " << ids.size();
    EXPECT_LE(RelError(got, cpu_got), kBf16ModelTolerance) << "prompt of " << ids.size();
  }
}

// All prompts batched, one token per step (the decode kernel), as the CPU
// golden test does: transformers' greedy continuations, 32 tokens each.
TEST_P(CudaGoldenTest, GreedyContinuationMatchesTransformers) {
  MAKE_CUDA_OR_SKIP(cuda, dir());
  const int vocab = cuda->output_dim();
  const nlohmann::json golden = ReadJson(dir() + "/greedy.json");
  const size_t num = golden.size();
  std::vector<Seq> seqs(num);
  std::vector<std::vector<int32_t>> expected(num), generated(num);
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < num; ++i) {
    expected[i] = golden[i]["continuation"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = golden[i]["ids"].get<std::vector<int32_t>>();
    chunks.push_back({&seqs[i], ids, {static_cast<int>(ids.size()) - 1}});
  }
  BlockAllocator alloc(cuda->num_kv_blocks());
  std::vector<float> out = Step(cuda.get(), &alloc, chunks);
  for (size_t step = 0; step < expected[0].size(); ++step) {
    chunks.clear();
    for (size_t i = 0; i < num; ++i) {
      const int32_t next = ArgMax(out.data() + i * vocab, vocab);
      generated[i].push_back(next);
      if (step + 1 < expected[i].size()) chunks.push_back({&seqs[i], {next}, {0}});
    }
    if (chunks.empty()) break;
    out = Step(cuda.get(), &alloc, chunks);
  }
  for (size_t i = 0; i < num; ++i) EXPECT_EQ(generated[i], expected[i]) << "prompt " << i;
}

// Chunked prefill against cached KV, a fork through CopyBlocks and two
// branches decoding over shared blocks (with and without cascade attention
// over the 32 shared tokens): the same logits as the CPU backend.
TEST_P(CudaGoldenTest, ChunkedPrefillForkAndDecodeMatchCpuBackend) {
  MAKE_CUDA_OR_SKIP(cuda, dir(), 8192, /*cascade_min_shared_tokens=*/16);
  MAKE_CUDA_OR_SKIP(plain, dir(), 8192, /*cascade_min_shared_tokens=*/0);
  std::unique_ptr<CpuBackend> cpu = MakeCpuBackend(dir());
  ASSERT_NE(cpu, nullptr);
  const std::vector<int32_t> ids =
      ReadJson(dir() + "/logits.json").back()["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 36u);
  auto run = [&](ModelBackend* backend) {
    BlockAllocator alloc(backend->num_kv_blocks());
    std::vector<float> all;
    Seq trunk;
    auto append = [&all](const std::vector<float>& v) {
      all.insert(all.end(), v.begin(), v.end());
    };
    append(Step(backend, &alloc, {{&trunk, {ids.begin(), ids.begin() + 21}, {-1}}}));
    append(Step(backend, &alloc, {{&trunk, {ids.begin() + 21, ids.begin() + 35}, {-1}}}));
    Seq branch;
    branch.blocks = {trunk.blocks[0], trunk.blocks[1], alloc.Allocate()};
    branch.context_len = 35;
    const std::pair<int32_t, int32_t> copy = {trunk.blocks[2], branch.blocks[2]};
    EXPECT_TRUE(backend->CopyBlocks({&copy, 1}).ok());
    int32_t a = ids[35], b = ids[36];
    for (int step = 0; step < 8; ++step) {
      const std::vector<float> out =
          Step(backend, &alloc, {{&trunk, {a}, {0}}, {&branch, {b}, {0}}});
      append(out);
      const int vocab = backend->output_dim();
      a = ArgMax(out.data(), vocab);
      b = ArgMax(out.data() + vocab, vocab);
    }
    return all;
  };
  const std::vector<float> want = run(cpu.get());
  EXPECT_LE(RelError(run(cuda.get()), want), kBf16ModelTolerance) << "cascade";
  EXPECT_LE(RelError(run(plain.get()), want), kBf16ModelTolerance) << "plain decode";
}

// A batch larger than max_batch_tokens runs as several passes with the same
// result.
TEST_P(CudaGoldenTest, OversizedBatchesAreSplitBetweenSequences) {
  MAKE_CUDA_OR_SKIP(small, dir(), 16);
  MAKE_CUDA_OR_SKIP(large, dir());
  const std::vector<int32_t> ids =
      ReadJson(dir() + "/logits.json").back()["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 30u);
  auto run = [&](ModelBackend* backend) {
    BlockAllocator alloc(backend->num_kv_blocks());
    Seq s1, s2, s3;
    return Step(backend, &alloc,
                {{&s1, {ids.begin(), ids.begin() + 10}, {-1}},
                 {&s2, {ids.begin() + 10, ids.begin() + 22}, {3, 11}},
                 {&s3, {ids.begin() + 22, ids.begin() + 30}, {7}}});
  };
  EXPECT_LE(RelError(run(small.get()), run(large.get())), 1e-2);
}

TEST_P(CudaGoldenTest, RejectsMalformedBatches) {
  MAKE_CUDA_OR_SKIP(cuda, dir(), 16);
  ForwardBatch batch;
  batch.tokens = {1, 2};
  batch.positions = {0, 1};
  batch.seq_starts = {0, 2};
  batch.context_lens = {2};
  batch.max_blocks_per_seq = 1;
  batch.block_tables = {0};
  batch.output_rows = {1};
  std::vector<float> out;
  EXPECT_TRUE(cuda->Forward(batch, &out).ok());
  batch.tokens[0] = cuda->config().vocab_size;
  EXPECT_EQ(cuda->Forward(batch, &out).code(), absl::StatusCode::kInvalidArgument);
  batch.tokens[0] = 1;
  batch.block_tables = {cuda->num_kv_blocks()};
  EXPECT_EQ(cuda->Forward(batch, &out).code(), absl::StatusCode::kInvalidArgument);
  const std::pair<int32_t, int32_t> bad = {0, cuda->num_kv_blocks()};
  EXPECT_EQ(cuda->CopyBlocks({&bad, 1}).code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGoldenTest, ::testing::Values("llama", "qwen2"));

}  // namespace
}  // namespace arbor::worker
