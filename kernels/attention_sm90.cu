// Group attention on Hopper's warpgroup tensor cores (wgmma), head_dim 64:
// the cascade's shared-prefix stage and prefill on sm_90. Same contract and
// the same online softmax as GroupAttentionMmaKernel (attention.cu), which stays
// the path for other head sizes and GPUs.
//
// A CTA is two warpgroups of 64 query rows each. K/V tiles of 128 keys land
// in shared memory by TMA, one box per 16-token KV page (the pages of a tile
// are not contiguous), in the 128-byte-swizzled layout wgmma reads without
// bank conflicts:
//   S = Q K^T  wgmma m64n128k16, Q and K both K-major from shared memory;
//   O += P V   wgmma m64n64k16, P from registers (the S accumulators are
//              already its A fragments), V N-major from shared memory.
// Tiles flow through kStages stages, each with a transaction mbarrier the
// warpgroups wait on; no barrier spans the CTA, so its warpgroups drift into
// different phases and the tensor cores stay busy through the other
// warpgroups on the SM (two CTAs of two warpgroups each, at 128 registers).
// There is no producer warp (its registers would cost a CTA per SM): the last
// warp to release a stage issues the refill. (Measured and dropped on the
// H200, docs/KERNELS.md: a product issued under the next tile's softmax, four
// warpgroups sharing each tile, exp2 in paired bf16.)

#include "kernels/attention_sm90.h"

#include <cuda.h>  // CUtensorMap (the encoder comes through the runtime)
#include <cudaTypedefs.h>

#include "kernels/common.cuh"
#include "kernels/group_attention.cuh"
#include "kernels/wgmma_layout.h"

#include <cstdlib>
#include <type_traits>

