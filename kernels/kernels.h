// Arbor's CUDA kernels: the host-side interface. This header carries no CUDA
// types, so the engine can include it from plain C++ translation units; the
// implementations live in kernels/*.cu (library `arbor_kernels`, built only
// with CUDA).
//
// Conventions:
//  - Every pointer is DEVICE memory unless its comment says otherwise; the
//    trailing comment gives its shape. bf16 tensors are raw bit patterns
//    (`Bf16`), accumulation is fp32.
//  - `stream` is an opaque cudaStream_t (nullptr: the legacy default stream).
//    Launches are asynchronous; the returned status only reports launch
//    errors (bad configuration, unsupported head_dim, ...).
//  - KV pools: per layer, K and V each [num_blocks, kKvBlockSize,
//    num_kv_heads, head_dim]; block tables [num_seqs, max_blocks] int32.
//    Elements are bf16 (`Bf16`) or fp8 e4m3 (`Fp8E4m3`, see below): every
//    function that reads or writes a pool has an overload for each, and the
//    attention launchers check the pointers against AttentionShape::kv_dtype.
//  - Supported head_dim: 16, 32, 64, 128. num_heads % num_kv_heads == 0 and
//    num_heads / num_kv_heads <= 8.
//
// Thread-safety: all functions are stateless and may be called from any
// thread; ordering is that of the stream.
#ifndef ARBOR_KERNELS_KERNELS_H_
#define ARBOR_KERNELS_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace arbor::kernels {

inline constexpr int kKvBlockSize = 16;

// Raw bfloat16 bits.
using Bf16 = uint16_t;

// One fp8 value in the OCP e4m3 format (CUDA's __nv_fp8_e4m3: 1 sign, 4
// exponent and 3 mantissa bits, bias 7, largest finite 448, no infinities),
// raw bits. An fp8 KV pool holds each element of the bf16 pool it replaces
// rounded to nearest even and saturated to +-448, with no scale factor (as
// vLLM's fp8 KV cache without calibrated scales): K and V of the Llama family
// sit far inside that range. Halves the bytes every attention kernel reads
// per key; costs 3 mantissa bits (reference::RoundToFp8E4m3).
struct Fp8E4m3 {
  uint8_t bits;
};
static_assert(sizeof(Fp8E4m3) == 1);

// The element type of a KV pool.
enum class KvDtype { kBf16, kFp8E4m3 };
inline constexpr int KvDtypeBytes(KvDtype dtype) { return dtype == KvDtype::kBf16 ? 2 : 1; }
// Opaque cudaStream_t.
using Stream = void*;

// A cudaError_t value (0 is success) without the CUDA headers.
class [[nodiscard]] KernelStatus {
 public:
  KernelStatus() = default;
  explicit KernelStatus(int code) : code_(code) {}
  // From a cudaError_t (an enum; 0 is cudaSuccess) without naming it: the
  // entry points in kernels/*.cu return CUDA's codes as they are.
  template <typename CudaError, typename = std::enable_if_t<std::is_enum_v<CudaError>>>
  KernelStatus(CudaError code)  // NOLINT(google-explicit-constructor)
      : code_(static_cast<int>(code)) {}
  bool ok() const { return code_ == 0; }
  int code() const { return code_; }
  // cudaGetErrorString of the code.
  const char* message() const;

 private:
  int code_ = 0;
};

// Process-wide: whether kernels launch as programmatic dependent launches
// (sm_90: a kernel starts while the one before it on the stream drains; every
// kernel waits for its predecessor before touching activations). On by
// default where the device supports it; off serialises launches as plain
// <<<>>> does. For benchmarks and debugging; affects launches made after the
// call, including those captured into CUDA graphs.
void SetDependentLaunch(bool enabled);

