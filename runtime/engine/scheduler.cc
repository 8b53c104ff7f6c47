#include "runtime/engine/scheduler.h"

#include <algorithm>
#include <utility>

#include "common/check.h"

namespace arbor::runtime {

Scheduler::Scheduler(int max_batch_tokens, int max_running_seqs, EngineState* state,
                     RadixKvCache* cache, RequestTree* tree, CachedFn on_wholly_cached)
    : max_batch_tokens_(max_batch_tokens),
      max_running_seqs_(max_running_seqs),
      state_(state),
      cache_(cache),
      tree_(tree),
      on_wholly_cached_(std::move(on_wholly_cached)) {}

void Scheduler::PlanStep() {
  chunks_.clear();
  copies_.clear();
  budget_ = max_batch_tokens_;
  admitted_any_ = false;
  // 1. Decode steps of running sequences, oldest first; 2. their prefill chunks.
  std::vector<Seq*> running;
  for (auto& [order, s] : state_->seqs) {
    if (s->running) running.push_back(s.get());
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (Seq* s : running) {
      if (!s->running || budget_ <= 0) continue;
      const int remaining = static_cast<int>(s->tokens.size()) - s->num_computed;
      if (remaining <= 0) continue;
      if ((pass == 0) != (remaining == 1)) continue;
      Reserve(s, std::min(remaining, budget_), /*allow_preempt=*/true);
    }
  }
  // 3. Admit waiting sequences, oldest first (FIFO: stop at the first that
  //    does not fit), preempting only newer ones.
  int deferred = 0;
  auto& seqs = state_->seqs;
  for (auto it = seqs.begin(); it != seqs.end() && budget_ > 0;) {
    Seq* s = it->second.get();
    ++it;  // Admit may finish (and erase) s
    if (s->running) continue;
    if (state_->counters.running_seqs >= max_running_seqs_) break;
    if (ShouldDefer(*s)) {
      if (++deferred > 64) break;
      continue;
    }
    if (!Admit(s)) break;
    admitted_any_ = true;
  }
}

int Scheduler::BlocksNeeded(const Seq& seq, int n) const {
  int needed = CeilBlocks(seq.num_computed + n) - static_cast<int>(seq.blocks.size());
  if (seq.num_computed % kKvBlockSize != 0) {
    const int32_t last = seq.blocks[seq.num_computed / kKvBlockSize];
    if (cache_->ref_count(last) > 1 || cache_->is_cached(last)) ++needed;
  }
  return needed;
}

int Scheduler::Reserve(Seq* seq, int n, bool allow_preempt) {
  ARBOR_CHECK(seq->running && n >= 1);
  while (BlocksNeeded(*seq, n) > cache_->available_blocks()) {
    // A prefill chunk first shrinks to what fits (no one is preempted for
    // the sake of a larger chunk); a decode step or a chunk that cannot take
    // a single token preempts the newest sequence newer than this one.
    const int cow = BlocksNeeded(*seq, 0);  // 1 when the partial block must be copied
    const int fit =
        std::min(n - 1, (static_cast<int>(seq->blocks.size()) + cache_->available_blocks() - cow) *
                                kKvBlockSize -
                            seq->num_computed);
    if (fit >= 1) {
      n = fit;
      break;
    }
    Seq* victim = nullptr;
    if (allow_preempt) {
      for (auto it = state_->seqs.rbegin(); it != state_->seqs.rend(); ++it) {
        Seq* s = it->second.get();
        if (s->order <= seq->order) break;
        if (s->running) {
          victim = s;
          break;
        }
      }
    }
    if (victim == nullptr) return 0;
    Preempt(victim);
  }
  ARBOR_CHECK(BlocksNeeded(*seq, n) <= cache_->available_blocks());
  if (seq->num_computed % kKvBlockSize != 0) {
    int32_t& last = seq->blocks[seq->num_computed / kKvBlockSize];
    auto writable = cache_->CopyOnWrite(last, &copies_);
    ARBOR_CHECK(writable.ok());
    last = *writable;
  }
  const int new_blocks = CeilBlocks(seq->num_computed + n) - static_cast<int>(seq->blocks.size());
  if (new_blocks > 0) {
    auto blocks = cache_->Allocate(new_blocks);
    ARBOR_CHECK(blocks.ok());
    seq->blocks.insert(seq->blocks.end(), blocks->begin(), blocks->end());
  }
  chunks_.push_back({seq, seq->num_computed, n});
  budget_ -= n;
  return n;
}

void Scheduler::Preempt(Seq* victim) {
  for (ScheduledChunk& c : chunks_) {
    if (c.seq == victim) {
      budget_ += c.n;
      c.seq = nullptr;
    }
  }
  tree_->ReleaseSeq(victim);
  // Its tokens so far are recomputed, and charged as prefill, not decode.
  if (victim->kind == SeqKind::kSample) {
    victim->prefill_until = static_cast<int>(victim->tokens.size()) - 1;
  }
  ++state_->counters.preemptions;
}

bool Scheduler::ShouldDefer(const Seq& waiting) const {
  if (!tree_->prefix_cache()) return false;  // nothing is shared across sequences' prefixes
  // Another sequence is computing a prefix this one shares: wait for it to be
  // published instead of computing it twice (e.g. the question shared by the
  // candidates of a Score request).
  for (const ScheduledChunk& c : chunks_) {
    if (c.seq == nullptr) continue;
    const Seq& r = *c.seq;
    const size_t limit = std::min(waiting.tokens.size(), r.tokens.size());
    size_t common = 0;
    while (common < limit && waiting.tokens[common] == r.tokens[common]) ++common;
    const int shared_blocks = static_cast<int>(common) / kKvBlockSize;
    if (shared_blocks > 0 && r.num_computed < shared_blocks * kKvBlockSize) {
      return true;
    }
  }
  return false;
}

bool Scheduler::Admit(Seq* seq) {
  const int len = static_cast<int>(seq->tokens.size());
  // A wanted last row must be computed, so the match stops short of it.
  const int cap = seq->wants_last_row ? len - 1 : len;
  auto match = cache_->MatchPrefix(absl::MakeConstSpan(seq->tokens).first(cap));
  seq->blocks = std::move(match.blocks);
  seq->num_computed = match.num_tokens;
  seq->running = true;
  ++state_->counters.running_seqs;
  RequestState* r = seq->request;
  if (!r->started) r->first_step = absl::Now();
  r->started = true;
  r->usage.prefix_cache_hit_tokens += match.num_tokens;
  state_->counters.prefix_hit_tokens += match.num_tokens;
  if (seq->num_computed == len) {  // wholly cached, no last row wanted
    if (seq->kind == SeqKind::kScore) tree_->SpawnProbes(seq);
    on_wholly_cached_(seq);
    return true;
  }
  // Only sequences newer than this one can be preempted for it.
  if (Reserve(seq, std::min(len - seq->num_computed, budget_), /*allow_preempt=*/true) == 0) {
    r->usage.prefix_cache_hit_tokens -= match.num_tokens;
    state_->counters.prefix_hit_tokens -= match.num_tokens;
    tree_->ReleaseSeq(seq);
    return false;
  }
  if (seq->kind == SeqKind::kScore) tree_->SpawnProbes(seq);
  return true;
}

}  // namespace arbor::runtime
