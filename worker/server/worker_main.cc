// arbor-worker: serves arbor.v1.Generator for one model folder.
//   arbor-worker --model models/policy --port 50051 --metrics_port 9091
// Prints "listening on HOST:PORT" and "metrics on HOST:PORT" when ready; drains
// on SIGTERM/SIGINT (health NOT_SERVING, in-flight calls finish within
// --drain_grace_ms, the rest are cancelled and their KV blocks released).
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "common/log.h"
#include "prometheus/registry.h"
#include "server/flags.h"
#include "server/server.h"
#include "worker/server/engine_flags.h"
#include "worker/server/engine_metrics.h"
#include "worker/server/generator_service.h"
#include "worker/server/prompt_renderer.h"

ABSL_FLAG(std::string, chat_template, "",
          "Chat template for prompt_text requests that name none: chatml, llama3 or raw; "
          "default: the model's (from tokenizer_config.json), else chatml");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "arbor-worker: %s\n", status.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  arbor::server::BlockShutdownSignals();
  arbor::server::ParseServerCommandLine(
      argc, argv,
      "arbor-worker --model DIR [--port N] [--metrics_port N] [--chat_template NAME] "
      "[--kv_cache_tokens N] [--max_batch_tokens N] [--backend cpu] [--threads N] "
      "[--max_queued_requests N]\nServes arbor.v1.Generator (Extend, Info).");
  using arbor::worker::server::EngineMetrics;
  auto registry = std::make_shared<prometheus::Registry>();
  auto metrics = std::make_unique<EngineMetrics>(*registry, "worker");

  arbor::worker::server::ServedModelOptions model_options =
      arbor::worker::server::ServedModelOptionsFromFlags();
  EngineMetrics* m = metrics.get();
  model_options.engine.step_observer = [m](const arbor::worker::StepInfo& s) { m->ObserveStep(s); };
  auto served = arbor::worker::server::LoadServedModel(model_options);
  if (!served.ok()) return Fail(served.status());
  metrics->Attach(served->engine.get());

  auto renderer = arbor::worker::server::MakePromptRenderer(served->model_dir);
  if (!renderer.ok()) return Fail(renderer.status());
  arbor::worker::server::GeneratorServiceOptions service_options;
  service_options.model_name = served->name;
  service_options.default_chat_template = absl::GetFlag(FLAGS_chat_template);
  if (service_options.default_chat_template.empty()) {
    service_options.default_chat_template = renderer->default_template;
  }
  auto service = arbor::worker::server::GeneratorService::Create(
      service_options, served->engine.get(), served->tokenizer.get(), renderer->render,
      metrics.get());
  if (!service.ok()) return Fail(service.status());

  auto server = arbor::server::Server::Start(arbor::server::ServerOptionsFromFlags("worker"),
                                             {service->get()}, registry);
  if (!server.ok()) return Fail(server.status());
  arbor::server::RunUntilShutdownSignal(**server);
  // Teardown in dependency order: no calls, then no service, then no engine.
  server->reset();
  service->reset();
  metrics->Detach();
  served->engine.reset();
  ARBOR_LOG(INFO) << "arbor-worker: stopped";
  return 0;
}
