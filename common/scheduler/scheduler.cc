#include "common/scheduler/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/base/status.h"

namespace gka::scheduler {

namespace {

absl::Status CheckAtLeast(absl::string_view field, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be at least ", min, ", got ", value));
}

}  // namespace

// One Schedule() call. Works on the scheduler's live sets directly (state changes commit as
// they are planned) and on a local copy of the free memory, which the plan draws down.
class Scheduler::Planner {
 public:
  explicit Planner(Scheduler& s)
      : s_(s),
        page_size_(s.page_size_),
        avail_pages_(std::max(0, s.memory_->free_pages())),
        avail_slots_(std::max(0, s.memory_->free_slots())),
        budget_(s.options_.max_batch_tokens),
        num_resident_(static_cast<int32_t>(s.resident_.size())) {}

  StepPlan Run();

 private:
  struct Item {
    Sequence* seq;
    int32_t num_tokens;
    int32_t new_pages;
    bool removed = false;
  };

  // Candidates in planning order: phase 0 (decode steps, with decode_first), then phase 1 by
  // rank. The waiting queue can be long, so it is walked lazily instead of copied.
  void Visit(Sequence& seq);
  // Memory and budget `seq` needs to be fed `n` tokens this step (fixed part: its slot, and its
  // pages when it is swapped back in).
  bool NeedsSlot(const Sequence& seq) const {
    return seq.state != SequenceState::kPrefilling && seq.state != SequenceState::kDecoding;
  }
  int32_t FixedPages(const Sequence& seq) const {
    return seq.state == SequenceState::kPreempted ? PagesFor(seq.num_computed, page_size_) : 0;
  }
  int32_t NewPages(const Sequence& seq, int32_t n) const {
    return PagesFor(seq.num_computed + n, page_size_) - PagesFor(seq.num_computed, page_size_);
  }
  bool Fits(const Sequence& seq, int32_t n) const;
  // Most tokens (≤ n) of `seq` that fit in the memory left now; 0 if none.
  int32_t TokensThatFit(const Sequence& seq, int32_t n) const;
  // Preempts resident sequences ranked below `seq`, lowest first, until `n` tokens fit. Does
  // nothing unless all of them together would make at least one token fit: preempting for
  // nothing only moves state around.
  void MakeRoom(const Sequence& seq, int32_t n);
  void Preempt(Sequence& victim);
  bool BlockedBy(const RankKey& key) const { return block_.has_value() && *block_ < key; }
  void Block(const RankKey& key) {
    if (!block_.has_value() || key < *block_) block_ = key;
  }

