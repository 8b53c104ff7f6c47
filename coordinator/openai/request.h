// Parsing of OpenAI-style request bodies (POST /v1/chat/completions and
// /v1/completions, docs/HTTP.md) into an arbor.v1.SolveRequest.
//
// The search is chosen by the `arbor` extension object (the SolveRequest's
// own field names: strategy, n, beam_width, budget {...}, selection, ...) or,
// without one, by `n` / `best_of` (plain best-of-N) and else greedy. `n` is
// the number of choices returned. Every problem is INVALID_ARGUMENT whose
// message starts with the body's field path ("arbor.beam_width: ..."), so the
// error object can name it; unknown fields and OpenAI features Arbor does not
// implement (tools, logprobs, stop, ...) are rejected rather than ignored.
// The strategy's ranges are checked here with the coordinator's own
// validation (coordinator/solve_request.h), its field names mapped back to
// the body's (HttpFieldNames).
// Stateless; thread-safe.
#ifndef ARBOR_COORDINATOR_OPENAI_REQUEST_H_
#define ARBOR_COORDINATOR_OPENAI_REQUEST_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbor/v1/reasoning.pb.h"

namespace arbor::coordinator::openai {

enum class ApiKind { kChatCompletion, kCompletion };

// Most choices one request may ask for (`n`).
inline constexpr int kMaxChoices = 128;

struct ParsedRequest {
  ApiKind kind = ApiKind::kChatCompletion;
  arbor::v1::SolveRequest solve;
  // Choices returned: the best `choices` candidates.
  int choices = 1;
  bool stream = false;
  // stream_options.include_usage: a last chunk with `usage` and no choices.
  bool include_usage = false;
  // arbor.timeout_ms: the request's deadline, like a gRPC deadline (the
  // search is bounded to answer in time; a job still queued at it fails 504).
  absl::Duration timeout = absl::InfiniteDuration();
  // SolveRequest field path -> body field path, longest first, for errors
  // the coordinator reports later (unknown model, ...).
  std::vector<std::pair<std::string, std::string>> field_names;
};

absl::StatusOr<ParsedRequest> ParseChatCompletionRequest(absl::string_view body);
absl::StatusOr<ParsedRequest> ParseCompletionRequest(absl::string_view body);

// Rewrites a "field: problem" status about a SolveRequest field
// ("beam_search.n: ...") to name the body's field ("arbor.n: ..."); other
// statuses are returned unchanged.
absl::Status HttpFieldNames(const absl::Status& status, const ParsedRequest& request);

// The field path a "field: problem" message names, "" when there is none.
std::string FieldOfMessage(absl::string_view message);

}  // namespace arbor::coordinator::openai

#endif  // ARBOR_COORDINATOR_OPENAI_REQUEST_H_
