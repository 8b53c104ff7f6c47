// Engine: one model behind a continuous-batching scheduler and a prefix-shared
// paged KV cache. It serves two kinds of request:
//
//  * Generate (the Generator service's Extend): a shared prompt plus branches
//    (suffix tokens, num_samples, seed). The prompt is prefilled once (or taken
//    from the prefix cache), every branch forks it copy-on-write and prefills
//    its suffix, every sample forks its branch and decodes one step under the
//    stop rules. Sample i of a branch draws with CounterUniform(seed, i,
//    position), so its tokens do not depend on batching or preemption.
//  * Score (the Verifier's prefill-only path): runs token sequences and returns
//    the output rows (logits or value-head rows) at requested positions, using
//    and filling the prefix cache.
//
// A scheduler thread runs the model: each iteration builds ONE ForwardBatch
// from the decode tokens of every running sequence plus prefill chunks, up to
// max_batch_tokens. Computed full blocks are published to the radix cache as
// soon as they are computed, so later calls (and later steps of the same
// search) reuse them; a sequence whose prefix another one is computing waits
// for it rather than computing it twice. Requests are served oldest first.
// When the KV pool runs out, sequences of the newest requests are preempted
// (their blocks released) and recomputed later, with the same tokens; a
// request never crashes the engine and no block leaks.
//
// Thread-safety: every public method is thread-safe. Callbacks run on the
// scheduler thread and must not block: no blocking Generate/Score from a
// callback (Submit*, Cancel and stats() are fine).
#ifndef ARBOR_RUNTIME_ENGINE_ENGINE_H_
#define ARBOR_RUNTIME_ENGINE_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "runtime/backend/backend.h"
#include "runtime/model/model_config.h"
#include "runtime/sampling/sampler.h"

