// The coordinator in process, over real gRPC on loopback: a Reasoning server
// in front of ArithWorld servers (test doubles of workers and verifiers).
// Every strategy end to end, streaming, bad fields, unknown models,
// admission control, cancellation and deadlines reaching the worker calls,
// failover when the job's worker goes away mid-job.
#include "coordinator/coordinator.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "coordinator/reasoning_service.h"
#include "coordinator/testing/world_server.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "rpc/server.h"

namespace arbor::coordinator {
namespace {

using ::testing::HasSubstr;
using testing::WorldServer;

constexpr char kQuestion[] = "add 3 5 7 11";  // 26

PoolOptions FastPool(const std::string& targets) {
  PoolOptions options;
  options.targets = targets;
  options.health_interval = absl::Milliseconds(100);
  return options;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> worker_addresses, std::string verifier_addresses,
             int max_concurrent = 4, int max_queued = 8) {
    CoordinatorOptions options;
    std::string workers;
    for (const auto& a : worker_addresses) workers += (workers.empty() ? "" : ",") + a;
    options.workers = FastPool(workers);
    if (!verifier_addresses.empty()) options.verifiers = FastPool(verifier_addresses);
    options.max_concurrent_jobs = max_concurrent;
    options.max_queued_jobs = max_queued;
    registry_ = std::make_shared<prometheus::Registry>();
    auto coordinator = Coordinator::Create(options, registry_);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    service_ = CreateReasoningService(*coordinator_);
    rpc::ServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.metrics_port = -1;
    server_options.announce = false;
    auto server = rpc::Server::Start(server_options, {service_.get()}, registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = arbor::v1::Reasoning::NewStub(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_) server_->Drain(absl::Seconds(5));
    if (coordinator_) coordinator_->Shutdown();
  }

  static arbor::v1::SolveRequest Request() {
    arbor::v1::SolveRequest request;
    request.set_question(kQuestion);
    request.set_seed(11);
    return request;
  }

  grpc::Status Solve(const arbor::v1::SolveRequest& request, arbor::v1::SolveResponse* response,
                     absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Solve(&context, request, response);
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<grpc::Service> service_;
  std::unique_ptr<rpc::Server> server_;
  std::unique_ptr<arbor::v1::Reasoning::Stub> stub_;
};

TEST_F(CoordinatorTest, EveryStrategyAnswers) {
  WorldServer world;
  Start({world.address()}, world.address());
  std::vector<arbor::v1::SolveRequest> requests;
  arbor::v1::SolveRequest r = Request();
  r.mutable_greedy();
  requests.push_back(r);
  r = Request();
  r.mutable_best_of_n()->set_n(8);
  requests.push_back(r);
  r = Request();
  r.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
  requests.push_back(r);
  r = Request();
  r.mutable_beam_search()->set_n(8);
  requests.push_back(r);
  r = Request();
  r.mutable_dvts()->set_n(8);
  requests.push_back(r);
  r = Request();
  r.mutable_particle_filter()->set_n(8);
  requests.push_back(r);
  for (const auto& request : requests) {
    arbor::v1::SolveResponse response;
    grpc::Status status = Solve(request, &response);
    ASSERT_TRUE(status.ok()) << request.ShortDebugString() << ": " << status.error_message();
    EXPECT_EQ(response.answer(), "26") << response.strategy() << ": " << response.text();
    EXPECT_FALSE(response.job_id().empty());
    EXPECT_EQ(response.worker(), world.address());
    EXPECT_GT(response.usage().generated_tokens(), 0);
    EXPECT_GT(response.usage().worker_calls(), 0);
    EXPECT_GT(response.usage().steps(), 0);
    EXPECT_GT(response.usage().prefill_tokens(), 0);
    EXPECT_GE(response.usage().wall_time_ms(), 0);
    EXPECT_GE(response.candidates_size(), 1);
    const bool uses_prm =
        response.strategy() != "greedy" &&
        request.best_of_n().selection() != arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE;
    EXPECT_EQ(response.usage().reward_calls() > 0, uses_prm) << response.strategy();
    if (uses_prm) EXPECT_EQ(response.verifier(), world.address());
  }
  // The same request and seed give the same result.
  arbor::v1::SolveResponse a, b;
  ASSERT_TRUE(Solve(requests[3], &a).ok());
  ASSERT_TRUE(Solve(requests[3], &b).ok());
  EXPECT_EQ(a.text(), b.text());
  EXPECT_EQ(a.usage().generated_tokens(), b.usage().generated_tokens());
}

// The HTTP API's call state holds the JobHandle and is captured by the job's
// callbacks: the callbacks must go once on_done returns, or that cycle
// leaks every call (found by LeakSanitizer, scripts/sanitize.sh asan).
TEST_F(CoordinatorTest, CallbacksAreReleasedAfterOnDone) {
  WorldServer world;
  Start({world.address()}, world.address());
  struct Holder {
    std::shared_ptr<JobHandle> job;
    absl::Notification done;
  };
  auto holder = std::make_shared<Holder>();
  Coordinator::Callbacks callbacks;
  callbacks.on_done = [holder](const absl::Status&, const arbor::v1::SolveResponse*) {
    holder->done.Notify();
  };
  arbor::v1::SolveRequest request = Request();
  request.mutable_greedy();
  auto job = coordinator_->Submit(request, absl::InfiniteFuture(), std::move(callbacks));
  ASSERT_TRUE(job.ok()) << job.status();
  holder->job = *std::move(job);
  std::weak_ptr<Holder> weak = holder;
  holder.reset();
  {
    std::shared_ptr<Holder> alive = weak.lock();
    ASSERT_NE(alive, nullptr);
    ASSERT_TRUE(alive->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  }
  // The job thread drops the callbacks right after on_done returns.
  for (int i = 0; i < 1000 && !weak.expired(); ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_TRUE(weak.expired());
}

TEST_F(CoordinatorTest, StreamsAcceptedStepsAndResult) {
  WorldServer world;
  Start({world.address()}, world.address());
  arbor::v1::SolveRequest request = Request();
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  grpc::ClientContext context;
  auto reader = stub_->SolveStream(&context, request);
  std::vector<arbor::v1::SolveEvent> events;
  arbor::v1::SolveEvent event;
  while (reader->Read(&event)) events.push_back(event);
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_GE(events.size(), 3u);
  ASSERT_TRUE(events.front().has_accepted());
  EXPECT_EQ(events.front().accepted().strategy(), "beam_search");
  EXPECT_EQ(events.front().accepted().worker(), world.address());
  ASSERT_TRUE(events.back().has_result());
  EXPECT_EQ(events.back().result().answer(), "26");
  int expected_iteration = 0;
  int64_t tokens = 0;
  for (size_t i = 1; i + 1 < events.size(); ++i) {
    ASSERT_TRUE(events[i].has_step());
    EXPECT_EQ(events[i].step().iteration(), expected_iteration++);
    EXPECT_GE(events[i].step().usage().generated_tokens(), tokens);
    tokens = events[i].step().usage().generated_tokens();
    EXPECT_LE(events[i].step().live_branches(), 4);
  }
  EXPECT_EQ(expected_iteration, events.back().result().usage().steps());
}

TEST_F(CoordinatorTest, RejectsBadFieldsAndUnknownModels) {
  WorldServer world;
  Start({world.address()}, world.address());
  arbor::v1::SolveResponse response;
  arbor::v1::SolveRequest request = Request();
  request.clear_question();
  grpc::Status status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("question"));

  request = Request();
  request.mutable_budget()->set_max_reward_calls(-1);
  status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("budget.max_reward_calls"));

  request = Request();
  request.set_model("gpt-9");
  status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("model: unknown model 'gpt-9'"));
  EXPECT_THAT(status.error_message(), HasSubstr("arith-1"));

  request = Request();
  request.set_reward_model("prm-x");
  status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("reward_model: unknown model 'prm-x'"));

