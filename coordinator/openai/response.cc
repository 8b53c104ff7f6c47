#include "coordinator/openai/response.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace arbor::coordinator::openai {
namespace {

using json = nlohmann::json;

// Every scalar field of a message by its proto name, int64 as a JSON number
// (reflection, so counters added to arbor.v1.Usage appear without a change here).
void AddScalarFields(const google::protobuf::Message& message, json* out) {
  const google::protobuf::Descriptor* type = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  using Field = google::protobuf::FieldDescriptor;
  for (int i = 0; i < type->field_count(); ++i) {
    const Field* field = type->field(i);
    if (field->is_repeated()) continue;
    switch (field->cpp_type()) {
      case Field::CPPTYPE_INT64:
        (*out)[field->name()] = reflection->GetInt64(message, field);
        break;
      case Field::CPPTYPE_INT32:
        (*out)[field->name()] = reflection->GetInt32(message, field);
        break;
      case Field::CPPTYPE_UINT64:
        (*out)[field->name()] = reflection->GetUInt64(message, field);
        break;
      case Field::CPPTYPE_UINT32:
        (*out)[field->name()] = reflection->GetUInt32(message, field);
        break;
      case Field::CPPTYPE_DOUBLE:
        (*out)[field->name()] = reflection->GetDouble(message, field);
        break;
      case Field::CPPTYPE_FLOAT:
        (*out)[field->name()] = reflection->GetFloat(message, field);
        break;
      case Field::CPPTYPE_BOOL:
        (*out)[field->name()] = reflection->GetBool(message, field);
        break;
      default:
        break;
    }
  }
}

json UsageObject(const arbor::v1::Usage& usage) {
  json out = json::object();
  const int64_t prompt = usage.prefill_tokens() + usage.prefix_cache_hit_tokens();
  out["prompt_tokens"] = prompt;
  out["completion_tokens"] = usage.generated_tokens();
  out["total_tokens"] = prompt + usage.generated_tokens();
  out["prompt_tokens_details"] = {{"cached_tokens", usage.prefix_cache_hit_tokens()}};
  AddScalarFields(usage, &out);
  if (usage.has_auto_choice()) {
    json choice = json::object();
    AddScalarFields(usage.auto_choice(), &choice);
    out["auto_choice"] = std::move(choice);
  }
  return out;
}

json UsageObject(const arbor::v1::SolveResponse& response) {
  json out = UsageObject(response.usage());
  out["budget_exhausted"] = response.budget_exhausted();
  out["exhausted_by"] = response.exhausted_by();
  out["stop_reason"] = response.stop_reason();
  return out;
}

// Per-choice accounting that OpenAI has no place for.
json CandidateExtras(const arbor::v1::Candidate& c) {
  return {{"answer", c.answer()},
          {"score", c.score()},
          {"votes", c.votes()},
          {"step_scores", json(std::vector<float>(c.step_scores().begin(), c.step_scores().end()))},
          {"num_steps", c.steps_size()},
          {"logprob", c.logprob()},
          {"num_tokens", c.num_tokens()},
          {"finished", c.finished()}};
}

json JobExtras(const arbor::v1::SolveResponse& r) {
  return {{"job_id", r.job_id()},   {"strategy", r.strategy()}, {"answer", r.answer()},
          {"worker", r.worker()},   {"verifier", r.verifier()}};
}

// The choices a response answers with: its best `count` candidates (the
// selected text alone when it has none).
std::vector<arbor::v1::Candidate> Choices(const arbor::v1::SolveResponse& r, int count) {
  std::vector<arbor::v1::Candidate> out;
  for (int i = 0; i < r.candidates_size() && i < count; ++i) out.push_back(r.candidates(i));
  if (out.empty()) {
    arbor::v1::Candidate c;
    c.set_text(r.text());
    c.set_answer(r.answer());
    out.push_back(std::move(c));
  }
  return out;
}

const char* FinishReason(const arbor::v1::Candidate& c) { return c.finished() ? "stop" : "length"; }

std::string IdPrefix(ApiKind kind) {
  return kind == ApiKind::kChatCompletion ? "chatcmpl-" : "cmpl-";
}

std::string Sse(const json& event) {
  return absl::StrCat("data: ", event.dump(-1, ' ', false, json::error_handler_t::replace),
                      "\n\n");
}

std::string Dump(const json& value) {
  // Model text is UTF-8 checked upstream; replace rather than throw if not.
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
      if (absl::StartsWith(status.message(), "model: unknown model")) return 404;
      return 400;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

int RetryAfterSeconds(const absl::Status& status) {
  const int http = HttpStatusOf(status);
  return http == 429 || http == 503 ? 1 : 0;
}

std::string ErrorBody(const absl::Status& status) {
  const int http = HttpStatusOf(status);
  const char* type = "server_error";
  json code = nullptr;
  if (http == 400) type = "invalid_request_error";
  if (http == 404) {
    type = "invalid_request_error";
    code = "model_not_found";
  }
  if (http == 429) {
    type = "rate_limit_error";
    code = "rate_limit_exceeded";
  }
  if (http == 401) code = "invalid_api_key";
  if (http == 503) type = "service_unavailable";
  if (http == 504) type = "timeout";
  const std::string field = FieldOfMessage(status.message());
  json error = {{"message", std::string(status.message())},
                {"type", type},
                {"param", field.empty() ? json(nullptr) : json(field)},
                {"code", code}};
  return Dump(json{{"error", std::move(error)}});
}

std::string CompletionBody(const ParsedRequest& request, const std::string& model,
                           int64_t created, const arbor::v1::SolveResponse& response) {
  const bool chat = request.kind == ApiKind::kChatCompletion;
  json choices = json::array();
  const std::vector<arbor::v1::Candidate> candidates = Choices(response, request.choices);
  for (size_t i = 0; i < candidates.size(); ++i) {
    json choice = {{"index", i}, {"logprobs", nullptr}, {"finish_reason", FinishReason(candidates[i])}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", candidates[i].text()}};
    } else {
      choice["text"] = candidates[i].text();
    }
    choice["arbor"] = CandidateExtras(candidates[i]);
    choices.push_back(std::move(choice));
  }
  json body = {{"id", IdPrefix(request.kind) + response.job_id()},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", created},
               {"model", model},
               {"choices", std::move(choices)},
               {"usage", UsageObject(response)},
               {"arbor", JobExtras(response)}};
  return Dump(body);
}

StreamEncoder::StreamEncoder(const ParsedRequest& request, std::string model, int64_t created)
    : kind_(request.kind),
      choices_(request.choices),
      include_usage_(request.include_usage),
      model_(std::move(model)),
      created_(created),
      id_(IdPrefix(request.kind) + request.solve.job_id()) {}

std::string StreamEncoder::Encode(const arbor::v1::SolveEvent& event) {
  const bool chat = kind_ == ApiKind::kChatCompletion;
  auto chunk = [&](json choices) {
    return json{{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", model_},
                {"choices", std::move(choices)}};
  };
  // One choice's delta: chat carries {role, content}, completions the text.
  auto choice = [&](size_t index, json delta, std::string text, json finish_reason) {
    json c = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", std::move(finish_reason)}};
    if (chat) {
      c["delta"] = std::move(delta);
    } else {
      c["text"] = std::move(text);
    }
    return c;
  };

  switch (event.event_case()) {
    case arbor::v1::SolveEvent::kAccepted: {
      const auto& a = event.accepted();
      id_ = IdPrefix(kind_) + a.job_id();
      json out = chunk(json::array(
          {choice(0, {{"role", "assistant"}, {"content", ""}}, "", nullptr)}));
      out["arbor"] = {{"event", "accepted"},
                      {"job_id", a.job_id()},
                      {"strategy", a.strategy()},
                      {"worker", a.worker()}};
      return Sse(out);
    }
    case arbor::v1::SolveEvent::kStep: {
      const auto& s = event.step();
      json out = chunk(json::array({choice(0, json::object(), "", nullptr)}));
      out["arbor"] = {
          {"event", "step"},
          {"iteration", s.iteration()},
          {"live_branches", s.live_branches()},
          {"finished_branches", s.finished_branches()},
          {"best_score", s.best_score()},
          {"best_text", s.best_text()},
          {"branch_scores",
           json(std::vector<double>(s.branch_scores().begin(), s.branch_scores().end()))},
          {"usage", UsageObject(s.usage())}};
      return Sse(out);
    }
    case arbor::v1::SolveEvent::kResult: {
      const auto& r = event.result();
      id_ = IdPrefix(kind_) + r.job_id();
      std::string text;
      const std::vector<arbor::v1::Candidate> candidates = Choices(r, choices_);
      for (size_t i = 0; i < candidates.size(); ++i) {
        json delta = {{"content", candidates[i].text()}};
        if (i > 0) delta["role"] = "assistant";  // index 0 had it in the first chunk
        json c = choice(i, std::move(delta), candidates[i].text(), FinishReason(candidates[i]));
        c["arbor"] = CandidateExtras(candidates[i]);
        json out = chunk(json::array({std::move(c)}));
        if (i + 1 == candidates.size()) {
          out["arbor"] = JobExtras(r);
          out["arbor"]["event"] = "result";
          out["arbor"]["usage"] = UsageObject(r);
        }
        absl::StrAppend(&text, Sse(out));
      }
      if (include_usage_) {
        json out = chunk(json::array());
        out["usage"] = UsageObject(r);
        absl::StrAppend(&text, Sse(out));
      }
      return text;
    }
    case arbor::v1::SolveEvent::EVENT_NOT_SET:
      break;
  }
  return "";
}

std::string StreamEncoder::Error(const absl::Status& status) const {
  return absl::StrCat("data: ", ErrorBody(status), "\n\n");
}

}  // namespace arbor::coordinator::openai
