// Request and sequence state shared by the parts of the engine (request tree,
// scheduler, step builder, sample step): what a request asked for, what it has
// produced so far, and the sequences computing it in the paged KV cache.
//
// A sequence is "running" while it holds blocks (its KV for tokens
// [0, num_computed)), "waiting" when it holds none (not yet admitted, or
// preempted). Sequences are ordered by `order` (request id, then creation), the
// priority the scheduler serves them in.
//
// Thread-safety: none; everything here is owned and touched by the scheduler
// thread alone.
#ifndef ARBOR_RUNTIME_ENGINE_REQUEST_H_
#define ARBOR_RUNTIME_ENGINE_REQUEST_H_

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/check.h"
#include "runtime/backend/backend.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"

namespace arbor::runtime {

inline int CeilBlocks(int tokens) { return (tokens + kKvBlockSize - 1) / kKvBlockSize; }

// Sequences one request may create (outputs + prefills), so that a sequence's
// priority key (request id << 24 | index) stays ordered.
inline constexpr int kMaxSeqsPerRequest = 1 << 20;

enum class SeqKind {
  kPrompt,  // the shared prompt of a Generate request with several distinct suffixes
  kBranch,  // prompt + one distinct suffix; forks into the samples of its branches
  kSample,  // one (branch, sample): decodes one step
  kScore,   // one sequence of a Score request
};

struct RequestState;

// One sequence of tokens with KV in the paged cache.
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

// Branches of a Generate request with the same suffix: they share one prefill.
struct Group {
  std::vector<int32_t> suffix;
  std::vector<int> branches;
};

struct RequestState {
  RequestId id = 0;
  bool is_score = false;
  bool started = false;   // some sequence was admitted
  absl::Time submitted;   // by Engine::Submit*
  absl::Time first_step;  // when `started` became true
  absl::Time first_token = absl::InfinitePast();  // first sampled token
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

// Marks a Generate output final (the first reason given wins).
inline void FinishOutput(RequestState* r, int output, FinishReason reason) {
  if (r->output_final[output]) return;
  r->output_final[output] = 1;
  r->gen_result.outputs[output].finish_reason = reason;
  --r->open_outputs;
}

// `tokens` computed from position `start` for one sequence in this step.
struct ScheduledChunk {
  Seq* seq;   // null: its sequence was preempted after being scheduled
  int start;  // first position computed
  int n;      // tokens computed
};

// Cumulative counters behind EngineStats.
struct EngineCounters {
  int running_seqs = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prefill_tokens = 0;
  int64_t prefix_hit_tokens = 0;  // as charged to requests' usage
  int64_t generated_tokens = 0;
  int last_batch_tokens = 0;
  int last_batch_seqs = 0;
};

// The live requests and their sequences.
struct EngineState {
  absl::flat_hash_map<RequestId, std::unique_ptr<RequestState>> requests;
  std::map<uint64_t, std::unique_ptr<Seq>> seqs;  // by order
  EngineCounters counters;

  // A new waiting sequence of `r`.
  Seq* NewSeq(RequestState* r, SeqKind kind) {
    auto seq = std::make_unique<Seq>();
    // Older requests first, then creation order within a request: a request's
    // sequences are never preempted for a newer request's.
    ARBOR_CHECK(r->seqs_created < (uint64_t{1} << 24));
    seq->order = (r->id << 24) | r->seqs_created++;
    seq->request = r;
    seq->kind = kind;
    Seq* raw = seq.get();
    seqs.emplace(raw->order, std::move(seq));
    ++r->live_seqs;
    return raw;
  }
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_REQUEST_H_
