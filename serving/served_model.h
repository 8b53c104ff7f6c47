// ServedModel: a model folder loaded for serving: its tokenizer, a backend
// (cpu; cuda where built) with a KV pool of the requested size, and an Engine
// over them. Used by arbor-worker, arbor-verifier, the all-in-one mode and
// the service tests.
//
// Thread-safety: LoadServedModel is thread-safe; a ServedModel is as
// thread-safe as its Engine. The engine is destroyed before the tokenizer it
// refers to (member order).
#ifndef ARBOR_SERVING_SERVED_MODEL_H_
#define ARBOR_SERVING_SERVED_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"

namespace arbor::serving {

struct ServedModelOptions {
  // Hugging Face layout: config.json, safetensors, tokenizer.json.
  std::string model_dir;
  // When set, model_dir (after following links) and the files in it must lie
  // inside this folder (serving/model_root.h); empty: anywhere.
  std::string model_root;
  // Name served in Info and matched against requests; empty: the folder's base name.
  std::string model_name;
  // "cpu", or "cuda" where this build has the CUDA backend.
  std::string backend = "cpu";
  // CPU backend threads; 0 = hardware concurrency.
  int threads = 0;
  // KV cache size: blocks wins when > 0, else tokens (rounded up to blocks).
  int64_t kv_cache_tokens = 16384;
  int kv_cache_blocks = 0;
  // cuda only: when > 0, the KV pool takes this fraction of the GPU memory left
  // free after the weights (as vLLM's --gpu-memory-utilization), in (0, 1];
  // the token/block sizes above are then ignored.
  double kv_memory_fraction = 0;
  // cuda only: when > 0, the KV pool takes this share of the GPU's total
  // memory, in (0, 1): processes sharing a GPU get their shares whatever
  // their start order. Wins over kv_memory_fraction.
  double kv_memory_share = 0;
  // --backend=cuda: CudaBackendOptions::cascade_max_levels (>= 1).
  int cascade_levels = 1;
  // --backend=cuda: CudaBackendOptions::stream_priority (lower is scheduled
  // first among the streams of this process; clamped to the device's range).
  int stream_priority = 0;
  // KV cache elements: "auto" or "bf16" (the CPU backend keeps fp32), or
  // "fp8_e4m3" / "fp8" (cuda only: CudaBackendOptions::fp8_kv_cache).
  std::string kv_cache_dtype = "auto";
  // Without tokenizer.json the engine serves token ids only (no text, no delimiters).
  bool require_tokenizer = true;
  // Scheduler options (step_observer included).
  runtime::EngineOptions engine;
};

struct ServedModel {
  std::string name;
  std::string model_dir;
  std::unique_ptr<runtime::Tokenizer>
      tokenizer;  // null when the folder has none and none is required
  std::unique_ptr<runtime::Engine> engine;
};

// The served name of a model folder: its base name ("models/prm/" -> "prm").
std::string ModelNameFromDir(const std::string& model_dir);

// Errors name what is wrong: the folder, a file in it, a flag value (an
// unknown or unavailable backend, a KV size below one sequence).
absl::StatusOr<ServedModel> LoadServedModel(ServedModelOptions options);

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_SERVED_MODEL_H_
