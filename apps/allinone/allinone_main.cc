// arbor-allinone: the coordinator, a worker and a verifier in ONE process, on
// the bundled models by default (models/policy, models/prm):
//   arbor-allinone --port 50051 --metrics_port 9090
// The worker's Generator and the verifier's Verifier services run on an
// internal gRPC server bound to 127.0.0.1 (a free port); the coordinator's
// worker and verifier pools point at that loopback address, so a job takes
// exactly the path it takes in a distributed deployment (routing, health
// checks, usage accounting). The public server (--host/--port) serves
// arbor.v1.Reasoning with health, reflection and /metrics (engine metrics of
// both models and the coordinator's, in one registry); --http_port N also
// serves the OpenAI-compatible HTTP API (docs/HTTP.md).
// Prints "listening on HOST:PORT" when ready to take jobs; drains on
// SIGTERM/SIGINT (public server first, then the jobs, then the internal
// server and the engines).
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "coordinator/client_flags.h"
#include "coordinator/coordinator.h"
#include "coordinator/openai/http_server.h"
#include "coordinator/reasoning_service.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "rpc/flags.h"
#include "rpc/server.h"
#include "verifier/verifier_stack.h"
#include "worker/worker_stack.h"

ABSL_FLAG(std::string, model, "",
          "Policy model folder (Hugging Face layout); default: the bundled models/policy");
ABSL_FLAG(std::string, reward_model, "",
          "Reward model folder with prm_config.json; default: the bundled models/prm; "
          "\"none\": no verifier (greedy and majority vote only)");
ABSL_FLAG(std::string, reward_kind, "",
          "Reward model kind, as arbor-verifier's --kind: token_logit_prm, value_head_prm, orm or "
          "llm_judge (any causal LM, e.g. the bundled policy, as a generative judge that also "
          "serves Verifier.Compare for best_of_n tournament selection); default: prm_config.json's");
ABSL_FLAG(std::string, positive_token, "", "Reward model: label token of a correct step");
ABSL_FLAG(std::string, negative_token, "", "Reward model: label token of a wrong step");
ABSL_FLAG(std::string, compare_a_token, "", "LLM judge, Compare: verdict token of Solution A");
ABSL_FLAG(std::string, compare_b_token, "", "LLM judge, Compare: verdict token of Solution B");
ABSL_FLAG(std::string, backend, "cpu", "Engine backend of both models: cpu, or cuda where built");
ABSL_FLAG(int, threads, 0, "CPU backend threads of the policy; 0 = all hardware threads");
ABSL_FLAG(int, reward_threads, -1, "CPU backend threads of the reward model; -1 = --threads");
ABSL_FLAG(int64_t, kv_cache_tokens, 65536, "Policy KV cache capacity in tokens");
ABSL_FLAG(int64_t, reward_kv_cache_tokens, 65536, "Reward model KV cache capacity in tokens");
ABSL_FLAG(double, kv_memory_share, 0,
          "--backend=cuda: when > 0, the policy's KV pool is this share of the GPU's total "
          "memory (wins over --kv_cache_tokens)");
ABSL_FLAG(double, reward_kv_memory_share, 0,
          "--backend=cuda: the same for the reward model's KV pool");
ABSL_FLAG(std::string, kv_cache_dtype, "auto",
          "Policy KV cache elements: auto, bf16, or fp8_e4m3 (cuda only)");
ABSL_FLAG(std::string, reward_kv_cache_dtype, "auto", "The same for the reward model");
ABSL_FLAG(int, stream_priority, 0,
          "--backend=cuda: priority of the policy's CUDA stream against the reward model's, on "
          "CUDA's scale (lower is scheduled first; clamped to the device's range, -5..0 on an "
          "H100): -5 hands free SMs to the policy's decode kernels before the reward model's "
          "prefill blocks (docs/E2E.md)");
ABSL_FLAG(int, reward_stream_priority, 0, "The same for the reward model's stream");
ABSL_FLAG(int, max_batch_tokens, 4096, "Most tokens in one engine step (each model)");
ABSL_FLAG(int, max_running_seqs, 512, "Most sequences in a running batch (each model)");
ABSL_FLAG(int, max_queued_requests, 4096, "Engine requests accepted and not finished");
ABSL_FLAG(std::string, chat_template, "",
          "Chat template for requests naming none: model (the model's own Jinja chat_template), "
          "chatml, llama3 or raw; default: model when it has one, else raw");
