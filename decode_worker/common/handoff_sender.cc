#include "decode_worker/common/handoff_sender.h"

#include <algorithm>
#include <future>
#include <limits>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"
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
                                         const HandoffLayout& layout, int64_t prompt_tokens,
                                         absl::Time now) {
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

// One unit of work: what decode rank `j` needs of segment `k` from prefill rank `i`.
struct HandoffStream::Unit {
  int j = 0;
  size_t k = 0;
  int i = 0;
  std::vector<transfer::Piece> pieces;
  std::vector<size_t> staged;  // the pieces' indices in decode rank j's StagedSender
  bool sent = false;
};

// What only the I/O task touches (under io_mu_).
struct HandoffStream::Io {
  bool begun = false;
  absl::Status begin_error;
  std::vector<std::unique_ptr<transfer::OutgoingTransfer>> transfers;    // [decode rank]
  std::vector<std::unique_ptr<transfer::staging::StagedSender>> staged;  // [decode rank], device
  std::vector<std::vector<transfer::staging::DeviceSegment>>
      device_pieces;  // what `staged` is made of
  size_t unsent = 0;
  bool cancelled = false;
  uint64_t kv_put = 0;
  std::optional<absl::Time> kv_posted;
  HandoffResult result;  // bytes by kind (static), filled at the end
};

HandoffStream::HandoffStream(const Options& options, HandoffJob job)
    : options_(options),
      job_(std::move(job)),
      on_device_(options.device != nullptr && options.device->on_device()),
      start_(absl::Now()) {}

HandoffStream::~HandoffStream() {
  // Transfers neither finished nor cancelled (a stream abandoned at shutdown) are cancelled
  // by their destructors; the staging waits for its copies.
}

absl::StatusOr<std::shared_ptr<HandoffStream>> HandoffStream::Create(const Options& options,
                                                                     HandoffJob job) {
  const int p = job.prefill_tp;
  const int d = static_cast<int>(job.ticket.ranks.size());
  if (p < 1 || d < 1) return absl::InternalError("a hand-off without ranks");
  for (const RankDestination& dest : job.ticket.ranks) {
    if (dest.destinations.size() != job.specs.size()) {
      return absl::InternalError(absl::StrCat("the sequence has ", job.specs.size(),
                                              " segments, the ticket ", dest.destinations.size()));
    }
  }
  std::shared_ptr<HandoffStream> s(new HandoffStream(options, std::move(job)));
  const HandoffJob& jb = s->job_;
  // Page index of each KV segment within its layer: per attention layer its K pages, then its
  // V pages (HandoffLayout::Segments).
  s->page_of_.assign(jb.specs.size(), -1);
  for (size_t k = 0; k < jb.specs.size();) {
    if (jb.specs[k].kind != SegmentKind::kKv) {
      ++k;
      continue;
    }
    size_t end = k;
    while (end < jb.specs.size() && jb.specs[end].kind == SegmentKind::kKv &&
           jb.specs[end].layer == jb.specs[k].layer) {
      ++end;
    }
    const int32_t pages = static_cast<int32_t>((end - k) / 2);
    s->pages_total_ = pages;
    for (size_t x = k; x < end; ++x) s->page_of_[x] = static_cast<int32_t>((x - k) % pages);
    k = end;
  }
  auto io = std::make_unique<Io>();
  const bool on_device = s->on_device_;
  std::vector<std::vector<transfer::staging::DeviceSegment>> device_pieces(d);
  for (size_t k = 0; k < jb.specs.size(); ++k) {
    for (int j = 0; j < d; ++j) {
      const transfer::Segment& dst = jb.ticket.ranks[j].destinations[k];
      for (int i : transfer::SourceRanks(p, d, j)) {
        Unit u{.j = j, .k = k, .i = i};
        u.pieces = transfer::ReshardPieces(jb.specs[k].shape, p, i, d, j);
        for (const transfer::Piece& c : u.pieces) {
          (jb.specs[k].kind == SegmentKind::kKv ? io->result.kv_bytes : io->result.state_bytes) +=
              c.length;
          if (!on_device) continue;
          u.staged.push_back(device_pieces[j].size());
          device_pieces[j].push_back({.src = nullptr,
                                      .region = dst.region,
                                      .remote_addr = dst.remote_addr + c.dst_offset,
                                      .length = c.length,
                                      .stage = jb.specs[k].layer,
                                      .source = i});
        }
        s->units_.push_back(std::move(u));
      }
    }
  }
  io->unsent = s->units_.size();
  io->device_pieces = std::move(device_pieces);  // staged in Begin: pinning takes a while
  {
    absl::MutexLock lock(&s->io_mu_);
    s->io_ = std::move(io);
  }
  {
    absl::MutexLock lock(&s->mu_);
    s->memory_.assign(p, std::vector<const void*>(jb.specs.size(), nullptr));
    s->layers_final_.assign(p, 0);
    s->marks_.assign(p, nullptr);
    s->page_marks_.assign(p, nullptr);
    s->layer_marks_.resize(p);
  }
  s->Schedule();  // the handshakes overlap the first prefill step
  return s;
}

absl::Status HandoffStream::Describe(int rank, const std::vector<engine::MemorySegment>& memory) {
  const std::vector<SegmentSpec>& specs = job_.specs;
  size_t states = 0, kv_layers = 0;
  for (size_t k = 0; k < specs.size(); ++k) {
    if (page_of_[k] < 0) {
      ++states;
    } else if (k == 0 || page_of_[k - 1] < 0 || specs[k - 1].layer != specs[k].layer) {
      ++kv_layers;
    }
  }
  // Every attention layer describes its held pages twice (K then V).
  const size_t kv = memory.size() >= states ? memory.size() - states : 0;
  if (rank < 0 || rank >= job_.prefill_tp || memory.size() < states ||
      (kv_layers == 0 ? kv != 0 : kv % (2 * kv_layers) != 0) ||
      (kv_layers > 0 && kv / (2 * kv_layers) > static_cast<size_t>(pages_total_))) {
    return absl::InternalError(absl::StrCat("rank ", rank, " describes ", memory.size(),
                                            " segments; the hand-off format has ", specs.size(),
                                            " for the whole prompt"));
  }
  const size_t held = kv_layers == 0 ? 0 : kv / (2 * kv_layers);
  std::vector<const void*> ptrs(specs.size(), nullptr);
  size_t m = 0;
  for (size_t k = 0; k < specs.size();) {
    if (page_of_[k] < 0) {
      if (memory[m].bytes != specs[k].bytes) {
        return absl::InternalError(absl::StrCat("rank ", rank, " segment ", m, " has ",
                                                memory[m].bytes, " bytes, the format ",
                                                specs[k].bytes));
      }
      ptrs[k++] = memory[m++].ptr;
      continue;
    }
    // One attention layer: K pages [k, k + total), V pages [k + total, k + 2 total).
    for (int half = 0; half < 2; ++half) {
      for (size_t q = 0; q < held; ++q) {
        const size_t spec = k + half * pages_total_ + q;
        if (memory[m].bytes != specs[spec].bytes) {
          return absl::InternalError(absl::StrCat("rank ", rank, " page segment ", m, " has ",
                                                  memory[m].bytes, " bytes, the format ",
                                                  specs[spec].bytes));
        }
        ptrs[spec] = memory[m++].ptr;
      }
    }
    k += 2 * pages_total_;
  }
  absl::MutexLock lock(&mu_);
  for (size_t k = 0; k < specs.size(); ++k) {
    if (ptrs[k] != nullptr) memory_[rank][k] = ptrs[k];
  }
  return absl::OkStatus();
}

void HandoffStream::PagesFinal(int64_t pages, Marks marks) {
  {
    absl::MutexLock lock(&mu_);
    if (pages <= pages_final_) return;
    pages_final_ = pages;
    for (size_t r = 0; r < marks.size() && r < marks_.size(); ++r) {
      if (marks[r] != nullptr) page_marks_[r] = marks_[r] = std::move(marks[r]);
    }
  }
  Schedule();
}

void HandoffStream::LayerFinal(int rank, int32_t layer, std::shared_ptr<kernels::StreamMark> mark) {
  {
    absl::MutexLock lock(&mu_);
    if (rank < 0 || rank >= static_cast<int>(layers_final_.size())) return;
    layers_final_[rank] = std::max(layers_final_[rank], layer + 1);
    if (mark != nullptr) layer_marks_[rank][layer] = marks_[rank] = std::move(mark);
  }
  Schedule();
}

absl::Status HandoffStream::Complete(const std::vector<std::vector<engine::MemorySegment>>& memory,
                                     Marks marks, wpb::HandoffCompletion completion,
                                     absl::AnyInvocable<void(HandoffResult)> done) {
  if (static_cast<int>(memory.size()) != job_.prefill_tp) {
    return absl::InternalError("Complete needs every prefill rank's memory");
  }
  for (int r = 0; r < job_.prefill_tp; ++r) GKA_RETURN_IF_ERROR(Describe(r, memory[r]));
  {
    absl::MutexLock lock(&mu_);
    for (size_t r = 0; r < marks.size() && r < marks_.size(); ++r) {
      if (marks[r] != nullptr) marks_[r] = std::move(marks[r]);
    }
    complete_ = true;
    complete_at_ = absl::Now();
    streamed_ = bytes_put_;
    completion_ = std::move(completion);
    done_ = std::move(done);
  }
  Schedule();
  return absl::OkStatus();
}

void HandoffStream::Schedule() {
  {
    absl::MutexLock lock(&mu_);
    if (scheduled_ || ended_) return;
    scheduled_ = true;
  }
  if (options_.executor([self = shared_from_this()] { self->Pump(); })) return;
  // The sender pool is closed (shutdown): nothing will move; say so to whoever waits.
  HandoffResult r;
  r.outcome.status = absl::UnavailableError("the prefill worker is shutting down");
  absl::AnyInvocable<void(HandoffResult)> done;
  {
    absl::MutexLock lock(&mu_);
    scheduled_ = false;
    if (!complete_ || done_ == nullptr) return;
    done = std::move(done_);
    ended_ = true;
  }
  done(std::move(r));
}

uint64_t HandoffStream::bytes_put() const {
  absl::MutexLock lock(&mu_);
  return bytes_put_;
}

absl::Status HandoffStream::Begin() {
  Io& io = *io_;
  io.begun = true;
  absl::Time deadline = job_.deadline;
#ifdef GKA_FAULT_INJECTION
  // A slow or frozen sender overstays the lease: its own deadline does not stop it, the
  // receiver's fence must.
  if (job_.faults.delay_completion > absl::ZeroDuration() ||
      job_.faults.delay_puts > absl::ZeroDuration() || job_.faults.freeze) {
    deadline =
        absl::Now() + job_.faults.delay_completion + job_.faults.delay_puts + absl::Seconds(60);
  }
#endif
  // One transfer per decode rank, each begun (accepted by that rank) before anything moves.
  const int d = static_cast<int>(job_.ticket.ranks.size());
  for (int j = 0; j < d; ++j) {
    absl::StatusOr<std::unique_ptr<transfer::OutgoingTransfer>> started =
        options_.transfer->StartTransfer(job_.ticket.ranks[j].target, job_.ticket.transfer_id,
                                         deadline);
    if (!started.ok()) {
      return d > 1 ? base::Annotate(started.status(), absl::StrCat("decode rank ", j))
                   : started.status();
    }
    io.transfers.push_back(*std::move(started));
  }
  if (on_device_) {
    // The staging (pinned host memory from the pool) for the whole sequence, off the engine
    // thread: a pool miss pins memory, which takes milliseconds per call.
    std::vector<transfer::staging::StageCopier*> copiers;
    for (int i = 0; i < job_.prefill_tp; ++i) copiers.push_back(&options_.device->copier(i));
    for (int j = 0; j < d; ++j) {
      // Decode rank j's staging from prefill rank j's pool (any rank's pinned memory serves):
      // the pools are prewarmed alike, so the shares spread over them.
      transfer::staging::StagingPool* pool = options_.device->pool(j % job_.prefill_tp);
      GKA_ASSIGN_OR_RETURN(
          std::unique_ptr<transfer::staging::StagedSender> staged,
          transfer::staging::StagedSender::Create(copiers, pool, std::move(io.device_pieces[j])));
      io.staged.push_back(std::move(staged));
    }
  }
#ifdef GKA_FAULT_INJECTION
  if (job_.faults.delay_puts > absl::ZeroDuration()) {
    GKA_LOG(WARNING) << "fault injection: delaying the writes of transfer "
                     << job_.ticket.transfer_id << " by " << job_.faults.delay_puts;
    absl::SleepFor(job_.faults.delay_puts);
  }
#endif
  return absl::OkStatus();
}

absl::Status HandoffStream::PutUnits(const std::vector<Group>& groups) {
  Io& io = *io_;
  const int d = static_cast<int>(job_.ticket.ranks.size());
  std::vector<std::vector<const void*>> memory;
  {
    absl::MutexLock lock(&mu_);
    memory = memory_;
  }
  uint64_t host_put = 0;
  std::vector<int> copied(d, 0);  // device: groups copied per decode rank
  for (int j = 0; j < d; ++j) {
    transfer::TransferDescriptor desc;
    for (const Group& group : groups) {
      std::vector<size_t> staged;
      std::vector<const void*> sources;
      for (size_t u : group.units) {
        Unit& unit = units_[u];
        if (unit.j != j) continue;
        const char* src = static_cast<const char*>(memory[unit.i][unit.k]);
        const transfer::Segment& dst = job_.ticket.ranks[j].destinations[unit.k];
        for (size_t c = 0; c < unit.pieces.size(); ++c) {
          const transfer::Piece& piece = unit.pieces[c];
          if (!on_device_) {
            desc.Add(src + piece.src_offset, dst.region, dst.remote_addr + piece.dst_offset,
                     piece.length);
            host_put += piece.length;
          } else {
            staged.push_back(unit.staged[c]);
            sources.push_back(src + piece.src_offset);
          }
          if (job_.specs[unit.k].kind == SegmentKind::kKv) io.kv_put += piece.length;
        }
        unit.sent = true;
        --io.unsent;
      }
      // Each group's copies wait for the compute that writes their sources (its own marks).
      if (on_device_ && !staged.empty()) {
        GKA_RETURN_IF_ERROR(io.staged[j]->Copy(staged, sources, group.marks));
        ++copied[j];
      }
    }
    if (!on_device_ && !desc.segments.empty()) {
      GKA_RETURN_IF_ERROR(io.transfers[j]->Put(desc));
#ifdef GKA_FAULT_INJECTION
      if (job_.faults.fail_put) {
        GKA_LOG(WARNING) << "fault injection: failing a put of transfer "
                         << job_.ticket.transfer_id;
        return absl::UnavailableError("fault injection: the transport reported a put error");
      }
#endif
    }
  }
  if (!on_device_) {
    absl::MutexLock lock(&mu_);
    bytes_put_ += host_put;
  }
  // Device: every rank's copies are enqueued above; put group by group, alternating between
  // the decode ranks, each group once its copy is done. (Rank by rank would hold the second
  // rank's copies until the first rank's last group — the end of the step — had been copied.)
  const int most = d == 0 ? 0 : *std::max_element(copied.begin(), copied.end());
  for (int g = 0; g < most; ++g) {
    for (int j = 0; j < d; ++j) {
      if (g >= copied[j]) continue;
      GKA_ASSIGN_OR_RETURN(uint64_t bytes, io.staged[j]->PutNextCopied(*io.transfers[j]));
      absl::MutexLock lock(&mu_);
      bytes_put_ += bytes;
    }
  }
  if (!io.kv_posted.has_value() && io.kv_put == io.result.kv_bytes) io.kv_posted = absl::Now();
  return absl::OkStatus();
}

void HandoffStream::Pump() {
  absl::MutexLock io_lock(&io_mu_);
  Io& io = *io_;
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
  }
  auto cancelled = [&] { return job_.cancelled != nullptr && job_.cancelled->load(); };
  if (!io.begun) io.begin_error = Begin();
  // Loops while there is work: updates that arrive meanwhile are picked up here (Schedule
  // posts no second task while this one runs, so no sender thread waits on io_mu_).
  while (true) {
    std::vector<Group> ready;
    bool complete = false, stopping = false, failed = false;
    absl::Status stop_why;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) {
        // StopNow did not wait (nothing was put yet): end the begun transfers here.
        ended_ = true;
        stopping = true;
        stop_why = stop_why_;
      }
      complete = complete_;
      failed = !io.begin_error.ok() || cancelled();
      if (!stopping && !failed) {
        // Grouped by what made them final, in the order it happened: earlier steps' pages,
        // then this step's layers, then what only Complete finalised.
        constexpr int64_t kPages = -1, kComplete = std::numeric_limits<int64_t>::max();
        std::map<int64_t, Group> groups;
        for (size_t u = 0; u < units_.size(); ++u) {
          const Unit& unit = units_[u];
          if (unit.sent || memory_[unit.i][unit.k] == nullptr) continue;
          const int32_t layer = job_.specs[unit.k].layer;
          int64_t key;
          if (page_of_[unit.k] >= 0 && page_of_[unit.k] < pages_final_) {
            key = kPages;
          } else if (layers_final_[unit.i] > layer) {
            key = layer;
          } else if (complete) {
            key = kComplete;
          } else {
            continue;
          }
          groups[key].units.push_back(u);
        }
        for (auto& [key, group] : groups) {
          group.marks = key == kPages ? page_marks_ : marks_;
          if (key == kPages || key == kComplete) continue;
          for (size_t r = 0; r < layer_marks_.size(); ++r) {
            // That layer's mark; a later one (conservative) if it came without its own.
            auto it = layer_marks_[r].lower_bound(static_cast<int32_t>(key));
            if (it != layer_marks_[r].end()) group.marks[r] = it->second;
          }
        }
        for (auto& [key, group] : groups) ready.push_back(std::move(group));
        putting_ = !ready.empty();
      }
      // Nothing to do until the next update (a failure is reported once Complete comes):
      // leave, and let that update schedule a new task.
      const bool idle =
          !stopping && (failed ? !complete : ready.empty() && !(complete && io.unsent == 0));
      if (idle) {
        scheduled_ = false;
        return;
      }
    }
    if (stopping) {
      (void)Cancel(stop_why);
      return;
    }
    if (failed) {
      absl::Status why = !io.begin_error.ok()
                             ? io.begin_error
                             : absl::CancelledError("the Prefill call was cancelled");
      Deliver(Cancel(why));
      return;
    }
    if (ready.empty()) {  // complete, everything put
      Deliver(Finish());
      return;
    }
    absl::Status put = PutUnits(ready);
    {
      absl::MutexLock lock(&mu_);
      putting_ = false;
      posted_ = true;
      idle_.SignalAll();
    }
    // A failed put ends the transfer; the engine thread learns it at Complete (or StopNow).
    if (!put.ok()) io.begin_error = put;
  }
}

