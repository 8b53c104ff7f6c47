// Device pieces shared by the group-attention kernels (attention.cu's
// mma.sync kernel, attention_sm90.cu's wgmma kernel): a CTA's rows and keys,
// paged K/V addressing, the online softmax of one tile and the output of a
// thread's two rows. A CTA owns `cta_rows` (token, GQA head) rows of one
// group, one KV head and one key split; a thread holds rows lo and lo + 8 of
// its 16-row slice in the mma accumulator layout: for 8-column chunk i,
// [4i], [4i+1] are row lo at columns 8i + 2 t4 + {0, 1}, [4i+2], [4i+3] row hi.
#ifndef ARBOR_KERNELS_GROUP_ATTENTION_CUH_
#define ARBOR_KERNELS_GROUP_ATTENTION_CUH_

#include "kernels/common.cuh"

namespace arbor::kernels::detail {

// Positions of the CTA's rows; -1 marks padding past the group's rows.
__device__ __forceinline__ void LoadRowPositions(int* row_pos, int cta_rows,
                                                 const int32_t* __restrict__ positions,
                                                 int tok_begin, int row0, int num_rows, int gqa) {
  for (int r = threadIdx.x; r < cta_rows; r += blockDim.x) {
    const int row = row0 + r;
    row_pos[r] = row < num_rows ? positions[tok_begin + row / gqa] : -1;
  }
}

// 16-byte chunk `ch` of group row `row` (token row / gqa, head kvh * gqa +
// row % gqa); `q` itself (a valid address, nothing is read) past the rows.
template <int D>
__device__ __forceinline__ const Bf16* QueryChunk(const Bf16* __restrict__ q, int tok_begin,
                                                  int row, int num_rows, int ch, int num_heads,
                                                  int kvh, int gqa) {
  if (row >= num_rows) return q;
  return q + (static_cast<size_t>(tok_begin + row / gqa) * num_heads + kvh * gqa + row % gqa) * D +
         ch * 8;
}

// The keys of a split, [begin, end), with end cut at the largest position of
// the CTA's rows, and the smallest position of a real row (padding rows hold
// -1 and are never written). Every lane of the calling warp must call it:
// the lanes scan a slice of the rows each and combine by shuffles.
struct SplitKeys {
  int begin, end, min_pos;
};
__device__ __forceinline__ SplitKeys SplitKeyRange(const int* row_pos, int cta_rows, int split,
                                                   int split_len, int kv_len) {
  int max_pos = -1, min_pos = 0x7fffffff;
  for (int r = threadIdx.x & 31; r < cta_rows; r += 32) {
    max_pos = max(max_pos, row_pos[r]);
    if (row_pos[r] >= 0) min_pos = min(min_pos, row_pos[r]);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    max_pos = max(max_pos, __shfl_xor_sync(0xffffffffu, max_pos, offset));
    min_pos = min(min_pos, __shfl_xor_sync(0xffffffffu, min_pos, offset));
  }
  const int b = split * split_len;
  return {b, min(min(kv_len, b + split_len), max_pos + 1), min_pos};
}

// A CTA's setup: its rows' positions, the copies of its Q rows (one commit
// group, not waited for; chunk `ch` of row `r` goes to q_dst(r, ch), a shared
// address or pointer) and its split's keys. Every thread of the CTA calls it.
template <int D, class QDst>
__device__ __forceinline__ SplitKeys BeginGroupTile(int* row_pos, int cta_rows, QDst q_dst,
                                                    const Bf16* __restrict__ q,
                                                    const int32_t* __restrict__ positions,
                                                    int tok_begin, int row0, int num_rows,
                                                    int num_heads, int kvh, int gqa, int split,
                                                    int split_len, int kv_len) {
  constexpr int kChunks = D / 8;
  LoadRowPositions(row_pos, cta_rows, positions, tok_begin, row0, num_rows, gqa);
  for (int i = threadIdx.x; i < cta_rows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, ch = i % kChunks;
    CpAsync16(q_dst(r, ch),
              QueryChunk<D>(q, tok_begin, row0 + r, num_rows, ch, num_heads, kvh, gqa),
              row0 + r < num_rows);
  }
  CpAsyncCommit();
  __syncthreads();  // row_pos
  return SplitKeyRange(row_pos, cta_rows, split, split_len, kv_len);
}

// Element offset of 16-byte chunk `ch` of `key`'s row for KV head `kvh` in
// a paged K or V pool ([num_blocks, kKvBlockSize, num_kv_heads, D]).
template <int D>
__device__ __forceinline__ size_t PagedKvOffset(const int32_t* __restrict__ table, int key, int kvh,
                                                size_t slot_stride, int ch) {
  return (static_cast<size_t>(table[key / kKvBlockSize]) * kKvBlockSize + key % kKvBlockSize) *
             slot_stride +
         static_cast<size_t>(kvh) * D + ch * 8;
}

// Running maximum (raw scores) and sum of exponentials of a thread's rows.
struct SoftmaxRows {
  float m_lo, m_hi, l_lo, l_hi;
};

// O *= alpha per row, over D / 8 chunks.
template <int D>
__device__ __forceinline__ void ScaleRows(float* o, float alpha_lo, float alpha_hi) {
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    o[4 * i] *= alpha_lo;
    o[4 * i + 1] *= alpha_lo;
    o[4 * i + 2] *= alpha_hi;
    o[4 * i + 3] *= alpha_hi;
  }
}

