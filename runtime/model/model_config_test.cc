#include "runtime/model/model_config.h"

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/testing/tiny_model.h"

namespace arbor::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

// Llama 3.1 8B Instruct's config.json from the Hub (rope_theta + rope_scaling).
constexpr char kLlama31Hub[] = R"json({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
  "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
  "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256
})json";

// Qwen2.5-0.5B-Instruct's config.json from the Hub.
constexpr char kQwen25Hub[] = R"json({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
  "hidden_size": 896, "initializer_range": 0.02, "intermediate_size": 4864,
  "max_position_embeddings": 32768, "max_window_layers": 21, "model_type": "qwen2",
  "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.43.1",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
})json";

TEST(ModelConfigTest, ParsesHubLlama31) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(kLlama31Hub);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, "LlamaForCausalLM");
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(c->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  EXPECT_EQ(c->num_labels, 0);
  EXPECT_FALSE(c->is_value_head());
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfigTest, ParsesHubQwen25) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(kQwen25Hub);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);  // Qwen2 always biases Q/K/V
  EXPECT_FALSE(c->o_proj_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->rope_scaling.type, "default");
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->sliding_window, 0);  // use_sliding_window is false
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151645));
}

TEST(ModelConfigTest, ParsesTransformers5RopeParameters) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(R"json({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 600, "hidden_size": 64,
    "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "dtype": "float32", "eos_token_id": 4,
    "bos_token_id": null, "rope_parameters": {"factor": 8.0, "high_freq_factor": 4.0,
      "low_freq_factor": 1.0, "original_max_position_embeddings": 64,
      "rope_theta": 500000.0, "rope_type": "llama3"}})json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_EQ(c->torch_dtype, "float32");

  absl::StatusOr<ModelConfig> d = ParseModelConfig(R"json({
    "architectures": ["Qwen2ForCausalLM"], "vocab_size": 500, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 1, "rope_parameters": {"rope_theta": 1000000.0,
    "rope_type": "default"}})json");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FLOAT_EQ(d->rope_theta, 1e6f);
  EXPECT_EQ(d->rope_scaling.type, "default");
  EXPECT_TRUE(d->eos_token_ids.empty());
}

TEST(ModelConfigTest, ParsesMistralSlidingWindowAndLinearRope) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(R"json({
    "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "sliding_window": 4096, "rope_theta": 10000.0,
    "rope_scaling": {"type": "linear", "factor": 2.0}})json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->rope_scaling.type, "linear");
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 2.0f);
  EXPECT_FALSE(c->attention_bias);
}

TEST(ModelConfigTest, ParsesValueHeadVariants) {
  // Qwen2.5-Math-PRM: labels come from id2label.
  absl::StatusOr<ModelConfig> prm = ParseModelConfig(R"json({
    "architectures": ["Qwen2ForProcessRewardModel"], "vocab_size": 100, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}})json");
  ASSERT_TRUE(prm.ok()) << prm.status();
  EXPECT_EQ(prm->num_labels, 2);
  EXPECT_TRUE(prm->is_value_head());
  EXPECT_TRUE(prm->attention_bias);

  absl::StatusOr<ModelConfig> orm = ParseModelConfig(R"json({
    "architectures": ["LlamaForSequenceClassification"], "vocab_size": 100,
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 4, "num_labels": 1})json");
  ASSERT_TRUE(orm.ok()) << orm.status();
  EXPECT_EQ(orm->num_labels, 1);

  absl::StatusOr<ModelConfig> token = ParseModelConfig(R"json({
    "architectures": ["MistralForTokenClassification"], "vocab_size": 100,
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    "num_attention_heads": 4})json");
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(token->num_labels, 2);  // transformers' default
}

// Each bad config must fail with a message naming the field at fault.
TEST(ModelConfigTest, ErrorsNameTheField) {
  const std::string base = R"("vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
                              "num_hidden_layers": 1, "num_attention_heads": 4)";
  struct Case {
    std::string json;
    std::string expected;
  };
  const Case cases[] = {
      {"not json", "not valid JSON"},
      {"[1, 2]", "JSON object"},
      {"{" + base + "}", "'architectures'"},
      {R"({"architectures": ["GPT2LMHeadModel"], )" + base + "}", "GPT2LMHeadModel"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "intermediate_size": 64,
           "num_hidden_layers": 1, "num_attention_heads": 4})",
       "'hidden_size' is missing"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": "100", "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4})",
       "'vocab_size' must be an integer"},
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 0, "num_attention_heads": 4})",
       "'num_hidden_layers' must be >= 1"},
      // Found by model_config_fuzz: a huge whole-number float was cast to
      // int64 (undefined behaviour) before the range check.
      {R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 32,
           "intermediate_size": 4.5e68, "num_hidden_layers": 1, "num_attention_heads": 4})",
       "'intermediate_size' must be >= 1 and fit in 32 bits"},
      {R"({"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 3, )" + base + "}",
       "'num_key_value_heads'"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 30, "vocab_size": 100,
           "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4})",
       "'hidden_size'"},
      {R"({"architectures": ["LlamaForCausalLM"], "head_dim": 7, )" + base + "}", "'head_dim'"},
      {R"({"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu", )" + base + "}",
       "'hidden_act'"},
      {R"({"architectures": ["LlamaForCausalLM"], "rms_norm_eps": -1, )" + base + "}",
       "'rms_norm_eps'"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_theta": "big", )" + base + "}",
       "'rope_theta'"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn",
           "factor": 4.0}, )" +
           base + "}",
       "rope_scaling.rope_type"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "llama3"}, )" +
           base + "}",
       "'rope_scaling.factor' is missing"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "llama3",
           "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1}, )" +
           base + "}",
       "rope_parameters.high_freq_factor"},
      {R"({"architectures": ["LlamaForCausalLM"], "rope_parameters": {"rope_type": "dynamic",
           "factor": 2}, )" +
           base + "}",
       "rope_parameters.rope_type"},
      {R"({"architectures": ["LlamaForCausalLM"], "eos_token_id": [1, "x"], )" + base + "}",
       "'eos_token_id'"},
      {R"({"architectures": ["LlamaForCausalLM"], "eos_token_id": 100, )" + base + "}",
       "'eos_token_id'"},
      {R"({"architectures": ["LlamaForCausalLM"], "tie_word_embeddings": 1, )" + base + "}",
       "'tie_word_embeddings'"},
      {R"({"architectures": ["LlamaForCausalLM"], "torch_dtype": "int8", )" + base + "}",
       "'torch_dtype'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ModelConfig> config = ParseModelConfig(c.json);
    ASSERT_FALSE(config.ok()) << c.json;
    EXPECT_THAT(config.status().message(), HasSubstr(c.expected)) << c.json;
  }
}

