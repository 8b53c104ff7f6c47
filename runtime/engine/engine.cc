#include "runtime/engine/engine.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/check.h"
#include "common/log.h"
#include "runtime/kv/kv_block.h"
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

namespace {

int CeilBlocks(int tokens) { return (tokens + kKvBlockSize - 1) / kKvBlockSize; }

// Sequences one request may create (outputs + prefills), so that a sequence's
// priority key (request id << 24 | index) stays ordered.
constexpr int kMaxSeqsPerRequest = 1 << 20;

enum class SeqKind {
  kPrompt,  // the shared prompt of a Generate request with several distinct suffixes
  kBranch,  // prompt + one distinct suffix; forks into the samples of its branches
  kSample,  // one (branch, sample): decodes one step
  kScore,   // one sequence of a Score request
};

struct RequestState;

// One sequence of tokens with KV in the paged cache. A sequence is "running"
// while it holds blocks (its KV for tokens [0, num_computed)), "waiting" when it
// holds none (not yet admitted, or preempted).
struct Seq {
  uint64_t order = 0;  // priority: lower is older (request id, then creation)
  RequestState* request = nullptr;
  SeqKind kind = SeqKind::kScore;
  int group = -1;        // kBranch: index into RequestState::groups
  int output = -1;       // kSample: index into the result's outputs
  int score_index = -1;  // kScore: index into ScoreRequest::sequences
  std::vector<int32_t> tokens;
  int num_computed = 0;
  std::vector<int32_t> blocks;
  bool running = false;
  // Whether the output row of the last token is needed when it is computed.
  bool wants_last_row = true;
  // kSample: positions below this are counted as prefill (recomputation).
  int prefill_until = 0;
  // kSample: the step's text decoder (null without a tokenizer).
  std::unique_ptr<IncrementalDecoder> text;
  // kScore: wanted (position, slot) sorted by position.
  std::vector<std::pair<int32_t, int32_t>> wanted;
  // kScore: wanted positions below this were delivered or handed to probes.
  int rows_done_below = 0;
  // kScore: a probe computes rows wanted inside another sequence's cached prefix.
  bool probe = false;
};

struct Group {
  std::vector<int32_t> suffix;
  std::vector<int> branches;
};

struct RequestState {
  RequestId id = 0;
  bool is_score = false;
  bool started = false;  // some sequence was admitted
  bool finished = false;
  int live_seqs = 0;     // sequences not yet finished
  int open_outputs = 0;  // kSample outputs (or score sequences) not yet final
  uint64_t seqs_created = 0;
  RequestUsage usage;
  // Generate.
  GenerateRequest gen;
  Engine::GenerateCallback gen_done;
  GenerateResult gen_result;
  std::vector<Group> groups;
  std::vector<int> output_offset;  // per branch
  std::vector<char> output_final;  // per output
  // Score.
  ScoreRequest score;
  Engine::ScoreCallback score_done;
  ScoreResult score_result;
  bool cancelled = false;
  absl::Status cancel_status;
};

// Runs fn(worker, index) for index in [0, n) on the calling thread plus
// `workers` helper threads (worker 0 is the caller). Used to draw the samples
// of a step in parallel: with a 150k vocabulary one draw costs about a
// millisecond, and a step may draw hundreds.
class ParallelRunner {
 public:
  explicit ParallelRunner(int workers) {
    for (int w = 1; w <= workers; ++w) threads_.emplace_back([this, w] { WorkerLoop(w); });
  }
  ~ParallelRunner() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (auto& t : threads_) t.join();
  }
  int num_workers() const { return static_cast<int>(threads_.size()) + 1; }

  void Run(int n, const std::function<void(int, int)>& fn) {
    if (threads_.empty() || n < 2) {
      for (int i = 0; i < n; ++i) fn(0, i);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      busy_ = static_cast<int>(threads_.size());
      ++generation_;
    }
    Work(0, fn, n);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* busy) { return *busy == 0; }, &busy_));
    fn_ = nullptr;
  }

 private:
  void Work(int worker, const std::function<void(int, int)>& fn, int n) {
    for (int i = next_.fetch_add(1); i < n; i = next_.fetch_add(1)) fn(worker, i);
  }
  void WorkerLoop(int worker) {
    uint64_t seen = 0;
    while (true) {
      const std::function<void(int, int)>* fn;
      int n;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this, &seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || generation_ != seen;
        };
        mu_.Await(absl::Condition(&ready));
        if (stop_) return;
        seen = generation_;
        fn = fn_;
        n = n_;
      }
      Work(worker, *fn, n);
      absl::MutexLock lock(&mu_);
      --busy_;
    }
  }

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  const std::function<void(int, int)>* fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int> next_{0};
  std::vector<std::thread> threads_;
};

}  // namespace

// The scheduler and everything it owns. Members below `scheduler thread only`
// are touched by the scheduler thread alone, so they need no lock.
class EngineCore {
 public:
  EngineCore(EngineOptions options, std::unique_ptr<ModelBackend> backend,
             std::unique_ptr<RadixKvCache> cache, const Tokenizer* tokenizer, int max_context)
      : options_(std::move(options)),
        backend_(std::move(backend)),
        config_(backend_->config()),
        tokenizer_(tokenizer),
        max_context_(max_context),
        cache_(std::move(cache)) {
    stats_.kv_blocks_total = cache_->num_blocks();
    stats_.kv_blocks_free = cache_->num_blocks();
    eos_ids_.insert(config_.eos_token_ids.begin(), config_.eos_token_ids.end());
    int sampler_threads = options_.num_sampler_threads;
    if (sampler_threads <= 0) {
      sampler_threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 8);
    }
    runner_ = std::make_unique<ParallelRunner>(sampler_threads - 1);
    samplers_.resize(runner_->num_workers());
    backend_sampling_ =
        options_.sampling == EngineOptions::Sampling::kBackend ||
        (options_.sampling == EngineOptions::Sampling::kAuto && backend_->samples_on_device());
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

