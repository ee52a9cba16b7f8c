// Internal to gka::text: reading files and JSON without letting an nlohmann exception or a
// type mismatch escape; every failure is a Status that names the file and the key.
// nlohmann types stay out of the public headers; only this library's .cc files include this.
//
//   GKA_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
//   GKA_ASSIGN_OR_RETURN(auto doc, ParseJson<nlohmann::json>(text, path));
//   GKA_ASSIGN_OR_RETURN(bool lstrip, GetBool(token, "lstrip", false, "added_tokens[3]"));
#pragma once

#include <exception>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace gka::text::internal {

// Whole file. NotFound when it does not exist, InvalidArgument for a directory, Internal for
// other read errors.
absl::StatusOr<std::string> ReadFile(absl::string_view path);

// True when `path` names an existing directory.
bool IsDirectory(absl::string_view path);

// The directory part of a file path ("." for a bare file name).
std::string DirName(absl::string_view path);

// Parses `text`; InvalidArgument naming `source` and nlohmann's position on a syntax error.
// JsonT is nlohmann::json (fast lookups) or nlohmann::ordered_json (keeps key order).
template <typename JsonT>
absl::StatusOr<JsonT> ParseJson(absl::string_view text, absl::string_view source) {
  try {
    return JsonT::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not valid JSON: ", e.what()));
  }
}

// "string", "object", ... for messages.
template <typename JsonT>
std::string JsonTypeName(const JsonT& value) {
  return value.type_name();
}

// obj[key] when `obj` is an object holding a non-null `key`; nullptr otherwise.
template <typename JsonT>
const JsonT* FindNonNull(const JsonT& obj, absl::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

// Typed reads of obj[key] with a default for absent/null; InvalidArgument naming
// `where` + key for a value of the wrong type.
template <typename JsonT>
absl::StatusOr<bool> GetBool(const JsonT& obj, absl::string_view key, bool fallback,
                             absl::string_view where) {
  const JsonT* v = FindNonNull(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, " must be a boolean, not ", JsonTypeName(*v)));
  }
  return v->template get<bool>();
}

template <typename JsonT>
absl::StatusOr<std::string> GetString(const JsonT& obj, absl::string_view key,
                                      absl::string_view fallback, absl::string_view where) {
  const JsonT* v = FindNonNull(obj, key);
  if (v == nullptr) return std::string(fallback);
  if (!v->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, " must be a string, not ", JsonTypeName(*v)));
  }
  return v->template get<std::string>();
}

}  // namespace gka::text::internal
