#include "coordinator/openai/request.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/utf8.h"
#include "coordinator/solve_request.h"
#include "google/protobuf/descriptor.h"
#include "nlohmann/json.hpp"

namespace arbor::coordinator::openai {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

std::string Join(absl::string_view path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "a value of another type";
  }
}

absl::Status WrongType(absl::string_view field, const json& v, absl::string_view expected) {
  return Bad(field, absl::StrCat("must be ", expected, ", not ", TypeName(v)));
}

// A JSON object of the body: typed getters that name the field in every
// error, and a check that no key outside the allowed ones is present. An
// explicit null reads as absent (the OpenAI SDKs send some unset fields so).
class Object {
 public:
  Object(const json& value, std::string path) : value_(value), path_(std::move(path)) {}

  static absl::StatusOr<Object> Of(const json& value, std::string path) {
    if (!value.is_object()) return WrongType(path, value, "an object");
    return Object(value, std::move(path));
  }

  std::string Path(absl::string_view key) const { return Join(path_, key); }
  bool Has(absl::string_view key) const { return Find(key) != nullptr; }

  const json* Find(absl::string_view key) const {
    auto it = value_.find(std::string(key));
    if (it == value_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  absl::Status AllowOnly(std::initializer_list<std::set<absl::string_view>> allowed) const {
    for (auto it = value_.begin(); it != value_.end(); ++it) {
      bool known = false;
      for (const auto& set : allowed) known = known || set.count(it.key()) > 0;
      if (!known) return Bad(Path(it.key()), "unknown field");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<int64_t>> Int(absl::string_view key, int64_t lo, int64_t hi) const {
    const json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    int64_t value = 0;
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Bad(Path(key), absl::StrCat("must be in [", lo, ", ", hi, "]"));
      }
      value = static_cast<int64_t>(u);
    } else if (v->is_number_integer()) {
      value = v->get<int64_t>();
    } else if (v->is_number_float() && std::trunc(v->get<double>()) == v->get<double>() &&
               std::abs(v->get<double>()) < 9e15) {
      value = static_cast<int64_t>(v->get<double>());  // 16.0 is 16
    } else {
      return WrongType(Path(key), *v, "an integer");
    }
    if (value < lo || value > hi) {
      return Bad(Path(key), absl::StrCat("(", value, ") must be in [", lo, ", ", hi, "]"));
    }
    return value;
  }

  absl::StatusOr<std::optional<double>> Number(absl::string_view key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) return WrongType(Path(key), *v, "a number");
    return v->get<double>();
  }

  absl::StatusOr<std::optional<bool>> Bool(absl::string_view key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return WrongType(Path(key), *v, "a boolean");
    return v->get<bool>();
  }

  absl::StatusOr<std::optional<std::string>> String(absl::string_view key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return WrongType(Path(key), *v, "a string");
    return v->get<std::string>();
  }

  absl::StatusOr<std::optional<Object>> Child(absl::string_view key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    ARBOR_ASSIGN_OR_RETURN(Object child, Of(*v, Path(key)));
    return child;
  }

  // OpenAI features Arbor does not implement: accepted only at their
  // "off" value (false, 0, empty), so that SDK defaults pass and a request
  // that relies on one is refused instead of silently answered without it.
  absl::Status OnlyOff(absl::string_view key, absl::string_view why) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    const bool off = (v->is_boolean() && !v->get<bool>()) ||
                     (v->is_number() && v->get<double>() == 0.0) ||
                     ((v->is_array() || v->is_object() || v->is_string()) && v->empty());
    if (!off) return Bad(Path(key), why);
    return absl::OkStatus();
  }

  const json& value() const { return value_; }

 private:
  const json& value_;
  std::string path_;
};

// An enum given by its short lowercase name ("majority_vote") or its proto
// name ("SELECTION_MAJORITY_VOTE").
absl::StatusOr<std::optional<int>> Enum(const Object& object, absl::string_view key,
                                        const google::protobuf::EnumDescriptor* type,
                                        absl::string_view prefix) {
  ARBOR_ASSIGN_OR_RETURN(std::optional<std::string> name, object.String(key));
  if (!name) return std::nullopt;
  const google::protobuf::EnumValueDescriptor* value = type->FindValueByName(*name);
  if (value == nullptr) {
    value = type->FindValueByName(absl::StrCat(prefix, absl::AsciiStrToUpper(*name)));
  }
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) {
    if (type->value(i)->number() == 0) continue;
    names.push_back(absl::AsciiStrToLower(type->value(i)->name().substr(prefix.size())));
  }
  if (value == nullptr || value->number() == 0) {
    return Bad(object.Path(key),
               absl::StrCat("unknown value '", IsValidUtf8(*name) ? *name : "<binary>",
                            "'; use one of ", absl::StrJoin(names, ", ")));
  }
  return value->number();
}

