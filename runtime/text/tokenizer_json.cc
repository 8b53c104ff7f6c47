#include "runtime/text/tokenizer_json.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime::tokenizer_internal {
namespace {

using Json = nlohmann::json;

// Ids beyond this are rejected: id tables are dense (real vocabularies hold
// at most a few hundred thousand tokens).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

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

// A {"String": s} pattern (Replace, Split); a Regex one is not supported here.
absl::StatusOr<std::string> StringPattern(const Json& j, const std::string& where) {
  auto pattern = j.find("pattern");
  if (pattern != j.end() && pattern->is_object() && pattern->contains("String") &&
      (*pattern)["String"].is_string() && !(*pattern)["String"].get<std::string>().empty()) {
    return (*pattern)["String"].get<std::string>();
  }
  return FieldError(absl::StrCat(where, ".pattern"), "must be {\"String\": non-empty string}");
}

absl::StatusOr<std::string> StringField(const Json& j, const char* name, const std::string& where) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) {
    return FieldError(absl::StrCat(where, ".", name), "must be a string");
  }
  return it->get<std::string>();
}

absl::Status ParseNormalizer(const Json& j, const std::string& where,
                             std::vector<NormalizerStep>* steps) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "NFC") {
    steps->push_back({NormalizerStep::kNfc, "", ""});
    return absl::OkStatus();
  }
  if (type == "Prepend") {
    absl::StatusOr<std::string> prepend = StringField(j, "prepend", where);
    if (!prepend.ok()) return prepend.status();
    steps->push_back({NormalizerStep::kPrepend, *prepend, ""});
    return absl::OkStatus();
  }
  if (type == "Replace") {
    absl::StatusOr<std::string> pattern = StringPattern(j, where);
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = StringField(j, "content", where);
    if (!content.ok()) return content.status();
    steps->push_back({NormalizerStep::kReplace, *pattern, *content});
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      return FieldError(absl::StrCat(where, ".normalizers"), "must be an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s =
          ParseNormalizer((*it)[i], absl::StrCat(where, ".normalizers[", i, "]"), steps);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported normalizer ", ShortJson(j, &dump),
                                        " (supported: null, NFC, Prepend, Replace of a string, "
                                        "Sequence)"));
}

// Metaspace's prefix rule: "prepend_scheme" (always, first, never), or the
// older boolean "add_prefix_space".
absl::StatusOr<PreTokenizerStep::Prepend> MetaspacePrepend(const Json& j, const std::string& where) {
  auto scheme = j.find("prepend_scheme");
  if (scheme != j.end() && !scheme->is_null()) {
    if (*scheme == "always") return PreTokenizerStep::kAlways;
    if (*scheme == "first") return PreTokenizerStep::kFirst;
    if (*scheme == "never") return PreTokenizerStep::kNever;
    return FieldError(absl::StrCat(where, ".prepend_scheme"),
                      "must be \"always\", \"first\" or \"never\"");
  }
  absl::StatusOr<bool> add = BoolField(j, "add_prefix_space", true, where);
  if (!add.ok()) return add.status();
  return *add ? PreTokenizerStep::kAlways : PreTokenizerStep::kNever;
}

absl::Status ParsePreTokenizer(const Json& j, const std::string& where,
                               std::vector<PreTokenizerStep>* steps) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return FieldError(absl::StrCat(where, ".pretokenizers"), "must be an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s =
          ParsePreTokenizer((*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]"), steps);
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
    steps->push_back(std::move(step));
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
    steps->push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    PreTokenizerStep step;
    step.metaspace = true;
    absl::StatusOr<std::string> replacement = StringField(j, "replacement", where);
    if (!replacement.ok()) return replacement.status();
    if (replacement->empty()) return FieldError(absl::StrCat(where, ".replacement"), "is empty");
    step.replacement = *replacement;
    absl::StatusOr<PreTokenizerStep::Prepend> prepend = MetaspacePrepend(j, where);
    if (!prepend.ok()) return prepend.status();
    step.prepend = *prepend;
    absl::StatusOr<bool> split = BoolField(j, "split", true, where);
    if (!split.ok()) return split.status();
    step.split = *split;
    steps->push_back(std::move(step));
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported pre-tokenizer ", ShortJson(j, &dump),
                                        " (supported: ByteLevel, Split, Metaspace, Sequence)"));
}

