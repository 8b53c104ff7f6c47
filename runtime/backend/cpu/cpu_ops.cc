#include "runtime/backend/cpu/cpu_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/check.h"
#include "runtime/backend/backend.h"

namespace arbor::runtime {
namespace {

// Hot loops use GCC/Clang vector types (8 floats: one AVX register, or two SSE
// ones) so they vectorise at -O2 without -ffast-math, with a fixed summation
// order whatever the instruction set. On x86-64 with GCC an AVX2 clone is
// picked at load time when the CPU has it.
typedef float Float8 __attribute__((vector_size(32)));
// The helpers below are always inlined, so the vector-ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#define ARBOR_INLINE inline __attribute__((always_inline))

// Not under TSan: GCC instruments the clones' ifunc resolver, which the
// dynamic loader runs before the TSan runtime is initialised, so every binary
// linking this file crashed at load (docs/RELIABILITY.md, Sanitizers).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
#define ARBOR_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define ARBOR_MULTIVERSION
#endif

ARBOR_INLINE Float8 Load8(const float* p) {
  Float8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
ARBOR_INLINE void Store8(float* p, const Float8& v) { std::memcpy(p, &v, sizeof(v)); }
ARBOR_INLINE float Sum8(const Float8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

ARBOR_INLINE float Dot(const float* a, const float* b, int n) {
  Float8 acc0 = {}, acc1 = {};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 += Load8(a + i) * Load8(b + i);
    acc1 += Load8(a + i + 8) * Load8(b + i + 8);
  }
  for (; i + 8 <= n; i += 8) acc0 += Load8(a + i) * Load8(b + i);
  float sum = Sum8(acc0 + acc1);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y += alpha * x
ARBOR_INLINE void Axpy(float alpha, const float* x, float* y, int n) {
  int i = 0;
  const Float8 a = {alpha, alpha, alpha, alpha, alpha, alpha, alpha, alpha};
  for (; i + 8 <= n; i += 8) Store8(y + i, Load8(y + i) + a * Load8(x + i));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

ARBOR_INLINE float SumSquares(const float* x, int n) {
  Float8 acc = {};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const Float8 v = Load8(x + i);
    acc += v * v;
  }
  float sum = Sum8(acc);
  for (; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// Spreads `rows` over the pool in chunks big enough to amortise the hand-off.
template <typename Fn>
void ForRows(ThreadPool* pool, int rows, int64_t work_per_row, Fn&& fn) {
  constexpr int64_t kMinWorkPerChunk = 1 << 14;
  if (pool == nullptr || pool->num_threads() == 1 || rows * work_per_row < 2 * kMinWorkPerChunk) {
    fn(0, rows);
    return;
  }
  const int64_t rows_per_chunk = std::max<int64_t>(
      1, std::min<int64_t>((rows + pool->num_threads() - 1) / pool->num_threads(),
                           kMinWorkPerChunk / std::max<int64_t>(1, work_per_row) + 1));
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  pool->ParallelFor(chunks, [&](int64_t c) {
    const int begin = static_cast<int>(c * rows_per_chunk);
    const int end = static_cast<int>(std::min<int64_t>(rows, begin + rows_per_chunk));
    fn(begin, end);
  });
}

void RmsNormRow(const float* x, const float* weight, int dim, float eps, float* out) {
  const float inv = 1.0f / std::sqrt(SumSquares(x, dim) / static_cast<float>(dim) + eps);
  for (int i = 0; i < dim; ++i) out[i] = weight[i] * (x[i] * inv);
}

}  // namespace

// ---------------------------------------------------------------- ThreadPool

ThreadPool::ThreadPool(int num_threads) {
  ARBOR_CHECK(num_threads >= 1);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunItems(absl::FunctionRef<void(int64_t)> fn, int64_t n) {
  for (int64_t i = next_.fetch_add(1, std::memory_order_relaxed); i < n;
       i = next_.fetch_add(1, std::memory_order_relaxed)) {
    fn(i);
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  while (true) {
    const absl::FunctionRef<void(int64_t)>* fn;
    int64_t n;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [&]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || generation_ != seen; };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      seen = generation_;
      fn = fn_;
      n = n_;
    }
    RunItems(*fn, n);
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void ThreadPool::ParallelFor(int64_t n, absl::FunctionRef<void(int64_t)> fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    fn_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    running_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  RunItems(fn, n);
  absl::MutexLock lock(&mu_);
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
  mu_.Await(absl::Condition(&done));
  fn_ = nullptr;
}

// ---------------------------------------------------------------- ops

void RmsNorm(const float* x, const float* weight, int rows, int dim, float eps, float* out,
             ThreadPool* pool) {
  ForRows(pool, rows, dim, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) {
      RmsNormRow(x + static_cast<int64_t>(r) * dim, weight, dim, eps,
                 out + static_cast<int64_t>(r) * dim);
    }
  });
}

void AddRmsNorm(float* residual, const float* x, const float* weight, int rows, int dim, float eps,
                float* out, ThreadPool* pool) {
  ForRows(pool, rows, dim, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) {
      float* res = residual + static_cast<int64_t>(r) * dim;
      AddInPlace(res, x + static_cast<int64_t>(r) * dim, dim);
      RmsNormRow(res, weight, dim, eps, out + static_cast<int64_t>(r) * dim);
    }
  });
}

void AddInPlace(float* residual, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) residual[i] += x[i];
}

std::vector<float> RopeInvFreq(int head_dim, float theta, const RopeScaling& scaling) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = static_cast<float>(1.0 / std::pow(static_cast<double>(theta), exponent));
  }
  if (scaling.type == "linear") {
    for (float& f : inv_freq) f /= scaling.factor;
  } else if (scaling.type == "llama3") {
    // _compute_llama3_parameters: long wavelengths are divided by `factor`,
    // short ones kept, the band between interpolated smoothly.
    const double old_context = scaling.original_max_position_embeddings;
    const double low_freq_wavelen = old_context / scaling.low_freq_factor;
    const double high_freq_wavelen = old_context / scaling.high_freq_factor;
    for (float& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_freq_wavelen) {
        f = f / scaling.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (old_context / wavelen - scaling.low_freq_factor) /
                              (scaling.high_freq_factor - scaling.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / scaling.factor + smooth * f);
      }
    }
  }
  return inv_freq;
}

