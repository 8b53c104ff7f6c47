#include "rpc/server.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/check.h"
#include "common/log.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/impl/server_initializer.h"
#include "grpcpp/support/server_interceptor.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rpc/metrics_endpoint.h"
#include "rpc/process_metrics.h"
#include "rpc/status_util.h"
#include "rpc/tls_metrics_endpoint.h"

namespace arbor::rpc {
namespace {

std::string DisplayHost(const std::string& host) {
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") return "127.0.0.1";
  return host;
}

std::string JoinHostPort(const std::string& host, int port) {
  if (host.find(':') != std::string::npos && host.front() != '[') {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

bool IsLoopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]" ||
         host.rfind("127.", 0) == 0;
}

const prometheus::Histogram::BucketBoundaries& Buckets() {
  static const auto* kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  return *kBuckets;
}

// Counts every RPC by method and final code and times it, for any service.
class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry& registry)
      : handled_(prometheus::BuildCounter()
                     .Name("arbor_grpc_server_handled_total")
                     .Help("RPCs completed on this server, by method and status code")
                     .Register(registry)),
        seconds_(prometheus::BuildHistogram()
                     .Name("arbor_grpc_server_handling_seconds")
                     .Help("Time from receiving an RPC to sending its status, by method")
                     .Register(registry)) {}

  void Record(const std::string& method, grpc::StatusCode code, double seconds) {
    handled_.Add({{"method", method}, {"code", std::string(GrpcCodeName(code))}}).Increment();
    seconds_.Add({{"method", method}}, Buckets()).Observe(seconds);
  }

  // Creates the series of every method of `service` at zero, with the codes
  // the dashboard and alerts select, so that they exist before the first call.
  void Preset(const std::string& service) {
    const google::protobuf::ServiceDescriptor* descriptor =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    if (descriptor == nullptr) return;
    for (int i = 0; i < descriptor->method_count(); ++i) {
      const std::string method = absl::StrCat("/", service, "/", descriptor->method(i)->name());
      for (grpc::StatusCode code : {grpc::StatusCode::OK, grpc::StatusCode::INTERNAL}) {
        handled_.Add({{"method", method}, {"code", std::string(GrpcCodeName(code))}});
      }
      seconds_.Add({{"method", method}}, Buckets());
    }
  }

 private:
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& seconds_;
};

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(RpcMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method == nullptr ? "unknown" : method), start_(absl::Now()) {}

  ~MetricsInterceptor() override {
    // A call that never sent a status was cancelled by the client or by shutdown.
    if (!recorded_) Record(grpc::StatusCode::CANCELLED);
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      Record(methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  void Record(grpc::StatusCode code) {
    recorded_ = true;
    metrics_->Record(method_, code, absl::ToDoubleSeconds(absl::Now() - start_));
  }

  RpcMetrics* metrics_;
  std::string method_;
  absl::Time start_;
  bool recorded_ = false;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(std::shared_ptr<RpcMetrics> metrics)
      : metrics_(std::move(metrics)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_.get(), info->method());
  }

 private:
  std::shared_ptr<RpcMetrics> metrics_;
};

// grpc::Service does not expose its name; the server's initializer lists the
// services it hosts once it is built, which a builder plugin can read.
class ServiceNamesPlugin : public grpc::ServerBuilderPlugin {
 public:
  explicit ServiceNamesPlugin(std::vector<std::string>* names) : names_(names) {}
  std::string name() override { return "arbor_service_names"; }
  void InitServer(grpc::ServerInitializer* /*si*/) override {}
  void Finish(grpc::ServerInitializer* si) override {
    const std::vector<std::string>* names = si->GetServiceList();
    if (names != nullptr) names_->assign(names->begin(), names->end());
  }
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}

 private:
  std::vector<std::string>* names_;
};

