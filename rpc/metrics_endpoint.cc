#include "rpc/metrics_endpoint.h"

#include <dlfcn.h>
#include <link.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "rpc/process_metrics.h"

namespace arbor::rpc {
namespace {

int AddTlsSegments(dl_phdr_info* info, size_t /*size*/, void* data) {
  auto* total = static_cast<size_t*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_TLS) *total += ph.p_memsz + ph.p_align;
  }
  return 0;
}

// civetweb's listening_ports syntax: "ADDR:PORT" or "[ADDR6]:PORT", numeric;
// "+PORT" is every address of both families (Debian's civetweb is built
// without IPv6 literals, but takes "+PORT").
absl::StatusOr<std::string> ListeningPort(const std::string& host, int port) {
  if (host.empty() || host == "0.0.0.0") return absl::StrCat("0.0.0.0:", port);
  if (host == "::" || host == "[::]") return absl::StrCat("+", port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string bare =
      host.front() == '[' && host.back() == ']' ? host.substr(1, host.size() - 2) : host;
  if (getaddrinfo(bare.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("metrics_host ", host, ": cannot resolve"));
  }
  char numeric[NI_MAXHOST];
  const int family = found->ai_family;
  const int rc = getnameinfo(found->ai_addr, found->ai_addrlen, numeric, sizeof(numeric),
                             nullptr, 0, NI_NUMERICHOST);
  freeaddrinfo(found);
  if (rc != 0) return absl::UnavailableError(absl::StrCat("metrics_host ", host, ": bad address"));
  return family == AF_INET6 ? absl::StrCat("[", numeric, "]:", port)
                            : absl::StrCat(numeric, ":", port);
}

// Opens and closes one TCP connection to host:port; errors are ignored.
void Knock(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    (void)!connect(fd, found->ai_addr, found->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(found);
}

}  // namespace

size_t StaticTlsBytes() {
  // Modules loaded at start (where static TLS comes from) do not change, so
  // once is enough; dlopen'ed ones get dynamic TLS, not on the stack.
  static const size_t bytes = [] {
    size_t total = 0;
    dl_iterate_phdr(AddTlsSegments, &total);
    return total;
  }();
  return bytes;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry) {
  absl::StatusOr<std::string> address = ListeningPort(host, port);
  if (!address.ok()) return address.status();
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  endpoint->registry_ = std::move(registry);
  endpoint->process_ = std::make_shared<ProcessCollector>();
  try {
    // Two threads: a scrape never waits behind a slow one.
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(*address, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve /metrics on ", *address, ": ", e.what()));
  }
  endpoint->exposer_->RegisterCollectable(endpoint->registry_);
  endpoint->exposer_->RegisterCollectable(endpoint->process_);
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", *address));
  }
  endpoint->port_ = ports.front();
  const std::string bound =
      address->front() == '+' ? "0.0.0.0" : address->substr(0, address->rfind(':'));
  endpoint->knock_host_ = bound == "0.0.0.0"    ? "127.0.0.1"
                          : bound.front() == '[' ? bound.substr(1, bound.size() - 2)
                                                 : bound;
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (exposer_ == nullptr) return;
  // civetweb's master thread polls its sockets for up to 2 s before it sees
  // the stop flag; a connection wakes it, so stopping takes milliseconds.
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    while (!stopped.load()) {
      Knock(knock_host_, port_);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  exposer_.reset();
  stopped = true;
  waker.join();
}

}  // namespace arbor::rpc

// glibc bug 11787 (see the header): a requested stack size is what the
// caller needs for its frames; add the static TLS that glibc takes from it.
extern "C" __attribute__((visibility("default"))) int pthread_attr_setstacksize(
    pthread_attr_t* attr, size_t stacksize) {
  using Fn = int (*)(pthread_attr_t*, size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  return real(attr, stacksize + arbor::rpc::StaticTlsBytes());
}