// The kernel behind group attention (GroupAttentionPartial, PrefillAttention)
// where the device is compute capability 9.0 and head_dim is 64; elsewhere
// it is always kMmaSync.
enum class GroupAttentionKernel {
  kMmaSync,  // mma.sync m16n8k16, 64-row CTAs: every GPU
  kWgmma,    // sm_90 warpgroup MMA, 128-row CTAs, two per SM (the default)
};
// Process-wide choice of the kernel above, for launches (and split plans)
// made after the call; for benchmarks and tests, not to be changed while
// another thread plans or launches attention. Default kWgmma (measured
// against kMmaSync in docs/KERNELS.md). Returns the choice it replaces, for
// callers that restore it.
GroupAttentionKernel SetGroupAttentionKernel(GroupAttentionKernel kernel);
// SetGroupAttentionKernel's current choice (the device check is the
// launcher's): what a CUDA graph captured now would bake in.
GroupAttentionKernel RequestedGroupAttentionKernel();

// The kernel behind decode attention over fp8 pools (DecodeAttentionPartial,
// PagedDecodeAttention with Fp8E4m3 pools) where head_dim is 64 or 128 and
// a KV head has at most 16 query heads; elsewhere it is always kCudaCores.
// The bf16 pools' decode always runs on CUDA cores.
enum class Fp8DecodeKernel {
  kCudaCores,  // fp32 FMAs over widened elements, as the bf16 kernel
  kMmaSync,    // mma.sync m16n8k16 fp16: the scaled query and the
               // probabilities rounded to fp16 (e4m3 -> fp16 is exact)
};
// Process-wide choice of the kernel above, for launches made after the call
// (including CUDA graph captures); for benchmarks and tests, not to be
// changed while another thread launches attention. Default kMmaSync
// (1.2-1.5x kCudaCores on an H100, docs/KERNELS.md, "fp8 KV cache").
// Returns the choice it replaces.
Fp8DecodeKernel SetFp8DecodeKernel(Fp8DecodeKernel kernel);
Fp8DecodeKernel RequestedFp8DecodeKernel();

// ---- Elementwise / normalisation ------------------------------------------

// out[i] = table[tokens[i]]; a token outside [0, vocab) yields a zero row.
KernelStatus EmbeddingGather(const int32_t* tokens,  // [num_tokens]
                             const Bf16* table,      // [vocab, hidden]
                             Bf16* out,              // [num_tokens, hidden]
                             int num_tokens, int hidden, int vocab, Stream stream);

// Fused residual add + RMSNorm (Hugging Face LlamaRMSNorm):
//   residual += x            (skipped when x is nullptr; stored in bf16)
//   out = residual * rsqrt(mean(residual^2) + eps) * weight
// `out` may not alias `residual`. hidden must be even.
KernelStatus RmsNormResidual(const Bf16* x,       // [num_tokens, hidden] or nullptr
                             Bf16* residual,      // [num_tokens, hidden], updated in place
                             const Bf16* weight,  // [hidden]
                             Bf16* out,           // [num_tokens, hidden]
                             int num_tokens, int hidden, float eps, Stream stream);

// Rotary embedding (Hugging Face rotate_half layout: dims i and i + d/2 form a
// pair) applied in place to q and k. `inv_freq` comes from
// reference::RopeInvFreq (Llama-3 scaling included), uploaded once.
KernelStatus ApplyRope(Bf16* q,                   // [num_tokens, num_heads, head_dim]
                       Bf16* k,                   // [num_tokens, num_kv_heads, head_dim]
                       const int32_t* positions,  // [num_tokens]
                       const float* inv_freq,     // [head_dim / 2]
                       int num_tokens, int num_heads, int num_kv_heads, int head_dim,
                       Stream stream);

// out = silu(gate) * up, where gate_up holds the fused gate/up projection:
// gate in columns [0, inter), up in [inter, 2 * inter). inter must be even.
KernelStatus SwiGlu(const Bf16* gate_up,  // [num_tokens, 2 * inter]
                    Bf16* out,            // [num_tokens, inter]
                    int num_tokens, int inter, Stream stream);

// x[t, :] += bias (a projection's bias, e.g. Qwen2's Q/K/V bias).
KernelStatus AddBias(Bf16* x,           // [num_rows, dim], updated in place
                     const Bf16* bias,  // [dim]
                     int num_rows, int dim, Stream stream);

