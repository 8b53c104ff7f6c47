// SampleStep: applies a forward step's results back to the sequences, and
// finishes sequences and requests. After a step it advances each computed
// chunk, publishes newly full blocks, copies wanted score rows into results,
// and completes every sequence whose tokens are all computed: a prompt or
// branch forks its children (RequestTree::ForkChildren), a sample draws its
// next token (on the sampler threads from logits, or as drawn by the backend)
// and applies it under the stop rules, a score sequence is done. Sample i of a
// branch draws with key (seed, i, position), so tokens do not depend on
// batching or preemption. A request completes when its last sequence does;
// its callback is queued for the engine to run after the iteration.
//
// Thread-safety: none; owned and driven by the engine's scheduler thread (the
// draws of one step run on helper threads, each on its own Sampler).
#ifndef ARBOR_RUNTIME_ENGINE_SAMPLE_STEP_H_
#define ARBOR_RUNTIME_ENGINE_SAMPLE_STEP_H_

#include <functional>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "runtime/engine/parallel_runner.h"
#include "runtime/engine/request.h"
#include "runtime/engine/request_tree.h"
#include "runtime/engine/step_builder.h"
#include "runtime/sampling/sampler.h"

namespace arbor::runtime {

class SampleStep {
 public:
  // `state` and `tree` must outlive it. `on_request_closed` runs (on the
  // scheduler thread) as each request finishes, before its callback is queued.
  SampleStep(EngineState* state, RequestTree* tree, int output_dim, int max_context,
             const std::vector<int32_t>& eos_token_ids, int num_sampler_threads,
             std::function<void()> on_request_closed);

  // Applies a successful forward of `step`: `out` holds the logits of its
  // output rows (host path), `drawn` the backend's draws (step.backend_draws).
  void ApplyStep(const BuiltStep& step, const std::vector<float>& out,
                 const std::vector<SampledToken>& drawn);
  // `seq`'s tokens are all computed. `last_row` holds the logits of its last
  // token, or (backend sampling) `draws` the tokens PlanDraws planned from it;
  // both null when no last row was wanted.
  void OnComputed(Seq* seq, const float* last_row, const SampledToken* draws = nullptr);
  // Whether draws are queued (OnComputed of samples awaiting ApplyStep's end).
  bool has_queued_draws() const { return !sample_jobs_.empty(); }

  // Completes `r` when its last sequence has finished.
  void MaybeCompleteRequest(RequestState* r);
  // Drops r's sequences; a Generate completes OK with unfinished outputs
  // kCancelled, a Score with `why`.
  void CancelRequest(RequestState* r, absl::Status why);
  // Drops r's sequences and completes it with `status`.
  void FailRequest(RequestState* r, absl::Status status);

  // The completion callbacks queued so far, to be run outside the step.
  std::vector<std::function<void()>> TakeCallbacks();

 private:
  struct SampleJob {
    Seq* seq;
    const float* row;  // null: `token` was drawn by the backend
    SampledToken token;
  };
  // Copies the row computed at `pos` into every slot of seq's score result
  // that wants it.
  void DeliverScoreRow(const Seq& seq, int pos, const float* row);
  // Draws the queued samples (in parallel), then applies them in order.
  void RunSampleJobs();
  SampledToken Draw(Sampler& sampler, const Seq& seq, const float* row) const;
  // Appends a drawn token to `seq` under the stop rules; true when its step ended.
  bool ApplySample(Seq* seq, const SampledToken& t);
  void FinishSeq(Seq* seq);
  void DropRequestSeqs(RequestState* r);

  EngineState* const state_;
  RequestTree* const tree_;
  const int output_dim_;
  const int max_context_;
  const std::function<void()> on_request_closed_;
  absl::flat_hash_set<int32_t> eos_ids_;
  std::unique_ptr<ParallelRunner> runner_;
  std::vector<Sampler> samplers_;  // one per runner worker
  std::vector<SampleJob> sample_jobs_;
  std::vector<std::function<void()>> callbacks_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_SAMPLE_STEP_H_
