#include "runtime/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <compare>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "runtime/backend/cpu/cpu_ops.h"
#include "runtime/model/model_weights.h"

#if ARBOR_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "kernels/cascade_plan.h"
#include "kernels/kernels.h"
#include "kernels/reference.h"
#endif

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
void CudaBackend::set_cascade_min_shared_tokens(int) {}
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

namespace {

using kernels::Bf16;

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

// Owning device allocation, grown on demand.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) {
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }

  absl::Status Reserve(size_t bytes) {
    if (bytes <= bytes_) return absl::OkStatus();
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    ARBOR_RETURN_IF_ERROR(CudaError(cudaMalloc(&ptr_, bytes), "cudaMalloc"));
    bytes_ = bytes;
    return absl::OkStatus();
  }
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
  ~PinnedMeta() {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  PinnedMeta(const PinnedMeta&) = delete;
  PinnedMeta& operator=(const PinnedMeta&) = delete;

  // Makes room for `n` entries (keeping none) and empties the buffer.
  absl::Status Reset(size_t n) {
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
  // Appends `v` (within the room Reset made) and returns its offset.
  size_t Append(const std::vector<int32_t>& v) {
    ARBOR_CHECK(size_ + v.size() <= capacity_);
    std::copy(v.begin(), v.end(), data_ + size_);
    size_ += v.size();
    return size_ - v.size();
  }
  // Appends `entries` zeroed entries and returns their offset.
  size_t AppendZeros(size_t entries) {
    ARBOR_CHECK(size_ + entries <= capacity_);
    std::fill_n(data_ + size_, entries, 0);
    size_ += entries;
    return size_ - entries;
  }
  int32_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  int32_t* data_ = nullptr;
  size_t size_ = 0, capacity_ = 0;
};

// fp32 host tensor -> bf16 device buffer.
absl::Status UploadBf16(const std::vector<float>& host, DeviceBuffer* dst) {
  if (host.empty()) return absl::OkStatus();
  std::vector<Bf16> bits(host.size());
  for (size_t i = 0; i < host.size(); ++i) bits[i] = kernels::reference::FloatToBf16(host[i]);
  ARBOR_RETURN_IF_ERROR(dst->Reserve(bits.size() * sizeof(Bf16)));
  return CudaError(
      cudaMemcpy(dst->get(), bits.data(), bits.size() * sizeof(Bf16), cudaMemcpyHostToDevice),
      "upload weights");
}

constexpr int kLogitRowsPerGemm = 256;  // bounds the fp32 logits scratch
// Decode steps plan their attention splits for the context rounded up to
// this (the kernels take it as a bound), so that one CUDA graph serves every
// step of a bucket and the eager path draws exactly what a replay draws.
constexpr int kDecodeContextBucket = 256;
constexpr int kDecodeBlockBucket = kDecodeContextBucket / kKvBlockSize;
// cuBLAS workspace set explicitly, so that it never allocates inside a capture.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

int RoundUp(int x, int to) { return (x + to - 1) / to * to; }

// A decode step: one new token per sequence (every sequence has at least one).
bool IsDecodeStep(const ForwardBatch& b) { return b.num_tokens() == b.num_seqs(); }

// The groups of a decode step whose consecutive sequences share enough of a
// prompt for cascade attention; empty (not worthwhile) for other batches.
kernels::CascadePlan DecodeCascadePlan(const ForwardBatch& b, int min_shared_tokens) {
  if (!IsDecodeStep(b) || min_shared_tokens <= 0 || b.num_seqs() < 2) return {};
  return kernels::CascadePlan::Plan(b.block_tables, b.context_lens, b.max_blocks_per_seq,
                                    min_shared_tokens);
}

// A decode step a CUDA graph can replay: every row wanted, in order.
bool IsGraphableDecode(const ForwardBatch& b) {
  const int n = b.num_tokens();
  if (!IsDecodeStep(b) || b.output_rows.size() != static_cast<size_t>(n)) return false;
  for (int s = 0; s < n; ++s) {
    if (b.output_rows[s] != s) return false;
  }
  return true;
}

}  // namespace

struct CudaBackend::PassBuffers {
  DeviceBuffer meta, decode_workspace, sampled;
};

namespace {

// What a captured decode step bakes in besides its buffers' addresses: the
// batch shape and padded table width, and for a cascade step the plan's grid
// and split lengths (the prefix, the group-attention kernel chosen, the
// suffix bound rounded up to kDecodeContextBucket). The plan's groups,
// prefix lengths and every table ride in the uploaded metadata.
struct GraphKey {
  int num_seqs = 0, max_blocks = 0;
  int num_groups = 0, max_group_size = 0, max_prefix = 0, suffix_bound = 0;  // 0: no cascade
  kernels::GroupAttentionKernel group_kernel = kernels::GroupAttentionKernel::kMmaSync;
  auto operator<=>(const GraphKey&) const = default;
};

// Cascade steps bound their suffixes by the longest one rounded up to this,
// so that one graph serves every step of a bucket (see kDecodeContextBucket).
int SuffixBound(const kernels::CascadePlan& plan) {
  return RoundUp(std::max(plan.max_suffix, 1), kDecodeContextBucket);
}

}  // namespace

struct CudaBackend::DecodeGraph {
  PassBuffers buffers;  // its own: a graph holds their addresses
  cudaGraphExec_t exec = nullptr;
  int runs = 0;           // eager runs of this shape before capture
  uint64_t last_use = 0;  // for eviction
  ~DecodeGraph() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  }
};