// One tile of `NC` 8-key chunks starting at key0: masks what a row may not
// see (key >= e or past its position) unless `all_visible`, folds the tile
// into `st`, leaves exp2 of the scaled, shifted scores in `s` and returns in
// alpha_* the factors that rescale O to the new maxima. Scores stay unscaled
// until the exponential (scale > 0 keeps their order), where the scale folds
// into one FFMA. (attention.cu's mma.sync kernel inlines the same steps with
// O's rescaling among them: through this helper it needed 102 -> 131
// registers at head_dim 64, a CTA fewer per SM.)
template <int NC>
__device__ __forceinline__ void OnlineSoftmaxTile(float* s, SoftmaxRows& st, float& alpha_lo,
                                                  float& alpha_hi, bool all_visible, int key0,
                                                  int e, int pos_lo, int pos_hi, int t4,
                                                  float scale_log2) {
  // kAcc independent maxima and sums per row: a single accumulator would
  // chain 2 NC dependent instructions, which the few warps per scheduler
  // cannot hide.
  constexpr int kAcc = NC % 4 == 0 ? 4 : 1;
  float acc_lo[kAcc], acc_hi[kAcc];
#pragma unroll
  for (int a = 0; a < kAcc; ++a) acc_lo[a] = acc_hi[a] = NegInf();
  if (all_visible) {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
      acc_lo[i % kAcc] = fmaxf(acc_lo[i % kAcc], fmaxf(s[4 * i], s[4 * i + 1]));
      acc_hi[i % kAcc] = fmaxf(acc_hi[i % kAcc], fmaxf(s[4 * i + 2], s[4 * i + 3]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < NC; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int key = key0 + i * 8 + 2 * t4 + j;
        const bool in_range = key < e;
        if (!(in_range && key <= pos_lo)) s[4 * i + j] = NegInf();
        if (!(in_range && key <= pos_hi)) s[4 * i + 2 + j] = NegInf();
        acc_lo[i % kAcc] = fmaxf(acc_lo[i % kAcc], s[4 * i + j]);
        acc_hi[i % kAcc] = fmaxf(acc_hi[i % kAcc], s[4 * i + 2 + j]);
      }
    }
  }
  float mx_lo = acc_lo[0], mx_hi = acc_hi[0];
#pragma unroll
  for (int a = 1; a < kAcc; ++a) {
    mx_lo = fmaxf(mx_lo, acc_lo[a]);
    mx_hi = fmaxf(mx_hi, acc_hi[a]);
  }
#pragma unroll
  for (int offset = 1; offset < 4; offset <<= 1) {
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, offset));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, offset));
  }
  const float new_lo = fmaxf(st.m_lo, mx_lo), new_hi = fmaxf(st.m_hi, mx_hi);
  // A row with nothing visible yet keeps m = -inf; guard the -inf - -inf.
  alpha_lo = new_lo == NegInf() ? 1.0f : FastExp2((st.m_lo - new_lo) * scale_log2);
  alpha_hi = new_hi == NegInf() ? 1.0f : FastExp2((st.m_hi - new_hi) * scale_log2);
  const float sub_lo = new_lo == NegInf() ? 0.0f : new_lo * scale_log2;
  const float sub_hi = new_hi == NegInf() ? 0.0f : new_hi * scale_log2;
  st.m_lo = new_lo;
  st.m_hi = new_hi;
