// Small-batch linear layers (m <= kSmallBatchGemmMaxRows rows): y = x W^T with W in the Hugging
// Face Linear layout [n, k]. At decode batch sizes a GEMM is a matrix-vector
// product bound by reading W once; cuBLAS's tiles waste most of each tile on
// rows that do not exist, so this kernel streams W instead: one warp per
// output column, every lane reading 16 bytes of W's row per load (eight loads
// in flight), the m rows of x read through the cache (they are small and
// every warp reads them), fp32 accumulation, one warp reduction.
// (Splitting k over several warps per column for narrow layers measured no
// faster on an H200: those layers are bound by their launch, not by W.)
// Up to 4 rows: beyond that the x reads (m per W word, from L1) rather than
// W bound the kernel, and cuBLAS's tiles stop wasting much.
//
// A decode step is mostly launches of kernels too small to fill the GPU, so
// the kernel also absorbs its neighbours:
//  - prologue: the residual add + RMSNorm ahead of the projection, computed
//    by every CTA into shared memory (the rows are a few KiB);
//  - SwiGLU epilogue: a warp owns gate row j and up row inter + j, so the
//    gate/up activations never reach memory;
//  - Q/K/V epilogue: a warp owns the rotary pair (i, i + head_dim / 2) of one
//    head, so it applies RoPE itself and writes K and V straight into their
//    paged-cache slots.
// Before waiting for the previous kernel (see AwaitPriorKernels) each warp
// issues its first batch of W loads: weights are no kernel's output.
#include "kernels/common.cuh"
#include "kernels/device.h"

namespace arbor::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * 32;
constexpr int kUnroll = 8;  // 128-bit loads in flight per lane and W row

enum class Epilogue {
  kBf16,     // y bf16
  kFp32,     // y fp32
  kSwiGlu,   // y = silu(gate) * up, bf16
  kQkvRope,  // q rotated into y; k rotated and v into the paged cache
};

// Elements `at + i` and `at + i + half` of the K or V pool the epilogue was
// given: bf16 as they are, or rounded to fp8 (QkvRopeKv: one pair is set).
__device__ __forceinline__ void StoreKvPair(Bf16* bf16_pool, Fp8E4m3* fp8_pool, int64_t at, int i,
                                            int half, __nv_bfloat16 lo, __nv_bfloat16 hi) {
  if (bf16_pool != nullptr) {
    detail::StoreKv(bf16_pool + at + i, lo);
    detail::StoreKv(bf16_pool + at + i + half, hi);
  } else {
    detail::StoreKv(fp8_pool + at + i, lo);
    detail::StoreKv(fp8_pool + at + i + half, hi);
  }
}

// Accumulates W words against x row chunks; x is global (read through the
// read-only cache) or, after a prologue, shared.
template <int M, int R, bool kSharedX>
__device__ __forceinline__ void Accumulate(const uint4 (&w_word)[R], const Bf16* __restrict__ x,
                                           int k, int chunk, float (&acc)[R][M]) {
  float wf[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) detail::Unpack8(w_word[r], wf[r]);
#pragma unroll
  for (int i = 0; i < M; ++i) {
    const uint4* src = reinterpret_cast<const uint4*>(x + static_cast<size_t>(i) * k) + chunk;
    float xf[8];
    detail::Unpack8(kSharedX ? *src : __ldg(src), xf);
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[r][i] = fmaf(wf[r][j], xf[j], acc[r][i]);
    }
  }
}

