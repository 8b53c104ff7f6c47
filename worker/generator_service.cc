#include "worker/generator_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/prefix_hash.h"
#include "rpc/status_util.h"
#include "runtime/text/tokenizer.h"
#include "serving/engine_call.h"

namespace arbor::worker {

namespace {

// One Extend call: validation and tokenization on the gRPC thread, generation
// on the engine, the reply from the engine's completion callback.
class ExtendReactor final : public grpc::ServerUnaryReactor {
 public:
  ExtendReactor(const GeneratorService* service, grpc::CallbackServerContext* context,
                const arbor::v1::ExtendRequest* request, arbor::v1::ExtendResponse* response)
      : service_(service),
        request_(request),
        response_(response),
        call_(std::make_shared<serving::EngineCall>(service->engine())) {
    Start(context);
  }

  void OnCancel() override { call_->Cancel(); }
  void OnDone() override { delete this; }

 private:
  void Start(grpc::CallbackServerContext* context) {
    if (absl::Status st = ValidateExtendRequest(*request_, service_->limits()); !st.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(st));
      return;
    }
    absl::StatusOr<std::vector<int32_t>> prompt = service_->PromptTokens(*request_);
    if (!prompt.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(prompt.status()));
      return;
    }
    absl::StatusOr<std::vector<std::vector<int32_t>>> text_tokens =
        service_->SuffixTextTokens(*request_);
    if (!text_tokens.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(text_tokens.status()));
      return;
    }
    if (absl::Status st =
            ValidateExtendContext(*request_, prompt->size(), service_->limits(), *text_tokens);
        !st.ok()) {
      Finish(arbor::rpc::ToGrpcStatus(st));
      return;
    }
    if (request_->prompt_tokens_size() == 0) {
      response_->mutable_prompt_tokens()->Add(prompt->begin(), prompt->end());
      service_->WatchPromptPrefixes(*request_, *prompt);
    }
    int64_t tokens_in = static_cast<int64_t>(prompt->size());
    for (const auto& branch : request_->branches()) tokens_in += branch.suffix_tokens_size();
    for (const auto& text : *text_tokens) tokens_in += static_cast<int64_t>(text.size());
    runtime::GenerateRequest generate =
        ToGenerateRequest(*request_, *std::move(prompt), *text_tokens);
    generate.deadline = serving::CallDeadline(*context);
    const bool token_logprobs = request_->return_token_logprobs();
    std::shared_ptr<serving::EngineCall> call = call_;
    serving::EngineMetrics* metrics = service_->metrics();
    runtime::Engine* engine = service_->engine();
    absl::Status submitted = call->Submit([&] {
      return engine->SubmitGenerate(
          std::move(generate), [this, call, metrics, tokens_in,
                                token_logprobs](absl::StatusOr<runtime::GenerateResult> result) {
            call->WaitForSubmitter();
            if (!result.ok()) {
              Finish(arbor::rpc::ToGrpcStatus(result.status()));
              return;
            }
            FillExtendResponse(*result, token_logprobs, response_);
            if (metrics != nullptr) {
              metrics->AddTokensIn(tokens_in);
              metrics->AddTokensOut(result->usage.generated_tokens);
              metrics->ObserveFirstToken(result->usage.first_token_us);
            }
            Finish(grpc::Status::OK);
          });
    });
    // On success `this` may already be finished and gone: touch nothing.
    if (!submitted.ok()) Finish(arbor::rpc::ToGrpcStatus(submitted));
  }

  const GeneratorService* service_;
  const arbor::v1::ExtendRequest* request_;
  arbor::v1::ExtendResponse* response_;
  std::shared_ptr<serving::EngineCall> call_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<GeneratorService>> GeneratorService::Create(
    GeneratorServiceOptions options, runtime::Engine* engine, const runtime::Tokenizer* tokenizer,
    serving::PromptRenderer render_prompt, serving::EngineMetrics* metrics) {
  if (engine == nullptr) return absl::InvalidArgumentError("GeneratorService: engine is null");
  if (!render_prompt) {
    return absl::InvalidArgumentError("GeneratorService: prompt renderer is empty");
  }
  if (tokenizer != nullptr) {
    // The default template must exist, or every prompt_text would fail.
    if (auto probe = render_prompt(options.default_chat_template, "probe"); !probe.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("default chat template \"",
                                                     options.default_chat_template,
                                                     "\": ", probe.status().message()));
    }
  }
  return std::unique_ptr<GeneratorService>(new GeneratorService(
      std::move(options), engine, tokenizer, std::move(render_prompt), metrics));
}

GeneratorService::GeneratorService(GeneratorServiceOptions options, runtime::Engine* engine,
                                   const runtime::Tokenizer* tokenizer,
                                   serving::PromptRenderer render_prompt,
                                   serving::EngineMetrics* metrics)
    : options_(std::move(options)),
      engine_(engine),
      tokenizer_(tokenizer),
      render_prompt_(std::move(render_prompt)),
      metrics_(metrics) {
  limits_.model_name = options_.model_name;
  limits_.vocab_size = engine_->output_dim();
  limits_.max_context_tokens = engine_->max_context_tokens();
  limits_.max_outputs = std::min(limits_.max_outputs, engine_->options().max_outputs_per_request);
}