TEST(ModelConfigTest, SizesAboveTheLimitsAreRefusedNamingTheField) {
  const nlohmann::json base = {{"architectures", {"LlamaForCausalLM"}},
                               {"vocab_size", 100},
                               {"hidden_size", 32},
                               {"intermediate_size", 64},
                               {"num_hidden_layers", 1},
                               {"num_attention_heads", 4}};
  ASSERT_TRUE(ParseModelConfig(base.dump()).ok());
  struct Case {
    nlohmann::json patch;
    std::string field;
  };
  const Case cases[] = {
      // 2e9 used to abort the worker with std::bad_alloc, 3e6 to allocate gigabytes.
      {{{"intermediate_size", 2000000000}}, "'intermediate_size'"},
      {{{"intermediate_size", 3000000}}, "'intermediate_size'"},
      {{{"vocab_size", 1 << 23}}, "'vocab_size'"},
      {{{"hidden_size", 1 << 17}, {"head_dim", 64}}, "'hidden_size'"},
      {{{"num_hidden_layers", 4096}}, "'num_hidden_layers'"},
      {{{"num_attention_heads", 2048}, {"head_dim", 2}}, "'num_attention_heads'"},
      {{{"head_dim", 4096}}, "'head_dim'"},
      {{{"num_attention_heads", 1024}, {"head_dim", 1024}}, "'num_attention_heads * head_dim'"},
      {{{"max_position_embeddings", 2000000000}}, "'max_position_embeddings'"},
      {{{"rope_scaling",
         {{"rope_type", "llama3"},
          {"factor", 8.0},
          {"original_max_position_embeddings", 1 << 30}}}},
       "'rope_scaling.original_max_position_embeddings'"},
      {{{"architectures", {"MistralForCausalLM"}}, {"sliding_window", 1 << 30}},
       "'sliding_window'"},
      {{{"architectures", {"LlamaForSequenceClassification"}}, {"num_labels", 1 << 20}},
       "'num_labels'"},
  };
  for (const Case& c : cases) {
    nlohmann::json json = base;
    json.update(c.patch);
    absl::StatusOr<ModelConfig> config = ParseModelConfig(json.dump());
    ASSERT_FALSE(config.ok()) << json.dump();
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << json.dump();
    EXPECT_THAT(config.status().message(), HasSubstr(c.field)) << json.dump();
    EXPECT_THAT(config.status().message(), HasSubstr("above the limit")) << json.dump();
  }
  // The largest published shapes stay within the limits.
  nlohmann::json big = base;
  big.update({{"vocab_size", 262144},
              {"hidden_size", 16384},
              {"intermediate_size", 53248},
              {"num_hidden_layers", 126},
              {"num_attention_heads", 128},
              {"num_key_value_heads", 8},
              {"max_position_embeddings", 10485760}});
  EXPECT_TRUE(ParseModelConfig(big.dump()).ok()) << ParseModelConfig(big.dump()).status();
}

TEST(ModelConfigTest, LoadsGoldenFixtureAndGenerationConfig) {
  absl::StatusOr<ModelConfig> llama = LoadModelConfig(SourceDir() + "/tests/fixtures/golden/llama");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->architecture, "LlamaForCausalLM");
  EXPECT_EQ(llama->num_layers, 3);
  EXPECT_EQ(llama->num_kv_heads, 2);
  EXPECT_EQ(llama->head_dim, 16);
  EXPECT_EQ(llama->rope_scaling.type, "llama3");
  EXPECT_THAT(llama->eos_token_ids, ElementsAre(4));

  absl::StatusOr<ModelConfig> qwen = LoadModelConfig(SourceDir() + "/tests/fixtures/golden/qwen2");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_TRUE(qwen->attention_bias);
  EXPECT_TRUE(qwen->tie_word_embeddings);
  EXPECT_EQ(qwen->torch_dtype, "bfloat16");
}

TEST(ModelConfigTest, MergesGenerationConfigEosIds) {
  test_util::TempDir dir;
  test_util::WriteFile(dir.file("config.json"), kLlama31Hub);
  test_util::WriteFile(dir.file("generation_config.json"),
                       R"({"bos_token_id": 128000, "eos_token_id": [128001, 128009, 7]})");
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ElementsAre(128001, 128008, 128009, 7));

  test_util::WriteFile(dir.file("generation_config.json"), R"({"eos_token_id": "x"})");
  c = LoadModelConfig(dir.path());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("generation_config.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("eos_token_id"));
}

TEST(ModelConfigTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig("/nonexistent/model");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent/model/config.json"));
}

}  // namespace
}  // namespace arbor::runtime
