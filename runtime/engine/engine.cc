#include "runtime/engine/engine.h"

#include <algorithm>
#include <functional>
#include <list>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/check.h"
#include "common/log.h"
#include "runtime/engine/request.h"
#include "runtime/engine/request_tree.h"
#include "runtime/engine/sample_step.h"
#include "runtime/engine/scheduler.h"
#include "runtime/engine/step_builder.h"
#include "runtime/kv/radix_kv_cache.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {

absl::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStep:
      return "step";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
    case FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// The scheduler thread and the parts it drives, over one EngineState: the
// RequestTree (sequences and their sharing of KV), the Scheduler (what a step
// computes), the StepBuilder (the step's ForwardBatch) and the SampleStep (the
// step's results, and finishing requests). Members below `scheduler thread
// only` are touched by the scheduler thread alone, so they need no lock.
class EngineCore {
 public:
  EngineCore(EngineOptions options, std::unique_ptr<ModelBackend> backend,
             std::unique_ptr<RadixKvCache> cache, const Tokenizer* tokenizer, int max_context)
      : options_(std::move(options)),
        backend_(std::move(backend)),
        config_(backend_->config()),
        tokenizer_(tokenizer),
        max_context_(max_context),
        cache_(std::move(cache)),
        tree_(&state_, cache_.get(), tokenizer_, max_context_, backend_->output_dim(),
              options_.prefix_cache),
        scheduler_(options_.max_batch_tokens, options_.max_running_seqs, &state_, cache_.get(),
                   &tree_, [this](Seq* seq) { samples_.OnComputed(seq, nullptr); }),
        builder_(&tree_, options_.max_batch_tokens,
                 options_.sampling == EngineOptions::Sampling::kBackend ||
                     (options_.sampling == EngineOptions::Sampling::kAuto &&
                      backend_->samples_on_device())),
        samples_(&state_, &tree_, backend_->output_dim(), max_context_, config_.eos_token_ids,
                 SamplerThreads(options_), [this] {
                   absl::MutexLock lock(&mu_);
                   --active_requests_;
                 }) {
    stats_.kv_blocks_total = cache_->num_blocks();
    stats_.kv_blocks_free = cache_->num_blocks();
    thread_ = std::thread([this] { Loop(); });
  }

  ~EngineCore() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  absl::StatusOr<RequestId> Submit(std::unique_ptr<RequestState> request) {
    absl::MutexLock lock(&mu_);
    if (stop_) return absl::UnavailableError("engine is shutting down");
    if (active_requests_ >= options_.max_queued_requests) {
      return absl::ResourceExhaustedError(
          absl::StrCat("engine queue is full (", active_requests_,
                       " requests, max_queued_requests = ", options_.max_queued_requests, ")"));
    }
    request->id = next_id_++;
    ++active_requests_;
    ++stats_.queued_requests;
    ++stats_.active_requests;
    const RequestId id = request->id;
    incoming_.push_back(std::move(request));
    return id;
  }

  void Cancel(RequestId id) {
    absl::MutexLock lock(&mu_);
    cancels_.push_back(id);
  }

  EngineStats stats() const {
    absl::MutexLock lock(&mu_);
    return stats_;
  }

  void WatchPrefix(uint64_t key, std::vector<int32_t> tokens) {
    tokens.resize(tokens.size() / kKvBlockSize * kKvBlockSize);
    if (tokens.empty()) return;
    absl::MutexLock lock(&mu_);
    // Bounded even when the scheduler is busy for a while.
    if (new_watches_.size() >= static_cast<size_t>(kMaxPrefixWatches)) {
      new_watches_.erase(new_watches_.begin());
    }
    new_watches_.emplace_back(key, std::move(tokens));
  }

  std::vector<uint64_t> CachedPrefixKeys() const {
    absl::MutexLock lock(&mu_);
    return cached_prefix_keys_;
  }

  const EngineOptions& options() const { return options_; }
  const ModelConfig& config() const { return config_; }
  ModelBackend* backend() const { return backend_.get(); }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  int max_context() const { return max_context_; }
  int num_blocks() const { return cache_->num_blocks(); }

