#include "decode_worker/decode_core.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "decode_worker/common/sampling.h"

namespace gka::decode_worker {
namespace {

using scheduler::FinishedSequence;
using scheduler::FinishReason;

// [first, last) index ranges of consecutive segments of one kind that are contiguous in
// memory, in order: one registration each.
std::vector<std::pair<size_t, size_t>> ContiguousRuns(
    const std::vector<engine::MemorySegment>& segments,
    const std::vector<worker_common::SegmentSpec>& specs) {
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < segments.size(); ++i) {
    const bool extends = !runs.empty() && specs[i].kind == specs[i - 1].kind &&
                         static_cast<char*>(segments[i - 1].ptr) + segments[i - 1].bytes ==
                             static_cast<char*>(segments[i].ptr);
    if (extends) {
      runs.back().second = i + 1;
    } else {
      runs.push_back({i, i + 1});
    }
  }
  return runs;
}

spb::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken:
      return spb::FINISH_REASON_STOP;
    case FinishReason::kMaxTokens:
      return spb::FINISH_REASON_LENGTH;
    case FinishReason::kAborted:
      return spb::FINISH_REASON_ABORT;
    case FinishReason::kError:
      return spb::FINISH_REASON_ERROR;
    case FinishReason::kPrefillDone:
      break;
  }
  return spb::FINISH_REASON_UNSPECIFIED;
}

spb::TokenLogprob ToLogprob(const worker_common::StepRunner::Token& t) {
  spb::TokenLogprob lp;
  lp.set_token_id(t.token);
  lp.set_logprob(t.logprob);
  for (const engine::Engine::TopLogprob& alt : t.top) {
    spb::TopLogprob* top = lp.add_top();
    top->set_token_id(alt.token);
    top->set_logprob(alt.logprob);
  }
  return lp;
}

}  // namespace

struct DecodeCore::Entry {
  std::string request_id;
  uint64_t generation = 0;
  SequenceId seq;
  Phase phase = Phase::kAwaitingTransfer;
  int32_t prompt_tokens = 0;
  int32_t pages = 0;  // PagesFor(prompt_tokens): what the reservation holds in the engine
  int32_t priority = 0;
  std::string tier;
  transfer::Lease lease;
  absl::Time reserved_at;
  // GPU state, staged path: per rank, the pinned landing its share is written into (freed
  // with the entry: after the registrations below are revoked, never while quarantined).
  std::vector<std::unique_ptr<transfer::staging::Landing>> landings;
  // Staged path: the landings' copies into GPU memory, per rank, polled by Tick (the engine
  // thread keeps stepping the batch meanwhile). Destroyed before the landings and before the
  // pages are freed: destroying a job waits for its copy.
  std::vector<std::unique_ptr<transfer::staging::CopyJob>> copy_in;
  // This reservation's UCX registrations, per rank; cleared (revoked) as soon as nothing may
  // write.
  std::vector<std::vector<std::unique_ptr<transfer::MemoryRegion>>> regions;
  // Per rank: its transfer ended (the transfer engine said so: nothing of it can still land),
  // and, when it verified, its completion.
  std::vector<bool> reported;
  std::vector<std::optional<transfer::TransferCompletion>> completions;
  // No write of the transfer can land any more: memory may return to the pool.
  bool quiescent = false;
  bool fence_in_flight = false;
  absl::Time next_fence;
  std::vector<ReleaseCallback> on_freed;
  // The completion.
  int32_t first_token = -1;
  std::optional<float> first_logprob;
  uint64_t transfer_bytes = 0;
  absl::Duration transfer_time;
  // The StartDecode call.
  DecodeStream* stream = nullptr;
  bool has_request = false;
  kernels::SamplingConfig sampling;
  bool logprobs = false;
  std::vector<int32_t> stop_ids;
  int32_t max_new_tokens = 0;
  int32_t decode_num_iter = -1;
  // What the scheduler runs now (the request's value under the degrade ladder's cap), and
  // the fewest iterations any token got (DecodeDone reports it).
  int32_t applied_num_iter = -1;
  int32_t fewest_num_iter = std::numeric_limits<int32_t>::max();
  std::vector<int32_t> generated;  // the first token included
  absl::Time decode_start;
  // A migrated sequence (StartDecodeRequest.resumed_tokens): its tokens generated elsewhere,
  // the completion's first token last; the reservation's prompt_tokens include all but that.
  std::vector<int32_t> resumed;
  // Drain: this sequence's router follows MigrationNeeded, and where its move stands.
  bool accepts_migration = false;
  enum class Move {
    kNone,     // running (or not asked yet)
    kAsked,    // paused, out of the scheduler: waiting for Migrate
    kSending,  // the hand-off sender writes its state to the target
    kStayed,   // the move failed or was declined: it finishes here
  } move = Move::kNone;
  absl::Time move_asked;
  std::shared_ptr<std::atomic<bool>> move_cancelled;
  std::optional<MigrateCallback> on_moved;
  std::string move_target;
  // Ended (stream closed) while its state was being sent: OnMigrated frees it.
  bool ended_while_sending = false;

  // Tokens whose state the sequence holds: the prompt, then every generated token but the
  // last (sampled, not yet fed).
  int32_t FedTokens() const {
    const int32_t prior = resumed.empty() ? 0 : static_cast<int32_t>(resumed.size()) - 1;
    return prompt_tokens - prior + static_cast<int32_t>(generated.size()) - 1;
  }
  // Colocated: this worker prefills the prompt (reserved_at is the StartDecode's arrival);
  // `started` once the first token went out, `first_step` when the first chunk ran.
  bool colocated = false;
  bool started = false;
  std::optional<absl::Time> first_step;

  void Send(wpb::DecodeStreamResponse m) {
    if (stream == nullptr) return;
    m.set_request_id(request_id);
    stream->Send(std::move(m));
  }
  void Close(const absl::Status& s) {
    if (stream == nullptr) return;
    stream->Close(s);
    stream = nullptr;
  }
};

absl::StatusOr<std::unique_ptr<DecodeMetrics>> DecodeMetrics::Create(
    metrics::Registry& registry, const std::string& worker, const std::vector<std::string>& tiers) {
  auto metrics = std::make_unique<DecodeMetrics>();
  DecodeMetrics& m = *metrics;
  m.worker = worker;
  const metrics::Labels w = {{"worker", worker}};
  auto gauge = [&](absl::string_view name,
                   absl::string_view help) -> absl::StatusOr<metrics::Gauge> {
    GKA_ASSIGN_OR_RETURN(metrics::GaugeFamily * f, registry.AddGauge(name, help, {"worker"}));
    return f->Labels(w);
  };
  auto counter = [&](absl::string_view name,
                     absl::string_view help) -> absl::StatusOr<metrics::Counter> {
    GKA_ASSIGN_OR_RETURN(metrics::CounterFamily * f, registry.AddCounter(name, help, {"worker"}));
    return f->Labels(w);
  };
  GKA_ASSIGN_OR_RETURN(m.running, gauge("gka_decode_running", "Sequences in the running batch"));
  GKA_ASSIGN_OR_RETURN(
      m.waiting, gauge("gka_decode_waiting", "Sequences admitted but waiting (incl. preempted)"));
  GKA_ASSIGN_OR_RETURN(m.kv_pages_used, gauge("gka_kv_pages_used", "KV cache pages in use"));
  GKA_ASSIGN_OR_RETURN(m.kv_pages_capacity, gauge("gka_kv_pages_capacity", "KV cache pages"));
  GKA_ASSIGN_OR_RETURN(m.slots_used, gauge("gka_state_slots_used", "GKA state slots in use"));
  GKA_ASSIGN_OR_RETURN(m.slots_total, gauge("gka_state_slots_capacity", "GKA state slots"));
  GKA_ASSIGN_OR_RETURN(m.reservations_active,
                       gauge("gka_reservations_active", "Leases waiting for a transfer"));
  GKA_ASSIGN_OR_RETURN(m.reservations_expired, counter("gka_reservations_expired_total",
                                                       "Leases that expired before completion"));
  GKA_ASSIGN_OR_RETURN(m.checksum_failures,
                       counter("gka_checksum_failures_total", "Transfers refused by the checksum"));
  GKA_ASSIGN_OR_RETURN(m.preemptions,
                       counter("gka_preemptions_total", "Sequences swapped out to host"));
  GKA_ASSIGN_OR_RETURN(m.reserve_refused,
                       counter("gka_reserve_refused_total",
                               "Reserve calls refused RESOURCE_EXHAUSTED (no free slot or pages)"));
  GKA_ASSIGN_OR_RETURN(
      metrics::CounterFamily * migrations,
      registry.AddCounter("gka_decode_migrations_total",
                          "Running sequences this worker moved to another decode worker on "
                          "drain (ok) or kept after a failed move (failed)",
                          {"worker", "result"}));
  m.migrations_ok = migrations->Labels({{"worker", worker}, {"result", "ok"}});
  m.migrations_failed = migrations->Labels({{"worker", worker}, {"result", "failed"}});
  GKA_ASSIGN_OR_RETURN(
      m.mixed_steps, counter("gka_decode_mixed_steps_total",
                             "Colocated steps that fed prompt chunks and decode tokens together"));
  GKA_ASSIGN_OR_RETURN(metrics::HistogramFamily * batch,
                       registry.AddHistogram("gka_decode_batch_size", "Sequences per decode step",
                                             {"worker"}, metrics::ExponentialBuckets(1, 2, 10)));
  m.batch_size = batch->Labels(w);
  GKA_ASSIGN_OR_RETURN(metrics::HistogramFamily * step,
                       registry.AddHistogram("gka_decode_step_seconds", "One engine step",
                                             {"worker"}, metrics::LatencyBuckets()));
  m.step_seconds = step->Labels(w);
  GKA_ASSIGN_OR_RETURN(
      m.num_iter, registry.AddHistogram("gka_decode_num_iter", "num_iter per decoded token",
                                        {"worker", "tier"}, {0, 1, 2, 5, 10, 15, 20, 30, 50, 100}));
  for (const std::string& tier : tiers) m.num_iter->Labels({{"worker", worker}, {"tier", tier}});
  return metrics;
}

