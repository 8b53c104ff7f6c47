// BlackHole: a loopback TCP port that accepts connections (the kernel's
// backlog) and never answers a byte, as a hung (SIGSTOPped) server does: a
// gRPC call to it waits until its deadline. For the coordinator's tests.
// Thread-safety: not thread-safe.
#ifndef ARBOR_COORDINATOR_TESTING_BLACK_HOLE_H_
#define ARBOR_COORDINATOR_TESTING_BLACK_HOLE_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "common/check.h"

namespace arbor::testing {

class BlackHole {
 public:
  BlackHole() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    ARBOR_CHECK(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ARBOR_CHECK(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ARBOR_CHECK(listen(fd_, 64) == 0);
    socklen_t len = sizeof(addr);
    ARBOR_CHECK(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~BlackHole() { close(fd_); }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace arbor::testing

#endif  // ARBOR_COORDINATOR_TESTING_BLACK_HOLE_H_