namespace arbor::kernels {
namespace {

using detail::CpAsyncWait;
using detail::NegInf;
using detail::PackBf16;

constexpr int kD = 64;
constexpr int kRowBytes = wgmma::kRowBytes;  // one swizzled row per key or query row
static_assert(kRowBytes == kD * 2);
constexpr int kPageBytes = kKvBlockSize * kRowBytes;
static_assert(kPageBytes % wgmma::kAtomBytes == 0, "a page keeps the swizzle phase");
constexpr int kWarpgroups = 2;
constexpr int kThreads = 128 * kWarpgroups;
constexpr int kRows = kSm90GroupRows;
static_assert(kRows == 64 * kWarpgroups);

// Variants measured side by side (ARBOR_SM90_VARIANT): 0 = 128-key tiles, one product at a time; 1 = the same with
// P V on the first half under the second half's exponentials; 2 = 64-key
// tiles with the next tile's S = Q K^T under this tile's softmax.
template <int kVariant>
struct Sm90Config {
  static constexpr bool kPipelined = kVariant == 2;
  static constexpr bool kSplitPv = kVariant == 1;
  static constexpr int kTileKeys = kPipelined ? 64 : 128;
  static constexpr int kStages = kPipelined ? 4 : 2;
  static constexpr int kTileBytes = kTileKeys * kRowBytes;
  static constexpr int kPages = kTileKeys / kKvBlockSize;  // TMA boxes per K or V tile
  // Shared memory: a header (per stage a full barrier and a release count;
  // the rows' positions), then, from the next 1024-byte boundary (swizzled
  // tiles start on one), Q and the stages' K and V tiles.
  static constexpr uint32_t kHeaderBytes = kStages * (8 + 4) + kRows * 4;
  static constexpr uint32_t kTilesBytes = kRows * kRowBytes + kStages * 2 * kTileBytes;
  static constexpr size_t kSmemBytes = 1024 * ((kHeaderBytes + 1023) / 1024) + 1024 + kTilesBytes;
  static_assert(kPages <= 32, "a warp's lanes issue a tile's pages");
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ARBOR_HAVE_WGMMA 1

__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from touching accumulators before the wait that
// completes them.
template <int N>
__device__ __forceinline__ void FenceRegisters(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// Shared memory written by the generic proxy (cp.async, stores) before wgmma
// reads it.
__device__ __forceinline__ void FenceSharedForAsyncProxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// ---- Transaction barriers and TMA ----------------------------------------------
__device__ __forceinline__ void MbarInit(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Makes the initialised barriers visible to the async proxy (TMA).
__device__ __forceinline__ void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Spins until the barrier's phase with parity `parity` has completed.
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Box {head_dim, 1 head, 16 slots} at (0, head, slot) of a paged K or V pool
// to shared memory; its bytes complete a transaction on `bar`. Rows outside
// the map (a negative slot) land as zeros.
__device__ __forceinline__ void TmaLoadPage(uint32_t dst, const CUtensorMap* map, int head,
                                            int slot, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(0), "r"(head), "r"(slot), "r"(bar)
      : "memory");
}
// Adds one to a shared counter; orders the caller's prior accesses (its
// warp's finished wgmma reads) before those of whoever reads the result.
__device__ __forceinline__ uint32_t AtomicIncAcqRel(uint32_t addr) {
  uint32_t old;
  asm volatile("atom.acq_rel.cta.shared::cta.add.u32 %0, [%1], 1;\n"
               : "=r"(old)
               : "r"(addr)
               : "memory");
  return old;
}
// Synchronises the 128 threads of warpgroup `wg` (named barrier 1 + wg;
// immediate ids, so that ptxas reserves two barriers, not all sixteen).
__device__ __forceinline__ void WarpgroupSync(int wg) {
  if (wg == 0) {
    asm volatile("bar.sync 1, 128;\n" ::: "memory");
  } else {
    asm volatile("bar.sync 2, 128;\n" ::: "memory");
  }
}

#define ARBOR_F4(a, i) "+f"(a[i]), "+f"(a[i + 1]), "+f"(a[i + 2]), "+f"(a[i + 3])
#define ARBOR_F16(a, i) ARBOR_F4(a, i), ARBOR_F4(a, i + 4), ARBOR_F4(a, i + 8), ARBOR_F4(a, i + 12)

// s[64 x 128] (+)= Q[64 x 16] K[128 x 16]^T; both K-major in shared memory.
__device__ __forceinline__ void WgmmaQk(float (&s)[64], uint64_t desc_q, uint64_t desc_k,
                                        int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, "
      "%30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "
      "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, "
      "%58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : ARBOR_F16(s, 0), ARBOR_F16(s, 16), ARBOR_F16(s, 32), ARBOR_F16(s, 48)
      : "l"(desc_q), "l"(desc_k), "r"(accumulate));
}

// s[64 x 64] (+)= Q[64 x 16] K[64 x 16]^T; both K-major in shared memory.
__device__ __forceinline__ void WgmmaQk64(float (&s)[32], uint64_t desc_q, uint64_t desc_k,
                                          int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, "
      "%30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : ARBOR_F16(s, 0), ARBOR_F16(s, 16)
      : "l"(desc_q), "l"(desc_k), "r"(accumulate));
}

// o[64 x 64] += P[64 x 16] V[16 x 64]; P in registers, V N-major in shared memory.
__device__ __forceinline__ void WgmmaPv(float (&o)[32], const uint32_t (&p)[4], uint64_t desc_v) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, "
      "%30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : ARBOR_F16(o, 0), ARBOR_F16(o, 16)
      : "r"(p[0]), "r"(p[1]), "r"(p[2]), "r"(p[3]), "l"(desc_v), "r"(1));
}
#undef ARBOR_F16
#undef ARBOR_F4
#endif

#ifdef ARBOR_HAVE_WGMMA
// P's A fragments for keys 16 ks .. 16 ks + 15 (accumulator chunks 2 ks and
// 2 ks + 1) of the exponentials in s, for ks in [K0, K1).
template <int K0, int K1, int NS, int NP>
__device__ __forceinline__ void PackP(const float (&s)[NS], uint32_t (&p)[NP][4]) {
#pragma unroll
  for (int ks = K0; ks < K1; ++ks) {
#pragma unroll
    for (int r = 0; r < 4; ++r) p[ks][r] = PackBf16(s[8 * ks + 2 * r], s[8 * ks + 2 * r + 1]);
  }
}
// Keeps P's registers intact until here: a product still reads them.
template <int K0, int K1, int NP>
__device__ __forceinline__ void HoldP(uint32_t (&p)[NP][4]) {
#pragma unroll
  for (int ks = K0; ks < K1; ++ks) {
#pragma unroll
    for (int r = 0; r < 4; ++r) asm volatile("" : "+r"(p[ks][r])::"memory");
  }
}
#endif  // ARBOR_HAVE_WGMMA


