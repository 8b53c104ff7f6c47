#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/sha256.h"
#include "common/utf8.h"
#include "runtime/text/added_tokens.h"
#include "runtime/text/bpe.h"
#include "runtime/text/regex_split.h"
#include "runtime/text/tokenizer_json.h"

// The pieces live beside this file: tokenizer_json (parsing), regex_split (the
// Split pre-tokenizers' regexes on RE2), added_tokens (matching them), bpe (the
// byte-level alphabet and the model). This file runs the pipeline.

namespace arbor::runtime {

using tokenizer_internal::AbslView;
using tokenizer_internal::AddedTokenMatcher;
using tokenizer_internal::FromByteLevel;
using tokenizer_internal::ParseTokenizerConfig;
using tokenizer_internal::ParseTokenizerJson;
using tokenizer_internal::NormalizerStep;
using tokenizer_internal::PreTokenizerStep;
using tokenizer_internal::Segment;
using tokenizer_internal::TokenizerSpec;

struct Tokenizer::Impl {
  TokenizerSpec spec;  // model and pipeline, as tokenizer.json gives them

  // Added tokens.
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

  void IndexAddedTokens();
  void BuildIdTables();
  // The normalizer's steps, in order.
  std::string Normalize(std::string_view text) const;
  // Metaspace: `piece` with spaces replaced and the prefix added per `step`
  // (`first`: the piece opens the text), then split, into `out`.
  void Metaspace(const PreTokenizerStep& step, std::string_view piece, bool first,
                 std::deque<std::string>* storage, std::vector<std::string_view>* out) const;

  // Calls emit(word, -1) for each word BPE must encode and emit(text, id) for
  // each added token, in order. `text` must be valid UTF-8.
  void Split(std::string_view text,
             const std::function<void(std::string_view, int32_t)>& emit) const;
};

void Tokenizer::Impl::IndexAddedTokens() {
  for (const AddedToken& token : spec.added) {
    added_ids[token.content] = token.id;
    if (token.normalized) {
      normalized_matcher.Add(&token, Normalize(token.content));
    } else {
      raw_matcher.Add(&token, token.content);
    }
  }
  raw_matcher.Finalize();
  normalized_matcher.Finalize();
}

void Tokenizer::Impl::BuildIdTables() {
  int32_t size = 0;
  for (const auto& [token, id] : spec.model.vocab) size = std::max(size, id + 1);
  for (const AddedToken& token : spec.added) size = std::max(size, token.id + 1);
  id_token.assign(size, std::string());
  id_bytes.assign(size, std::string());
  id_known.assign(size, 0);
  id_special.assign(size, 0);
  for (const auto& [token, id] : spec.model.vocab) {
    id_token[id] = token;
    id_known[id] = 1;
  }
  for (const AddedToken& token : spec.added) {  // added tokens take precedence
    id_token[token.id] = token.content;
    id_known[token.id] = 1;
    id_special[token.id] = token.special ? 1 : 0;
  }
  for (int32_t id = 0; id < size; ++id) {
    if (!id_known[id]) continue;
    const std::string& token = id_token[id];
    if (spec.model.byte_level) {
      id_bytes[id] = FromByteLevel(token);
    } else if (spec.decode_byte_fallback && token.size() == 6 && token.compare(0, 3, "<0x") == 0 &&
               token[5] == '>' && absl::ascii_isxdigit(token[3]) &&
               absl::ascii_isxdigit(token[4])) {
      id_bytes[id] = std::string(1, static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16)));
    } else if (!spec.decode_space.empty()) {
      id_bytes[id] = absl::StrReplaceAll(AbslView(token), {{AbslView(spec.decode_space), " "}});
    } else {
      id_bytes[id] = token;
    }
  }
}

std::string Tokenizer::Impl::Normalize(std::string_view text) const {
  std::string out(text);
  for (const NormalizerStep& step : spec.normalizer) {
    switch (step.kind) {
      case NormalizerStep::kNfc:
        out = NormalizeNfc(out);
        break;
      case NormalizerStep::kPrepend:
        if (!out.empty()) out.insert(0, step.text);
        break;
      case NormalizerStep::kReplace:
        absl::StrReplaceAll({{AbslView(step.text), AbslView(step.replacement)}}, &out);
        break;
    }
  }
  return out;
}

