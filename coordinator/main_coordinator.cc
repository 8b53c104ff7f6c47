// arbor-coordinator: the Reasoning service in front of the worker and
// verifier pools. Example:
//   arbor-coordinator --port=50051 --workers=dns:///arbor-worker:50052
//       --verifiers=10.0.0.7:50053,10.0.0.8:50053
// --http_port=N also serves the OpenAI-compatible HTTP API (docs/HTTP.md).
#include <cstdio>
#include <memory>

#include "absl/flags/flag.h"
#include "common/log.h"
#include "coordinator/client_flags.h"
#include "coordinator/coordinator.h"
#include "coordinator/openai/http_server.h"
#include "coordinator/reasoning_service.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/registry.h"
#include "rpc/flags.h"
#include "rpc/server.h"
#include "rpc/tls.h"

ABSL_FLAG(std::string, workers, "",
          "Generator workers: host:port,host:port or dns:///name:port (re-resolved)");
ABSL_FLAG(std::string, verifiers, "",
          "Verifiers (reward models): host:port,... or dns:///name:port; empty: none");
ABSL_FLAG(std::string, default_model, "", "Policy model for requests naming none");
ABSL_FLAG(std::string, default_reward_model, "", "Reward model for requests naming none");
ABSL_FLAG(int, max_concurrent_jobs, 8, "Jobs run at once");
ABSL_FLAG(int, max_queued_jobs, 64, "Jobs waiting beyond those; more get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, health_interval_ms, 1000, "grpc.health.v1 check period per endpoint");
ABSL_FLAG(int, health_timeout_ms, 1000, "Timeout of one health check or Info call");
ABSL_FLAG(int, resolve_interval_ms, 5000, "DNS re-resolution period for dns:/// targets");
ABSL_FLAG(int, call_timeout_ms, 120000, "Cap on one worker/verifier call");
ABSL_FLAG(int, hedge_after_ms, 10000,
          "A worker/verifier call unanswered this long is also sent to another endpoint (the "
          "first answer wins); 0: hedge only calls on an ejected endpoint");
// TLS of the coordinator's own calls to workers and verifiers (rpc/tls.h).
ABSL_FLAG(std::string, upstream_tls_ca, "",
          "PEM CA that verifies workers and verifiers: call them over TLS; empty: plaintext "
          "(unless a client certificate is given, then the system roots)");
ABSL_FLAG(std::string, upstream_tls_cert, "",
          "PEM client certificate presented to workers and verifiers (mutual TLS)");
ABSL_FLAG(std::string, upstream_tls_key, "", "PEM private key of --upstream_tls_cert");
ABSL_FLAG(std::string, upstream_tls_server_name, "",
          "Name the workers' and verifiers' certificates are checked against instead of the "
          "address dialled (for IP targets and DNS-resolved pods)");
ABSL_FLAG(std::string, routing, "prefix_load",
          "Worker routing: prefix_load, least_loaded, round_robin or rendezvous (docs/ROUTING.md)");
ABSL_FLAG(double, routing_load_weight, 0.15,
          "prefix_load: prefix-hit tokens worth one token of worker load");
ABSL_FLAG(int, routing_poll_ms, 250, "Generator.Info poll period for load and cache summaries");
ABSL_FLAG(int, routing_split_outputs, 0,
          "Sub-tree placement: outputs of one job's call a worker takes before the job's other "
          "sub-trees go to idle workers; 0 (default): every job stays on one worker "
          "(docs/ROUTING.md)");

int main(int argc, char** argv) {
  arbor::rpc::BlockShutdownSignals();
  arbor::rpc::ParseServerCommandLine(
      argc, argv, "arbor-coordinator --workers=host:port,... [--verifiers=...] [--port=N]");

  arbor::coordinator::CoordinatorOptions options;
  auto pool_options = [](const std::string& targets) {
    arbor::coordinator::PoolOptions p;
    p.targets = targets;
    p.health_interval = absl::Milliseconds(absl::GetFlag(FLAGS_health_interval_ms));
    p.health_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_health_timeout_ms));
    p.resolve_interval = absl::Milliseconds(absl::GetFlag(FLAGS_resolve_interval_ms));
    return p;
  };
  options.workers = pool_options(absl::GetFlag(FLAGS_workers));
  options.verifiers = pool_options(absl::GetFlag(FLAGS_verifiers));
  options.default_model = absl::GetFlag(FLAGS_default_model);
  options.default_reward_model = absl::GetFlag(FLAGS_default_reward_model);
  options.max_concurrent_jobs = absl::GetFlag(FLAGS_max_concurrent_jobs);
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.call_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_call_timeout_ms));
  options.hedge_after = absl::Milliseconds(absl::GetFlag(FLAGS_hedge_after_ms));
  if (absl::Status access = arbor::coordinator::ApplyClientAccessFlags(&options); !access.ok()) {
    std::fprintf(stderr, "arbor-coordinator: %s\n", access.ToString().c_str());
    return 2;
  }
  {
    arbor::rpc::TlsClientFiles upstream;
    upstream.ca = absl::GetFlag(FLAGS_upstream_tls_ca);
    upstream.cert = absl::GetFlag(FLAGS_upstream_tls_cert);
    upstream.key = absl::GetFlag(FLAGS_upstream_tls_key);
    upstream.server_name = absl::GetFlag(FLAGS_upstream_tls_server_name);
    auto credentials = arbor::rpc::MakeChannelCredentials(upstream);
    if (!credentials.ok()) {
      std::fprintf(stderr, "arbor-coordinator: %s\n", credentials.status().ToString().c_str());
      return 2;
    }
    for (arbor::coordinator::PoolOptions* pool : {&options.workers, &options.verifiers}) {
      pool->credentials = *credentials;
      pool->tls_server_name = upstream.server_name;
    }
  }
  auto routing = arbor::coordinator::ParseRoutingPolicy(absl::GetFlag(FLAGS_routing));
  if (!routing.ok()) {
    std::fprintf(stderr, "arbor-coordinator: %s\n", routing.status().ToString().c_str());
    return 2;
  }
  options.routing.policy = *routing;
  options.routing.load_weight = absl::GetFlag(FLAGS_routing_load_weight);
  options.routing.poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_routing_poll_ms));
  options.routing.split_outputs = absl::GetFlag(FLAGS_routing_split_outputs);

  auto registry = std::make_shared<prometheus::Registry>();
  auto coordinator = arbor::coordinator::Coordinator::Create(options, registry);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "arbor-coordinator: %s\n", coordinator.status().ToString().c_str());
    return 2;
  }
  std::unique_ptr<grpc::Service> service =
      arbor::coordinator::CreateReasoningService(**coordinator);
  auto server = arbor::rpc::Server::Start(arbor::rpc::ServerOptionsFromFlags("coordinator"),
                                          {service.get()}, registry);
  if (!server.ok()) {
    std::fprintf(stderr, "arbor-coordinator: %s\n", server.status().ToString().c_str());
    return 2;
  }
  auto http = arbor::coordinator::openai::StartHttpServerFromFlags(
      **coordinator, options.max_concurrent_jobs + options.max_queued_jobs);
  if (!http.ok()) {
    std::fprintf(stderr, "arbor-coordinator: %s\n", http.status().ToString().c_str());
    return 2;
  }
  arbor::rpc::RunUntilShutdownSignal(**server);
  if (*http) (*http)->Stop(absl::Milliseconds(absl::GetFlag(FLAGS_drain_grace_ms)));
  // In-flight RPCs have finished or been cancelled; now the job threads end.
  (*coordinator)->Shutdown();
  return 0;
}
