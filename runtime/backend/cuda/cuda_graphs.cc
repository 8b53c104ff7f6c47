// Decode CUDA graphs (CUDA builds only; see CudaBackendOptions::cuda_graphs):
// a graphable decode step runs eagerly through its shape's own buffers until
// the shape recurs, is then captured once, and replays from there on.
#include <algorithm>
#include <memory>
#include <vector>

#include "common/log.h"
#include "common/status_macros.h"
#include "runtime/backend/cuda/cuda_device.h"

namespace arbor::runtime {

using cuda_internal::CudaError;
using cuda_internal::CountDecodeKeys;
using cuda_internal::DecodeCascadePlan;
using cuda_internal::GraphKey;
using cuda_internal::kDecodeBlockBucket;
using cuda_internal::RoundUp;
using cuda_internal::SuffixBound;

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

  const kernels::CascadePlan cascade =
      DecodeCascadePlan(padded, d.cascade_min_shared_tokens, d.cascade_max_levels);
  GraphKey key;
  key.num_seqs = num_seqs;
  key.max_blocks = mb;
  if (cascade.worthwhile) {
    for (const kernels::CascadeLevel& level : cascade.levels) {
      key.cascade_levels.insert(key.cascade_levels.end(),
                                {level.num_groups(), level.max_group_size, level.max_kv_len});
    }
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
  CountDecodeKeys(padded, cascade, &d.decode_stats);
  if (g.exec != nullptr) {
    ++d.decode_stats.graph_replays;
    return ForwardPass(padded, sampling, nullptr, sampled, &g.buffers, PassMode::kReplay, g.exec,
                       &cascade);
  }
  // Eager through the graph's own buffers: this step's draws; it also sizes
  // the buffers and sets the kernels' attributes before any capture.
  ARBOR_RETURN_IF_ERROR(ForwardPass(padded, sampling, nullptr, sampled, &g.buffers,
                                    PassMode::kEager, nullptr, &cascade));
  if (++g.runs < 2) {  // capture shapes that recur
    ++d.decode_stats.eager_steps;
    return absl::OkStatus();
  }
  ++d.decode_stats.graph_captures;

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

DecodeStats CudaBackend::decode_stats() const { return device_->decode_stats; }

int CudaBackend::num_cuda_graphs() const {
  int n = 0;
  for (const auto& [key, graph] : device_->graphs) n += graph->exec != nullptr;
  return n;
}

}  // namespace arbor::runtime
