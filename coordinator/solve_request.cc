#include "coordinator/solve_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "arbor/v1/reasoning.pb.h"
#include "common/utf8.h"

namespace arbor::coordinator {
namespace {

absl::Status Invalid(std::string_view field, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat(absl::string_view(field.data(), field.size()), ": ",
                   absl::string_view(problem.data(), problem.size())));
}

absl::StatusOr<search::Aggregation> MapAggregation(std::string_view field,
                                                   arbor::v1::ScoreAggregation value) {
  switch (value) {
    case arbor::v1::SCORE_AGGREGATION_UNSPECIFIED:
    case arbor::v1::SCORE_AGGREGATION_LAST:
      return search::Aggregation::kLast;
    case arbor::v1::SCORE_AGGREGATION_MIN:
      return search::Aggregation::kMin;
    case arbor::v1::SCORE_AGGREGATION_PROD:
      return search::Aggregation::kProd;
    case arbor::v1::SCORE_AGGREGATION_MEAN:
      return search::Aggregation::kMean;
    default:
      return Invalid(field,
                     absl::StrCat("unknown ScoreAggregation value ", static_cast<int>(value)));
  }
}

int32_t OrDefault(int32_t value, int32_t fallback) { return value == 0 ? fallback : value; }

absl::Status CheckName(std::string_view field, const std::string& value) {
  if (value.size() > kMaxModelNameBytes) {
    return Invalid(field,
                   absl::StrCat("has ", value.size(), " bytes; at most ", kMaxModelNameBytes));
  }
  if (!IsValidUtf8(value)) return Invalid(field, "is not valid UTF-8");
  return absl::OkStatus();
}

absl::StatusOr<search::ParticleFilterConfig> MapFilter(absl::string_view name,
                                                      const arbor::v1::ParticleFilter& p) {
  search::ParticleFilterConfig c;
  c.n = OrDefault(p.n(), c.n);
  if (p.temperature() != 0.0f) c.temperature = p.temperature();
  switch (p.resampling()) {
    case arbor::v1::ParticleFilter::RESAMPLING_UNSPECIFIED:
    case arbor::v1::ParticleFilter::RESAMPLING_MULTINOMIAL:
      c.resampling = search::ParticleFilterConfig::Resampling::kMultinomial;
      break;
    case arbor::v1::ParticleFilter::RESAMPLING_SYSTEMATIC:
      c.resampling = search::ParticleFilterConfig::Resampling::kSystematic;
      break;
    default:
      return Invalid(
          absl::StrCat(name, ".resampling"),
          absl::StrCat("unknown Resampling value ", static_cast<int>(p.resampling())));
  }
  c.ess_threshold = p.ess_threshold();
  switch (p.weight_update()) {
    case arbor::v1::ParticleFilter::WEIGHT_UPDATE_UNSPECIFIED:
    case arbor::v1::ParticleFilter::WEIGHT_UPDATE_REPLACE:
      c.weight_update = search::ParticleFilterConfig::WeightUpdate::kReplace;
      break;
    case arbor::v1::ParticleFilter::WEIGHT_UPDATE_CUMULATIVE:
      c.weight_update = search::ParticleFilterConfig::WeightUpdate::kCumulative;
      break;
    default:
      return Invalid(
          absl::StrCat(name, ".weight_update"),
          absl::StrCat("unknown WeightUpdate value ", static_cast<int>(p.weight_update())));
  }
  c.absorb_finished = p.absorb_finished();
  switch (p.final_selection()) {
    case arbor::v1::ParticleFilter::FINAL_SELECTION_UNSPECIFIED:
    case arbor::v1::ParticleFilter::FINAL_SELECTION_ARGMAX_WEIGHT:
      c.final_selection = search::ParticleFilterConfig::FinalSelection::kArgmaxWeight;
      break;
    case arbor::v1::ParticleFilter::FINAL_SELECTION_SAMPLE:
      c.final_selection = search::ParticleFilterConfig::FinalSelection::kSample;
      break;
    case arbor::v1::ParticleFilter::FINAL_SELECTION_WEIGHTED_VOTE:
      c.final_selection = search::ParticleFilterConfig::FinalSelection::kWeightedVote;
      break;
    default:
      return Invalid(
          absl::StrCat(name, ".final_selection"),
          absl::StrCat("unknown FinalSelection value ", static_cast<int>(p.final_selection())));
  }
  c.num_iterations = OrDefault(p.num_iterations(), c.num_iterations);
  c.entropic = p.entropic();
  if (p.entropic_ess_threshold() != 0.0f) c.entropic_ess_threshold = p.entropic_ess_threshold();
  // its_hub's entropic filter resamples systematically.
  if (c.entropic && p.resampling() == arbor::v1::ParticleFilter::RESAMPLING_UNSPECIFIED) {
    c.resampling = search::ParticleFilterConfig::Resampling::kSystematic;
  }
  return c;
}

// A set Certainty message turns the probe on; zeros take the effort's (or
// the library's) defaults.
absl::StatusOr<search::CertaintyConfig> MapCertainty(absl::string_view name,
                                                     const arbor::v1::Certainty& p) {
  search::CertaintyConfig c;
  c.enabled = true;
  search::CertaintyEffort effort = search::CertaintyEffort::kMid;
  switch (p.effort()) {
    case arbor::v1::Certainty::EFFORT_UNSPECIFIED:
    case arbor::v1::Certainty::EFFORT_MID:
      break;
    case arbor::v1::Certainty::EFFORT_MILD:
      effort = search::CertaintyEffort::kMild;
      break;
    case arbor::v1::Certainty::EFFORT_LOW:
      effort = search::CertaintyEffort::kLow;
      break;
    case arbor::v1::Certainty::EFFORT_HIGH:
      effort = search::CertaintyEffort::kHigh;
      break;
    case arbor::v1::Certainty::EFFORT_CRAZY:
      effort = search::CertaintyEffort::kCrazy;
      break;
    default:
      return Invalid(absl::StrCat(name, ".certainty.effort"),
                     absl::StrCat("unknown Effort value ", static_cast<int>(p.effort())));
  }
  search::ApplyCertaintyEffort(effort, c);
  c.interval_tokens = OrDefault(p.interval_tokens(), c.interval_tokens);
  c.window = OrDefault(p.window(), c.window);
  c.max_probe_tokens = OrDefault(p.max_probe_tokens(), c.max_probe_tokens);
  if (!IsValidUtf8(p.probe_text())) {
    return Invalid(absl::StrCat(name, ".certainty.probe_text"), "is not valid UTF-8");
  }
  c.probe_text = p.probe_text();
  for (int i = 0; i < p.hedge_words_size(); ++i) {
    if (!IsValidUtf8(p.hedge_words(i))) {
      return Invalid(absl::StrCat(name, ".certainty.hedge_words[", i, "]"), "is not valid UTF-8");
    }
  }
  c.hedge_words.assign(p.hedge_words().begin(), p.hedge_words().end());
  return c;
}

absl::StatusOr<search::StrategyVariant> MapStrategy(const arbor::v1::SolveRequest& request) {
  switch (request.strategy_case()) {
    case arbor::v1::SolveRequest::kGreedy: {
      search::GreedyConfig c;
      if (request.sampling().has_temperature()) c.temperature = request.sampling().temperature();
      return c;
    }
    case arbor::v1::SolveRequest::STRATEGY_NOT_SET:
    case arbor::v1::SolveRequest::kBestOfN: {
      const arbor::v1::BestOfN& p = request.best_of_n();
      search::BestOfNConfig c;
      c.n = OrDefault(p.n(), c.n);
      switch (p.selection()) {
        case arbor::v1::BestOfN::SELECTION_UNSPECIFIED:
        case arbor::v1::BestOfN::SELECTION_REWARD:
          c.selection = search::BestOfNConfig::Selection::kReward;
          break;
        case arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE:
          c.selection = search::BestOfNConfig::Selection::kMajorityVote;
          break;
        case arbor::v1::BestOfN::SELECTION_WEIGHTED_VOTE:
          c.selection = search::BestOfNConfig::Selection::kWeightedVote;
          break;
        case arbor::v1::BestOfN::SELECTION_BEST_OF_MAJORITY:
          c.selection = search::BestOfNConfig::Selection::kBestOfMajority;
          break;
        case arbor::v1::BestOfN::SELECTION_TOURNAMENT:
          c.selection = search::BestOfNConfig::Selection::kTournament;
          break;
        default:
          return Invalid("best_of_n.selection",
                         absl::StrCat("unknown Selection value ", static_cast<int>(p.selection())));
      }
      auto aggregation = MapAggregation("best_of_n.aggregation", p.aggregation());
      if (!aggregation.ok()) return aggregation.status();
      c.aggregation = *aggregation;
      if (p.min_vote_fraction() != 0.0f) c.min_vote_fraction = p.min_vote_fraction();
      c.round_size = p.round_size();
      if (p.stop_agreement() != 0.0f) c.stop_agreement = p.stop_agreement();
      if (p.has_certainty()) {
        auto certainty = MapCertainty("best_of_n", p.certainty());
        if (!certainty.ok()) return certainty.status();
        c.certainty = *std::move(certainty);
      }
      return c;
    }
    case arbor::v1::SolveRequest::kBeamSearch: {
      const arbor::v1::BeamSearch& p = request.beam_search();
      search::BeamSearchConfig c;
      c.n = OrDefault(p.n(), c.n);
      c.beam_width = OrDefault(p.beam_width(), c.beam_width);
      c.num_iterations = OrDefault(p.num_iterations(), c.num_iterations);
      c.lookahead = p.lookahead();
      auto aggregation = MapAggregation("beam_search.aggregation", p.aggregation());
      if (!aggregation.ok()) return aggregation.status();
      c.aggregation = *aggregation;
      if (p.has_certainty()) {
        auto certainty = MapCertainty("beam_search", p.certainty());
        if (!certainty.ok()) return certainty.status();
        c.certainty = *std::move(certainty);
      }
      return c;
    }
    case arbor::v1::SolveRequest::kDvts: {
      const arbor::v1::Dvts& p = request.dvts();
      search::DvtsConfig c;
      c.n = OrDefault(p.n(), c.n);
      c.beam_width = OrDefault(p.beam_width(), c.beam_width);
      c.num_iterations = OrDefault(p.num_iterations(), c.num_iterations);
      auto aggregation = MapAggregation("dvts.aggregation", p.aggregation());
      if (!aggregation.ok()) return aggregation.status();
      c.aggregation = *aggregation;
      return c;
    }
    case arbor::v1::SolveRequest::kParticleFilter:
      return MapFilter("particle_filter", request.particle_filter());
    case arbor::v1::SolveRequest::kParticleGibbs: {
      const arbor::v1::ParticleGibbs& p = request.particle_gibbs();
      search::ParticleGibbsConfig c;
      auto filter = MapFilter("particle_gibbs.filter", p.filter());
      if (!filter.ok()) return filter.status();
      c.filter = *filter;
      c.num_sweeps = OrDefault(p.num_sweeps(), c.num_sweeps);
      if (p.has_num_ref_particles()) c.num_ref_particles = p.num_ref_particles();
      return c;
    }
    case arbor::v1::SolveRequest::kMcts: {
      const arbor::v1::Mcts& p = request.mcts();
      search::MctsConfig c;
      c.num_simulations = OrDefault(p.num_simulations(), c.num_simulations);
      c.max_width = OrDefault(p.max_width(), c.max_width);
      c.max_depth = OrDefault(p.max_depth(), c.max_depth);
      if (p.pb_c_base() != 0.0) c.pb_c_base = p.pb_c_base();
      if (p.pb_c_init() != 0.0) c.pb_c_init = p.pb_c_init();
      c.rollouts = p.rollouts();
      c.sampled_rollouts = !p.greedy_rollouts();
      auto aggregation = MapAggregation("mcts.aggregation", p.aggregation());
      if (!aggregation.ok()) return aggregation.status();
      c.aggregation = *aggregation;
      switch (p.final_selection()) {
        case arbor::v1::Mcts::FINAL_SELECTION_UNSPECIFIED:
        case arbor::v1::Mcts::FINAL_SELECTION_WEIGHTED_VOTE:
          c.final_selection = search::MctsConfig::FinalSelection::kWeightedVote;
          break;
        case arbor::v1::Mcts::FINAL_SELECTION_ARGMAX:
          c.final_selection = search::MctsConfig::FinalSelection::kArgmaxScore;
          break;
        default:
          return Invalid("mcts.final_selection",
                         absl::StrCat("unknown FinalSelection value ",
                                      static_cast<int>(p.final_selection())));
      }
      return c;
    }
    case arbor::v1::SolveRequest::kAuto: {
      const arbor::v1::Auto& p = request.auto_();
      search::AutoConfig c;
      c.n = OrDefault(p.n(), c.n);
      c.first_round_samples = OrDefault(p.first_round_samples(), c.first_round_samples);
      if (p.has_easy_agreement()) c.easy_agreement = p.easy_agreement();
      if (p.has_easy_score()) c.easy_score = p.easy_score();
      if (p.has_hard_agreement()) c.hard_agreement = p.hard_agreement();
      if (p.has_hard_score()) c.hard_score = p.hard_score();
      c.beam_width = OrDefault(p.beam_width(), c.beam_width);
      return c;
    }
  }
  return Invalid("strategy", "unknown strategy");
}

}  // namespace

