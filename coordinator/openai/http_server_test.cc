// The HTTP API over real HTTP on loopback (cpp-httplib's client) in front of
// a Coordinator whose workers and verifiers are ArithWorld servers (test
// doubles over real gRPC, coordinator/testing/): completions, streams,
// models, health, and every error status (400, 404, 405, 429 with
// Retry-After, 503, 504); a streaming client that leaves cancels its job;
// Stop answers what is in flight.
#include "coordinator/openai/http_server.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "coordinator/testing/world_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"

namespace arbor::coordinator::openai {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using testing::WorldServer;

constexpr char kQuestion[] = "add 3 5 7 11";  // 26

PoolOptions FastPool(const std::string& targets) {
  PoolOptions options;
  options.targets = targets;
  options.health_interval = absl::Milliseconds(100);
  return options;
}

std::string ChatBody(const json& extra = json::object()) {
  json body = {{"messages", {{{"role", "user"}, {"content", kQuestion}}}}, {"seed", 7}};
  body.update(extra);
  return body.dump();
}

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(testing::ArithServiceOptions world = {}, int max_concurrent = 4, int max_queued = 8,
             bool healthy_workers = true) {
    world_ = std::make_unique<WorldServer>(world);
    CoordinatorOptions options;
    // A closed port: the pool never has a healthy worker (503).
    options.workers = FastPool(healthy_workers ? world_->address() : "127.0.0.1:1");
    options.verifiers = FastPool(world_->address());
    options.max_concurrent_jobs = max_concurrent;
    options.max_queued_jobs = max_queued;
    auto coordinator =
        Coordinator::Create(options, std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    if (healthy_workers) {
      ASSERT_TRUE(coordinator_->workers().WaitForHealthy(absl::Seconds(10)));
      ASSERT_TRUE(coordinator_->verifiers()->WaitForHealthy(absl::Seconds(10)));
    }
    HttpServerOptions http;
    http.stream_keepalive = absl::Milliseconds(100);
    auto server = HttpServer::Start(*coordinator_, http);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  void TearDown() override {
    if (server_) server_->Stop(absl::Seconds(5));
    if (coordinator_) coordinator_->Shutdown();
  }

  std::unique_ptr<httplib::Client> Client() {
    auto client = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client->set_read_timeout(60, 0);
    return client;
  }

  // POST `body`, expecting `status`; returns the parsed body.
  json Post(const std::string& path, const std::string& body, int status,
            httplib::Headers* headers = nullptr) {
    auto result = Client()->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(result) << httplib::to_string(result.error());
    if (!result) return json();
    EXPECT_EQ(result->status, status) << result->body;
    EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
    if (headers != nullptr) *headers = result->headers;
    return json::parse(result->body, nullptr, false);
  }

  // The events of a streamed POST ("[DONE]" as a string).
  std::vector<json> Stream(const std::string& path, const std::string& body) {
    auto result = Client()->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(result);
    if (!result) return {};
    EXPECT_EQ(result->status, 200) << result->body;
    EXPECT_EQ(result->get_header_value("Content-Type"), "text/event-stream");
    std::vector<json> events;
    for (absl::string_view event : absl::StrSplit(result->body, "\n\n", absl::SkipEmpty())) {
      if (absl::StartsWith(event, ":")) continue;  // keep-alive comment
      EXPECT_TRUE(absl::StartsWith(event, "data: ")) << event;
      absl::string_view data = event.substr(6);
      events.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
    }
    return events;
  }

  std::unique_ptr<WorldServer> world_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ModelsAndHealth) {
  Start();
  auto client = Client();
  auto models = client->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  json list = json::parse(models->body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], "arith-1");
  EXPECT_EQ(list["data"][0]["object"], "model");

  auto one = client->Get("/v1/models/arith-1");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  auto missing = client->Get("/v1/models/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  auto health = client->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
}

TEST_F(HttpServerTest, ChatCompletionWithBeamSearch) {
  Start();
  json body = Post("/v1/chat/completions",
                   ChatBody({{"model", "arith-1"},
                             {"arbor", {{"strategy", "beam_search"}, {"n", 8}, {"beam_width", 4}}}}),
                   200);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "arith-1");
  EXPECT_THAT(body["id"].get<std::string>(), ::testing::StartsWith("chatcmpl-"));
  ASSERT_EQ(body["choices"].size(), 1u);
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_THAT(body["choices"][0]["message"]["content"].get<std::string>(), HasSubstr("26"));
  EXPECT_EQ(body["arbor"]["strategy"], "beam_search");
  EXPECT_EQ(body["arbor"]["answer"], "26");
  const json& usage = body["usage"];
  EXPECT_GT(usage["completion_tokens"].get<int64_t>(), 0);
  EXPECT_GT(usage["prompt_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(usage["total_tokens"].get<int64_t>(),
            usage["prompt_tokens"].get<int64_t>() + usage["completion_tokens"].get<int64_t>());
  EXPECT_GT(usage["reward_calls"].get<int64_t>(), 0);
  EXPECT_GT(usage["worker_calls"].get<int64_t>(), 0);
  EXPECT_GT(usage["steps"].get<int64_t>(), 0);
}

TEST_F(HttpServerTest, CompletionWithNChoices) {
  Start();
  json body = Post("/v1/completions",
                   json({{"prompt", kQuestion}, {"n", 3}, {"best_of", 6}, {"seed", 3}}).dump(),
                   200);
  EXPECT_EQ(body["object"], "text_completion");
  ASSERT_EQ(body["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(body["choices"][i]["index"], i);
    EXPECT_TRUE(body["choices"][i]["text"].is_string());
    EXPECT_TRUE(body["choices"][i]["finish_reason"] == "stop" ||
                body["choices"][i]["finish_reason"] == "length");
  }
  // Ranked best first by the reward model's score.
  EXPECT_GE(body["choices"][0]["arbor"]["score"].get<double>(),
            body["choices"][2]["arbor"]["score"].get<double>());
  EXPECT_EQ(body["arbor"]["strategy"], "best_of_n");
}

TEST_F(HttpServerTest, StreamCarriesSearchStateThenChoicesThenDone) {
  Start();
  std::vector<json> events = Stream(
      "/v1/chat/completions",
      ChatBody({{"stream", true},
                {"stream_options", {{"include_usage", true}}},
                {"arbor", {{"strategy", "beam_search"}, {"n", 4}, {"beam_width", 2}}}}));
  ASSERT_GE(events.size(), 5u);
  EXPECT_EQ(events.front()["arbor"]["event"], "accepted");
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  int steps = 0;
  size_t i = 1;
  for (; i < events.size() && events[i].contains("arbor") && events[i]["arbor"]["event"] == "step";
       ++i) {
    EXPECT_EQ(events[i]["arbor"]["iteration"], steps);
    EXPECT_TRUE(events[i]["arbor"]["usage"]["completion_tokens"].is_number_integer());
    ++steps;
  }
  EXPECT_GE(steps, 3);  // one event per iteration: three additions at least
  ASSERT_LT(i + 2, events.size());
  EXPECT_THAT(events[i]["choices"][0]["delta"]["content"].get<std::string>(), HasSubstr("26"));
  EXPECT_EQ(events[i]["arbor"]["answer"], "26");
  EXPECT_TRUE(events[i + 1]["choices"].empty());
  EXPECT_GT(events[i + 1]["usage"]["completion_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(events.back(), "[DONE]");
  for (size_t k = 0; k + 1 < events.size(); ++k) {
    EXPECT_EQ(events[k]["id"], events[0]["id"]);
    EXPECT_EQ(events[k]["object"], "chat.completion.chunk");
  }
}

TEST_F(HttpServerTest, BadRequestsNameTheField) {
  Start();
  json bad = Post("/v1/chat/completions",
                  ChatBody({{"arbor", {{"strategy", "beam_search"}, {"n", 6}, {"beam_width", 4}}}}),
                  400);
  EXPECT_EQ(bad["error"]["param"], "arbor.n");
  EXPECT_EQ(bad["error"]["type"], "invalid_request_error");
  EXPECT_EQ(Post("/v1/completions", "not json", 400)["error"]["param"], "body");
  EXPECT_EQ(Post("/v1/chat/completions", ChatBody({{"stop", "\n"}}), 400)["error"]["param"], "stop");

  json model = Post("/v1/chat/completions", ChatBody({{"model", "gpt-4"}}), 404);
  EXPECT_EQ(model["error"]["code"], "model_not_found");
  EXPECT_THAT(model["error"]["message"].get<std::string>(), HasSubstr("arith-1"));

  EXPECT_EQ(Post("/v1/nothing", "{}", 404)["error"]["type"], "invalid_request_error");
  auto get = Client()->Get("/v1/chat/completions");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
  std::string huge(2 << 20, 'x');
  auto too_large = Client()->Post("/v1/completions", huge, "application/json");
  ASSERT_TRUE(too_large);
  EXPECT_EQ(too_large->status, 413);
}

TEST_F(HttpServerTest, AtCapacityIs429WithRetryAfter) {
  testing::ArithServiceOptions world;
  world.extend_delay = absl::Milliseconds(300);
  Start(world, /*max_concurrent=*/1, /*max_queued=*/0);
  std::thread slow([&] { Post("/v1/chat/completions", ChatBody(), 200); });
  // Until the slow job (three 300 ms steps at least) holds the only slot.
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (coordinator_->jobs().running() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  httplib::Headers headers;
  json full = Post("/v1/chat/completions", ChatBody(), 429, &headers);
  slow.join();
  EXPECT_EQ(full["error"]["code"], "rate_limit_exceeded");
  ASSERT_EQ(headers.count("Retry-After"), 1u);
  EXPECT_EQ(headers.find("Retry-After")->second, "1");
}

TEST_F(HttpServerTest, DeadlinePassedInQueueIs504) {
  testing::ArithServiceOptions world;
  world.extend_delay = absl::Milliseconds(300);
  Start(world, /*max_concurrent=*/1, /*max_queued=*/4);
  std::thread slow([&] { Post("/v1/chat/completions", ChatBody(), 200); });
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (coordinator_->jobs().running() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));  // until the slow job holds the only slot
  }
  json late = Post("/v1/chat/completions", ChatBody({{"arbor", {{"timeout_ms", 50}}}}), 504);
  EXPECT_EQ(late["error"]["type"], "timeout");
  slow.join();
}

TEST_F(HttpServerTest, NoHealthyWorkerIs503) {
  Start({}, 4, 8, /*healthy_workers=*/false);
  httplib::Headers headers;
  json body = Post("/v1/chat/completions", ChatBody(), 503, &headers);
  EXPECT_EQ(body["error"]["type"], "service_unavailable");
  EXPECT_EQ(headers.count("Retry-After"), 1u);
  auto health = Client()->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
}

TEST_F(HttpServerTest, StreamingClientThatLeavesCancelsItsJob) {
  testing::ArithServiceOptions world;
  world.extend_delay = absl::Milliseconds(200);
  Start(world);
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/chat/completions";
  request.body = ChatBody({{"stream", true},
                           {"arbor", {{"strategy", "beam_search"}, {"n", 4}, {"beam_width", 2}}}});
  request.set_header("Content-Type", "application/json");
  std::string received;
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    received.append(data, size);
    return received.find("\"event\":\"step\"") == std::string::npos;  // leave at the first step
  };
  Client()->send(request);
  EXPECT_THAT(received, HasSubstr("\"event\":\"step\""));
  // The job stops (its worker call is cancelled) long before its iterations end.
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (world_->services->cancelled_calls() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_GT(world_->services->cancelled_calls(), 0);
}

TEST_F(HttpServerTest, AnErrorAfterTheStreamStartedIsAnErrorEvent) {
  testing::ArithServiceOptions world;
  world.extend_delay = absl::Milliseconds(300);
  Start(world, /*max_concurrent=*/1, /*max_queued=*/4);
  std::thread slow([&] { Post("/v1/chat/completions", ChatBody(), 200); });
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (coordinator_->jobs().running() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  // Queued behind the slow job, then rejected when the coordinator shuts down.
  std::vector<json> events;
  std::thread queued([&] { events = Stream("/v1/chat/completions", ChatBody({{"stream", true}})); });
  until = absl::Now() + absl::Seconds(10);
  while (coordinator_->jobs().queued() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  coordinator_->Shutdown();
  queued.join();
  slow.join();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["error"]["type"], "service_unavailable");
  EXPECT_THAT(events[0]["error"]["message"].get<std::string>(), HasSubstr("shut down"));
  EXPECT_EQ(events[1], "[DONE]");
}

TEST_F(HttpServerTest, StopAnswersWhatIsInFlight) {
  testing::ArithServiceOptions world;
  world.extend_delay = absl::Milliseconds(300);
  Start(world);
  std::atomic<int> status{0};
  std::thread slow([&] {
    auto result = Client()->Post(
        "/v1/chat/completions",
        ChatBody({{"arbor", {{"strategy", "beam_search"}, {"n", 4}, {"beam_width", 2}}}}),
        "application/json");
    status = result ? result->status : -1;
  });
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (coordinator_->jobs().running() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));  // until its job runs
  }
  const absl::Time stop = absl::Now();
  server_->Stop(absl::ZeroDuration());
  EXPECT_LT(absl::Now() - stop, absl::Seconds(5));
  slow.join();
  EXPECT_EQ(status.load(), 503);  // its job was cancelled
  // Stopped: the port is closed.
  httplib::Client after("127.0.0.1", server_->port());
  after.set_connection_timeout(1, 0);
  EXPECT_FALSE(after.Get("/health"));
}

}  // namespace
}  // namespace arbor::coordinator::openai
