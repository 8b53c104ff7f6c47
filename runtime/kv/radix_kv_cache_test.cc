#include "runtime/kv/radix_kv_cache.h"

#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Tokens [start, start + n).
std::vector<int32_t> Iota(int n, int start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::unique_ptr<RadixKvCache> MakeCache(int n) {
  auto cache = RadixKvCache::Create(n);
  EXPECT_TRUE(cache.ok()) << cache.status();
  return *std::move(cache);
}

// Every block either free, used or evictable, and nothing held.
void ExpectAllReturned(const RadixKvCache& cache) {
  const auto s = cache.stats();
  EXPECT_EQ(s.used_blocks, 0);
  EXPECT_EQ(s.free_blocks + s.evictable_blocks, s.num_blocks);
  EXPECT_EQ(s.evictable_blocks, s.cached_blocks);
  for (int b = 0; b < cache.num_blocks(); ++b) EXPECT_EQ(cache.ref_count(b), 0) << "block " << b;
}

TEST(RadixKvCacheTest, CreateRejectsEmptyPool) {
  EXPECT_EQ(RadixKvCache::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RadixKvCache::Create(-3).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RadixKvCacheTest, AllocateHandsOutDistinctBlocksAndExhaustionIsAStatus) {
  auto cache = MakeCache(4);
  auto a = cache->Allocate(3);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(*a, ElementsAre(0, 1, 2));
  auto too_many = cache->Allocate(2);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->stats().free_blocks, 1) << "a failed Allocate must not allocate anything";
  auto b = cache->Allocate(1);
  ASSERT_TRUE(b.ok());
  EXPECT_THAT(*b, ElementsAre(3));
  EXPECT_EQ(cache->Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  cache->Release(*a);
  cache->Release(*b);
  ExpectAllReturned(*cache);
  EXPECT_EQ(cache->stats().free_blocks, 4);
}

TEST(RadixKvCacheTest, MatchFindsLongestCachedFullBlockPrefix) {
  auto cache = MakeCache(8);
  const auto tokens = Iota(40);  // 2 full blocks + 8 tokens
  auto blocks = *cache->Allocate(3);
  EXPECT_EQ(cache->Insert(tokens, &blocks), 2) << "only full blocks are published";
  EXPECT_TRUE(cache->is_cached(blocks[0]));
  EXPECT_TRUE(cache->is_cached(blocks[1]));
  EXPECT_FALSE(cache->is_cached(blocks[2]));

  // Same first block, different second block.
  auto other = Concat(Iota(16), Iota(20, 1000));
  auto m = cache->MatchPrefix(other);
  EXPECT_EQ(m.num_tokens, 16);
  EXPECT_THAT(m.blocks, ElementsAre(blocks[0]));
  EXPECT_EQ(cache->ref_count(blocks[0]), 2);
  cache->Release(m.blocks);

  // A longer sequence with the same 32-token prefix matches both blocks.
  auto longer = Concat(Iota(32), Iota(50, 5000));
  m = cache->MatchPrefix(longer);
  EXPECT_EQ(m.num_tokens, 32);
  EXPECT_THAT(m.blocks, ElementsAre(blocks[0], blocks[1]));
  cache->Release(m.blocks);

  // A 31-token query can use only one full block; a different first token none.
  EXPECT_EQ(cache->MatchPrefix(absl::MakeConstSpan(tokens).first(31)).num_tokens, 16);
  cache->Release({blocks[0]});
  EXPECT_THAT(cache->MatchPrefix(Iota(40, 1)).blocks, IsEmpty());

  EXPECT_EQ(cache->stats().prefix_hit_tokens, 16 + 32 + 16);
  cache->Release(blocks);
  ExpectAllReturned(*cache);
  EXPECT_EQ(cache->stats().cached_blocks, 2);
  EXPECT_EQ(cache->stats().free_blocks, 6);
}

TEST(RadixKvCacheTest, ReferencedBlocksAreNeverEvicted) {
  auto cache = MakeCache(3);
  auto blocks = *cache->Allocate(2);
  cache->Insert(Iota(32), &blocks);
  // Still held: only one block can be allocated.
  auto one = cache->Allocate(1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(cache->Allocate(1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(cache->is_cached(blocks[0]));
  EXPECT_TRUE(cache->is_cached(blocks[1]));
  cache->Release(*one);
  cache->Release(blocks);
  // Now unreferenced: allocating the whole pool evicts both.
  auto all = cache->Allocate(3);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(cache->stats().cached_blocks, 0);
  EXPECT_EQ(cache->stats().evicted_blocks, 2);
  EXPECT_THAT(cache->MatchPrefix(Iota(32)).blocks, IsEmpty());
  cache->Release(*all);
  ExpectAllReturned(*cache);
}

TEST(RadixKvCacheTest, EvictsLeastRecentlyUsedLeavesFirst) {
  auto cache = MakeCache(4);
  // Three one-block sequences A, B, C, all released.
  std::vector<std::vector<int32_t>> seqs = {Iota(16, 0), Iota(16, 100), Iota(16, 200)};
  std::vector<int32_t> ids;
  for (const auto& s : seqs) {
    auto b = *cache->Allocate(1);
    cache->Insert(s, &b);
    cache->Release(b);
    ids.push_back(b[0]);
  }
  // Touch A: now B is the least recently used, then C, then A.
  cache->Release(cache->MatchPrefix(seqs[0]).blocks);
  auto x = *cache->Allocate(2);  // the free block, then B's
  EXPECT_TRUE(cache->is_cached(ids[0]));
  EXPECT_FALSE(cache->is_cached(ids[1]));
  EXPECT_TRUE(cache->is_cached(ids[2]));
  auto y = *cache->Allocate(1);  // C's
  EXPECT_THAT(y, ElementsAre(ids[2]));
  EXPECT_TRUE(cache->is_cached(ids[0]));
  EXPECT_EQ(cache->MatchPrefix(seqs[1]).num_tokens, 0);
  auto m = cache->MatchPrefix(seqs[0]);
  EXPECT_EQ(m.num_tokens, 16);
  cache->Release(m.blocks);
  cache->Release(x);
  cache->Release(y);
  ExpectAllReturned(*cache);
}

TEST(RadixKvCacheTest, EvictsChildrenBeforeTheirParent) {
  auto cache = MakeCache(3);
  auto blocks = *cache->Allocate(3);
  cache->Insert(Iota(48), &blocks);
  cache->Release(blocks);
  // All three were released at once; only the leaf is evictable.
  auto a = *cache->Allocate(1);
  EXPECT_THAT(a, ElementsAre(blocks[2]));
  EXPECT_EQ(cache->MatchPrefix(Iota(48)).num_tokens, 32);
  cache->Release({blocks[0], blocks[1]});
  auto b = *cache->Allocate(1);
  EXPECT_THAT(b, ElementsAre(blocks[1]));
  auto c = *cache->Allocate(1);
  EXPECT_THAT(c, ElementsAre(blocks[0]));
  cache->Release(a);
  cache->Release(b);
  cache->Release(c);
  ExpectAllReturned(*cache);
}

TEST(RadixKvCacheTest, CachedPrefixTokensLooksWithoutTouching) {
  auto cache = MakeCache(3);
  auto blocks = *cache->Allocate(3);
  cache->Insert(Iota(48), &blocks);
  cache->Release(blocks);
  EXPECT_EQ(cache->CachedPrefixTokens(Iota(48)), 48);
  EXPECT_EQ(cache->CachedPrefixTokens(Iota(40)), 32);  // full blocks only
  EXPECT_EQ(cache->CachedPrefixTokens(Iota(48, 1)), 0);
  // No reference taken, recency untouched: the leaf is still evicted first.
  EXPECT_EQ(cache->stats().used_blocks, 0);
  auto a = *cache->Allocate(1);
  EXPECT_THAT(a, ElementsAre(blocks[2]));
  EXPECT_EQ(cache->CachedPrefixTokens(Iota(48)), 32);
  cache->Release(a);
  ExpectAllReturned(*cache);
}

TEST(RadixKvCacheTest, InsertOfDuplicateContentSwapsToTheCachedBlock) {
  auto cache = MakeCache(6);
  auto first = *cache->Allocate(2);
  cache->Insert(Iota(32), &first);
  // A second sequence computed the same content in its own blocks.
  auto second = *cache->Allocate(3);
  const std::vector<int32_t> original = second;
  EXPECT_EQ(cache->Insert(Concat(Iota(32), Iota(16, 900)), &second), 1);
  EXPECT_EQ(second[0], first[0]);
  EXPECT_EQ(second[1], first[1]);
  EXPECT_EQ(second[2], original[2]);
  EXPECT_TRUE(cache->is_cached(second[2]));
  EXPECT_EQ(cache->ref_count(first[0]), 2);
  EXPECT_EQ(cache->ref_count(original[0]), 0) << "the duplicate went back to the free list";
  EXPECT_FALSE(cache->is_cached(original[0]));
  EXPECT_EQ(cache->stats().free_blocks, 3);
  cache->Release(first);
  cache->Release(second);
  ExpectAllReturned(*cache);
  EXPECT_EQ(cache->stats().cached_blocks, 3);
}

TEST(RadixKvCacheTest, CopyOnWriteOnlyCopiesSharedOrCachedBlocks) {
  auto cache = MakeCache(4);
  std::vector<std::pair<int32_t, int32_t>> copies;
  auto partial = *cache->Allocate(1);
  // Sole owner: written in place.
  auto same = cache->CopyOnWrite(partial[0], &copies);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, partial[0]);
  EXPECT_THAT(copies, IsEmpty());
  // Two forks share it: the first writer moves to a copy, the second then owns the original.
  cache->Retain(partial);
  EXPECT_EQ(cache->ref_count(partial[0]), 2);
  auto moved = cache->CopyOnWrite(partial[0], &copies);
  ASSERT_TRUE(moved.ok());
  EXPECT_NE(*moved, partial[0]);
  EXPECT_THAT(copies, ElementsAre(std::make_pair(partial[0], *moved)));
  EXPECT_EQ(cache->ref_count(partial[0]), 1);
  EXPECT_EQ(cache->ref_count(*moved), 1);
  auto kept = cache->CopyOnWrite(partial[0], &copies);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, partial[0]);
  EXPECT_EQ(copies.size(), 1u);
  cache->Release({*moved, *kept});
  ExpectAllReturned(*cache);
}

TEST(RadixKvCacheTest, CopyOnWriteFailsCleanlyWhenThePoolIsFull) {
  auto cache = MakeCache(2);
  auto blocks = *cache->Allocate(2);
  cache->Retain({blocks[1]});
  std::vector<std::pair<int32_t, int32_t>> copies;
  auto r = cache->CopyOnWrite(blocks[1], &copies);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(copies, IsEmpty());
  EXPECT_EQ(cache->ref_count(blocks[1]), 2) << "a failed CopyOnWrite keeps the reference";
  cache->Release({blocks[1]});
  cache->Release(blocks);
  ExpectAllReturned(*cache);
}

// A random workload of sequences that share prefixes, fork, copy on write,
// publish and release: afterwards every block is back and the counters add up.
TEST(RadixKvCacheTest, RandomWorkloadReturnsEveryBlock) {
  auto cache = MakeCache(64);
  std::mt19937 rng(7);
  struct Seq {
    std::vector<int32_t> tokens;
    std::vector<int32_t> blocks;
  };
  std::vector<Seq> live;
  int64_t exhausted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const int action = static_cast<int>(rng() % 4);
    if (action == 0 || live.empty()) {
      // Start: a prefix from a small family (so prefixes are shared), matched, then grown.
      Seq s;
      const int family = static_cast<int>(rng() % 3);
      const int len = 1 + static_cast<int>(rng() % 70);
      for (int i = 0; i < len; ++i) s.tokens.push_back(family * 1000 + (i < 40 ? i : rng() % 5));
      auto m = cache->MatchPrefix(s.tokens);
      s.blocks = m.blocks;
      const int need = (len + kKvBlockSize - 1) / kKvBlockSize - static_cast<int>(s.blocks.size());
      auto more = cache->Allocate(need);
      if (!more.ok()) {
        ASSERT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
        ++exhausted;
        cache->Release(s.blocks);
        continue;
      }
      s.blocks.insert(s.blocks.end(), more->begin(), more->end());
      cache->Insert(s.tokens, &s.blocks);
      live.push_back(std::move(s));
    } else if (action == 1) {
      // Fork a live sequence, then append a token to the fork (copy on write).
      Seq fork = live[rng() % live.size()];
      cache->Retain(fork.blocks);
      fork.tokens.push_back(static_cast<int32_t>(rng() % 5));
      const int pos = static_cast<int>(fork.tokens.size()) - 1;
      bool ok = true;
      if (pos % kKvBlockSize == 0) {
        auto b = cache->Allocate(1);
        if (b.ok()) fork.blocks.push_back((*b)[0]);
        ok = b.ok();
      } else {
        std::vector<std::pair<int32_t, int32_t>> copies;
        auto w = cache->CopyOnWrite(fork.blocks.back(), &copies);
        if (w.ok()) fork.blocks.back() = *w;
        ok = w.ok();
      }
      if (!ok) {
        ++exhausted;
        cache->Release(fork.blocks);
        continue;
      }
      cache->Insert(fork.tokens, &fork.blocks);
      live.push_back(std::move(fork));
    } else {
      const size_t i = rng() % live.size();
      cache->Release(live[i].blocks);
      live.erase(live.begin() + static_cast<long>(i));
    }
    const auto s = cache->stats();
    ASSERT_EQ(s.free_blocks + s.used_blocks + s.evictable_blocks, s.num_blocks);
  }
  for (auto& s : live) cache->Release(s.blocks);
  ExpectAllReturned(*cache);
  EXPECT_GT(cache->stats().prefix_hit_tokens, 0);
  const int evictable = cache->stats().evictable_blocks;
  EXPECT_EQ(cache->EvictAllUnreferenced(), evictable);
  EXPECT_EQ(cache->stats().free_blocks, 64);
  EXPECT_EQ(cache->stats().cached_blocks, 0);
}

}  // namespace
}  // namespace arbor::runtime
