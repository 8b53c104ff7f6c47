// Response encoding: HTTP statuses, the error object, the completion objects
// and the server-sent events of a stream.
#include "coordinator/openai/response.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::coordinator::openai {
namespace {

using json = nlohmann::json;

TEST(ResponseTest, HttpStatusOfEachCode) {
  EXPECT_EQ(HttpStatusOf(absl::InvalidArgumentError("n: bad")), 400);
  EXPECT_EQ(HttpStatusOf(absl::FailedPreconditionError("reward_model: none")), 400);
  EXPECT_EQ(HttpStatusOf(absl::InvalidArgumentError("model: unknown model 'x'")), 404);
  EXPECT_EQ(HttpStatusOf(absl::ResourceExhaustedError("full")), 429);
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError("no workers")), 503);
  EXPECT_EQ(HttpStatusOf(absl::DeadlineExceededError("late")), 504);
  EXPECT_EQ(HttpStatusOf(absl::InternalError("bug")), 500);
  EXPECT_EQ(RetryAfterSeconds(absl::ResourceExhaustedError("full")), 1);
  EXPECT_EQ(RetryAfterSeconds(absl::UnavailableError("no workers")), 1);
  EXPECT_EQ(RetryAfterSeconds(absl::InvalidArgumentError("n: bad")), 0);
}

TEST(ResponseTest, ErrorObjectNamesTheParam) {
  json error = json::parse(ErrorBody(absl::InvalidArgumentError("arbor.n (6) must be even")));
  EXPECT_EQ(error["error"]["message"], "arbor.n (6) must be even");
  EXPECT_EQ(error["error"]["type"], "invalid_request_error");
  EXPECT_EQ(error["error"]["param"], "arbor.n");
  EXPECT_TRUE(error["error"]["code"].is_null());

  json full = json::parse(ErrorBody(absl::ResourceExhaustedError("8 jobs running")));
  EXPECT_EQ(full["error"]["code"], "rate_limit_exceeded");
  EXPECT_TRUE(full["error"]["param"].is_null());
  json model = json::parse(ErrorBody(absl::InvalidArgumentError("model: unknown model 'x'")));
  EXPECT_EQ(model["error"]["code"], "model_not_found");
}

arbor::v1::SolveResponse Result() {
  arbor::v1::SolveResponse r;
  r.set_job_id("j1");
  r.set_answer("26");
  r.set_text("3+5=8\n\n8+7=15\n\n15+11=26");
  r.set_strategy("best_of_n");
  for (const char* text : {"best", "second", "third"}) {
    arbor::v1::Candidate* c = r.add_candidates();
    c->set_text(text);
    c->add_steps(text);
    c->add_step_scores(0.5f);
    c->set_score(0.75);
    c->set_answer("26");
    c->set_votes(2);
    c->set_finished(std::string(text) != "third");
    c->set_num_tokens(5);
  }
  arbor::v1::Usage* u = r.mutable_usage();
  u->set_generated_tokens(15);
  u->set_prefill_tokens(10);
  u->set_prefix_cache_hit_tokens(30);
  u->set_reward_tokens(44);
  u->set_worker_calls(3);
  u->set_wall_time_ms(int64_t{1} << 40);  // an int64 past 2^32 stays a number
  r.set_budget_exhausted(true);
  r.set_exhausted_by("generated_tokens");
  return r;
}

ParsedRequest Request(ApiKind kind, int choices) {
  ParsedRequest request;
  request.kind = kind;
  request.choices = choices;
  return request;
}

TEST(ResponseTest, ChatCompletionObject) {
  json body = json::parse(
      CompletionBody(Request(ApiKind::kChatCompletion, 2), "policy", 1700000000, Result()));
  EXPECT_EQ(body["id"], "chatcmpl-j1");
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["created"], 1700000000);
  EXPECT_EQ(body["model"], "policy");
  ASSERT_EQ(body["choices"].size(), 2u);
  EXPECT_EQ(body["choices"][0]["index"], 0);
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "best");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][1]["message"]["content"], "second");
  EXPECT_EQ(body["choices"][0]["arbor"]["answer"], "26");
  EXPECT_EQ(body["choices"][0]["arbor"]["votes"], 2);
  EXPECT_DOUBLE_EQ(body["choices"][0]["arbor"]["score"].get<double>(), 0.75);
  const json& usage = body["usage"];
  EXPECT_EQ(usage["prompt_tokens"], 40);
  EXPECT_EQ(usage["completion_tokens"], 15);
  EXPECT_EQ(usage["total_tokens"], 55);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 30);
  EXPECT_EQ(usage["reward_tokens"], 44);
  EXPECT_EQ(usage["worker_calls"], 3);
  ASSERT_TRUE(usage["wall_time_ms"].is_number_integer());
  EXPECT_EQ(usage["wall_time_ms"].get<int64_t>(), int64_t{1} << 40);
  EXPECT_EQ(usage["budget_exhausted"], true);
  EXPECT_EQ(usage["exhausted_by"], "generated_tokens");
  EXPECT_EQ(body["arbor"]["strategy"], "best_of_n");
  EXPECT_EQ(body["arbor"]["answer"], "26");
}

