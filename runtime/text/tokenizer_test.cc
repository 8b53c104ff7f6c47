#include "runtime/text/tokenizer.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "common/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::string SourceDir() {
  const char* dir = std::getenv("ARBOR_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// GPT-2's byte -> character map, written out independently of the library.
std::string ByteChar(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      const bool p = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  AppendUtf8(static_cast<char32_t>(cp), &s);
  return s;
}

// A small byte-level tokenizer: ids 0..255 are the bytes (id == byte value),
// then the merges below in rank order, then the added tokens.
//   256 "Ġ" + "t" = "Ġt"      259 "h" + "e" = "he"
//   257 "Ġt" + "h" = "Ġth"    260 "l" + "l" = "ll"
//   258 "Ġth" + "e" = "Ġthe"  261 "he" + "ll" = "hell"
// Ranks make "Ġthe" beat "he" in " the", while "hello" becomes "hell" "o".
Json SmallTokenizerJson(bool pair_merges) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"}, {"Ġt", "h"}, {"Ġth", "e"}, {"h", "e"}, {"l", "l"}, {"he", "ll"}};
  Json merge_list = Json::array();
  int next = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = next++;
    if (pair_merges) {
      merge_list.push_back(Json::array({a, b}));
    } else {
      merge_list.push_back(a + " " + b);
    }
  }
  Json added = Json::array();
  added.push_back({{"id", 262}, {"content", "<|bos|>"}, {"special", true}});
  added.push_back({{"id", 263}, {"content", "<|end|>"}, {"special", true}});
  added.push_back({{"id", 264}, {"content", "<|end|>x"}, {"special", true}});
  added.push_back(
      {{"id", 265}, {"content", "[S]"}, {"special", true}, {"lstrip", true}, {"rstrip", true}});
  added.push_back({{"id", 266}, {"content", "word"}, {"special", false}, {"single_word", true}});
  Json root = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {262}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}},
  };
  return root;
}

std::unique_ptr<Tokenizer> SmallTokenizer(bool pair_merges = false) {
  auto tokenizer = Tokenizer::FromJson(SmallTokenizerJson(pair_merges).dump());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

std::vector<int32_t> Bytes(std::string_view s) {
  std::vector<int32_t> ids;
  for (char c : s) ids.push_back(static_cast<uint8_t>(c));
  return ids;
}

// ------------------------------------------------------------- hand-made BPE

TEST(TokenizerTest, MergesAppliedByRank) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  // " the": Ġt (rank 0), Ġth, Ġthe; "hello": he (3), ll (4), hell (5), o.
  EXPECT_THAT(*tok->Encode(" the", false), ElementsAre(258));
  EXPECT_THAT(*tok->Encode("hello", false), ElementsAre(261, 'o'));
  // GPT-2 regex pieces "hello", " the", " hello"; the last one's "Ġ" has no
  // merge with "h", so it stays: "Ġ" "hell" "o".
  EXPECT_THAT(*tok->Encode("hello the hello", false), ElementsAre(261, 'o', 258, ' ', 261, 'o'));
  EXPECT_EQ(tok->Decode(*tok->Encode("hello the hello", false)), "hello the hello");
}

TEST(TokenizerTest, BothMergeFormatsAgree) {
  auto strings = SmallTokenizer(false);
  auto pairs = SmallTokenizer(true);
  ASSERT_NE(strings, nullptr);
  ASSERT_NE(pairs, nullptr);
  for (const char* text : {"the theme hello shell", " the", "hellohello", "  \n the\t"}) {
    EXPECT_EQ(*strings->Encode(text), *pairs->Encode(text)) << text;
  }
}

TEST(TokenizerTest, PostProcessorAddsBos) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(*tok->Encode("he", true), ElementsAre(262, 259));
  EXPECT_THAT(*tok->Encode("he", false), ElementsAre(259));
  EXPECT_THAT(*tok->Encode("", true), ElementsAre(262));
  EXPECT_TRUE(tok->Encode("", false)->empty());
  EXPECT_EQ(tok->bos_id(), 262);
}

