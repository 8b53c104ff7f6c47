// Internal to the CUDA backend (runtime/backend/cuda/, CUDA builds only):
// CUDA, kernel and cuBLAS failures as absl::Status, and the two owning
// allocations the backend is made of: DeviceBuffer (device memory, grown on
// demand) and PinnedMeta (a pass's batch metadata in pinned host memory).
//
// Thread-safety: none; each object belongs to one CudaBackend, which is driven
// by one thread. Allocation and freeing run on the calling thread's current
// device (the backend sets it first).
#ifndef ARBOR_RUNTIME_BACKEND_CUDA_DEVICE_MEMORY_H_
#define ARBOR_RUNTIME_BACKEND_CUDA_DEVICE_MEMORY_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/kernels.h"

namespace arbor::runtime::cuda_internal {

// OK for cudaSuccess; else RESOURCE_EXHAUSTED (out of memory) or INTERNAL,
// naming `what` and CUDA's message.
absl::Status CudaError(cudaError_t error, const char* what);
// INTERNAL naming the kernel `what` unless `status` is ok.
absl::Status KernelError(kernels::KernelStatus status, const char* what);
// INTERNAL naming the cuBLAS call `what` unless CUBLAS_STATUS_SUCCESS.
absl::Status CublasError(cublasStatus_t status, const char* what);

// Owning device allocation, grown on demand.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }

  // Makes room for `bytes` (keeping no contents when it grows).
  absl::Status Reserve(size_t bytes);
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  bool empty() const { return ptr_ == nullptr; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A pass's batch metadata on the host, in pinned memory: the upload is one
// DMA the stream orders instead of the driver's staging copy of pageable
// memory (at a 16k-token prompt and 64 branches the block tables alone are
// 256 KiB a step). Every pass synchronises its stream before it returns, so
// the next pass finds the previous upload done and may overwrite the buffer.
class PinnedMeta {
 public:
  PinnedMeta() = default;
  ~PinnedMeta();
  PinnedMeta(const PinnedMeta&) = delete;
  PinnedMeta& operator=(const PinnedMeta&) = delete;

  // Makes room for `n` entries (keeping none) and empties the buffer.
  absl::Status Reset(size_t n);
  // Appends `v` (within the room Reset made) and returns its offset.
  size_t Append(const std::vector<int32_t>& v);
  // Appends `entries` zeroed entries and returns their offset.
  size_t AppendZeros(size_t entries);
  int32_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  int32_t* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

}  // namespace arbor::runtime::cuda_internal

#endif  // ARBOR_RUNTIME_BACKEND_CUDA_DEVICE_MEMORY_H_
