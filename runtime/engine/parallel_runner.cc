#include "runtime/engine/parallel_runner.h"

namespace arbor::runtime {

ParallelRunner::ParallelRunner(int workers) {
  for (int w = 1; w <= workers; ++w) threads_.emplace_back([this, w] { WorkerLoop(w); });
}

ParallelRunner::~ParallelRunner() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (auto& t : threads_) t.join();
}

void ParallelRunner::Run(int n, const std::function<void(int, int)>& fn) {
  if (threads_.empty() || n < 2) {
    for (int i = 0; i < n; ++i) fn(0, i);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    fn_ = &fn;
    n_ = n;
    next_.store(0);
    busy_ = static_cast<int>(threads_.size());
    ++generation_;
  }
  Work(0, fn, n);
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* busy) { return *busy == 0; }, &busy_));
  fn_ = nullptr;
}

void ParallelRunner::Work(int worker, const std::function<void(int, int)>& fn, int n) {
  for (int i = next_.fetch_add(1); i < n; i = next_.fetch_add(1)) fn(worker, i);
}

void ParallelRunner::WorkerLoop(int worker) {
  uint64_t seen = 0;
  while (true) {
    const std::function<void(int, int)>* fn;
    int n;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, &seen]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || generation_ != seen; };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      seen = generation_;
      fn = fn_;
      n = n_;
    }
    Work(worker, *fn, n);
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

}  // namespace arbor::runtime
