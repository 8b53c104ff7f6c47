#include "runtime/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "runtime/model/model_weights.h"

#if ARBOR_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "runtime/backend/cuda/cuda_device.h"
#endif

// The backend's parts, by concern (the CUDA ones built only with CUDA):
//   cuda_backend.cc   Create, the ModelBackend methods, the no-CUDA stub
//   device_memory.*   DeviceBuffer, PinnedMeta, CUDA errors as absl::Status
//   weight_upload.*   the checkpoint's weights on the device
//   cuda_device.h     CudaBackend::Device and the pass-planning helpers
//   forward_pass.cc   Run and ForwardPass
//   cuda_graphs.cc    decode CUDA graphs (GraphDecode)

namespace arbor::runtime {

#if !ARBOR_HAVE_CUDA
// A build without CUDA: Create refuses, so no CudaBackend exists and the
// members below only satisfy the linker.

struct CudaBackend::Device {};

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const std::string&,
                                                                 const CudaBackendOptions&) {
  return absl::UnimplementedError(
      "CudaBackend: this build has no CUDA (ARBOR_CUDA=OFF or no nvcc)");
}
absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(std::unique_ptr<ModelWeights>,
                                                                 const CudaBackendOptions&) {
  return absl::UnimplementedError(
      "CudaBackend: this build has no CUDA (ARBOR_CUDA=OFF or no nvcc)");
}
CudaBackend::CudaBackend(std::unique_ptr<ModelWeights> weights, int num_kv_blocks,
                         std::unique_ptr<Device> device)
    : weights_(std::move(weights)), num_kv_blocks_(num_kv_blocks), device_(std::move(device)) {}
CudaBackend::~CudaBackend() = default;
const ModelConfig& CudaBackend::config() const { return weights_->config(); }
int CudaBackend::output_dim() const { return 0; }
absl::Status CudaBackend::ValidateBatch(const ForwardBatch&) const {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}
absl::Status CudaBackend::Run(const ForwardBatch&, absl::Span<const RowSampling>,
                              std::vector<float>*, std::vector<SampledToken>*) {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}
absl::Status CudaBackend::ForwardPass(const ForwardBatch&, absl::Span<const RowSampling>,
                                      std::vector<float>*, std::vector<SampledToken>*, PassBuffers*,
                                      PassMode, void*, const kernels::CascadePlan*) {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}
absl::Status CudaBackend::GraphDecode(const ForwardBatch&, absl::Span<const RowSampling>,
                                      std::vector<SampledToken>*) {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}
void CudaBackend::set_cuda_graphs(bool) {}
int CudaBackend::num_cuda_graphs() const { return 0; }
int CudaBackend::stream_priority() const { return 0; }
DecodeStats CudaBackend::decode_stats() const { return {}; }
void CudaBackend::set_cascade_min_shared_tokens(int) {}
void CudaBackend::set_cascade_max_levels(int) {}
absl::Status CudaBackend::Forward(const ForwardBatch&, std::vector<float>*) {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}
absl::Status CudaBackend::ForwardSample(const ForwardBatch&, absl::Span<const RowSampling>,
                                        std::vector<SampledToken>*) {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}
absl::Status CudaBackend::CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>>) {
  return absl::UnimplementedError("CudaBackend: no CUDA");
}

#else  // ARBOR_HAVE_CUDA