// The strategies' own parameters, by the SolveRequest's field names.
// clang-format off
const std::set<absl::string_view> kStrategyParams = {
    "n", "selection", "aggregation", "min_vote_fraction", "beam_width", "lookahead",
    "num_iterations", "temperature", "resampling", "ess_threshold", "weight_update",
    "absorb_finished", "final_selection", "round_size", "stop_agreement", "entropic",
    "entropic_ess_threshold", "num_sweeps", "num_ref_particles", "num_simulations", "max_width",
    "max_depth", "pb_c_base", "pb_c_init", "rollouts", "greedy_rollouts", "certainty",
    "first_round_samples", "easy_agreement", "easy_score", "hard_agreement", "hard_score"};
// clang-format on

std::set<absl::string_view> ParamsOf(absl::string_view strategy) {
  if (strategy == "best_of_n") {
    return {"n",          "selection",      "aggregation", "min_vote_fraction",
            "round_size", "stop_agreement", "certainty"};
  }
  if (strategy == "beam_search") {
    return {"n", "beam_width", "num_iterations", "lookahead", "aggregation", "certainty"};
  }
  if (strategy == "auto") {
    return {"n",          "first_round_samples", "easy_agreement", "easy_score", "hard_agreement",
            "hard_score", "beam_width"};
  }
  if (strategy == "dvts") return {"n", "beam_width", "num_iterations", "aggregation"};
  if (strategy == "particle_filter" || strategy == "particle_gibbs") {
    std::set<absl::string_view> params = {
        "n",        "temperature", "resampling",      "ess_threshold",
        "weight_update", "absorb_finished", "final_selection", "num_iterations",
        "entropic", "entropic_ess_threshold"};
    if (strategy == "particle_gibbs") params.insert({"num_sweeps", "num_ref_particles"});
    return params;
  }
  if (strategy == "mcts") {
    return {"num_simulations", "max_width", "max_depth",       "pb_c_base",
            "pb_c_init",       "rollouts",  "greedy_rollouts", "final_selection",
            "aggregation"};
  }
  return {};
}

absl::Status ParseStop(const Object& stop, arbor::v1::StopRules* out) {
  ARBOR_RETURN_IF_ERROR(
      stop.AllowOnly({{"step_delimiters", "no_step_delimiter", "max_step_tokens", "ignore_eos"}}));
  if (const json* delimiters = stop.Find("step_delimiters")) {
    const std::string path = stop.Path("step_delimiters");
    if (delimiters->is_string()) {
      out->add_step_delimiters(delimiters->get<std::string>());
    } else if (delimiters->is_array()) {
      for (size_t i = 0; i < delimiters->size(); ++i) {
        const json& d = (*delimiters)[i];
        if (!d.is_string()) return WrongType(absl::StrCat(path, "[", i, "]"), d, "a string");
        out->add_step_delimiters(d.get<std::string>());
      }
    } else {
      return WrongType(path, *delimiters, "a string or an array of strings");
    }
  }
  ARBOR_ASSIGN_OR_RETURN(auto no_delimiter, stop.Bool("no_step_delimiter"));
  if (no_delimiter) out->set_no_step_delimiter(*no_delimiter);
  ARBOR_ASSIGN_OR_RETURN(auto max_step_tokens, stop.Int("max_step_tokens", 1, 32768));
  if (max_step_tokens) out->set_max_step_tokens(static_cast<int32_t>(*max_step_tokens));
  ARBOR_ASSIGN_OR_RETURN(auto ignore_eos, stop.Bool("ignore_eos"));
  if (ignore_eos) out->set_ignore_eos(*ignore_eos);
  return absl::OkStatus();
}

absl::Status ParseBudget(const Object& budget, arbor::v1::Budget* out) {
  ARBOR_RETURN_IF_ERROR(budget.AllowOnly({{"max_generated_tokens", "max_reward_tokens",
                                           "max_reward_calls", "max_steps", "deadline_ms",
                                           "reserve_fraction", "finish_branches"}}));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  ARBOR_ASSIGN_OR_RETURN(auto generated, budget.Int("max_generated_tokens", 0, kMax));
  if (generated) out->set_max_generated_tokens(*generated);
  ARBOR_ASSIGN_OR_RETURN(auto reward_tokens, budget.Int("max_reward_tokens", 0, kMax));
  if (reward_tokens) out->set_max_reward_tokens(*reward_tokens);
  ARBOR_ASSIGN_OR_RETURN(auto reward_calls, budget.Int("max_reward_calls", 0, kMax));
  if (reward_calls) out->set_max_reward_calls(*reward_calls);
  ARBOR_ASSIGN_OR_RETURN(auto steps, budget.Int("max_steps", 0, std::numeric_limits<int32_t>::max()));
  if (steps) out->set_max_steps(static_cast<int32_t>(*steps));
  ARBOR_ASSIGN_OR_RETURN(auto deadline, budget.Int("deadline_ms", 0, kMax));
  if (deadline) out->set_deadline_ms(*deadline);
  ARBOR_ASSIGN_OR_RETURN(auto reserve, budget.Number("reserve_fraction"));
  if (reserve) out->set_reserve_fraction(static_cast<float>(*reserve));
  ARBOR_ASSIGN_OR_RETURN(auto finish, budget.Int("finish_branches", 1, 64));
  if (finish) out->set_finish_branches(static_cast<int32_t>(*finish));
  return absl::OkStatus();
}

