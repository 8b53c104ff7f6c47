// GPU sampler: one block per row, bit-identical to reference::Sample.
// Integer masses (kernels/sampling_math.h) make every sum exact, so the
// top-k / top-p cuts are found by radix selection over the 64-bit keys
// (logit, id) without a sort, and the draw walks the kept tokens in id order
// through a block-wide prefix sum.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/device.h"
#include "kernels/sampling_math.h"

namespace arbor::kernels {
namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSampleWarps = kSampleThreads / 32;

struct SampleShared {
  unsigned long long hist[256];
  unsigned int hist_count[256];  // elements per bucket
  int bucket_id[256];            // an id that landed in the bucket
  int selected_done;
  unsigned long long warp_u64[kSampleWarps];
  float stats_scratch[3 * kSampleWarps];  // BlockCombineStats
  unsigned long long selected_prefix;
  unsigned long long selected_need;
  int result_token;
};

__device__ __forceinline__ unsigned long long WarpSumU64(unsigned long long v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ unsigned long long BlockSumU64(unsigned long long v, SampleShared& sh) {
  v = WarpSumU64(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.warp_u64[threadIdx.x >> 5] = v;
  __syncthreads();
  v = (threadIdx.x & 31) < kSampleWarps ? sh.warp_u64[threadIdx.x & 31] : 0ull;
  return WarpSumU64(v);
}

// Calls f(i, logit) for every id this thread owns, with 128-bit loads when
// the row is aligned. Order within a thread is irrelevant to all callers.
template <typename F>
__device__ __forceinline__ void ForEachLogit(const float* __restrict__ logits, int vocab, F f) {
  int begin = 0;
  if ((reinterpret_cast<uintptr_t>(logits) & 15) == 0) {
    const int vec = vocab / 4;
    const float4* l4 = reinterpret_cast<const float4*>(logits);
    for (int i = threadIdx.x; i < vec; i += blockDim.x) {
      const float4 x = __ldg(l4 + i);
      f(4 * i, x.x);
      f(4 * i + 1, x.y);
      f(4 * i + 2, x.z);
      f(4 * i + 3, x.w);
    }
    begin = vec * 4;
  }
  for (int i = begin + threadIdx.x; i < vocab; i += blockDim.x) f(i, __ldg(logits + i));
}

// hist[bucket] += w, summed over the lanes of the warp that share a bucket
// first (most lanes share one in the early radix passes: without this the
// shared-memory atomics serialise). bucket < 0: nothing to add. All 32 lanes
// must call it.
__device__ __forceinline__ void WarpAggregatedAdd(SampleShared& sh, int bucket,
                                                  unsigned long long w, int id) {
  unsigned pending = __ballot_sync(0xffffffffu, bucket >= 0);
  while (pending != 0) {
    const int leader = __ffs(pending) - 1;
    const int b = __shfl_sync(0xffffffffu, bucket, leader);
    const bool mine = bucket == b;
    const unsigned members = __ballot_sync(0xffffffffu, mine);
    unsigned long long sum = mine ? w : 0ull;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if ((threadIdx.x & 31) == leader) {
      atomicAdd(&sh.hist[b], sum);
      atomicAdd(&sh.hist_count[b], static_cast<unsigned>(__popc(members)));
      atomicExch(&sh.bucket_id[b], id);  // meaningful only when the bucket gets one element
    }
    pending &= ~members;
  }
}

// Radix selection of the key K* such that the weight (count or mass) of keys
// strictly above K* is < need <= the weight of keys >= K*, among keys >= floor.
template <bool kByMass>
__device__ uint64_t RadixSelect(const float* __restrict__ logits, int vocab, float max_logit,
                                float inv_t, uint64_t floor_key, unsigned long long need,
                                SampleShared& sh) {
  uint64_t prefix = 0, mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
      sh.hist[i] = 0;
      sh.hist_count[i] = 0;
    }
    __syncthreads();
    // Uniform trip count so that whole warps reach the aggregated add.
    for (int i0 = 0; i0 < vocab; i0 += blockDim.x) {
      const int i = i0 + threadIdx.x;
      int bucket = -1;
      unsigned long long w = 0;
      if (i < vocab) {
        const float l = __ldg(logits + i);
        const uint64_t key = SamplingKey(l, i);
        if ((key & mask) == prefix && key >= floor_key) {
          w = kByMass ? SamplingMass(l, max_logit, inv_t) : 1ull;
          if (w != 0) bucket = static_cast<int>((key >> shift) & 0xFF);
        }
      }
      WarpAggregatedAdd(sh, bucket, w, i);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long above = 0;
      int bucket = 0;
      for (int bkt = 255; bkt >= 0; --bkt) {
        if (above + sh.hist[bkt] >= need) {
          bucket = bkt;
          break;
        }
        above += sh.hist[bkt];
      }
      sh.selected_prefix = prefix | (static_cast<uint64_t>(bucket) << shift);
      sh.selected_need = need - above;
      // Once the logit bits are fixed (shift 32), a bucket of one element is
      // that element: its id completes the key without the 4 id passes,
      // which only break ties between equal logits.
      sh.selected_done = 0;
      if (shift <= 32 && sh.hist_count[bucket] == 1) {
        sh.selected_prefix = (sh.selected_prefix & 0xFFFFFFFF00000000ull) |
                             static_cast<uint64_t>(~static_cast<uint32_t>(sh.bucket_id[bucket]));
        sh.selected_done = 1;
      }
    }
    __syncthreads();
    prefix = sh.selected_prefix;
    need = sh.selected_need;
    mask |= 0xFFull << shift;
    if (sh.selected_done) break;
  }
  return prefix;
}

// A row's softmax statistics over a range of its ids: the max, its lowest
// id, and the sum of exp(logit - max).
struct RowStats {
  float best;
  float sum;
  int id;
  int pad;
};

__device__ __forceinline__ void CombineStats(float& m, float& z, int& id, float om, float oz,
                                             int oid) {
  const float mx = fmaxf(m, om);
  if (mx != -INFINITY) z = z * __expf(m - mx) + oz * __expf(om - mx);
  if (om > m || (om == m && oid < id)) id = oid;
  m = mx;
}

// Folds logit l of id i into a thread's running statistics.
__device__ __forceinline__ void AddLogit(float& best, float& sum, int& best_id, int i, float l) {
  if (l > best) {
    sum = sum * __expf(best - l) + 1.0f;  // exp(-inf) = 0 on the first one
    best = l;
    best_id = i;
  } else if (l > -INFINITY) {  // -inf (masked) adds nothing; NaN is ignored
    sum += __expf(l - best);
    if (l == best && i < best_id) best_id = i;
  }
}

// Combines every thread's statistics; every thread gets the block's.
// `scratch` holds 3 * (blockDim.x / 32) words.
__device__ __forceinline__ void BlockCombineStats(float& best, float& sum, int& best_id,
                                                  float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, best, offset);
    const float oz = __shfl_xor_sync(0xffffffffu, sum, offset);
    const int oid = __shfl_xor_sync(0xffffffffu, best_id, offset);
    CombineStats(best, sum, best_id, om, oz, oid);
  }
  float* warp_best = scratch;
  float* warp_sum = scratch + warps;
  int* warp_id = reinterpret_cast<int*>(scratch + 2 * warps);
  if (lane == 0) {
    warp_best[warp] = best;
    warp_sum[warp] = sum;
    warp_id[warp] = best_id;
  }
  __syncthreads();
  best = warp_best[0];
  sum = warp_sum[0];
  best_id = warp_id[0];
  for (int w = 1; w < warps; ++w)
    CombineStats(best, sum, best_id, warp_best[w], warp_sum[w], warp_id[w]);
}

