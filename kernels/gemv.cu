// Small-batch linear layer (m <= kSmallBatchGemmMaxRows rows): y = x W^T with W in the Hugging
// Face Linear layout [n, k]. At decode batch sizes a GEMM is a matrix-vector
// product bound by reading W once; cuBLAS's tiles waste most of each tile on
// rows that do not exist, so this kernel streams W instead: one warp per
// output column n, every lane reading 16 bytes of W's row per iteration (four
// iterations in flight), the m rows of x read through the cache (they are
// small and every warp reads them), fp32 accumulation, one warp reduction.
// (Splitting k over several warps per column for narrow layers measured no
// faster on an H200: those layers are bound by their launch, not by W.)
// Up to 4 rows: beyond that the x reads (m per W word, from L1) rather than
// W bound the kernel, and cuBLAS's tiles stop wasting much.
#include "kernels/common.cuh"
#include "kernels/launchers.h"

namespace arbor::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kUnroll = 4;  // 128-bit loads in flight per lane

template <int M>
__device__ __forceinline__ void Accumulate(const uint4& w_word, const Bf16* __restrict__ x, int k,
                                           int chunk, float* acc) {
  float wf[8];
  detail::Unpack8(w_word, wf);
#pragma unroll
  for (int i = 0; i < M; ++i) {
    float xf[8];
    detail::Unpack8(__ldg(reinterpret_cast<const uint4*>(x + static_cast<size_t>(i) * k) + chunk),
                    xf);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i] = fmaf(wf[j], xf[j], acc[i]);
  }
}

// One warp per output column; a block holds kWarpsPerBlock columns.
template <int M, bool kFp32Out>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    SmallBatchGemmKernel(const Bf16* __restrict__ x,  // [M, k]
                         const Bf16* __restrict__ w,  // [n, k]
                         void* __restrict__ y,        // [M, n]
                         int n, int k) {
  const int lane = threadIdx.x & 31;
  const int col = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  if (col >= n) return;
  const uint4* w_row = reinterpret_cast<const uint4*>(w + static_cast<size_t>(col) * k);
  const int chunks = k / 8;  // 8 bf16 per 128-bit word; k % 8 == 0
  float acc[M];
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = 0.0f;
  int c = lane;
  for (; c + 32 * (kUnroll - 1) < chunks; c += 32 * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = __ldcs(w_row + c + 32 * u);  // streamed once
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) Accumulate<M>(wv[u], x, k, c + 32 * u, acc);
  }
  for (; c < chunks; c += 32) Accumulate<M>(__ldcs(w_row + c), x, k, c, acc);
#pragma unroll
  for (int i = 0; i < M; ++i) acc[i] = detail::WarpSum(acc[i]);
  if (lane != 0) return;
#pragma unroll
  for (int i = 0; i < M; ++i) {
    const size_t at = static_cast<size_t>(i) * n + col;
    if constexpr (kFp32Out) {
      static_cast<float*>(y)[at] = acc[i];
    } else {
      static_cast<__nv_bfloat16*>(y)[at] = __float2bfloat16(acc[i]);
    }
  }
}

template <int M>
cudaError_t Launch(const Bf16* x, const Bf16* w, void* y, int n, int k, bool fp32_out,
                   cudaStream_t stream) {
  const dim3 grid((n + kWarpsPerBlock - 1) / kWarpsPerBlock), block(kWarpsPerBlock * 32);
  if (fp32_out) {
    SmallBatchGemmKernel<M, true><<<grid, block, 0, stream>>>(x, w, y, n, k);
  } else {
    SmallBatchGemmKernel<M, false><<<grid, block, 0, stream>>>(x, w, y, n, k);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSmallBatchGemm(const Bf16* x, const Bf16* w, void* y, int m, int n, int k,
                                 bool fp32_out, cudaStream_t stream) {
  if (m < 1 || m > kSmallBatchGemmMaxRows || n < 1 || k < 8 || k % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  switch (m) {
    case 1:
      return Launch<1>(x, w, y, n, k, fp32_out, stream);
    case 2:
      return Launch<2>(x, w, y, n, k, fp32_out, stream);
    case 3:
      return Launch<3>(x, w, y, n, k, fp32_out, stream);
    default:
      return Launch<4>(x, w, y, n, k, fp32_out, stream);
  }
}

}  // namespace arbor::kernels
