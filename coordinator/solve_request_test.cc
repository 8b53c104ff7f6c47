// SolveRequest validation and mapping: every kind of bad field is rejected
// with INVALID_ARGUMENT naming it; zeros take the documented defaults.
#include "coordinator/solve_request.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "arbor/v1/reasoning.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::coordinator {
namespace {

using ::testing::HasSubstr;

arbor::v1::SolveRequest ValidRequest() {
  arbor::v1::SolveRequest request;
  request.set_question("add 3 5 7");
  return request;
}

TEST(SolveRequestTest, DefaultsFollowTheProto) {
  auto config = StrategyConfigFromRequest(ValidRequest());
  ASSERT_TRUE(config.ok()) << config.status();
  const auto* bon = std::get_if<search::BestOfNConfig>(&config->strategy);
  ASSERT_NE(bon, nullptr);
  EXPECT_EQ(bon->n, 8);
  EXPECT_EQ(config->stop.step_delimiters, std::vector<std::string>{"\n\n"});
  EXPECT_EQ(config->stop.max_step_tokens, 256);
  EXPECT_FLOAT_EQ(config->sampling.temperature, 0.8f);
  EXPECT_EQ(config->max_candidates, 8);
  EXPECT_TRUE(NeedsRewardModel(*config));

  arbor::v1::SolveRequest request = ValidRequest();
  request.mutable_beam_search();
  request.mutable_budget()->set_deadline_ms(1500);
  request.mutable_stop()->set_no_step_delimiter(true);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok()) << config.status();
  const auto* beam = std::get_if<search::BeamSearchConfig>(&config->strategy);
  ASSERT_NE(beam, nullptr);
  EXPECT_EQ(beam->n, 16);
  EXPECT_EQ(beam->beam_width, 4);
  EXPECT_EQ(beam->num_iterations, 40);
  EXPECT_EQ(config->budget.deadline, absl::Milliseconds(1500));
  EXPECT_TRUE(config->stop.step_delimiters.empty());

  request = ValidRequest();
  request.mutable_greedy();
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  EXPECT_FLOAT_EQ(std::get<search::GreedyConfig>(config->strategy).temperature, 0.0f);
  EXPECT_FALSE(NeedsRewardModel(*config));
  request.mutable_sampling()->set_temperature(0.5f);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  EXPECT_FLOAT_EQ(std::get<search::GreedyConfig>(config->strategy).temperature, 0.5f);

  request = ValidRequest();
  request.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  EXPECT_FALSE(NeedsRewardModel(*config));
  EXPECT_FALSE(NeedsPairwiseJudge(*config));

  request = ValidRequest();
  request.mutable_best_of_n()->set_selection(arbor::v1::BestOfN::SELECTION_TOURNAMENT);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(std::get<search::BestOfNConfig>(config->strategy).selection,
            search::BestOfNConfig::Selection::kTournament);
  EXPECT_TRUE(NeedsRewardModel(*config));
  EXPECT_TRUE(NeedsPairwiseJudge(*config));

  request = ValidRequest();
  auto* pf = request.mutable_particle_filter();
  pf->set_n(8);
  pf->set_resampling(arbor::v1::ParticleFilter::RESAMPLING_SYSTEMATIC);
  pf->set_weight_update(arbor::v1::ParticleFilter::WEIGHT_UPDATE_CUMULATIVE);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  const auto& p = std::get<search::ParticleFilterConfig>(config->strategy);
  EXPECT_EQ(p.n, 8);
  EXPECT_FLOAT_EQ(p.temperature, 1.0f);
  EXPECT_EQ(p.resampling, search::ParticleFilterConfig::Resampling::kSystematic);
  EXPECT_EQ(p.weight_update, search::ParticleFilterConfig::WeightUpdate::kCumulative);

  // MCTS: sampled rollouts and the PRM-weighted vote unless the request says otherwise.
  request = ValidRequest();
  request.mutable_mcts()->set_rollouts(true);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  auto mcts = std::get<search::MctsConfig>(config->strategy);
  EXPECT_TRUE(mcts.rollouts);
  EXPECT_TRUE(mcts.sampled_rollouts);
  EXPECT_EQ(mcts.final_selection, search::MctsConfig::FinalSelection::kWeightedVote);
  request.mutable_mcts()->set_greedy_rollouts(true);
  request.mutable_mcts()->set_final_selection(arbor::v1::Mcts::FINAL_SELECTION_ARGMAX);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok());
  mcts = std::get<search::MctsConfig>(config->strategy);
  EXPECT_FALSE(mcts.sampled_rollouts);
  EXPECT_EQ(mcts.final_selection, search::MctsConfig::FinalSelection::kArgmaxScore);
}

