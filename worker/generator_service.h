// GeneratorService: arbor.v1.Generator (Extend, Info) over one Engine, with
// the gRPC callback API. Every call, from every job, goes into the same engine:
// one continuous batch and one prefix cache.
//
// Extend: validates the request (INVALID_ARGUMENT naming the field), applies
// the chat template to prompt_text and tokenizes it, then submits one engine
// request for all branches. A full engine queue is RESOURCE_EXHAUSTED. When the
// client cancels or its deadline passes, the engine request is cancelled and
// its KV blocks released.
//
// Thread-safety: the gRPC library calls the service from many threads; it is
// safe for that. The engine, tokenizer and metrics must outlive the service,
// and the service must outlive the grpc::Server it is registered with.
#ifndef ARBOR_WORKER_GENERATOR_SERVICE_H_
#define ARBOR_WORKER_GENERATOR_SERVICE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "runtime/engine/engine.h"
#include "serving/engine_metrics.h"
#include "serving/prompt_renderer.h"
#include "worker/extend_request.h"

namespace arbor::runtime {
class Tokenizer;
}

namespace arbor::worker {

struct GeneratorServiceOptions {
  // GeneratorInfo.model; requests naming another model are rejected.
  std::string model_name;
  // Template for prompt_text when the request names none.
  std::string default_chat_template = "chatml";
};

class GeneratorService final : public arbor::v1::Generator::CallbackService {
 public:
  // `tokenizer` (required for prompt_text and step delimiters) and `metrics`
  // may be null. Errors: INVALID_ARGUMENT for a missing engine or renderer.
  static absl::StatusOr<std::unique_ptr<GeneratorService>> Create(
      GeneratorServiceOptions options, runtime::Engine* engine, const runtime::Tokenizer* tokenizer,
      serving::PromptRenderer render_prompt, serving::EngineMetrics* metrics);

  grpc::ServerUnaryReactor* Extend(grpc::CallbackServerContext* context,
                                   const arbor::v1::ExtendRequest* request,
                                   arbor::v1::ExtendResponse* response) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const arbor::v1::InfoRequest* request,
                                 arbor::v1::GeneratorInfo* response) override;

  // The prompt tokens of a validated request: prompt_tokens as given, or
  // prompt_text through the chat template and the tokenizer.
  absl::StatusOr<std::vector<int32_t>> PromptTokens(const arbor::v1::ExtendRequest& request) const;
  // Each branch's suffix_text tokenized (no template, no special tokens), one
  // entry per branch; empty when no branch has one. FAILED_PRECONDITION
  // without a tokenizer.
  absl::StatusOr<std::vector<std::vector<int32_t>>> SuffixTextTokens(
      const arbor::v1::ExtendRequest& request) const;
  // Registers the prefix keys of a prompt sent as text (common/prefix_hash.h)
  // with the engine's prefix watches, so that Info's cached_prefix_keys tells
  // the coordinator which of them this worker still caches. Key i watches the
  // full blocks of `tokens` that the first (i + 1) chunks of prompt_text
  // surely cover (the proportional token position, less one block). A no-op
  // for prompts sent as tokens.
  void WatchPromptPrefixes(const arbor::v1::ExtendRequest& request,
                           const std::vector<int32_t>& tokens) const;
  // GeneratorInfo of the served model and the engine's current state.
  arbor::v1::GeneratorInfo MakeInfo() const;

  const GeneratorLimits& limits() const { return limits_; }
  runtime::Engine* engine() const { return engine_; }
  serving::EngineMetrics* metrics() const { return metrics_; }

 private:
  GeneratorService(GeneratorServiceOptions options, runtime::Engine* engine,
                   const runtime::Tokenizer* tokenizer, serving::PromptRenderer render_prompt,
                   serving::EngineMetrics* metrics);

  GeneratorServiceOptions options_;
  runtime::Engine* engine_;
  const runtime::Tokenizer* tokenizer_;
  serving::PromptRenderer render_prompt_;
  serving::EngineMetrics* metrics_;
  GeneratorLimits limits_;
};

}  // namespace arbor::worker

#endif  // ARBOR_WORKER_GENERATOR_SERVICE_H_
