// Internal to gka::model (not for other modules): file reading and typed JSON access that
// turn every nlohmann exception, type mismatch and I/O failure into an absl::Status naming
// the key and the file.
//
// Must not depend on anything above base. nlohmann types stay out of the public headers
// (config.h, safetensors.h, ...); only the .cc files of this library include this one.
//
//   GKA_ASSIGN_OR_RETURN(Json doc, ParseJson(text, "ckpt/config.json"));
//   GKA_ASSIGN_OR_RETURN(std::optional<int64_t> n, OptInt(doc, "vocab_size"));
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::model::internal {

using Json = nlohmann::json;

// Whole file as bytes. NotFound when it does not exist, Internal for other read errors.
absl::StatusOr<std::string> ReadFile(absl::string_view path);

// Writes `path.tmp` through `write` (which returns false on a failed write) then renames it
// over `path`, so a reader never sees half a file.
absl::Status WriteFileAtomically(absl::string_view path,
                                 const std::function<bool(std::FILE*)>& write);
absl::Status WriteFileAtomically(absl::string_view path, absl::string_view contents);

// Parses JSON text; `source` (a path) names the input in the error, with nlohmann's
// position information.
absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view source);

// obj[key], or nullptr when `obj` is not an object, the key is absent or its value is null.
const Json* FindNonNull(const Json& obj, absl::string_view key);

// Typed readers of obj[key]: std::nullopt when absent or null, InvalidArgument naming
// `path` (the key as the user wrote it, e.g. "gka_config.num_iter") on a wrong JSON type.
// Integers accept JSON floats with an integral value (Python's int() does too).
absl::StatusOr<std::optional<int64_t>> OptInt(const Json& obj, absl::string_view key,
                                              absl::string_view path);
absl::StatusOr<std::optional<double>> OptDouble(const Json& obj, absl::string_view key,
                                                absl::string_view path);
absl::StatusOr<std::optional<bool>> OptBool(const Json& obj, absl::string_view key,
                                            absl::string_view path);
absl::StatusOr<std::optional<std::string>> OptString(const Json& obj, absl::string_view key,
                                                     absl::string_view path);

// One JSON value as an int64 (same rules as OptInt); `path` names it in the error.
absl::StatusOr<int64_t> AsInt(const Json& value, absl::string_view path);

// Name of a JSON value's type for messages ("string", "array", ...).
absl::string_view JsonTypeName(const Json& value);

}  // namespace gka::model::internal
