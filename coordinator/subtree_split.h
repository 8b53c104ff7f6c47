// Sub-tree placement of one job's branches (docs/ROUTING.md, "Sub-trees").
//
// When a job's branches outgrow one worker, the router (Router::SubtreeWorkers)
// hands it extra idle workers, and the job's RemoteGenerator sends each worker
// whole sub-trees: branches that share a parent prefix go together, so that
// each worker prefills the shared prompt once and shares the rest of a
// sub-tree's prefix in its own radix cache. Two pieces, both pure:
//  - SplitSubtrees cuts a call's branches into parts along the search tree:
//    in lexicographic order of their suffix tokens (so a sub-tree's branches
//    are adjacent), at the boundaries of the shortest shared prefix (in whole
//    KV blocks) near the balanced cut points (so the cut separates sub-trees
//    high in the tree).
//  - SubtreeMap remembers which worker holds which branch's KV (it generated
//    the branch's last step), so that a branch and its descendants stay there:
//    a sub-tree is sticky once placed. A branch is looked up by the longest
//    recorded prefix of its suffix tokens (a resampled copy follows its
//    parent; a child follows its ancestor).
// Hash collisions (64-bit) can only misplace a branch; any worker serves any
// branch (the request carries its full tokens), so answers never depend on it.
// Thread-safety: SplitSubtrees is a pure function; a SubtreeMap is used by one
// job thread (not thread-safe).
#ifndef ARBOR_COORDINATOR_SUBTREE_SPLIT_H_
#define ARBOR_COORDINATOR_SUBTREE_SPLIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace arbor::coordinator {

// `suffixes[i]` is branch i's tokens after the prompt, `weights[i]` its
// outputs (samples, >= 1). Returns min(parts, number of branches) non-empty
// parts of branch indices (each part ascending); every branch is in exactly
// one part. Each part is a run of the branches in lexicographic suffix order
// of roughly total/parts weight, cut where adjacent branches share the fewest
// whole KV blocks within half a share of the balanced cut (ties: the cut
// nearest the balance). A block is `block_tokens` tokens of the sequence,
// prompt (`prompt_tokens` long) included: the radix cache shares nothing
// shorter, so neighbours that share a few tokens but no block beyond the
// prompt's cost nothing to part (best-of-N's samples), and the cut goes to
// the balance. block_tokens <= 1 counts shared tokens. parts <= 1 returns one
// part.
std::vector<std::vector<int>> SplitSubtrees(const std::vector<absl::Span<const int32_t>>& suffixes,
                                            const std::vector<int>& weights, int parts,
                                            int64_t prompt_tokens = 0, int block_tokens = 1);

class SubtreeMap {
 public:
  // Entries kept at most (the oldest calls' entries go first).
  explicit SubtreeMap(size_t max_entries = 8192) : max_entries_(max_entries) {}

  // The worker of the longest recorded prefix of `suffix`, or "" when none.
  std::string Find(absl::Span<const int32_t> suffix) const;
  // `suffix` (a branch's tokens after its newest step) is held by `address`.
  void Record(absl::Span<const int32_t> suffix, const std::string& address);
  // Forgets the entries on `address` (its worker failed: the cache is lost).
  void Forget(const std::string& address);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string address;
    uint64_t generation = 0;
  };
  const size_t max_entries_;
  uint64_t generation_ = 0;
  // Hash of (length, tokens) of a recorded suffix -> its worker.
  absl::flat_hash_map<uint64_t, Entry> entries_;
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_SUBTREE_SPLIT_H_
