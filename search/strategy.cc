#include "search/strategy.h"

#include <cmath>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "search/answer.h"
#include "search/search_run.h"

namespace arbor::search {
namespace {

absl::Status OutOfRange(absl::string_view field, double value, absl::string_view range) {
  return absl::InvalidArgumentError(absl::StrCat(field, " (", value, ") must be in ", range));
}

absl::Status CheckInt(absl::string_view field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " (", value, ") must be in [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckDivisible(absl::string_view strategy, int32_t n, int32_t beam_width) {
  if (beam_width < 1 || beam_width > n) {
    return absl::InvalidArgumentError(
        absl::StrCat(strategy, ".beam_width (", beam_width, ") must be in [1, n = ", n, "]"));
  }
  if (n % beam_width != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(strategy, ".n (", n, ") must be divisible by beam_width (", beam_width, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCertainty(absl::string_view name, const CertaintyConfig& c) {
  if (!c.enabled) return absl::OkStatus();
  const std::string f = absl::StrCat(name, ".certainty");
  ARBOR_RETURN_IF_ERROR(CheckInt(f + ".interval_tokens", c.interval_tokens, 1, 32768));
  ARBOR_RETURN_IF_ERROR(CheckInt(f + ".window", c.window, 1, 64));
  ARBOR_RETURN_IF_ERROR(CheckInt(f + ".max_probe_tokens", c.max_probe_tokens, 1, 256));
  if (c.probe_text.size() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ".probe_text has ", c.probe_text.size(), " bytes; at most 1024"));
  }
  if (c.hedge_words.size() > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat(f, ".hedge_words has ", c.hedge_words.size(), " words; at most 32"));
  }
  for (size_t i = 0; i < c.hedge_words.size(); ++i) {
    if (c.hedge_words[i].empty() || c.hedge_words[i].size() > 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, ".hedge_words[", i, "] has ", c.hedge_words[i].size(), " bytes; must be 1 to 64"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStrategy(const GreedyConfig& c) {
  if (!(c.temperature >= 0.0f && c.temperature <= 10.0f)) {
    return OutOfRange("sampling.temperature", c.temperature, "[0, 10]");
  }
  return absl::OkStatus();
}

absl::Status ValidateStrategy(const BestOfNConfig& c) {
  ARBOR_RETURN_IF_ERROR(CheckInt("best_of_n.n", c.n, 1, 4096));
  if (c.selection == BestOfNConfig::Selection::kBestOfMajority &&
      !(c.min_vote_fraction > 0.0f && c.min_vote_fraction <= 1.0f)) {
    return OutOfRange("best_of_n.min_vote_fraction", c.min_vote_fraction, "(0, 1]");
  }
  ARBOR_RETURN_IF_ERROR(CheckInt("best_of_n.round_size", c.round_size, 0, c.n));
  if (c.round_size > 0 && !(c.stop_agreement > 0.0f && c.stop_agreement <= 1.0f)) {
    return OutOfRange("best_of_n.stop_agreement", c.stop_agreement, "(0, 1]");
  }
  return ValidateCertainty("best_of_n", c.certainty);
}

absl::Status ValidateStrategy(const BeamSearchConfig& c) {
  ARBOR_RETURN_IF_ERROR(CheckInt("beam_search.n", c.n, 1, 1024));
  ARBOR_RETURN_IF_ERROR(CheckDivisible("beam_search", c.n, c.beam_width));
  ARBOR_RETURN_IF_ERROR(CheckInt("beam_search.num_iterations", c.num_iterations, 1, 512));
  ARBOR_RETURN_IF_ERROR(CheckInt("beam_search.lookahead", c.lookahead, 0, 8));
  return ValidateCertainty("beam_search", c.certainty);
}

absl::Status ValidateStrategy(const DvtsConfig& c) {
  ARBOR_RETURN_IF_ERROR(CheckInt("dvts.n", c.n, 1, 1024));
  ARBOR_RETURN_IF_ERROR(CheckDivisible("dvts", c.n, c.beam_width));
  return CheckInt("dvts.num_iterations", c.num_iterations, 1, 512);
}

absl::Status ValidateFilter(absl::string_view name, const ParticleFilterConfig& c) {
  const std::string f(name);
  ARBOR_RETURN_IF_ERROR(CheckInt(f + ".n", c.n, 1, 1024));
  if (!(c.temperature > 0.0f && c.temperature <= 100.0f)) {
    return OutOfRange(f + ".temperature", c.temperature, "(0, 100]");
  }
  if (!(c.ess_threshold >= 0.0f && c.ess_threshold <= 1.0f)) {
    return OutOfRange(f + ".ess_threshold", c.ess_threshold, "[0, 1]");
  }
  if (c.entropic && !(c.entropic_ess_threshold > 0.0f && c.entropic_ess_threshold <= 1.0f)) {
    return OutOfRange(f + ".entropic_ess_threshold", c.entropic_ess_threshold, "(0, 1]");
  }
  return CheckInt(f + ".num_iterations", c.num_iterations, 1, 512);
}

absl::Status ValidateStrategy(const ParticleFilterConfig& c) {
  return ValidateFilter("particle_filter", c);
}

absl::Status ValidateStrategy(const ParticleGibbsConfig& c) {
  ARBOR_RETURN_IF_ERROR(ValidateFilter("particle_gibbs.filter", c.filter));
  ARBOR_RETURN_IF_ERROR(CheckInt("particle_gibbs.num_sweeps", c.num_sweeps, 1, 64));
  return CheckInt("particle_gibbs.num_ref_particles", c.num_ref_particles, 0, c.filter.n - 1);
}

absl::Status ValidateStrategy(const MctsConfig& c) {
  ARBOR_RETURN_IF_ERROR(CheckInt("mcts.num_simulations", c.num_simulations, 1, 4096));
  ARBOR_RETURN_IF_ERROR(CheckInt("mcts.max_width", c.max_width, 1, 64));
  ARBOR_RETURN_IF_ERROR(CheckInt("mcts.max_depth", c.max_depth, 1, 512));
  if (!(c.pb_c_base > 0.0 && std::isfinite(c.pb_c_base))) {
    return OutOfRange("mcts.pb_c_base", c.pb_c_base, "(0, inf)");
  }
  if (!(c.pb_c_init >= 0.0 && std::isfinite(c.pb_c_init))) {
    return OutOfRange("mcts.pb_c_init", c.pb_c_init, "[0, inf)");
  }
  if (!(c.widen_c >= 0.0 && std::isfinite(c.widen_c))) {
    return OutOfRange("mcts.widen_c", c.widen_c, "[0, inf)");
  }
  if (!(c.widen_alpha >= 0.0 && c.widen_alpha <= 1.0)) {
    return OutOfRange("mcts.widen_alpha", c.widen_alpha, "[0, 1]");
  }
  ARBOR_RETURN_IF_ERROR(CheckInt("mcts.widen_max_rounds", c.widen_max_rounds, 1, 64));
  return absl::OkStatus();
}

absl::Status ValidateStrategy(const AutoConfig& c) {
  ARBOR_RETURN_IF_ERROR(CheckInt("auto.n", c.n, 2, 1024));
  ARBOR_RETURN_IF_ERROR(CheckInt("auto.first_round_samples", c.first_round_samples, 2, c.n - 1));
  ARBOR_RETURN_IF_ERROR(CheckInt("auto.beam_width", c.beam_width, 1, 64));
  const std::pair<const char*, float> fractions[] = {{"auto.easy_agreement", c.easy_agreement},
                                                     {"auto.easy_score", c.easy_score},
                                                     {"auto.hard_agreement", c.hard_agreement},
                                                     {"auto.hard_score", c.hard_score}};
  for (const auto& [field, value] : fractions) {
    if (!(value >= 0.0f && value <= 1.0f)) return OutOfRange(field, value, "[0, 1]");
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& DynasorHedgeWords() {
  static const auto* words =
      new std::vector<std::string>{"wait", "hold", "but", "okay", "no", "hmm"};
  return *words;
}

void ApplyCertaintyEffort(CertaintyEffort effort, CertaintyConfig& config) {
  // Dynasor's dynasor_saving_effort presets, (window, interval), in the
  // enum's order: kMild, kLow, kMid, kHigh, kCrazy.
  struct Preset {
    int window, interval_tokens;
  };
  static constexpr Preset kPresets[] = {{8, 64}, {5, 64}, {3, 64}, {2, 64}, {2, 32}};
  const Preset& preset = kPresets[static_cast<int>(effort)];
  config.window = preset.window;
  config.interval_tokens = preset.interval_tokens;
}

bool StrategyNeedsScorer(const StrategyConfig& config) {
  if (std::holds_alternative<GreedyConfig>(config.strategy)) return false;
  if (const auto* bon = std::get_if<BestOfNConfig>(&config.strategy)) {
    return bon->selection != BestOfNConfig::Selection::kMajorityVote;
  }
  return true;
}

std::string_view StrategyName(const StrategyConfig& config) {
  switch (config.strategy.index()) {
    case 0:
      return "greedy";
    case 1:
      return "best_of_n";
    case 2:
      return "beam_search";
    case 3:
      return "dvts";
    case 4:
      return "particle_filter";
    case 5:
      return "mcts";
    case 6:
      return "particle_gibbs";
    case 7:
      return "auto";
  }
  return "unknown";
}

absl::Status ValidateStrategyConfig(const StrategyConfig& config) {
  ARBOR_RETURN_IF_ERROR(
      std::visit([](const auto& c) { return ValidateStrategy(c); }, config.strategy));
  const SamplingOptions& s = config.sampling;
  if (!(s.temperature >= 0.0f && s.temperature <= 10.0f)) {
    return OutOfRange("sampling.temperature", s.temperature, "[0, 10]");
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) return OutOfRange("sampling.top_p", s.top_p, "(0, 1]");
  if (s.top_k < 0) return OutOfRange("sampling.top_k", s.top_k, "[0, vocab]");
  const StopOptions& stop = config.stop;
  ARBOR_RETURN_IF_ERROR(CheckInt("stop.max_step_tokens", stop.max_step_tokens, 1, 32768));
  if (stop.step_delimiters.size() > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "stop.step_delimiters has ", stop.step_delimiters.size(), " strings; at most 8"));
  }
  for (size_t i = 0; i < stop.step_delimiters.size(); ++i) {
    const std::string& d = stop.step_delimiters[i];
    if (d.empty() || d.size() > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop.step_delimiters[", i, "] has ", d.size(), " bytes; must be 1 to 64"));
    }
  }
  ARBOR_RETURN_IF_ERROR(ValidateBudgetLimits(config.budget));
  ARBOR_RETURN_IF_ERROR(CheckInt("max_solution_tokens", config.max_solution_tokens, 1, 1 << 20));
  ARBOR_RETURN_IF_ERROR(CheckInt("max_candidates", config.max_candidates, 1, 1024));
  auto extractor = AnswerExtractor::Create(config.answer_extraction.pattern);
  if (!extractor.ok()) return extractor.status();
  return absl::OkStatus();
}

absl::StatusOr<SolveResult> RunStrategy(const StrategyConfig& config, const JobContext& job,
                                        Generator& generator, Scorer* scorer) {
  ARBOR_RETURN_IF_ERROR(ValidateStrategyConfig(config));
  if (scorer == nullptr && StrategyNeedsScorer(config)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reward_model: strategy ", std::string(StrategyName(config)), " needs a reward model"));
  }
  if (const auto* bon = std::get_if<BestOfNConfig>(&config.strategy);
      bon != nullptr && bon->selection == BestOfNConfig::Selection::kTournament &&
      scorer->pairwise_judge() == nullptr) {
    return absl::FailedPreconditionError(
        "best_of_n.selection: tournament needs a reward model that compares solutions "
        "pairwise (an LLM judge), and this one only scores");
  }
  internal::SearchRun run(config, job, generator, scorer);
  ARBOR_RETURN_IF_ERROR(run.Start());
  return std::visit(
      [&](const auto& c) -> absl::StatusOr<SolveResult> {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, GreedyConfig>) {
          SamplingOptions sampling = config.sampling;
          sampling.temperature = c.temperature;
          return internal::RunSampling(run, 1, sampling, nullptr);
        } else if constexpr (std::is_same_v<T, BestOfNConfig>) {
          return internal::RunSampling(run, c.n, config.sampling, &c);
        } else if constexpr (std::is_same_v<T, BeamSearchConfig>) {
          return internal::RunBeamSearch(run, c);
        } else if constexpr (std::is_same_v<T, DvtsConfig>) {
          return internal::RunDvts(run, c);
        } else if constexpr (std::is_same_v<T, MctsConfig>) {
          return internal::RunMcts(run, c);
        } else if constexpr (std::is_same_v<T, ParticleGibbsConfig>) {
          return internal::RunParticleGibbs(run, c);
        } else if constexpr (std::is_same_v<T, AutoConfig>) {
          return internal::RunAuto(run, c);
        } else {
          return internal::RunParticleFilter(run, c);
        }
      },
      config.strategy);
}

}  // namespace arbor::search
