// CudaBackend: ModelBackend on one NVIDIA GPU for Llama-family checkpoints
// (Llama, Qwen2 with QKV bias, Mistral, and their value-head variants). bf16
// weights and activations, fp32 accumulation; GEMMs on cuBLAS; everything
// else on Arbor's kernels (kernels/kernels.h): fused residual + RMSNorm, RoPE
// with Llama-3 scaling, KV append, causal prefill attention over paged KV,
// paged decode attention (cascade attention when branches share a prompt's
// blocks), SwiGLU. Logits come back in fp32, or ForwardSample draws tokens
// from them on the device. Value heads (score / PRM heads, a few rows) run on
// the host in fp32 from the final hidden rows.
//
// The KV pool (layout of runtime/backend/backend.h, bf16 or fp8 e4m3) is allocated once at Create
// from a fraction of the GPU memory left free by the weights and scratch, or
// with an exact block count. Batches of more than max_batch_tokens tokens are
// run as several device passes, split between sequences.
//
// Without CUDA (ARBOR_HAVE_CUDA unset) Create returns UNIMPLEMENTED.
//
// Thread-safety: like every ModelBackend, driven by one thread; methods are not
// safe to call concurrently. Each instance owns its stream and cuBLAS handle.
#ifndef ARBOR_RUNTIME_BACKEND_CUDA_CUDA_BACKEND_H_
#define ARBOR_RUNTIME_BACKEND_CUDA_CUDA_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/backend/backend.h"
#include "runtime/model/model_config.h"

namespace arbor::kernels {
struct CascadePlan;
}  // namespace arbor::kernels

