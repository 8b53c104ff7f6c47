// JobManager: bounded concurrency, a bounded FIFO queue, RESOURCE_EXHAUSTED
// beyond both, queued tasks rejected on shutdown.
#include "coordinator/job_manager.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator {
namespace {

TEST(JobManagerTest, RejectsBadLimits) {
  EXPECT_THAT(JobManager::Create(0, 1).status().message(),
              ::testing::HasSubstr("max_concurrent_jobs (0)"));
  EXPECT_THAT(JobManager::Create(1, -1).status().message(),
              ::testing::HasSubstr("max_queued_jobs (-1)"));
}

TEST(JobManagerTest, BoundsRunningAndQueuedJobs) {
  std::atomic<int> last_running{0}, last_queued{0};
  auto manager = JobManager::Create(2, 1, [&](int running, int queued) {
    last_running = running;
    last_queued = queued;
  });
  ASSERT_TRUE(manager.ok());
  absl::Notification release;
  std::atomic<int> ran{0};
  auto blocking = [&] {
    JobManager::Task task;
    task.run = [&] {
      release.WaitForNotification();
      ++ran;
    };
    return task;
  };
  ASSERT_TRUE((*manager)->Submit(blocking()).ok());
  ASSERT_TRUE((*manager)->Submit(blocking()).ok());
  while ((*manager)->running() < 2) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE((*manager)->Submit(blocking()).ok());  // queued
  EXPECT_EQ((*manager)->queued(), 1);
  EXPECT_EQ(last_running.load(), 2);
  EXPECT_EQ(last_queued.load(), 1);
  absl::Status full = (*manager)->Submit(blocking());
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.message()), ::testing::HasSubstr("max_queued_jobs 1"));
  release.Notify();
  while (ran.load() < 3) absl::SleepFor(absl::Milliseconds(1));
  (*manager)->Shutdown();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_EQ(last_running.load(), 0);
  EXPECT_EQ((*manager)->Submit(blocking()).code(), absl::StatusCode::kUnavailable);
}

TEST(JobManagerTest, ShutdownRejectsQueuedTasks) {
  auto manager = JobManager::Create(1, 4);
  ASSERT_TRUE(manager.ok());
  absl::Notification started, release;
  JobManager::Task first;
  first.run = [&] {
    started.Notify();
    release.WaitForNotification();
  };
  ASSERT_TRUE((*manager)->Submit(std::move(first)).ok());
  started.WaitForNotification();
  std::atomic<int> rejected{0}, ran{0};
  for (int i = 0; i < 3; ++i) {
    JobManager::Task task;
    task.run = [&] { ++ran; };
    task.on_rejected = [&] { ++rejected; };
    ASSERT_TRUE((*manager)->Submit(std::move(task)).ok());
  }
  std::thread shutdown([&] { (*manager)->Shutdown(); });
  // The only thread is busy, so the queue empties only by Shutdown's rejection.
  while ((*manager)->queued() > 0) absl::SleepFor(absl::Milliseconds(1));
  release.Notify();
  shutdown.join();
  EXPECT_EQ(rejected.load(), 3);
  EXPECT_EQ(ran.load(), 0);
}

}  // namespace
}  // namespace arbor::coordinator