  const EngineOptions& options() const { return options_; }
  const ModelConfig& config() const { return config_; }
  ModelBackend* backend() const { return backend_.get(); }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  int max_context() const { return max_context_; }
  int num_blocks() const { return cache_->num_blocks(); }

 private:
  struct Entry {
    Seq* seq;
    int start;  // first position computed
    int n;      // tokens computed
  };

  // ---- scheduler loop ----
  void Loop();
  bool Intake();  // false when stopping
  void StartRequest(std::unique_ptr<RequestState> request);
  void StartGenerate(RequestState* r);
  void StartScore(RequestState* r);
  Seq* NewSeq(RequestState* r, SeqKind kind);
  void Iterate();
  void CheckDeadlines();

  // ---- scheduling ----
  int BlocksNeeded(const Seq& seq, int n) const;
  // Reserves blocks for computing n more tokens of `seq` (shrinking a prefill
  // chunk to what fits); preempts newer sequences when allowed. Returns tokens
  // scheduled (0: none).
  int Schedule(Seq* seq, int n, bool allow_preempt);
  void Preempt(Seq* victim);
  bool Admit(Seq* seq);
  void SpawnProbes(Seq* seq);
  bool ShouldDefer(const Seq& waiting) const;
  void PublishBlocks(Seq* seq);
  void ReleaseSeq(Seq* seq);

  // ---- completion ----
  // `last_row` holds the logits of the sequence's last token, or (backend
  // sampling) `draws` the tokens PlanDraws planned from it.
  void OnComputed(Seq* seq, const float* last_row, const SampledToken* draws = nullptr);
  void ForkBranch(Seq* prompt, int group, const float* row);
  // Samples of `parent`'s group, each drawn from `row` or taken from *draws
  // (advanced past them).
  void SpawnSamples(Seq* parent, int group, const float* row, const SampledToken** draws);
  // The draws OnComputed will make from `seq`'s last row, in the order it
  // makes them: the RNG key of each sample it spawns or extends.
  void PlanDraws(const Seq& seq, std::vector<RowSampling>* out) const;
  // Draws the queued samples (in parallel), then applies them in order.
  void RunSampleJobs();
  SampledToken Draw(Sampler& sampler, const Seq& seq, const float* row) const;
  // Appends a drawn token to `seq` under the stop rules; true when its step ended.
  bool ApplySample(Seq* seq, const SampledToken& t);
  void FinishOutput(RequestState* r, int output, FinishReason reason);
  void FinishSeq(Seq* seq);
  void MaybeCompleteRequest(RequestState* r);
  void CancelRequest(RequestState* r, absl::Status why);
  void FailRequest(RequestState* r, absl::Status status);
  void DropRequestSeqs(RequestState* r);
  void PublishStats();

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

  // scheduler thread only
  std::unique_ptr<RadixKvCache> cache_;
  absl::flat_hash_set<int32_t> eos_ids_;
  struct SampleJob {
    Seq* seq;
    const float* row;  // null: `token` was drawn by the backend
    SampledToken token;
  };
  bool backend_sampling_ = false;  // see EngineOptions::sampling
  std::vector<RowSampling> draw_specs_;
  std::vector<SampledToken> drawn_;
  std::unique_ptr<ParallelRunner> runner_;
  std::vector<Sampler> samplers_;  // one per runner worker
  std::vector<SampleJob> sample_jobs_;
  absl::flat_hash_map<RequestId, std::unique_ptr<RequestState>> requests_;
  std::map<uint64_t, std::unique_ptr<Seq>> seqs_;  // by order
  std::vector<Entry> entries_;
  std::vector<std::pair<int32_t, int32_t>> copies_;
  std::vector<std::function<void()>> callbacks_;
  int budget_ = 0;
  bool progressed_ = true;  // the last iteration ran a step or admitted something
  int running_seqs_ = 0;
  int64_t steps_ = 0;
  int64_t preemptions_ = 0;
  int64_t prefill_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;  // as charged to requests' usage
  int64_t generated_tokens_ = 0;
  int last_batch_tokens_ = 0;
  int last_batch_seqs_ = 0;
  ForwardBatch batch_;
  std::vector<float> out_;

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
    std::vector<std::function<void()>> callbacks;
    callbacks.swap(callbacks_);
    for (auto& cb : callbacks) cb();
  }
  // Shutdown: every unfinished request completes with UNAVAILABLE.
  std::vector<RequestState*> open;
  for (auto& [id, r] : requests_) open.push_back(r.get());
  for (RequestState* r : open) FailRequest(r, absl::UnavailableError("engine shut down"));
  std::vector<std::unique_ptr<RequestState>> incoming;
  {
    absl::MutexLock lock(&mu_);
    incoming.swap(incoming_);
  }
  for (auto& r : incoming) {
    RequestState* raw = r.get();
    requests_[raw->id] = std::move(r);
    FailRequest(raw, absl::UnavailableError("engine shut down"));
  }
  PublishStats();
  std::vector<std::function<void()>> callbacks;
  callbacks.swap(callbacks_);
  for (auto& cb : callbacks) cb();
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
    if (seqs_.empty()) {
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
    auto it = requests_.find(id);
    if (it != requests_.end()) CancelRequest(it->second.get(), absl::CancelledError("cancelled"));
  }
  return true;
}

