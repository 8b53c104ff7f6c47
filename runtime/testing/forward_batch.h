// Test helpers that build ModelBackend batches the way the engine does:
// sequences with block tables, a block allocator, chunks of tokens, and one
// Forward over them. Shared by the backend tests and the conformance suite.
// Header-only; not thread-safe.
#ifndef ARBOR_RUNTIME_TESTING_FORWARD_BATCH_H_
#define ARBOR_RUNTIME_TESTING_FORWARD_BATCH_H_

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/check.h"
#include "gtest/gtest.h"
#include "runtime/backend/backend.h"

namespace arbor::runtime::test_util {

// A sequence's KV bookkeeping as the engine keeps it: its block table and
// how many tokens of KV it has.
struct Seq {
  std::vector<int32_t> blocks;
  int context_len = 0;
};

// Hands out block ids in order or (`reversed`) from the top of the pool
// down, so that tables are not the identity. The same calls give the same ids
// on every backend.
class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks, bool reversed = false)
      : num_blocks_(num_blocks), reversed_(reversed) {}
  void Reserve(Seq* seq, int context_len) {
    while (static_cast<int>(seq->blocks.size()) * kKvBlockSize < context_len) {
      seq->blocks.push_back(Allocate());
    }
  }
  int32_t Allocate() {
    ARBOR_CHECK(next_ < num_blocks_);
    const int32_t id = next_++;
    return reversed_ ? num_blocks_ - 1 - id : id;
  }

 private:
  int num_blocks_;
  bool reversed_;
  int32_t next_ = 0;
};

struct Chunk {
  Seq* seq;
  std::vector<int32_t> tokens;
  std::vector<int> outputs;  // indices into tokens; -1 means every token
};

// The batch of the chunks (allocating blocks as needed; each chunk's sequence
// advances), output rows chunk by chunk in order.
inline ForwardBatch BuildBatch(BlockAllocator* alloc, std::vector<Chunk> chunks) {
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
  return batch;
}

// Runs one Forward over the chunks and returns the output rows, chunk by
// chunk in order.
inline std::vector<float> Step(ModelBackend* backend, BlockAllocator* alloc,
                               std::vector<Chunk> chunks) {
  const ForwardBatch batch = BuildBatch(alloc, std::move(chunks));
  std::vector<float> out;
  const absl::Status s = backend->Forward(batch, &out);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(out.size(), batch.output_rows.size() * backend->output_dim());
  return out;
}

}  // namespace arbor::runtime::test_util

#endif  // ARBOR_RUNTIME_TESTING_FORWARD_BATCH_H_
