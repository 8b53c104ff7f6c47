// Group attention on Hopper's warpgroup tensor cores (wgmma), head_dim 64:
// the cascade's shared-prefix stage and prefill on sm_90. Same contract and
// the same online softmax as GroupAttentionMmaKernel (attention.cu), which stays
// the path for other head sizes and GPUs.
//
// A CTA is two warpgroups of 64 query rows each. K/V tiles of 128
// keys land in shared memory by cp.async (paged KV rules out one TMA box per
// tile) in the 128-byte-swizzled layout wgmma reads without bank conflicts:
//   S = Q K^T  wgmma m64n128k16, Q and K both K-major from shared memory;
//   O += P V   wgmma m64n64k16, P from registers (the S accumulators are
//              already its A fragments), V N-major from shared memory.
// Each warpgroup runs one product at a time; the tensor cores stay busy
// through the other warpgroups on the SM: two CTAs of two warpgroups each,
// at 128 registers and three K/V stages. (Measured and dropped on the H200,
// docs/KERNELS.md: a product issued under the next tile's softmax, four
// warpgroups sharing each tile, exp2 in paired bf16.)

#include "kernels/attention_sm90.h"
#include "kernels/common.cuh"
#include "kernels/group_attention.cuh"
#include "kernels/wgmma_layout.h"