 private:
  static int SamplerThreads(const EngineOptions& options) {
    if (options.num_sampler_threads > 0) return options.num_sampler_threads;
    return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 8);
  }

  void Loop();
  bool Intake();  // false when stopping
  void StartRequest(std::unique_ptr<RequestState> request);
  void CheckDeadlines();
  // One scheduling iteration: plan, build and run a step, apply its results.
  void Iterate();
  // Runs the step's block copies and forward, filling out_ or drawn_.
  absl::Status RunForward(const BuiltStep& step);
  void RunCallbacks();
  void PublishStats();
  // Takes in new prefix watches and, when the cache changed, recomputes which
  // watched keys are cached. Returns whether the list changed.
  bool UpdatePrefixWatches(const RadixKvCache::Stats& cs, std::vector<uint64_t>* keys);

  const EngineOptions options_;
  const std::unique_ptr<ModelBackend> backend_;
  const ModelConfig config_;
  const Tokenizer* const tokenizer_;
  const int max_context_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<RequestState>> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<RequestId> cancels_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int active_requests_ ABSL_GUARDED_BY(mu_) = 0;
  RequestId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> new_watches_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cached_prefix_keys_ ABSL_GUARDED_BY(mu_);

  // scheduler thread only
  std::unique_ptr<RadixKvCache> cache_;
  EngineState state_;
  RequestTree tree_;
  Scheduler scheduler_;
  StepBuilder builder_;
  SampleStep samples_;
  bool progressed_ = true;  // the last iteration ran a step or admitted something
  std::vector<float> out_;
  std::vector<SampledToken> drawn_;
  // Prefix watches, most recent first, and what they were last checked against.
  std::list<std::pair<uint64_t, std::vector<int32_t>>> watches_;
  absl::flat_hash_map<uint64_t, decltype(watches_)::iterator> watch_index_;
  int64_t watches_checked_evictions_ = -1;
  int watches_checked_cached_ = -1;

  std::thread thread_;
};

// ---------------------------------------------------------------------------
// Loop and intake.

void EngineCore::Loop() {
  while (true) {
    if (!Intake()) break;
    CheckDeadlines();
    Iterate();
    PublishStats();
    RunCallbacks();
  }
  // Shutdown: every unfinished request completes with UNAVAILABLE.
  std::vector<RequestState*> open;
  for (auto& [id, r] : state_.requests) open.push_back(r.get());
  for (RequestState* r : open) samples_.FailRequest(r, absl::UnavailableError("engine shut down"));
  std::vector<std::unique_ptr<RequestState>> incoming;
  {
    absl::MutexLock lock(&mu_);
    incoming.swap(incoming_);
  }
  for (auto& r : incoming) {
    RequestState* raw = r.get();
    state_.requests[raw->id] = std::move(r);
    samples_.FailRequest(raw, absl::UnavailableError("engine shut down"));
  }
  PublishStats();
  RunCallbacks();
}

void EngineCore::RunCallbacks() {
  for (auto& cb : samples_.TakeCallbacks()) cb();
}

bool EngineCore::Intake() {
  std::vector<std::unique_ptr<RequestState>> incoming;
  std::vector<RequestId> cancels;
  {
    absl::MutexLock lock(&mu_);
    // Sleep while there is nothing to do; nap briefly when the last iteration
    // could run nothing (sequences waiting on others).
    auto has_input = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_ || !incoming_.empty() || !cancels_.empty();
    };
    if (state_.seqs.empty()) {
      mu_.Await(absl::Condition(&has_input));
    } else if (!progressed_) {
      mu_.AwaitWithTimeout(absl::Condition(&has_input), absl::Milliseconds(1));
    }
    if (stop_) return false;
    incoming.swap(incoming_);
    cancels.swap(cancels_);
  }
  for (auto& r : incoming) StartRequest(std::move(r));
  for (RequestId id : cancels) {
    auto it = state_.requests.find(id);
    if (it != state_.requests.end()) {
      samples_.CancelRequest(it->second.get(), absl::CancelledError("cancelled"));
    }
  }
  return true;
}

void EngineCore::CheckDeadlines() {
  const absl::Time now = absl::Now();
  std::vector<RequestState*> late;
  for (auto& [id, r] : state_.requests) {
    const absl::Time deadline = r->is_score ? r->score.deadline : r->gen.deadline;
    if (now >= deadline) late.push_back(r.get());
  }
  for (RequestState* r : late) {
    samples_.CancelRequest(r, absl::DeadlineExceededError("deadline exceeded"));
  }
}

