#include "bench/gpu_util/gpu_bench_util.h"

#include <cublas_v2.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/reference.h"

namespace arbor::bench {

DeviceBuffer::DeviceBuffer(size_t bytes) {
  ARBOR_CHECK_CUDA(cudaMalloc(&ptr, std::max<size_t>(bytes, 16)));
}
DeviceBuffer::~DeviceBuffer() { cudaFree(ptr); }

void FillBf16(void* dst, size_t n, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint16_t> host(std::min<size_t>(n, size_t{1} << 22));
  for (uint16_t& x : host) x = kernels::reference::FloatToBf16(dist(rng));
  for (size_t done = 0; done < n; done += host.size()) {
    const size_t count = std::min(host.size(), n - done);
    ARBOR_CHECK_CUDA(cudaMemcpy(static_cast<uint16_t*>(dst) + done, host.data(),
                                count * sizeof(uint16_t), cudaMemcpyHostToDevice));
  }
}

double TimeMs(const std::function<void()>& fn, int iters) {
  for (int i = 0; i < 3; ++i) fn();
  ARBOR_CHECK_CUDA(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  ARBOR_CHECK_CUDA(cudaEventCreate(&start));
  ARBOR_CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < std::max(iters, 1); ++i) {
    ARBOR_CHECK_CUDA(cudaEventRecord(start));
    fn();
    ARBOR_CHECK_CUDA(cudaEventRecord(stop));
    ARBOR_CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    ARBOR_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  ARBOR_CHECK_CUDA(cudaGetLastError());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

DeviceLimits MeasureDeviceLimits(int iters) {
  DeviceLimits limits;
  {
    const size_t bytes = size_t{1} << 30;
    DeviceBuffer a(bytes), b(bytes);
    ARBOR_CHECK_CUDA(cudaMemset(a.ptr, 1, bytes));
    const double ms = TimeMs(
        [&] { ARBOR_CHECK_CUDA(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice)); },
        iters);
    limits.copy_gbps = 2.0 * bytes / (ms * 1e-3) / 1e9;
  }
  const int n = 8192;
  const size_t elems = size_t{1} * n * n;
  DeviceBuffer x(2 * elems), y(2 * elems), z(2 * elems);
  FillBf16(x.ptr, elems, 1.0f, 1);
  FillBf16(y.ptr, elems, 1.0f, 2);
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "MeasureDeviceLimits: cublasCreate failed\n");
    std::exit(1);
  }
  const float alpha = 1.0f, beta = 0.0f;
  const double ms = TimeMs(
      [&] {
        cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, x.ptr, CUDA_R_16BF, n,
                     y.ptr, CUDA_R_16BF, n, &beta, z.ptr, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
      },
      iters);
  cublasDestroy(handle);
  limits.gemm_tflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
  return limits;
}

}  // namespace arbor::bench