ABSL_FLAG(int, score_cache_entries, 1 << 16, "Reward step scores remembered (LRU); 0 disables");
ABSL_FLAG(bool, prefix_cache, true,
          "Reuse KV blocks and step scores across calls in both engines; false computes every "
          "call's whole prefix (the stateless baseline of docs/E2E.md)");
ABSL_FLAG(int, max_concurrent_jobs, 8, "Jobs run at once");
ABSL_FLAG(int, max_queued_jobs, 64, "Jobs waiting beyond those; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, call_timeout_ms, 120000, "Cap on one worker/verifier call");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "arbor-allinone: %s\n", status.ToString().c_str());
  return 2;
}

// The bundled model folder `name` ("policy", "prm"): next to the binary's
// checkout (build-*/bin/ or build-*/coordinator/allinone/ up to the source
// root), under $ARBOR_MODELS, ./models, or the source dir this was built from.
absl::StatusOr<std::string> FindBundledModel(const std::string& name) {
  namespace fs = std::filesystem;
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("ARBOR_MODELS"); env != nullptr && *env != '\0') {
    roots.push_back(env);
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
         dir = dir.parent_path()) {
      roots.push_back(dir / "models");
    }
  }
  roots.push_back(fs::current_path(ec) / "models");
#ifdef ARBOR_SOURCE_MODELS_DIR
  roots.push_back(ARBOR_SOURCE_MODELS_DIR);
#endif
  std::string tried;
  for (const fs::path& root : roots) {
    fs::path dir = root / name;
    if (fs::exists(dir / "config.json", ec)) return dir.string();
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", dir.string());
  }
  return absl::NotFoundError(absl::StrCat("no bundled model '", name, "' found (tried ", tried,
                                          "); pass --model / --reward_model or set ARBOR_MODELS"));
}

