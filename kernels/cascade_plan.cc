#include "kernels/cascade_plan.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "kernels/kernels.h"

namespace arbor::kernels {

CascadePlan CascadePlan::Plan(const std::vector<int32_t>& block_tables,
                              const std::vector<int32_t>& context_lens, int max_blocks,
                              int min_shared_tokens) {
  const int num_seqs = static_cast<int>(context_lens.size());
  ARBOR_CHECK(max_blocks >= 1);
  ARBOR_CHECK(block_tables.size() == static_cast<size_t>(num_seqs) * max_blocks);
  const int min_blocks =
      std::max(1, (std::max(min_shared_tokens, 1) + kKvBlockSize - 1) / kKvBlockSize);
  // Full blocks of a sequence's context: only those can be shared.
  auto full_blocks = [&](int s) { return std::min(context_lens[s] / kKvBlockSize, max_blocks); };
  auto row = [&](int s) { return block_tables.data() + static_cast<size_t>(s) * max_blocks; };

  CascadePlan plan;
  plan.group_starts.push_back(0);
  plan.suffix_begin.assign(num_seqs, 0);
  int i = 0;
  while (i < num_seqs) {
    int common = full_blocks(i);
    int j = i + 1;
    while (j < num_seqs) {
      const int limit = std::min(common, full_blocks(j));
      // Branches of one prompt usually agree on all of it: one memcmp (SIMD)
      // settles that, the element loop only finds where they part.
      int shared = limit;
      if (std::memcmp(row(j), row(i), sizeof(int32_t) * limit) != 0) {
        shared = 0;
        while (row(j)[shared] == row(i)[shared]) ++shared;
      }
      if (shared < min_blocks) break;
      common = shared;
      ++j;
    }
    const int prefix = j - i >= 2 ? common * kKvBlockSize : 0;
    plan.group_starts.push_back(j);
    plan.group_tables.insert(plan.group_tables.end(), row(i), row(i) + max_blocks);
    plan.group_kv_len.push_back(prefix);
    for (int s = i; s < j; ++s) {
      plan.suffix_begin[s] = prefix;
      plan.max_suffix = std::max(plan.max_suffix, context_lens[s] - prefix);
    }
    plan.max_group_size = std::max(plan.max_group_size, j - i);
    plan.max_prefix = std::max(plan.max_prefix, prefix);
    plan.worthwhile = plan.worthwhile || j - i >= 2;
    i = j;
  }
  return plan;
}

}  // namespace arbor::kernels