  Scheduler& s_;
  const int32_t page_size_;
  int64_t avail_pages_;
  int64_t avail_slots_;
  int32_t budget_;
  int32_t num_resident_;
  int32_t num_items_ = 0;
  // The best-ranked sequence that was preempted or could not get memory in this step: nothing
  // ranked below it may take memory now, or it would be overtaken by what it outranks.
  std::optional<RankKey> block_;
  StepPlan plan_;
  std::vector<Item> items_;
  absl::flat_hash_map<SequenceId, size_t> item_index_;
  absl::flat_hash_set<SequenceId> preempted_now_;
};

StepPlan Scheduler::Planner::Run() {
  const bool decode_first = s_.options_.decode_first;
  // Snapshot the resident and preempted sets: planning moves sequences between them.
  std::vector<Sequence*> phase0, phase1;
  for (const RankKey& k : s_.resident_) {
    Sequence& seq = s_.sequences_.at(k.id);
    (decode_first && seq.state == SequenceState::kDecoding ? phase0 : phase1).push_back(&seq);
  }
  for (const RankKey& k : s_.preempted_) phase1.push_back(&s_.sequences_.at(k.id));
  auto by_rank = [](const Sequence* a, const Sequence* b) { return a->key() < b->key(); };
  std::sort(phase1.begin(), phase1.end(), by_rank);  // phase0 is already in rank order

  for (Sequence* seq : phase0) Visit(*seq);
  // Merge phase1 with the waiting queue (already ordered by rank). Admission erases the
  // current waiting entry, so step the iterator before visiting.
  auto w = s_.waiting_.begin();
  size_t i = 0;
  while (budget_ > 0) {
    Sequence* next;
    if (i < phase1.size() && (w == s_.waiting_.end() || phase1[i]->key() < *w)) {
      next = phase1[i++];
    } else if (w != s_.waiting_.end()) {
      if (BlockedBy(*w)) {
        // Admission always takes memory, and the rest of the queue ranks lower still.
        w = s_.waiting_.end();
        continue;
      }
      next = &s_.sequences_.at((w++)->id);
    } else {
      break;
    }
    Visit(*next);
  }

  for (const Item& item : items_) {
    if (item.removed) continue;
    const Sequence& seq = *item.seq;
    const bool prefill = seq.num_computed < seq.prompt_len();
    plan_.batch.push_back(BatchItem{
        .id = seq.request.id,
        .tokens = absl::MakeConstSpan(seq.tokens).subspan(seq.num_computed, item.num_tokens),
        .position = seq.num_computed,
        .num_iter = prefill ? seq.request.prefill_num_iter : seq.request.decode_num_iter,
        .prefill = prefill,
        .needs_logits = seq.num_computed + item.num_tokens >= seq.prompt_len(),
    });
  }
  // What the plan promises (see the header): never more than was free plus what it freed.
  GKA_CHECK(avail_pages_ >= 0 && avail_slots_ >= 0 && budget_ >= 0)
      << "pages " << avail_pages_ << " slots " << avail_slots_ << " budget " << budget_;
  return std::move(plan_);
}

void Scheduler::Planner::Visit(Sequence& seq) {
  if (preempted_now_.contains(seq.request.id)) return;  // never swap out and in in one step
  if (budget_ == 0) return;
  // Residents beyond the cap exist only through AddPrefilled; they wait. Anyone else must first
  // get under the resident cap, which leaves room for its item too.
  if (!NeedsSlot(seq) && num_items_ >= s_.options_.max_running_seqs) return;
  int32_t n = 1;
  if (seq.num_computed < seq.prompt_len()) {
    n = std::min<int64_t>(
        {seq.prompt_len() - seq.num_computed, s_.options_.prefill_chunk_size, budget_});
  }
  if (BlockedBy(seq.key())) {
    // Below a sequence that is out or waiting for memory: only the room left in pages it
    // already holds.
    if (NeedsSlot(seq)) return;
    n = std::min<int64_t>(
        n, int64_t{PagesFor(seq.num_computed, page_size_)} * page_size_ - seq.num_computed);
    if (n == 0) return;
  } else {
    if (!Fits(seq, n)) MakeRoom(seq, n);
    n = TokensThatFit(seq, n);
  }
  if (n == 0) {
    if (seq.state == SequenceState::kDecoding) {
      // Preempting what ranks below it cannot make room: step aside for those above it
      // rather than hold memory it cannot grow.
      Preempt(seq);
    } else {
      Block(seq.key());
    }
    return;
  }
  if (NeedsSlot(seq)) {
    --avail_slots_;
    ++num_resident_;
  }
  if (seq.state == SequenceState::kWaiting) {
    plan_.admit.push_back(seq.request.id);
    s_.MoveTo(seq, SequenceState::kPrefilling);
  } else if (seq.state == SequenceState::kPreempted) {
    plan_.resume.push_back(seq.request.id);
    avail_pages_ -= FixedPages(seq);
    s_.MoveTo(seq, seq.num_computed < seq.prompt_len() ? SequenceState::kPrefilling
                                                       : SequenceState::kDecoding);
  }
  const int32_t new_pages = NewPages(seq, n);
  avail_pages_ -= new_pages;
  budget_ -= n;
  ++num_items_;
  item_index_[seq.request.id] = items_.size();
  items_.push_back(Item{.seq = &seq, .num_tokens = n, .new_pages = new_pages});
}

bool Scheduler::Planner::Fits(const Sequence& seq, int32_t n) const {
  if (NeedsSlot(seq) && (avail_slots_ < 1 || num_resident_ >= s_.options_.max_running_seqs)) {
    return false;
  }
  return FixedPages(seq) + NewPages(seq, n) <= avail_pages_;
}

int32_t Scheduler::Planner::TokensThatFit(const Sequence& seq, int32_t n) const {
  if (Fits(seq, n)) return n;
  if (!Fits(seq, 1)) return 0;
  // Fill the pages it will hold, up to the last one that is free.
  const int64_t pages = PagesFor(seq.num_computed, page_size_) + avail_pages_ - FixedPages(seq);
  return static_cast<int32_t>(std::min<int64_t>(n, pages * page_size_ - seq.num_computed));
}

void Scheduler::Planner::MakeRoom(const Sequence& seq, int32_t n) {
  std::vector<Sequence*> victims;  // lowest ranked first
  int64_t pages = avail_pages_, slots = avail_slots_, resident = num_resident_;
  const RankKey key = seq.key();
  for (auto it = s_.resident_.rbegin(); it != s_.resident_.rend() && key < *it; ++it) {
    Sequence& v = s_.sequences_.at(it->id);
    victims.push_back(&v);
    pages += PagesFor(v.num_computed, page_size_);
    if (auto idx = item_index_.find(v.request.id); idx != item_index_.end()) {
      pages += items_[idx->second].new_pages;
    }
    ++slots;
    --resident;
  }
  const bool slot_ok = !NeedsSlot(seq) || (slots >= 1 && resident < s_.options_.max_running_seqs);
  if (!slot_ok || FixedPages(seq) + NewPages(seq, 1) > pages) return;
  for (Sequence* v : victims) {
    if (Fits(seq, n)) break;
    Preempt(*v);
  }
}

void Scheduler::Planner::Preempt(Sequence& victim) {
  const SequenceId id = victim.request.id;
  GKA_CHECK(victim.state == SequenceState::kPrefilling || victim.state == SequenceState::kDecoding)
      << "preempting sequence " << id << " in state " << SequenceStateName(victim.state);
  // Victims rank below the sequence that needs memory; everything admitted or resumed so far
  // in this step ranks above it, so a victim was resident before the step.
  GKA_CHECK(std::find(plan_.admit.begin(), plan_.admit.end(), id) == plan_.admit.end() &&
            std::find(plan_.resume.begin(), plan_.resume.end(), id) == plan_.resume.end())
      << "sequence " << id << " preempted in the step that brought it in";
  if (auto idx = item_index_.find(id); idx != item_index_.end()) {
    Item& item = items_[idx->second];
    item.removed = true;
    avail_pages_ += item.new_pages;
    budget_ += item.num_tokens;
    --num_items_;
    item_index_.erase(idx);
  }
  avail_pages_ += PagesFor(victim.num_computed, page_size_);
  ++avail_slots_;
  --num_resident_;
  plan_.preempt.push_back(id);
  preempted_now_.insert(id);
  Block(victim.key());
  s_.MoveTo(victim, SequenceState::kPreempted);
}

// --- Scheduler ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options,
                                                             const MemoryModel* memory) {
  if (memory == nullptr) return absl::InvalidArgumentError("memory model is null");
  GKA_RETURN_IF_ERROR(CheckAtLeast("max_batch_tokens", options.max_batch_tokens, 1));
  GKA_RETURN_IF_ERROR(CheckAtLeast("max_running_seqs", options.max_running_seqs, 1));
  GKA_RETURN_IF_ERROR(CheckAtLeast("prefill_chunk_size", options.prefill_chunk_size, 1));
  GKA_RETURN_IF_ERROR(CheckAtLeast("max_model_len", options.max_model_len, 2));
  GKA_RETURN_IF_ERROR(CheckAtLeast("memory page_size", memory->page_size(), 1));
  if (options.max_running_seqs > options.max_batch_tokens) {
    // Every running sequence must be able to decode in every step.
    return absl::InvalidArgumentError(absl::StrCat("max_running_seqs (", options.max_running_seqs,
                                                   ") must not exceed max_batch_tokens (",
                                                   options.max_batch_tokens, ")"));
  }
  for (int32_t id : options.eos_token_ids) {
    GKA_RETURN_IF_ERROR(CheckAtLeast("eos_token_ids[]", id, 0));
  }
  return std::unique_ptr<Scheduler>(new Scheduler(options, memory));
}

