#include "runtime/model/safetensors.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/testing/tiny_model.h"

namespace arbor::runtime {
namespace {

using test_util::MakeTensor;
using test_util::RawTensor;
using test_util::SafetensorsBytes;
using test_util::TempDir;
using test_util::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

std::string RawBytes(const std::vector<uint16_t>& halves) {
  return std::string(reinterpret_cast<const char*>(halves.data()), halves.size() * 2);
}

// A file with a hand-written header (for malformed cases) and `data`.
std::string FileWithHeader(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::vector<float> ToFloat(const TensorView& t) {
  std::vector<float> out(t.num_elements());
  absl::Status s = ConvertToFloat32(t, absl::MakeSpan(out));
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

TEST(SafetensorsTest, ScalarConversions) {
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xc040), -3.0f);
  EXPECT_EQ(Bf16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::isinf(Bf16ToFloat(0x7f80)));
  EXPECT_EQ(Fp16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFloat(0xc000), -2.0f);
  EXPECT_EQ(Fp16ToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(Fp16ToFloat(0x7bff), 65504.0f);               // largest normal
  EXPECT_EQ(Fp16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(Fp16ToFloat(0x83ff), -std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(Fp16ToFloat(0xfc00)) && Fp16ToFloat(0xfc00) < 0);
  EXPECT_TRUE(std::isnan(Fp16ToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(Fp16ToFloat(0x8000)));
}

TEST(SafetensorsTest, ReadsAllFloatDtypes) {
  TempDir dir;
  std::vector<RawTensor> tensors = {
      MakeTensor("a.f32", {2, 3}, {1, -2, 3.5f, 0, 1e-30f, -7}),
      RawTensor{"b.f16", "F16", {3}, RawBytes({0x3c00, 0xc000, 0x0001})},
      RawTensor{"c.bf16", "BF16", {2, 1}, RawBytes({0x3f80, 0xc040})},
      RawTensor{"d.scalar", "F32", {}, std::string("\0\0\x80\x3f", 4)},
      RawTensor{"e.empty", "F32", {0, 4}, ""},
  };
  const std::string path = dir.file("model.safetensors");
  WriteFile(path, SafetensorsBytes(tensors));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 5u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");

  const TensorView* a = (*file)->Find("a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, SafetensorsDType::kF32);
  EXPECT_THAT(a->shape, ElementsAre(2, 3));
  EXPECT_EQ(a->ShapeString(), "[2, 3]");
  EXPECT_THAT(ToFloat(*a), ElementsAre(1, -2, 3.5f, 0, 1e-30f, -7));
  EXPECT_THAT(ToFloat(*(*file)->Find("b.f16")), ElementsAre(1.0f, -2.0f, std::ldexp(1.0f, -24)));
  EXPECT_THAT(ToFloat(*(*file)->Find("c.bf16")), ElementsAre(1.0f, -3.0f));
  EXPECT_THAT(ToFloat(*(*file)->Find("d.scalar")), ElementsAre(1.0f));
  EXPECT_EQ((*file)->Find("e.empty")->num_elements(), 0);
  EXPECT_EQ((*file)->Find("missing"), nullptr);

  std::vector<float> wrong_size(5);
  EXPECT_FALSE(ConvertToFloat32(*a, absl::MakeSpan(wrong_size)).ok());
}

// Found by safetensors_fuzz (UBSan): converting an empty tensor passed a null
// destination to memcpy.
TEST(SafetensorsTest, EmptyTensorConvertsIntoAnEmptySpan) {
  TempDir dir;
  const std::string path = dir.file("empty.safetensors");
  WriteFile(path, SafetensorsBytes(
                      {RawTensor{"e", "F32", {0, 4}, ""}, RawTensor{"h", "BF16", {3, 0}, ""}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const char* name : {"e", "h"}) {
    const TensorView* t = (*file)->Find(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->num_elements(), 0);
    EXPECT_TRUE(ConvertToFloat32(*t, absl::Span<float>()).ok()) << name;
  }
}

TEST(SafetensorsTest, NonFloatDtypeOpensButDoesNotConvert) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  WriteFile(path, SafetensorsBytes({RawTensor{"ids", "I32", {2}, std::string(8, '\1')}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<float> out(2);
  absl::Status s = ConvertToFloat32(*(*file)->Find("ids"), absl::MakeSpan(out));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("'ids'"));
  EXPECT_THAT(s.message(), HasSubstr("I32"));
  EXPECT_THAT(s.message(), HasSubstr(path));
}

struct BadFileCase {
  std::string name;
  std::string bytes;
  std::vector<std::string> expected;  // substrings of the error
};

TEST(SafetensorsTest, MalformedFilesAreClearErrors) {
  const std::string good =
      SafetensorsBytes({MakeTensor("w", {2, 2}, {1, 2, 3, 4}), MakeTensor("b", {2}, {5, 6})});
  const std::vector<BadFileCase> cases = {
      {"empty", "", {"shorter than the 8-byte header", "truncated"}},
      {"tiny", "abc", {"shorter than the 8-byte header"}},
      {"truncated_data", good.substr(0, good.size() - 3), {"tensor 'b'", "truncated"}},
      {"truncated_header", good.substr(0, 20), {"header length", "truncated"}},
      {"huge_header_len", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", {"100 MB"}},
      {"not_json", FileWithHeader("{not json}", ""), {"not a JSON object"}},
      {"bad_dtype",
       FileWithHeader(R"({"w":{"dtype":"F13","shape":[1],"data_offsets":[0,4]}})",
                      std::string(4, '\0')),
       {"tensor 'w'", "unknown dtype 'F13'"}},
      {"size_mismatch",
       FileWithHeader(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}})",
                      std::string(4, '\0')),
       {"tensor 'w'", "holds 4 bytes", "needs 6"}},
      {"negative_shape",
       FileWithHeader(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                      std::string(4, '\0')),
       {"tensor 'w'", "invalid shape"}},
      {"offsets_reversed",
       FileWithHeader(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})",
                      std::string(4, '\0')),
       {"tensor 'w'", "begin > end"}},
      {"no_offsets",
       FileWithHeader(R"({"w":{"dtype":"F32","shape":[1]}})", std::string(4, '\0')),
       {"tensor 'w'", "data_offsets"}},
      {"overlap",
       FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      std::string(12, '\0')),
       {"tensor 'b'", "overlaps tensor 'a'"}},
      {"misaligned",
       FileWithHeader(R"({"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                      std::string(6, '\0')),
       {"tensor 'b'", "data offset 2", "misaligned"}},
      {"zero_dim_after_huge_dims",
       FileWithHeader(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,0],)"
                      R"("data_offsets":[0,0]}})",
                      ""),
       {"tensor 'w'", "overflows a 64-bit integer"}},
      {"header_not_object", FileWithHeader("[1, 2]", ""), {"not a JSON object"}},
      {"metadata_not_object",
       FileWithHeader(R"({"__metadata__":[1]})", ""),
       {"__metadata__ is not an object"}},
      {"huge_shape",
       FileWithHeader(
           R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
           std::string(4, '\0')),
       {"tensor 'w'", "overflows a 64-bit integer"}},
  };
  TempDir dir;
  for (const BadFileCase& c : cases) {
    const std::string path = dir.file(c.name + ".safetensors");
    WriteFile(path, c.bytes);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << c.name;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(file.status().message(), HasSubstr(path)) << c.name;
    for (const std::string& e : c.expected) {
      EXPECT_THAT(file.status().message(), HasSubstr(e)) << c.name;
    }
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> missing =
      SafetensorsFile::Open(dir.file("nope.safetensors"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, ShardedCheckpoint) {
  TempDir dir;
  WriteFile(dir.file("model-00001-of-00002.safetensors"),
            SafetensorsBytes({MakeTensor("x", {2}, {1, 2}), MakeTensor("y", {1}, {3})}));
  WriteFile(dir.file("model-00002-of-00002.safetensors"),
            SafetensorsBytes({MakeTensor("z", {1}, {4}, "BF16")}));
  WriteFile(dir.file("model.safetensors.index.json"), R"({"metadata": {"total_size": 14},
      "weight_map": {"x": "model-00001-of-00002.safetensors",
                     "y": "model-00001-of-00002.safetensors",
                     "z": "model-00002-of-00002.safetensors"}})");
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> ckpt =
      SafetensorsCheckpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->TensorNames(), ElementsAre("x", "y", "z"));
  absl::StatusOr<const TensorView*> z = (*ckpt)->Get("z");
  ASSERT_TRUE(z.ok());
  EXPECT_THAT(ToFloat(**z), ElementsAre(4.0f));
  EXPECT_THAT((*z)->file, HasSubstr("model-00002-of-00002.safetensors"));
  absl::StatusOr<const TensorView*> nope = (*ckpt)->Get("nope");
  ASSERT_FALSE(nope.ok());
  EXPECT_THAT(nope.status().message(), HasSubstr("'nope'"));

  // The index names the wrong shard for y.
  WriteFile(dir.file("model.safetensors.index.json"), R"({"weight_map": {
      "x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors",
      "z": "model-00002-of-00002.safetensors"}})");
  ckpt = SafetensorsCheckpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("'y'"));