// Copies whole KV blocks src -> dst in one layer's K and V pools (the
// copy-on-write of a shared partial block when branches fork). No block may
// be both a source and a destination in one call.
KernelStatus CopyKvBlocks(Bf16* k_cache,           // [num_blocks, 16, num_kv_heads, head_dim]
                          Bf16* v_cache,           // [num_blocks, 16, num_kv_heads, head_dim]
                          const int32_t* src_dst,  // [num_pairs, 2]
                          int num_pairs, int block_elems,  // 16 * num_kv_heads * head_dim
                          Stream stream);
KernelStatus CopyKvBlocks(Fp8E4m3* k_cache,        // [num_blocks, 16, num_kv_heads, head_dim]
                          Fp8E4m3* v_cache,        // [num_blocks, 16, num_kv_heads, head_dim]
                          const int32_t* src_dst,  // [num_pairs, 2]
                          int num_pairs, int block_elems,  // 16 * num_kv_heads * head_dim
                          Stream stream);

// Writes the new tokens' K/V into the paged pools: token t of sequence s
// (seq_starts[s] <= t < seq_starts[s+1]) at position p goes to block
// block_tables[s][p / 16], slot p % 16. A negative block id skips the token.
// Into an fp8 pool each element is rounded from bf16 (see Fp8E4m3).
KernelStatus KvAppend(const Bf16* k,                // [num_tokens, num_kv_heads, head_dim]
                      const Bf16* v,                // [num_tokens, num_kv_heads, head_dim]
                      const int32_t* positions,     // [num_tokens]
                      const int32_t* seq_starts,    // [num_seqs + 1]
                      const int32_t* block_tables,  // [num_seqs, max_blocks]
                      Bf16* k_cache,                // [num_blocks, 16, num_kv_heads, head_dim]
                      Bf16* v_cache,                // [num_blocks, 16, num_kv_heads, head_dim]
                      int num_tokens, int num_seqs, int max_blocks, int num_kv_heads, int head_dim,
                      Stream stream);
KernelStatus KvAppend(const Bf16* k,                // [num_tokens, num_kv_heads, head_dim]
                      const Bf16* v,                // [num_tokens, num_kv_heads, head_dim]
                      const int32_t* positions,     // [num_tokens]
                      const int32_t* seq_starts,    // [num_seqs + 1]
                      const int32_t* block_tables,  // [num_seqs, max_blocks]
                      Fp8E4m3* k_cache,             // [num_blocks, 16, num_kv_heads, head_dim]
                      Fp8E4m3* v_cache,             // [num_blocks, 16, num_kv_heads, head_dim]
                      int num_tokens, int num_seqs, int max_blocks, int num_kv_heads, int head_dim,
                      Stream stream);

// ApplyRope followed by KvAppend in one launch over the stacked Q/K/V
// projection's output (one GEMM's rows: Q heads, then K heads, then V), with
// the same results bit for bit: q receives the rotated queries; K is rotated
// into its pool slot; V is copied. A token without a slot (KvAppend's skip
// rule) still has its q rotated. head_dim must be a multiple of 8.
KernelStatus RopeKvAppend(
    const Bf16* qkv,              // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]
    Bf16* q,                      // [num_tokens, num_heads, head_dim]
    const int32_t* positions,     // [num_tokens]
    const float* inv_freq,        // [head_dim / 2]
    const int32_t* seq_starts,    // [num_seqs + 1]
    const int32_t* block_tables,  // [num_seqs, max_blocks]
    Bf16* k_cache,                // [num_blocks, 16, num_kv_heads, head_dim]
    Bf16* v_cache,                // [num_blocks, 16, num_kv_heads, head_dim]
    int num_tokens, int num_seqs, int max_blocks, int num_heads, int num_kv_heads, int head_dim,
    Stream stream);
// The same into an fp8 pool: K is rotated and rounded to bf16 as above, then
// to fp8.
KernelStatus RopeKvAppend(
    const Bf16* qkv,              // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]
    Bf16* q,                      // [num_tokens, num_heads, head_dim]
    const int32_t* positions,     // [num_tokens]
    const float* inv_freq,        // [head_dim / 2]
    const int32_t* seq_starts,    // [num_seqs + 1]
    const int32_t* block_tables,  // [num_seqs, max_blocks]
    Fp8E4m3* k_cache,             // [num_blocks, 16, num_kv_heads, head_dim]
    Fp8E4m3* v_cache,             // [num_blocks, 16, num_kv_heads, head_dim]
    int num_tokens, int num_seqs, int max_blocks, int num_heads, int num_kv_heads, int head_dim,
    Stream stream);

