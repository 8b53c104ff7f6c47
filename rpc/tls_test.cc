#include "rpc/tls.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::rpc {
namespace {

using ::testing::HasSubstr;

std::string Write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/tls_test_" + std::to_string(getpid()) + name;
  std::ofstream(path) << text;
  return path;
}

TEST(TlsTest, NothingGivenIsPlaintext) {
  EXPECT_FALSE(TlsServerFiles{}.enabled());
  EXPECT_FALSE(TlsClientFiles{}.enabled());
  EXPECT_TRUE(MakeServerCredentials({}).ok());
  EXPECT_TRUE(MakeChannelCredentials({}).ok());
}

TEST(TlsTest, HalfAPairIsRefused) {
  TlsServerFiles server;
  server.key = "key.pem";
  EXPECT_THAT(MakeServerCredentials(server).status().message(),
              HasSubstr("needs both a certificate and its key"));
  TlsServerFiles ca_only;
  ca_only.ca = "ca.pem";
  EXPECT_EQ(MakeServerCredentials(ca_only).status().code(), absl::StatusCode::kInvalidArgument);
  TlsClientFiles client;
  client.cert = "client.pem";
  EXPECT_THAT(MakeChannelCredentials(client).status().message(), HasSubstr("needs its key"));
}

TEST(TlsTest, MissingAndNonPemFilesAreNamed) {
  TlsServerFiles server{"/nonexistent/cert.pem", "/nonexistent/key.pem", ""};
  const absl::Status missing = MakeServerCredentials(server).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("--tls_cert /nonexistent/cert.pem"));
  TlsClientFiles client;
  client.ca = Write("notpem", "hello");
  const absl::Status not_pem = MakeChannelCredentials(client).status();
  EXPECT_EQ(not_pem.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_pem.message(), HasSubstr("not a PEM file"));
  unlink(client.ca.c_str());
}

}  // namespace
}  // namespace arbor::rpc
