// ModelWeights: a Llama-family checkpoint's tensors in fp32, by their Hugging
// Face names, each checked against the ModelConfig's shapes (errors name the
// tensor, its shape and the expected one). Q/K/V are stacked into one matrix
// and gate/up into another, so that a layer runs two GEMMs where the checkpoint
// has five.
//
// Value-head models carry, instead of lm_head, either a linear `score` head
// (`score.weight` [num_labels, hidden], optional `score.bias`) or the
// two-layer head of Qwen2.5-Math-PRM (`score.0` Linear(hidden, hidden), ReLU,
// `score.2` Linear(hidden, num_labels)).
//
// Immutable after Load; thread-safe to read.
#ifndef ARBOR_RUNTIME_MODEL_MODEL_WEIGHTS_H_
#define ARBOR_RUNTIME_MODEL_MODEL_WEIGHTS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model_config.h"
#include "runtime/model/safetensors.h"

namespace arbor::runtime {
namespace internal {
class TensorLoader;
}  // namespace internal

struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]
  std::vector<float> qkv;       // [(num_heads + 2 * num_kv_heads) * head_dim, hidden]: q, k, v rows
  std::vector<float> qkv_bias;  // [(num_heads + 2 * num_kv_heads) * head_dim] or empty
  std::vector<float> o_proj;    // [hidden, num_heads * head_dim]
  std::vector<float> o_bias;    // [hidden] or empty
  std::vector<float> post_attention_norm;  // [hidden]
  std::vector<float> gate_up;              // [2 * intermediate, hidden]: gate rows, then up rows
  std::vector<float> gate_up_bias;         // [2 * intermediate] or empty
  std::vector<float> down_proj;            // [hidden, intermediate]
  std::vector<float> down_bias;            // [hidden] or empty
};

struct ScoreHead {
  // Linear head: w2/b2 empty. MLP head (PRM): hidden = relu(x w1^T + b1), out = hidden w2^T + b2.
  std::vector<float> w1;  // [num_labels or hidden, hidden]
  std::vector<float> b1;  // or empty
  std::vector<float> w2;  // [num_labels, hidden] or empty
  std::vector<float> b2;  // or empty
  bool is_mlp() const { return !w2.empty(); }
};

class ModelWeights {
 public:
  // Reads config.json (+ generation_config.json) and the checkpoint in model_dir.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Load(const std::string& model_dir);
  // Converts the tensors of an opened checkpoint for `config`. Every tensor's
  // presence, shape and dtype is checked before anything is allocated; errors
  // name the tensor and its file.
  static absl::StatusOr<std::unique_ptr<ModelWeights>> FromCheckpoint(
      const ModelConfig& config, const SafetensorsCheckpoint& checkpoint);

  const ModelConfig& config() const { return config_; }
  const std::vector<float>& embed_tokens() const { return embed_tokens_; }  // [vocab, hidden]
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const std::vector<float>& final_norm() const { return final_norm_; }  // [hidden]
  // [vocab, hidden]: lm_head.weight, or the embedding when tied. Empty for value-head models.
  const float* lm_head() const;
  const ScoreHead& score_head() const { return score_head_; }
  // Bytes of fp32 parameters held.
  size_t num_bytes() const;

 private:
  ModelWeights() = default;
  // One pass over the tensors `config` needs; with a check-only loader it
  // validates them and sizes nothing.
  absl::Status LoadTensors(const ModelConfig& config, const SafetensorsCheckpoint& checkpoint,
                           internal::TensorLoader& loader);
  ModelConfig config_;
  std::vector<float> embed_tokens_;
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;
  std::vector<float> lm_head_;  // empty when tied
  ScoreHead score_head_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_MODEL_MODEL_WEIGHTS_H_