class ServiceNamesOption : public grpc::ServerBuilderOption {
 public:
  explicit ServiceNamesOption(std::vector<std::string>* names) : names_(names) {}
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ServiceNamesPlugin>(names_));
  }

 private:
  std::vector<std::string>* names_;
};

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port (", options.port, ") must be in [0, 65535]"));
  }
  if (options.metrics_port < -1 || options.metrics_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_port (", options.metrics_port,
                                                   ") must be in [0, 65535], or -1 to disable"));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes (", options.max_message_bytes, ") must be positive"));
  }
  if (options.drain_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain_grace must not be negative");
  }
  if (options.drain_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain_delay must not be negative");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options, const std::vector<grpc::Service*>& services,
    std::shared_ptr<prometheus::Registry> registry) {
  if (absl::Status valid = ValidateServerOptions(options); !valid.ok()) return valid;
  std::unique_ptr<Server> server(new Server());
  server->options_ = options;
  server->registry_ = registry ? std::move(registry) : std::make_shared<prometheus::Registry>();
  AddBuildInfo(*server->registry_, options.name);

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  if (options.tls.enabled() && options.metrics_port >= 0 && !IsLoopback(options.metrics_host)) {
    // Off loopback, /metrics gets the same TLS as gRPC (HTTPS).
    absl::StatusOr<std::unique_ptr<TlsMetricsEndpoint>> metrics = TlsMetricsEndpoint::Start(
        options.metrics_host, options.metrics_port, server->registry_, options.tls);
    if (!metrics.ok()) return metrics.status();
    server->tls_metrics_ = *std::move(metrics);
    server->metrics_port_ = server->tls_metrics_->port();
  } else if (options.metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> metrics =
        MetricsEndpoint::Start(options.metrics_host, options.metrics_port, server->registry_);
    if (!metrics.ok()) return metrics.status();
    server->metrics_ = *std::move(metrics);
    server->metrics_port_ = server->metrics_->port();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = JoinHostPort(options.host, options.port);
  builder.AddListeningPort(address, *credentials, &server->port_);
  // gRPC sets SO_REUSEPORT by default, which lets a second process bind the
  // same port and take half its connections; a port in use must be an error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::vector<std::string> hosted;
  builder.SetOption(std::make_unique<ServiceNamesOption>(&hosted));
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  auto rpc_metrics = std::make_shared<RpcMetrics>(*server->registry_);
  creators.push_back(std::make_unique<MetricsInterceptorFactory>(rpc_metrics));
  builder.experimental().SetInterceptorCreators(std::move(creators));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", address, " (port in use, or the address is not local)"));
  }
  // The health service answers for the hosted services, not for itself or
  // reflection (grpc.*).
  for (const std::string& name : hosted) {
    if (!name.empty() && name.rfind("grpc.", 0) != 0) server->health_names_.push_back(name);
  }
  std::sort(server->health_names_.begin(), server->health_names_.end());
  server->health_names_.erase(
      std::unique(server->health_names_.begin(), server->health_names_.end()),
      server->health_names_.end());
  for (const std::string& name : server->health_names_) rpc_metrics->Preset(name);
  server->SetServing(true);
  ARBOR_LOG(INFO) << options.name << " serving gRPC"
                  << (options.tls.enabled()
                          ? (options.tls.ca.empty() ? " over TLS" : " over mutual TLS")
                          : "")
                  << " on " << address << " (port " << server->port_ << "), /metrics on port "
                  << server->metrics_port_;
  if (options.announce) {
    std::printf("listening on %s\n", server->address().c_str());
    if (server->metrics_port_ >= 0) {
      std::printf("metrics on %s\n",
                  JoinHostPort(DisplayHost(options.metrics_host), server->metrics_port_).c_str());
    }
    std::fflush(stdout);
  }
  return server;
}

Server::~Server() {
  if (server_ == nullptr) return;  // Start failed before the gRPC server was built
  Drain(absl::ZeroDuration());
  server_->Wait();
}

std::string Server::address() const { return JoinHostPort(DisplayHost(options_.host), port_); }

void Server::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  ARBOR_CHECK(health != nullptr);
  for (const std::string& name : health_names_) health->SetServingStatus(name, serving);
  health->SetServingStatus(serving);
}

void Server::Drain() { Drain(options_.drain_delay, options_.drain_grace); }

void Server::Drain(absl::Duration delay, absl::Duration grace) {
  {
    absl::MutexLock lock(&drain_mu_);
    if (drained_) return;
    drained_ = true;
  }
  ARBOR_LOG(INFO) << options_.name << " draining (delay " << absl::FormatDuration(delay)
                  << ", grace " << absl::FormatDuration(grace) << ")";
  SetServing(false);
  // NOT_SERVING reaches readiness probes, the coordinators' pools and
  // health-checking clients within their check periods; until they have
  // moved, calls still arriving here are served, not refused.
  if (delay > absl::ZeroDuration()) {
    absl::SleepFor(delay);
    ARBOR_LOG(INFO) << options_.name << " drain delay over, no longer accepting calls";
  }
  // Shutdown stops accepting at once, waits for in-flight calls until the
  // deadline, then cancels the rest and returns when all have finished.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  ARBOR_LOG(INFO) << options_.name << " stopped";
}

void Server::Wait() { server_->Wait(); }

void BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ARBOR_CHECK(pthread_sigmask(SIG_BLOCK, &set, nullptr) == 0);
}

int WaitForShutdownSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int signal_number = 0;
  while (sigwait(&set, &signal_number) != 0) {
  }
  return signal_number;
}

void RunUntilShutdownSignal(Server& server) {
  const int signal_number = WaitForShutdownSignal();
  ARBOR_LOG(INFO) << "received " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
                  << ", draining";
  // Ctrl-C is a person at a terminal, not a load balancer: no delay.
  if (signal_number == SIGTERM) {
    server.Drain();
  } else {
    server.Drain(absl::ZeroDuration(), server.options().drain_grace);
  }
  server.Wait();
}

}  // namespace arbor::rpc