TEST(TokenizerTest, WhitespaceLookAheadIsEmulated) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  // \s+(?!\S): "a   b" -> "a", "  ", " b" (the run gives its last space to b).
  EXPECT_THAT(*tok->Encode("a   b", false), ElementsAre('a', ' ', ' ', ' ', 'b'));
  EXPECT_THAT(*tok->Encode("x   the", false), ElementsAre('x', ' ', ' ', 258));
  // A single space before a word stays with the word; at the end all stays.
  EXPECT_THAT(*tok->Encode("x the  ", false), ElementsAre('x', 258, ' ', ' '));
  // One whitespace char before a non-space that no earlier alternative takes
  // falls through to the last alternative \s+.
  EXPECT_THAT(*tok->Encode("\tthe", false), ElementsAre('\t', 't', 259));
}

TEST(TokenizerTest, PreTokenizerPiecesMatchOniguruma) {
  // The GPT-2 regex splits " ?\p{L}+" etc.; BPE never merges across pieces,
  // so "he" split by a digit stays bytes.
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(*tok->Encode("h1e", false), ElementsAre('h', '1', 'e'));
  EXPECT_THAT(*tok->Encode("he's", false), ElementsAre(259, '\'', 's'));
}

TEST(TokenizerTest, SpecialTokensMatchedLeftmostLongest) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(*tok->Encode("he<|end|>he", false), ElementsAre(259, 263, 259));
  EXPECT_THAT(*tok->Encode("<|end|>xhe", false), ElementsAre(264, 259));
  EXPECT_THAT(*tok->Encode("<|end|<|end|>", false), ElementsAre('<', '|', 'e', 'n', 'd', '|', 263));
  // lstrip / rstrip absorb the whitespace around [S].
  EXPECT_THAT(*tok->Encode("he  [S]  he", false), ElementsAre(259, 265, 259));
  // single_word: "word" only on its own.
  EXPECT_THAT(*tok->Encode("a word", false), ElementsAre('a', ' ', 266));
  EXPECT_EQ(*tok->Encode("swordfish", false), Bytes("swordfish"));
  EXPECT_TRUE(tok->IsSpecial(263));
  EXPECT_FALSE(tok->IsSpecial(266));
  EXPECT_EQ(tok->Decode(*tok->Encode("he<|end|>he", true)), "<|bos|>he<|end|>he");
  EXPECT_EQ(tok->Decode(*tok->Encode("he<|end|>he", true), /*skip_special_tokens=*/true), "hehe");
}

TEST(TokenizerTest, NfcNormalizerAndIgnoreMerges) {
  Json j = SmallTokenizerJson(false);
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  auto nfc = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(nfc.ok()) << nfc.status();
  // "e" + combining acute becomes U+00E9 (C3 A9) before BPE, as Qwen2's NFC.
  EXPECT_EQ(*(*nfc)->Encode("e\u0301", false), Bytes("\u00e9"));
  EXPECT_EQ(*SmallTokenizer()->Encode("e\u0301", false), Bytes("e\u0301"));

  // Llama 3 sets ignore_merges: a word found whole in the vocabulary is one
  // token even when no merge chain builds it.
  j = SmallTokenizerJson(false);
  j["model"]["vocab"]["Ġhello"] = 267;
  j["model"]["ignore_merges"] = true;
  auto whole = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_THAT(*(*whole)->Encode("a hello", false), ElementsAre('a', 267));
  j["model"]["ignore_merges"] = false;
  EXPECT_THAT(*(*Tokenizer::FromJson(j.dump()))->Encode("a hello", false),
              ElementsAre('a', ' ', 261, 'o'));
}

TEST(TokenizerTest, PrefixSpaceAndLiteralSplit) {
  // ByteLevel add_prefix_space adds "Ġ" to each piece that lacks one (after
  // an added token too, as `tokenizers` does).
  Json j = SmallTokenizerJson(false);
  j["pre_tokenizer"]["add_prefix_space"] = true;
  auto prefixed = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(prefixed.ok()) << prefixed.status();
  EXPECT_THAT(*(*prefixed)->Encode("the", false), ElementsAre(258));
  EXPECT_THAT(*(*prefixed)->Encode(" the", false), ElementsAre(258));
  EXPECT_THAT(*(*prefixed)->Encode("<|end|>the", false), ElementsAre(263, 258));

  j = SmallTokenizerJson(false);
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"String", "ll"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  auto literal = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(literal.ok()) << literal.status();
  EXPECT_EQ(*(*literal)->PreTokenize("hello the"), (std::vector<std::string>{"he", "ll", "o the"}));
  EXPECT_THAT(*(*literal)->Encode("hello", false), ElementsAre(259, 260, 'o'));
}