Scheduler::Scheduler(const SchedulerOptions& options, const MemoryModel* memory)
    : options_(options), memory_(memory), page_size_(memory->page_size()) {}

absl::Status Scheduler::Validate(const Request& r) const {
  if (!r.id.valid()) {
    return absl::InvalidArgumentError(absl::StrCat("id must be >= 0, got ", r.id.value()));
  }
  if (sequences_.contains(r.id)) {
    return absl::AlreadyExistsError(absl::StrCat("id ", r.id.value(), " is already live"));
  }
  if (r.prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt[", i, "] is a negative token id (", r.prompt[i], ")"));
    }
  }
  GKA_RETURN_IF_ERROR(CheckAtLeast("max_new_tokens", r.max_new_tokens, 1));
  const int64_t prompt_len = static_cast<int64_t>(r.prompt.size());
  if (prompt_len >= options_.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt has ", prompt_len, " tokens; max_model_len ", options_.max_model_len,
                     " leaves room for at most ", options_.max_model_len - 1));
  }
  if (prompt_len + r.max_new_tokens > options_.max_model_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens ", r.max_new_tokens, " with a prompt of ", prompt_len,
                     " tokens exceeds max_model_len ", options_.max_model_len, "; at most ",
                     options_.max_model_len - prompt_len));
  }
  GKA_RETURN_IF_ERROR(CheckAtLeast("prefill_num_iter", r.prefill_num_iter, -1));
  GKA_RETURN_IF_ERROR(CheckAtLeast("decode_num_iter", r.decode_num_iter, -1));
  for (int32_t id : r.stop_token_ids) {
    GKA_RETURN_IF_ERROR(CheckAtLeast("stop_token_ids[]", id, 0));
  }
  return absl::OkStatus();
}

