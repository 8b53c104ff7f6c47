// Internal to the CUDA backend (CUDA builds only): the model's weights on the
// device, in bf16, and their upload from a ModelWeights checkpoint (fp32 on
// the host). Value-head weights stay on the host (CudaBackend runs the head
// there); so does the LM head of a model with tied embeddings (the embedding
// table serves).
//
// Thread-safety: UploadWeights uses the calling thread's current device and
// the legacy stream, synchronously (cudaMemcpy); the caller orders its own
// streams after it. A DeviceWeights is read-only once uploaded.
#ifndef ARBOR_RUNTIME_BACKEND_CUDA_WEIGHT_UPLOAD_H_
#define ARBOR_RUNTIME_BACKEND_CUDA_WEIGHT_UPLOAD_H_

#include <vector>

#include "absl/status/status.h"
#include "runtime/backend/cuda/device_memory.h"
#include "runtime/model/model_weights.h"

namespace arbor::runtime::cuda_internal {

// One decoder layer, in the Hugging Face Linear layout ([out, in]); Q/K/V and
// gate/up stacked as in LayerWeights. A bias absent from the checkpoint is
// an empty buffer.
struct DeviceLayer {
  DeviceBuffer input_norm, qkv, qkv_bias, o_proj, o_bias, post_norm, gate_up, gate_up_bias, down,
      down_bias;
};

struct DeviceWeights {
  DeviceBuffer embed;          // [vocab, hidden]
  DeviceBuffer lm_head;        // [vocab, hidden]; empty when tied or a value head
  DeviceBuffer final_norm;     // [hidden]
  DeviceBuffer rope_inv_freq;  // [head_dim / 2] fp32 (Llama-3 scaling applied)
  std::vector<DeviceLayer> layers;
};

// Uploads `weights` into `out` (bf16; RoPE frequencies fp32, rounded to bf16
// first when bf16_rope_frequencies, see CudaBackendOptions). Errors: CUDA
// failures (RESOURCE_EXHAUSTED when out of memory).
absl::Status UploadWeights(const ModelWeights& weights, bool bf16_rope_frequencies,
                           DeviceWeights* out);

}  // namespace arbor::runtime::cuda_internal

#endif  // ARBOR_RUNTIME_BACKEND_CUDA_WEIGHT_UPLOAD_H_
