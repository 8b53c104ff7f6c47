#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <deque>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/sha256.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

namespace arbor::runtime {
namespace {

using Json = nlohmann::json;

// This Abseil does not alias std::string_view; its containers and StrCat
// take absl::string_view.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }

// ---------------------------------------------------------------------------
// Byte-level alphabet (GPT-2's bytes_to_unicode): printable bytes stand for
// themselves, the others map to U+0100 onwards in byte order.

struct ByteLevelAlphabet {
  std::string byte_to_utf8[256];
  absl::flat_hash_map<char32_t, uint8_t> char_to_byte;
};

const ByteLevelAlphabet& Alphabet() {
  static const ByteLevelAlphabet* alphabet = [] {
    auto* a = new ByteLevelAlphabet;
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      AppendUtf8(cp, &a->byte_to_utf8[b]);
      a->char_to_byte[cp] = static_cast<uint8_t>(b);
    }
    return a;
  }();
  return *alphabet;
}

std::string ToByteLevel(std::string_view bytes) {
  const ByteLevelAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += alphabet.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

// The bytes a token stands for under the ByteLevel decoder: every character
// mapped back to its byte, or the token's own UTF-8 when some character is
// not in the alphabet (as `tokenizers` does, e.g. for "<|im_start|>" it is
// the same either way).
std::string FromByteLevel(std::string_view token) {
  const ByteLevelAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    const Utf8Unit unit = ReadUtf8Unit(token, pos);
    if (unit.kind != Utf8Unit::kValid) return std::string(token);
    auto it = alphabet.char_to_byte.find(unit.code_point);
    if (it == alphabet.char_to_byte.end()) return std::string(token);
    out.push_back(static_cast<char>(it->second));
    pos += unit.length;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Oniguruma pre-tokenizer regexes on RE2.

// Unicode White_Space as an RE2 class body (Oniguruma's \s on UTF-8).
constexpr char kWhitespaceClass[] = "\\t-\\r\\x{85}\\p{Z}";
constexpr char kWordClass[] = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
// Ids beyond this are rejected: id tables are dense (real vocabularies hold
// at most a few hundred thousand tokens).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// The one look-ahead the byte-level regexes use, emulated by RegexSplitter.
constexpr char kLookaheadAlternative[] = "\\s+(?!\\S)";
constexpr char kGpt2Pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Splits `pattern` at its top-level '|' (outside groups and classes).
absl::StatusOr<std::vector<std::string>> SplitAlternatives(std::string_view pattern) {
  std::vector<std::string> alternatives;
  std::string current;
  int depth = 0;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      current += pattern.substr(i, 2);
      ++i;
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      current += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      current += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') current += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') current += pattern[++i];
      continue;
    }
    if (c == '(') ++depth;
    if (c == ')' && --depth < 0) {
      return absl::InvalidArgumentError(absl::StrCat("unbalanced ')' at offset ", i));
    }
    if (c == '|' && depth == 0) {
      alternatives.push_back(std::move(current));
      current.clear();
      continue;
    }
    current += c;
  }
  if (depth != 0 || in_class) {
    return absl::InvalidArgumentError("unterminated group or character class");
  }
  alternatives.push_back(std::move(current));
  return alternatives;
}

