// Fuzzes the request checks both model services share: UTF-8 validation and
// its lossy repair, token-id and size checks. SanitizeUtf8 always yields text
// CheckUtf8 accepts, and leaves valid text as it is.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/utf8.h"
#include "serving/request_checks.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace arbor::serving;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string clean = SanitizeUtf8(text);
  if (!CheckUtf8(clean, "text").ok()) arbor::fuzz::Fail("SanitizeUtf8 output is not valid UTF-8");
  const bool valid = CheckUtf8(text, "text").ok();
  if (valid != arbor::IsValidUtf8(std::string_view(text.data(), text.size())))
    arbor::fuzz::Fail("CheckUtf8 disagrees with IsValidUtf8");
  if (valid && clean != text) arbor::fuzz::Fail("SanitizeUtf8 changed valid text");

  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  const int vocab = size > 0 ? data[0] * 8 + 1 : 1;
  const bool ids_ok = CheckTokenIds(ids, vocab, "ids").ok();
  bool expected = true;
  for (int32_t id : ids) expected &= id >= 0 && id < vocab;
  if (ids_ok != expected) arbor::fuzz::Fail("CheckTokenIds is wrong");
  if (CheckMaxBytes(text, size, "text").ok() != true)
    arbor::fuzz::Fail("CheckMaxBytes at the limit");
  if (size > 0 && CheckMaxBytes(text, size - 1, "text").ok())
    arbor::fuzz::Fail("CheckMaxBytes over");
  (void)CheckModelName(text, "policy");
  return 0;
}
