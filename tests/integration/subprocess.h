// Subprocess: a child process for the multi-process integration tests. Its
// stdout is a pipe the test reads (servers print "listening on HOST:PORT");
// stderr goes to a file or is inherited. The destructor SIGKILLs and reaps a
// child still running, so a failed test leaks no process.
// Thread-safety: not thread-safe.
#ifndef ARBOR_TESTS_INTEGRATION_SUBPROCESS_H_
#define ARBOR_TESTS_INTEGRATION_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace arbor::testing {

class Subprocess {
 public:
  // `stderr_path` empty: inherit the test's stderr.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::string& stderr_path = "");
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Reads stdout until a line starting with `prefix`; returns the rest of it.
  absl::StatusOr<std::string> WaitForLine(std::string_view prefix, absl::Duration timeout);
  // Reads stdout to EOF.
  std::string ReadAll(absl::Duration timeout);
  void Signal(int signal_number);
  // Waits for the exit; returns the exit code, or 128 + signal.
  int Wait();
  bool running() const { return running_; }

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool running_ = false;
  std::string buffer_;
};

// Path of a built binary: $ARBOR_BINARY_DIR/bin/NAME.
std::string BinaryPath(const std::string& name);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_INTEGRATION_SUBPROCESS_H_