// arbor.certainty: true (the default probe), an effort name ("high"), or an
// object of arbor.v1.Certainty's fields. Ranges are the coordinator's.
// `strategy` is the BestOfN or BeamSearch message: a set certainty turns the
// probe on.
template <typename Strategy>
absl::Status ParseCertainty(const Object& a, Strategy* strategy) {
  const json* value = a.Find("certainty");
  if (value == nullptr) return absl::OkStatus();
  const std::string path = a.Path("certainty");
  if (value->is_boolean()) {
    if (value->get<bool>()) strategy->mutable_certainty();
    return absl::OkStatus();
  }
  arbor::v1::Certainty* out = strategy->mutable_certainty();
  json object = *value;
  if (value->is_string()) object = json{{"effort", *value}};
  ARBOR_ASSIGN_OR_RETURN(Object c, Object::Of(object, path));
  ARBOR_RETURN_IF_ERROR(c.AllowOnly(
      {{"effort", "interval_tokens", "window", "probe_text", "max_probe_tokens", "hedge_words"}}));
  ARBOR_ASSIGN_OR_RETURN(auto effort,
                         Enum(c, "effort", arbor::v1::Certainty::Effort_descriptor(), "EFFORT_"));
  out->set_effort(static_cast<arbor::v1::Certainty::Effort>(effort.value_or(0)));
  ARBOR_ASSIGN_OR_RETURN(auto interval, c.Int("interval_tokens", 1, 32768));
  if (interval) out->set_interval_tokens(static_cast<int32_t>(*interval));
  ARBOR_ASSIGN_OR_RETURN(auto window, c.Int("window", 1, 64));
  if (window) out->set_window(static_cast<int32_t>(*window));
  ARBOR_ASSIGN_OR_RETURN(auto probe_tokens, c.Int("max_probe_tokens", 1, 256));
  if (probe_tokens) out->set_max_probe_tokens(static_cast<int32_t>(*probe_tokens));
  ARBOR_ASSIGN_OR_RETURN(auto text, c.String("probe_text"));
  if (text) out->set_probe_text(*text);
  if (const json* words = c.Find("hedge_words")) {
    if (!words->is_array()) return WrongType(c.Path("hedge_words"), *words, "an array of strings");
    for (size_t i = 0; i < words->size(); ++i) {
      const json& w = (*words)[i];
      if (!w.is_string()) {
        return WrongType(absl::StrCat(c.Path("hedge_words"), "[", i, "]"), w, "a string");
      }
      out->add_hedge_words(w.get<std::string>());
    }
  }
  return absl::OkStatus();
}

