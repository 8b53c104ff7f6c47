#include "runtime/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime {
namespace {

using Json = nlohmann::json;

constexpr absl::string_view kValueHeadSuffixes[] = {
    "ForSequenceClassification", "ForTokenClassification", "ForProcessRewardModel"};
constexpr absl::string_view kFamilies[] = {"Llama", "Qwen2", "Mistral"};

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: field '", field, "' ", what));
}

bool IsNull(const Json& obj, absl::string_view field) {
  auto it = obj.find(std::string(field));
  return it == obj.end() || it->is_null();
}

// Reads an integer field; `required` fields must be present and non-null.
absl::Status ReadInt(const Json& obj, absl::string_view field, bool required, int64_t min_value,
                     int* out) {
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) {
    return required ? FieldError(field, "is missing") : absl::OkStatus();
  }
  int64_t value = 0;
  if (it->is_number_integer()) {
    value = it->get<int64_t>();
  } else if (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>()) {
    // Out of int32 range is refused below; casting a larger double would be UB.
    const double d = it->get<double>();
    if (std::fabs(d) > 4.0e9) {
      return FieldError(field, absl::StrCat("must be >= ", min_value, " and fit in 32 bits, got ",
                                            it->dump()));
    }
    value = static_cast<int64_t>(d);
  } else {
    return FieldError(field, absl::StrCat("must be an integer, got ", it->dump()));
  }
  if (value < min_value || value > std::numeric_limits<int32_t>::max()) {
    return FieldError(field, absl::StrCat("must be >= ", min_value, ", got ", value));
  }
  *out = static_cast<int>(value);
  return absl::OkStatus();
}

absl::Status ReadFloat(const Json& obj, absl::string_view field, bool positive, float* out) {
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return FieldError(field, absl::StrCat("must be a number, got ", it->dump()));
  }
  const double value = it->get<double>();
  if (!std::isfinite(value) || (positive && value <= 0.0)) {
    return FieldError(field, absl::StrCat("must be a positive finite number, got ", it->dump()));
  }
  *out = static_cast<float>(value);
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& obj, absl::string_view field, bool* out) {
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return FieldError(field, absl::StrCat("must be true or false, got ", it->dump()));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const Json& obj, absl::string_view field, std::string* out) {
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return FieldError(field, absl::StrCat("must be a string, got ", it->dump()));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// eos_token_id: an int, a list of ints, or null.
absl::Status ReadTokenIds(const Json& obj, absl::string_view field, std::vector<int32_t>* out) {
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  auto add = [&](const Json& v) -> absl::Status {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return FieldError(field,
                        absl::StrCat("must be a token id or a list of them, got ", it->dump()));
    }
    const int32_t id = static_cast<int32_t>(v.get<int64_t>());
    if (std::find(out->begin(), out->end(), id) == out->end()) out->push_back(id);
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const Json& v : *it) {
      if (absl::Status s = add(v); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  return add(*it);
}

absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view what) {
  Json json = Json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not valid JSON"));
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": top level must be a JSON object"));
  }
  return json;
}

absl::Status ParseArchitecture(const Json& json, ModelConfig* config) {
  auto it = json.find("architectures");
  if (it == json.end() || !it->is_array() || it->empty() || !(*it)[0].is_string()) {
    return FieldError("architectures", "must be a non-empty list of architecture names");
  }
  config->architecture = (*it)[0].get<std::string>();
  const std::string& arch = config->architecture;
  for (absl::string_view family : kFamilies) {
    if (!absl::StartsWith(arch, family)) continue;
    const absl::string_view rest = absl::string_view(arch).substr(family.size());
    if (rest == "ForCausalLM") return absl::OkStatus();
    for (absl::string_view suffix : kValueHeadSuffixes) {
      if (rest == suffix) {
        // transformers stores the label count as id2label; num_labels may
        // also be given directly. PretrainedConfig's default is 2.
        config->num_labels = 2;
        if (auto labels = json.find("id2label"); labels != json.end() && labels->is_object()) {
          config->num_labels = static_cast<int>(labels->size());
        }
        if (absl::Status s = ReadInt(json, "num_labels", false, 1, &config->num_labels); !s.ok()) {
          return s;
        }
        if (config->num_labels < 1) return FieldError("id2label", "must not be empty");
        return absl::OkStatus();
      }
    }
  }
  return absl::UnimplementedError(
      absl::StrCat("config.json: field 'architectures' names unsupported architecture '", arch,
                   "' (supported: Llama/Qwen2/Mistral ForCausalLM, ForSequenceClassification, "
                   "ForTokenClassification, ForProcessRewardModel)"));
}