// ---- Attention -------------------------------------------------------------
// Partial attention states: o normalised by its own softmax sum, plus the
// log-sum-exp of the (scaled) scores; an empty range has lse = -inf, o = 0.
// Partials over disjoint key ranges merge exactly with MergeAttentionStates.

// Shape of the attention problem shared by the launchers below.
struct AttentionShape {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.0f;  // > 0; usually 1/sqrt(head_dim)
  int max_blocks = 0;  // columns of the block tables
  // The pools' element type: a launcher given pools of the other type fails
  // with cudaErrorInvalidValue. Group attention over an fp8 pool always runs
  // the mma.sync kernel (kWgmma reads bf16 tiles only), which split plans
  // take into account.
  KvDtype kv_dtype = KvDtype::kBf16;
};

// Decode attention, one query token per sequence (CUDA cores, GQA heads of a
// KV head share each K/V load). Sequence s attends to key positions
// [kv_begin[s], kv_end[s]) of its block table; the range is cut into
// `num_splits` chunks of `split_len` keys (a multiple of 16), chunk j going to
// partial j. kv_begin == nullptr means 0. Positions past split j's chunk
// produce an empty partial.
KernelStatus DecodeAttentionPartial(const Bf16* q,                // [num_seqs, num_heads, head_dim]
                                    const Bf16* k_cache,          // [num_blocks, 16, kvh, head_dim]
                                    const Bf16* v_cache,          // [num_blocks, 16, kvh, head_dim]
                                    const int32_t* block_tables,  // [num_seqs, max_blocks]
                                    const int32_t* kv_begin,      // [num_seqs] or nullptr
                                    const int32_t* kv_end,        // [num_seqs]
                                    float* o_part,    // [num_splits, num_seqs, num_heads, head_dim]
                                    float* lse_part,  // [num_splits, num_seqs, num_heads]
                                    int num_seqs, const AttentionShape& shape, int split_len,
                                    int num_splits, Stream stream);
KernelStatus DecodeAttentionPartial(const Bf16* q,                // [num_seqs, num_heads, head_dim]
                                    const Fp8E4m3* k_cache,       // [num_blocks, 16, kvh, head_dim]
                                    const Fp8E4m3* v_cache,       // [num_blocks, 16, kvh, head_dim]
                                    const int32_t* block_tables,  // [num_seqs, max_blocks]
                                    const int32_t* kv_begin,      // [num_seqs] or nullptr
                                    const int32_t* kv_end,        // [num_seqs]
                                    float* o_part,    // [num_splits, num_seqs, num_heads, head_dim]
                                    float* lse_part,  // [num_splits, num_seqs, num_heads]
                                    int num_seqs, const AttentionShape& shape, int split_len,
                                    int num_splits, Stream stream);

// Merges `num_parts` partial states into the final output:
//   out = sum_j exp(lse_j - lse) o_j,  lse = log sum_j exp(lse_j).
KernelStatus MergeAttentionStates(
    const float* o_parts,    // [num_parts, num_rows, num_heads, head_dim]
    const float* lse_parts,  // [num_parts, num_rows, num_heads]
    Bf16* out,               // [num_rows, num_heads, head_dim]
    float* lse_out,          // [num_rows, num_heads] or nullptr
    int num_parts, int num_rows, int num_heads, int head_dim, Stream stream);