absl::StatusOr<search::StrategyConfig> StrategyConfigFromRequest(
    const arbor::v1::SolveRequest& request) {
  const std::string& job_id = request.job_id();
  if (job_id.size() > kMaxJobIdBytes) {
    return Invalid("job_id",
                   absl::StrCat("has ", job_id.size(), " bytes; at most ", kMaxJobIdBytes));
  }
  for (char c : job_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return Invalid("job_id", "may contain only [A-Za-z0-9._:-]");
  }
  if (request.question().empty()) return Invalid("question", "must not be empty");
  if (request.question().size() > kMaxQuestionBytes) {
    return Invalid("question", absl::StrCat("has ", request.question().size(), " bytes; at most ",
                                            kMaxQuestionBytes));
  }
  if (!IsValidUtf8(request.question())) return Invalid("question", "is not valid UTF-8");
  if (absl::Status s = CheckName("model", request.model()); !s.ok()) return s;
  if (absl::Status s = CheckName("reward_model", request.reward_model()); !s.ok()) return s;
  const std::string& tmpl = request.chat_template();
  if (!tmpl.empty() && tmpl != "model" && tmpl != "chatml" && tmpl != "llama3" && tmpl != "raw") {
    return Invalid("chat_template",
                   absl::StrCat("unknown template '", IsValidUtf8(tmpl) ? tmpl : "<binary>",
                                "'; use model (the model's own), chatml, llama3, raw or empty for "
                                "the model's default"));
  }

  search::StrategyConfig config;
  auto strategy = MapStrategy(request);
  if (!strategy.ok()) return strategy.status();
  config.strategy = *std::move(strategy);

  const arbor::v1::SamplingParams& sampling = request.sampling();
  if (sampling.has_temperature()) config.sampling.temperature = sampling.temperature();
  if (sampling.has_top_p()) config.sampling.top_p = sampling.top_p();
  config.sampling.top_k = sampling.top_k();

  const arbor::v1::StopRules& stop = request.stop();
  if (stop.no_step_delimiter()) {
    if (stop.step_delimiters_size() > 0) {
      return Invalid("stop.step_delimiters", "must be empty when no_step_delimiter is set");
    }
    config.stop.step_delimiters.clear();
  } else if (stop.step_delimiters_size() > 0) {
    config.stop.step_delimiters.assign(stop.step_delimiters().begin(),
                                       stop.step_delimiters().end());
    for (int i = 0; i < stop.step_delimiters_size(); ++i) {
      if (!IsValidUtf8(stop.step_delimiters(i))) {
        return Invalid(absl::StrCat("stop.step_delimiters[", i, "]"), "is not valid UTF-8");
      }
    }
  }
  config.stop.max_step_tokens = OrDefault(stop.max_step_tokens(), config.stop.max_step_tokens);
  config.stop.ignore_eos = stop.ignore_eos();

  const arbor::v1::Budget& budget = request.budget();
  config.budget.max_generated_tokens = budget.max_generated_tokens();
  config.budget.max_reward_tokens = budget.max_reward_tokens();
  config.budget.max_reward_calls = budget.max_reward_calls();
  config.budget.max_steps = budget.max_steps();
  config.budget.deadline = absl::Milliseconds(budget.deadline_ms());
  if (budget.has_reserve_fraction()) config.budget.reserve_fraction = budget.reserve_fraction();
  config.budget.finish_branches = OrDefault(budget.finish_branches(), config.budget.finish_branches);

  config.answer_extraction.pattern = request.answer_extraction().pattern();
  if (!IsValidUtf8(config.answer_extraction.pattern)) {
    return Invalid("answer_extraction.pattern", "is not valid UTF-8");
  }
  config.max_candidates = OrDefault(request.max_candidates(), config.max_candidates);
  config.max_solution_tokens =
      OrDefault(request.max_solution_tokens(), config.max_solution_tokens);

  if (absl::Status s = search::ValidateStrategyConfig(config); !s.ok()) return s;
  return config;
}

