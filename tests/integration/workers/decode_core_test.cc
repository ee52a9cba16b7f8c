// DecodeCore's fail-closed bookkeeping against a scripted TransferEngine: a fence that cannot
// prove the sender stopped quarantines the reservation's pages and slot (kept out of the pool
// and reported), a completion that arrives meanwhile is discarded, and only a later successful
// fence returns the memory. Real UCX cannot produce a failed fence on tcp or shared memory
// (the receiver places the bytes itself there), so this is where those paths are exercised.
#include "decode_worker/decode_core.h"

#include <deque>
#include <map>

#include "common/metrics/metrics.h"
#include "decode_worker/common/model_loader.h"
#include "gtest/gtest.h"

namespace gka::decode_worker {
namespace {

constexpr char kModelDir[] = "tests/data/authors_tiny/hybrid_fp32";

class FakeRegion final : public transfer::MemoryRegion {
 public:
  FakeRegion(void* addr, uint64_t length, int* live) : addr_(addr), live_(live) {
    remote_ = {reinterpret_cast<uint64_t>(addr), length, "key"};
    ++*live_;
  }
  ~FakeRegion() override { --*live_; }
  void* addr() const override { return addr_; }
  uint64_t length() const override { return remote_.length; }
  transfer::MemoryKind kind() const override { return transfer::MemoryKind::kHost; }
  const transfer::RemoteRegion& remote() const override { return remote_; }

 private:
  void* addr_;
  int* live_;
  transfer::RemoteRegion remote_;
};

// Receiver side only. Fence answers from `fence_results` (OK once it is empty).
class FakeTransferEngine final : public transfer::TransferEngine {
 public:
  const std::string& WorkerAddress() const override { return address_; }
  absl::StatusOr<std::unique_ptr<transfer::MemoryRegion>> RegisterMemory(
      void* addr, uint64_t length, transfer::MemoryKind) override {
    return std::make_unique<FakeRegion>(addr, length, &live_regions);
  }
  absl::StatusOr<std::unique_ptr<transfer::OutgoingTransfer>> StartTransfer(
      const transfer::TransferTarget&, uint64_t, absl::Time) override {
    return absl::UnimplementedError("receiver only");
  }
  absl::Status Expect(transfer::ExpectedTransfer expected,
                      transfer::CompletionCallback on_complete) override {
    expected_[expected.transfer_id] = std::move(on_complete);
    return absl::OkStatus();
  }
  absl::Status Fence(uint64_t transfer_id, absl::Duration) override {
    ++fences;
    absl::Status s;
    if (!fence_results.empty()) {
      s = fence_results.front();
      fence_results.pop_front();
    }
    if (s.ok()) Complete(transfer_id, absl::CancelledError("fenced"));
    return s;
  }
  // Delivers the transfer's one callback (as the progress thread would).
  void Complete(uint64_t transfer_id, absl::StatusOr<transfer::TransferCompletion> result) {
    auto it = expected_.find(transfer_id);
    if (it == expected_.end()) return;
    auto cb = std::move(it->second);
    expected_.erase(it);
    cb(std::move(result));
  }

  int live_regions = 0;
  int fences = 0;
  std::deque<absl::Status> fence_results;

 private:
  std::string address_ = "fake-address";
  std::map<uint64_t, transfer::CompletionCallback> expected_;
};

class DecodeCoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = worker_common::LoadModel({.model_dir = kModelDir, .num_slots = 2, .max_seq_len = 256});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    auto metrics = DecodeMetrics::Create(registry_, "decode-t", {});
    ASSERT_TRUE(metrics.ok());
    metrics_ = *std::move(metrics);
    DecodeCoreOptions o;
    o.worker_id = "decode-t";
    o.quarantine_retry = absl::Milliseconds(1);
    o.total_pages = model_.total_pages;
    o.total_slots = model_.total_slots;
    auto core = DecodeCore::Create(o, model_.ranks.get(), {&transfer_}, &engine_queue_,
                                   &fence_queue_, metrics_.get());
    ASSERT_TRUE(core.ok()) << core.status();
    core_ = *std::move(core);
  }