void EngineCore::CheckDeadlines() {
  const absl::Time now = absl::Now();
  std::vector<RequestState*> late;
  for (auto& [id, r] : requests_) {
    const absl::Time deadline = r->is_score ? r->score.deadline : r->gen.deadline;
    if (now >= deadline) late.push_back(r.get());
  }
  for (RequestState* r : late) CancelRequest(r, absl::DeadlineExceededError("deadline exceeded"));
}

Seq* EngineCore::NewSeq(RequestState* r, SeqKind kind) {
  auto seq = std::make_unique<Seq>();
  // Older requests first, then creation order within a request: a request's
  // sequences are never preempted for a newer request's.
  ARBOR_CHECK(r->seqs_created < (uint64_t{1} << 24));
  seq->order = (r->id << 24) | r->seqs_created++;
  seq->request = r;
  seq->kind = kind;
  Seq* raw = seq.get();
  seqs_.emplace(raw->order, std::move(seq));
  ++r->live_seqs;
  return raw;
}

void EngineCore::StartRequest(std::unique_ptr<RequestState> request) {
  RequestState* r = request.get();
  requests_[r->id] = std::move(request);
  if (r->is_score) {
    StartScore(r);
  } else {
    StartGenerate(r);
  }
  MaybeCompleteRequest(r);
}

void EngineCore::StartGenerate(RequestState* r) {
  const GenerateRequest& g = r->gen;
  // Outputs, ordered by branch then sample.
  int total = 0;
  for (size_t b = 0; b < g.branches.size(); ++b) {
    r->output_offset.push_back(total);
    for (int s = 0; s < g.branches[b].num_samples; ++s) {
      SampleOutput out;
      out.branch_index = static_cast<int>(b);
      out.sample_index = s;
      r->gen_result.outputs.push_back(std::move(out));
    }
    total += g.branches[b].num_samples;
  }
  r->output_final.assign(total, 0);
  r->open_outputs = total;
  // Branches with the same suffix share one prefill.
  std::map<std::vector<int32_t>, int> by_suffix;
  for (size_t b = 0; b < g.branches.size(); ++b) {
    auto [it, inserted] = by_suffix.emplace(g.branches[b].suffix_tokens, r->groups.size());
    if (inserted) r->groups.push_back({g.branches[b].suffix_tokens, {}});
    r->groups[it->second].branches.push_back(static_cast<int>(b));
  }
  const int prompt_len = static_cast<int>(g.prompt_tokens.size());
  std::vector<int> live_groups;
  for (size_t gi = 0; gi < r->groups.size(); ++gi) {
    const int len = prompt_len + static_cast<int>(r->groups[gi].suffix.size());
    if (len >= max_context_) {
      // Nothing can be generated: the branch is finished.
      for (int b : r->groups[gi].branches) {
        for (int s = 0; s < g.branches[b].num_samples; ++s) {
          FinishOutput(r, r->output_offset[b] + s, FinishReason::kContext);
        }
      }
    } else {
      live_groups.push_back(static_cast<int>(gi));
    }
  }
  if (live_groups.size() == 1) {
    Seq* seq = NewSeq(r, SeqKind::kBranch);
    seq->group = live_groups[0];
    seq->tokens = g.prompt_tokens;
    const auto& suffix = r->groups[live_groups[0]].suffix;
    seq->tokens.insert(seq->tokens.end(), suffix.begin(), suffix.end());
  } else if (live_groups.size() > 1) {
    Seq* seq = NewSeq(r, SeqKind::kPrompt);
    seq->tokens = g.prompt_tokens;
    seq->wants_last_row = false;
    for (int gi : live_groups) {
      if (r->groups[gi].suffix.empty()) seq->wants_last_row = true;
    }
  }
}

void EngineCore::StartScore(RequestState* r) {
  const ScoreRequest& sr = r->score;
  const int width =
      sr.columns.empty() ? backend_->output_dim() : static_cast<int>(sr.columns.size());
  r->score_result.row_width = width;
  r->score_result.rows.resize(sr.sequences.size());
  r->open_outputs = static_cast<int>(sr.sequences.size());
  for (size_t i = 0; i < sr.sequences.size(); ++i) {
    const ScoreSequence& s = sr.sequences[i];
    r->score_result.rows[i].assign(s.positions.size() * static_cast<size_t>(width), 0.0f);
    Seq* seq = NewSeq(r, SeqKind::kScore);
    seq->score_index = static_cast<int>(i);
    seq->tokens = s.tokens;
    for (size_t k = 0; k < s.positions.size(); ++k) {
      seq->wanted.emplace_back(s.positions[k], static_cast<int32_t>(k));
    }
    std::sort(seq->wanted.begin(), seq->wanted.end());
    seq->wants_last_row =
        !seq->wanted.empty() && seq->wanted.back().first == static_cast<int>(s.tokens.size()) - 1;
  }
}

// ---------------------------------------------------------------------------
// Scheduling.

int EngineCore::BlocksNeeded(const Seq& seq, int n) const {
  int needed = CeilBlocks(seq.num_computed + n) - static_cast<int>(seq.blocks.size());
  if (seq.num_computed % kKvBlockSize != 0) {
    const int32_t last = seq.blocks[seq.num_computed / kKvBlockSize];
    if (cache_->ref_count(last) > 1 || cache_->is_cached(last)) ++needed;
  }
  return needed;
}

