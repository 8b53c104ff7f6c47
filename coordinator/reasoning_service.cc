#include "coordinator/reasoning_service.h"

#include <deque>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/status_util.h"

namespace arbor::coordinator {
namespace {

using arbor::v1::SolveEvent;
using arbor::v1::SolveRequest;
using arbor::v1::SolveResponse;

absl::Time RpcDeadline(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

class SolveReactor : public grpc::ServerUnaryReactor {
 public:
  SolveReactor(Coordinator& coordinator, grpc::CallbackServerContext* context,
               const SolveRequest* request, SolveResponse* response) {
    Coordinator::Callbacks callbacks;
    callbacks.on_done = [this, response](const absl::Status& status, const SolveResponse* result) {
      if (result != nullptr) *response = *result;
      Finish(server::ToGrpcStatus(status));
    };
    auto job = coordinator.Submit(*request, RpcDeadline(context), std::move(callbacks));
    if (!job.ok()) {
      Finish(server::ToGrpcStatus(job.status()));
      return;
    }
    absl::MutexLock lock(&mu_);
    job_ = *std::move(job);
    if (cancelled_) job_->Cancel();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (job_) job_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  absl::Mutex mu_;
  std::shared_ptr<JobHandle> job_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// Events are queued and written one at a time (the callback API allows one
// outstanding write); Finish follows the last write.
class SolveStreamReactor : public grpc::ServerWriteReactor<SolveEvent> {
 public:
  SolveStreamReactor(Coordinator& coordinator, grpc::CallbackServerContext* context,
                     const SolveRequest* request) {
    Coordinator::Callbacks callbacks;
    callbacks.on_event = [this](const SolveEvent& event) { Enqueue(event); };
    callbacks.on_done = [this](const absl::Status& status, const SolveResponse* result) {
      if (result != nullptr) {
        SolveEvent event;
        *event.mutable_result() = *result;
        Enqueue(std::move(event));
      }
      Complete(server::ToGrpcStatus(status));
    };
    auto job = coordinator.Submit(*request, RpcDeadline(context), std::move(callbacks));
    if (!job.ok()) {
      Finish(server::ToGrpcStatus(job.status()));
      return;
    }
    absl::MutexLock lock(&mu_);
    job_ = *std::move(job);
    if (cancelled_) job_->Cancel();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      // The client is gone: stop the job; Complete finishes the call.
      std::shared_ptr<JobHandle> job;
      {
        absl::MutexLock lock(&mu_);
        pending_.clear();
        broken_ = true;
        job = job_;
      }
      if (job) job->Cancel();
    }
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
    }
    Pump();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (job_) job_->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void Enqueue(SolveEvent event) {
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      pending_.push_back(std::move(event));
    }
    Pump();
  }

  void Complete(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      final_status_ = std::move(status);
    }
    Pump();
  }

  // Starts the next write, or finishes after the last one; the gRPC calls
  // run outside mu_ since their reactions may run on this thread.
  void Pump() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finished_) return;
      if (!pending_.empty()) {
        current_ = std::move(pending_.front());
        pending_.pop_front();
        writing_ = true;
        action = kWrite;
      } else if (done_) {
        finished_ = true;
        status = final_status_;
        action = kFinish;
      }
    }
    if (action == kWrite) StartWrite(&current_);
    if (action == kFinish) Finish(status);
  }

  absl::Mutex mu_;
  std::shared_ptr<JobHandle> job_ ABSL_GUARDED_BY(mu_);
  std::deque<SolveEvent> pending_ ABSL_GUARDED_BY(mu_);
  SolveEvent current_;  // the event being written (owned until OnWriteDone)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

class ReasoningService final : public arbor::v1::Reasoning::CallbackService {
 public:
  explicit ReasoningService(Coordinator& coordinator) : coordinator_(coordinator) {}

  grpc::ServerUnaryReactor* Solve(grpc::CallbackServerContext* context, const SolveRequest* request,
                                  SolveResponse* response) override {
    return new SolveReactor(coordinator_, context, request, response);
  }

  grpc::ServerWriteReactor<SolveEvent>* SolveStream(grpc::CallbackServerContext* context,
                                                    const SolveRequest* request) override {
    return new SolveStreamReactor(coordinator_, context, request);
  }

 private:
  Coordinator& coordinator_;
};

}  // namespace

std::unique_ptr<grpc::Service> CreateReasoningService(Coordinator& coordinator) {
  return std::make_unique<ReasoningService>(coordinator);
}

}  // namespace arbor::coordinator
