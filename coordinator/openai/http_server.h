// The OpenAI-compatible HTTP API of the coordinator (docs/HTTP.md):
//   POST /v1/chat/completions, POST /v1/completions (JSON, or server-sent
//   events with "stream": true), GET /v1/models, GET /health.
// Served by cpp-httplib (Debian's libcpp-httplib-dev) on its own port, beside
// the gRPC server.
//
// It calls the Coordinator in process rather than the Reasoning service over
// gRPC: one hop less, the same validation, admission and job threads as a
// gRPC client gets, and a job handle to cancel when a streaming client goes
// away or the server stops. A request becomes one SolveRequest
// (coordinator/openai/request.h) and its result one OpenAI object
// (coordinator/openai/response.h).
//
// Each request holds one httplib worker thread until its job ends, so the
// pool is sized to the coordinator's job capacity and admission control (429)
// decides, not the HTTP thread pool. A non-streaming client that disconnects
// does not stop its job (httplib cannot tell until the answer is written);
// the job ends at its budget. A streaming one is noticed at the next event
// or keep-alive comment and its job is cancelled.
// Thread-safety: all methods are thread-safe; the Coordinator must outlive
// the server.
#ifndef ARBOR_COORDINATOR_OPENAI_HTTP_SERVER_H_
#define ARBOR_COORDINATOR_OPENAI_HTTP_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/coordinator.h"

namespace arbor::coordinator::openai {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port
  // Worker threads, one per request in flight (queued jobs included).
  int threads = 80;
  // Largest request body.
  size_t max_body_bytes = 1 << 20;
  // A stream with nothing to send writes an SSE comment this often, which
  // also notices a client that has gone.
  absl::Duration stream_keepalive = absl::Seconds(5);
  // How long an idle keep-alive connection is kept open.
  absl::Duration idle_timeout = absl::Seconds(2);
};

class HttpServer {
 public:
  // Binds and starts serving; returns when the port accepts connections.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Coordinator& coordinator,
                                                           HttpServerOptions options);
  // Stop(0) if not stopped.
  ~HttpServer();

  int port() const;
  // "host:port".
  std::string address() const;

  // Graceful stop: new requests get 503, in-flight ones may finish within
  // `grace`, then their jobs are cancelled (their clients get 503, or an
  // error event on a stream); returns when every handler has returned and
  // the port is closed. Later calls are no-ops.
  void Stop(absl::Duration grace);

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// --http_port (-1: off, 0: a free port) and --http_host (empty: --host).
// Returns null when the HTTP API is off; otherwise a started server, after
// printing "http listening on HOST:PORT". `job_capacity` (the coordinator's
// concurrent + queued jobs) sizes the thread pool.
absl::StatusOr<std::unique_ptr<HttpServer>> StartHttpServerFromFlags(Coordinator& coordinator,
                                                                     int job_capacity);

}  // namespace arbor::coordinator::openai

#endif  // ARBOR_COORDINATOR_OPENAI_HTTP_SERVER_H_