// Translates one alternative of an Oniguruma regex to RE2 syntax: Unicode
// \s \S \d \w, possessive quantifiers and atomic groups as greedy ones (the
// same matches for these patterns, which never need to backtrack into them).
absl::StatusOr<std::string> TranslateAlternative(std::string_view alt) {
  std::string out;
  bool in_class = false;
  bool after_quantifier = false;
  for (size_t i = 0; i < alt.size();) {
    const char c = alt[i];
    if (c == '\\') {
      if (i + 1 >= alt.size()) return absl::InvalidArgumentError("trailing backslash");
      const char d = alt[i + 1];
      after_quantifier = false;
      const auto outside_only = [&](const char* what) -> absl::Status {
        if (in_class) {
          return absl::InvalidArgumentError(
              absl::StrCat("\\", what, " inside a character class is not supported"));
        }
        return absl::OkStatus();
      };
      switch (d) {
        case 's':
          absl::StrAppend(&out, in_class ? "" : "[", kWhitespaceClass, in_class ? "" : "]");
          i += 2;
          continue;
        case 'S':
          if (auto s = outside_only("S"); !s.ok()) return s;
          absl::StrAppend(&out, "[^", kWhitespaceClass, "]");
          i += 2;
          continue;
        case 'd':
          out += "\\p{Nd}";
          i += 2;
          continue;
        case 'D':
          if (auto s = outside_only("D"); !s.ok()) return s;
          out += "\\P{Nd}";
          i += 2;
          continue;
        case 'w':
          absl::StrAppend(&out, in_class ? "" : "[", kWordClass, in_class ? "" : "]");
          i += 2;
          continue;
        case 'W':
          if (auto s = outside_only("W"); !s.ok()) return s;
          absl::StrAppend(&out, "[^", kWordClass, "]");
          i += 2;
          continue;
        case 'p':
        case 'P':
        case 'x': {
          size_t end = i + 2;
          if (end < alt.size() && alt[end] == '{') {
            end = alt.find('}', end);
            if (end == std::string_view::npos) {
              return absl::InvalidArgumentError("unterminated \\p{...} or \\x{...}");
            }
            ++end;
          } else {
            end = std::min(alt.size(), end + (d == 'x' ? 2 : 1));
          }
          out += alt.substr(i, end - i);
          i = end;
          continue;
        }
        default:
          out += alt.substr(i, 2);
          i += 2;
          continue;
      }
    }
    if (in_class) {
      if (c == '[') {
        return absl::InvalidArgumentError("nested character classes are not supported");
      }
      if (c == ']') in_class = false;
      out += c;
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      after_quantifier = false;
      out += c;
      ++i;
      if (i < alt.size() && alt[i] == '^') out += alt[i++];
      if (i < alt.size() && alt[i] == ']') out += "\\]", ++i;
      continue;
    }
    if (c == '(') {
      after_quantifier = false;
      if (i + 1 < alt.size() && alt[i + 1] == '?') {
        const std::string_view rest = alt.substr(i + 2);
        if (rest.starts_with("=") || rest.starts_with("!") || rest.starts_with("<=") ||
            rest.starts_with("<!")) {
          return absl::InvalidArgumentError(
              "look-around is not supported except as the alternative \\s+(?!\\S)");
        }
        if (rest.starts_with(">")) {  // atomic group
          out += "(?:";
          i += 3;
          continue;
        }
        out += "(?";
        i += 2;
        continue;
      }
      out += c;
      ++i;
      continue;
    }
    if (c == '*' || c == '+' || c == '?') {
      if (after_quantifier && c == '+') {  // possessive: drop the '+'
        after_quantifier = false;
        ++i;
        continue;
      }
      out += c;
      after_quantifier = !after_quantifier;  // a '?' after a quantifier makes it lazy
      ++i;
      continue;
    }
    if (c == '{') {
      const size_t end = alt.find('}', i);
      if (end != std::string_view::npos &&
          alt.substr(i + 1, end - i - 1).find_first_not_of("0123456789,") ==
              std::string_view::npos) {
        out += alt.substr(i, end - i + 1);
        i = end + 1;
        after_quantifier = true;
        continue;
      }
    }
    after_quantifier = false;
    out += c;
    ++i;
  }
  return out;
}

std::unique_ptr<RE2> CompileRe2(const std::string& pattern, absl::Status* status) {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(int64_t{64} << 20);
  auto re = std::make_unique<RE2>(pattern, options);
  if (!re->ok()) {
    *status = absl::InvalidArgumentError(
        absl::StrCat("RE2 rejects the translated regex /", pattern, "/: ", re->error()));
    return nullptr;
  }
  return re;
}