#ifdef ARBOR_HAVE_WGMMA
// Zeros V rows `first`..kTileKeys - 1 of a tile (keys past the split's end:
// their P is 0, but stale pool bytes may be NaN). Called by one warpgroup,
// which then syncs.
template <int kTileKeys>
__device__ __forceinline__ void ZeroTileRowsFrom(uint32_t tile, int first, int wg) {
  const int t = threadIdx.x & 127;
  for (int i = first * 8 + t; i < kTileKeys * 8; i += 128) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(
                     tile + wgmma::Swizzled128(i / 8, i % 8)),
                 "r"(0)
                 : "memory");
  }
  FenceSharedForAsyncProxy();
  WarpgroupSync(wg);
}
#endif  // ARBOR_HAVE_WGMMA

template <int kVariant>
__global__ void __launch_bounds__(kThreads, kSm90CtasPerSm)
    GroupAttentionSm90Kernel(const __grid_constant__ CUtensorMap k_map,
                             const __grid_constant__ CUtensorMap v_map, const Bf16* __restrict__ q,
                             const int32_t* __restrict__ positions,
                             const int32_t* __restrict__ group_starts,
                             const int32_t* __restrict__ block_tables,
                             const int32_t* __restrict__ kv_len, float* __restrict__ o_part,
                             float* __restrict__ lse_part, Bf16* __restrict__ out_bf16,
                             int num_tokens, int num_heads, int max_blocks, float scale_log2,
                             int split_len, int tiles_per_group, int gqa) {
#ifdef ARBOR_HAVE_WGMMA
  using Cfg = Sm90Config<kVariant>;
  constexpr int kTileKeys = Cfg::kTileKeys, kStages = Cfg::kStages, kPages = Cfg::kPages;
  constexpr int kTileBytes = Cfg::kTileBytes;
  detail::AwaitPriorKernels();
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t full_bar = raw_addr;                   // [kStages] u64
  const uint32_t release_count = raw_addr + 8 * kStages;  // [kStages] u32
  int* row_pos = reinterpret_cast<int*>(smem_raw + 12 * kStages);
  const uint32_t q_smem = (raw_addr + Cfg::kHeaderBytes + 1023) & ~1023u;
  const uint32_t kv_smem = q_smem + kRows * kRowBytes;  // [stage][K | V] tiles

  const int group = blockIdx.x / tiles_per_group, tile = blockIdx.x % tiles_per_group;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int tok_begin = group_starts[group], tok_end = group_starts[group + 1];
  const int num_rows = (tok_end - tok_begin) * gqa;
  const int row0 = tile * kRows;
  if (row0 >= num_rows) return;
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int gq = lane >> 2, t4 = lane & 3;

  const int32_t* table = block_tables + static_cast<size_t>(group) * max_blocks;
  auto k_tile = [&](int it) { return kv_smem + (it % kStages) * 2 * kTileBytes; };
  auto v_tile = [&](int it) { return k_tile(it) + kTileBytes; };
  // Lane `lane` < kPages of any warp: the block of page `lane` of tile `it`
  // (0 past the table; only keys below the end are used).
  const int first_page = split * (split_len / kKvBlockSize);
  auto page_block = [&](int it) {
    const int page = first_page + it * kPages + lane;
    return lane < kPages && page < max_blocks ? table[page] : 0;
  };
  // Tile `it`'s K and V pages, by one whole warp; pages from `end` on are
  // boxes wholly outside the map (zeros).
  auto issue_tile = [&](int it, int block, int end) {
    const uint32_t bar = full_bar + 8 * (it % kStages);
    if (lane == 0) MbarArriveExpectTx(bar, 2 * kTileBytes);
    const int key = (first_page + it * kPages + lane) * kKvBlockSize;
    const int slot = key < end ? block * kKvBlockSize : -kKvBlockSize;
    if (lane < kPages) {
      TmaLoadPage(k_tile(it) + lane * kPageBytes, &k_map, kvh, slot, bar);
      TmaLoadPage(v_tile(it) + lane * kPageBytes, &v_map, kvh, slot, bar);
    }
  };
  // The first stages load before the rows' positions are known (they cut
  // the split's end further): the table and kv_len suffice.
  const int load_end = min(kv_len[group], (split + 1) * split_len);
  const int tiles_loaded =
      min(kStages, max(0, load_end - split * split_len + kTileKeys - 1) / kTileKeys);
  if (threadIdx.x < 32) {
    if (threadIdx.x == 0) {
      for (int st = 0; st < kStages; ++st) {
        MbarInit(full_bar + 8 * st, 1);
        asm volatile("st.shared.u32 [%0], 0;\n" ::"r"(release_count + 4 * st) : "memory");
      }
      FenceBarrierInit();
    }
    __syncwarp();
    for (int it = 0; it < tiles_loaded; ++it) issue_tile(it, page_block(it), load_end);
  }
  const detail::SplitKeys keys = detail::BeginGroupTile<kD>(
      row_pos, kRows, [&](int r, int ch) { return q_smem + wgmma::Swizzled128(r, ch); }, q,
      positions, tok_begin, row0, num_rows, num_heads, kvh, gqa, split, split_len, kv_len[group]);
  const int b = keys.begin, e = keys.end, min_pos = keys.min_pos;
  const int num_tiles = b < e ? (e - b + kTileKeys - 1) / kTileKeys : 0;
  // Q has landed (BeginGroupTile's copies) and is visible to wgmma.
  CpAsyncWait<0>();
  FenceSharedForAsyncProxy();
  __syncthreads();
  // A warpgroup whose rows are all padding has nothing to do; the warps that
  // stay release each stage they read.
  if (row0 + wg * 64 >= num_rows) return;
  const uint32_t releasing_warps = row0 + 64 < num_rows ? 8 : 4;

  const int my_row = wg * 64 + warp * 16 + gq;  // rows my_row (lo) and my_row + 8 (hi)
  const int pos_lo = row_pos[my_row], pos_hi = row_pos[my_row + 8];
  const uint32_t q_wg = q_smem + wg * 64 * kRowBytes;

  // Accumulator layout (per 8-column chunk i): [4i], [4i+1] row lo, columns
  // 8i + 2 t4 + {0, 1}; [4i+2], [4i+3] row hi.
  float o[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.0f;
  detail::SoftmaxRows st{NegInf(), NegInf(), 0.0f, 0.0f};
  // Tile `it` has landed; its V rows past the split's end are zeros.
  auto await_tile = [&](int it) {
    MbarWait(full_bar + 8 * (it % kStages), (it / kStages) & 1);
    const int key0 = b + it * kTileKeys;
    if (key0 + kTileKeys > e) ZeroTileRowsFrom<kTileKeys>(v_tile(it), e - key0, wg);
  };
  // This warp is done reading tile `it`'s stage; the last of the CTA's warps
  // to say so refills it with tile it + kStages (its first block:
  // `next_block`).
  auto release = [&](int it, int next_block) {
    uint32_t released = 0;
    if (lane == 0) released = AtomicIncAcqRel(release_count + 4 * (it % kStages)) + 1;
    released = __shfl_sync(0xffffffffu, released, 0);
    if (released % releasing_warps == 0 && it + kStages < num_tiles) {
      __syncwarp();
      issue_tile(it + kStages, next_block, e);
    }
  };

  if constexpr (Cfg::kPipelined) {
    // FlashAttention-3's overlap within a warpgroup: tile it's softmax runs
    // while tile it - 1's P V does; nothing is in flight across iterations.
    float s[32];
    uint32_t p_prev[16];  // P of tile it - 1 (bf16 pairs, A fragments)
    detail::TileShift shift{1.0f, 1.0f, 0.0f, 0.0f};
    auto issue_pv = [&](int it) {
      detail::ScaleRows<kD>(o, shift.alpha_lo, shift.alpha_hi);
      WgmmaFence();  // (P V takes o as an operand: the scaling comes first)
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        const uint32_t pk[4] = {p_prev[4 * ks], p_prev[4 * ks + 1], p_prev[4 * ks + 2],
                                p_prev[4 * ks + 3]};
        WgmmaPv(o, pk, wgmma::NMajorStepDesc(v_tile(it), ks));
      }
      WgmmaCommit();
    };
    int refill_block = page_block(kStages);  // tile kStages' first block
    auto qk = [&](int it) {
      await_tile(it);
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        WgmmaQk64(s, wgmma::KMajorStepDesc(q_wg, kk), wgmma::KMajorStepDesc(k_tile(it), kk), kk);
      }
      WgmmaCommit();
    };
    auto softmax = [&](int it, bool masked) {
      FenceRegisters(s);
      shift = detail::OnlineSoftmaxMax<kTileKeys / 8>(s, st, !masked, b + it * kTileKeys, e, pos_lo,
                                                      pos_hi, t4, scale_log2);
      detail::OnlineSoftmaxExp<0, kTileKeys / 8>(s, st, shift, scale_log2);
    };
    auto pack = [&] {
#pragma unroll
      for (int i = 0; i < 16; ++i) p_prev[i] = PackBf16(s[2 * i], s[2 * i + 1]);
    };
    // Tile it >= 1: S(it), then P V(it - 1) under tile it's softmax. The
    // tiles wholly visible to every row come first, then the masked ones,
    // so that no branch sits inside a product's flight.
    auto step = [&](int it, auto masked) {
      qk(it);
      issue_pv(it - 1);
      WgmmaWait<1>();
      softmax(it, decltype(masked)::value);
      WgmmaWait<0>();
      FenceRegisters(o);
      pack();
      release(it - 1, refill_block);
      refill_block = page_block(it + kStages);
    };
    const int visible_tiles = min(num_tiles, max(0, min(e, min_pos + 1) - b) / kTileKeys);
    if (num_tiles > 0) {
      qk(0);
      WgmmaWait<0>();
      softmax(0, visible_tiles == 0);
      pack();
      for (int it = 1; it < visible_tiles; ++it) step(it, std::false_type{});
      for (int it = max(1, visible_tiles); it < num_tiles; ++it) step(it, std::true_type{});
      issue_pv(num_tiles - 1);
      WgmmaWait<0>();
      FenceRegisters(o);
      HoldP<0, 4>(reinterpret_cast<uint32_t(&)[4][4]>(p_prev));
    }
  } else {
    float s[64];
    uint32_t p[8][4];

    for (int it = 0; it < num_tiles; ++it) {
      // The block-table entries of the tile this stage takes next, read early
      // (used after the tile's products).
      const int next_block = page_block(it + kStages);
      const int key0 = b + it * kTileKeys;
      await_tile(it);
      WgmmaFence();
  #pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        WgmmaQk(s, wgmma::KMajorStepDesc(q_wg, kk), wgmma::KMajorStepDesc(k_tile(it), kk), kk);
      }
      WgmmaCommit();
      WgmmaWait<0>();
      FenceRegisters(s);
      const bool all_visible = key0 + kTileKeys <= e && key0 + kTileKeys - 1 <= min_pos;
      const detail::TileShift shift = detail::OnlineSoftmaxMax<kTileKeys / 8>(
          s, st, all_visible, key0, e, pos_lo, pos_hi, t4, scale_log2);
      detail::ScaleRows<kD>(o, shift.alpha_lo, shift.alpha_hi);
      FenceRegisters(o);  // the scaling happens before the products read o
      if constexpr (Cfg::kSplitPv) {
        // P V on the tile's first 64 keys runs while the last 64's
        // exponentials are computed.
        detail::OnlineSoftmaxExp<0, 8>(s, st, shift, scale_log2);
        PackP<0, 4>(s, p);
        WgmmaFence();
  #pragma unroll
        for (int ks = 0; ks < 4; ++ks) WgmmaPv(o, p[ks], wgmma::NMajorStepDesc(v_tile(it), ks));
        WgmmaCommit();
        detail::OnlineSoftmaxExp<8, 16>(s, st, shift, scale_log2);
        PackP<4, 8>(s, p);
        WgmmaFence();
  #pragma unroll
        for (int ks = 4; ks < 8; ++ks) WgmmaPv(o, p[ks], wgmma::NMajorStepDesc(v_tile(it), ks));
        WgmmaCommit();
        WgmmaWait<0>();
        HoldP<0, 4>(p);
      } else {
        detail::OnlineSoftmaxExp<0, 16>(s, st, shift, scale_log2);
        PackP<0, 8>(s, p);
        WgmmaFence();
  #pragma unroll
        for (int ks = 0; ks < 8; ++ks) WgmmaPv(o, p[ks], wgmma::NMajorStepDesc(v_tile(it), ks));
        WgmmaCommit();
        WgmmaWait<0>();
      }
      FenceRegisters(o);
      release(it, next_block);
    }

  }

  // Stages loaded ahead that the rows' positions then cut off must land
  // before the CTA exits.
  if (threadIdx.x == 0) {
    for (int it = num_tiles; it < tiles_loaded; ++it) MbarWait(full_bar + 8 * it, 0);
  }

  detail::WriteGroupRows<kD>(
      o, st, row0 + my_row, t4, scale_log2,
      {o_part, lse_part, out_bf16, num_tokens, num_heads, split, tok_begin, num_rows, kvh, gqa});
