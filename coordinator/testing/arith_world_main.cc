// arbor-test-world: serves ArithWorld (a test double of the GPU worker and
// reward model, see arith_world.h) as real arbor.v1.Generator and
// arbor.v1.Verifier gRPC services on the shared Arbor server (health,
// reflection, /metrics, drain). Used only by the coordinator's tests.
//   arbor-test-world --port=0 --serve=generator,verifier --extend_delay_ms=50
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "coordinator/testing/arith_world_service.h"
#include "prometheus/registry.h"
#include "rpc/flags.h"
#include "rpc/server.h"

ABSL_FLAG(std::string, serve, "generator,verifier", "Services to serve");
ABSL_FLAG(std::string, model, "arith-1", "Policy model name");
ABSL_FLAG(std::string, reward_model, "arith-prm", "Reward model name");
ABSL_FLAG(double, step_accuracy, 0.85, "Probability that a sampled step is right");
ABSL_FLAG(double, prm_noise, 0.0, "Amplitude of the reward model's deterministic noise");
ABSL_FLAG(int, extend_delay_ms, 0, "Time each Extend takes (cancellable)");
ABSL_FLAG(int, score_delay_ms, 0, "Time each Score takes (cancellable)");
ABSL_FLAG(int, threads, 4, "Threads running calls");

int main(int argc, char** argv) {
  arbor::rpc::BlockShutdownSignals();
  arbor::rpc::ParseServerCommandLine(argc, argv,
                                     "arbor-test-world [--serve=generator,verifier] [--port=N]");
  arbor::testing::ArithServiceOptions options;
  options.world.model = absl::GetFlag(FLAGS_model);
  options.world.reward_model = absl::GetFlag(FLAGS_reward_model);
  options.world.step_accuracy = absl::GetFlag(FLAGS_step_accuracy);
  options.world.prm_noise = absl::GetFlag(FLAGS_prm_noise);
  options.extend_delay = absl::Milliseconds(absl::GetFlag(FLAGS_extend_delay_ms));
  options.score_delay = absl::Milliseconds(absl::GetFlag(FLAGS_score_delay_ms));
  options.threads = absl::GetFlag(FLAGS_threads);
  auto registry = std::make_shared<prometheus::Registry>();
  arbor::testing::ArithWorldServices services(options, *registry);
  std::vector<grpc::Service*> serving;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_serve), ',')) {
    if (name == "generator") {
      serving.push_back(services.generator());
    } else if (name == "verifier") {
      serving.push_back(services.verifier());
    } else {
      std::fprintf(stderr, "--serve: unknown service '%s'\n", std::string(name).c_str());
      return 2;
    }
  }
  auto server = arbor::rpc::Server::Start(arbor::rpc::ServerOptionsFromFlags("test-world"), serving,
                                          registry);
  if (!server.ok()) {
    std::fprintf(stderr, "arbor-test-world: %s\n", server.status().ToString().c_str());
    return 2;
  }
  arbor::rpc::RunUntilShutdownSignal(**server);
  return 0;
}