// A Split pre-tokenizer with behavior "Isolated": the text is cut into the
// regex's matches and the gaps between them.
class RegexSplitter {
 public:
  static absl::StatusOr<std::unique_ptr<RegexSplitter>> FromOniguruma(std::string_view pattern) {
    auto splitter = std::unique_ptr<RegexSplitter>(new RegexSplitter());
    absl::StatusOr<std::vector<std::string>> alternatives = SplitAlternatives(pattern);
    if (!alternatives.ok()) return alternatives.status();
    std::vector<std::string> translated;
    int lookahead_index = -1;
    for (size_t i = 0; i < alternatives->size(); ++i) {
      const std::string& alt = (*alternatives)[i];
      if (alt == kLookaheadAlternative) {
        if (lookahead_index >= 0) {
          return absl::InvalidArgumentError("more than one \\s+(?!\\S) alternative");
        }
        lookahead_index = static_cast<int>(i);
        translated.push_back(absl::StrCat("[", kWhitespaceClass, "]+"));
        continue;
      }
      absl::StatusOr<std::string> t = TranslateAlternative(alt);
      if (!t.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("alternative '", alt, "': ", t.status().message()));
      }
      translated.push_back(*std::move(t));
    }
    absl::Status status;
    splitter->full_ = CompileRe2(absl::StrJoin(translated, "|"), &status);
    if (!status.ok()) return status;
    if (lookahead_index >= 0) {
      splitter->lookahead_ = true;
      if (lookahead_index > 0) {
        splitter->head_ = CompileRe2(
            absl::StrJoin(translated.begin(), translated.begin() + lookahead_index, "|"), &status);
      }
      if (lookahead_index + 1 < static_cast<int>(translated.size())) {
        splitter->tail_ = CompileRe2(
            absl::StrJoin(translated.begin() + lookahead_index + 1, translated.end(), "|"),
            &status);
      }
      if (!status.ok()) return status;
    }
    return splitter;
  }

  static absl::StatusOr<std::unique_ptr<RegexSplitter>> FromLiteral(std::string_view literal) {
    if (literal.empty()) return absl::InvalidArgumentError("empty Split string pattern");
    auto splitter = std::unique_ptr<RegexSplitter>(new RegexSplitter());
    absl::Status status;
    splitter->full_ = CompileRe2(RE2::QuoteMeta(literal), &status);
    if (!status.ok()) return status;
    return splitter;
  }

  // Appends the non-empty pieces of `text` to `out`.
  void Split(std::string_view text, std::vector<std::string_view>* out) const {
    size_t last = 0;  // end of the previous piece
    size_t pos = 0;   // where the next search starts
    re2::StringPiece match;
    // Anchored first: these regexes cover nearly every character, so a match
    // usually starts right here, and an anchored search skips RE2's reverse
    // scan for the start.
    while (pos < text.size() &&
           (full_->Match(text, pos, text.size(), RE2::ANCHOR_START, &match, 1) ||
            full_->Match(text, pos, text.size(), RE2::UNANCHORED, &match, 1))) {
      size_t start = match.data() - text.data();
      size_t end = start + match.size();
      if (end == start) {  // empty match: no piece, move on by one character
        pos = start + ReadUtf8Unit(text, start).length;
        continue;
      }
      if (lookahead_ && end < text.size() && !IsUnicodeWhitespace(CharAt(text, end)) &&
          IsAllWhitespace(text.substr(start, end - start)) &&
          (head_ == nullptr ||
           !head_->Match(text, start, text.size(), RE2::ANCHOR_START, nullptr, 0))) {
        // The match came from \s+(?!\S) and a non-space follows: Oniguruma
        // backtracks one character, or on to the next alternatives when the
        // run is one character long.
        const size_t last_char = LastCharStart(text, start, end);
        if (last_char > start) {
          end = last_char;
        } else if (tail_ != nullptr &&
                   tail_->Match(text, start, text.size(), RE2::ANCHOR_START, &match, 1) &&
                   !match.empty()) {
          end = start + match.size();
        } else {
          pos = end;  // no match starts here
          continue;
        }
      }
      if (start > last) out->push_back(text.substr(last, start - last));
      out->push_back(text.substr(start, end - start));
      last = pos = end;
    }
    if (last < text.size()) out->push_back(text.substr(last));
  }

 private:
  RegexSplitter() = default;

  static char32_t CharAt(std::string_view text, size_t pos) {
    const Utf8Unit unit = ReadUtf8Unit(text, pos);
    return unit.kind == Utf8Unit::kValid ? unit.code_point : 0xFFFD;
  }
  static bool IsAllWhitespace(std::string_view text) {
    for (size_t pos = 0; pos < text.size();) {
      const Utf8Unit unit = ReadUtf8Unit(text, pos);
      if (unit.kind != Utf8Unit::kValid || !IsUnicodeWhitespace(unit.code_point)) return false;
      pos += unit.length;
    }
    return true;
  }
  static size_t LastCharStart(std::string_view text, size_t start, size_t end) {
    size_t p = end - 1;
    while (p > start && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
    return p;
  }

  std::unique_ptr<RE2> full_;
  bool lookahead_ = false;
  std::unique_ptr<RE2> head_;  // alternatives before \s+(?!\S); null when none
  std::unique_ptr<RE2> tail_;  // alternatives after it; null when none
};

// ---------------------------------------------------------------------------
// Added tokens: leftmost-longest matching as `tokenizers`' Aho-Corasick.

bool IsWordChar(std::string_view text, size_t pos) {
  const Utf8Unit unit = ReadUtf8Unit(text, pos);
  if (unit.kind != Utf8Unit::kValid) return false;
  const char32_t cp = unit.code_point;
  if (cp < 0x80) return std::isalnum(static_cast<int>(cp)) != 0;
  static const RE2* alnum = new RE2("[\\p{L}\\p{N}\\p{Mn}\\p{Mc}]");
  return RE2::FullMatch(text.substr(pos, unit.length), *alnum);
}

struct Segment {
  std::string_view text;
  int32_t added_id = -1;  // >= 0: the segment is this added token
};

class AddedTokenMatcher {
 public:
  void Add(const AddedToken* token, std::string pattern) {
    if (pattern.empty()) return;
    const uint8_t first = static_cast<uint8_t>(pattern[0]);
    entries_.push_back({token, std::move(pattern)});
    by_first_byte_[first].push_back(entries_.size() - 1);
  }
  void Finalize() {
    for (auto& list : by_first_byte_) {
      std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
        return entries_[a].pattern.size() > entries_[b].pattern.size();
      });
    }
  }
  bool empty() const { return entries_.empty(); }

  // Splits `text` into added-token segments and the text between them.
  void Split(std::string_view text, std::vector<Segment>* out) const {
    size_t offset = 0;  // start of the text not yet emitted
    size_t pos = 0;
    while (pos < text.size()) {
      const Entry* found = nullptr;
      for (size_t index : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
        const Entry& e = entries_[index];
        if (text.compare(pos, e.pattern.size(), e.pattern) == 0) {
          found = &e;  // longest first
          break;
        }
      }
      if (found == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos;
      size_t stop = pos + found->pattern.size();
      pos = stop;
      const AddedToken& token = *found->token;
      if (token.single_word && ((start > 0 && IsWordChar(text, PrevCharStart(text, start))) ||
                                (stop < text.size() && IsWordChar(text, stop)))) {
        continue;
      }
      if (token.lstrip) {
        size_t s = start;
        while (s > offset) {
          const size_t p = PrevCharStart(text, s);
          const Utf8Unit unit = ReadUtf8Unit(text, p);
          if (unit.kind != Utf8Unit::kValid || !IsUnicodeWhitespace(unit.code_point)) break;
          s = p;
        }
        start = s;
      }
      if (token.rstrip) {
        while (stop < text.size()) {
          const Utf8Unit unit = ReadUtf8Unit(text, stop);
          if (unit.kind != Utf8Unit::kValid || !IsUnicodeWhitespace(unit.code_point)) break;
          stop += unit.length;
        }
        pos = stop;
      }
      if (start > offset) out->push_back({text.substr(offset, start - offset), -1});
      out->push_back({text.substr(start, stop - start), token.id});
      offset = stop;
    }
    if (offset < text.size()) out->push_back({text.substr(offset), -1});
  }

 private:
  struct Entry {
    const AddedToken* token;
    std::string pattern;
  };
  static size_t PrevCharStart(std::string_view text, size_t pos) {
    size_t p = pos - 1;
    while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
    return p;
  }
  std::vector<Entry> entries_;
  std::vector<size_t> by_first_byte_[256];
};