// The strategy oneof from the strategy name and the `arbor` object's
// parameters (checked to belong to that strategy); `default_n` is the N of
// best-of-N when arbor.n is absent (best_of, else n).
absl::Status ParseStrategy(const std::string& strategy, const std::optional<Object>& arbor,
                           int64_t default_n, ParsedRequest* out) {
  arbor::v1::SolveRequest& solve = out->solve;
  const std::set<absl::string_view> allowed = ParamsOf(strategy);
  if (arbor) {
    for (absl::string_view param : kStrategyParams) {
      if (arbor->Has(param) && allowed.count(param) == 0) {
        return Bad(arbor->Path(param),
                   absl::StrCat("is not a parameter of strategy ", strategy,
                                arbor->Has("strategy") ? "" : " (arbor.strategy picks another)"));
      }
    }
  }
  static const json* const kEmptyJson = new json(json::object());
  static const Object kEmpty(*kEmptyJson, "arbor");
  const Object& a = arbor ? *arbor : kEmpty;
  ARBOR_ASSIGN_OR_RETURN(auto n, a.Int("n", 1, 4096));
  ARBOR_ASSIGN_OR_RETURN(auto beam_width, a.Int("beam_width", 1, 4096));
  ARBOR_ASSIGN_OR_RETURN(auto iterations, a.Int("num_iterations", 1, 512));
  ARBOR_ASSIGN_OR_RETURN(auto lookahead, a.Int("lookahead", 0, 8));
  ARBOR_ASSIGN_OR_RETURN(auto aggregation,
                         Enum(a, "aggregation", arbor::v1::ScoreAggregation_descriptor(),
                              "SCORE_AGGREGATION_"));
  const auto agg = static_cast<arbor::v1::ScoreAggregation>(aggregation.value_or(0));
  const std::string prefix = absl::StrCat(strategy, ".");
  out->field_names.emplace_back(prefix, "arbor.");

  if (strategy == "greedy") {
    solve.mutable_greedy();
  } else if (strategy == "best_of_n") {
    arbor::v1::BestOfN* p = solve.mutable_best_of_n();
    p->set_n(static_cast<int32_t>(n.value_or(default_n)));
    ARBOR_ASSIGN_OR_RETURN(auto selection, Enum(a, "selection",
                                                arbor::v1::BestOfN::Selection_descriptor(),
                                                "SELECTION_"));
    p->set_selection(static_cast<arbor::v1::BestOfN::Selection>(selection.value_or(0)));
    p->set_aggregation(agg);
    ARBOR_ASSIGN_OR_RETURN(auto fraction, a.Number("min_vote_fraction"));
    if (fraction) p->set_min_vote_fraction(static_cast<float>(*fraction));
    ARBOR_ASSIGN_OR_RETURN(auto round_size, a.Int("round_size", 0, 4096));
    if (round_size) p->set_round_size(static_cast<int32_t>(*round_size));
    ARBOR_ASSIGN_OR_RETURN(auto agreement, a.Number("stop_agreement"));
    if (agreement) p->set_stop_agreement(static_cast<float>(*agreement));
    ARBOR_RETURN_IF_ERROR(ParseCertainty(a, p));
  } else if (strategy == "beam_search") {
    arbor::v1::BeamSearch* p = solve.mutable_beam_search();
    p->set_n(static_cast<int32_t>(n.value_or(0)));
    p->set_beam_width(static_cast<int32_t>(beam_width.value_or(0)));
    p->set_num_iterations(static_cast<int32_t>(iterations.value_or(0)));
    p->set_lookahead(static_cast<int32_t>(lookahead.value_or(0)));
    p->set_aggregation(agg);
    ARBOR_RETURN_IF_ERROR(ParseCertainty(a, p));
  } else if (strategy == "auto") {
    arbor::v1::Auto* p = solve.mutable_auto_();
    p->set_n(static_cast<int32_t>(n.value_or(0)));
    p->set_beam_width(static_cast<int32_t>(beam_width.value_or(0)));
    ARBOR_ASSIGN_OR_RETURN(auto first, a.Int("first_round_samples", 1, 4096));
    if (first) p->set_first_round_samples(static_cast<int32_t>(*first));
    ARBOR_ASSIGN_OR_RETURN(auto easy_agreement, a.Number("easy_agreement"));
    if (easy_agreement) p->set_easy_agreement(static_cast<float>(*easy_agreement));
    ARBOR_ASSIGN_OR_RETURN(auto easy_score, a.Number("easy_score"));
    if (easy_score) p->set_easy_score(static_cast<float>(*easy_score));
    ARBOR_ASSIGN_OR_RETURN(auto hard_agreement, a.Number("hard_agreement"));
    if (hard_agreement) p->set_hard_agreement(static_cast<float>(*hard_agreement));
    ARBOR_ASSIGN_OR_RETURN(auto hard_score, a.Number("hard_score"));
    if (hard_score) p->set_hard_score(static_cast<float>(*hard_score));
  } else if (strategy == "dvts") {
    arbor::v1::Dvts* p = solve.mutable_dvts();
    p->set_n(static_cast<int32_t>(n.value_or(0)));
    p->set_beam_width(static_cast<int32_t>(beam_width.value_or(0)));
    p->set_num_iterations(static_cast<int32_t>(iterations.value_or(0)));
    p->set_aggregation(agg);
  } else if (strategy == "particle_filter" || strategy == "particle_gibbs") {
    arbor::v1::ParticleFilter* p = strategy == "particle_filter"
                                       ? solve.mutable_particle_filter()
                                       : solve.mutable_particle_gibbs()->mutable_filter();
    p->set_n(static_cast<int32_t>(n.value_or(0)));
    ARBOR_ASSIGN_OR_RETURN(auto temperature, a.Number("temperature"));
    if (temperature) {
      if (*temperature == 0.0) return Bad(a.Path("temperature"), "(0) must be in (0, 100]");
      p->set_temperature(static_cast<float>(*temperature));
    }
    ARBOR_ASSIGN_OR_RETURN(auto resampling,
                           Enum(a, "resampling", arbor::v1::ParticleFilter::Resampling_descriptor(),
                                "RESAMPLING_"));
    p->set_resampling(static_cast<arbor::v1::ParticleFilter::Resampling>(resampling.value_or(0)));
    ARBOR_ASSIGN_OR_RETURN(auto ess, a.Number("ess_threshold"));
    if (ess) p->set_ess_threshold(static_cast<float>(*ess));
    ARBOR_ASSIGN_OR_RETURN(
        auto update, Enum(a, "weight_update", arbor::v1::ParticleFilter::WeightUpdate_descriptor(),
                          "WEIGHT_UPDATE_"));
    p->set_weight_update(static_cast<arbor::v1::ParticleFilter::WeightUpdate>(update.value_or(0)));
    ARBOR_ASSIGN_OR_RETURN(auto absorb, a.Bool("absorb_finished"));
    if (absorb) p->set_absorb_finished(*absorb);
    ARBOR_ASSIGN_OR_RETURN(
        auto final_selection,
        Enum(a, "final_selection", arbor::v1::ParticleFilter::FinalSelection_descriptor(),
             "FINAL_SELECTION_"));
    p->set_final_selection(
        static_cast<arbor::v1::ParticleFilter::FinalSelection>(final_selection.value_or(0)));
    p->set_num_iterations(static_cast<int32_t>(iterations.value_or(0)));
    ARBOR_ASSIGN_OR_RETURN(auto entropic, a.Bool("entropic"));
    if (entropic) p->set_entropic(*entropic);
    ARBOR_ASSIGN_OR_RETURN(auto entropic_ess, a.Number("entropic_ess_threshold"));
    if (entropic_ess) p->set_entropic_ess_threshold(static_cast<float>(*entropic_ess));
    if (strategy == "particle_gibbs") {
      arbor::v1::ParticleGibbs* g = solve.mutable_particle_gibbs();
      ARBOR_ASSIGN_OR_RETURN(auto sweeps, a.Int("num_sweeps", 1, 64));
      if (sweeps) g->set_num_sweeps(static_cast<int32_t>(*sweeps));
      ARBOR_ASSIGN_OR_RETURN(auto refs, a.Int("num_ref_particles", 0, 1023));
      if (refs) g->set_num_ref_particles(static_cast<int32_t>(*refs));
      // The filter's fields are flat in the arbor object.
      out->field_names.emplace_back("particle_gibbs.filter.", "arbor.");
    }
  } else if (strategy == "mcts") {
    arbor::v1::Mcts* p = solve.mutable_mcts();
    ARBOR_ASSIGN_OR_RETURN(auto simulations, a.Int("num_simulations", 1, 4096));
    if (simulations) p->set_num_simulations(static_cast<int32_t>(*simulations));
    ARBOR_ASSIGN_OR_RETURN(auto width, a.Int("max_width", 1, 64));
    if (width) p->set_max_width(static_cast<int32_t>(*width));
    ARBOR_ASSIGN_OR_RETURN(auto depth, a.Int("max_depth", 1, 512));
    if (depth) p->set_max_depth(static_cast<int32_t>(*depth));
    ARBOR_ASSIGN_OR_RETURN(auto base, a.Number("pb_c_base"));
    if (base) p->set_pb_c_base(*base);
    ARBOR_ASSIGN_OR_RETURN(auto init, a.Number("pb_c_init"));
    if (init) p->set_pb_c_init(*init);
    ARBOR_ASSIGN_OR_RETURN(auto rollouts, a.Bool("rollouts"));
    if (rollouts) p->set_rollouts(*rollouts);
    ARBOR_ASSIGN_OR_RETURN(auto greedy_rollouts, a.Bool("greedy_rollouts"));
    if (greedy_rollouts) p->set_greedy_rollouts(*greedy_rollouts);
    ARBOR_ASSIGN_OR_RETURN(
        auto final_selection,
        Enum(a, "final_selection", arbor::v1::Mcts::FinalSelection_descriptor(),
             "FINAL_SELECTION_"));
    p->set_final_selection(
        static_cast<arbor::v1::Mcts::FinalSelection>(final_selection.value_or(0)));
    p->set_aggregation(agg);
  } else {
    return Bad("arbor.strategy",
               absl::StrCat("unknown strategy '", IsValidUtf8(strategy) ? strategy : "<binary>",
                            "'; use greedy, best_of_n, beam_search, dvts, particle_filter, "
                            "particle_gibbs, mcts or auto"));
  }
  return absl::OkStatus();
}