Scheduler::Sequence& Scheduler::Insert(const Request& request) {
  Sequence& seq = sequences_[request.id];
  seq.request = request;
  seq.tokens = request.prompt;
  seq.arrival = next_arrival_++;
  return seq;
}

absl::Status Scheduler::Add(const Request& request) {
  GKA_RETURN_IF_ERROR(Validate(request));
  Sequence& seq = Insert(request);
  seq.state = SequenceState::kWaiting;
  waiting_.insert(seq.key());
  return absl::OkStatus();
}

absl::StatusOr<std::optional<FinishReason>> Scheduler::AddPrefilled(const Request& request,
                                                                    int32_t first_token) {
  if (options_.prefill_only) {
    return absl::FailedPreconditionError(
        "AddPrefilled on a prefill-only scheduler: prefilled sequences decode elsewhere");
  }
  GKA_RETURN_IF_ERROR(Validate(request));
  GKA_RETURN_IF_ERROR(CheckAtLeast("first_token", first_token, 0));
  Sequence& seq = Insert(request);
  seq.tokens.push_back(first_token);
  seq.num_computed = seq.prompt_len();
  seq.state = SequenceState::kDecoding;
  resident_.insert(seq.key());
  std::optional<FinishReason> reason = StopReason(seq, first_token);
  if (reason.has_value()) Finish(seq, *reason);
  return reason;
}

StepPlan Scheduler::Schedule() {
  GKA_CHECK(!in_flight_) << "Schedule() while the previous step awaits OnStepComplete";
  StepPlan plan = Planner(*this).Run();
  in_flight_ = !plan.batch.empty();
  in_flight_batch_.clear();
  for (const BatchItem& item : plan.batch) {
    in_flight_batch_.push_back(InFlightItem{
        .id = item.id,
        .arrival = sequences_.at(item.id).arrival,
        .num_tokens = static_cast<int32_t>(item.tokens.size()),
        .needs_logits = item.needs_logits,
    });
  }
  return plan;
}

absl::StatusOr<std::vector<FinishedSequence>> Scheduler::OnStepComplete(
    absl::Span<const StepOutput> outputs) {
  if (!in_flight_) {
    return absl::FailedPreconditionError("OnStepComplete without a step in flight");
  }
  // Validate everything before changing anything.
  absl::flat_hash_map<SequenceId, size_t> item_of;
  for (size_t i = 0; i < in_flight_batch_.size(); ++i) item_of[in_flight_batch_[i].id] = i;
  absl::flat_hash_map<SequenceId, std::optional<int32_t>> token_of;
  for (const StepOutput& out : outputs) {
    auto it = item_of.find(out.id);
    if (it == item_of.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output for sequence ", out.id.value(), ", which is not in the step"));
    }
    if (!token_of.emplace(out.id, out.token).second) {
      return absl::InvalidArgumentError(absl::StrCat("two outputs for sequence ", out.id.value()));
    }
    if (!out.token.has_value()) continue;
    if (!in_flight_batch_[it->second].needs_logits) {
      return absl::InvalidArgumentError(absl::StrCat("token for sequence ", out.id.value(),
                                                     ", whose item is a non-final prefill chunk"));
    }
    if (*out.token < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative token ", *out.token, " for sequence ", out.id.value()));
    }
  }

  std::vector<FinishedSequence> finished;
  for (const InFlightItem& item : in_flight_batch_) {
    auto it = sequences_.find(item.id);
    if (it == sequences_.end() || it->second.arrival != item.arrival) continue;  // aborted
    Sequence& seq = it->second;
    seq.num_computed += item.num_tokens;
    if (!item.needs_logits) continue;
    auto out = token_of.find(item.id);
    if (out == token_of.end() || !out->second.has_value()) {
      finished.push_back(Finish(seq, FinishReason::kError));
      continue;
    }
    const int32_t token = *out->second;
    seq.tokens.push_back(token);
    if (seq.state == SequenceState::kPrefilling) MoveTo(seq, SequenceState::kDecoding);
    std::optional<FinishReason> reason = StopReason(seq, token);
    if (!reason.has_value() && options_.prefill_only) reason = FinishReason::kPrefillDone;
    if (reason.has_value()) finished.push_back(Finish(seq, *reason));
  }
  in_flight_ = false;
  in_flight_batch_.clear();
  return finished;
}