absl::StatusOr<std::unique_ptr<DecodeCore>> DecodeCore::Create(
    const DecodeCoreOptions& options, worker_common::RankGroup* ranks,
    std::vector<transfer::TransferEngine*> transfers, worker_common::TaskQueue* engine_queue,
    worker_common::TaskQueue* fence_queue, DecodeMetrics* metrics) {
  if (static_cast<int>(transfers.size()) != ranks->size()) {
    return absl::InvalidArgumentError(absl::StrCat(transfers.size(), " transfer engines for ",
                                                   ranks->size(), " tensor-parallel ranks"));
  }
  engine::Engine* engine = &ranks->lead();
  std::unique_ptr<DecodeCore> core(
      new DecodeCore(options, ranks, std::move(transfers), engine_queue, fence_queue, metrics));
  scheduler::SchedulerOptions so;
  so.max_batch_tokens = options.max_batch_tokens;
  so.max_running_seqs = std::min(options.total_slots, options.max_batch_tokens);
  if (options.prefill_chunk_size < 0) {
    return absl::InvalidArgumentError("--prefill-chunk-size must be >= 1 (0: --max-batch-tokens)");
  }
  // Hand-offs arrive prefilled: only colocated prompts are chunked.
  so.prefill_chunk_size =
      options.prefill_chunk_size > 0 ? options.prefill_chunk_size : options.max_batch_tokens;
  so.max_model_len = engine->max_seq_len();
  // Stop ids arrive per request (the router includes the model's EOS ids).
  GKA_ASSIGN_OR_RETURN(core->scheduler_, scheduler::Scheduler::Create(so, core->memory_.get()));
  core->runner_ = std::make_unique<worker_common::StepRunner>(ranks, core->scheduler_.get(),
                                                              options.vocab_limit);
  core->UpdateGauges();
  return core;
}

DecodeCore::DecodeCore(const DecodeCoreOptions& options, worker_common::RankGroup* ranks,
                       std::vector<transfer::TransferEngine*> transfers,
                       worker_common::TaskQueue* engine_queue,
                       worker_common::TaskQueue* fence_queue, DecodeMetrics* metrics)
    : options_(options),
      ranks_(ranks),
      engine_(&ranks->lead()),
      transfers_(std::move(transfers)),
      engine_queue_(engine_queue),
      fence_queue_(fence_queue),
      metrics_(metrics),
      layout_(worker_common::HandoffLayout::Of(ranks->lead())),
      memory_(std::make_unique<worker_common::EngineMemory>(ranks->lead())),
      // Distinct from earlier runs of this worker (the start time in µs, 2^16 reservations
      // apart per µs of start-time difference), so a generation is never reused.
      generation_base_(static_cast<uint64_t>(absl::ToUnixMicros(absl::Now())) << 16) {}

DecodeCore::~DecodeCore() = default;

DecodeCore::Entry* DecodeCore::Live(const std::string& request_id) {
  auto it = live_.find(request_id);
  return it == live_.end() ? nullptr : ByGeneration(it->second);
}

DecodeCore::Entry* DecodeCore::ByGeneration(uint64_t generation) {
  auto it = entries_.find(generation);
  return it == entries_.end() ? nullptr : it->second.get();
}

std::string DecodeCore::TierOf(const Entry& e) const { return e.tier.empty() ? "default" : e.tier; }

int32_t DecodeCore::CappedNumIter(const Entry& e) const {
  int32_t n = e.decode_num_iter < 0 ? engine_->default_num_iter() : e.decode_num_iter;
  // The lowest cap any router asks for this tier (routers share the worker).
  for (const auto& [router, caps] : num_iter_caps_) {
    auto it = caps.find(e.tier);
    if (it != caps.end() && it->second >= 0) n = std::min(n, it->second);
  }
  return n;
}

void DecodeCore::SetNumIterCaps(const std::string& router,
                                const std::map<std::string, int32_t>& caps) {
  if (caps.empty()) {
    if (num_iter_caps_.erase(router) == 0) return;
  } else {
    auto [it, fresh] = num_iter_caps_.try_emplace(router, caps);
    if (!fresh) {
      if (it->second == caps) return;
      it->second = caps;
    }
  }
  // Running sequences too: the GKA state's format does not depend on num_iter, so the next
  // step may use another value (lower under pressure, the request's own again after).
  for (auto& [generation, e] : entries_) {
    if (e->phase != Phase::kDecoding) continue;
    const int32_t n = CappedNumIter(*e);
    if (n == e->applied_num_iter) continue;
    if (scheduler_->SetDecodeNumIter(e->seq, n).ok()) {
      e->applied_num_iter = n;
      e->fewest_num_iter = std::min(e->fewest_num_iter, n);
    }
  }
}

// --- Reserve ---------------------------------------------------------------------------

void DecodeCore::Reserve(const wpb::ReserveRequest& request, TicketCallback done) {
  absl::StatusOr<wpb::TransferTicket> ticket = DoReserve(request);
  if (ticket.status().code() == absl::StatusCode::kResourceExhausted) {
    metrics_->reserve_refused->Increment();
  }
  done(std::move(ticket));
  UpdateGauges();
}

