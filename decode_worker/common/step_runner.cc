#include "decode_worker/common/step_runner.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "common/base/check.h"
#include "common/base/logging.h"
#include "common/base/status.h"

namespace gka::worker_common {

using scheduler::FinishedSequence;
using scheduler::FinishReason;
using scheduler::Residence;

StepRunner::Report StepRunner::Step(SamplingFn sampling) {
  Report r;
  const absl::Time start = absl::Now();
  scheduler::StepPlan plan = scheduler_->Schedule();
  // Sequences whose memory could not be moved: they leave the Forward and end with kError.
  absl::flat_hash_set<SequenceId> failed;
  auto fail = [&](SequenceId id, const absl::Status& s) {
    GKA_LOG(WARNING) << "sequence " << id << ": " << s;
    if (r.error.ok()) r.error = s;
    failed.insert(id);
  };
  for (SequenceId id : plan.preempt) {
    if (hooks_.before_release) hooks_.before_release(id);
    std::vector<engine::SequenceState> states(ranks_->size());
    absl::Status s = ranks_->RunOnAll([&](int rank, engine::Engine& e) {
      absl::StatusOr<engine::SequenceState> state = e.ExportSequence(id);
      (void)e.RemoveSequence(id);
      if (!state.ok()) return state.status();
      states[rank] = *std::move(state);
      return absl::OkStatus();
    });
    if (s.ok()) {
      host_[id] = std::move(states);
      ++r.preempted;
    } else {
      fail(id, s);
    }
  }
  for (SequenceId id : plan.resume) {
    auto it = host_.find(id);
    absl::Status s = it == host_.end() ? absl::InternalError("no host copy to resume")
                                       : ranks_->RunOnAll([&](int rank, engine::Engine& e) {
                                           return e.ImportSequence(id, it->second[rank]);
                                         });
    if (s.ok()) {
      host_.erase(it);
      ++r.resumed;
    } else {
      fail(id, s);
    }
  }
  for (SequenceId id : plan.admit) {
    absl::Status s = ranks_->RunOnAll([&](int, engine::Engine& e) { return e.AddSequence(id); });
    if (!s.ok()) fail(id, s);
  }

  if (hooks_.before_forward && !plan.batch.empty()) hooks_.before_forward(plan.batch);
  std::vector<engine::SequenceInput> inputs;
  std::vector<bool> needs_logits;
  for (const scheduler::BatchItem& item : plan.batch) {
    if (failed.contains(item.id)) continue;
    const int32_t num_iter = item.num_iter < 0 ? ranks_->lead().default_num_iter() : item.num_iter;
    inputs.push_back({.id = item.id,
                      .tokens = std::vector<int32_t>(item.tokens.begin(), item.tokens.end()),
                      .num_iter = num_iter});
    needs_logits.push_back(item.needs_logits);
    r.batch_ids.push_back(item.id);
    r.batch_num_iter.push_back(num_iter);
    r.batch_tokens += static_cast<int32_t>(item.tokens.size());
  }
  r.batch_size = static_cast<int32_t>(inputs.size());

  std::vector<scheduler::StepOutput> outputs;
  bool cancelled = false;
  if (!plan.batch.empty()) {
    if (!inputs.empty()) {
      // Sampling parameters first (the callback reads the caller's state, on this thread).
      std::vector<Sampling> samplings;
      samplings.reserve(inputs.size());
      std::vector<engine::Engine::SampleRequest> requests;
      for (const auto& in : inputs) {
        samplings.push_back(sampling(in.id));
        const Sampling& s = samplings.back();
        requests.push_back({.config = s.config, .step = s.step, .history = s.history});
      }
      // Every rank runs the Forward (their collectives meet inside); the logits are the same
      // on every rank (each rank's vocab slice, all-gathered), and rank 0 samples from its copy.
      absl::StatusOr<std::vector<engine::Engine::Sampled>> sampled =
          absl::UnknownError("not sampled");
      absl::Status forward = ranks_->RunOnAll([&](int rank, engine::Engine& e) -> absl::Status {
        GKA_ASSIGN_OR_RETURN(engine::StepResult result, e.Forward(inputs));
        if (rank == 0) sampled = e.Sample(result, requests, vocab_limit_);
        return absl::OkStatus();
      });
      if (!forward.ok()) {
        // The engine validates before it changes anything: the step did not happen.
        scheduler_->CancelStep();
        cancelled = true;
        for (const auto& in : inputs) fail(in.id, forward);
      } else {
        r.ran = true;
        if (!sampled.ok()) {
          // The Forward ran: complete the step without tokens; needs_logits items end kError.
          if (r.error.ok()) r.error = sampled.status();
          GKA_LOG(WARNING) << "sampling failed: " << sampled.status();
        }
        for (size_t i = 0; i < inputs.size(); ++i) {
          if (!needs_logits[i] || !sampled.ok()) continue;
          const engine::Engine::Sampled& s = (*sampled)[i];
          outputs.push_back({.id = inputs[i].id, .token = s.token});
          r.tokens.push_back({inputs[i].id, s.token, s.logprob, inputs[i].num_iter, s.top});
        }
      }
    }
    if (!cancelled) {
      absl::StatusOr<std::vector<FinishedSequence>> finished = scheduler_->OnStepComplete(outputs);
      GKA_CHECK(finished.ok()) << "OnStepComplete rejected our own outputs: " << finished.status();
      for (FinishedSequence& f : *finished) {
        if (f.reason != FinishReason::kPrefillDone) Release(f);
        r.finished.push_back(std::move(f));
      }
    }
  }
  for (SequenceId id : failed) {
    absl::StatusOr<FinishedSequence> f = Abort(id, FinishReason::kError);
    if (f.ok()) r.finished.push_back(*std::move(f));
  }
  r.elapsed = absl::Now() - start;
  return r;
}

absl::StatusOr<FinishedSequence> StepRunner::Abort(SequenceId id, FinishReason reason) {
  absl::StatusOr<FinishedSequence> f = scheduler_->Abort(id, reason);
  if (!f.ok()) return f.status();
  Release(*f);
  return f;
}

void StepRunner::Release(const FinishedSequence& f) {
  switch (f.residence) {
    case Residence::kDevice:
      if (hooks_.before_release) hooks_.before_release(f.id);
      (void)ranks_->RunOnAll([&](int, engine::Engine& e) { return e.RemoveSequence(f.id); });
      break;
    case Residence::kHost:
      host_.erase(f.id);
      // A sequence whose export failed was removed from the engine already.
      break;
    case Residence::kNone:
      break;
  }
}

}  // namespace gka::worker_common
