#include "serving/served_model.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/cpu/cpu_backend.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "serving/model_root.h"

namespace arbor::serving {

std::string ModelNameFromDir(const std::string& model_dir) {
  std::filesystem::path path(model_dir);
  while (path.has_relative_path() && path.filename().empty()) path = path.parent_path();
  std::string name = path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    name = std::filesystem::weakly_canonical(path).filename().string();
  }
  return name.empty() ? std::string("model") : name;
}

absl::StatusOr<ServedModel> LoadServedModel(ServedModelOptions options) {
  if (options.model_dir.empty())
    return absl::InvalidArgumentError("--model: no model folder given");
  std::error_code ec;
  if (!std::filesystem::is_directory(options.model_dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("--model: \"", options.model_dir, "\" is not a folder"));
  }
  if (!options.model_root.empty()) {
    // The served name stays the folder's as given; files load from the
    // resolved path that was checked.
    if (options.model_name.empty()) options.model_name = ModelNameFromDir(options.model_dir);
    auto confined = ConfineToModelRoot(options.model_dir, options.model_root);
    if (!confined.ok()) return confined.status();
    options.model_dir = *std::move(confined);
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--threads must be >= 0, got ", options.threads));
  }
  int blocks = options.kv_cache_blocks;
  if (blocks <= 0) {
    if (options.kv_cache_tokens < runtime::kKvBlockSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kv_cache_tokens must be >= ", runtime::kKvBlockSize, ", got ",
                       options.kv_cache_tokens));
    }
    const int64_t b = (options.kv_cache_tokens + runtime::kKvBlockSize - 1) / runtime::kKvBlockSize;
    if (b > (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kv_cache_tokens ", options.kv_cache_tokens, " is too large"));
    }
    blocks = static_cast<int>(b);
  }

  ServedModel served;
  served.model_dir = options.model_dir;
  served.name =
      options.model_name.empty() ? ModelNameFromDir(options.model_dir) : options.model_name;
  const bool has_tokenizer =
      std::filesystem::exists(std::filesystem::path(options.model_dir) / "tokenizer.json", ec);
  if (has_tokenizer) {
    auto tokenizer = runtime::Tokenizer::FromModelDir(options.model_dir);
    if (!tokenizer.ok()) return tokenizer.status();
    served.tokenizer = *std::move(tokenizer);
  } else if (options.require_tokenizer) {
    return absl::NotFoundError(
        absl::StrCat("--model: \"", options.model_dir, "\" has no tokenizer.json"));
  }

  const std::string& kv_dtype = options.kv_cache_dtype;
  const bool fp8_kv = kv_dtype == "fp8_e4m3" || kv_dtype == "fp8";
  if (!fp8_kv && kv_dtype != "auto" && kv_dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrCat("--kv_cache_dtype: unknown type \"", kv_dtype,
                                                   "\" (want auto, bf16, fp8_e4m3 or fp8)"));
  }
  if (fp8_kv && options.backend != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--kv_cache_dtype=", kv_dtype,
                                                   " needs --backend=cuda (the ", options.backend,
                                                   " backend keeps its KV cache in fp32)"));
  }
  std::unique_ptr<runtime::ModelBackend> backend;
  if (options.backend == "cpu") {
    runtime::CpuBackendOptions cpu;
    cpu.num_kv_blocks = blocks;
    cpu.num_threads = options.threads;
    auto created = runtime::CpuBackend::Create(options.model_dir, cpu);
    if (!created.ok()) return created.status();
    backend = *std::move(created);
  } else if (options.backend == "cuda") {
    if (options.kv_memory_fraction < 0 || options.kv_memory_fraction > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kv_memory_fraction must be in (0, 1] (0: use --kv_cache_tokens), got ",
                       options.kv_memory_fraction));
    }
    if (!(options.kv_memory_share >= 0 && options.kv_memory_share < 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kv_memory_share must be in (0, 1) (0: not used), got ", options.kv_memory_share));
    }
    if (options.cascade_levels < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cascade_levels must be >= 1, got ", options.cascade_levels));
    }
    runtime::CudaBackendOptions cuda;
    cuda.cascade_max_levels = options.cascade_levels;
    cuda.stream_priority = options.stream_priority;
    cuda.fp8_kv_cache = fp8_kv;
    if (options.kv_memory_share > 0) {
      cuda.num_kv_blocks = 0;
      cuda.kv_memory_share = options.kv_memory_share;
    } else if (options.kv_memory_fraction > 0) {
      cuda.num_kv_blocks = 0;
      cuda.kv_memory_fraction = options.kv_memory_fraction;
    } else {
      cuda.num_kv_blocks = blocks;
    }
    // The engine never sends more than its own step budget; scratch is sized for it.
    cuda.max_batch_tokens = std::max(options.engine.max_batch_tokens, 1);
    auto created = runtime::CudaBackend::Create(options.model_dir, cuda);
    if (!created.ok()) {
      // No GPU, no CUDA in this build, or too little memory: say which flag led here.
      return absl::Status(created.status().code(),
                          absl::StrCat("--backend=cuda: ", created.status().message()));
    }
    backend = *std::move(created);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend: unknown backend \"", options.backend, "\" (want cpu or cuda)"));
  }
  if (served.tokenizer != nullptr &&
      served.tokenizer->vocab_size() > backend->config().vocab_size &&
      !backend->config().is_value_head()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the tokenizer of \"", options.model_dir, "\" has ", served.tokenizer->vocab_size(),
        " ids but the model's vocabulary has ", backend->config().vocab_size));
  }
  auto engine = runtime::Engine::Create(options.engine, std::move(backend), served.tokenizer.get());
  if (!engine.ok()) return engine.status();
  served.engine = *std::move(engine);
  ARBOR_LOG(INFO) << "loaded " << served.name << " (" << served.engine->model_config().architecture
                  << ") from " << options.model_dir << " on " << served.engine->backend_name()
                  << ": context " << served.engine->max_context_tokens() << " tokens, "
                  << served.engine->kv_blocks_total() << " KV blocks of " << runtime::kKvBlockSize
                  << " tokens";
  return served;
}

}  // namespace arbor::serving
