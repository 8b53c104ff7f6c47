#include "rpc/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

#ifndef ARBOR_BUILD_VERSION
#define ARBOR_BUILD_VERSION "unknown"
#endif
#ifndef ARBOR_BUILD_CUDA
#define ARBOR_BUILD_CUDA 0
#endif

namespace arbor::rpc {
namespace {

absl::StatusOr<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  absl::StatusOr<std::string> stat = ReadFile("/proc/self/stat");
  if (!stat.ok()) return stat.status();
  // Fields after the command name, which is in parentheses and may itself
  // hold spaces and parentheses: split after the last ')'. Field numbers
  // below are proc(5)'s (state is field 3).
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return absl::UnavailableError("malformed /proc/self/stat");
  std::istringstream fields(stat->substr(close + 2));
  std::vector<std::string> f(3);  // f[3] is field 3 (state)
  for (std::string field; fields >> field;) f.push_back(field);
  if (f.size() < 25) return absl::UnavailableError("short /proc/self/stat");
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  ProcessStats s;
  s.cpu_seconds = (std::stod(f[14]) + std::stod(f[15])) / ticks;  // utime + stime
  s.threads = std::stod(f[20]);
  s.virtual_bytes = std::stod(f[23]);
  s.resident_bytes = std::stod(f[24]) * page;

  absl::StatusOr<std::string> proc_stat = ReadFile("/proc/stat");
  if (!proc_stat.ok()) return proc_stat.status();
  const size_t btime = proc_stat->find("\nbtime ");
  if (btime == std::string::npos) return absl::UnavailableError("no btime in /proc/stat");
  s.start_time_seconds = std::stod(proc_stat->substr(btime + 7)) + std::stod(f[22]) / ticks;

  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return absl::UnavailableError("cannot list /proc/self/fd");
  int open = 0;
  while (const dirent* entry = readdir(fds)) {
    if (entry->d_name[0] != '.') ++open;
  }
  closedir(fds);
  s.open_fds = open - 1;  // not the descriptor opendir itself holds
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) s.max_fds = static_cast<double>(limit.rlim_cur);
  return s;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  absl::StatusOr<ProcessStats> s = ReadProcessStats();
  if (!s.ok()) return {};
  using prometheus::MetricType;
  return {
      Family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             MetricType::Counter, s->cpu_seconds),
      Family("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
             s->resident_bytes),
      Family("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
             s->virtual_bytes),
      Family("process_start_time_seconds",
             "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
             s->start_time_seconds),
      Family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
             s->open_fds),
      Family("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
             s->max_fds),
      Family("process_threads", "Number of OS threads in the process.", MetricType::Gauge,
             s->threads),
  };
}

std::string_view BuildVersion() { return ARBOR_BUILD_VERSION; }

void AddBuildInfo(prometheus::Registry& registry, std::string_view role) {
  prometheus::BuildGauge()
      .Name("arbor_build_info")
      .Help("Always 1: the Arbor version, whether it was built with the CUDA backend, the role")
      .Register(registry)
      .Add({{"version", std::string(BuildVersion())},
            {"cuda", ARBOR_BUILD_CUDA ? "true" : "false"},
            {"role", std::string(role)}})
      .Set(1);
}

}  // namespace arbor::rpc
