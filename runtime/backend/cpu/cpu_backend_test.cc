#include "runtime/backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/backend/cpu/cpu_ops.h"
#include "runtime/model/model_weights.h"
#include "runtime/model/safetensors.h"
#include "runtime/testing/forward_batch.h"
#include "runtime/testing/tiny_model.h"

namespace arbor::runtime {
namespace {

using test_util::TempDir;
using test_util::TinyModelSpec;
using test_util::WriteTinyModel;
using ::testing::HasSubstr;

// max|a - b| / max|b| over two equally long vectors.
template <typename T>
double RelError(const std::vector<float>& a, const std::vector<T>& b) {
  EXPECT_EQ(a.size(), b.size());
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{a[i]} - double{b[i]}));
    max_ref = std::max(max_ref, std::abs(double{b[i]}));
  }
  return max_ref == 0.0 ? max_diff : max_diff / max_ref;
}

// ------------------------------------------------------------------ reference

// A dense, double-precision forward pass written straight from the
// transformers modeling code, reading tensors by their HF names: the
// independent reference for the random-weight models.
class ReferenceModel {
 public:
  explicit ReferenceModel(const std::string& dir) {
    absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
    ARBOR_CHECK(config.ok());
    config_ = *config;
    absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> ckpt = SafetensorsCheckpoint::Open(dir);
    ARBOR_CHECK(ckpt.ok());
    for (const std::string& name : (*ckpt)->TensorNames()) {
      const TensorView* t = (*ckpt)->Find(name);
      std::vector<float> f(t->num_elements());
      ARBOR_CHECK(ConvertToFloat32(*t, absl::MakeSpan(f)).ok());
      tensors_[name] = std::vector<double>(f.begin(), f.end());
    }
    inv_freq_ = RopeInvFreq(config_.head_dim, config_.rope_theta, config_.rope_scaling);
  }

  // Output rows ([n, output_dim]) for every position of `ids`.
  std::vector<double> Forward(const std::vector<int32_t>& ids) const {
    const ModelConfig& c = config_;
    const int n = static_cast<int>(ids.size()), h = c.hidden_size, d = c.head_dim;
    const int q_dim = c.num_heads * d, kv_dim = c.num_kv_heads * d;
    std::vector<double> x(n * h);
    for (int t = 0; t < n; ++t) {
      for (int i = 0; i < h; ++i) x[t * h + i] = T("model.embed_tokens.weight")[ids[t] * h + i];
    }
    for (int l = 0; l < c.num_layers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      std::vector<double> normed = Norm(x, n, T(p + "input_layernorm.weight"));
      std::vector<double> q = Lin(normed, n, h, p + "self_attn.q_proj", q_dim);
      std::vector<double> k = Lin(normed, n, h, p + "self_attn.k_proj", kv_dim);
      std::vector<double> v = Lin(normed, n, h, p + "self_attn.v_proj", kv_dim);
      Rope(&q, n, c.num_heads);
      Rope(&k, n, c.num_kv_heads);
      std::vector<double> attn(n * q_dim, 0.0);
      const int group = c.num_heads / c.num_kv_heads;
      for (int t = 0; t < n; ++t) {
        for (int head = 0; head < c.num_heads; ++head) {
          const int kh = head / group;
          std::vector<double> w(t + 1);
          double mx = -1e300, sum = 0;
          for (int j = 0; j <= t; ++j) {
            double dot = 0;
            for (int e = 0; e < d; ++e)
              dot += q[t * q_dim + head * d + e] * k[j * kv_dim + kh * d + e];
            w[j] = dot / std::sqrt(double(d));
            mx = std::max(mx, w[j]);
          }
          for (double& s : w) sum += (s = std::exp(s - mx));
          for (int j = 0; j <= t; ++j) {
            for (int e = 0; e < d; ++e) {
              attn[t * q_dim + head * d + e] += w[j] / sum * v[j * kv_dim + kh * d + e];
            }
          }
        }
      }
      std::vector<double> o = Lin(attn, n, q_dim, p + "self_attn.o_proj", h);
      for (int i = 0; i < n * h; ++i) x[i] += o[i];
      normed = Norm(x, n, T(p + "post_attention_layernorm.weight"));
      std::vector<double> gate = Lin(normed, n, h, p + "mlp.gate_proj", c.intermediate_size);
      std::vector<double> up = Lin(normed, n, h, p + "mlp.up_proj", c.intermediate_size);
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      std::vector<double> down = Lin(gate, n, c.intermediate_size, p + "mlp.down_proj", h);
      for (int i = 0; i < n * h; ++i) x[i] += down[i];
    }
    x = Norm(x, n, T("model.norm.weight"));
    if (!c.is_value_head()) {
      const std::string head = tensors_.count("lm_head.weight") ? "lm_head" : "model.embed_tokens";
      return Lin(x, n, h, head, c.vocab_size);
    }
    if (tensors_.count("score.weight")) return Lin(x, n, h, "score", c.num_labels);
    std::vector<double> hidden = Lin(x, n, h, "score.0", h);
    for (double& v : hidden) v = std::max(v, 0.0);
    return Lin(hidden, n, h, "score.2", c.num_labels);
  }