namespace arbor::runtime {

class Tokenizer;
class EngineCore;

struct StepInfo {
  absl::Duration latency;  // Forward + sampling of this step
  int batch_tokens = 0;    // tokens run through the model
  int prefill_tokens = 0;  // of which prefill (prompt/suffix/recompute)
  int decode_tokens = 0;   // of which one-token decode steps
  int num_seqs = 0;
};

struct EngineOptions {
  // Tokens in one forward step (decode tokens + prefill chunks). >= 1.
  int max_batch_tokens = 2048;
  // Sequences (samples, branch/prompt prefills, score sequences) in the running batch.
  int max_running_seqs = 256;
  // Requests accepted but not finished; more is RESOURCE_EXHAUSTED at submission.
  int max_queued_requests = 1024;
  // Context window in tokens; 0 takes the model's max_position_embeddings
  // (capped by its sliding_window when it has one). Larger than that window is
  // INVALID_ARGUMENT at Create.
  int max_context_tokens = 0;
  // Threads drawing a step's samples (the scheduler thread included); 0 takes
  // min(hardware concurrency, 8). Small steps are drawn on the scheduler thread.
  int num_sampler_threads = 0;
  // Where the tokens of a step with no score rows are drawn: kAuto asks the
  // backend for draws (ModelBackend::ForwardSample) when it samples on the
  // device, so that no logits leave the GPU; kHost always downloads logits and
  // draws on the sampler threads; kBackend always asks for draws (tests). The
  // tokens are the same either way.
  enum class Sampling { kAuto, kHost, kBackend };
  Sampling sampling = Sampling::kAuto;
  // Outputs (sum of num_samples) one Generate request may ask for.
  int max_outputs_per_request = 4096;
  // Keep computed blocks in the radix cache for later requests. Off, every
  // request computes its whole prefix, as a stateless server without automatic
  // prefix caching does (the baseline of docs/E2E.md); the branches and
  // samples of one request still share its prompt's blocks.
  bool prefix_cache = true;
  // Observer called on the scheduler thread after every forward step (metrics).
  std::function<void(const StepInfo&)> step_observer;
};

enum class FinishReason {
  kStep = 1,       // a step delimiter matched: the branch may continue
  kEos = 2,        // the model emitted end-of-sequence
  kLength = 3,     // max_step_tokens reached
  kContext = 4,    // the context window is full
  kCancelled = 5,  // cancelled or past its deadline
};
absl::string_view FinishReasonName(FinishReason reason);

struct StopRules {
  // Strings that end a step, matched on the step's incrementally decoded text
  // (so a delimiter spanning tokens is found). The token completing the match
  // is kept, and the step's text is the full text of its tokens (it may run a
  // few characters past the delimiter when one token holds both). Empty:
  // generate to EOS / max_step_tokens. Needs a tokenizer.
  std::vector<std::string> step_delimiters;
  // Cap on new tokens in this step, >= 1.
  int max_step_tokens = 256;
  // Ignore the model's EOS ids (ModelConfig::eos_token_ids).
  bool ignore_eos = false;
};

struct BranchSpec {
  // Tokens after the shared prompt (earlier steps of this branch). May be empty.
  std::vector<int32_t> suffix_tokens;
  // Independent samples from this branch, >= 1.
  int num_samples = 1;
  uint64_t seed = 0;
};

struct GenerateRequest {
  std::string job_id;  // for logs only
  // Shared prompt (templated), non-empty; every id in [0, vocab_size).
  std::vector<int32_t> prompt_tokens;
  // At least one.
  std::vector<BranchSpec> branches;
  SamplingParams sampling;
  StopRules stop;
  bool return_token_logprobs = false;
  // Past it, unfinished samples end with kCancelled.
  absl::Time deadline = absl::InfiniteFuture();
};

struct SampleOutput {
  int branch_index = 0;
  int sample_index = 0;
  // New tokens of the step (including a matched delimiter, excluding EOS).
  std::vector<int32_t> tokens;
  // Their text, decoded incrementally (empty without a tokenizer).
  std::string text;
  // Sum of the sampled tokens' logprobs under the unmodified distribution,
  // including the EOS token's when the step ended on EOS.
  double logprob = 0.0;
  // Per token of `tokens`, when return_token_logprobs.
  std::vector<float> token_logprobs;
  FinishReason finish_reason = FinishReason::kLength;
};

// What one request cost. Tokens recomputed after a preemption count as
// prefill; prefix_cache_hit_tokens counts tokens matched in the radix cache
// when a sequence (re)started, shared forks are counted as neither.
struct RequestUsage {
  int64_t prefill_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t generated_tokens = 0;  // sampled tokens, EOS included
  // Where the request's time went (docs/E2E.md): from its submission to its
  // first scheduled step, and from then to its completion.
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  // Generate: from submission to the first sampled token (time to first
  // token); -1 when none was sampled.
  int64_t first_token_us = -1;
};

struct GenerateResult {
  // One per (branch, sample), ordered by branch then sample.
  std::vector<SampleOutput> outputs;
  RequestUsage usage;
};

struct ScoreSequence {
  // Non-empty; every id in [0, vocab_size); within the context window.
  std::vector<int32_t> tokens;
  // Positions (indices into tokens) whose output rows are wanted; may be empty
  // (just fill the cache). Any order, each in [0, tokens.size()).
  std::vector<int32_t> positions;
};

struct ScoreRequest {
  std::string job_id;
  std::vector<ScoreSequence> sequences;
  // Columns of each output row to return (e.g. the "+"/"-" label tokens of a
  // token-logit PRM); empty returns the whole row of output_dim() values.
  std::vector<int32_t> columns;
  absl::Time deadline = absl::InfiniteFuture();
};

struct ScoreResult {
  int row_width = 0;  // columns.size(), or output_dim() when columns is empty
  // rows[s]: [sequences[s].positions.size(), row_width] row-major, in the
  // order the positions were given.
  std::vector<std::vector<float>> rows;
  // Tokens run through the model (recomputation included) and served from
  // the prefix cache. A row wanted inside a cached prefix is computed by
  // rerunning at most one block before it over the cache, so the two may add
  // up to more than the sequences' length.
  int64_t computed_tokens = 0;
  int64_t cached_tokens = 0;
  // As RequestUsage::queue_us and compute_us.
  int64_t queue_us = 0;
  int64_t compute_us = 0;
};

struct EngineStats {
  int queued_requests = 0;  // accepted, no sequence started yet
  int active_requests = 0;  // accepted, not finished
  int running_seqs = 0;
  int waiting_seqs = 0;  // admitted requests' sequences waiting for a slot or blocks
  int last_batch_tokens = 0;
  int last_batch_seqs = 0;
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;         // referenced by running sequences
  int kv_blocks_cached = 0;       // in the radix tree (some may also be used)
  int kv_blocks_free = 0;         // neither referenced nor cached
  int64_t prefix_hit_tokens = 0;  // cumulative
  int64_t prefill_tokens = 0;     // cumulative, computed
  int64_t generated_tokens = 0;   // cumulative
  int64_t steps = 0;              // forward steps run
  int64_t preemptions = 0;        // cumulative
  // Tokens accepted and not yet run through the model: prefill and
  // recomputation still to do of every sequence, and the prompts of requests
  // not yet taken in (a load signal for routing; decode steps count one each).
  int64_t queued_tokens = 0;
  DecodeStats decode;  // the backend's (cumulative)
};

// Prefix watches (the routing summary of what this engine's cache holds): a
// caller names the first tokens of a prompt with a key of its own
// (common/prefix_hash.h); CachedPrefixKeys lists the keys whose tokens are
// still all in the radix cache. At most kMaxPrefixWatches are kept, the most
// recently watched; older ones are forgotten (and so never listed).
inline constexpr int kMaxPrefixWatches = 512;

using RequestId = uint64_t;

class Engine {
 public:
  using GenerateCallback = std::function<void(absl::StatusOr<GenerateResult>)>;
  using ScoreCallback = std::function<void(absl::StatusOr<ScoreResult>)>;

