#include "serving/engine_metrics.h"

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace arbor::serving {

namespace {

using Labels = std::map<std::string, std::string>;

prometheus::Histogram* AddHistogram(prometheus::Registry& registry, const std::string& name,
                                    const std::string& help, const Labels& labels,
                                    const prometheus::Histogram::BucketBoundaries& buckets) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(labels,
                                                                                    buckets);
}

prometheus::Gauge* AddGauge(prometheus::Registry& registry, const std::string& name,
                            const std::string& help, const Labels& labels) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(labels);
}

prometheus::Counter* AddCounter(prometheus::Registry& registry, const std::string& name,
                                const std::string& help, const Labels& labels) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add(labels);
}

Labels With(const Labels& base, const std::string& key, const std::string& value) {
  Labels labels = base;
  labels[key] = value;
  return labels;
}

// Seconds; 1 ms to 2 min for time to first token (queueing included), 1 ms
// to 5 s between tokens.
const prometheus::Histogram::BucketBoundaries kFirstTokenBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
const prometheus::Histogram::BucketBoundaries kInterTokenBuckets = {
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5};

}  // namespace

EngineMetrics::EngineMetrics(prometheus::Registry& registry, const std::string& role,
                             const std::string& model) {
  // No model label where none is known (tests), rather than model="".
  Labels r = {{"role", role}};
  if (!model.empty()) r["model"] = model;
  const Labels& role_labels = r;
  step_seconds_ = AddHistogram(
      registry, "arbor_engine_step_seconds", "Latency of one engine forward step (with sampling)",
      r, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5});
  batch_tokens_ = AddHistogram(registry, "arbor_engine_batch_tokens",
                               "Tokens run through the model in one engine step", r,
                               {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192});
  batch_sequences_ =
      AddHistogram(registry, "arbor_engine_batch_sequences", "Sequences in one engine step", r,
                   {1, 2, 4, 8, 16, 32, 64, 128, 256, 512});
  first_token_seconds_ = AddHistogram(
      registry, "arbor_engine_time_to_first_token_seconds",
      "Time from a Generate request's submission to its first sampled token", r,
      kFirstTokenBuckets);
  inter_token_seconds_ = AddHistogram(
      registry, "arbor_engine_inter_token_seconds",
      "Time between consecutive decode steps: the gap between two tokens of a running sequence",
      r, kInterTokenBuckets);
  queue_depth_ = AddGauge(registry, "arbor_engine_queue_depth",
                          "Requests accepted by the engine and not started yet", r);
  active_requests_ = AddGauge(registry, "arbor_engine_active_requests",
                              "Requests accepted by the engine and not finished", r);
  running_sequences_ = AddGauge(registry, "arbor_engine_running_sequences",
                                "Sequences in the engine's running batch", r);
  const std::string kv_help =
      "KV cache blocks by state (used by running sequences, cached in "
      "the radix tree, free, total)";
  kv_used_ = AddGauge(registry, "arbor_engine_kv_blocks", kv_help, With(role_labels, "state", "used"));
  kv_cached_ = AddGauge(registry, "arbor_engine_kv_blocks", kv_help, With(role_labels, "state", "cached"));
  kv_free_ = AddGauge(registry, "arbor_engine_kv_blocks", kv_help, With(role_labels, "state", "free"));
  kv_total_ = AddGauge(registry, "arbor_engine_kv_blocks", kv_help, With(role_labels, "state", "total"));
  const std::string tokens_help =
      "Tokens the engine prefilled, generated, or served from its prefix cache";
  prefill_tokens_ =
      AddCounter(registry, "arbor_engine_tokens_total", tokens_help, With(role_labels, "kind", "prefill"));
  generated_tokens_ = AddCounter(registry, "arbor_engine_tokens_total", tokens_help,
                                 With(role_labels, "kind", "generated"));
  prefix_hit_tokens_ = AddCounter(registry, "arbor_engine_tokens_total", tokens_help,
                                  With(role_labels, "kind", "prefix_hit"));
  preemptions_ = AddCounter(registry, "arbor_engine_preemptions_total",
                            "Sequences preempted because the KV cache was full", r);
  const std::string steps_help =
      "Decode steps by how they ran: replay (a CUDA graph), capture (eager, then captured), "
      "eager";
  graph_replays_ = AddCounter(registry, "arbor_engine_decode_steps_total", steps_help,
                              With(role_labels, "graph", "replay"));
  graph_captures_ = AddCounter(registry, "arbor_engine_decode_steps_total", steps_help,
                               With(role_labels, "graph", "capture"));
  eager_steps_ = AddCounter(registry, "arbor_engine_decode_steps_total", steps_help,
                            With(role_labels, "graph", "eager"));
  const std::string keys_help =
      "Attention keys of decode steps: context (every sequence's whole context), and those "
      "read: prompt_shared and tree_shared (once per group of branches, cascade attention), "
      "own (once per sequence)";
  context_keys_ = AddCounter(registry, "arbor_engine_decode_attention_keys_total", keys_help,
                             With(role_labels, "kind", "context"));
  prompt_shared_keys_ = AddCounter(registry, "arbor_engine_decode_attention_keys_total",
                                   keys_help, With(role_labels, "kind", "prompt_shared"));
  tree_shared_keys_ = AddCounter(registry, "arbor_engine_decode_attention_keys_total", keys_help,
                                 With(role_labels, "kind", "tree_shared"));
  own_keys_ = AddCounter(registry, "arbor_engine_decode_attention_keys_total", keys_help,
                         With(role_labels, "kind", "own"));
  const std::string service_help =
      "Tokens of the requests a service answered: in (prompt, suffix or reward input), "
      "out (generated)";
  tokens_in_ = AddCounter(registry, "arbor_service_tokens_total", service_help,
                          With(role_labels, "direction", "in"));
  tokens_out_ = AddCounter(registry, "arbor_service_tokens_total", service_help,
                           With(role_labels, "direction", "out"));
}

