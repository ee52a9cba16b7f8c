#include "common/transfer/transfer_engine.h"

#include <future>

#include "absl/strings/str_cat.h"

namespace gka::transfer {

TransferDescriptor& TransferDescriptor::Add(const void* local, uint32_t region,
                                            uint64_t remote_addr, uint64_t length) {
  if (!segments.empty()) {
    Segment& last = segments.back();
    if (last.region == region && last.remote_addr + last.length == remote_addr &&
        static_cast<const char*>(last.local) + last.length == local) {
      last.length += length;
      return *this;
    }
  }
  segments.push_back(Segment{local, region, remote_addr, length});
  return *this;
}

uint64_t TransferDescriptor::TotalBytes() const {
  uint64_t total = 0;
  for (const Segment& s : segments) total += s.length;
  return total;
}

absl::Status ValidateDescriptor(const TransferDescriptor& descriptor,
                                const TransferTarget& target) {
  for (size_t i = 0; i < descriptor.segments.size(); ++i) {
    const Segment& s = descriptor.segments[i];
    if (s.length == 0 || s.local == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment ", i, ": empty or without a source buffer"));
    }
    if (s.region >= target.regions.size()) {
      return absl::InvalidArgumentError(absl::StrCat("segment ", i, ": region ", s.region,
                                                     " but the target has ", target.regions.size(),
                                                     " regions"));
    }
    const RemoteRegion& r = target.regions[s.region];
    // Written to be overflow-free: remote_addr - r.remote_addr only once it is >= 0.
    if (s.remote_addr < r.remote_addr || s.remote_addr - r.remote_addr > r.length ||
        s.length > r.length - (s.remote_addr - r.remote_addr)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "segment ", i, ": [0x", absl::Hex(s.remote_addr), ", +", s.length, ") is outside region ",
          s.region, " [0x", absl::Hex(r.remote_addr), ", +", r.length, ")"));
    }
  }
  return absl::OkStatus();
}

namespace {

TransferOutcome Wait(absl::AnyInvocable<void(OutcomeCallback)> start) {
  std::promise<TransferOutcome> promise;
  std::future<TransferOutcome> future = promise.get_future();
  start([&promise](TransferOutcome outcome) { promise.set_value(std::move(outcome)); });
  return future.get();
}

}  // namespace

TransferOutcome OutgoingTransfer::FinishAndWait(std::string payload) {
  return Wait([&](OutcomeCallback cb) { Finish(std::move(payload), std::move(cb)); });
}

TransferOutcome OutgoingTransfer::CancelAndWait() {
  return Wait([&](OutcomeCallback cb) { Cancel(std::move(cb)); });
}

}  // namespace gka::transfer
