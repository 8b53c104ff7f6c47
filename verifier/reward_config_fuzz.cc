// Fuzzes prm_config.json parsing over each kind's defaults, then the checks
// against a model with and without a value head. The first byte picks the
// base kind and whether the model has a value head; the rest is the file.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/strings/string_view.h"
#include "tests/fuzz/fuzz_util.h"
#include "verifier/reward_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace arbor::verifier;
  arbor::fuzz::Input input(data, size);
  const uint8_t choice = input.Byte();
  static constexpr RewardKind kKinds[] = {RewardKind::kTokenLogitPrm, RewardKind::kValueHeadPrm,
                                          RewardKind::kOrm};
  const RewardKind kind = kKinds[choice % 3];
  const bool value_head = (choice & 0x10) != 0;
  const RewardConfig base = DefaultRewardConfig(kind, value_head);
  absl::StatusOr<RewardConfig> config = ParseRewardConfig(
      absl::string_view(input.Rest().data(), input.Rest().size()), base, value_head);
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument) {
      arbor::fuzz::Fail("a bad prm_config.json is not INVALID_ARGUMENT");
    }
    return 0;
  }
  (void)RewardKindName(config->kind);
  (void)config->score_head();
  for (int labels : {0, 1, 2, 3}) (void)ValidateRewardConfig(*config, value_head, labels);
  return 0;
}
