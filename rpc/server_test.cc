// The shared server: health status (overall and per service), /metrics over
// HTTP on prometheus-cpp's Exposer (in a process with more static TLS than
// civetweb's thread stacks, like one linking cuBLAS), process and build
// metrics, reflection, drain with its delay, status mapping. Everything runs
// for real on loopback.
#include "rpc/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "rpc/metrics_endpoint.h"
#include "rpc/process_metrics.h"
#include "rpc/status_util.h"
#include "rpc/testing/big_tls.h"

namespace arbor::rpc {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

// GET http://127.0.0.1:port/path with a plain socket; returns the whole reply.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string reply;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, n);
  close(fd);
  return reply;
}

HealthCheckResponse::ServingStatus CheckHealth(Health::Stub& stub, grpc::Status* status,
                                               const std::string& service = "") {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  *status = stub.Check(&context, request, &response);
  return response.status();
}

ServerOptions LoopbackOptions() {
  ServerOptions options;
  options.name = "test";
  options.host = "127.0.0.1";
  options.metrics_host = "127.0.0.1";
  options.announce = false;
  return options;
}

TEST(StatusUtilTest, RoundTripsCodeAndMessage) {
  const absl::Status original = absl::InvalidArgumentError("question: must not be empty");
  const grpc::Status wire = ToGrpcStatus(original);
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(wire.error_message(), "question: must not be empty");
  EXPECT_EQ(ToAbslStatus(wire), original);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(ToAbslStatus(grpc::Status::OK).ok());
  EXPECT_EQ(ToAbslStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full")).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(GrpcCodeName(grpc::StatusCode::DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
}

TEST(ServerOptionsTest, RejectsBadPortsNamingThem) {
  ServerOptions options = LoopbackOptions();
  options.port = 70000;
  EXPECT_THAT(ValidateServerOptions(options).message(), HasSubstr("port (70000)"));
  options.port = 0;
  options.metrics_port = -2;
  EXPECT_THAT(ValidateServerOptions(options).message(), HasSubstr("metrics_port (-2)"));
  EXPECT_EQ(Server::Start(options, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ServerTest, ServesHealthMetricsAndDrains) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = Server::Start(LoopbackOptions(), {}, registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  ASSERT_GT((*server)->metrics_port(), 0);
  EXPECT_EQ((*server)->address(), "127.0.0.1:" + std::to_string((*server)->port()));

  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto stub = Health::NewStub(channel);
  grpc::Status status;
  EXPECT_EQ(CheckHealth(*stub, &status), HealthCheckResponse::SERVING);
  ASSERT_TRUE(status.ok()) << status.error_message();

  (*server)->SetServing(false);
  EXPECT_EQ(CheckHealth(*stub, &status), HealthCheckResponse::NOT_SERVING);
  (*server)->SetServing(true);

  // The interceptor counted the health checks; /metrics shows them.
  const std::string metrics = HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("200 OK"));
  EXPECT_THAT(metrics, HasSubstr("arbor_grpc_server_handled_total{"));
  EXPECT_THAT(metrics, HasSubstr("method=\"/grpc.health.v1.Health/Check\""));
  EXPECT_THAT(metrics, HasSubstr("arbor_grpc_server_handling_seconds_bucket"));

  // A Watch stream is in flight while the server drains: it sees NOT_SERVING,
  // then is cancelled when the grace period ends; Drain returns after that.
  grpc::ClientContext watch_context;
  HealthCheckRequest watch_request;
  auto watch = stub->Watch(&watch_context, watch_request);
  HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::SERVING);
  const absl::Time drain_start = absl::Now();
  std::thread drain([&] { (*server)->Drain(absl::Milliseconds(300)); });
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);
  while (watch->Read(&update)) {
  }
  watch->Finish().IgnoreError();
  drain.join();
  EXPECT_GE(absl::Now() - drain_start, absl::Milliseconds(250));
  (*server)->Wait();

  // After the drain nothing is accepted.
  CheckHealth(*stub, &status);
  EXPECT_FALSE(status.ok());
}

// A Generator whose Info takes `info_ms` to answer: an in-flight call to
// drain around.
class SlowGenerator : public arbor::v1::Generator::CallbackService {
 public:
  std::atomic<int> info_ms{0};
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const arbor::v1::InfoRequest* /*request*/,
                                 arbor::v1::GeneratorInfo* reply) override {
    absl::SleepFor(absl::Milliseconds(info_ms.load()));
    reply->set_model("slow");
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

grpc::Status CallInfo(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = arbor::v1::Generator::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  arbor::v1::InfoRequest request;
  arbor::v1::GeneratorInfo reply;
  grpc::Status status = stub->Info(&context, request, &reply);
  if (status.ok() && reply.model() != "slow") return grpc::Status(grpc::StatusCode::INTERNAL, "");
  return status;
}

TEST(ServerTest, HealthAnswersForEachHostedService) {
  SlowGenerator generator;
  auto server = Server::Start(LoopbackOptions(), {&generator});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT((*server)->health_service_names(), ::testing::ElementsAre("arbor.v1.Generator"));
  auto stub = Health::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  grpc::Status status;
  EXPECT_EQ(CheckHealth(*stub, &status, "arbor.v1.Generator"), HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok()) << status.error_message();
  CheckHealth(*stub, &status, "arbor.v1.Reasoning");  // not hosted here
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  // Every method's series exist at zero before its first call.
  const std::string metrics = HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("arbor_grpc_server_handled_total{code=\"INTERNAL\","
                                 "method=\"/arbor.v1.Generator/Extend\"} 0"));
  EXPECT_THAT(metrics, HasSubstr("arbor_grpc_server_handling_seconds_count{"
                                 "method=\"/arbor.v1.Generator/Info\"} 0"));
  (*server)->SetServing(false);
  EXPECT_EQ(CheckHealth(*stub, &status, "arbor.v1.Generator"), HealthCheckResponse::NOT_SERVING);
}

