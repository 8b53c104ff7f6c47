// The ModelBackend contract (runtime/backend/backend.h), checked on every
// backend: "cpu" (fp32, the reference) and "cuda" (bf16; skips without a CUDA
// device or without CUDA in the build). Each backend is held to a tolerance
// suited to it: the CPU backend matches transformers' fp32 logits to 1e-4 and
// itself across batch shapes to 1e-5; the CUDA backend's bf16 weights and
// activations move the random golden models' logits by 3-8% of the largest one
// (see the tolerances below), and different batch shapes by far less.
//
// What every backend must do:
//  - logits and greedy tokens of the golden fixtures (tests/fixtures/golden,
//    made by transformers) within its tolerance; argmaxes the fixture's or a
//    near-tie that the measured error explains;
//  - a prompt prefilled in chunks, or prefilled then decoded token by token,
//    gives the logits of one long prefill;
//  - K/V lives where the block table says: any block ids, shared full blocks
//    and a partial block copied with CopyBlocks (a fork) read back the same;
//  - a sequence's rows do not depend on what else is in the batch;
//  - output_rows select, repeat and reorder rows; no output rows still write
//    the K/V;
//  - ForwardSample draws what the host Sampler draws from Forward's logits;
//  - malformed batches, sampling and block copies are INVALID_ARGUMENT (never
//    a crash), naming the entry at fault.
// The numerics are in backend_conformance_golden_test.cc, the errors in
// backend_conformance_errors_test.cc; this header holds what they share: the
// backends under test and their tolerances, MAKE_BACKEND_OR_SKIP, a harness
// that builds batches the way the engine does, and the two suites' fixtures.
// Backend-specific behaviour (the CPU's dense reference and threads, CUDA
// graphs, cascade attention, split passes) is tested beside each backend.
#ifndef ARBOR_RUNTIME_BACKEND_BACKEND_CONFORMANCE_TEST_UTIL_H_
#define ARBOR_RUNTIME_BACKEND_BACKEND_CONFORMANCE_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/check.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/model/model_config.h"
#include "runtime/sampling/sampler.h"
#include "runtime/testing/forward_batch.h"

namespace arbor::runtime {

// ------------------------------------------------------------------ backends

// One backend under test and the tolerances it is held to (max|a - b| /
// max|b| over the compared logits).
struct BackendKind {
  std::string name;
  // Against transformers' fp32 logits on the golden fixtures.
  double golden_tolerance;
  // Against itself: the same tokens through other chunkings, block tables or
  // batch compositions.
  double self_tolerance;
  // The fp32 reference the others' near-ties are judged against.
  bool reference;
};

inline void PrintTo(const BackendKind& kind, std::ostream* os) { *os << kind.name; }

inline const BackendKind kCpu = {"cpu", 1e-4, 1e-5, true};
// bf16: the random golden models' logits are sums of large, cancelling terms,
// moved by 3-8% of the largest logit on an H200; two bf16 paths over the same
// tokens differ only in summation order and where they round (the cascade and
// per-branch decode paths agree within 3e-2).
inline const BackendKind kCuda = {"cuda", 1e-1, 3e-2, false};

inline std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

inline std::string GoldenDir(const std::string& model) {
  return SourceDir() + "/tests/fixtures/golden/" + model;
}

inline bool Bf16Model(const std::string& dir) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  return config.ok() && config->torch_dtype == "bfloat16";
}

// The backend `kind` over the model in `dir`. nullptr with a test failure on
// an error, or without one when the backend cannot run here (CUDA: no device,
// FAILED_PRECONDITION, or no CUDA in the build, UNIMPLEMENTED).
inline std::unique_ptr<ModelBackend> MakeBackend(const std::string& kind, const std::string& dir,
                                                 int num_kv_blocks = 128) {
  // make_golden.py ran the bf16 Qwen2 model as model.to(bfloat16).float(),
  // which also rounds its RoPE frequency buffer to bf16; every backend
  // emulates that for such references.
  const bool bf16_rope = Bf16Model(dir);
  if (kind == "cpu") {
    CpuBackendOptions options;
    options.num_kv_blocks = num_kv_blocks;
    options.num_threads = 2;
    options.bf16_rope_frequencies = bf16_rope;
    absl::StatusOr<std::unique_ptr<CpuBackend>> backend = CpuBackend::Create(dir, options);
    if (!backend.ok()) {
      ADD_FAILURE() << backend.status();
      return nullptr;
    }
    return *std::move(backend);
  }
  if (kind == "cuda") {
    CudaBackendOptions options;
    options.num_kv_blocks = num_kv_blocks;
    options.bf16_rope_frequencies = bf16_rope;
    absl::StatusOr<std::unique_ptr<CudaBackend>> backend = CudaBackend::Create(dir, options);
    if (!backend.ok()) {
      const absl::StatusCode code = backend.status().code();
      if (code != absl::StatusCode::kFailedPrecondition &&  // no device
          code != absl::StatusCode::kUnimplemented) {       // no CUDA in the build
        ADD_FAILURE() << backend.status();
      }
      return nullptr;
    }
    return *std::move(backend);
  }
  ADD_FAILURE() << "unknown backend " << kind;
  return nullptr;
}

