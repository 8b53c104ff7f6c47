// Helpers shared by the GPU kernel tests (kernels_gpu_test.cc,
// kernels_attention_gpu_test.cc): device arrays, random bf16 tensors, error
// measures, and the skip-without-a-device macro.
#ifndef ARBOR_KERNELS_TESTING_GPU_TEST_UTIL_H_
#define ARBOR_KERNELS_TESTING_GPU_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"

namespace arbor::kernels::test_util {

using reference::Bf16ToFloat;
using reference::FloatToBf16;

inline constexpr double kBf16Tolerance = 1e-2;
inline constexpr double kFp32Tolerance = 1e-4;

inline bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define REQUIRE_GPU()                                                                        \
  do {                                                                                       \
    if (!::arbor::kernels::test_util::HaveGpu()) GTEST_SKIP() << "no CUDA device available"; \
  } while (0)

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(expr)
#define ASSERT_KERNEL_OK(expr)                             \
  do {                                                     \
    const ::arbor::kernels::KernelStatus status_ = (expr); \
    ASSERT_TRUE(status_.ok()) << status_.message();        \
    ASSERT_CUDA(cudaDeviceSynchronize());                  \
  } while (0)

// Owning device array.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : size_(n) {
    if (cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) ptr_ = nullptr;
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return ptr_; }
  std::vector<T> ToHost() const {
    std::vector<T> host(size_);
    cudaMemcpy(host.data(), ptr_, size_ * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t size_;
};

// Random bf16 tensor and the exact float values it holds.
struct Bf16Tensor {
  std::vector<Bf16> bits;
  std::vector<float> values;
};
inline Bf16Tensor RandomBf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  Bf16Tensor t;
  t.bits.resize(n);
  t.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t.bits[i] = FloatToBf16(dist(rng));
    t.values[i] = Bf16ToFloat(t.bits[i]);
  }
  return t;
}
inline std::vector<float> ToFloat(const std::vector<Bf16>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = Bf16ToFloat(bits[i]);
  return out;
}

// max |got - want| / max |want|.
inline double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double max_err = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

// Distinct random block ids for each sequence's blocks.
inline std::vector<int32_t> RandomBlockTables(int num_seqs, int max_blocks, int num_blocks,
                                              std::mt19937& rng) {
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks);
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = ids[i];
  return tables;
}

inline AttentionShape Shape(int heads, int kv_heads, int dim, int max_blocks) {
  return AttentionShape{.num_heads = heads,
                        .num_kv_heads = kv_heads,
                        .head_dim = dim,
                        .scale = 1.0f / std::sqrt(static_cast<float>(dim)),
                        .max_blocks = max_blocks};
}

}  // namespace arbor::kernels::test_util

#endif  // ARBOR_KERNELS_TESTING_GPU_TEST_UTIL_H_