absl::StatusOr<std::vector<int32_t>> GeneratorService::PromptTokens(
    const arbor::v1::ExtendRequest& request) const {
  if (request.prompt_tokens_size() > 0) {
    if (!request.chat_template().empty()) {
      // The template is unused with tokens, but a wrong name is still a mistake.
      if (auto probe = render_prompt_(request.chat_template(), ""); !probe.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("chat_template: ", probe.status().message()));
      }
    }
    return std::vector<int32_t>(request.prompt_tokens().begin(), request.prompt_tokens().end());
  }
  if (tokenizer_ == nullptr) {
    return absl::FailedPreconditionError(
        "prompt_text: this worker has no tokenizer; send prompt_tokens");
  }
  const std::string& name =
      request.chat_template().empty() ? options_.default_chat_template : request.chat_template();
  absl::StatusOr<serving::RenderedPrompt> prompt = render_prompt_(name, request.prompt_text());
  if (!prompt.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("chat_template: ", prompt.status().message()));
  }
  absl::StatusOr<std::vector<int32_t>> tokens =
      tokenizer_->Encode(std::string_view(prompt->text), prompt->add_special_tokens);
  if (!tokens.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_text: ", tokens.status().message()));
  }
  if (tokens->empty()) return absl::InvalidArgumentError("prompt_text: encodes to no tokens");
  return tokens;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> GeneratorService::SuffixTextTokens(
    const arbor::v1::ExtendRequest& request) const {
  std::vector<std::vector<int32_t>> out;
  for (int b = 0; b < request.branches_size(); ++b) {
    const std::string& text = request.branches(b).suffix_text();
    if (text.empty()) continue;
    const std::string field = absl::StrCat("branches[", b, "].suffix_text");
    if (tokenizer_ == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(field, ": this worker has no tokenizer; send the tokens in suffix_tokens"));
    }
    // Raw text after the branch's tokens: no template, no special tokens.
    absl::StatusOr<std::vector<int32_t>> tokens =
        tokenizer_->Encode(std::string_view(text), /*add_special_tokens=*/false);
    if (!tokens.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": ", tokens.status().message()));
    }
    out.resize(request.branches_size());
    out[b] = *std::move(tokens);
  }
  return out;
}

void GeneratorService::WatchPromptPrefixes(const arbor::v1::ExtendRequest& request,
                                           const std::vector<int32_t>& tokens) const {
  const std::string& question = request.prompt_text();
  const std::vector<uint64_t> keys = PrefixChunkKeys(request.chat_template(), question);
  if (keys.empty() || tokens.empty()) return;
  // Where the question sits in the rendered prompt, to place chunk ends on
  // token positions in proportion to bytes (the tokenizer gives no offsets).
  const std::string& name =
      request.chat_template().empty() ? options_.default_chat_template : request.chat_template();
  absl::StatusOr<serving::RenderedPrompt> rendered = render_prompt_(name, question);
  size_t offset = 0, total = question.size();
  if (rendered.ok() && !rendered->text.empty()) {
    const size_t at = rendered->text.find(question);
    if (at != std::string::npos) offset = at;
    total = rendered->text.size();
  }
  const double tokens_per_byte = static_cast<double>(tokens.size()) / std::max<size_t>(total, 1);
  for (size_t i = 0; i < keys.size(); ++i) {
    const double end_byte = offset + static_cast<double>((i + 1) * kPrefixChunkBytes);
    int covered = static_cast<int>(end_byte * tokens_per_byte) - runtime::kKvBlockSize;
    covered = std::min(covered, static_cast<int>(tokens.size()));
    if (covered < runtime::kKvBlockSize) continue;
    engine_->WatchPrefix(keys[i], std::vector<int32_t>(tokens.begin(), tokens.begin() + covered));
  }
}

arbor::v1::GeneratorInfo GeneratorService::MakeInfo() const {
  arbor::v1::GeneratorInfo info;
  const runtime::ModelConfig& config = engine_->model_config();
  const runtime::EngineStats stats = engine_->stats();
  info.set_model(options_.model_name);
  info.set_architecture(config.architecture);
  info.set_max_context_tokens(engine_->max_context_tokens());
  info.set_vocab_size(engine_->output_dim());
  if (tokenizer_ != nullptr) info.set_tokenizer_fingerprint(tokenizer_->Fingerprint());
  info.set_backend(engine_->backend_name());
  info.set_kv_capacity_tokens(static_cast<int64_t>(engine_->kv_blocks_total()) *
                              runtime::kKvBlockSize);
  info.set_kv_block_size(runtime::kKvBlockSize);
  info.set_kv_blocks_total(engine_->kv_blocks_total());
  info.set_kv_blocks_used(stats.kv_blocks_used);
  info.set_max_batch_tokens(engine_->options().max_batch_tokens);
  info.set_chat_template(options_.default_chat_template);
  info.mutable_eos_token_ids()->Add(config.eos_token_ids.begin(), config.eos_token_ids.end());
  info.set_queued_tokens(stats.queued_tokens);
  info.set_running_seqs(stats.running_seqs);
  info.set_waiting_seqs(stats.waiting_seqs);
  info.set_kv_blocks_free(stats.kv_blocks_free);
  info.set_kv_blocks_cached(stats.kv_blocks_cached);
  info.set_active_requests(stats.active_requests);
  const std::vector<uint64_t> keys = engine_->CachedPrefixKeys();
  info.mutable_cached_prefix_keys()->Add(keys.begin(), keys.end());
  info.set_prefix_key_chunk_bytes(kPrefixChunkBytes);
  return info;
}

grpc::ServerUnaryReactor* GeneratorService::Extend(grpc::CallbackServerContext* context,
                                                   const arbor::v1::ExtendRequest* request,
                                                   arbor::v1::ExtendResponse* response) {
  return new ExtendReactor(this, context, request, response);
}

grpc::ServerUnaryReactor* GeneratorService::Info(grpc::CallbackServerContext* context,
                                                 const arbor::v1::InfoRequest* /*request*/,
                                                 arbor::v1::GeneratorInfo* response) {
  *response = MakeInfo();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace arbor::worker
