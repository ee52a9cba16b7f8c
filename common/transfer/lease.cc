#include "common/transfer/lease.h"

#include "absl/strings/str_cat.h"
#include "common/transfer/checksum.h"

namespace gka::transfer {

CompatHashBuilder& CompatHashBuilder::Add(absl::string_view key, absl::string_view value) {
  fields_[std::string(key)] = std::string(value);
  return *this;
}

CompatHashBuilder& CompatHashBuilder::Add(absl::string_view key, int64_t value) {
  return Add(key, absl::StrCat(value));
}

std::string CompatHashBuilder::Canonical() const {
  std::string out;
  for (const auto& [key, value] : fields_) absl::StrAppend(&out, key, "=", value, "\n");
  return out;
}

uint64_t CompatHashBuilder::Hash() const {
  const std::string canonical = Canonical();
  return Checksum64::Of(canonical.data(), canonical.size());
}

absl::Status CheckCompat(uint64_t expected, uint64_t actual, absl::string_view peer) {
  if (expected == actual) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("transfer compatibility hash mismatch with ", peer, ": theirs 0x",
                   absl::Hex(expected), ", ours 0x", absl::Hex(actual),
                   " (model, dtypes, page size, TP layout or state format differ; compare "
                   "CompatHashBuilder::Canonical() of both workers)"));
}

}  // namespace gka::transfer