int EngineCore::Schedule(Seq* seq, int n, bool allow_preempt) {
  ARBOR_CHECK(seq->running && n >= 1);
  while (BlocksNeeded(*seq, n) > cache_->available_blocks()) {
    // A prefill chunk first shrinks to what fits (no one is preempted for
    // the sake of a larger chunk); a decode step or a chunk that cannot take
    // a single token preempts the newest sequence newer than this one.
    const int cow = BlocksNeeded(*seq, 0);  // 1 when the partial block must be copied
    const int fit =
        std::min(n - 1, (static_cast<int>(seq->blocks.size()) + cache_->available_blocks() - cow) *
                                kKvBlockSize -
                            seq->num_computed);
    if (fit >= 1) {
      n = fit;
      break;
    }
    Seq* victim = nullptr;
    if (allow_preempt) {
      for (auto it = seqs_.rbegin(); it != seqs_.rend(); ++it) {
        Seq* s = it->second.get();
        if (s->order <= seq->order) break;
        if (s->running) {
          victim = s;
          break;
        }
      }
    }
    if (victim == nullptr) return 0;
    Preempt(victim);
  }
  ARBOR_CHECK(BlocksNeeded(*seq, n) <= cache_->available_blocks());
  if (seq->num_computed % kKvBlockSize != 0) {
    int32_t& last = seq->blocks[seq->num_computed / kKvBlockSize];
    auto writable = cache_->CopyOnWrite(last, &copies_);
    ARBOR_CHECK(writable.ok());
    last = *writable;
  }
  const int new_blocks = CeilBlocks(seq->num_computed + n) - static_cast<int>(seq->blocks.size());
  if (new_blocks > 0) {
    auto blocks = cache_->Allocate(new_blocks);
    ARBOR_CHECK(blocks.ok());
    seq->blocks.insert(seq->blocks.end(), blocks->begin(), blocks->end());
  }
  entries_.push_back({seq, seq->num_computed, n});
  budget_ -= n;
  return n;
}

void EngineCore::Preempt(Seq* victim) {
  for (Entry& e : entries_) {
    if (e.seq == victim) {
      budget_ += e.n;
      e.seq = nullptr;
    }
  }
  ReleaseSeq(victim);
  if (victim->kind == SeqKind::kSample) {
    victim->prefill_until = static_cast<int>(victim->tokens.size()) - 1;
  }
  ++preemptions_;
}

void EngineCore::ReleaseSeq(Seq* seq) {
  if (!seq->running) return;
  cache_->Release(seq->blocks);
  seq->blocks.clear();
  seq->num_computed = 0;
  seq->running = false;
  --running_seqs_;
}

void EngineCore::PublishBlocks(Seq* seq) {
  // Without the prefix cache a sequence's blocks stay private to its request
  // and are freed with it (EngineOptions::prefix_cache).
  if (!options_.prefix_cache) return;
  cache_->Insert(absl::MakeConstSpan(seq->tokens).first(seq->num_computed), &seq->blocks);
}

bool EngineCore::ShouldDefer(const Seq& waiting) const {
  if (!options_.prefix_cache) return false;  // nothing to wait for: nothing is shared
  // Another sequence is computing a prefix this one shares: wait for it to be
  // published instead of computing it twice (e.g. the question shared by the
  // candidates of a Score request).
  for (const Entry& e : entries_) {
    if (e.seq == nullptr) continue;
    const Seq& r = *e.seq;
    const size_t limit = std::min(waiting.tokens.size(), r.tokens.size());
    size_t common = 0;
    while (common < limit && waiting.tokens[common] == r.tokens[common]) ++common;
    const int shared_blocks = static_cast<int>(common) / kKvBlockSize;
    if (shared_blocks > 0 && r.num_computed < shared_blocks * kKvBlockSize) {
      return true;
    }
  }
  return false;
}

bool EngineCore::Admit(Seq* seq) {
  const int len = static_cast<int>(seq->tokens.size());
  const int cap = seq->wants_last_row ? len - 1 : len;
  auto match = cache_->MatchPrefix(absl::MakeConstSpan(seq->tokens).first(cap));
  seq->blocks = std::move(match.blocks);
  seq->num_computed = match.num_tokens;
  seq->running = true;
  ++running_seqs_;
  RequestState* r = seq->request;
  r->started = true;
  r->usage.prefix_cache_hit_tokens += match.num_tokens;
  prefix_hit_tokens_ += match.num_tokens;
  if (seq->num_computed == len) {  // wholly cached, no last row wanted
    if (seq->kind == SeqKind::kScore) SpawnProbes(seq);
    OnComputed(seq, nullptr);
    return true;
  }
  // Only sequences newer than this one can be preempted for it.
  if (Schedule(seq, std::min(len - seq->num_computed, budget_), /*allow_preempt=*/true) == 0) {
    r->usage.prefix_cache_hit_tokens -= match.num_tokens;
    prefix_hit_tokens_ -= match.num_tokens;
    ReleaseSeq(seq);
    return false;
  }
  if (seq->kind == SeqKind::kScore) SpawnProbes(seq);
  return true;
}

void EngineCore::SpawnProbes(Seq* seq) {
  // Rows wanted inside the matched prefix: each comes from a probe that
  // reruns at most one block of tokens over the cached blocks before it,
  // rather than giving up the cache from the first wanted position on (the
  // verifier scores every step end of a solution that grows by one step).
  auto& wanted = seq->wanted;
  auto w = std::lower_bound(wanted.begin(), wanted.end(),
                            std::make_pair(seq->rows_done_below, INT32_MIN));
  const auto end =
      std::lower_bound(wanted.begin(), wanted.end(), std::make_pair(seq->num_computed, INT32_MIN));
  std::vector<std::vector<std::pair<int32_t, int32_t>>> probes;
  // (After a preemption the match may end below rows_done_below: no probes.)
  while (w < end) {
    const int pos = w->first;
    probes.emplace_back();
    for (; w < end && w->first == pos; ++w) probes.back().push_back(*w);
  }
  seq->rows_done_below = std::max(seq->rows_done_below, seq->num_computed);
  for (auto& probe_wanted : probes) {
    Seq* probe = NewSeq(seq->request, SeqKind::kScore);
    probe->probe = true;
    probe->score_index = seq->score_index;
    probe->tokens.assign(seq->tokens.begin(), seq->tokens.begin() + probe_wanted[0].first + 1);
    probe->wanted = std::move(probe_wanted);
    probe->wants_last_row = true;
  }
}

