#include "runtime/backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/log.h"
#include "runtime/backend/cpu/cpu_ops.h"
#include "runtime/model/model_weights.h"

namespace arbor::runtime {

// Activations of one Forward, kept between calls so steady-state decoding
// does not allocate.
struct CpuBackend::Scratch {
  std::vector<int32_t> token_seqs;  // [T] sequence of each token
  std::vector<float> residual;      // [T, hidden]
  std::vector<float> normed;        // [T, hidden]
  std::vector<float> qkv;           // [T, q_dim + 2 kv_dim]
  std::vector<float> attn;          // [rows, q_dim]
  std::vector<float> proj;          // [rows, hidden]
  std::vector<float> gate_up;       // [rows, 2 inter]
  std::vector<float> act;           // [rows, inter]
  // Last layer, restricted to the output rows.
  std::vector<float> out_q;         // [R, q_dim]
  std::vector<float> out_residual;  // [R, hidden]
  std::vector<int32_t> out_positions;
  std::vector<int32_t> out_seqs;
  std::vector<float> head_hidden;  // [R, hidden] (MLP score head)
};

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(const std::string& model_dir,
                                                               const CpuBackendOptions& options) {
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = ModelWeights::Load(model_dir);
  if (!weights.ok()) return weights.status();
  return Create(*std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(
    std::unique_ptr<ModelWeights> weights, const CpuBackendOptions& options) {
  if (weights == nullptr) return absl::InvalidArgumentError("CpuBackend: weights are null");
  if (options.num_kv_blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CpuBackendOptions.num_kv_blocks must be >= 1, got ", options.num_kv_blocks));
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CpuBackendOptions.num_threads must be >= 0, got ", options.num_threads));
  }
  const ModelConfig& c = weights->config();
  const size_t pool_floats =
      static_cast<size_t>(options.num_kv_blocks) * kKvBlockSize * c.num_kv_heads * c.head_dim;
  const double pool_gib = 2.0 * c.num_layers * pool_floats * sizeof(float) / (1 << 30);
  if (pool_gib > 512.0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "CpuBackend: KV pool of ", options.num_kv_blocks, " blocks needs ", pool_gib, " GiB"));
  }
  return std::unique_ptr<CpuBackend>(new CpuBackend(std::move(weights), options));
}

CpuBackend::CpuBackend(std::unique_ptr<ModelWeights> weights, const CpuBackendOptions& options)
    : weights_(std::move(weights)), num_kv_blocks_(options.num_kv_blocks) {
  const ModelConfig& c = weights_->config();
  num_threads_ = options.num_threads > 0
                     ? options.num_threads
                     : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  // OpenBLAS's thread count is process-wide; the last backend created sets it.
  openblas_set_num_threads(num_threads_);
  pool_ = std::make_unique<ThreadPool>(num_threads_);
  scratch_ = std::make_unique<Scratch>();
  block_stride_ = static_cast<size_t>(kKvBlockSize) * c.num_kv_heads * c.head_dim;
  k_pools_.resize(c.num_layers);
  v_pools_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    k_pools_[l].assign(block_stride_ * num_kv_blocks_, 0.0f);
    v_pools_[l].assign(block_stride_ * num_kv_blocks_, 0.0f);
  }
  rope_inv_freq_ = RopeInvFreq(c.head_dim, c.rope_theta, c.rope_scaling);
  if (options.bf16_rope_frequencies) {
    for (float& f : rope_inv_freq_) {  // round to nearest even bf16
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof(bits));
      bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
      std::memcpy(&f, &bits, sizeof(bits));
    }
  }
  ARBOR_LOG(INFO) << "CpuBackend: " << c.architecture << ", " << c.num_layers << " layers, "
                  << weights_->num_bytes() / (1 << 20) << " MiB weights, " << num_kv_blocks_
                  << " KV blocks, " << num_threads_ << " threads";
}

CpuBackend::~CpuBackend() = default;

const ModelConfig& CpuBackend::config() const { return weights_->config(); }

int CpuBackend::output_dim() const {
  const ModelConfig& c = weights_->config();
  return c.is_value_head() ? c.num_labels : c.vocab_size;
}

const float* CpuBackend::k_pool(int layer) const { return k_pools_.at(layer).data(); }
const float* CpuBackend::v_pool(int layer) const { return v_pools_.at(layer).data(); }