absl::StatusOr<wpb::TransferTicket> DecodeCore::DoReserve(const wpb::ReserveRequest& request) {
  if (options_.colocated) {
    return absl::FailedPreconditionError(
        "this worker is colocated (--colocated): it prefills prompts itself and takes no "
        "hand-offs; send StartDecode with prompt_token_ids");
  }
  if (request.request_id().empty()) return absl::InvalidArgumentError("request_id is empty");
  if (draining_) {
    return absl::UnavailableError("this decode worker is draining (shutting down)");
  }
  if (live_.contains(request.request_id())) {
    return absl::AlreadyExistsError(
        absl::StrCat("request ", request.request_id(), " already holds a reservation here"));
  }
  const int64_t prompt = request.prompt_tokens();
  const int64_t max_new = std::max<int64_t>(1, request.max_new_tokens());
  if (prompt < 1) return absl::InvalidArgumentError("prompt_tokens must be >= 1");
  if (prompt + max_new > engine_->max_seq_len()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_tokens (", prompt, ") + max_new_tokens (", max_new,
                     ") exceed this worker's context of ", engine_->max_seq_len(), " tokens"));
  }
  const absl::Duration lease_length =
      request.lease_ms() == 0
          ? options_.default_lease
          : std::min(absl::Milliseconds(request.lease_ms()), options_.max_lease);
  // Room for the prompt and its first decode step.
  const int32_t need_pages = engine::PagesFor(prompt + 1, engine_->options().page_size);
  if (engine_->free_slots() < 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no free GKA state slot (", options_.total_slots, " in use)"));
  }
  if (engine_->free_pages() < need_pages) {
    return absl::ResourceExhaustedError(
        absl::StrCat("need ", need_pages, " KV pages, ", engine_->free_pages(), " free"));
  }

  auto e = std::make_unique<Entry>();
  e->request_id = request.request_id();
  e->seq = SequenceId(next_sequence_++);
  e->generation = generation_base_ + static_cast<uint64_t>(e->seq.value());
  e->prompt_tokens = static_cast<int32_t>(prompt);
  e->pages = engine::PagesFor(prompt, engine_->options().page_size);
  e->priority = request.priority();
  e->tier = request.tier();
  e->reserved_at = absl::Now();
  e->lease = transfer::Lease::In(lease_length, e->reserved_at);

  const int tp = ranks_->size();
  absl::Cleanup unreserve = [&] {
    e->regions.clear();
    RemoveFromRanks(e->seq);
  };
  GKA_RETURN_IF_ERROR(ranks_->RunOnAll(
      [&](int, engine::Engine& eng) { return eng.ReserveForImport(e->seq, prompt); }));
  const std::vector<worker_common::SegmentSpec> specs = layout_.Segments(prompt);

  wpb::TransferTicket ticket;
  ticket.set_request_id(e->request_id);
  ticket.set_transfer_id(e->generation);
  ticket.set_decode_worker_id(options_.worker_id);
  ticket.set_page_size(layout_.page_size());
  ticket.set_lease_deadline_unix_ms(e->lease.ToUnixMillis());
  ticket.set_compat_hash(layout_.TicketHash(tp));
  ticket.set_tp_size(static_cast<uint32_t>(tp));
  e->regions.resize(tp);
  e->reported.assign(tp, false);
  e->completions.resize(tp);
  std::vector<transfer::ExpectedTransfer> expected(tp);
  for (int r = 0; r < tp; ++r) {
    // Read between RunOnAll calls (bookkeeping only): where rank r's share of the sequence
    // lives in its memory.
    GKA_ASSIGN_OR_RETURN(std::vector<engine::MemorySegment> segments,
                         ranks_->rank(r).DescribeSequence(e->seq));
    GKA_RETURN_IF_ERROR(layout_.Check(segments, prompt));
    wpb::RankTicket* rank = ticket.add_ranks();
    rank->set_rank(static_cast<uint32_t>(r));
    rank->set_ucx_worker_address(transfers_[r]->WorkerAddress());
    const transfer::UnitRange kv = layout_.KvHeads(tp, r), gka = layout_.GkaHeads(tp, r);
    rank->mutable_kv_heads()->set_first(static_cast<uint32_t>(kv.first));
    rank->mutable_kv_heads()->set_count(static_cast<uint32_t>(kv.count));
    rank->mutable_gka_heads()->set_first(static_cast<uint32_t>(gka.first));
    rank->mutable_gka_heads()->set_count(static_cast<uint32_t>(gka.count));

    // One registration per contiguous run of same-kind segments: exactly this reservation's
    // bytes are writable by peers, and revoking them touches no other reservation.
    transfer::ExpectedTransfer& x = expected[r];
    x.transfer_id = e->generation;
    x.lease_deadline = e->lease.deadline;
    const worker_common::DeviceTransfer* device = options_.device;
    if (device != nullptr && device->on_device()) x.caller_verifies_checksum = true;
    if (device != nullptr && device->path() == transfer::staging::TransferPath::kStaged) {
      // The share lands in pinned staging laid out like the segments (one region); the copy
      // into GPU memory happens once every rank reported.
      std::vector<transfer::staging::DeviceRange> device_ranges;
      for (const engine::MemorySegment& s : segments) device_ranges.push_back({s.ptr, s.bytes});
      e->landings.resize(tp);
      GKA_ASSIGN_OR_RETURN(e->landings[r], transfer::staging::Landing::Create(
                                               *device->pool(r), std::move(device_ranges)));
      transfer::staging::Landing& landing = *e->landings[r];
      GKA_ASSIGN_OR_RETURN(std::unique_ptr<transfer::MemoryRegion> region,
                           transfers_[r]->RegisterMemory(landing.data(), landing.size(),
                                                         transfer::MemoryKind::kHost));
      wpb::MemoryRegion* mr = rank->add_regions();
      mr->set_kind(wpb::REGION_KIND_UNSPECIFIED);  // KV pages and states together
      mr->set_remote_addr(region->remote().remote_addr);
      mr->set_length(region->remote().length);
      mr->set_packed_rkey(region->remote().packed_rkey);
      for (size_t i = 0; i < segments.size(); ++i) {
        wpb::TransferSegment* seg = rank->add_segments();
        seg->set_region(0);
        seg->set_remote_addr(region->remote().remote_addr +
                             static_cast<uint64_t>(landing.landing(i) - landing.data()));
        seg->set_length(segments[i].bytes);
        seg->set_kind(worker_common::ToRegionKind(specs[i].kind));
      }
      e->regions[r].push_back(std::move(region));
      x.verify_ranges = landing.VerifyRanges();
      continue;
    }
    const transfer::MemoryKind memory =
        device != nullptr ? device->memory_kind() : transfer::MemoryKind::kHost;
    for (const auto& [first, last] : ContiguousRuns(segments, specs)) {
      char* begin = static_cast<char*>(segments[first].ptr);
      const uint64_t length = static_cast<uint64_t>(static_cast<char*>(segments[last - 1].ptr) +
                                                    segments[last - 1].bytes - begin);
      GKA_ASSIGN_OR_RETURN(std::unique_ptr<transfer::MemoryRegion> region,
                           transfers_[r]->RegisterMemory(begin, length, memory));
      wpb::MemoryRegion* mr = rank->add_regions();
      mr->set_kind(worker_common::ToRegionKind(specs[first].kind));
      mr->set_remote_addr(region->remote().remote_addr);
      mr->set_length(region->remote().length);
      mr->set_packed_rkey(region->remote().packed_rkey);
      const uint32_t index = static_cast<uint32_t>(e->regions[r].size());
      for (size_t i = first; i < last; ++i) {
        wpb::TransferSegment* seg = rank->add_segments();
        seg->set_region(index);
        seg->set_remote_addr(region->remote().remote_addr +
                             (static_cast<char*>(segments[i].ptr) - begin));
        seg->set_length(segments[i].bytes);
        seg->set_kind(worker_common::ToRegionKind(specs[i].kind));
      }
      e->regions[r].push_back(std::move(region));
    }
    for (const engine::MemorySegment& s : segments) x.verify_ranges.push_back({s.ptr, s.bytes});
  }
  const uint64_t generation = e->generation;
  for (int r = 0; r < tp; ++r) {
    absl::Status expect = transfers_[r]->Expect(
        std::move(expected[r]), [queue = engine_queue_, core = this, generation,
                                 r](absl::StatusOr<transfer::TransferCompletion> result) mutable {
          // The transfer engine's progress thread: hand over, never block.
          queue->Post([core, generation, r, result = std::move(result)]() mutable {
            core->OnTransferResult(generation, r, std::move(result));
          });
        });
    if (!expect.ok()) {
      // Ranks already expecting this generation stop: nothing was sent yet (the ticket has
      // not left), so their fences are immediate.
      for (int q = 0; q < r; ++q) (void)transfers_[q]->Fence(generation, absl::ZeroDuration());
      return expect;
    }
  }
  std::move(unreserve).Cancel();
  live_[e->request_id] = generation;
  by_sequence_[e->seq] = generation;
  entries_[generation] = std::move(e);
  return ticket;
}

// --- completion --------------------------------------------------------------------------