void EngineCore::Iterate() {
  entries_.clear();
  copies_.clear();
  budget_ = options_.max_batch_tokens;
  progressed_ = false;
  // 1. Decode steps of running sequences, oldest first; 2. their prefill chunks.
  std::vector<Seq*> running;
  for (auto& [order, s] : seqs_) {
    if (s->running) running.push_back(s.get());
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (Seq* s : running) {
      if (!s->running || budget_ <= 0) continue;
      const int remaining = static_cast<int>(s->tokens.size()) - s->num_computed;
      if (remaining <= 0) continue;
      if ((pass == 0) != (remaining == 1)) continue;
      Schedule(s, std::min(remaining, budget_), /*allow_preempt=*/true);
    }
  }
  // 3. Admit waiting sequences, oldest first (FIFO: stop at the first that
  //    does not fit), preempting only newer ones.
  int deferred = 0;
  for (auto it = seqs_.begin(); it != seqs_.end() && budget_ > 0;) {
    Seq* s = it->second.get();
    ++it;  // Admit may finish (and erase) s
    if (s->running) continue;
    if (running_seqs_ >= options_.max_running_seqs) break;
    if (ShouldDefer(*s)) {
      if (++deferred > 64) break;
      continue;
    }
    if (!Admit(s)) break;
    progressed_ = true;
  }
  ARBOR_CHECK(sample_jobs_.empty());  // admission completes no sample

  // Build the batch.
  ForwardBatch& b = batch_;
  b.tokens.clear();
  b.positions.clear();
  b.seq_starts.assign(1, 0);
  b.context_lens.clear();
  b.block_tables.clear();
  b.output_rows.clear();
  b.max_blocks_per_seq = 0;
  std::vector<Entry> entries;
  for (const Entry& e : entries_) {
    if (e.seq != nullptr) entries.push_back(e);
  }
  if (entries.empty()) {
    if (!copies_.empty()) {
      absl::Status st = backend_->CopyBlocks(copies_);
      if (!st.ok()) {
        ARBOR_LOG(ERROR) << "CopyBlocks failed: " << st;
      }
    }
    return;
  }
  // output rows wanted: (entry index, position, row)
  struct Want {
    int entry;
    int position;
  };
  std::vector<Want> wants;
  bool score_rows = false;
  int prefill_tokens = 0, decode_tokens = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    const Seq& s = *e.seq;
    b.max_blocks_per_seq = std::max(b.max_blocks_per_seq, static_cast<int>(s.blocks.size()));
    const int base = b.num_tokens();
    for (int p = e.start; p < e.start + e.n; ++p) {
      b.tokens.push_back(s.tokens[p]);
      b.positions.push_back(p);
    }
    b.seq_starts.push_back(b.num_tokens());
    b.context_lens.push_back(e.start + e.n);
    const int end = e.start + e.n;
    if (s.kind == SeqKind::kScore) {
      score_rows = score_rows || !s.wanted.empty();
      auto lo = std::lower_bound(s.wanted.begin(), s.wanted.end(),
                                 std::make_pair(e.start, std::numeric_limits<int32_t>::min()));
      int last_pos = -1;
      for (auto w = lo; w != s.wanted.end() && w->first < end; ++w) {
        if (w->first == last_pos) continue;
        last_pos = w->first;
        b.output_rows.push_back(base + (w->first - e.start));
        wants.push_back({static_cast<int>(i), w->first});
      }
    } else if (end == static_cast<int>(s.tokens.size()) && s.wants_last_row) {
      b.output_rows.push_back(base + e.n - 1);
      wants.push_back({static_cast<int>(i), end - 1});
    }
    RequestUsage& u = s.request->usage;
    if (s.kind == SeqKind::kSample) {
      const int prefill = std::max(0, std::min(end, s.prefill_until) - e.start);
      u.prefill_tokens += prefill;
      prefill_tokens += prefill;
      decode_tokens += e.n - prefill;
    } else {
      u.prefill_tokens += e.n;
      prefill_tokens += e.n;
    }
  }
  b.block_tables.assign(entries.size() * static_cast<size_t>(b.max_blocks_per_seq), -1);
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& blocks = entries[i].seq->blocks;
    std::copy(blocks.begin(), blocks.end(),
              b.block_tables.begin() + static_cast<long>(i * b.max_blocks_per_seq));
  }

  // Backend sampling: one output row per planned draw (a prompt's row once
  // per sample it spawns), and tokens come back instead of logits. Score rows
  // need their logits, so a step with any takes the host path.
  std::vector<size_t> first_draw;  // per want, into draw_specs_ / drawn_; then the end
  if (backend_sampling_ && !score_rows) {
    draw_specs_.clear();
    for (const Want& w : wants) {
      first_draw.push_back(draw_specs_.size());
      PlanDraws(*entries[w.entry].seq, &draw_specs_);
    }
    first_draw.push_back(draw_specs_.size());
  }
  // Output rows are bounded by the step's token budget (backend scratch).
  const bool backend_draws =
      !first_draw.empty() && draw_specs_.size() <= static_cast<size_t>(options_.max_batch_tokens);
  if (backend_draws) {
    std::vector<int32_t> rows;
    rows.swap(b.output_rows);
    for (size_t j = 0; j < wants.size(); ++j) b.output_rows.resize(first_draw[j + 1], rows[j]);
  }

  const absl::Time start = absl::Now();
  absl::Status status = absl::OkStatus();
  if (!copies_.empty()) status = backend_->CopyBlocks(copies_);
  if (status.ok()) {
    status = backend_draws ? backend_->ForwardSample(b, draw_specs_, &drawn_)
                           : backend_->Forward(b, &out_);
  }
  if (status.ok() && backend_draws && drawn_.size() != draw_specs_.size()) {
    status = absl::InternalError(absl::StrCat("backend returned ", drawn_.size(), " draws for ",
                                              draw_specs_.size(), " rows"));
  }
  if (status.ok() && !backend_draws &&
      out_.size() != b.output_rows.size() * static_cast<size_t>(backend_->output_dim())) {
    status = absl::InternalError(absl::StrCat("backend returned ", out_.size(), " values for ",
                                              b.output_rows.size(), " rows"));
  }
  if (!status.ok()) {
    ARBOR_LOG(ERROR) << "forward step failed: " << status;
    std::vector<RequestState*> failed;
    for (const Entry& e : entries) {
      if (std::find(failed.begin(), failed.end(), e.seq->request) == failed.end()) {
        failed.push_back(e.seq->request);
      }
    }
    for (RequestState* r : failed) FailRequest(r, status);
    return;
  }
  ++steps_;
  progressed_ = true;
  last_batch_tokens_ = b.num_tokens();
  last_batch_seqs_ = b.num_seqs();
  prefill_tokens_ += prefill_tokens;

  // Advance, publish full blocks, deliver rows.
  const int dim = backend_->output_dim();
  size_t next_want = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    Seq* s = entries[i].seq;
    const int before = s->num_computed;
    s->num_computed = entries[i].start + entries[i].n;
    if (s->num_computed / kKvBlockSize > before / kKvBlockSize) PublishBlocks(s);
    s->rows_done_below = std::max(s->rows_done_below, s->num_computed);
    const float* last_row = nullptr;
    const SampledToken* last_draws = nullptr;
    for (; next_want < wants.size() && wants[next_want].entry == static_cast<int>(i); ++next_want) {
      const int pos = wants[next_want].position;
      if (backend_draws) {  // only last rows of sample-bearing sequences are wanted
        last_draws = drawn_.data() + first_draw[next_want];
        continue;
      }
      const float* row = out_.data() + next_want * static_cast<size_t>(dim);
      if (s->kind == SeqKind::kScore) {
        RequestState* r = s->request;
        const auto& columns = r->score.columns;
        const int width = r->score_result.row_width;
        auto& rows = r->score_result.rows[s->score_index];
        auto lo = std::lower_bound(s->wanted.begin(), s->wanted.end(),
                                   std::make_pair(pos, std::numeric_limits<int32_t>::min()));
        for (auto w = lo; w != s->wanted.end() && w->first == pos; ++w) {
          float* dst = rows.data() + static_cast<size_t>(w->second) * width;
          if (columns.empty()) {
            std::copy(row, row + dim, dst);
          } else {
            for (int c = 0; c < width; ++c) dst[c] = row[columns[c]];
          }
        }
      }
      if (pos == static_cast<int>(s->tokens.size()) - 1) last_row = row;
    }
    if (s->num_computed == static_cast<int>(s->tokens.size())) OnComputed(s, last_row, last_draws);
  }
  RunSampleJobs();
  if (options_.step_observer) {
    StepInfo info;
    info.latency = absl::Now() - start;
    info.batch_tokens = b.num_tokens();
    info.prefill_tokens = prefill_tokens;
    info.decode_tokens = decode_tokens;
    info.num_seqs = b.num_seqs();
    options_.step_observer(info);
  }
}

