// JobRandom: the deterministic random source of one job's strategy. A pure
// function of (job seed, stream, draw count) built on the counter RNG, so a
// job's choices (tie-breaks, resampling, final draws) replay exactly for the
// same seed on every machine, independent of library versions.
// Thread-safety: not thread-safe (one per job thread); header-only.
#ifndef ARBOR_SEARCH_RANDOM_H_
#define ARBOR_SEARCH_RANDOM_H_

#include <cstdint>

#include "common/counter_rng.h"

namespace arbor::search {

// Streams keep independent purposes from shifting each other's draws.
enum class RandomStream : uint64_t {
  kTieBreak = 1,
  kResample = 2,
  kFinalPick = 3,
  kBranchSeed = 4,
};

class JobRandom {
 public:
  JobRandom(uint64_t seed, RandomStream stream)
      : seed_(seed), stream_(static_cast<uint64_t>(stream)) {}

  uint64_t NextBits() { return CounterRandomBits(seed_, stream_, counter_++); }

  // Uniform in [0, 1) with 53 random bits.
  double NextUniform() {
    return static_cast<double>(NextBits() >> 11) * (1.0 / 9007199254740992.0);
  }

 private:
  uint64_t seed_;
  uint64_t stream_;
  uint64_t counter_ = 0;
};

// The sampler seed of request branch `branch_index` in call `call_index` of a
// job: distinct per (call, branch), so no two branches share a random stream.
inline uint64_t BranchSeed(uint64_t job_seed, uint64_t call_index, uint64_t branch_index) {
  return CounterRandomBits(job_seed ^ 0x5EEDB7A3C4D2E1F0ull,
                           static_cast<uint64_t>(RandomStream::kBranchSeed) << 40 | call_index,
                           branch_index);
}

}  // namespace arbor::search

#endif  // ARBOR_SEARCH_RANDOM_H_
