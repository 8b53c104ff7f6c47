// Helpers for the multi-process tests that run the real arbor-worker,
// arbor-verifier and arbor-coordinator on loopback: start a server and learn
// its addresses, restart one on its port, read /metrics, and read a process's
// open files and resident memory from /proc.
// Thread-safety: the free functions are thread-safe; a Service is not.
#ifndef ARBOR_TESTS_INTEGRATION_SERVICES_H_
#define ARBOR_TESTS_INTEGRATION_SERVICES_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/integration/subprocess.h"

namespace arbor::testing {

struct Service {
  std::vector<std::string> argv;  // without the --port/--host flags
  std::unique_ptr<Subprocess> process;
  std::string address;  // host:port of the gRPC server
  std::string metrics;  // host:port of /metrics
  int port = 0;
};

// Starts `argv` on loopback with `port` (0: a free one) and a free metrics
// port; waits for "listening on" and "metrics on".
absl::StatusOr<Service> StartService(std::vector<std::string> argv, int port = 0,
                                     absl::Duration timeout = absl::Seconds(60));
// StartService in a test: a service that does not start is a test failure
// (ADD_FAILURE, naming the binary and why), and comes back without a process
// or addresses, so that the test's own checks of them fail next.
Service StartServiceOrFail(std::vector<std::string> argv);
// SIGKILLs the service (SIGCONT first, in case it is stopped) and reaps it.
void KillService(Service& service);
// Starts the service again on its port after KillService.
absl::Status RestartService(Service& service, absl::Duration timeout = absl::Seconds(60));

// The bundled tiny models' folder: $ARBOR_SOURCE_DIR/models.
std::string ModelsDir();

// GET http://host_port/path (HTTP/1.0); the whole reply, "" when it cannot connect.
std::string HttpGet(const std::string& host_port, const std::string& path);
// Sum of the samples of `metric` in Prometheus text whose line contains every `needle`.
double MetricValue(const std::string& text, const std::string& metric,
                   const std::vector<std::string>& needles);

// Open file descriptors of `pid` (/proc/PID/fd); -1 when unreadable.
int OpenFds(pid_t pid);
// Resident memory of `pid` in KiB (/proc/PID/status VmRSS); -1 when unreadable.
int64_t RssKib(pid_t pid);

}  // namespace arbor::testing

#endif  // ARBOR_TESTS_INTEGRATION_SERVICES_H_
