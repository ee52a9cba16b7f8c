#include "decode_worker/common/handoff_sender.h"

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/transfer/checksum.h"
#include "common/transfer/lease.h"
#include "common/transfer/reshard.h"

namespace gka::worker_common {
namespace {

 

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
                                         const HandoffLayout& layout,
                                         int64_t prompt_tokens, absl::Time now) {
  const std::string from = ticket.decode_worker_id().empty()
                               ? std::string("the decode worker")
                               : absl::StrCat("decode worker ", ticket.decode_worker_id());
  if (ticket.tp_size() < 1) return absl::InvalidArgumentError("ticket.tp_size is 0");
  const int d = static_cast<int>(ticket.tp_size());
  if (absl::Status s = layout.CheckTp(d); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot map this worker's TP=", layout.tp_size(), " state onto ", from, " at TP=", d, ": ",
        s.message(), " (run the decode worker with a --tp that divides them)"));
  }
  if (absl::Status s = transfer::CheckCompat(ticket.compat_hash(), layout.TicketHash(d), from);
      !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(s.message(), "; this worker expects, for a TP=", d,
                     " decode worker, the format:\n", layout.compat_description()));
  }
  if (ticket.page_size() != static_cast<uint32_t>(layout.page_size())) {
    return absl::FailedPreconditionError(absl::StrCat("ticket.page_size ", ticket.page_size(),
                                                      " != this worker's ", layout.page_size()));
  }
  if (ticket.ranks_size() != d) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ticket is for TP=", d, " but lists ", ticket.ranks_size(), " ranks"));
  }
  if (ticket.transfer_id() == 0) return absl::InvalidArgumentError("ticket.transfer_id is 0");
  ParsedTicket out;
  out.transfer_id = ticket.transfer_id();
  out.decode_worker_id = ticket.decode_worker_id();
  out.lease_deadline = transfer::Lease::FromUnixMillis(ticket.lease_deadline_unix_ms()).deadline;
  out.decode_tp = d;
  const std::vector<SegmentSpec> specs = layout.SegmentsFor(prompt_tokens, d);
  for (int j = 0; j < d; ++j) {
    const wpb::RankTicket& rank = ticket.ranks(j);
    const std::string prefix = absl::StrCat("ticket.ranks[", j, "]");
    if (rank.rank() != static_cast<uint32_t>(j)) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, ".rank is ", rank.rank(), " (ranks must be listed in order)"));
    }
    // Each rank must own exactly the heads this worker will write to it (model-spec §6:
    // even contiguous shares); anything else is a layout we cannot map.
    const transfer::UnitRange kv = layout.KvHeads(d, j), gka = layout.GkaHeads(d, j);
    if (rank.kv_heads().first() != kv.first || rank.kv_heads().count() != kv.count ||
        rank.gka_heads().first() != gka.first || rank.gka_heads().count() != gka.count) {
      return absl::FailedPreconditionError(absl::StrCat(
          prefix, " owns KV heads [", rank.kv_heads().first(), ", +", rank.kv_heads().count(),
          ") and GKA heads [", rank.gka_heads().first(), ", +", rank.gka_heads().count(),
          "); this worker shards TP=", d, " by even head shares, so rank ", j, " would own KV [",
          kv.first, ", +", kv.count, ") and GKA [", gka.first, ", +", gka.count, "): cannot map"));
    }
    if (rank.ucx_worker_address().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, ".ucx_worker_address is empty"));
    }
    RankDestination& dest = out.ranks.emplace_back();
    dest.target.worker_address = rank.ucx_worker_address();
    for (int i = 0; i < rank.regions_size(); ++i) {
      const wpb::MemoryRegion& r = rank.regions(i);
      if (r.length() == 0 || r.packed_rkey().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(prefix, ".regions[", i, "] has no length or no key"));
      }
      if (r.remote_addr() + r.length() < r.remote_addr()) {
        return absl::InvalidArgumentError(
            absl::StrCat(prefix, ".regions[", i, "] wraps around the address space"));
      }
      dest.target.regions.push_back({r.remote_addr(), r.length(), r.packed_rkey()});
    }
    if (static_cast<size_t>(rank.segments_size()) != specs.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, ".segments lists ", rank.segments_size(), " segments; a prompt of ",
                       prompt_tokens, " tokens has ", specs.size(),
                       " (was the ticket reserved for another prompt length?)"));
    }
    for (int i = 0; i < rank.segments_size(); ++i) {
      const wpb::TransferSegment& s = rank.segments(i);
      const auto field = [&](absl::string_view what) {
        return absl::StrCat(prefix, ".segments[", i, "].", what);
      };
      if (s.length() != specs[i].bytes) {
        return absl::InvalidArgumentError(absl::StrCat(field("length"), " is ", s.length(),
                                                       ", a TP=", d, " rank's segment is ",
                                                       specs[i].bytes, " bytes"));
      }
      if (s.kind() != ToRegionKind(specs[i].kind)) {
        return absl::InvalidArgumentError(absl::StrCat(field("kind"), " does not match"));
      }
      if (s.region() >= dest.target.regions.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(field("region"), " ", s.region(), " does not exist"));
      }
      const transfer::RemoteRegion& r = dest.target.regions[s.region()];
      if (s.remote_addr() < r.remote_addr || s.remote_addr() + s.length() < s.remote_addr() ||
          s.remote_addr() + s.length() > r.remote_addr + r.length) {
        return absl::InvalidArgumentError(
            absl::StrCat(field("remote_addr"), " lies outside region ", s.region()));
      }
      dest.destinations.push_back({.local = nullptr,
                                   .region = s.region(),
                                   .remote_addr = s.remote_addr(),
                                   .length = s.length()});
    }
  }
  if (now >= out.lease_deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the ticket's lease expired ", absl::FormatDuration(now - out.lease_deadline), " ago"));
  }
  return out;
}

