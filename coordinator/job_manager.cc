#include "coordinator/job_manager.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace arbor::coordinator {

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(int max_concurrent, int max_queued,
                                                               Observer observer) {
  if (max_concurrent < 1 || max_concurrent > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_concurrent_jobs (", max_concurrent, ") must be in [1, 4096]"));
  }
  if (max_queued < 0 || max_queued > 1000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queued_jobs (", max_queued, ") must be in [0, 1000000]"));
  }
  std::unique_ptr<JobManager> manager(
      new JobManager(max_concurrent, max_queued, std::move(observer)));
  for (int i = 0; i < max_concurrent; ++i) {
    manager->threads_.emplace_back([m = manager.get()] { m->WorkerLoop(); });
  }
  return manager;
}

JobManager::JobManager(int max_concurrent, int max_queued, Observer observer)
    : max_concurrent_(max_concurrent), max_queued_(max_queued), observer_(std::move(observer)) {}

JobManager::~JobManager() { Shutdown(); }

absl::Status JobManager::Submit(Task task) {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::UnavailableError("coordinator is shutting down");
  // A free thread takes the task at once; otherwise it waits in the queue.
  const int waiting = static_cast<int>(queue_.size());
  if (running_ + waiting >= max_concurrent_ + max_queued_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("coordinator at capacity: ", running_, " jobs running (max_concurrent_jobs ",
                     max_concurrent_, ") and ", waiting, " queued (max_queued_jobs ", max_queued_,
                     "); retry later"));
  }
  queue_.push_back(std::move(task));
  Notify();
  return absl::OkStatus();
}

void JobManager::WorkerLoop() {
  while (true) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobManager* m)
               ABSL_NO_THREAD_SAFETY_ANALYSIS { return m->shutdown_ || !m->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // shut down
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
      Notify();
    }
    task.run();
    absl::MutexLock lock(&mu_);
    --running_;
    Notify();
  }
}

void JobManager::Shutdown() {
  std::deque<Task> rejected;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_ && threads_.empty()) return;
    shutdown_ = true;
    rejected.swap(queue_);
    Notify();
  }
  for (Task& task : rejected) {
    if (task.on_rejected) task.on_rejected();
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  absl::MutexLock lock(&mu_);
  threads_.clear();
}

void JobManager::Notify() {
  if (observer_) observer_(running_, static_cast<int>(queue_.size()));
}

int JobManager::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

int JobManager::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

}  // namespace arbor::coordinator
