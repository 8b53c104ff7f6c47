#include "verifier/verifier_stack.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "serving/prompt_renderer.h"

namespace arbor::verifier {

absl::StatusOr<RewardConfig> ApplyRewardConfigOverrides(const RewardConfig& config,
                                                        const RewardConfigOverrides& overrides,
                                                        bool model_has_value_head) {
  nlohmann::json json = nlohmann::json::object();
  auto add = [&json](const char* key, const std::string& value) {
    if (!value.empty()) json[key] = value;
  };
  add("kind", overrides.kind);
  add("prompt_template", overrides.prompt_template);
  add("step_tag", overrides.step_tag);
  add("step_separator", overrides.step_separator);
  add("positive_token", overrides.positive_token);
  add("negative_token", overrides.negative_token);
  add("verdict_prefix", overrides.verdict_prefix);
  add("compare_a_token", overrides.compare_a_token);
  add("compare_b_token", overrides.compare_b_token);
  auto merged = ParseRewardConfig(json.dump(), config, model_has_value_head);
  if (!merged.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("reward config overrides: ", merged.status().message()));
  }
  if (!overrides.positive_token.empty()) merged->positive_token_id.reset();
  if (!overrides.negative_token.empty()) merged->negative_token_id.reset();
  if (!overrides.step_tag.empty()) merged->step_tag_id.reset();
  if (!overrides.compare_a_token.empty()) merged->compare_a_token_id.reset();
  if (!overrides.compare_b_token.empty()) merged->compare_b_token_id.reset();
  return merged;
}

absl::StatusOr<std::unique_ptr<VerifierStack>> VerifierStack::Create(
    VerifierStackOptions options, prometheus::Registry& registry) {
  std::unique_ptr<VerifierStack> stack(new VerifierStack());
  auto loaded = serving::LoadMeteredModel(std::move(options.model), options.role, registry);
  if (!loaded.ok()) return loaded.status();
  stack->metrics_ = std::move(loaded->metrics);
  stack->model_ = std::move(loaded->model);
  runtime::Engine* engine = stack->model_.engine.get();

  const bool value_head = engine->model_config().is_value_head();
  auto config = LoadRewardConfig(stack->model_.model_dir, value_head);
  if (!config.ok()) return config.status();
  auto merged = ApplyRewardConfigOverrides(*config, options.overrides, value_head);
  if (!merged.ok()) return merged.status();
  auto renderer = serving::MakePromptRenderer(stack->model_.model_dir);
  if (!renderer.ok()) return renderer.status();
  // A judge talks to the model in its own chat template unless told otherwise.
  if (merged->kind == RewardKind::kLlmJudge && merged->chat_template.empty()) {
    merged->chat_template = renderer->default_template;
  }
  auto scorer = RewardScorer::ForModel(engine, stack->model_.tokenizer.get(), *merged,
                                       renderer->render, options.scorer);
  if (!scorer.ok()) return scorer.status();
  stack->scorer_ = *std::move(scorer);
  auto service = VerifierService::Create({.model_name = stack->model_.name}, stack->scorer_.get(),
                                         stack->metrics_.get());
  if (!service.ok()) return service.status();
  stack->service_ = *std::move(service);
  return stack;
}

VerifierStack::~VerifierStack() {
  service_.reset();
  scorer_.reset();
  if (metrics_ != nullptr) metrics_->Detach();
  model_.engine.reset();
}

}  // namespace arbor::verifier