// The rolling-update order (docs/DEPLOY.md): NOT_SERVING at once, new calls
// still served during the delay, then no new calls while the in-flight one
// finishes within the grace period.
TEST(ServerTest, DrainServesNewCallsDuringTheDelayThenFinishesInFlightOnes) {
  SlowGenerator generator;
  ServerOptions options = LoopbackOptions();
  options.drain_delay = absl::Milliseconds(1000);
  options.drain_grace = absl::Seconds(10);
  auto server = Server::Start(options, {&generator});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto health = Health::NewStub(channel);
  ASSERT_TRUE(CallInfo(channel).ok());

  generator.info_ms = 2500;
  grpc::Status in_flight;
  std::thread slow([&] { in_flight = CallInfo(channel); });
  absl::SleepFor(absl::Milliseconds(200));  // the slow call has arrived
  generator.info_ms = 0;
  const absl::Time drain_start = absl::Now();
  std::thread drain([&] { (*server)->Drain(); });
  absl::SleepFor(absl::Milliseconds(200));
  grpc::Status status;
  EXPECT_EQ(CheckHealth(*health, &status), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(CheckHealth(*health, &status, "arbor.v1.Generator"), HealthCheckResponse::NOT_SERVING);
  // Within the delay a new call (one racing the load balancer's update) works.
  EXPECT_TRUE(CallInfo(channel).ok());
  drain.join();
  slow.join();
  EXPECT_TRUE(in_flight.ok()) << in_flight.error_message();
  EXPECT_GE(absl::Now() - drain_start, absl::Milliseconds(2000));  // waited for the slow call
  (*server)->Wait();
  EXPECT_FALSE(CallInfo(channel).ok());
}

TEST(ServerTest, MetricsCarryProcessAndBuildInfoDespiteLargeStaticTls) {
  // This binary links a library with 256 KiB of static TLS, more than
  // civetweb's 100 KiB thread stacks; the Exposer's threads still start.
  EXPECT_EQ(testing::TouchBigTls(1), 0);
  EXPECT_GE(StaticTlsBytes(), size_t{256} << 10);
  auto server = Server::Start(LoopbackOptions(), {});
  ASSERT_TRUE(server.ok()) << server.status();
  std::string metrics;
  for (int i = 0; i < 3; ++i) {  // a keep-alive-free scrape, several times
    metrics = HttpGet((*server)->metrics_port(), "/metrics");
    ASSERT_THAT(metrics, HasSubstr("200 OK"));
  }
  EXPECT_THAT(metrics, HasSubstr("arbor_build_info{"));
  EXPECT_THAT(metrics, HasSubstr("role=\"test\""));
  EXPECT_THAT(metrics, HasSubstr("version=\"" + std::string(BuildVersion()) + "\""));
  for (const char* name :
       {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
        "process_max_fds ", "process_start_time_seconds ", "process_threads "}) {
    EXPECT_THAT(metrics, HasSubstr(name));
  }
  absl::StatusOr<ProcessStats> stats = ReadProcessStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GT(stats->resident_bytes, 1 << 20);
  EXPECT_GT(stats->threads, 2);  // gRPC's and civetweb's threads
  EXPECT_GT(stats->open_fds, 3);
  const double now = absl::ToUnixSeconds(absl::Now());
  EXPECT_GT(stats->start_time_seconds, now - 600);
  EXPECT_LE(stats->start_time_seconds, now + 1);
  EXPECT_EQ(HttpGet((*server)->metrics_port(), "/nothing").find("200 OK"), std::string::npos);
}

TEST(ServerTest, MetricsOnEveryAddress) {
  ServerOptions options = LoopbackOptions();
  options.metrics_host = "::";
  auto server = Server::Start(options, {});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_THAT(HttpGet((*server)->metrics_port(), "/metrics"), HasSubstr("arbor_build_info"));
}

TEST(ServerTest, MetricsPortInUseIsAClearError) {
  auto first = Server::Start(LoopbackOptions(), {});
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions options = LoopbackOptions();
  options.metrics_port = (*first)->metrics_port();
  auto second = Server::Start(options, {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(std::to_string(options.metrics_port)));
}

TEST(ServerTest, GrpcPortInUseIsAClearErrorNotASharedPort) {
  auto first = Server::Start(LoopbackOptions(), {});
  ASSERT_TRUE(first.ok()) << first.status();
  ServerOptions options = LoopbackOptions();
  options.port = (*first)->port();
  options.metrics_port = -1;
  auto second = Server::Start(options, {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(std::to_string(options.port)));
  EXPECT_THAT(second.status().message(), HasSubstr("in use"));
}

TEST(ServerOptionsTest, DefaultsBindLoopback) {
  const ServerOptions options;
  EXPECT_EQ(options.host, "127.0.0.1");
  EXPECT_EQ(options.metrics_host, "127.0.0.1");
}

TEST(ServerTest, ReflectionListsServices) {
  auto server = Server::Start(LoopbackOptions(), {});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  // A raw ServerReflectionInfo call: request {list_services: ""} is field 7
  // (tag 0x3a) with an empty string; the reply names every service.
  grpc::GenericStub generic(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  auto call = generic.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  const char request_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(request_bytes, sizeof(request_bytes));
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
  EXPECT_THAT(bytes, HasSubstr("grpc.reflection.v1alpha.ServerReflection"));
  context.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  while (cq.Next(&tag, &ok)) {
    if (tag == reinterpret_cast<void*>(4)) break;
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace arbor::rpc
