#include "runtime/backend/cuda/weight_upload.h"

#include <cstddef>
#include <initializer_list>
#include <utility>

#include "common/status_macros.h"
#include "kernels/reference.h"
#include "runtime/backend/cpu/cpu_ops.h"

namespace arbor::runtime::cuda_internal {
namespace {

using kernels::Bf16;

// fp32 host tensor -> bf16 device buffer.
absl::Status UploadBf16(const std::vector<float>& host, DeviceBuffer* dst) {
  if (host.empty()) return absl::OkStatus();
  std::vector<Bf16> bits(host.size());
  for (size_t i = 0; i < host.size(); ++i) bits[i] = kernels::reference::FloatToBf16(host[i]);
  ARBOR_RETURN_IF_ERROR(dst->Reserve(bits.size() * sizeof(Bf16)));
  return CudaError(
      cudaMemcpy(dst->get(), bits.data(), bits.size() * sizeof(Bf16), cudaMemcpyHostToDevice),
      "upload weights");
}

}  // namespace

absl::Status UploadWeights(const ModelWeights& weights, bool bf16_rope_frequencies,
                           DeviceWeights* out) {
  const ModelConfig& c = weights.config();
  ARBOR_RETURN_IF_ERROR(UploadBf16(weights.embed_tokens(), &out->embed));
  ARBOR_RETURN_IF_ERROR(UploadBf16(weights.final_norm(), &out->final_norm));
  if (!c.is_value_head() && !c.tie_word_embeddings) {
    const float* head = weights.lm_head();
    ARBOR_RETURN_IF_ERROR(UploadBf16(
        std::vector<float>(head, head + static_cast<size_t>(c.vocab_size) * c.hidden_size),
        &out->lm_head));
  }
  out->layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights.layers()[l];
    DeviceLayer& d = out->layers[l];
    using Upload = std::pair<const std::vector<float>*, DeviceBuffer*>;
    for (const Upload& u : std::initializer_list<Upload>{{&w.input_norm, &d.input_norm},
                                                         {&w.qkv, &d.qkv},
                                                         {&w.qkv_bias, &d.qkv_bias},
                                                         {&w.o_proj, &d.o_proj},
                                                         {&w.o_bias, &d.o_bias},
                                                         {&w.post_attention_norm, &d.post_norm},
                                                         {&w.gate_up, &d.gate_up},
                                                         {&w.gate_up_bias, &d.gate_up_bias},
                                                         {&w.down_proj, &d.down},
                                                         {&w.down_bias, &d.down_bias}}) {
      ARBOR_RETURN_IF_ERROR(UploadBf16(*u.first, u.second));
    }
  }
  std::vector<float> inv_freq = RopeInvFreq(c.head_dim, c.rope_theta, c.rope_scaling);
  if (bf16_rope_frequencies) {
    for (float& f : inv_freq) f = kernels::reference::RoundBf16(f);
  }
  ARBOR_RETURN_IF_ERROR(out->rope_inv_freq.Reserve(inv_freq.size() * sizeof(float)));
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMemcpy(out->rope_inv_freq.get(), inv_freq.data(),
                           inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice),
                "upload RoPE frequencies"));
  return absl::OkStatus();
}

}  // namespace arbor::runtime::cuda_internal