// ---------------------------------------------------------------------------
// JSON helpers.

absl::Status FieldError(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", field, ": ", what));
}

std::string TypeOf(const Json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  return (it != j.end() && it->is_string()) ? it->get<std::string>() : "";
}

// Reads an optional boolean field; `fallback` when absent or null.
absl::StatusOr<bool> BoolField(const Json& j, const char* name, bool fallback,
                               const std::string& where) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(absl::StrCat(where, ".", name), "must be a boolean");
  return it->get<bool>();
}

std::string ShortJson(const Json& j, std::string* storage) {
  *storage = j.dump();
  if (storage->size() > 80) storage->resize(80), storage->append("...");
  return *storage;
}

}  // namespace

// ---------------------------------------------------------------------------

struct Tokenizer::Impl {
  struct PreTokenizerStep {
    std::unique_ptr<RegexSplitter> splitter;  // null: no splitting
    bool add_prefix_space = false;            // ByteLevel only
  };
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  // Model.
  absl::flat_hash_map<std::string, int32_t> vocab;  // byte-level token -> id
  absl::flat_hash_map<uint64_t, Merge> merges;      // (left id, right id) -> merge
  int32_t byte_ids[256];                            // id of each single-byte token, or -1
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  // Pipeline.
  bool nfc = false;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<int32_t> prefix_ids;  // post-processor, when add_special_tokens
  std::vector<int32_t> suffix_ids;

  // Added tokens.
  std::vector<AddedToken> added;
  absl::flat_hash_map<std::string, int32_t> added_ids;  // content -> id
  AddedTokenMatcher raw_matcher;                        // normalized == false
  AddedTokenMatcher normalized_matcher;                 // normalized == true

  // Ids.
  std::vector<std::string> id_token;  // vocabulary form, by id
  std::vector<std::string> id_bytes;  // decoded bytes, by id
  std::vector<uint8_t> id_known;
  std::vector<uint8_t> id_special;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;
  std::string fingerprint;

  // BPE results per word (raw bytes), bounded; sharded by hash so that
  // threads encoding at once rarely wait on one another.
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 4096;
  static constexpr size_t kMaxCachedWordBytes = 256;
  struct CacheShard {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, std::vector<int32_t>> words ABSL_GUARDED_BY(mu);
  };
  mutable CacheShard cache[kCacheShards];

  absl::Status ParseNormalizer(const Json& j);
  absl::Status ParsePreTokenizer(const Json& j, const std::string& where);
  absl::Status ParseModel(const Json& j);
  absl::Status ParsePostProcessor(const Json& j, const std::string& where);
  absl::Status ParseDecoder(const Json& j, const std::string& where);
  absl::Status ParseAddedTokens(const Json& j);
  absl::Status ParseConfig(std::string_view config_json);
  void BuildIdTables();

  // Calls emit(word, -1) for each word BPE must encode and emit(text, id) for
  // each added token, in order. `text` must be valid UTF-8.
  void Split(std::string_view text,
             const std::function<void(std::string_view, int32_t)>& emit) const;
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids) const;
  void BytePairMerge(std::string_view word, std::vector<int32_t>* ids) const;
};

