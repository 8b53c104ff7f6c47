// Fuzzes the SolveRequest validator: the input is a serialized
// arbor.v1.SolveRequest (tests/fuzz/corpus/solve_request holds real ones).
// Whatever it accepts maps to a strategy the search library validates too.
#include <cstddef>
#include <cstdint>

#include "arbor/v1/reasoning.pb.h"
#include "coordinator/solve_request.h"
#include "google/protobuf/stubs/logging.h"
#include "search/strategy.h"
#include "tests/fuzz/fuzz_util.h"

// Invalid UTF-8 in a string field is a parse failure protobuf also logs.
[[maybe_unused]] static const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::v1::SolveRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<arbor::search::StrategyConfig> config =
      arbor::coordinator::StrategyConfigFromRequest(request);
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument) {
      arbor::fuzz::Fail("a bad SolveRequest is not INVALID_ARGUMENT");
    }
    return 0;
  }
  if (!arbor::search::ValidateStrategyConfig(*config).ok()) {
    arbor::fuzz::Fail("an accepted SolveRequest maps to an invalid StrategyConfig");
  }
  (void)arbor::coordinator::NeedsRewardModel(*config);
  return 0;
}