// The question of a chat request: one user message. A SolveRequest carries
// one question, rendered with the model's chat template; other turns would
// have nowhere to go, so they are refused rather than dropped.
absl::StatusOr<std::string> QuestionOfMessages(const Object& body) {
  const json* messages = body.Find("messages");
  if (messages == nullptr) return Bad("messages", "is required");
  if (!messages->is_array()) return WrongType("messages", *messages, "an array");
  if (messages->empty()) return Bad("messages", "must hold one user message");
  if (messages->size() > 1) {
    return Bad("messages", absl::StrCat("has ", messages->size(),
                                        " messages; Arbor solves one question per job: send one "
                                        "user message"));
  }
  ARBOR_ASSIGN_OR_RETURN(Object message, Object::Of((*messages)[0], "messages[0]"));
  ARBOR_RETURN_IF_ERROR(message.AllowOnly({{"role", "content", "name"}}));
  ARBOR_ASSIGN_OR_RETURN(auto role, message.String("role"));
  if (!role) return Bad("messages[0].role", "is required");
  if (*role != "user") {
    return Bad("messages[0].role",
               absl::StrCat("must be 'user', not '", IsValidUtf8(*role) ? *role : "<binary>",
                            "'; the question is the one user message"));
  }
  ARBOR_ASSIGN_OR_RETURN(auto name, message.String("name"));
  (void)name;  // type-checked only: one user message needs no name
  const json* content = message.Find("content");
  if (content == nullptr) return Bad("messages[0].content", "is required");
  if (content->is_string()) return content->get<std::string>();
  if (!content->is_array()) {
    return WrongType("messages[0].content", *content, "a string or an array of text parts");
  }
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const std::string path = absl::StrCat("messages[0].content[", i, "]");
    ARBOR_ASSIGN_OR_RETURN(Object part, Object::Of((*content)[i], path));
    ARBOR_RETURN_IF_ERROR(part.AllowOnly({{"type", "text"}}));
    ARBOR_ASSIGN_OR_RETURN(auto type, part.String("type"));
    if (!type || *type != "text") return Bad(Join(path, "type"), "only 'text' parts are supported");
    ARBOR_ASSIGN_OR_RETURN(auto part_text, part.String("text"));
    if (!part_text) return Bad(Join(path, "text"), "is required");
    if (!text.empty()) text += "\n";
    text += *part_text;
  }
  return text;
}

