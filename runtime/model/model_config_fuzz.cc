// Fuzzes config.json parsing: any bytes give a ModelConfig within the limits
// or an error, never a crash or an unbounded size.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "runtime/model/model_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using arbor::runtime::ModelConfigLimits;
  absl::StatusOr<arbor::runtime::ModelConfig> config = arbor::runtime::ParseModelConfig(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) return 0;
  const arbor::runtime::ModelConfig& c = *config;
  if (c.vocab_size < 1 || c.vocab_size > ModelConfigLimits::kMaxVocabSize || c.hidden_size < 1 ||
      c.hidden_size > ModelConfigLimits::kMaxHiddenSize || c.intermediate_size < 1 ||
      c.intermediate_size > ModelConfigLimits::kMaxIntermediateSize || c.num_layers < 1 ||
      c.num_layers > ModelConfigLimits::kMaxLayers || c.num_heads < 1 || c.num_kv_heads < 1 ||
      c.num_heads % c.num_kv_heads != 0 || c.head_dim < 2 || c.head_dim % 2 != 0 ||
      c.head_dim > ModelConfigLimits::kMaxHeadDim || c.max_position_embeddings < 1 ||
      c.max_position_embeddings > ModelConfigLimits::kMaxPositionEmbeddings) {
    arbor::fuzz::Fail("ParseModelConfig accepted sizes outside its limits");
  }
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) arbor::fuzz::Fail("eos id outside the vocabulary");
  }
  return 0;
}
