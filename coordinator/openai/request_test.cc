// Request parsing: what each body field becomes in the SolveRequest, and
// every bad field refused with INVALID_ARGUMENT naming that field.
#include "coordinator/openai/request.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator::openai {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kUser[] = R"("messages": [{"role": "user", "content": "add 3 5"}])";

std::string Chat(const std::string& fields) {
  return "{" + std::string(kUser) + (fields.empty() ? "" : ", " + fields) + "}";
}

TEST(RequestTest, PlainChatIsGreedyWithOneChoice) {
  auto parsed = ParseChatCompletionRequest(Chat(R"("model": "policy", "seed": 9)"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->kind, ApiKind::kChatCompletion);
  EXPECT_EQ(parsed->solve.question(), "add 3 5");
  EXPECT_EQ(parsed->solve.model(), "policy");
  EXPECT_EQ(parsed->solve.seed(), 9u);
  EXPECT_TRUE(parsed->solve.has_greedy());
  EXPECT_EQ(parsed->solve.chat_template(), "");  // the model's own
  EXPECT_EQ(parsed->choices, 1);
  EXPECT_EQ(parsed->solve.max_candidates(), 1);
  EXPECT_FALSE(parsed->stream);
  EXPECT_EQ(parsed->timeout, absl::InfiniteDuration());
}

TEST(RequestTest, SamplingAndTokenCaps) {
  auto parsed = ParseChatCompletionRequest(
      Chat(R"("temperature": 0.5, "top_p": 0.9, "top_k": -1, "max_tokens": 100)"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FLOAT_EQ(parsed->solve.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(parsed->solve.sampling().top_p(), 0.9f);
  EXPECT_EQ(parsed->solve.sampling().top_k(), 0);  // vLLM's -1: disabled
  EXPECT_EQ(parsed->solve.max_solution_tokens(), 100);
  EXPECT_EQ(parsed->solve.stop().max_step_tokens(), 100);  // no step runs past it

  auto long_cap = ParseChatCompletionRequest(Chat(R"("max_completion_tokens": 5000)"));
  ASSERT_TRUE(long_cap.ok()) << long_cap.status();
  EXPECT_EQ(long_cap->solve.max_solution_tokens(), 5000);
  EXPECT_EQ(long_cap->solve.stop().max_step_tokens(), 256);
}

TEST(RequestTest, NAndBestOfAreBestOfN) {
  auto n = ParseChatCompletionRequest(Chat(R"("n": 4)"));
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_TRUE(n->solve.has_best_of_n());
  EXPECT_EQ(n->solve.best_of_n().n(), 4);
  EXPECT_EQ(n->choices, 4);

  auto best_of = ParseCompletionRequest(R"({"prompt": "1+1=", "best_of": 8, "n": 2})");
  ASSERT_TRUE(best_of.ok()) << best_of.status();
  EXPECT_EQ(best_of->kind, ApiKind::kCompletion);
  EXPECT_EQ(best_of->solve.best_of_n().n(), 8);
  EXPECT_EQ(best_of->choices, 2);
  EXPECT_EQ(best_of->solve.max_candidates(), 2);
  EXPECT_EQ(best_of->solve.chat_template(), "raw");  // a completion continues the prompt
}

TEST(RequestTest, ArborExtensionMapsTheRoundTwoStrategies) {
  auto mcts = ParseChatCompletionRequest(Chat(R"J("arbor": {"strategy": "mcts",
      "num_simulations": 12, "max_width": 3, "max_depth": 6, "pb_c_init": 2.0, "rollouts": true,
      "greedy_rollouts": true, "final_selection": "argmax",
      "budget": {"max_steps": 4, "reserve_fraction": 0.3, "finish_branches": 2}})J"));
  ASSERT_TRUE(mcts.ok()) << mcts.status();
  ASSERT_TRUE(mcts->solve.has_mcts());
  EXPECT_EQ(mcts->solve.mcts().num_simulations(), 12);
  EXPECT_EQ(mcts->solve.mcts().max_width(), 3);
  EXPECT_EQ(mcts->solve.mcts().max_depth(), 6);
  EXPECT_EQ(mcts->solve.mcts().pb_c_init(), 2.0);
  EXPECT_TRUE(mcts->solve.mcts().rollouts());
  EXPECT_TRUE(mcts->solve.mcts().greedy_rollouts());
  EXPECT_EQ(mcts->solve.mcts().final_selection(), arbor::v1::Mcts::FINAL_SELECTION_ARGMAX);
  EXPECT_FLOAT_EQ(mcts->solve.budget().reserve_fraction(), 0.3f);
  EXPECT_EQ(mcts->solve.budget().finish_branches(), 2);
  auto gibbs = ParseChatCompletionRequest(Chat(R"J("arbor": {"strategy": "particle_gibbs",
      "n": 6, "num_sweeps": 3, "num_ref_particles": 2, "entropic": true})J"));
  ASSERT_TRUE(gibbs.ok()) << gibbs.status();
  ASSERT_TRUE(gibbs->solve.has_particle_gibbs());
  EXPECT_EQ(gibbs->solve.particle_gibbs().filter().n(), 6);
  EXPECT_TRUE(gibbs->solve.particle_gibbs().filter().entropic());
  EXPECT_EQ(gibbs->solve.particle_gibbs().num_sweeps(), 3);
  EXPECT_EQ(gibbs->solve.particle_gibbs().num_ref_particles(), 2);
  auto adaptive = ParseChatCompletionRequest(
      Chat(R"J("arbor": {"strategy": "best_of_n", "n": 16, "round_size": 4, "stop_agreement": 0.8})J"));
  ASSERT_TRUE(adaptive.ok()) << adaptive.status();
  EXPECT_EQ(adaptive->solve.best_of_n().round_size(), 4);
  EXPECT_FLOAT_EQ(adaptive->solve.best_of_n().stop_agreement(), 0.8f);
  // MCTS has no beam width.
  EXPECT_FALSE(ParseChatCompletionRequest(
                   Chat(R"J("arbor": {"strategy": "mcts", "beam_width": 2})J"))
                   .ok());
}

TEST(RequestTest, ArborExtensionMapsAutoAndTheCertaintyProbe) {
  auto automatic = ParseChatCompletionRequest(Chat(R"J("arbor": {"strategy": "auto", "n": 12,
      "first_round_samples": 3, "hard_agreement": 0, "easy_score": 0.7, "beam_width": 2})J"));
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  ASSERT_TRUE(automatic->solve.has_auto_());
  const arbor::v1::Auto& a = automatic->solve.auto_();
  EXPECT_EQ(a.n(), 12);
  EXPECT_EQ(a.first_round_samples(), 3);
  EXPECT_EQ(a.beam_width(), 2);
  EXPECT_TRUE(a.has_hard_agreement());  // 0 given, not unset
  EXPECT_FLOAT_EQ(a.easy_score(), 0.7f);
  EXPECT_FALSE(a.has_easy_agreement());

  auto effort = ParseChatCompletionRequest(
      Chat(R"J("arbor": {"strategy": "best_of_n", "n": 4, "certainty": "high"})J"));
  ASSERT_TRUE(effort.ok()) << effort.status();
  ASSERT_TRUE(effort->solve.best_of_n().has_certainty());
  EXPECT_EQ(effort->solve.best_of_n().certainty().effort(), arbor::v1::Certainty::EFFORT_HIGH);
  auto object = ParseChatCompletionRequest(Chat(R"J("arbor": {"strategy": "beam_search",
      "certainty": {"effort": "crazy", "interval_tokens": 16, "window": 3,
                    "probe_text": "The answer is ", "max_probe_tokens": 8,
                    "hedge_words": ["maybe"]}})J"));
  ASSERT_TRUE(object.ok()) << object.status();
  const arbor::v1::Certainty& c = object->solve.beam_search().certainty();
  EXPECT_EQ(c.effort(), arbor::v1::Certainty::EFFORT_CRAZY);
  EXPECT_EQ(c.interval_tokens(), 16);
  EXPECT_EQ(c.window(), 3);
  EXPECT_EQ(c.probe_text(), "The answer is ");
  EXPECT_EQ(c.max_probe_tokens(), 8);
  ASSERT_EQ(c.hedge_words_size(), 1);
  auto on = ParseChatCompletionRequest(
      Chat(R"J("arbor": {"strategy": "best_of_n", "certainty": true})J"));
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->solve.best_of_n().has_certainty());
  auto off = ParseChatCompletionRequest(
      Chat(R"J("arbor": {"strategy": "best_of_n", "certainty": false})J"));
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->solve.best_of_n().has_certainty());
  // The probe is best-of-N's and beam search's only.
  EXPECT_FALSE(
      ParseChatCompletionRequest(Chat(R"J("arbor": {"strategy": "dvts", "certainty": "mid"})J"))
          .ok());
  // Coordinator errors name the body's fields.
  EXPECT_EQ(HttpFieldNames(
                absl::InvalidArgumentError("best_of_n.certainty.window (100) must be in [1, 64]"),
                *effort)
                .message(),
            "arbor.certainty.window (100) must be in [1, 64]");
  EXPECT_EQ(
      HttpFieldNames(absl::InvalidArgumentError("auto.n (1) must be in [2, 1024]"), *automatic)
          .message(),
      "arbor.n (1) must be in [2, 1024]");
}

TEST(RequestTest, ArborExtensionNamesTheSolveRequestFields) {
  auto parsed = ParseChatCompletionRequest(Chat(R"J("stream": true,
      "stream_options": {"include_usage": true},
      "arbor": {"strategy": "beam_search", "n": 8, "beam_width": 2, "num_iterations": 5,
                "lookahead": 1, "aggregation": "min", "reward_model": "prm",
                "chat_template": "chatml", "job_id": "job-1",
                "stop": {"step_delimiters": ["\n\n", "\n"], "max_step_tokens": 64},
                "budget": {"max_generated_tokens": 10000, "max_reward_calls": 9,
                           "max_steps": 4, "deadline_ms": 2500},
                "answer_extraction": {"pattern": "x=(\\d+)"}, "timeout_ms": 3000})J"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const arbor::v1::SolveRequest& s = parsed->solve;
  ASSERT_TRUE(s.has_beam_search());
  EXPECT_EQ(s.beam_search().n(), 8);
  EXPECT_EQ(s.beam_search().beam_width(), 2);
  EXPECT_EQ(s.beam_search().num_iterations(), 5);
  EXPECT_EQ(s.beam_search().lookahead(), 1);
  EXPECT_EQ(s.beam_search().aggregation(), arbor::v1::SCORE_AGGREGATION_MIN);
  EXPECT_EQ(s.reward_model(), "prm");
  EXPECT_EQ(s.chat_template(), "chatml");
  EXPECT_EQ(s.job_id(), "job-1");
  ASSERT_EQ(s.stop().step_delimiters_size(), 2);
  EXPECT_EQ(s.stop().step_delimiters(1), "\n");
  EXPECT_EQ(s.stop().max_step_tokens(), 64);
  EXPECT_EQ(s.budget().max_generated_tokens(), 10000);
  EXPECT_EQ(s.budget().max_reward_calls(), 9);
  EXPECT_EQ(s.budget().max_steps(), 4);
  EXPECT_EQ(s.budget().deadline_ms(), 2500);
  EXPECT_EQ(s.answer_extraction().pattern(), "x=(\\d+)");
  EXPECT_EQ(parsed->timeout, absl::Milliseconds(3000));
  EXPECT_TRUE(parsed->stream);
  EXPECT_TRUE(parsed->include_usage);
}

TEST(RequestTest, EnumsByShortOrProtoName) {
  auto short_name = ParseChatCompletionRequest(Chat(R"("arbor": {"selection": "majority_vote"})"));
  ASSERT_TRUE(short_name.ok()) << short_name.status();
  EXPECT_EQ(short_name->solve.best_of_n().selection(),
            arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
  EXPECT_EQ(short_name->solve.best_of_n().n(), 1);  // implicit best-of-N of n = 1
  auto tournament = ParseChatCompletionRequest(Chat(R"("n": 4, "arbor": {"selection": "tournament"})"));
  ASSERT_TRUE(tournament.ok()) << tournament.status();
  EXPECT_EQ(tournament->solve.best_of_n().selection(), arbor::v1::BestOfN::SELECTION_TOURNAMENT);

  auto proto_name = ParseChatCompletionRequest(Chat(R"("arbor": {"strategy": "particle_filter",
      "n": 4, "temperature": 0.5, "resampling": "RESAMPLING_SYSTEMATIC",
      "weight_update": "cumulative", "final_selection": "weighted_vote",
      "absorb_finished": true, "ess_threshold": 0.5})"));
  ASSERT_TRUE(proto_name.ok()) << proto_name.status();
  const arbor::v1::ParticleFilter& p = proto_name->solve.particle_filter();
  EXPECT_EQ(p.n(), 4);
  EXPECT_FLOAT_EQ(p.temperature(), 0.5f);
  EXPECT_EQ(p.resampling(), arbor::v1::ParticleFilter::RESAMPLING_SYSTEMATIC);
  EXPECT_EQ(p.weight_update(), arbor::v1::ParticleFilter::WEIGHT_UPDATE_CUMULATIVE);
  EXPECT_EQ(p.final_selection(), arbor::v1::ParticleFilter::FINAL_SELECTION_WEIGHTED_VOTE);
  EXPECT_TRUE(p.absorb_finished());
  EXPECT_FLOAT_EQ(p.ess_threshold(), 0.5f);
}

TEST(RequestTest, ContentPartsAndNullsAndSdkDefaults) {
  // The SDKs send some unset fields as null, and some features at "off".
  auto parsed = ParseChatCompletionRequest(R"({"model": null,
      "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "text", "text": "b"}]}],
      "stop": null, "logprobs": false, "presence_penalty": 0, "tools": [],
      "response_format": {"type": "text"}, "user": "u1", "metadata": {"k": "v"}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->solve.question(), "a\nb");
  EXPECT_EQ(parsed->solve.model(), "");
}

struct BadCase {
  const char* name;
  bool chat;
  std::string body;
  std::string field;  // the message starts with it; the 400's param
};

class BadFieldTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadFieldTest, IsInvalidArgumentNamingTheField) {
  const BadCase& c = GetParam();
  auto parsed = c.chat ? ParseChatCompletionRequest(c.body) : ParseCompletionRequest(c.body);
  ASSERT_FALSE(parsed.ok()) << c.body;
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), StartsWith(c.field)) << c.body;
  EXPECT_EQ(FieldOfMessage(parsed.status().message()), c.field) << parsed.status();
}

INSTANTIATE_TEST_SUITE_P(
    Bodies, BadFieldTest,
    ::testing::Values(
        BadCase{"NotJson", true, "{", "body"}, BadCase{"NotObject", true, "[1]", "body"},
        BadCase{"UnknownTop", true, Chat(R"("frobnicate": 1)"), "frobnicate"},
        BadCase{"NoMessages", true, "{}", "messages"},
        BadCase{"MessagesNotArray", true, R"({"messages": "hi"})", "messages"},
        BadCase{"EmptyMessages", true, R"({"messages": []})", "messages"},
        BadCase{"TwoMessages", true,
                R"({"messages": [{"role": "system", "content": "s"},
                                 {"role": "user", "content": "q"}]})",
                "messages"},
        BadCase{"SystemRole", true, R"({"messages": [{"role": "system", "content": "s"}]})",
                "messages[0].role"},
        BadCase{"CertaintyEffort", true,
                Chat(R"("arbor": {"strategy": "best_of_n", "certainty": "extreme"})"),
                "arbor.certainty.effort"},
        BadCase{"CertaintyField", true,
                Chat(R"("arbor": {"strategy": "best_of_n", "certainty": {"k": 2}})"),
                "arbor.certainty.k"},
        BadCase{"CertaintyType", true,
                Chat(R"("arbor": {"strategy": "beam_search", "certainty": 3})"), "arbor.certainty"},
        BadCase{"AutoParamElsewhere", true,
                Chat(R"("arbor": {"strategy": "best_of_n", "first_round_samples": 3})"),
                "arbor.first_round_samples"},
        BadCase{"NoRole", true, R"({"messages": [{"content": "s"}]})", "messages[0].role"},
        BadCase{"NoContent", true, R"({"messages": [{"role": "user"}]})", "messages[0].content"},
        BadCase{"ContentNumber", true, R"({"messages": [{"role": "user", "content": 3}]})",
                "messages[0].content"},
        BadCase{"ImagePart", true,
                R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
                "messages[0].content[0].type"},
        BadCase{"MessageExtra", true,
                R"({"messages": [{"role": "user", "content": "q", "tool_calls": []}]})",
                "messages[0].tool_calls"},
        BadCase{"EmptyQuestion", true, R"({"messages": [{"role": "user", "content": ""}]})",
                "messages"},
        BadCase{"ModelNumber", true, Chat(R"("model": 7)"), "model"},
        BadCase{"StreamString", true, Chat(R"("stream": "yes")"), "stream"},
        BadCase{"StreamOptionsNoStream", true, Chat(R"("stream_options": {"include_usage": true})"),
                "stream_options"},
        BadCase{"StreamOptionsUnknown", true, Chat(R"("stream": true, "stream_options": {"x": 1})"),
                "stream_options.x"},
        BadCase{"NZero", true, Chat(R"("n": 0)"), "n"},
        BadCase{"NTooMany", true, Chat(R"("n": 129)"), "n"},
        BadCase{"NFraction", true, Chat(R"("n": 1.5)"), "n"},
        BadCase{"BestOfBelowN", false, R"({"prompt": "p", "n": 4, "best_of": 2})", "best_of"},
        BadCase{"BestOfWithBeam", true,
                Chat(R"("best_of": 4, "arbor": {"strategy": "beam_search"})"), "best_of"},
        BadCase{"GreedyN", true, Chat(R"("n": 2, "arbor": {"strategy": "greedy"})"), "n"},
        BadCase{"MaxTokensZero", true, Chat(R"("max_tokens": 0)"), "max_tokens"},
        BadCase{"MaxTokensConflict", true, Chat(R"("max_tokens": 5, "max_completion_tokens": 6)"),
                "max_completion_tokens"},
        BadCase{"Temperature", true, Chat(R"("temperature": 11)"), "temperature"},
        BadCase{"TemperatureString", true, Chat(R"("temperature": "hot")"), "temperature"},
        BadCase{"TopP", true, Chat(R"("top_p": 0)"), "top_p"},
        BadCase{"TopK", true, Chat(R"("top_k": -2)"), "top_k"},
        BadCase{"SeedNegative", true, Chat(R"("seed": -1)"), "seed"},
        BadCase{"Stop", true, Chat(R"("stop": ["\n"])"), "stop"},
        BadCase{"Logprobs", true, Chat(R"("logprobs": true)"), "logprobs"},
        BadCase{"Tools", true, Chat(R"("tools": [{"type": "function"}])"), "tools"},
        BadCase{"FrequencyPenalty", true, Chat(R"("frequency_penalty": 0.5)"), "frequency_penalty"},
        BadCase{"ResponseFormat", true, Chat(R"("response_format": {"type": "json_object"})"),
                "response_format"},
        BadCase{"Echo", false, R"({"prompt": "p", "echo": true})", "echo"},
        BadCase{"NoPrompt", false, R"({})", "prompt"},
        BadCase{"TokenPrompt", false, R"({"prompt": [1, 2, 3]})", "prompt"},
        BadCase{"TwoPrompts", false, R"({"prompt": ["a", "b"]})", "prompt"},
        BadCase{"PromptInChat", true, Chat(R"("prompt": "p")"), "prompt"},
        BadCase{"MessagesInCompletion", false, R"({"prompt": "p", "messages": []})", "messages"},
        BadCase{"ArborNotObject", true, Chat(R"("arbor": 3)"), "arbor"},
        BadCase{"ArborUnknown", true, Chat(R"("arbor": {"beams": 3})"), "arbor.beams"},
        BadCase{"Strategy", true, Chat(R"("arbor": {"strategy": "lats"})"), "arbor.strategy"},
        BadCase{"ParamOfOtherStrategy", true,
                Chat(R"("arbor": {"strategy": "best_of_n", "beam_width": 2})"), "arbor.beam_width"},
        BadCase{"ParamWithoutStrategy", true, Chat(R"("arbor": {"lookahead": 1})"),
                "arbor.lookahead"},
        BadCase{"BeamN", true, Chat(R"("arbor": {"strategy": "beam_search", "n": 2000})"),
                "arbor.n"},
        BadCase{"BeamDivisible", true,
                Chat(R"("arbor": {"strategy": "beam_search", "n": 6, "beam_width": 4})"),
                "arbor.n"},
        BadCase{"BeamWidthAboveN", true,
                Chat(R"("arbor": {"strategy": "dvts", "n": 4, "beam_width": 8})"),
                "arbor.beam_width"},
        BadCase{"Iterations", true,
                Chat(R"("arbor": {"strategy": "beam_search", "num_iterations": 0})"),
                "arbor.num_iterations"},
        BadCase{"Lookahead", true, Chat(R"("arbor": {"strategy": "beam_search", "lookahead": 9})"),
                "arbor.lookahead"},
        BadCase{"Aggregation", true, Chat(R"("arbor": {"strategy": "dvts", "aggregation": "max"})"),
                "arbor.aggregation"},
        BadCase{"Selection", true, Chat(R"("arbor": {"selection": "best"})"), "arbor.selection"},
        BadCase{"VoteFraction", true,
                Chat(R"("arbor": {"selection": "best_of_majority", "min_vote_fraction": 2})"),
                "arbor.min_vote_fraction"},
        BadCase{"BestOfNTooBig", true, Chat(R"("arbor": {"strategy": "best_of_n", "n": 5000})"),
                "arbor.n"},
        BadCase{"BestOfNBelowChoices", true, Chat(R"("n": 4, "arbor": {"n": 2})"), "arbor.n"},
        BadCase{"PfTemperature", true,
                Chat(R"("arbor": {"strategy": "particle_filter", "temperature": 0})"),
                "arbor.temperature"},
        BadCase{"PfEss", true,
                Chat(R"("arbor": {"strategy": "particle_filter", "ess_threshold": 1.5})"),
                "arbor.ess_threshold"},
        BadCase{"PfResampling", true,
                Chat(R"("arbor": {"strategy": "particle_filter", "resampling": "stratified"})"),
                "arbor.resampling"},
        BadCase{"PfAbsorb", true,
                Chat(R"("arbor": {"strategy": "particle_filter", "absorb_finished": 1})"),
                "arbor.absorb_finished"},
        BadCase{"JobId", true, Chat(R"("arbor": {"job_id": "a b"})"), "arbor.job_id"},
        BadCase{"ChatTemplate", true, Chat(R"("arbor": {"chat_template": "jinja"})"),
                "arbor.chat_template"},
        BadCase{"StopNotObject", true, Chat(R"("arbor": {"stop": "\n"})"), "arbor.stop"},
        BadCase{"StopUnknown", true, Chat(R"("arbor": {"stop": {"sequences": []}})"),
                "arbor.stop.sequences"},
        BadCase{"DelimiterNumber", true,
                Chat(R"("arbor": {"stop": {"step_delimiters": ["\n", 3]}})"),
                "arbor.stop.step_delimiters[1]"},
        BadCase{"DelimiterEmpty", true, Chat(R"("arbor": {"stop": {"step_delimiters": [""]}})"),
                "arbor.stop.step_delimiters[0]"},
        BadCase{"DelimiterWithNone", true,
                Chat(R"("arbor": {"stop": {"step_delimiters": ["x"], "no_step_delimiter": true}})"),
                "arbor.stop.step_delimiters"},
        BadCase{"StepTokens", true, Chat(R"("arbor": {"stop": {"max_step_tokens": 40000}})"),
                "arbor.stop.max_step_tokens"},
        BadCase{"BudgetUnknown", true, Chat(R"("arbor": {"budget": {"tokens": 1}})"),
                "arbor.budget.tokens"},
        BadCase{"BudgetNegative", true, Chat(R"("arbor": {"budget": {"max_reward_tokens": -1}})"),
                "arbor.budget.max_reward_tokens"},
        BadCase{"BudgetDeadline", true, Chat(R"("arbor": {"budget": {"deadline_ms": "soon"}})"),
                "arbor.budget.deadline_ms"},
        BadCase{"AnswerPattern", true, Chat(R"("arbor": {"answer_extraction": {"pattern": "("}})"),
                "arbor.answer_extraction.pattern"},
        BadCase{"Timeout", true, Chat(R"("arbor": {"timeout_ms": 0})"), "arbor.timeout_ms"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(RequestTest, CoordinatorErrorsAreRenamedToBodyFields) {
  auto parsed = ParseChatCompletionRequest(Chat(R"("n": 2, "best_of": 4)"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(HttpFieldNames(absl::InvalidArgumentError("model: unknown model 'x'; workers serve: y"),
                           *parsed)
                .message(),
            "model: unknown model 'x'; workers serve: y");
  EXPECT_EQ(HttpFieldNames(absl::InvalidArgumentError("best_of_n.n (0) must be in [1, 4096]"),
                           *parsed)
                .message(),
            "best_of (0) must be in [1, 4096]");
  EXPECT_EQ(HttpFieldNames(absl::InvalidArgumentError("reward_model: strategy x needs one"), *parsed)
                .message(),
            "arbor.reward_model: strategy x needs one");
  EXPECT_EQ(HttpFieldNames(absl::FailedPreconditionError("question: too long"), *parsed).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(HttpFieldNames(absl::FailedPreconditionError("question: too long"), *parsed).message(),
            "messages: too long");
  // Prose is left alone.
  EXPECT_EQ(HttpFieldNames(absl::UnavailableError("no healthy workers yet"), *parsed).message(),
            "no healthy workers yet");
  EXPECT_EQ(FieldOfMessage("no healthy workers yet"), "");
}

}  // namespace
}  // namespace arbor::coordinator::openai
