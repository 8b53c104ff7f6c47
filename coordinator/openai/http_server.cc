#include "coordinator/openai/http_server.h"

#include <cstdio>
#include <deque>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.pb.h"
#include "common/log.h"
#include "coordinator/openai/request.h"
#include "coordinator/openai/response.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "rpc/auth.h"
#include "rpc/flags.h"

ABSL_FLAG(int, http_port, -1,
          "Port of the OpenAI-compatible HTTP API (docs/HTTP.md); 0 = pick a free one, -1 = off");
ABSL_FLAG(std::string, http_host, "", "Address the HTTP API binds; empty: --host");

namespace arbor::coordinator::openai {
namespace {

using json = nlohmann::json;

// One request's job, shared by the handler, the coordinator's callbacks (on
// the job thread) and, for a stream, httplib's content provider.
struct Call {
  absl::Mutex mu;
  std::shared_ptr<JobHandle> job ABSL_GUARDED_BY(mu);
  bool cancelled ABSL_GUARDED_BY(mu) = false;
  // The job has ended; for a stream, its last events are queued too.
  bool done ABSL_GUARDED_BY(mu) = false;
  absl::Status status ABSL_GUARDED_BY(mu);
  std::optional<arbor::v1::SolveResponse> response ABSL_GUARDED_BY(mu);
  std::deque<std::string> events ABSL_GUARDED_BY(mu);  // SSE text not yet written

  void SetJob(std::shared_ptr<JobHandle> handle) {
    absl::MutexLock lock(&mu);
    job = std::move(handle);
    if (cancelled) job->Cancel();
  }
  void Cancel() {
    std::shared_ptr<JobHandle> handle;
    {
      absl::MutexLock lock(&mu);
      if (done) return;
      cancelled = true;
      handle = job;
    }
    if (handle) handle->Cancel();
  }
};

void Reply(httplib::Response& res, const absl::Status& status) {
  res.status = HttpStatusOf(status);
  if (const int seconds = RetryAfterSeconds(status); seconds > 0) {
    res.set_header("Retry-After", std::to_string(seconds));
  }
  res.set_content(ErrorBody(status), "application/json");
}

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

struct HttpServer::Impl {
  Impl(Coordinator& c, HttpServerOptions o) : coordinator(c), options(std::move(o)) {}

  Coordinator& coordinator;
  const HttpServerOptions options;
  const int64_t started = absl::ToUnixSeconds(absl::Now());
  httplib::Server server;
  std::thread listener;
  int port = 0;

  absl::Mutex mu;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  int in_flight ABSL_GUARDED_BY(mu) = 0;
  std::set<std::shared_ptr<Call>> calls ABSL_GUARDED_BY(mu);

  bool Enter(const std::shared_ptr<Call>& call) {
    absl::MutexLock lock(&mu);
    if (stopping) return false;
    ++in_flight;
    calls.insert(call);
    return true;
  }
  void Leave(const std::shared_ptr<Call>& call) {
    absl::MutexLock lock(&mu);
    --in_flight;
    calls.erase(call);
  }

  // The model a response names: the requested one, else the default.
  std::string ModelName(const std::string& requested) {
    if (!requested.empty()) return requested;
    if (!coordinator.options().default_model.empty()) return coordinator.options().default_model;
    std::vector<std::string> healthy = coordinator.workers().HealthyModels();
    if (!healthy.empty()) return healthy.front();
    std::vector<std::string> known = coordinator.workers().KnownModels();
    return known.empty() ? "" : known.front();
  }

  // The caller's identity (rpc/auth.h), or UNAUTHENTICATED when the API
  // requires a token it does not carry.
  absl::StatusOr<std::string> Client(const httplib::Request& req) const {
    return rpc::Authenticate(coordinator.options().client_tokens.get(),
                             req.get_header_value("Authorization"), "", req.remote_addr);
  }

