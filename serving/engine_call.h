// EngineCall: the state shared by a unary callback reactor and the engine
// request it submitted, so that a gRPC cancellation (client cancel, deadline,
// server shutdown) cancels the engine request, whichever of the submission,
// the engine's completion and the cancellation comes first.
//
// Protocol, for a reactor R holding `std::shared_ptr<EngineCall> call`:
//   - R's handler submits while holding call->mu (SubmitLocked below), so the
//     engine's completion callback, which first calls call->WaitForSubmitter(),
//     cannot run R's Finish before the handler is done touching R;
//   - R::OnCancel calls call->Cancel().
// The engine callback captures the shared_ptr, so the mutex outlives R.
//
// Thread-safety: all members are thread-safe.
#ifndef ARBOR_SERVING_ENGINE_CALL_H_
#define ARBOR_SERVING_ENGINE_CALL_H_

#include <chrono>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "runtime/engine/engine.h"

namespace arbor::serving {

class EngineCall {
 public:
  explicit EngineCall(runtime::Engine* engine) : engine_(engine) {}

  // Runs `submit` (returning the engine's StatusOr<RequestId>) under the lock
  // and records the id; if the call was cancelled meanwhile, cancels the
  // engine request. Returns the submission's status.
  template <typename SubmitFn>
  absl::Status Submit(SubmitFn submit) {
    runtime::RequestId id = 0;
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      absl::StatusOr<runtime::RequestId> submitted = submit();
      if (!submitted.ok()) return submitted.status();
      id = *submitted;
      id_ = id;
      submitted_ = true;
      cancel = cancelled_;
    }
    if (cancel) engine_->Cancel(id);
    return absl::OkStatus();
  }

  // Called first by the engine's completion callback: waits until Submit has
  // returned from the engine (a few microseconds at most).
  void WaitForSubmitter() { absl::MutexLock lock(&mu_); }

  // gRPC cancelled the call: cancel the engine request (now, or as soon as it
  // is submitted).
  void Cancel() {
    runtime::RequestId id = 0;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      if (!submitted_) return;
      id = id_;
    }
    // Outside the lock: the engine may be running our completion callback,
    // which takes the lock.
    engine_->Cancel(id);
  }

 private:
  runtime::Engine* const engine_;
  absl::Mutex mu_;
  bool submitted_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  runtime::RequestId id_ ABSL_GUARDED_BY(mu_) = 0;
};

// The call's gRPC deadline as an absl::Time (InfiniteFuture when none).
inline absl::Time CallDeadline(const grpc::ServerContextBase& context) {
  const auto deadline = context.deadline();
  if (deadline >=
      std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365 * 100)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_ENGINE_CALL_H_
