// Fuzzes the verifier's ScoreRequest checks: the input is a serialized
// arbor.v1.ScoreRequest. Whatever passes stays within the limits.
#include <cstddef>
#include <cstdint>

#include "arbor/v1/verifier.pb.h"
#include "common/utf8.h"
#include "google/protobuf/stubs/logging.h"
#include "tests/fuzz/fuzz_util.h"
#include "verifier/score_request.h"

// Invalid UTF-8 in a string field is a parse failure protobuf also logs.
[[maybe_unused]] static const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace arbor::verifier;
  arbor::v1::ScoreRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  VerifierLimits limits;
  limits.model_name = "prm";
  limits.max_candidates = 64;
  limits.max_steps = 32;
  absl::Status st = ValidateScoreRequest(request, limits);
  if (!st.ok()) {
    if (st.code() != absl::StatusCode::kInvalidArgument) arbor::fuzz::Fail("not INVALID_ARGUMENT");
    return 0;
  }
  if (request.candidates_size() > limits.max_candidates) arbor::fuzz::Fail("too many candidates");
  if (!arbor::IsValidUtf8(request.question())) arbor::fuzz::Fail("invalid UTF-8 question accepted");
  for (const arbor::v1::ScoreCandidate& c : request.candidates()) {
    if (c.steps_size() > limits.max_steps) arbor::fuzz::Fail("too many steps");
    for (const std::string& step : c.steps()) {
      if (!arbor::IsValidUtf8(step)) arbor::fuzz::Fail("invalid UTF-8 step accepted");
    }
  }
  return 0;
}
