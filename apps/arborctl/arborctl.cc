// arborctl: the command-line client of an Arbor deployment.
//   arborctl solve [flags] "question"   run a job (streamed; live progress on stderr)
//   arborctl health [--service=NAME]    grpc.health.v1 status of --target
//   arborctl info                       Generator.Info / Verifier.Info of --target
// Exit codes: 0 success, 1 the RPC failed (or NOT_SERVING), 2 bad usage.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "arbor/v1/generator.grpc.pb.h"
#include "arbor/v1/reasoning.grpc.pb.h"
#include "arbor/v1/verifier.grpc.pb.h"
#include "common/utf8.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "rpc/auth.h"
#include "rpc/status_util.h"
#include "rpc/tls.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Server address host:port");
ABSL_FLAG(int, timeout_ms, 0, "gRPC deadline of the call in ms (0: none for solve, 10 s else)");
ABSL_FLAG(bool, json, false, "Print the result as JSON (for scripts)");
ABSL_FLAG(bool, stream, true, "solve: use SolveStream and show live progress on stderr");
ABSL_FLAG(std::string, strategy, "best_of_n",
          "greedy, best_of_n, beam_search, dvts, particle_filter, particle_gibbs, mcts or auto");
ABSL_FLAG(int, n, 0, "Samples / beams / leaves / particles (0: the strategy's default)");
ABSL_FLAG(int, beam_width, 0, "beam_search/dvts/auto: beam width M (0: default 4)");
ABSL_FLAG(int, first_round, 0, "auto: first-round samples that estimate the difficulty (0: 4)");
ABSL_FLAG(std::string, certainty, "",
          "best_of_n/beam_search: certainty probe effort, mild, low, mid, high or crazy "
          "(empty: no probe)");
ABSL_FLAG(int, probe_interval, 0, "Certainty probe: tokens between probes K (0: the effort's)");
ABSL_FLAG(int, probe_window, 0, "Certainty probe: agreeing probes k (0: the effort's)");
ABSL_FLAG(std::string, probe_text, "", "Certainty probe phrase (empty: Dynasor's \\boxed{ phrase)");
ABSL_FLAG(int, probe_max_tokens, 0, "Certainty probe: tokens per probe (0: 20)");
ABSL_FLAG(int, iterations, 0,
          "beam_search/dvts/particle_filter/particle_gibbs: max iterations (0: 40); "
          "mcts: simulations (0: 16)");
ABSL_FLAG(int, lookahead, 0, "beam_search: lookahead steps");
ABSL_FLAG(std::string, selection, "reward",
          "best_of_n: reward, majority_vote, weighted_vote, best_of_majority or tournament "
          "(pairwise knockout judged by an llm_judge verifier)");
ABSL_FLAG(int, round_size, 0,
          "best_of_n: adaptive, samples per round until the answers agree (0: all n at once)");
ABSL_FLAG(double, stop_agreement, 0, "best_of_n: adaptive stop when P(leader beats runner-up) reaches this (0: 0.65)");
ABSL_FLAG(bool, entropic, false,
          "particle_filter/particle_gibbs: entropic resampling (temperature raised while ESS is low)");
ABSL_FLAG(int, sweeps, 0, "particle_gibbs: sweeps (0: 4)");
ABSL_FLAG(int, ref_particles, -1, "particle_gibbs: reference particles (-1: default 1)");
ABSL_FLAG(int, max_width, 0, "mcts: children per expansion (0: 10)");
ABSL_FLAG(int, max_depth, 0, "mcts: tree depth in steps (0: 10)");
ABSL_FLAG(double, pb_c_base, 0, "mcts: PUCT base (0: 19652)");
ABSL_FLAG(double, pb_c_init, 0, "mcts: PUCT init (0: 1.25)");
ABSL_FLAG(bool, rollouts, false,
          "mcts: evaluate new nodes by a rollout to EOS (sampled at the job's temperature)");
ABSL_FLAG(bool, greedy_rollouts, false, "mcts: greedy rollouts in place of sampled ones");
ABSL_FLAG(std::string, mcts_selection, "",
          "mcts: final pick, weighted_vote or argmax (empty: weighted_vote)");
ABSL_FLAG(double, reserve_fraction, -1,
          "Budget: share kept to finish the best branches when a cap is near (-1: 0.2)");