struct CudaBackend::Device {
  struct Layer {
    DeviceBuffer input_norm, qkv, qkv_bias, o_proj, o_bias, post_norm, gate_up, gate_up_bias, down,
        down_bias;
  };
  int device = 0;
  int max_batch_tokens = 0;
  int cascade_min_shared_tokens = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  DeviceBuffer embed, lm_head, final_norm, rope_inv_freq;
  std::vector<Layer> layers;
  DeviceBuffer kv_pool;    // [num_layers][K, V][num_blocks * block_elems]
  size_t block_elems = 0;  // kKvBlockSize * num_kv_heads * head_dim
  size_t pool_elems = 0;   // num_blocks * block_elems
  // Scratch for max_batch_tokens tokens.
  // residual and residual_alt: the residual stream; a decode step's fused
  // GEMV prologues move it from one to the other (see ForwardPass).
  // qkv_rows: the stacked Q/K/V projection of passes too large to fuse it.
  DeviceBuffer residual, residual_alt, normed, qkv_rows, q, attn, proj, gate_up, act, out_rows,
      logits;
  PassBuffers shared;  // meta, decode workspace, draws of eager passes
  DeviceBuffer pairs, cublas_workspace;
  PinnedMeta host_meta;
  std::vector<int32_t> host_sampled;
  std::vector<Bf16> host_rows;
  bool cuda_graphs = true;
  std::map<GraphKey, std::unique_ptr<DecodeGraph>> graphs;
  uint64_t graph_clock = 0;

