// EngineMetrics: the Prometheus series of one Engine, in the process's shared
// registry, every series labelled role="worker" or "verifier" (so that the
// all-in-one mode can put both engines in one registry) and model="NAME" (the
// served model name, when given), all created at zero:
//   arbor_engine_step_seconds            histogram of forward-step latency
//   arbor_engine_batch_tokens            histogram of tokens per step
//   arbor_engine_batch_sequences         histogram of sequences per step
//   arbor_engine_queue_depth             gauge: requests accepted, not started
//   arbor_engine_active_requests         gauge: requests accepted, not finished
//   arbor_engine_running_sequences       gauge
//   arbor_engine_kv_blocks{state}        gauge: used, cached, free, total
//   arbor_engine_tokens_total{kind}      counter: prefill, generated, prefix_hit
//   arbor_engine_preemptions_total       counter
//   arbor_engine_time_to_first_token_seconds  histogram: a Generate request's
//                                        submission to its first sampled token
//   arbor_engine_inter_token_seconds     histogram: time between consecutive
//                                        decode steps (the gap between two
//                                        tokens of a running sequence)
//   arbor_engine_decode_steps_total{graph} counter: decode steps by how they
//                                        ran: replay (a CUDA graph), capture,
//                                        eager (runtime::DecodeStats)
//   arbor_engine_decode_attention_keys_total{kind} counter: decode steps'
//                                        attention keys: context (what one
//                                        read per sequence would read), and
//                                        what was read: prompt_shared,
//                                        tree_shared (once per group of
//                                        branches), own (per sequence)
//   arbor_service_tokens_total{direction} counter: in (prompt/candidate tokens
//                                        of requests served), out (generated)
// Per-RPC counts and latencies by method and code come from server/.
//
// Gauges and engine counters are refreshed from Engine::stats() by a
// background thread (every 250 ms) once Attach is called, so they settle when
// the engine goes idle.
//
// Thread-safety: all methods are thread-safe. Detach (or the destructor) must
// run before the attached engine is destroyed.
#ifndef ARBOR_SERVING_ENGINE_METRICS_H_
#define ARBOR_SERVING_ENGINE_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "serving/served_model.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace arbor::serving {

class EngineMetrics {
 public:
  EngineMetrics(prometheus::Registry& registry, const std::string& role,
                const std::string& model = "");
  ~EngineMetrics();
  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

  // For EngineOptions::step_observer (runs on the scheduler thread).
  void ObserveStep(const runtime::StepInfo& step);
  // Starts refreshing gauges and engine counters from `engine`.
  void Attach(const runtime::Engine* engine, absl::Duration period = absl::Milliseconds(250));
  // Stops the refresher (idempotent); the engine may be destroyed after.
  void Detach();
  // Refreshes from the attached engine now.
  void Refresh();

  void AddTokensIn(int64_t n);
  void AddTokensOut(int64_t n);
  // A finished Generate request's RequestUsage::first_token_us (< 0: none).
  void ObserveFirstToken(int64_t first_token_us);

 private:
  prometheus::Histogram* step_seconds_;
  prometheus::Histogram* batch_tokens_;
  prometheus::Histogram* batch_sequences_;
  prometheus::Histogram* first_token_seconds_;
  prometheus::Histogram* inter_token_seconds_;
  // End of the previous step (scheduler thread only, in ObserveStep).
  absl::Time last_step_end_ = absl::InfinitePast();
  prometheus::Gauge* queue_depth_;
  prometheus::Gauge* active_requests_;
  prometheus::Gauge* running_sequences_;
  prometheus::Gauge* kv_used_;
  prometheus::Gauge* kv_cached_;
  prometheus::Gauge* kv_free_;
  prometheus::Gauge* kv_total_;
  prometheus::Counter* prefill_tokens_;
  prometheus::Counter* generated_tokens_;
  prometheus::Counter* prefix_hit_tokens_;
  prometheus::Counter* preemptions_;
  prometheus::Counter* graph_replays_;
  prometheus::Counter* graph_captures_;
  prometheus::Counter* eager_steps_;
  prometheus::Counter* context_keys_;
  prometheus::Counter* prompt_shared_keys_;
  prometheus::Counter* tree_shared_keys_;
  prometheus::Counter* own_keys_;
  prometheus::Counter* tokens_in_;
  prometheus::Counter* tokens_out_;

  absl::Mutex mu_;
  const runtime::Engine* engine_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Engine counters already exported (the engine's are cumulative).
  runtime::EngineStats exported_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<absl::Notification> stop_;
  std::thread refresher_;
};

// A model loaded for serving (LoadServedModel) whose engine's steps and
// stats feed an EngineMetrics made here in `registry` under `role`, labelled
// with the served model's name; the options' own step_observer, if any,
// still sees every step. The engine refers to `metrics` (its step observer)
// and the metrics' refresher to the engine: keep `metrics` alive while the
// engine is, and Detach it before the engine goes (as WorkerStack and
// VerifierStack do in their destructors).
struct MeteredModel {
  std::unique_ptr<EngineMetrics> metrics;
  ServedModel model;
};
absl::StatusOr<MeteredModel> LoadMeteredModel(ServedModelOptions options, const std::string& role,
                                              prometheus::Registry& registry);

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_ENGINE_METRICS_H_