#pragma unroll
  for (int a = 0; a < kAcc; ++a) acc_lo[a] = acc_hi[a] = 0.0f;
#pragma unroll
  for (int i = 0; i < NC; ++i) {
    s[4 * i] = FastExp2(fmaf(s[4 * i], scale_log2, -sub_lo));
    s[4 * i + 1] = FastExp2(fmaf(s[4 * i + 1], scale_log2, -sub_lo));
    s[4 * i + 2] = FastExp2(fmaf(s[4 * i + 2], scale_log2, -sub_hi));
    s[4 * i + 3] = FastExp2(fmaf(s[4 * i + 3], scale_log2, -sub_hi));
    acc_lo[i % kAcc] += s[4 * i] + s[4 * i + 1];
    acc_hi[i % kAcc] += s[4 * i + 2] + s[4 * i + 3];
  }
  float sum_lo = acc_lo[0], sum_hi = acc_hi[0];
#pragma unroll
  for (int a = 1; a < kAcc; ++a) {
    sum_lo += acc_lo[a];
    sum_hi += acc_hi[a];
  }
  st.l_lo = st.l_lo * alpha_lo + sum_lo;
  st.l_hi = st.l_hi * alpha_hi + sum_hi;
}

// Where a CTA's rows go: the bf16 output, or split `split`'s fp32 partial
// and log-sum-exp.
struct GroupOutput {
  float* o_part;    // [num_splits, num_tokens, num_heads, D] or unused
  float* lse_part;  // [num_splits, num_tokens, num_heads] or unused
  Bf16* out_bf16;   // [num_tokens, num_heads, D] or nullptr (then the partials)
  int num_tokens, num_heads, split, tok_begin, num_rows, kvh, gqa;
};

// Writes group rows `row_lo` and `row_lo` + 8 (o: D / 8 chunks, normalised
// by the rows' sums, which the four threads of a row quad complete here).
template <int D>
__device__ __forceinline__ void WriteGroupRows(const float* o, SoftmaxRows st, int row_lo, int t4,
                                               float scale_log2, const GroupOutput& out) {
#pragma unroll
  for (int offset = 1; offset < 4; offset <<= 1) {
    st.l_lo += __shfl_xor_sync(0xffffffffu, st.l_lo, offset);
    st.l_hi += __shfl_xor_sync(0xffffffffu, st.l_hi, offset);
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row_lo + half * 8;
    if (row >= out.num_rows) continue;
    const size_t token = out.tok_begin + row / out.gqa;
    const size_t head = static_cast<size_t>(out.kvh) * out.gqa + row % out.gqa;
    const size_t out_row = token * out.num_heads + head;
    const float l = half ? st.l_hi : st.l_lo;
    const float m = half ? st.m_hi : st.m_lo;
    const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    if (out.out_bf16 != nullptr) {
      __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out.out_bf16 + out_row * D);
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        dst[4 * i + t4] =
            __floats2bfloat162_rn(o[4 * i + 2 * half] * inv_l, o[4 * i + 2 * half + 1] * inv_l);
      }
    } else {
      const size_t part_row =
          static_cast<size_t>(out.split) * out.num_tokens * out.num_heads + out_row;
      float2* dst = reinterpret_cast<float2*>(out.o_part + part_row * D);
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        dst[4 * i + t4] = make_float2(o[4 * i + 2 * half] * inv_l, o[4 * i + 2 * half + 1] * inv_l);
      }
      if (t4 == 0) {
        out.lse_part[part_row] = l > 0.0f ? (m * scale_log2 + log2f(l)) * kLn2 : NegInf();
      }
    }
  }
}

}  // namespace arbor::kernels::detail

#endif  // ARBOR_KERNELS_GROUP_ATTENTION_CUH_