// ---------------------------------------------------------------------------
// Completion.

void EngineCore::OnComputed(Seq* seq, const float* last_row, const SampledToken* draws) {
  RequestState* r = seq->request;
  switch (seq->kind) {
    case SeqKind::kPrompt: {
      for (size_t gi = 0; gi < r->groups.size(); ++gi) {
        const int len = static_cast<int>(seq->tokens.size() + r->groups[gi].suffix.size());
        if (len >= max_context_) continue;  // finished at start
        if (r->groups[gi].suffix.empty()) {
          SpawnSamples(seq, static_cast<int>(gi), last_row, &draws);
        } else {
          ForkBranch(seq, static_cast<int>(gi), last_row);
        }
      }
      FinishSeq(seq);
      break;
    }
    case SeqKind::kBranch:
      SpawnSamples(seq, seq->group, last_row, &draws);
      FinishSeq(seq);
      break;
    case SeqKind::kSample:
      ARBOR_CHECK(last_row != nullptr || draws != nullptr);
      sample_jobs_.push_back(
          {seq, draws != nullptr ? nullptr : last_row, draws != nullptr ? *draws : SampledToken()});
      break;
    case SeqKind::kScore:
      if (!seq->probe) --r->open_outputs;
      FinishSeq(seq);
      break;
  }
}