// RmsNormResidualKernel's arithmetic for M rows of width k, into x_s: with
// kThreads threads (what that kernel uses at k = 2048) the sums are the same.
// Block 0 stores the updated residual.
template <int M>
__device__ __forceinline__ void NormRows(const SmallBatchInput& in, int k, Bf16* x_s) {
  __shared__ float scratch[32];
  const int vecs = k / 8;
  const bool store = blockIdx.x == 0;
#pragma unroll 1
  for (int i = 0; i < M; ++i) {
    const size_t row = static_cast<size_t>(i) * k;
    const Bf16* res = in.residual + row;
    bool zero = false;
    if (in.residual_rows != nullptr) {
      const int id = in.residual_rows[i];
      zero = id < 0 || id >= in.residual_rows_limit;
      res = in.residual + static_cast<size_t>(zero ? 0 : id) * k;
    }
    const uint4* r4 = reinterpret_cast<const uint4*>(res);
    const uint4* d4 = in.delta ? reinterpret_cast<const uint4*>(in.delta + row) : nullptr;
    uint4* x4 = reinterpret_cast<uint4*>(x_s + row);
    float sum_sq = 0.0f;
    for (int c = threadIdx.x; c < vecs; c += blockDim.x) {
      uint4 packed = zero ? make_uint4(0, 0, 0, 0) : r4[c];
      float r[8];
      detail::Unpack8(packed, r);
      if (d4) {
        float d[8];
        detail::Unpack8(d4[c], d);
#pragma unroll
        for (int j = 0; j < 8; ++j) r[j] += d[j];
        packed = detail::Pack8(r);
        detail::Unpack8(packed, r);
      }
      if (store) reinterpret_cast<uint4*>(in.residual_out + row)[c] = packed;
      x4[c] = packed;
#pragma unroll
      for (int j = 0; j < 8; ++j) sum_sq += r[j] * r[j];
    }
    const float inv_rms = rsqrtf(detail::BlockSum(sum_sq, scratch) / k + in.eps);
    const uint4* w4 = reinterpret_cast<const uint4*>(in.norm_weight);
    for (int c = threadIdx.x; c < vecs; c += blockDim.x) {
      float r[8], w[8];
      detail::Unpack8(x4[c], r);  // this thread's own chunk: no barrier needed
      detail::Unpack8(__ldg(w4 + c), w);
#pragma unroll
      for (int j = 0; j < 8; ++j) r[j] = r[j] * inv_rms * w[j];
      x4[c] = detail::Pack8(r);
    }
  }
  __syncthreads();
}

__device__ __forceinline__ float RoundBf16(float v) {
  return __bfloat162float(__float2bfloat16(v));
}

