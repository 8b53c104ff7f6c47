// The handoffs tests/sanitize/absl_tsan_hooks.cc must make visible to
// ThreadSanitizer (built only with -DARBOR_SANITIZE=thread; scripts/sanitize.sh
// tsan). Each test writes plain data in one thread and reads it in another
// after an Abseil handoff: without the hooks TSan reports each as a race and
// the process exits with TSAN_OPTIONS' exitcode, failing the test.
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

TEST(AbslTsanHooksTest, MutexGuardsItsData) {
  absl::Mutex mu;
  int counter = 0;
  std::thread a([&] {
    for (int i = 0; i < 1000; ++i) {
      absl::MutexLock lock(&mu);
      ++counter;
    }
  });
  std::thread b([&] {
    for (int i = 0; i < 1000; ++i) {
      absl::MutexLock lock(&mu);
      ++counter;
    }
  });
  a.join();
  b.join();
  EXPECT_EQ(counter, 2000);
}

TEST(AbslTsanHooksTest, ReaderLockSeesTheWriter) {
  absl::Mutex mu;
  int value = 0;
  bool written = false;
  std::thread writer([&] {
    absl::MutexLock lock(&mu);
    value = 5;
    written = true;
  });
  int seen = 0;
  while (seen == 0) {
    absl::ReaderMutexLock lock(&mu);
    if (written) seen = value;
  }
  writer.join();
  EXPECT_EQ(seen, 5);
}

TEST(AbslTsanHooksTest, CondVarAndAwaitHandOff) {
  absl::Mutex mu;
  absl::CondVar cv;
  bool ready = false;
  int box = 0;
  std::thread producer([&] {
    absl::MutexLock lock(&mu);
    box = 7;
    ready = true;
    cv.Signal();
  });
  int got = 0;
  {
    absl::MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    got = box;
  }
  producer.join();
  EXPECT_EQ(got, 7);

  bool second = false;
  std::thread again([&] {
    absl::MutexLock lock(&mu);
    box = 8;
    second = true;
  });
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&second));
    got = box;
  }
  again.join();
  EXPECT_EQ(got, 8);
}

// The library's *WithTimeout functions call its *WithDeadline ones, which are
// hooked too: each handoff below was annotated twice before the hooks left
// the annotating to the *WithDeadline hook (a wait unlocked the Mutex twice,
// "unlock of an unlocked mutex"; a timed lock locked it twice, "double
// lock"). TSan reports one such misuse per Mutex, so each case has its own.
// The waits hold the Mutex while the other thread starts, so they do wait.
TEST(AbslTsanHooksTest, CondVarWaitWithTimeoutHandsOff) {
  absl::Mutex mu;
  absl::CondVar cv;
  bool ready = false;
  int box = 0;
  int got = 0;
  std::thread producer;
  {
    absl::MutexLock lock(&mu);
    producer = std::thread([&] {
      absl::MutexLock lock(&mu);
      box = 1;
      ready = true;
      cv.Signal();
    });
    while (!ready) cv.WaitWithTimeout(&mu, absl::Seconds(30));
    got = box;
  }
  producer.join();
  EXPECT_EQ(got, 1);
}

TEST(AbslTsanHooksTest, AwaitWithTimeoutHandsOff) {
  absl::Mutex mu;
  bool ready = false;
  int box = 0;
  int got = 0;
  std::thread producer;
  {
    absl::MutexLock lock(&mu);
    producer = std::thread([&] {
      absl::MutexLock lock(&mu);
      box = 2;
      ready = true;
    });
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(30)));
    got = box;
  }
  producer.join();
  EXPECT_EQ(got, 2);
}

TEST(AbslTsanHooksTest, LockWhenWithTimeoutHandsOff) {
  absl::Mutex mu;
  bool ready = true;
  int box = 0;
  ASSERT_TRUE(mu.LockWhenWithTimeout(absl::Condition(&ready), absl::Seconds(30)));
  box = 3;
  mu.Unlock();
  int got = 0;
  std::thread reader([&] {
    absl::MutexLock lock(&mu);
    got = box;
  });
  reader.join();
  EXPECT_EQ(got, 3);

  absl::Mutex shared;
  ASSERT_TRUE(shared.ReaderLockWhenWithTimeout(absl::Condition(&ready), absl::Seconds(30)));
  got = box;
  shared.ReaderUnlock();
  std::thread writer([&] {
    absl::MutexLock lock(&shared);
    box = 4;
  });
  writer.join();
  EXPECT_EQ(got, 3);
  EXPECT_EQ(box, 4);
}

// The waiter comes after Notify, so the library returns without taking its
// Mutex: only the hooks' acquire on the flag orders the reads after the
// notifier's writes (the sleep orders nothing for TSan, it only makes that
// path the one taken).
TEST(AbslTsanHooksTest, NotificationPublishesEvenWhenAlreadyNotified) {
  absl::Notification done;
  int published = 0;
  std::thread notifier([&] {
    published = 42;
    done.Notify();
  });
  absl::SleepFor(absl::Milliseconds(100));
  done.WaitForNotification();
  EXPECT_EQ(published, 42);

  absl::Notification timed;
  int published_too = 0;
  std::thread notifier_too([&] {
    published_too = 43;
    timed.Notify();
  });
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(timed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(published_too, 43);
  notifier.join();
  notifier_too.join();
}

}  // namespace