void DecodeCore::OnTransferResult(uint64_t generation, int rank,
                                  absl::StatusOr<transfer::TransferCompletion> result) {
  Entry* e = ByGeneration(generation);
  if (e == nullptr || e->phase != Phase::kAwaitingTransfer) {
    // Expired, released, aborted or failed on another rank meanwhile: whatever it says, its
    // memory is being fenced (the fence, not this message, decides when it may be reused).
    if (result.ok()) ++completions_discarded_;
    GKA_LOG(INFO) << "discarding the late completion of transfer " << generation << " rank " << rank
                  << " (" << (result.ok() ? "OK" : result.status().ToString()) << ")";
    return;
  }
  // The transfer engine reports a transfer's end only when nothing of it can still land:
  // the sender flushed before its completion, or stopped after a flush. Once every rank has
  // reported, the whole reservation is quiescent.
  e->reported[rank] = true;
  e->regions[rank].clear();  // nothing may write this rank's share any more: revoke
  e->quiescent = std::all_of(e->reported.begin(), e->reported.end(), [](bool b) { return b; });
  if (e->quiescent) e->regions.clear();
  if (!result.ok() && e->lease.Expired()) {
    // The sender gave up at the lease (its deadline): the lease expired before completion.
    Expire(*e);
    UpdateGauges();
    return;
  }
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kDataLoss) {
      ++checksum_failures_;
      metrics_->checksum_failures->Increment();
    }
    EndEntry(
        *e,
        base::Annotate(result.status(),
                       absl::StrCat("transfer for request ", e->request_id,
                                    ranks_->size() > 1 ? absl::StrCat(" to rank ", rank) : "")),
        std::nullopt);
    UpdateGauges();
    return;
  }
  e->completions[rank] = *std::move(result);
  if (e->quiescent) OnAllTransferred(*e);
  UpdateGauges();
}

void DecodeCore::OnAllTransferred(Entry& e) {
  const transfer::TransferCompletion& first = *e.completions[0];
  absl::StatusOr<wpb::HandoffCompletion> c = worker_common::DecodeCompletion(first.payload);
  absl::Status bad;
  const int d = ranks_->size();
  if (!c.ok()) {
    bad = c.status();
  } else if (c->transfer_id() != e.generation) {
    ++completions_discarded_;
    bad = absl::DataLossError(absl::StrCat("the completion carries generation ", c->transfer_id(),
                                           ", the reservation is generation ", e.generation));
  } else if (c->request_id() != e.request_id) {
    bad = absl::DataLossError(absl::StrCat("the completion is for request ", c->request_id()));
  } else if (static_cast<int32_t>(c->prompt_tokens()) != e.prompt_tokens) {
    bad = absl::DataLossError(absl::StrCat("the completion is for a prompt of ", c->prompt_tokens(),
                                           " tokens, the reservation for ", e.prompt_tokens));
  } else if (c->first_token() < 0 || c->first_token() >= engine_->vocab_size()) {
    bad = absl::DataLossError(absl::StrCat("first token ", c->first_token(), " out of range"));
  } else if (c->layout_hash() != layout_.TransferHash(static_cast<int>(c->prefill_tp_size()), d)) {
    // The bytes arrived and verified, but were cut for another layout pair: never run them.
    bad = absl::FailedPreconditionError(absl::StrCat(
        "the sender's layout hash ", c->layout_hash(), " (prefill TP=", c->prefill_tp_size(),
        ") is not this decode worker's for prefill TP=", c->prefill_tp_size(), " -> decode TP=", d,
        " of this model format (", layout_.TransferHash(static_cast<int>(c->prefill_tp_size()), d),
        ")"));
  }
  for (int r = 1; r < d && bad.ok(); ++r) {
    if (e.completions[r]->payload != first.payload) {
      bad = absl::DataLossError(absl::StrCat("rank ", r, "'s completion differs from rank 0's"));
    }
  }
  // GPU state: the poly61 check is ours (the transfer engine only bounded the writes). Staged:
  // start copying each rank's landing into its GPU memory (checked as it copies; Tick finishes
  // it); direct: check in place.
  const worker_common::DeviceTransfer* device = options_.device;
  if (bad.ok() && !e.landings.empty()) {
    for (int r = 0; r < d && bad.ok(); ++r) {
      absl::StatusOr<std::unique_ptr<transfer::staging::CopyJob>> job =
          e.landings[r]->StartCopyIn(device->copier(r));
      if (job.ok()) {
        e.copy_in.push_back(*std::move(job));
      } else {
        bad = base::Annotate(job.status(), absl::StrCat("rank ", r));
      }
    }
    if (bad.ok()) {
      e.first_token = c->first_token();
      if (c->has_first_logprob()) e.first_logprob = c->first_logprob();
      return;  // FinishCopyIn, from Tick
    }
  }
  for (int r = 0;
       r < d && bad.ok() && device != nullptr && device->on_device() && e.landings.empty(); ++r) {
    const transfer::TransferCompletion& c = *e.completions[r];
    absl::StatusOr<std::vector<engine::MemorySegment>> segments =
        ranks_->rank(r).DescribeSequence(e.seq);
    bad = segments.status();
    if (bad.ok()) {
      std::vector<transfer::staging::DeviceRange> ranges;
      for (const engine::MemorySegment& s : *segments) ranges.push_back({s.ptr, s.bytes});
      bad = transfer::staging::VerifyInPlace(device->copier(r), ranges, c.checksum, c.bytes);
    }
    if (!bad.ok()) {
      bad = base::Annotate(bad, absl::StrCat("rank ", r));
      if (bad.code() == absl::StatusCode::kDataLoss) {
        ++checksum_failures_;
        metrics_->checksum_failures->Increment();
      }
    }
  }
  if (!bad.ok()) {
    GKA_LOG(WARNING) << "request " << e.request_id << ": refusing its completion: " << bad;
    EndEntry(e, bad, std::nullopt);
    return;
  }
  e.first_token = c->first_token();
  if (c->has_first_logprob()) e.first_logprob = c->first_logprob();
  Transferred(e);
}

void DecodeCore::FinishCopyIn(Entry& e) {
  absl::Status bad;
  for (size_t r = 0; r < e.copy_in.size() && bad.ok(); ++r) {
    const transfer::TransferCompletion& c = *e.completions[r];
    bad = e.landings[r]->FinishCopyIn(*e.copy_in[r], c.checksum, c.bytes);
    if (!bad.ok()) {
      bad = base::Annotate(bad, absl::StrCat("rank ", r));
      if (bad.code() == absl::StatusCode::kDataLoss) {
        ++checksum_failures_;
        metrics_->checksum_failures->Increment();
      }
    }
  }
  e.copy_in.clear();
  e.landings.clear();  // copied in (or refused): the pinned staging goes back to the pool
  if (!bad.ok()) {
    GKA_LOG(WARNING) << "request " << e.request_id << ": refusing its completion: " << bad;
    EndEntry(e, bad, std::nullopt);
    return;
  }
  Transferred(e);
}

void DecodeCore::Transferred(Entry& e) {
  e.phase = Phase::kTransferred;
  e.transfer_bytes = 0;
  for (const auto& completion : e.completions) e.transfer_bytes += completion->bytes;
  e.transfer_time = absl::Now() - e.reserved_at;
  MaybeAdmit(e);
}

// --- StartDecode -------------------------------------------------------------------------

void DecodeCore::StartDecode(const wpb::StartDecodeRequest& request, DecodeStream* stream) {
  if (options_.colocated) {
    const absl::Status s = StartColocated(request, stream);
    UpdateGauges();
    if (!s.ok()) {
      stream->Close(s);
      return;
    }
    // Published before the router hears of it (its admission confirms its hold on this).
    if (options_.publish) options_.publish();
    wpb::DecodeStreamResponse accepted;
    accepted.mutable_accepted();
    Live(request.request_id())->Send(std::move(accepted));
    return;
  }
  if (request.prompt_token_ids_size() > 0) {
    stream->Close(absl::InvalidArgumentError(
        "prompt_token_ids given to a decode worker that is not colocated (--colocated): it "
        "decodes only what a prefill worker handed off"));
    return;
  }
  Entry* e = Live(request.request_id());
  if (e == nullptr) {
    stream->Close(absl::NotFoundError(
        absl::StrCat("no reservation for request ", request.request_id(),
                     " on this worker (never made, released, expired or failed)")));
    return;
  }
  if (request.transfer_id() != 0 && request.transfer_id() != e->generation) {
    stream->Close(absl::FailedPreconditionError(
        absl::StrCat("transfer_id ", request.transfer_id(), " is not the current reservation ",
                     e->generation, " of request ", request.request_id())));
    return;
  }
  if (e->stream != nullptr || e->has_request) {
    stream->Close(absl::AlreadyExistsError(
        absl::StrCat("request ", request.request_id(), " is already decoding")));
    return;
  }
  if (absl::Status s = AttachDecode(*e, request, stream); !s.ok()) {
    stream->Close(s);
    return;
  }
  MaybeAdmit(*e);
  UpdateGauges();
}