  // Runs what the fencer and engine threads would: fences, then their replies.
  void Drain() {
    for (int i = 0; i < 4; ++i) {
      for (auto& task : fence_queue_.Wait(absl::Now())) task();
      for (auto& task : engine_queue_.Wait(absl::Now())) task();
    }
  }

  wpb::TransferTicket Reserve(const std::string& id, uint32_t prompt, uint32_t lease_ms) {
    wpb::ReserveRequest r;
    r.set_request_id(id);
    r.set_prompt_tokens(prompt);
    r.set_max_new_tokens(4);
    r.set_lease_ms(lease_ms);
    wpb::TransferTicket ticket;
    core_->Reserve(r, [&](absl::StatusOr<wpb::TransferTicket> t) {
      ASSERT_TRUE(t.ok()) << t.status();
      ticket = *t;
    });
    return ticket;
  }

  worker_common::LoadedModel model_;
  metrics::Registry registry_;
  std::unique_ptr<DecodeMetrics> metrics_;
  FakeTransferEngine transfer_;
  worker_common::TaskQueue engine_queue_, fence_queue_;
  std::unique_ptr<DecodeCore> core_;
};

TEST_F(DecodeCoreTest, UnprovenFenceQuarantinesUntilALaterFenceSucceeds) {
  const wpb::TransferTicket ticket = Reserve("q", 40, 1);
  const int32_t pages = engine::PagesFor(40, 16);
  EXPECT_GT(transfer_.live_regions, 0);
  EXPECT_EQ(ticket.ranks(0).segments_size(),
            static_cast<int>(worker_common::HandoffLayout::Of(model_.lead()).Segments(40).size()));
  transfer_.fence_results = {absl::DeadlineExceededError("sender silent"),
                             absl::UnavailableError("sender gone")};
  absl::SleepFor(absl::Milliseconds(5));
  core_->Tick();  // the lease expired: registrations revoked, fence posted
  EXPECT_EQ(transfer_.live_regions, 0);
  Drain();
  DecodeStats s = core_->Stats();
  EXPECT_EQ(s.reservations_expired, 1);
  EXPECT_EQ(s.quarantined_pages, pages);
  EXPECT_EQ(s.quarantined_slots, 1);
  EXPECT_EQ(s.free_pages, s.total_pages - pages);  // held back, not reused
  EXPECT_EQ(s.free_slots, s.total_slots - 1);

  // The late completion of the quarantined transfer is discarded, the memory stays held.
  transfer::TransferCompletion late;
  late.transfer_id = ticket.transfer_id();
  transfer_.Complete(ticket.transfer_id(), late);
  Drain();
  EXPECT_EQ(core_->Stats().completions_discarded, 1);
  EXPECT_EQ(core_->Stats().quarantined_pages, pages);

  // Retried fences: the second still fails, the third proves the sender stopped.
  absl::SleepFor(absl::Milliseconds(2));
  core_->Tick();
  Drain();
  EXPECT_EQ(core_->Stats().quarantined_pages, pages);
  absl::SleepFor(absl::Milliseconds(2));
  core_->Tick();
  Drain();
  s = core_->Stats();
  EXPECT_EQ(transfer_.fences, 3);
  EXPECT_EQ(s.quarantined_pages, 0);
  EXPECT_EQ(s.free_pages, s.total_pages);
  EXPECT_EQ(s.free_slots, s.total_slots);
}

TEST_F(DecodeCoreTest, ReleaseReportsQuarantineAndUnknownIdsAreNotReleased) {
  const wpb::TransferTicket ticket = Reserve("r", 10, 10000);
  transfer_.fence_results = {absl::AbortedError("force-closed with writes in flight")};
  std::optional<wpb::ReleaseResponse> reply;
  wpb::ReleaseRequest release;
  release.set_request_id("r");
  release.set_transfer_id(ticket.transfer_id());
  core_->Release(release, [&](wpb::ReleaseResponse r) { reply = r; });
  EXPECT_FALSE(reply.has_value());  // answered once the fence has spoken
  Drain();
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(reply->released());
  EXPECT_TRUE(reply->quarantined());
  EXPECT_EQ(core_->Stats().quarantined_slots, 1);
  // Released (and quarantined) reservations are gone for callers.
  std::optional<wpb::ReleaseResponse> again;
  core_->Release(release, [&](wpb::ReleaseResponse r) { again = r; });
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(again->released());
  EXPECT_FALSE(core_->Abort("r"));
  absl::SleepFor(absl::Milliseconds(2));
  core_->Tick();
  Drain();
  EXPECT_EQ(core_->Stats().quarantined_slots, 0);
  EXPECT_EQ(core_->Stats().free_slots, core_->Stats().total_slots);
}