// Multi-query attention over paged KV on tensor cores (bf16 mma, fp32
// softmax): group g owns query tokens [group_starts[g], group_starts[g+1]) of
// `q`, all attending to key positions [0, kv_len[g]) of the block table
// row block_tables[g]; query token t sees key position p only if
// p <= positions[t] (causal). Its K/V are read once per group and KV head,
// whatever the number of query tokens in the group.
//
// Two uses:
//  - shared prefix (cascade / Hydragen): a group is the branches that share a
//    prompt, one decode token each, kv_len the shared prefix length (every
//    branch position is past it, so nothing is masked); its partials merge
//    with DecodeAttentionPartial over each branch's own suffix.
//  - prefill: a group is one sequence's new tokens, kv_len its context length
//    (cached prefix + new tokens), see PrefillAttention.
// Keys are cut into `num_splits` chunks of `split_len` (a multiple of 64).
// `max_group_tokens` bounds group_starts[g+1] - group_starts[g].
KernelStatus GroupAttentionPartial(const Bf16* q,             // [num_tokens, num_heads, head_dim]
                                   const int32_t* positions,  // [num_tokens]
                                   const int32_t* group_starts,  // [num_groups + 1]
                                   const int32_t* block_tables,  // [num_groups, max_blocks]
                                   const int32_t* kv_len,        // [num_groups]
                                   const Bf16* k_cache,          // [num_blocks, 16, kvh, head_dim]
                                   const Bf16* v_cache,          // [num_blocks, 16, kvh, head_dim]
                                   float* o_part,  // [num_splits, num_tokens, num_heads, head_dim]
                                   float* lse_part,  // [num_splits, num_tokens, num_heads]
                                   int num_tokens, int num_groups, int max_group_tokens,
                                   const AttentionShape& shape, int split_len, int num_splits,
                                   Stream stream);
KernelStatus GroupAttentionPartial(const Bf16* q,             // [num_tokens, num_heads, head_dim]
                                   const int32_t* positions,  // [num_tokens]
                                   const int32_t* group_starts,  // [num_groups + 1]
                                   const int32_t* block_tables,  // [num_groups, max_blocks]
                                   const int32_t* kv_len,        // [num_groups]
                                   const Fp8E4m3* k_cache,       // [num_blocks, 16, kvh, head_dim]
                                   const Fp8E4m3* v_cache,       // [num_blocks, 16, kvh, head_dim]
                                   float* o_part,  // [num_splits, num_tokens, num_heads, head_dim]
                                   float* lse_part,  // [num_splits, num_tokens, num_heads]
                                   int num_tokens, int num_groups, int max_group_tokens,
                                   const AttentionShape& shape, int split_len, int num_splits,
                                   Stream stream);

// Causal prefill attention over paged KV that already holds the new tokens
// (KvAppend first) and possibly a cached prefix: sequence s's tokens
// [seq_starts[s], seq_starts[s+1]) attend to positions [0, context_lens[s])
// with p <= positions[t]. Same kernel as GroupAttentionPartial, written
// straight to bf16 (no split).
KernelStatus PrefillAttention(const Bf16* q,                // [num_tokens, num_heads, head_dim]
                              const int32_t* positions,     // [num_tokens]
                              const int32_t* seq_starts,    // [num_seqs + 1]
                              const int32_t* block_tables,  // [num_seqs, max_blocks]
                              const int32_t* context_lens,  // [num_seqs]
                              const Bf16* k_cache,          // [num_blocks, 16, kvh, head_dim]
                              const Bf16* v_cache,          // [num_blocks, 16, kvh, head_dim]
                              Bf16* out,                    // [num_tokens, num_heads, head_dim]
                              int num_tokens, int num_seqs, int max_seq_tokens,
                              const AttentionShape& shape, Stream stream);
KernelStatus PrefillAttention(const Bf16* q,                // [num_tokens, num_heads, head_dim]
                              const int32_t* positions,     // [num_tokens]
                              const int32_t* seq_starts,    // [num_seqs + 1]
                              const int32_t* block_tables,  // [num_seqs, max_blocks]
                              const int32_t* context_lens,  // [num_seqs]
                              const Fp8E4m3* k_cache,       // [num_blocks, 16, kvh, head_dim]
                              const Fp8E4m3* v_cache,       // [num_blocks, 16, kvh, head_dim]
                              Bf16* out,                    // [num_tokens, num_heads, head_dim]
                              int num_tokens, int num_seqs, int max_seq_tokens,
                              const AttentionShape& shape, Stream stream);

