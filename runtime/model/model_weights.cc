#include "runtime/model/model_weights.h"

#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace arbor::runtime {
namespace internal {

// Loads tensors from a checkpoint, checking shapes and remembering which ones
// were used so that leftovers can be reported.
//
// A check-only loader validates every tensor (present, the config's shape, a
// dtype that converts to fp32) and allocates nothing, so that a config.json
// whose sizes disagree with the checkpoint fails before gigabytes are sized
// from it.
class TensorLoader {
 public:
  TensorLoader(const SafetensorsCheckpoint& checkpoint, bool check_only)
      : checkpoint_(checkpoint), check_only_(check_only) {}

  // Sizes a destination; nothing in check-only mode.
  void Resize(std::vector<float>* dst, int64_t n) const {
    if (!check_only_) dst->resize(static_cast<size_t>(n));
  }

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
    if (t.dtype != SafetensorsDType::kF32 && t.dtype != SafetensorsDType::kF16 &&
        t.dtype != SafetensorsDType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' in ", t.file, " has dtype ", SafetensorsDTypeName(t.dtype),
          "; only F32, F16 and BF16 weights can be loaded"));
    }
    used_.insert(name);
    if (check_only_) return absl::OkStatus();
    const size_t n = static_cast<size_t>(t.num_elements());
    if (dst->size() < offset + n) dst->resize(offset + n);
    return ConvertToFloat32(t, absl::MakeSpan(dst->data() + offset, n));
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
  const bool check_only_;
  absl::flat_hash_set<std::string> used_;
};

}  // namespace internal

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
  // Every tensor is checked before the first byte is allocated.
  {
    ModelWeights dry_run;
    internal::TensorLoader checker(checkpoint, /*check_only=*/true);
    ARBOR_RETURN_IF_ERROR(dry_run.LoadTensors(config, checkpoint, checker));
  }
  std::unique_ptr<ModelWeights> w(new ModelWeights());
  internal::TensorLoader loader(checkpoint, /*check_only=*/false);
  ARBOR_RETURN_IF_ERROR(w->LoadTensors(config, checkpoint, loader));
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

absl::Status ModelWeights::LoadTensors(const ModelConfig& config,
                                       const SafetensorsCheckpoint& checkpoint,
                                       internal::TensorLoader& loader) {
  ModelWeights* w = this;
  w->config_ = config;
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
    loader.Resize(&layer.qkv, (q_dim + 2 * kv_dim) * hidden);
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "self_attn.q_proj.weight", {q_dim, hidden}, &layer.qkv));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "self_attn.k_proj.weight", {kv_dim, hidden}, &layer.qkv, q_dim * hidden));
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "self_attn.v_proj.weight", {kv_dim, hidden}, &layer.qkv,
                                      (q_dim + kv_dim) * hidden));
    if (config.attention_bias) {
      loader.Resize(&layer.qkv_bias, q_dim + 2 * kv_dim);
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
    loader.Resize(&layer.gate_up, 2 * inter * hidden);
    ARBOR_RETURN_IF_ERROR(loader.Load(p + "mlp.gate_proj.weight", {inter, hidden}, &layer.gate_up));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "mlp.up_proj.weight", {inter, hidden}, &layer.gate_up, inter * hidden));
    ARBOR_RETURN_IF_ERROR(
        loader.Load(p + "mlp.down_proj.weight", {hidden, inter}, &layer.down_proj));
    if (config.mlp_bias) {
      loader.Resize(&layer.gate_up_bias, 2 * inter);
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
  return absl::OkStatus();
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