TEST_F(DecodeCoreTest, ACompletionOfAnotherGenerationIsRefused) {
  const wpb::TransferTicket ticket = Reserve("g", 12, 10000);
  wpb::HandoffCompletion payload;
  payload.set_request_id("g");
  payload.set_transfer_id(ticket.transfer_id() + 1);
  payload.set_first_token(3);
  payload.set_prompt_tokens(12);
  transfer::TransferCompletion c;
  c.transfer_id = ticket.transfer_id();
  c.payload = worker_common::EncodeCompletion(payload);
  transfer_.Complete(ticket.transfer_id(), c);
  Drain();
  const DecodeStats s = core_->Stats();
  EXPECT_EQ(s.completions_discarded, 1);
  EXPECT_EQ(s.reservations, 0);
  EXPECT_EQ(s.free_pages, s.total_pages);
}

// The completion names the sender's TP size and the hash of both layouts: bytes cut for
// another layout pair never run, even when their checksum verified.
TEST_F(DecodeCoreTest, ACompletionCutForAnotherLayoutPairIsRefused) {
  const worker_common::HandoffLayout layout = worker_common::HandoffLayout::Of(model_.lead());
  auto complete = [&](const std::string& id, uint64_t layout_hash) {
    const wpb::TransferTicket ticket = Reserve(id, 12, 10000);
    EXPECT_EQ(ticket.compat_hash(), layout.TicketHash(1));
    wpb::HandoffCompletion payload;
    payload.set_request_id(id);
    payload.set_transfer_id(ticket.transfer_id());
    payload.set_first_token(3);
    payload.set_prompt_tokens(12);
    payload.set_prefill_tp_size(2);
    payload.set_layout_hash(layout_hash);
    transfer::TransferCompletion c;
    c.transfer_id = ticket.transfer_id();
    c.verified = true;
    c.payload = worker_common::EncodeCompletion(payload);
    transfer_.Complete(ticket.transfer_id(), c);
    Drain();
  };
  complete("wrong", layout.TransferHash(2, 2));  // a sender that thought we run TP=2
  EXPECT_EQ(core_->Stats().reservations, 0);
  EXPECT_EQ(core_->Stats().free_slots, core_->Stats().total_slots);
  complete("right", layout.TransferHash(2, 1));
  EXPECT_EQ(core_->Stats().reservations, 1);  // transferred, waiting for StartDecode
  EXPECT_NE(layout.TransferHash(2, 1), layout.TransferHash(1, 1));
  EXPECT_NE(layout.TicketHash(1), layout.TicketHash(2));
  EXPECT_NE(layout.TicketHash(1), layout.compat_hash());
}

TEST_F(DecodeCoreTest, ReservationsAreBoundedByTheSlotsAndTheContext) {
  Reserve("a", 10, 10000);
  Reserve("b", 10, 10000);
  wpb::ReserveRequest r;
  r.set_request_id("c");
  r.set_prompt_tokens(10);
  absl::StatusCode code = absl::StatusCode::kOk;
  core_->Reserve(r, [&](absl::StatusOr<wpb::TransferTicket> t) { code = t.status().code(); });
  EXPECT_EQ(code, absl::StatusCode::kResourceExhausted);
  r.set_request_id("a");
  core_->Reserve(r, [&](absl::StatusOr<wpb::TransferTicket> t) { code = t.status().code(); });
  EXPECT_EQ(code, absl::StatusCode::kAlreadyExists);
  r.set_request_id("long");
  r.set_prompt_tokens(250);
  r.set_max_new_tokens(10);
  core_->Reserve(r, [&](absl::StatusOr<wpb::TransferTicket> t) { code = t.status().code(); });
  EXPECT_EQ(code, absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gka::decode_worker