  void Routes() {
    // Every /v1/ route takes the same bearer token as the gRPC API; /health
    // stays open for probes.
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      absl::StatusOr<std::string> client = Client(req);
      if (client.ok()) return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      Reply(res, client.status());
      return httplib::Server::HandlerResponse::Handled;
    });
    server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      HandleCompletion(req, res, ApiKind::kChatCompletion);
    });
    server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      HandleCompletion(req, res, ApiKind::kCompletion);
    });
    for (const char* path : {"/v1/chat/completions", "/v1/completions"}) {
      server.Get(path, [](const httplib::Request& req, httplib::Response& res) {
        res.status = 405;
        res.set_header("Allow", "POST");
        res.set_content(Dump({{"error",
                               {{"message", absl::StrCat(req.path, " takes POST")},
                                {"type", "invalid_request_error"},
                                {"param", nullptr},
                                {"code", nullptr}}}}),
                        "application/json");
      });
    }
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json data = json::array();
      for (const std::string& model : coordinator.workers().KnownModels()) {
        data.push_back(ModelObject(model));
      }
      res.set_content(Dump({{"object", "list"}, {"data", std::move(data)}}), "application/json");
    });
    server.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string wanted = req.matches[1];
      for (const std::string& model : coordinator.workers().KnownModels()) {
        if (model == wanted) {
          res.set_content(Dump(ModelObject(model)), "application/json");
          return;
        }
      }
      Reply(res, absl::InvalidArgumentError(absl::StrCat("model: unknown model '", wanted, "'")));
    });
    server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      bool stopping_now;
      {
        absl::MutexLock lock(&mu);
        stopping_now = stopping;
      }
      const bool healthy = !coordinator.workers().HealthyModels().empty();
      json body = {{"status", stopping_now ? "stopping" : healthy ? "ok" : "no_healthy_workers"}};
      res.status = !stopping_now && healthy ? 200 : 503;
      res.set_content(Dump(body), "application/json");
    });
    // httplib's own errors (no route, body too large, unparsable request)
    // in OpenAI's error shape; the handlers' errors already have a body.
    server.set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message = absl::StrCat("HTTP ", res.status);
      if (res.status == 404) message = absl::StrCat("no route ", req.method, " ", req.path);
      if (res.status == 413) message = "request body too large";
      res.set_content(Dump({{"error",
                             {{"message", message},
                              {"type", res.status < 500 ? "invalid_request_error" : "server_error"},
                              {"param", nullptr},
                              {"code", nullptr}}}}),
                      "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  json ModelObject(const std::string& model) const {
    return {{"id", model}, {"object", "model"}, {"created", started}, {"owned_by", "arbor"}};
  }

  void HandleCompletion(const httplib::Request& req, httplib::Response& res, ApiKind kind) {
    auto call = std::make_shared<Call>();
    if (!Enter(call)) {
      Reply(res, absl::UnavailableError("the server is shutting down"));
      return;
    }
    // A stream leaves when httplib releases its content provider.
    bool streaming = false;
    absl::Cleanup leave = [&] {
      if (!streaming) Leave(call);
    };

    const absl::StatusOr<std::string> client = Client(req);
    if (!client.ok()) return Reply(res, client.status());
    absl::StatusOr<ParsedRequest> parsed =
        kind == ApiKind::kChatCompletion ? ParseChatCompletionRequest(req.body)
                                         : ParseCompletionRequest(req.body);
    if (!parsed.ok()) return Reply(res, parsed.status());
    const int64_t created = absl::ToUnixSeconds(absl::Now());
    const std::string model = ModelName(parsed->solve.model());
    const absl::Time deadline = parsed->timeout == absl::InfiniteDuration()
                                    ? absl::InfiniteFuture()
                                    : absl::Now() + parsed->timeout;

    Coordinator::Callbacks callbacks;
    if (parsed->stream) {
      // Both callbacks run on the job thread, in order: the encoder needs no lock.
      auto encoder = std::make_shared<StreamEncoder>(*parsed, model, created);
      auto request = std::make_shared<ParsedRequest>(*parsed);
      callbacks.on_event = [call, encoder](const arbor::v1::SolveEvent& event) {
        std::string text = encoder->Encode(event);
        absl::MutexLock lock(&call->mu);
        call->events.push_back(std::move(text));
      };
      callbacks.on_done = [call, encoder, request](const absl::Status& status,
                                                   const arbor::v1::SolveResponse* response) {
        std::string text;
        if (response != nullptr) {
          arbor::v1::SolveEvent event;
          *event.mutable_result() = *response;
          text = encoder->Encode(event);
        } else {
          text = encoder->Error(HttpFieldNames(status, *request));
        }
        absl::MutexLock lock(&call->mu);
        call->events.push_back(std::move(text));
        call->events.push_back(StreamEncoder::Done());
        call->status = status;
        call->done = true;
      };
    } else {
      callbacks.on_done = [call](const absl::Status& status,
                                 const arbor::v1::SolveResponse* response) {
        absl::MutexLock lock(&call->mu);
        call->status = status;
        if (response != nullptr) call->response = *response;
        call->done = true;
      };
    }
    absl::StatusOr<std::shared_ptr<JobHandle>> job =
        coordinator.Submit(parsed->solve, deadline, std::move(callbacks), *client);
    if (!job.ok()) return Reply(res, HttpFieldNames(job.status(), *parsed));
    call->SetJob(*std::move(job));

    if (!parsed->stream) {
      absl::MutexLock lock(&call->mu);
      call->mu.Await(absl::Condition(&call->done));
      if (!call->status.ok() || !call->response) {
        return Reply(res, HttpFieldNames(call->status, *parsed));
      }
      res.set_content(CompletionBody(*parsed, model, created, *call->response),
                      "application/json");
      return;
    }

    streaming = true;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");  // proxies: do not buffer the events
    const absl::Duration keepalive = options.stream_keepalive;
    res.set_chunked_content_provider(
        "text/event-stream",
        [call, keepalive](size_t, httplib::DataSink& sink) {
          std::deque<std::string> batch;
          bool finished;
          {
            absl::MutexLock lock(&call->mu);
            auto ready = [](Call* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu) {
              return c->done || !c->events.empty();
            };
            call->mu.AwaitWithTimeout(absl::Condition(+ready, call.get()), keepalive);
            batch.swap(call->events);
            finished = call->done;
          }
          if (batch.empty() && !finished) {
            // An SSE comment: clients skip it; a write to a closed peer fails.
            static constexpr char kPing[] = ": keep-alive\n\n";
            return sink.write(kPing, sizeof(kPing) - 1);
          }
          for (const std::string& text : batch) {
            if (!sink.write(text.data(), text.size())) return false;
          }
          if (finished) sink.done();
          return true;
        },
        [this, call](bool) {
          call->Cancel();  // no-op when the job ended; else the client left
          Leave(call);
        });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Coordinator& coordinator,
                                                              HttpServerOptions options) {
  auto impl = std::make_unique<Impl>(coordinator, std::move(options));
  Impl* p = impl.get();
  const int threads = std::max(1, p->options.threads);
  p->server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  p->server.set_payload_max_length(p->options.max_body_bytes);
  p->server.set_keep_alive_timeout(
      std::max<time_t>(1, absl::ToInt64Seconds(p->options.idle_timeout)));
  p->server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        Reply(res, absl::InternalError("internal error"));
      });
  p->Routes();
  // httplib sets SO_REUSEPORT on Linux, which would let a second server
  // share the port silently; a port in use must fail to bind.
  p->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (p->options.port == 0) {
    p->port = p->server.bind_to_any_port(p->options.host);
  } else if (p->server.bind_to_port(p->options.host, p->options.port)) {
    p->port = p->options.port;
  } else {
    p->port = -1;
  }
  if (p->port <= 0) {
    return absl::UnavailableError(absl::StrCat("HTTP API: cannot listen on ", p->options.host, ":",
                                               p->options.port, " (port in use?)"));
  }
  p->listener = std::thread([p] { p->server.listen_after_bind(); });
  // stop() is a no-op until the accept loop runs; wait for it.
  while (!p->server.is_running()) absl::SleepFor(absl::Milliseconds(1));
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

