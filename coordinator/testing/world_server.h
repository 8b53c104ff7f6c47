// An in-process ArithWorld server (a test double of a worker and verifier)
// for the coordinator's in-process tests. Not thread-safe.
#ifndef ARBOR_COORDINATOR_TESTING_WORLD_SERVER_H_
#define ARBOR_COORDINATOR_TESTING_WORLD_SERVER_H_

#include <memory>
#include <string>

#include "common/check.h"
#include "coordinator/testing/arith_world_service.h"
#include "prometheus/registry.h"
#include "rpc/server.h"

namespace arbor::testing {

struct WorldServer {
  explicit WorldServer(ArithServiceOptions options = {}, int port = 0) {
    registry = std::make_shared<prometheus::Registry>();
    services = std::make_unique<ArithWorldServices>(options, *registry);
    rpc::ServerOptions server_options;
    server_options.host = "127.0.0.1";
    server_options.port = port;
    server_options.metrics_port = -1;
    server_options.announce = false;
    auto started =
        rpc::Server::Start(server_options, {services->generator(), services->verifier()}, registry);
    ARBOR_CHECK(started.ok());
    server = *std::move(started);
  }
  static ArithServiceOptions Model(const std::string& model) {
    ArithServiceOptions options;
    options.world.model = model;
    return options;
  }
  std::string address() const { return server->address(); }

  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<ArithWorldServices> services;
  std::unique_ptr<rpc::Server> server;
};

}  // namespace arbor::testing

#endif  // ARBOR_COORDINATOR_TESTING_WORLD_SERVER_H_