  // Invalid UTF-8 does not even parse as proto3; the coordinator still names
  // the field (C++ clients send it, logging a protobuf error).
  request = Request();
  request.set_question("add \xff 1");
  status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "question: is not valid UTF-8");
  request = Request();
  request.mutable_stop()->add_step_delimiters("\n\n");
  request.mutable_stop()->add_step_delimiters("\xc3");
  status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "stop.step_delimiters[1]: is not valid UTF-8");
  {
    grpc::ClientContext context;
    auto reader = stub_->SolveStream(&context, request);
    arbor::v1::SolveEvent event;
    EXPECT_FALSE(reader->Read(&event));
    status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("stop.step_delimiters[1]"));
  }

  // An error the worker finds in the request is passed back, not retried.
  request = Request();
  request.set_chat_template("llama3");
  status = Solve(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("chat_template"));
}

TEST_F(CoordinatorTest, RoutesEachModelToItsWorkers) {
  WorldServer small(WorldServer::Model("arith-small"));
  WorldServer large(WorldServer::Model("arith-large"));
  Start({small.address(), large.address()}, small.address());
  for (const auto& [model, address] : std::vector<std::pair<std::string, std::string>>{
           {"arith-small", small.address()}, {"arith-large", large.address()}}) {
    arbor::v1::SolveRequest request = Request();
    request.set_model(model);
    request.mutable_greedy();
    arbor::v1::SolveResponse response;
    ASSERT_TRUE(Solve(request, &response).ok());
    EXPECT_EQ(response.worker(), address);
    EXPECT_EQ(response.answer(), "26");
  }
  // No model named: the default is the alphabetically first one served.
  arbor::v1::SolveRequest request = Request();
  request.mutable_greedy();
  arbor::v1::SolveResponse response;
  ASSERT_TRUE(Solve(request, &response).ok());
  EXPECT_EQ(response.worker(), large.address());
}

