// The forward pass of CudaBackend (CUDA builds only): Run splits a batch into
// device passes of at most max_batch_tokens tokens; ForwardPass uploads a
// pass's metadata, enqueues the layers' kernels and GEMMs, and brings back
// logits, draws or (value heads) the final hidden rows.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"
#include "kernels/reference.h"
#include "runtime/backend/cpu/cpu_ops.h"
#include "runtime/backend/cuda/cuda_device.h"
#include "runtime/model/model_weights.h"

namespace arbor::runtime {

using cuda_internal::CublasError;
using cuda_internal::CudaError;
using cuda_internal::CountDecodeKeys;
using cuda_internal::DecodeCascadePlan;
using cuda_internal::DeviceBuffer;
using cuda_internal::DeviceLayer;
using cuda_internal::IsDecodeStep;
using cuda_internal::IsGraphableDecode;
using cuda_internal::kDecodeContextBucket;
using cuda_internal::KernelError;
using cuda_internal::kLogitRowsPerGemm;
using cuda_internal::PinnedMeta;
using cuda_internal::RoundUp;
using cuda_internal::SuffixBound;
using kernels::Bf16;

absl::Status CudaBackend::Device::Gemm(const Bf16* x, const Bf16* w, void* y, int m, int n, int k,
                                       bool fp32_out) {
  if (StreamsWeights(m, n)) {
    return KernelError(kernels::SmallBatchGemm(x, w, y, m, n, k, fp32_out, stream),
                       "SmallBatchGemm");
  }
  const float alpha = 1.0f, beta = 0.0f;
  return CublasError(
      cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, CUDA_R_16BF, k, x,
                   CUDA_R_16BF, k, &beta, y, fp32_out ? CUDA_R_32F : CUDA_R_16BF, n,
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "GemmEx");
}

absl::Status CudaBackend::Run(const ForwardBatch& batch, absl::Span<const RowSampling> sampling,
                              std::vector<float>* logits, std::vector<SampledToken>* sampled) {
  ARBOR_RETURN_IF_ERROR(ValidateBatch(batch));
  ARBOR_RETURN_IF_ERROR(CudaError(cudaSetDevice(device_->device), "cudaSetDevice"));
  if (batch.num_tokens() <= device_->max_batch_tokens) {
    if (sampled != nullptr && device_->cuda_graphs && IsGraphableDecode(batch)) {
      return GraphDecode(batch, sampling, sampled);
    }
    const kernels::CascadePlan cascade =
        DecodeCascadePlan(batch, device_->cascade_min_shared_tokens, device_->cascade_max_levels);
    if (IsDecodeStep(batch)) {
      ++device_->decode_stats.eager_steps;
      CountDecodeKeys(batch, cascade, &device_->decode_stats);
    }
    return ForwardPass(batch, sampling, logits, sampled, nullptr, PassMode::kEager, nullptr,
                       &cascade);
  }

  // Several passes, each over whole sequences.
  const int dim = output_dim();
  if (logits != nullptr) logits->assign(batch.output_rows.size() * dim, 0.0f);
  if (sampled != nullptr) sampled->assign(batch.output_rows.size(), SampledToken());
  int s0 = 0;
  while (s0 < batch.num_seqs()) {
    int s1 = s0 + 1;
    while (s1 < batch.num_seqs() &&
           batch.seq_starts[s1 + 1] - batch.seq_starts[s0] <= device_->max_batch_tokens) {
      ++s1;
    }
    const int t0 = batch.seq_starts[s0], t1 = batch.seq_starts[s1];
    ForwardBatch part;
    part.tokens.assign(batch.tokens.begin() + t0, batch.tokens.begin() + t1);
    part.positions.assign(batch.positions.begin() + t0, batch.positions.begin() + t1);
    for (int s = s0; s <= s1; ++s) part.seq_starts.push_back(batch.seq_starts[s] - t0);
    part.context_lens.assign(batch.context_lens.begin() + s0, batch.context_lens.begin() + s1);
    part.max_blocks_per_seq = batch.max_blocks_per_seq;
    part.block_tables.assign(
        batch.block_tables.begin() + static_cast<size_t>(s0) * batch.max_blocks_per_seq,
        batch.block_tables.begin() + static_cast<size_t>(s1) * batch.max_blocks_per_seq);
    std::vector<size_t> where;  // output index of each of part's output rows
    std::vector<RowSampling> part_sampling;
    for (size_t i = 0; i < batch.output_rows.size(); ++i) {
      if (batch.output_rows[i] >= t0 && batch.output_rows[i] < t1) {
        part.output_rows.push_back(batch.output_rows[i] - t0);
        where.push_back(i);
        if (sampled != nullptr) part_sampling.push_back(sampling[i]);
      }
    }
    std::vector<float> part_logits;
    std::vector<SampledToken> part_sampled;
    ARBOR_RETURN_IF_ERROR(ForwardPass(part, part_sampling,
                                      logits != nullptr ? &part_logits : nullptr,
                                      sampled != nullptr ? &part_sampled : nullptr));
    for (size_t r = 0; r < where.size(); ++r) {
      if (logits != nullptr) {
        std::copy_n(part_logits.begin() + r * dim, dim, logits->begin() + where[r] * dim);
      } else {
        (*sampled)[where[r]] = part_sampled[r];
      }
    }
    s0 = s1;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ForwardPass(const ForwardBatch& batch,
                                      absl::Span<const RowSampling> sampling,
                                      std::vector<float>* logits,
                                      std::vector<SampledToken>* sampled, PassBuffers* buffers,
                                      PassMode mode, void* graph_exec,
                                      const kernels::CascadePlan* cascade_plan) {
  const ModelConfig& c = weights_->config();
  Device& d = *device_;
  PassBuffers& bufs = buffers != nullptr ? *buffers : d.shared;
  // Captured passes and replays sample: their only output is the draws.
  ARBOR_CHECK(mode == PassMode::kEager || sampled != nullptr);
  // The draws ([rows] tokens, then [rows] logprobs in bufs.sampled) into
  // `sampled`, once the stream is done.
  auto download_draws = [&](int rows) -> absl::Status {
    sampled->resize(rows);
    d.host_sampled.resize(2 * static_cast<size_t>(rows));
    ARBOR_RETURN_IF_ERROR(CudaError(
        cudaMemcpyAsync(d.host_sampled.data(), bufs.sampled.get(),
                        d.host_sampled.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, d.stream),
        "download sampled tokens"));
    ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(d.stream), "forward"));
    for (int r = 0; r < rows; ++r) {
      (*sampled)[r].token = d.host_sampled[r];
      std::memcpy(&(*sampled)[r].logprob, &d.host_sampled[rows + r], sizeof(float));
    }
    return absl::OkStatus();
  };
  cudaStream_t stream = d.stream;
  const int n = batch.num_tokens(), num_seqs = batch.num_seqs();
  const int num_out = static_cast<int>(batch.output_rows.size());
  const int hidden = c.hidden_size, inter = c.intermediate_size;
  const int q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const int mb = batch.max_blocks_per_seq;
  kernels::AttentionShape shape;
  shape.num_heads = c.num_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  shape.max_blocks = mb;
  shape.kv_dtype = d.kv_dtype;

  int max_new = 0, max_ctx = 0;
  for (int s = 0; s < num_seqs; ++s) {
    max_new = std::max(max_new, batch.seq_starts[s + 1] - batch.seq_starts[s]);
    max_ctx = std::max(max_ctx, batch.context_lens[s]);
  }
  // A decode step of branches that share a prompt: cascade attention.
  kernels::CascadePlan own_plan;
  if (cascade_plan == nullptr) {
    own_plan = DecodeCascadePlan(batch, d.cascade_min_shared_tokens, d.cascade_max_levels);
    cascade_plan = &own_plan;
  }
  const kernels::CascadePlan& cascade = *cascade_plan;

  // Batch metadata in one upload: tokens, positions, seq_starts,
  // context_lens, block_tables, output_rows (+ the cascade's suffix starts and
  // each level's groups). Sampling parameters ride in the same upload, 8-byte
  // aligned (the buffer itself is 256-byte aligned).
  static_assert(sizeof(kernels::SampleParams) % sizeof(uint64_t) == 0);
  constexpr size_t kParamEntries = sizeof(kernels::SampleParams) / sizeof(int32_t);
  const size_t num_params = sampled != nullptr ? sampling.size() : 0;
  std::vector<const std::vector<int32_t>*> parts = {
      &batch.tokens,       &batch.positions,   &batch.seq_starts,    &batch.context_lens,
      &batch.block_tables, &batch.output_rows, &cascade.suffix_begin};
  constexpr size_t kLevelParts = 3;  // group_starts, group_tables, group_kv_len
  const size_t first_level_part = parts.size();
  const int num_levels = cascade.worthwhile ? static_cast<int>(cascade.levels.size()) : 0;
  for (int level = 0; level < num_levels; ++level) {
    const kernels::CascadeLevel& lv = cascade.levels[level];
    parts.insert(parts.end(), {&lv.group_starts, &lv.group_tables, &lv.group_kv_len});
  }
  size_t entries = 1 + num_params * kParamEntries;  // + the alignment entry
  for (const std::vector<int32_t>* part : parts) entries += part->size();
  PinnedMeta& meta = d.host_meta;
  ARBOR_RETURN_IF_ERROR(meta.Reset(entries));
  std::vector<size_t> offsets(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) offsets[i] = meta.Append(*parts[i]);
  const size_t o_tokens = offsets[0], o_pos = offsets[1], o_starts = offsets[2], o_ctx = offsets[3],
               o_tables = offsets[4], o_out = offsets[5], o_sbegin = offsets[6];
  meta.AppendZeros(meta.size() % 2);
  const size_t o_params = meta.size();
  for (size_t i = 0; i < num_params; ++i) {
    const RowSampling& r = sampling[i];
    kernels::SampleParams p;
    p.temperature = r.params.temperature;
    p.top_p = r.params.top_p;
    p.top_k = r.params.top_k;
    p.seed = r.seed;
    p.stream = r.stream;
    p.position = r.position;
    std::memcpy(meta.data() + meta.AppendZeros(kParamEntries), &p, sizeof(p));
  }
  ARBOR_RETURN_IF_ERROR(bufs.meta.Reserve(meta.size() * sizeof(int32_t)));
  if (mode != PassMode::kCapture) {  // a graph reads what the replay uploads
    ARBOR_RETURN_IF_ERROR(
        CudaError(cudaMemcpyAsync(bufs.meta.get(), meta.data(), meta.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream),
                  "upload batch"));
  }
  const int32_t* m = bufs.meta.get<int32_t>();
  const int32_t *tokens = m + o_tokens, *positions = m + o_pos, *seq_starts = m + o_starts,
                *ctx_lens = m + o_ctx, *tables = m + o_tables, *out_rows = m + o_out;
  // A cascade step's partials: each level's splits, then the suffixes'.
  std::vector<kernels::SplitPlan> level_splits(num_levels);
  kernels::SplitPlan suffix_splits;
  int num_parts = 0;
  const size_t attn_rows = static_cast<size_t>(num_seqs) * c.num_heads;
  if (cascade.worthwhile) {
    for (int level = 0; level < num_levels; ++level) {
      const kernels::CascadeLevel& lv = cascade.levels[level];
      level_splits[level] = kernels::PlanGroupAttentionSplits(lv.max_kv_len, lv.max_group_size,
                                                              lv.num_groups(), shape);
      num_parts += level_splits[level].num_splits;
    }
    suffix_splits =
        kernels::PlanSplits(SuffixBound(cascade), num_seqs * c.num_kv_heads, kKvBlockSize);
    num_parts += suffix_splits.num_splits;
    ARBOR_RETURN_IF_ERROR(bufs.decode_workspace.Reserve(static_cast<size_t>(num_parts) * attn_rows *
                                                        (c.head_dim + 1) * sizeof(float)));
  } else if (max_new == 1) {
    // See kDecodeContextBucket.
    max_ctx = RoundUp(max_ctx, kDecodeContextBucket);
    ARBOR_RETURN_IF_ERROR(bufs.decode_workspace.Reserve(
        kernels::PagedDecodeWorkspaceBytes(num_seqs, shape, max_ctx)));
  }

  Bf16* normed = d.normed.get<Bf16>();
  Bf16* proj = d.proj.get<Bf16>();
  const int dim = output_dim();
  if (mode == PassMode::kReplay) {
    ARBOR_RETURN_IF_ERROR(CudaError(
        cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec), stream), "cudaGraphLaunch"));
    return download_draws(num_out);
  }
  // The residual stream is in residual[cur]. Where a GEMM streams its
  // weights (decode sizes, see Device::StreamsWeights), the residual add +
  // RMSNorm ahead of it runs in its prologue (its CTAs all read residual[cur]
  // while the first writes the sum to the other buffer); elsewhere it
  // normalises into `normed` in place.
  Bf16* residual[2] = {d.residual.get<Bf16>(), d.residual_alt.get<Bf16>()};
  int cur = 0;
  auto fuses_norm = [&](int gemm_n) {
    return Device::StreamsWeights(n, gemm_n) && kernels::SmallBatchNormFits(n, hidden);
  };
  const bool qkv_fused = fuses_norm(q_dim + 2 * kv_dim);
  const bool mlp_fused = fuses_norm(2 * inter);
  auto fused_norm = [&](const Bf16* delta, const DeviceBuffer& weight) {
    kernels::SmallBatchInput in;
    in.delta = delta;
    in.residual = residual[cur];
    in.residual_out = residual[cur ^ 1];
    in.norm_weight = weight.get<Bf16>();
    in.eps = c.rms_norm_eps;
    cur ^= 1;
    return in;
  };
  auto norm_into_normed = [&](const Bf16* delta, const DeviceBuffer& weight) {
    return KernelError(kernels::RmsNormResidual(delta, residual[cur], weight.get<Bf16>(), normed, n,
                                                hidden, c.rms_norm_eps, stream),
                       "RmsNormResidual");
  };
  // A fused first norm reads the embedding rows itself.
  if (!qkv_fused) {
    ARBOR_RETURN_IF_ERROR(
        KernelError(kernels::EmbeddingGather(tokens, d.weights.embed.get<Bf16>(), residual[cur], n,
                                             hidden, c.vocab_size, stream),
                    "EmbeddingGather"));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayer& w = d.weights.layers[l];
    const Bf16* qkv = w.qkv.get<Bf16>();
    const Bf16* qkv_bias = w.qkv_bias.empty() ? nullptr : w.qkv_bias.get<Bf16>();
    Bf16* q = d.q.get<Bf16>();
    if (qkv_fused) {
      // Norm, Q/K/V projection, bias, RoPE and the K/V append: one launch.
      kernels::QkvRopeKv rope;
      rope.positions = positions;
      rope.inv_freq = d.weights.rope_inv_freq.get<float>();
      rope.seq_starts = seq_starts;
      rope.block_tables = tables;
      d.WithKvPools(l, [&](auto* k, auto* v) {
        if constexpr (std::is_same_v<decltype(k), kernels::Bf16*>) {
          rope.k_cache = k;
          rope.v_cache = v;
        } else {
          rope.k_cache_fp8 = k;
          rope.v_cache_fp8 = v;
        }
        return 0;
      });
      rope.bias = qkv_bias;
      rope.num_seqs = num_seqs;
      rope.max_blocks = mb;
      rope.num_heads = c.num_heads;
      rope.num_kv_heads = c.num_kv_heads;
      rope.head_dim = c.head_dim;
      kernels::SmallBatchInput in = fused_norm(l == 0 ? nullptr : proj, w.input_norm);
      if (l == 0) {
        in.residual = d.weights.embed.get<Bf16>();
        in.residual_rows = tokens;
        in.residual_rows_limit = c.vocab_size;
      }
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::SmallBatchQkvRope(in, qkv, q, rope, n, hidden, stream), "SmallBatchQkvRope"));
    } else {
      ARBOR_RETURN_IF_ERROR(norm_into_normed(l == 0 ? nullptr : proj, w.input_norm));
      // One GEMM over the stacked matrix; RopeKvAppend takes its rows apart.
      Bf16* qkv_rows = d.qkv_rows.get<Bf16>();
      const int qkv_n = q_dim + 2 * kv_dim;
      ARBOR_RETURN_IF_ERROR(d.Gemm(normed, qkv, qkv_rows, n, qkv_n, hidden, false));
      if (qkv_bias != nullptr) {
        ARBOR_RETURN_IF_ERROR(
            KernelError(kernels::AddBias(qkv_rows, qkv_bias, n, qkv_n, stream), "AddBias"));
      }
      ARBOR_RETURN_IF_ERROR(KernelError(
          d.WithKvPools(l,
                        [&](auto* k, auto* v) {
                          return kernels::RopeKvAppend(
                              qkv_rows, q, positions, d.weights.rope_inv_freq.get<float>(),
                              seq_starts, tables, k, v, n, num_seqs, mb, c.num_heads,
                              c.num_kv_heads, c.head_dim, stream);
                        }),
          "RopeKvAppend"));
    }
    Bf16* attn = d.attn.get<Bf16>();
    if (cascade.worthwhile) {
      // Each level's shared keys once per group (tensor cores), each branch's
      // own suffix, then the log-sum-exp merge of all parts.
      float* o_parts = bufs.decode_workspace.get<float>();
      float* lse_parts = o_parts + static_cast<size_t>(num_parts) * attn_rows * c.head_dim;
      int part = 0;
      for (int level = 0; level < num_levels; ++level) {
        const kernels::CascadeLevel& lv = cascade.levels[level];
        const size_t* o_level = &offsets[first_level_part + kLevelParts * level];
        ARBOR_RETURN_IF_ERROR(KernelError(
            d.WithKvPools(l,
                          [&](auto* k, auto* v) {
                            return kernels::GroupAttentionPartial(
                                q, positions, m + o_level[0], m + o_level[1], m + o_level[2], k, v,
                                o_parts + part * attn_rows * c.head_dim,
                                lse_parts + part * attn_rows, n, lv.num_groups(), lv.max_group_size,
                                shape, level_splits[level].split_len,
                                level_splits[level].num_splits, stream);
                          }),
            "GroupAttentionPartial"));
        part += level_splits[level].num_splits;
      }
      ARBOR_RETURN_IF_ERROR(KernelError(d.WithKvPools(l,
                                                      [&](auto* k, auto* v) {
                                                        return kernels::DecodeAttentionPartial(
                                                            q, k, v, tables, m + o_sbegin, ctx_lens,
                                                            o_parts + part * attn_rows * c.head_dim,
                                                            lse_parts + part * attn_rows, num_seqs,
                                                            shape, suffix_splits.split_len,
                                                            suffix_splits.num_splits, stream);
                                                      }),
                                        "DecodeAttentionPartial"));
      ARBOR_RETURN_IF_ERROR(
          KernelError(kernels::MergeAttentionStates(o_parts, lse_parts, attn, nullptr, num_parts,
                                                    num_seqs, c.num_heads, c.head_dim, stream),
                      "MergeAttentionStates"));
    } else if (max_new == 1) {  // a decode step: one token per sequence
      ARBOR_RETURN_IF_ERROR(KernelError(d.WithKvPools(l,
                                                      [&](auto* k, auto* v) {
                                                        return kernels::PagedDecodeAttention(
                                                            q, k, v, tables, ctx_lens, attn,
                                                            bufs.decode_workspace.get(), num_seqs,
                                                            max_ctx, shape, stream);
                                                      }),
                                        "PagedDecodeAttention"));
    } else {
      ARBOR_RETURN_IF_ERROR(KernelError(d.WithKvPools(l,
                                                      [&](auto* k, auto* v) {
                                                        return kernels::PrefillAttention(
                                                            q, positions, seq_starts, tables,
                                                            ctx_lens, k, v, attn, n, num_seqs,
                                                            max_new, shape, stream);
                                                      }),
                                        "PrefillAttention"));
    }
    ARBOR_RETURN_IF_ERROR(d.Gemm(attn, w.o_proj.get<Bf16>(), proj, n, hidden, q_dim, false));
    if (!w.o_bias.empty()) {
      ARBOR_RETURN_IF_ERROR(
          KernelError(kernels::AddBias(proj, w.o_bias.get<Bf16>(), n, hidden, stream), "AddBias"));
    }
    Bf16* act = d.act.get<Bf16>();
    if (mlp_fused && w.gate_up_bias.empty()) {
      // Norm, gate/up projection and SwiGLU: one launch, no intermediate.
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::SmallBatchGateUpSwiGlu(fused_norm(proj, w.post_norm), w.gate_up.get<Bf16>(), act,
                                          n, inter, hidden, stream),
          "SmallBatchGateUpSwiGlu"));
    } else {
      ARBOR_RETURN_IF_ERROR(norm_into_normed(proj, w.post_norm));
      Bf16* gate_up = d.gate_up.get<Bf16>();
      ARBOR_RETURN_IF_ERROR(
          d.Gemm(normed, w.gate_up.get<Bf16>(), gate_up, n, 2 * inter, hidden, false));
      if (!w.gate_up_bias.empty()) {
        ARBOR_RETURN_IF_ERROR(
            KernelError(kernels::AddBias(gate_up, w.gate_up_bias.get<Bf16>(), n, 2 * inter, stream),
                        "AddBias"));
      }
      ARBOR_RETURN_IF_ERROR(KernelError(kernels::SwiGlu(gate_up, act, n, inter, stream), "SwiGlu"));
    }
    ARBOR_RETURN_IF_ERROR(d.Gemm(act, w.down.get<Bf16>(), proj, n, hidden, inter, false));
    if (!w.down_bias.empty()) {
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::AddBias(proj, w.down_bias.get<Bf16>(), n, hidden, stream), "AddBias"));
    }
  }
  // A decode step that outputs every token in order (the usual one) folds
  // the final norm into the LM head's prologue: no normed rows, no gather.
  bool head_fuses_norm = fuses_norm(dim) && !c.is_value_head() && num_out == n;
  for (int r = 0; head_fuses_norm && r < num_out; ++r) {
    head_fuses_norm = batch.output_rows[r] == r;
  }
  if (!head_fuses_norm) {
    ARBOR_RETURN_IF_ERROR(
        KernelError(kernels::RmsNormResidual(proj, residual[cur], d.weights.final_norm.get<Bf16>(),
                                             normed, n, hidden, c.rms_norm_eps, stream),
                    "RmsNormResidual"));
  }

  if (logits != nullptr) logits->resize(static_cast<size_t>(num_out) * dim);
  if (sampled != nullptr) sampled->resize(num_out);
  if (num_out == 0) {
    return CudaError(cudaStreamSynchronize(stream), "forward");
  }
  // The output rows of the final hidden states, in output order.
  Bf16* rows = d.out_rows.get<Bf16>();
  if (!head_fuses_norm) {
    ARBOR_RETURN_IF_ERROR(
        KernelError(kernels::EmbeddingGather(out_rows, normed, rows, num_out, hidden, n, stream),
                    "gather output rows"));
  }
  if (!c.is_value_head()) {
    const Bf16* head =
        c.tie_word_embeddings ? d.weights.embed.get<Bf16>() : d.weights.lm_head.get<Bf16>();
    // Sampled tokens [num_out] int32, then their logprobs [num_out] fp32.
    // Then the sampler's workspace (the largest of its chunks' needs).
    const size_t draws_bytes = RoundUp(2 * num_out * static_cast<int>(sizeof(int32_t)), 256);
    if (sampled != nullptr) {
      const size_t workspace_bytes =
          std::max(kernels::SampleWorkspaceBytes(std::min(num_out, kLogitRowsPerGemm), dim),
                   kernels::SampleWorkspaceBytes(num_out % kLogitRowsPerGemm, dim));
      ARBOR_RETURN_IF_ERROR(bufs.sampled.Reserve(draws_bytes + workspace_bytes));
    }
    int32_t* sampled_tokens = bufs.sampled.get<int32_t>();
    float* sampled_logprobs = bufs.sampled.get<float>() + num_out;
    void* sample_workspace = bufs.sampled.get<unsigned char>() + draws_bytes;
    const auto* params = reinterpret_cast<const kernels::SampleParams*>(m + o_params);
    for (int r0 = 0; r0 < num_out; r0 += kLogitRowsPerGemm) {
      const int rc = std::min(kLogitRowsPerGemm, num_out - r0);
      if (head_fuses_norm) {  // one chunk: num_out <= kSmallBatchGemmMaxRows
        ARBOR_RETURN_IF_ERROR(
            KernelError(kernels::SmallBatchGemm(fused_norm(proj, d.weights.final_norm), head,
                                                d.logits.get(), rc, dim, hidden, true, stream),
                        "SmallBatchGemm (LM head)"));
      } else {
        ARBOR_RETURN_IF_ERROR(d.Gemm(rows + static_cast<size_t>(r0) * hidden, head, d.logits.get(),
                                     rc, dim, hidden, true));
      }
      if (sampled != nullptr) {
        // The stream orders this chunk's draws before the next chunk's GEMM
        // overwrites the logits: no synchronisation until the end.
        ARBOR_RETURN_IF_ERROR(KernelError(
            kernels::SampleTokens(d.logits.get<float>(), params + r0, sampled_tokens + r0,
                                  sampled_logprobs + r0, rc, dim, sample_workspace, stream),
            "SampleTokens"));
        continue;
      }
      ARBOR_RETURN_IF_ERROR(
          CudaError(cudaMemcpyAsync(logits->data() + static_cast<size_t>(r0) * dim, d.logits.get(),
                                    static_cast<size_t>(rc) * dim * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream),
                    "download logits"));
      // The logits buffer is reused by the next chunk.
      ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(stream), "forward"));
    }
    if (sampled == nullptr || mode == PassMode::kCapture) return absl::OkStatus();
    return download_draws(num_out);
  }
  // ValidateRowSampling turned value-head models away from ForwardSample.
  // Value heads: a few rows; the head runs on the host in fp32.
  d.host_rows.resize(static_cast<size_t>(num_out) * hidden);
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMemcpyAsync(d.host_rows.data(), rows, d.host_rows.size() * sizeof(Bf16),
                                cudaMemcpyDeviceToHost, stream),
                "download hidden rows"));
  ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(stream), "forward"));
  std::vector<float> x(d.host_rows.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = kernels::reference::Bf16ToFloat(d.host_rows[i]);
  const ScoreHead& head = weights_->score_head();
  if (!head.is_mlp()) {
    Linear(x.data(), num_out, hidden, head.w1.data(), head.b1.empty() ? nullptr : head.b1.data(),
           dim, logits->data());
    return absl::OkStatus();
  }
  std::vector<float> h(static_cast<size_t>(num_out) * hidden);
  Linear(x.data(), num_out, hidden, head.w1.data(), head.b1.empty() ? nullptr : head.b1.data(),
         hidden, h.data());
  for (float& value : h) value = std::max(value, 0.0f);
  Linear(h.data(), num_out, hidden, head.w2.data(), head.b2.empty() ? nullptr : head.b2.data(), dim,
         logits->data());
  return absl::OkStatus();
}

}  // namespace arbor::runtime
