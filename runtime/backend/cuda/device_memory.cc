#include "runtime/backend/cuda/device_memory.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/status_macros.h"

namespace arbor::runtime::cuda_internal {

absl::Status CudaError(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat("CudaBackend: ", what, ": ", cudaGetErrorString(error));
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::Status KernelError(kernels::KernelStatus status, const char* what) {
  if (status.ok()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CudaBackend: kernel ", what, ": ", status.message()));
}

absl::Status CublasError(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("CudaBackend: cuBLAS ", what, " failed with status ", static_cast<int>(status)));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

absl::Status DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  ARBOR_RETURN_IF_ERROR(CudaError(cudaMalloc(&ptr_, bytes), "cudaMalloc"));
  bytes_ = bytes;
  return absl::OkStatus();
}

PinnedMeta::~PinnedMeta() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

absl::Status PinnedMeta::Reset(size_t n) {
  size_ = 0;
  if (n <= capacity_) return absl::OkStatus();
  if (data_ != nullptr) cudaFreeHost(data_);
  data_ = nullptr;
  capacity_ = 0;
  const size_t grown = std::max(n, n / 2 * 3);  // long contexts grow it step by step
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMallocHost(reinterpret_cast<void**>(&data_), grown * sizeof(int32_t)),
                "cudaMallocHost (batch metadata)"));
  capacity_ = grown;
  return absl::OkStatus();
}

size_t PinnedMeta::Append(const std::vector<int32_t>& v) {
  ARBOR_CHECK(size_ + v.size() <= capacity_);
  std::copy(v.begin(), v.end(), data_ + size_);
  size_ += v.size();
  return size_ - v.size();
}

size_t PinnedMeta::AppendZeros(size_t entries) {
  ARBOR_CHECK(size_ + entries <= capacity_);
  std::fill_n(data_ + size_, entries, 0);
  size_ += entries;
  return size_ - entries;
}

}  // namespace arbor::runtime::cuda_internal