absl::Status DecodeCore::AttachDecode(Entry& e, const wpb::StartDecodeRequest& request,
                                      DecodeStream* stream) {
  GKA_ASSIGN_OR_RETURN(e.sampling, worker_common::SamplingFromProto(request.sampling()));
  if (request.max_new_tokens() < 1) {
    return absl::InvalidArgumentError("max_new_tokens must be >= 1");
  }
  // A migrated sequence: all but the last resumed token are part of the reserved prompt'.
  const int64_t prior = std::max(0, request.resumed_tokens_size() - 1);
  if (request.resumed_tokens_size() > 0) {
    if (prior >= e.prompt_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat(request.resumed_tokens_size(), " resumed tokens for a reservation of ",
                       e.prompt_tokens, " tokens: no prompt would be left"));
    }
    if (request.resumed_tokens_size() > static_cast<int64_t>(request.max_new_tokens())) {
      return absl::InvalidArgumentError(absl::StrCat(request.resumed_tokens_size(),
                                                     " resumed tokens exceed max_new_tokens ",
                                                     request.max_new_tokens()));
    }
    for (int32_t id : request.resumed_tokens()) {
      if (id < 0 || id >= engine_->vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat("resumed token ", id, " out of range"));
      }
    }
  }
  if (e.prompt_tokens - prior + request.max_new_tokens() > engine_->max_seq_len()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", e.prompt_tokens - prior, " tokens) + max_new_tokens (",
                     request.max_new_tokens(), ") exceed this worker's context of ",
                     engine_->max_seq_len(), " tokens"));
  }
  if (request.decode_num_iter() < -1) {
    return absl::InvalidArgumentError("decode_num_iter must be >= 0 (or -1: the model's)");
  }
  for (int32_t id : request.sampling().stop_token_ids()) {
    if (id < 0) return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " < 0"));
  }
  e.stop_ids.assign(request.sampling().stop_token_ids().begin(),
                    request.sampling().stop_token_ids().end());
  e.logprobs = request.sampling().logprobs();
  e.max_new_tokens = static_cast<int32_t>(request.max_new_tokens());
  e.decode_num_iter = request.decode_num_iter();
  if (request.priority() != 0) e.priority = request.priority();
  if (!request.tier().empty()) e.tier = request.tier();
  e.resumed.assign(request.resumed_tokens().begin(), request.resumed_tokens().end());
  e.accepts_migration = request.accepts_migration();
  e.has_request = true;
  e.stream = stream;
  by_stream_[stream->id()] = e.generation;
  return absl::OkStatus();
}

absl::Status DecodeCore::StartColocated(const wpb::StartDecodeRequest& request,
                                        DecodeStream* stream) {
  if (request.request_id().empty()) return absl::InvalidArgumentError("request_id is empty");
  if (draining_) {
    return absl::UnavailableError("this colocated worker is draining (shutting down)");
  }
  if (live_.contains(request.request_id())) {
    return absl::AlreadyExistsError(
        absl::StrCat("request ", request.request_id(), " is already running here"));
  }
  if (request.resumed_tokens_size() > 0) {
    return absl::InvalidArgumentError(
        "resumed_tokens given to a colocated worker (moved sequences go to decode workers)");
  }
  if (request.transfer_id() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("transfer_id ", request.transfer_id(),
                     " given to a colocated worker (it holds no "
                     "reservations: send the prompt in prompt_token_ids)"));
  }
  const int32_t prompt = request.prompt_token_ids_size();
  if (prompt == 0) {
    return absl::InvalidArgumentError(
        "prompt_token_ids is empty: a colocated worker prefills the prompt itself and needs at "
        "least one token");
  }
  const int32_t vocab = engine_->vocab_size();
  for (int32_t i = 0; i < prompt; ++i) {
    const int32_t id = request.prompt_token_ids(i);
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt_token_ids[", i, "] = ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (request.prefill_num_iter() < -1) {
    return absl::InvalidArgumentError("prefill_num_iter must be >= 0 (or -1: the model's)");
  }
  auto e = std::make_unique<Entry>();
  e->request_id = request.request_id();
  e->seq = SequenceId(next_sequence_++);
  e->generation = generation_base_ + static_cast<uint64_t>(e->seq.value());
  e->prompt_tokens = prompt;
  e->priority = request.priority();
  e->tier = request.tier();
  e->reserved_at = absl::Now();
  e->colocated = true;
  // Validates the rest (sampling, max_new_tokens against the context, decode num_iter).
  absl::Status attached = AttachDecode(*e, request, stream);
  absl::Cleanup detach = [&] {
    by_stream_.erase(stream->id());
    e->stream = nullptr;  // the caller closes it with the error
  };
  GKA_RETURN_IF_ERROR(attached);
  // Room now, counting what queued requests will take: a slot each, and pages for every prompt
  // token not yet fed (the scheduler would queue this one otherwise; the router's admission
  // control queues by tier and priority instead, and retries another worker).
  const int32_t page_size = engine_->options().page_size;
  const int64_t slots_wanted = scheduler_->num_waiting() + scheduler_->num_preempted() + 1;
  if (engine_->free_slots() < slots_wanted) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no free GKA state slot (", options_.total_slots, " in use or queued for)"));
  }
  const int64_t pages_wanted = engine::PagesFor(prompt + 1, page_size) +
                               engine::PagesFor(scheduler_->queued_prompt_tokens(), page_size);
  if (engine_->free_pages() < pages_wanted) {
    return absl::ResourceExhaustedError(
        absl::StrCat("need ", pages_wanted, " KV pages, ", engine_->free_pages(), " free"));
  }
  scheduler::Request r;
  r.id = e->seq;
  r.priority = e->priority;
  r.prompt.assign(request.prompt_token_ids().begin(), request.prompt_token_ids().end());
  r.max_new_tokens = e->max_new_tokens;
  r.stop_token_ids = e->stop_ids;
  r.ignore_eos = true;  // the router put the model's EOS ids among the stop ids
  r.prefill_num_iter = request.prefill_num_iter();
  e->applied_num_iter = CappedNumIter(*e);
  e->fewest_num_iter = e->applied_num_iter;
  r.decode_num_iter = e->applied_num_iter;
  GKA_RETURN_IF_ERROR(scheduler_->Add(r));
  std::move(detach).Cancel();
  e->phase = Phase::kDecoding;
  live_[e->request_id] = e->generation;
  by_sequence_[e->seq] = e->generation;
  entries_[e->generation] = std::move(e);
  return absl::OkStatus();
}

void DecodeCore::ColocatedStarted(Entry& e, const worker_common::StepRunner::Token& t) {
  const absl::Time now = absl::Now();
  e.started = true;
  e.first_token = t.token;
  e.generated = {t.token};
  e.decode_start = now;
  ++generated_tokens_;
  wpb::DecodeStreamResponse m;
  wpb::DecodeStarted* started = m.mutable_started();
  started->set_first_token(t.token);
  if (e.logprobs) *started->mutable_first_logprob() = ToLogprob(t);
  const absl::Time first_step = e.first_step.value_or(now);
  started->set_queue_ms(absl::ToDoubleMilliseconds(first_step - e.reserved_at));
  started->set_prefill_ms(absl::ToDoubleMilliseconds(now - first_step));
  started->set_prefill_num_iter(t.num_iter);
  e.Send(std::move(m));
}

absl::StatusOr<std::optional<FinishReason>> DecodeCore::AddToScheduler(Entry& e) {
  scheduler::Request r;
  r.id = e.seq;
  r.priority = e.priority;
  // The prompt's ids never reach this worker (its state did); the scheduler only counts them.
  r.prompt.assign(e.FedTokens(), 0);
  r.max_new_tokens = e.max_new_tokens - (static_cast<int32_t>(e.generated.size()) - 1);
  r.stop_token_ids = e.stop_ids;
  r.ignore_eos = true;
  e.applied_num_iter = CappedNumIter(e);
  e.fewest_num_iter = std::min(e.fewest_num_iter, e.applied_num_iter);
  r.decode_num_iter = e.applied_num_iter;
  return scheduler_->AddPrefilled(r, e.generated.back());
}