ABSL_FLAG(int, finish_branches, 0, "Budget: branches the reserve finishes (0: 4)");
ABSL_FLAG(std::string, aggregation, "last", "Step score aggregation: last, min, prod, mean");
ABSL_FLAG(std::string, model, "", "Policy model (empty: the default)");
ABSL_FLAG(std::string, reward_model, "", "Reward model (empty: the default)");
ABSL_FLAG(std::string, chat_template, "", "model, chatml, llama3, raw (empty: the model's default)");
ABSL_FLAG(std::string, job_id, "", "Job id (empty: the coordinator picks one)");
ABSL_FLAG(double, temperature, -1, "Sampling temperature (-1: the strategy's default)");
ABSL_FLAG(double, top_p, -1, "Nucleus mass (-1: default 1.0)");
ABSL_FLAG(int, top_k, 0, "Top-k (0: off)");
ABSL_FLAG(int, max_step_tokens, 0, "Cap on tokens per step (0: 256)");
ABSL_FLAG(int64_t, max_tokens, 0, "Budget: generated tokens (0: no cap)");
ABSL_FLAG(int64_t, max_reward_tokens, 0, "Budget: reward-model tokens (0: no cap)");
ABSL_FLAG(int64_t, max_reward_calls, 0, "Budget: reward-model calls (0: no cap)");
ABSL_FLAG(int, max_steps, 0, "Budget: strategy iterations (0: no cap)");
ABSL_FLAG(int64_t, deadline_ms, 0, "Budget: wall-clock ms (0: none)");
ABSL_FLAG(uint64_t, seed, 0, "Job seed");
ABSL_FLAG(int, max_candidates, 0, "Candidates returned (0: 8)");
ABSL_FLAG(std::string, service, "", "health: service name (empty: the server overall)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that verifies the server: connect over TLS; empty: plaintext (unless "
          "--tls_cert is given, then the system roots)");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate, for servers requiring mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name the server's certificate is checked against instead of --target's host");
ABSL_FLAG(std::string, token_file, "",
          "File holding the bearer token the coordinator requires (--auth_token_file there)");

namespace {

int Usage() {
  std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
  return 2;
}

// Exits with 2 when a TLS or token file cannot be used: bad usage, not a
// failed call.
std::shared_ptr<grpc::Channel> Connect() {
  arbor::rpc::TlsClientFiles tls;
  tls.ca = absl::GetFlag(FLAGS_tls_ca);
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  auto credentials = arbor::rpc::MakeChannelCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "arborctl: %s\n", credentials.status().ToString().c_str());
    std::exit(2);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  arbor::rpc::ApplyTlsChannelArgs(tls, args);
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), *credentials, args);
}

// The "authorization" value of --token_file; "" without one.
const std::string& Authorization() {
  static const std::string* value = [] {
    const std::string path = absl::GetFlag(FLAGS_token_file);
    if (path.empty()) return new std::string();
    auto token = arbor::rpc::ReadBearerToken(path);
    if (!token.ok()) {
      std::fprintf(stderr, "arborctl: %s\n", token.status().ToString().c_str());
      std::exit(2);
    }
    return new std::string(*token);
  }();
  return *value;
}

// Every call's deadline and credentials.
void SetDeadline(grpc::ClientContext& context, int default_ms) {
  if (!Authorization().empty()) context.AddMetadata("authorization", Authorization());
  const int ms = absl::GetFlag(FLAGS_timeout_ms) > 0 ? absl::GetFlag(FLAGS_timeout_ms) : default_ms;
  if (ms > 0) context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(ms)));
}

int Fail(const grpc::Status& status) {
  std::fprintf(stderr, "arborctl: %s: %s\n",
               std::string(arbor::rpc::GrpcCodeName(status.error_code())).c_str(),
               status.error_message().c_str());
  return 1;
}