TEST(ResponseTest, TextCompletionObject) {
  json body =
      json::parse(CompletionBody(Request(ApiKind::kCompletion, 3), "policy", 1, Result()));
  EXPECT_EQ(body["id"], "cmpl-j1");
  EXPECT_EQ(body["object"], "text_completion");
  ASSERT_EQ(body["choices"].size(), 3u);
  EXPECT_EQ(body["choices"][2]["text"], "third");
  EXPECT_EQ(body["choices"][2]["finish_reason"], "length");  // cut, not ended
}

// The JSON of each "data: ..." event; "[DONE]" as a string.
std::vector<json> Events(const std::string& sse) {
  std::vector<json> out;
  for (absl::string_view event : absl::StrSplit(sse, "\n\n", absl::SkipEmpty())) {
    EXPECT_TRUE(absl::StartsWith(event, "data: ")) << event;
    absl::string_view data = event.substr(6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
  }
  return out;
}

TEST(ResponseTest, ChatStreamEvents) {
  ParsedRequest request = Request(ApiKind::kChatCompletion, 2);
  request.stream = true;
  request.include_usage = true;
  StreamEncoder encoder(request, "policy", 7);
  std::string sse;

  arbor::v1::SolveEvent accepted;
  accepted.mutable_accepted()->set_job_id("j1");
  accepted.mutable_accepted()->set_strategy("beam_search");
  sse += encoder.Encode(accepted);
  arbor::v1::SolveEvent step;
  step.mutable_step()->set_iteration(0);
  step.mutable_step()->set_live_branches(4);
  step.mutable_step()->set_best_score(0.9);
  step.mutable_step()->set_best_text("3+5=8");
  step.mutable_step()->add_branch_scores(0.9);
  step.mutable_step()->mutable_usage()->set_generated_tokens(12);
  sse += encoder.Encode(step);
  arbor::v1::SolveEvent result;
  *result.mutable_result() = Result();
  sse += encoder.Encode(result);
  sse += StreamEncoder::Done();

  std::vector<json> events = Events(sse);
  ASSERT_EQ(events.size(), 6u);  // accepted, step, 2 choices, usage, [DONE]
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["id"], "chatcmpl-j1");
    EXPECT_EQ(events[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(events[i]["model"], "policy");
  }
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events[0]["arbor"]["event"], "accepted");
  EXPECT_EQ(events[1]["choices"][0]["delta"], json::object());
  EXPECT_EQ(events[1]["arbor"]["event"], "step");
  EXPECT_EQ(events[1]["arbor"]["live_branches"], 4);
  EXPECT_EQ(events[1]["arbor"]["best_text"], "3+5=8");
  EXPECT_EQ(events[1]["arbor"]["usage"]["completion_tokens"], 12);
  EXPECT_EQ(events[2]["choices"][0]["index"], 0);
  EXPECT_EQ(events[2]["choices"][0]["delta"]["content"], "best");
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[3]["choices"][0]["index"], 1);
  EXPECT_EQ(events[3]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events[3]["choices"][0]["delta"]["content"], "second");
  EXPECT_EQ(events[3]["arbor"]["event"], "result");
  EXPECT_EQ(events[3]["arbor"]["answer"], "26");
  EXPECT_TRUE(events[4]["choices"].empty());
  EXPECT_EQ(events[4]["usage"]["completion_tokens"], 15);
  EXPECT_EQ(events[5], "[DONE]");
}

TEST(ResponseTest, CompletionStreamAndError) {
  ParsedRequest request = Request(ApiKind::kCompletion, 1);
  request.stream = true;
  StreamEncoder encoder(request, "policy", 7);
  arbor::v1::SolveEvent result;
  *result.mutable_result() = Result();
  std::vector<json> events = Events(encoder.Encode(result));
  ASSERT_EQ(events.size(), 1u);  // one choice, no usage chunk unless asked
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], "best");

  std::vector<json> error = Events(encoder.Error(absl::DeadlineExceededError("too late")));
  ASSERT_EQ(error.size(), 1u);
  EXPECT_EQ(error[0]["error"]["message"], "too late");
  EXPECT_EQ(error[0]["error"]["type"], "timeout");
}

}  // namespace
}  // namespace arbor::coordinator::openai