TEST(TokenizerTest, Lookups) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 267);
  EXPECT_EQ(tok->TokenToId("Ġthe"), 258);
  EXPECT_EQ(tok->TokenToId("<|end|>"), 263);
  EXPECT_EQ(tok->TokenToId("nope"), std::nullopt);
  EXPECT_EQ(tok->IdToToken(258), "Ġthe");
  EXPECT_EQ(tok->IdToToken(1000), std::nullopt);
  EXPECT_EQ(tok->TokenBytes(258), " the");
  EXPECT_EQ(tok->TokenBytes(0xE9), "\xE9");  // one byte of a character
  // Unknown ids are skipped, as `tokenizers` does.
  EXPECT_EQ(tok->Decode({'a', 9999, -1, 'b'}), "ab");
  EXPECT_EQ(tok->eos_id(), std::nullopt);  // no well-known EOS name here
  EXPECT_EQ(tok->Fingerprint(), Sha256Hex(SmallTokenizerJson(false).dump()));
}

TEST(TokenizerTest, InvalidUtf8IsRejected) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  for (const char* bad : {"ab\xC3", "\xFF", "a\xED\xA0\x80", "\xF0\x9F\x98"}) {
    absl::StatusOr<std::vector<int32_t>> ids = tok->Encode(bad);
    ASSERT_FALSE(ids.ok()) << bad;
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
  }
  EXPECT_THAT(tok->Encode("ab\xC3").status().message(), HasSubstr("byte offset 2"));
}

TEST(TokenizerTest, DecodeReplacesInvalidBytesLikeFromUtf8Lossy) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  // E2 82 is a truncated 3-byte sequence: one U+FFFD; FF is another.
  EXPECT_EQ(tok->Decode({'a', 0xE2, 0x82, 'b', 0xFF}), "a\uFFFDb\uFFFD");
}

// ------------------------------------------------------- incremental decoding

TEST(IncrementalDecoderTest, EmojiSplitOverTokensComesOutWhole) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  const std::vector<int32_t> ids = *tok->Encode("a😀b", false);  // 😀 = F0 9F 98 80
  ASSERT_EQ(ids.size(), 6u);
  IncrementalDecoder decoder(tok.get());
  std::vector<std::string> steps;
  for (int32_t id : ids) steps.push_back(decoder.Add(id));
  EXPECT_THAT(steps, ElementsAre("a", "", "", "", "😀", "b"));
  EXPECT_EQ(decoder.Finish(), "");
}

TEST(IncrementalDecoderTest, IncompleteTailAndInvalidBytes) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder decoder(tok.get());
  EXPECT_EQ(decoder.Add(0xF0), "");
  EXPECT_EQ(decoder.Add(0x9F), "");
  EXPECT_EQ(decoder.pending_bytes(), 2u);
  // A byte that cannot continue the sequence: the held bytes become U+FFFD.
  EXPECT_EQ(decoder.Add('x'), "\uFFFDx");
  EXPECT_EQ(decoder.Add(0xC3), "");
  EXPECT_EQ(decoder.Finish(), "\uFFFD");
  EXPECT_EQ(decoder.pending_bytes(), 0u);
  EXPECT_EQ(decoder.Add(0xC3), "");
  EXPECT_EQ(decoder.Add(0xA9), "é");
}

TEST(IncrementalDecoderTest, SkipsSpecialTokensWhenAsked) {
  auto tok = SmallTokenizer();
  ASSERT_NE(tok, nullptr);
  IncrementalDecoder keep(tok.get());
  IncrementalDecoder skip(tok.get(), /*skip_special_tokens=*/true);
  EXPECT_EQ(keep.Add(263), "<|end|>");
  EXPECT_EQ(skip.Add(263), "");
  EXPECT_EQ(skip.Add(258), " the");
}

// ------------------------------------------------------------ clear errors

absl::Status LoadError(const Json& json) {
  auto tokenizer = Tokenizer::FromJson(json.dump());
  return tokenizer.ok() ? absl::OkStatus() : tokenizer.status();
}

