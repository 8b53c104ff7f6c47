// WorkerStack: everything arbor-worker serves, built from options in one call
// (the model and its engine, the engine's metrics in a shared registry, the
// Generator service) and torn down in the right order. arbor-worker runs one;
// the all-in-one mode can run one in process and register service() with its
// own server.
//
// Thread-safety: the service and engine are thread-safe; Create and the
// destructor are not to be raced with calls. The stack must outlive any
// grpc::Server that service() is registered with (destroy the server first).
#ifndef ARBOR_WORKER_WORKER_STACK_H_
#define ARBOR_WORKER_WORKER_STACK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "serving/engine_metrics.h"
#include "serving/served_model.h"
#include "worker/generator_service.h"

namespace prometheus {
class Registry;
}

namespace arbor::worker {

struct WorkerStackOptions {
  serving::ServedModelOptions model;
  // Template for prompt_text requests naming none; "" or "auto" takes the
  // model's (tokenizer_config.json), else chatml.
  std::string chat_template;
  // Metrics role label.
  std::string role = "worker";
};

class WorkerStack {
 public:
  // `registry` receives the engine metrics and must outlive the stack.
  static absl::StatusOr<std::unique_ptr<WorkerStack>> Create(WorkerStackOptions options,
                                                             prometheus::Registry& registry);
  ~WorkerStack();
  WorkerStack(const WorkerStack&) = delete;
  WorkerStack& operator=(const WorkerStack&) = delete;

  GeneratorService* service() const { return service_.get(); }
  runtime::Engine* engine() const { return model_.engine.get(); }
  const runtime::Tokenizer* tokenizer() const { return model_.tokenizer.get(); }
  const std::string& model_name() const { return model_.name; }
  serving::EngineMetrics* metrics() const { return metrics_.get(); }

 private:
  WorkerStack() = default;

  std::unique_ptr<serving::EngineMetrics> metrics_;  // outlives the engine (its observer)
  serving::ServedModel model_;
  std::unique_ptr<GeneratorService> service_;
};

}  // namespace arbor::worker

#endif  // ARBOR_WORKER_WORKER_STACK_H_
