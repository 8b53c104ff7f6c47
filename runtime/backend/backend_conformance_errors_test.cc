// The ModelBackend contract's errors, for every backend: malformed batches,
// sampling and block copies are INVALID_ARGUMENT (never a crash), naming the
// entry at fault; a value-head model refuses sampling (see
// backend_conformance_test_util.h).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/backend_conformance_test_util.h"
#include "runtime/testing/tiny_model.h"

namespace arbor::runtime {
namespace {

using test_util::TempDir;
using test_util::TinyModelSpec;
using test_util::WriteTinyModel;
using ::testing::HasSubstr;

// A tiny random model every backend supports (head_dim 16, GQA 2).
TinyModelSpec PortableTinySpec() {
  TinyModelSpec spec;
  spec.hidden_size = 64;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.intermediate_size = 48;
  return spec;
}

// ------------------------------------------------------------------ errors

// One sequence of three tokens in block 0 of a 4-block pool: valid.
ForwardBatch ThreeTokenBatch() {
  ForwardBatch batch;
  batch.tokens = {1, 2, 3};
  batch.positions = {0, 1, 2};
  batch.seq_starts = {0, 3};
  batch.context_lens = {3};
  batch.max_blocks_per_seq = 2;
  batch.block_tables = {0, -1};
  batch.output_rows = {2};
  return batch;
}

TEST_P(BackendConformanceTest, RejectsMalformedBatches) {
  constexpr int kBlocks = 4;
  MAKE_BACKEND_OR_SKIP(backend, GoldenDir("llama"), kBlocks);
  const int vocab = backend->config().vocab_size;
  const ForwardBatch good = ThreeTokenBatch();
  std::vector<float> out;
  ASSERT_TRUE(backend->Forward(good, &out).ok());

  struct Case {
    std::string name;
    std::function<void(ForwardBatch*)> mutate;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"token", [&](ForwardBatch* b) { b->tokens[1] = vocab; }, "outside the vocabulary"},
      {"negative token", [](ForwardBatch* b) { b->tokens[0] = -1; }, "token 0"},
      {"positions size", [](ForwardBatch* b) { b->positions.pop_back(); }, "positions"},
      {"seq_starts",
       [](ForwardBatch* b) {
         b->seq_starts = {0, 2};
       },
       "seq_starts"},
      {"seq_starts size",
       [](ForwardBatch* b) {
         b->seq_starts = {0, 1, 3};
       },
       "seq_starts"},
      {"gap",
       [](ForwardBatch* b) {
         b->positions = {0, 2, 3};
       },
       "position 2, expected 1"},
      {"negative position",
       [](ForwardBatch* b) {
         b->positions = {-1, 0, 1};
       },
       "position -1"},
      {"context", [](ForwardBatch* b) { b->context_lens = {2}; }, "context_len 2"},
      {"too long", [](ForwardBatch* b) { b->context_lens = {40}; }, "beyond its 2 blocks"},
      {"block",
       [&](ForwardBatch* b) {
         b->block_tables = {kBlocks, -1};
       },
       "outside the pool"},
      {"negative block",
       [](ForwardBatch* b) {
         b->block_tables = {-2, -1};
       },
       "is id -2"},
      {"missing block",
       [](ForwardBatch* b) {
         b->positions = {16, 17, 18};
         b->context_lens = {19};
       },
       "sequence 0 block 1 is id -1"},
      {"table size", [](ForwardBatch* b) { b->block_tables = {0}; }, "block_tables"},
      {"no blocks per seq",
       [](ForwardBatch* b) {
         b->max_blocks_per_seq = 0;
         b->block_tables.clear();
       },
       "block_tables"},
      {"output", [](ForwardBatch* b) { b->output_rows = {3}; }, "output_rows[0]"},
      {"negative output",
       [](ForwardBatch* b) {
         b->output_rows = {2, -1};
       },
       "output_rows[1]"},
      {"empty", [](ForwardBatch* b) { *b = ForwardBatch(); }, "seq_starts"},
  };
  for (const Case& c : cases) {
    ForwardBatch b = good;
    c.mutate(&b);
    const absl::Status s = backend->Forward(b, &out);
    ASSERT_FALSE(s.ok()) << c.name;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.expected)) << c.name;
    // ForwardSample validates the batch as Forward does.
    std::vector<SampledToken> drawn;
    const std::vector<RowSampling> sampling(b.output_rows.size());
    EXPECT_EQ(backend->ForwardSample(b, sampling, &drawn).code(),
              absl::StatusCode::kInvalidArgument)
        << c.name;
  }
  // The error names the entry wherever in the table it is (a decode step at a
  // context of two blocks).
  ForwardBatch two_blocks;
  two_blocks.tokens = {1};
  two_blocks.positions = {kKvBlockSize};
  two_blocks.seq_starts = {0, 1};
  two_blocks.context_lens = {kKvBlockSize + 1};
  two_blocks.max_blocks_per_seq = 2;
  two_blocks.output_rows = {0};
  for (const int32_t bad_id : {-1, kBlocks}) {
    two_blocks.block_tables = {0, bad_id};
    const absl::Status status = backend->Forward(two_blocks, &out);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("sequence 0 block 1 is id ", bad_id)));
  }
  two_blocks.block_tables = {0, 1};
  EXPECT_TRUE(backend->Forward(two_blocks, &out).ok());
  // A failed batch leaves the backend usable.
  EXPECT_TRUE(backend->Forward(good, &out).ok());
  EXPECT_EQ(backend->Forward(good, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(BackendConformanceTest, ForwardSampleRejectsBadSampling) {
  MAKE_BACKEND_OR_SKIP(backend, GoldenDir("llama"), 4);
  const ForwardBatch batch = [] {
    ForwardBatch b = ThreeTokenBatch();
    b.output_rows = {1, 2};
    return b;
  }();
  std::vector<SampledToken> out;
  std::vector<RowSampling> sampling = SamplingFor(2, 0.8f, 1);
  ASSERT_TRUE(backend->ForwardSample(batch, sampling, &out).ok());
  EXPECT_EQ(out.size(), 2u);
  EXPECT_EQ(backend->ForwardSample(batch, absl::MakeConstSpan(sampling).first(1), &out).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ForwardSample(batch, {}, &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ForwardSample(batch, sampling, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  sampling[1].params.top_p = 0.0f;
  EXPECT_EQ(backend->ForwardSample(batch, sampling, &out).code(),
            absl::StatusCode::kInvalidArgument);
  sampling[1].params.top_p = 1.0f;
  sampling[0].params.temperature = -1.0f;
  const absl::Status status = backend->ForwardSample(batch, sampling, &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("temperature"));
}

// A value-head model (an ORM) has num_labels-wide output rows and no token
// distribution: ForwardSample refuses it.
TEST_P(BackendConformanceTest, ValueHeadModelsHaveLabelRowsAndRefuseSampling) {
  TempDir dir;
  TinyModelSpec spec = PortableTinySpec();
  spec.architecture = "LlamaForSequenceClassification";
  spec.num_labels = 2;
  WriteTinyModel(dir.path(), spec);
  MAKE_BACKEND_OR_SKIP(backend, dir.path(), 4);
  EXPECT_EQ(backend->output_dim(), 2);
  ForwardBatch batch;
  batch.tokens = {1, 2};
  batch.positions = {0, 1};
  batch.seq_starts = {0, 2};
  batch.context_lens = {2};
  batch.max_blocks_per_seq = 1;
  batch.block_tables = {0};
  batch.output_rows = {1, 0};
  std::vector<float> out;
  ASSERT_TRUE(backend->Forward(batch, &out).ok());
  EXPECT_EQ(out.size(), 4u);
  std::vector<RowSampling> sampling(2);
  std::vector<SampledToken> drawn;
  const absl::Status status = backend->ForwardSample(batch, sampling, &drawn);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("value-head"));
}

// CopyBlocks with a block outside the pool is INVALID_ARGUMENT naming the
// pair; copying a block onto itself or nothing at all is a no-op.
TEST_P(BackendConformanceTest, CopyBlocksRejectsBlocksOutsideThePool) {
  constexpr int kBlocks = 6;
  MAKE_BACKEND_OR_SKIP(backend, GoldenDir("llama"), kBlocks);
  ASSERT_EQ(backend->num_kv_blocks(), kBlocks);
  for (const std::pair<int32_t, int32_t> bad :
       {std::pair<int32_t, int32_t>{0, kBlocks}, {kBlocks, 0}, {-1, 2}, {2, -1}}) {
    const absl::Status status = backend->CopyBlocks({&bad, 1});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(status.message(), HasSubstr(absl::StrCat("(", bad.first, ", ", bad.second, ")")));
  }
  const std::vector<std::pair<int32_t, int32_t>> good_then_bad = {{0, 1}, {1, kBlocks}};
  EXPECT_EQ(backend->CopyBlocks(good_then_bad).code(), absl::StatusCode::kInvalidArgument);
  const std::pair<int32_t, int32_t> self = {3, 3};
  EXPECT_TRUE(backend->CopyBlocks({&self, 1}).ok());
  EXPECT_TRUE(backend->CopyBlocks({}).ok());
}

// ------------------------------------------------------------------ instantiation

std::string KindName(const ::testing::TestParamInfo<BackendKind>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Backends, BackendConformanceTest, ::testing::Values(kCpu, kCuda),
                         KindName);

}  // namespace
}  // namespace arbor::runtime