using cuda_internal::CublasError;
using cuda_internal::CudaError;
using cuda_internal::DeviceBuffer;
using cuda_internal::kCublasWorkspaceBytes;
using cuda_internal::KernelError;
using cuda_internal::kLogitRowsPerGemm;
using kernels::Bf16;

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const std::string& model_dir, const CudaBackendOptions& options) {
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = ModelWeights::Load(model_dir);
  if (!weights.ok()) return weights.status();
  return Create(*std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    std::unique_ptr<ModelWeights> weights, const CudaBackendOptions& options) {
  if (weights == nullptr) return absl::InvalidArgumentError("CudaBackend: weights are null");
  if (options.num_kv_blocks < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaBackendOptions.num_kv_blocks must be >= 0, got ", options.num_kv_blocks));
  }
  if (!(options.kv_memory_fraction > 0.0 && options.kv_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaBackendOptions.kv_memory_fraction must be in (0, 1], got ",
                     options.kv_memory_fraction));
  }
  if (!(options.kv_memory_share >= 0.0 && options.kv_memory_share < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CudaBackendOptions.kv_memory_share must be in [0, 1), got ", options.kv_memory_share));
  }
  if (options.cascade_min_shared_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaBackendOptions.cascade_min_shared_tokens must be >= 0, got ",
                     options.cascade_min_shared_tokens));
  }
  if (options.cascade_max_levels < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CudaBackendOptions.cascade_max_levels must be >= 1, got ", options.cascade_max_levels));
  }
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CudaBackendOptions.max_batch_tokens must be >= 1, got ", options.max_batch_tokens));
  }
  const ModelConfig& c = weights->config();
  if (c.head_dim != 16 && c.head_dim != 32 && c.head_dim != 64 && c.head_dim != 128) {
    return absl::UnimplementedError(
        absl::StrCat("CudaBackend: head_dim ", c.head_dim, " is not supported (16, 32, 64, 128)"));
  }
  if (c.num_heads % c.num_kv_heads != 0 || c.num_heads / c.num_kv_heads > 8) {
    return absl::UnimplementedError(absl::StrCat("CudaBackend: ", c.num_heads, " heads over ",
                                                 c.num_kv_heads,
                                                 " KV heads (GQA ratio up to 8 is supported)"));
  }
  if (c.hidden_size % 8 != 0 || c.intermediate_size % 8 != 0) {
    return absl::UnimplementedError(
        "CudaBackend: hidden and intermediate sizes must be multiples of 8");
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError("CudaBackend: no CUDA device");
  }
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(absl::StrCat("CudaBackendOptions.device ", options.device,
                                                   " is not one of the ", count, " devices"));
  }
  auto dev = std::make_unique<Device>();
  dev->device = options.device;
  dev->max_batch_tokens = options.max_batch_tokens;
  dev->cascade_min_shared_tokens = options.cascade_min_shared_tokens;
  dev->cascade_max_levels = options.cascade_max_levels;
  ARBOR_RETURN_IF_ERROR(CudaError(cudaSetDevice(options.device), "cudaSetDevice"));
  int least_priority = 0, greatest_priority = 0;
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaDeviceGetStreamPriorityRange(&least_priority, &greatest_priority),
                "cudaDeviceGetStreamPriorityRange"));
  const int priority = std::clamp(options.stream_priority, greatest_priority, least_priority);
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaStreamCreateWithPriority(&dev->stream, cudaStreamNonBlocking, priority),
                "cudaStreamCreateWithPriority"));
  ARBOR_RETURN_IF_ERROR(CublasError(cublasCreate(&dev->cublas), "cublasCreate"));
  ARBOR_RETURN_IF_ERROR(CublasError(cublasSetStream(dev->cublas, dev->stream), "cublasSetStream"));
  ARBOR_RETURN_IF_ERROR(dev->cublas_workspace.Reserve(kCublasWorkspaceBytes));
  ARBOR_RETURN_IF_ERROR(CublasError(
      cublasSetWorkspace(dev->cublas, dev->cublas_workspace.get(), kCublasWorkspaceBytes),
      "cublasSetWorkspace"));
  dev->cuda_graphs = options.cuda_graphs;

  ARBOR_RETURN_IF_ERROR(
      cuda_internal::UploadWeights(*weights, options.bf16_rope_frequencies, &dev->weights));

  // Scratch for max_batch_tokens tokens.
  const size_t t = options.max_batch_tokens;
  const size_t hidden = c.hidden_size, inter = c.intermediate_size;
  const size_t q_dim = static_cast<size_t>(c.num_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.num_kv_heads) * c.head_dim;
  using Scratch = std::pair<DeviceBuffer*, size_t>;
  for (const Scratch& sc :
       std::initializer_list<Scratch>{{&dev->residual, t * hidden},
                                      {&dev->residual_alt, t * hidden},
                                      {&dev->normed, t * hidden},
                                      {&dev->qkv_rows, t * (q_dim + 2 * kv_dim)},
                                      {&dev->q, t * q_dim},
                                      {&dev->attn, t * q_dim},
                                      {&dev->proj, t * hidden},
                                      {&dev->gate_up, t * 2 * inter},
                                      {&dev->act, t * inter},
                                      {&dev->out_rows, t * hidden}}) {
    ARBOR_RETURN_IF_ERROR(sc.first->Reserve(sc.second * sizeof(Bf16)));
  }
  if (!c.is_value_head()) {
    ARBOR_RETURN_IF_ERROR(
        dev->logits.Reserve(static_cast<size_t>(kLogitRowsPerGemm) * c.vocab_size * sizeof(float)));
  }

  // KV pool: an exact block count, or a fraction of what is left.
  dev->kv_dtype = options.fp8_kv_cache ? kernels::KvDtype::kFp8E4m3 : kernels::KvDtype::kBf16;
  const size_t kv_elem_bytes = kernels::KvDtypeBytes(dev->kv_dtype);
  dev->block_elems = static_cast<size_t>(kKvBlockSize) * kv_dim;
  const size_t block_bytes_all_layers = 2 * dev->block_elems * kv_elem_bytes * c.num_layers;
  int num_blocks = options.num_kv_blocks;
  if (num_blocks == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    ARBOR_RETURN_IF_ERROR(CudaError(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
    const double budget = options.kv_memory_share > 0
                              ? options.kv_memory_share * static_cast<double>(total_bytes)
                              : options.kv_memory_fraction * static_cast<double>(free_bytes);
    if (budget > static_cast<double>(free_bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "CudaBackend: a KV pool of ", options.kv_memory_share, " of the GPU's ",
          total_bytes >> 20, " MiB is ", static_cast<size_t>(budget) >> 20, " MiB, but only ",
          free_bytes >> 20, " MiB are free after the weights (other processes on the GPU?)"));
    }
    num_blocks = static_cast<int>(std::min<double>(budget / block_bytes_all_layers, 1 << 30));
    if (num_blocks < 1) {
      return absl::ResourceExhaustedError(
          absl::StrCat("CudaBackend: ", free_bytes >> 20,
                       " MiB free after the weights: no room for one KV "
                       "block (",
                       block_bytes_all_layers >> 10, " KiB over all layers)"));
    }
  }
  dev->pool_elems = static_cast<size_t>(num_blocks) * dev->block_elems;
  const size_t pool_bytes = 2 * dev->pool_elems * c.num_layers * kv_elem_bytes;
  ARBOR_RETURN_IF_ERROR(dev->kv_pool.Reserve(pool_bytes));
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMemset(dev->kv_pool.get(), 0, pool_bytes), "cudaMemset KV pool"));
  // The uploads and the memset ran on the legacy stream, which the backend's
  // non-blocking stream does not wait for.
  ARBOR_RETURN_IF_ERROR(CudaError(cudaDeviceSynchronize(), "loading the model"));
  ARBOR_LOG(INFO) << "CudaBackend: " << c.architecture << ", " << c.num_layers << " layers on GPU "
                  << options.device << ", " << num_blocks << " KV blocks ("
                  << (static_cast<size_t>(num_blocks) * block_bytes_all_layers >> 20) << " MiB, "
                  << (options.fp8_kv_cache ? "fp8 e4m3" : "bf16") << ")";
  return std::unique_ptr<CudaBackend>(
      new CudaBackend(std::move(weights), num_blocks, std::move(dev)));
}

