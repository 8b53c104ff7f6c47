// Helpers for the in-process service tests: a plain HTTP GET (for /metrics)
// and polling until a condition holds.
#ifndef ARBOR_SERVING_TESTING_SERVICE_TEST_UTIL_H_
#define ARBOR_SERVING_TESTING_SERVICE_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <string>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"

namespace arbor::test_util {

// GET http://127.0.0.1:port/path; returns the whole response (headers and
// body), empty on a connection failure.
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, n);
    }
  }
  ::close(fd);
  return response;
}

// Polls `done` every 5 ms until it holds or `timeout` passes; returns its last value.
inline bool WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(90)) {
  const absl::Time end = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > end) return done();
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// For an async call whose context, request, response and status live in the
// test's frame: when the scope ends before the call completed (a failed
// ASSERT), cancels it and waits for its callback, so that the callback never
// writes into a dead frame. Declare it after what the callback touches.
class InFlightCall {
 public:
  InFlightCall(grpc::ClientContext* context, absl::Notification* done)
      : context_(context), done_(done) {}
  ~InFlightCall() {
    if (!done_->HasBeenNotified()) {
      context_->TryCancel();
      done_->WaitForNotification();
    }
  }
  InFlightCall(const InFlightCall&) = delete;
  InFlightCall& operator=(const InFlightCall&) = delete;

 private:
  grpc::ClientContext* context_;
  absl::Notification* done_;
};

// <ARBOR_SOURCE_DIR or .>/relative
inline std::string SourcePath(const std::string& relative) {
  const char* root = std::getenv("ARBOR_SOURCE_DIR");
  return std::string(root != nullptr ? root : ".") + "/" + relative;
}

}  // namespace arbor::test_util

#endif  // ARBOR_SERVING_TESTING_SERVICE_TEST_UTIL_H_
