// RequestTree: how a request becomes sequences, and how sequences share KV.
// A Generate request starts as one prompt sequence (or one branch sequence when
// all its branches have the same suffix); a computed prompt forks a branch per
// distinct suffix, and a computed branch forks one sample sequence per output.
// Forks share their parent's blocks by reference (the partial last block is
// copied on first write, see RadixKvCache::CopyOnWrite). A Score request is one
// sequence per scored sequence, plus probes for rows wanted inside a cached
// prefix. Full computed blocks are published to the radix cache for reuse.
//
// Thread-safety: none; owned and driven by the engine's scheduler thread.
#ifndef ARBOR_RUNTIME_ENGINE_REQUEST_TREE_H_
#define ARBOR_RUNTIME_ENGINE_REQUEST_TREE_H_

#include <vector>

#include "runtime/engine/request.h"
#include "runtime/kv/radix_kv_cache.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {

class RequestTree {
 public:
  // `state`, `cache` and `tokenizer` (may be null) must outlive the tree.
  // Without `prefix_cache` no block is published: each request's blocks stay
  // private to it (EngineOptions::prefix_cache).
  RequestTree(EngineState* state, RadixKvCache* cache, const Tokenizer* tokenizer, int max_context,
              int output_dim, bool prefix_cache = true);

  // Creates the first (waiting) sequences of a new request; outputs that
  // cannot generate anything (prompt + suffix fills the context) are final.
  void StartGenerate(RequestState* r);
  void StartScore(RequestState* r);

  // Forks the children of a computed prompt or branch sequence: a prompt
  // forks a branch sequence per group with a suffix, and a sample sequence per
  // output of a group without one; a branch forks the samples of its group.
  // The new samples (each still to draw its first token from the parent's last
  // row) are appended to *samples, in the order PlanDraws lists their draws.
  void ForkChildren(Seq* parent, std::vector<Seq*>* samples);
  // The draws the completion of `seq` makes from its last row, in order: the
  // RNG key of each sample it forks (ForkChildren) or extends (a sample).
  void PlanDraws(const Seq& seq, std::vector<RowSampling>* out) const;
  // Rows of an admitted score sequence wanted inside its matched prefix: each
  // comes from a probe that reruns at most one block of tokens over the cached
  // blocks before it, rather than giving up the cache from the first wanted
  // position on (the verifier scores every step end of a solution that grows
  // by one step).
  void SpawnProbes(Seq* seq);

  // Publishes seq's computed full blocks to the radix cache (if prefix_cache).
  void PublishBlocks(Seq* seq);
  bool prefix_cache() const { return prefix_cache_; }
  // Releases a running sequence's blocks; it becomes waiting (no-op if it is).
  void ReleaseSeq(Seq* seq);

 private:
  // A running branch sequence for `group` forked from a computed prompt: it
  // takes the suffix from the cache when cached, else shares the prompt's blocks.
  void ForkBranch(Seq* prompt, int group);
  // Running sample sequences of `group` forked from computed `parent`, one per
  // output, in output order.
  void SpawnSamples(Seq* parent, int group, std::vector<Seq*>* samples);
  // Whether prompt + the group's suffix leaves room to generate.
  bool GroupFits(const Seq& prompt, int group) const;

  EngineState* const state_;
  RadixKvCache* const cache_;
  const Tokenizer* const tokenizer_;
  const int max_context_;
  const int output_dim_;
  const bool prefix_cache_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_REQUEST_TREE_H_