absl::Status ParseModel(const Json& j, BpeModel* model) {
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
  model->byte_fallback = *byte_fallback;
  absl::StatusOr<bool> ignore = BoolField(j, "ignore_merges", false, "model");
  if (!ignore.ok()) return ignore.status();
  model->ignore_merges = *ignore;
  absl::StatusOr<bool> fuse = BoolField(j, "fuse_unk", false, "model");
  if (!fuse.ok()) return fuse.status();
  model->fuse_unk = *fuse;

  auto vocab_it = j.find("vocab");
  if (vocab_it == j.end() || !vocab_it->is_object()) {
    return FieldError("model.vocab", "must be an object of token -> id");
  }
  model->vocab.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > kMaxTokenId) {
      return FieldError("model.vocab", absl::StrCat("id of \"", it.key(), "\" is not a valid id"));
    }
    model->vocab[it.key()] = it.value().get<int32_t>();
  }

  auto unk = j.find("unk_token");
  if (unk != j.end() && unk->is_string()) {
    auto found = model->vocab.find(unk->get<std::string>());
    if (found == model->vocab.end())
      return FieldError("model.unk_token", "is not in the vocabulary");
    model->unk_id = found->second;
  }

  const ByteLevelAlphabet& alphabet = Alphabet();
  for (int b = 0; b < 256; ++b) {
    auto found = model->vocab.find(alphabet.byte_to_utf8[b]);
    model->byte_ids[b] = found == model->vocab.end() ? -1 : found->second;
    static constexpr char kHex[] = "0123456789ABCDEF";
    const char name[] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>', '\0'};
    auto fallback = model->vocab.find(absl::string_view(name, 6));
    model->fallback_ids[b] = fallback == model->vocab.end() ? -1 : fallback->second;
  }

  auto merges_it = j.find("merges");
  if (merges_it == j.end() || !merges_it->is_array()) {
    return FieldError("model.merges", "must be an array");
  }
  model->merges.reserve(merges_it->size());
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
    auto l = model->vocab.find(left);
    auto r = model->vocab.find(right);
    auto merged = model->vocab.find(left + right);
    if (l == model->vocab.end() || r == model->vocab.end() || merged == model->vocab.end()) {
      return FieldError(absl::StrCat("model.merges[", rank, "]"),
                        absl::StrCat("\"", left, "\" + \"", right,
                                     "\": a part or the merged token is not in the vocabulary"));
    }
    model->merges[BpeModel::MergeKey(l->second, r->second)] =
        BpeModel::Merge{static_cast<int32_t>(rank), merged->second};
  }
  return absl::OkStatus();
}

absl::Status ParsePostProcessor(const Json& j, const std::string& where,
                                std::vector<int32_t>* prefix_ids,
                                std::vector<int32_t>* suffix_ids) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) {
      return FieldError(absl::StrCat(where, ".processors"), "must be an array");
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = ParsePostProcessor((*it)[i], absl::StrCat(where, ".processors[", i, "]"),
                                          prefix_ids, suffix_ids);
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
    prefix_ids->insert(prefix_ids->begin(), before.begin(), before.end());
    suffix_ids->insert(suffix_ids->end(), after.begin(), after.end());
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported post-processor ", ShortJson(j, &dump),
                                        " (supported: ByteLevel, TemplateProcessing, Sequence)"));
}

