// The search-and-learn baseline of docs/E2E.md: the load generator runs the
// search itself, with the same search library the coordinator runs, over a
// generator and a reward model it reaches through their public gRPC APIs
// (arbor.v1.Generator, arbor.v1.Verifier) the way a Python search loop over a
// stateless inference server does:
//  - every branch is its own Generator.Extend call carrying the branch's whole
//    token prefix (prompt + steps so far) as its prompt, all branches of a
//    step sent at once and awaited together (a barrier per step);
//  - every Verifier.Score call carries the question and all steps as text.
// Token prefixes stand in for re-sent text, so the baseline pays no client
// tokenization: it is, if anything, favoured. Against a worker started with
// --prefix_cache=false every call prefills its whole prefix, as a server
// without automatic prefix caching does.
//
// Thread-safety: RunStepwiseJob is thread-safe (one job per calling thread);
// the channels are shared.
#ifndef ARBOR_BENCH_E2E_STEPWISE_SEARCH_H_
#define ARBOR_BENCH_E2E_STEPWISE_SEARCH_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace arbor::v1 {
class SolveRequest;
class SolveResponse;
}  // namespace arbor::v1

namespace arbor::bench {

struct StepwiseTargets {
  std::shared_ptr<grpc::Channel> generator;  // an arbor.v1.Generator (arbor-worker)
  std::shared_ptr<grpc::Channel> verifier;   // an arbor.v1.Verifier (arbor-verifier)
  // The model names the services serve (their Info); the request's model and
  // reward_model override them when set.
  std::string model;
  std::string reward_model;
};

// Runs `request` (validated as the coordinator validates it) to the end and
// returns the response the coordinator would have built, with usage from the
// services' own accounting. `deadline` bounds the whole job.
absl::StatusOr<arbor::v1::SolveResponse> RunStepwiseJob(const arbor::v1::SolveRequest& request,
                                                        const StepwiseTargets& targets,
                                                        absl::Time deadline);

// The model names served at `targets` (Generator.Info, Verifier.Info).
absl::Status ResolveModels(StepwiseTargets* targets, absl::Time deadline);

}  // namespace arbor::bench

#endif  // ARBOR_BENCH_E2E_STEPWISE_SEARCH_H_
