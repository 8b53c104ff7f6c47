// arbor-verifier: serves arbor.v1.Verifier for one reward model folder.
//   arbor-verifier --model models/prm --port 50052 --metrics_port 9092
// The reward format comes from <model>/prm_config.json (see
// verifier/reward_config.h), each key overridable by the flag of the same
// name. Prints "listening on HOST:PORT" and "metrics on HOST:PORT" when ready;
// drains on SIGTERM/SIGINT.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "server/flags.h"
#include "server/server.h"
#include "verifier/reward_config.h"
#include "verifier/reward_scorer.h"
#include "verifier/verifier_service.h"
#include "worker/server/engine_flags.h"
#include "worker/server/engine_metrics.h"
#include "worker/server/prompt_renderer.h"

ABSL_FLAG(std::string, kind, "",
          "Reward model kind: token_logit_prm, value_head_prm or orm; default: prm_config.json's, "
          "else value_head_prm for a checkpoint with a score head, token_logit_prm otherwise");
ABSL_FLAG(std::string, step_tag, "", "Text after each step whose last token's row is read");
ABSL_FLAG(std::string, positive_token, "", "Label token of a correct step (token-logit heads)");
ABSL_FLAG(std::string, negative_token, "", "Label token of a wrong step (token-logit heads)");
ABSL_FLAG(std::string, prompt_template, "",
          "Prompt format with {question}, or a chat template name (chatml, llama3, raw)");
ABSL_FLAG(std::string, step_separator, "", "Text between a step's tag and the next step");
ABSL_FLAG(int, score_cache_entries, 1 << 16, "Step scores remembered (LRU); 0 disables");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "arbor-verifier: %s\n", status.ToString().c_str());
  return 2;
}

// prm_config.json, then the flags that were given.
absl::StatusOr<arbor::verifier::RewardConfig> RewardConfigFromFlags(const std::string& model_dir,
                                                                    bool has_value_head) {
  using arbor::verifier::RewardConfig;
  auto config = arbor::verifier::LoadRewardConfig(model_dir, has_value_head);
  if (!config.ok()) return config.status();
  nlohmann::json overrides = nlohmann::json::object();
  auto add = [&overrides](const char* key, const std::string& value) {
    if (!value.empty()) overrides[key] = value;
  };
  add("kind", absl::GetFlag(FLAGS_kind));
  add("prompt_template", absl::GetFlag(FLAGS_prompt_template));
  add("step_tag", absl::GetFlag(FLAGS_step_tag));
  add("step_separator", absl::GetFlag(FLAGS_step_separator));
  add("positive_token", absl::GetFlag(FLAGS_positive_token));
  add("negative_token", absl::GetFlag(FLAGS_negative_token));
  auto merged = arbor::verifier::ParseRewardConfig(overrides.dump(), *config, has_value_head);
  if (!merged.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("flags: ", merged.status().message()));
  }
  // A label token given as a flag replaces the id from prm_config.json.
  if (!absl::GetFlag(FLAGS_positive_token).empty()) merged->positive_token_id.reset();
  if (!absl::GetFlag(FLAGS_negative_token).empty()) merged->negative_token_id.reset();
  if (!absl::GetFlag(FLAGS_step_tag).empty()) merged->step_tag_id.reset();
  return merged;
}

}  // namespace

int main(int argc, char** argv) {
  arbor::server::BlockShutdownSignals();
  arbor::server::ParseServerCommandLine(
      argc, argv,
      "arbor-verifier --model DIR [--port N] [--metrics_port N] [--kind KIND] "
      "[--step_tag TEXT] [--positive_token T] [--negative_token T] [--kv_cache_tokens N] "
      "[--backend cpu]\nServes arbor.v1.Verifier (Score, Info).");
  using arbor::worker::server::EngineMetrics;
  auto registry = std::make_shared<prometheus::Registry>();
  auto metrics = std::make_unique<EngineMetrics>(*registry, "verifier");

  arbor::worker::server::ServedModelOptions model_options =
      arbor::worker::server::ServedModelOptionsFromFlags();
  EngineMetrics* m = metrics.get();
  model_options.engine.step_observer = [m](const arbor::worker::StepInfo& s) { m->ObserveStep(s); };
  auto served = arbor::worker::server::LoadServedModel(model_options);
  if (!served.ok()) return Fail(served.status());
  metrics->Attach(served->engine.get());
  arbor::worker::Engine* engine = served->engine.get();

  auto config = RewardConfigFromFlags(served->model_dir, engine->model_config().is_value_head());
  if (!config.ok()) return Fail(config.status());
  auto renderer = arbor::worker::server::MakePromptRenderer(served->model_dir);
  if (!renderer.ok()) return Fail(renderer.status());
  arbor::verifier::RewardScorerOptions scorer_options;
  scorer_options.score_cache_entries = absl::GetFlag(FLAGS_score_cache_entries);
  auto scorer = arbor::verifier::RewardScorer::ForModel(engine, served->tokenizer.get(), *config,
                                                        renderer->render, scorer_options);
  if (!scorer.ok()) return Fail(scorer.status());
  auto service = arbor::verifier::VerifierService::Create({.model_name = served->name},
                                                          scorer->get(), metrics.get());
  if (!service.ok()) return Fail(service.status());
  ARBOR_LOG(INFO) << "arbor-verifier: " << arbor::verifier::RewardKindName(config->kind)
                  << ", step tag \"" << config->step_tag << "\"";

  auto server = arbor::server::Server::Start(arbor::server::ServerOptionsFromFlags("verifier"),
                                             {service->get()}, registry);
  if (!server.ok()) return Fail(server.status());
  arbor::server::RunUntilShutdownSignal(**server);
  server->reset();
  service->reset();
  scorer->reset();
  metrics->Detach();
  served->engine.reset();
  ARBOR_LOG(INFO) << "arbor-verifier: stopped";
  return 0;
}