HandoffResult HandoffStream::Cancel(absl::Status why) {
  Io& io = *io_;
  HandoffResult& r = io.result;
  if (io.cancelled) return r;  // the first cancellation's outcome (StopNow after Pump's)
  io.cancelled = true;
  r.outcome = transfer::TransferOutcome();
  for (auto& s : io.staged) s->WaitForCopies();
  for (auto& t : io.transfers) {
    transfer::TransferOutcome o = t->CancelAndWait();
    r.outcome.remote_may_be_written |= o.remote_may_be_written;
    r.outcome.local_may_be_read |= o.local_may_be_read;
    r.outcome.bytes += o.bytes;
    r.outcome.segments += o.segments;
  }
  io.transfers.clear();
  r.outcome.status = std::move(why);
  r.outcome.elapsed = absl::Now() - start_;
  r.failure_reason = FailureReason(r.outcome.status, job_.ticket.lease_deadline);
  if (job_.cancelled != nullptr && job_.cancelled->load()) r.failure_reason.clear();
  // Writes the transport could neither finish nor cancel may still read the staging: keep it
  // for the life of the process rather than free memory a queued write reads.
  if (r.outcome.local_may_be_read) {
    for (auto& s : io.staged) (void)s.release();
  }
  return r;
}

HandoffResult HandoffStream::StopNow(absl::Status why) {
  {
    absl::MutexLock lock(&mu_);
    if (ended_ || stop_) return HandoffResult();
    GKA_CHECK(!complete_) << "StopNow after Complete";
    stop_ = true;
    stop_why_ = why;
    while (putting_) idle_.Wait(&mu_);
    if (!posted_) return HandoffResult();  // nothing read the memory; Pump cancels the rest
    ended_ = true;
  }
  // Puts were posted: the transfers are begun and idle (no pump puts any more). Flush and
  // cancel them now, before the memory goes.
  absl::MutexLock io_lock(&io_mu_);
  return Cancel(std::move(why));
}