bool NeedsPairwiseJudge(const search::StrategyConfig& config) {
  const auto* bon = std::get_if<search::BestOfNConfig>(&config.strategy);
  return bon != nullptr && bon->selection == search::BestOfNConfig::Selection::kTournament;
}

bool NeedsRewardModel(const search::StrategyConfig& config) {
  if (std::holds_alternative<search::GreedyConfig>(config.strategy)) return false;
  if (const auto* bon = std::get_if<search::BestOfNConfig>(&config.strategy)) {
    return bon->selection != search::BestOfNConfig::Selection::kMajorityVote;
  }
  return true;
}

JobTimeBreakdown BreakDownJobTime(const search::Usage& usage, absl::Duration wall_time) {
  // Clocks of different processes and rounding may leave a few microseconds
  // negative: clamp at zero.
  auto us = [](int64_t v) { return absl::Microseconds(std::max<int64_t>(v, 0)); };
  JobTimeBreakdown b;
  b.worker_queue = us(usage.worker_queue_us);
  b.worker_compute = us(usage.worker_compute_us);
  b.verifier_queue = us(usage.verifier_queue_us);
  b.verifier_compute = us(usage.verifier_compute_us);
  b.network = us(usage.worker_call_us - usage.worker_queue_us - usage.worker_compute_us) +
              us(usage.verifier_call_us - usage.verifier_queue_us - usage.verifier_compute_us);
  b.coordinator =
      us(absl::ToInt64Microseconds(wall_time) - usage.worker_call_us - usage.verifier_call_us);
  return b;
}

