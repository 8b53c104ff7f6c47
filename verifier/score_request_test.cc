#include "verifier/score_request.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::verifier {
namespace {

using ::testing::HasSubstr;

VerifierLimits Limits() {
  VerifierLimits limits;
  limits.model_name = "prm";
  return limits;
}

arbor::v1::ScoreRequest GoodRequest() {
  arbor::v1::ScoreRequest request;
  request.set_job_id("j");
  request.set_question("Start with 17. Add 25. What is the result?");
  auto* c = request.add_candidates();
  c->add_steps("17 + 25 = 42\n\n");
  c->add_steps("The answer is 42");
  request.add_candidates()->add_steps("17 + 25 = 43");
  return request;
}

std::string Error(const arbor::v1::ScoreRequest& request) {
  absl::Status st = ValidateScoreRequest(request, Limits());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  return std::string(st.message());
}

TEST(ValidateScoreRequestTest, AcceptsAGoodRequest) {
  EXPECT_TRUE(ValidateScoreRequest(GoodRequest(), Limits()).ok());
  auto r = GoodRequest();
  r.set_model("prm");
  EXPECT_TRUE(ValidateScoreRequest(r, Limits()).ok());
}

TEST(ValidateScoreRequestTest, EachBadFieldIsNamed) {
  auto r = GoodRequest();
  r.clear_question();
  EXPECT_EQ(Error(r), "question: empty");

  r = GoodRequest();
  r.set_question("bad \xFF");
  EXPECT_EQ(Error(r), "question: invalid UTF-8 at byte 4");

  r = GoodRequest();
  r.clear_candidates();
  EXPECT_THAT(Error(r), HasSubstr("candidates: empty"));

  r = GoodRequest();
  for (int i = 0; i < 1023; ++i) r.add_candidates()->add_steps("x");
  EXPECT_EQ(Error(r), "candidates: 1025 candidates, at most 1024");

  r = GoodRequest();
  r.add_candidates();
  EXPECT_THAT(Error(r), HasSubstr("candidates[2].steps: empty"));

  r = GoodRequest();
  for (int i = 0; i < 512; ++i) r.mutable_candidates(1)->add_steps("x");
  EXPECT_EQ(Error(r), "candidates[1].steps: 513 steps, at most 512");

  r = GoodRequest();
  r.mutable_candidates(0)->set_steps(1, "The answer is \xE2\x82");
  EXPECT_EQ(Error(r), "candidates[0].steps[1]: invalid UTF-8 at byte 14");

  r = GoodRequest();
  r.set_model("other");
  EXPECT_THAT(Error(r), HasSubstr("model: this server serves \"prm\""));

  r = GoodRequest();
  r.set_job_id(std::string(129, 'x'));
  EXPECT_EQ(Error(r), "job_id: 129 bytes, at most 128");
}

}  // namespace
}  // namespace arbor::verifier
