// Generator: what a strategy needs from a policy model. One Extend call grows
// many branches of one job by one reasoning step each (DESIGN.md, "How a job
// flows"). Implemented by the coordinator over gRPC (arbor.v1.Generator), by
// the all-in-one mode in process, and by fakes in tests.
//
// Contract:
//  - EncodePrompt templates and tokenizes the question once per job; every
//    later Extend sends those tokens as the shared prompt.
//  - Extend returns exactly one StepOutput per (branch, sample), ordered by
//    branch then sample. A step has at most stop.max_step_tokens tokens; a
//    matched delimiter is kept in tokens and text; EOS is not included.
//  - Sample i of branch b draws from the counter RNG stream (seed_b, i, pos):
//    the result depends only on the request, never on batching, so a strategy
//    that derives its seeds from the job seed is deterministic.
//  - Errors are absl::Status values (UNAVAILABLE, RESOURCE_EXHAUSTED, ...).
//    When `deadline` passes, an implementation returns DEADLINE_EXCEEDED or
//    outputs with FinishReason::kCancelled.
// Thread-safety: a strategy calls one Generator from one thread at a time;
// implementations need not be thread-safe unless they say so.
#ifndef ARBOR_SEARCH_GENERATOR_H_
#define ARBOR_SEARCH_GENERATOR_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace arbor::search {

// Mirrors arbor.v1.SamplingParams with the strategy defaults of STRATEGIES.md.
struct SamplingOptions {
  float temperature = 0.8f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // (0, 1]; 1 disables nucleus sampling
  int32_t top_k = 0;         // 0 disables
};

// Mirrors arbor.v1.StopRules. An empty `step_delimiters` generates to EOS or
// to max_step_tokens (the strategies' last iteration does that).
struct StopOptions {
  std::vector<std::string> step_delimiters = {"\n\n"};
  int32_t max_step_tokens = 256;  // [1, 32768]
  bool ignore_eos = false;
};

// Why a generated step ended (arbor.v1.FinishReason).
enum class FinishReason {
  kStep,       // a step delimiter matched: the branch may continue
  kEos,        // end of sequence: the solution is finished
  kLength,     // max_step_tokens reached mid-step
  kContext,    // the context window is full: the branch cannot continue
  kCancelled,  // the request was cancelled or its deadline passed
};

std::string_view FinishReasonName(FinishReason reason);

// One branch to extend: the shared prompt followed by `suffix_tokens`.
struct BranchInput {
  // The branch's tokens after the prompt (its steps so far). Valid only during
  // the Extend call (points into the strategy's own state).
  absl::Span<const int32_t> suffix_tokens;
  int32_t num_samples = 1;  // [1, 256]
  uint64_t seed = 0;
  // Raw text appended after suffix_tokens for this call only, tokenized with
  // no template and no special tokens; the outputs continue from it and never
  // include its tokens (the certainty probe's phrase). Over gRPC it is
  // arbor.v1.BranchInput.suffix_text (the worker tokenizes it with its own
  // tokenizer: the policy's).
  std::string suffix_text;
};

struct ExtendRequest {
  // Shared prompt (from EncodePrompt). Valid only during the call.
  absl::Span<const int32_t> prompt_tokens;
  std::vector<BranchInput> branches;
  SamplingOptions sampling;
  StopOptions stop;
  // The job's deadline (from its Budget); InfiniteFuture when none.
  absl::Time deadline = absl::InfiniteFuture();
};

// One new step of one sample of one branch.
struct StepOutput {
  int32_t branch_index = 0;  // into ExtendRequest::branches
  int32_t sample_index = 0;  // in [0, num_samples)
  std::vector<int32_t> tokens;
  std::string text;
  double logprob = 0.0;  // sum of the sampled tokens' logprobs (natural log)
  FinishReason finish_reason = FinishReason::kStep;
};

// What one Extend call cost the worker.
struct GenerationUsage {
  int64_t generated_tokens = 0;
  int64_t prefill_tokens = 0;           // prompt/suffix tokens run through the model
  int64_t prefix_cache_hit_tokens = 0;  // prompt/suffix tokens served from the prefix cache
  // Time (microseconds): the worker engine's queue and compute, and the whole
  // call as the caller saw it (retries included).
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  int64_t call_us = 0;
};

struct ExtendResult {
  std::vector<StepOutput> outputs;  // one per (branch, sample), branch-major
  GenerationUsage usage;
};

class Generator {
 public:
  virtual ~Generator() = default;

  // Applies the chat template to `question` and tokenizes it. Called once per job.
  virtual absl::StatusOr<std::vector<int32_t>> EncodePrompt(std::string_view question) = 0;

  // Extends every branch by one step (see the contract above).
  virtual absl::StatusOr<ExtendResult> Extend(const ExtendRequest& request) = 0;
};

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_GENERATOR_H_
