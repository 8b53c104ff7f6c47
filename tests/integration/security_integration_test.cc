// TLS, mutual TLS, bearer tokens, per-client quotas and start-up errors with
// real processes on loopback: arbor-coordinator, arbor-test-world (the
// ArithWorld worker/verifier double) and arborctl, with certificates made at
// test time by make_test_certs.sh.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/integration/subprocess.h"

namespace arbor::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// One HTTP/1.0 request to 127.0.0.1:port; the whole reply.
std::string HttpRequest(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    (void)!write(fd, request.data(), request.size());
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) reply.append(buffer, n);
  }
  close(fd);
  return reply;
}

int PortOf(const std::string& host_port) {
  return std::stoi(host_port.substr(host_port.rfind(':') + 1));
}

struct Server {
  std::unique_ptr<Subprocess> process;
  std::string address;
  std::string metrics;
  std::string err_path;
};

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The refused TLS clients below write to connections the server closed.
    signal(SIGPIPE, SIG_IGN);
    certs_ = new std::string(absl::StrCat(::testing::TempDir(), "/arbor_certs_", getpid()));
    const std::string command =
        absl::StrCat("tests/integration/make_test_certs.sh ", *certs_, " > /dev/null");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() {
    std::system(absl::StrCat("rm -rf ", *certs_).c_str());
    delete certs_;
  }

  void SetUp() override { setenv("ARBOR_LOG_LEVEL", "WARNING", 1); }

  static std::string Cert(const std::string& name) { return absl::StrCat(*certs_, "/", name); }

  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(::testing::TempDir(), "/sec_", getpid(), "_", name);
    std::ofstream(path) << text;
    return path;
  }

  Server StartServer(std::vector<std::string> argv) {
    auto has = [&](const std::string& prefix) {
      return std::any_of(argv.begin(), argv.end(),
                         [&](const std::string& a) { return a.rfind(prefix, 0) == 0; });
    };
    argv.push_back("--host=127.0.0.1");
    if (!has("--metrics_port=")) argv.push_back("--metrics_port=-1");
    if (!has("--port=")) argv.push_back("--port=0");
    Server server;
    server.err_path =
        absl::StrCat(::testing::TempDir(), "/sec_", getpid(), "_", servers_++, ".err");
    auto process = Subprocess::Start(argv, server.err_path);
    if (!process.ok()) {
      ADD_FAILURE() << process.status();
      return server;
    }
    server.process = *std::move(process);
    auto address = server.process->WaitForLine("listening on ", kStartTimeout);
    EXPECT_TRUE(address.ok()) << argv[0] << ": " << address.status() << "\n"
                              << ReadFile(server.err_path);
    if (address.ok()) server.address = *address;
    if (has("--metrics_port=0")) {
      auto metrics = server.process->WaitForLine("metrics on ", kStartTimeout);
      EXPECT_TRUE(metrics.ok()) << metrics.status();
      if (metrics.ok()) server.metrics = *metrics;
    }
    return server;
  }

  Server StartWorld(const std::string& serve, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {BinaryPath("arbor-test-world"), "--serve=" + serve};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return StartServer(argv);
  }

  // Runs a binary to its exit.
  Result Run(std::vector<std::string> argv) {
    const std::string err_path =
        absl::StrCat(::testing::TempDir(), "/sec_run_", getpid(), "_", runs_++, ".err");
    Result result;
    auto process = Subprocess::Start(argv, err_path);
    if (!process.ok()) {
      ADD_FAILURE() << process.status();
      return result;
    }
    result.out = (*process)->ReadAll(absl::Seconds(60));
    result.exit_code = (*process)->Wait();
    result.err = ReadFile(err_path);
    unlink(err_path.c_str());
    return result;
  }

  Result Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), BinaryPath("arborctl"));
    return Run(args);
  }

  std::vector<std::string> ServerTls(bool mutual) {
    std::vector<std::string> flags = {"--tls_cert=" + Cert("server.pem"),
                                      "--tls_key=" + Cert("server.key")};
    if (mutual) flags.push_back("--tls_ca=" + Cert("ca.pem"));
    return flags;
  }

  static std::shared_ptr<grpc::ChannelCredentials> ClientTls() {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadFile(Cert("ca.pem"));
    return grpc::SslCredentials(options);
  }

  static std::string* certs_;
  int servers_ = 0;
  int runs_ = 0;
};

