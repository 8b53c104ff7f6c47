#include "worker/worker_stack.h"

#include <utility>

#include "serving/prompt_renderer.h"

namespace arbor::worker {

absl::StatusOr<std::unique_ptr<WorkerStack>> WorkerStack::Create(WorkerStackOptions options,
                                                                 prometheus::Registry& registry) {
  std::unique_ptr<WorkerStack> stack(new WorkerStack());
  stack->metrics_ = std::make_unique<serving::EngineMetrics>(
      registry, options.role,
      options.model.model_name.empty() ? serving::ModelNameFromDir(options.model.model_dir)
                                       : options.model.model_name);
  serving::EngineMetrics* metrics = stack->metrics_.get();
  auto observer = std::move(options.model.engine.step_observer);
  options.model.engine.step_observer = [metrics, observer](const runtime::StepInfo& step) {
    metrics->ObserveStep(step);
    if (observer) observer(step);
  };
  auto model = serving::LoadServedModel(std::move(options.model));
  if (!model.ok()) return model.status();
  stack->model_ = *std::move(model);
  stack->metrics_->Attach(stack->model_.engine.get());

  auto renderer = serving::MakePromptRenderer(stack->model_.model_dir);
  if (!renderer.ok()) return renderer.status();
  GeneratorServiceOptions service_options;
  service_options.model_name = stack->model_.name;
  service_options.default_chat_template =
      options.chat_template.empty() || options.chat_template == "auto" ? renderer->default_template
                                                                       : options.chat_template;
  auto service = GeneratorService::Create(service_options, stack->model_.engine.get(),
                                          stack->model_.tokenizer.get(), renderer->render,
                                          stack->metrics_.get());
  if (!service.ok()) return service.status();
  stack->service_ = *std::move(service);
  return stack;
}

WorkerStack::~WorkerStack() {
  service_.reset();
  if (metrics_ != nullptr) metrics_->Detach();
  model_.engine.reset();  // before the tokenizer it uses, and before metrics_
}

}  // namespace arbor::worker
