#include "coordinator/reasoning_service.h"

#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "common/utf8.h"
#include "coordinator/solve_request.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpcpp/grpcpp.h"
#include "rpc/auth.h"
#include "rpc/status_util.h"

namespace arbor::coordinator {
namespace {

using arbor::v1::SolveEvent;
using arbor::v1::SolveRequest;
using arbor::v1::SolveResponse;

std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

grpc::ByteBuffer Serialize(const google::protobuf::Message& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

// Finds the first string field (at any depth) that is not valid UTF-8 and
// names it like "stop.step_delimiters[1]"; "" when there is none.
std::string FindInvalidUtf8(const std::string& bytes, const google::protobuf::Descriptor* type,
                            const std::string& prefix, int depth) {
  google::protobuf::UnknownFieldSet fields;
  if (depth > 8 || !fields.ParseFromString(bytes)) return "";
  std::map<int, int> seen;
  for (int i = 0; i < fields.field_count(); ++i) {
    const google::protobuf::UnknownField& field = fields.field(i);
    const int index = seen[field.number()]++;
    if (field.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const google::protobuf::FieldDescriptor* fd = type->FindFieldByNumber(field.number());
    if (fd == nullptr) continue;
    std::string name = prefix + fd->name();
    if (fd->is_repeated()) name = absl::StrCat(name, "[", index, "]");
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
        !IsValidUtf8(field.length_delimited())) {
      return name;
    }
    if (fd->type() == google::protobuf::FieldDescriptor::TYPE_MESSAGE) {
      std::string inner =
          FindInvalidUtf8(field.length_delimited(), fd->message_type(), name + ".", depth + 1);
      if (!inner.empty()) return inner;
    }
  }
  return "";
}

// Parses the request ourselves (raw method): gRPC would answer an
// unparseable one with a bare UNIMPLEMENTED; a client deserves the field.
absl::Status ParseSolveRequest(const grpc::ByteBuffer& buffer, SolveRequest* request) {
  const std::string bytes = Flatten(buffer);
  if (request->ParseFromString(bytes)) return absl::OkStatus();
  const std::string field = FindInvalidUtf8(bytes, SolveRequest::descriptor(), "", 0);
  if (!field.empty()) return absl::InvalidArgumentError(field + ": is not valid UTF-8");
  return absl::InvalidArgumentError("request: not a valid arbor.v1.SolveRequest message");
}

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
               const grpc::ByteBuffer* raw_request, grpc::ByteBuffer* response) {
    auto client = rpc::AuthenticateCall(coordinator.options().client_tokens.get(), *context);
    if (!client.ok()) {
      Finish(rpc::ToGrpcStatus(client.status()));
      return;
    }
    SolveRequest request;
    if (absl::Status parsed = ParseSolveRequest(*raw_request, &request); !parsed.ok()) {
      Finish(rpc::ToGrpcStatus(parsed));
      return;
    }
    Coordinator::Callbacks callbacks;
    callbacks.on_done = [this, response](const absl::Status& status, const SolveResponse* result) {
      if (result != nullptr) *response = Serialize(*result);
      Finish(rpc::ToGrpcStatus(status));
    };
    auto job = coordinator.Submit(request, RpcDeadline(context), std::move(callbacks), *client);
    if (!job.ok()) {
      Finish(rpc::ToGrpcStatus(job.status()));
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
class SolveStreamReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  SolveStreamReactor(Coordinator& coordinator, grpc::CallbackServerContext* context,
                     const grpc::ByteBuffer* raw_request) {
    auto client = rpc::AuthenticateCall(coordinator.options().client_tokens.get(), *context);
    if (!client.ok()) {
      Finish(rpc::ToGrpcStatus(client.status()));
      return;
    }
    SolveRequest request;
    if (absl::Status parsed = ParseSolveRequest(*raw_request, &request); !parsed.ok()) {
      Finish(rpc::ToGrpcStatus(parsed));
      return;
    }
    Coordinator::Callbacks callbacks;
    callbacks.on_event = [this](const SolveEvent& event) { Enqueue(event); };
    callbacks.on_done = [this](const absl::Status& status, const SolveResponse* result) {
      if (result != nullptr) {
        SolveEvent event;
        *event.mutable_result() = *result;
        Enqueue(std::move(event));
      }
      Complete(rpc::ToGrpcStatus(status));
    };
    auto job = coordinator.Submit(request, RpcDeadline(context), std::move(callbacks), *client);
    if (!job.ok()) {
      Finish(rpc::ToGrpcStatus(job.status()));
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
  void Enqueue(const SolveEvent& event) {
    grpc::ByteBuffer bytes = Serialize(event);
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      pending_.push_back(std::move(bytes));
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
  std::deque<grpc::ByteBuffer> pending_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer current_;  // the event being written (owned until OnWriteDone)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

// Raw (ByteBuffer) methods so that requests are parsed here; see ParseSolveRequest.
using RawReasoningService = arbor::v1::Reasoning::WithRawCallbackMethod_Solve<
    arbor::v1::Reasoning::WithRawCallbackMethod_SolveStream<arbor::v1::Reasoning::Service>>;

class ReasoningService final : public RawReasoningService {
 public:
  explicit ReasoningService(Coordinator& coordinator) : coordinator_(coordinator) {}

  grpc::ServerUnaryReactor* Solve(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override {
    return new SolveReactor(coordinator_, context, request, response);
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* SolveStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override {
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
