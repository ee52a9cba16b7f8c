#include "common/text/json_util.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace gka::text::internal {

bool IsDirectory(absl::string_view path) {
  struct stat st;
  return ::stat(std::string(path).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string DirName(absl::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

absl::StatusOr<std::string> ReadFile(absl::string_view path) {
  const std::string p(path);
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      return absl::NotFoundError(absl::StrCat(p, " does not exist"));
    return absl::InternalError(absl::StrCat("cannot stat ", p, ": ", std::strerror(err)));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(p, " is a directory, expected a file"));
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open ", p, ": ", std::strerror(errno)));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("error reading ", p));
  return std::move(buffer).str();
}

}  // namespace gka::text::internal