void DecodeCore::MaybeAdmit(Entry& e) {
  if (e.phase != Phase::kTransferred || !e.has_request) return;
  if (!e.resumed.empty() && e.resumed.back() != e.first_token) {
    // The state is of another step of the sequence than the router's tokens say.
    EndEntry(e,
             absl::DataLossError(absl::StrCat("the migrated state ends with token ", e.first_token,
                                              ", the router's tokens with ", e.resumed.back())),
             std::nullopt);
    return;
  }
  // Sampling continues where the sequence stands: step = generated.size(), history =
  // generated (a migrated sequence's tokens from elsewhere included).
  e.generated = e.resumed.empty() ? std::vector<int32_t>{e.first_token} : e.resumed;
  absl::StatusOr<std::optional<FinishReason>> added = AddToScheduler(e);
  if (!added.ok()) {
    EndEntry(e, added.status(), std::nullopt);
    return;
  }
  e.phase = Phase::kDecoding;
  e.decode_start = absl::Now();
  if (e.resumed.empty()) ++generated_tokens_;  // a migrated one's was generated elsewhere
  wpb::DecodeStreamResponse started;
  started.mutable_started()->set_first_token(e.first_token);
  started.mutable_started()->set_transfer_bytes(e.transfer_bytes);
  started.mutable_started()->set_transfer_ms(absl::ToDoubleMilliseconds(e.transfer_time));
  e.Send(std::move(started));
  if (added->has_value()) {
    const FinishedSequence f{e.seq, **added, scheduler::Residence::kDevice, {e.first_token}};
    runner_->Release(f);
    Finalize(e, f);
  }
}

// --- ending ------------------------------------------------------------------------------

void DecodeCore::Finalize(Entry& e, const FinishedSequence& f) {
  if (f.reason == FinishReason::kError) {
    e.Close(absl::InternalError(absl::StrCat("decoding request ", e.request_id, " failed")));
  } else {
    wpb::DecodeStreamResponse m;
    wpb::DecodeDone* done = m.mutable_done();
    done->set_finish_reason(ToProto(f.reason));
    done->set_generated_tokens(static_cast<uint32_t>(e.generated.size()));
    done->set_decode_ms(absl::ToDoubleMilliseconds(absl::Now() - e.decode_start));
    if (f.reason == FinishReason::kStopToken && !e.generated.empty()) {
      done->set_matched_stop_token_id(e.generated.back());
    }
    done->set_decode_num_iter(
        e.fewest_num_iter != std::numeric_limits<int32_t>::max()
            ? e.fewest_num_iter
            : (e.decode_num_iter < 0 ? engine_->default_num_iter() : e.decode_num_iter));
    e.Send(std::move(m));
    e.Close(absl::OkStatus());
  }
  ++decoded_sequences_;
  Forget(e);
}

void DecodeCore::EndEntry(Entry& e, const absl::Status& stream_status,
                          std::optional<wpb::DecodeDone> done) {
  if (e.phase == Phase::kDecoding) {
    if (done.has_value()) {
      wpb::DecodeStreamResponse m;
      *m.mutable_done() = *done;
      e.Send(std::move(m));
    }
    e.Close(stream_status);
    if (e.move == Entry::Move::kSending) {
      // The sender still reads the sequence's memory: stop it; OnMigrated frees the memory.
      e.move_cancelled->store(true);
      e.ended_while_sending = true;
      auto live = live_.find(e.request_id);
      if (live != live_.end() && live->second == e.generation) live_.erase(live);
      return;
    }
    if (e.move == Entry::Move::kAsked) {
      // Paused: out of the scheduler, its memory still in the engine.
      if (e.on_moved.has_value()) (*e.on_moved)(absl::AbortedError("the sequence ended"));
      RemoveFromRanks(e.seq);
    } else {
      (void)runner_->Abort(e.seq);
    }
    Forget(e);
    return;
  }
  if (done.has_value()) {
    wpb::DecodeStreamResponse m;
    *m.mutable_done() = *done;
    e.Send(std::move(m));
  }
  e.Close(stream_status);
  StartFreeing(e);
}

void DecodeCore::StartFreeing(Entry& e) {
  auto live = live_.find(e.request_id);
  if (live != live_.end() && live->second == e.generation) live_.erase(live);
  if (e.phase == Phase::kFreeing || e.phase == Phase::kQuarantined) return;
  e.copy_in.clear();  // waits for copies still writing the pages (they are about to be freed)
  // Fail closed, step 1: revoke the registrations so the transport refuses new writes
  // where it can; step 2 (the fence) proves that nothing already sent can still land.
  e.regions.clear();
  e.phase = Phase::kFreeing;
  if (e.quiescent) {
    FreeNow(e, /*quarantined=*/false);
  } else {
    StartFence(e);
  }
}

void DecodeCore::StartFence(Entry& e) {
  e.fence_in_flight = true;
  // Every rank's share: OK only when no rank's transfer can still land (a rank whose
  // transfer ended is quiescent already, and its fence returns at once).
  const bool posted =
      fence_queue_->Post([transfers = transfers_, queue = engine_queue_, core = this,
                          generation = e.generation, timeout = options_.fence_timeout] {
        absl::Status s;
        for (size_t r = 0; r < transfers.size(); ++r) {
          absl::Status f = transfers[r]->Fence(generation, timeout);
          if (s.ok() && !f.ok()) {
            s = transfers.size() > 1 ? base::Annotate(f, absl::StrCat("rank ", r)) : f;
          }
        }
        queue->Post([core, generation, s] { core->OnFenced(generation, s); });
      });
  if (!posted) e.fence_in_flight = false;  // shutting down: the memory stays as it is
}

void DecodeCore::OnFenced(uint64_t generation, absl::Status status) {
  Entry* e = ByGeneration(generation);
  if (e == nullptr) return;
  e->fence_in_flight = false;
  if (status.ok()) {
    e->quiescent = true;
    FreeNow(*e, false);
  } else {
    if (e->phase != Phase::kQuarantined) {
      GKA_LOG(WARNING) << "request " << e->request_id << ": transfer " << generation
                       << " could not be proven stopped (" << status << "): quarantining "
                       << e->pages << " pages and one slot";
    }
    e->phase = Phase::kQuarantined;
    e->next_fence = absl::Now() + options_.quarantine_retry;
    for (ReleaseCallback& cb : e->on_freed) {
      wpb::ReleaseResponse r;
      r.set_released(true);
      r.set_quarantined(true);
      cb(r);
    }
    e->on_freed.clear();
  }
  UpdateGauges();
}

void DecodeCore::RemoveFromRanks(SequenceId id) {
  (void)ranks_->RunOnAll([&](int, engine::Engine& eng) {
    (void)eng.RemoveSequence(id);
    return absl::OkStatus();
  });
}

void DecodeCore::FreeNow(Entry& e, bool quarantined) {
  RemoveFromRanks(e.seq);
  for (ReleaseCallback& cb : e.on_freed) {
    wpb::ReleaseResponse r;
    r.set_released(true);
    r.set_quarantined(quarantined);
    cb(r);
  }
  e.on_freed.clear();
  Forget(e);
}

void DecodeCore::Forget(Entry& e) {
  GKA_CHECK(e.stream == nullptr) << "forgetting request " << e.request_id << " with a stream";
  auto live = live_.find(e.request_id);
  if (live != live_.end() && live->second == e.generation) live_.erase(live);
  by_sequence_.erase(e.seq);
  for (auto it = by_stream_.begin(); it != by_stream_.end();) {
    if (it->second == e.generation) {
      by_stream_.erase(it++);
    } else {
      ++it;
    }
  }
  entries_.erase(e.generation);  // destroys e
}

void DecodeCore::Expire(Entry& e) {
  ++reservations_expired_;
  metrics_->reservations_expired->Increment();
  const bool transferred = e.phase == Phase::kTransferred;
  GKA_LOG(INFO) << "request " << e.request_id << ": lease expired before "
                << (transferred ? "StartDecode" : "the transfer completed");
  EndEntry(e,
           absl::DeadlineExceededError(
               absl::StrCat("the lease of request ", e.request_id, " expired before ",
                            transferred ? "StartDecode arrived" : "its transfer completed")),
           std::nullopt);
}

bool DecodeCore::Abort(const std::string& request_id) {
  Entry* e = Live(request_id);
  if (e == nullptr) return false;
  wpb::DecodeDone done;
  done.set_finish_reason(spb::FINISH_REASON_ABORT);
  done.set_generated_tokens(static_cast<uint32_t>(e->generated.size()));
  EndEntry(*e, absl::OkStatus(), done);
  UpdateGauges();
  return true;
}