// One warp per output column (kBf16, kFp32), gate/up row pair (kSwiGlu) or
// rotary pair (kQkvRope); `n` counts those.
template <int M, Epilogue kEpilogue, bool kNorm>
__global__ void __launch_bounds__(kThreads)
    SmallBatchGemmKernel(SmallBatchInput in,
                         const Bf16* __restrict__ w,  // [n, k]; [2n, k] for kSwiGlu and kQkvRope
                         void* __restrict__ y, QkvRopeKv rope, int n, int k) {
  constexpr int R = kEpilogue == Epilogue::kSwiGlu || kEpilogue == Epilogue::kQkvRope ? 2 : 1;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x & 31;
  const int col = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int chunks = k / 8;  // 8 bf16 per 128-bit word; k % 8 == 0
  // The W rows of this warp.
  int rows[R];
  if constexpr (kEpilogue == Epilogue::kQkvRope) {
    const int half = rope.head_dim / 2;
    rows[0] = (col / half) * rope.head_dim + col % half;
    rows[1] = rows[0] + half;
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) rows[r] = r * n + col;
  }
  const uint4* w_rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    w_rows[r] = reinterpret_cast<const uint4*>(w + static_cast<size_t>(rows[r]) * k);
  }
  // The weights are no kernel's output: the first batch of W words is
  // loaded before waiting for the previous kernel, so that it streams in
  // while that kernel drains.
  int c = lane;
  uint4 wv[kUnroll][R];
  auto load_batch = [&](int at) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int r = 0; r < R; ++r) wv[u][r] = __ldcs(w_rows[r] + at + 32 * u);  // streamed once
    }
  };
  const bool batched = c + 32 * (kUnroll - 1) < chunks;
  if (col < n && batched) load_batch(c);
  detail::AwaitPriorKernels();
  const Bf16* x = in.x;
  if constexpr (kNorm) {
    Bf16* x_s = reinterpret_cast<Bf16*>(smem_raw);
    NormRows<M>(in, k, x_s);
    x = x_s;
  }
  if (col >= n) return;

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;
  }
  while (c + 32 * (kUnroll - 1) < chunks) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) Accumulate<M, R, kNorm>(wv[u], x, k, c + 32 * u, acc);
    c += 32 * kUnroll;
    if (c + 32 * (kUnroll - 1) < chunks) load_batch(c);
  }
  for (; c < chunks; c += 32) {
    uint4 tail[R];
#pragma unroll
    for (int r = 0; r < R; ++r) tail[r] = __ldcs(w_rows[r] + c);
    Accumulate<M, R, kNorm>(tail, x, k, c, acc);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = detail::WarpSum(acc[r][i]);
  }

  if constexpr (kEpilogue == Epilogue::kQkvRope) {
    // Lane i < M finishes token i: its pair, rotated as RopeKernel rotates
    // it, to q or to the token's K/V slot (KvAppendKernel's rules).
    if (lane >= M) return;
    float a = 0.0f, b = 0.0f;
#pragma unroll
    for (int i = 0; i < M; ++i) {
      if (lane == i) {
        a = acc[0][i];
        b = acc[1][i];
      }
    }
    const int t = lane;
    a = RoundBf16(a);
    b = RoundBf16(b);
    if (rope.bias != nullptr) {  // GEMM, then AddBias: both rounded
      a = RoundBf16(a +
                    __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(rope.bias)[rows[0]]));
      b = RoundBf16(b +
                    __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(rope.bias)[rows[1]]));
    }
    const int half = rope.head_dim / 2;
    const int head = col / half, i = col % half;
    const int kv_dim = rope.num_kv_heads * rope.head_dim;
    if (head < rope.num_heads + rope.num_kv_heads) {
      const int pos_int = rope.positions[t];
      __nv_bfloat16 lo, hi;
      detail::RotatePair(a, b, static_cast<float>(pos_int), rope.inv_freq[i], &lo, &hi);
      if (head < rope.num_heads) {
        __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(y) +
                             (static_cast<size_t>(t) * rope.num_heads + head) * rope.head_dim;
        dst[i] = lo;
        dst[i + half] = hi;
      } else {
        const int64_t slot =
            detail::KvSlot(rope.block_tables, detail::SequenceOf(rope.seq_starts, rope.num_seqs, t),
                           pos_int, rope.max_blocks);
        if (slot < 0) return;
        StoreKvPair(rope.k_cache, rope.k_cache_fp8,
                    slot * kv_dim + (head - rope.num_heads) * rope.head_dim, i, half, lo, hi);
      }
    } else {
      const int64_t slot =
          detail::KvSlot(rope.block_tables, detail::SequenceOf(rope.seq_starts, rope.num_seqs, t),
                         rope.positions[t], rope.max_blocks);
      if (slot < 0) return;
      StoreKvPair(rope.v_cache, rope.v_cache_fp8,
                  slot * kv_dim + (head - rope.num_heads - rope.num_kv_heads) * rope.head_dim, i,
                  half, __float2bfloat16(a), __float2bfloat16(b));
    }
    return;
  }
  if (lane != 0) return;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    const size_t at = static_cast<size_t>(i) * n + col;
    if constexpr (kEpilogue == Epilogue::kFp32) {
      static_cast<float*>(y)[at] = acc[0][i];
    } else if constexpr (kEpilogue == Epilogue::kSwiGlu) {
      // Gate and up rounded to bf16 first, as GEMM + SwiGlu store them.
      static_cast<__nv_bfloat16*>(y)[at] =
          __float2bfloat16(detail::Silu(RoundBf16(acc[0][i])) * RoundBf16(acc[1][i]));
    } else {
      static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16(acc[0][i]);
    }
  }
}

bool ValidInput(const SmallBatchInput& in, int m, int k) {
  if (in.norm_weight == nullptr) return in.x != nullptr && detail::Aligned16(in.x);
  if (in.residual_rows != nullptr && in.residual_rows_limit < 1) return false;
  return in.residual != nullptr && in.residual_out != nullptr && in.residual != in.residual_out &&
         detail::Aligned16(in.residual) && detail::Aligned16(in.residual_out) &&
         detail::Aligned16(in.norm_weight) &&
         (in.delta == nullptr || detail::Aligned16(in.delta)) && SmallBatchNormFits(m, k);
}

