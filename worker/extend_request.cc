#include "worker/extend_request.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "serving/request_checks.h"

namespace arbor::worker {

namespace {

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status ValidateSampling(const arbor::v1::SamplingParams& sampling,
                              const GeneratorLimits& limits) {
  if (sampling.has_temperature()) {
    const float t = sampling.temperature();
    if (!(t >= 0.0f && t <= limits.max_temperature)) {
      return Invalid("sampling.temperature",
                     absl::StrCat(t, " outside [0, ", limits.max_temperature, "]"));
    }
  }
  if (sampling.has_top_p()) {
    const float p = sampling.top_p();
    if (!(p > 0.0f && p <= 1.0f))
      return Invalid("sampling.top_p", absl::StrCat(p, " outside (0, 1]"));
  }
  if (sampling.top_k() < 0 || sampling.top_k() > limits.vocab_size) {
    return Invalid("sampling.top_k",
                   absl::StrCat(sampling.top_k(), " outside [0, ", limits.vocab_size, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStop(const arbor::v1::StopRules& stop, const GeneratorLimits& limits) {
  if (stop.step_delimiters_size() > limits.max_step_delimiters) {
    return Invalid("stop.step_delimiters",
                   absl::StrCat(stop.step_delimiters_size(), " strings, at most ",
                                limits.max_step_delimiters));
  }
  if (stop.no_step_delimiter() && stop.step_delimiters_size() > 0) {
    return Invalid("stop.no_step_delimiter",
                   absl::StrCat("true, but ", stop.step_delimiters_size(),
                                " step_delimiters are given; set one or the other"));
  }
  for (int i = 0; i < stop.step_delimiters_size(); ++i) {
    const std::string field = absl::StrCat("stop.step_delimiters[", i, "]");
    const std::string& d = stop.step_delimiters(i);
    if (d.empty()) return Invalid(field, "empty");
    if (auto st = serving::CheckMaxBytes(d, limits.max_step_delimiter_bytes, field); !st.ok())
      return st;
    if (auto st = serving::CheckUtf8(d, field); !st.ok()) return st;
  }
  if (stop.max_step_tokens() < 0 || stop.max_step_tokens() > limits.max_step_tokens) {
    return Invalid("stop.max_step_tokens", absl::StrCat(stop.max_step_tokens(), " outside [1, ",
                                                        limits.max_step_tokens, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateExtendRequest(const arbor::v1::ExtendRequest& request,
                                   const GeneratorLimits& limits) {
  if (auto st = serving::CheckMaxBytes(request.job_id(), limits.max_job_id_bytes, "job_id");
      !st.ok()) {
    return st;
  }
  if (auto st = serving::CheckUtf8(request.job_id(), "job_id"); !st.ok()) return st;
  if (auto st = serving::CheckModelName(request.model(), limits.model_name); !st.ok()) return st;
  const bool has_tokens = request.prompt_tokens_size() > 0;
  const bool has_text = !request.prompt_text().empty();
  if (has_tokens == has_text) {
    return Invalid("prompt_tokens", has_tokens ? "set together with prompt_text; send exactly one"
                                               : "empty, and so is prompt_text; send exactly one");
  }
  if (has_tokens) {
    if (auto st =
            serving::CheckTokenIds(request.prompt_tokens(), limits.vocab_size, "prompt_tokens");
        !st.ok()) {
      return st;
    }
  } else if (auto st = serving::CheckUtf8(request.prompt_text(), "prompt_text"); !st.ok()) {
    return st;
  }
  if (auto st = serving::CheckUtf8(request.chat_template(), "chat_template"); !st.ok()) return st;
  if (request.branches_size() == 0) return Invalid("branches", "empty; send at least one branch");
  if (request.branches_size() > limits.max_branches) {
    return Invalid("branches", absl::StrCat(request.branches_size(), " branches, at most ",
                                            limits.max_branches));
  }
  int64_t outputs = 0;
  for (int b = 0; b < request.branches_size(); ++b) {
    const arbor::v1::BranchInput& branch = request.branches(b);
    if (auto st = serving::CheckTokenIds(branch.suffix_tokens(), limits.vocab_size,
                                         absl::StrCat("branches[", b, "].suffix_tokens"));
        !st.ok()) {
      return st;
    }
    const std::string text_field = absl::StrCat("branches[", b, "].suffix_text");
    if (auto st =
            serving::CheckMaxBytes(branch.suffix_text(), limits.max_suffix_text_bytes, text_field);
        !st.ok()) {
      return st;
    }
    if (auto st = serving::CheckUtf8(branch.suffix_text(), text_field); !st.ok()) return st;
    // 0 is proto3's "unset": the protocol's default of 1 sample.
    if (branch.num_samples() < 0 || branch.num_samples() > limits.max_samples_per_branch) {
      return Invalid(
          absl::StrCat("branches[", b, "].num_samples"),
          absl::StrCat(branch.num_samples(), " outside [1, ", limits.max_samples_per_branch, "]"));
    }
    outputs += branch.num_samples() == 0 ? 1 : branch.num_samples();
  }
  if (outputs > limits.max_outputs) {
    return Invalid("branches", absl::StrCat("ask for ", outputs, " samples in all, at most ",
                                            limits.max_outputs));
  }
  if (auto st = ValidateSampling(request.sampling(), limits); !st.ok()) return st;
  return ValidateStop(request.stop(), limits);
}

absl::Status ValidateExtendContext(const arbor::v1::ExtendRequest& request, size_t prompt_tokens,
                                   const GeneratorLimits& limits,
                                   const std::vector<std::vector<int32_t>>& text_tokens) {
  const size_t window = static_cast<size_t>(limits.max_context_tokens);
  if (prompt_tokens >= window) {
    return Invalid(request.prompt_tokens_size() > 0 ? "prompt_tokens" : "prompt_text",
                   absl::StrCat(prompt_tokens, " tokens leave no room in the context window of ",
                                window, " tokens"));
  }
  for (int b = 0; b < request.branches_size(); ++b) {
    const size_t text = static_cast<size_t>(b) < text_tokens.size() ? text_tokens[b].size() : 0;
    const size_t total = prompt_tokens + request.branches(b).suffix_tokens_size() + text;
    if (total >= window) {
      return Invalid(
          absl::StrCat("branches[", b, text > 0 ? "].suffix_text" : "].suffix_tokens"),
          absl::StrCat("prompt (", prompt_tokens, " tokens) + suffix (",
                       request.branches(b).suffix_tokens_size(), ")",
                       text > 0 ? absl::StrCat(" + suffix_text (", text, ")") : std::string(),
                       " = ", total, " tokens leave no room in the context window of ", window,
                       " tokens"));
    }
  }
  return absl::OkStatus();
}

runtime::GenerateRequest ToGenerateRequest(const arbor::v1::ExtendRequest& request,
                                           std::vector<int32_t> prompt_tokens,
                                           const std::vector<std::vector<int32_t>>& text_tokens) {
  runtime::GenerateRequest out;
  out.job_id = request.job_id();
  out.prompt_tokens = std::move(prompt_tokens);
  out.branches.reserve(request.branches_size());
  for (int b = 0; b < request.branches_size(); ++b) {
    const arbor::v1::BranchInput& branch = request.branches(b);
    runtime::BranchSpec spec;
    spec.suffix_tokens.assign(branch.suffix_tokens().begin(), branch.suffix_tokens().end());
    if (static_cast<size_t>(b) < text_tokens.size()) {
      spec.suffix_tokens.insert(spec.suffix_tokens.end(), text_tokens[b].begin(),
                                text_tokens[b].end());
    }
    spec.num_samples = branch.num_samples() == 0 ? 1 : branch.num_samples();
    spec.seed = branch.seed();
    out.branches.push_back(std::move(spec));
  }
  const arbor::v1::SamplingParams& sampling = request.sampling();
  out.sampling.temperature =
      sampling.has_temperature() ? sampling.temperature() : kDefaultTemperature;
  out.sampling.top_p = sampling.has_top_p() ? sampling.top_p() : 1.0f;
  out.sampling.top_k = sampling.top_k();
  const arbor::v1::StopRules& stop = request.stop();
  if (stop.step_delimiters_size() > 0) {
    out.stop.step_delimiters.assign(stop.step_delimiters().begin(), stop.step_delimiters().end());
  } else if (!stop.no_step_delimiter()) {
    out.stop.step_delimiters = {kDefaultStepDelimiter};
  }
  out.stop.max_step_tokens =
      stop.max_step_tokens() == 0 ? kDefaultMaxStepTokens : stop.max_step_tokens();
  out.stop.ignore_eos = stop.ignore_eos();
  out.return_token_logprobs = request.return_token_logprobs();
  return out;
}

arbor::v1::FinishReason ToProtoFinishReason(runtime::FinishReason reason) {
  switch (reason) {
    case runtime::FinishReason::kStep:
      return arbor::v1::FINISH_REASON_STEP;
    case runtime::FinishReason::kEos:
      return arbor::v1::FINISH_REASON_EOS;
    case runtime::FinishReason::kLength:
      return arbor::v1::FINISH_REASON_LENGTH;
    case runtime::FinishReason::kContext:
      return arbor::v1::FINISH_REASON_CONTEXT;
    case runtime::FinishReason::kCancelled:
      return arbor::v1::FINISH_REASON_CANCELLED;
  }
  return arbor::v1::FINISH_REASON_UNSPECIFIED;
}

void FillExtendResponse(const runtime::GenerateResult& result, bool return_token_logprobs,
                        arbor::v1::ExtendResponse* response) {
  response->mutable_outputs()->Reserve(static_cast<int>(result.outputs.size()));
  for (const runtime::SampleOutput& sample : result.outputs) {
    arbor::v1::BranchOutput* out = response->add_outputs();
    out->set_branch_index(sample.branch_index);
    out->set_sample_index(sample.sample_index);
    out->mutable_tokens()->Add(sample.tokens.begin(), sample.tokens.end());
    out->set_text(serving::SanitizeUtf8(sample.text));
    out->set_logprob(sample.logprob);
    out->set_finish_reason(ToProtoFinishReason(sample.finish_reason));
    if (return_token_logprobs) {
      out->mutable_token_logprobs()->Add(sample.token_logprobs.begin(),
                                         sample.token_logprobs.end());
    }
  }
  arbor::v1::Usage* usage = response->mutable_usage();
  usage->set_generated_tokens(result.usage.generated_tokens);
  usage->set_prefill_tokens(result.usage.prefill_tokens);
  usage->set_prefix_cache_hit_tokens(result.usage.prefix_cache_hit_tokens);
  usage->set_worker_calls(1);
  usage->set_worker_queue_us(result.usage.queue_us);
  usage->set_worker_compute_us(result.usage.compute_us);
}

}  // namespace arbor::worker