HandoffResult RunHandoff(transfer::TransferEngine& transfer, const HandoffJob& job,
                         const DeviceTransfer* device) {
  const bool on_device = device != nullptr && device->on_device();
  // Device path: the staging each decode rank's puts read, held until the outcome.
  std::vector<std::unique_ptr<transfer::StagedSender>> staged;
  // Writes the transport could neither finish nor cancel may still read the staging: keep it
  // for the life of the process rather than free memory a queued write reads.
  auto keep_staging_if_read = [&](const transfer::TransferOutcome& o) {
    if (!o.local_may_be_read) return;
    for (auto& s : staged) (void)s.release();
  };
  HandoffResult r;
  const absl::Time start = absl::Now();
  auto fail = [&](absl::Status s, bool may_be_written) {
    r.outcome.status = std::move(s);
    r.outcome.remote_may_be_written = may_be_written;
    r.outcome.elapsed = absl::Now() - start;
    r.failure_reason = FailureReason(r.outcome.status, job.ticket.lease_deadline);
    return r;
  };
  const int p = static_cast<int>(job.local.size());
  const int d = static_cast<int>(job.ticket.ranks.size());
  if (p < 1 || d < 1) return fail(absl::InternalError("a hand-off without ranks"), false);
  for (const auto& local : job.local) {
    if (local.size() != job.specs.size()) {
      return fail(absl::InternalError(absl::StrCat("a rank's sequence has ", local.size(),
                                                   " segments, the format ", job.specs.size())),
                  false);
    }
  }
  for (const RankDestination& dest : job.ticket.ranks) {
    if (dest.destinations.size() != job.specs.size()) {
      return fail(
          absl::InternalError(absl::StrCat("the sequence has ", job.specs.size(),
                                           " segments, the ticket ", dest.destinations.size())),
          false);
    }
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
  // One transfer per decode rank, each begun (accepted by that rank) before anything moves.
  std::vector<std::unique_ptr<transfer::OutgoingTransfer>> transfers;
  auto cancel = [&](absl::Status why) {
    r.outcome = transfer::TransferOutcome();
    for (auto& t : transfers) {
      transfer::TransferOutcome o = t->CancelAndWait();
      r.outcome.remote_may_be_written |= o.remote_may_be_written;
      r.outcome.local_may_be_read |= o.local_may_be_read;
      r.outcome.bytes += o.bytes;
      r.outcome.segments += o.segments;
    }
    r.outcome.status = std::move(why);
    r.outcome.elapsed = absl::Now() - start;
    r.failure_reason = FailureReason(r.outcome.status, job.ticket.lease_deadline);
    if (job.cancelled != nullptr && job.cancelled->load()) r.failure_reason.clear();
    keep_staging_if_read(r.outcome);
    return r;
  };
  for (int j = 0; j < d; ++j) {
    absl::StatusOr<std::unique_ptr<transfer::OutgoingTransfer>> started =
        transfer.StartTransfer(job.ticket.ranks[j].target, job.ticket.transfer_id, deadline);
    if (!started.ok()) {
      absl::Status why = d > 1 ? base::Annotate(started.status(), absl::StrCat("decode rank ", j))
                               : started.status();
      if (transfers.empty()) return fail(why, false);
      return cancel(why);  // those begun wrote nothing yet
    }
    transfers.push_back(*std::move(started));
  }
#ifdef GKA_FAULT_INJECTION
  if (job.faults.delay_puts > absl::ZeroDuration()) {
    GKA_LOG(WARNING) << "fault injection: delaying the writes of transfer "
                     << job.ticket.transfer_id << " by " << job.faults.delay_puts;
    absl::SleepFor(job.faults.delay_puts);
  }
#endif
  auto cancelled = [&] { return job.cancelled != nullptr && job.cancelled->load(); };

  // What decode rank j needs of segment k, straight from the prefill ranks holding it.
  auto add_segment = [&](transfer::TransferDescriptor& desc, int j, size_t k) -> uint64_t {
    const transfer::Segment& dst = job.ticket.ranks[j].destinations[k];
    uint64_t bytes = 0;
    for (int i : transfer::SourceRanks(p, d, j)) {
      const char* src = static_cast<const char*>(job.local[i][k].ptr);
      for (const transfer::Piece& c : transfer::ReshardPieces(job.specs[k].shape, p, i, d, j)) {
        desc.Add(src + c.src_offset, dst.region, dst.remote_addr + c.dst_offset, c.length);
        bytes += c.length;
      }
    }
    return bytes;
  };
  // KV pages one attention layer at a time (the order a layer-streaming prefill produces
  // them in), to every decode rank; then every GKA and conv state in one go per rank.
  const size_t n = job.specs.size();
  // GPU memory: per decode rank, its pieces (same resharding as add_segment) as staged device
  // segments, one stage per layer in canonical order; every rank's staging copies are enqueued
  // before the first rank's puts. The prefill ranks' compute has finished writing them: the
  // lead rank sampled the first token (a host sync) after the last layer's all-reduce, which
  // every rank reached after its own KV and state writes.
  if (on_device) {
    std::vector<transfer::StageCopier*> copiers;
    for (int i = 0; i < p; ++i) copiers.push_back(&device->copier(i));
    for (int j = 0; j < d; ++j) {
      std::vector<transfer::DeviceSegment> pieces;
      for (size_t k = 0; k < n; ++k) {
        const transfer::Segment& dst = job.ticket.ranks[j].destinations[k];
        for (int i : transfer::SourceRanks(p, d, j)) {
          const char* src = static_cast<const char*>(job.local[i][k].ptr);
          for (const transfer::Piece& c : transfer::ReshardPieces(job.specs[k].shape, p, i, d, j)) {
            pieces.push_back({.src = src + c.src_offset,
                              .region = dst.region,
                              .remote_addr = dst.remote_addr + c.dst_offset,
                              .length = c.length,
                              .stage = job.specs[k].layer,
                              .source = i});
            (job.specs[k].kind == SegmentKind::kKv ? r.kv_bytes : r.state_bytes) += c.length;
          }
        }
      }
      absl::StatusOr<std::unique_ptr<transfer::StagedSender>> s =
          transfer::StagedSender::Start(copiers, device->pool(0), std::move(pieces));
      if (!s.ok()) return cancel(s.status());
      staged.push_back(*std::move(s));
    }
    for (int j = 0; j < d; ++j) {
      absl::StatusOr<transfer::StagedSend> sent = staged[j]->PutAll(*transfers[j], cancelled);
      if (!sent.ok()) return cancel(sent.status());
      transfers[j]->SupplyChecksum(sent->checksum);
    }
  }
  for (size_t k = 0; k < n && !on_device;) {
    if (job.specs[k].kind != SegmentKind::kKv) {
      ++k;
      continue;
    }
    size_t end = k;
    while (end < n && job.specs[end].kind == SegmentKind::kKv &&
           job.specs[end].layer == job.specs[k].layer) {
      ++end;
    }
    if (cancelled()) return cancel(absl::CancelledError("the Prefill call was cancelled"));
    for (int j = 0; j < d; ++j) {
      transfer::TransferDescriptor layer;
      for (size_t i = k; i < end; ++i) r.kv_bytes += add_segment(layer, j, i);
      absl::Status s = transfers[j]->Put(layer);
#ifdef GKA_FAULT_INJECTION
      if (job.faults.fail_put && s.ok()) {
        GKA_LOG(WARNING) << "fault injection: failing a put of transfer " << job.ticket.transfer_id;
        s = absl::UnavailableError("fault injection: the transport reported a put error");
      }
#endif
      if (!s.ok()) return cancel(s);
    }
    k = end;
  }
  const absl::Time kv_posted = absl::Now();
  if (cancelled()) return cancel(absl::CancelledError("the Prefill call was cancelled"));
  for (int j = 0; j < d && !on_device; ++j) {
    transfer::TransferDescriptor state;
    for (size_t k = 0; k < n; ++k) {
      if (job.specs[k].kind != SegmentKind::kKv) r.state_bytes += add_segment(state, j, k);
    }
    if (state.segments.empty()) continue;
    if (absl::Status s = transfers[j]->Put(state); !s.ok()) return cancel(s);
  }

  wpb::HandoffCompletion completion = job.completion;
#ifdef GKA_FAULT_INJECTION
  if (job.faults.corrupt_byte && !on_device && !job.local.back().empty()) {
    // Let the puts leave (small segments are copied when posted), then change the source the
    // checksum is computed from: the receiver holds bytes the checksum does not describe.
    absl::SleepFor(absl::Milliseconds(200));
    auto* byte = static_cast<unsigned char*>(job.local.back().back().ptr);
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
  // Every rank's completion at once (each waits for its own flush and acknowledgement).
  const std::string payload = EncodeCompletion(completion);
  std::vector<std::promise<transfer::TransferOutcome>> promises(d);
  std::vector<std::future<transfer::TransferOutcome>> futures;
  for (auto& promise : promises) futures.push_back(promise.get_future());
  for (int j = 0; j < d; ++j) {
    transfers[j]->Finish(payload, [promise = &promises[j]](transfer::TransferOutcome o) {
      promise->set_value(std::move(o));
    });
  }
  std::vector<transfer::TransferOutcome> outcomes;
  for (auto& future : futures) outcomes.push_back(future.get());
  r.outcome = transfer::TransferOutcome();
  std::vector<uint64_t> checksums;
  for (int j = 0; j < d; ++j) {
    const transfer::TransferOutcome& o = outcomes[j];
    // The cause, not its echo: a rank whose share failed (checksum, lease) makes the decode
    // worker fence the others, which then report CANCELLED.
    const bool echo = o.status.code() == absl::StatusCode::kCancelled;
    if (!o.status.ok() && (r.outcome.status.ok() ||
                           (r.outcome.status.code() == absl::StatusCode::kCancelled && !echo))) {
      r.outcome.status =
          d > 1 ? base::Annotate(o.status, absl::StrCat("decode rank ", j)) : o.status;
    }
    r.outcome.remote_may_be_written |= o.remote_may_be_written;
    r.outcome.local_may_be_read |= o.local_may_be_read;
    r.outcome.bytes += o.bytes;
    r.outcome.segments += o.segments;
    checksums.push_back(o.checksum);
  }
  r.outcome.checksum =
      d == 1 ? checksums[0]
             : transfer::Checksum64::Of(checksums.data(), checksums.size() * sizeof(uint64_t));
  r.outcome.elapsed = absl::Now() - start;
  r.state_time = absl::Now() - kv_posted;
  r.kv_time = kv_posted - start;
  r.failure_reason = FailureReason(r.outcome.status, job.ticket.lease_deadline);
  keep_staging_if_read(r.outcome);
  return r;
}

wpb::TransferStats StatsOf(const HandoffResult& result) {
  wpb::TransferStats stats;
  stats.set_kv_bytes(result.kv_bytes);
  stats.set_state_bytes(result.state_bytes);
  stats.set_transfer_ms(absl::ToDoubleMilliseconds(result.outcome.elapsed));
  stats.set_checksum(result.outcome.checksum);
  stats.set_segments(result.outcome.segments);
  return stats;
}

}  // namespace gka::worker_common
