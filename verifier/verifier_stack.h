// VerifierStack: everything arbor-verifier serves, built from options in one
// call (the reward model and its engine, engine metrics in a shared registry,
// the reward config from prm_config.json plus overrides, the scorer and the
// Verifier service) and torn down in the right order. arbor-verifier runs one;
// the all-in-one mode can run one in process (scorer() also serves in-process
// Score calls without gRPC).
//
// Thread-safety: as RewardScorer and VerifierService. The stack must outlive
// any grpc::Server that service() is registered with.
#ifndef ARBOR_VERIFIER_VERIFIER_STACK_H_
#define ARBOR_VERIFIER_VERIFIER_STACK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "serving/engine_metrics.h"
#include "serving/served_model.h"
#include "verifier/reward_config.h"
#include "verifier/reward_scorer.h"
#include "verifier/verifier_service.h"

namespace prometheus {
class Registry;
}

namespace arbor::verifier {

// Values that replace prm_config.json's (empty: keep it). Label tokens and
// the step tag given here drop the file's ids for them.
struct RewardConfigOverrides {
  std::string kind;
  std::string prompt_template;
  std::string step_tag;
  std::string step_separator;
  std::string positive_token;
  std::string negative_token;
  std::string verdict_prefix;
  std::string compare_a_token;
  std::string compare_b_token;
};

// `config` with the non-empty overrides applied (as prm_config.json keys).
absl::StatusOr<RewardConfig> ApplyRewardConfigOverrides(const RewardConfig& config,
                                                        const RewardConfigOverrides& overrides,
                                                        bool model_has_value_head);

struct VerifierStackOptions {
  serving::ServedModelOptions model;
  RewardConfigOverrides overrides;
  RewardScorerOptions scorer;
  std::string role = "verifier";
};

class VerifierStack {
 public:
  // `registry` receives the engine metrics and must outlive the stack.
  static absl::StatusOr<std::unique_ptr<VerifierStack>> Create(VerifierStackOptions options,
                                                               prometheus::Registry& registry);
  ~VerifierStack();
  VerifierStack(const VerifierStack&) = delete;
  VerifierStack& operator=(const VerifierStack&) = delete;

  VerifierService* service() const { return service_.get(); }
  RewardScorer* scorer() const { return scorer_.get(); }
  runtime::Engine* engine() const { return model_.engine.get(); }
  const runtime::Tokenizer* tokenizer() const { return model_.tokenizer.get(); }
  const std::string& model_name() const { return model_.name; }
  const RewardConfig& config() const { return scorer_->input().config(); }

 private:
  VerifierStack() = default;

  std::unique_ptr<serving::EngineMetrics> metrics_;
  serving::ServedModel model_;
  std::unique_ptr<RewardScorer> scorer_;
  std::unique_ptr<VerifierService> service_;
};

}  // namespace arbor::verifier

#endif  // ARBOR_VERIFIER_VERIFIER_STACK_H_
