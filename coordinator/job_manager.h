// JobManager: admission control and the job threads. At most
// `max_concurrent` jobs run at once (one thread each, since a strategy
// blocks on its worker calls); up to `max_queued` more wait in FIFO order;
// beyond that Submit returns RESOURCE_EXHAUSTED at once, so overload is
// visible to clients instead of growing latency without bound.
// Thread-safety: all methods are thread-safe. The destructor (or Shutdown)
// runs the queued tasks' `on_rejected` and joins the threads after the
// running tasks return.
#ifndef ARBOR_COORDINATOR_JOB_MANAGER_H_
#define ARBOR_COORDINATOR_JOB_MANAGER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace arbor::coordinator {

class JobManager {
 public:
  struct Task {
    std::function<void()> run;
    // Called instead of `run` when the manager shuts down before the task starts.
    std::function<void()> on_rejected;
  };
  // Observes the counts after every change (for metrics); may be empty.
  using Observer = std::function<void(int running, int queued)>;

  static absl::StatusOr<std::unique_ptr<JobManager>> Create(int max_concurrent, int max_queued,
                                                            Observer observer = nullptr);
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Queues `task`; RESOURCE_EXHAUSTED when running and queue are full,
  // UNAVAILABLE after Shutdown.
  absl::Status Submit(Task task);

  // Stops accepting, rejects the queued tasks, waits for the running ones.
  void Shutdown();

  int running() const;
  int queued() const;
  int max_concurrent() const { return max_concurrent_; }
  int max_queued() const { return max_queued_; }

 private:
  JobManager(int max_concurrent, int max_queued, Observer observer);
  void WorkerLoop();
  void Notify() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_concurrent_;
  const int max_queued_;
  const Observer observer_;
  mutable absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_JOB_MANAGER_H_