std::string* SecurityTest::certs_ = nullptr;

TEST_F(SecurityTest, TlsServesClientsTrustingItsCaAndRefusesOthers) {
  Server world = StartWorld("generator", ServerTls(/*mutual=*/false));
  ASSERT_FALSE(world.address.empty());
  const std::string target = "--target=" + world.address;

  Result good = Ctl({"info", target, "--tls_ca=" + Cert("ca.pem"), "--timeout_ms=5000"});
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr("arith-1"));

  Result plaintext = Ctl({"info", target, "--timeout_ms=3000"});
  EXPECT_EQ(plaintext.exit_code, 1);
  EXPECT_THAT(plaintext.err, HasSubstr("UNAVAILABLE"));

  Result wrong_ca = Ctl({"info", target, "--tls_ca=" + Cert("other-ca.pem"), "--timeout_ms=3000"});
  EXPECT_EQ(wrong_ca.exit_code, 1);
  EXPECT_THAT(wrong_ca.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(wrong_ca.out, Not(HasSubstr("arith-1")));
}

TEST_F(SecurityTest, MetricsOffLoopbackAreHttpsWithTheSameCertificates) {
  std::vector<std::string> flags = ServerTls(/*mutual=*/true);
  flags.push_back("--metrics_host=0.0.0.0");
  flags.push_back("--metrics_port=0");
  Server world = StartWorld("generator", flags);
  ASSERT_FALSE(world.metrics.empty());
  const int port = PortOf(world.metrics);

  httplib::SSLClient good("127.0.0.1", port, Cert("client.pem"), Cert("client.key"));
  good.set_ca_cert_path(Cert("ca.pem").c_str());
  good.enable_server_certificate_verification(true);
  auto scraped = good.Get("/metrics");
  ASSERT_TRUE(scraped) << httplib::to_string(scraped.error());
  EXPECT_EQ(scraped->status, 200);
  EXPECT_THAT(scraped->body, HasSubstr("arbor_build_info"));
  EXPECT_THAT(scraped->body, HasSubstr("process_resident_memory_bytes"));

  // Without a client certificate (mutual TLS), or in plain HTTP: nothing.
  httplib::SSLClient anonymous("127.0.0.1", port);
  anonymous.set_ca_cert_path(Cert("ca.pem").c_str());
  anonymous.enable_server_certificate_verification(true);
  EXPECT_FALSE(anonymous.Get("/metrics"));
  EXPECT_THAT(HttpRequest(port, "GET /metrics HTTP/1.0\r\n\r\n"),
              Not(HasSubstr("arbor_build_info")));
}

TEST_F(SecurityTest, MutualTlsRefusesClientsWithoutAGoodCertificate) {
  Server world = StartWorld("generator", ServerTls(/*mutual=*/true));
  ASSERT_FALSE(world.address.empty());
  const std::vector<std::string> base = {"info", "--target=" + world.address,
                                         "--tls_ca=" + Cert("ca.pem"), "--timeout_ms=3000"};

  Result no_cert = Ctl(base);
  EXPECT_EQ(no_cert.exit_code, 1);
  EXPECT_THAT(no_cert.err, HasSubstr("UNAVAILABLE"));

  std::vector<std::string> intruder = base;
  intruder.push_back("--tls_cert=" + Cert("other-client.pem"));
  intruder.push_back("--tls_key=" + Cert("other-client.key"));
  Result bad_cert = Ctl(intruder);
  EXPECT_EQ(bad_cert.exit_code, 1);
  EXPECT_THAT(bad_cert.err, HasSubstr("UNAVAILABLE"));

  std::vector<std::string> client = base;
  client.push_back("--tls_cert=" + Cert("client.pem"));
  client.push_back("--tls_key=" + Cert("client.key"));
  Result good = Ctl(client);
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr("arith-1"));
}

