// gRPC services over ArithWorld (a test double of the worker and reward
// model; see arith_world.h): arbor.v1.Generator and arbor.v1.Verifier on the
// callback API. Calls run on a small thread pool so a configured delay (to
// make jobs take time in tests) never blocks gRPC threads and notices the
// call's cancellation. Metrics: arith_world_calls_total{method} and
// arith_world_cancelled_total{method} (calls that saw their cancellation).
// Thread-safety: thread-safe; outlive the grpc::Server they are registered in.
#ifndef ARBOR_COORDINATOR_TESTING_ARITH_WORLD_SERVICE_H_
#define ARBOR_COORDINATOR_TESTING_ARITH_WORLD_SERVICE_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "coordinator/testing/arith_world.h"
#include "grpcpp/impl/service_type.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace arbor::testing {

struct ArithServiceOptions {
  ArithWorldOptions world;
  absl::Duration extend_delay = absl::ZeroDuration();
  absl::Duration score_delay = absl::ZeroDuration();
  int threads = 4;
};

class ArithWorldServices {
 public:
  ArithWorldServices(const ArithServiceOptions& options, prometheus::Registry& registry);
  ~ArithWorldServices();

  grpc::Service* generator();
  grpc::Service* verifier();
  // Calls that noticed their cancellation while running (Extend + Score).
  double cancelled_calls() const;
  double calls(const std::string& method) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace arbor::testing

#endif  // ARBOR_COORDINATOR_TESTING_ARITH_WORLD_SERVICE_H_