#endif  // ARBOR_HAVE_WGMMA
}

// cuTensorMapEncodeTiled, through the runtime (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 TensorMapEncoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

// A paged K or V pool ([blocks, 16, num_kv_heads, 64] bf16) as a 3-D tensor
// {64, num_kv_heads, slots} read in boxes of one page of one head, 128-byte
// swizzled. The slot extent is the largest a coordinate can name: the pool's
// size is not known here, and the kernel only names slots of its tables.
cudaError_t PagedKvTensorMap(const Bf16* pool, int num_kv_heads, CUtensorMap* map) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = TensorMapEncoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint64_t dims[3] = {kD, static_cast<cuuint64_t>(num_kv_heads), cuuint64_t{1} << 31};
  const cuuint64_t strides[2] = {kRowBytes, static_cast<cuuint64_t>(num_kv_heads) * kRowBytes};
  const cuuint32_t box[3] = {kD, 1, kKvBlockSize};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult result =
      encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<Bf16*>(pool), dims, strides, box,
             element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return result == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

template <int kVariant>
cudaError_t LaunchVariant(dim3 grid, cudaStream_t stream, const CUtensorMap& k_map,
                          const CUtensorMap& v_map, const Bf16* q, const int32_t* positions,
                          const int32_t* group_starts, const int32_t* block_tables,
                          const int32_t* kv_len, float* o_part, float* lse_part, Bf16* out_bf16,
                          int num_tokens, const AttentionShape& s, float scale_log2, int split_len,
                          int tiles_per_group) {
  constexpr size_t kSmem = Sm90Config<kVariant>::kSmemBytes;
  const cudaError_t error = detail::AllowDynamicSmem<GroupAttentionSm90Kernel<kVariant>>(kSmem);
  if (error != cudaSuccess) return error;
  detail::LaunchKernel(GroupAttentionSm90Kernel<kVariant>, grid, kThreads, kSmem, stream, k_map,
                       v_map, q, positions, group_starts, block_tables, kv_len, o_part, lse_part,
                       out_bf16, num_tokens, s.num_heads, s.max_blocks, scale_log2, split_len,
                       tiles_per_group, s.num_heads / s.num_kv_heads);
  return cudaGetLastError();
}

}  // namespace