  ~Device() {
    graphs.clear();
    if (cublas != nullptr) cublasDestroy(cublas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
  Bf16* k_pool(int layer) const { return kv_pool.get<Bf16>() + 2 * layer * pool_elems; }
  Bf16* v_pool(int layer) const { return kv_pool.get<Bf16>() + (2 * layer + 1) * pool_elems; }

  // Decode-sized GEMMs stream W instead of tiling it (measured on an H200:
  // faster than cuBLAS at one row, and at up to four rows for layers up to
  // 8192 wide).
  static bool StreamsWeights(int m, int n) {
    return m == 1 || (m <= kernels::kSmallBatchGemmMaxRows && n <= 8192);
  }

  // y[m, n] = x[m, k] W[n, k]^T in the Hugging Face Linear layout; bf16 in,
  // bf16 or fp32 out, fp32 accumulation.
  absl::Status Gemm(const Bf16* x, const Bf16* w, void* y, int m, int n, int k, bool fp32_out) {
    if (StreamsWeights(m, n)) {
      return KernelError(kernels::SmallBatchGemm(x, w, y, m, n, k, fp32_out, stream),
                         "SmallBatchGemm");
    }
    const float alpha = 1.0f, beta = 0.0f;
    return CublasError(
        cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w, CUDA_R_16BF, k, x,
                     CUDA_R_16BF, k, &beta, y, fp32_out ? CUDA_R_32F : CUDA_R_16BF, n,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "GemmEx");
  }
};

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
  if (options.cascade_min_shared_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CudaBackendOptions.cascade_min_shared_tokens must be >= 0, got ",
                     options.cascade_min_shared_tokens));
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
  ARBOR_RETURN_IF_ERROR(CudaError(cudaSetDevice(options.device), "cudaSetDevice"));
  ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamCreateWithFlags(&dev->stream, cudaStreamNonBlocking),
                                  "cudaStreamCreate"));
  ARBOR_RETURN_IF_ERROR(CublasError(cublasCreate(&dev->cublas), "cublasCreate"));
  ARBOR_RETURN_IF_ERROR(CublasError(cublasSetStream(dev->cublas, dev->stream), "cublasSetStream"));
  ARBOR_RETURN_IF_ERROR(dev->cublas_workspace.Reserve(kCublasWorkspaceBytes));
  ARBOR_RETURN_IF_ERROR(CublasError(
      cublasSetWorkspace(dev->cublas, dev->cublas_workspace.get(), kCublasWorkspaceBytes),
      "cublasSetWorkspace"));
  dev->cuda_graphs = options.cuda_graphs;

  // Weights.
  ARBOR_RETURN_IF_ERROR(UploadBf16(weights->embed_tokens(), &dev->embed));
  ARBOR_RETURN_IF_ERROR(UploadBf16(weights->final_norm(), &dev->final_norm));
  if (!c.is_value_head() && !c.tie_word_embeddings) {
    const float* head = weights->lm_head();
    ARBOR_RETURN_IF_ERROR(UploadBf16(
        std::vector<float>(head, head + static_cast<size_t>(c.vocab_size) * c.hidden_size),
        &dev->lm_head));
  }
  dev->layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights->layers()[l];
    Device::Layer& d = dev->layers[l];
    using Upload = std::pair<const std::vector<float>*, DeviceBuffer*>;
    for (const Upload& u : std::initializer_list<Upload>{{&w.input_norm, &d.input_norm},
                                                         {&w.qkv, &d.qkv},
                                                         {&w.qkv_bias, &d.qkv_bias},
                                                         {&w.o_proj, &d.o_proj},
                                                         {&w.o_bias, &d.o_bias},
                                                         {&w.post_attention_norm, &d.post_norm},
                                                         {&w.gate_up, &d.gate_up},
                                                         {&w.gate_up_bias, &d.gate_up_bias},
                                                         {&w.down_proj, &d.down},
                                                         {&w.down_bias, &d.down_bias}}) {
      ARBOR_RETURN_IF_ERROR(UploadBf16(*u.first, u.second));
    }
  }
  std::vector<float> inv_freq = RopeInvFreq(c.head_dim, c.rope_theta, c.rope_scaling);
  if (options.bf16_rope_frequencies) {
    for (float& f : inv_freq) f = kernels::reference::RoundBf16(f);
  }
  ARBOR_RETURN_IF_ERROR(dev->rope_inv_freq.Reserve(inv_freq.size() * sizeof(float)));
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMemcpy(dev->rope_inv_freq.get(), inv_freq.data(),
                           inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice),
                "upload RoPE frequencies"));

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
  dev->block_elems = static_cast<size_t>(kKvBlockSize) * kv_dim;
  const size_t block_bytes_all_layers = 2 * dev->block_elems * sizeof(Bf16) * c.num_layers;
  int num_blocks = options.num_kv_blocks;
  if (num_blocks == 0) {
    size_t free_bytes = 0, total_bytes = 0;
    ARBOR_RETURN_IF_ERROR(CudaError(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
    const double budget = options.kv_memory_fraction * static_cast<double>(free_bytes);
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
  ARBOR_RETURN_IF_ERROR(dev->kv_pool.Reserve(2 * dev->pool_elems * c.num_layers * sizeof(Bf16)));
  ARBOR_RETURN_IF_ERROR(CudaError(
      cudaMemset(dev->kv_pool.get(), 0, 2 * dev->pool_elems * c.num_layers * sizeof(Bf16)),
      "cudaMemset KV pool"));
  // The uploads and the memset ran on the legacy stream, which the backend's
  // non-blocking stream does not wait for.
  ARBOR_RETURN_IF_ERROR(CudaError(cudaDeviceSynchronize(), "loading the model"));
  ARBOR_LOG(INFO) << "CudaBackend: " << c.architecture << ", " << c.num_layers << " layers on GPU "
                  << options.device << ", " << num_blocks << " KV blocks ("
                  << (static_cast<size_t>(num_blocks) * block_bytes_all_layers >> 20) << " MiB)";
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
  const int num_seqs = b.num_seqs();
  const int num_tokens = b.num_tokens();
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("ForwardBatch: ", parts...));
  };
  if (num_tokens == 0 || num_seqs == 0) return error("no tokens or no sequences");
  if (b.positions.size() != b.tokens.size()) {
    return error("positions has ", b.positions.size(), " entries for ", num_tokens, " tokens");
  }
  if (b.seq_starts.size() != static_cast<size_t>(num_seqs) + 1 || b.seq_starts[0] != 0 ||
      b.seq_starts[num_seqs] != num_tokens) {
    return error("seq_starts must have num_seqs + 1 = ", num_seqs + 1,
                 " entries from 0 to num_tokens = ", num_tokens);
  }
  if (b.max_blocks_per_seq < 1 ||
      b.block_tables.size() != static_cast<size_t>(num_seqs) * b.max_blocks_per_seq) {
    return error("block_tables has ", b.block_tables.size(), " entries, expected num_seqs (",
                 num_seqs, ") * max_blocks_per_seq (", b.max_blocks_per_seq, ")");
  }
  const int vocab = config().vocab_size;
  const int32_t num_blocks = num_kv_blocks_;
  for (int t = 0; t < num_tokens; ++t) {
    if (b.tokens[t] < 0 || b.tokens[t] >= vocab) {
      return error("token ", t, " is id ", b.tokens[t], ", outside the vocabulary [0, ", vocab,
                   ")");
    }
  }
  for (int s = 0; s < num_seqs; ++s) {
    const int begin = b.seq_starts[s], end = b.seq_starts[s + 1];
    if (end <= begin) return error("sequence ", s, " has no new tokens");
    if (end - begin > device_->max_batch_tokens) {
      return error("sequence ", s, " has ", end - begin,
                   " new tokens, more than CudaBackendOptions.max_batch_tokens (",
                   device_->max_batch_tokens, ")");
    }
    const int ctx = b.context_lens[s];
    if (ctx < end - begin) {
      return error("sequence ", s, " has context_len ", ctx, " < its ", end - begin, " new tokens");
    }
    if (ctx > b.max_blocks_per_seq * kKvBlockSize) {
      return error("sequence ", s, " has context_len ", ctx, " beyond its ", b.max_blocks_per_seq,
                   " blocks");
    }
    const int first = ctx - (end - begin);
    for (int t = begin; t < end; ++t) {
      if (b.positions[t] != first + (t - begin)) {
        return error("sequence ", s, " token ", t, " has position ", b.positions[t], ", expected ",
                     first + (t - begin), " (new tokens follow the cached context)");
      }
    }
    // The tables are most of a long-context batch: a pass over each row with
    // four independent flags (one unsigned compare catches both ends), the
    // culprit searched for only on error.
    const int blocks_needed = (ctx + kKvBlockSize - 1) / kKvBlockSize;
    const int32_t* row = b.block_tables.data() + static_cast<size_t>(s) * b.max_blocks_per_seq;
    const uint32_t limit = static_cast<uint32_t>(num_blocks);
    auto outside = [limit](int32_t block) { return static_cast<uint32_t>(block) >= limit; };
    bool bad[4] = {false, false, false, false};
    int i = 0;
    for (; i + 4 <= blocks_needed; i += 4) {
      for (int k = 0; k < 4; ++k) bad[k] |= outside(row[i + k]);
    }
    for (; i < blocks_needed; ++i) bad[0] |= outside(row[i]);
    if (bad[0] || bad[1] || bad[2] || bad[3]) {
      const int at = static_cast<int>(std::find_if(row, row + blocks_needed, outside) - row);
      return error("sequence ", s, " block ", at, " is id ", row[at], ", outside the pool [0, ",
                   num_blocks, ")");
    }
  }
  if (b.output_rows.size() > static_cast<size_t>(device_->max_batch_tokens)) {
    return error(b.output_rows.size(),
                 " output rows, more than CudaBackendOptions.max_batch_tokens (",
                 device_->max_batch_tokens, ")");
  }
  for (size_t i = 0; i < b.output_rows.size(); ++i) {
    if (b.output_rows[i] < 0 || b.output_rows[i] >= num_tokens) {
      return error("output_rows[", i, "] = ", b.output_rows[i], " is outside [0, ", num_tokens,
                   ")");
    }
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

absl::Status CudaBackend::Run(const ForwardBatch& batch, absl::Span<const RowSampling> sampling,
                              std::vector<float>* logits, std::vector<SampledToken>* sampled) {
  if (batch.context_lens.size() + 1 != batch.seq_starts.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardBatch: seq_starts has ", batch.seq_starts.size(), " entries for ",
                     batch.context_lens.size(), " sequences (context_lens)"));
  }
  ARBOR_RETURN_IF_ERROR(ValidateBatch(batch));
  ARBOR_RETURN_IF_ERROR(CudaError(cudaSetDevice(device_->device), "cudaSetDevice"));
  if (batch.num_tokens() <= device_->max_batch_tokens) {
    if (sampled != nullptr && device_->cuda_graphs && IsGraphableDecode(batch)) {
      return GraphDecode(batch, sampling, sampled);
    }
    const kernels::CascadePlan cascade =
        DecodeCascadePlan(batch, device_->cascade_min_shared_tokens);
    return ForwardPass(batch, sampling, logits, sampled, nullptr, PassMode::kEager, nullptr,
                       &cascade);
  }

  // Several passes, each over whole sequences.
  const int dim = output_dim();
  if (logits != nullptr) logits->assign(batch.output_rows.size() * dim, 0.0f);
  if (sampled != nullptr) sampled->assign(batch.output_rows.size(), SampledToken());
  int s0 = 0;
  while (s0 < batch.num_seqs()) {
    int s1 = s0 + 1;
    while (s1 < batch.num_seqs() &&
           batch.seq_starts[s1 + 1] - batch.seq_starts[s0] <= device_->max_batch_tokens) {
      ++s1;
    }
    const int t0 = batch.seq_starts[s0], t1 = batch.seq_starts[s1];
    ForwardBatch part;
    part.tokens.assign(batch.tokens.begin() + t0, batch.tokens.begin() + t1);
    part.positions.assign(batch.positions.begin() + t0, batch.positions.begin() + t1);
    for (int s = s0; s <= s1; ++s) part.seq_starts.push_back(batch.seq_starts[s] - t0);
    part.context_lens.assign(batch.context_lens.begin() + s0, batch.context_lens.begin() + s1);
    part.max_blocks_per_seq = batch.max_blocks_per_seq;
    part.block_tables.assign(
        batch.block_tables.begin() + static_cast<size_t>(s0) * batch.max_blocks_per_seq,
        batch.block_tables.begin() + static_cast<size_t>(s1) * batch.max_blocks_per_seq);
    std::vector<size_t> where;  // output index of each of part's output rows
    std::vector<RowSampling> part_sampling;
    for (size_t i = 0; i < batch.output_rows.size(); ++i) {
      if (batch.output_rows[i] >= t0 && batch.output_rows[i] < t1) {
        part.output_rows.push_back(batch.output_rows[i] - t0);
        where.push_back(i);
        if (sampled != nullptr) part_sampling.push_back(sampling[i]);
      }
    }
    std::vector<float> part_logits;
    std::vector<SampledToken> part_sampled;
    ARBOR_RETURN_IF_ERROR(ForwardPass(part, part_sampling,
                                      logits != nullptr ? &part_logits : nullptr,
                                      sampled != nullptr ? &part_sampled : nullptr));
    for (size_t r = 0; r < where.size(); ++r) {
      if (logits != nullptr) {
        std::copy_n(part_logits.begin() + r * dim, dim, logits->begin() + where[r] * dim);
      } else {
        (*sampled)[where[r]] = part_sampled[r];
      }
    }
    s0 = s1;
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::ForwardPass(const ForwardBatch& batch,
                                      absl::Span<const RowSampling> sampling,
                                      std::vector<float>* logits,
                                      std::vector<SampledToken>* sampled, PassBuffers* buffers,
                                      PassMode mode, void* graph_exec,
                                      const kernels::CascadePlan* cascade_plan) {
  const ModelConfig& c = weights_->config();
  Device& d = *device_;
  PassBuffers& bufs = buffers != nullptr ? *buffers : d.shared;
  // Captured passes and replays sample: their only output is the draws.
  ARBOR_CHECK(mode == PassMode::kEager || sampled != nullptr);
  // The draws ([rows] tokens, then [rows] logprobs in bufs.sampled) into
  // `sampled`, once the stream is done.
  auto download_draws = [&](int rows) -> absl::Status {
    sampled->resize(rows);
    d.host_sampled.resize(2 * static_cast<size_t>(rows));
    ARBOR_RETURN_IF_ERROR(CudaError(
        cudaMemcpyAsync(d.host_sampled.data(), bufs.sampled.get(),
                        d.host_sampled.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, d.stream),
        "download sampled tokens"));
    ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(d.stream), "forward"));
    for (int r = 0; r < rows; ++r) {
      (*sampled)[r].token = d.host_sampled[r];
      std::memcpy(&(*sampled)[r].logprob, &d.host_sampled[rows + r], sizeof(float));
    }
    return absl::OkStatus();
  };
  cudaStream_t stream = d.stream;
  const int n = batch.num_tokens(), num_seqs = batch.num_seqs();
  const int num_out = static_cast<int>(batch.output_rows.size());
  const int hidden = c.hidden_size, inter = c.intermediate_size;
  const int q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const int mb = batch.max_blocks_per_seq;
  kernels::AttentionShape shape;
  shape.num_heads = c.num_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  shape.max_blocks = mb;

  int max_new = 0, max_ctx = 0;
  for (int s = 0; s < num_seqs; ++s) {
    max_new = std::max(max_new, batch.seq_starts[s + 1] - batch.seq_starts[s]);
    max_ctx = std::max(max_ctx, batch.context_lens[s]);
  }
  // A decode step of branches that share a prompt: cascade attention.
  kernels::CascadePlan own_plan;
  if (cascade_plan == nullptr) {
    own_plan = DecodeCascadePlan(batch, d.cascade_min_shared_tokens);
    cascade_plan = &own_plan;
  }
  const kernels::CascadePlan& cascade = *cascade_plan;

  // Batch metadata in one upload: tokens, positions, seq_starts,
  // context_lens, block_tables, output_rows (+ the cascade's groups).
  // Sampling parameters ride in the same upload, 8-byte aligned (the buffer
  // itself is 256-byte aligned).
  static_assert(sizeof(kernels::SampleParams) % sizeof(uint64_t) == 0);
  constexpr size_t kParamEntries = sizeof(kernels::SampleParams) / sizeof(int32_t);
  const size_t num_params = sampled != nullptr ? sampling.size() : 0;
  const std::vector<int32_t>* const parts[] = {
      &batch.tokens,         &batch.positions,     &batch.seq_starts,     &batch.context_lens,
      &batch.block_tables,   &batch.output_rows,   &cascade.group_starts, &cascade.group_tables,
      &cascade.group_kv_len, &cascade.suffix_begin};
  size_t entries = 1 + num_params * kParamEntries;  // + the alignment entry
  for (const std::vector<int32_t>* part : parts) entries += part->size();
  PinnedMeta& meta = d.host_meta;
  ARBOR_RETURN_IF_ERROR(meta.Reset(entries));
  size_t offsets[std::size(parts)];
  for (size_t i = 0; i < std::size(parts); ++i) offsets[i] = meta.Append(*parts[i]);
  const auto [o_tokens, o_pos, o_starts, o_ctx, o_tables, o_out, o_gstarts, o_gtables, o_glen,
              o_sbegin] = offsets;
  meta.AppendZeros(meta.size() % 2);
  const size_t o_params = meta.size();
  for (size_t i = 0; i < num_params; ++i) {
    const RowSampling& r = sampling[i];
    kernels::SampleParams p;
    p.temperature = r.params.temperature;
    p.top_p = r.params.top_p;
    p.top_k = r.params.top_k;
    p.seed = r.seed;
    p.stream = r.stream;
    p.position = r.position;
    std::memcpy(meta.data() + meta.AppendZeros(kParamEntries), &p, sizeof(p));
  }
  ARBOR_RETURN_IF_ERROR(bufs.meta.Reserve(meta.size() * sizeof(int32_t)));
  if (mode != PassMode::kCapture) {  // a graph reads what the replay uploads
    ARBOR_RETURN_IF_ERROR(
        CudaError(cudaMemcpyAsync(bufs.meta.get(), meta.data(), meta.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream),
                  "upload batch"));
  }
  const int32_t* m = bufs.meta.get<int32_t>();
  const int32_t *tokens = m + o_tokens, *positions = m + o_pos, *seq_starts = m + o_starts,
                *ctx_lens = m + o_ctx, *tables = m + o_tables, *out_rows = m + o_out;
  kernels::SplitPlan prefix_splits, suffix_splits;
  const size_t attn_rows = static_cast<size_t>(num_seqs) * c.num_heads;
  if (cascade.worthwhile) {
    prefix_splits = kernels::PlanGroupAttentionSplits(cascade.max_prefix, cascade.max_group_size,
                                                      cascade.num_groups(), shape);
    suffix_splits =
        kernels::PlanSplits(SuffixBound(cascade), num_seqs * c.num_kv_heads, kKvBlockSize);
    const size_t parts = prefix_splits.num_splits + suffix_splits.num_splits;
    ARBOR_RETURN_IF_ERROR(
        bufs.decode_workspace.Reserve(parts * attn_rows * (c.head_dim + 1) * sizeof(float)));
  } else if (max_new == 1) {
    // See kDecodeContextBucket.
    max_ctx = RoundUp(max_ctx, kDecodeContextBucket);
    ARBOR_RETURN_IF_ERROR(bufs.decode_workspace.Reserve(
        kernels::PagedDecodeWorkspaceBytes(num_seqs, shape, max_ctx)));
  }

  Bf16* normed = d.normed.get<Bf16>();
  Bf16* proj = d.proj.get<Bf16>();
  const int dim = output_dim();
  if (mode == PassMode::kReplay) {
    ARBOR_RETURN_IF_ERROR(CudaError(
        cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec), stream), "cudaGraphLaunch"));
    return download_draws(num_out);
  }
  // The residual stream is in residual[cur]. Where a GEMM streams its
  // weights (decode sizes, see Device::StreamsWeights), the residual add +
  // RMSNorm ahead of it runs in its prologue (its CTAs all read residual[cur]
  // while the first writes the sum to the other buffer); elsewhere it
  // normalises into `normed` in place.
  Bf16* residual[2] = {d.residual.get<Bf16>(), d.residual_alt.get<Bf16>()};
  int cur = 0;
  auto fuses_norm = [&](int gemm_n) {
    return Device::StreamsWeights(n, gemm_n) && kernels::SmallBatchNormFits(n, hidden);
  };
  const bool qkv_fused = fuses_norm(q_dim + 2 * kv_dim);
  const bool mlp_fused = fuses_norm(2 * inter);
  auto fused_norm = [&](const Bf16* delta, const DeviceBuffer& weight) {
    kernels::SmallBatchInput in;
    in.delta = delta;
    in.residual = residual[cur];
    in.residual_out = residual[cur ^ 1];
    in.norm_weight = weight.get<Bf16>();
    in.eps = c.rms_norm_eps;
    cur ^= 1;
    return in;
  };
  auto norm_into_normed = [&](const Bf16* delta, const DeviceBuffer& weight) {
    return KernelError(kernels::RmsNormResidual(delta, residual[cur], weight.get<Bf16>(), normed, n,
                                                hidden, c.rms_norm_eps, stream),
                       "RmsNormResidual");
  };
  // A fused first norm reads the embedding rows itself.
  if (!qkv_fused) {
    ARBOR_RETURN_IF_ERROR(
        KernelError(kernels::EmbeddingGather(tokens, d.embed.get<Bf16>(), residual[cur], n, hidden,
                                             c.vocab_size, stream),
                    "EmbeddingGather"));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const Device::Layer& w = d.layers[l];
    const Bf16* qkv = w.qkv.get<Bf16>();
    const Bf16* qkv_bias = w.qkv_bias.empty() ? nullptr : w.qkv_bias.get<Bf16>();
    Bf16* q = d.q.get<Bf16>();
    if (qkv_fused) {
      // Norm, Q/K/V projection, bias, RoPE and the K/V append: one launch.
      kernels::QkvRopeKv rope;
      rope.positions = positions;
      rope.inv_freq = d.rope_inv_freq.get<float>();
      rope.seq_starts = seq_starts;
      rope.block_tables = tables;
      rope.k_cache = d.k_pool(l);
      rope.v_cache = d.v_pool(l);
      rope.bias = qkv_bias;
      rope.num_seqs = num_seqs;
      rope.max_blocks = mb;
      rope.num_heads = c.num_heads;
      rope.num_kv_heads = c.num_kv_heads;
      rope.head_dim = c.head_dim;
      kernels::SmallBatchInput in = fused_norm(l == 0 ? nullptr : proj, w.input_norm);
      if (l == 0) {
        in.residual = d.embed.get<Bf16>();
        in.residual_rows = tokens;
        in.residual_rows_limit = c.vocab_size;
      }
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::SmallBatchQkvRope(in, qkv, q, rope, n, hidden, stream), "SmallBatchQkvRope"));
    } else {
      ARBOR_RETURN_IF_ERROR(norm_into_normed(l == 0 ? nullptr : proj, w.input_norm));
      // One GEMM over the stacked matrix; RopeKvAppend takes its rows apart.
      Bf16* qkv_rows = d.qkv_rows.get<Bf16>();
      const int qkv_n = q_dim + 2 * kv_dim;
      ARBOR_RETURN_IF_ERROR(d.Gemm(normed, qkv, qkv_rows, n, qkv_n, hidden, false));
      if (qkv_bias != nullptr) {
        ARBOR_RETURN_IF_ERROR(
            KernelError(kernels::AddBias(qkv_rows, qkv_bias, n, qkv_n, stream), "AddBias"));
      }
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::RopeKvAppend(qkv_rows, q, positions, d.rope_inv_freq.get<float>(), seq_starts,
                                tables, d.k_pool(l), d.v_pool(l), n, num_seqs, mb, c.num_heads,
                                c.num_kv_heads, c.head_dim, stream),
          "RopeKvAppend"));
    }
    Bf16* attn = d.attn.get<Bf16>();
    if (cascade.worthwhile) {
      // Shared prompts once per group (tensor cores), each branch's own
      // suffix, then the log-sum-exp merge of all parts.
      float* o_parts = bufs.decode_workspace.get<float>();
      const int parts = prefix_splits.num_splits + suffix_splits.num_splits;
      float* lse_parts = o_parts + static_cast<size_t>(parts) * attn_rows * c.head_dim;
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::GroupAttentionPartial(q, positions, m + o_gstarts, m + o_gtables, m + o_glen,
                                         d.k_pool(l), d.v_pool(l), o_parts, lse_parts, n,
                                         cascade.num_groups(), cascade.max_group_size, shape,
                                         prefix_splits.split_len, prefix_splits.num_splits, stream),
          "GroupAttentionPartial"));
      ARBOR_RETURN_IF_ERROR(
          KernelError(kernels::DecodeAttentionPartial(
                          q, d.k_pool(l), d.v_pool(l), tables, m + o_sbegin, ctx_lens,
                          o_parts + prefix_splits.num_splits * attn_rows * c.head_dim,
                          lse_parts + prefix_splits.num_splits * attn_rows, num_seqs, shape,
                          suffix_splits.split_len, suffix_splits.num_splits, stream),
                      "DecodeAttentionPartial"));
      ARBOR_RETURN_IF_ERROR(
          KernelError(kernels::MergeAttentionStates(o_parts, lse_parts, attn, nullptr, parts,
                                                    num_seqs, c.num_heads, c.head_dim, stream),
                      "MergeAttentionStates"));
    } else if (max_new == 1) {  // a decode step: one token per sequence
      ARBOR_RETURN_IF_ERROR(
          KernelError(kernels::PagedDecodeAttention(q, d.k_pool(l), d.v_pool(l), tables, ctx_lens,
                                                    attn, bufs.decode_workspace.get(), num_seqs,
                                                    max_ctx, shape, stream),
                      "PagedDecodeAttention"));
    } else {
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::PrefillAttention(q, positions, seq_starts, tables, ctx_lens, d.k_pool(l),
                                    d.v_pool(l), attn, n, num_seqs, max_new, shape, stream),
          "PrefillAttention"));
    }
    ARBOR_RETURN_IF_ERROR(d.Gemm(attn, w.o_proj.get<Bf16>(), proj, n, hidden, q_dim, false));
    if (!w.o_bias.empty()) {
      ARBOR_RETURN_IF_ERROR(
          KernelError(kernels::AddBias(proj, w.o_bias.get<Bf16>(), n, hidden, stream), "AddBias"));
    }
    Bf16* act = d.act.get<Bf16>();
    if (mlp_fused && w.gate_up_bias.empty()) {
      // Norm, gate/up projection and SwiGLU: one launch, no intermediate.
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::SmallBatchGateUpSwiGlu(fused_norm(proj, w.post_norm), w.gate_up.get<Bf16>(), act,
                                          n, inter, hidden, stream),
          "SmallBatchGateUpSwiGlu"));
    } else {
      ARBOR_RETURN_IF_ERROR(norm_into_normed(proj, w.post_norm));
      Bf16* gate_up = d.gate_up.get<Bf16>();
      ARBOR_RETURN_IF_ERROR(
          d.Gemm(normed, w.gate_up.get<Bf16>(), gate_up, n, 2 * inter, hidden, false));
      if (!w.gate_up_bias.empty()) {
        ARBOR_RETURN_IF_ERROR(
            KernelError(kernels::AddBias(gate_up, w.gate_up_bias.get<Bf16>(), n, 2 * inter, stream),
                        "AddBias"));
      }
      ARBOR_RETURN_IF_ERROR(KernelError(kernels::SwiGlu(gate_up, act, n, inter, stream), "SwiGlu"));
    }
    ARBOR_RETURN_IF_ERROR(d.Gemm(act, w.down.get<Bf16>(), proj, n, hidden, inter, false));
    if (!w.down_bias.empty()) {
      ARBOR_RETURN_IF_ERROR(KernelError(
          kernels::AddBias(proj, w.down_bias.get<Bf16>(), n, hidden, stream), "AddBias"));
    }
  }
  // A decode step that outputs every token in order (the usual one) folds
  // the final norm into the LM head's prologue: no normed rows, no gather.
  bool head_fuses_norm = fuses_norm(dim) && !c.is_value_head() && num_out == n;
  for (int r = 0; head_fuses_norm && r < num_out; ++r) {
    head_fuses_norm = batch.output_rows[r] == r;
  }
  if (!head_fuses_norm) {
    ARBOR_RETURN_IF_ERROR(
        KernelError(kernels::RmsNormResidual(proj, residual[cur], d.final_norm.get<Bf16>(), normed,
                                             n, hidden, c.rms_norm_eps, stream),
                    "RmsNormResidual"));
  }

  if (logits != nullptr) logits->resize(static_cast<size_t>(num_out) * dim);
  if (sampled != nullptr) sampled->resize(num_out);
  if (num_out == 0) {
    return CudaError(cudaStreamSynchronize(stream), "forward");
  }
  // The output rows of the final hidden states, in output order.
  Bf16* rows = d.out_rows.get<Bf16>();
  if (!head_fuses_norm) {
    ARBOR_RETURN_IF_ERROR(
        KernelError(kernels::EmbeddingGather(out_rows, normed, rows, num_out, hidden, n, stream),
                    "gather output rows"));
  }
  if (!c.is_value_head()) {
    const Bf16* head = c.tie_word_embeddings ? d.embed.get<Bf16>() : d.lm_head.get<Bf16>();
    // Sampled tokens [num_out] int32, then their logprobs [num_out] fp32.
    // Then the sampler's workspace (the largest of its chunks' needs).
    const size_t draws_bytes = RoundUp(2 * num_out * static_cast<int>(sizeof(int32_t)), 256);
    if (sampled != nullptr) {
      const size_t workspace_bytes =
          std::max(kernels::SampleWorkspaceBytes(std::min(num_out, kLogitRowsPerGemm), dim),
                   kernels::SampleWorkspaceBytes(num_out % kLogitRowsPerGemm, dim));
      ARBOR_RETURN_IF_ERROR(bufs.sampled.Reserve(draws_bytes + workspace_bytes));
    }
    int32_t* sampled_tokens = bufs.sampled.get<int32_t>();
    float* sampled_logprobs = bufs.sampled.get<float>() + num_out;
    void* sample_workspace = bufs.sampled.get<unsigned char>() + draws_bytes;
    const auto* params = reinterpret_cast<const kernels::SampleParams*>(m + o_params);
    for (int r0 = 0; r0 < num_out; r0 += kLogitRowsPerGemm) {
      const int rc = std::min(kLogitRowsPerGemm, num_out - r0);
      if (head_fuses_norm) {  // one chunk: num_out <= kSmallBatchGemmMaxRows
        ARBOR_RETURN_IF_ERROR(
            KernelError(kernels::SmallBatchGemm(fused_norm(proj, d.final_norm), head,
                                                d.logits.get(), rc, dim, hidden, true, stream),
                        "SmallBatchGemm (LM head)"));
      } else {
        ARBOR_RETURN_IF_ERROR(d.Gemm(rows + static_cast<size_t>(r0) * hidden, head, d.logits.get(),
                                     rc, dim, hidden, true));
      }
      if (sampled != nullptr) {
        // The stream orders this chunk's draws before the next chunk's GEMM
        // overwrites the logits: no synchronisation until the end.
        ARBOR_RETURN_IF_ERROR(KernelError(
            kernels::SampleTokens(d.logits.get<float>(), params + r0, sampled_tokens + r0,
                                  sampled_logprobs + r0, rc, dim, sample_workspace, stream),
            "SampleTokens"));
        continue;
      }
      ARBOR_RETURN_IF_ERROR(
          CudaError(cudaMemcpyAsync(logits->data() + static_cast<size_t>(r0) * dim, d.logits.get(),
                                    static_cast<size_t>(rc) * dim * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream),
                    "download logits"));
      // The logits buffer is reused by the next chunk.
      ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(stream), "forward"));
    }
    if (sampled == nullptr || mode == PassMode::kCapture) return absl::OkStatus();
    return download_draws(num_out);
  }
  // ValidateRowSampling turned value-head models away from ForwardSample.
  // Value heads: a few rows; the head runs on the host in fp32.
  d.host_rows.resize(static_cast<size_t>(num_out) * hidden);
  ARBOR_RETURN_IF_ERROR(
      CudaError(cudaMemcpyAsync(d.host_rows.data(), rows, d.host_rows.size() * sizeof(Bf16),
                                cudaMemcpyDeviceToHost, stream),
                "download hidden rows"));
  ARBOR_RETURN_IF_ERROR(CudaError(cudaStreamSynchronize(stream), "forward"));
  std::vector<float> x(d.host_rows.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = kernels::reference::Bf16ToFloat(d.host_rows[i]);
  const ScoreHead& head = weights_->score_head();
  if (!head.is_mlp()) {
    Linear(x.data(), num_out, hidden, head.w1.data(), head.b1.empty() ? nullptr : head.b1.data(),
           dim, logits->data());
    return absl::OkStatus();
  }
  std::vector<float> h(static_cast<size_t>(num_out) * hidden);
  Linear(x.data(), num_out, hidden, head.w1.data(), head.b1.empty() ? nullptr : head.b1.data(),
         hidden, h.data());
  for (float& value : h) value = std::max(value, 0.0f);
  Linear(h.data(), num_out, hidden, head.w2.data(), head.b2.empty() ? nullptr : head.b2.data(), dim,
         logits->data());
  return absl::OkStatus();
}

