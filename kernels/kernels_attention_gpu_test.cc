// GPU attention kernels (paged decode, split-K partials and their merge,
// shared-prefix cascade, prefill) against their CPU references on fresh
// random inputs, over bf16 and fp8 KV pools (the references read the fp8
// pools' rounded values, so the tolerances are the same). Tolerances: bf16
// outputs max|gpu - ref| / max|ref| <= 1e-2; fp32 partial attention states
// 1e-4 relative (2e-3 from fp8 decode on tensor cores, which rounds to fp16). Every test skips when no CUDA device is present.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#include "kernels/testing/gpu_test_util.h"

namespace arbor::kernels {
namespace {

using test_util::Bf16Tensor;
using test_util::DeviceArray;
using test_util::kBf16Tolerance;
using test_util::kFp32Tolerance;
using test_util::RandomBf16;
using test_util::RandomBlockTables;
using test_util::RelativeError;
using test_util::Shape;
using test_util::ToFloat;

struct AttentionCase {
  int heads, kv_heads, dim;
};

// Paged KV of several sequences: block tables and the K and V pools.
struct PagedKv {
  std::vector<int32_t> tables;
  Bf16Tensor k, v;
  int max_blocks, num_blocks;
};
// What a kernel must never use: a sequence's slots past its context (stale
// pool bytes, here NaN) and its table entries past its last block (-1).
void PoisonPastContext(PagedKv& kv, const std::vector<int32_t>& context_lens,
                       const AttentionCase& c) {
  const size_t slot_elems = static_cast<size_t>(c.kv_heads) * c.dim;
  const Bf16 nan_bits = 0x7fc0;
  for (size_t seq = 0; seq < context_lens.size(); ++seq) {
    int32_t* table = &kv.tables[seq * kv.max_blocks];
    const int len = context_lens[seq], used_blocks = (len + kKvBlockSize - 1) / kKvBlockSize;
    for (int pos = len; pos < used_blocks * kKvBlockSize; ++pos) {
      const size_t first =
          (static_cast<size_t>(table[pos / kKvBlockSize]) * kKvBlockSize + pos % kKvBlockSize) *
          slot_elems;
      for (Bf16Tensor* t : {&kv.k, &kv.v}) {
        std::fill_n(t->bits.begin() + first, slot_elems, nan_bits);
        std::fill_n(t->values.begin() + first, slot_elems, std::nanf(""));
      }
    }
    std::fill(table + used_blocks, table + kv.max_blocks, -1);
  }
}

// Random paged KV for `num_seqs` sequences of `context_lens` tokens,
// poisoned past each context (PoisonPastContext).
PagedKv RandomPagedKv(const std::vector<int32_t>& context_lens, const AttentionCase& c,
                      std::mt19937& rng) {
  PagedKv kv;
  const int max_len = *std::max_element(context_lens.begin(), context_lens.end());
  kv.max_blocks = (max_len + kKvBlockSize - 1) / kKvBlockSize;
  kv.num_blocks = static_cast<int>(context_lens.size()) * kv.max_blocks + 3;
  kv.tables =
      RandomBlockTables(static_cast<int>(context_lens.size()), kv.max_blocks, kv.num_blocks, rng);
  const size_t size = static_cast<size_t>(kv.num_blocks) * kKvBlockSize * c.kv_heads * c.dim;
  kv.k = RandomBf16(size, rng);
  kv.v = RandomBf16(size, rng);
  PoisonPastContext(kv, context_lens, c);
  return kv;
}

// Rounds a pool to fp8: the bit patterns for the device, and the values they
// hold for the reference (NaN poison stays NaN).
std::vector<Fp8E4m3> RoundToFp8(Bf16Tensor& t) {
  std::vector<Fp8E4m3> bits(t.values.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    bits[i].bits = reference::FloatToFp8E4m3(t.values[i]);
    t.values[i] = reference::Fp8E4m3ToFloat(bits[i].bits);
  }
  return bits;
}

constexpr KvDtype kKvDtypes[] = {KvDtype::kBf16, KvDtype::kFp8E4m3};
std::string KvDtypeName(KvDtype dtype) { return dtype == KvDtype::kBf16 ? "bf16" : "fp8"; }

// A PagedKv's pools on the device in one element type; an fp8 copy rounds the
// host values to what the device holds.
class DeviceKv {
 public:
  DeviceKv(PagedKv& kv, KvDtype dtype) : dtype_(dtype) {
    if (dtype == KvDtype::kBf16) {
      k16_ = std::make_unique<DeviceArray<Bf16>>(kv.k.bits);
      v16_ = std::make_unique<DeviceArray<Bf16>>(kv.v.bits);
    } else {
      k8_ = std::make_unique<DeviceArray<Fp8E4m3>>(RoundToFp8(kv.k));
      v8_ = std::make_unique<DeviceArray<Fp8E4m3>>(RoundToFp8(kv.v));
    }
  }
  // kernel(k_pool, v_pool) with the pools' typed pointers.
  template <class Kernel>
  KernelStatus Run(Kernel&& kernel) const {
    return dtype_ == KvDtype::kBf16 ? kernel(k16_->get(), v16_->get())
                                    : kernel(k8_->get(), v8_->get());
  }

