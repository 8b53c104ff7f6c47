#include "runtime/model/model_weights.h"

#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace arbor::runtime {
namespace {

// Loads tensors from a checkpoint, checking shapes and remembering which ones
// were used so that leftovers can be reported.
class TensorLoader {
 public:
  explicit TensorLoader(const SafetensorsCheckpoint& checkpoint) : checkpoint_(checkpoint) {}

  bool Has(const std::string& name) const { return checkpoint_.Find(name) != nullptr; }

  // Converts tensor `name` of shape `shape` into dst (resized to fit) at
  // element offset `offset`.
  absl::Status Load(const std::string& name, const std::vector<int64_t>& shape,
                    std::vector<float>* dst, size_t offset = 0) {
    absl::StatusOr<const TensorView*> tensor = checkpoint_.Get(name);
    if (!tensor.ok()) return tensor.status();
    const TensorView& t = **tensor;
    if (t.shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' in ", t.file, " has shape ", t.ShapeString(),
                       ", the config needs [", absl::StrJoin(shape, ", "), "]"));
    }
    const size_t n = static_cast<size_t>(t.num_elements());
    if (dst->size() < offset + n) dst->resize(offset + n);
    if (absl::Status s = ConvertToFloat32(t, absl::MakeSpan(dst->data() + offset, n)); !s.ok()) {
      return s;
    }
    used_.insert(name);
    return absl::OkStatus();
  }

  std::vector<std::string> Unused() const {
    std::vector<std::string> unused;
    for (const std::string& name : checkpoint_.TensorNames()) {
      if (!used_.contains(name)) unused.push_back(name);
    }
    return unused;
  }

 private:
  const SafetensorsCheckpoint& checkpoint_;
  absl::flat_hash_set<std::string> used_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const std::string& model_dir) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> checkpoint =
      SafetensorsCheckpoint::Open(model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  return FromCheckpoint(*config, **checkpoint);
}

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::FromCheckpoint(
    const ModelConfig& config, const SafetensorsCheckpoint& checkpoint) {
  std::unique_ptr<ModelWeights> w(new ModelWeights());
  w->config_ = config;
  TensorLoader loader(checkpoint);
  const int64_t hidden = config.hidden_size;
  const int64_t inter = config.intermediate_size;
  const int64_t q_dim = int64_t{config.num_heads} * config.head_dim;
  const int64_t kv_dim = int64_t{config.num_kv_heads} * config.head_dim;

  ARBOR_RETURN_IF_ERROR(
      loader.Load("model.embed_tokens.weight", {config.vocab_size, hidden}, &w->embed_tokens_));
  w->layers_.resize(config.num_layers);
  for (int i = 0; i < config.num_layers; ++i) {
    LayerWeights& layer = w->layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "input_layernorm.weight", {hidden}, &layer.input_norm));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "post_attention_layernorm.weight", {hidden}, &layer.post_attention_norm));
    layer.qkv.resize((q_dim + 2 * kv_dim) * hidden);
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "self_attn.q_proj.weight", {q_dim, hidden}, &layer.qkv));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "self_attn.k_proj.weight", {kv_dim, hidden}, &layer.qkv, q_dim * hidden));
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "self_attn.v_proj.weight", {kv_dim, hidden}, &layer.qkv,
                                      (q_dim + kv_dim) * hidden));
    if (config.attention_bias) {
      layer.qkv_bias.resize(q_dim + 2 * kv_dim);
      ARBOR_RETURN_IF_ERROR(loader.Load(p + "self_attn.q_proj.bias", {q_dim}, &layer.qkv_bias));
      ARBOR_RETURN_IF_ERROR(
          loader.Load(p + "self_attn.k_proj.bias", {kv_dim}, &layer.qkv_bias, q_dim));
      ARBOR_RETURN_IF_ERROR(
          loader.Load(p + "self_attn.v_proj.bias", {kv_dim}, &layer.qkv_bias, q_dim + kv_dim));
    }
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "self_attn.o_proj.weight", {hidden, q_dim}, &layer.o_proj));
    if (config.o_proj_bias) {
      ARBOR_RETURN_IF_ERROR(loader.Load(p + "self_attn.o_proj.bias", {hidden}, &layer.o_bias));
    }
    layer.gate_up.resize(2 * inter * hidden);
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "mlp.gate_proj.weight", {inter, hidden}, &layer.gate_up));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "mlp.up_proj.weight", {inter, hidden}, &layer.gate_up, inter * hidden));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "mlp.down_proj.weight", {hidden, inter}, &layer.down_proj));
    if (config.mlp_bias) {
      layer.gate_up_bias.resize(2 * inter);
      ARBOR_RETURN_IF_ERROR(loader.Load(p + "mlp.gate_proj.bias", {inter}, &layer.gate_up_bias));
      ARBOR_RETURN_IF_ERROR(
          loader.Load(p + "mlp.up_proj.bias", {inter}, &layer.gate_up_bias, inter));
      ARBOR_RETURN_IF_ERROR(loader.Load(p + "mlp.down_proj.bias", {hidden}, &layer.down_bias));
    }
  }
  ARBOR_RETURN_IF_ERROR(loader.Load("model.norm.weight", {hidden}, &w->final_norm_));

  if (config.is_value_head()) {
    ScoreHead& head = w->score_head_;
    const int64_t labels = config.num_labels;
    if (loader.Has("score.weight")) {
      ARBOR_RETURN_IF_ERROR(loader.Load("score.weight", {labels, hidden}, &head.w1));
      if (loader.Has("score.bias")) {
        ARBOR_RETURN_IF_ERROR(loader.Load("score.bias", {labels}, &head.b1));
      }
    } else if (loader.Has("score.0.weight")) {
      ARBOR_RETURN_IF_ERROR(loader.Load("score.0.weight", {hidden, hidden}, &head.w1));
      ARBOR_RETURN_IF_ERROR(loader.Load("score.2.weight", {labels, hidden}, &head.w2));
      if (loader.Has("score.0.bias")) {
        ARBOR_RETURN_IF_ERROR(loader.Load("score.0.bias", {hidden}, &head.b1));
      }
      if (loader.Has("score.2.bias")) {
        ARBOR_RETURN_IF_ERROR(loader.Load("score.2.bias", {labels}, &head.b2));
      }
    } else {
      return absl::NotFoundError(absl::StrCat(
          "checkpoint ", checkpoint.model_dir(), " of value-head model ", config.architecture,
          " has no score head: neither 'score.weight' nor 'score.0.weight'"));
    }
  } else if (!config.tie_word_embeddings) {
    if (!loader.Has("lm_head.weight")) {
      return absl::NotFoundError(absl::StrCat("checkpoint ", checkpoint.model_dir(),
                                              " has no tensor 'lm_head.weight' and config.json "
                                              "does not set tie_word_embeddings"));
    }
    ARBOR_RETURN_IF_ERROR(loader.Load("lm_head.weight", {config.vocab_size, hidden}, &w->lm_head_));
  }

  std::vector<std::string> unused = loader.Unused();
  std::erase_if(unused, [](const std::string& name) {
    // Buffers some exporters keep; a tied checkpoint may still carry lm_head.
    return absl::EndsWith(name, "rotary_emb.inv_freq") || name == "lm_head.weight";
  });
  if (!unused.empty()) {
    ARBOR_LOG(WARNING) << "checkpoint " << checkpoint.model_dir() << ": " << unused.size()
                       << " tensors not used by " << config.architecture << ", e.g. '"
                       << unused.front() << "'";
  }
  return w;
}

const float* ModelWeights::lm_head() const {
  if (config_.is_value_head()) return nullptr;
  return config_.tie_word_embeddings ? embed_tokens_.data() : lm_head_.data();
}

size_t ModelWeights::num_bytes() const {
  size_t n = embed_tokens_.size() + final_norm_.size() + lm_head_.size() + score_head_.w1.size() +
             score_head_.b1.size() + score_head_.w2.size() + score_head_.b2.size();
  for (const LayerWeights& l : layers_) {
    n += l.input_norm.size() + l.qkv.size() + l.qkv_bias.size() + l.o_proj.size() +
         l.o_bias.size() + l.post_attention_norm.size() + l.gate_up.size() + l.gate_up_bias.size() +
         l.down_proj.size() + l.down_bias.size();
  }
  return n * sizeof(float);
}

}  // namespace arbor::runtime