void EngineCore::StartRequest(std::unique_ptr<RequestState> request) {
  RequestState* r = request.get();
  state_.requests[r->id] = std::move(request);
  if (r->is_score) {
    tree_.StartScore(r);
  } else {
    tree_.StartGenerate(r);
  }
  samples_.MaybeCompleteRequest(r);  // every output may be final already
}

// ---------------------------------------------------------------------------
// One step.

void EngineCore::Iterate() {
  scheduler_.PlanStep();
  progressed_ = scheduler_.admitted_any();
  ARBOR_CHECK(!samples_.has_queued_draws());  // admission completes no sample
  const BuiltStep& step = builder_.Build(scheduler_.chunks());
  if (step.chunks.empty()) {
    const auto& copies = scheduler_.block_copies();
    if (!copies.empty()) {
      absl::Status st = backend_->CopyBlocks(copies);
      if (!st.ok()) {
        ARBOR_LOG(ERROR) << "CopyBlocks failed: " << st;
      }
    }
    return;
  }

  const absl::Time start = absl::Now();
  absl::Status status = RunForward(step);
  if (!status.ok()) {
    ARBOR_LOG(ERROR) << "forward step failed: " << status;
    std::vector<RequestState*> failed;
    for (const ScheduledChunk& c : step.chunks) {
      if (std::find(failed.begin(), failed.end(), c.seq->request) == failed.end()) {
        failed.push_back(c.seq->request);
      }
    }
    for (RequestState* r : failed) samples_.FailRequest(r, status);
    return;
  }
  EngineCounters& counters = state_.counters;
  ++counters.steps;
  progressed_ = true;
  counters.last_batch_tokens = step.batch.num_tokens();
  counters.last_batch_seqs = step.batch.num_seqs();
  counters.prefill_tokens += step.prefill_tokens;

  samples_.ApplyStep(step, out_, drawn_);
  if (options_.step_observer) {
    StepInfo info;
    info.latency = absl::Now() - start;
    info.batch_tokens = step.batch.num_tokens();
    info.prefill_tokens = step.prefill_tokens;
    info.decode_tokens = step.decode_tokens;
    info.num_seqs = step.batch.num_seqs();
    options_.step_observer(info);
  }
}

absl::Status EngineCore::RunForward(const BuiltStep& step) {
  const ForwardBatch& b = step.batch;
  absl::Status status = absl::OkStatus();
  const auto& copies = scheduler_.block_copies();
  if (!copies.empty()) status = backend_->CopyBlocks(copies);
  if (status.ok()) {
    status = step.backend_draws ? backend_->ForwardSample(b, step.draws, &drawn_)
                                : backend_->Forward(b, &out_);
  }
  if (status.ok() && step.backend_draws && drawn_.size() != step.draws.size()) {
    status = absl::InternalError(absl::StrCat("backend returned ", drawn_.size(), " draws for ",
                                              step.draws.size(), " rows"));
  }
  if (status.ok() && !step.backend_draws &&
      out_.size() != b.output_rows.size() * static_cast<size_t>(backend_->output_dim())) {
    status = absl::InternalError(absl::StrCat("backend returned ", out_.size(), " values for ",
                                              b.output_rows.size(), " rows"));
  }
  return status;
}

bool EngineCore::UpdatePrefixWatches(const RadixKvCache::Stats& cs,
                                     std::vector<uint64_t>* keys) {
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> added;
  {
    absl::MutexLock lock(&mu_);
    added.swap(new_watches_);
  }
  for (auto& [key, tokens] : added) {
    if (auto it = watch_index_.find(key); it != watch_index_.end()) {
      watches_.erase(it->second);
      watch_index_.erase(it);
    }
    watches_.emplace_front(key, std::move(tokens));
    watch_index_[key] = watches_.begin();
    if (watches_.size() > static_cast<size_t>(kMaxPrefixWatches)) {
      watch_index_.erase(watches_.back().first);
      watches_.pop_back();
    }
  }
  // Only insertions and evictions change the answer; both move these counts.
  if (added.empty() && cs.evicted_blocks == watches_checked_evictions_ &&
      cs.cached_blocks == watches_checked_cached_) {
    return false;
  }
  watches_checked_evictions_ = cs.evicted_blocks;
  watches_checked_cached_ = cs.cached_blocks;
  keys->clear();
  for (const auto& [key, tokens] : watches_) {
    if (cache_->CachedPrefixTokens(tokens) >= static_cast<int>(tokens.size())) {
      keys->push_back(key);
    }
  }
  return true;
}

