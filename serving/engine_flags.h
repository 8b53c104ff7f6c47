// Command-line flags of the engine-serving binaries (arbor-worker,
// arbor-verifier), in their own small library so that a binary that defines
// flags of the same names (the all-in-one mode) need not link them:
//   --model (folder), --model_root, --model_name, --backend (cpu | cuda), --threads,
//   --kv_cache_tokens / --kv_cache_blocks, --max_batch_tokens,
//   --max_running_seqs, --max_queued_requests, --max_context_tokens.
// Thread-safety: read after absl::ParseCommandLine only.
#ifndef ARBOR_SERVING_ENGINE_FLAGS_H_
#define ARBOR_SERVING_ENGINE_FLAGS_H_

#include "serving/served_model.h"

namespace arbor::serving {

ServedModelOptions ServedModelOptionsFromFlags();

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_ENGINE_FLAGS_H_