// Plain per-branch paged decode attention (the baseline): each sequence
// attends to [0, context_lens[s]) of its own block table. Splits long
// contexts (flash-decoding) using `workspace`.
size_t PagedDecodeWorkspaceBytes(int num_seqs, const AttentionShape& shape, int max_context_len);
KernelStatus PagedDecodeAttention(const Bf16* q,                // [num_seqs, num_heads, head_dim]
                                  const Bf16* k_cache,          // [num_blocks, 16, kvh, head_dim]
                                  const Bf16* v_cache,          // [num_blocks, 16, kvh, head_dim]
                                  const int32_t* block_tables,  // [num_seqs, max_blocks]
                                  const int32_t* context_lens,  // [num_seqs]
                                  Bf16* out,                    // [num_seqs, num_heads, head_dim]
                                  void* workspace,  // PagedDecodeWorkspaceBytes(...) bytes
                                  int num_seqs, int max_context_len, const AttentionShape& shape,
                                  Stream stream);
KernelStatus PagedDecodeAttention(const Bf16* q,                // [num_seqs, num_heads, head_dim]
                                  const Fp8E4m3* k_cache,       // [num_blocks, 16, kvh, head_dim]
                                  const Fp8E4m3* v_cache,       // [num_blocks, 16, kvh, head_dim]
                                  const int32_t* block_tables,  // [num_seqs, max_blocks]
                                  const int32_t* context_lens,  // [num_seqs]
                                  Bf16* out,                    // [num_seqs, num_heads, head_dim]
                                  void* workspace,  // PagedDecodeWorkspaceBytes(...) bytes
                                  int num_seqs, int max_context_len, const AttentionShape& shape,
                                  Stream stream);

// Split plan shared by the launchers and their callers: keys per split for a
// context of `max_len` keys when `num_rows_ctas` CTAs exist before splitting,
// aiming at about `ctas_per_sm` CTAs per SM on the device. `granule` is 16
// (decode) or the group-attention kernel's keys per tile.
struct SplitPlan {
  int split_len = 0;
  int num_splits = 1;
};
SplitPlan PlanSplits(int max_len, int num_rows_ctas, int granule, int ctas_per_sm = 4);

// The split plan of GroupAttentionPartial for the kernel that will run (its
// rows per CTA, CTAs per SM and keys per tile): groups of at most
// `max_group_tokens` tokens over at most `max_kv_len` keys.
SplitPlan PlanGroupAttentionSplits(int max_kv_len, int max_group_tokens, int num_groups,
                                   const AttentionShape& shape);

// ---- Linear layers at decode batch sizes -----------------------------------

inline constexpr int kSmallBatchGemmMaxRows = 4;

// y[m, n] = x[m, k] W[n, k]^T (W in the Hugging Face Linear layout) for
// 1 <= m <= kSmallBatchGemmMaxRows: W is streamed once, one warp per output
// column, fp32 accumulation; y is bf16, or fp32 when fp32_out. k must be a
// multiple of 8 and every row 16-byte aligned (cudaErrorInvalidValue else).
KernelStatus SmallBatchGemm(const Bf16* x,  // [m, k]
                            const Bf16* w,  // [n, k]
                            void* y,        // [m, n], bf16 or fp32
                            int m, int n, int k, bool fp32_out, Stream stream);

// The input rows of a fused small-batch GEMM: `x` as is, or, when
// norm_weight is set, RmsNormResidual(delta, residual) computed in the
// kernel's prologue: residual_out = residual + delta (delta may be null: a
// copy), the rows used = RMSNorm(residual_out) * norm_weight. Bit for bit
// what RmsNormResidual computes when k = 2048 (the same reduction order; at
// other widths within its rounding). residual_out may not alias residual:
// every CTA reads residual while the first one writes residual_out.
// m * k * 2 bytes must fit kSmallBatchNormMaxBytes (SmallBatchNormFits).
// With residual_rows set, row i of the residual is row residual_rows[i] of
// `residual` (zeros for an id outside [0, residual_rows_limit), as
// EmbeddingGather does): the first layer reads the embedding table directly.
struct SmallBatchInput {
  const Bf16* x = nullptr;                 // [m, k]
  const Bf16* delta = nullptr;             // [m, k] or nullptr
  const Bf16* residual = nullptr;          // [m, k], or [residual_rows_limit, k]
  const int32_t* residual_rows = nullptr;  // [m] or nullptr
  int residual_rows_limit = 0;
  Bf16* residual_out = nullptr;       // [m, k]
  const Bf16* norm_weight = nullptr;  // [k]
  float eps = 0.0f;
};
inline constexpr size_t kSmallBatchNormMaxBytes = 48 * 1024;
bool SmallBatchNormFits(int m, int k);