void EngineCore::PublishStats() {
  const RadixKvCache::Stats cs = cache_->stats();
  std::vector<uint64_t> keys;
  const bool keys_changed = UpdatePrefixWatches(cs, &keys);
  int waiting = 0, queued = 0;
  int64_t queued_tokens = 0;
  for (auto& [order, s] : state_.seqs) {
    if (!s->running) ++waiting;
    queued_tokens += std::max<int64_t>(0, static_cast<int64_t>(s->tokens.size()) - s->num_computed);
  }
  for (auto& [id, r] : state_.requests) {
    if (!r->started) ++queued;
  }
  const EngineCounters& counters = state_.counters;
  const DecodeStats decode = backend_->decode_stats();
  absl::MutexLock lock(&mu_);
  if (keys_changed) cached_prefix_keys_.swap(keys);
  for (const auto& r : incoming_) {
    if (r->is_score) {
      for (const auto& seq : r->score.sequences) queued_tokens += seq.tokens.size();
    } else {
      queued_tokens += r->gen.prompt_tokens.size();
      for (const auto& b : r->gen.branches) queued_tokens += b.suffix_tokens.size();
    }
  }
  stats_.queued_tokens = queued_tokens;
  stats_.queued_requests = queued + static_cast<int>(incoming_.size());
  stats_.active_requests = active_requests_;
  stats_.running_seqs = counters.running_seqs;
  stats_.waiting_seqs = waiting;
  stats_.last_batch_tokens = counters.last_batch_tokens;
  stats_.last_batch_seqs = counters.last_batch_seqs;
  stats_.kv_blocks_total = cs.num_blocks;
  stats_.kv_blocks_used = cs.used_blocks;
  stats_.kv_blocks_cached = cs.cached_blocks;
  stats_.kv_blocks_free = cs.free_blocks;
  stats_.prefix_hit_tokens = counters.prefix_hit_tokens;
  stats_.prefill_tokens = counters.prefill_tokens;
  stats_.generated_tokens = counters.generated_tokens;
  stats_.steps = counters.steps;
  stats_.preemptions = counters.preemptions;
  stats_.decode = decode;
}

// ---------------------------------------------------------------------------
// Engine: validation and the public API.

namespace {

absl::Status ValidateTokens(absl::Span<const int32_t> tokens, int vocab, absl::string_view what) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, "[", i, "] = ", tokens[i], " is not a token id in [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options,
                                                       std::unique_ptr<ModelBackend> backend,
                                                       const Tokenizer* tokenizer) {
  if (backend == nullptr) return absl::InvalidArgumentError("Engine: backend is null");
  if (options.max_batch_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.max_batch_tokens must be >= 1, got ", options.max_batch_tokens));
  }
  if (options.max_running_seqs < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.max_running_seqs must be >= 1, got ", options.max_running_seqs));
  }
  if (options.max_queued_requests < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.max_queued_requests must be >= 1, got ", options.max_queued_requests));
  }
  if (options.max_outputs_per_request < 1 || options.max_outputs_per_request > kMaxSeqsPerRequest) {
    return absl::InvalidArgumentError(
        absl::StrCat("EngineOptions.max_outputs_per_request must be in [1, ", kMaxSeqsPerRequest,
                     "], got ", options.max_outputs_per_request));
  }
  if (options.max_context_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "EngineOptions.max_context_tokens must be >= 0, got ", options.max_context_tokens));
  }
  const ModelConfig& config = backend->config();
  int max_context = config.max_position_embeddings;
  if (config.sliding_window > 0) max_context = std::min(max_context, config.sliding_window);
  // A window above the model's would let positions run past what it was
  // trained (and its RoPE tables sized) for: refuse it rather than cap it quietly.
  if (options.max_context_tokens > max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_context_tokens (", options.max_context_tokens, ") is larger than the model's window (",
        max_context, " tokens: max_position_embeddings ", config.max_position_embeddings,
        config.sliding_window > 0 ? absl::StrCat(", sliding_window ", config.sliding_window) : "",
        ")"));
  }
  if (options.max_context_tokens > 0) max_context = options.max_context_tokens;
  if (max_context < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("Engine: context window of ", max_context, " tokens is too small"));
  }
  auto cache = RadixKvCache::Create(backend->num_kv_blocks());
  if (!cache.ok()) return cache.status();
  auto core = std::make_unique<EngineCore>(std::move(options), std::move(backend),
                                           *std::move(cache), tokenizer, max_context);
  return std::unique_ptr<Engine>(new Engine(std::move(core)));
}