absl::Status Tokenizer::Impl::ParseNormalizer(const Json& j) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "NFC") {
    nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      return FieldError("normalizer.normalizers", "must be an array");
    }
    for (const Json& n : *it) {
      if (absl::Status s = ParseNormalizer(n); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError("normalizer", absl::StrCat("unsupported normalizer ", ShortJson(j, &dump),
                                               " (supported: null, NFC, Sequence of NFC)"));
}

absl::Status Tokenizer::Impl::ParsePreTokenizer(const Json& j, const std::string& where) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return FieldError(absl::StrCat(where, ".pretokenizers"), "must be an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = ParsePreTokenizer((*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]"));
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    PreTokenizerStep step;
    absl::StatusOr<bool> prefix = BoolField(j, "add_prefix_space", true, where);
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<bool> use_regex = BoolField(j, "use_regex", true, where);
    if (!use_regex.ok()) return use_regex.status();
    step.add_prefix_space = *prefix;
    if (*use_regex) {
      auto splitter = RegexSplitter::FromOniguruma(kGpt2Pattern);
      if (!splitter.ok()) return splitter.status();
      step.splitter = *std::move(splitter);
    }
    pre_tokenizer.push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Split") {
    auto behavior = j.find("behavior");
    if (behavior == j.end() || *behavior != "Isolated") {
      return FieldError(absl::StrCat(where, ".behavior"), "only \"Isolated\" is supported");
    }
    absl::StatusOr<bool> invert = BoolField(j, "invert", false, where);
    if (!invert.ok()) return invert.status();
    if (*invert) return FieldError(absl::StrCat(where, ".invert"), "true is not supported");
    auto pattern = j.find("pattern");
    absl::StatusOr<std::unique_ptr<RegexSplitter>> splitter;
    if (pattern != j.end() && pattern->is_object() && pattern->contains("Regex") &&
        (*pattern)["Regex"].is_string()) {
      splitter = RegexSplitter::FromOniguruma((*pattern)["Regex"].get<std::string>());
    } else if (pattern != j.end() && pattern->is_object() && pattern->contains("String") &&
               (*pattern)["String"].is_string()) {
      splitter = RegexSplitter::FromLiteral((*pattern)["String"].get<std::string>());
    } else {
      return FieldError(absl::StrCat(where, ".pattern"),
                        "must be {\"Regex\": string} or {\"String\": string}");
    }
    if (!splitter.ok()) {
      return FieldError(absl::StrCat(where, ".pattern"), splitter.status().message());
    }
    PreTokenizerStep step;
    step.splitter = *std::move(splitter);
    pre_tokenizer.push_back(std::move(step));
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported pre-tokenizer ", ShortJson(j, &dump),
                                        " (supported: ByteLevel, Split, Sequence)"));
}

absl::Status Tokenizer::Impl::ParseModel(const Json& j) {
  if (!j.is_object()) return FieldError("model", "must be an object");
  const std::string type = TypeOf(j);
  if (!type.empty() && type != "BPE") {
    return FieldError("model.type", absl::StrCat("\"", type, "\" is not supported (only BPE)"));
  }
  auto dropout = j.find("dropout");
  if (dropout != j.end() && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return FieldError("model.dropout", "BPE dropout is not supported");
  }
  for (const char* name : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = j.find(name);
    if (it != j.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
      return FieldError(absl::StrCat("model.", name), "is not supported for byte-level BPE");
    }
  }
  absl::StatusOr<bool> byte_fallback = BoolField(j, "byte_fallback", false, "model");
  if (!byte_fallback.ok()) return byte_fallback.status();
  if (*byte_fallback) {
    return FieldError("model.byte_fallback", "true (SentencePiece-style BPE) is not supported");
  }
  absl::StatusOr<bool> ignore = BoolField(j, "ignore_merges", false, "model");
  if (!ignore.ok()) return ignore.status();
  ignore_merges = *ignore;
  absl::StatusOr<bool> fuse = BoolField(j, "fuse_unk", false, "model");
  if (!fuse.ok()) return fuse.status();
  fuse_unk = *fuse;

  auto vocab_it = j.find("vocab");
  if (vocab_it == j.end() || !vocab_it->is_object()) {
    return FieldError("model.vocab", "must be an object of token -> id");
  }
  vocab.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > kMaxTokenId) {
      return FieldError("model.vocab", absl::StrCat("id of \"", it.key(), "\" is not a valid id"));
    }
    vocab[it.key()] = it.value().get<int32_t>();
  }

  auto unk = j.find("unk_token");
  if (unk != j.end() && unk->is_string()) {
    auto found = vocab.find(unk->get<std::string>());
    if (found == vocab.end()) return FieldError("model.unk_token", "is not in the vocabulary");
    unk_id = found->second;
  }

  const ByteLevelAlphabet& alphabet = Alphabet();
  for (int b = 0; b < 256; ++b) {
    auto found = vocab.find(alphabet.byte_to_utf8[b]);
    byte_ids[b] = found == vocab.end() ? -1 : found->second;
  }

  auto merges_it = j.find("merges");
  if (merges_it == j.end() || !merges_it->is_array()) {
    return FieldError("model.merges", "must be an array");
  }
  merges.reserve(merges_it->size());
  for (size_t rank = 0; rank < merges_it->size(); ++rank) {
    const Json& m = (*merges_it)[rank];
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return FieldError(absl::StrCat("model.merges[", rank, "]"),
                          absl::StrCat("\"", s, "\" is not two tokens separated by one space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return FieldError(absl::StrCat("model.merges[", rank, "]"),
                        "must be \"a b\" or [\"a\", \"b\"]");
    }
    auto l = vocab.find(left);
    auto r = vocab.find(right);
    auto merged = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || merged == vocab.end()) {
      return FieldError(absl::StrCat("model.merges[", rank, "]"),
                        absl::StrCat("\"", left, "\" + \"", right,
                                     "\": a part or the merged token is not in the vocabulary"));
    }
    const uint64_t key =
        (uint64_t{static_cast<uint32_t>(l->second)} << 32) | static_cast<uint32_t>(r->second);
    merges[key] = Merge{static_cast<int32_t>(rank), merged->second};
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::ParsePostProcessor(const Json& j, const std::string& where) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) {
      return FieldError(absl::StrCat(where, ".processors"), "must be an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = ParsePostProcessor((*it)[i], absl::StrCat(where, ".processors[", i, "]"));
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    auto single = j.find("single");
    auto specials = j.find("special_tokens");
    if (single == j.end() || !single->is_array()) {
      return FieldError(absl::StrCat(where, ".single"), "must be an array");
    }
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (const Json& item : *single) {
      if (item.contains("Sequence")) {
        if (seen_sequence) return FieldError(absl::StrCat(where, ".single"), "two sequences");
        seen_sequence = true;
        continue;
      }
      const Json* special = item.contains("SpecialToken") ? &item["SpecialToken"] : nullptr;
      if (special == nullptr || !special->contains("id") || !(*special)["id"].is_string()) {
        std::string dump;
        return FieldError(absl::StrCat(where, ".single"),
                          absl::StrCat("unsupported item ", ShortJson(item, &dump)));
      }
      const std::string name = (*special)["id"].get<std::string>();
      if (specials == j.end() || !specials->is_object() || !specials->contains(name) ||
          !(*specials)[name].contains("ids") || !(*specials)[name]["ids"].is_array()) {
        return FieldError(absl::StrCat(where, ".special_tokens"),
                          absl::StrCat("no ids for \"", name, "\""));
      }
      for (const Json& id : (*specials)[name]["ids"]) {
        if (!id.is_number_integer()) {
          return FieldError(absl::StrCat(where, ".special_tokens"),
                            absl::StrCat("ids of \"", name, "\" must be integers"));
        }
        (seen_sequence ? after : before).push_back(id.get<int32_t>());
      }
    }
    if (!seen_sequence) return FieldError(absl::StrCat(where, ".single"), "has no $A sequence");
    // A later processor wraps what the earlier ones produced.
    prefix_ids.insert(prefix_ids.begin(), before.begin(), before.end());
    suffix_ids.insert(suffix_ids.end(), after.begin(), after.end());
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported post-processor ", ShortJson(j, &dump),
                                        " (supported: ByteLevel, TemplateProcessing, Sequence)"));
}