// proto3 JSON writes 64-bit integers as strings (for JavaScript's doubles);
// a script reading counters wants numbers, which nlohmann keeps exact.
void Int64sAsNumbers(const google::protobuf::Descriptor* type, nlohmann::json& object) {
  using Field = google::protobuf::FieldDescriptor;
  if (!object.is_object()) return;
  for (auto& [key, value] : object.items()) {
    const Field* field = type->FindFieldByName(key);
    if (field == nullptr || field->is_map()) continue;
    auto convert = [&](nlohmann::json& v) {
      if (field->cpp_type() == Field::CPPTYPE_MESSAGE) {
        Int64sAsNumbers(field->message_type(), v);
      } else if (v.is_string() && field->cpp_type() == Field::CPPTYPE_INT64) {
        v = std::stoll(v.get<std::string>());
      } else if (v.is_string() && field->cpp_type() == Field::CPPTYPE_UINT64) {
        v = std::stoull(v.get<std::string>());
      }
    };
    if (value.is_array()) {
      for (nlohmann::json& element : value) convert(element);
    } else {
      convert(value);
    }
  }
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  nlohmann::json json = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return out;
  Int64sAsNumbers(message.GetDescriptor(), json);
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool ParseAggregation(const std::string& name, arbor::v1::ScoreAggregation* out) {
  if (name == "last")
    *out = arbor::v1::SCORE_AGGREGATION_LAST;
  else if (name == "min")
    *out = arbor::v1::SCORE_AGGREGATION_MIN;
  else if (name == "prod")
    *out = arbor::v1::SCORE_AGGREGATION_PROD;
  else if (name == "mean")
    *out = arbor::v1::SCORE_AGGREGATION_MEAN;
  else
    return false;
  return true;
}

// --certainty and the --probe_* flags; false (after a message) on a bad effort.
bool BuildCertainty(const std::string& strategy, arbor::v1::SolveRequest* request) {
  const std::string effort = absl::GetFlag(FLAGS_certainty);
  if (effort.empty()) return true;
  arbor::v1::Certainty* c = nullptr;
  if (strategy == "best_of_n") {
    c = request->mutable_best_of_n()->mutable_certainty();
  } else if (strategy == "beam_search") {
    c = request->mutable_beam_search()->mutable_certainty();
  } else {
    std::fprintf(stderr, "--certainty: only best_of_n and beam_search probe, not %s\n",
                 strategy.c_str());
    return false;
  }
  if (effort == "mild")
    c->set_effort(arbor::v1::Certainty::EFFORT_MILD);
  else if (effort == "low")
    c->set_effort(arbor::v1::Certainty::EFFORT_LOW);
  else if (effort == "mid")
    c->set_effort(arbor::v1::Certainty::EFFORT_MID);
  else if (effort == "high")
    c->set_effort(arbor::v1::Certainty::EFFORT_HIGH);
  else if (effort == "crazy")
    c->set_effort(arbor::v1::Certainty::EFFORT_CRAZY);
  else {
    std::fprintf(stderr, "--certainty: unknown '%s' (mild, low, mid, high, crazy)\n",
                 effort.c_str());
    return false;
  }
  c->set_interval_tokens(absl::GetFlag(FLAGS_probe_interval));
  c->set_window(absl::GetFlag(FLAGS_probe_window));
  c->set_max_probe_tokens(absl::GetFlag(FLAGS_probe_max_tokens));
  const std::string text = absl::GetFlag(FLAGS_probe_text);
  if (!arbor::IsValidUtf8(text)) {
    std::fprintf(stderr, "arborctl: INVALID_ARGUMENT: probe_text: is not valid UTF-8\n");
    return false;
  }
  c->set_probe_text(text);
  return true;
}

bool BuildRequest(const std::string& question, arbor::v1::SolveRequest* request) {
  // proto3 strings must be UTF-8: protobuf would refuse to send anything else.
  for (const auto& [field, value] : {std::pair<const char*, std::string>{"question", question},
                                     {"model", absl::GetFlag(FLAGS_model)},
                                     {"reward_model", absl::GetFlag(FLAGS_reward_model)},
                                     {"job_id", absl::GetFlag(FLAGS_job_id)}}) {
    if (!arbor::IsValidUtf8(value)) {
      std::fprintf(stderr, "arborctl: INVALID_ARGUMENT: %s: is not valid UTF-8\n", field);
      return false;
    }
  }
  request->set_question(question);
  request->set_job_id(absl::GetFlag(FLAGS_job_id));
  request->set_model(absl::GetFlag(FLAGS_model));
  request->set_reward_model(absl::GetFlag(FLAGS_reward_model));
  request->set_chat_template(absl::GetFlag(FLAGS_chat_template));
  request->set_seed(absl::GetFlag(FLAGS_seed));
  request->set_max_candidates(absl::GetFlag(FLAGS_max_candidates));
  arbor::v1::ScoreAggregation aggregation;
  if (!ParseAggregation(absl::GetFlag(FLAGS_aggregation), &aggregation)) {
    std::fprintf(stderr, "--aggregation: unknown '%s'\n", absl::GetFlag(FLAGS_aggregation).c_str());
    return false;
  }
  const std::string strategy = absl::GetFlag(FLAGS_strategy);
  const int n = absl::GetFlag(FLAGS_n);
  if (strategy == "greedy") {
    request->mutable_greedy();
  } else if (strategy == "best_of_n") {
    auto* s = request->mutable_best_of_n();
    s->set_n(n);
    s->set_aggregation(aggregation);
    s->set_round_size(absl::GetFlag(FLAGS_round_size));
    s->set_stop_agreement(static_cast<float>(absl::GetFlag(FLAGS_stop_agreement)));
    const std::string selection = absl::GetFlag(FLAGS_selection);
    if (selection == "reward")
      s->set_selection(arbor::v1::BestOfN::SELECTION_REWARD);
    else if (selection == "majority_vote")
      s->set_selection(arbor::v1::BestOfN::SELECTION_MAJORITY_VOTE);
    else if (selection == "weighted_vote")
      s->set_selection(arbor::v1::BestOfN::SELECTION_WEIGHTED_VOTE);
    else if (selection == "best_of_majority")
      s->set_selection(arbor::v1::BestOfN::SELECTION_BEST_OF_MAJORITY);
    else if (selection == "tournament")
      s->set_selection(arbor::v1::BestOfN::SELECTION_TOURNAMENT);
    else {
      std::fprintf(stderr, "--selection: unknown '%s'\n", selection.c_str());
      return false;
    }
  } else if (strategy == "beam_search") {
    auto* s = request->mutable_beam_search();
    s->set_n(n);
    s->set_beam_width(absl::GetFlag(FLAGS_beam_width));
    s->set_num_iterations(absl::GetFlag(FLAGS_iterations));
    s->set_lookahead(absl::GetFlag(FLAGS_lookahead));
    s->set_aggregation(aggregation);
  } else if (strategy == "dvts") {
    auto* s = request->mutable_dvts();
    s->set_n(n);
    s->set_beam_width(absl::GetFlag(FLAGS_beam_width));
    s->set_num_iterations(absl::GetFlag(FLAGS_iterations));
    s->set_aggregation(aggregation);
  } else if (strategy == "particle_filter" || strategy == "particle_gibbs") {
    auto* s = strategy == "particle_filter" ? request->mutable_particle_filter()
                                            : request->mutable_particle_gibbs()->mutable_filter();
    s->set_n(n);
    s->set_num_iterations(absl::GetFlag(FLAGS_iterations));
    s->set_entropic(absl::GetFlag(FLAGS_entropic));
    if (strategy == "particle_gibbs") {
      auto* g = request->mutable_particle_gibbs();
      g->set_num_sweeps(absl::GetFlag(FLAGS_sweeps));
      if (absl::GetFlag(FLAGS_ref_particles) >= 0) {
        g->set_num_ref_particles(absl::GetFlag(FLAGS_ref_particles));
      }
    }
  } else if (strategy == "mcts") {
    auto* s = request->mutable_mcts();
    s->set_num_simulations(absl::GetFlag(FLAGS_iterations));
    s->set_max_width(absl::GetFlag(FLAGS_max_width));
    s->set_max_depth(absl::GetFlag(FLAGS_max_depth));
    s->set_pb_c_base(absl::GetFlag(FLAGS_pb_c_base));
    s->set_pb_c_init(absl::GetFlag(FLAGS_pb_c_init));
    s->set_rollouts(absl::GetFlag(FLAGS_rollouts));
    s->set_greedy_rollouts(absl::GetFlag(FLAGS_greedy_rollouts));
    const std::string mcts_selection = absl::GetFlag(FLAGS_mcts_selection);
    if (mcts_selection == "weighted_vote") {
      s->set_final_selection(arbor::v1::Mcts::FINAL_SELECTION_WEIGHTED_VOTE);
    } else if (mcts_selection == "argmax") {
      s->set_final_selection(arbor::v1::Mcts::FINAL_SELECTION_ARGMAX);
    } else if (!mcts_selection.empty()) {
      std::fprintf(stderr, "--mcts_selection: unknown '%s' (weighted_vote or argmax)\n",
                   mcts_selection.c_str());
      return false;
    }
    s->set_aggregation(aggregation);
  } else if (strategy == "auto") {
    auto* s = request->mutable_auto_();
    s->set_n(n);
    s->set_first_round_samples(absl::GetFlag(FLAGS_first_round));
    s->set_beam_width(absl::GetFlag(FLAGS_beam_width));
  } else {
    std::fprintf(stderr,
                 "--strategy: unknown '%s' (greedy, best_of_n, beam_search, dvts, "
                 "particle_filter, particle_gibbs, mcts, auto)\n",
                 strategy.c_str());
    return false;
  }
  if (!BuildCertainty(strategy, request)) return false;
  if (absl::GetFlag(FLAGS_temperature) >= 0) {
    request->mutable_sampling()->set_temperature(
        static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  }
  if (absl::GetFlag(FLAGS_top_p) >= 0) {
    request->mutable_sampling()->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  }
  request->mutable_sampling()->set_top_k(absl::GetFlag(FLAGS_top_k));
  request->mutable_stop()->set_max_step_tokens(absl::GetFlag(FLAGS_max_step_tokens));
  auto* budget = request->mutable_budget();
  budget->set_max_generated_tokens(absl::GetFlag(FLAGS_max_tokens));
  budget->set_max_reward_tokens(absl::GetFlag(FLAGS_max_reward_tokens));
  budget->set_max_reward_calls(absl::GetFlag(FLAGS_max_reward_calls));
  budget->set_max_steps(absl::GetFlag(FLAGS_max_steps));
  budget->set_deadline_ms(absl::GetFlag(FLAGS_deadline_ms));
  if (absl::GetFlag(FLAGS_reserve_fraction) >= 0) {
    budget->set_reserve_fraction(static_cast<float>(absl::GetFlag(FLAGS_reserve_fraction)));
  }
  budget->set_finish_branches(absl::GetFlag(FLAGS_finish_branches));
  return true;
}

void PrintResult(const arbor::v1::SolveResponse& r) {
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", ToJson(r).c_str());
    return;
  }
  const arbor::v1::Usage& u = r.usage();
  std::printf("answer: %s\n", r.answer().c_str());
  std::printf("job %s, %s on %s%s%s\n", r.job_id().c_str(), r.strategy().c_str(),
              r.worker().c_str(), r.verifier().empty() ? "" : " + ", r.verifier().c_str());
  if (r.budget_exhausted()) std::printf("budget exhausted by %s\n", r.exhausted_by().c_str());
  if (!r.stop_reason().empty()) std::printf("stopped: %s\n", r.stop_reason().c_str());
  if (u.has_auto_choice()) {
    const arbor::v1::AutoChoice& a = u.auto_choice();
    std::printf(
        "auto: %s band (agreement %.2f, mean score %.2f, difficulty %.2f over %d samples): "
        "%s%s\n",
        a.band().c_str(), a.agreement(), a.mean_score(), a.difficulty(), a.first_round_samples(),
        a.strategy().c_str(), a.n() > 0 ? absl::StrFormat(" with n=%d", a.n()).c_str() : "");
  }
  if (u.probes() > 0) {
    std::printf("certainty: %lld probes (%lld tokens) stopped %lld branches\n",
                static_cast<long long>(u.probes()),
                static_cast<long long>(u.probe_generated_tokens()),
                static_cast<long long>(u.certain_branches()));
  }
  if (u.compare_calls() > 0 || u.tournament_fallback()) {
    std::printf("tournament: %d rounds, %lld pairs judged in %lld compare calls%s\n",
                u.tournament_rounds(), static_cast<long long>(u.compared_pairs()),
                static_cast<long long>(u.compare_calls()),
                u.tournament_fallback() ? "; budget spent, majority vote among those still in"
                                        : "");
  }
  if (u.reserve_generated_tokens() > 0 || u.shaped_steps() > 0) {
    std::printf("budget: %lld shaped steps; reserve finished %lld branches with %lld tokens\n",
                static_cast<long long>(u.shaped_steps()),
                static_cast<long long>(u.reserve_finished_branches()),
                static_cast<long long>(u.reserve_generated_tokens()));
  }
  std::printf(
      "usage: %lld generated, %lld prefill, %lld prefix-cache hit, %lld reward tokens "
      "(%lld calls), %lld worker calls, %lld retries, %lld steps, %lld ms\n",
      static_cast<long long>(u.generated_tokens()), static_cast<long long>(u.prefill_tokens()),
      static_cast<long long>(u.prefix_cache_hit_tokens()),
      static_cast<long long>(u.reward_tokens()), static_cast<long long>(u.reward_calls()),
      static_cast<long long>(u.worker_calls()), static_cast<long long>(u.retries()),
      static_cast<long long>(u.steps()), static_cast<long long>(u.wall_time_ms()));
  std::printf("\n%s\n", r.text().c_str());
}

int Solve(const std::string& question) {
  arbor::v1::SolveRequest request;
  if (!BuildRequest(question, &request)) return 1;
  auto stub = arbor::v1::Reasoning::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(context, 0);
  if (!absl::GetFlag(FLAGS_stream)) {
    arbor::v1::SolveResponse response;
    grpc::Status status = stub->Solve(&context, request, &response);
    if (!status.ok()) return Fail(status);
    PrintResult(response);
    return 0;
  }
  const bool tty = isatty(STDERR_FILENO);
  auto reader = stub->SolveStream(&context, request);
  arbor::v1::SolveEvent event;
  arbor::v1::SolveResponse result;
  bool have_result = false;
  while (reader->Read(&event)) {
    if (event.has_accepted()) {
      std::fprintf(stderr, "accepted job %s (%s) on %s\n", event.accepted().job_id().c_str(),
                   event.accepted().strategy().c_str(), event.accepted().worker().c_str());
    } else if (event.has_step()) {
      const auto& s = event.step();
      std::fprintf(stderr, "%sstep %d: %d live, %d finished, best %.3f, %lld tokens, %lld ms%s",
                   tty ? "\r\033[K" : "", s.iteration(), s.live_branches(), s.finished_branches(),
                   s.best_score(), static_cast<long long>(s.usage().generated_tokens()),
                   static_cast<long long>(s.usage().wall_time_ms()), tty ? "" : "\n");
    } else if (event.has_result()) {
      result = event.result();
      have_result = true;
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(status);
  if (!have_result) {
    std::fprintf(stderr, "arborctl: stream ended without a result\n");
    return 1;
  }
  PrintResult(result);
  return 0;
}

int Health() {
  auto stub = grpc::health::v1::Health::NewStub(Connect());
  grpc::ClientContext context;
  SetDeadline(context, 10000);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(status);
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"status\":\"%s\"}\n", name.c_str());
  } else {
    std::printf("%s\n", name.c_str());
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Info() {
  auto channel = Connect();
  bool any = false;
  grpc::Status last;
  {
    grpc::ClientContext context;
    SetDeadline(context, 10000);
    arbor::v1::GeneratorInfo info;
    last = arbor::v1::Generator::NewStub(channel)->Info(&context, arbor::v1::InfoRequest(), &info);
    if (last.ok()) {
      std::printf(absl::GetFlag(FLAGS_json) ? "{\"generator\":%s}\n" : "generator: %s\n",
                  ToJson(info).c_str());
      any = true;
    } else if (last.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
      return Fail(last);
    }
  }
  {
    grpc::ClientContext context;
    SetDeadline(context, 10000);
    arbor::v1::VerifierInfo info;
    last = arbor::v1::Verifier::NewStub(channel)->Info(&context, arbor::v1::VerifierInfoRequest(),
                                                       &info);
    if (last.ok()) {
      std::printf(absl::GetFlag(FLAGS_json) ? "{\"verifier\":%s}\n" : "verifier: %s\n",
                  ToJson(info).c_str());
      any = true;
    } else if (last.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
      return Fail(last);
    }
  }
  if (!any) {
    std::fprintf(stderr,
                 "arborctl info: %s serves neither arbor.v1.Generator nor arbor.v1.Verifier "
                 "(a coordinator? try `arborctl health` or `arborctl solve`)\n",
                 absl::GetFlag(FLAGS_target).c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "arborctl solve|health|info [--target=host:port] [flags] [question]\n"
      "  solve: --strategy=beam_search --n=8 --max_tokens=4000 --deadline_ms=5000 --json\n"
      "         --strategy=auto --n=16; --strategy=best_of_n --certainty=mid\n"
      "  health: grpc.health.v1 status; info: Generator/Verifier Info");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) return Usage();
  const std::string command = args[1];
  if (command == "solve") {
    if (args.size() != 3) {
      std::fprintf(stderr, "arborctl solve: give the question as one argument\n");
      return 2;
    }
    return Solve(args[2]);
  }
  if (command == "health" && args.size() == 2) return Health();
  if (command == "info" && args.size() == 2) return Info();
  return Usage();
}
