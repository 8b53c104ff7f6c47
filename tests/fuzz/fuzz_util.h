// Helpers shared by the libFuzzer targets (*_fuzz.cc beside the code they
// fuzz, built by -DARBOR_FUZZ=ON; tests/fuzz/CMakeLists.txt).
#ifndef ARBOR_TESTS_FUZZ_FUZZ_UTIL_H_
#define ARBOR_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace arbor::fuzz {

// The source tree, for fixtures: $ARBOR_SOURCE_DIR, else the tree the target
// was configured from.
inline std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  if (dir != nullptr && *dir != '\0') return dir;
  return ARBOR_FUZZ_SOURCE_DIR;
}

// A fuzz target's own invariant failed: report and abort, so that libFuzzer
// records the input as a crash.
[[noreturn]] inline void Fail(std::string_view what) {
  std::fprintf(stderr, "fuzz invariant failed: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

// Takes bytes off the front of the input: lets one input choose options.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  uint8_t Byte() {
    if (rest_.empty()) return 0;
    const uint8_t b = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return b;
  }
  // Up to the next '\0' (or the end), the separator dropped.
  std::string_view Field() {
    const size_t end = rest_.find('\0');
    std::string_view field = rest_.substr(0, end);
    rest_.remove_prefix(end == std::string_view::npos ? rest_.size() : end + 1);
    return field;
  }
  std::string_view Rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

}  // namespace arbor::fuzz

#endif  // ARBOR_TESTS_FUZZ_FUZZ_UTIL_H_
