// Leases and compatibility hashes for transfers.
//
// Owns nothing. Depends on Abseil only.
//
//   Lease lease = Lease::FromUnixMillis(ticket.lease_deadline_unix_ms());
//   if (lease.Expired()) return absl::DeadlineExceededError("ticket expired");
//
//   CompatHashBuilder compat;
//   compat.Add("model", "GKA-primed-HQwen3-32B").Add("kv_dtype", "bf16").Add("page_size", 16);
//   uint64_t hash = compat.Hash();                      // travels in the ticket
//   GKA_RETURN_IF_ERROR(CheckCompat(ticket.compat_hash(), hash, "decode worker w3"));
//
// Thread-safety: value types; a builder is not shared while it is being filled.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace gka::transfer {

// A reservation's deadline. Wall-clock (absl::Time) because it crosses processes in the
// ticket; hosts are assumed to be NTP-synchronised to well under a lease length.
struct Lease {
  absl::Time deadline = absl::InfiniteFuture();

  static Lease In(absl::Duration length, absl::Time now = absl::Now()) {
    return Lease{now + length};
  }
  static Lease FromUnixMillis(int64_t unix_ms) { return Lease{absl::FromUnixMillis(unix_ms)}; }
  int64_t ToUnixMillis() const { return absl::ToUnixMillis(deadline); }

  bool Expired(absl::Time now = absl::Now()) const { return now >= deadline; }
  absl::Duration Remaining(absl::Time now = absl::Now()) const {
    return Expired(now) ? absl::ZeroDuration() : deadline - now;
  }
};

// Hash of everything that must match for one worker to write another's memory: model,
// dtypes, page size, TP layout, state format version. Keys are sorted, so the order of Add
// calls does not matter; a key added twice keeps the last value.
class CompatHashBuilder {
 public:
  CompatHashBuilder& Add(absl::string_view key, absl::string_view value);
  CompatHashBuilder& Add(absl::string_view key, int64_t value);

  // XXH3-64 of Canonical().
  uint64_t Hash() const;
  // "key=value\n" lines in key order: what is hashed, for logs and mismatch reports.
  std::string Canonical() const;

 private:
  std::map<std::string, std::string> fields_;
};

// FAILED_PRECONDITION naming `peer` and both hashes when they differ.
absl::Status CheckCompat(uint64_t expected, uint64_t actual, absl::string_view peer);

}  // namespace gka::transfer