std::string HttpServer::address() const {
  return absl::StrCat(impl_->options.host, ":", impl_->port);
}

void HttpServer::Stop(absl::Duration grace) {
  Impl& p = *impl_;
  auto idle = [](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu) {
    return impl->in_flight == 0;
  };
  std::set<std::shared_ptr<Call>> calls;
  {
    absl::MutexLock lock(&p.mu);
    if (p.stopped) return;
    p.stopped = true;
    p.stopping = true;
    p.mu.AwaitWithTimeout(absl::Condition(+idle, &p), grace);
    calls = p.calls;
  }
  for (const auto& call : calls) call->Cancel();
  {
    // Cancelled jobs end between steps; their handlers then answer.
    absl::MutexLock lock(&p.mu);
    if (!p.mu.AwaitWithTimeout(absl::Condition(+idle, &p), absl::Seconds(30))) {
      ARBOR_LOG(WARNING) << "HTTP API: " << p.in_flight << " requests still running at stop";
    }
  }
  // Only now: httplib's stop() also cuts streams that are still writing.
  p.server.stop();
  if (p.listener.joinable()) p.listener.join();
}

absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpServerFromFlags(Coordinator& coordinator,
                                                                     int job_capacity) {
  const int port = absl::GetFlag(FLAGS_http_port);
  if (port < 0) return std::unique_ptr<HttpServer>();
  HttpServerOptions options;
  options.host = absl::GetFlag(FLAGS_http_host);
  if (options.host.empty()) options.host = absl::GetFlag(FLAGS_host);
  options.port = port;
  options.threads = std::max(16, job_capacity + 8);
  auto server = HttpServer::Start(coordinator, std::move(options));
  if (!server.ok()) return server.status();
  std::printf("http listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  return server;
}

}  // namespace arbor::coordinator::openai