 private:
  KvDtype dtype_;
  std::unique_ptr<DeviceArray<Bf16>> k16_, v16_;
  std::unique_ptr<DeviceArray<Fp8E4m3>> k8_, v8_;
};

// Decode runs one kernel over bf16 pools and either of two over fp8 pools.
struct DecodeVariant {
  KvDtype dtype;
  Fp8DecodeKernel fp8_kernel;
};
constexpr DecodeVariant kDecodeVariants[] = {
    {KvDtype::kBf16, Fp8DecodeKernel::kMmaSync},
    {KvDtype::kFp8E4m3, Fp8DecodeKernel::kCudaCores},
    {KvDtype::kFp8E4m3, Fp8DecodeKernel::kMmaSync},
};
std::string DecodeVariantName(const DecodeVariant& v) {
  if (v.dtype == KvDtype::kBf16) return "bf16";
  return v.fp8_kernel == Fp8DecodeKernel::kMmaSync ? "fp8 mma.sync" : "fp8 CUDA cores";
}
// fp8 decode on tensor cores rounds the scaled query and the probabilities
// to fp16 (11 significant bits): fp32 partial states within 2e-3 relative.
constexpr double kFp16MmaTolerance = 2e-3;

// Selects the fp8 decode kernel for one scope.
class ScopedFp8DecodeKernel {
 public:
  explicit ScopedFp8DecodeKernel(Fp8DecodeKernel kernel) : previous_(SetFp8DecodeKernel(kernel)) {}
  ~ScopedFp8DecodeKernel() { SetFp8DecodeKernel(previous_); }
  ScopedFp8DecodeKernel(const ScopedFp8DecodeKernel&) = delete;
  ScopedFp8DecodeKernel& operator=(const ScopedFp8DecodeKernel&) = delete;

