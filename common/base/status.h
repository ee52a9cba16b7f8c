// Status propagation macros. The installed Abseil (20220623) predates
// absl/status/status_macros.h, so gkaserve carries its own two.
//
//   GKA_RETURN_IF_ERROR(DoThing());
//   GKA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
//
// Must not depend on anything but Abseil.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#define GKA_STATUS_CONCAT_INNER_(a, b) a##b
#define GKA_STATUS_CONCAT_(a, b) GKA_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define GKA_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status gka_status_ = (expr);       \
    if (!gka_status_.ok()) return gka_status_; \
  } while (false)

// `lhs` may be a declaration (`auto x`) or an existing lvalue.
#define GKA_ASSIGN_OR_RETURN(lhs, rexpr) \
  GKA_ASSIGN_OR_RETURN_IMPL_(GKA_STATUS_CONCAT_(gka_statusor_, __COUNTER__), lhs, rexpr)

#define GKA_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)   \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace gka::base {

// Prefixes a status message with context, keeping the code: "loading x: <original>".
inline absl::Status Annotate(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

}  // namespace gka::base