absl::StatusOr<std::string> QuestionOfPrompt(const Object& body) {
  const json* prompt = body.Find("prompt");
  if (prompt == nullptr) return Bad("prompt", "is required");
  if (prompt->is_string()) return prompt->get<std::string>();
  if (prompt->is_array()) {
    if (prompt->size() == 1 && (*prompt)[0].is_string()) return (*prompt)[0].get<std::string>();
    if (!prompt->empty() && !(*prompt)[0].is_string()) {
      return Bad("prompt", "token-id prompts are not supported; send the text");
    }
    return Bad("prompt", "must be one string; Arbor solves one question per job");
  }
  return WrongType("prompt", *prompt, "a string");
}

absl::StatusOr<ParsedRequest> Parse(absl::string_view text, ApiKind kind) {
  json parsed = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return Bad("body", "is not valid JSON");
  if (!parsed.is_object()) return WrongType("body", parsed, "a JSON object");
  const Object body(parsed, "");  // top-level fields go by their own names
  const bool chat = kind == ApiKind::kChatCompletion;
  ParsedRequest out;
  out.kind = kind;
  arbor::v1::SolveRequest& solve = out.solve;
  // Unsupported OpenAI features: refused unless off (Object::OnlyOff).
  const std::set<absl::string_view> off_only =
      chat ? std::set<absl::string_view>{"presence_penalty", "frequency_penalty", "logit_bias",
                                        "logprobs", "top_logprobs", "tools", "tool_choice",
                                        "functions", "function_call", "parallel_tool_calls",
                                        "stop", "store", "modalities", "audio", "prediction"}
           : std::set<absl::string_view>{"presence_penalty", "frequency_penalty", "logit_bias",
                                        "logprobs", "stop", "echo", "suffix"};
  const std::set<absl::string_view> common = {
      "model", "stream", "stream_options", "n", "best_of", "max_tokens", "temperature",
      "top_p",  "top_k",  "seed",           "user", "arbor"};
  const std::set<absl::string_view> own =
      chat ? std::set<absl::string_view>{"messages", "max_completion_tokens", "metadata",
                                        "response_format"}
           : std::set<absl::string_view>{"prompt"};
  ARBOR_RETURN_IF_ERROR(body.AllowOnly({common, own, off_only}));
  for (absl::string_view key : off_only) {
    const std::string why =
        key == "stop" ? "is not supported: a solution ends at EOS or its token cap; steps end at "
                        "arbor.stop.step_delimiters"
                      : "is not supported by Arbor";
    ARBOR_RETURN_IF_ERROR(body.OnlyOff(key, why));
  }
  if (chat) {
    if (const json* format = body.Find("response_format")) {
      if (!format->is_object() || format->value("type", json()) != "text" || format->size() != 1) {
        return Bad("response_format", "only {\"type\": \"text\"} is supported");
      }
    }
    if (const json* metadata = body.Find("metadata"); metadata && !metadata->is_object()) {
      return WrongType("metadata", *metadata, "an object");
    }
  }
  ARBOR_ASSIGN_OR_RETURN(auto user, body.String("user"));
  (void)user;  // type-checked only (OpenAI's end-user id)

  const std::string question_field = chat ? "messages" : "prompt";
  ARBOR_ASSIGN_OR_RETURN(std::string question,
                         chat ? QuestionOfMessages(body) : QuestionOfPrompt(body));
  solve.set_question(std::move(question));
  ARBOR_ASSIGN_OR_RETURN(auto model, body.String("model"));
  if (model) solve.set_model(*model);

  ARBOR_ASSIGN_OR_RETURN(auto stream, body.Bool("stream"));
  out.stream = stream.value_or(false);
  ARBOR_ASSIGN_OR_RETURN(auto stream_options, body.Child("stream_options"));
  if (stream_options) {
    if (!out.stream) return Bad("stream_options", "is only allowed with stream: true");
    ARBOR_RETURN_IF_ERROR(stream_options->AllowOnly({{"include_usage"}}));
    ARBOR_ASSIGN_OR_RETURN(auto include_usage, stream_options->Bool("include_usage"));
    out.include_usage = include_usage.value_or(false);
  }

  ARBOR_ASSIGN_OR_RETURN(auto n, body.Int("n", 1, kMaxChoices));
  ARBOR_ASSIGN_OR_RETURN(auto best_of, body.Int("best_of", 1, 4096));
  out.choices = static_cast<int>(n.value_or(1));
  if (best_of && *best_of < out.choices) {
    return Bad("best_of", absl::StrCat("(", *best_of, ") must be >= n (", out.choices, ")"));
  }

  // max_tokens is one solution's cap, as in search-and-learn; the whole
  // search's is arbor.budget.max_generated_tokens.
  ARBOR_ASSIGN_OR_RETURN(auto max_tokens, body.Int("max_tokens", 1, 1 << 20));
  std::string max_tokens_field = "max_tokens";
  if (chat) {
    ARBOR_ASSIGN_OR_RETURN(auto max_completion, body.Int("max_completion_tokens", 1, 1 << 20));
    if (max_completion) {
      if (max_tokens && *max_tokens != *max_completion) {
        return Bad("max_completion_tokens", "conflicts with max_tokens; set one");
      }
      max_tokens = max_completion;
      max_tokens_field = "max_completion_tokens";
    }
  }
  if (max_tokens) {
    solve.set_max_solution_tokens(static_cast<int32_t>(*max_tokens));
    // Nor may one step run past it (arbor.stop.max_step_tokens, if given, wins).
    solve.mutable_stop()->set_max_step_tokens(
        static_cast<int32_t>(std::min<int64_t>(*max_tokens, 256)));
  }

  ARBOR_ASSIGN_OR_RETURN(auto temperature, body.Number("temperature"));
  if (temperature) solve.mutable_sampling()->set_temperature(static_cast<float>(*temperature));
  ARBOR_ASSIGN_OR_RETURN(auto top_p, body.Number("top_p"));
  if (top_p) solve.mutable_sampling()->set_top_p(static_cast<float>(*top_p));
  // top_k as vLLM takes it: -1 (or 0) disables.
  ARBOR_ASSIGN_OR_RETURN(auto top_k, body.Int("top_k", -1, std::numeric_limits<int32_t>::max()));
  if (top_k) solve.mutable_sampling()->set_top_k(static_cast<int32_t>(std::max<int64_t>(*top_k, 0)));
  ARBOR_ASSIGN_OR_RETURN(auto seed, body.Int("seed", 0, std::numeric_limits<int64_t>::max()));
  if (seed) solve.set_seed(static_cast<uint64_t>(*seed));

  ARBOR_ASSIGN_OR_RETURN(auto arbor, body.Child("arbor"));
  std::string strategy;
  if (arbor) {
    const std::set<absl::string_view> arbor_fields = {
        "strategy", "job_id", "reward_model", "chat_template", "stop", "budget",
        "answer_extraction", "timeout_ms"};
    ARBOR_RETURN_IF_ERROR(arbor->AllowOnly({arbor_fields, kStrategyParams}));
    ARBOR_ASSIGN_OR_RETURN(auto name, arbor->String("strategy"));
    if (name) strategy = *name;
    ARBOR_ASSIGN_OR_RETURN(auto job_id, arbor->String("job_id"));
    if (job_id) solve.set_job_id(*job_id);
    ARBOR_ASSIGN_OR_RETURN(auto reward_model, arbor->String("reward_model"));
    if (reward_model) solve.set_reward_model(*reward_model);
    ARBOR_ASSIGN_OR_RETURN(auto chat_template, arbor->String("chat_template"));
    if (chat_template) solve.set_chat_template(*chat_template);
    ARBOR_ASSIGN_OR_RETURN(auto stop, arbor->Child("stop"));
    if (stop) ARBOR_RETURN_IF_ERROR(ParseStop(*stop, solve.mutable_stop()));
    ARBOR_ASSIGN_OR_RETURN(auto budget, arbor->Child("budget"));
    if (budget) ARBOR_RETURN_IF_ERROR(ParseBudget(*budget, solve.mutable_budget()));
    ARBOR_ASSIGN_OR_RETURN(auto extraction, arbor->Child("answer_extraction"));
    if (extraction) {
      ARBOR_RETURN_IF_ERROR(extraction->AllowOnly({{"pattern"}}));
      ARBOR_ASSIGN_OR_RETURN(auto pattern, extraction->String("pattern"));
      if (pattern) solve.mutable_answer_extraction()->set_pattern(*pattern);
    }
    ARBOR_ASSIGN_OR_RETURN(auto timeout, arbor->Int("timeout_ms", 1, int64_t{1} << 40));
    if (timeout) out.timeout = absl::Milliseconds(*timeout);
  }
  // A completion continues the prompt as it is; a chat turn takes the
  // model's template.
  if (!chat && solve.chat_template().empty()) solve.set_chat_template("raw");

  // Without arbor.strategy: best-of-N when more than one sample is asked
  // for (n, best_of or best-of-N's own fields), else greedy.
  if (strategy.empty()) {
    const bool best_of_n = out.choices > 1 || best_of.value_or(1) > 1 ||
                           (arbor && (arbor->Has("n") || arbor->Has("selection") ||
                                      arbor->Has("min_vote_fraction") || arbor->Has("aggregation")));
    strategy = best_of_n ? "best_of_n" : "greedy";
  }
  if (best_of && strategy != "best_of_n") {
    return Bad("best_of", absl::StrCat("applies to best-of-N only; strategy ", strategy,
                                       " takes arbor.n"));
  }
  if (strategy == "greedy" && out.choices > 1) {
    return Bad("n", "greedy answers with one choice; ask for best_of_n or another strategy");
  }
  const int64_t default_n = best_of.value_or(out.choices);
  ARBOR_RETURN_IF_ERROR(ParseStrategy(strategy, arbor, default_n, &out));
  if (strategy == "best_of_n") {
    const int32_t samples = solve.best_of_n().n();
    if (samples < out.choices) {
      return Bad(arbor && arbor->Has("n") ? "arbor.n" : "n",
                 absl::StrCat("asks for ", out.choices, " choices of ", samples, " samples"));
    }
    out.field_names.emplace_back("best_of_n.n",
                                 arbor && arbor->Has("n") ? "arbor.n" : (best_of ? "best_of" : "n"));
  }
  solve.set_max_candidates(out.choices);

  out.field_names.emplace_back("question", question_field);
  out.field_names.emplace_back("model", "model");
  out.field_names.emplace_back("reward_model", "arbor.reward_model");
  out.field_names.emplace_back("job_id", "arbor.job_id");
  out.field_names.emplace_back("chat_template", "arbor.chat_template");
  out.field_names.emplace_back("sampling.temperature", "temperature");
  out.field_names.emplace_back("sampling.top_p", "top_p");
  out.field_names.emplace_back("sampling.top_k", "top_k");
  out.field_names.emplace_back("stop.", "arbor.stop.");
  out.field_names.emplace_back("budget.", "arbor.budget.");
  out.field_names.emplace_back("answer_extraction.", "arbor.answer_extraction.");
  out.field_names.emplace_back("max_candidates", "n");
  out.field_names.emplace_back("max_solution_tokens", max_tokens_field);
  // The longest match wins: "best_of_n.n" before "best_of_n.".
  std::stable_sort(out.field_names.begin(), out.field_names.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });

  // The coordinator's own checks, now, so that a bad request never queues.
  if (auto config = StrategyConfigFromRequest(solve); !config.ok()) {
    return HttpFieldNames(config.status(), out);
  }
  return out;
}

}  // namespace