 private:
  const Fp8DecodeKernel previous_;
};

AttentionShape ShapeFor(int heads, int kv_heads, int dim, int max_blocks, KvDtype dtype) {
  AttentionShape shape = Shape(heads, kv_heads, dim, max_blocks);
  shape.kv_dtype = dtype;
  return shape;
}

TEST(KernelsGpuTest, PagedDecodeAttentionMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(16);
  // Long contexts run split-K with a merge; short ones as a single split
  // written straight to bf16.
  for (const DecodeVariant& variant : kDecodeVariants) {
    const KvDtype dtype = variant.dtype;
    const ScopedFp8DecodeKernel fp8_kernel(variant.fp8_kernel);
    for (const std::vector<int32_t>& context_lens :
         {std::vector<int32_t>{1, 16, 17, 300, 2500, 4097}, std::vector<int32_t>{1, 5, 30, 64}}) {
      for (const AttentionCase& c :
           {AttentionCase{32, 8, 64}, AttentionCase{32, 8, 128}, AttentionCase{4, 2, 16},
            AttentionCase{14, 2, 64}, AttentionCase{4, 4, 32}}) {
        const int num_seqs = static_cast<int>(context_lens.size());
        PagedKv kv = RandomPagedKv(context_lens, c, rng);
        const AttentionShape shape = ShapeFor(c.heads, c.kv_heads, c.dim, kv.max_blocks, dtype);
        const auto q = RandomBf16(static_cast<size_t>(num_seqs) * c.heads * c.dim, rng);
        const int max_ctx = *std::max_element(context_lens.begin(), context_lens.end());
        DeviceArray<Bf16> d_q(q.bits);
        const DeviceKv pools(kv, dtype);
        DeviceArray<Bf16> d_out(q.bits.size());
        DeviceArray<int32_t> d_tables(kv.tables), d_ctx(context_lens);
        DeviceArray<unsigned char> d_ws(PagedDecodeWorkspaceBytes(num_seqs, shape, max_ctx));
        ASSERT_KERNEL_OK(pools.Run([&](auto* k, auto* v) {
          return PagedDecodeAttention(d_q.get(), k, v, d_tables.get(), d_ctx.get(), d_out.get(),
                                      d_ws.get(), num_seqs, max_ctx, shape, nullptr);
        }));
        std::vector<int32_t> positions(num_seqs), starts(num_seqs + 1);
        for (int s = 0; s < num_seqs; ++s) positions[s] = context_lens[s] - 1;
        std::iota(starts.begin(), starts.end(), 0);
        std::vector<float> want(q.values.size());
        reference::PagedAttention(q.values.data(), positions.data(), starts.data(),
                                  kv.tables.data(), context_lens.data(), kv.k.values.data(),
                                  kv.v.values.data(), want.data(), num_seqs, shape);
        EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance)
            << DecodeVariantName(variant) << " heads=" << c.heads << " kv_heads=" << c.kv_heads
            << " dim=" << c.dim << " max context " << max_ctx;
      }
    }
  }
}

TEST(KernelsGpuTest, DecodePartialStatesMatchReferenceInFp32) {
  REQUIRE_GPU();
  std::mt19937 rng(17);
  const AttentionCase c{8, 2, 64};
  const std::vector<int32_t> kv_begin = {0, 5, 40}, kv_end = {33, 200, 41};
  for (const DecodeVariant& variant : kDecodeVariants) {
    SCOPED_TRACE(DecodeVariantName(variant));
    const KvDtype dtype = variant.dtype;
    const ScopedFp8DecodeKernel fp8_kernel(variant.fp8_kernel);
    const double tolerance =
        dtype == KvDtype::kFp8E4m3 && variant.fp8_kernel == Fp8DecodeKernel::kMmaSync
            ? kFp16MmaTolerance
            : kFp32Tolerance;
    PagedKv kv = RandomPagedKv(kv_end, c, rng);
    const AttentionShape shape = ShapeFor(c.heads, c.kv_heads, c.dim, kv.max_blocks, dtype);
    const int num_seqs = 3, split_len = 64, num_splits = 4;
    const auto q = RandomBf16(static_cast<size_t>(num_seqs) * c.heads * c.dim, rng);
    const size_t rows = static_cast<size_t>(num_splits) * num_seqs * c.heads;
    DeviceArray<Bf16> d_q(q.bits);
    const DeviceKv pools(kv, dtype);
    DeviceArray<int32_t> d_tables(kv.tables), d_begin(kv_begin), d_end(kv_end);
    DeviceArray<float> d_o(rows * c.dim), d_lse(rows);
    ASSERT_KERNEL_OK(pools.Run([&](auto* k, auto* v) {
      return DecodeAttentionPartial(d_q.get(), k, v, d_tables.get(), d_begin.get(), d_end.get(),
                                    d_o.get(), d_lse.get(), num_seqs, shape, split_len, num_splits,
                                    nullptr);
    }));
    const auto o = d_o.ToHost(), lse = d_lse.ToHost();
    for (int j = 0; j < num_splits; ++j) {
      for (int s = 0; s < num_seqs; ++s) {
        const int b = kv_begin[s] + j * split_len, e = std::min(kv_end[s], b + split_len);
        for (int h = 0; h < c.heads; ++h) {
          std::vector<float> want(c.dim);
          float want_lse;
          reference::AttentionPartialRow(&q.values[(s * c.heads + h) * c.dim], h,
                                         &kv.tables[s * kv.max_blocks], b, e, kv.k.values.data(),
                                         kv.v.values.data(), shape, want.data(), &want_lse);
          const size_t row = (static_cast<size_t>(j) * num_seqs + s) * c.heads + h;
          std::vector<float> got(o.begin() + row * c.dim, o.begin() + (row + 1) * c.dim);
          if (b >= e) {
            EXPECT_EQ(lse[row], -INFINITY);
            continue;
          }
          EXPECT_NEAR(lse[row], want_lse, tolerance * std::max(1.0f, std::fabs(want_lse)));
          EXPECT_LE(RelativeError(got, want), tolerance) << "split " << j << " seq " << s;
        }
      }
    }
  }
}

// Every group-attention kernel; on a GPU other than sm_90 (or a head size
// other than 64) the wgmma one runs the mma.sync kernel.
constexpr GroupAttentionKernel kGroupKernels[] = {GroupAttentionKernel::kMmaSync,
                                                  GroupAttentionKernel::kWgmma};

// Selects a group-attention kernel for one scope.
class ScopedGroupKernel {
 public:
  explicit ScopedGroupKernel(GroupAttentionKernel kernel)
      : previous_(SetGroupAttentionKernel(kernel)) {}
  ~ScopedGroupKernel() { SetGroupAttentionKernel(previous_); }
  ScopedGroupKernel(const ScopedGroupKernel&) = delete;
  ScopedGroupKernel& operator=(const ScopedGroupKernel&) = delete;