absl::Status Tokenizer::Impl::ParseDecoder(const Json& j, const std::string& where) {
  const std::string type = TypeOf(j);
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence" && j.contains("decoders") && j["decoders"].is_array() &&
      !j["decoders"].empty()) {
    for (size_t i = 0; i < j["decoders"].size(); ++i) {
      absl::Status s = ParseDecoder(j["decoders"][i], absl::StrCat(where, ".decoders[", i, "]"));
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported decoder ", ShortJson(j, &dump),
                                        " (byte-level BPE needs the ByteLevel decoder)"));
}

absl::Status Tokenizer::Impl::ParseAddedTokens(const Json& j) {
  if (j.is_null()) return absl::OkStatus();
  if (!j.is_array()) return FieldError("added_tokens", "must be an array");
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& t = j[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        t["id"].get<int64_t>() < 0 || t["id"].get<int64_t>() > kMaxTokenId ||
        !t.contains("content") || !t["content"].is_string()) {
      return FieldError(where, absl::StrCat("needs an integer \"id\" in [0, ", kMaxTokenId,
                                            "] and a string \"content\""));
    }
    AddedToken token;
    token.id = t["id"].get<int32_t>();
    token.content = t["content"].get<std::string>();
    const std::pair<const char*, bool*> flags[] = {{"special", &token.special},
                                                   {"single_word", &token.single_word},
                                                   {"lstrip", &token.lstrip},
                                                   {"rstrip", &token.rstrip},
                                                   {"normalized", &token.normalized}};
    for (const auto& [name, field] : flags) {
      // `tokenizers` defaults "normalized" to !special (read after "special").
      absl::StatusOr<bool> value =
          BoolField(t, name, field == &token.normalized ? !token.special : false, where);
      if (!value.ok()) return value.status();
      *field = *value;
    }
    if (!IsValidUtf8(token.content)) return FieldError(where, "content is not valid UTF-8");
    added_ids[token.content] = token.id;
    added.push_back(std::move(token));
  }
  for (const AddedToken& token : added) {
    if (token.normalized) {
      normalized_matcher.Add(&token, nfc ? NormalizeNfc(token.content) : token.content);
    } else {
      raw_matcher.Add(&token, token.content);
    }
  }
  raw_matcher.Finalize();
  normalized_matcher.Finalize();
  return absl::OkStatus();
}

void Tokenizer::Impl::BuildIdTables() {
  int32_t size = 0;
  for (const auto& [token, id] : vocab) size = std::max(size, id + 1);
  for (const AddedToken& token : added) size = std::max(size, token.id + 1);
  id_token.assign(size, std::string());
  id_bytes.assign(size, std::string());
  id_known.assign(size, 0);
  id_special.assign(size, 0);
  for (const auto& [token, id] : vocab) {
    id_token[id] = token;
    id_known[id] = 1;
  }
  for (const AddedToken& token : added) {  // added tokens take precedence
    id_token[token.id] = token.content;
    id_known[token.id] = 1;
    id_special[token.id] = token.special ? 1 : 0;
  }
  for (int32_t id = 0; id < size; ++id) {
    if (id_known[id]) id_bytes[id] = FromByteLevel(id_token[id]);
  }
}

