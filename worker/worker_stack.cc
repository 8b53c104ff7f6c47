#include "worker/worker_stack.h"

#include <utility>

#include "serving/prompt_renderer.h"

namespace arbor::worker {

absl::StatusOr<std::unique_ptr<WorkerStack>> WorkerStack::Create(WorkerStackOptions options,
                                                                 prometheus::Registry& registry) {
  std::unique_ptr<WorkerStack> stack(new WorkerStack());
  auto loaded = serving::LoadMeteredModel(std::move(options.model), options.role, registry);
  if (!loaded.ok()) return loaded.status();
  stack->metrics_ = std::move(loaded->metrics);
  stack->model_ = std::move(loaded->model);

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
