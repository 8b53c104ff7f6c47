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
#include "rpc/flags.h"
#include "rpc/server.h"
#include "serving/engine_flags.h"
#include "worker/worker_stack.h"

ABSL_FLAG(std::string, chat_template, "",
          "Chat template for prompt_text requests that name none: model (the model's own "
          "Jinja chat_template), chatml, llama3 or raw; default: model when "
          "tokenizer_config.json has a chat_template, else raw");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "arbor-worker: %s\n", status.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  arbor::rpc::BlockShutdownSignals();
  arbor::rpc::ParseServerCommandLine(
      argc, argv,
      "arbor-worker --model DIR [--port N] [--metrics_port N] [--chat_template NAME] "
      "[--kv_cache_tokens N | --kv_cache_blocks N] [--max_batch_tokens N] [--backend cpu|cuda] "
      "[--kv_memory_fraction F | --kv_memory_share F] "
      "[--threads N] [--max_queued_requests N]\nServes arbor.v1.Generator (Extend, Info).");
  auto registry = std::make_shared<prometheus::Registry>();
  arbor::worker::WorkerStackOptions options;
  options.model = arbor::serving::ServedModelOptionsFromFlags();
  options.chat_template = absl::GetFlag(FLAGS_chat_template);
  auto stack = arbor::worker::WorkerStack::Create(std::move(options), *registry);
  if (!stack.ok()) return Fail(stack.status());

  auto server = arbor::rpc::Server::Start(arbor::rpc::ServerOptionsFromFlags("worker"),
                                          {(*stack)->service()}, registry);
  if (!server.ok()) return Fail(server.status());
  arbor::rpc::RunUntilShutdownSignal(**server);
  server->reset();  // no calls left; then the service and the engine go
  stack->reset();
  ARBOR_LOG(INFO) << "arbor-worker: stopped";
  return 0;
}