constexpr int kStatsThreads = 256;

// Few rows: the first pass of SampleKernel spread over many CTAs, one per
// (chunk of ids, row); SampleKernel then combines the chunks' statistics.
__global__ void __launch_bounds__(kStatsThreads)
    RowStatsKernel(const float* __restrict__ all_logits, RowStats* __restrict__ partials, int vocab,
                   int chunk_len) {
  detail::AwaitPriorKernels();
  __shared__ float scratch[3 * kStatsThreads / 32];
  const int row = blockIdx.y, chunk = blockIdx.x;
  const float* logits = all_logits + static_cast<size_t>(row) * vocab;
  const int begin = chunk * chunk_len, end = min(vocab, begin + chunk_len);
  float best = -INFINITY, sum = 0.0f;
  int best_id = vocab;
  for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
    AddLogit(best, sum, best_id, i, __ldg(logits + i));
  }
  BlockCombineStats(best, sum, best_id, scratch);
  if (threadIdx.x == 0)
    partials[static_cast<size_t>(row) * gridDim.x + chunk] = {best, sum, best_id, 0};
}

__global__ void __launch_bounds__(kSampleThreads)
    SampleKernel(const float* __restrict__ all_logits, const SampleParams* __restrict__ params,
                 const RowStats* __restrict__ partials, int num_chunks,
                 int32_t* __restrict__ tokens, float* __restrict__ logprobs, int vocab) {
  detail::AwaitPriorKernels();
  __shared__ SampleShared sh;
  const int row = blockIdx.x;
  const float* logits = all_logits + static_cast<size_t>(row) * vocab;
  const SampleParams p = params[row];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // One pass (or RowStatsKernel's chunks): max, argmax (lowest id on ties)
  // and the softmax sum relative to the running max (rescaled when the max
  // grows).
  float best = -INFINITY, sum = 0.0f;
  int best_id = vocab;
  if (partials != nullptr) {
    for (int c = threadIdx.x; c < num_chunks; c += blockDim.x) {
      const RowStats st = partials[static_cast<size_t>(row) * num_chunks + c];
      CombineStats(best, sum, best_id, st.best, st.sum, st.id);
    }
  } else {
    ForEachLogit(logits, vocab, [&](int i, float l) { AddLogit(best, sum, best_id, i, l); });
  }
  BlockCombineStats(best, sum, best_id, sh.stats_scratch);
  if (best_id >= vocab) best_id = 0;  // all NaN
  const float max_logit = best;
  const float log_z = max_logit + logf(sum);

  if (!(p.temperature > 0.0f)) {
    if (threadIdx.x == 0) {
      tokens[row] = best_id;
      logprobs[row] = logits[best_id] - log_z;
    }
    return;
  }
  const float inv_t = 1.0f / p.temperature;

  uint64_t floor_key = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    floor_key = RadixSelect<false>(logits, vocab, max_logit, inv_t, 0, p.top_k, sh);
  }
  auto kept_mass_above = [&](uint64_t threshold) {
    unsigned long long mass = 0;
    ForEachLogit(logits, vocab, [&](int i, float l) {
      if (SamplingKey(l, i) >= threshold) mass += SamplingMass(l, max_logit, inv_t);
    });
    return BlockSumU64(mass, sh);
  };
  if (p.top_p < 1.0f) {
    const unsigned long long target = TopPTarget(p.top_p, kept_mass_above(floor_key));
    floor_key = RadixSelect<true>(logits, vocab, max_logit, inv_t, floor_key, target, sh);
  }

  // Each warp owns a contiguous range of ids (read coalesced): its kept mass,
  // then the warp whose range straddles `draw` walks it 32 ids at a time
  // with a warp prefix sum.
  const int per_warp = ((vocab + kSampleWarps - 1) / kSampleWarps + 31) / 32 * 32;
  const int lo = min(vocab, warp * per_warp), hi = min(vocab, lo + per_warp);
  auto kept_mass_at = [&](int i) -> unsigned long long {
    if (i >= hi) return 0ull;
    const float l = __ldg(logits + i);
    return SamplingKey(l, i) >= floor_key ? SamplingMass(l, max_logit, inv_t) : 0ull;
  };
  unsigned long long mine = 0;
  for (int i = lo + lane; i < hi; i += 32) mine += kept_mass_at(i);
  mine = WarpSumU64(mine);
  __syncthreads();  // warp_u64 may still be read by BlockSumU64
  if (lane == 0) sh.warp_u64[warp] = mine;
  if (threadIdx.x == 0) sh.result_token = -1;
  __syncthreads();
  // The kept mass is the sum of the warps' (no separate pass).
  unsigned long long before = 0, kept_mass = 0;
  for (int w = 0; w < kSampleWarps; ++w) {
    if (w == warp) before = kept_mass;
    kept_mass += sh.warp_u64[w];
  }
  const unsigned long long draw = DrawTarget(p.seed, p.stream, p.position, kept_mass);
  if (mine > 0 && before <= draw && draw < before + mine) {  // warp-uniform
    for (int i0 = lo; i0 < hi; i0 += 32) {
      const unsigned long long m = kept_mass_at(i0 + lane);
      unsigned long long incl = m;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const unsigned long long v = __shfl_up_sync(0xffffffffu, incl, offset);
        if (lane >= offset) incl += v;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, m > 0 && before + incl > draw);
      if (hit != 0) {
        if (lane == 0) sh.result_token = i0 + __ffs(hit) - 1;
        break;
      }
      before += __shfl_sync(0xffffffffu, incl, 31);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int token = sh.result_token;
    if (token < 0) {
      // Not reachable with exact integer masses (draw < kept mass); kept as
      // a guard: the last kept id, as the reference does.
      for (int i = vocab - 1; i >= 0; --i) {
        if (SamplingKey(logits[i], i) >= floor_key) {
          token = i;
          break;
        }
      }
    }
    tokens[row] = token;
    logprobs[row] = logits[token] - log_z;
  }
}