CudaBackend::CudaBackend(std::unique_ptr<ModelWeights> weights, int num_kv_blocks,
                         std::unique_ptr<Device> device)
    : weights_(std::move(weights)), num_kv_blocks_(num_kv_blocks), device_(std::move(device)) {}

CudaBackend::~CudaBackend() {
  if (device_ != nullptr) cudaSetDevice(device_->device);
}

const ModelConfig& CudaBackend::config() const { return weights_->config(); }

int CudaBackend::output_dim() const {
  const ModelConfig& c = weights_->config();
  return c.is_value_head() ? c.num_labels : c.vocab_size;
}

absl::Status CudaBackend::ValidateBatch(const ForwardBatch& b) const {
  ARBOR_RETURN_IF_ERROR(ValidateForwardBatch(b, config(), num_kv_blocks_));
  // A sequence's new tokens run in one device pass, sized by max_batch_tokens.
  const int max_tokens = device_->max_batch_tokens;
  for (int s = 0; s < b.num_seqs(); ++s) {
    const int n = b.seq_starts[s + 1] - b.seq_starts[s];
    if (n > max_tokens) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ForwardBatch: sequence ", s, " has ", n,
          " new tokens, more than CudaBackendOptions.max_batch_tokens (", max_tokens, ")"));
    }
  }
  if (b.output_rows.size() > static_cast<size_t>(max_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ForwardBatch: ", b.output_rows.size(),
        " output rows, more than CudaBackendOptions.max_batch_tokens (", max_tokens, ")"));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(const ForwardBatch& batch, std::vector<float>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("Forward: out is null");
  return Run(batch, {}, out, nullptr);
}

