#include "runtime/kv/radix_kv_cache.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace arbor::runtime {

absl::StatusOr<std::unique_ptr<RadixKvCache>> RadixKvCache::Create(int num_blocks) {
  if (num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RadixKvCache: num_blocks must be positive, got ", num_blocks));
  }
  return std::unique_ptr<RadixKvCache>(new RadixKvCache(num_blocks));
}

RadixKvCache::RadixKvCache(int num_blocks)
    : ref_counts_(num_blocks, 0), tree_nodes_(num_blocks, nullptr) {
  free_list_.reserve(num_blocks);
  // Reverse order so that blocks are handed out 0, 1, 2, ...
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

RadixKvCache::~RadixKvCache() = default;

RadixKvCache::BlockKey RadixKvCache::KeyAt(absl::Span<const int32_t> tokens, int block_index) {
  BlockKey key;
  std::copy_n(tokens.begin() + static_cast<size_t>(block_index) * kKvBlockSize, kKvBlockSize,
              key.begin());
  return key;
}

void RadixKvCache::CheckBlock(int32_t block) const {
  ARBOR_CHECK_MSG(block >= 0 && block < num_blocks(), "block id out of range");
}

bool RadixKvCache::IsEvictableLeaf(const Node* node) const {
  return node != &root_ && node->children.empty() && ref_counts_[node->block] == 0;
}

void RadixKvCache::AddEvictable(Node* node) { evictable_.emplace(node->last_access, node->block); }

void RadixKvCache::RemoveEvictable(Node* node) {
  evictable_.erase({node->last_access, node->block});
}

RadixKvCache::PrefixMatch RadixKvCache::MatchPrefix(absl::Span<const int32_t> tokens) {
  PrefixMatch match;
  const int full_blocks = static_cast<int>(tokens.size()) / kKvBlockSize;
  Node* node = &root_;
  const uint64_t now = ++clock_;
  for (int i = 0; i < full_blocks; ++i) {
    auto it = node->children.find(KeyAt(tokens, i));
    if (it == node->children.end()) break;
    Node* child = it->second.get();
    if (IsEvictableLeaf(child)) RemoveEvictable(child);
    if (ref_counts_[child->block]++ == 0) ++used_blocks_;
    child->last_access = now;
    match.blocks.push_back(child->block);
    node = child;
  }
  match.num_tokens = static_cast<int>(match.blocks.size()) * kKvBlockSize;
  prefix_hit_tokens_ += match.num_tokens;
  return match;
}

int RadixKvCache::CachedPrefixTokens(absl::Span<const int32_t> tokens) const {
  const int full_blocks = static_cast<int>(tokens.size()) / kKvBlockSize;
  const Node* node = &root_;
  int matched = 0;
  for (; matched < full_blocks; ++matched) {
    auto it = node->children.find(KeyAt(tokens, matched));
    if (it == node->children.end()) break;
    node = it->second.get();
  }
  return matched * kKvBlockSize;
}

bool RadixKvCache::EvictOne() {
  if (evictable_.empty()) return false;
  const int32_t block = evictable_.begin()->second;
  evictable_.erase(evictable_.begin());
  Node* node = tree_nodes_[block];
  ARBOR_CHECK(node != nullptr && node->children.empty() && ref_counts_[block] == 0);
  Node* parent = node->parent;
  tree_nodes_[block] = nullptr;
  --cached_blocks_;
  ++evicted_blocks_;
  parent->children.erase(node->key);  // destroys node
  free_list_.push_back(block);
  if (IsEvictableLeaf(parent)) AddEvictable(parent);
  return true;
}

absl::StatusOr<std::vector<int32_t>> RadixKvCache::Allocate(int n) {
  ARBOR_CHECK(n >= 0);
  if (n > available_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: need ", n, " blocks, only ",
                                                     available_blocks(), " of ", num_blocks(),
                                                     " are free or evictable"));
  }
  std::vector<int32_t> blocks;
  blocks.reserve(n);
  for (int i = 0; i < n; ++i) {
    if (free_list_.empty()) ARBOR_CHECK(EvictOne());
    const int32_t block = free_list_.back();
    free_list_.pop_back();
    ARBOR_CHECK(ref_counts_[block] == 0 && tree_nodes_[block] == nullptr);
    ref_counts_[block] = 1;
    ++used_blocks_;
    blocks.push_back(block);
  }
  return blocks;
}