void DecodeCore::Release(const wpb::ReleaseRequest& request, ReleaseCallback done) {
  Entry* e = Live(request.request_id());
  if (e == nullptr || (request.transfer_id() != 0 && request.transfer_id() != e->generation)) {
    done(wpb::ReleaseResponse());
    return;
  }
  const absl::Status why = absl::AbortedError(
      absl::StrCat("request ", request.request_id(), " was released",
                   request.reason().empty() ? "" : absl::StrCat(" (", request.reason(), ")")));
  if (e->phase == Phase::kDecoding) {
    EndEntry(*e, why, std::nullopt);
    wpb::ReleaseResponse r;
    r.set_released(true);
    done(r);
  } else {
    e->on_freed.push_back(std::move(done));
    EndEntry(*e, why, std::nullopt);  // replies once fenced
  }
  UpdateGauges();
}

void DecodeCore::StreamCancelled(uint64_t stream_id) {
  auto it = by_stream_.find(stream_id);
  if (it == by_stream_.end()) return;
  Entry* e = ByGeneration(it->second);
  if (e == nullptr) return;
  EndEntry(*e, absl::CancelledError("the StartDecode call was cancelled"), std::nullopt);
  UpdateGauges();
}

void DecodeCore::AbortAll(const absl::Status& why) {
  std::vector<uint64_t> generations;
  for (const auto& [g, e] : entries_) generations.push_back(g);
  for (uint64_t g : generations) {
    Entry* e = ByGeneration(g);
    if (e == nullptr) continue;
    if (e->phase == Phase::kFreeing || e->phase == Phase::kQuarantined) continue;
    EndEntry(*e, why, std::nullopt);
  }
  UpdateGauges();
}

// --- drain: moving running sequences ----------------------------------------------------

void DecodeCore::StartDrain() {
  if (draining_) return;
  draining_ = true;
  GKA_LOG(INFO) << "draining: refusing reservations, moving running sequences elsewhere";
}

void DecodeCore::AskToMove(Entry& e) {
  if (!options_.send || !e.accepts_migration || e.stream == nullptr) {
    e.move = Entry::Move::kStayed;  // its router cannot move it: it finishes here
    return;
  }
  absl::StatusOr<scheduler::SequenceInfo> info = scheduler_->Get(e.seq);
  // Only a resident sequence between steps has its whole state in the engine's memory; a
  // waiting or swapped-out one is asked again on a later tick.
  if (!info.ok() || info->state != scheduler::SequenceState::kDecoding) return;
  if (info->num_computed != e.FedTokens()) {
    GKA_LOG(WARNING) << "request " << e.request_id << ": the engine holds " << info->num_computed
                     << " tokens, its stream says " << e.FedTokens() << ": not moving it";
    e.move = Entry::Move::kStayed;
    return;
  }
  absl::StatusOr<FinishedSequence> paused = scheduler_->Abort(e.seq);
  if (!paused.ok() || paused->residence != scheduler::Residence::kDevice) {
    // Cannot happen for a resident sequence; if it did, its memory is the runner's to free.
    if (paused.ok()) runner_->Release(*paused);
    EndEntry(e, absl::InternalError("the sequence could not be paused for a move"), std::nullopt);
    return;
  }
  e.move = Entry::Move::kAsked;
  e.move_asked = absl::Now();
  wpb::DecodeStreamResponse m;
  m.mutable_migration_needed()->set_generated_tokens(static_cast<uint32_t>(e.generated.size()));
  m.mutable_migration_needed()->set_fed_tokens(static_cast<uint32_t>(e.FedTokens()));
  e.Send(std::move(m));
}

void DecodeCore::ResumeHere(Entry& e, absl::string_view why) {
  ++migrations_failed_;
  metrics_->migrations_failed->Increment();
  GKA_LOG(WARNING) << "request " << e.request_id << " stays here: " << why;
  e.move = Entry::Move::kStayed;
  e.move_cancelled.reset();
  e.move_target.clear();
  absl::StatusOr<std::optional<FinishReason>> added = AddToScheduler(e);
  if (!added.ok() || added->has_value()) {
    // Neither can happen (it was running with these tokens); end it rather than guess.
    EndEntry(e,
             absl::InternalError(
                 absl::StrCat("request ", e.request_id, " could not resume after a failed move")),
             std::nullopt);
  }
}

void DecodeCore::Migrate(const wpb::MigrateRequest& request, MigrateCallback done) {
  Entry* e = Live(request.request_id());
  if (e == nullptr || (request.transfer_id() != 0 && request.transfer_id() != e->generation) ||
      e->phase != Phase::kDecoding || e->move != Entry::Move::kAsked) {
    done(absl::FailedPreconditionError(
        absl::StrCat("request ", request.request_id(), " is not waiting to move")));
    return;
  }
  if (!request.has_ticket()) {
    ResumeHere(*e, "the router found no decode worker to move it to");
    done(absl::AbortedError("resumed here"));
    UpdateGauges();
    return;
  }
  const int32_t fed = e->FedTokens();
  absl::StatusOr<worker_common::ParsedTicket> ticket =
      worker_common::ParseTicket(request.ticket(), layout_, fed);
  worker_common::HandoffJob job;
  absl::Status bad = ticket.status();
  if (bad.ok()) {
    job.ticket = *std::move(ticket);
    job.specs = layout_.Segments(fed);
    for (int r = 0; r < ranks_->size() && bad.ok(); ++r) {
      absl::StatusOr<std::vector<engine::MemorySegment>> described =
          ranks_->rank(r).DescribeSequence(e->seq);
      bad = described.status();
      if (bad.ok()) bad = layout_.Check(*described, fed);
      if (bad.ok()) job.local.push_back(*std::move(described));
    }
  }
  if (!bad.ok()) {
    ResumeHere(*e, bad.ToString());
    done(bad);
    UpdateGauges();
    return;
  }
  job.completion.set_request_id(request.ticket().request_id());
  job.completion.set_transfer_id(job.ticket.transfer_id);
  // The last sampled token, not yet fed: the target feeds it first, as this worker would have.
  job.completion.set_first_token(e->generated.back());
  job.completion.set_prompt_tokens(static_cast<uint32_t>(fed));
  job.completion.set_prefill_tp_size(static_cast<uint32_t>(ranks_->size()));
  job.completion.set_layout_hash(layout_.TransferHash(ranks_->size(), job.ticket.decode_tp));
  job.deadline = job.ticket.lease_deadline;
  e->move_cancelled = std::make_shared<std::atomic<bool>>(false);
  job.cancelled = e->move_cancelled;
  e->move = Entry::Move::kSending;
  e->move_target = job.ticket.decode_worker_id;
  e->on_moved = std::move(done);
  options_.send(std::make_shared<const worker_common::HandoffJob>(std::move(job)),
                [this, generation = e->generation](worker_common::HandoffResult r) {
                  OnMigrated(generation, std::move(r));
                });
}

void DecodeCore::MigrateCancelled(const std::string& request_id) {
  Entry* e = Live(request_id);
  if (e != nullptr && e->move == Entry::Move::kSending) e->move_cancelled->store(true);
}

void DecodeCore::OnMigrated(uint64_t generation, worker_common::HandoffResult result) {
  Entry* e = ByGeneration(generation);
  if (e == nullptr || e->move != Entry::Move::kSending) return;
  const transfer::TransferOutcome& o = result.outcome;
  std::optional<MigrateCallback> done = std::move(e->on_moved);
  e->on_moved.reset();
  auto reply = [&](absl::StatusOr<wpb::MigrateResponse> r) {
    if (done.has_value()) (*done)(std::move(r));
  };
  if (o.local_may_be_read) {
    // Writes the transport could neither finish nor cancel may still read this memory: it
    // never returns to the pool (fail closed), and the sequence cannot run on in it either.
    GKA_LOG(ERROR) << "request " << e->request_id
                   << ": the transport may still read its memory after a move; keeping it";
    e->Close(absl::UnavailableError("the sequence's move failed and its memory is held back"));
    reply(absl::UnavailableError("the move failed; the sequence ended"));
    ++migrations_failed_;
    metrics_->migrations_failed->Increment();
    ++decoded_sequences_;
    Forget(*e);
    UpdateGauges();
    return;
  }
  if (e->ended_while_sending) {
    RemoveFromRanks(e->seq);
    reply(absl::AbortedError("the sequence ended while it moved"));
    Forget(*e);
    UpdateGauges();
    return;
  }
  if (!o.status.ok()) {
    const std::string target = e->move_target;  // ResumeHere clears it
    ResumeHere(*e, absl::StrCat("moving it to ", target, " failed: ", o.status.ToString()));
    reply(base::Annotate(o.status, absl::StrCat("moving request ", e->request_id, " to ", target,
                                                " (it runs on here)")));
    UpdateGauges();
    return;
  }
  // The target acknowledged the verified state: the sequence lives there now.
  ++migrations_ok_;
  metrics_->migrations_ok->Increment();
  GKA_LOG(INFO) << "request " << e->request_id << " moved to " << e->move_target << " after "
                << e->generated.size() << " tokens (" << o.bytes << " bytes in "
                << absl::FormatDuration(o.elapsed) << ")";
  wpb::DecodeStreamResponse m;
  m.mutable_migrated()->set_target_worker_id(e->move_target);
  e->Send(std::move(m));
  e->Close(absl::OkStatus());
  RemoveFromRanks(e->seq);
  wpb::MigrateResponse response;
  *response.mutable_transfer() = worker_common::StatsOf(result);
  reply(std::move(response));
  ++decoded_sequences_;
  Forget(*e);
  UpdateGauges();
}