void ApplyRope(float* x, int num_tokens, int num_heads, int head_dim, int64_t token_stride,
               const int32_t* positions, const float* inv_freq, ThreadPool* pool) {
  const int half = head_dim / 2;
  ForRows(pool, num_tokens, int64_t{num_heads} * head_dim * 4, [&](int begin, int end) {
    std::vector<float> cos_v(half), sin_v(half);
    for (int t = begin; t < end; ++t) {
      // transformers forms the angle in fp32 (inv_freq @ position) before cos/sin.
      const float pos = static_cast<float>(positions[t]);
      for (int i = 0; i < half; ++i) {
        const double angle = static_cast<double>(inv_freq[i] * pos);
        cos_v[i] = static_cast<float>(std::cos(angle));
        sin_v[i] = static_cast<float>(std::sin(angle));
      }
      float* row = x + t * token_stride;
      for (int h = 0; h < num_heads; ++h) {
        float* v = row + static_cast<int64_t>(h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i];
          const float b = v[i + half];
          v[i] = a * cos_v[i] - b * sin_v[i];
          v[i + half] = b * cos_v[i] + a * sin_v[i];
        }
      }
    }
  });
}

void SiluMul(const float* gate_up, int rows, int inter, float* out, ThreadPool* pool) {
  ForRows(pool, rows, int64_t{inter} * 8, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) {
      const float* gate = gate_up + static_cast<int64_t>(r) * 2 * inter;
      const float* up = gate + inter;
      float* o = out + static_cast<int64_t>(r) * inter;
      for (int i = 0; i < inter; ++i) {
        const float g = gate[i];
        o[i] = g / (1.0f + std::exp(-g)) * up[i];
      }
    }
  });
}

void Linear(const float* x, int rows, int in, const float* w, const float* bias, int out,
            float* y) {
  if (rows == 0) return;
  float beta = 0.0f;
  if (bias != nullptr) {
    for (int r = 0; r < rows; ++r) {
      std::memcpy(y + static_cast<int64_t>(r) * out, bias, sizeof(float) * out);
    }
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, beta, y,
              out);
}