TEST(TokenizerErrorsTest, MalformedJson) {
  for (std::string_view text : {"", "{", "{\"model\": [}", "not json"}) {
    auto tokenizer = Tokenizer::FromJson(text);
    ASSERT_FALSE(tokenizer.ok());
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tokenizer.status().message(), HasSubstr("not valid JSON"));
  }
  EXPECT_THAT(LoadError(Json::array()).message(), HasSubstr("must be an object"));
  EXPECT_THAT(LoadError(Json::object()).message(), HasSubstr("model: is missing"));
}

TEST(TokenizerErrorsTest, FieldsAreNamed) {
  Json j = SmallTokenizerJson(false);
  j["model"]["merges"].push_back("a b c");
  EXPECT_THAT(LoadError(j).message(), HasSubstr("model.merges[6]"));

  j = SmallTokenizerJson(false);
  j["model"]["merges"].push_back(Json::array({"zz", "q"}));
  EXPECT_THAT(LoadError(j).message(), HasSubstr("not in the vocabulary"));

  j = SmallTokenizerJson(false);
  j["model"]["vocab"]["bad"] = "seven";
  EXPECT_THAT(LoadError(j).message(), HasSubstr("model.vocab"));

  j = SmallTokenizerJson(false);
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("unsupported normalizer"));

  j = SmallTokenizerJson(false);
  j["model"]["type"] = "WordPiece";
  EXPECT_THAT(LoadError(j).message(), HasSubstr("model.type"));

  j = SmallTokenizerJson(false);
  j["model"]["byte_fallback"] = true;
  EXPECT_THAT(LoadError(j).message(), HasSubstr("byte_fallback"));

  j = SmallTokenizerJson(false);
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("unsupported pre-tokenizer"));

  j = SmallTokenizerJson(false);
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "(?<=a)b"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("look-around is not supported"));

  j = SmallTokenizerJson(false);
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("unsupported decoder"));

  j = SmallTokenizerJson(false);
  j["added_tokens"].push_back({{"content", "x"}});
  EXPECT_THAT(LoadError(j).message(), HasSubstr("added_tokens[5]"));

  j = SmallTokenizerJson(false);
  j["added_tokens"].push_back({{"id", 1 << 30}, {"content", "<|huge|>"}});
  EXPECT_THAT(LoadError(j).message(), HasSubstr("added_tokens[5]: needs an integer \"id\" in"));

  auto missing = Tokenizer::FromFile("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------------- goldens

class GoldenTokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return SourceDir() + "/tests/fixtures/golden/" + GetParam(); }
};

TEST_P(GoldenTokenizerTest, IdsAndTextIdenticalToTokenizersLibrary) {
  auto tok = Tokenizer::FromModelDir(dir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Json cases = Json::parse(ReadFileOrDie(dir() + "/tokens.json"));
  ASSERT_TRUE(cases.is_array());
  ASSERT_GE(cases.size(), 20u);
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const bool add = c["add_special_tokens"].get<bool>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text, add);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected) << "text: \"" << text << "\" add_special_tokens=" << add;
    EXPECT_EQ((*tok)->Decode(expected), c["decoded"].get<std::string>()) << text;
    // Token by token, the incremental decoder gives the same text.
    IncrementalDecoder decoder(tok->get());
    std::string streamed;
    for (int32_t id : expected) {
      const std::string piece = decoder.Add(id);
      EXPECT_TRUE(IsValidUtf8(piece));
      streamed += piece;
    }
    streamed += decoder.Finish();
    EXPECT_EQ(streamed, c["decoded"].get<std::string>()) << text;
  }
}