Engine::Engine(std::unique_ptr<EngineCore> core) : core_(std::move(core)) {}
Engine::~Engine() = default;

absl::StatusOr<RequestId> Engine::SubmitGenerate(GenerateRequest request, GenerateCallback done) {
  const ModelConfig& config = core_->config();
  const int vocab = core_->backend()->output_dim();
  if (!done) return absl::InvalidArgumentError("SubmitGenerate: done callback is empty");
  if (request.prompt_tokens.empty()) {
    return absl::InvalidArgumentError("prompt_tokens is empty");
  }
  if (auto st = ValidateTokens(request.prompt_tokens, vocab, "prompt_tokens"); !st.ok()) return st;
  if (request.branches.empty()) return absl::InvalidArgumentError("branches is empty");
  int64_t total_samples = 0;
  int max_len = 0;
  for (size_t b = 0; b < request.branches.size(); ++b) {
    const BranchSpec& branch = request.branches[b];
    if (auto st = ValidateTokens(branch.suffix_tokens, vocab,
                                 absl::StrCat("branches[", b, "].suffix_tokens"));
        !st.ok()) {
      return st;
    }
    if (branch.num_samples < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("branches[", b, "].num_samples must be >= 1, got ", branch.num_samples));
    }
    total_samples += branch.num_samples;
    max_len = std::max(max_len, static_cast<int>(branch.suffix_tokens.size()));
  }
  if (total_samples > core_->options().max_outputs_per_request) {
    return absl::InvalidArgumentError(absl::StrCat("the request asks for ", total_samples,
                                                   " samples; at most ",
                                                   core_->options().max_outputs_per_request));
  }
  if (auto st = ValidateSamplingParams(request.sampling, vocab); !st.ok()) return st;
  if (request.stop.max_step_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop.max_step_tokens must be >= 1, got ", request.stop.max_step_tokens));
  }
  for (size_t i = 0; i < request.stop.step_delimiters.size(); ++i) {
    if (request.stop.step_delimiters[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop.step_delimiters[", i, "] is empty"));
    }
  }
  if (!request.stop.step_delimiters.empty() && core_->tokenizer() == nullptr) {
    return absl::InvalidArgumentError(
        "stop.step_delimiters need a tokenizer, and this engine has none");
  }
  // The longest sample must fit in the KV pool on its own, or it could never run.
  const int longest =
      std::min(core_->max_context(), static_cast<int>(request.prompt_tokens.size()) + max_len +
                                         request.stop.max_step_tokens);
  if (CeilBlocks(longest) > core_->num_blocks()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a sample of up to ", longest, " tokens needs ", CeilBlocks(longest),
                     " KV blocks; the pool has ", core_->num_blocks()));
  }
  (void)config;
  auto state = std::make_unique<RequestState>();
  state->is_score = false;
  state->submitted = absl::Now();
  state->gen = std::move(request);
  state->gen_done = std::move(done);
  return core_->Submit(std::move(state));
}