// Rows too few to fill the GPU with one CTA each get their first pass spread
// over chunks of at least 1024 ids (about two CTAs per SM in all), where that
// makes 16 chunks or more: with fewer, the second launch costs more than the
// split saves (64 greedy rows of 128256 ids: 29 us in one pass, 45 us over
// 4 chunks each, on an H200).
struct SamplePlan {
  int num_chunks = 1;
  int chunk_len = 0;
};
SamplePlan PlanSample(int num_rows, int vocab) {
  SamplePlan plan;
  plan.chunk_len = vocab;
  const int wanted = 2 * DeviceSmCount() / std::max(num_rows, 1);
  const int chunks = std::min(wanted, (vocab + 1023) / 1024);
  if (chunks < 16) return plan;
  plan.chunk_len = ((vocab + chunks - 1) / chunks + 3) / 4 * 4;
  plan.num_chunks = (vocab + plan.chunk_len - 1) / plan.chunk_len;
  return plan;
}

}  // namespace

KernelStatus SampleTokens(const float* logits, const SampleParams* params, int32_t* tokens,
                          float* logprobs, int num_rows, int vocab, void* workspace,
                          Stream opaque_stream) {
  const cudaStream_t stream = detail::AsStream(opaque_stream);
  if (num_rows < 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (num_rows == 0) return cudaSuccess;
  const SamplePlan plan = PlanSample(num_rows, vocab);
  RowStats* partials = nullptr;
  if (plan.num_chunks > 1) {
    if (workspace == nullptr) return cudaErrorInvalidValue;
    partials = static_cast<RowStats*>(workspace);
    detail::LaunchKernel(RowStatsKernel, dim3(plan.num_chunks, num_rows), kStatsThreads, 0, stream,
                         logits, partials, vocab, plan.chunk_len);
  }
  detail::LaunchKernel(SampleKernel, num_rows, kSampleThreads, 0, stream, logits, params, partials,
                       plan.num_chunks, tokens, logprobs, vocab);
  return cudaGetLastError();
}

size_t SampleWorkspaceBytes(int num_rows, int vocab) {
  const SamplePlan plan = PlanSample(num_rows, vocab);
  return plan.num_chunks > 1 ? static_cast<size_t>(num_rows) * plan.num_chunks * sizeof(RowStats)
                             : 0;
}

}  // namespace arbor::kernels