struct BadCase {
  std::string name;
  std::function<void(arbor::v1::SolveRequest&)> mutate;
  std::string field;  // expected in the message
};

TEST(SolveRequestTest, MaxSolutionTokens) {
  auto defaults = StrategyConfigFromRequest(ValidRequest());
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->max_solution_tokens, 2048);
  arbor::v1::SolveRequest request = ValidRequest();
  request.set_max_solution_tokens(100);
  auto capped = StrategyConfigFromRequest(request);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->max_solution_tokens, 100);
  request.set_max_solution_tokens(-1);
  auto bad = StrategyConfigFromRequest(request);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("max_solution_tokens"));
}

TEST(SolveRequestTest, EachBadFieldIsNamed) {
  const std::vector<BadCase> cases = {
      {"empty question", [](auto& r) { r.clear_question(); }, "question"},
      {"invalid utf8", [](auto& r) { r.set_question("add \xff 2"); }, "question"},
      {"huge question", [](auto& r) { r.set_question(std::string(70000, 'a')); }, "question"},
      {"job id chars", [](auto& r) { r.set_job_id("job id!"); }, "job_id"},
      {"job id length", [](auto& r) { r.set_job_id(std::string(200, 'a')); }, "job_id"},
      {"model utf8", [](auto& r) { r.set_model("\xfe"); }, "model"},
      {"reward model", [](auto& r) { r.set_reward_model(std::string(300, 'm')); }, "reward_model"},
      {"template", [](auto& r) { r.set_chat_template("alpaca"); }, "chat_template"},
      {"best_of_n.n", [](auto& r) { r.mutable_best_of_n()->set_n(-3); }, "best_of_n.n"},
      {"beam divisible",
       [](auto& r) {
         r.mutable_beam_search()->set_n(6);
         r.mutable_beam_search()->set_beam_width(4);
       },
       "beam_search.n (6) must be divisible by beam_width (4)"},
      {"beam lookahead", [](auto& r) { r.mutable_beam_search()->set_lookahead(9); },
       "beam_search.lookahead"},
      {"dvts iterations", [](auto& r) { r.mutable_dvts()->set_num_iterations(-1); },
       "dvts.num_iterations"},
      {"pf temperature", [](auto& r) { r.mutable_particle_filter()->set_temperature(-1); },
       "particle_filter.temperature"},
      {"pf ess", [](auto& r) { r.mutable_particle_filter()->set_ess_threshold(1.5); },
       "particle_filter.ess_threshold"},
      {"mcts selection enum",
       [](auto& r) {
         r.mutable_mcts()->set_final_selection(static_cast<arbor::v1::Mcts::FinalSelection>(7));
       },
       "mcts.final_selection"},
      {"aggregation enum",
       [](auto& r) {
         r.mutable_beam_search()->set_aggregation(static_cast<arbor::v1::ScoreAggregation>(99));
       },
       "beam_search.aggregation"},
      {"temperature", [](auto& r) { r.mutable_sampling()->set_temperature(11); },
       "sampling.temperature"},
      {"temperature nan", [](auto& r) { r.mutable_sampling()->set_temperature(NAN); },
       "sampling.temperature"},
      {"top_p", [](auto& r) { r.mutable_sampling()->set_top_p(0); }, "sampling.top_p"},
      {"top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-1); }, "sampling.top_k"},
      {"max_step_tokens", [](auto& r) { r.mutable_stop()->set_max_step_tokens(-5); },
       "stop.max_step_tokens"},
      {"delimiter count",
       [](auto& r) {
         for (int i = 0; i < 9; ++i) r.mutable_stop()->add_step_delimiters("x");
       },
       "stop.step_delimiters"},
      {"delimiter utf8", [](auto& r) { r.mutable_stop()->add_step_delimiters("\xff"); },
       "stop.step_delimiters[0]"},
      {"delimiter conflict",
       [](auto& r) {
         r.mutable_stop()->set_no_step_delimiter(true);
         r.mutable_stop()->add_step_delimiters("\n");
       },
       "stop.step_delimiters"},
      {"negative budget", [](auto& r) { r.mutable_budget()->set_max_generated_tokens(-1); },
       "budget.max_generated_tokens"},
      {"negative deadline", [](auto& r) { r.mutable_budget()->set_deadline_ms(-10); },
       "budget.deadline_ms"},
      {"negative steps", [](auto& r) { r.mutable_budget()->set_max_steps(-2); },
       "budget.max_steps"},
      {"pattern", [](auto& r) { r.mutable_answer_extraction()->set_pattern("(unclosed"); },
       "answer_extraction"},
      {"max_candidates", [](auto& r) { r.set_max_candidates(5000); }, "max_candidates"},
      {"certainty effort",
       [](auto& r) {
         r.mutable_best_of_n()->mutable_certainty()->set_effort(
             static_cast<arbor::v1::Certainty::Effort>(42));
       },
       "best_of_n.certainty.effort"},
      {"certainty window",
       [](auto& r) { r.mutable_best_of_n()->mutable_certainty()->set_window(65); },
       "best_of_n.certainty.window (65) must be in [1, 64]"},
      {"certainty interval",
       [](auto& r) { r.mutable_beam_search()->mutable_certainty()->set_interval_tokens(-1); },
       "beam_search.certainty.interval_tokens (-1)"},
      {"certainty probe tokens",
       [](auto& r) { r.mutable_beam_search()->mutable_certainty()->set_max_probe_tokens(300); },
       "beam_search.certainty.max_probe_tokens (300)"},
      {"certainty probe text",
       [](auto& r) {
         r.mutable_best_of_n()->mutable_certainty()->set_probe_text(std::string(2000, 'a'));
       },
       "best_of_n.certainty.probe_text has 2000 bytes"},
      {"certainty probe utf8",
       [](auto& r) { r.mutable_best_of_n()->mutable_certainty()->set_probe_text("\xff"); },
       "best_of_n.certainty.probe_text"},
      {"certainty hedge word",
       [](auto& r) { r.mutable_best_of_n()->mutable_certainty()->add_hedge_words(""); },
       "best_of_n.certainty.hedge_words[0]"},
      {"auto n", [](auto& r) { r.mutable_auto_()->set_n(1); }, "auto.n (1) must be in [2, 1024]"},
      {"auto first round",
       [](auto& r) {
         r.mutable_auto_()->set_n(8);
         r.mutable_auto_()->set_first_round_samples(8);
       },
       "auto.first_round_samples (8) must be in [2, 7]"},
      {"auto threshold", [](auto& r) { r.mutable_auto_()->set_easy_score(1.5f); },
       "auto.easy_score"},
      {"auto beam width", [](auto& r) { r.mutable_auto_()->set_beam_width(65); },
       "auto.beam_width"},
  };
  for (const BadCase& c : cases) {
    arbor::v1::SolveRequest request = ValidRequest();
    c.mutate(request);
    auto config = StrategyConfigFromRequest(request);
    ASSERT_FALSE(config.ok()) << c.name;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(config.status().message()), HasSubstr(c.field)) << c.name;
  }
}

