#include "kernels/cascade_plan.h"

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "kernels/kernels.h"

namespace arbor::kernels {
namespace {

int BlocksFor(int tokens) {
  return std::max(1, (std::max(tokens, 1) + kKvBlockSize - 1) / kKvBlockSize);
}

// A run of consecutive sequences [begin, end) that share the key blocks
// [from_block, to_block) of their tables.
struct SharedRun {
  int begin, end, from_block, to_block;
};

}  // namespace

CascadePlan CascadePlan::Plan(const std::vector<int32_t>& block_tables,
                              const std::vector<int32_t>& context_lens, int max_blocks,
                              int min_shared_tokens, int max_levels, int min_level_tokens) {
  const int num_seqs = static_cast<int>(context_lens.size());
  ARBOR_CHECK(max_blocks >= 1);
  ARBOR_CHECK(max_levels >= 1);
  ARBOR_CHECK(block_tables.size() == static_cast<size_t>(num_seqs) * max_blocks);
  // Full blocks of a sequence's context: only those can be shared.
  auto full_blocks = [&](int s) { return std::min(context_lens[s] / kKvBlockSize, max_blocks); };
  auto row = [&](int s) { return block_tables.data() + static_cast<size_t>(s) * max_blocks; };
  // Leading blocks rows i and j agree on, given that they agree on
  // [0, from) and looking no further than limit. Branches of one prefix
  // usually agree on all of it: one memcmp (SIMD) settles that, the element
  // loop only finds where they part.
  auto agree = [&](int i, int j, int from, int limit) {
    if (limit <= from) return limit;
    if (std::memcmp(row(j) + from, row(i) + from, sizeof(int32_t) * (limit - from)) == 0) {
      return limit;
    }
    int k = from;
    while (row(j)[k] == row(i)[k]) ++k;
    return k;
  };
  // The longest runs of consecutive sequences in [begin, end) sharing at
  // least min_blocks past from_block; with keep_singletons, every sequence
  // not in a run of >= 2 is a run of its own with nothing shared.
  auto runs_in = [&](int begin, int end, int from_block, int min_blocks, bool keep_singletons,
                     std::vector<SharedRun>* out) {
    int i = begin;
    while (i < end) {
      int common = full_blocks(i);
      int j = i + 1;
      while (j < end) {
        const int shared = agree(i, j, from_block, std::min(common, full_blocks(j)));
        if (shared - from_block < min_blocks) break;
        common = shared;
        ++j;
      }
      if (j - i >= 2) {
        out->push_back({i, j, from_block, common});
      } else if (keep_singletons) {
        out->push_back({i, j, from_block, from_block});
      }
      i = j;
    }
  };
  // A group's table row: row(s) from `from_block` on, padded with -1.
  auto append_group = [&](CascadeLevel& level, const SharedRun& run) {
    level.group_starts.push_back(run.end);
    const int32_t* r = row(run.begin);
    level.group_tables.insert(level.group_tables.end(), r + run.from_block, r + max_blocks);
    level.group_tables.insert(level.group_tables.end(), run.from_block, -1);
    const int kv_len = (run.to_block - run.from_block) * kKvBlockSize;
    level.group_kv_len.push_back(kv_len);
    level.max_group_size = std::max(level.max_group_size, run.end - run.begin);
    level.max_kv_len = std::max(level.max_kv_len, kv_len);
  };

  CascadePlan plan;
  std::vector<int> covered(num_seqs, 0);  // blocks of each sequence its levels read
  std::vector<SharedRun> runs;
  runs_in(0, num_seqs, 0, BlocksFor(min_shared_tokens), /*keep_singletons=*/true, &runs);
  CascadeLevel& first = plan.levels.emplace_back();
  first.group_starts.push_back(0);
  for (const SharedRun& run : runs) {
    append_group(first, run);
    for (int s = run.begin; s < run.end; ++s) covered[s] = run.to_block;
    plan.worthwhile = plan.worthwhile || run.end - run.begin >= 2;
  }

  std::vector<SharedRun> parents;
  for (const SharedRun& run : runs) {
    if (run.end - run.begin >= 2) parents.push_back(run);
  }
  const int min_level_blocks = BlocksFor(min_level_tokens);
  for (int depth = 1; plan.worthwhile && depth < max_levels && !parents.empty(); ++depth) {
    std::vector<SharedRun> deeper;
    for (const SharedRun& parent : parents) {
      runs_in(parent.begin, parent.end, parent.to_block, min_level_blocks,
              /*keep_singletons=*/false, &deeper);
    }
    if (deeper.empty()) break;
    int widest = 0;
    for (const SharedRun& run : deeper) widest = std::max(widest, run.end - run.begin);
    // Sequences in no run of this level: empty groups no wider than the
    // widest run, so that they add no rows to the launch's grid.
    CascadeLevel& level = plan.levels.emplace_back();
    level.group_starts.push_back(0);
    auto append_empty = [&](int begin, int end) {
      for (int s = begin; s < end; s += widest) {
        append_group(level, {s, std::min(end, s + widest), 0, 0});
      }
    };
    int next = 0;
    for (const SharedRun& run : deeper) {
      append_empty(next, run.begin);
      append_group(level, run);
      for (int s = run.begin; s < run.end; ++s) covered[s] = run.to_block;
      next = run.end;
    }
    append_empty(next, num_seqs);
    parents = std::move(deeper);
  }

  plan.suffix_begin.resize(num_seqs);
  for (int s = 0; s < num_seqs; ++s) {
    plan.suffix_begin[s] = covered[s] * kKvBlockSize;
    plan.max_suffix = std::max(plan.max_suffix, context_lens[s] - plan.suffix_begin[s]);
  }
  return plan;
}

}  // namespace arbor::kernels