arbor::serving::ServedModelOptions ModelOptions(std::string dir, int threads, int64_t kv_tokens,
                                                double kv_share, std::string kv_dtype,
                                                int stream_priority) {
  arbor::serving::ServedModelOptions options;
  options.model_dir = std::move(dir);
  options.backend = absl::GetFlag(FLAGS_backend);
  options.threads = threads;
  options.kv_cache_tokens = kv_tokens;
  options.kv_memory_share = kv_share;
  options.kv_cache_dtype = std::move(kv_dtype);
  options.stream_priority = stream_priority;
  options.engine.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.engine.max_running_seqs = absl::GetFlag(FLAGS_max_running_seqs);
  options.engine.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  options.engine.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  arbor::rpc::BlockShutdownSignals();
  arbor::rpc::ParseServerCommandLine(
      argc, argv,
      "arbor-allinone [--port N] [--metrics_port N] [--model DIR] [--reward_model DIR|none] "
      "[--reward_kind llm_judge] [--backend cpu] [--threads N]\nServes arbor.v1.Reasoning with an in-process worker and "
      "verifier on the bundled models.");

  std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) {
    auto found = FindBundledModel("policy");
    if (!found.ok()) return Fail(found.status());
    model_dir = *found;
  }
  std::string reward_dir = absl::GetFlag(FLAGS_reward_model);
  if (reward_dir.empty()) {
    auto found = FindBundledModel("prm");
    if (!found.ok()) return Fail(found.status());
    reward_dir = *found;
  }
  const bool with_verifier = reward_dir != "none";

  // One registry for everything /metrics shows: both engines and the coordinator.
  auto registry = std::make_shared<prometheus::Registry>();
  arbor::worker::WorkerStackOptions worker_options;
  worker_options.model =
      ModelOptions(model_dir, absl::GetFlag(FLAGS_threads), absl::GetFlag(FLAGS_kv_cache_tokens),
                   absl::GetFlag(FLAGS_kv_memory_share), absl::GetFlag(FLAGS_kv_cache_dtype),
                   absl::GetFlag(FLAGS_stream_priority));
  worker_options.chat_template = absl::GetFlag(FLAGS_chat_template);
  auto worker = arbor::worker::WorkerStack::Create(std::move(worker_options), *registry);
  if (!worker.ok()) return Fail(worker.status());

  std::unique_ptr<arbor::verifier::VerifierStack> verifier;
  if (with_verifier) {
    arbor::verifier::VerifierStackOptions verifier_options;
    const int reward_threads = absl::GetFlag(FLAGS_reward_threads);
    verifier_options.model = ModelOptions(
        reward_dir, reward_threads >= 0 ? reward_threads : absl::GetFlag(FLAGS_threads),
        absl::GetFlag(FLAGS_reward_kv_cache_tokens), absl::GetFlag(FLAGS_reward_kv_memory_share),
        absl::GetFlag(FLAGS_reward_kv_cache_dtype), absl::GetFlag(FLAGS_reward_stream_priority));
    verifier_options.overrides = {.kind = absl::GetFlag(FLAGS_reward_kind),
                                  .positive_token = absl::GetFlag(FLAGS_positive_token),
                                  .negative_token = absl::GetFlag(FLAGS_negative_token),
                                  .compare_a_token = absl::GetFlag(FLAGS_compare_a_token),
                                  .compare_b_token = absl::GetFlag(FLAGS_compare_b_token)};
    verifier_options.scorer.score_cache_entries =
        absl::GetFlag(FLAGS_prefix_cache) ? absl::GetFlag(FLAGS_score_cache_entries) : 0;
    auto created = arbor::verifier::VerifierStack::Create(std::move(verifier_options), *registry);
    if (!created.ok()) return Fail(created.status());
    verifier = std::move(*created);
  }
  ARBOR_LOG(INFO) << "arbor-allinone: policy " << (*worker)->model_name() << " (" << model_dir
                  << ")"
                  << (with_verifier ? absl::StrCat(", reward model ", verifier->model_name(), " (",
                                                   reward_dir, ")")
                                    : std::string(", no reward model"));

  // The internal server: loopback only, a free port, no /metrics of its own.
  arbor::rpc::ServerOptions internal_options;
  internal_options.name = "allinone-internal";
  internal_options.host = "127.0.0.1";
  internal_options.port = 0;
  internal_options.metrics_port = -1;
  internal_options.announce = false;
  internal_options.max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  std::vector<grpc::Service*> internal_services = {(*worker)->service()};
  if (verifier) internal_services.push_back(verifier->service());
  auto internal = arbor::rpc::Server::Start(internal_options, internal_services);
  if (!internal.ok()) return Fail(internal.status());
  const std::string loopback = (*internal)->address();

  arbor::coordinator::CoordinatorOptions options;
  options.workers.targets = loopback;
  if (verifier) options.verifiers.targets = loopback;
  for (arbor::coordinator::PoolOptions* pool : {&options.workers, &options.verifiers}) {
    // One in-process endpoint: check it often (a call that fails ejects it
    // until its next passing check, which Lost() asks for at once).
    pool->health_interval = absl::Milliseconds(500);
  }
  options.default_model = (*worker)->model_name();
  if (verifier) options.default_reward_model = verifier->model_name();
  options.max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs);
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.call_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_call_timeout_ms));
  if (absl::Status access = arbor::coordinator::ApplyClientAccessFlags(&options); !access.ok()) {
    return Fail(access);
  }
  auto coordinator = arbor::coordinator::Coordinator::Create(options, registry);
  if (!coordinator.ok()) return Fail(coordinator.status());
  if (!(*coordinator)->workers().WaitForHealthy(absl::Seconds(30)) ||
      (verifier && !(*coordinator)->verifiers()->WaitForHealthy(absl::Seconds(30)))) {
    return Fail(absl::UnavailableError(
        absl::StrCat("the in-process worker/verifier at ", loopback, " did not become healthy")));
  }

  std::unique_ptr<grpc::Service> reasoning =
      arbor::coordinator::CreateReasoningService(**coordinator);
  auto server = arbor::rpc::Server::Start(arbor::rpc::ServerOptionsFromFlags("allinone"),
                                          {reasoning.get()}, registry);
  if (!server.ok()) return Fail(server.status());
  auto http = arbor::coordinator::openai::StartHttpServerFromFlags(
      **coordinator, options.max_concurrent_jobs + options.max_queued_jobs);
  if (!http.ok()) return Fail(http.status());
  arbor::rpc::RunUntilShutdownSignal(**server);
  if (*http) (*http)->Stop(absl::Milliseconds(absl::GetFlag(FLAGS_drain_grace_ms)));
  http->reset();
  // Order: no new jobs (public servers drained), then the running jobs end,
  // then the worker/verifier calls they made are gone and the engines can go.
  server->reset();
  (*coordinator)->Shutdown();
  reasoning.reset();
  coordinator->reset();
  (*internal)->Drain(absl::Seconds(1));
  internal->reset();
  verifier.reset();
  worker->reset();
  ARBOR_LOG(INFO) << "arbor-allinone: stopped";
  return 0;
}