TEST(SolveRequestTest, CertaintyTakesTheEffortsPresetsAndOverrides) {
  arbor::v1::SolveRequest request = ValidRequest();
  request.mutable_best_of_n()->set_n(4);
  auto config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(std::get<search::BestOfNConfig>(config->strategy).certainty.enabled);

  // A set message turns the probe on; unset effort is mid, Dynasor's (3, 64).
  request.mutable_best_of_n()->mutable_certainty();
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok()) << config.status();
  search::CertaintyConfig c = std::get<search::BestOfNConfig>(config->strategy).certainty;
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.window, 3);
  EXPECT_EQ(c.interval_tokens, 64);
  EXPECT_EQ(c.max_probe_tokens, 20);
  EXPECT_TRUE(c.probe_text.empty());  // the library's Dynasor phrase

  arbor::v1::SolveRequest beam = ValidRequest();
  arbor::v1::Certainty* p = beam.mutable_beam_search()->mutable_certainty();
  p->set_effort(arbor::v1::Certainty::EFFORT_CRAZY);
  p->set_window(4);
  p->set_probe_text("The answer is ");
  p->add_hedge_words("maybe");
  config = StrategyConfigFromRequest(beam);
  ASSERT_TRUE(config.ok()) << config.status();
  c = std::get<search::BeamSearchConfig>(config->strategy).certainty;
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.window, 4);            // set
  EXPECT_EQ(c.interval_tokens, 32);  // crazy's
  EXPECT_EQ(c.probe_text, "The answer is ");
  EXPECT_EQ(c.hedge_words, std::vector<std::string>{"maybe"});
}