EngineMetrics::~EngineMetrics() { Detach(); }

void EngineMetrics::ObserveStep(const runtime::StepInfo& step) {
  const absl::Time now = absl::Now();
  // A step with decode tokens continues sequences that got a token in the
  // step before (continuous batching runs every running sequence each step).
  if (step.decode_tokens > 0 && last_step_end_ != absl::InfinitePast()) {
    inter_token_seconds_->Observe(absl::ToDoubleSeconds(now - last_step_end_));
  }
  last_step_end_ = now;
  step_seconds_->Observe(absl::ToDoubleSeconds(step.latency));
  batch_tokens_->Observe(step.batch_tokens);
  batch_sequences_->Observe(step.num_seqs);
}

void EngineMetrics::Attach(const runtime::Engine* engine, absl::Duration period) {
  Detach();
  {
    absl::MutexLock lock(&mu_);
    engine_ = engine;
    exported_ = runtime::EngineStats();
  }
  Refresh();
  stop_ = std::make_unique<absl::Notification>();
  refresher_ = std::thread([this, period, stop = stop_.get()] {
    while (!stop->WaitForNotificationWithTimeout(period)) Refresh();
  });
}

void EngineMetrics::Detach() {
  if (refresher_.joinable()) {
    stop_->Notify();
    refresher_.join();
  }
  absl::MutexLock lock(&mu_);
  engine_ = nullptr;
}

void EngineMetrics::Refresh() {
  absl::MutexLock lock(&mu_);
  if (engine_ == nullptr) return;
  const runtime::EngineStats s = engine_->stats();
  queue_depth_->Set(s.queued_requests);
  active_requests_->Set(s.active_requests);
  running_sequences_->Set(s.running_seqs);
  kv_used_->Set(s.kv_blocks_used);
  kv_cached_->Set(s.kv_blocks_cached);
  kv_free_->Set(s.kv_blocks_free);
  kv_total_->Set(s.kv_blocks_total);
  auto advance = [](prometheus::Counter* counter, int64_t now, int64_t* seen) {
    if (now > *seen) counter->Increment(static_cast<double>(now - *seen));
    *seen = now;
  };
  advance(prefill_tokens_, s.prefill_tokens, &exported_.prefill_tokens);
  advance(generated_tokens_, s.generated_tokens, &exported_.generated_tokens);
  advance(prefix_hit_tokens_, s.prefix_hit_tokens, &exported_.prefix_hit_tokens);
  advance(preemptions_, s.preemptions, &exported_.preemptions);
  runtime::DecodeStats& seen = exported_.decode;
  advance(graph_replays_, s.decode.graph_replays, &seen.graph_replays);
  advance(graph_captures_, s.decode.graph_captures, &seen.graph_captures);
  advance(eager_steps_, s.decode.eager_steps, &seen.eager_steps);
  advance(context_keys_, s.decode.context_keys, &seen.context_keys);
  advance(prompt_shared_keys_, s.decode.prompt_shared_keys, &seen.prompt_shared_keys);
  advance(tree_shared_keys_, s.decode.tree_shared_keys, &seen.tree_shared_keys);
  advance(own_keys_, s.decode.own_keys, &seen.own_keys);
}

void EngineMetrics::AddTokensIn(int64_t n) {
  if (n > 0) tokens_in_->Increment(static_cast<double>(n));
}

void EngineMetrics::ObserveFirstToken(int64_t first_token_us) {
  if (first_token_us >= 0) first_token_seconds_->Observe(static_cast<double>(first_token_us) * 1e-6);
}

void EngineMetrics::AddTokensOut(int64_t n) {
  if (n > 0) tokens_out_->Increment(static_cast<double>(n));
}

absl::StatusOr<MeteredModel> LoadMeteredModel(ServedModelOptions options, const std::string& role,
                                              prometheus::Registry& registry) {
  MeteredModel loaded;
  loaded.metrics = std::make_unique<EngineMetrics>(
      registry, role,
      options.model_name.empty() ? ModelNameFromDir(options.model_dir) : options.model_name);
  EngineMetrics* metrics = loaded.metrics.get();
  auto observer = std::move(options.engine.step_observer);
  options.engine.step_observer = [metrics, observer](const runtime::StepInfo& step) {
    metrics->ObserveStep(step);
    if (observer) observer(step);
  };
  absl::StatusOr<ServedModel> model = LoadServedModel(std::move(options));
  if (!model.ok()) return model.status();
  loaded.model = *std::move(model);
  loaded.metrics->Attach(loaded.model.engine.get());
  return loaded;
}

}  // namespace arbor::serving
