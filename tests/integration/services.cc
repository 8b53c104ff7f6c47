#include "tests/integration/services.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"

namespace arbor::testing {

absl::StatusOr<Service> StartService(std::vector<std::string> argv, int port,
                                     absl::Duration timeout) {
  Service service;
  service.argv = argv;
  argv.insert(argv.end(), {absl::StrCat("--port=", port), "--host=127.0.0.1",
                           "--metrics_host=127.0.0.1", "--metrics_port=0"});
  auto process = Subprocess::Start(argv);
  if (!process.ok()) return process.status();
  service.process = *std::move(process);
  auto address = service.process->WaitForLine("listening on ", timeout);
  if (!address.ok()) {
    return absl::Status(address.status().code(),
                        absl::StrCat(argv[0], ": ", address.status().message()));
  }
  service.address = std::string(absl::StripAsciiWhitespace(*address));
  const size_t colon = service.address.rfind(':');
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(service.address.substr(colon + 1), &service.port)) {
    return absl::InternalError(absl::StrCat(argv[0], ": bad address '", service.address, "'"));
  }
  auto metrics = service.process->WaitForLine("metrics on ", timeout);
  if (metrics.ok()) service.metrics = std::string(absl::StripAsciiWhitespace(*metrics));
  return service;
}

Service StartServiceOrFail(std::vector<std::string> argv) {
  absl::StatusOr<Service> started = StartService(std::move(argv));
  if (!started.ok()) {
    ADD_FAILURE() << started.status();
    return Service{};
  }
  return *std::move(started);
}

void KillService(Service& service) {
  if (service.process == nullptr || !service.process->running()) return;
  service.process->Signal(SIGCONT);
  service.process->Signal(SIGKILL);
  service.process->Wait();
}

absl::Status RestartService(Service& service, absl::Duration timeout) {
  KillService(service);
  auto again = StartService(service.argv, service.port, timeout);
  if (!again.ok()) return again.status();
  service = *std::move(again);
  return absl::OkStatus();
}

std::string ModelsDir() {
  const char* source = std::getenv("ARBOR_SOURCE_DIR");
  return absl::StrCat(source == nullptr ? "." : source, "/models");
}

std::string HttpGet(const std::string& host_port, const std::string& path) {
  const std::vector<std::string> parts = absl::StrSplit(host_port, ':');
  if (parts.size() != 2) return "";
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(parts[1])));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nConnection: close\r\n\r\n";
    (void)!write(fd, request.data(), request.size());
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, n);
  }
  close(fd);
  return reply;
}

double MetricValue(const std::string& text, const std::string& metric,
                   const std::vector<std::string>& needles) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, metric + "{") && !absl::StartsWith(line, metric + " ")) continue;
    bool match = true;
    for (const auto& n : needles) match = match && absl::StrContains(line, n);
    if (!match) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

int OpenFds(pid_t pid) {
  DIR* dir = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

int64_t RssKib(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    int64_t kib = 0;
    const std::string value(
        absl::StripAsciiWhitespace(absl::StripSuffix(absl::StripPrefix(line, "VmRSS:"), "kB")));
    if (absl::SimpleAtoi(value, &kib)) return kib;
  }
  return -1;
}

}  // namespace arbor::testing