void EngineCore::ForkBranch(Seq* prompt, int group, const float* /*row*/) {
  RequestState* r = prompt->request;
  Seq* branch = NewSeq(r, SeqKind::kBranch);
  branch->group = group;
  branch->tokens = prompt->tokens;
  const auto& suffix = r->groups[group].suffix;
  branch->tokens.insert(branch->tokens.end(), suffix.begin(), suffix.end());
  // The suffix may be cached from an earlier call (the previous step of this
  // branch); otherwise share the prompt's blocks, its partial block copy-on-write.
  const int len = static_cast<int>(branch->tokens.size());
  auto match = cache_->MatchPrefix(absl::MakeConstSpan(branch->tokens).first(len - 1));
  if (match.num_tokens > prompt->num_computed) {
    branch->blocks = std::move(match.blocks);
    branch->num_computed = match.num_tokens;
    r->usage.prefix_cache_hit_tokens += match.num_tokens - prompt->num_computed;
    prefix_hit_tokens_ += match.num_tokens - prompt->num_computed;
  } else {
    cache_->Release(match.blocks);
    branch->blocks = prompt->blocks;
    cache_->Retain(branch->blocks);
    branch->num_computed = prompt->num_computed;
  }
  branch->running = true;
  ++running_seqs_;
}

void EngineCore::SpawnSamples(Seq* parent, int group, const float* row,
                              const SampledToken** draws) {
  ARBOR_CHECK(row != nullptr || *draws != nullptr);
  RequestState* r = parent->request;
  for (int b : r->groups[group].branches) {
    for (int i = 0; i < r->gen.branches[b].num_samples; ++i) {
      Seq* s = NewSeq(r, SeqKind::kSample);
      s->output = r->output_offset[b] + i;
      s->tokens = parent->tokens;
      s->blocks = parent->blocks;
      cache_->Retain(s->blocks);
      s->num_computed = parent->num_computed;
      s->running = true;
      ++running_seqs_;
      if (tokenizer_ != nullptr) s->text = std::make_unique<IncrementalDecoder>(tokenizer_);
      if (*draws != nullptr) {
        sample_jobs_.push_back({s, nullptr, *(*draws)++});
      } else {
        sample_jobs_.push_back({s, row, {}});
      }
    }
  }
}

void EngineCore::PlanDraws(const Seq& seq, std::vector<RowSampling>* out) const {
  const RequestState* r = seq.request;
  // As Draw keys them: the new sample's tokens are its parent's.
  auto add = [&](int output) {
    const SampleOutput& o = r->gen_result.outputs[output];
    RowSampling spec;
    spec.params = r->gen.sampling;
    spec.seed = r->gen.branches[o.branch_index].seed;
    spec.stream = static_cast<uint64_t>(o.sample_index);
    spec.position = static_cast<uint64_t>(seq.tokens.size());
    out->push_back(spec);
  };
  auto add_group = [&](int group) {  // SpawnSamples' order
    for (int b : r->groups[group].branches) {
      for (int i = 0; i < r->gen.branches[b].num_samples; ++i) add(r->output_offset[b] + i);
    }
  };
  switch (seq.kind) {
    case SeqKind::kPrompt:  // OnComputed's loop
      for (size_t gi = 0; gi < r->groups.size(); ++gi) {
        const int len = static_cast<int>(seq.tokens.size() + r->groups[gi].suffix.size());
        if (len < max_context_ && r->groups[gi].suffix.empty()) add_group(static_cast<int>(gi));
      }
      break;
    case SeqKind::kBranch:
      add_group(seq.group);
      break;
    case SeqKind::kSample:
      add(seq.output);
      break;
    case SeqKind::kScore:
      break;
  }
}

void EngineCore::RunSampleJobs() {
  if (sample_jobs_.empty()) return;
  const std::function<void(int, int)> draw = [this](int worker, int i) {
    SampleJob& job = sample_jobs_[i];
    if (job.row != nullptr) job.token = Draw(samplers_[worker], *job.seq, job.row);
  };
  const int64_t work = static_cast<int64_t>(sample_jobs_.size()) * backend_->output_dim();
  if (work >= (int64_t{1} << 18)) {
    runner_->Run(static_cast<int>(sample_jobs_.size()), draw);
  } else {
    for (size_t i = 0; i < sample_jobs_.size(); ++i) draw(0, static_cast<int>(i));
  }
  std::vector<SampleJob> jobs;
  jobs.swap(sample_jobs_);
  for (const SampleJob& job : jobs) {
    if (ApplySample(job.seq, job.token)) FinishSeq(job.seq);
  }
}

SampledToken EngineCore::Draw(Sampler& sampler, const Seq& seq, const float* row) const {
  ARBOR_CHECK(row != nullptr);
  const RequestState* r = seq.request;
  const SampleOutput& out = r->gen_result.outputs[seq.output];
  const BranchSpec& branch = r->gen.branches[out.branch_index];
  return sampler.Sample(absl::MakeConstSpan(row, backend_->output_dim()), r->gen.sampling,
                        branch.seed, static_cast<uint64_t>(out.sample_index),
                        static_cast<uint64_t>(seq.tokens.size()));
}

bool EngineCore::ApplySample(Seq* seq, const SampledToken& t) {
  RequestState* r = seq->request;
  SampleOutput& out = r->gen_result.outputs[seq->output];
  ++r->usage.generated_tokens;
  ++generated_tokens_;
  out.logprob += t.logprob;
  const StopRules& stop = r->gen.stop;
  if (!stop.ignore_eos && eos_ids_.contains(t.token)) {
    FinishOutput(r, seq->output, FinishReason::kEos);
    return true;
  }
  seq->tokens.push_back(t.token);
  out.tokens.push_back(t.token);
  if (r->gen.return_token_logprobs) out.token_logprobs.push_back(t.logprob);
  bool delimiter = false;
  if (seq->text != nullptr) {
    const size_t before = out.text.size();
    out.text += seq->text->Add(t.token);
    for (const std::string& d : stop.step_delimiters) {
      // Only a match that ends in the new text is new.
      const size_t from = before >= d.size() - 1 ? before - (d.size() - 1) : 0;
      if (out.text.find(d, from) != std::string::npos) {
        delimiter = true;
        break;
      }
    }
  }
  if (delimiter) {
    FinishOutput(r, seq->output, FinishReason::kStep);
  } else if (static_cast<int>(seq->tokens.size()) >= max_context_) {
    FinishOutput(r, seq->output, FinishReason::kContext);
  } else if (static_cast<int>(out.tokens.size()) >= stop.max_step_tokens) {
    FinishOutput(r, seq->output, FinishReason::kLength);
  } else {
    return false;
  }
  return true;
}