void Scheduler::CancelStep() {
  in_flight_ = false;
  in_flight_batch_.clear();
}

absl::StatusOr<FinishedSequence> Scheduler::Abort(SequenceId id, FinishReason reason) {
  if (reason != FinishReason::kAborted && reason != FinishReason::kError) {
    return absl::InvalidArgumentError(
        absl::StrCat("Abort reason must be aborted or error, got ", FinishReasonName(reason)));
  }
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("no live sequence ", id.value()));
  }
  return Finish(it->second, reason);
}

absl::Status Scheduler::SetDecodeNumIter(SequenceId id, int32_t num_iter) {
  GKA_RETURN_IF_ERROR(CheckAtLeast("decode num_iter", num_iter, -1));
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("no live sequence ", id.value()));
  }
  it->second.request.decode_num_iter = num_iter;
  return absl::OkStatus();
}

absl::StatusOr<SequenceInfo> Scheduler::Get(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("no live sequence ", id.value()));
  }
  const Sequence& seq = it->second;
  const bool resident =
      seq.state == SequenceState::kPrefilling || seq.state == SequenceState::kDecoding;
  return SequenceInfo{
      .id = id,
      .state = seq.state,
      .priority = seq.request.priority,
      .arrival = seq.arrival,
      .prompt_len = seq.prompt_len(),
      .num_computed = seq.num_computed,
      .pages_held = resident ? PagesFor(seq.num_computed, page_size_) : 0,
      .prefill_num_iter = seq.request.prefill_num_iter,
      .decode_num_iter = seq.request.decode_num_iter,
      .max_new_tokens = seq.request.max_new_tokens,
      .generated = absl::MakeConstSpan(seq.tokens).subspan(seq.prompt_len()),
  };
}

int64_t Scheduler::queued_prompt_tokens() const {
  int64_t total = 0;
  for (const auto& [id, seq] : sequences_) {
    total += std::max<int64_t>(0, seq.prompt_len() - seq.num_computed);
  }
  return total;
}

int64_t Scheduler::pages_held() const {
  int64_t total = 0;
  for (const RankKey& k : resident_) {
    total += PagesFor(sequences_.at(k.id).num_computed, page_size_);
  }
  return total;
}

std::set<Scheduler::RankKey>* Scheduler::SetOf(SequenceState state) {
  switch (state) {
    case SequenceState::kWaiting:
      return &waiting_;
    case SequenceState::kPrefilling:
    case SequenceState::kDecoding:
      return &resident_;
    case SequenceState::kPreempted:
      return &preempted_;
    case SequenceState::kFinished:
      return nullptr;
  }
  return nullptr;
}

void Scheduler::MoveTo(Sequence& seq, SequenceState state) {
  std::set<RankKey>* from = SetOf(seq.state);
  std::set<RankKey>* to = SetOf(state);
  if (from != to) {
    if (from != nullptr) GKA_CHECK(from->erase(seq.key()) == 1) << "sequence " << seq.request.id;
    if (to != nullptr) to->insert(seq.key());
  }
  seq.state = state;
}

std::optional<FinishReason> Scheduler::StopReason(const Sequence& seq, int32_t token) const {
  const auto& stop = seq.request.stop_token_ids;
  const auto& eos = options_.eos_token_ids;
  if (std::find(stop.begin(), stop.end(), token) != stop.end() ||
      (!seq.request.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end())) {
    return FinishReason::kStopToken;
  }
  if (seq.num_generated() >= seq.request.max_new_tokens) return FinishReason::kMaxTokens;
  return std::nullopt;
}

FinishedSequence Scheduler::Finish(Sequence& seq, FinishReason reason) {
  Residence residence = Residence::kNone;
  if (seq.state == SequenceState::kPrefilling || seq.state == SequenceState::kDecoding) {
    residence = Residence::kDevice;
  } else if (seq.state == SequenceState::kPreempted) {
    residence = Residence::kHost;
  }
  const SequenceId id = seq.request.id;
  FinishedSequence done{
      .id = id,
      .reason = reason,
      .residence = residence,
      .generated = std::vector<int32_t>(seq.tokens.begin() + seq.prompt_len(), seq.tokens.end()),
  };
  MoveTo(seq, SequenceState::kFinished);
  sequences_.erase(id);
  return done;
}

}  // namespace gka::scheduler