  const ModelConfig& config() const { return config_; }

 private:
  const std::vector<double>& T(const std::string& name) const {
    auto it = tensors_.find(name);
    ARBOR_CHECK_MSG(it != tensors_.end(), name.c_str());
    return it->second;
  }
  std::vector<double> Norm(const std::vector<double>& x, int n,
                           const std::vector<double>& w) const {
    const int h = config_.hidden_size;
    std::vector<double> out(x.size());
    for (int t = 0; t < n; ++t) {
      double ss = 0;
      for (int i = 0; i < h; ++i) ss += x[t * h + i] * x[t * h + i];
      const double inv = 1.0 / std::sqrt(ss / h + config_.rms_norm_eps);
      for (int i = 0; i < h; ++i) out[t * h + i] = w[i] * x[t * h + i] * inv;
    }
    return out;
  }
  std::vector<double> Lin(const std::vector<double>& x, int n, int in, const std::string& name,
                          int out) const {
    const std::vector<double>& w = T(name + ".weight");
    auto bias = tensors_.find(name + ".bias");
    std::vector<double> y(n * out);
    for (int t = 0; t < n; ++t) {
      for (int o = 0; o < out; ++o) {
        double acc = bias == tensors_.end() ? 0.0 : bias->second[o];
        for (int i = 0; i < in; ++i) acc += x[t * in + i] * w[o * in + i];
        y[t * out + o] = acc;
      }
    }
    return y;
  }
  void Rope(std::vector<double>* x, int n, int heads) const {
    const int d = config_.head_dim;
    for (int t = 0; t < n; ++t) {
      for (int head = 0; head < heads; ++head) {
        double* v = x->data() + (t * heads + head) * d;
        for (int i = 0; i < d / 2; ++i) {
          const double angle = double{static_cast<float>(t) * inv_freq_[i]};
          const double a = v[i], b = v[i + d / 2];
          v[i] = a * std::cos(angle) - b * std::sin(angle);
          v[i + d / 2] = b * std::cos(angle) + a * std::sin(angle);
        }
      }
    }
  }

  ModelConfig config_;
  std::map<std::string, std::vector<double>> tensors_;
  std::vector<float> inv_freq_;
};

// ------------------------------------------------------------------ harness

using test_util::BlockAllocator;
using test_util::BuildBatch;
using test_util::Chunk;
using test_util::Seq;
using test_util::Step;

std::vector<int32_t> Slice(const std::vector<int32_t>& v, size_t begin, size_t end) {
  return std::vector<int32_t>(v.begin() + begin, v.begin() + std::min(end, v.size()));
}

template <typename T>
std::vector<T> Rows(const std::vector<T>& m, int dim, int begin, int end) {
  return std::vector<T>(m.begin() + int64_t{begin} * dim, m.begin() + int64_t{end} * dim);
}

std::unique_ptr<CpuBackend> MakeBackend(const std::string& dir, int blocks = 128, int threads = 2) {
  CpuBackendOptions options;
  options.num_kv_blocks = blocks;
  options.num_threads = threads;
  absl::StatusOr<std::unique_ptr<CpuBackend>> backend = CpuBackend::Create(dir, options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? *std::move(backend) : nullptr;
}

std::vector<int32_t> TokenRange(int n, int vocab, int seed) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = (seed + 7 * i * i + 3 * i) % vocab;
  return ids;
}

// ------------------------------------------------------------------ random models

struct RandomModelCase {
  std::string name;
  TinyModelSpec spec;
};

std::vector<RandomModelCase> RandomModelCases() {
  std::vector<RandomModelCase> cases;
  TinyModelSpec llama;
  cases.push_back({"llama_gqa_f32", llama});
  TinyModelSpec llama3 = llama;
  llama3.llama3_rope = true;
  llama3.num_kv_heads = 1;
  llama3.seed = 2;
  cases.push_back({"llama3_rope_mqa", llama3});
  TinyModelSpec qwen;
  qwen.architecture = "Qwen2ForCausalLM";
  qwen.qkv_bias = true;
  qwen.tie_embeddings = true;
  qwen.dtype = "BF16";
  qwen.seed = 3;
  cases.push_back({"qwen2_bias_tied_bf16", qwen});
  TinyModelSpec orm = llama;
  orm.architecture = "LlamaForSequenceClassification";
  orm.num_labels = 1;
  orm.seed = 4;
  cases.push_back({"llama_sequence_classification", orm});
  TinyModelSpec prm = qwen;
  prm.architecture = "Qwen2ForProcessRewardModel";
  prm.num_labels = 2;
  prm.mlp_score_head = true;
  prm.seed = 5;
  cases.push_back({"qwen2_process_reward_model", prm});
  return cases;
}