void EngineCore::FinishOutput(RequestState* r, int output, FinishReason reason) {
  if (r->output_final[output]) return;
  r->output_final[output] = 1;
  r->gen_result.outputs[output].finish_reason = reason;
  --r->open_outputs;
}

void EngineCore::FinishSeq(Seq* seq) {
  RequestState* r = seq->request;
  if (seq->kind == SeqKind::kSample && seq->text != nullptr) {
    r->gen_result.outputs[seq->output].text += seq->text->Finish();
  }
  ReleaseSeq(seq);
  --r->live_seqs;
  seqs_.erase(seq->order);  // destroys seq
  MaybeCompleteRequest(r);
}

void EngineCore::MaybeCompleteRequest(RequestState* r) {
  if (r->finished || r->live_seqs > 0) return;
  ARBOR_CHECK(r->open_outputs == 0 || r->cancelled);
  r->finished = true;
  auto owned = std::move(requests_[r->id]);
  requests_.erase(r->id);
  if (r->is_score) {
    if (r->cancelled) {
      callbacks_.push_back([done = std::move(r->score_done), st = r->cancel_status] { done(st); });
    } else {
      r->score_result.computed_tokens = r->usage.prefill_tokens;
      r->score_result.cached_tokens = r->usage.prefix_cache_hit_tokens;
      callbacks_.push_back(
          [done = std::move(r->score_done), result = std::move(r->score_result)]() mutable {
            done(std::move(result));
          });
    }
  } else {
    r->gen_result.usage = r->usage;
    callbacks_.push_back(
        [done = std::move(r->gen_done), result = std::move(r->gen_result)]() mutable {
          done(std::move(result));
        });
  }
  absl::MutexLock lock(&mu_);
  --active_requests_;
}

void EngineCore::DropRequestSeqs(RequestState* r) {
  std::vector<uint64_t> ids;
  for (auto& [order, s] : seqs_) {
    if (s->request == r) ids.push_back(order);
  }
  for (uint64_t order : ids) {
    Seq* s = seqs_[order].get();
    if (s->kind == SeqKind::kSample && s->text != nullptr) {
      r->gen_result.outputs[s->output].text += s->text->Finish();
    }
    ReleaseSeq(s);
    seqs_.erase(order);
  }
  r->live_seqs = 0;
}

void EngineCore::CancelRequest(RequestState* r, absl::Status why) {
  if (r->finished) return;
  r->cancelled = true;
  r->cancel_status = std::move(why);
  DropRequestSeqs(r);
  if (!r->is_score) {
    for (size_t o = 0; o < r->output_final.size(); ++o) {
      FinishOutput(r, static_cast<int>(o), FinishReason::kCancelled);
    }
  }
  MaybeCompleteRequest(r);
}

void EngineCore::FailRequest(RequestState* r, absl::Status status) {
  if (r->finished) return;
  DropRequestSeqs(r);
  r->finished = true;
  auto owned = std::move(requests_[r->id]);
  requests_.erase(r->id);
  if (r->is_score) {
    callbacks_.push_back([done = std::move(r->score_done), status] { done(status); });
  } else {
    callbacks_.push_back([done = std::move(r->gen_done), status] { done(status); });
  }
  absl::MutexLock lock(&mu_);
  --active_requests_;
}

void EngineCore::PublishStats() {
  const RadixKvCache::Stats cs = cache_->stats();
  int waiting = 0, queued = 0;
  for (auto& [order, s] : seqs_) {
    if (!s->running) ++waiting;
  }
  for (auto& [id, r] : requests_) {
    if (!r->started) ++queued;
  }
  absl::MutexLock lock(&mu_);
  stats_.queued_requests = queued + static_cast<int>(incoming_.size());
  stats_.active_requests = active_requests_;
  stats_.running_seqs = running_seqs_;
  stats_.waiting_seqs = waiting;
  stats_.last_batch_tokens = last_batch_tokens_;
  stats_.last_batch_seqs = last_batch_seqs_;
  stats_.kv_blocks_total = cs.num_blocks;
  stats_.kv_blocks_used = cs.used_blocks;
  stats_.kv_blocks_cached = cs.cached_blocks;
  stats_.kv_blocks_free = cs.free_blocks;
  stats_.prefix_hit_tokens = prefix_hit_tokens_;
  stats_.prefill_tokens = prefill_tokens_;
  stats_.generated_tokens = generated_tokens_;
  stats_.steps = steps_;
  stats_.preemptions = preemptions_;
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
  if (options.max_context_tokens > 0)
    max_context = std::min(max_context, options.max_context_tokens);
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
const ModelConfig& Engine::model_config() const { return core_->config(); }
const EngineOptions& Engine::options() const { return core_->options(); }
std::string Engine::backend_name() const { return core_->backend()->name(); }
int Engine::output_dim() const { return core_->backend()->output_dim(); }
int Engine::max_context_tokens() const { return core_->max_context(); }
int Engine::kv_blocks_total() const { return core_->num_blocks(); }
const Tokenizer* Engine::tokenizer() const { return core_->tokenizer(); }

}  // namespace arbor::runtime
