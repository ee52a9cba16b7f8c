#include "prefill_worker/prefill_core.h"

#include <algorithm>
#include <utility>

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
      m->transfer_failures,
      registry.AddCounter("gka_transfer_failures_total", "Failed transfers", {"worker", "reason"}));
  for (const char* reason : {"peer", "timeout", "lease", "checksum"}) {
    m->transfer_failures->Labels({{"worker", worker}, {"reason", reason}});
  }
  return m;
}

absl::StatusOr<std::unique_ptr<PrefillCore>> PrefillCore::Create(const Options& options,
                                                                 worker_common::RankGroup* ranks,
                                                                 SendFn send,
                                                                 PrefillMetrics* metrics) {
  std::unique_ptr<PrefillCore> core(new PrefillCore(options, ranks, std::move(send), metrics));
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
  return core;
}

PrefillCore::PrefillCore(const Options& options, worker_common::RankGroup* ranks, SendFn send,
                         PrefillMetrics* metrics)
    : options_(options),
      ranks_(ranks),
      engine_(&ranks->lead()),
      send_(std::move(send)),
      metrics_(metrics),
      layout_(worker_common::HandoffLayout::Of(ranks->lead())),
      memory_(std::make_unique<worker_common::EngineMemory>(ranks->lead())) {}

PrefillCore::~PrefillCore() = default;

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
  (void)runner_->Abort(e.seq);
  Finish(e, absl::CancelledError("the Prefill call was cancelled"));
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
  for (size_t i = 0; i < r.batch_ids.size(); ++i) {
    Entry* e = entry_of(r.batch_ids[i]);
    if (!e->first_step.has_value()) e->first_step = step_start;
    e->num_iter = r.batch_num_iter[i];
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

void PrefillCore::StartHandoff(Entry& e) {
  const int64_t length = static_cast<int64_t>(e.task.prompt.size());
  auto job = std::make_shared<HandoffJob>();
  // Where each rank's share of the sequence lives (bookkeeping, read between steps): the
  // sender reads every rank's memory in place.
  for (int r = 0; r < ranks_->size(); ++r) {
    absl::StatusOr<std::vector<engine::MemorySegment>> described =
        ranks_->rank(r).DescribeSequence(e.seq);
    absl::Status s = described.status();
    if (s.ok()) s = layout_.Check(*described, length);
    if (!s.ok()) {
      runner_->Release({e.seq, FinishReason::kPrefillDone, scheduler::Residence::kDevice, {}});
      Finish(e, s);
      return;
    }
    job->local.push_back(*std::move(described));
  }
  job->ticket = e.task.ticket;
  job->specs = layout_.Segments(length);
  job->completion.set_request_id(e.task.request_id);
  job->completion.set_transfer_id(e.task.ticket.transfer_id);
  job->completion.set_first_token(e.first_token);
  job->completion.set_first_logprob(e.first_logprob);
  job->completion.set_prompt_tokens(static_cast<uint32_t>(length));
  job->completion.set_prefill_tp_size(static_cast<uint32_t>(ranks_->size()));
  job->completion.set_layout_hash(layout_.TransferHash(ranks_->size(), e.task.ticket.decode_tp));
  job->deadline = std::min(e.task.ticket.lease_deadline, e.task.call_deadline);
  job->cancelled = e.cancelled;
  job->faults = e.task.faults;
  e.phase = Entry::Phase::kHandingOff;
  send_(std::move(job),
        [this, serial = e.serial](HandoffResult r) { OnHandoffDone(serial, std::move(r)); });
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
