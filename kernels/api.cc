// The host-side, non-kernel part of kernels/kernels.h: KernelStatus
// messages, the process-wide launch settings, device queries (kernels/device.h)
// and split planning. The kernel entry points live in kernels/*.cu.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>

#include "kernels/device.h"
#include "kernels/kernels.h"

namespace arbor::kernels {

const char* KernelStatus::message() const {
  return cudaGetErrorString(static_cast<cudaError_t>(code_));
}

DeviceCapability CurrentDeviceCapability() {
  static thread_local int cached_device = -1;
  static thread_local DeviceCapability cached;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return DeviceCapability{};
  if (device != cached_device) {
    DeviceCapability c;
    int value = 0;
    if (cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, device) == cudaSuccess) {
      c.sm_count = std::max(value, 1);
    }
    if (cudaDeviceGetAttribute(&value, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess) {
      c.major = value;
    }
    if (cudaDeviceGetAttribute(&value, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess) {
      c.minor = value;
    }
    cached_device = device;
    cached = c;
  }
  return cached;
}

int DeviceSmCount() { return CurrentDeviceCapability().sm_count; }

namespace {
std::atomic<bool> dependent_launch_requested{true};
}  // namespace

void SetDependentLaunch(bool enabled) { dependent_launch_requested.store(enabled); }

bool DependentLaunchEnabled() {
  return dependent_launch_requested.load(std::memory_order_relaxed) &&
         CurrentDeviceCapability().major >= 9;
}

namespace {
std::atomic<GroupAttentionKernel> group_attention_kernel{GroupAttentionKernel::kWgmma};
}  // namespace

GroupAttentionKernel SetGroupAttentionKernel(GroupAttentionKernel kernel) {
  return group_attention_kernel.exchange(kernel);
}

GroupAttentionKernel RequestedGroupAttentionKernel() {
  return group_attention_kernel.load(std::memory_order_relaxed);
}

namespace {
std::atomic<Fp8DecodeKernel> fp8_decode_kernel{Fp8DecodeKernel::kMmaSync};
}  // namespace

Fp8DecodeKernel SetFp8DecodeKernel(Fp8DecodeKernel kernel) {
  return fp8_decode_kernel.exchange(kernel);
}

Fp8DecodeKernel RequestedFp8DecodeKernel() {
  return fp8_decode_kernel.load(std::memory_order_relaxed);
}

SplitPlan PlanSplits(int max_len, int num_rows_ctas, int granule, int ctas_per_sm) {
  SplitPlan plan;
  const int max_granules = std::max(1, (max_len + granule - 1) / granule);
  // About one wave of CTAs (ctas_per_sm: what the kernel's registers and
  // shared memory allow); splits not so short that the merge and the
  // per-split setup dominate.
  const int want_ctas = std::max(ctas_per_sm, 1) * DeviceSmCount();
  int splits = std::max(1, want_ctas / std::max(num_rows_ctas, 1));
  // At least 16 decode pages (below that the merge launch costs more than
  // the split saves: a 256-key split takes a CTA about as long as the merge
  // kernel), or 2 group-attention tiles (whose loads overlap).
  const int min_granules = granule >= 64 ? 2 : 16;
  splits = std::min(splits, std::max(1, max_granules / min_granules));
  const int granules_per_split = (max_granules + splits - 1) / splits;
  plan.split_len = granules_per_split * granule;
  plan.num_splits = (max_granules + granules_per_split - 1) / granules_per_split;
  return plan;
}

SplitPlan PlanGroupAttentionSplits(int max_kv_len, int max_group_tokens, int num_groups,
                                   const AttentionShape& shape) {
  const GroupAttentionGeometry g = GroupAttentionGeometryFor(shape);
  const int gqa = shape.num_kv_heads > 0 ? std::max(shape.num_heads / shape.num_kv_heads, 1) : 1;
  const long long row_ctas =
      static_cast<long long>((std::max(max_group_tokens, 1) * gqa + g.rows_per_cta - 1) /
                             g.rows_per_cta) *
      std::max(num_groups, 1) * std::max(shape.num_kv_heads, 1);
  return PlanSplits(std::max(max_kv_len, 1),
                    static_cast<int>(std::min<long long>(row_ctas, 1 << 30)), g.tile_keys,
                    g.ctas_per_sm);
}

}  // namespace arbor::kernels