absl::Status CpuBackend::Forward(const ForwardBatch& batch, std::vector<float>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("Forward: out is null");
  if (absl::Status s = ValidateForwardBatch(batch, config(), num_kv_blocks_); !s.ok()) return s;
  if (batch.num_tokens() == batch.num_seqs()) {  // a decode step (see DecodeStats)
    ++decode_stats_.eager_steps;
    for (int32_t len : batch.context_lens) {
      decode_stats_.context_keys += len;
      decode_stats_.own_keys += len;
    }
  }

  const ModelConfig& c = weights_->config();
  Scratch& s = *scratch_;
  ThreadPool* pool = pool_.get();
  const int num_tokens = batch.num_tokens();
  const int num_out = static_cast<int>(batch.output_rows.size());
  const int hidden = c.hidden_size;
  const int inter = c.intermediate_size;
  const int q_dim = c.num_heads * c.head_dim;
  const int kv_dim = c.num_kv_heads * c.head_dim;
  const int qkv_dim = q_dim + 2 * kv_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // The last layer only needs its queries (and everything after attention)
  // for the output rows, unless they are exactly all rows in order.
  bool outputs_are_all_rows = num_out == num_tokens;
  for (int i = 0; outputs_are_all_rows && i < num_out; ++i) {
    outputs_are_all_rows = batch.output_rows[i] == i;
  }

  s.token_seqs.resize(num_tokens);
  for (int q = 0; q < batch.num_seqs(); ++q) {
    std::fill(s.token_seqs.begin() + batch.seq_starts[q],
              s.token_seqs.begin() + batch.seq_starts[q + 1], q);
  }
  // The last layer runs on the output rows, which may repeat a token's row.
  const size_t max_rows = std::max(num_tokens, num_out);
  s.residual.resize(max_rows * hidden);
  s.normed.resize(max_rows * hidden);
  s.qkv.resize(max_rows * qkv_dim);
  s.attn.resize(max_rows * q_dim);
  s.proj.resize(max_rows * hidden);
  s.gate_up.resize(max_rows * 2 * inter);
  s.act.resize(max_rows * inter);

  const std::vector<float>& embed = weights_->embed_tokens();
  for (int t = 0; t < num_tokens; ++t) {
    std::memcpy(s.residual.data() + static_cast<size_t>(t) * hidden,
                embed.data() + static_cast<size_t>(batch.tokens[t]) * hidden,
                sizeof(float) * hidden);
  }

  int rows = num_tokens;
  float* residual = s.residual.data();
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_->layers()[l];
    const bool last = l == c.num_layers - 1;
    if (l == 0) {
      RmsNorm(residual, w.input_norm.data(), rows, hidden, c.rms_norm_eps, s.normed.data(), pool);
    } else {  // adds the previous layer's MLP output
      AddRmsNorm(residual, s.proj.data(), w.input_norm.data(), rows, hidden, c.rms_norm_eps,
                 s.normed.data(), pool);
    }
    Linear(s.normed.data(), rows, hidden, w.qkv.data(),
           w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(), qkv_dim, s.qkv.data());
    ApplyRope(s.qkv.data(), rows, c.num_heads, c.head_dim, qkv_dim, batch.positions.data(),
              rope_inv_freq_.data(), pool);
    ApplyRope(s.qkv.data() + q_dim, rows, c.num_kv_heads, c.head_dim, qkv_dim,
              batch.positions.data(), rope_inv_freq_.data(), pool);
    WriteKv(s.qkv.data() + q_dim, s.qkv.data() + q_dim + kv_dim, qkv_dim, rows,
            batch.positions.data(), s.token_seqs.data(), batch.block_tables.data(),
            batch.max_blocks_per_seq, c.num_kv_heads, c.head_dim, k_pools_[l].data(),
            v_pools_[l].data());

    PagedAttentionArgs args;
    args.q = s.qkv.data();
    args.q_row_stride = qkv_dim;
    args.num_rows = rows;
    args.row_positions = batch.positions.data();
    args.row_seqs = s.token_seqs.data();
    if (last && !outputs_are_all_rows) {
      // From here on only the output rows matter.
      s.out_q.resize(static_cast<size_t>(num_out) * q_dim);
      s.out_residual.resize(static_cast<size_t>(num_out) * hidden);
      s.out_positions.resize(num_out);
      s.out_seqs.resize(num_out);
      for (int i = 0; i < num_out; ++i) {
        const int t = batch.output_rows[i];
        std::memcpy(s.out_q.data() + static_cast<size_t>(i) * q_dim,
                    s.qkv.data() + static_cast<size_t>(t) * qkv_dim, sizeof(float) * q_dim);
        std::memcpy(s.out_residual.data() + static_cast<size_t>(i) * hidden,
                    residual + static_cast<size_t>(t) * hidden, sizeof(float) * hidden);
        s.out_positions[i] = batch.positions[t];
        s.out_seqs[i] = s.token_seqs[t];
      }
      rows = num_out;
      residual = s.out_residual.data();
      args.q = s.out_q.data();
      args.q_row_stride = q_dim;
      args.num_rows = rows;
      args.row_positions = s.out_positions.data();
      args.row_seqs = s.out_seqs.data();
    }
    args.k_pool = k_pools_[l].data();
    args.v_pool = v_pools_[l].data();
    args.block_tables = batch.block_tables.data();
    args.max_blocks_per_seq = batch.max_blocks_per_seq;
    args.num_heads = c.num_heads;
    args.num_kv_heads = c.num_kv_heads;
    args.head_dim = c.head_dim;
    args.scale = scale;
    args.out = s.attn.data();
    args.out_row_stride = q_dim;
    PagedAttention(args, pool);

    Linear(s.attn.data(), rows, q_dim, w.o_proj.data(),
           w.o_bias.empty() ? nullptr : w.o_bias.data(), hidden, s.proj.data());
    AddRmsNorm(residual, s.proj.data(), w.post_attention_norm.data(), rows, hidden, c.rms_norm_eps,
               s.normed.data(), pool);
    Linear(s.normed.data(), rows, hidden, w.gate_up.data(),
           w.gate_up_bias.empty() ? nullptr : w.gate_up_bias.data(), 2 * inter, s.gate_up.data());
    SiluMul(s.gate_up.data(), rows, inter, s.act.data(), pool);
    Linear(s.act.data(), rows, inter, w.down_proj.data(),
           w.down_bias.empty() ? nullptr : w.down_bias.data(), hidden, s.proj.data());
  }
  // rows == num_out here, in output order.
  AddRmsNorm(residual, s.proj.data(), weights_->final_norm().data(), rows, hidden, c.rms_norm_eps,
             s.normed.data(), pool);

  const int dim = output_dim();
  out->resize(static_cast<size_t>(num_out) * dim);
  if (num_out == 0) return absl::OkStatus();
  if (!c.is_value_head()) {
    Linear(s.normed.data(), num_out, hidden, weights_->lm_head(), nullptr, dim, out->data());
    return absl::OkStatus();
  }
  const ScoreHead& head = weights_->score_head();
  if (!head.is_mlp()) {
    Linear(s.normed.data(), num_out, hidden, head.w1.data(),
           head.b1.empty() ? nullptr : head.b1.data(), dim, out->data());
    return absl::OkStatus();
  }
  s.head_hidden.resize(static_cast<size_t>(num_out) * hidden);
  Linear(s.normed.data(), num_out, hidden, head.w1.data(),
         head.b1.empty() ? nullptr : head.b1.data(), hidden, s.head_hidden.data());
  for (float& v : s.head_hidden) v = std::max(v, 0.0f);
  Linear(s.head_hidden.data(), num_out, hidden, head.w2.data(),
         head.b2.empty() ? nullptr : head.b2.data(), dim, out->data());
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= num_kv_blocks_ || dst < 0 || dst >= num_kv_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CopyBlocks: pair (", src, ", ", dst, ") outside the pool [0, ", num_kv_blocks_, ")"));
    }
  }
  for (const auto& [src, dst] : src_dst) {
    if (src == dst) continue;
    for (size_t l = 0; l < k_pools_.size(); ++l) {
      std::memcpy(k_pools_[l].data() + dst * block_stride_,
                  k_pools_[l].data() + src * block_stride_, sizeof(float) * block_stride_);
      std::memcpy(v_pools_[l].data() + dst * block_stride_,
                  v_pools_[l].data() + src * block_stride_, sizeof(float) * block_stride_);
    }
  }
  return absl::OkStatus();
}

}  // namespace arbor::runtime