TEST(CpuBackendTest, RandomModelsMatchDenseReference) {
  for (const RandomModelCase& c : RandomModelCases()) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    WriteTinyModel(dir.path(), c.spec);
    std::unique_ptr<CpuBackend> backend = MakeBackend(dir.path());
    ASSERT_NE(backend, nullptr);
    ReferenceModel ref(dir.path());
    const int dim = backend->output_dim();
    EXPECT_EQ(dim, c.spec.num_labels > 0 ? c.spec.num_labels : c.spec.vocab_size);
    EXPECT_EQ(backend->name(), "cpu");

    const std::vector<int32_t> ids = TokenRange(45, c.spec.vocab_size, 11);
    const std::vector<double> expected = ref.Forward(ids);

    // One pass, every row.
    BlockAllocator alloc(backend->num_kv_blocks());
    Seq one;
    std::vector<float> all = Step(backend.get(), &alloc, {{&one, ids, {-1}}});
    EXPECT_LT(RelError(all, expected), 1e-5);

    // Token by token (decode path) plus chunks of uneven sizes.
    Seq pieces;
    std::vector<float> joined;
    for (size_t begin = 0; begin < ids.size();) {
      const size_t len = begin < 10 ? 1 : (begin < 30 ? 7 : 100);
      std::vector<float> out =
          Step(backend.get(), &alloc, {{&pieces, Slice(ids, begin, begin + len), {-1}}});
      joined.insert(joined.end(), out.begin(), out.end());
      begin += len;
    }
    EXPECT_LT(RelError(joined, expected), 1e-5);
  }
}

// Prefill chunks and decode tokens of several sequences in one batch, with
// outputs on a subset of rows, in any order.
TEST(CpuBackendTest, MixedBatchMatchesReference) {
  TinyModelSpec spec;
  spec.architecture = "Qwen2ForCausalLM";
  spec.qkv_bias = true;
  spec.num_layers = 3;
  TempDir dir;
  WriteTinyModel(dir.path(), spec);
  std::unique_ptr<CpuBackend> backend = MakeBackend(dir.path(), 64, 3);
  ASSERT_NE(backend, nullptr);
  ReferenceModel ref(dir.path());
  const int vocab = spec.vocab_size;
  const std::vector<int32_t> a = TokenRange(20, vocab, 1), b = TokenRange(31, vocab, 2),
                             c = TokenRange(27, vocab, 3);
  BlockAllocator alloc(64);
  Seq sa, sb, sc;
  // b and c get some context first.
  Step(backend.get(), &alloc, {{&sb, Slice(b, 0, 30), {}}, {&sc, Slice(c, 0, 17), {}}});
  // Now: a fresh prefill, b one decode token, c a 10-token chunk.
  std::vector<float> out =
      Step(backend.get(), &alloc,
           {{&sa, a, {19, 3}}, {&sb, Slice(b, 30, 31), {0}}, {&sc, Slice(c, 17, 27), {9, 0, 5}}});
  const std::vector<double> ra = ref.Forward(a), rb = ref.Forward(b), rc = ref.Forward(c);
  std::vector<double> expected;
  for (auto [m, row] : std::vector<std::pair<const std::vector<double>*, int>>{
           {&ra, 19}, {&ra, 3}, {&rb, 30}, {&rc, 26}, {&rc, 17}, {&rc, 22}}) {
    std::vector<double> r = Rows(*m, vocab, row, row + 1);
    expected.insert(expected.end(), r.begin(), r.end());
  }
  EXPECT_LT(RelError(out, expected), 1e-5);

  // No outputs at all: the KV is still written.
  Seq sd;
  std::vector<float> none = Step(backend.get(), &alloc, {{&sd, Slice(a, 0, 12), {}}});
  EXPECT_TRUE(none.empty());
  std::vector<float> last = Step(backend.get(), &alloc, {{&sd, Slice(a, 12, 20), {7}}});
  EXPECT_LT(RelError(last, Rows(ra, vocab, 19, 20)), 1e-5);
}