namespace arbor::runtime {

class ModelWeights;

struct CudaBackendOptions {
  // CUDA device ordinal.
  int device = 0;
  // KV blocks per layer; 0 sizes the pool from kv_memory_fraction.
  int num_kv_blocks = 0;
  // Fraction of the GPU memory free after weights and scratch that the KV
  // pool takes, in (0, 1].
  double kv_memory_fraction = 0.9;
  // When > 0 (in (0, 1)), the KV pool takes this share of the GPU's total
  // memory instead: the same whichever process on a shared GPU starts first
  // (docs/E2E.md, "One GPU, two engines"). RESOURCE_EXHAUSTED when that much
  // is not free.
  double kv_memory_share = 0;
  // KV pool elements in fp8 e4m3 instead of bf16 (kernels/kernels.h,
  // Fp8E4m3): half the bytes per token, so twice the tokens in the same
  // memory and half the KV bytes every attention kernel reads; each K/V value
  // loses 5 of bf16's 8 mantissa bits, so outputs differ from the bf16
  // cache's (docs/KERNELS.md measures both). Prefill and shared-prefix group
  // attention then run the mma.sync kernel.
  bool fp8_kv_cache = false;
  // Tokens per device pass (scratch is sized for it); >= 1.
  int max_batch_tokens = 8192;
  // Decode steps whose consecutive sequences share at least this many prompt
  // tokens (the same leading KV blocks) read the shared prompt once per group
  // (cascade attention) instead of once per sequence; 0 disables.
  int cascade_min_shared_tokens = 256;
  // Levels of that cascade, >= 1: 1 reads only the shared prompt once per
  // group; each further level reads once more per run of consecutive branches
  // the KV they share below the level above (a search tree's steps: beam
  // siblings share their parent's path), when a run shares at least one more
  // 64-token step (kernels/cascade_plan.h). 1 by default: in the service's
  // batches the levels below the prompt cost more than they save (docs/KERNELS.md).
  int cascade_max_levels = 1;
  // As CpuBackendOptions::bf16_rope_frequencies (for references made from a
  // model cast with .to(torch.bfloat16)).
  bool bf16_rope_frequencies = false;
  // ForwardSample decode steps (one new token per sequence) replay a CUDA graph
  // per (sequences, 256-token context bucket; for a cascade step also its
  // groups, largest group, shared prefix and 256-token suffix bucket) once
  // that shape has run twice: one launch instead of ~15 per layer. Same
  // kernels, same split plans, so the same tokens as without. At most
  // kMaxCudaGraphs are kept.
  bool cuda_graphs = true;
  // Priority of this backend's CUDA stream against the other streams of its
  // process, on CUDA's scale: lower is scheduled first, 0 is the default,
  // values past the device's range are clamped to it (cudaDeviceGetStreamPriorityRange:
  // -5..0 on an H100). It matters where two engines share one CUDA context
  // (arbor-allinone's policy and reward model): the GPU hands free SMs to
  // the higher-priority stream's blocks first. Processes' contexts take
  // turns on the GPU whatever their streams' priorities.
  int stream_priority = 0;
};

class CudaBackend : public ModelBackend {
 public:
  // Loads <model_dir>/config.json (+ generation_config.json) and the
  // safetensors checkpoint. Errors name the file, field or tensor at fault,
  // or the CUDA failure (no device: FAILED_PRECONDITION; memory:
  // RESOURCE_EXHAUSTED).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const std::string& model_dir,
                                                             const CudaBackendOptions& options);
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(std::unique_ptr<ModelWeights> weights,
                                                             const CudaBackendOptions& options);

  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const ModelConfig& config() const override;
  std::string name() const override { return "cuda"; }
  int num_kv_blocks() const override { return num_kv_blocks_; }
  int output_dim() const override;

  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* out) override;
  // Samples on the device (kernels::SampleTokens) from the fp32 logits, which
  // never leave the GPU: a decode step downloads 8 bytes per row.
  absl::Status ForwardSample(const ForwardBatch& batch, absl::Span<const RowSampling> sampling,
                             std::vector<SampledToken>* out) override;
  bool samples_on_device() const override { return true; }
  absl::Status CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>> src_dst) override;
  DecodeStats decode_stats() const override;

  // Turns decode CUDA graphs on or off (see CudaBackendOptions::cuda_graphs);
  // off also frees the graphs held.
  void set_cuda_graphs(bool enabled);
  // Decode graphs instantiated so far (for tests and benchmarks).
  int num_cuda_graphs() const;
  // The priority the stream got (CudaBackendOptions::stream_priority after clamping).
  int stream_priority() const;
  // As CudaBackendOptions::cascade_min_shared_tokens (>= 0; 0 disables).
  void set_cascade_min_shared_tokens(int tokens);
  // As CudaBackendOptions::cascade_max_levels (values below 1 count as 1).
  void set_cascade_max_levels(int levels);

  static constexpr int kMaxCudaGraphs = 64;

 private:
  struct Device;       // device state; defined only with CUDA (cuda_device.h)
  struct PassBuffers;  // a pass's metadata, attention workspace and draws
  struct DecodeGraph;
  enum class PassMode {
    kEager,    // enqueue the kernels and wait for the result
    kCapture,  // enqueue the kernels into a stream capture; no upload or download
    kReplay,   // upload the batch, launch `graph_exec`, download the draws
  };
  CudaBackend(std::unique_ptr<ModelWeights> weights, int num_kv_blocks,
              std::unique_ptr<Device> device);
  // ValidateForwardBatch, then this backend's limits (max_batch_tokens).
  absl::Status ValidateBatch(const ForwardBatch& batch) const;
  // Forward (`logits` set) or ForwardSample (`sampled` set, one `sampling`
  // entry per output row): validates, then runs one device pass or several.
  // Run and ForwardPass: forward_pass.cc; GraphDecode: cuda_graphs.cc.
  absl::Status Run(const ForwardBatch& batch, absl::Span<const RowSampling> sampling,
                   std::vector<float>* logits, std::vector<SampledToken>* sampled);
  // One device pass over a batch of at most max_batch_tokens tokens, through
  // `buffers` (null: the backend's shared ones), with the batch's cascade
  // groups when the caller planned them (null: planned here).
  absl::Status ForwardPass(const ForwardBatch& batch, absl::Span<const RowSampling> sampling,
                           std::vector<float>* logits, std::vector<SampledToken>* sampled,
                           PassBuffers* buffers = nullptr, PassMode mode = PassMode::kEager,
                           void* graph_exec = nullptr,
                           const kernels::CascadePlan* cascade_plan = nullptr);
  // A decode step of ForwardSample through the graph of its shape.
  absl::Status GraphDecode(const ForwardBatch& batch, absl::Span<const RowSampling> sampling,
                           std::vector<SampledToken>* sampled);

  std::unique_ptr<ModelWeights> weights_;
  int num_kv_blocks_ = 0;
  std::unique_ptr<Device> device_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_BACKEND_CUDA_CUDA_BACKEND_H_