TEST_P(GoldenTokenizerTest, MetadataFromTheModelFolder) {
  auto tok = Tokenizer::FromModelDir(dir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Json json = Json::parse(ReadFileOrDie(dir() + "/tokenizer.json"));
  const Json config = Json::parse(ReadFileOrDie(dir() + "/tokenizer_config.json"));
  EXPECT_EQ((*tok)->Fingerprint(), Sha256Hex(ReadFileOrDie(dir() + "/tokenizer.json")));
  EXPECT_EQ((*tok)->vocab_size(),
            static_cast<int32_t>(json["model"]["vocab"].size()));  // added ids are inside
  ASSERT_TRUE((*tok)->eos_id().has_value());
  EXPECT_EQ((*tok)->IdToToken(*(*tok)->eos_id()), config["eos_token"].get<std::string>());
  if (config.contains("bos_token")) {
    ASSERT_TRUE((*tok)->bos_id().has_value());
    EXPECT_EQ((*tok)->IdToToken(*(*tok)->bos_id()), config["bos_token"].get<std::string>());
  } else {
    EXPECT_EQ((*tok)->bos_id(), std::nullopt);
  }
  for (const Json& added : json["added_tokens"]) {
    EXPECT_EQ((*tok)->TokenToId(added["content"].get<std::string>()), added["id"].get<int32_t>());
    EXPECT_TRUE((*tok)->IsSpecial(added["id"].get<int32_t>()));
  }
}

// Pieces of the Llama 3 regex, as Oniguruma (here: Python's `regex` with \s
// spelled as Unicode White_Space) splits them; RE2 needs the look-ahead
// emulation and the Unicode \s for every one of these.
TEST(GoldenPreTokenizerTest, Llama3RegexPiecesMatchOniguruma) {
  auto tok = Tokenizer::FromModelDir(SourceDir() + "/tests/fixtures/golden/llama");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"Hello  world\n\n  x", {"Hello", " ", " world", "\n\n", " ", " x"}},
      {"a\u3000\u3000b", {"a", "\u3000", "\u3000b"}},
      {"I'M YOU'LL they'Ve", {"I", "'M", " YOU", "'LL", " they", "'Ve"}},
      {"12345 \u0663\u0663\u0663\u0663", {"123", "45", " ", "\u0663\u0663\u0663", "\u0663"}},
      {"x\t\t\ny", {"x", "\t\t\n", "y"}},
      {"  \u00a0z", {"  ", "\u00a0z"}},
      {"end.  \n", {"end", ".", "  \n"}},
      {"<|eot_id|> a", {"<|eot_id|>", " a"}},
  };
  for (const auto& [text, pieces] : cases) {
    absl::StatusOr<std::vector<std::string>> got = (*tok)->PreTokenize(text);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, pieces) << text;
  }
  EXPECT_FALSE((*tok)->PreTokenize("\xC3").ok());
}

// Strings beyond the fixture's list, checked for round trips: byte-level BPE
// must give back exactly the input.
TEST_P(GoldenTokenizerTest, RoundTripsArbitraryText) {
  auto tok = Tokenizer::FromModelDir(dir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const char* text :
       {"x", "  \n\n  \t\r\n", "ÀÉÎÕÜ ﬁ ½ ², Ⅻ", "🧑🏽‍🚀👨‍👩‍👧‍👦",
        "\u00a0\u2003nbsp", "a\u0301 e\u0301", "日本語😀中文", "'s'S'Ll'VE",
        "123456789012345678901234567890", "tab\tend\t", "<|im_start|><|im_start|>x<|im_end|>"}) {
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ((*tok)->Decode(*ids), text);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTokenizerTest, ::testing::Values("llama", "qwen2"));

// SentencePiece-style BPE (Llama-2 / Mistral / Gemma layouts) against ids and
// texts computed by Hugging Face `tokenizers` itself on the same files
// (tools/tokenizer_fixtures/: normalizer Prepend + Replace with the Strip
// decoder, and the Metaspace pre-tokenizer and decoder; byte fallback in both).
class SentencePieceTokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return SourceDir() + "/tests/fixtures/tokenizers/" + GetParam(); }
};

TEST_P(SentencePieceTokenizerTest, IdsAndTextIdenticalToTokenizersLibrary) {
  auto tok = Tokenizer::FromModelDir(dir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Json cases = Json::parse(ReadFileOrDie(dir() + "/tokens.json"));
  ASSERT_GE(cases.size(), 40u);
  int fallback_cases = 0;
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const bool add = c["add_special_tokens"].get<bool>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text, add);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected) << "text: \"" << text << "\" add_special_tokens=" << add;
    const std::string decoded = c["decoded"].get<std::string>();
    EXPECT_EQ((*tok)->Decode(expected), decoded) << text;
    for (int32_t id : expected) {
      const auto token = (*tok)->IdToToken(id);
      if (token && token->size() == 6 && token->substr(0, 3) == "<0x") ++fallback_cases;
    }
    // The stream keeps the leading space that Decode strips (a continuation's
    // space belongs to its text); otherwise it is the same text.
    IncrementalDecoder decoder(tok->get());
    std::string streamed;
    for (int32_t id : expected) streamed += decoder.Add(id);
    streamed += decoder.Finish();
    if (streamed != decoded && !streamed.empty() && streamed[0] == ' ') streamed.erase(0, 1);
    EXPECT_EQ(streamed, decoded) << text;
  }
  EXPECT_GT(fallback_cases, 0);  // the fixtures exercise the byte fallback
}