namespace arbor::kernels {
namespace {

using detail::CpAsync16L2Run256;
using detail::CpAsyncCommit;
using detail::CpAsyncWait;
using detail::NegInf;
using detail::PackBf16;

constexpr int kD = 64;
constexpr int kRowBytes = wgmma::kRowBytes;  // one swizzled row per key or query row
static_assert(kRowBytes == kD * 2);
constexpr int kTileKeys = kSm90TileKeys;
constexpr int kTileBytes = kTileKeys * kRowBytes;
constexpr int kWarpgroups = 2;
constexpr int kThreads = 128 * kWarpgroups;
constexpr int kRows = kSm90GroupRows;
// Three stages fit two CTAs per SM (2 x 112.5 KiB of the 228) only without
// alignment slack: the kernel relies on the dynamic shared memory starting
// on the 1024-byte boundary swizzled tiles need (it has no static shared
// memory; the start is checked).
constexpr int kStages = 3;
constexpr size_t kSmemBytes = kRows * (kRowBytes + sizeof(int)) + kStages * 2 * kTileBytes;
static_assert(kRows == 64 * kWarpgroups);
static_assert(kTileKeys == 128, "S = Q K^T is one m64n128 product per k-step");

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ARBOR_HAVE_WGMMA 1

constexpr int kChunks = kRowBytes / 16;

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
// Shared memory written by the generic proxy (cp.async) before wgmma reads it.
__device__ __forceinline__ void FenceSharedForAsyncProxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
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
// One tile's online softmax (group_attention.cuh), then exp2 of the scores
// as P's A fragments: for keys 16 ks .. 16 ks + 15, accumulator chunks 2 ks
// and 2 ks + 1.
__device__ __forceinline__ void SoftmaxToP(float (&s)[64], uint32_t (&p)[8][4],
                                           detail::SoftmaxRows& st, float& alpha_lo,
                                           float& alpha_hi, bool all_visible, int key0, int e,
                                           int pos_lo, int pos_hi, int t4, float scale_log2) {
  detail::OnlineSoftmaxTile<kTileKeys / 8>(s, st, alpha_lo, alpha_hi, all_visible, key0, e, pos_lo,
                                           pos_hi, t4, scale_log2);
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) {
#pragma unroll
    for (int r = 0; r < 4; ++r) p[ks][r] = PackBf16(s[8 * ks + 2 * r], s[8 * ks + 2 * r + 1]);
  }
}
#endif  // ARBOR_HAVE_WGMMA

__global__ void __launch_bounds__(kThreads, kSm90CtasPerSm)
    GroupAttentionSm90Kernel(const Bf16* __restrict__ q, const int32_t* __restrict__ positions,
                             const int32_t* __restrict__ group_starts,
                             const int32_t* __restrict__ block_tables,
                             const int32_t* __restrict__ kv_len, const Bf16* __restrict__ k_cache,
                             const Bf16* __restrict__ v_cache, float* __restrict__ o_part,
                             float* __restrict__ lse_part, Bf16* __restrict__ out_bf16,
                             int num_tokens, int num_heads, int num_kv_heads, int max_blocks,
                             float scale_log2, int split_len, int tiles_per_group, int gqa) {
#ifdef ARBOR_HAVE_WGMMA
  detail::AwaitPriorKernels();
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  if ((raw_addr & 1023u) != 0) __trap();  // see kSmemBytes
  const uint32_t q_smem = raw_addr;
  const uint32_t kv_smem = q_smem + kRows * kRowBytes;  // [stage][K | V] tiles
  int* row_pos = reinterpret_cast<int*>(smem_raw + (kv_smem - raw_addr) + kStages * 2 * kTileBytes);

  const int group = blockIdx.x / tiles_per_group, tile = blockIdx.x % tiles_per_group;
  const int kvh = blockIdx.y, split = blockIdx.z;
  const int tok_begin = group_starts[group], tok_end = group_starts[group + 1];
  const int num_rows = (tok_end - tok_begin) * gqa;
  const int row0 = tile * kRows;
  if (row0 >= num_rows) return;
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int gq = lane >> 2, t4 = lane & 3;
  // A warpgroup whose rows are all padding copies tiles but skips the math.
  const bool wg_has_rows = row0 + wg * 64 < num_rows;

  const detail::SplitKeys keys = detail::BeginGroupTile<kD>(
      row_pos, kRows, [&](int r, int ch) { return q_smem + wgmma::Swizzled128(r, ch); }, q,
      positions, tok_begin, row0, num_rows, num_heads, kvh, gqa, split, split_len, kv_len[group]);
  const int b = keys.begin, e = keys.end, min_pos = keys.min_pos;

  // Each thread copies 16-byte chunk `ch` of keys j0 + kKeysPerPass * i of
  // every tile: its swizzled destinations and its K/V column offsets are
  // fixed, so a pass costs a block-table lookup and the slot's offset (the
  // copies were most of the loop's instructions when recomputed per chunk).
  constexpr int kKeysPerPass = kThreads / kChunks, kPasses = kTileKeys / kKeysPerPass;
  static_assert(kKeysPerPass % 8 == 0, "a pass keeps the row's swizzle phase");
  const int32_t* table = block_tables + static_cast<size_t>(group) * max_blocks;
  const uint32_t slot_stride = static_cast<uint32_t>(num_kv_heads) * kD;
  const int ch = threadIdx.x % kChunks, j0 = threadIdx.x / kChunks;
  const uint32_t dst0 = wgmma::Swizzled128(j0, ch);
  const uint32_t col = kvh * kD + ch * 8;
  auto k_tile = [&](int it) { return kv_smem + (it % kStages) * 2 * kTileBytes; };
  auto v_tile = [&](int it) { return k_tile(it) + kTileBytes; };
  const int num_tiles = b < e ? (e - b + kTileKeys - 1) / kTileKeys : 0;
  // Tile `it`'s copies as one commit group; an empty group past the last
  // tile, so that the groups pending always count the same.
  auto load_tile = [&](int it) {
    if (it < num_tiles) {
      const int key_base = b + it * kTileKeys + j0;
      const uint32_t k_dst = k_tile(it) + dst0, v_dst = k_dst + kTileBytes;
#pragma unroll
      for (int i = 0; i < kPasses; ++i) {
        const uint32_t key = key_base + i * kKeysPerPass;  // >= 0
        const bool valid = key < static_cast<uint32_t>(e);
        const uint32_t slot =
            valid ? static_cast<uint32_t>(table[key / kKvBlockSize]) * kKvBlockSize +
                        key % kKvBlockSize
                  : 0;
        const uint64_t off = static_cast<uint64_t>(slot) * slot_stride + col;
        const uint32_t dst = i * kKeysPerPass * kRowBytes;
        CpAsync16L2Run256(k_dst + dst, k_cache + off, valid);
        CpAsync16L2Run256(v_dst + dst, v_cache + off, valid);
      }
    }
    CpAsyncCommit();
  };
  for (int it = 0; it < kStages - 1; ++it) load_tile(it);

  const int my_row = wg * 64 + warp * 16 + gq;  // rows my_row (lo) and my_row + 8 (hi)
  const int pos_lo = row_pos[my_row], pos_hi = row_pos[my_row + 8];
  const uint32_t q_wg = q_smem + wg * 64 * kRowBytes;

  // Accumulator layout (per 8-column chunk i): [4i], [4i+1] row lo, columns
  // 8i + 2 t4 + {0, 1}; [4i+2], [4i+3] row hi.
  float o[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.0f;
  detail::SoftmaxRows st{NegInf(), NegInf(), 0.0f, 0.0f};
  float s[64];
  uint32_t p[8][4];
  float alpha_lo, alpha_hi;

  for (int it = 0; it < num_tiles; ++it) {
    // Tile it has landed and is visible to wgmma (at most kStages - 2 newer
    // groups pending); every warpgroup is past tile it - 1, whose stage the
    // copies of tile it + kStages - 1 overwrite.
    CpAsyncWait<kStages - 2>();
    FenceSharedForAsyncProxy();
    __syncthreads();
    load_tile(it + kStages - 1);
    if (!wg_has_rows) continue;
    const int key0 = b + it * kTileKeys;
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      WgmmaQk(s, wgmma::KMajorStepDesc(q_wg, kk), wgmma::KMajorStepDesc(k_tile(it), kk), kk);
    }
    WgmmaCommit();
    WgmmaWait<0>();
    FenceRegisters(s);
    const bool all_visible = key0 + kTileKeys <= e && key0 + kTileKeys - 1 <= min_pos;
    SoftmaxToP(s, p, st, alpha_lo, alpha_hi, all_visible, key0, e, pos_lo, pos_hi, t4, scale_log2);
    detail::ScaleRows<kD>(o, alpha_lo, alpha_hi);
    FenceRegisters(o);  // the scaling happens before the products read o
    WgmmaFence();
#pragma unroll
    for (int ks = 0; ks < 8; ++ks) WgmmaPv(o, p[ks], wgmma::NMajorStepDesc(v_tile(it), ks));
    WgmmaCommit();
    WgmmaWait<0>();
    FenceRegisters(o);
  }
  CpAsyncWait<0>();

  detail::WriteGroupRows<kD>(
      o, st, row0 + my_row, t4, scale_log2,
      {o_part, lse_part, out_bf16, num_tokens, num_heads, split, tok_begin, num_rows, kvh, gqa});
#endif  // ARBOR_HAVE_WGMMA
}

}  // namespace

