#include "prefill_worker/handoff_sender.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/transfer/lease.h"

namespace gka::prefill_worker {
namespace {

using worker_common::SegmentKind;

std::string FailureReason(const absl::Status& s, absl::Time lease_deadline) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return "";
    case absl::StatusCode::kDataLoss:
      return "checksum";
    case absl::StatusCode::kDeadlineExceeded:
      return absl::Now() >= lease_deadline ? "lease" : "timeout";
    // Refused or fenced by the receiver: the reservation is gone.
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kCancelled:
      return "lease";
    default:
      return "peer";
  }
}

}  // namespace

absl::StatusOr<ParsedTicket> ParseTicket(const wpb::TransferTicket& ticket,
                                         const worker_common::HandoffLayout& layout,
                                         int64_t prompt_tokens, absl::Time now) {
  const std::string from = ticket.decode_worker_id().empty()
                               ? std::string("the decode worker")
                               : absl::StrCat("decode worker ", ticket.decode_worker_id());
  GKA_RETURN_IF_ERROR(transfer::CheckCompat(ticket.compat_hash(), layout.compat_hash(), from));
  if (ticket.page_size() != static_cast<uint32_t>(layout.page_size())) {
    return absl::FailedPreconditionError(absl::StrCat("ticket.page_size ", ticket.page_size(),
                                                      " != this worker's ", layout.page_size()));
  }
  if (ticket.tp_size() != 1 || ticket.ranks_size() != 1) {
    return absl::FailedPreconditionError(absl::StrCat("the ticket is for TP=", ticket.tp_size(),
                                                      " with ", ticket.ranks_size(),
                                                      " ranks; this prefill worker runs TP=1"));
  }
  if (ticket.transfer_id() == 0) return absl::InvalidArgumentError("ticket.transfer_id is 0");
  const wpb::RankTicket& rank = ticket.ranks(0);
  if (rank.ucx_worker_address().empty()) {
    return absl::InvalidArgumentError("ticket.ranks[0].ucx_worker_address is empty");
  }
  ParsedTicket out;
  out.transfer_id = ticket.transfer_id();
  out.decode_worker_id = ticket.decode_worker_id();
  out.lease_deadline = transfer::Lease::FromUnixMillis(ticket.lease_deadline_unix_ms()).deadline;
  out.target.worker_address = rank.ucx_worker_address();
  for (int i = 0; i < rank.regions_size(); ++i) {
    const wpb::MemoryRegion& r = rank.regions(i);
    if (r.length() == 0 || r.packed_rkey().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ticket.ranks[0].regions[", i, "] has no length or no key"));
    }
    if (r.remote_addr() + r.length() < r.remote_addr()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ticket.ranks[0].regions[", i, "] wraps around the address space"));
    }
    out.target.regions.push_back({r.remote_addr(), r.length(), r.packed_rkey()});
  }
  const std::vector<worker_common::SegmentSpec> specs = layout.Segments(prompt_tokens);
  if (static_cast<size_t>(rank.segments_size()) != specs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("ticket.ranks[0].segments lists ",
                                                   rank.segments_size(), " segments; a prompt of ",
                                                   prompt_tokens, " tokens has ", specs.size(),
                                                   " (was the ticket reserved for another "
                                                   "prompt length?)"));
  }
  for (int i = 0; i < rank.segments_size(); ++i) {
    const wpb::TransferSegment& s = rank.segments(i);
    const auto field = [i](absl::string_view what) {
      return absl::StrCat("ticket.ranks[0].segments[", i, "].", what);
    };
    if (s.length() != specs[i].bytes) {
      return absl::InvalidArgumentError(absl::StrCat(field("length"), " is ", s.length(),
                                                     ", this worker's segment is ", specs[i].bytes,
                                                     " bytes"));
    }
    if (s.kind() != worker_common::ToRegionKind(specs[i].kind)) {
      return absl::InvalidArgumentError(absl::StrCat(field("kind"), " does not match"));
    }
    if (s.region() >= out.target.regions.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field("region"), " ", s.region(), " does not exist"));
    }
    const transfer::RemoteRegion& r = out.target.regions[s.region()];
    if (s.remote_addr() < r.remote_addr || s.remote_addr() + s.length() < s.remote_addr() ||
        s.remote_addr() + s.length() > r.remote_addr + r.length) {
      return absl::InvalidArgumentError(
          absl::StrCat(field("remote_addr"), " lies outside region ", s.region()));
    }
    out.destinations.push_back({.local = nullptr,
                                .region = s.region(),
                                .remote_addr = s.remote_addr(),
                                .length = s.length()});
  }
  if (now >= out.lease_deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the ticket's lease expired ", absl::FormatDuration(now - out.lease_deadline), " ago"));
  }
  return out;
}