 private:
  const GroupAttentionKernel previous_;
};

// Groups of branches that share a prompt (prefix_lens[g] tokens, shared
// blocks), each branch with 1-40 tokens of its own.
struct CascadeCase {
  std::vector<int> prefix_lens, branches_per_group;
  int prefix_split, prefix_splits;  // must cover the longest prefix
};

// Prefix attention once per group (GroupAttentionPartial), suffix attention
// per branch, merged, against full per-branch attention.
void CheckSharedPrefixCascade(const AttentionCase& c, const CascadeCase& cc, KvDtype dtype,
                              std::mt19937& rng) {
  const int num_groups = static_cast<int>(cc.prefix_lens.size());
  std::vector<int32_t> context_lens, group_of_branch, group_starts = {0};
  std::uniform_int_distribution<int> suffix(1, 40);
  for (int g = 0; g < num_groups; ++g) {
    for (int i = 0; i < cc.branches_per_group[g]; ++i) {
      context_lens.push_back(cc.prefix_lens[g] + suffix(rng));
      group_of_branch.push_back(g);
    }
    group_starts.push_back(group_starts.back() + cc.branches_per_group[g]);
  }
  const int num_branches = static_cast<int>(context_lens.size());
  const int max_group =
      *std::max_element(cc.branches_per_group.begin(), cc.branches_per_group.end());
  PagedKv kv = RandomPagedKv(context_lens, c, rng);
  // Share the prompt: branches of a group take the first branch's full
  // prefix blocks; a partially filled last prefix block is a per-branch
  // copy (copy-on-write) of the first branch's.
  const size_t slot = static_cast<size_t>(c.kv_heads) * c.dim;
  for (int g = 0; g < num_groups; ++g) {
    const int first = group_starts[g];
    const int full = cc.prefix_lens[g] / kKvBlockSize, rem = cc.prefix_lens[g] % kKvBlockSize;
    for (int i = 1; i < cc.branches_per_group[g]; ++i) {
      int32_t* table = &kv.tables[(first + i) * kv.max_blocks];
      const int32_t* leader = &kv.tables[first * kv.max_blocks];
      for (int blk = 0; blk < full; ++blk) table[blk] = leader[blk];
      for (int r = 0; r < rem; ++r) {
        const size_t src = (static_cast<size_t>(leader[full]) * kKvBlockSize + r) * slot;
        const size_t dst = (static_cast<size_t>(table[full]) * kKvBlockSize + r) * slot;
        std::copy_n(kv.k.bits.begin() + src, slot, kv.k.bits.begin() + dst);
        std::copy_n(kv.v.bits.begin() + src, slot, kv.v.bits.begin() + dst);
        std::copy_n(kv.k.values.begin() + src, slot, kv.k.values.begin() + dst);
        std::copy_n(kv.v.values.begin() + src, slot, kv.v.values.begin() + dst);
      }
    }
  }
  const AttentionShape shape = ShapeFor(c.heads, c.kv_heads, c.dim, kv.max_blocks, dtype);
  const auto q = RandomBf16(static_cast<size_t>(num_branches) * c.heads * c.dim, rng);
  std::vector<int32_t> positions(num_branches);
  for (int b = 0; b < num_branches; ++b) positions[b] = context_lens[b] - 1;
  std::vector<int32_t> group_tables, group_kv_len(cc.prefix_lens.begin(), cc.prefix_lens.end());
  std::vector<int32_t> suffix_begin(num_branches);
  for (int g = 0; g < num_groups; ++g) {
    const int leader = group_starts[g];
    group_tables.insert(group_tables.end(), kv.tables.begin() + leader * kv.max_blocks,
                        kv.tables.begin() + (leader + 1) * kv.max_blocks);
  }
  for (int b = 0; b < num_branches; ++b) suffix_begin[b] = cc.prefix_lens[group_of_branch[b]];

  const int suffix_split = 16, suffix_splits = 3;  // covers 40
  const int parts = cc.prefix_splits + suffix_splits;
  const size_t rows = static_cast<size_t>(num_branches) * c.heads;
  DeviceArray<Bf16> d_q(q.bits), d_out(q.bits.size());
  const DeviceKv pools(kv, dtype);
  DeviceArray<int32_t> d_pos(positions), d_gstarts(group_starts), d_gtables(group_tables),
      d_glen(group_kv_len), d_tables(kv.tables), d_begin(suffix_begin), d_end(context_lens);
  DeviceArray<float> d_o(parts * rows * c.dim), d_lse(parts * rows);
  ASSERT_KERNEL_OK(pools.Run([&](auto* k, auto* v) {
    return GroupAttentionPartial(d_q.get(), d_pos.get(), d_gstarts.get(), d_gtables.get(),
                                 d_glen.get(), k, v, d_o.get(), d_lse.get(), num_branches,
                                 num_groups, max_group, shape, cc.prefix_split, cc.prefix_splits,
                                 nullptr);
  }));
  ASSERT_KERNEL_OK(pools.Run([&](auto* k, auto* v) {
    return DecodeAttentionPartial(d_q.get(), k, v, d_tables.get(), d_begin.get(), d_end.get(),
                                  d_o.get() + cc.prefix_splits * rows * c.dim,
                                  d_lse.get() + cc.prefix_splits * rows, num_branches, shape,
                                  suffix_split, suffix_splits, nullptr);
  }));
  ASSERT_KERNEL_OK(MergeAttentionStates(d_o.get(), d_lse.get(), d_out.get(), nullptr, parts,
                                        num_branches, c.heads, c.dim, nullptr));
  std::vector<int32_t> starts(num_branches + 1);
  std::iota(starts.begin(), starts.end(), 0);
  std::vector<float> want(q.values.size());
  reference::PagedAttention(q.values.data(), positions.data(), starts.data(), kv.tables.data(),
                            context_lens.data(), kv.k.values.data(), kv.v.values.data(),
                            want.data(), num_branches, shape);
  EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance)
      << KvDtypeName(dtype) << " heads=" << c.heads << " dim=" << c.dim << " prefix splits "
      << cc.prefix_splits << " x " << cc.prefix_split;
}

