// HandoffStream against real UCX (two engines in this process) and a real engine's memory (the
// authors' tiny hybrid on the CPU): a hand-off streamed in pieces while the sequence is
// prefilled lands byte-exact and verifies, and StopNow stops it for good before it returns.
#include <cstring>
#include <future>
#include <numeric>

#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "decode_worker/common/handoff_sender.h"
#include "decode_worker/common/model_loader.h"
#include "gtest/gtest.h"

namespace gka::worker_common {
namespace {

constexpr char kModelDir[] = "tests/data/authors_tiny/hybrid_fp32";
constexpr int64_t kPrompt = 70;  // 5 pages of 16: the last one partial

class HandoffStreamTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto m = LoadModel({.model_dir = kModelDir, .num_slots = 2, .max_seq_len = 256});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    auto s = transfer::ucx::UcxTransferEngine::Create({.transports = GetParam(), .name = "sender"});
    ASSERT_TRUE(s.ok()) << s.status();
    sender_ = *std::move(s);
    auto r =
        transfer::ucx::UcxTransferEngine::Create({.transports = GetParam(), .name = "receiver"});
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = *std::move(r);
    const HandoffLayout layout = HandoffLayout::Of(model_.lead());
    specs_ = layout.Segments(kPrompt);
    // The receiver's reservation: every segment back to back in one registered buffer.
    uint64_t total = 0;
    for (const SegmentSpec& s : specs_) total += s.bytes;
    landing_.assign(total, 0);
    auto region = receiver_->RegisterMemory(landing_.data(), landing_.size());
    ASSERT_TRUE(region.ok()) << region.status();
    region_ = *std::move(region);
    RankDestination dest;
    dest.target = {receiver_->WorkerAddress(), {region_->remote()}};
    uint64_t at = 0;
    for (const SegmentSpec& s : specs_) {
      dest.destinations.push_back(
          {.region = 0, .remote_addr = region_->remote().remote_addr + at, .length = s.bytes});
      at += s.bytes;
    }
    job_.ticket = {.transfer_id = 41,
                   .decode_worker_id = "receiver",
                   .lease_deadline = absl::Now() + absl::Seconds(30),
                   .decode_tp = 1,
                   .ranks = {dest}};
    job_.specs = specs_;
    job_.prefill_tp = 1;
    job_.deadline = job_.ticket.lease_deadline;
    job_.cancelled = std::make_shared<std::atomic<bool>>(false);
    transfer::ExpectedTransfer expected{.transfer_id = 41,
                                        .lease_deadline = job_.ticket.lease_deadline};
    expected.verify_ranges = {{landing_.data(), landing_.size()}};
    ASSERT_TRUE(receiver_
                    ->Expect(std::move(expected),
                             [this](absl::StatusOr<transfer::TransferCompletion> c) {
                               received_.set_value(std::move(c));
                             })
                    .ok());
    ASSERT_TRUE(engine().AddSequence(seq_).ok());
    prompt_.resize(kPrompt);
    for (int64_t i = 0; i < kPrompt; ++i) prompt_[i] = static_cast<int32_t>((i * 37 + 5) % 1000);
  }

  void TearDown() override {
    region_.reset();
    sender_.reset();
    receiver_.reset();
  }

  engine::Engine& engine() { return model_.lead(); }
  // Prefills prompt tokens [from, to).
  void Prefill(int64_t from, int64_t to) {
    std::vector<int32_t> chunk(prompt_.begin() + from, prompt_.begin() + to);
    ASSERT_TRUE(engine().Forward({{.id = seq_, .tokens = chunk}}).ok());
  }
  std::vector<engine::MemorySegment> Memory() { return *engine().DescribeSequence(seq_); }
  HandoffStream::Options Inline() {
    // I/O on the calling thread: each update returns once its puts are posted.
    return {.transfer = sender_.get(), .executor = [](absl::AnyInvocable<void()> task) {
              task();
              return true;
            }};
  }

  LoadedModel model_;
  std::unique_ptr<transfer::ucx::UcxTransferEngine> sender_, receiver_;
  std::unique_ptr<transfer::MemoryRegion> region_;
  std::vector<SegmentSpec> specs_;
  std::vector<char> landing_;
  HandoffJob job_;
  std::promise<absl::StatusOr<transfer::TransferCompletion>> received_;
  const base::SequenceId seq_{7};
  std::vector<int32_t> prompt_;
};