absl::StatusOr<ParsedRequest> ParseChatCompletionRequest(absl::string_view body) {
  return Parse(body, ApiKind::kChatCompletion);
}

absl::StatusOr<ParsedRequest> ParseCompletionRequest(absl::string_view body) {
  return Parse(body, ApiKind::kCompletion);
}

std::string FieldOfMessage(absl::string_view message) {
  size_t end = 0;
  while (end < message.size() &&
         (absl::ascii_isalnum(static_cast<unsigned char>(message[end])) || message[end] == '_' ||
          message[end] == '.' || message[end] == '[' || message[end] == ']')) {
    ++end;
  }
  // A field is followed by ":", " (", " has " or " must ", or is a path
  // ("answer_extraction.pattern does not compile"); a plain word before
  // anything else is prose ("no healthy workers").
  if (end == 0 || end == message.size()) return "";
  const absl::string_view rest = message.substr(end);
  const absl::string_view token = message.substr(0, end);
  const bool path = token.find_first_of("._[") != absl::string_view::npos;
  if (!absl::StartsWith(rest, ":") && !absl::StartsWith(rest, " (") &&
      !absl::StartsWith(rest, " has ") && !absl::StartsWith(rest, " must ") &&
      !(path && absl::StartsWith(rest, " "))) {
    return "";
  }
  return std::string(message.substr(0, end));
}

absl::Status HttpFieldNames(const absl::Status& status, const ParsedRequest& request) {
  if (status.ok()) return status;
  const absl::string_view message = status.message();
  const std::string field = FieldOfMessage(message);
  if (field.empty()) return status;
  for (const auto& [proto, http] : request.field_names) {
    const bool prefix = !proto.empty() && proto.back() == '.';
    const bool match =
        prefix ? absl::StartsWith(field, proto)
               : (field == proto || absl::StartsWith(field, proto + "[") ||
                  absl::StartsWith(field, proto + "."));
    if (!match) continue;
    return absl::Status(status.code(), absl::StrCat(http, field.substr(proto.size()),
                                                    message.substr(field.size())));
  }
  return status;
}

}  // namespace arbor::coordinator::openai