TEST(KernelsGpuTest, SharedPrefixCascadeMatchesPerBranchAttention) {
  REQUIRE_GPU();
  std::mt19937 rng(18);
  const CascadeCase cases[] = {
      // 5 branches after a 1000-token prompt (ends mid-block and mid-tile),
      // 3 after 64; splits of a few tiles.
      {{1000, 64}, {5, 3}, 256, 4},
      // The same prompts in one split of many tiles (the pipelines wrap
      // around their shared-memory stages).
      {{1000, 64}, {5, 3}, 1024, 1},
      // 40 branches x 4 GQA heads = 160 rows: several row tiles, the last
      // one mostly padding; short splits, some of them empty for group 1.
      {{700, 300}, {40, 1}, 128, 6},
  };
  for (const GroupAttentionKernel kernel : kGroupKernels) {
    ScopedGroupKernel scoped(kernel);
    SCOPED_TRACE("group attention kernel " + std::to_string(static_cast<int>(kernel)));
    for (const AttentionCase& c :
         {AttentionCase{32, 8, 64}, AttentionCase{16, 2, 128}, AttentionCase{4, 2, 16}}) {
      for (const CascadeCase& cc : cases) {
        for (const KvDtype dtype : kKvDtypes) CheckSharedPrefixCascade(c, cc, dtype, rng);
      }
    }
  }
}

