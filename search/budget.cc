#include "search/budget.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace arbor::search {
namespace {

constexpr int64_t kUncapped = std::numeric_limits<int64_t>::max();

int64_t Remaining(int64_t cap, int64_t used) {
  if (cap <= 0) return kUncapped;
  return std::max<int64_t>(0, cap - used);
}

}  // namespace

absl::Status ValidateBudgetLimits(const BudgetLimits& limits) {
  auto negative = [](absl::string_view field, int64_t value) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget.", field, " (", value, ") must be >= 0 (0 = no cap)"));
  };
  if (limits.max_generated_tokens < 0) {
    return negative("max_generated_tokens", limits.max_generated_tokens);
  }
  if (limits.max_reward_tokens < 0) return negative("max_reward_tokens", limits.max_reward_tokens);
  if (limits.max_reward_calls < 0) return negative("max_reward_calls", limits.max_reward_calls);
  if (limits.max_steps < 0) return negative("max_steps", limits.max_steps);
  if (limits.deadline < absl::ZeroDuration()) {
    return negative("deadline_ms", absl::ToInt64Milliseconds(limits.deadline));
  }
  if (!(limits.reserve_fraction >= 0.0f && limits.reserve_fraction <= 0.9f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget.reserve_fraction (", limits.reserve_fraction, ") must be in [0, 0.9]"));
  }
  if (limits.finish_branches < 1 || limits.finish_branches > 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget.finish_branches (", limits.finish_branches, ") must be in [1, 64]"));
  }
  return absl::OkStatus();
}

BudgetTracker::BudgetTracker(const BudgetLimits& limits, absl::Time start, Clock now)
    : limits_(limits),
      deadline_(limits.deadline > absl::ZeroDuration() ? start + limits.deadline
                                                       : absl::InfiniteFuture()),
      now_(std::move(now)) {}

absl::Time BudgetTracker::Now() const { return now_ ? now_() : absl::Now(); }

void BudgetTracker::MarkExhausted(std::string_view cap) {
  if (exhausted_by_.empty()) exhausted_by_ = std::string(cap);
}

int64_t BudgetTracker::RemainingGeneratedTokens() const {
  return Remaining(limits_.max_generated_tokens, usage_.generated_tokens);
}
int64_t BudgetTracker::RemainingRewardTokens() const {
  return Remaining(limits_.max_reward_tokens, usage_.reward_tokens);
}
int64_t BudgetTracker::RemainingRewardCalls() const {
  return Remaining(limits_.max_reward_calls, usage_.reward_calls);
}
int64_t BudgetTracker::RemainingSteps() const { return Remaining(limits_.max_steps, usage_.steps); }

int64_t BudgetTracker::SearchGeneratedTokens() const {
  if (limits_.max_generated_tokens <= 0) return kUncapped;
  const int64_t reserve = static_cast<int64_t>(static_cast<double>(limits_.reserve_fraction) *
                                               static_cast<double>(limits_.max_generated_tokens));
  return std::max<int64_t>(0, limits_.max_generated_tokens - reserve - usage_.generated_tokens);
}

bool BudgetTracker::DeadlineNear() const {
  if (deadline_ == absl::InfiniteFuture()) return false;
  return Now() >= deadline_ - limits_.deadline * static_cast<double>(limits_.reserve_fraction);
}

void BudgetTracker::ChargeReserve(int64_t generated_tokens, int64_t finished_branches) {
  usage_.reserve_generated_tokens += generated_tokens;
  usage_.reserve_finished_branches += finished_branches;
}

bool BudgetTracker::DeadlinePassed(absl::Duration slack) {
  if (deadline_ == absl::InfiniteFuture()) return false;
  if (Now() < deadline_ - slack) return false;
  MarkExhausted(kCapDeadline);
  return true;
}

bool BudgetTracker::BeginStep() {
  if (exhausted() || DeadlinePassed()) return false;
  if (RemainingSteps() <= 0) {
    MarkExhausted(kCapSteps);
    return false;
  }
  usage_.steps += 1;
  return true;
}

std::optional<GenerationPlan> BudgetTracker::PlanGeneration(int64_t desired_outputs,
                                                            int32_t max_step_tokens,
                                                            int32_t min_step_tokens) {
  if (desired_outputs <= 0 || max_step_tokens <= 0) return std::nullopt;
  min_step_tokens = std::clamp(min_step_tokens, 1, max_step_tokens);
  const int64_t left = RemainingGeneratedTokens();
  GenerationPlan plan;
  if (left / desired_outputs >= max_step_tokens) {
    plan.num_outputs = static_cast<int32_t>(desired_outputs);
    plan.max_step_tokens = max_step_tokens;
    return plan;
  }
  if (left / desired_outputs >= min_step_tokens) {
    plan.num_outputs = static_cast<int32_t>(desired_outputs);
    plan.max_step_tokens = static_cast<int32_t>(left / desired_outputs);
    return plan;
  }
  const int64_t outputs = left / min_step_tokens;
  if (outputs <= 0) {
    MarkExhausted(kCapGeneratedTokens);
    return std::nullopt;
  }
  plan.num_outputs = static_cast<int32_t>(outputs);
  plan.max_step_tokens = min_step_tokens;
  return plan;
}

bool BudgetTracker::CanScore(int64_t max_tokens) {
  if (DeadlinePassed()) return false;
  if (RemainingRewardCalls() <= 0) {
    MarkExhausted(kCapRewardCalls);
    return false;
  }
  if (max_tokens > RemainingRewardTokens()) {
    MarkExhausted(kCapRewardTokens);
    return false;
  }
  return true;
}

void BudgetTracker::ChargeGeneration(const GenerationUsage& usage) {
  usage_.generated_tokens += usage.generated_tokens;
  usage_.prefill_tokens += usage.prefill_tokens;
  usage_.prefix_cache_hit_tokens += usage.prefix_cache_hit_tokens;
  usage_.worker_calls += 1;
  usage_.worker_queue_us += usage.queue_us;
  usage_.worker_compute_us += usage.compute_us;
  usage_.worker_call_us += usage.call_us;
  if (limits_.max_generated_tokens > 0 && usage_.generated_tokens >= limits_.max_generated_tokens) {
    MarkExhausted(kCapGeneratedTokens);
  }
}

void BudgetTracker::ChargeScoring(const ScoringUsage& usage) {
  usage_.reward_tokens += usage.reward_tokens;
  usage_.reward_cache_hit_tokens += usage.reward_cache_hit_tokens;
  usage_.reward_calls += 1;
  usage_.verifier_queue_us += usage.queue_us;
  usage_.verifier_compute_us += usage.compute_us;
  usage_.verifier_call_us += usage.call_us;
  if (limits_.max_reward_tokens > 0 && usage_.reward_tokens >= limits_.max_reward_tokens) {
    MarkExhausted(kCapRewardTokens);
  }
}

void BudgetTracker::ChargeComparison(const ScoringUsage& usage, int64_t pairs) {
  ChargeScoring(usage);
  usage_.compare_calls += 1;
  usage_.compared_pairs += pairs;
}

}  // namespace arbor::search