void WriteKv(const float* k, const float* v, int64_t row_stride, int num_tokens,
             const int32_t* positions, const int32_t* token_seqs, const int32_t* block_tables,
             int max_blocks_per_seq, int num_kv_heads, int head_dim, float* k_pool, float* v_pool) {
  const int64_t width = int64_t{num_kv_heads} * head_dim;
  for (int t = 0; t < num_tokens; ++t) {
    const int32_t pos = positions[t];
    const int32_t block =
        block_tables[int64_t{token_seqs[t]} * max_blocks_per_seq + pos / kKvBlockSize];
    const int64_t offset = (int64_t{block} * kKvBlockSize + pos % kKvBlockSize) * width;
    std::memcpy(k_pool + offset, k + t * row_stride, sizeof(float) * width);
    std::memcpy(v_pool + offset, v + t * row_stride, sizeof(float) * width);
  }
}

namespace {

// One attention task: query rows [row_begin, row_end) of one sequence, the
// query heads of KV head `kv_head`. Exact two-pass softmax per row.
ARBOR_MULTIVERSION
void AttentionTask(const PagedAttentionArgs& a, int row_begin, int row_end, int kv_head,
                   std::vector<float>* scratch) {
  const int group = a.num_heads / a.num_kv_heads;
  const int d = a.head_dim;
  const int64_t kv_row = int64_t{a.num_kv_heads} * d;
  const int32_t* table = a.block_tables + int64_t{a.row_seqs[row_begin]} * a.max_blocks_per_seq;
  for (int r = row_begin; r < row_end; ++r) {
    const int len = a.row_positions[r] + 1;
    scratch->resize(static_cast<size_t>(group) * (len + d));
    float* scores = scratch->data();                      // [group, len]
    float* acc = scratch->data() + int64_t{group} * len;  // [group, d]
    const float* q = a.q + r * a.q_row_stride + int64_t{kv_head} * group * d;
    for (int j = 0; j < len; ++j) {
      const float* key =
          a.k_pool + (int64_t{table[j / kKvBlockSize]} * kKvBlockSize + j % kKvBlockSize) * kv_row +
          int64_t{kv_head} * d;
      for (int g = 0; g < group; ++g) {
        scores[int64_t{g} * len + j] = Dot(q + int64_t{g} * d, key, d) * a.scale;
      }
    }
    for (int g = 0; g < group; ++g) {
      float* s = scores + int64_t{g} * len;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < len; ++j) max_score = std::max(max_score, s[j]);
      float sum = 0.0f;
      for (int j = 0; j < len; ++j) {
        s[j] = std::exp(s[j] - max_score);
        sum += s[j];
      }
      const float inv_sum = 1.0f / sum;
      for (int j = 0; j < len; ++j) s[j] *= inv_sum;
    }
    std::fill(acc, acc + int64_t{group} * d, 0.0f);
    for (int j = 0; j < len; ++j) {
      const float* value =
          a.v_pool + (int64_t{table[j / kKvBlockSize]} * kKvBlockSize + j % kKvBlockSize) * kv_row +
          int64_t{kv_head} * d;
      for (int g = 0; g < group; ++g) {
        Axpy(scores[int64_t{g} * len + j], value, acc + int64_t{g} * d, d);
      }
    }
    float* out = a.out + r * a.out_row_stride + int64_t{kv_head} * group * d;
    std::memcpy(out, acc, sizeof(float) * group * d);
  }
}

}  // namespace

void PagedAttention(const PagedAttentionArgs& args, ThreadPool* pool) {
  ARBOR_CHECK(args.num_heads % args.num_kv_heads == 0);
  // Tasks: runs of up to kRowsPerTask adjacent rows of one sequence, times KV
  // heads; long prefills split into many tasks so every thread has work.
  constexpr int kRowsPerTask = 4;
  std::vector<std::pair<int, int>> runs;  // [begin, end) rows
  for (int r = 0; r < args.num_rows;) {
    int end = r + 1;
    while (end < args.num_rows && end - r < kRowsPerTask &&
           args.row_seqs[end] == args.row_seqs[r]) {
      ++end;
    }
    runs.emplace_back(r, end);
    r = end;
  }
  const int64_t num_tasks = static_cast<int64_t>(runs.size()) * args.num_kv_heads;
  auto task = [&](int64_t t) {
    thread_local std::vector<float> scratch;
    const auto& [begin, end] = runs[t / args.num_kv_heads];
    AttentionTask(args, begin, end, static_cast<int>(t % args.num_kv_heads), &scratch);
  };
  if (pool == nullptr) {
    for (int64_t t = 0; t < num_tasks; ++t) task(t);
  } else {
    pool->ParallelFor(num_tasks, task);
  }
}

}  // namespace arbor::runtime