bool Sm90GroupAttentionSupported(int head_dim) {
  const DeviceCapability c = CurrentDeviceCapability();
  // The fatbinary's sm_90a code runs on compute capability 9.0 only.
  return head_dim == kD && c.major == 9 && c.minor == 0 && TensorMapEncoder() != nullptr;
}

cudaError_t LaunchGroupAttentionSm90(dim3 grid, cudaStream_t stream, const Bf16* q,
                                     const int32_t* positions, const int32_t* group_starts,
                                     const int32_t* block_tables, const int32_t* kv_len,
                                     const Bf16* k_cache, const Bf16* v_cache, float* o_part,
                                     float* lse_part, Bf16* out_bf16, int num_tokens,
                                     const AttentionShape& s, float scale_log2, int split_len,
                                     int tiles_per_group) {
  CUtensorMap k_map, v_map;
  cudaError_t error = PagedKvTensorMap(k_cache, s.num_kv_heads, &k_map);
  if (error == cudaSuccess) error = PagedKvTensorMap(v_cache, s.num_kv_heads, &v_map);
  if (error != cudaSuccess) return error;
  static const int variant = [] {
    const char* env = std::getenv("ARBOR_SM90_VARIANT");
    return env != nullptr ? std::atoi(env) : 0;
  }();
#define ARBOR_SM90(V)                                                                           \
  LaunchVariant<V>(grid, stream, k_map, v_map, q, positions, group_starts, block_tables, kv_len, \
                   o_part, lse_part, out_bf16, num_tokens, s, scale_log2, split_len,            \
                   tiles_per_group)
  if (variant == 1) return ARBOR_SM90(1);
  if (variant == 2) return ARBOR_SM90(2);
  return ARBOR_SM90(0);
#undef ARBOR_SM90
}

}  // namespace arbor::kernels
