// ParallelRunner: a small fixed pool that runs fn(worker, index) for index in
// [0, n) on the calling thread plus `workers` helper threads (worker 0 is the
// caller). Used to draw the samples of a step in parallel: with a 150k
// vocabulary one draw costs about a millisecond, and a step may draw hundreds.
//
// Thread-safety: Run is called by one thread at a time (the engine's scheduler
// thread); fn must be safe to call concurrently for distinct indices.
#ifndef ARBOR_RUNTIME_ENGINE_PARALLEL_RUNNER_H_
#define ARBOR_RUNTIME_ENGINE_PARALLEL_RUNNER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace arbor::runtime {

class ParallelRunner {
 public:
  explicit ParallelRunner(int workers);
  ~ParallelRunner();
  ParallelRunner(const ParallelRunner&) = delete;
  ParallelRunner& operator=(const ParallelRunner&) = delete;

  int num_workers() const { return static_cast<int>(threads_.size()) + 1; }
  // Returns when every index has run.
  void Run(int n, const std::function<void(int, int)>& fn);

 private:
  void Work(int worker, const std::function<void(int, int)>& fn, int n);
  void WorkerLoop(int worker);

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  const std::function<void(int, int)>* fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int> next_{0};
  std::vector<std::thread> threads_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_ENGINE_PARALLEL_RUNNER_H_
