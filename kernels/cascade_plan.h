// CascadePlan: which sequences of a decode batch share which KV, for the
// shared-prefix (cascade) attention of kernels/kernels.h. Plain host C++ (in
// the always-built library), so that it is tested without a GPU.
//
// Level 0: a group is a maximal run of CONSECUTIVE sequences whose block
// tables start with the same block ids (the radix cache hands branches of one
// prompt the same physical blocks); its shared prefix is those common full
// blocks, capped by every member's context. Every sequence belongs to exactly
// one level-0 group; a sequence that shares nothing is a group of one with an
// empty prefix.
//
// Deeper levels follow a search tree down: inside a level-(L-1) group, a run
// of consecutive members that share more full blocks past the group's prefix
// (siblings of one beam: the parent's steps) reads those blocks once more per
// run, and so on, up to `max_levels`. A level's keys for a group are
// [0, kv_len) of its table row, which starts at the block where the level
// above stopped, so every level is one GroupAttentionPartial call over
// disjoint key ranges; members of no run at a level sit in empty groups
// (kv_len 0). Each sequence's own suffix starts where its deepest level
// stopped (suffix_begin). All partials merge exactly (MergeAttentionStates).
//
// Thread-safety: a value type; Plan is a pure function.
#ifndef ARBOR_KERNELS_CASCADE_PLAN_H_
#define ARBOR_KERNELS_CASCADE_PLAN_H_

#include <cstdint>
#include <vector>

namespace arbor::kernels {

// One GroupAttentionPartial call of a cascade: its groups cover every
// sequence of the batch, in order.
struct CascadeLevel {
  std::vector<int32_t> group_starts;  // [num_groups + 1], over sequences (= query rows)
  std::vector<int32_t> group_tables;  // [num_groups, max_blocks]: the level's keys from column 0
  std::vector<int32_t> group_kv_len;  // [num_groups]: keys the group shares (0: none)
  int max_group_size = 0;
  int max_kv_len = 0;

  int num_groups() const { return static_cast<int>(group_kv_len.size()); }
};

struct CascadePlan {
  // True when some group of >= 2 sequences shares at least the minimum
  // prefix: then the cascade reads less KV than per-sequence attention.
  bool worthwhile = false;
  // levels[0] always; deeper ones only when worthwhile and some run of >= 2
  // sequences shares at least min_level_tokens more.
  std::vector<CascadeLevel> levels;
  std::vector<int32_t> suffix_begin;  // [num_seqs]: where the sequence's own keys start
  int max_suffix = 0;                 // longest context_len - suffix_begin

  // block_tables [num_seqs, max_blocks], context_lens [num_seqs]; a level-0
  // group counts as sharing when its prefix has >= min_shared_tokens tokens,
  // a deeper run when it shares >= min_level_tokens past the level above.
  // max_levels >= 1 (1: the prompt level only).
  static CascadePlan Plan(const std::vector<int32_t>& block_tables,
                          const std::vector<int32_t>& context_lens, int max_blocks,
                          int min_shared_tokens, int max_levels = 1, int min_level_tokens = 64);
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CASCADE_PLAN_H_
