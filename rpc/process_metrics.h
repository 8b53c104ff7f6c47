// Process and build metrics every Arbor server exports on /metrics:
//  - ProcessCollector: the standard process_* series (process_cpu_seconds_total,
//    process_resident_memory_bytes, process_virtual_memory_bytes,
//    process_start_time_seconds, process_open_fds, process_max_fds,
//    process_threads), read from /proc/self at each scrape. prometheus-cpp
//    1.0 has no process collector of its own.
//  - AddBuildInfo: arbor_build_info{version, cuda, role} = 1, the usual
//    info-gauge, to join on or to see which build a pod runs.
// Linux only (/proc). Thread-safety: Collect is thread-safe (it keeps no
// state); AddBuildInfo is as thread-safe as prometheus::Registry.
#ifndef ARBOR_RPC_PROCESS_METRICS_H_
#define ARBOR_RPC_PROCESS_METRICS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace arbor::rpc {

// What /proc/self says about this process.
struct ProcessStats {
  double cpu_seconds = 0;        // user + system
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double start_time_seconds = 0;  // Unix time
  double open_fds = 0;
  double max_fds = 0;
  double threads = 0;
};

// Reads /proc/self/stat, /proc/stat (boot time), /proc/self/fd and
// RLIMIT_NOFILE. UNAVAILABLE when /proc cannot be read.
absl::StatusOr<ProcessStats> ReadProcessStats();

class ProcessCollector : public prometheus::Collectable {
 public:
  // Empty when /proc cannot be read (the scrape still succeeds).
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// The version this build was configured with (CMake ARBOR_BUILD_VERSION).
std::string_view BuildVersion();

// Sets arbor_build_info{version, cuda, role} to 1 in `registry`.
void AddBuildInfo(prometheus::Registry& registry, std::string_view role);

}  // namespace arbor::rpc

#endif  // ARBOR_RPC_PROCESS_METRICS_H_
