// Fuzzes Encode / Decode / PreTokenize of the repository's tokenizers (byte-
// level BPE of Llama 3 and Qwen2, SentencePiece-style BPE with byte fallback,
// Metaspace). The first byte picks the tokenizer and the mode; the rest is
// the text, or (decode mode) little-endian int32 ids.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/utf8.h"
#include "runtime/text/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using arbor::runtime::Tokenizer;

const std::vector<std::unique_ptr<Tokenizer>>& Tokenizers() {
  static const auto* tokenizers = [] {
    auto* out = new std::vector<std::unique_ptr<Tokenizer>>();
    const std::string root = arbor::fuzz::SourceDir();
    for (const char* dir : {"/tests/fixtures/golden/llama", "/tests/fixtures/golden/qwen2",
                            "/tests/fixtures/tokenizers/llama2_style",
                            "/tests/fixtures/tokenizers/metaspace_style", "/models/policy"}) {
      absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromModelDir(root + dir);
      if (!tok.ok()) arbor::fuzz::Fail(std::string(tok.status().message()));
      out->push_back(*std::move(tok));
    }
    return out;
  }();
  return *tokenizers;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  arbor::fuzz::Input input(data, size);
  const uint8_t choice = input.Byte();
  const auto& tokenizers = Tokenizers();
  const Tokenizer& tok = *tokenizers[choice % tokenizers.size()];
  const std::string_view rest = input.Rest();
  const int32_t vocab = tok.vocab_size();
  if ((choice / tokenizers.size()) % 2 == 1) {
    std::vector<int32_t> ids(rest.size() / 4);
    if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
    const std::string text = tok.Decode(ids, /*skip_special_tokens=*/(choice & 0x80) != 0);
    if (!arbor::IsValidUtf8(text)) {
      arbor::fuzz::Fail("Decode returned invalid UTF-8");
    }
    for (int32_t id : ids)
      (void)tok.TokenBytes(id), (void)tok.IdToToken(id), (void)tok.IsSpecial(id);
    return 0;
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      tok.Encode(rest, /*add_special_tokens=*/(choice & 0x80) != 0);
  const bool valid_utf8 = arbor::IsValidUtf8(rest);
  if (ids.ok() != valid_utf8) arbor::fuzz::Fail("Encode accepts exactly the valid UTF-8 texts");
  (void)tok.PreTokenize(rest);
  if (!ids.ok()) return 0;
  for (int32_t id : *ids) {
    if (id < 0 || id >= vocab) arbor::fuzz::Fail("Encode returned an id outside the vocabulary");
  }
  const std::string back = tok.Decode(*ids);
  if (!arbor::IsValidUtf8(back)) {
    arbor::fuzz::Fail("Decode returned invalid UTF-8");
  }
  return 0;
}