void HandoffStream::Deliver(HandoffResult r) {
  absl::AnyInvocable<void(HandoffResult)> done;
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    r.tail = absl::Now() - complete_at_;
    done = std::move(done_);
  }
  if (done != nullptr) done(std::move(r));
}

HandoffResult HandoffStream::Finish() {
  Io& io = *io_;
  HandoffResult& r = io.result;
  const int d = static_cast<int>(io.transfers.size());
  auto cancelled = [&] { return job_.cancelled != nullptr && job_.cancelled->load(); };
  wpb::HandoffCompletion completion;
  {
    absl::MutexLock lock(&mu_);
    completion = completion_;
    r.streamed_bytes = streamed_;
  }
  for (int j = 0; j < static_cast<int>(io.staged.size()); ++j) {
    absl::StatusOr<transfer::staging::StagedSend> sent = io.staged[j]->Checksum();
    if (!sent.ok()) return Cancel(sent.status());
    io.transfers[j]->SupplyChecksum(sent->checksum);
  }
  const absl::Time kv_posted = io.kv_posted.value_or(absl::Now());
#ifdef GKA_FAULT_INJECTION
  if (job_.faults.corrupt_byte && !on_device_) {
    // Let the puts leave (small segments are copied when posted), then change the source the
    // checksum is computed from: the receiver holds bytes the checksum does not describe.
    absl::SleepFor(absl::Milliseconds(200));
    const void* last = nullptr;
    {
      absl::MutexLock lock(&mu_);
      last = memory_.back().back();
    }
    *static_cast<unsigned char*>(const_cast<void*>(last)) ^= 0x5a;
    GKA_LOG(WARNING) << "fault injection: corrupted a byte of transfer " << job_.ticket.transfer_id;
  }
  if (job_.faults.delay_completion > absl::ZeroDuration()) {
    GKA_LOG(WARNING) << "fault injection: delaying the completion of transfer "
                     << job_.ticket.transfer_id << " by " << job_.faults.delay_completion;
    absl::SleepFor(job_.faults.delay_completion);
  }
  if (job_.faults.freeze) {
    GKA_LOG(WARNING) << "fault injection: freezing before the completion of transfer "
                     << job_.ticket.transfer_id;
    const absl::Time until = absl::Now() + absl::Seconds(60);
    while (!cancelled() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  }
  if (job_.faults.stale_generation) completion.set_transfer_id(job_.ticket.transfer_id - 1);
#endif
  if (cancelled()) return Cancel(absl::CancelledError("the Prefill call was cancelled"));
  // Every rank's completion at once (each waits for its own flush and acknowledgement).
  const std::string payload = EncodeCompletion(completion);
  std::vector<std::promise<transfer::TransferOutcome>> promises(d);
  std::vector<std::future<transfer::TransferOutcome>> futures;
  for (auto& promise : promises) futures.push_back(promise.get_future());
  for (int j = 0; j < d; ++j) {
    io.transfers[j]->Finish(payload, [promise = &promises[j]](transfer::TransferOutcome o) {
      promise->set_value(std::move(o));
    });
  }
  std::vector<transfer::TransferOutcome> outcomes;
  for (auto& future : futures) outcomes.push_back(future.get());
  io.transfers.clear();
  r.outcome = transfer::TransferOutcome();
  std::vector<uint64_t> checksums;
  for (int j = 0; j < d; ++j) {
    const transfer::TransferOutcome& o = outcomes[j];
    // The cause, not its echo: a rank whose share failed (checksum, lease) makes the decode
    // worker fence the others, which then report CANCELLED, or NOT_FOUND when their
    // completion arrives after the fence (streamed puts leave little to flush, so the ranks'
    // completions race).
    auto is_echo = [](const absl::Status& s) {
      return s.code() == absl::StatusCode::kCancelled || s.code() == absl::StatusCode::kNotFound;
    };
    if (!o.status.ok() &&
        (r.outcome.status.ok() || (is_echo(r.outcome.status) && !is_echo(o.status)))) {
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
  r.outcome.elapsed = absl::Now() - start_;
  r.state_time = absl::Now() - kv_posted;
  r.kv_time = kv_posted - start_;
  r.failure_reason = FailureReason(r.outcome.status, job_.ticket.lease_deadline);
  if (r.outcome.local_may_be_read) {
    for (auto& s : io.staged) (void)s.release();
  }
  return r;
}

HandoffResult RunHandoff(transfer::TransferEngine& transfer, const HandoffJob& job,
                         const DeviceTransfer* device) {
  HandoffJob plan = job;
  plan.prefill_tp = static_cast<int>(job.local.size());
  plan.local.clear();
  // The stream's I/O runs right here, on the calling thread.
  HandoffStream::Options options{
      .transfer = &transfer, .device = device, .executor = [](absl::AnyInvocable<void()> task) {
        task();
        return true;
      }};
  absl::StatusOr<std::shared_ptr<HandoffStream>> stream =
      HandoffStream::Create(options, std::move(plan));
  HandoffResult r;
  if (!stream.ok()) {
    r.outcome.status = stream.status();
    return r;
  }
  std::promise<HandoffResult> done;
  std::future<HandoffResult> result = done.get_future();
  absl::Status s = (*stream)->Complete(job.local, {}, job.completion,
                                       [&done](HandoffResult r) { done.set_value(std::move(r)); });
  if (!s.ok()) {
    r = (*stream)->StopNow(s);
    r.outcome.status = s;
    return r;
  }
  return result.get();
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
