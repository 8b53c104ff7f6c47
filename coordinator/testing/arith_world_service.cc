#include "coordinator/testing/arith_world_service.h"

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "rpc/status_util.h"

namespace arbor::testing {
namespace {

// Runs calls off the gRPC callback threads: a call may wait (the delay)
// without blocking gRPC, and notices its cancellation while waiting.
class CallRunner {
 public:
  explicit CallRunner(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~CallRunner() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (auto& t : threads_) t.join();
  }
  void Post(std::function<void()> task) {
    absl::MutexLock lock(&mu_);
    tasks_.push_back(std::move(task));
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](CallRunner* r)
                 ABSL_NO_THREAD_SAFETY_ANALYSIS { return r->stop_ || !r->tasks_.empty(); },
            this));
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Waits `delay`; false when the call was cancelled meanwhile.
bool Delay(grpc::CallbackServerContext* context, absl::Duration delay) {
  const absl::Time end = absl::Now() + delay;
  while (absl::Now() < end) {
    if (context->IsCancelled()) return false;
    absl::SleepFor(std::min(absl::Milliseconds(5), end - absl::Now()));
  }
  return !context->IsCancelled();
}

struct WorldMetrics {
  explicit WorldMetrics(prometheus::Registry& registry)
      : calls(prometheus::BuildCounter()
                  .Name("arith_world_calls_total")
                  .Help("Calls by method")
                  .Register(registry)),
        cancelled(prometheus::BuildCounter()
                      .Name("arith_world_cancelled_total")
                      .Help("Calls that saw their cancellation while running")
                      .Register(registry)) {}
  prometheus::Family<prometheus::Counter>& calls;
  prometheus::Family<prometheus::Counter>& cancelled;
};

// A call of either service: counted by method, run off the gRPC callback
// thread after the service's delay, CANCELLED when cancelled meanwhile.
class DelayedCalls {
 public:
  DelayedCalls(CallRunner& runner, WorldMetrics& metrics, absl::Duration delay)
      : runner_(runner), metrics_(metrics), delay_(delay) {}

  grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* context, const char* method,
                                std::function<absl::Status()> call) {
    auto* reactor = context->DefaultReactor();
    metrics_.calls.Add({{"method", method}}).Increment();
    runner_.Post([this, context, method, reactor, call = std::move(call)] {
      if (!Delay(context, delay_)) {
        metrics_.cancelled.Add({{"method", method}}).Increment();
        reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
        return;
      }
      reactor->Finish(rpc::ToGrpcStatus(call()));
    });
    return reactor;
  }

 private:
  CallRunner& runner_;
  WorldMetrics& metrics_;
  const absl::Duration delay_;
};

class GeneratorService final : public arbor::v1::Generator::CallbackService {
 public:
  GeneratorService(ArithWorld& world, CallRunner& runner, WorldMetrics& metrics,
                   absl::Duration delay)
      : world_(world), calls_(runner, metrics, delay) {}

  grpc::ServerUnaryReactor* Extend(grpc::CallbackServerContext* context,
                                   const arbor::v1::ExtendRequest* request,
                                   arbor::v1::ExtendResponse* response) override {
    return calls_.Run(context, "Extend",
                      [this, request, response] { return world_.Extend(*request, response); });
  }

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const arbor::v1::InfoRequest* request,
                                 arbor::v1::GeneratorInfo* info) override {
    world_.FillGeneratorInfo(info);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  ArithWorld& world_;
  DelayedCalls calls_;
};

class VerifierService final : public arbor::v1::Verifier::CallbackService {
 public:
  VerifierService(ArithWorld& world, CallRunner& runner, WorldMetrics& metrics,
                  absl::Duration delay)
      : world_(world), calls_(runner, metrics, delay) {}

  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const arbor::v1::ScoreRequest* request,
                                  arbor::v1::ScoreResponse* response) override {
    return calls_.Run(context, "Score",
                      [this, request, response] { return world_.Score(*request, response); });
  }

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const arbor::v1::VerifierInfoRequest* request,
                                 arbor::v1::VerifierInfo* info) override {
    world_.FillVerifierInfo(info);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  ArithWorld& world_;
  DelayedCalls calls_;
};

}  // namespace

struct ArithWorldServices::Impl {
  Impl(const ArithServiceOptions& options, prometheus::Registry& registry)
      : world(options.world),
        metrics(registry),
        runner(std::max(1, options.threads)),
        generator(world, runner, metrics, options.extend_delay),
        verifier(world, runner, metrics, options.score_delay) {}
  ArithWorld world;
  WorldMetrics metrics;
  CallRunner runner;
  GeneratorService generator;
  VerifierService verifier;
};

ArithWorldServices::ArithWorldServices(const ArithServiceOptions& options,
                                       prometheus::Registry& registry)
    : impl_(std::make_unique<Impl>(options, registry)) {}

ArithWorldServices::~ArithWorldServices() = default;

grpc::Service* ArithWorldServices::generator() { return &impl_->generator; }
grpc::Service* ArithWorldServices::verifier() { return &impl_->verifier; }

double ArithWorldServices::cancelled_calls() const {
  return impl_->metrics.cancelled.Add({{"method", "Extend"}}).Value() +
         impl_->metrics.cancelled.Add({{"method", "Score"}}).Value();
}

double ArithWorldServices::calls(const std::string& method) const {
  return impl_->metrics.calls.Add({{"method", method}}).Value();
}

}  // namespace arbor::testing