absl::Status ParseDecoder(const Json& j, const std::string& where) {
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

// The decoders SentencePiece-style checkpoints ship: Replace("\u2581", " "),
// ByteFallback, Fuse, Strip(" ", n, 0), Metaspace, in a Sequence. Each token
// is decoded on its own (Strip applies after Fuse, to the whole text).
absl::Status ParseSentencePieceDecoder(const Json& j, const std::string& where,
                                       TokenizerSpec* spec) {
  const std::string type = TypeOf(j);
  if (type == "Sequence" && j.contains("decoders") && j["decoders"].is_array()) {
    for (size_t i = 0; i < j["decoders"].size(); ++i) {
      absl::Status s = ParseSentencePieceDecoder(
          j["decoders"][i], absl::StrCat(where, ".decoders[", i, "]"), spec);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "Replace") {
    absl::StatusOr<std::string> pattern = StringPattern(j, where);
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = StringField(j, "content", where);
    if (!content.ok()) return content.status();
    if (*content != " ") return FieldError(absl::StrCat(where, ".content"), "must be \" \"");
    spec->decode_space = *pattern;
    return absl::OkStatus();
  }
  if (type == "ByteFallback") {
    spec->decode_byte_fallback = true;
    return absl::OkStatus();
  }
  if (type == "Fuse") return absl::OkStatus();  // decoded tokens are concatenated anyway
  if (type == "Strip") {
    auto content = j.find("content");
    auto start = j.find("start");
    auto stop = j.find("stop");
    if (content == j.end() || *content != " " || start == j.end() || !start->is_number_integer() ||
        start->get<int>() < 0 || stop == j.end() || *stop != 0) {
      return FieldError(where, "only Strip of leading spaces ({content: \" \", start: n, stop: 0}) "
                               "is supported");
    }
    spec->strip_leading_spaces = start->get<int>();
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    absl::StatusOr<std::string> replacement = StringField(j, "replacement", where);
    if (!replacement.ok()) return replacement.status();
    absl::StatusOr<PreTokenizerStep::Prepend> prepend = MetaspacePrepend(j, where);
    if (!prepend.ok()) return prepend.status();
    spec->decode_space = *replacement;
    // The prefix the pre-tokenizer added comes off the first token.
    if (*prepend != PreTokenizerStep::kNever) spec->strip_leading_spaces = 1;
    return absl::OkStatus();
  }
  std::string dump;
  return FieldError(where, absl::StrCat("unsupported decoder ", ShortJson(j, &dump),
                                        " (SentencePiece-style BPE: Replace, ByteFallback, Fuse, "
                                        "Strip, Metaspace, Sequence)"));
}

absl::Status ParseAddedTokens(const Json& j, std::vector<AddedToken>* added) {
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
    added->push_back(std::move(token));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseTokenizerJson(std::string_view json, TokenizerSpec* spec) {
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

  if (absl::Status s = ParseNormalizer(field("normalizer"), "normalizer", &spec->normalizer);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseModel(field("model"), &spec->model); !s.ok()) return s;
  if (absl::Status s =
          ParsePreTokenizer(field("pre_tokenizer"), "pre_tokenizer", &spec->pre_tokenizer);
      !s.ok()) {
    return s;
  }
  const Json& pre = field("pre_tokenizer");
  const bool byte_level = TypeOf(pre) == "ByteLevel" ||
                          (TypeOf(pre) == "Sequence" && pre.contains("pretokenizers") &&
                           pre["pretokenizers"].is_array() &&
                           std::any_of(pre["pretokenizers"].begin(), pre["pretokenizers"].end(),
                                       [](const Json& p) { return TypeOf(p) == "ByteLevel"; }));
  // Without a ByteLevel step it is SentencePiece-style BPE (Llama-2, Mistral,
  // Gemma): characters, spaces as "\u2581", byte fallback.
  spec->model.byte_level = byte_level;
  if (byte_level && spec->model.byte_fallback) {
    return FieldError("model.byte_fallback",
                      "true needs a SentencePiece-style pipeline (no ByteLevel pre-tokenizer)");
  }
  if (absl::Status s = ParsePostProcessor(field("post_processor"), "post_processor",
                                          &spec->prefix_ids, &spec->suffix_ids);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = byte_level ? ParseDecoder(field("decoder"), "decoder")
                                  : ParseSentencePieceDecoder(field("decoder"), "decoder", spec);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ParseAddedTokens(field("added_tokens"), &spec->added); !s.ok()) return s;
  return absl::OkStatus();
}

absl::Status ParseTokenizerConfig(std::string_view config_json,
                                  const absl::flat_hash_map<std::string, int32_t>& added_ids,
                                  const absl::flat_hash_map<std::string, int32_t>& vocab,
                                  std::optional<int32_t>* bos, std::optional<int32_t>* eos) {
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
  const std::pair<const char*, std::optional<int32_t>*> names[] = {{"bos_token", bos},
                                                                   {"eos_token", eos}};
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

}  // namespace arbor::runtime::tokenizer_internal
