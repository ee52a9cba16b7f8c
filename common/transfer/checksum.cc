#include "common/transfer/checksum.h"

#include <xxhash.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"

namespace gka::transfer {

struct Checksum64::State {
  XXH3_state_t* xxh = nullptr;
};

Checksum64::Checksum64() : state_(std::make_unique<State>()) {
  state_->xxh = XXH3_createState();
  GKA_CHECK(state_->xxh != nullptr) << "out of memory for an XXH3 state";
  XXH3_64bits_reset(state_->xxh);
}

Checksum64::~Checksum64() { XXH3_freeState(state_->xxh); }

void Checksum64::Update(const void* data, uint64_t length) {
  if (length > 0) XXH3_64bits_update(state_->xxh, data, length);
}

uint64_t Checksum64::Digest() const { return XXH3_64bits_digest(state_->xxh); }

uint64_t Checksum64::Of(const void* data, uint64_t length) { return XXH3_64bits(data, length); }

absl::StatusOr<uint64_t> ChecksumInAddressOrder(std::vector<ChecksumRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const ChecksumRange& a, const ChecksumRange& b) {
    return a.target_addr < b.target_addr;
  });
  Checksum64 sum;
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (i > 0 && ranges[i - 1].target_addr + ranges[i - 1].length > ranges[i].target_addr) {
      return absl::InvalidArgumentError(
          absl::StrCat("ranges overlap in the target: [0x", absl::Hex(ranges[i - 1].target_addr),
                       ", +", ranges[i - 1].length, ") and [0x", absl::Hex(ranges[i].target_addr),
                       ", +", ranges[i].length, ")"));
    }
    sum.Update(ranges[i].data, ranges[i].length);
  }
  return sum.Digest();
}

}  // namespace gka::transfer