  // A shard is missing.
  WriteFile(dir.file("model.safetensors.index.json"),
            R"({"weight_map": {"x": "model-00003-of-00003.safetensors"}})");
  ckpt = SafetensorsCheckpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("model-00003-of-00003.safetensors"));

  // A shard escaping the directory.
  WriteFile(dir.file("model.safetensors.index.json"), R"({"weight_map": {"x": "../etc/passwd"}})");
  ckpt = SafetensorsCheckpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("'x'"));

  WriteFile(dir.file("model.safetensors.index.json"), R"({"weight_map": {}})");
  ckpt = SafetensorsCheckpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("weight_map"));
}

TEST(SafetensorsTest, SingleFileCheckpointAndMissingCheckpoint) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> ckpt =
      SafetensorsCheckpoint::Open(dir.path());
  ASSERT_FALSE(ckpt.ok());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(ckpt.status().message(), HasSubstr(dir.path()));

  WriteFile(dir.file("model.safetensors"), SafetensorsBytes({MakeTensor("w", {1}, {9})}));
  ckpt = SafetensorsCheckpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_THAT((*ckpt)->TensorNames(), ElementsAre("w"));
}

TEST(SafetensorsTest, OpensGoldenCheckpoints) {
  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> llama =
      SafetensorsCheckpoint::Open(SourceDir() + "/tests/fixtures/golden/llama");
  ASSERT_TRUE(llama.ok()) << llama.status();
  const TensorView* embed = (*llama)->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_THAT(embed->shape, ElementsAre(600, 64));
  EXPECT_EQ(embed->dtype, SafetensorsDType::kF32);
  EXPECT_NE((*llama)->Find("model.layers.2.mlp.down_proj.weight"), nullptr);

  absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> qwen =
      SafetensorsCheckpoint::Open(SourceDir() + "/tests/fixtures/golden/qwen2");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  const TensorView* bias = (*qwen)->Find("model.layers.0.self_attn.q_proj.bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->dtype, SafetensorsDType::kBF16);
  EXPECT_THAT(bias->shape, ElementsAre(64));
}

}  // namespace
}  // namespace arbor::runtime