// Declares `var`, the backend of the test's parameter over (dir[, blocks]);
// skips the test when that backend cannot run here, returns when making it
// failed.
#define MAKE_BACKEND_OR_SKIP(var, ...)                                               \
  std::unique_ptr<ModelBackend> var = MakeBackend(backend_kind().name, __VA_ARGS__); \
  if (var == nullptr && ::testing::Test::HasFailure()) return;                       \
  if (var == nullptr) GTEST_SKIP() << backend_kind().name << ": no device (or not in the build)"

// ------------------------------------------------------------------ harness

// max|a - b| / max|b| over two equally long vectors.
inline double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{a[i]} - double{b[i]}));
    max_ref = std::max(max_ref, std::abs(double{b[i]}));
  }
  return max_ref == 0.0 ? max_diff : max_diff / max_ref;
}

inline int ArgMax(const float* row, int n) {  // first maximum, like torch.argmax
  return static_cast<int>(std::max_element(row, row + n) - row);
}

inline float MaxAbsDiff(const float* a, const float* b, int n) {
  float d = 0.0f;
  for (int i = 0; i < n; ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

// Whether picking `token` from logits within `delta` (max abs) of the
// reference logits `ref` is explained by that error: its reference logit is
// within 2 delta of the best one.
inline bool ArgMaxExplainedBy(const float* ref, int n, float delta, int32_t token) {
  return ref[token] >= *std::max_element(ref, ref + n) - 2.0f * delta;
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

using test_util::BlockAllocator;
using test_util::BuildBatch;
using test_util::Chunk;
using test_util::Seq;
using test_util::Step;

inline std::vector<int32_t> Slice(const std::vector<int32_t>& v, size_t begin, size_t end) {
  return std::vector<int32_t>(v.begin() + begin, v.begin() + std::min(end, v.size()));
}

inline std::vector<float> Rows(const std::vector<float>& m, int dim, int begin, int end) {
  return std::vector<float>(m.begin() + int64_t{begin} * dim, m.begin() + int64_t{end} * dim);
}

inline void Append(std::vector<float>* all, const std::vector<float>& v) {
  all->insert(all->end(), v.begin(), v.end());
}

// The longest prompt of the fixture's logits.json (40 tokens: three blocks).
inline std::vector<int32_t> LongPrompt(const std::string& dir) {
  return ReadJson(dir + "/logits.json").back()["ids"].get<std::vector<int32_t>>();
}

// `rows` rows of plain temperature sampling (0: greedy), row i on RNG stream i.
inline std::vector<RowSampling> SamplingFor(size_t rows, float temperature, uint64_t seed) {
  std::vector<RowSampling> sampling(rows);
  for (size_t i = 0; i < rows; ++i) {
    sampling[i].params.temperature = temperature;
    sampling[i].seed = seed;
    sampling[i].stream = i;
  }
  return sampling;
}

// ------------------------------------------------------------------ suites

// Model-independent cases: one per backend.
class BackendConformanceTest : public ::testing::TestWithParam<BackendKind> {
 protected:
  const BackendKind& backend_kind() const { return GetParam(); }
};

// Cases over the golden fixtures: one per (backend, model).
class GoldenConformanceTest
    : public ::testing::TestWithParam<std::tuple<BackendKind, std::string>> {
 protected:
  const BackendKind& backend_kind() const { return std::get<0>(GetParam()); }
  std::string dir() const { return GoldenDir(std::get<1>(GetParam())); }
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_BACKEND_BACKEND_CONFORMANCE_TEST_UTIL_H_