absl::Status CudaBackend::ForwardSample(const ForwardBatch& batch,
                                        absl::Span<const RowSampling> sampling,
                                        std::vector<SampledToken>* out) {
  if (out == nullptr) return absl::InvalidArgumentError("ForwardSample: out is null");
  ARBOR_RETURN_IF_ERROR(
      ValidateRowSampling(config(), static_cast<int>(batch.output_rows.size()), sampling));
  return Run(batch, sampling, nullptr, out);
}

void CudaBackend::set_cascade_min_shared_tokens(int tokens) {
  device_->cascade_min_shared_tokens = std::max(tokens, 0);
}

void CudaBackend::set_cascade_max_levels(int levels) {
  device_->cascade_max_levels = std::max(levels, 1);
}

int CudaBackend::stream_priority() const {
  int priority = 0;
  return cudaStreamGetPriority(device_->stream, &priority) == cudaSuccess ? priority : 0;
}

absl::Status CudaBackend::CopyBlocks(absl::Span<const std::pair<int32_t, int32_t>> src_dst) {
  std::vector<int32_t> pairs;
  std::vector<bool> is_src(num_kv_blocks_, false);
  bool chained = false;
  for (const auto& [src, dst] : src_dst) {
    if (src < 0 || src >= num_kv_blocks_ || dst < 0 || dst >= num_kv_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CopyBlocks: pair (", src, ", ", dst, ") outside the pool [0, ", num_kv_blocks_, ")"));
    }
    if (src == dst) continue;
    pairs.push_back(src);
    pairs.push_back(dst);
    is_src[src] = true;
  }
  if (pairs.empty()) return absl::OkStatus();
  for (size_t i = 1; i < pairs.size(); i += 2) chained = chained || is_src[pairs[i]];
  Device& d = *device_;
  ARBOR_RETURN_IF_ERROR(CudaError(cudaSetDevice(d.device), "cudaSetDevice"));
  ARBOR_RETURN_IF_ERROR(d.pairs.Reserve(pairs.size() * sizeof(int32_t)));
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMemcpyAsync(d.pairs.get(), pairs.data(), pairs.size() * sizeof(int32_t),
                                cudaMemcpyHostToDevice, d.stream),
                "upload block pairs"));
  const int num_pairs = static_cast<int>(pairs.size() / 2);
  for (int l = 0; l < config().num_layers; ++l) {
    // A block that is both copied from and into must see the copies in
    // order: one launch per pair then (the stream orders them).
    const int per_launch = chained ? 1 : std::min(num_pairs, 65535);
    for (int p = 0; p < num_pairs; p += per_launch) {
      ARBOR_RETURN_IF_ERROR(KernelError(
          d.WithKvPools(l,
                        [&](auto* k, auto* v) {
                          return kernels::CopyKvBlocks(k, v, d.pairs.get<int32_t>() + 2 * p,
                                                       std::min(per_launch, num_pairs - p),
                                                       static_cast<int>(d.block_elems), d.stream);
                        }),
          "CopyKvBlocks"));
    }
  }
  return CudaError(cudaStreamSynchronize(d.stream), "CopyBlocks");
}

#endif  // ARBOR_HAVE_CUDA

}  // namespace arbor::runtime
