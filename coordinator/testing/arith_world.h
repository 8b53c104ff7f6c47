// ArithWorld: a deterministic stand-in for the GPU worker and the reward
// model, used ONLY by the coordinator's tests (it is a test double, not a
// model). It speaks the real arbor.v1.Generator / arbor.v1.Verifier protocol
// over gRPC so the coordinator's Solve, failover, cancellation and admission
// paths run for real on loopback.
//
// The world: a question lists numbers ("add 3 5 7 11"); a solution adds them
// one per step ("Add 5 to get 8.\n\n"), each step right with probability
// `step_accuracy` (else off by 1..3, and the error carries on), and ends with
// "The answer is \boxed{T}." and EOS. Tokens are bytes (vocab 257, EOS 256),
// so a branch's state is re-read from its tokens alone and any replica can
// continue any branch. Sample i of a branch with seed s draws from the
// counter RNG (s, i, position): results never depend on batching.
// The reward model scores a step 0.9 when every claim so far is right, else
// 0.1 (plus optional deterministic noise); it is causal (a step's score
// depends only on the steps up to it).
// A branch with suffix_text is a certainty probe: its output is the answer the
// branch is heading for ("26}\n": its running total plus the numbers still to
// add) once half of the numbers are added, and a hedge ("hmm}\n")
// before, so probes agree only from the middle of a solution on. The reward
// model scores a step that states an answer in another phrase ("... \boxed{26}",
// a stopped branch's probe step) as right when the answer is.
// Usage: prefix-cache hits are emulated per 16-token block, so repeated
// prefixes count as prefix_cache_hit_tokens the way a radix cache would.
// Thread-safety: Extend and Score are thread-safe.
#ifndef ARBOR_COORDINATOR_TESTING_ARITH_WORLD_H_
#define ARBOR_COORDINATOR_TESTING_ARITH_WORLD_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace arbor::v1 {
class ExtendRequest;
class ExtendResponse;
class GeneratorInfo;
class ScoreRequest;
class ScoreResponse;
class VerifierInfo;
}  // namespace arbor::v1

namespace arbor::testing {

struct ArithWorldOptions {
  std::string model = "arith-1";
  std::string reward_model = "arith-prm";
  double step_accuracy = 0.85;
  double prm_noise = 0.0;
  int max_context_tokens = 4096;
};

class ArithWorld {
 public:
  static constexpr int32_t kEos = 256;
  static constexpr int32_t kVocab = 257;

  explicit ArithWorld(ArithWorldOptions options) : options_(std::move(options)) {}

  absl::StatusOr<std::string> ApplyTemplate(std::string_view question,
                                            std::string_view chat_template) const;
  absl::Status Extend(const arbor::v1::ExtendRequest& request, arbor::v1::ExtendResponse* out);
  absl::Status Score(const arbor::v1::ScoreRequest& request, arbor::v1::ScoreResponse* out);
  void FillGeneratorInfo(arbor::v1::GeneratorInfo* info) const;
  void FillVerifierInfo(arbor::v1::VerifierInfo* info) const;

  // The numbers a question asks to add, and their sum.
  static std::vector<int64_t> Numbers(std::string_view question);

 private:
  // Tokens of `sequence` served from the emulated prefix cache; records it.
  int64_t CacheLookupAndInsert(absl::flat_hash_set<uint64_t>& cache,
                               const std::vector<int32_t>& sequence, size_t insert_upto)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ArithWorldOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_set<uint64_t> kv_blocks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> reward_blocks_ ABSL_GUARDED_BY(mu_);
};

}  // namespace arbor::testing

#endif  // ARBOR_COORDINATOR_TESTING_ARITH_WORLD_H_
