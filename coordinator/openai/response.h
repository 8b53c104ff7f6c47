// OpenAI-shaped response bodies built from the coordinator's results
// (docs/HTTP.md): the completion objects, the server-sent events of a
// stream, the error object and its HTTP status.
//
// A job's ranked candidates become the choices (best first, `n` of them);
// `usage` carries OpenAI's token counts (prompt = the tokens the workers ran
// or found cached, completion = generated) beside every arbor.v1.Usage
// counter and why the search stopped. A stream sends one chunk when the job
// starts, one per strategy iteration with the live search state under
// `arbor`, then each choice's text (the best partial solution changes from
// one iteration to the next, so there is no text to stream before the end),
// the usage chunk if asked for, and `data: [DONE]`.
// Stateless functions; a StreamEncoder belongs to one stream (not thread-safe).
#ifndef ARBOR_COORDINATOR_OPENAI_RESPONSE_H_
#define ARBOR_COORDINATOR_OPENAI_RESPONSE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "arbor/v1/reasoning.pb.h"
#include "coordinator/openai/request.h"

namespace arbor::coordinator::openai {

// 400 bad request (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE),
// 404 unknown model, 429 at capacity (RESOURCE_EXHAUSTED), 503 no workers or
// shutting down (UNAVAILABLE, CANCELLED), 504 deadline, 501, else 500.
int HttpStatusOf(const absl::Status& status);
// Seconds for Retry-After (429 and 503), 0 for none.
int RetryAfterSeconds(const absl::Status& status);
// {"error": {"message", "type", "param", "code"}}.
std::string ErrorBody(const absl::Status& status);

// The chat.completion or text_completion object of a finished job.
std::string CompletionBody(const ParsedRequest& request, const std::string& model,
                           int64_t created, const arbor::v1::SolveResponse& response);

class StreamEncoder {
 public:
  StreamEncoder(const ParsedRequest& request, std::string model, int64_t created);

  // The SSE events ("data: {...}\n\n") of one SolveEvent.
  std::string Encode(const arbor::v1::SolveEvent& event);
  // An error after the stream started: data: {"error": {...}}, as the
  // OpenAI SDKs read it (they raise it).
  std::string Error(const absl::Status& status) const;
  static std::string Done() { return "data: [DONE]\n\n"; }

 private:
  const ApiKind kind_;
  const int choices_;
  const bool include_usage_;
  const std::string model_;
  const int64_t created_;
  std::string id_;
};

}  // namespace arbor::coordinator::openai

#endif  // ARBOR_COORDINATOR_OPENAI_RESPONSE_H_