// Reads RoPE settings from either dialect: `rope_parameters` (transformers 5)
// or top-level `rope_theta` + `rope_scaling` (Hub checkpoints).
absl::Status ParseRope(const Json& json, ModelConfig* config) {
  const Json* scaling = nullptr;
  std::string prefix;
  if (auto it = json.find("rope_parameters"); it != json.end() && !it->is_null()) {
    if (!it->is_object()) return FieldError("rope_parameters", "must be an object");
    scaling = &*it;
    prefix = "rope_parameters.";
    if (absl::Status s = ReadFloat(json, "rope_theta", true, &config->rope_theta); !s.ok()) {
      return s;
    }
    if (!IsNull(*it, "rope_theta")) {
      if (absl::Status s = ReadFloat(*it, "rope_theta", true, &config->rope_theta); !s.ok()) {
        return FieldError("rope_parameters.rope_theta", "must be a positive finite number");
      }
    }
  } else {
    if (absl::Status s = ReadFloat(json, "rope_theta", true, &config->rope_theta); !s.ok()) {
      return s;
    }
    if (auto sc = json.find("rope_scaling"); sc != json.end() && !sc->is_null()) {
      if (!sc->is_object()) return FieldError("rope_scaling", "must be an object or null");
      scaling = &*sc;
      prefix = "rope_scaling.";
    }
  }
  RopeScaling& rope = config->rope_scaling;
  rope = RopeScaling();
  if (scaling == nullptr) return absl::OkStatus();

  // Older checkpoints call it `type`, newer ones `rope_type`.
  std::string type = "default";
  for (const char* key : {"type", "rope_type"}) {
    auto it = scaling->find(key);
    if (it == scaling->end() || it->is_null()) continue;
    if (!it->is_string()) return FieldError(absl::StrCat(prefix, key), "must be a string");
    type = it->get<std::string>();
  }
  auto field_status = [&](absl::Status s, absl::string_view key) {
    if (s.ok()) return s;
    return FieldError(absl::StrCat(prefix, key), "must be a positive finite number");
  };
  if (type == "default") {
    rope.type = "default";
    return absl::OkStatus();
  }
  if (type == "linear" || type == "llama3") {
    rope.type = type;
    if (IsNull(*scaling, "factor")) return FieldError(absl::StrCat(prefix, "factor"), "is missing");
    if (absl::Status s = field_status(ReadFloat(*scaling, "factor", true, &rope.factor), "factor");
        !s.ok()) {
      return s;
    }
    if (type == "linear") return absl::OkStatus();
    if (absl::Status s = field_status(
            ReadFloat(*scaling, "low_freq_factor", true, &rope.low_freq_factor), "low_freq_factor");
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            field_status(ReadFloat(*scaling, "high_freq_factor", true, &rope.high_freq_factor),
                         "high_freq_factor");
        !s.ok()) {
      return s;
    }
    if (!(rope.high_freq_factor > rope.low_freq_factor)) {
      return FieldError(absl::StrCat(prefix, "high_freq_factor"),
                        "must be greater than low_freq_factor");
    }
    if (absl::Status s = ReadInt(*scaling, "original_max_position_embeddings", false, 1,
                                 &rope.original_max_position_embeddings);
        !s.ok()) {
      return FieldError(absl::StrCat(prefix, "original_max_position_embeddings"),
                        "must be a positive integer");
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat("config.json: field '", prefix,
                                               "rope_type' has unsupported RoPE type '", type,
                                               "' (supported: default, linear, llama3)"));
}

// Sizes are bounded before any caller multiplies them into an allocation.
absl::Status CheckLimits(const ModelConfig& c) {
  using L = ModelConfigLimits;
  struct Bound {
    absl::string_view field;
    int64_t value;
    int64_t limit;
  };
  const Bound bounds[] = {
      {"vocab_size", c.vocab_size, L::kMaxVocabSize},
      {"hidden_size", c.hidden_size, L::kMaxHiddenSize},
      {"intermediate_size", c.intermediate_size, L::kMaxIntermediateSize},
      {"num_hidden_layers", c.num_layers, L::kMaxLayers},
      {"num_attention_heads", c.num_heads, L::kMaxHeads},
      {"num_key_value_heads", c.num_kv_heads, L::kMaxHeads},
      {"head_dim", c.head_dim, L::kMaxHeadDim},
      {"max_position_embeddings", c.max_position_embeddings, L::kMaxPositionEmbeddings},
      {"sliding_window", c.sliding_window, L::kMaxPositionEmbeddings},
      {"rope_scaling.original_max_position_embeddings",
       c.rope_scaling.original_max_position_embeddings, L::kMaxPositionEmbeddings},
      {"num_labels", c.num_labels, L::kMaxLabels},
      {"num_attention_heads * head_dim", int64_t{c.num_heads} * c.head_dim, L::kMaxAttentionWidth},
  };
  for (const Bound& b : bounds) {
    if (b.value > b.limit) {
      return FieldError(b.field, absl::StrCat("is ", b.value, ", above the limit of ", b.limit,
                                              ": not a model this runtime can hold"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text) {
  absl::StatusOr<Json> parsed = ParseJson(json_text, "config.json");
  if (!parsed.ok()) return parsed.status();
  const Json& json = *parsed;
  ModelConfig config;
  if (absl::Status s = ParseArchitecture(json, &config); !s.ok()) return s;
  const bool is_qwen2 = absl::StartsWith(config.architecture, "Qwen2");
  const bool is_mistral = absl::StartsWith(config.architecture, "Mistral");

  for (absl::Status s : {
           ReadInt(json, "vocab_size", true, 1, &config.vocab_size),
           ReadInt(json, "hidden_size", true, 1, &config.hidden_size),
           ReadInt(json, "intermediate_size", true, 1, &config.intermediate_size),
           ReadInt(json, "num_hidden_layers", true, 1, &config.num_layers),
           ReadInt(json, "num_attention_heads", true, 1, &config.num_heads),
       }) {
    if (!s.ok()) return s;
  }
  config.num_kv_heads = config.num_heads;
  if (absl::Status s = ReadInt(json, "num_key_value_heads", false, 1, &config.num_kv_heads);
      !s.ok()) {
    return s;
  }
  if (config.num_heads % config.num_kv_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat("(", config.num_kv_heads, ") must divide num_attention_heads (",
                                   config.num_heads, ")"));
  }
  if (IsNull(json, "head_dim")) {
    if (config.hidden_size % config.num_heads != 0) {
      return FieldError("hidden_size", absl::StrCat("(", config.hidden_size,
                                                    ") must be a multiple of num_attention_heads (",
                                                    config.num_heads, ") when head_dim is absent"));
    }
    config.head_dim = config.hidden_size / config.num_heads;
  } else if (absl::Status s = ReadInt(json, "head_dim", true, 1, &config.head_dim); !s.ok()) {
    return s;
  }
  if (config.head_dim % 2 != 0) {
    return FieldError("head_dim", absl::StrCat("must be even for RoPE, got ", config.head_dim));
  }

  std::string act = "silu";
  if (absl::Status s = ReadString(json, "hidden_act", &act); !s.ok()) return s;
  if (act != "silu") {
    return absl::UnimplementedError(absl::StrCat("config.json: field 'hidden_act' is '", act,
                                                 "'; only 'silu' (SwiGLU) is supported"));
  }

  for (absl::Status s : {
           ReadFloat(json, "rms_norm_eps", true, &config.rms_norm_eps),
           ReadInt(json, "max_position_embeddings", false, 1, &config.max_position_embeddings),
           ReadBool(json, "tie_word_embeddings", &config.tie_word_embeddings),
           ReadInt(json, "bos_token_id", false, 0, &config.bos_token_id),
           ReadTokenIds(json, "eos_token_id", &config.eos_token_ids),
       }) {
    if (!s.ok()) return s;
  }
  if (absl::Status s = ParseRope(json, &config); !s.ok()) return s;

  if (is_qwen2) {
    // Qwen2 always biases Q/K/V (and never o_proj); its sliding window only
    // applies when use_sliding_window is set.
    config.attention_bias = true;
    bool use_sliding_window = false;
    if (absl::Status s = ReadBool(json, "use_sliding_window", &use_sliding_window); !s.ok()) {
      return s;
    }
    if (use_sliding_window) {
      if (absl::Status s = ReadInt(json, "sliding_window", false, 0, &config.sliding_window);
          !s.ok()) {
        return s;
      }
    }
  } else {
    bool bias = false;
    if (absl::Status s = ReadBool(json, "attention_bias", &bias); !s.ok()) return s;
    config.attention_bias = bias;
    config.o_proj_bias = bias;
    if (absl::Status s = ReadBool(json, "mlp_bias", &config.mlp_bias); !s.ok()) return s;
    if (is_mistral) {
      if (absl::Status s = ReadInt(json, "sliding_window", false, 0, &config.sliding_window);
          !s.ok()) {
        return s;
      }
    }
  }

  // transformers 5 writes `dtype`; earlier versions `torch_dtype`.
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (absl::Status s = ReadString(json, key, &config.torch_dtype); !s.ok()) return s;
  }
  if (config.torch_dtype != "float32" && config.torch_dtype != "bfloat16" &&
      config.torch_dtype != "float16") {
    return FieldError("torch_dtype", absl::StrCat("must be float32, bfloat16 or float16, got '",
                                                  config.torch_dtype, "'"));
  }
  if (absl::Status s = CheckLimits(config); !s.ok()) return s;
  for (int32_t id : config.eos_token_ids) {
    if (id >= config.vocab_size) {
      return FieldError("eos_token_id", absl::StrCat("id ", id, " is outside the vocabulary (",
                                                     config.vocab_size, ")"));
    }
  }
  if (config.bos_token_id >= config.vocab_size) {
    return FieldError("bos_token_id",
                      absl::StrCat("id ", config.bos_token_id, " is outside the vocabulary (",
                                   config.vocab_size, ")"));
  }
  return config;
}

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  return buffer.str();
}

}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string config_path = model_dir + "/config.json";
  absl::StatusOr<std::string> text = ReadFile(config_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> config = ParseModelConfig(*text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(model_dir, "/", config.status().message()));
  }
  // generation_config.json often lists more stop ids (e.g. Llama 3 Instruct's
  // <|eot_id|> next to <|end_of_text|>); every one of them ends a sequence.
  const std::string gen_path = model_dir + "/generation_config.json";
  absl::StatusOr<std::string> gen_text = ReadFile(gen_path);
  if (gen_text.ok()) {
    absl::StatusOr<Json> gen = ParseJson(*gen_text, gen_path);
    if (!gen.ok()) return gen.status();
    if (absl::Status s = ReadTokenIds(*gen, "eos_token_id", &config->eos_token_ids); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(gen_path, ": ", absl::StripPrefix(s.message(), "config.json: ")));
    }
    for (int32_t id : config->eos_token_ids) {
      if (id >= config->vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(gen_path, ": eos_token_id ", id,
                                                       " is outside the vocabulary (",
                                                       config->vocab_size, ")"));
      }
    }
  }
  return config;
}

}  // namespace arbor::runtime