template <Epilogue kEpilogue, bool kNorm>
void LaunchRows(const SmallBatchInput& in, const Bf16* w, void* y, const QkvRopeKv& rope, int m,
                int n, int k, cudaStream_t stream) {
  const dim3 grid((n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const size_t smem = kNorm ? static_cast<size_t>(m) * k * sizeof(Bf16) : 0;
  switch (m) {
    case 1:
      detail::LaunchKernel(SmallBatchGemmKernel<1, kEpilogue, kNorm>, grid, kThreads, smem, stream,
                           in, w, y, rope, n, k);
      break;
    case 2:
      detail::LaunchKernel(SmallBatchGemmKernel<2, kEpilogue, kNorm>, grid, kThreads, smem, stream,
                           in, w, y, rope, n, k);
      break;
    case 3:
      detail::LaunchKernel(SmallBatchGemmKernel<3, kEpilogue, kNorm>, grid, kThreads, smem, stream,
                           in, w, y, rope, n, k);
      break;
    default:
      detail::LaunchKernel(SmallBatchGemmKernel<4, kEpilogue, kNorm>, grid, kThreads, smem, stream,
                           in, w, y, rope, n, k);
      break;
  }
}

bool ValidShape(int m, int n, int k) {
  return m >= 1 && m <= kSmallBatchGemmMaxRows && n >= 1 && k >= 8 && k % 8 == 0;
}

}  // namespace

bool SmallBatchNormFits(int m, int k) {
  return static_cast<size_t>(m) * k * sizeof(Bf16) <= kSmallBatchNormMaxBytes;
}

KernelStatus SmallBatchGemm(const Bf16* x, const Bf16* w, void* y, int m, int n, int k,
                            bool fp32_out, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  SmallBatchInput in;
  in.x = x;
  if (!ValidShape(m, n, k) || !ValidInput(in, m, k)) return cudaErrorInvalidValue;
  if (fp32_out) {
    LaunchRows<Epilogue::kFp32, false>(in, w, y, QkvRopeKv{}, m, n, k, stream);
  } else {
    LaunchRows<Epilogue::kBf16, false>(in, w, y, QkvRopeKv{}, m, n, k, stream);
  }
  return cudaGetLastError();
}

KernelStatus SmallBatchGemm(const SmallBatchInput& in, const Bf16* w, void* y, int m, int n, int k,
                            bool fp32_out, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (in.norm_weight == nullptr)
    return SmallBatchGemm(in.x, w, y, m, n, k, fp32_out, opaque_stream);
  if (!ValidShape(m, n, k) || !ValidInput(in, m, k)) return cudaErrorInvalidValue;
  if (fp32_out) {
    LaunchRows<Epilogue::kFp32, true>(in, w, y, QkvRopeKv{}, m, n, k, stream);
  } else {
    LaunchRows<Epilogue::kBf16, true>(in, w, y, QkvRopeKv{}, m, n, k, stream);
  }
  return cudaGetLastError();
}

KernelStatus SmallBatchGateUpSwiGlu(const SmallBatchInput& in, const Bf16* w_gate_up, Bf16* out,
                                    int m, int inter, int k, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (!ValidShape(m, inter, k) || !ValidInput(in, m, k)) return cudaErrorInvalidValue;
  if (in.norm_weight != nullptr) {
    LaunchRows<Epilogue::kSwiGlu, true>(in, w_gate_up, out, QkvRopeKv{}, m, inter, k, stream);
  } else {
    LaunchRows<Epilogue::kSwiGlu, false>(in, w_gate_up, out, QkvRopeKv{}, m, inter, k, stream);
  }
  return cudaGetLastError();
}

KernelStatus SmallBatchQkvRope(const SmallBatchInput& in, const Bf16* w_qkv, Bf16* q,
                               const QkvRopeKv& rope, int m, int k, Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  const int pairs = (rope.num_heads + 2 * rope.num_kv_heads) * rope.head_dim / 2;
  if (!ValidShape(m, pairs, k) || !ValidInput(in, m, k) || rope.num_heads < 1 ||
      rope.num_kv_heads < 1 || rope.head_dim < 2 || rope.head_dim % 2 != 0 || rope.num_seqs < 1 ||
      rope.max_blocks < 1 || rope.positions == nullptr || rope.inv_freq == nullptr ||
      rope.seq_starts == nullptr || rope.block_tables == nullptr ||
      (rope.k_cache == nullptr) != (rope.v_cache == nullptr) ||
      (rope.k_cache_fp8 == nullptr) != (rope.v_cache_fp8 == nullptr) ||
      (rope.k_cache == nullptr) == (rope.k_cache_fp8 == nullptr)) {  // exactly one pool pair
    return cudaErrorInvalidValue;
  }
  if (in.norm_weight != nullptr) {
    LaunchRows<Epilogue::kQkvRope, true>(in, w_qkv, q, rope, m, pairs, k, stream);
  } else {
    LaunchRows<Epilogue::kQkvRope, false>(in, w_qkv, q, rope, m, pairs, k, stream);
  }
  return cudaGetLastError();
}

}  // namespace arbor::kernels
