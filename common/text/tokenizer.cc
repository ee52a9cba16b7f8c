#include "common/text/tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/text/added_vocabulary.h"
#include "common/text/bpe.h"
#include "common/text/byte_level.h"
#include "common/text/json_util.h"
#include "common/text/regex.h"
#include "common/text/unicode.h"
#include "common/text/utf8.h"

namespace gka::text {

using internal::AddedTokenMatcher;
using internal::BpeModel;
using internal::FindNonNull;
using internal::GetBool;
using internal::GetString;
using internal::Regex;
using internal::TextPiece;
using Json = nlohmann::json;

namespace {

// GPT-2's split, which the ByteLevel pre-tokenizer applies itself when use_regex is true.
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status Unsupported(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, "; gka::text implements byte-level BPE tokenizers (GPT-2, Qwen2/3) only"));
}

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

}  // namespace

struct Tokenizer::Impl {
  bool nfc = false;
  std::vector<std::unique_ptr<Regex>> splits;  // applied in order, each "Isolated"
  std::unique_ptr<BpeModel> bpe;
  std::vector<AddedToken> added;
  std::unique_ptr<AddedTokenMatcher> raw_matcher;         // normalized=false tokens
  std::unique_ptr<AddedTokenMatcher> normalized_matcher;  // normalized=true tokens
  absl::flat_hash_map<std::string, int32_t> added_by_content;
  absl::flat_hash_map<int32_t, std::string> added_content_by_id;

  std::vector<std::string> id_to_bytes;  // empty: no token has this id
  // Per id: kAdded for added tokens (spelled as their content, not byte-level), kSpecial for
  // those flagged special.
  static constexpr uint8_t kAdded = 1;
  static constexpr uint8_t kSpecial = 2;
  std::vector<uint8_t> flags;
  SpecialTokenIds special_ids;

  absl::Status Parse(const Json& root);
  absl::Status ParseNormalizer(const Json& root);
  absl::Status ParsePreTokenizer(const Json& step, absl::string_view where, bool* byte_level);
  absl::Status ParseModel(const Json& model);
  absl::Status ParseAddedTokens(const Json& root);
  absl::Status ParseConfig(absl::string_view config_json, absl::string_view source);
  std::optional<int32_t> ConfigTokenId(const Json& config, absl::string_view key) const;

  absl::Status EncodeNormalizable(absl::string_view text, std::vector<int32_t>* ids) const;
  absl::Status EncodePreTokenized(absl::string_view text, std::vector<int32_t>* ids) const;
  std::optional<int32_t> Lookup(absl::string_view token) const;
};

absl::Status Tokenizer::Impl::ParseNormalizer(const Json& root) {
  const Json* normalizer = FindNonNull(root, "normalizer");
  if (normalizer == nullptr) return absl::OkStatus();
  GKA_ASSIGN_OR_RETURN(std::string type, GetString(*normalizer, "type", "", "normalizer"));
  if (type == "NFC") {
    nfc = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    const Json* steps = FindNonNull(*normalizer, "normalizers");
    if (steps == nullptr || !steps->is_array()) {
      return absl::InvalidArgumentError("normalizer.normalizers must be an array");
    }
    for (const Json& step : *steps) {
      GKA_ASSIGN_OR_RETURN(std::string t, GetString(step, "type", "", "normalizer.normalizers[]"));
      if (t != "NFC")
        return Unsupported(absl::StrCat("normalizer ", Quoted(t), " is not supported"));
      nfc = true;
    }
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat("normalizer ", Quoted(type), " is not supported (only NFC)"));
}

