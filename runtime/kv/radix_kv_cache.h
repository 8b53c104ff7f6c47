// RadixKvCache: the bookkeeping of the paged KV pool. It hands out block ids in
// [0, num_blocks) (the backend owns the memory behind them) and keeps a radix
// tree over FULL 16-token blocks keyed by their token content, so that a later
// sequence with the same prefix reuses the blocks instead of recomputing them.
//
// Every block is in exactly one of three states:
//   free       on the free list;
//   referenced ref_count > 0: held by one or more sequences (in the tree or private);
//   evictable  in the tree with ref_count 0: cached, reclaimed in LRU order
//              (leaves first) when an allocation finds the free list empty.
// A sequence holds one reference on each block of its block table. Because a
// sequence always holds its whole prefix path, a referenced tree node's
// ancestors are referenced too, so eviction of unreferenced leaves is safe.
//
// Partial (last, not yet full) blocks are never in the tree. When branches fork
// they share it by reference; the first writer calls CopyOnWrite, which moves it
// to a fresh block and records the (src, dst) copy for ModelBackend::CopyBlocks.
//
// Running out of blocks is RESOURCE_EXHAUSTED, never a crash; misuse (releasing
// a block not held) is a broken invariant and CHECK-fails.
//
// Thread-safety: none; owned and driven by the engine's scheduler thread.
#ifndef ARBOR_RUNTIME_KV_RADIX_KV_CACHE_H_
#define ARBOR_RUNTIME_KV_RADIX_KV_CACHE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/backend/backend.h"
#include "runtime/kv/kv_block.h"

namespace arbor::runtime {

class RadixKvCache {
 public:
  struct Stats {
    int num_blocks = 0;
    int free_blocks = 0;            // on the free list
    int used_blocks = 0;            // ref_count > 0 (tree or private)
    int cached_blocks = 0;          // in the radix tree (referenced or not)
    int evictable_blocks = 0;       // in the tree and unreferenced
    int64_t prefix_hit_tokens = 0;  // cumulative tokens served by MatchPrefix
    int64_t evicted_blocks = 0;     // cumulative
  };

  struct PrefixMatch {
    std::vector<int32_t> blocks;  // one reference taken on each
    int num_tokens = 0;           // blocks.size() * kKvBlockSize
  };

  static absl::StatusOr<std::unique_ptr<RadixKvCache>> Create(int num_blocks);
  ~RadixKvCache();
  RadixKvCache(const RadixKvCache&) = delete;
  RadixKvCache& operator=(const RadixKvCache&) = delete;

  // Longest prefix of `tokens` made of cached full blocks. Takes a reference on
  // every returned block and marks them recently used.
  PrefixMatch MatchPrefix(absl::Span<const int32_t> tokens);
  // Tokens of the longest prefix of `tokens` made of cached full blocks,
  // without taking references or touching recency (for cache summaries).
  int CachedPrefixTokens(absl::Span<const int32_t> tokens) const;

  // `n` private blocks with ref_count 1, evicting LRU unreferenced cached
  // blocks when the free list runs dry. RESOURCE_EXHAUSTED (and nothing
  // allocated) when fewer than n blocks are free or evictable.
  absl::StatusOr<std::vector<int32_t>> Allocate(int n);

  // Publishes the first min(blocks->size(), tokens.size() / kKvBlockSize) full
  // blocks of a sequence whose KV is computed: blocks[i] holds tokens
  // [16 i, 16 i + 16). Where the tree already holds a block for the same
  // content, the caller's duplicate is released and (*blocks)[i] is replaced by
  // the cached block (the caller's reference moves to it). Returns the number of
  // blocks newly added to the tree.
  int Insert(absl::Span<const int32_t> tokens, std::vector<int32_t>* blocks);

  // Adds one reference to each block (a fork sharing its parent's blocks).
  void Retain(absl::Span<const int32_t> blocks);
  // Drops one reference from each block. An unreferenced private block returns
  // to the free list; an unreferenced cached block stays cached (evictable).
  void Release(absl::Span<const int32_t> blocks);

  // Makes `block` safe to write for a holder of one reference: returns it
  // unchanged when that holder is its only one and it is not cached; otherwise
  // allocates a fresh block, appends {block, fresh} to `copies` (for
  // ModelBackend::CopyBlocks, which must run before anything writes), and moves
  // the caller's reference from `block` to the fresh one.
  absl::StatusOr<int32_t> CopyOnWrite(int32_t block,
                                      std::vector<std::pair<int32_t, int32_t>>* copies);

  // Drops every unreferenced cached block; returns how many were freed.
  int EvictAllUnreferenced();

  int num_blocks() const { return static_cast<int>(ref_counts_.size()); }
  // Blocks an Allocate could obtain now (free + evictable).
  int available_blocks() const;
  int ref_count(int32_t block) const;
  bool is_cached(int32_t block) const;
  Stats stats() const;

 private:
  using BlockKey = std::array<int32_t, kKvBlockSize>;
  struct Node {
    Node* parent = nullptr;
    int32_t block = -1;
    BlockKey key{};
    uint64_t last_access = 0;
    absl::flat_hash_map<BlockKey, std::unique_ptr<Node>> children;
  };

  explicit RadixKvCache(int num_blocks);
  static BlockKey KeyAt(absl::Span<const int32_t> tokens, int block_index);
  bool IsEvictableLeaf(const Node* node) const;
  void AddEvictable(Node* node);
  void RemoveEvictable(Node* node);
  // Evicts the least recently used unreferenced leaf; false when none.
  bool EvictOne();
  void CheckBlock(int32_t block) const;

  Node root_;
  std::vector<int> ref_counts_;                       // per block
  std::vector<Node*> tree_nodes_;                     // per block; nullptr when not cached
  std::vector<int32_t> free_list_;                    // stack; back() is handed out next
  std::set<std::pair<uint64_t, int32_t>> evictable_;  // (last_access, block) of unreferenced leaves
  uint64_t clock_ = 0;
  int used_blocks_ = 0;
  int cached_blocks_ = 0;
  int64_t prefix_hit_tokens_ = 0;
  int64_t evicted_blocks_ = 0;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_KV_RADIX_KV_CACHE_H_
