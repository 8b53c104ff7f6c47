#include "search/testing/fake_world.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/counter_rng.h"

namespace arbor::search::testing {
namespace {

constexpr int32_t kPromptTag = 1;
constexpr int32_t kDelimiter = 2;
constexpr int32_t kFiller = 3;
constexpr int32_t kHeaderBase = 100000;
constexpr int32_t kAnswerBase = 50000;
// Certainty probes (BranchInput::suffix_text): "hmm" while fewer than half
// the steps are written, else the answer the branch is heading for, "v}".
constexpr int32_t kHedge = 4;
constexpr int32_t kProbeAnswerBase = 30000;

bool IsHeader(int32_t t) { return t >= kHeaderBase; }
bool IsAnswer(int32_t t) { return t >= kAnswerBase && t < kHeaderBase; }
bool IsProbeAnswer(int32_t t) { return t >= kProbeAnswerBase && t < kAnswerBase; }
int HeaderStep(int32_t t) { return (t - kHeaderBase) / 64; }
int HeaderLength(int32_t t) { return ((t - kHeaderBase) % 64) / 2; }
bool HeaderRight(int32_t t) { return ((t - kHeaderBase) % 2) == 1; }

uint64_t Fnv1a(std::string_view text, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

struct StepOutcome {
  std::vector<int32_t> tokens;
  double logprob = 0.0;
  FinishReason reason = FinishReason::kStep;
};

// A probe's output: hedging early, then the answer the branch is heading for
// (a spoiled branch: one of the wrong answers, fixed by where it went wrong).
StepOutcome GenerateProbe(const FakeProblem& problem, absl::Span<const int32_t> suffix) {
  int steps_started = 0;
  int64_t first_wrong = -1;
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (!IsHeader(suffix[i])) continue;
    ++steps_started;
    if (!HeaderRight(suffix[i]) && first_wrong < 0) first_wrong = static_cast<int64_t>(i);
  }
  StepOutcome out;
  out.reason = FinishReason::kEos;
  if (2 * steps_started < problem.num_steps) {
    out.tokens.push_back(kHedge);
    return out;
  }
  const int answer = problem.Answer() + (first_wrong < 0 ? 0 : 1 + static_cast<int>(first_wrong % 3));
  out.tokens.push_back(kProbeAnswerBase + answer);
  return out;
}

StepOutcome GenerateStep(const FakeProblem& problem, absl::Span<const int32_t> suffix,
                         uint64_t seed, int sample, const ExtendRequest& request) {
  // Replay the branch's state from its tokens.
  int steps_started = 0;
  bool right_so_far = true;
  int current_step = -1, current_length = 0, into_step = 0;
  for (int32_t t : suffix) {
    if (IsHeader(t)) {
      ++steps_started;
      right_so_far = right_so_far && HeaderRight(t);
      current_step = HeaderStep(t);
      current_length = HeaderLength(t);
      into_step = 1;
    } else {
      ++into_step;
    }
  }
  StepOutcome out;
  if (!suffix.empty() && IsAnswer(suffix.back())) {
    out.reason = FinishReason::kEos;  // already complete
    return out;
  }
  bool in_step = current_step >= 0 && into_step < current_length;
  const bool greedy = request.sampling.temperature == 0.0f;
  const bool to_eos = request.stop.step_delimiters.empty();
  const int cap = request.stop.max_step_tokens;
  uint64_t position = suffix.size();
  while (true) {
    if (static_cast<int>(out.tokens.size()) >= cap) {
      out.reason = FinishReason::kLength;
      return out;
    }
    if (!in_step) {
      const int k = steps_started;
      // Greedy decoding follows the problem's fixed "mode" path, whose steps
      // are right with the same probability p across problems.
      const double u =
          greedy ? CounterUniform(0x6EED0000u + static_cast<uint64_t>(problem.id), 0, 2 * position)
                 : CounterUniform(seed, sample, 2 * position);
      const int length =
          greedy ? 10
                 : 4 + static_cast<int>(CounterRandomBits(seed, sample, 2 * position + 1) % 12);
      const bool right = right_so_far && u < problem.p;
      if (right_so_far) out.logprob += std::log(right ? problem.p : 1.0 - problem.p);
      out.tokens.push_back(kHeaderBase + 64 * k + 2 * length + (right ? 1 : 0));
      ++position;
      ++steps_started;
      right_so_far = right;
      current_step = k;
      current_length = length;
      into_step = 1;
      in_step = true;
      continue;
    }
    if (into_step < current_length - 1) {
      out.tokens.push_back(kFiller);
      ++position;
      ++into_step;
      continue;
    }
    // The step's last token.
    ++into_step;
    in_step = false;
    if (current_step >= problem.num_steps - 1) {
      int answer = problem.Answer();
      if (!right_so_far) {
        answer +=
            1 +
            (greedy ? 0 : static_cast<int>(CounterRandomBits(seed, sample, 2 * position + 7) % 3));
      }
      out.tokens.push_back(kAnswerBase + answer);
      out.reason = FinishReason::kEos;
      return out;
    }
    out.tokens.push_back(kDelimiter);
    ++position;
    if (!to_eos) {
      out.reason = FinishReason::kStep;
      return out;
    }
  }
}

}  // namespace

std::string FakeProblem::Question() const {
  char p_text[32];
  std::snprintf(p_text, sizeof(p_text), "%.6f", p);
  return absl::StrCat("problem ", id, " p=", p_text, " steps=", num_steps);
}

bool FakeProblem::Parse(std::string_view question, FakeProblem* problem) {
  const std::string q(question);
  return std::sscanf(q.c_str(), "problem %d p=%lf steps=%d", &problem->id, &problem->p,
                     &problem->num_steps) == 3 &&
         problem->num_steps >= 1 && problem->num_steps < 1000;
}

std::string FakeGenerator::Decode(const std::vector<int32_t>& tokens) {
  std::string text;
  for (int32_t t : tokens) {
    if (IsHeader(t)) {
      absl::StrAppend(&text, "Step ", HeaderStep(t) + 1, HeaderRight(t) ? " [r]: " : " [w]: ");
    } else if (IsAnswer(t)) {
      absl::StrAppend(&text, "The answer is \\boxed{", t - kAnswerBase, "}.");
    } else if (IsProbeAnswer(t)) {
      absl::StrAppend(&text, t - kProbeAnswerBase, "}");
    } else if (t == kHedge) {
      text += "hmm";
    } else if (t == kDelimiter) {
      text += "\n\n";
    } else {
      text += "x ";
    }
  }
  return text;
}

absl::StatusOr<std::vector<int32_t>> FakeGenerator::EncodePrompt(std::string_view question) {
  FakeProblem problem;
  if (!FakeProblem::Parse(question, &problem)) {
    return absl::InvalidArgumentError(absl::StrCat("not a fake problem: ", std::string(question)));
  }
  return std::vector<int32_t>{kPromptTag, problem.id,
                              static_cast<int32_t>(std::lround(problem.p * 1e6)),
                              problem.num_steps};
}

absl::StatusOr<ExtendResult> FakeGenerator::Extend(const ExtendRequest& request) {
  ++calls_;
  if (options_.on_extend) options_.on_extend();
  if (options_.fail_after_calls >= 0 && calls_ > options_.fail_after_calls) {
    return absl::Status(options_.fail_code, "fake worker failed");
  }
  if (request.prompt_tokens.size() != 4 || request.prompt_tokens[0] != kPromptTag) {
    return absl::InvalidArgumentError("prompt_tokens are not a fake prompt");
  }
  if (request.branches.empty() || request.branches.size() > 1024) {
    return absl::InvalidArgumentError("branches must number 1 to 1024");
  }
  FakeProblem problem;
  problem.id = request.prompt_tokens[1];
  problem.p = request.prompt_tokens[2] / 1e6;
  problem.num_steps = request.prompt_tokens[3];

  CallRecord record;
  record.max_step_tokens = request.stop.max_step_tokens;
  record.to_eos = request.stop.step_delimiters.empty();
  record.temperature = request.sampling.temperature;
  record.generated_before = generated_tokens_;
  ExtendResult result;
  for (size_t b = 0; b < request.branches.size(); ++b) {
    const BranchInput& branch = request.branches[b];
    if (branch.num_samples < 1 || branch.num_samples > 256) {
      return absl::InvalidArgumentError("num_samples must be in [1, 256]");
    }
    record.seeds.push_back(branch.seed);
    record.samples.push_back(branch.num_samples);
    bool right = true;
    for (int32_t t : branch.suffix_tokens) right = right && (!IsHeader(t) || HeaderRight(t));
    record.prefix_right.push_back(right);
    record.suffix_lengths.push_back(branch.suffix_tokens.size());
    const uint64_t key =
        Fnv1a(std::string_view(reinterpret_cast<const char*>(branch.suffix_tokens.data()),
                               branch.suffix_tokens.size() * sizeof(int32_t)));
    const int64_t context =
        static_cast<int64_t>(request.prompt_tokens.size() + branch.suffix_tokens.size());
    if (cached_prefixes_.insert(key).second) {
      result.usage.prefill_tokens += context;
    } else {
      result.usage.prefix_cache_hit_tokens += context;
    }
    if (!branch.suffix_text.empty()) record.probe = true;
    for (int s = 0; s < branch.num_samples; ++s) {
      StepOutcome step = branch.suffix_text.empty()
                             ? GenerateStep(problem, branch.suffix_tokens, branch.seed, s, request)
                             : GenerateProbe(problem, branch.suffix_tokens);
      StepOutput out;
      out.branch_index = static_cast<int32_t>(b);
      out.sample_index = s;
      out.text = Decode(step.tokens);
      out.tokens = std::move(step.tokens);
      out.logprob = step.logprob;
      out.finish_reason = step.reason;
      result.usage.generated_tokens += static_cast<int64_t>(out.tokens.size());
      result.outputs.push_back(std::move(out));
      ++record.outputs;
    }
  }
  if (record.outputs > 4096) return absl::InvalidArgumentError("more than 4096 outputs");
  max_planned_tokens_ = std::max<int64_t>(
      max_planned_tokens_, static_cast<int64_t>(record.outputs) * record.max_step_tokens);
  generated_tokens_ += result.usage.generated_tokens;
  call_log_.push_back(std::move(record));
  return result;
}

absl::StatusOr<ScoreResult> FakeScorer::Score(const ScoreRequest& request) {
  ++calls_;
  if (on_score) on_score();
  if (request.candidates.empty()) return absl::InvalidArgumentError("no candidates");
  ScoreResult result;
  last_call_scores_.clear();
  for (absl::Span<const std::string> steps : request.candidates) {
    if (steps.empty()) return absl::InvalidArgumentError("a candidate has no steps");
    std::vector<float> scores;
    std::string prefix;
    bool right = true;
    int64_t bytes = 0;
    for (size_t t = 0; t < steps.size(); ++t) {
      prefix += steps[t];
      right = right && steps[t].find("[w]") == std::string::npos;
      if (request.last_step_only && t + 1 < steps.size()) continue;
      bytes += static_cast<int64_t>(steps[t].size());
      double z = 0.0;
      if (noise_ > 0.0) {
        const uint64_t h = Fnv1a(prefix, Fnv1a(request.question, seed_ ^ 0x9E3779B97F4A7C15ull));
        const double u1 = std::max(1e-12, static_cast<double>(CounterUniform(h, 0, 0)));
        const double u2 = CounterUniform(h, 0, 1);
        z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      }
      const double logit = 3.0 * (right ? 1.0 : -1.0) + noise_ * z;
      scores.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-logit))));
    }
    if (!request.last_step_only) bytes += static_cast<int64_t>(request.question.size());
    result.usage.reward_tokens += bytes / 4 + 1;
    last_call_scores_.insert(last_call_scores_.end(), scores.begin(), scores.end());
    result.scores.push_back(std::move(scores));
  }
  reward_tokens_ += result.usage.reward_tokens;
  return result;
}

bool IsRightAnswer(const FakeProblem& problem, std::string_view answer) {
  return answer == std::to_string(problem.Answer());
}

}  // namespace arbor::search::testing