TEST(KernelsGpuTest, PrefillAttentionWithCachedPrefixMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(19);
  // (cached prefix, new tokens) per sequence.
  const std::vector<std::pair<int, int>> seqs = {{0, 100}, {37, 50}, {130, 1}, {0, 200}, {500, 77}};
  for (const GroupAttentionKernel kernel : kGroupKernels) {
    ScopedGroupKernel scoped(kernel);
    SCOPED_TRACE("group attention kernel " + std::to_string(static_cast<int>(kernel)));
    for (const KvDtype dtype : kKvDtypes) {
      SCOPED_TRACE(KvDtypeName(dtype));
      for (const AttentionCase& c : {AttentionCase{32, 8, 64}, AttentionCase{8, 8, 128},
                                     AttentionCase{14, 2, 16}, AttentionCase{4, 1, 32}}) {
        std::vector<int32_t> context_lens, positions, starts = {0};
        int max_new = 0;
        for (const auto& [cached, fresh] : seqs) {
          context_lens.push_back(cached + fresh);
          for (int i = 0; i < fresh; ++i) positions.push_back(cached + i);
          starts.push_back(starts.back() + fresh);
          max_new = std::max(max_new, fresh);
        }
        const int num_seqs = static_cast<int>(seqs.size()), n = starts.back();
        PagedKv kv = RandomPagedKv(context_lens, c, rng);
        const AttentionShape shape = ShapeFor(c.heads, c.kv_heads, c.dim, kv.max_blocks, dtype);
        const auto q = RandomBf16(static_cast<size_t>(n) * c.heads * c.dim, rng);
        DeviceArray<Bf16> d_q(q.bits), d_out(q.bits.size());
        const DeviceKv pools(kv, dtype);
        DeviceArray<int32_t> d_pos(positions), d_starts(starts), d_tables(kv.tables),
            d_ctx(context_lens);
        ASSERT_KERNEL_OK(pools.Run([&](auto* k, auto* v) {
          return PrefillAttention(d_q.get(), d_pos.get(), d_starts.get(), d_tables.get(),
                                  d_ctx.get(), k, v, d_out.get(), n, num_seqs, max_new, shape,
                                  nullptr);
        }));
        std::vector<float> want(q.values.size());
        reference::PagedAttention(q.values.data(), positions.data(), starts.data(),
                                  kv.tables.data(), context_lens.data(), kv.k.values.data(),
                                  kv.v.values.data(), want.data(), num_seqs, shape);
        EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance)
            << "heads=" << c.heads << " kv_heads=" << c.kv_heads << " dim=" << c.dim;

        // The same through split partials + merge (causal masking across splits).
        const int split_len = 128, num_splits = 5;
        const size_t rows = static_cast<size_t>(n) * c.heads;
        DeviceArray<float> d_o(num_splits * rows * c.dim), d_lse(num_splits * rows);
        DeviceArray<Bf16> d_merged(q.bits.size());
        ASSERT_KERNEL_OK(pools.Run([&](auto* k, auto* v) {
          return GroupAttentionPartial(d_q.get(), d_pos.get(), d_starts.get(), d_tables.get(),
                                       d_ctx.get(), k, v, d_o.get(), d_lse.get(), n, num_seqs,
                                       max_new, shape, split_len, num_splits, nullptr);
        }));
        ASSERT_KERNEL_OK(MergeAttentionStates(d_o.get(), d_lse.get(), d_merged.get(), nullptr,
                                              num_splits, n, c.heads, c.dim, nullptr));
        EXPECT_LE(RelativeError(ToFloat(d_merged.ToHost()), want), kBf16Tolerance) << "split";
      }
    }
  }
}