TEST(SolveRequestTest, AutoMapsItsDefaultsAndThresholds) {
  arbor::v1::SolveRequest request = ValidRequest();
  request.mutable_auto_();
  auto config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok()) << config.status();
  const auto* a = std::get_if<search::AutoConfig>(&config->strategy);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->n, 16);
  EXPECT_EQ(a->first_round_samples, 4);
  EXPECT_FLOAT_EQ(a->easy_agreement, 0.75f);
  EXPECT_FLOAT_EQ(a->hard_score, 0.2f);
  EXPECT_EQ(a->beam_width, 4);
  EXPECT_TRUE(NeedsRewardModel(*config));
  EXPECT_EQ(search::StrategyName(*config), "auto");

  // 0 is a threshold, not "unset", when the optional field is present.
  request.mutable_auto_()->set_n(8);
  request.mutable_auto_()->set_first_round_samples(2);
  request.mutable_auto_()->set_hard_agreement(0.0f);
  request.mutable_auto_()->set_easy_score(0.9f);
  config = StrategyConfigFromRequest(request);
  ASSERT_TRUE(config.ok()) << config.status();
  a = std::get_if<search::AutoConfig>(&config->strategy);
  EXPECT_EQ(a->n, 8);
  EXPECT_EQ(a->first_round_samples, 2);
  EXPECT_FLOAT_EQ(a->hard_agreement, 0.0f);
  EXPECT_FLOAT_EQ(a->easy_score, 0.9f);
  EXPECT_FLOAT_EQ(a->easy_agreement, 0.75f);
}

TEST(SolveRequestTest, FillsProbeCountsAndAutoChoice) {
  search::Usage usage;
  usage.probes = 12;
  usage.probe_generated_tokens = 48;
  usage.certain_branches = 4;
  arbor::v1::Usage out;
  FillUsage(usage, JobAccounting{}, &out);
  EXPECT_EQ(out.probes(), 12);
  EXPECT_EQ(out.probe_generated_tokens(), 48);
  EXPECT_EQ(out.certain_branches(), 4);
  EXPECT_FALSE(out.has_auto_choice());  // not an auto job

  usage.auto_choice = {.band = "hard",
                       .strategy = "beam_search",
                       .n = 12,
                       .first_round_samples = 4,
                       .agreement = 0.25,
                       .mean_score = 0.1,
                       .difficulty = 0.825};
  FillUsage(usage, JobAccounting{}, &out);
  ASSERT_TRUE(out.has_auto_choice());
  EXPECT_EQ(out.auto_choice().band(), "hard");
  EXPECT_EQ(out.auto_choice().strategy(), "beam_search");
  EXPECT_EQ(out.auto_choice().n(), 12);
  EXPECT_EQ(out.auto_choice().first_round_samples(), 4);
  EXPECT_DOUBLE_EQ(out.auto_choice().difficulty(), 0.825);
}

TEST(SolveRequestTest, FillsResponseAndUsage) {
  search::SolveResult result;
  result.answer = "15";
  result.text = "Add 3 to get 3.\n\nThe answer is \\boxed{15}.";
  result.strategy = "beam_search";
  result.budget_exhausted = true;
  result.exhausted_by = "steps";
  result.usage.generated_tokens = 120;
  result.usage.prefill_tokens = 40;
  result.usage.prefix_cache_hit_tokens = 300;
  result.usage.reward_tokens = 90;
  result.usage.reward_calls = 3;
  result.usage.worker_calls = 4;
  result.usage.steps = 3;
  search::Candidate candidate;
  candidate.text = result.text;
  candidate.steps = {"Add 3 to get 3.\n\n", "The answer is \\boxed{15}."};
  candidate.step_scores = {0.9f, 0.8f};
  candidate.score = 0.8;
  candidate.answer = "15";
  candidate.finished = true;
  candidate.num_tokens = 40;
  result.candidates.push_back(candidate);
  JobAccounting accounting;
  accounting.retries = 2;
  accounting.wall_time = absl::Milliseconds(1234);
  accounting.worker = "10.0.0.1:1";
  arbor::v1::SolveResponse response;
  FillSolveResponse("job-1", result, accounting, &response);
  EXPECT_EQ(response.job_id(), "job-1");
  EXPECT_EQ(response.answer(), "15");
  EXPECT_EQ(response.candidates_size(), 1);
  EXPECT_EQ(response.candidates(0).steps_size(), 2);
  EXPECT_FLOAT_EQ(response.candidates(0).step_scores(1), 0.8f);
  EXPECT_TRUE(response.budget_exhausted());
  EXPECT_EQ(response.exhausted_by(), "steps");
  EXPECT_EQ(response.usage().generated_tokens(), 120);
  EXPECT_EQ(response.usage().prefix_cache_hit_tokens(), 300);
  EXPECT_EQ(response.usage().retries(), 2);
  EXPECT_EQ(response.usage().wall_time_ms(), 1234);
  EXPECT_EQ(response.usage().worker_calls(), 4);
  EXPECT_EQ(response.worker(), "10.0.0.1:1");
}

}  // namespace
}  // namespace arbor::coordinator
