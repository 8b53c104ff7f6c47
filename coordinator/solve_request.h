// Mapping between arbor.v1 Reasoning messages and the search library:
// validation of a SolveRequest (INVALID_ARGUMENT naming the field), the
// StrategyConfig it asks for (proto zeros take the documented defaults), and
// the SolveResponse / SolveEvent.Step built from the search's results.
// Stateless; thread-safe.
#ifndef ARBOR_COORDINATOR_SOLVE_REQUEST_H_
#define ARBOR_COORDINATOR_SOLVE_REQUEST_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "search/strategy.h"

namespace arbor::v1 {
class SolveRequest;
class SolveResponse;
class SolveEvent_Step;
class Usage;
}  // namespace arbor::v1

namespace arbor::coordinator {

inline constexpr size_t kMaxQuestionBytes = 64 * 1024;
inline constexpr size_t kMaxJobIdBytes = 128;
inline constexpr size_t kMaxModelNameBytes = 256;

// Checks the fields the search library does not know (job_id, question,
// model names, chat_template, delimiter encoding), then maps and validates
// the strategy, sampling, stop rules and budget.
absl::StatusOr<search::StrategyConfig> StrategyConfigFromRequest(
    const arbor::v1::SolveRequest& request);

// Whether the strategy calls a reward model.
bool NeedsRewardModel(const search::StrategyConfig& config);
// Whether it needs one that compares pairs (Verifier.Compare): best-of-N
// tournament selection.
bool NeedsPairwiseJudge(const search::StrategyConfig& config);

// Extra accounting only the coordinator knows.
struct JobAccounting {
  int64_t retries = 0;
  absl::Duration wall_time;
  std::string worker;
  std::string verifier;
};

// Where a job's time went (docs/E2E.md): the services' engine queue and
// compute, the network (the calls' wall time less those), and the coordinator
// (the job's wall time less its calls': admission queue, strategy, routing).
struct JobTimeBreakdown {
  absl::Duration coordinator, network, worker_queue, worker_compute, verifier_queue,
      verifier_compute;
};
JobTimeBreakdown BreakDownJobTime(const search::Usage& usage, absl::Duration wall_time);

void FillUsage(const search::Usage& usage, const JobAccounting& accounting, arbor::v1::Usage* out);
void FillSolveResponse(const std::string& job_id, const search::SolveResult& result,
                       const JobAccounting& accounting, arbor::v1::SolveResponse* out);
void FillStep(const search::IterationProgress& progress, const JobAccounting& accounting,
              arbor::v1::SolveEvent_Step* out);

}  // namespace arbor::coordinator

#endif  // ARBOR_COORDINATOR_SOLVE_REQUEST_H_