TEST(KernelsGpuTest, MergeAttentionStatesMatchesReference) {
  REQUIRE_GPU();
  std::mt19937 rng(20);
  const int parts = 5, rows = 7, heads = 4, dim = 64;
  const size_t n = static_cast<size_t>(parts) * rows * heads;
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> o(n * dim), lse(n);
  for (float& x : o) x = dist(rng);
  for (float& x : lse) x = dist(rng);
  for (size_t i = 0; i < n; i += 3) lse[i] = -INFINITY;                   // empty parts
  for (int j = 0; j < parts; ++j) lse[j * rows * heads + 1] = -INFINITY;  // an all-empty row
  for (int j = 0; j < parts; ++j) {
    std::fill_n(o.begin() + (j * rows * heads + 1) * dim, dim, 0.0f);
  }
  DeviceArray<float> d_o(o), d_lse(lse), d_lse_out(rows * heads);
  DeviceArray<Bf16> d_out(static_cast<size_t>(rows) * heads * dim);
  ASSERT_KERNEL_OK(MergeAttentionStates(d_o.get(), d_lse.get(), d_out.get(), d_lse_out.get(), parts,
                                        rows, heads, dim, nullptr));
  std::vector<float> want(static_cast<size_t>(rows) * heads * dim), want_lse(rows * heads);
  reference::MergeAttentionStates(o.data(), lse.data(), want.data(), want_lse.data(), parts, rows,
                                  heads, dim);
  EXPECT_LE(RelativeError(ToFloat(d_out.ToHost()), want), kBf16Tolerance);
  const auto got_lse = d_lse_out.ToHost();
  for (int r = 0; r < rows * heads; ++r) {
    if (std::isinf(want_lse[r])) {
      EXPECT_EQ(got_lse[r], want_lse[r]);
    } else {
      EXPECT_NEAR(got_lse[r], want_lse[r], kFp32Tolerance * std::max(1.0f, std::fabs(want_lse[r])));
    }
  }
}

}  // namespace
}  // namespace arbor::kernels
