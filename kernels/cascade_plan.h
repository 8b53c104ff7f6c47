// CascadePlan: which sequences of a decode batch share a prompt, for the
// shared-prefix (cascade) attention of kernels/kernels.h. Plain host C++ (in
// the always-built library), so that it is tested without a GPU.
//
// A group is a maximal run of CONSECUTIVE sequences whose block tables start
// with the same block ids (the radix cache hands branches of one prompt the
// same physical blocks); its shared prefix is those common full blocks, capped
// by every member's context. Every sequence belongs to exactly one group;
// a sequence that shares nothing is a group of one with an empty prefix.
//
// Thread-safety: a value type; Plan is a pure function.
#ifndef ARBOR_KERNELS_CASCADE_PLAN_H_
#define ARBOR_KERNELS_CASCADE_PLAN_H_

#include <cstdint>
#include <vector>

namespace arbor::kernels {

struct CascadePlan {
  // True when some group of >= 2 sequences shares at least the minimum
  // prefix: then the cascade reads less KV than per-sequence attention.
  bool worthwhile = false;
  std::vector<int32_t> group_starts;  // [num_groups + 1], over sequences (= query rows)
  std::vector<int32_t> group_tables;  // [num_groups, max_blocks]: the first member's row
  std::vector<int32_t> group_kv_len;  // [num_groups]: shared prefix tokens (0 for a singleton)
  std::vector<int32_t> suffix_begin;  // [num_seqs]: the group's prefix length
  int max_group_size = 0;
  int max_prefix = 0;  // longest shared prefix
  int max_suffix = 0;  // longest context_len - prefix

  int num_groups() const { return static_cast<int>(group_kv_len.size()); }

  // block_tables [num_seqs, max_blocks], context_lens [num_seqs]; a group
  // counts as sharing when its prefix has >= min_shared_tokens tokens.
  static CascadePlan Plan(const std::vector<int32_t>& block_tables,
                          const std::vector<int32_t>& context_lens, int max_blocks,
                          int min_shared_tokens);
};

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_CASCADE_PLAN_H_