TEST_P(SentencePieceTokenizerTest, BosEosAndByteTokens) {
  auto tok = Tokenizer::FromModelDir(dir());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  const std::optional<int32_t> byte = (*tok)->TokenToId("<0x41>");
  ASSERT_TRUE(byte.has_value());
  EXPECT_EQ((*tok)->TokenBytes(*byte), "A");
  const std::optional<int32_t> space = (*tok)->TokenToId("\u2581");
  ASSERT_TRUE(space.has_value());
  EXPECT_EQ((*tok)->TokenBytes(*space), " ");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SentencePieceTokenizerTest,
                         ::testing::Values("llama2_style", "metaspace_style"));

TEST(SentencePieceErrorsTest, UnsupportedPiecesAreNamed) {
  const Json base = Json::parse(
      ReadFileOrDie(SourceDir() + "/tests/fixtures/tokenizers/llama2_style/tokenizer.json"));
  Json j = base;
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(LoadError(j).message(), HasSubstr("model.type: \"Unigram\" is not supported"));
  j = base;
  j["decoder"]["decoders"][3]["stop"] = 1;
  EXPECT_THAT(LoadError(j).message(), HasSubstr("decoder.decoders[3]"));
  j = base;
  j["decoder"] = {{"type", "ByteLevel"}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("unsupported decoder"));
  j = base;
  j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", " +"}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("normalizer.normalizers[1].pattern"));
  j = base;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "x"}};
  EXPECT_THAT(LoadError(j).message(), HasSubstr("pre_tokenizer.prepend_scheme"));
}

// ------------------------------------------------------------ UTF-8 and NFC

TEST(Utf8Test, LossyFollowsMaximalSubparts) {
  EXPECT_EQ(Utf8Lossy("ok"), "ok");
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), "\uFFFD");              // truncated 4-byte: one
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), "\uFFFD\uFFFD");            // overlong lead: two
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // surrogate
  EXPECT_EQ(Utf8Lossy("\xE2\x82z"), "\uFFFDz");
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xE2\x82"), 2u);
  EXPECT_EQ(Utf8CompletePrefixLength("ab\xFF"), 3u);
}

TEST(Utf8Test, Nfc) {
  EXPECT_EQ(NormalizeNfc("e\u0301"), "\u00e9");
  EXPECT_EQ(NormalizeNfc("\u00e9"), "\u00e9");
  // Canonical ordering: dot below (220) before acute (230), then composition.
  EXPECT_EQ(NormalizeNfc("a\u0301\u0323"), "\u1ea1\u0301");
  // Hangul jamo compose algorithmically; a singleton (Ångström sign) maps.
  EXPECT_EQ(NormalizeNfc("\u1100\u1161\u11a8"), "\uac01");
  EXPECT_EQ(NormalizeNfc("\u212b"), "\u00c5");
  // Composition exclusions stay decomposed.
  EXPECT_EQ(NormalizeNfc("\u0958"), "\u0915\u093c");
  EXPECT_EQ(NormalizeNfc("plain ascii"), "plain ascii");
}

TEST(Sha256Test, StandardVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Fed in odd-sized chunks, the digest is the same.
  Sha256 hasher;
  const std::string text(1000, 'q');
  for (size_t i = 0; i < text.size(); i += 37) hasher.Update(std::string_view(text).substr(i, 37));
  const auto digest = hasher.Finish();
  std::string hex;
  for (uint8_t b : digest) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex += kHex[b >> 4];
    hex += kHex[b & 15];
  }
  EXPECT_EQ(hex, Sha256Hex(text));
}

}  // namespace
}  // namespace arbor::runtime
