// Checks an arbor.v1.ExtendRequest against the served model and converts it to
// and from the engine's types. Every rejection is INVALID_ARGUMENT naming the
// field ("branches[3].suffix_tokens[7]: token id 70000 outside vocabulary
// [0, 600)"). Pure functions; thread-compatible.
#ifndef ARBOR_WORKER_EXTEND_REQUEST_H_
#define ARBOR_WORKER_EXTEND_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "arbor/v1/generator.pb.h"
#include "runtime/engine/engine.h"

namespace arbor::worker {

// The served model and the protocol's bounds (proto/arbor/v1/generator.proto).
struct GeneratorLimits {
  std::string model_name;
  int vocab_size = 0;
  int max_context_tokens = 0;
  int max_branches = 1024;
  int max_samples_per_branch = 256;
  int max_outputs = 4096;
  int max_step_delimiters = 8;
  size_t max_step_delimiter_bytes = 64;
  int max_step_tokens = 32768;
  size_t max_job_id_bytes = 128;
  size_t max_suffix_text_bytes = 4096;
  float max_temperature = 10.0f;
};

// Protocol defaults for fields left unset.
inline constexpr float kDefaultTemperature = 0.8f;
inline constexpr int kDefaultMaxStepTokens = 256;
inline constexpr char kDefaultStepDelimiter[] = "\n\n";

// Everything that can be checked before the prompt is tokenized: job_id,
// model, the prompt's form (exactly one of prompt_tokens / prompt_text; ids
// in the vocabulary; valid UTF-8), branches (1..max_branches; suffix ids;
// suffix_text valid UTF-8 of at most max_suffix_text_bytes; num_samples in [1, 256] with 0 meaning
// the default 1; at most max_outputs in all), sampling, stop rules. The chat template's name is
// checked by the caller, which knows the templates.
absl::Status ValidateExtendRequest(const arbor::v1::ExtendRequest& request,
                                   const GeneratorLimits& limits);

// With the prompt's length known: every branch must leave room for at least
// one new token in the context window. `text_tokens`, when not empty, holds
// each branch's suffix_text tokenized (one entry per branch).
absl::Status ValidateExtendContext(const arbor::v1::ExtendRequest& request, size_t prompt_tokens,
                                   const GeneratorLimits& limits,
                                   const std::vector<std::vector<int32_t>>& text_tokens = {});

// The engine request of a validated ExtendRequest (defaults applied); each
// branch's `text_tokens` (its suffix_text tokenized; empty: none) follow its
// suffix_tokens, so the outputs continue from them and never hold them.
runtime::GenerateRequest ToGenerateRequest(
    const arbor::v1::ExtendRequest& request, std::vector<int32_t> prompt_tokens,
    const std::vector<std::vector<int32_t>>& text_tokens = {});

arbor::v1::FinishReason ToProtoFinishReason(runtime::FinishReason reason);

// Fills outputs and usage (worker_calls = 1) of `response` from the engine's result.
void FillExtendResponse(const runtime::GenerateResult& result, bool return_token_logprobs,
                        arbor::v1::ExtendResponse* response);

}  // namespace arbor::worker

#endif  // ARBOR_WORKER_EXTEND_REQUEST_H_
