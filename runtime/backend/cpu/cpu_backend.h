// CpuBackend: the fp32 reference implementation of ModelBackend for
// Llama-family checkpoints (Llama, Qwen2 with QKV bias, Mistral, and their
// value-head variants). Weights are converted to fp32 at load; GEMMs run on
// OpenBLAS over all tokens of a batch at once; attention over the paged KV pool
// is parallelised over (sequence, head) with the backend's own threads.
//
// The KV pool is allocated once at Create (num_kv_blocks blocks per layer, in
// the layout of runtime/backend/backend.h) and never grows.
//
// Thread-safety: like every ModelBackend, driven by one thread; methods are not
// safe to call concurrently. Different CpuBackend instances are independent.
#ifndef ARBOR_RUNTIME_BACKEND_CPU_CPU_BACKEND_H_
#define ARBOR_RUNTIME_BACKEND_CPU_CPU_BACKEND_H_

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

namespace arbor::runtime {

class ModelWeights;
class ThreadPool;

struct CpuBackendOptions {
  // Blocks of kKvBlockSize tokens in the KV pool (per layer). >= 1.
  int num_kv_blocks = 256;
  // Threads for OpenBLAS and for the backend's own parallel loops; 0 takes the
  // hardware concurrency.
  int num_threads = 0;
  // Rounds the RoPE inverse frequencies to bf16. transformers does this to a
  // model cast with .to(torch.bfloat16) (the rotary buffer is cast too), so
  // this reproduces references made that way; real checkpoints loaded by
  // from_pretrained keep them in fp32, as the default here does.
  bool bf16_rope_frequencies = false;
};

class CpuBackend : public ModelBackend {
 public:
  // Loads <model_dir>/config.json (+ generation_config.json) and the
  // safetensors checkpoint (single file or sharded index). Errors name the
  // file, field or tensor at fault.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(const std::string& model_dir,
                                                            const CpuBackendOptions& options);
  // Same, with the weights already loaded (tests, tools).
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(std::unique_ptr<ModelWeights> weights,
                                                            const CpuBackendOptions& options);

  ~CpuBackend() override;
  CpuBackend(const CpuBackend&) = delete;
  CpuBackend& operator=(const CpuBackend&) = delete;

  const ModelConfig& config() const override;
  std::string name() const override { return "cpu"; }
  int num_kv_blocks() const override { return num_kv_blocks_; }
  int output_dim() const override;

  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* out) override;
  absl::Status CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>> src_dst) override;
  DecodeStats decode_stats() const override { return decode_stats_; }

  // The KV pools of `layer` ([num_kv_blocks, kKvBlockSize, num_kv_heads,
  // head_dim]); for tests and debugging.
  const float* k_pool(int layer) const;
  const float* v_pool(int layer) const;

 private:
  struct Scratch;
  CpuBackend(std::unique_ptr<ModelWeights> weights, const CpuBackendOptions& options);

  std::unique_ptr<ModelWeights> weights_;
  int num_kv_blocks_ = 0;
  int num_threads_ = 1;
  size_t block_stride_ = 0;  // floats per block: kKvBlockSize * num_kv_heads * head_dim
  std::vector<std::vector<float>> k_pools_;  // [num_layers][num_kv_blocks * block_stride_]
  std::vector<std::vector<float>> v_pools_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Scratch> scratch_;
  std::vector<float> rope_inv_freq_;  // [head_dim / 2], Llama-3 scaling applied
  DecodeStats decode_stats_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_BACKEND_CPU_CPU_BACKEND_H_
