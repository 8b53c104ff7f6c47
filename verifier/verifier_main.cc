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
#include "common/log.h"
#include "prometheus/registry.h"
#include "rpc/flags.h"
#include "rpc/server.h"
#include "serving/engine_flags.h"
#include "verifier/verifier_stack.h"

ABSL_FLAG(std::string, kind, "",
          "Reward model kind: token_logit_prm, value_head_prm, orm or llm_judge (any causal LM asked "
          "whether the solution so far is correct); default: prm_config.json's, "
          "else value_head_prm for a checkpoint with a score head, token_logit_prm otherwise");
ABSL_FLAG(std::string, step_tag, "", "Text after each step whose last token's row is read");
ABSL_FLAG(std::string, positive_token, "", "Label token of a correct step (token-logit heads)");
ABSL_FLAG(std::string, negative_token, "", "Label token of a wrong step (token-logit heads)");
ABSL_FLAG(std::string, prompt_template, "",
          "Prompt format with {question}, or a chat template name (chatml, llama3, raw)");
ABSL_FLAG(std::string, step_separator, "", "Text between a step's tag and the next step");
ABSL_FLAG(std::string, verdict_prefix, "",
          "LLM judge: text after the chat template's generation prompt, before the verdict token");
ABSL_FLAG(std::string, compare_a_token, "",
          "LLM judge, Compare: verdict token naming Solution A (one token; default \"A\")");
ABSL_FLAG(std::string, compare_b_token, "",
          "LLM judge, Compare: verdict token naming Solution B (one token; default \"B\")");
ABSL_FLAG(int, score_cache_entries, 1 << 16, "Step scores remembered (LRU); 0 disables");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "arbor-verifier: %s\n", status.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  arbor::rpc::BlockShutdownSignals();
  arbor::rpc::ParseServerCommandLine(
      argc, argv,
      "arbor-verifier --model DIR [--port N] [--metrics_port N] [--kind KIND] "
      "[--step_tag TEXT] [--positive_token T] [--negative_token T] [--prompt_template T] "
      "[--kv_cache_tokens N] [--backend cpu|cuda] [--kv_memory_fraction F | --kv_memory_share F]\nServes "
      "arbor.v1.Verifier (Score, Compare for an llm_judge, Info).");
  auto registry = std::make_shared<prometheus::Registry>();
  arbor::verifier::VerifierStackOptions options;
  options.model = arbor::serving::ServedModelOptionsFromFlags();
  options.overrides = {.kind = absl::GetFlag(FLAGS_kind),
                       .prompt_template = absl::GetFlag(FLAGS_prompt_template),
                       .step_tag = absl::GetFlag(FLAGS_step_tag),
                       .step_separator = absl::GetFlag(FLAGS_step_separator),
                       .positive_token = absl::GetFlag(FLAGS_positive_token),
                       .negative_token = absl::GetFlag(FLAGS_negative_token),
                       .verdict_prefix = absl::GetFlag(FLAGS_verdict_prefix),
                       .compare_a_token = absl::GetFlag(FLAGS_compare_a_token),
                       .compare_b_token = absl::GetFlag(FLAGS_compare_b_token)};
  // Without the prefix cache nothing is reused across calls: no cached scores either.
  options.scorer.score_cache_entries =
      options.model.engine.prefix_cache ? absl::GetFlag(FLAGS_score_cache_entries) : 0;
  auto stack = arbor::verifier::VerifierStack::Create(std::move(options), *registry);
  if (!stack.ok()) return Fail(stack.status());
  ARBOR_LOG(INFO) << "arbor-verifier: " << arbor::verifier::RewardKindName((*stack)->config().kind)
                  << ", step tag \"" << (*stack)->config().step_tag << "\""
                  << ((*stack)->scorer()->input().supports_compare() ? ", compares pairs" : "");

  auto server = arbor::rpc::Server::Start(arbor::rpc::ServerOptionsFromFlags("verifier"),
                                          {(*stack)->service()}, registry);
  if (!server.ok()) return Fail(server.status());
  arbor::rpc::RunUntilShutdownSignal(**server);
  server->reset();
  stack->reset();
  ARBOR_LOG(INFO) << "arbor-verifier: stopped";
  return 0;
}
