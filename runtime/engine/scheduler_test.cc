// Scheduler tests over a bare KV cache (no model): chunk shrinking, FIFO
// admission, and preemption of the newest sequence when blocks run out.
#include "runtime/engine/scheduler.h"

#include <memory>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/engine/request.h"
#include "runtime/engine/request_tree.h"
#include "runtime/kv/radix_kv_cache.h"

namespace arbor::runtime {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { Init(/*num_blocks=*/4, /*max_batch_tokens=*/256); }

  void Init(int num_blocks, int max_batch_tokens) {
    auto cache = RadixKvCache::Create(num_blocks);
    ASSERT_TRUE(cache.ok());
    cache_ = *std::move(cache);
    tree_ = std::make_unique<RequestTree>(&state_, cache_.get(), nullptr, /*max_context=*/1024,
                                          /*output_dim=*/8);
    scheduler_ =
        std::make_unique<Scheduler>(max_batch_tokens, /*max_running_seqs=*/16, &state_,
                                    cache_.get(), tree_.get(), [this](Seq*) { ++wholly_cached_; });
  }

  // A waiting sequence of `len` distinct tokens (first token `first`) in a
  // new request.
  Seq* AddSeq(SeqKind kind, int len, int first) {
    auto r = std::make_unique<RequestState>();
    r->id = next_id_++;
    Seq* seq = state_.NewSeq(r.get(), kind);
    seq->tokens.resize(len);
    std::iota(seq->tokens.begin(), seq->tokens.end(), first);
    state_.requests[r->id] = std::move(r);
    return seq;
  }

  EngineState state_;
  std::unique_ptr<RadixKvCache> cache_;
  std::unique_ptr<RequestTree> tree_;
  std::unique_ptr<Scheduler> scheduler_;
  int wholly_cached_ = 0;
  RequestId next_id_ = 1;
};

TEST_F(SchedulerTest, AdmitsOldestFirstAndShrinksAPrefillChunkToTheBlocksLeft) {
  Seq* older = AddSeq(SeqKind::kScore, 40, 0);     // 3 blocks
  Seq* newer = AddSeq(SeqKind::kScore, 40, 1000);  // 1 block left: 16 tokens
  scheduler_->PlanStep();
  ASSERT_EQ(scheduler_->chunks().size(), 2u);
  EXPECT_EQ(scheduler_->chunks()[0].seq, older);
  EXPECT_EQ(scheduler_->chunks()[0].n, 40);
  EXPECT_EQ(scheduler_->chunks()[1].seq, newer);
  EXPECT_EQ(scheduler_->chunks()[1].start, 0);
  EXPECT_EQ(scheduler_->chunks()[1].n, 16);
  EXPECT_TRUE(scheduler_->admitted_any());
  EXPECT_EQ(state_.counters.running_seqs, 2);
  EXPECT_EQ(state_.counters.preemptions, 0);
  EXPECT_EQ(cache_->available_blocks(), 0);
}

TEST_F(SchedulerTest, KeepsTheBatchTokenBudget) {
  Init(/*num_blocks=*/16, /*max_batch_tokens=*/24);
  Seq* a = AddSeq(SeqKind::kScore, 20, 0);
  Seq* b = AddSeq(SeqKind::kScore, 20, 1000);
  scheduler_->PlanStep();
  ASSERT_EQ(scheduler_->chunks().size(), 2u);
  EXPECT_EQ(scheduler_->chunks()[0].seq, a);
  EXPECT_EQ(scheduler_->chunks()[0].n, 20);
  EXPECT_EQ(scheduler_->chunks()[1].seq, b);
  EXPECT_EQ(scheduler_->chunks()[1].n, 4);
}

TEST_F(SchedulerTest, DecodeOutOfBlocksPreemptsTheNewestSequence) {
  Init(/*num_blocks=*/3, /*max_batch_tokens=*/256);
  Seq* older = AddSeq(SeqKind::kSample, 32, 0);     // 2 blocks
  Seq* newer = AddSeq(SeqKind::kSample, 16, 1000);  // 1 block
  scheduler_->PlanStep();
  ASSERT_EQ(scheduler_->chunks().size(), 2u);
  // The step ran: both are computed; the older one has one more token to decode.
  older->num_computed = 32;
  newer->num_computed = 16;
  older->tokens.push_back(7);

  scheduler_->PlanStep();
  ASSERT_EQ(scheduler_->chunks().size(), 1u);
  EXPECT_EQ(scheduler_->chunks()[0].seq, older);
  EXPECT_EQ(scheduler_->chunks()[0].start, 32);
  EXPECT_EQ(scheduler_->chunks()[0].n, 1);
  EXPECT_FALSE(newer->running);
  EXPECT_TRUE(newer->blocks.empty());
  EXPECT_EQ(newer->prefill_until, 15);  // its tokens are recomputed as prefill
  EXPECT_EQ(state_.counters.preemptions, 1);
  EXPECT_EQ(state_.counters.running_seqs, 1);
  // The preempted one is not readmitted while there is no block for it.
  EXPECT_FALSE(scheduler_->admitted_any());
}

TEST_F(SchedulerTest, DefersASequenceWhosePrefixIsBeingComputed) {
  Init(/*num_blocks=*/16, /*max_batch_tokens=*/256);
  Seq* first = AddSeq(SeqKind::kScore, 40, 0);
  Seq* second = AddSeq(SeqKind::kScore, 40, 0);  // same first two blocks
  scheduler_->PlanStep();
  ASSERT_EQ(scheduler_->chunks().size(), 1u);
  EXPECT_EQ(scheduler_->chunks()[0].seq, first);
  EXPECT_FALSE(second->running);
}

}  // namespace
}  // namespace arbor::runtime
