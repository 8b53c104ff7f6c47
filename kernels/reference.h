// CPU references of Arbor's kernels: plain C++, fp32, HOST pointers, built
// with or without CUDA. They define what each kernel computes (the GPU tests
// compare against them) and are usable by the CPU backend. Shapes follow
// kernels/kernels.h; KV pools are [num_blocks, 16, num_kv_heads, head_dim].
//
// Thread-safety: stateless functions; safe to call concurrently on distinct
// outputs.
#ifndef ARBOR_KERNELS_REFERENCE_H_
#define ARBOR_KERNELS_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "kernels/kernels.h"

namespace arbor::kernels::reference {

// bfloat16 <-> float (round to nearest even; NaN stays NaN).
float Bf16ToFloat(Bf16 bits);
Bf16 FloatToBf16(float value);
// value rounded to the nearest bfloat16.
inline float RoundBf16(float value) { return Bf16ToFloat(FloatToBf16(value)); }
// fp8 e4m3 (kernels.h: Fp8E4m3) <-> float: what an fp8 KV pool stores for a
// value (nearest, ties to even, saturated to +-448; NaN to 0x7f with the
// sign, as CUDA's __nv_cvt_float_to_fp8 with __NV_SATFINITE), and what a bit
// pattern means (0x7f and 0xff are NaN).
uint8_t FloatToFp8E4m3(float value);
float Fp8E4m3ToFloat(uint8_t bits);
// value rounded to the nearest fp8 e4m3 value.
inline float RoundToFp8E4m3(float value) { return Fp8E4m3ToFloat(FloatToFp8E4m3(value)); }

void EmbeddingGather(const int32_t* tokens,  // [num_tokens]
                     const float* table,     // [vocab, hidden]
                     float* out,             // [num_tokens, hidden]
                     int num_tokens, int hidden, int vocab);

// residual += x (x may be nullptr); out = rmsnorm(residual) * weight.
void RmsNormResidual(const float* x,       // [num_tokens, hidden] or nullptr
                     float* residual,      // [num_tokens, hidden]
                     const float* weight,  // [hidden]
                     float* out,           // [num_tokens, hidden]
                     int num_tokens, int hidden, float eps);

// Rotary frequencies as Hugging Face computes them, including the "llama3"
// rope_type (_compute_llama3_parameters): wavelengths longer than
// original_max_position_embeddings / low_freq_factor are divided by `factor`,
// shorter than .. / high_freq_factor kept, and interpolated in between.
struct RopeParams {
  float theta = 10000.0f;
  bool llama3 = false;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};
std::vector<float> RopeInvFreq(const RopeParams& params, int head_dim);  // [head_dim / 2]

void ApplyRope(float* q,                  // [num_tokens, num_heads, head_dim]
               float* k,                  // [num_tokens, num_kv_heads, head_dim]
               const int32_t* positions,  // [num_tokens]
               const float* inv_freq,     // [head_dim / 2]
               int num_tokens, int num_heads, int num_kv_heads, int head_dim);

void SwiGlu(const float* gate_up,  // [num_tokens, 2 * inter]
            float* out,            // [num_tokens, inter]
            int num_tokens, int inter);

void KvAppend(const float* k,               // [num_tokens, num_kv_heads, head_dim]
              const float* v,               // [num_tokens, num_kv_heads, head_dim]
              const int32_t* positions,     // [num_tokens]
              const int32_t* seq_starts,    // [num_seqs + 1]
              const int32_t* block_tables,  // [num_seqs, max_blocks]
              float* k_cache,               // [num_blocks, 16, num_kv_heads, head_dim]
              float* v_cache,               // [num_blocks, 16, num_kv_heads, head_dim]
              int num_seqs, int max_blocks, int num_kv_heads, int head_dim);

// Causal paged attention: token t of sequence s attends to key positions
// p < context_lens[s] with p <= positions[t], through block_tables[s].
// Covers decode (one token per sequence) and prefill with a cached prefix.
void PagedAttention(const float* q,               // [num_tokens, num_heads, head_dim]
                    const int32_t* positions,     // [num_tokens]
                    const int32_t* seq_starts,    // [num_seqs + 1]
                    const int32_t* block_tables,  // [num_seqs, max_blocks]
                    const int32_t* context_lens,  // [num_seqs]
                    const float* k_cache,         // [num_blocks, 16, num_kv_heads, head_dim]
                    const float* v_cache,         // [num_blocks, 16, num_kv_heads, head_dim]
                    float* out,                   // [num_tokens, num_heads, head_dim]
                    int num_seqs, const AttentionShape& shape);

// Attention of one query row over key positions [begin, end) of a block
// table row: the partial state (o normalised, lse; empty: -inf and zeros).
void AttentionPartialRow(const float* q,                            // [head_dim]
                         int head, const int32_t* block_table_row,  // [max_blocks]
                         int begin, int end, const float* k_cache, const float* v_cache,
                         const AttentionShape& shape, float* o,  // [head_dim]
                         float* lse);

void MergeAttentionStates(const float* o_parts,    // [num_parts, num_rows, num_heads, head_dim]
                          const float* lse_parts,  // [num_parts, num_rows, num_heads]
                          float* out,              // [num_rows, num_heads, head_dim]
                          float* lse_out,          // [num_rows, num_heads] or nullptr
                          int num_parts, int num_rows, int num_heads, int head_dim);

// The sampler, which SampleTokens reproduces exactly:
//   temperature <= 0: argmax (lowest id on ties), no random number drawn.
//   otherwise each token gets the integer mass SamplingMass(l, max l, 1/T)
//   (kernels/sampling_math.h); top-k keeps the k best by SamplingKey (larger
//   logit, then lower id); top-p then keeps the shortest best-first run whose
//   mass reaches TopPTarget(top_p, mass kept by top-k); walking the kept tokens
//   in ascending id order, the first whose running mass exceeds
//   DrawTarget(seed, stream, position, kept mass) is drawn.
// logprob is log_softmax(raw logits)[token].
// y[m, n] = x[m, k] W[n, k]^T, fp32 (the reference of SmallBatchGemm and of
// the backends' cuBLAS GEMMs).
void Linear(const float* x,  // [m, k]
            const float* w,  // [n, k]
            float* y,        // [m, n]
            int m, int n, int k);

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;
};
SampledToken Sample(const float* logits,  // [vocab]
                    int vocab, const SampleParams& params);

}  // namespace arbor::kernels::reference

#endif  // ARBOR_KERNELS_REFERENCE_H_