void FillUsage(const search::Usage& usage, const JobAccounting& accounting, arbor::v1::Usage* out) {
  out->set_generated_tokens(usage.generated_tokens);
  out->set_prefill_tokens(usage.prefill_tokens);
  out->set_prefix_cache_hit_tokens(usage.prefix_cache_hit_tokens);
  out->set_reward_tokens(usage.reward_tokens);
  out->set_reward_calls(usage.reward_calls);
  out->set_worker_calls(usage.worker_calls);
  out->set_retries(accounting.retries);
  out->set_wall_time_ms(absl::ToInt64Milliseconds(accounting.wall_time));
  out->set_steps(usage.steps);
  out->set_reward_cache_hit_tokens(usage.reward_cache_hit_tokens);
  const JobTimeBreakdown time = BreakDownJobTime(usage, accounting.wall_time);
  out->set_worker_queue_us(absl::ToInt64Microseconds(time.worker_queue));
  out->set_worker_compute_us(absl::ToInt64Microseconds(time.worker_compute));
  out->set_verifier_queue_us(absl::ToInt64Microseconds(time.verifier_queue));
  out->set_verifier_compute_us(absl::ToInt64Microseconds(time.verifier_compute));
  out->set_network_us(absl::ToInt64Microseconds(time.network));
  out->set_coordinator_us(absl::ToInt64Microseconds(time.coordinator));
  out->set_reserve_generated_tokens(usage.reserve_generated_tokens);
  out->set_reserve_finished_branches(usage.reserve_finished_branches);
  out->set_shaped_steps(usage.shaped_steps);
  out->set_probes(usage.probes);
  out->set_probe_generated_tokens(usage.probe_generated_tokens);
  out->set_certain_branches(usage.certain_branches);
  out->set_compare_calls(usage.compare_calls);
  out->set_compared_pairs(usage.compared_pairs);
  out->set_tournament_rounds(usage.tournament_rounds);
  out->set_tournament_fallback(usage.tournament_fallback);
  if (!usage.auto_choice.band.empty()) {
    const search::AutoChoice& a = usage.auto_choice;
    arbor::v1::AutoChoice* choice = out->mutable_auto_choice();
    choice->set_band(a.band);
    choice->set_strategy(a.strategy);
    choice->set_n(a.n);
    choice->set_first_round_samples(a.first_round_samples);
    choice->set_agreement(a.agreement);
    choice->set_mean_score(a.mean_score);
    choice->set_difficulty(a.difficulty);
  }
}

