// Fuzzes the worker's ExtendRequest checks: the input is a serialized
// arbor.v1.ExtendRequest. Whatever passes converts to an engine request whose
// token ids lie in the vocabulary and whose sample counts stay in bounds.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "arbor/v1/generator.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/extend_request.h"

// Invalid UTF-8 in a string field is a parse failure protobuf also logs.
[[maybe_unused]] static const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace arbor::worker;
  arbor::v1::ExtendRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  GeneratorLimits limits;
  limits.model_name = "policy";
  limits.vocab_size = 600;
  limits.max_context_tokens = 1024;
  absl::Status st = ValidateExtendRequest(request, limits);
  if (!st.ok()) {
    if (st.code() != absl::StatusCode::kInvalidArgument) arbor::fuzz::Fail("not INVALID_ARGUMENT");
    return 0;
  }
  std::vector<int32_t> prompt(request.prompt_tokens().begin(), request.prompt_tokens().end());
  if (prompt.empty()) prompt.assign(request.prompt_text().size() % 2000 + 1, 5);
  if (!ValidateExtendContext(request, prompt.size(), limits).ok()) return 0;
  const size_t prompt_size = prompt.size();
  arbor::runtime::GenerateRequest out = ToGenerateRequest(request, std::move(prompt));
  if (out.branches.empty() || static_cast<int>(out.branches.size()) > limits.max_branches) {
    arbor::fuzz::Fail("branch count out of bounds after validation");
  }
  int64_t outputs = 0;
  for (const arbor::runtime::BranchSpec& b : out.branches) {
    if (b.num_samples < 1 || b.num_samples > limits.max_samples_per_branch) {
      arbor::fuzz::Fail("num_samples out of bounds after validation");
    }
    outputs += b.num_samples;
    for (int32_t id : b.suffix_tokens) {
      if (id < 0 || id >= limits.vocab_size) arbor::fuzz::Fail("suffix id outside the vocabulary");
    }
    if (prompt_size + b.suffix_tokens.size() >= static_cast<size_t>(limits.max_context_tokens)) {
      arbor::fuzz::Fail("a branch that fills the context passed ValidateExtendContext");
    }
  }
  if (outputs > limits.max_outputs) arbor::fuzz::Fail("more outputs than max_outputs");
  return 0;
}