int RadixKvCache::Insert(absl::Span<const int32_t> tokens, std::vector<int32_t>* blocks) {
  const int full_blocks =
      std::min(static_cast<int>(blocks->size()), static_cast<int>(tokens.size()) / kKvBlockSize);
  const uint64_t now = ++clock_;
  int added = 0;
  Node* node = &root_;
  for (int i = 0; i < full_blocks; ++i) {
    const int32_t block = (*blocks)[i];
    CheckBlock(block);
    ARBOR_CHECK_MSG(ref_counts_[block] > 0, "Insert of a block the caller does not hold");
    BlockKey key = KeyAt(tokens, i);
    auto it = node->children.find(key);
    if (it != node->children.end()) {
      Node* child = it->second.get();
      if (child->block != block) {
        // Same content computed twice: keep the cached copy, drop the duplicate.
        ARBOR_CHECK_MSG(tree_nodes_[block] == nullptr,
                        "Insert: block is cached under a different prefix");
        if (IsEvictableLeaf(child)) RemoveEvictable(child);
        if (ref_counts_[child->block]++ == 0) ++used_blocks_;
        Release({&block, 1});
        (*blocks)[i] = child->block;
      }
      child->last_access = now;
      node = child;
      continue;
    }
    ARBOR_CHECK_MSG(tree_nodes_[block] == nullptr,
                    "Insert: block is cached under a different prefix");
    // `node` gains a child, so it is no longer an evictable leaf.
    if (IsEvictableLeaf(node)) RemoveEvictable(node);
    auto child = std::make_unique<Node>();
    child->parent = node;
    child->block = block;
    child->key = key;
    child->last_access = now;
    Node* raw = child.get();
    node->children.emplace(key, std::move(child));
    tree_nodes_[block] = raw;
    ++cached_blocks_;
    ++added;
    node = raw;
  }
  return added;
}

void RadixKvCache::Retain(absl::Span<const int32_t> blocks) {
  for (int32_t block : blocks) {
    CheckBlock(block);
    ARBOR_CHECK_MSG(ref_counts_[block] > 0 || tree_nodes_[block] != nullptr,
                    "Retain of a free block");
    Node* node = tree_nodes_[block];
    if (node != nullptr && IsEvictableLeaf(node)) RemoveEvictable(node);
    if (ref_counts_[block]++ == 0) ++used_blocks_;
  }
}

void RadixKvCache::Release(absl::Span<const int32_t> blocks) {
  const uint64_t now = ++clock_;
  for (int32_t block : blocks) {
    CheckBlock(block);
    ARBOR_CHECK_MSG(ref_counts_[block] > 0, "Release of a block that is not held");
    if (--ref_counts_[block] > 0) continue;
    --used_blocks_;
    Node* node = tree_nodes_[block];
    if (node == nullptr) {
      free_list_.push_back(block);
    } else {
      node->last_access = now;
      if (IsEvictableLeaf(node)) AddEvictable(node);
    }
  }
}

absl::StatusOr<int32_t> RadixKvCache::CopyOnWrite(
    int32_t block, std::vector<std::pair<int32_t, int32_t>>* copies) {
  CheckBlock(block);
  ARBOR_CHECK_MSG(ref_counts_[block] > 0, "CopyOnWrite of a block that is not held");
  if (ref_counts_[block] == 1 && tree_nodes_[block] == nullptr) return block;
  // The caller's reference keeps `block` from being evicted by this allocation.
  auto fresh = Allocate(1);
  if (!fresh.ok()) return fresh.status();
  copies->emplace_back(block, (*fresh)[0]);
  Release({&block, 1});
  return (*fresh)[0];
}

int RadixKvCache::EvictAllUnreferenced() {
  int freed = 0;
  while (EvictOne()) ++freed;
  return freed;
}

int RadixKvCache::available_blocks() const {
  // Every unreferenced block is free or cached and evictable (leaves first).
  return num_blocks() - used_blocks_;
}

int RadixKvCache::ref_count(int32_t block) const {
  CheckBlock(block);
  return ref_counts_[block];
}

bool RadixKvCache::is_cached(int32_t block) const {
  CheckBlock(block);
  return tree_nodes_[block] != nullptr;
}

RadixKvCache::Stats RadixKvCache::stats() const {
  Stats s;
  s.num_blocks = num_blocks();
  s.free_blocks = static_cast<int>(free_list_.size());
  s.used_blocks = used_blocks_;
  s.cached_blocks = cached_blocks_;
  s.evictable_blocks = num_blocks() - s.free_blocks - used_blocks_;
  s.prefix_hit_tokens = prefix_hit_tokens_;
  s.evicted_blocks = evicted_blocks_;
  return s;
}

}  // namespace arbor::runtime