TEST_F(SecurityTest, CoordinatorCallsWorkersOverMutualTlsAndChecksTokens) {
  Server worker = StartWorld("generator", ServerTls(/*mutual=*/true));
  Server verifier = StartWorld("verifier", ServerTls(/*mutual=*/true));
  ASSERT_FALSE(worker.address.empty());
  ASSERT_FALSE(verifier.address.empty());
  const std::string tokens = WriteFile("tokens", "# test clients\nalice:alice-s3cret\n");
  const std::string alice = WriteFile("alice", "alice-s3cret\n");
  const std::string mallory = WriteFile("mallory", "guessed\n");
  std::vector<std::string> argv = {BinaryPath("arbor-coordinator"),
                                   "--workers=" + worker.address,
                                   "--verifiers=" + verifier.address,
                                   "--health_interval_ms=200",
                                   "--upstream_tls_ca=" + Cert("ca.pem"),
                                   "--upstream_tls_cert=" + Cert("client.pem"),
                                   "--upstream_tls_key=" + Cert("client.key"),
                                   "--auth_token_file=" + tokens,
                                   "--http_port=0"};
  for (const std::string& flag : ServerTls(/*mutual=*/false)) argv.push_back(flag);
  Server coordinator = StartServer(argv);
  ASSERT_FALSE(coordinator.address.empty());
  auto http = coordinator.process->WaitForLine("http listening on ", kStartTimeout);
  ASSERT_TRUE(http.ok()) << http.status();

  const std::vector<std::string> solve = {"solve",
                                          "--target=" + coordinator.address,
                                          "--tls_ca=" + Cert("ca.pem"),
                                          "--strategy=best_of_n",
                                          "--n=4",
                                          "--json",
                                          "--timeout_ms=20000"};
  std::vector<std::string> with_token = solve;
  with_token.push_back("--token_file=" + alice);
  with_token.push_back("add 2 3");
  // The pool's first health checks over mutual TLS may still be in flight.
  Result served;
  for (int attempt = 0; attempt < 50; ++attempt) {
    served = Ctl(with_token);
    if (served.exit_code == 0 || served.err.find("no healthy") == std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(served.exit_code, 0) << served.err;
  EXPECT_THAT(served.out, HasSubstr("\"answer\""));

  std::vector<std::string> wrong = solve;
  wrong.push_back("--token_file=" + mallory);
  wrong.push_back("add 2 3");
  Result refused = Ctl(wrong);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(refused.err, HasSubstr("invalid token"));

  std::vector<std::string> none = solve;
  none.push_back("add 2 3");
  Result missing = Ctl(none);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(missing.err, HasSubstr("missing credentials"));

  // The HTTP API checks the same tokens; /health stays open.
  const int http_port = PortOf(*http);
  EXPECT_THAT(HttpRequest(http_port, "GET /v1/models HTTP/1.0\r\n\r\n"), HasSubstr("401"));
  EXPECT_THAT(
      HttpRequest(http_port, "GET /v1/models HTTP/1.0\r\nAuthorization: Bearer guessed\r\n\r\n"),
      HasSubstr("invalid_api_key"));
  const std::string ok = HttpRequest(
      http_port, "GET /v1/models HTTP/1.0\r\nAuthorization: Bearer alice-s3cret\r\n\r\n");
  EXPECT_THAT(ok, HasSubstr("200 OK"));
  EXPECT_THAT(ok, HasSubstr("arith-1"));
  EXPECT_THAT(HttpRequest(http_port, "GET /health HTTP/1.0\r\n\r\n"), Not(HasSubstr("401")));
}

TEST_F(SecurityTest, CoordinatorWithoutUpstreamCertificateCannotUseMutualTlsWorkers) {
  Server worker = StartWorld("generator", ServerTls(/*mutual=*/true));
  ASSERT_FALSE(worker.address.empty());
  Server coordinator =
      StartServer({BinaryPath("arbor-coordinator"), "--workers=" + worker.address,
                   "--health_interval_ms=200", "--upstream_tls_ca=" + Cert("ca.pem")});
  ASSERT_FALSE(coordinator.address.empty());
  absl::SleepFor(absl::Milliseconds(600));  // a few health checks, all refused
  Result r = Ctl({"solve", "--target=" + coordinator.address, "--strategy=greedy",
                  "--timeout_ms=5000", "add 2 3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
}

TEST_F(SecurityTest, PortInUseIsAStartupErrorWithExitCode2) {
  Server first = StartWorld("generator");
  ASSERT_FALSE(first.address.empty());
  const std::string port = std::to_string(PortOf(first.address));
  for (const std::string binary : {"arbor-coordinator", "arbor-test-world"}) {
    std::vector<std::string> argv = {BinaryPath(binary), "--host=127.0.0.1", "--port=" + port,
                                     "--metrics_port=-1"};
    if (binary == "arbor-coordinator") argv.push_back("--workers=127.0.0.1:1");
    Result second = Run(argv);
    EXPECT_EQ(second.exit_code, 2) << binary << ": " << second.err;
    EXPECT_THAT(second.err, HasSubstr("127.0.0.1:" + port)) << binary;
    EXPECT_THAT(second.err, HasSubstr("in use")) << binary;
    EXPECT_THAT(second.out, Not(HasSubstr("listening on"))) << binary;
  }
  // The HTTP API refuses a port in use the same way.
  Result http = Run({BinaryPath("arbor-coordinator"), "--host=127.0.0.1", "--port=0",
                     "--metrics_port=-1", "--workers=127.0.0.1:1", "--http_port=" + port});
  EXPECT_EQ(http.exit_code, 2) << http.err;
  EXPECT_THAT(http.err, HasSubstr("HTTP API: cannot listen on 127.0.0.1:" + port));
  // The first server still owns its port alone.
  Result info = Ctl({"info", "--target=" + first.address, "--timeout_ms=3000"});
  EXPECT_EQ(info.exit_code, 0) << info.err;
}

TEST_F(SecurityTest, PerClientQuotasRefuseTheExcessNamingTheQuota) {
  Server worker = StartWorld("generator", {"--extend_delay_ms=300"});
  ASSERT_FALSE(worker.address.empty());
  const std::string tokens = WriteFile("quota_tokens", "alice:a-token\nbob:b-token\n");
  Server coordinator = StartServer({BinaryPath("arbor-coordinator"), "--workers=" + worker.address,
                                    "--health_interval_ms=200", "--auth_token_file=" + tokens,
                                    "--max_jobs_per_client=1"});
  ASSERT_FALSE(coordinator.address.empty());
  auto stub = arbor::v1::Reasoning::NewStub(
      grpc::CreateChannel(coordinator.address, grpc::InsecureChannelCredentials()));
  auto request = [] {
    arbor::v1::SolveRequest r;
    r.set_question("add 2 3");
    r.mutable_greedy();
    return r;
  };
  auto context_for = [](grpc::ClientContext& context, const std::string& token) {
    context.AddMetadata("authorization", "Bearer " + token);
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  };

  // Alice's first job holds her one slot while it runs (each step takes 300 ms).
  grpc::ClientContext first;
  context_for(first, "a-token");
  std::unique_ptr<grpc::ClientReader<arbor::v1::SolveEvent>> stream;
  for (int attempt = 0; attempt < 50; ++attempt) {
    grpc::ClientContext probe;
    context_for(probe, "b-token");
    arbor::v1::SolveResponse ignored;
    // Wait until the pool has a healthy worker (bob's probe job).
    const grpc::Status s = stub->Solve(&probe, request(), &ignored);
    if (s.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  stream = stub->SolveStream(&first, request());
  arbor::v1::SolveEvent accepted;
  ASSERT_TRUE(stream->Read(&accepted));
  ASSERT_TRUE(accepted.has_accepted());

  grpc::ClientContext second;
  context_for(second, "a-token");
  arbor::v1::SolveResponse response;
  const grpc::Status refused = stub->Solve(&second, request(), &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("token:alice"));
  EXPECT_THAT(refused.error_message(), HasSubstr("--max_jobs_per_client (1)"));

  // Bob is not held back by Alice's job.
  grpc::ClientContext other;
  context_for(other, "b-token");
  const grpc::Status bob = stub->Solve(&other, request(), &response);
  EXPECT_TRUE(bob.ok()) << bob.error_message();

  // Once Alice's job ends, her next is admitted.
  arbor::v1::SolveEvent event;
  while (stream->Read(&event)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
  grpc::ClientContext again;
  context_for(again, "a-token");
  const grpc::Status after = stub->Solve(&again, request(), &response);
  EXPECT_TRUE(after.ok()) << after.error_message();
}

TEST_F(SecurityTest, TokensPerMinuteQuotaRefusesAfterTheBudgetIsUsed) {
  Server worker = StartWorld("generator");
  ASSERT_FALSE(worker.address.empty());
  Server coordinator =
      StartServer({BinaryPath("arbor-coordinator"), "--workers=" + worker.address,
                   "--health_interval_ms=200", "--max_tokens_per_minute_per_client=1"});
  ASSERT_FALSE(coordinator.address.empty());
  Result first;
  for (int attempt = 0; attempt < 50; ++attempt) {
    first = Ctl({"solve", "--target=" + coordinator.address, "--strategy=greedy", "--json",
                 "--timeout_ms=10000", "add 2 3"});
    if (first.exit_code == 0 || first.err.find("no healthy") == std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(first.exit_code, 0) << first.err;
  // Without tokens configured, the client is its address.
  Result second = Ctl({"solve", "--target=" + coordinator.address, "--strategy=greedy",
                       "--timeout_ms=10000", "add 2 3"});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.err, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_THAT(second.err, HasSubstr("peer:127.0.0.1"));
  EXPECT_THAT(second.err, HasSubstr("--max_tokens_per_minute_per_client is 1"));
}

TEST_F(SecurityTest, WorkerModelOutsideModelRootIsRefusedAtStart) {
  const std::string root = absl::StrCat(::testing::TempDir(), "/sec_root_", getpid());
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", root).c_str()), 0);
  Result outside = Run({BinaryPath("arbor-worker"), "--model=models/policy", "--model_root=" + root,
                        "--port=0", "--metrics_port=-1"});
  EXPECT_EQ(outside.exit_code, 2) << outside.err;
  EXPECT_THAT(outside.err, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(outside.err, HasSubstr("outside --model_root"));
  EXPECT_THAT(outside.out, Not(HasSubstr("listening on")));
  // A link inside the root pointing out of it is refused the same way.
  const std::string link = root + "/policy";
  ASSERT_EQ(symlink((std::filesystem::current_path() / "models/policy").c_str(), link.c_str()), 0);
  Result linked = Run({BinaryPath("arbor-worker"), "--model=" + link, "--model_root=" + root,
                       "--port=0", "--metrics_port=-1"});
  EXPECT_EQ(linked.exit_code, 2) << linked.err;
  EXPECT_THAT(linked.err, HasSubstr("outside --model_root"));
  std::system(absl::StrCat("rm -rf ", root).c_str());
  // Inside the root, the worker serves.
  Server inside = StartServer({BinaryPath("arbor-worker"), "--model=models/policy",
                               "--model_root=models", "--threads=1", "--kv_cache_tokens=1024"});
  EXPECT_FALSE(inside.address.empty());
}

}  // namespace
}  // namespace arbor::testing
