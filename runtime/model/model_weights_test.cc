#include "runtime/model/model_weights.h"

#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/testing/tiny_model.h"

namespace arbor::runtime {
namespace {

using test_util::MakeTensor;
using test_util::RawTensor;
using test_util::SafetensorsBytes;
using test_util::TempDir;
using test_util::TinyModelSpec;
using test_util::WriteFile;
using test_util::WriteTinyModel;
using ::testing::HasSubstr;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

// Rewrites one field of <dir>/config.json.
void PatchConfig(const std::string& dir, const nlohmann::json& patch) {
  nlohmann::json config = ReadJson(dir + "/config.json");
  config.update(patch);
  WriteFile(dir + "/config.json", config.dump());
}

TEST(ModelWeightsTest, LoadsATinyModel) {
  TempDir dir;
  WriteTinyModel(dir.path(), TinyModelSpec());
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->layers().size(), 2u);
  EXPECT_EQ((*w)->embed_tokens().size(), 97u * 32u);
  EXPECT_EQ((*w)->layers()[0].gate_up.size(), 2u * 48u * 32u);
}

// Sizes in config.json that the tensors do not have fail on the first tensor
// that disagrees, before anything is allocated: a 500k x 64k MLP would be
// hundreds of gigabytes if it were sized first.
TEST(ModelWeightsTest, ConfigSizesThatDisagreeWithTheTensorsFailBeforeAllocating) {
  struct Case {
    nlohmann::json patch;
    std::string tensor;
  };
  const Case cases[] = {
      {{{"intermediate_size", 500000}, {"hidden_size", 65536}, {"head_dim", 8}},
       "model.embed_tokens.weight"},
      {{{"intermediate_size", 500000}}, "model.layers.0.mlp.gate_proj.weight"},
      {{{"vocab_size", 4000000}}, "model.embed_tokens.weight"},
      {{{"num_key_value_heads", 4}}, "model.layers.0.self_attn.k_proj.weight"},
      {{{"num_hidden_layers", 1000}}, "model.layers.2.input_layernorm.weight"},
      {{{"head_dim", 16}}, "model.layers.0.self_attn.q_proj.weight"},
  };
  for (const Case& c : cases) {
    TempDir dir;
    WriteTinyModel(dir.path(), TinyModelSpec());
    PatchConfig(dir.path(), c.patch);
    absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
    ASSERT_FALSE(w.ok()) << c.patch.dump();
    EXPECT_THAT(w.status().message(), HasSubstr("'" + c.tensor + "'")) << c.patch.dump();
    if (w.status().code() == absl::StatusCode::kInvalidArgument) {
      EXPECT_THAT(w.status().message(), HasSubstr(dir.file("model.safetensors"))) << c.patch.dump();
    }
  }
}

TEST(ModelWeightsTest, AbsurdSizesAreRefusedByTheConfigLimits) {
  for (int64_t inter : {int64_t{2000000000}, int64_t{3000000}}) {
    TempDir dir;
    WriteTinyModel(dir.path(), TinyModelSpec());
    PatchConfig(dir.path(), {{"intermediate_size", inter}});
    absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(w.status().message(), HasSubstr("'intermediate_size'"));
    EXPECT_THAT(w.status().message(), HasSubstr(dir.path()));
  }
}

// Rebuilds the tiny model's safetensors file with one tensor replaced.
void ReplaceTensor(const std::string& dir, const RawTensor& replacement) {
  TempDir scratch;
  WriteTinyModel(scratch.path(), TinyModelSpec());
  // Re-serialise from the written checkpoint so that every other tensor stays.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(scratch.file("model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<RawTensor> tensors;
  for (const TensorView& t : (*file)->tensors()) {
    if (t.name == replacement.name) {
      tensors.push_back(replacement);
    } else {
      tensors.push_back(RawTensor{t.name, std::string(SafetensorsDTypeName(t.dtype)), t.shape,
                                  std::string(reinterpret_cast<const char*>(t.data), t.num_bytes)});
    }
  }
  WriteFile(dir + "/config.json", [&] {
    std::ifstream in(scratch.file("config.json"));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }());
  WriteFile(dir + "/model.safetensors", SafetensorsBytes(tensors));
}

TEST(ModelWeightsTest, WrongDtypeNamesTheTensorAndFile) {
  TempDir dir;
  ReplaceTensor(dir.path(), RawTensor{"model.norm.weight", "I32", {32}, std::string(32 * 4, '\1')});
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(w.status().message(), HasSubstr("I32"));
  EXPECT_THAT(w.status().message(), HasSubstr(dir.file("model.safetensors")));
}

TEST(ModelWeightsTest, WrongShapeNamesTheTensorFileAndBothShapes) {
  TempDir dir;
  ReplaceTensor(dir.path(), MakeTensor("model.layers.1.mlp.down_proj.weight", {48, 32},
                                       std::vector<float>(48 * 32, 0.5f)));
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("'model.layers.1.mlp.down_proj.weight'"));
  EXPECT_THAT(w.status().message(), HasSubstr("[48, 32]"));
  EXPECT_THAT(w.status().message(), HasSubstr("[32, 48]"));
  EXPECT_THAT(w.status().message(), HasSubstr(dir.file("model.safetensors")));
}

TEST(ModelWeightsTest, MissingTensorIsNotFoundNamingIt) {
  TempDir dir;
  WriteTinyModel(dir.path(), TinyModelSpec());
  PatchConfig(dir.path(), {{"attention_bias", true}});
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(w.status().message(), HasSubstr("'model.layers.0.self_attn.q_proj.bias'"));
}

TEST(ModelWeightsTest, TruncatedCheckpointNamesTheFileAndTensor) {
  TempDir dir;
  WriteTinyModel(dir.path(), TinyModelSpec());
  const std::string path = dir.file("model.safetensors");
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  const std::string full = bytes.str();
  WriteFile(path, full.substr(0, full.size() - 100));
  absl::StatusOr<std::unique_ptr<ModelWeights>> w = ModelWeights::Load(dir.path());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr(path));
  EXPECT_THAT(w.status().message(), HasSubstr("tensor '"));
  EXPECT_THAT(w.status().message(), HasSubstr("truncated"));
}

}  // namespace
}  // namespace arbor::runtime