bool Sm90GroupAttentionSupported(int head_dim) {
  const DeviceCapability c = CurrentDeviceCapability();
  // The fatbinary's sm_90a code runs on compute capability 9.0 only.
  return head_dim == kD && c.major == 9 && c.minor == 0;
}

cudaError_t LaunchGroupAttentionSm90(dim3 grid, cudaStream_t stream, const Bf16* q,
                                     const int32_t* positions, const int32_t* group_starts,
                                     const int32_t* block_tables, const int32_t* kv_len,
                                     const Bf16* k_cache, const Bf16* v_cache, float* o_part,
                                     float* lse_part, Bf16* out_bf16, int num_tokens,
                                     const AttentionShape& s, float scale_log2, int split_len,
                                     int tiles_per_group) {
  const cudaError_t error = detail::AllowDynamicSmem<GroupAttentionSm90Kernel>(kSmemBytes);
  if (error != cudaSuccess) return error;
  detail::LaunchKernel(GroupAttentionSm90Kernel, grid, kThreads, kSmemBytes, stream, q, positions,
                       group_starts, block_tables, kv_len, k_cache, v_cache, o_part, lse_part,
                       out_bf16, num_tokens, s.num_heads, s.num_kv_heads, s.max_blocks, scale_log2,
                       split_len, tiles_per_group, s.num_heads / s.num_kv_heads);
  return cudaGetLastError();
}

}  // namespace arbor::kernels
