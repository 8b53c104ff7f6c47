#include "serving/engine_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Model folder in Hugging Face layout (config.json, *.safetensors, tokenizer.json)");
ABSL_FLAG(std::string, model_root, "",
          "When set, --model must lie inside this folder (after following symbolic links), and "
          "so must every file in it; empty: anywhere");
ABSL_FLAG(std::string, model_name, "",
          "Name the model is served under (Info.model; requests may name it); default: the "
          "folder's base name");
ABSL_FLAG(std::string, backend, "cpu", "Engine backend: cpu, or cuda where built");
ABSL_FLAG(int, threads, 0, "CPU backend threads; 0 = all hardware threads");
ABSL_FLAG(int64_t, kv_cache_tokens, 16384,
          "KV cache capacity in tokens (rounded up to 16-token blocks)");
ABSL_FLAG(int, kv_cache_blocks, 0,
          "KV cache capacity in 16-token blocks; overrides "
          "--kv_cache_tokens when > 0");
ABSL_FLAG(double, kv_memory_fraction, 0,
          "--backend=cuda: KV pool = this fraction of the GPU memory free after the weights, "
          "in (0, 1]; 0 = size it by --kv_cache_tokens / --kv_cache_blocks");
ABSL_FLAG(double, kv_memory_share, 0,
          "--backend=cuda: KV pool = this share of the GPU's total memory, in (0, 1), "
          "whatever else is on the GPU; give each process on a shared GPU its share "
          "(overrides --kv_memory_fraction)");
ABSL_FLAG(int, cascade_levels, 1,
          "--backend=cuda: levels of shared-prefix (cascade) decode attention, >= 1: 1 reads "
          "each shared prompt once per group of branches; each further level also reads once "
          "what a run of branches shares below it (a search tree's steps; docs/KERNELS.md)");
ABSL_FLAG(std::string, kv_cache_dtype, "auto",
          "KV cache element type: auto (= bf16, the model's dtype on the GPU), bf16, or, with "
          "--backend=cuda, fp8_e4m3 (also fp8): half the KV bytes per token, rounded K/V "
          "(docs/KERNELS.md)");
ABSL_FLAG(int, max_batch_tokens, 2048,
          "Most tokens in one engine step (decode tokens + prefill chunks)");
ABSL_FLAG(int, max_running_seqs, 256, "Most sequences in the running batch");
ABSL_FLAG(int, max_queued_requests, 1024,
          "Requests accepted and not finished; beyond it calls fail with RESOURCE_EXHAUSTED");
ABSL_FLAG(bool, prefix_cache, true,
          "Reuse computed KV blocks across requests (radix prefix cache); false computes every "
          "request's whole prefix, like a stateless server (and, in arbor-verifier, also "
          "disables the step-score cache)");
ABSL_FLAG(int, max_context_tokens, 0,
          "Context window in tokens; 0 = the model's max_position_embeddings");

namespace arbor::serving {

ServedModelOptions ServedModelOptionsFromFlags() {
  ServedModelOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.model_name = absl::GetFlag(FLAGS_model_name);
  options.model_root = absl::GetFlag(FLAGS_model_root);
  options.backend = absl::GetFlag(FLAGS_backend);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.kv_cache_tokens = absl::GetFlag(FLAGS_kv_cache_tokens);
  options.kv_cache_blocks = absl::GetFlag(FLAGS_kv_cache_blocks);
  options.kv_memory_fraction = absl::GetFlag(FLAGS_kv_memory_fraction);
  options.kv_memory_share = absl::GetFlag(FLAGS_kv_memory_share);
  options.cascade_levels = absl::GetFlag(FLAGS_cascade_levels);
  options.kv_cache_dtype = absl::GetFlag(FLAGS_kv_cache_dtype);
  options.engine.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.engine.max_running_seqs = absl::GetFlag(FLAGS_max_running_seqs);
  options.engine.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  options.engine.max_context_tokens = absl::GetFlag(FLAGS_max_context_tokens);
  options.engine.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  return options;
}

}  // namespace arbor::serving