absl::Status Tokenizer::Impl::ParseConfig(std::string_view config_json) {
  // Defaults first: BOS from the post-processor, EOS from well-known names.
  if (prefix_ids.size() == 1) bos = prefix_ids[0];
  for (const char* name :
       {"<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    auto it = added_ids.find(name);
    if (it != added_ids.end() && id_special[it->second]) {
      eos = it->second;
      break;
    }
  }
  if (config_json.empty()) return absl::OkStatus();
  Json config;
  try {
    config = Json::parse(config_json);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", e.what()));
  }
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json: must be a JSON object");
  }
  const std::pair<const char*, std::optional<int32_t>*> names[] = {{"bos_token", &bos},
                                                                   {"eos_token", &eos}};
  for (const auto& [name, target] : names) {
    auto it = config.find(name);
    if (it == config.end() || it->is_null()) continue;
    std::string content;
    if (it->is_string()) {
      content = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      content = (*it)["content"].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer_config.json: ", name, " must be a string or {content}"));
    }
    auto added_it = added_ids.find(content);
    auto vocab_it = vocab.find(content);
    if (added_it != added_ids.end()) {
      *target = added_it->second;
    } else if (vocab_it != vocab.end()) {
      *target = vocab_it->second;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer_config.json: ", name, " \"", content, "\" is not a token"));
    }
  }
  return absl::OkStatus();
}