absl::StatusOr<RequestId> Engine::SubmitScore(ScoreRequest request, ScoreCallback done) {
  const int vocab =
      core_->config().vocab_size > 0 ? core_->config().vocab_size : core_->backend()->output_dim();
  if (!done) return absl::InvalidArgumentError("SubmitScore: done callback is empty");
  if (request.sequences.empty()) return absl::InvalidArgumentError("sequences is empty");
  if (request.sequences.size() > kMaxSeqsPerRequest) {
    return absl::InvalidArgumentError(absl::StrCat("sequences has ", request.sequences.size(),
                                                   " entries; at most ", kMaxSeqsPerRequest));
  }
  for (size_t c = 0; c < request.columns.size(); ++c) {
    if (request.columns[c] < 0 || request.columns[c] >= core_->backend()->output_dim()) {
      return absl::InvalidArgumentError(absl::StrCat("columns[", c, "] = ", request.columns[c],
                                                     " is outside [0, ",
                                                     core_->backend()->output_dim(), ")"));
    }
  }
  for (size_t i = 0; i < request.sequences.size(); ++i) {
    const ScoreSequence& s = request.sequences[i];
    const std::string name = absl::StrCat("sequences[", i, "]");
    if (s.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ".tokens is empty"));
    if (auto st = ValidateTokens(s.tokens, vocab, name + ".tokens"); !st.ok()) return st;
    const int len = static_cast<int>(s.tokens.size());
    if (len > core_->max_context()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " has ", len, " tokens; the context window is ", core_->max_context()));
    }
    if (CeilBlocks(len) > core_->num_blocks()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          name, " needs ", CeilBlocks(len), " KV blocks; the pool has ", core_->num_blocks()));
    }
    for (size_t k = 0; k < s.positions.size(); ++k) {
      if (s.positions[k] < 0 || s.positions[k] >= len) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ".positions[", k, "] = ", s.positions[k], " is outside [0, ", len, ")"));
      }
    }
  }
  auto state = std::make_unique<RequestState>();
  state->is_score = true;
  state->submitted = absl::Now();
  state->score = std::move(request);
  state->score_done = std::move(done);
  return core_->Submit(std::move(state));
}

void Engine::Cancel(RequestId id) { core_->Cancel(id); }

namespace {

template <typename Result, typename SubmitFn>
absl::StatusOr<Result> RunBlocking(Engine* engine, SubmitFn submit,
                                   const std::function<bool()>& is_cancelled) {
  struct Shared {
    absl::Notification done;
    absl::StatusOr<Result> result = absl::UnknownError("no result");
  };
  auto shared = std::make_shared<Shared>();
  auto id = submit([shared](absl::StatusOr<Result> result) {
    shared->result = std::move(result);
    shared->done.Notify();
  });
  if (!id.ok()) return id.status();
  bool cancel_sent = false;
  while (!shared->done.WaitForNotificationWithTimeout(absl::Milliseconds(5))) {
    if (!cancel_sent && is_cancelled && is_cancelled()) {
      engine->Cancel(*id);
      cancel_sent = true;
    }
  }
  return std::move(shared->result);
}

}  // namespace

absl::StatusOr<GenerateResult> Engine::Generate(GenerateRequest request,
                                                const std::function<bool()>& is_cancelled) {
  return RunBlocking<GenerateResult>(
      this, [&](GenerateCallback cb) { return SubmitGenerate(std::move(request), std::move(cb)); },
      is_cancelled);
}

absl::StatusOr<ScoreResult> Engine::Score(ScoreRequest request,
                                          const std::function<bool()>& is_cancelled) {
  return RunBlocking<ScoreResult>(
      this, [&](ScoreCallback cb) { return SubmitScore(std::move(request), std::move(cb)); },
      is_cancelled);
}

EngineStats Engine::stats() const { return core_->stats(); }
void Engine::WatchPrefix(uint64_t key, std::vector<int32_t> tokens) {
  core_->WatchPrefix(key, std::move(tokens));
}
std::vector<uint64_t> Engine::CachedPrefixKeys() const { return core_->CachedPrefixKeys(); }
const ModelConfig& Engine::model_config() const { return core_->config(); }
const EngineOptions& Engine::options() const { return core_->options(); }
std::string Engine::backend_name() const { return core_->backend()->name(); }
int Engine::output_dim() const { return core_->backend()->output_dim(); }
int Engine::max_context_tokens() const { return core_->max_context(); }
int Engine::kv_blocks_total() const { return core_->num_blocks(); }
const Tokenizer* Engine::tokenizer() const { return core_->tokenizer(); }

}  // namespace arbor::runtime