void Tokenizer::Impl::Metaspace(const PreTokenizerStep& step, std::string_view piece, bool first,
                                std::deque<std::string>* storage,
                                std::vector<std::string_view>* out) const {
  std::string text = absl::StrReplaceAll(AbslView(piece), {{" ", AbslView(step.replacement)}});
  const bool prepend = step.prepend == PreTokenizerStep::kAlways ||
                       (step.prepend == PreTokenizerStep::kFirst && first);
  if (prepend && !absl::StartsWith(text, step.replacement)) text.insert(0, step.replacement);
  std::string_view whole = storage->emplace_back(std::move(text));
  if (!step.split) {
    out->push_back(whole);
    return;
  }
  // Each replacement opens a new piece (tokenizers' MergedWithNext).
  size_t start = 0;
  for (size_t at = whole.find(step.replacement, 1); at != std::string_view::npos;
       at = whole.find(step.replacement, at + 1)) {
    if (at > start) out->push_back(whole.substr(start, at - start));
    start = at;
  }
  if (start < whole.size()) out->push_back(whole.substr(start));
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
  // The segment that opens the text (none when an added token does):
  // Metaspace's "first" prefix goes there only.
  size_t opening = std::string_view::npos;
  for (const Segment& segment : raw_segments) {
    if (segment.added_id >= 0) {
      segments.push_back(segment);
      continue;
    }
    if (segment.text.data() == text.data()) opening = segments.size();
    std::string_view normalized = segment.text;
    if (!spec.normalizer.empty()) normalized = storage.emplace_back(Normalize(segment.text));
    if (normalized_matcher.empty()) {
      segments.push_back({normalized, -1});
    } else {
      normalized_matcher.Split(normalized, &segments);
    }
  }
  std::vector<std::string_view> pieces, next;
  for (size_t index = 0; index < segments.size(); ++index) {
    const Segment& segment = segments[index];
    if (segment.added_id >= 0) {
      emit(segment.text, segment.added_id);
      continue;
    }
    if (segment.text.empty()) continue;
    pieces.assign(1, segment.text);
    for (const PreTokenizerStep& step : spec.pre_tokenizer) {
      next.clear();
      for (size_t p = 0; p < pieces.size(); ++p) {
        std::string_view piece = pieces[p];
        if (step.metaspace) {
          Metaspace(step, piece, index == opening && p == 0, &storage, &next);
          continue;
        }
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

// ---------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string_view config_json) {
  auto impl = std::make_unique<Impl>();
  if (absl::Status s = ParseTokenizerJson(json, &impl->spec); !s.ok()) return s;
  impl->IndexAddedTokens();
  impl->BuildIdTables();
  std::vector<int32_t> template_ids = impl->spec.prefix_ids;
  template_ids.insert(template_ids.end(), impl->spec.suffix_ids.begin(),
                      impl->spec.suffix_ids.end());
  for (int32_t id : template_ids) {
    if (id < 0 || id >= static_cast<int32_t>(impl->id_known.size()) || !impl->id_known[id]) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: post_processor: special token id ", id, " is unknown"));
    }
  }
  // Defaults first: BOS from the post-processor, EOS from well-known names;
  // tokenizer_config.json may override them.
  if (impl->spec.prefix_ids.size() == 1) impl->bos = impl->spec.prefix_ids[0];
  for (const char* name :
       {"<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    auto it = impl->added_ids.find(name);
    if (it != impl->added_ids.end() && impl->id_special[it->second]) {
      impl->eos = it->second;
      break;
    }
  }
  if (absl::Status s = ParseTokenizerConfig(config_json, impl->added_ids, impl->spec.model.vocab,
                                            &impl->bos, &impl->eos);
      !s.ok()) {
    return s;
  }
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
  ids.reserve(text.size() / 3 + impl.spec.prefix_ids.size() + impl.spec.suffix_ids.size() + 4);
  if (add_special_tokens) ids = impl.spec.prefix_ids;
  impl.Split(text, [&](std::string_view word, int32_t added_id) {
    if (added_id >= 0) {
      ids.push_back(added_id);
    } else {
      impl.spec.model.EncodeWord(word, &ids);
    }
  });
  if (add_special_tokens)
    ids.insert(ids.end(), impl.spec.suffix_ids.begin(), impl.spec.suffix_ids.end());
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
  std::string text = Utf8Lossy(bytes);
  size_t strip = 0;
  while (strip < text.size() && strip < static_cast<size_t>(impl_->spec.strip_leading_spaces) &&
         text[strip] == ' ') {
    ++strip;
  }
  text.erase(0, strip);
  return text;
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
  if (auto it = impl_->spec.model.vocab.find(AbslView(token)); it != impl_->spec.model.vocab.end())
    return it->second;
  return std::nullopt;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(impl_->id_special.size()) && impl_->id_special[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_known.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->spec.added; }
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