  // `tokenizer` may be null (score-only engines: no step text, no delimiters);
  // when set it must outlive the engine. Errors: INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(EngineOptions options,
                                                        std::unique_ptr<ModelBackend> backend,
                                                        const Tokenizer* tokenizer);
  // Stops the scheduler; unfinished requests complete with UNAVAILABLE.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Asynchronous API (for the gRPC callback reactors). Validation errors
  // (INVALID_ARGUMENT naming the field) and a full queue (RESOURCE_EXHAUSTED)
  // are returned here and `done` is not called; otherwise `done` is called
  // exactly once on the scheduler thread. A cancelled Generate completes OK
  // with its unfinished samples marked kCancelled (their tokens so far kept);
  // a cancelled Score completes with CANCELLED (DEADLINE_EXCEEDED past its
  // deadline). A backend failure completes the affected requests with its status.
  absl::StatusOr<RequestId> SubmitGenerate(GenerateRequest request, GenerateCallback done);
  absl::StatusOr<RequestId> SubmitScore(ScoreRequest request, ScoreCallback done);
  // Stops a request and releases its blocks; unknown or finished ids are ignored.
  void Cancel(RequestId id);

  // Blocking forms. `is_cancelled` (may be empty) is polled every few
  // milliseconds; when it returns true the request is cancelled.
  absl::StatusOr<GenerateResult> Generate(GenerateRequest request,
                                          const std::function<bool()>& is_cancelled = {});
  absl::StatusOr<ScoreResult> Score(ScoreRequest request,
                                    const std::function<bool()>& is_cancelled = {});

  EngineStats stats() const;
  // Watches the full blocks of `tokens` under `key` (rewatching a key moves it
  // to the front and replaces its tokens). Fewer than one full block is ignored.
  void WatchPrefix(uint64_t key, std::vector<int32_t> tokens);
  // Keys of watches whose tokens are all cached, most recently watched first;
  // as of the scheduler's last iteration (at most kMaxPrefixWatches).
  std::vector<uint64_t> CachedPrefixKeys() const;
  const ModelConfig& model_config() const;
  const EngineOptions& options() const;
  std::string backend_name() const;
  int output_dim() const;
  int max_context_tokens() const;
  int kv_blocks_total() const;
  const Tokenizer* tokenizer() const;

 private:
  explicit Engine(std::unique_ptr<EngineCore> core);
  std::unique_ptr<EngineCore> core_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_ENGINE_H_
