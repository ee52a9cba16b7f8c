#include "common/model/json_util.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"

namespace gka::model::internal {
namespace {

absl::Status TypeError(absl::string_view path, absl::string_view want, const Json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", path, "' must be ", want, ", got ", JsonTypeName(got)));
}

}  // namespace

absl::StatusOr<std::string> ReadFile(absl::string_view path) {
  const std::string p(path);
  std::FILE* f = std::fopen(p.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    const std::string why = std::strerror(err);
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("cannot open ", p, ": ", why));
    return absl::InternalError(absl::StrCat("cannot open ", p, ": ", why));
  }
  absl::Cleanup close = [f] { std::fclose(f); };
  std::string out;
  char chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) out.append(chunk, n);
  if (std::ferror(f)) return absl::InternalError(absl::StrCat("error reading ", p));
  return out;
}

absl::Status WriteFileAtomically(absl::string_view path,
                                 const std::function<bool(std::FILE*)>& write) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  const bool wrote = write(f);
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("error writing ", tmp, " (disk full?)"));
  }
  if (std::rename(tmp.c_str(), std::string(path).c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", why));
  }
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(absl::string_view path, absl::string_view contents) {
  return WriteFileAtomically(path, [contents](std::FILE* f) {
    return std::fwrite(contents.data(), 1, contents.size(), f) == contents.size();
  });
}

absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view source) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not valid JSON: ", e.what()));
  }
}

const Json* FindNonNull(const Json& obj, absl::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<int64_t> AsInt(const Json& v, absl::string_view path) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "' is out of range: ", u));
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // 2^63 is exactly representable; anything at or beyond it does not fit int64.
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2233720368547758e18) {
      return static_cast<int64_t>(d);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' must be an integer, got ", v.dump()));
  }
  return TypeError(path, "an integer", v);
}

absl::StatusOr<std::optional<int64_t>> OptInt(const Json& obj, absl::string_view key,
                                              absl::string_view path) {
  const Json* v = FindNonNull(obj, key);
  if (v == nullptr) return std::optional<int64_t>();
  absl::StatusOr<int64_t> i = AsInt(*v, path);
  if (!i.ok()) return i.status();
  return std::optional<int64_t>(*i);
}

absl::StatusOr<std::optional<double>> OptDouble(const Json& obj, absl::string_view key,
                                                absl::string_view path) {
  const Json* v = FindNonNull(obj, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return TypeError(path, "a number", *v);
  return std::optional<double>(v->get<double>());
}

absl::StatusOr<std::optional<bool>> OptBool(const Json& obj, absl::string_view key,
                                            absl::string_view path) {
  const Json* v = FindNonNull(obj, key);
  if (v == nullptr) return std::optional<bool>();
  if (!v->is_boolean()) return TypeError(path, "true or false", *v);
  return std::optional<bool>(v->get<bool>());
}

absl::StatusOr<std::optional<std::string>> OptString(const Json& obj, absl::string_view key,
                                                     absl::string_view path) {
  const Json* v = FindNonNull(obj, key);
  if (v == nullptr) return std::optional<std::string>();
  if (!v->is_string()) return TypeError(path, "a string", *v);
  return std::optional<std::string>(v->get<std::string>());
}

absl::string_view JsonTypeName(const Json& value) {
  if (value.is_number_integer()) return "an integer";
  if (value.is_number_float()) return "a float";
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::boolean:
      return "a boolean";
    default:
      return "an unsupported value";
  }
}

}  // namespace gka::model::internal
