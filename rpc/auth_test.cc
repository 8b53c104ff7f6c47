#include "rpc/auth.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ConstantTimeEqualsTest, ComparesContentsOfAnyLength) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("s3cret-token", "s3cret-token"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret-token", "s3cret-tokeN"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret-token", "s3cret-token "));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", ""));
  EXPECT_FALSE(ConstantTimeEquals("a", std::string("a\0", 2)));
}

TEST(TokenSetTest, NamesTokensAndChecksBearerHeaders) {
  auto tokens = TokenSet::Parse("# clients\nalice: tok-a\n\nbob:tok-b\n", "tokens.txt");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ((*tokens)->size(), 2u);
  EXPECT_EQ(*(*tokens)->Check("Bearer tok-a"), "alice");
  EXPECT_EQ(*(*tokens)->Check("bearer tok-b"), "bob");
  const absl::Status wrong = (*tokens)->Check("Bearer tok-c").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(wrong.message(), HasSubstr("invalid token"));
  EXPECT_THAT(wrong.message(), Not(HasSubstr("tok-c")));  // never echoed
  const absl::Status missing = (*tokens)->Check("").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.message(), HasSubstr("missing"));
  EXPECT_EQ((*tokens)->Check("Basic dG9rLWE=").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*tokens)->Check("tok-a").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(TokenSetTest, UnnamedTokensAreDefaultOrNumbered) {
  auto one = TokenSet::Parse("just-a-token\n", "f");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*(*one)->Check("Bearer just-a-token"), "default");
  auto two = TokenSet::Parse("first\n# c\nsecond\n", "f");
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(*(*two)->Check("Bearer first"), "line1");
  EXPECT_EQ(*(*two)->Check("Bearer second"), "line3");
}

TEST(TokenSetTest, RejectsBadFilesNamingTheLine) {
  EXPECT_THAT(TokenSet::Parse("# only comments\n\n", "t.txt").status().message(),
              HasSubstr("t.txt: no tokens"));
  EXPECT_THAT(TokenSet::Parse("a:x\nb:\n", "t.txt").status().message(),
              HasSubstr("t.txt line 2: empty token"));
  EXPECT_THAT(TokenSet::Parse(":x\n", "t.txt").status().message(), HasSubstr("empty name"));
  EXPECT_THAT(TokenSet::Parse("a:x\na:y\n", "t.txt").status().message(), HasSubstr("'a' repeated"));
  EXPECT_EQ(TokenSet::FromFile("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

TEST(IdentityTest, TokenThenCertificateThenPeer) {
  auto tokens = TokenSet::Parse("ci:abc\n", "f");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(*Authenticate(tokens->get(), "Bearer abc", "client-a", "10.0.0.1"), "token:ci");
  EXPECT_EQ(Authenticate(tokens->get(), "", "client-a", "10.0.0.1").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(*Authenticate(nullptr, "", "client-a", "10.0.0.1"), "cert:client-a");
  EXPECT_EQ(*Authenticate(nullptr, "Bearer ignored", "", "10.0.0.1"), "peer:10.0.0.1");
}

TEST(IdentityTest, PeerHostDropsFamilyAndPort) {
  EXPECT_EQ(PeerHost("ipv4:10.0.0.7:5123"), "10.0.0.7");
  EXPECT_EQ(PeerHost("ipv6:[::1]:5123"), "::1");
  EXPECT_EQ(PeerHost("unix:/tmp/sock"), "unix:/tmp/sock");
}

}  // namespace
}  // namespace arbor::rpc
