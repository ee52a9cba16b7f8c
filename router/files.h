// Internal to gka::router: whole-file reads and path checks, with Status errors.
//
//   GKA_ASSIGN_OR_RETURN(std::string json, gka::router::ReadFile("tiers.json"));
//
// Thread-safety: free functions, safe from any thread.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::router {

// NotFound when `path` does not exist, InvalidArgument for a directory, Internal otherwise.
absl::StatusOr<std::string> ReadFile(absl::string_view path);

bool FileExists(absl::string_view path);
bool IsDirectory(absl::string_view path);

// "dir/name" (no doubled slash).
std::string JoinPath(absl::string_view dir, absl::string_view name);

// The last non-empty component of a path ("/models/qwen3/" -> "qwen3").
std::string BaseName(absl::string_view path);

}  // namespace gka::router
