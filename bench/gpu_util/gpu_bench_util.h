// Helpers shared by the GPU benchmarks (bench/kernels, bench/model): every
// failure exits the process with the failing expression, since a benchmark
// has nothing to recover. Not thread-safe; one benchmark thread.
#ifndef ARBOR_BENCH_GPU_UTIL_GPU_BENCH_UTIL_H_
#define ARBOR_BENCH_GPU_UTIL_GPU_BENCH_UTIL_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>

#define ARBOR_CHECK_CUDA(expr)                                                                   \
  do {                                                                                           \
    const cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

namespace arbor::bench {

// Device allocation freed at the end of its scope.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

// Fills `n` bf16 values at `dst` with N(0, scale): a random block of up to
// 2^22 values, repeated (timing needs realistic, non-zero data; GEMMs run
// measurably faster on zeros), not fresh entropy.
void FillBf16(void* dst, size_t n, float scale, uint32_t seed);

// Median milliseconds of `fn` on the legacy stream (CUDA events) over
// `iters` timed runs after 3 warm-ups.
double TimeMs(const std::function<void()>& fn, int iters = 20);

struct DeviceLimits {
  double copy_gbps = 0;    // device-to-device cudaMemcpy of 1 GiB: bytes read + written / s / 1e9
  double gemm_tflops = 0;  // cuBLAS bf16 GEMM 8192^3, fp32 accumulation
};
// Measures both on random data (allocates about 1.4 GiB for the duration).
DeviceLimits MeasureDeviceLimits(int iters = 20);

}  // namespace arbor::bench

#endif  // ARBOR_BENCH_GPU_UTIL_GPU_BENCH_UTIL_H_
