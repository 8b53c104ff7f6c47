// ModelConfig: the architecture of a Llama-family checkpoint, read from a
// Hugging Face config.json. Both dialects are accepted: Hub checkpoints carry
// `rope_theta` and `rope_scaling`; transformers 5 writes `rope_parameters`.
// Plain value type; thread-compatible.
#ifndef ARBOR_RUNTIME_MODEL_MODEL_CONFIG_H_
#define ARBOR_RUNTIME_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace arbor::runtime {

struct RopeScaling {
  // "default" (none), "linear" (positions divided by factor) or "llama3".
  std::string type = "default";
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  // "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", or a
  // sequence-classification variant for value-head reward models.
  std::string architecture;
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // hidden_size / num_heads unless given
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  int max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  // Q/K/V projections carry a bias (Qwen2; Llama with attention_bias).
  bool attention_bias = false;
  // o_proj carries a bias (Llama with attention_bias = true; not Qwen2).
  bool o_proj_bias = false;
  // gate/up/down projections carry a bias (Llama `mlp_bias`).
  bool mlp_bias = false;
  // Mistral's sliding window; 0 when none. The engine caps context at it.
  int sliding_window = 0;
  int bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;
  // Value-head models (e.g. Qwen2.5-Math-PRM, *ForSequenceClassification /
  // *ForProcessRewardModel): size of the score head's output; 0 for a plain LM.
  int num_labels = 0;
  // dtype the checkpoint stores ("bfloat16", "float16", "float32").
  std::string torch_dtype = "float32";

  bool is_value_head() const { return num_labels > 0; }
};

// Upper bounds on the sizes config.json may give, checked by ParseModelConfig
// before anything is sized from them: well above every Llama-family
// checkpoint published (Llama 3.1 405B: hidden 16384, intermediate 53248,
// 126 layers, 128 heads; vocabularies up to 256k; windows up to 10M tokens),
// far below what would overflow a size computation or ask for terabytes.
struct ModelConfigLimits {
  static constexpr int kMaxVocabSize = 1 << 22;         // 4,194,304
  static constexpr int kMaxHiddenSize = 1 << 16;        // 65,536
  static constexpr int kMaxIntermediateSize = 1 << 19;  // 524,288
  static constexpr int kMaxLayers = 1024;
  static constexpr int kMaxHeads = 1024;  // query and key/value heads
  static constexpr int kMaxHeadDim = 1024;
  static constexpr int kMaxPositionEmbeddings = 1 << 24;  // 16,777,216 tokens
  static constexpr int kMaxLabels = 1 << 16;              // value-head outputs
  // num_heads * head_dim (the query projection's rows).
  static constexpr int kMaxAttentionWidth = 1 << 18;
};

// Parses config.json text. Errors name the missing or invalid field; a size
// above ModelConfigLimits is INVALID_ARGUMENT naming the field and the limit.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text);
// Reads <model_dir>/config.json (and generation_config.json for eos ids, when present).
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_MODEL_MODEL_CONFIG_H_
