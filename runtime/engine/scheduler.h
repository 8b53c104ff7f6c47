// Scheduler: picks what one forward step computes, within max_batch_tokens.
// First the decode tokens of running sequences, then their prefill chunks,
// oldest first; then it admits waiting sequences oldest first (FIFO: it stops
// at the first that does not fit), matching their prefix in the radix cache.
// Each chunk reserves its KV blocks (copy-on-write of a shared partial block
// included); when the pool runs short a prefill chunk shrinks, and a decode
// step or an admission preempts the newest running sequence newer than
// itself (its blocks are released; it is recomputed later). A waiting sequence
// whose prefix another one is computing this step is deferred, so that the
// prefix is computed once and then shared through the cache.
//
// Thread-safety: none; owned and driven by the engine's scheduler thread.
#ifndef ARBOR_RUNTIME_ENGINE_SCHEDULER_H_
#define ARBOR_RUNTIME_ENGINE_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "runtime/engine/request.h"
#include "runtime/engine/request_tree.h"
#include "runtime/kv/radix_kv_cache.h"

namespace arbor::runtime {

class Scheduler {
 public:
  // Called for an admitted sequence that the cache holds wholly (it needs no
  // compute); it may finish the sequence or fork new ones.
  using CachedFn = std::function<void(Seq*)>;

  // The pointers must outlive the scheduler.
  Scheduler(int max_batch_tokens, int max_running_seqs, EngineState* state, RadixKvCache* cache,
            RequestTree* tree, CachedFn on_wholly_cached);

  // Plans the next step: chunks() and block_copies() describe it.
  void PlanStep();
  // Chunks of this step, in scheduling order; a chunk's seq is null when its
  // sequence was preempted later in planning.
  const std::vector<ScheduledChunk>& chunks() const { return chunks_; }
  // (src, dst) block copies the step needs before its forward (copy-on-write).
  const std::vector<std::pair<int32_t, int32_t>>& block_copies() const { return copies_; }
  // Whether planning admitted a waiting sequence.
  bool admitted_any() const { return admitted_any_; }

 private:
  // Blocks to allocate before computing n more tokens of `seq`.
  int BlocksNeeded(const Seq& seq, int n) const;
  // Reserves blocks for computing n more tokens of `seq` (shrinking a prefill
  // chunk to what fits); preempts newer sequences when allowed. Returns tokens
  // scheduled (0: none).
  int Reserve(Seq* seq, int n, bool allow_preempt);
  void Preempt(Seq* victim);
  bool Admit(Seq* seq);
  bool ShouldDefer(const Seq& waiting) const;

  const int max_batch_tokens_;
  const int max_running_seqs_;
  EngineState* const state_;
  RadixKvCache* const cache_;
  RequestTree* const tree_;
  const CachedFn on_wholly_cached_;

  std::vector<ScheduledChunk> chunks_;
  std::vector<std::pair<int32_t, int32_t>> copies_;
  int budget_ = 0;  // tokens left in this step
  bool admitted_any_ = false;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_SCHEDULER_H_
