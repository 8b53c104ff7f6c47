// Test helpers: write safetensors files and small random Llama-family models
// (config.json + model.safetensors) into a temporary directory. Header-only so
// that any worker test can use them.
#ifndef ARBOR_RUNTIME_TESTING_TINY_MODEL_H_
#define ARBOR_RUNTIME_TESTING_TINY_MODEL_H_

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace arbor::runtime::test_util {

// A tensor to write: raw little-endian bytes of `dtype` ("F32", "BF16", ...).
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

inline uint16_t FloatToBf16(float f) {  // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline RawTensor MakeTensor(const std::string& name, const std::vector<int64_t>& shape,
                            const std::vector<float>& values, const std::string& dtype = "F32") {
  RawTensor t{name, dtype, shape, {}};
  if (dtype == "F32") {
    t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  } else if (dtype == "BF16") {
    for (float v : values) {
      const uint16_t b = FloatToBf16(v);
      t.bytes.append(reinterpret_cast<const char*>(&b), 2);
    }
  } else {
    std::abort();
  }
  return t;
}

// Bytes of one element of a safetensors dtype name (1 for unknown names).
inline uint64_t DTypeBytes(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  return 1;
}

// Serialises tensors in the given order, each starting at a multiple of its
// element size (the reader refuses misaligned offsets), with an optional
// extra header entry; returns the file's bytes.
inline std::string SafetensorsBytes(const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  std::string data;
  for (const RawTensor& t : tensors) {
    const uint64_t align = DTypeBytes(t.dtype);
    while (offset % align != 0) {
      data += '\0';
      ++offset;
    }
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
    data += t.bytes;
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text + data;
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A fresh directory under TMPDIR, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "arbor_test_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct TinyModelSpec {
  std::string architecture = "LlamaForCausalLM";
  int vocab_size = 97;
  int hidden_size = 32;
  int intermediate_size = 48;
  int num_layers = 2;
  int num_heads = 4;
  int num_kv_heads = 2;
  bool qkv_bias = false;  // Qwen2 always has it
  bool tie_embeddings = false;
  bool llama3_rope = false;
  int num_labels = 0;           // value head: > 0
  bool mlp_score_head = false;  // Qwen2.5-Math-PRM style score.0 / score.2
  std::string dtype = "F32";
  uint32_t seed = 1;
};

// Writes config.json and model.safetensors for `spec` with random weights
// (norm weights around 1, matrices ~ N(0, 0.2)).
inline void WriteTinyModel(const std::string& dir, const TinyModelSpec& spec) {
  const int head_dim = spec.hidden_size / spec.num_heads;
  nlohmann::json config = {
      {"architectures", {spec.architecture}},
      {"vocab_size", spec.vocab_size},
      {"hidden_size", spec.hidden_size},
      {"intermediate_size", spec.intermediate_size},
      {"num_hidden_layers", spec.num_layers},
      {"num_attention_heads", spec.num_heads},
      {"num_key_value_heads", spec.num_kv_heads},
      {"rms_norm_eps", 1e-5},
      {"max_position_embeddings", 4096},
      {"tie_word_embeddings", spec.tie_embeddings},
      {"hidden_act", "silu"},
      {"eos_token_id", 1},
      {"bos_token_id", 0},
      {"torch_dtype", spec.dtype == "F32" ? "float32" : "bfloat16"},
      {"rope_theta", 10000.0},
  };
  if (spec.llama3_rope) {
    config["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", 8.0},
                              {"low_freq_factor", 1.0},
                              {"high_freq_factor", 4.0},
                              {"original_max_position_embeddings", 32}};
  }
  if (spec.num_labels > 0) config["num_labels"] = spec.num_labels;
  WriteFile(dir + "/config.json", config.dump(2));

  std::mt19937 rng(spec.seed);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  std::uniform_real_distribution<float> uniform(0.5f, 1.5f);
  std::vector<RawTensor> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool norm) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(n);
    for (float& x : v) x = norm ? uniform(rng) : normal(rng);
    tensors.push_back(MakeTensor(name, shape, v, spec.dtype));
  };
  const int64_t h = spec.hidden_size, q = int64_t{spec.num_heads} * head_dim,
                kv = int64_t{spec.num_kv_heads} * head_dim, inter = spec.intermediate_size;
  add("model.embed_tokens.weight", {spec.vocab_size, h}, false);
  for (int l = 0; l < spec.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {h}, true);
    add(p + "post_attention_layernorm.weight", {h}, true);
    add(p + "self_attn.q_proj.weight", {q, h}, false);
    add(p + "self_attn.k_proj.weight", {kv, h}, false);
    add(p + "self_attn.v_proj.weight", {kv, h}, false);
    add(p + "self_attn.o_proj.weight", {h, q}, false);
    if (spec.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {q}, false);
      add(p + "self_attn.k_proj.bias", {kv}, false);
      add(p + "self_attn.v_proj.bias", {kv}, false);
    }
    add(p + "mlp.gate_proj.weight", {inter, h}, false);
    add(p + "mlp.up_proj.weight", {inter, h}, false);
    add(p + "mlp.down_proj.weight", {h, inter}, false);
  }
  add("model.norm.weight", {h}, true);
  if (spec.num_labels > 0) {
    if (spec.mlp_score_head) {
      add("score.0.weight", {h, h}, false);
      add("score.0.bias", {h}, false);
      add("score.2.weight", {spec.num_labels, h}, false);
      add("score.2.bias", {spec.num_labels}, false);
    } else {
      add("score.weight", {spec.num_labels, h}, false);
    }
  } else if (!spec.tie_embeddings) {
    add("lm_head.weight", {spec.vocab_size, h}, false);
  }
  WriteFile(dir + "/model.safetensors", SafetensorsBytes(tensors));
}

}  // namespace arbor::runtime::test_util

#endif  // ARBOR_RUNTIME_TESTING_TINY_MODEL_H_