// Pages after each chunk, layers in the last step, the rest at Complete: the receiver verifies
// the checksum over everything and holds exactly the engine's bytes.
TEST_P(HandoffStreamTest, StreamedPiecesLandExactlyAndVerify) {
  auto stream = HandoffStream::Create(Inline(), job_);
  ASSERT_TRUE(stream.ok()) << stream.status();
  HandoffStream& s = **stream;
  Prefill(0, 24);  // page 0 full
  ASSERT_TRUE(s.Describe(0, Memory()).ok());
  s.PagesFinal(1, {});
  const uint64_t after_first = s.bytes_put();
  EXPECT_GT(after_first, 0u);
  Prefill(24, 50);  // pages 1, 2 full
  ASSERT_TRUE(s.Describe(0, Memory()).ok());
  s.PagesFinal(3, {});
  EXPECT_GT(s.bytes_put(), after_first);
  const uint64_t before_last = s.bytes_put();
  // The last step: its layers become final one by one as the engine reports them.
  std::vector<int32_t> layers;
  engine().SetLayerObserver([&](int32_t layer) {
    if (layer == 0) ASSERT_TRUE(s.Describe(0, Memory()).ok());
    s.LayerFinal(0, layer, nullptr);
    layers.push_back(layer);
  });
  Prefill(50, kPrompt);
  engine().SetLayerObserver(nullptr);
  ASSERT_EQ(static_cast<int>(layers.size()), engine().dims().num_layers);
  uint64_t total = 0;
  for (const SegmentSpec& spec : specs_) total += spec.bytes;
  EXPECT_EQ(s.bytes_put(), total) << "every layer was final before Complete";
  EXPECT_GT(s.bytes_put(), before_last);
  std::promise<HandoffResult> done;
  wpb::HandoffCompletion completion;
  completion.set_transfer_id(41);
  ASSERT_TRUE(
      s.Complete({Memory()}, {}, completion, [&](HandoffResult r) { done.set_value(r); }).ok());
  HandoffResult r = done.get_future().get();
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.streamed_bytes, total);
  absl::StatusOr<transfer::TransferCompletion> c = received_.get_future().get();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->verified);
  const std::vector<engine::MemorySegment> memory = Memory();
  ASSERT_EQ(memory.size(), specs_.size());
  uint64_t at = 0;
  for (size_t k = 0; k < memory.size(); ++k) {
    EXPECT_EQ(std::memcmp(landing_.data() + at, memory[k].ptr, memory[k].bytes), 0)
        << "segment " << k;
    at += memory[k].bytes;
  }
}

// StopNow ends the transfers before it returns (the receiver learns it while the stream still
// exists), and the stream puts nothing more, whatever becomes final later.
TEST_P(HandoffStreamTest, StopNowStopsForGoodBeforeItReturns) {
  auto stream = HandoffStream::Create(Inline(), job_);
  ASSERT_TRUE(stream.ok()) << stream.status();
  HandoffStream& s = **stream;
  Prefill(0, 40);
  ASSERT_TRUE(s.Describe(0, Memory()).ok());
  s.PagesFinal(2, {});
  const uint64_t put = s.bytes_put();
  ASSERT_GT(put, 0u);
  HandoffResult r = s.StopNow(absl::CancelledError("preempted"));
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kCancelled) << r.outcome.status;
  EXPECT_FALSE(r.outcome.local_may_be_read);
  auto received = received_.get_future();
  ASSERT_EQ(received.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(received.get().status().code(), absl::StatusCode::kCancelled);
  Prefill(40, kPrompt);
  ASSERT_TRUE(s.Describe(0, Memory()).ok());
  s.PagesFinal(4, {});
  s.LayerFinal(0, engine().dims().num_layers - 1, nullptr);
  EXPECT_EQ(s.bytes_put(), put);
  EXPECT_TRUE(s.StopNow(absl::CancelledError("again")).outcome.status.ok());  // idempotent
}

INSTANTIATE_TEST_SUITE_P(Transports, HandoffStreamTest, ::testing::Values("tcp", "sm"));

}  // namespace
}  // namespace gka::worker_common