HandoffResult RunHandoff(transfer::TransferEngine& transfer, const HandoffJob& job) {
  HandoffResult r;
  const absl::Time start = absl::Now();
  auto fail = [&](absl::Status s, bool may_be_written) {
    r.outcome.status = std::move(s);
    r.outcome.remote_may_be_written = may_be_written;
    r.outcome.elapsed = absl::Now() - start;
    r.failure_reason = FailureReason(r.outcome.status, job.ticket.lease_deadline);
    return r;
  };
  if (job.local.size() != job.ticket.destinations.size()) {
    return fail(
        absl::InternalError(absl::StrCat("the sequence has ", job.local.size(),
                                         " segments, the ticket ", job.ticket.destinations.size())),
        false);
  }
  absl::Time deadline = job.deadline;
#ifdef GKA_FAULT_INJECTION
  // A slow or frozen sender overstays the lease: its own deadline does not stop it, the
  // receiver's fence must.
  if (job.faults.delay_completion > absl::ZeroDuration() ||
      job.faults.delay_puts > absl::ZeroDuration() || job.faults.freeze) {
    deadline =
        absl::Now() + job.faults.delay_completion + job.faults.delay_puts + absl::Seconds(60);
  }
#endif
  absl::StatusOr<std::unique_ptr<transfer::OutgoingTransfer>> started =
      transfer.StartTransfer(job.ticket.target, job.ticket.transfer_id, deadline);
  if (!started.ok()) return fail(started.status(), false);
  transfer::OutgoingTransfer& t = **started;
#ifdef GKA_FAULT_INJECTION
  if (job.faults.delay_puts > absl::ZeroDuration()) {
    GKA_LOG(WARNING) << "fault injection: delaying the writes of transfer "
                     << job.ticket.transfer_id << " by " << job.faults.delay_puts;
    absl::SleepFor(job.faults.delay_puts);
  }
#endif
  auto cancel = [&](absl::Status why) {
    transfer::TransferOutcome o = t.CancelAndWait();
    r.outcome = o;
    r.outcome.status = std::move(why);
    r.failure_reason = FailureReason(r.outcome.status, job.ticket.lease_deadline);
    if (job.cancelled != nullptr && job.cancelled->load()) r.failure_reason.clear();
    return r;
  };
  auto cancelled = [&] { return job.cancelled != nullptr && job.cancelled->load(); };

  // KV pages one attention layer at a time (the order a layer-streaming prefill produces
  // them in), then every GKA and conv state in one go.
  transfer::TransferDescriptor layer, state;
  int32_t current_layer = -1;
  auto flush_layer = [&]() -> absl::Status {
    if (layer.segments.empty()) return absl::OkStatus();
    absl::Status s = t.Put(layer);
    layer = transfer::TransferDescriptor();
    return s;
  };
  for (size_t i = 0; i < job.local.size(); ++i) {
    const transfer::Segment& d = job.ticket.destinations[i];
    const worker_common::SegmentSpec& spec = job.specs[i];
    if (spec.kind != SegmentKind::kKv) {
      state.Add(job.local[i].ptr, d.region, d.remote_addr, d.length);
      r.state_bytes += d.length;
      continue;
    }
    if (spec.layer != current_layer) {
      if (absl::Status s = flush_layer(); !s.ok()) return cancel(s);
      if (cancelled()) return cancel(absl::CancelledError("the Prefill call was cancelled"));
      current_layer = spec.layer;
    }
    layer.Add(job.local[i].ptr, d.region, d.remote_addr, d.length);
    r.kv_bytes += d.length;
  }
  if (absl::Status s = flush_layer(); !s.ok()) return cancel(s);
  const absl::Time kv_posted = absl::Now();
  if (cancelled()) return cancel(absl::CancelledError("the Prefill call was cancelled"));
  if (!state.segments.empty()) {
    if (absl::Status s = t.Put(state); !s.ok()) return cancel(s);
  }

  wpb::HandoffCompletion completion = job.completion;
#ifdef GKA_FAULT_INJECTION
  if (job.faults.corrupt_byte && !job.local.empty()) {
    // Let the puts leave (small segments are copied when posted), then change the source the
    // checksum is computed from: the receiver holds bytes the checksum does not describe.
    absl::SleepFor(absl::Milliseconds(200));
    auto* byte = static_cast<unsigned char*>(job.local.back().ptr);
    *byte ^= 0x5a;
    GKA_LOG(WARNING) << "fault injection: corrupted a byte of transfer " << job.ticket.transfer_id;
  }
  if (job.faults.delay_completion > absl::ZeroDuration()) {
    GKA_LOG(WARNING) << "fault injection: delaying the completion of transfer "
                     << job.ticket.transfer_id << " by " << job.faults.delay_completion;
    absl::SleepFor(job.faults.delay_completion);
  }
  if (job.faults.freeze) {
    GKA_LOG(WARNING) << "fault injection: freezing before the completion of transfer "
                     << job.ticket.transfer_id;
    const absl::Time until = absl::Now() + absl::Seconds(60);
    while (!cancelled() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  }
  if (job.faults.stale_generation) completion.set_transfer_id(job.ticket.transfer_id - 1);
#endif
  if (cancelled()) return cancel(absl::CancelledError("the Prefill call was cancelled"));
  r.outcome = t.FinishAndWait(worker_common::EncodeCompletion(completion));
  r.state_time = absl::Now() - kv_posted;
  r.kv_time = kv_posted - start;
  r.failure_reason = FailureReason(r.outcome.status, job.ticket.lease_deadline);
  return r;
}

}  // namespace gka::prefill_worker