absl::Status CudaBackend::GraphDecode(const ForwardBatch& batch,
                                      absl::Span<const RowSampling> sampling,
                                      std::vector<SampledToken>* sampled) {
  Device& d = *device_;
  const int num_seqs = batch.num_seqs();
  // The graph's shape: block tables padded to the bucket.
  const int mb = RoundUp(std::max(batch.max_blocks_per_seq, 1), kDecodeBlockBucket);
  ForwardBatch padded;
  padded.tokens = batch.tokens;
  padded.positions = batch.positions;
  padded.seq_starts = batch.seq_starts;
  padded.context_lens = batch.context_lens;
  padded.output_rows = batch.output_rows;
  padded.max_blocks_per_seq = mb;
  padded.block_tables.assign(static_cast<size_t>(num_seqs) * mb, -1);
  for (int s = 0; s < num_seqs; ++s) {
    std::copy_n(batch.block_tables.begin() + static_cast<size_t>(s) * batch.max_blocks_per_seq,
                batch.max_blocks_per_seq,
                padded.block_tables.begin() + static_cast<size_t>(s) * mb);
  }

  const kernels::CascadePlan cascade = DecodeCascadePlan(padded, d.cascade_min_shared_tokens);
  GraphKey key;
  key.num_seqs = num_seqs;
  key.max_blocks = mb;
  if (cascade.worthwhile) {
    key.num_groups = cascade.num_groups();
    key.max_group_size = cascade.max_group_size;
    key.max_prefix = cascade.max_prefix;
    key.suffix_bound = SuffixBound(cascade);
    key.group_kernel = kernels::RequestedGroupAttentionKernel();
  }
  std::unique_ptr<DecodeGraph>& slot = d.graphs[key];
  if (slot == nullptr) {
    slot = std::make_unique<DecodeGraph>();
    if (d.graphs.size() > kMaxCudaGraphs) {  // evict the least recently used other one
      auto oldest = d.graphs.end();
      for (auto it = d.graphs.begin(); it != d.graphs.end(); ++it) {
        if (it->second.get() != slot.get() &&
            (oldest == d.graphs.end() || it->second->last_use < oldest->second->last_use)) {
          oldest = it;
        }
      }
      d.graphs.erase(oldest);  // every pass synchronised: no graph is in flight
    }
  }
  DecodeGraph& g = *slot;  // erasing another entry left it in place
  g.last_use = ++d.graph_clock;
  if (g.exec != nullptr) {
    return ForwardPass(padded, sampling, nullptr, sampled, &g.buffers, PassMode::kReplay, g.exec,
                       &cascade);
  }
  // Eager through the graph's own buffers: this step's draws; it also sizes
  // the buffers and sets the kernels' attributes before any capture.
  ARBOR_RETURN_IF_ERROR(ForwardPass(padded, sampling, nullptr, sampled, &g.buffers,
                                    PassMode::kEager, nullptr, &cascade));
  if (++g.runs < 2) return absl::OkStatus();  // capture shapes that recur

  cudaGraph_t graph = nullptr;
  ARBOR_RETURN_IF_ERROR(CudaError(
      cudaStreamBeginCapture(d.stream, cudaStreamCaptureModeThreadLocal), "BeginCapture"));
  std::vector<SampledToken> unused;
  const absl::Status captured = ForwardPass(padded, sampling, nullptr, &unused, &g.buffers,
                                            PassMode::kCapture, nullptr, &cascade);
  const cudaError_t ended = cudaStreamEndCapture(d.stream, &graph);
  cudaError_t instantiated = cudaErrorUnknown;
  if (captured.ok() && ended == cudaSuccess) {
    instantiated = cudaGraphInstantiate(&g.exec, graph, 0);
  }
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (instantiated != cudaSuccess) {
    // Serve on without graphs rather than fail a request over an optimisation.
    g.exec = nullptr;
    cudaGetLastError();
    ARBOR_LOG(WARNING) << "CudaBackend: decode CUDA graph capture failed ("
                       << (captured.ok()
                               ? cudaGetErrorString(ended != cudaSuccess ? ended : instantiated)
                               : captured.ToString())
                       << "); continuing without CUDA graphs";
    set_cuda_graphs(false);
  }
  return absl::OkStatus();
}

void CudaBackend::set_cuda_graphs(bool enabled) {
  device_->cuda_graphs = enabled;
  if (!enabled) device_->graphs.clear();
}

void CudaBackend::set_cascade_min_shared_tokens(int tokens) {
  device_->cascade_min_shared_tokens = std::max(tokens, 0);
}

int CudaBackend::num_cuda_graphs() const {
  int n = 0;
  for (const auto& [key, graph] : device_->graphs) n += graph->exec != nullptr;
  return n;
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
          kernels::CopyKvBlocks(d.k_pool(l), d.v_pool(l), d.pairs.get<int32_t>() + 2 * p,
                                std::min(per_launch, num_pairs - p),
                                static_cast<int>(d.block_elems), d.stream),
          "CopyKvBlocks"));
    }
  }
  return CudaError(cudaStreamSynchronize(d.stream), "CopyBlocks");
}

#endif  // ARBOR_HAVE_CUDA

}  // namespace arbor::runtime
