// Transfer checksums: XXH3-64 over the written bytes, in target-address order.
//
// Owns nothing. Depends on Abseil; libxxhash stays in checksum.cc.
//
// Definition (the wire contract between prefill and decode workers): sort the written byte
// ranges by their address in the *receiver's* memory, concatenate their bytes, hash with
// XXH3-64 (seed 0). Because it is defined on the concatenation, the sender's segmentation
// (one put per page, or merged runs) and the order of its puts do not change the value, so
// the receiver can verify with its own view of the reserved ranges.
//
//   // Receiver: its reserved pages and slot, addresses are its own.
//   GKA_ASSIGN_OR_RETURN(uint64_t sum, ChecksumInAddressOrder({{page0, page0, n}, ...}));
//
// Thread-safety: functions are reentrant; a Checksum64 object is not shared.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace gka::transfer {

// Streaming XXH3-64, seed 0.
class Checksum64 {
 public:
  Checksum64();
  ~Checksum64();
  Checksum64(const Checksum64&) = delete;
  Checksum64& operator=(const Checksum64&) = delete;

  void Update(const void* data, uint64_t length);
  uint64_t Digest() const;

  // One-shot.
  static uint64_t Of(const void* data, uint64_t length);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct ChecksumRange {
  // Where the bytes land in the receiver's memory (the sort key).
  uint64_t target_addr = 0;
  // Where to read them now (the sender's source, or target_addr itself on the receiver).
  const void* data = nullptr;
  uint64_t length = 0;
};

// The transfer checksum defined above. INVALID_ARGUMENT when two ranges overlap in the
// target (a descriptor that writes the same bytes twice has no well-defined result).
absl::StatusOr<uint64_t> ChecksumInAddressOrder(std::vector<ChecksumRange> ranges);

}  // namespace gka::transfer