absl::Status Tokenizer::Impl::ParsePreTokenizer(const Json& step, absl::string_view where,
                                                bool* byte_level) {
  GKA_ASSIGN_OR_RETURN(std::string type, GetString(step, "type", "", where));
  if (*byte_level) {
    // Later steps would see byte-level text, which no real tokenizer.json does.
    return Unsupported(absl::StrCat(where, " (", type, ") comes after the ByteLevel step"));
  }
  if (type == "Sequence") {
    const Json* steps = FindNonNull(step, "pretokenizers");
    if (steps == nullptr || !steps->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".pretokenizers must be an array"));
    }
    for (size_t i = 0; i < steps->size(); ++i) {
      GKA_RETURN_IF_ERROR(ParsePreTokenizer(
          (*steps)[i], absl::StrCat(where, ".pretokenizers[", i, "]"), byte_level));
    }
    return absl::OkStatus();
  }
  if (type == "Split") {
    GKA_ASSIGN_OR_RETURN(std::string behavior, GetString(step, "behavior", "", where));
    GKA_ASSIGN_OR_RETURN(bool invert, GetBool(step, "invert", false, where));
    if (behavior != "Isolated" || invert) {
      return Unsupported(absl::StrCat(where, ": Split with behavior ", Quoted(behavior),
                                      invert ? " and invert" : "",
                                      " is not supported (only Isolated, not inverted)"));
    }
    const Json* pattern = FindNonNull(step, "pattern");
    const Json* regex = pattern == nullptr ? nullptr : FindNonNull(*pattern, "Regex");
    const Json* literal = pattern == nullptr ? nullptr : FindNonNull(*pattern, "String");
    const Json* text = regex != nullptr ? regex : literal;
    if (text == nullptr || !text->is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".pattern must be {\"Regex\": string} or {\"String\": string}"));
    }
    auto compiled = Regex::Compile(text->get<std::string>(), /*literal=*/regex == nullptr);
    if (!compiled.ok()) return base::Annotate(compiled.status(), absl::StrCat(where, ".pattern"));
    splits.push_back(std::move(compiled).value());
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    GKA_ASSIGN_OR_RETURN(bool add_prefix_space, GetBool(step, "add_prefix_space", true, where));
    GKA_ASSIGN_OR_RETURN(bool use_regex, GetBool(step, "use_regex", true, where));
    if (add_prefix_space) {
      return Unsupported(absl::StrCat(where, ": ByteLevel add_prefix_space=true is not supported"));
    }
    if (use_regex) {
      GKA_ASSIGN_OR_RETURN(auto gpt2, Regex::Compile(kGpt2Pattern, /*literal=*/false));
      splits.push_back(std::move(gpt2));
    }
    *byte_level = true;
    return absl::OkStatus();
  }
  return Unsupported(absl::StrCat(where, ": pre-tokenizer ", Quoted(type), " is not supported"));
}