void Tokenizer::Impl::BytePairMerge(std::string_view word, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int prev;
    int next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (char c : word) {
    int32_t id = byte_ids[static_cast<uint8_t>(c)];
    if (id < 0) {
      // Not in the vocabulary: `tokenizers` uses unk_token, or drops the byte.
      if (unk_id < 0) continue;
      if (fuse_unk && !symbols.empty() && symbols.back().id == unk_id) continue;
      id = unk_id;
    }
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto find_merge = [&](int32_t left, int32_t right) -> const Merge* {
    auto it =
        merges.find((uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right));
    return it == merges.end() ? nullptr : &it->second;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, static_cast<int>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* m = find_merge(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale candidate
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* pm = find_merge(symbols[left.prev].id, left.id)) {
        queue.push({pm->rank, left.prev, pm->new_id});
      }
    }
    if (left.next >= 0) {
      if (const Merge* nm = find_merge(left.id, symbols[left.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

void Tokenizer::Impl::Split(std::string_view text,
                            const std::function<void(std::string_view, int32_t)>& emit) const {
  // 1. Added tokens on the raw text, 2. normalization and normalized added
  // tokens on what is left, 3. pre-tokenization of the rest.
  std::deque<std::string> storage;  // owns normalized text and prefixed words
  std::vector<Segment> raw_segments;
  if (raw_matcher.empty()) {
    raw_segments.push_back({text, -1});
  } else {
    raw_matcher.Split(text, &raw_segments);
  }
  std::vector<Segment> segments;
  for (const Segment& segment : raw_segments) {
    if (segment.added_id >= 0) {
      segments.push_back(segment);
      continue;
    }
    std::string_view normalized = segment.text;
    if (nfc) normalized = storage.emplace_back(NormalizeNfc(segment.text));
    if (normalized_matcher.empty()) {
      segments.push_back({normalized, -1});
    } else {
      normalized_matcher.Split(normalized, &segments);
    }
  }
  std::vector<std::string_view> pieces, next;
  for (const Segment& segment : segments) {
    if (segment.added_id >= 0) {
      emit(segment.text, segment.added_id);
      continue;
    }
    if (segment.text.empty()) continue;
    pieces.assign(1, segment.text);
    for (const PreTokenizerStep& step : pre_tokenizer) {
      next.clear();
      for (std::string_view piece : pieces) {
        if (step.add_prefix_space && piece[0] != ' ') {
          piece = storage.emplace_back(absl::StrCat(" ", AbslView(piece)));
        }
        if (step.splitter == nullptr) {
          next.push_back(piece);
        } else {
          step.splitter->Split(piece, &next);
        }
      }
      pieces.swap(next);
    }
    for (std::string_view word : pieces) emit(word, -1);
  }
}

void Tokenizer::Impl::EncodeWord(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges) {
    auto it = vocab.find(ToByteLevel(word));
    if (it != vocab.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  if (word.size() == 1) {  // the most common case needs neither merges nor the cache
    const int32_t id = byte_ids[static_cast<uint8_t>(word[0])];
    if (id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  // High bits pick the shard: the map itself uses the low ones.
  CacheShard& shard = cache[(absl::HashOf(AbslView(word)) >> 48) % kCacheShards];
  if (cacheable) {
    absl::MutexLock lock(&shard.mu);
    auto it = shard.words.find(AbslView(word));
    if (it != shard.words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  BytePairMerge(word, ids);
  if (cacheable) {
    std::vector<int32_t> result(ids->begin() + first, ids->end());
    absl::MutexLock lock(&shard.mu);
    if (shard.words.size() >= kMaxEntriesPerShard) shard.words.clear();
    shard.words.emplace(std::string(word), std::move(result));
  }
}

// ---------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string_view config_json) {
  Json root;
  try {
    root = Json::parse(json);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json is not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json: must be an object");
  const auto field = [&](const char* name) -> const Json& {
    static const Json* null_json = new Json();
    auto it = root.find(name);
    return it == root.end() ? *null_json : *it;
  };
  if (!root.contains("model")) return FieldError("model", "is missing");

  auto impl = std::make_unique<Impl>();
  if (absl::Status s = impl->ParseNormalizer(field("normalizer")); !s.ok()) return s;
  if (absl::Status s = impl->ParseModel(field("model")); !s.ok()) return s;
  if (absl::Status s = impl->ParsePreTokenizer(field("pre_tokenizer"), "pre_tokenizer"); !s.ok()) {
    return s;
  }
  const Json& pre = field("pre_tokenizer");
  const bool byte_level = TypeOf(pre) == "ByteLevel" ||
                          (TypeOf(pre) == "Sequence" && pre.contains("pretokenizers") &&
                           pre["pretokenizers"].is_array() &&
                           std::any_of(pre["pretokenizers"].begin(), pre["pretokenizers"].end(),
                                       [](const Json& p) { return TypeOf(p) == "ByteLevel"; }));
  if (!byte_level) {
    return FieldError("pre_tokenizer", "has no ByteLevel step: only byte-level BPE is supported");
  }
  if (absl::Status s = impl->ParsePostProcessor(field("post_processor"), "post_processor");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = impl->ParseDecoder(field("decoder"), "decoder"); !s.ok()) return s;
  if (absl::Status s = impl->ParseAddedTokens(field("added_tokens")); !s.ok()) return s;
  impl->BuildIdTables();
  std::vector<int32_t> template_ids = impl->prefix_ids;
  template_ids.insert(template_ids.end(), impl->suffix_ids.begin(), impl->suffix_ids.end());
  for (int32_t id : template_ids) {
    if (id < 0 || id >= static_cast<int32_t>(impl->id_known.size()) || !impl->id_known[id]) {
      return FieldError("post_processor", absl::StrCat("special token id ", id, " is unknown"));
    }
  }
  if (absl::Status s = impl->ParseConfig(config_json); !s.ok()) return s;
  impl->fingerprint = Sha256Hex(json);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

namespace {
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return contents.str();
}

absl::Status Annotate(const absl::Status& status, const std::string& path) {
  return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
}
}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  auto tokenizer = FromJson(*text);
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), path);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelDir(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::string config;
  if (std::ifstream(dir + "/tokenizer_config.json").good()) {
    absl::StatusOr<std::string> c = ReadFile(dir + "/tokenizer_config.json");
    if (!c.ok()) return c.status();
    config = *std::move(c);
  }
  auto tokenizer = FromJson(*text, config);
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), dir);
  return tokenizer;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens) const {
  if (const size_t bad = FirstInvalidUtf8(text); bad != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text to encode is not valid UTF-8 (byte offset ", bad, ")"));
  }
  const Impl& impl = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + impl.prefix_ids.size() + impl.suffix_ids.size() + 4);
  if (add_special_tokens) ids = impl.prefix_ids;
  impl.Split(text, [&](std::string_view word, int32_t added_id) {
    if (added_id >= 0) {
      ids.push_back(added_id);
    } else {
      impl.EncodeWord(word, &ids);
    }
  });
  if (add_special_tokens) ids.insert(ids.end(), impl.suffix_ids.begin(), impl.suffix_ids.end());
  return ids;
}

absl::StatusOr<std::vector<std::string>> Tokenizer::PreTokenize(std::string_view text) const {
  if (const size_t bad = FirstInvalidUtf8(text); bad != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text to pre-tokenize is not valid UTF-8 (byte offset ", bad, ")"));
  }
  std::vector<std::string> words;
  impl_->Split(text, [&](std::string_view word, int32_t) { words.emplace_back(word); });
  return words;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (skip_special_tokens && IsSpecial(id)) continue;
    bytes += TokenBytes(id);
  }
  return Utf8Lossy(bytes);
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(impl_->id_bytes.size())) return {};
  return impl_->id_bytes[id];
}

std::optional<std::string_view> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(impl_->id_known.size()) || !impl_->id_known[id]) {
    return std::nullopt;
  }
  return std::string_view(impl_->id_token[id]);
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = impl_->added_ids.find(AbslView(token)); it != impl_->added_ids.end())
    return it->second;
  if (auto it = impl_->vocab.find(AbslView(token)); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(impl_->id_special.size()) && impl_->id_special[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_known.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
const std::string& Tokenizer::Fingerprint() const { return impl_->fingerprint; }

// ---------------------------------------------------------------------------

IncrementalDecoder::IncrementalDecoder(const Tokenizer* tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::Add(int32_t id) {
  if (skip_special_tokens_ && tokenizer_->IsSpecial(id)) return std::string();
  pending_ += tokenizer_->TokenBytes(id);
  const size_t complete = Utf8CompletePrefixLength(pending_);
  if (complete == 0) return std::string();
  std::string text = Utf8Lossy(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return text;
}

std::string IncrementalDecoder::Finish() {
  std::string text = Utf8Lossy(pending_);
  pending_.clear();
  return text;
}

}  // namespace arbor::runtime
