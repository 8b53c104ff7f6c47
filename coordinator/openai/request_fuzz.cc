// Fuzzes the OpenAI-style request parser (POST /v1/chat/completions and
// /v1/completions bodies). The first byte picks the endpoint; the rest is the
// body. Every refusal is INVALID_ARGUMENT naming a field (never an exception:
// one would escape as a 500); whatever is accepted passes the SolveRequest
// validator the coordinator runs next, or is refused by it naming a field.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "coordinator/openai/request.h"
#include "coordinator/solve_request.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace arbor::coordinator::openai;
  arbor::fuzz::Input input(data, size);
  const bool chat = (input.Byte() & 1) == 0;
  const absl::string_view body(input.Rest().data(), input.Rest().size());
  absl::StatusOr<ParsedRequest> parsed =
      chat ? ParseChatCompletionRequest(body) : ParseCompletionRequest(body);
  if (!parsed.ok()) {
    if (parsed.status().code() != absl::StatusCode::kInvalidArgument) {
      arbor::fuzz::Fail("a bad body is not INVALID_ARGUMENT");
    }
    return 0;
  }
  if (parsed->choices < 1 || parsed->choices > kMaxChoices) {
    arbor::fuzz::Fail("choices outside [1, kMaxChoices]");
  }
  absl::StatusOr<arbor::search::StrategyConfig> config =
      arbor::coordinator::StrategyConfigFromRequest(parsed->solve);
  if (!config.ok()) (void)HttpFieldNames(config.status(), *parsed);
  return 0;
}
