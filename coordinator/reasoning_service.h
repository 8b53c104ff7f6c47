// The arbor.v1.Reasoning gRPC service (callback API): Solve answers with the
// job's SolveResponse; SolveStream writes Accepted, one Step per strategy
// iteration and the Result. A client cancellation or deadline cancels the
// job and its worker/verifier calls. The service object is created here so
// that only reasoning_service.cc includes the generated gRPC code.
// Thread-safety: gRPC calls the service from its own threads; the
// Coordinator must outlive the service.
#ifndef ARBOR_COORDINATOR_REASONING_SERVICE_H_
#define ARBOR_COORDINATOR_REASONING_SERVICE_H_

#include <memory>

#include "coordinator/coordinator.h"
#include "grpcpp/impl/service_type.h"

namespace arbor::coordinator {

std::unique_ptr<grpc::Service> CreateReasoningService(Coordinator& coordinator);

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_REASONING_SERVICE_H_
