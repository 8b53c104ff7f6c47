// The KV block: the unit of the paged KV pool that RadixKvCache hands out,
// the engine schedules and every backend attends over (layout in
// runtime/backend/backend.h). Header-only, so that the backend interface and
// the KV cache can both include it without a library dependency either way.
// The CUDA kernels have their own kernels::kKvBlockSize (kernels/ does not
// depend on runtime/); the CUDA backend static_asserts that the two agree.
#ifndef ARBOR_RUNTIME_KV_KV_BLOCK_H_
#define ARBOR_RUNTIME_KV_KV_BLOCK_H_

namespace arbor::runtime {

// Tokens per KV block.
inline constexpr int kKvBlockSize = 16;

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_KV_KV_BLOCK_H_
