// fp32 CPU operators of the Llama-family forward pass, the reference the GPU
// kernels are checked against: RMSNorm (optionally fused with the residual
// add), RoPE (default, linear and Llama-3 frequency scaling, rotate-half
// layout as in transformers), SwiGLU, linear layers on OpenBLAS, and causal
// grouped-query attention over the paged KV pool of runtime/backend/backend.h.
//
// All tensors are row-major fp32. Every function is thread-safe for disjoint
// outputs; those taking a ThreadPool spread their work over it.
#ifndef ARBOR_RUNTIME_BACKEND_CPU_CPU_OPS_H_
#define ARBOR_RUNTIME_BACKEND_CPU_CPU_OPS_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "runtime/model/model_config.h"

namespace arbor::runtime {

// A fixed set of threads running ParallelFor loops; the calling thread takes
// part, so ThreadPool(1) runs everything inline. ParallelFor is not
// re-entrant and is meant to be called from one thread at a time (the
// backend's driver thread); workers sleep between loops.
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs fn(i) for every i in [0, n) and returns when all are done. Items are
  // handed out one at a time, so uneven items balance.
  void ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn);

 private:
  void WorkerLoop();
  void RunItems(absl::FunctionRef<void(int64_t)> fn, int64_t n);

  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  const absl::FunctionRef<void(int64_t)>* fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t n_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int64_t> next_{0};
  std::vector<std::thread> workers_;
};

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for rows of width dim.
// `out` may alias `x`.
void RmsNorm(const float* x,       // [rows, dim]
             const float* weight,  // [dim]
             int rows, int dim, float eps,
             float* out,  // [rows, dim]
             ThreadPool* pool = nullptr);

// residual += x; out = RmsNorm(residual). The fused pre-norm step between
// sub-layers.
void AddRmsNorm(float* residual,      // [rows, dim]
                const float* x,       // [rows, dim]
                const float* weight,  // [dim]
                int rows, int dim, float eps,
                float* out,  // [rows, dim]
                ThreadPool* pool = nullptr);

// residual += x.
void AddInPlace(float* residual, const float* x, int64_t n);

// Inverse RoPE frequencies [head_dim / 2] with `scaling` applied exactly as
// transformers' rope init functions do (fp32 result).
std::vector<float> RopeInvFreq(int head_dim, float theta, const RopeScaling& scaling);

// Rotates every head of every token in place (rotate-half layout: element i
// pairs with i + head_dim/2). Token t's heads start at x + t * token_stride.
void ApplyRope(float* x,  // [num_tokens, num_heads, head_dim], rows token_stride apart
               int num_tokens, int num_heads, int head_dim, int64_t token_stride,
               const int32_t* positions,  // [num_tokens]
               const float* inv_freq,     // [head_dim / 2]
               ThreadPool* pool = nullptr);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i].
void SiluMul(const float* gate_up,  // [rows, 2 * inter]
             int rows, int inter,
             float* out,  // [rows, inter]
             ThreadPool* pool = nullptr);

// y = x W^T (+ bias) with OpenBLAS sgemm; W in the Hugging Face Linear layout.
void Linear(const float* x,  // [rows, in]
            int rows, int in,
            const float* w,     // [out, in]
            const float* bias,  // [out] or nullptr
            int out,
            float* y);  // [rows, out]

// Causal grouped-query attention of query rows over the paged KV pool. Query
// row r belongs to sequence row_seqs[r] at absolute position row_positions[r]
// and attends to that sequence's keys 0..row_positions[r] (which must already
// be in the pool). Query head h reads KV head h / (num_heads / num_kv_heads).
struct PagedAttentionArgs {
  const float* q = nullptr;  // [num_rows, num_heads, head_dim], rows q_row_stride apart
  int64_t q_row_stride = 0;
  int num_rows = 0;
  const int32_t* row_positions = nullptr;  // [num_rows]
  const int32_t* row_seqs = nullptr;       // [num_rows], rows of a sequence adjacent
  const float* k_pool = nullptr;           // [num_blocks, kKvBlockSize, num_kv_heads, head_dim]
  const float* v_pool = nullptr;           // same
  const int32_t* block_tables = nullptr;   // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [num_rows, num_heads, head_dim], rows out_row_stride apart
  int64_t out_row_stride = 0;
};
void PagedAttention(const PagedAttentionArgs& args, ThreadPool* pool = nullptr);

// Writes K and V rows of new tokens into their pool slots:
// block_tables[seq][pos / kKvBlockSize], slot pos % kKvBlockSize.
void WriteKv(const float* k,  // [num_tokens, num_kv_heads, head_dim], rows row_stride apart
             const float* v,  // same
             int64_t row_stride, int num_tokens,
             const int32_t* positions,   // [num_tokens]
             const int32_t* token_seqs,  // [num_tokens]
             const int32_t* block_tables, int max_blocks_per_seq, int num_kv_heads, int head_dim,
             float* k_pool,  // [num_blocks, kKvBlockSize, num_kv_heads, head_dim]
             float* v_pool);

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_BACKEND_CPU_CPU_OPS_H_