void FillSolveResponse(const std::string& job_id, const search::SolveResult& result,
                       const JobAccounting& accounting, arbor::v1::SolveResponse* out) {
  out->set_job_id(job_id);
  out->set_answer(result.answer);
  out->set_text(result.text);
  for (const search::Candidate& c : result.candidates) {
    arbor::v1::Candidate* candidate = out->add_candidates();
    candidate->set_text(c.text);
    for (const std::string& s : c.steps) candidate->add_steps(s);
    candidate->mutable_step_scores()->Add(c.step_scores.begin(), c.step_scores.end());
    candidate->set_score(c.score);
    candidate->set_answer(c.answer);
    candidate->set_votes(c.votes);
    candidate->set_logprob(c.logprob);
    candidate->set_finished(c.finished);
    candidate->set_num_tokens(c.num_tokens);
  }
  FillUsage(result.usage, accounting, out->mutable_usage());
  out->set_budget_exhausted(result.budget_exhausted);
  out->set_exhausted_by(result.exhausted_by);
  out->set_strategy(result.strategy);
  out->set_stop_reason(result.stop_reason);
  out->set_worker(accounting.worker);
  out->set_verifier(accounting.verifier);
}

void FillStep(const search::IterationProgress& progress, const JobAccounting& accounting,
              arbor::v1::SolveEvent_Step* out) {
  out->set_iteration(progress.iteration);
  out->set_live_branches(progress.live);
  out->set_finished_branches(progress.finished);
  out->set_best_score(progress.best_score);
  out->set_best_text(progress.best_text);
  out->mutable_branch_scores()->Add(progress.branch_scores.begin(), progress.branch_scores.end());
  FillUsage(progress.usage, accounting, out->mutable_usage());
}

}  // namespace arbor::coordinator
