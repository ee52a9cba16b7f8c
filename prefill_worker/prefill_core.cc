#include "prefill_worker/prefill_core.h"

#include <algorithm>
#include <utility>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/base/logging.h"
#include "common/base/status.h"

namespace gka::prefill_worker {

using scheduler::FinishedSequence;
using scheduler::FinishReason;

struct PrefillCore::Entry {
  uint64_t serial = 0;
  PrefillTask task;
  SequenceId seq;
  enum class Phase { kQueued, kHandingOff } phase = Phase::kQueued;
  absl::Time arrival;
  std::optional<absl::Time> first_step;
  absl::Time prefill_end;
  int32_t num_iter = -1;  // resolved, of the prompt chunks
  int32_t first_token = -1;
  float first_logprob = 0;
  std::vector<engine::Engine::TopLogprob> first_top;  // task.sampling.num_top_logprobs of them
  std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  // The hand-off, streamed from the first planned step (options.stream_handoff) or started
  // after the last one.
  std::shared_ptr<HandoffStream> stream;
  // Set when the stream had to stop before the last step (preempted, failed): the request
  // fails once the step ends.
  std::optional<absl::Status> stream_stopped;
  int64_t computed_after_step = 0;  // prompt tokens computed once the planned step ran
  bool last_step = false;           // the planned step is its last prefill step
};

absl::StatusOr<std::unique_ptr<PrefillMetrics>> PrefillMetrics::Create(
    metrics::Registry& registry, const std::string& worker, const std::vector<std::string>& tiers) {
  auto m = std::make_unique<PrefillMetrics>();
  m->worker = worker;
  const metrics::Labels w = {{"worker", worker}};
  GKA_ASSIGN_OR_RETURN(
      m->prefill_seconds,
      registry.AddHistogram("gka_prefill_seconds", "Engine time of one request's prefill",
                            {"worker", "tier"}, metrics::LatencyBuckets()));
  for (const std::string& tier : tiers)
    m->prefill_seconds->Labels({{"worker", worker}, {"tier", tier}});
  GKA_ASSIGN_OR_RETURN(
      metrics::GaugeFamily * queue,
      registry.AddGauge("gka_prefill_queue_tokens", "Prompt tokens waiting", {"worker"}));
  m->queue_tokens = queue->Labels(w);
  GKA_ASSIGN_OR_RETURN(metrics::HistogramFamily * batch,
                       registry.AddHistogram("gka_prefill_batch_tokens", "Tokens per prefill step",
                                             {"worker"}, metrics::ExponentialBuckets(1, 2, 16)));
  m->batch_tokens = batch->Labels(w);
  GKA_ASSIGN_OR_RETURN(
      metrics::HistogramFamily * seconds,
      registry.AddHistogram("gka_transfer_seconds", "UCX put + flush time per request",
                            {"worker", "kind"}, metrics::LatencyBuckets()));
  m->transfer_kv_seconds = seconds->Labels({{"worker", worker}, {"kind", "kv"}});
  m->transfer_state_seconds = seconds->Labels({{"worker", worker}, {"kind", "state"}});
  GKA_ASSIGN_OR_RETURN(metrics::CounterFamily * bytes,
                       registry.AddCounter("gka_transfer_bytes_total",
                                           "Bytes written to decode workers", {"worker", "kind"}));
  m->transfer_kv_bytes = bytes->Labels({{"worker", worker}, {"kind", "kv"}});
  m->transfer_state_bytes = bytes->Labels({{"worker", worker}, {"kind", "state"}});
  GKA_ASSIGN_OR_RETURN(
      metrics::HistogramFamily * tail,
      registry.AddHistogram("gka_prefill_transfer_tail_seconds",
                            "End of a request's last prefill step until the decode worker "
                            "acknowledged its hand-off (the transfer's share of TTFT)",
                            {"worker"}, metrics::LatencyBuckets()));
  m->transfer_tail_seconds = tail->Labels(w);
  GKA_ASSIGN_OR_RETURN(metrics::CounterFamily * streamed,
                       registry.AddCounter("gka_prefill_streamed_bytes_total",
                                           "Hand-off bytes written while the prompt was still "
                                           "being prefilled",
                                           {"worker"}));
  m->streamed_bytes = streamed->Labels(w);
  GKA_ASSIGN_OR_RETURN(
      m->transfer_failures,
      registry.AddCounter("gka_transfer_failures_total", "Failed transfers", {"worker", "reason"}));
  for (const char* reason : {"peer", "timeout", "lease", "checksum"}) {
    m->transfer_failures->Labels({{"worker", worker}, {"reason", reason}});
  }
  return m;
}

absl::StatusOr<std::unique_ptr<PrefillCore>> PrefillCore::Create(const Options& options,
                                                                 worker_common::RankGroup* ranks,
                                                                 HandoffEnv env,
                                                                 PrefillMetrics* metrics) {
  std::unique_ptr<PrefillCore> core(new PrefillCore(options, ranks, std::move(env), metrics));
  const engine::Engine* engine = &ranks->lead();
  scheduler::SchedulerOptions so;
  so.max_batch_tokens = options.max_batch_tokens;
  so.max_running_seqs = std::min(options.max_running_seqs, options.max_batch_tokens);
  so.prefill_chunk_size = options.prefill_chunk_size;
  so.max_model_len = engine->max_seq_len();
  so.prefill_only = true;
  GKA_ASSIGN_OR_RETURN(core->scheduler_, scheduler::Scheduler::Create(so, core->memory_.get()));
  core->runner_ = std::make_unique<worker_common::StepRunner>(ranks, core->scheduler_.get(),
                                                              options.vocab_limit);
  PrefillCore* c = core.get();
  core->runner_->SetHooks(
      {.before_forward = [c](absl::Span<const scheduler::BatchItem> b) { c->BeforeForward(b); },
       .before_release = [c](SequenceId id) { c->BeforeRelease(id); }});
  core->step_marks_.assign(ranks->size(), nullptr);
  GKA_RETURN_IF_ERROR(ranks->RunOnAll([c](int rank, engine::Engine& e) {
    e.SetLayerObserver([c, rank](int32_t layer) { c->OnLayer(rank, layer); });
    return absl::OkStatus();
  }));
  return core;
}

PrefillCore::PrefillCore(const Options& options, worker_common::RankGroup* ranks, HandoffEnv env,
                         PrefillMetrics* metrics)
    : options_(options),
      ranks_(ranks),
      engine_(&ranks->lead()),
      env_(std::move(env)),
      metrics_(metrics),
      num_layers_(ranks->lead().dims().num_layers),
      layout_(worker_common::HandoffLayout::Of(ranks->lead())),
      memory_(std::make_unique<worker_common::EngineMemory>(ranks->lead())) {}

PrefillCore::~PrefillCore() {
  (void)ranks_->RunOnAll([](int, engine::Engine& e) {
    e.SetLayerObserver(nullptr);
    return absl::OkStatus();
  });
}

void PrefillCore::Add(uint64_t serial, PrefillTask task) {
  auto e = std::make_unique<Entry>();
  e->serial = serial;
  e->seq = SequenceId(next_sequence_++);
  e->arrival = absl::Now();
  scheduler::Request r;
  r.id = e->seq;
  r.priority = task.priority;
  r.prompt = task.prompt;
  // Prefill-only sequences end with kPrefillDone after their first token, unless a stop
  // condition fires first: with no stop ids here and a limit above 1, none can.
  r.max_new_tokens = 2;
  r.prefill_num_iter = task.prefill_num_iter;
  e->task = std::move(task);
  if (absl::Status s = scheduler_->Add(r); !s.ok()) {
    e->task.reply(s);
    return;
  }
  by_sequence_[e->seq] = serial;
  entries_[serial] = std::move(e);
  metrics_->queue_tokens->Set(static_cast<double>(scheduler_->queued_prompt_tokens()));
}

void PrefillCore::Cancel(uint64_t serial) {
  auto it = entries_.find(serial);
  if (it == entries_.end()) return;
  Entry& e = *it->second;
  if (e.phase == Entry::Phase::kHandingOff) {
    e.cancelled->store(true);  // the sender stops; OnHandoffDone replies
    return;
  }
  const absl::Status why = absl::CancelledError("the Prefill call was cancelled");
  if (e.stream != nullptr && !e.stream_stopped.has_value()) {
    e.stream_stopped = why;
    if (e.stream->StopNow(why).outcome.local_may_be_read) {
      // Writes the transport could not stop may still read the memory: never reuse it.
      (void)scheduler_->Abort(e.seq);
      quarantined_pages_ += engine::PagesFor(e.computed_after_step, engine_->options().page_size);
      ++quarantined_slots_;
      GKA_LOG(ERROR) << "request " << e.task.request_id
                     << ": the transport may still read its memory; quarantining it";
      Finish(e, why);
      return;
    }
  }
  (void)runner_->Abort(e.seq);
  Finish(e, why);
}

absl::Time PrefillCore::Tick() {
  if (scheduler_->num_sequences() == 0) return absl::InfiniteFuture();
  const bool ran = RunStep();
  metrics_->queue_tokens->Set(static_cast<double>(scheduler_->queued_prompt_tokens()));
  // Nothing could run (every slot is handing off): hand-off completions wake the loop.
  return ran ? absl::Now() : absl::Now() + absl::Milliseconds(20);
}

bool PrefillCore::RunStep() {
  auto entry_of = [this](SequenceId id) -> Entry* {
    auto it = by_sequence_.find(id);
    GKA_CHECK(it != by_sequence_.end()) << "sequence " << id << " without a request";
    return entries_.at(it->second).get();
  };
  const absl::Time step_start = absl::Now();
  worker_common::StepRunner::Report r = runner_->Step([&](SequenceId id) {
    // The first token is generation step 0 with no history, as in the offline engine.
    return worker_common::StepRunner::Sampling{.config = entry_of(id)->task.sampling};
  });
  if (r.ran) {
    metrics_->batch_tokens->Observe(r.batch_tokens);
    prefilled_tokens_ += r.batch_tokens;
  }
#ifdef GKA_FAULT_INJECTION
  absl::Duration step_delay;
  for (SequenceId id : r.batch_ids)
    step_delay = std::max(step_delay, entry_of(id)->task.faults.step_delay);
  if (step_delay > absl::ZeroDuration()) absl::SleepFor(step_delay);  // a slow prefill
#endif
  for (size_t i = 0; i < r.batch_ids.size(); ++i) {
    Entry* e = entry_of(r.batch_ids[i]);
    if (!e->first_step.has_value()) e->first_step = step_start;
    e->num_iter = r.batch_num_iter[i];
    if (!r.ran || e->stream == nullptr || e->last_step || e->stream_stopped.has_value()) continue;
    // A chunk that is not the prompt's last: the pages its tokens filled are final.
    absl::StatusOr<std::vector<std::vector<engine::MemorySegment>>> memory = Describe(*e);
    absl::Status described = memory.status();
    for (int rank = 0; described.ok() && rank < ranks_->size(); ++rank) {
      described = e->stream->Describe(rank, (*memory)[rank]);
    }
    if (!described.ok()) {
      GKA_LOG(WARNING) << "request " << e->task.request_id << ": " << described;
      continue;  // the pages go at the end instead
    }
    e->stream->PagesFinal(e->computed_after_step / engine_->options().page_size, step_marks_);
  }
  // Streams stopped during the step (their sequence was preempted): the reservation is
  // cancelled, so the request fails.
  std::vector<Entry*> stopped;
  for (auto& [serial, e] : entries_) {
    if (e->phase == Entry::Phase::kQueued && e->stream_stopped.has_value())
      stopped.push_back(e.get());
  }
  for (Entry* e : stopped) {
    if (absl::c_any_of(r.finished, [&](const FinishedSequence& f) { return f.id == e->seq; })) {
      continue;  // ends below with its own reason
    }
    (void)runner_->Abort(e->seq);
    Finish(*e, absl::UnavailableError(absl::StrCat(
                   "request ", e->task.request_id,
                   " was preempted while its hand-off streamed: ", e->stream_stopped->message())));
  }
  for (const worker_common::StepRunner::Token& t : r.tokens) {
    Entry* e = entry_of(t.id);
    e->first_token = t.token;
    e->first_logprob = t.logprob;
    e->first_top = t.top;
  }
  for (const FinishedSequence& f : r.finished) {
    Entry* e = entry_of(f.id);
    if (f.reason == FinishReason::kPrefillDone) {
      e->prefill_end = absl::Now();
      const std::string tier = e->task.tier.empty() ? "default" : e->task.tier;
      metrics_->prefill_seconds->Labels({{"worker", metrics_->worker}, {"tier", tier}})
          .Observe(absl::ToDoubleSeconds(e->prefill_end - e->first_step.value_or(step_start)));
      StartHandoff(*e);
    } else {
      Finish(*e, absl::InternalError(absl::StrCat(
                     "prefill of request ", e->task.request_id, " failed (",
                     scheduler::FinishReasonName(f.reason), "): ", r.error.ToString())));
    }
  }
  return r.ran;
}

void PrefillCore::BeforeForward(absl::Span<const scheduler::BatchItem> batch) {
  last_step_.clear();
  streaming_step_ = false;
  for (const scheduler::BatchItem& item : batch) {
    auto it = by_sequence_.find(item.id);
    if (it == by_sequence_.end()) continue;
    Entry& e = *entries_.at(it->second);
    e.computed_after_step = item.position + static_cast<int64_t>(item.tokens.size());
    e.last_step = item.needs_logits;
    if (!options_.stream_handoff || e.stream_stopped.has_value()) continue;
    if (e.stream == nullptr) {
      absl::StatusOr<std::shared_ptr<HandoffStream>> stream = NewStream(e);
      if (!stream.ok()) {
        // Not fatal here: StartHandoff makes it again after the last step and reports then.
        GKA_LOG(WARNING) << "request " << e.task.request_id << ": " << stream.status();
        continue;
      }
      e.stream = *std::move(stream);
    }
    streaming_step_ = true;
    if (e.last_step) last_step_.push_back({e.seq, e.stream});
  }
  for (auto& mark : step_marks_) mark.reset();
}

void PrefillCore::OnLayer(int rank, int32_t layer) {
  const bool last_layer = layer == num_layers_ - 1;
  if (last_step_.empty() && !(last_layer && streaming_step_)) return;
  engine::Engine& e = ranks_->rank(rank);
  absl::StatusOr<std::shared_ptr<kernels::StreamMark>> mark = e.backend().Mark();
  if (!mark.ok()) {
    // Without a mark the staging could read a layer before it is written: leave the layer
    // to Complete (after the step, when the first token's sampling synchronised the ranks).
    GKA_LOG(ERROR) << "rank " << rank << ": no stream mark after layer " << layer << ": "
                   << mark.status();
    return;
  }
  if (last_layer) step_marks_[rank] = *mark;
  for (const auto& [seq, stream] : last_step_) {
    if (layer == 0) {
      // The step's pages were allocated before its first layer ran.
      absl::StatusOr<std::vector<engine::MemorySegment>> memory = e.DescribeSequence(seq);
      if (!memory.ok() || !stream->Describe(rank, *memory).ok()) continue;
    }
    stream->LayerFinal(rank, layer, *mark);
  }
}

void PrefillCore::BeforeRelease(SequenceId id) {
  auto it = by_sequence_.find(id);
  if (it == by_sequence_.end()) return;
  Entry& e = *entries_.at(it->second);
  // A hand-off past Complete is released by OnHandoffDone, once it read its last byte.
  if (e.stream == nullptr || e.phase == Entry::Phase::kHandingOff || e.stream_stopped.has_value()) {
    return;
  }
  const absl::Status why = absl::AbortedError("the sequence's memory was moved or freed");
  e.stream_stopped = why;
  if (e.stream->StopNow(why).outcome.local_may_be_read) {
    // The engine's pools stay mapped, so a late read sends stale bytes to a receiver that
    // fences them; it cannot fault. Say so: the receiver must quarantine.
    GKA_LOG(ERROR) << "request " << e.task.request_id
                   << ": writes the transport could not stop may still read moved memory";
  }
}

absl::StatusOr<std::vector<std::vector<engine::MemorySegment>>> PrefillCore::Describe(
    const Entry& e) {
  std::vector<std::vector<engine::MemorySegment>> out;
  for (int r = 0; r < ranks_->size(); ++r) {
    GKA_ASSIGN_OR_RETURN(std::vector<engine::MemorySegment> described,
                         ranks_->rank(r).DescribeSequence(e.seq));
    out.push_back(std::move(described));
  }
  return out;
}

absl::StatusOr<std::shared_ptr<HandoffStream>> PrefillCore::NewStream(const Entry& e) {
  HandoffJob job;
  job.ticket = e.task.ticket;
  job.specs = layout_.Segments(static_cast<int64_t>(e.task.prompt.size()));
  job.prefill_tp = ranks_->size();
  job.deadline = std::min(e.task.ticket.lease_deadline, e.task.call_deadline);
  job.cancelled = e.cancelled;
  job.faults = e.task.faults;
  return HandoffStream::Create(env_.stream, std::move(job));
}

void PrefillCore::StartHandoff(Entry& e) {
  const int64_t length = static_cast<int64_t>(e.task.prompt.size());
  // Where each rank's share of the sequence lives (bookkeeping, read between steps): the
  // stream reads every rank's memory in place.
  absl::StatusOr<std::vector<std::vector<engine::MemorySegment>>> memory = Describe(e);
  absl::Status s = memory.status();
  for (int r = 0; s.ok() && r < ranks_->size(); ++r) s = layout_.Check((*memory)[r], length);
  if (s.ok() && e.stream == nullptr) {
    absl::StatusOr<std::shared_ptr<HandoffStream>> stream = NewStream(e);
    if (stream.ok()) e.stream = *std::move(stream);
    s = stream.status();
  }
  wpb::HandoffCompletion completion;
  completion.set_request_id(e.task.request_id);
  completion.set_transfer_id(e.task.ticket.transfer_id);
  completion.set_first_token(e.first_token);
  completion.set_first_logprob(e.first_logprob);
  completion.set_prompt_tokens(static_cast<uint32_t>(length));
  completion.set_prefill_tp_size(static_cast<uint32_t>(ranks_->size()));
  completion.set_layout_hash(layout_.TransferHash(ranks_->size(), e.task.ticket.decode_tp));
  if (s.ok()) {
    e.phase = Entry::Phase::kHandingOff;
    auto post = env_.post;
    s = e.stream->Complete(
        *memory, step_marks_, std::move(completion),
        [this, post, serial = e.serial](HandoffResult r) {
          auto shared = std::make_shared<HandoffResult>(std::move(r));
          // Dropped when the engine queue is closed (shutdown).
          (void)post([this, serial, shared] { OnHandoffDone(serial, std::move(*shared)); });
        });
    if (!s.ok()) e.phase = Entry::Phase::kQueued;
  }
  if (!s.ok()) {
    if (e.stream != nullptr) (void)e.stream->StopNow(s);
    runner_->Release({e.seq, FinishReason::kPrefillDone, scheduler::Residence::kDevice, {}});
    Finish(e, s);
  }
}

void PrefillCore::OnHandoffDone(uint64_t serial, HandoffResult result) {
  auto it = entries_.find(serial);
  if (it == entries_.end()) return;
  Entry& e = *it->second;
  const transfer::TransferOutcome& o = result.outcome;
  if (o.local_may_be_read) {
    // Writes the transport could neither finish nor cancel may still read the sequence's
    // memory: keep it out of the pool for good (fail closed) rather than let it be reused.
    quarantined_pages_ +=
        engine::PagesFor(static_cast<int64_t>(e.task.prompt.size()), engine_->options().page_size);
    ++quarantined_slots_;
    GKA_LOG(ERROR) << "request " << e.task.request_id
                   << ": the transport may still read its memory; quarantining it";
  } else {
    // The sender reads none of the sequence's memory any more: it may return to the pool.
    runner_->Release({e.seq, FinishReason::kPrefillDone, scheduler::Residence::kDevice, {}});
  }
  if (!o.status.ok()) {
    ++handoffs_failed_;
    if (!result.failure_reason.empty()) {
      metrics_->transfer_failures
          ->Labels({{"worker", metrics_->worker}, {"reason", result.failure_reason}})
          .Increment();
    }
    std::string context = absl::StrCat("handing request ", e.task.request_id,
                                       " off to decode worker ", e.task.ticket.decode_worker_id);
    if (o.remote_may_be_written) {
      absl::StrAppend(&context, " (writes may still land: the reservation must be quarantined)");
    }
    Finish(e, base::Annotate(o.status, context));
    return;
  }
  ++handoffs_ok_;
  metrics_->transfer_kv_bytes->Increment(static_cast<double>(result.kv_bytes));
  metrics_->transfer_state_bytes->Increment(static_cast<double>(result.state_bytes));
  metrics_->transfer_kv_seconds->Observe(absl::ToDoubleSeconds(result.kv_time));
  metrics_->transfer_state_seconds->Observe(absl::ToDoubleSeconds(result.state_time));
  metrics_->transfer_tail_seconds->Observe(absl::ToDoubleSeconds(result.tail));
  metrics_->streamed_bytes->Increment(static_cast<double>(result.streamed_bytes));
  wpb::PrefillResult out;
  out.set_first_token(e.first_token);
  if (e.task.logprobs) {
    out.mutable_first_logprob()->set_token_id(e.first_token);
    out.mutable_first_logprob()->set_logprob(e.first_logprob);
    for (const engine::Engine::TopLogprob& alt : e.first_top) {
      serving::v1::TopLogprob* top = out.mutable_first_logprob()->add_top();
      top->set_token_id(alt.token);
      top->set_logprob(alt.logprob);
    }
  }
  *out.mutable_transfer() = worker_common::StatsOf(result);
  const absl::Time first_step = e.first_step.value_or(e.arrival);
  out.set_queue_ms(absl::ToDoubleMilliseconds(first_step - e.arrival));
  out.set_prefill_ms(absl::ToDoubleMilliseconds(e.prefill_end - first_step));
  out.set_prefill_num_iter(e.num_iter);
  out.set_prefill_worker_id(options_.worker_id);
  Finish(e, std::move(out));
}

void PrefillCore::Finish(Entry& e, absl::StatusOr<wpb::PrefillResult> result) {
  e.task.reply(std::move(result));
  by_sequence_.erase(e.seq);
  entries_.erase(e.serial);  // destroys e
}

void PrefillCore::AbortAll(const absl::Status& why) {
  std::vector<uint64_t> serials;
  for (const auto& [serial, e] : entries_) serials.push_back(serial);
  for (uint64_t serial : serials) {
    auto it = entries_.find(serial);
    if (it == entries_.end()) continue;
    Entry& e = *it->second;
    if (e.phase == Entry::Phase::kHandingOff) {
      e.cancelled->store(true);
      continue;
    }
    (void)runner_->Abort(e.seq);
    Finish(e, why);
  }
}

PrefillStats PrefillCore::Stats() const {
  PrefillStats s;
  s.free_pages = engine_->free_pages();
  s.free_slots = engine_->free_slots();
  s.running = scheduler_->num_resident();
  s.waiting = scheduler_->num_waiting() + scheduler_->num_preempted();
  for (const auto& [serial, e] : entries_) {
    if (e->phase == Entry::Phase::kHandingOff) ++s.handing_off;
    if (e->phase == Entry::Phase::kQueued && e->stream != nullptr) {
      s.streaming_bytes += e->stream->bytes_put();
    }
  }
  s.queued_prompt_tokens = scheduler_->queued_prompt_tokens();
  s.prefilled_tokens = prefilled_tokens_;
  s.handoffs_ok = handoffs_ok_;
  s.handoffs_failed = handoffs_failed_;
  s.quarantined_pages = quarantined_pages_;
  s.quarantined_slots = quarantined_slots_;
  return s;
}

}  // namespace gka::prefill_worker