// --- the loop ----------------------------------------------------------------------------

absl::Time DecodeCore::Tick() {
  absl::Time now = absl::Now();
  std::vector<uint64_t> expired, refence, copied;
  bool copying = false;
  for (const auto& [g, e] : entries_) {
    if (!e->copy_in.empty()) {
      const bool ready = std::all_of(e->copy_in.begin(), e->copy_in.end(),
                                     [](const auto& job) { return job->Ready(); });
      if (ready) copied.push_back(g);
      copying = copying || !ready;
    }
    const bool leased = e->phase == Phase::kAwaitingTransfer || e->phase == Phase::kTransferred;
    if (leased && e->lease.Expired(now)) expired.push_back(g);
    if (e->phase == Phase::kQuarantined && !e->fence_in_flight && now >= e->next_fence) {
      refence.push_back(g);
    }
  }
  for (uint64_t g : copied) {
    if (Entry* e = ByGeneration(g); e != nullptr && !e->copy_in.empty()) FinishCopyIn(*e);
  }
  for (uint64_t g : expired) {
    if (Entry* e = ByGeneration(g)) Expire(*e);
  }
  for (uint64_t g : refence) {
    if (Entry* e = ByGeneration(g)) StartFence(*e);
  }
  if (draining_) {
    std::vector<uint64_t> ask, resume;
    for (const auto& [g, e] : entries_) {
      if (e->phase != Phase::kDecoding || e->ended_while_sending) continue;
      if (e->move == Entry::Move::kNone) ask.push_back(g);
      if (e->move == Entry::Move::kAsked && now >= e->move_asked + options_.migration_wait) {
        resume.push_back(g);
      }
    }
    for (uint64_t g : ask) {
      if (Entry* e = ByGeneration(g)) AskToMove(*e);
    }
    for (uint64_t g : resume) {
      if (Entry* e = ByGeneration(g)) ResumeHere(*e, "no Migrate call came");
    }
  }
  const bool busy = scheduler_->num_sequences() > 0;
  const bool ran = busy && RunStep();
  UpdateGauges();
  now = absl::Now();
  if (ran) return now;
  // Sequences that cannot run now (memory held by reservations) wait for a task to wake
  // the loop (a completion, a release), or poll briefly.
  absl::Time next = busy ? now + absl::Milliseconds(20) : absl::InfiniteFuture();
  if (copying) next = std::min(next, now + absl::Microseconds(200));  // copy-ins to finish
  for (const auto& [g, e] : entries_) {
    if (e->phase == Phase::kAwaitingTransfer || e->phase == Phase::kTransferred) {
      next = std::min(next, e->lease.deadline);
    }
    if (e->phase == Phase::kQuarantined && !e->fence_in_flight) {
      next = std::min(next, e->next_fence);
    }
    if (e->move == Entry::Move::kAsked) {
      next = std::min(next, e->move_asked + options_.migration_wait);
    }
  }
  return next;
}

bool DecodeCore::RunStep() {
  auto entry_of = [this](SequenceId id) -> Entry* {
    auto it = by_sequence_.find(id);
    GKA_CHECK(it != by_sequence_.end()) << "sequence " << id << " without a request";
    return ByGeneration(it->second);
  };
  const absl::Time step_start = absl::Now();
  // A colocated prompt's first token is generation step 0 with no history (generated is
  // empty until then), as on a prefill worker and in the offline engine.
  worker_common::StepRunner::Report r = runner_->Step([&](SequenceId id) {
    Entry* e = entry_of(id);
    return worker_common::StepRunner::Sampling{
        .config = e->sampling, .step = e->generated.size(), .history = e->generated};
  });
  int prompt_items = 0;
  for (SequenceId id : r.batch_ids) {
    Entry* e = entry_of(id);
    if (!e->colocated || e->started) continue;  // a decode token
    ++prompt_items;
    if (!e->first_step.has_value()) e->first_step = step_start;
  }
  if (r.ran && prompt_items > 0 && prompt_items < static_cast<int>(r.batch_ids.size())) {
    ++mixed_steps_;
    metrics_->mixed_steps->Increment();
  }
  if (r.ran) {
    metrics_->batch_size->Observe(r.batch_size);
    metrics_->step_seconds->Observe(absl::ToDoubleSeconds(r.elapsed));
  }
  if (r.preempted > 0) {
    preemptions_ += r.preempted;
    metrics_->preemptions->Increment(r.preempted);
  }
  for (const worker_common::StepRunner::Token& t : r.tokens) {
    Entry* e = entry_of(t.id);
    if (e->colocated && !e->started) {
      ColocatedStarted(*e, t);
      continue;
    }
    e->generated.push_back(t.token);
    ++generated_tokens_;
    metrics_->num_iter->Labels({{"worker", metrics_->worker}, {"tier", TierOf(*e)}})
        .Observe(t.num_iter);
    wpb::DecodeStreamResponse m;
    m.mutable_tokens()->add_token_ids(t.token);
    if (e->logprobs) *m.mutable_tokens()->add_logprobs() = ToLogprob(t);
    e->Send(std::move(m));
  }
  for (const FinishedSequence& f : r.finished) {
    Entry* e = entry_of(f.id);
    if (f.reason == FinishReason::kError) {
      GKA_LOG(WARNING) << "request " << e->request_id << " failed in the engine: " << r.error;
    }
    Finalize(*e, f);
  }
  return r.ran;
}

void DecodeCore::UpdateGauges() {
  const DecodeStats s = Stats();
  metrics_->running->Set(s.running);
  metrics_->waiting->Set(s.waiting);
  metrics_->kv_pages_used->Set(s.total_pages - s.free_pages);
  metrics_->kv_pages_capacity->Set(s.total_pages);
  metrics_->slots_used->Set(s.total_slots - s.free_slots);
  metrics_->slots_total->Set(s.total_slots);
  metrics_->reservations_active->Set(s.reservations);
}

DecodeStats DecodeCore::Stats() const {
  DecodeStats s;
  s.free_pages = engine_->free_pages();
  s.total_pages = options_.total_pages;
  s.free_slots = engine_->free_slots();
  s.total_slots = options_.total_slots;
  for (const auto& [g, e] : entries_) {
    switch (e->phase) {
      case Phase::kAwaitingTransfer:
      case Phase::kTransferred:
        ++s.reservations;
        s.reserved_pages += e->pages;
        ++s.reserved_slots;
        break;
      case Phase::kFreeing:
        ++s.freeing;
        break;
      case Phase::kQuarantined:
        s.quarantined_pages += e->pages;
        ++s.quarantined_slots;
        break;
      case Phase::kDecoding:
        break;
    }
  }
  s.running = scheduler_->num_resident();
  s.waiting = scheduler_->num_waiting() + scheduler_->num_preempted();
  s.queued_prompt_tokens = scheduler_->queued_prompt_tokens();
  if (options_.colocated) {
    s.claimed_pages = engine::PagesFor(s.queued_prompt_tokens, engine_->options().page_size);
    s.claimed_slots = scheduler_->num_waiting() + scheduler_->num_preempted();
  }
  s.generated_tokens = generated_tokens_;
  s.reservations_expired = reservations_expired_;
  s.checksum_failures = checksum_failures_;
  s.preemptions = preemptions_;
  s.completions_discarded = completions_discarded_;
  s.decoded_sequences = decoded_sequences_;
  s.migrations_ok = migrations_ok_;
  s.migrations_failed = migrations_failed_;
  s.live = static_cast<int32_t>(entries_.size());
  s.mixed_steps = mixed_steps_;
  return s;
}

}  // namespace gka::decode_worker