TEST_F(CoordinatorTest, AdmissionControlRejectsBeyondTheQueue) {
  testing::ArithServiceOptions slow;
  slow.extend_delay = absl::Milliseconds(150);
  WorldServer world(slow);
  Start({world.address()}, world.address(), /*max_concurrent=*/1, /*max_queued=*/1);
  arbor::v1::SolveRequest request = Request();
  request.mutable_greedy();
  std::vector<std::thread> clients;
  std::vector<grpc::Status> statuses(2);
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      arbor::v1::SolveResponse response;
      statuses[i] = Solve(request, &response);
    });
    // The first runs, the second waits in the queue.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (coordinator_->jobs().running() + coordinator_->jobs().queued() < i + 1 &&
           absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(2));
    }
  }
  arbor::v1::SolveResponse response;
  grpc::Status third = Solve(request, &response);
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("max_queued_jobs 1"));
  for (auto& t : clients) t.join();
  EXPECT_TRUE(statuses[0].ok()) << statuses[0].error_message();
  EXPECT_TRUE(statuses[1].ok()) << statuses[1].error_message();
}

TEST_F(CoordinatorTest, CancellationReachesTheWorkerCall) {
  testing::ArithServiceOptions slow;
  slow.extend_delay = absl::Seconds(20);
  WorldServer world(slow);
  Start({world.address()}, world.address());
  arbor::v1::SolveRequest request = Request();
  request.mutable_greedy();
  grpc::ClientContext context;
  arbor::v1::SolveResponse response;
  std::thread canceller([&] {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (world.services->calls("Extend") < 1 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    context.TryCancel();
  });
  const absl::Time start = absl::Now();
  grpc::Status status = stub_->Solve(&context, request, &response);
  canceller.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  // The worker saw its call cancelled long before its 20 s delay.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (world.services->cancelled_calls() < 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(world.services->cancelled_calls(), 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  const absl::Time idle = absl::Now() + absl::Seconds(5);
  while (coordinator_->jobs().running() > 0 && absl::Now() < idle) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(coordinator_->jobs().running(), 0);
}

TEST_F(CoordinatorTest, GrpcDeadlineEndsTheSearchWithItsBestSoFar) {
  testing::ArithServiceOptions slow;
  slow.extend_delay = absl::Milliseconds(100);
  WorldServer world(slow);
  Start({world.address()}, world.address());
  arbor::v1::SolveRequest request = Request();
  request.set_question("add 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20");
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  arbor::v1::SolveResponse response;
  grpc::Status status = Solve(request, &response, absl::Milliseconds(900));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.budget_exhausted());
  EXPECT_EQ(response.exhausted_by(), "deadline");
  EXPECT_GE(response.candidates_size(), 1);
  EXPECT_LT(response.usage().wall_time_ms(), 900);
  // The budget's own deadline works the same way.
  request.mutable_budget()->set_deadline_ms(300);
  status = Solve(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.exhausted_by(), "deadline");
  EXPECT_LT(response.usage().wall_time_ms(), 1000);
}

TEST_F(CoordinatorTest, FailsOverWhenTheJobsWorkerGoesAway) {
  testing::ArithServiceOptions slow;
  slow.extend_delay = absl::Milliseconds(60);
  auto a = std::make_unique<WorldServer>(slow);
  auto b = std::make_unique<WorldServer>(slow);
  WorldServer verifier;
  Start({a->address(), b->address()}, verifier.address());
  arbor::v1::SolveRequest request = Request();
  request.set_job_id("failover-1");
  request.mutable_beam_search()->set_n(4);
  request.mutable_beam_search()->set_beam_width(2);
  grpc::ClientContext context;
  auto reader = stub_->SolveStream(&context, request);
  arbor::v1::SolveEvent event;
  ASSERT_TRUE(reader->Read(&event));
  ASSERT_TRUE(event.has_accepted());
  const std::string first = event.accepted().worker();
  ASSERT_TRUE(first == a->address() || first == b->address());
  std::unique_ptr<WorldServer>& victim = first == a->address() ? a : b;
  const std::string survivor = first == a->address() ? b->address() : a->address();
  ASSERT_TRUE(reader->Read(&event));  // the first step ran on `first`
  ASSERT_TRUE(event.has_step());
  victim->server->Drain(absl::ZeroDuration());  // in-flight calls are cancelled
  victim.reset();
  arbor::v1::SolveResponse result;
  while (reader->Read(&event)) {
    if (event.has_result()) result = event.result();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(result.answer(), "26");
  EXPECT_EQ(result.worker(), survivor);
  EXPECT_GE(result.usage().retries(), 1);
}

}  // namespace
}  // namespace arbor::coordinator