// SmallBatchGemm on fused input rows (the final norm ahead of the LM head).
KernelStatus SmallBatchGemm(const SmallBatchInput& input,
                            const Bf16* w,  // [n, k]
                            void* y,        // [m, n], bf16 or fp32
                            int m, int n, int k, bool fp32_out, Stream stream);

// The fused gate/up projection with SwiGLU applied: out = silu(x Wg^T) *
// (x Wu^T), where w_gate_up stacks Wg [inter, k] over Wu [inter, k]. Same
// results as SmallBatchGemm into [m, 2 * inter] followed by SwiGlu (gate and
// up are rounded to bf16 before the product), without the intermediate.
KernelStatus SmallBatchGateUpSwiGlu(const SmallBatchInput& input,
                                    const Bf16* w_gate_up,  // [2 * inter, k]
                                    Bf16* out,              // [m, inter]
                                    int m, int inter, int k, Stream stream);

// Where SmallBatchQkvRope puts Q, K and V, and what it needs to rotate them.
struct QkvRopeKv {
  const int32_t* positions = nullptr;     // [m]
  const float* inv_freq = nullptr;        // [head_dim / 2]
  const int32_t* seq_starts = nullptr;    // [num_seqs + 1]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks]
  // A bf16 pool, or (set instead) an fp8 one; exactly one pair is set.
  Bf16* k_cache = nullptr;         // [num_blocks, 16, num_kv_heads, head_dim]
  Bf16* v_cache = nullptr;         // [num_blocks, 16, num_kv_heads, head_dim]
  Fp8E4m3* k_cache_fp8 = nullptr;  // [num_blocks, 16, num_kv_heads, head_dim]
  Fp8E4m3* v_cache_fp8 = nullptr;  // [num_blocks, 16, num_kv_heads, head_dim]
  const Bf16* bias = nullptr;      // [q_dim + 2 * kv_dim] or nullptr (Qwen2)
  int num_seqs = 0;
  int max_blocks = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// The attention block's whole input side at decode sizes, one launch: the
// stacked Q/K/V projection (w_qkv: Q rows, then K, then V), its bias, RoPE,
// and the K/V append. q receives the rotated queries; K (rotated) and V go
// straight to their paged slots, under KvAppend's rules. Bit for bit the
// three SmallBatchGemm slices, AddBias, ApplyRope and KvAppend.
KernelStatus SmallBatchQkvRope(const SmallBatchInput& input,
                               const Bf16* w_qkv,  // [q_dim + 2 * kv_dim, k]
                               Bf16* q,            // [m, num_heads, head_dim]
                               const QkvRopeKv& rope, int m, int k, Stream stream);

// ---- Sampling --------------------------------------------------------------

// Per-row sampling parameters (plain struct, copied to the device as is).
struct SampleParams {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]; 1 disables
  int32_t top_k = 0;         // 0 disables
  int32_t reserved = 0;
  uint64_t seed = 0;
  uint64_t stream = 0;    // branch / sample index
  uint64_t position = 0;  // token position (RNG counter)
};

// One block per row; draws exactly what reference::Sample draws (see
// kernels/reference.h for the algorithm), and the logprob of the drawn token
// under the raw distribution. Rows too few to fill the GPU have the first
// pass (max, argmax, softmax sum: all a greedy row needs) spread over many
// CTAs per row, whose statistics go to `workspace`.
size_t SampleWorkspaceBytes(int num_rows, int vocab);  // 0 when no pre-pass
KernelStatus SampleTokens(const float* logits,         // [num_rows, vocab]
                          const SampleParams* params,  // [num_rows]
                          int32_t* tokens,             // [num_rows]
                          float* logprobs,             // [num_rows]
                          int num_rows, int vocab,
                          void* workspace,  // SampleWorkspaceBytes(num_rows, vocab) bytes
                          Stream stream);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_KERNELS_H_
