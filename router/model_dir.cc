#include "router/model_dir.h"

#include <algorithm>
#include <exception>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "router/files.h"

namespace gka::router {
namespace {

using nlohmann::json;

// The parsed file, or std::nullopt when it does not exist.
absl::StatusOr<std::optional<json>> ReadJsonIfPresent(const std::string& path) {
  if (!FileExists(path)) return std::optional<json>();
  GKA_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  try {
    json doc = json::parse(text);
    if (!doc.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
    }
    return std::optional<json>(std::move(doc));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON: ", e.what()));
  }
}

// "eos_token_id": an integer, a list of integers, or null.
absl::StatusOr<std::vector<int32_t>> EosIds(const json& doc, const std::string& path) {
  std::vector<int32_t> ids;
  if (!doc.contains("eos_token_id") || doc["eos_token_id"].is_null()) return ids;
  const json& v = doc["eos_token_id"];
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": eos_token_id must be an integer or a list of integers, got ", v.dump()));
  };
  if (v.is_number_integer()) {
    ids.push_back(v.get<int32_t>());
  } else if (v.is_array()) {
    for (const json& e : v) {
      if (!e.is_number_integer()) return bad();
      ids.push_back(e.get<int32_t>());
    }
  } else {
    return bad();
  }
  return ids;
}

template <typename T>
absl::Status ReadNumber(const json& doc, const char* key, const std::string& path, T* out) {
  if (!doc.contains(key) || doc[key].is_null()) return absl::OkStatus();
  if (!doc[key].is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", key, " must be a number, got ", doc[key].dump()));
  }
  *out = doc[key].get<T>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelDescription> ReadModelDir(absl::string_view dir) {
  if (!IsDirectory(dir)) {
    return absl::NotFoundError(absl::StrCat("model directory '", dir, "' does not exist"));
  }
  ModelDescription model;
  model.name = BaseName(dir);
  const std::string config_path = JoinPath(dir, "config.json");
  GKA_ASSIGN_OR_RETURN(std::optional<json> config, ReadJsonIfPresent(config_path));
  const std::string generation_path = JoinPath(dir, "generation_config.json");
  GKA_ASSIGN_OR_RETURN(std::optional<json> generation, ReadJsonIfPresent(generation_path));
  if (config.has_value()) {
    GKA_RETURN_IF_ERROR(ReadNumber(*config, "vocab_size", config_path, &model.vocab_size));
    GKA_ASSIGN_OR_RETURN(model.eos_token_ids, EosIds(*config, config_path));
  }
  if (generation.has_value()) {
    GKA_ASSIGN_OR_RETURN(std::vector<int32_t> eos, EosIds(*generation, generation_path));
    if (!eos.empty()) model.eos_token_ids = std::move(eos);
    SamplingDefaults& s = model.sampling;
    GKA_RETURN_IF_ERROR(ReadNumber(*generation, "temperature", generation_path, &s.temperature));
    GKA_RETURN_IF_ERROR(ReadNumber(*generation, "top_k", generation_path, &s.top_k));
    GKA_RETURN_IF_ERROR(ReadNumber(*generation, "top_p", generation_path, &s.top_p));
    GKA_RETURN_IF_ERROR(ReadNumber(*generation, "min_p", generation_path, &s.min_p));
    GKA_RETURN_IF_ERROR(
        ReadNumber(*generation, "repetition_penalty", generation_path, &s.repetition_penalty));
    // do_sample=false means greedy whatever the temperature says (transformers' rule).
    if (generation->contains("do_sample") && (*generation)["do_sample"].is_boolean() &&
        !(*generation)["do_sample"].get<bool>()) {
      s.temperature = 0.0f;
    }
  }
  return model;
}

absl::StatusOr<TextAssets> LoadTextAssets(absl::string_view dir) {
  TextAssets assets;
  if (dir.empty() || !FileExists(JoinPath(dir, "tokenizer.json"))) {
    assets.description = dir.empty()
                             ? "no tokenizer (token ids only)"
                             : absl::StrCat("no tokenizer.json in ", dir, " (token ids only)");
    return assets;
  }
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer = text::Tokenizer::FromFile(dir);
  if (!tokenizer.ok()) return base::Annotate(tokenizer.status(), "loading the tokenizer");
  assets.tokenizer = std::move(*tokenizer);
  const std::string config = JoinPath(dir, "tokenizer_config.json");
  if (FileExists(config)) {
    absl::StatusOr<text::ChatTemplate> tmpl = text::ChatTemplate::FromTokenizerConfig(config);
    if (!tmpl.ok()) return base::Annotate(tmpl.status(), "loading the chat template");
    assets.chat_template = std::move(*tmpl);
  } else {
    GKA_LOG(WARNING) << "no tokenizer_config.json in " << dir
                     << ": chat requests use plain ChatML turns";
    assets.chat_template = text::ChatTemplate::PlainChatMl();
  }
  assets.description =
      absl::StrCat("tokenizer from ", dir, " (", assets.tokenizer->VocabSize(),
                   " tokens); chat template: ", assets.chat_template->description());
  return assets;
}

std::vector<int32_t> ResolveEosIds(const std::vector<int32_t>& model_eos,
                                   const text::Tokenizer* tokenizer) {
  std::vector<int32_t> ids = model_eos;
  if (ids.empty() && tokenizer != nullptr) {
    const text::SpecialTokenIds& special = tokenizer->special_ids();
    for (const std::optional<int32_t>& id : {special.im_end, special.endoftext, special.eos}) {
      if (id.has_value()) ids.push_back(*id);
    }
  }
  std::vector<int32_t> unique;
  for (int32_t id : ids) {
    if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
  }
  return unique;
}

}  // namespace gka::router