absl::Status Tokenizer::Impl::ParseModel(const Json& model) {
  if (!model.is_object()) return absl::InvalidArgumentError("\"model\" must be an object");
  GKA_ASSIGN_OR_RETURN(std::string type, GetString(model, "type", "BPE", "model"));
  if (type != "BPE") return Unsupported(absl::StrCat("model.type ", Quoted(type)));
  if (const Json* dropout = FindNonNull(model, "dropout");
      dropout != nullptr && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return Unsupported("model.dropout is set (BPE dropout is for training, not serving)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    GKA_ASSIGN_OR_RETURN(std::string affix, GetString(model, key, "", "model"));
    if (!affix.empty()) return Unsupported(absl::StrCat("model.", key, " is not empty"));
  }
  GKA_ASSIGN_OR_RETURN(bool byte_fallback, GetBool(model, "byte_fallback", false, "model"));
  if (byte_fallback) return Unsupported("model.byte_fallback is true (a SentencePiece-style BPE)");
  GKA_ASSIGN_OR_RETURN(bool ignore_merges, GetBool(model, "ignore_merges", false, "model"));

  const Json* vocab_json = FindNonNull(model, "vocab");
  if (vocab_json == nullptr || !vocab_json->is_object()) {
    return absl::InvalidArgumentError("model.vocab is missing or not an object of token -> id");
  }
  absl::flat_hash_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json->size());
  int32_t max_id = -1;
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab[", Quoted(it.key()), "] must be a token id in [0, 2^30)"));
    }
    std::optional<std::string> bytes = internal::ByteLevelToBytes(it.key());
    if (!bytes.has_value()) {
      return Unsupported(absl::StrCat("model.vocab token ", Quoted(it.key()),
                                      " is not spelled in the byte-level alphabet"));
    }
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    max_id = std::max(max_id, id);
    vocab.try_emplace(*std::move(bytes), id);
  }

  const Json* merges_json = FindNonNull(model, "merges");
  if (merges_json == nullptr || !merges_json->is_array()) {
    return absl::InvalidArgumentError(
        "model.merges is missing or not an array; a BPE tokenizer.json lists its merges there");
  }
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json->size());
  for (size_t i = 0; i < merges_json->size(); ++i) {
    const Json& m = (*merges_json)[i];
    std::string left, right;
    if (m.is_string()) {  // older files: "Ġ t"
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.merges[", i, "] ", Quoted(s), " must be two tokens and one space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.merges[", i, "] must be \"left right\" or [\"left\", \"right\"], not ", m.dump()));
    }
    std::optional<std::string> l = internal::ByteLevelToBytes(left);
    std::optional<std::string> r = internal::ByteLevelToBytes(right);
    if (!l.has_value() || !r.has_value()) {
      return Unsupported(absl::StrCat("model.merges[", i, "] is not in the byte-level alphabet"));
    }
    merges.emplace_back(*std::move(l), *std::move(r));
  }

  id_to_bytes.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [bytes, id] : vocab) id_to_bytes[id] = bytes;
  GKA_ASSIGN_OR_RETURN(bpe, BpeModel::Create(std::move(vocab), merges, ignore_merges));
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::ParseAddedTokens(const Json& root) {
  static const Json* const kNone = new Json(Json::array());
  const Json* tokens = FindNonNull(root, "added_tokens");
  if (tokens == nullptr) tokens = kNone;
  if (!tokens->is_array()) return absl::InvalidArgumentError("added_tokens must be an array");
  // Ids are assigned the way HF's AddedVocabulary::add_tokens does, token by token in file
  // order, and the file's id only checked (HF warns too): a content the vocabulary already
  // has keeps the vocabulary's id, a new one takes the next id after the largest added id
  // (at least the BPE vocabulary's size). Real files agree with this everywhere.
  const auto model_size = static_cast<int32_t>(bpe->vocab().size());
  std::optional<int32_t> max_added;
  absl::flat_hash_map<std::string, size_t> index_by_content;
  for (size_t i = 0; i < tokens->size(); ++i) {
    const Json& t = (*tokens)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    const Json* id = FindNonNull(t, "id");
    if (id == nullptr || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() >= (int64_t{1} << 30)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".id must be a token id in [0, 2^30)"));
    }
    AddedToken token;
    GKA_ASSIGN_OR_RETURN(token.content, GetString(t, "content", "", where));
    if (token.content.empty() || !IsValidUtf8(token.content)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".content must be non-empty UTF-8"));
    }
    GKA_ASSIGN_OR_RETURN(token.special, GetBool(t, "special", false, where));
    GKA_ASSIGN_OR_RETURN(token.normalized, GetBool(t, "normalized", !token.special, where));
    GKA_ASSIGN_OR_RETURN(token.lstrip, GetBool(t, "lstrip", false, where));
    GKA_ASSIGN_OR_RETURN(token.rstrip, GetBool(t, "rstrip", false, where));
    GKA_ASSIGN_OR_RETURN(token.single_word, GetBool(t, "single_word", false, where));
    if (token.normalized && nfc) {
      // HF keeps a normalized token's content normalized (it matches normalized text, and
      // decoding shows the normalized form).
      GKA_ASSIGN_OR_RETURN(token.content, internal::NfcNormalize(token.content));
    }
    if (auto seen = index_by_content.find(token.content); seen != index_by_content.end()) {
      token.id = added[seen->second].id;  // a repeated content updates the token's flags
      added[seen->second] = std::move(token);
      continue;
    }
    const std::optional<std::string> bytes = internal::ByteLevelToBytes(token.content);
    const auto in_vocab = bytes.has_value() ? bpe->vocab().find(*bytes) : bpe->vocab().end();
    if (in_vocab != bpe->vocab().end()) {
      token.id = in_vocab->second;
    } else {
      token.id = !max_added.has_value() || *max_added < model_size ? model_size : *max_added + 1;
    }
    if (token.id != id->get<int64_t>()) {
      GKA_LOG(WARNING) << where << " " << Quoted(token.content) << " has id " << id->get<int64_t>()
                       << " in the file but gets id " << token.id
                       << ", as Hugging Face tokenizers assigns it";
    }
    max_added = std::max(max_added.value_or(token.id), token.id);
    index_by_content.emplace(token.content, added.size());
    added.push_back(std::move(token));
  }

  std::vector<AddedToken> raw, normalized;
  for (const AddedToken& token : added) {
    if (static_cast<size_t>(token.id) >= id_to_bytes.size()) {
      id_to_bytes.resize(static_cast<size_t>(token.id) + 1);
    }
    // HF decodes added tokens through the ByteLevel decoder too: a content made only of
    // byte-level characters becomes those bytes ("é" is byte 0xE9), any other stays as is.
    id_to_bytes[token.id] = internal::ByteLevelToBytes(token.content).value_or(token.content);
    added_by_content.try_emplace(token.content, token.id);
    added_content_by_id.try_emplace(token.id, token.content);
    (token.normalized ? normalized : raw).push_back(token);
  }
  flags.assign(id_to_bytes.size(), 0);
  for (const AddedToken& token : added) {
    flags[token.id] = kAdded | (token.special ? kSpecial : 0);
  }
  raw_matcher = std::make_unique<AddedTokenMatcher>(raw);
  normalized_matcher = std::make_unique<AddedTokenMatcher>(normalized);
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::Impl::Lookup(absl::string_view token) const {
  if (auto it = added_by_content.find(token); it != added_by_content.end()) return it->second;
  std::optional<std::string> bytes = internal::ByteLevelToBytes(token);
  if (!bytes.has_value()) return std::nullopt;
  auto it = bpe->vocab().find(*bytes);
  if (it == bpe->vocab().end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> Tokenizer::Impl::ConfigTokenId(const Json& config,
                                                      absl::string_view key) const {
  const Json* v = FindNonNull(config, key);
  if (v == nullptr) return std::nullopt;
  // Either "<|im_end|>" or, in older files, a serialized AddedToken {"content": ...}.
  const Json* content = v->is_object() ? FindNonNull(*v, "content") : v;
  if (content == nullptr || !content->is_string()) return std::nullopt;
  return Lookup(content->get<std::string>());
}

absl::Status Tokenizer::Impl::ParseConfig(absl::string_view config_json, absl::string_view source) {
  special_ids.endoftext = Lookup("<|endoftext|>");
  special_ids.im_start = Lookup("<|im_start|>");
  special_ids.im_end = Lookup("<|im_end|>");
  if (config_json.empty()) return absl::OkStatus();
  GKA_ASSIGN_OR_RETURN(Json config, internal::ParseJson<Json>(config_json, source));
  if (!config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " must hold a JSON object"));
  }
  special_ids.eos = ConfigTokenId(config, "eos_token");
  special_ids.pad = ConfigTokenId(config, "pad_token");
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::EncodePreTokenized(absl::string_view text,
                                                 std::vector<int32_t>* ids) const {
  std::vector<Regex::Match> pieces = {{0, text.size()}};
  std::vector<Regex::Match> next, matches;
  for (const auto& split : splits) {
    next.clear();
    for (const Regex::Match& piece : pieces) {
      matches.clear();
      const absl::string_view sub = text.substr(piece.begin, piece.end - piece.begin);
      GKA_RETURN_IF_ERROR(split->FindAll(sub, &matches));
      // "Isolated": each match is a piece, and so is the text between matches.
      size_t last = 0;
      for (const Regex::Match& m : matches) {
        if (m.begin > last) next.push_back({piece.begin + last, piece.begin + m.begin});
        next.push_back({piece.begin + m.begin, piece.begin + m.end});
        last = m.end;
      }
      if (last < sub.size()) next.push_back({piece.begin + last, piece.end});
    }
    pieces.swap(next);
  }
  for (const Regex::Match& piece : pieces) {
    if (piece.end > piece.begin) {
      bpe->EncodeWord(text.substr(piece.begin, piece.end - piece.begin), ids);
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::EncodeNormalizable(absl::string_view text,
                                                 std::vector<int32_t>* ids) const {
  std::string normalized_storage;
  absl::string_view normalized = text;
  if (nfc) {
    GKA_ASSIGN_OR_RETURN(normalized_storage, internal::NfcNormalize(text));
    normalized = normalized_storage;
  }
  if (normalized_matcher->empty()) return EncodePreTokenized(normalized, ids);
  std::vector<TextPiece> pieces;
  normalized_matcher->Split(normalized, &pieces);
  for (const TextPiece& piece : pieces) {
    if (piece.id >= 0) {
      ids->push_back(piece.id);
    } else {
      GKA_RETURN_IF_ERROR(
          EncodePreTokenized(normalized.substr(piece.begin, piece.end - piece.begin), ids));
    }
  }
  return absl::OkStatus();
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::Status Tokenizer::Impl::Parse(const Json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("the file must hold a JSON object");
  GKA_RETURN_IF_ERROR(ParseNormalizer(root));
  bool byte_level = false;
  if (const Json* pre = FindNonNull(root, "pre_tokenizer"); pre != nullptr) {
    GKA_RETURN_IF_ERROR(ParsePreTokenizer(*pre, "pre_tokenizer", &byte_level));
  }
  if (!byte_level) return Unsupported("pre_tokenizer has no ByteLevel step");
  if (const Json* decoder = FindNonNull(root, "decoder"); decoder != nullptr) {
    GKA_ASSIGN_OR_RETURN(std::string type, GetString(*decoder, "type", "", "decoder"));
    if (type != "ByteLevel") {
      return Unsupported(absl::StrCat("decoder ", Quoted(type), " is not ByteLevel"));
    }
  }
  const Json* model = FindNonNull(root, "model");
  if (model == nullptr) return absl::InvalidArgumentError("\"model\" is missing");
  GKA_RETURN_IF_ERROR(ParseModel(*model));
  return ParseAddedTokens(root);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    absl::string_view tokenizer_json, absl::string_view tokenizer_config_json,
    absl::string_view source) {
  return FromJsonFiles(tokenizer_json, source, tokenizer_config_json, "tokenizer_config.json");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonFiles(
    absl::string_view tokenizer_json, absl::string_view tokenizer_source,
    absl::string_view tokenizer_config_json, absl::string_view config_source) {
  GKA_ASSIGN_OR_RETURN(Json root, internal::ParseJson<Json>(tokenizer_json, tokenizer_source));
  auto impl = std::make_unique<Impl>();
  GKA_RETURN_IF_ERROR(base::Annotate(impl->Parse(root), tokenizer_source));
  GKA_RETURN_IF_ERROR(impl->ParseConfig(tokenizer_config_json, config_source));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(absl::string_view path) {
  const bool is_dir = internal::IsDirectory(path);
  const std::string json_path = is_dir ? absl::StrCat(path, "/tokenizer.json") : std::string(path);
  const std::string config_path =
      absl::StrCat(is_dir ? std::string(path) : internal::DirName(path), "/tokenizer_config.json");
  auto json = internal::ReadFile(json_path);
  if (!json.ok()) return base::Annotate(json.status(), "loading the tokenizer");
  std::string config;
  if (auto read = internal::ReadFile(config_path); read.ok()) {
    config = *std::move(read);
  } else if (!absl::IsNotFound(read.status())) {
    return read.status();
  }
  return FromJsonFiles(*json, json_path, config, config_path);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text) const {
  if (const size_t bad = FirstInvalidUtf8Offset(text); bad != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8: byte 0x",
                     absl::Hex(static_cast<unsigned char>(text[bad]), absl::kZeroPad2),
                     " at offset ", bad, " does not start a valid character"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  std::vector<TextPiece> pieces;
  impl_->raw_matcher->Split(text, &pieces);
  for (const TextPiece& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
    } else {
      GKA_RETURN_IF_ERROR(
          impl_->EncodeNormalizable(text.substr(piece.begin, piece.end - piece.begin), &ids));
    }
  }
  return ids;
}

absl::StatusOr<absl::string_view> Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_bytes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is out of range [0, ", VocabSize(), ")"));
  }
  const std::string& bytes = impl_->id_to_bytes[id];
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is unused"));
  return absl::string_view(bytes);
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    GKA_ASSIGN_OR_RETURN(absl::string_view token, TokenBytes(id));
    if (skip_special_tokens && (impl_->flags[id] & Impl::kSpecial)) continue;
    bytes.append(token.data(), token.size());
  }
  return Utf8Lossy(bytes);
}

int32_t Tokenizer::VocabSize() const { return static_cast<int32_t>(impl_->id_to_bytes.size()); }

absl::StatusOr<std::string> Tokenizer::IdToToken(int32_t id) const {
  GKA_ASSIGN_OR_RETURN(absl::string_view bytes, TokenBytes(id));
  if (impl_->flags[id] & Impl::kAdded) return impl_->added_content_by_id.at(id);
  return internal::BytesToByteLevel(bytes);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  return impl_->Lookup(token);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->flags.size() &&
         (impl_->flags[id] & Impl::kSpecial) != 0;
}

const SpecialTokenIds& Tokenizer::special_ids() const { return impl_->special_ids; }

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

}  // namespace gka::text