TEST(CpuBackendTest, ThreadCountDoesNotChangeResults) {
  TinyModelSpec spec;
  spec.num_heads = 8;
  spec.num_kv_heads = 2;
  TempDir dir;
  WriteTinyModel(dir.path(), spec);
  const std::vector<int32_t> ids = TokenRange(70, spec.vocab_size, 5);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 4}) {
    std::unique_ptr<CpuBackend> backend = MakeBackend(dir.path(), 16, threads);
    ASSERT_NE(backend, nullptr);
    BlockAllocator alloc(16);
    Seq s;
    results.push_back(Step(backend.get(), &alloc, {{&s, ids, {-1}}}));
  }
  EXPECT_LT(RelError(results[0], results[1]), 1e-6);
}

// ------------------------------------------------------------------ KV pool and Create

TEST(CpuBackendTest, CopyBlocksCopiesEveryLayer) {
  TempDir dir;
  TinyModelSpec spec;
  spec.num_layers = 3;
  WriteTinyModel(dir.path(), spec);
  std::unique_ptr<CpuBackend> backend = MakeBackend(dir.path(), 6, 1);
  ASSERT_NE(backend, nullptr);
  BlockAllocator alloc(6);
  Seq s;
  Step(backend.get(), &alloc, {{&s, TokenRange(20, spec.vocab_size, 1), {}}});  // blocks 0, 1
  const size_t block = kKvBlockSize * spec.num_kv_heads * (spec.hidden_size / spec.num_heads);
  const std::vector<std::pair<int32_t, int32_t>> copies = {{1, 4}, {0, 5}};
  ASSERT_TRUE(backend->CopyBlocks(copies).ok());
  for (int l = 0; l < spec.num_layers; ++l) {
    for (auto [src, dst] : copies) {
      for (const float* pool : {backend->k_pool(l), backend->v_pool(l)}) {
        EXPECT_TRUE(std::equal(pool + src * block, pool + (src + 1) * block, pool + dst * block));
      }
    }
  }
}

TEST(CpuBackendTest, CreateErrorsNameTheProblem) {
  CpuBackendOptions options;
  options.num_threads = 1;
  {
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create("/nonexistent", options);
    ASSERT_FALSE(b.ok());
    EXPECT_THAT(b.status().message(), HasSubstr("/nonexistent/config.json"));
  }
  TempDir dir;
  TinyModelSpec spec;
  WriteTinyModel(dir.path(), spec);
  {
    CpuBackendOptions bad = options;
    bad.num_kv_blocks = 0;
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(dir.path(), bad);
    ASSERT_FALSE(b.ok());
    EXPECT_THAT(b.status().message(), HasSubstr("num_kv_blocks"));
  }
  // The config disagrees with the tensors.
  std::string config;
  {
    std::ifstream in(dir.file("config.json"));
    std::stringstream ss;
    ss << in.rdbuf();
    config = ss.str();
  }
  nlohmann::json json = nlohmann::json::parse(config);
  json["intermediate_size"] = 50;
  test_util::WriteFile(dir.file("config.json"), json.dump());
  {
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(dir.path(), options);
    ASSERT_FALSE(b.ok());
    EXPECT_THAT(b.status().message(), HasSubstr("model.layers.0.mlp.gate_proj.weight"));
    EXPECT_THAT(b.status().message(), HasSubstr("[48, 32]"));
    EXPECT_THAT(b.status().message(), HasSubstr("[50, 32]"));
  }
  // Qwen2 needs the Q/K/V biases the checkpoint lacks.
  json["intermediate_size"] = 48;
  json["architectures"] = {"Qwen2ForCausalLM"};
  test_util::WriteFile(dir.file("config.json"), json.dump());
  {
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(dir.path(), options);
    ASSERT_FALSE(b.ok());
    EXPECT_THAT(b.status().message(), HasSubstr("model.layers.0.self_attn.q_proj.bias"));
  }
  // Untied without lm_head.
  TempDir tied;
  spec.tie_embeddings = true;
  WriteTinyModel(tied.path(), spec);
  json = nlohmann::json::parse(config);
  json["tie_word_embeddings"] = false;
  test_util::WriteFile(tied.file("config.json"), json.dump());
  {
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(tied.path(), options);
    ASSERT_FALSE(b.ok());
    EXPECT_THAT(b.status().message(), HasSubstr("lm_head.weight"));
  }
  // A truncated checkpoint.
  TempDir truncated;
  spec.tie_embeddings = false;
  WriteTinyModel(truncated.path(), spec);
  std::filesystem::resize_file(truncated.file("model.safetensors"),
                               std::filesystem::file_size(truncated.file("model.safetensors")) - 1);
  {
    absl::StatusOr<std::unique_ptr<CpuBackend>> b = CpuBackend::Create(truncated.path(), options);
    ASSERT_FALSE(b.ok());
    EXPECT_THAT(b.status().message(), HasSubstr("truncated"));
    EXPECT_THAT(b.status().message(), HasSubstr("lm_head.weight"));  // the last tensor
  }
}

}  // namespace
}  // namespace arbor::runtime
