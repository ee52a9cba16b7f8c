// Two real processes on 127.0.0.1 moving memory with UcxTransferEngine, over UCX tcp and over
// UCX shared memory (sm: posix, sysv, cma, self). The test process is one side; the
// transfer_peer helper (fork + exec) is the other.
#include <algorithm>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/transfer/checksum.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "gtest/gtest.h"
#include "tests/integration/transfer/pattern.h"
#include "tests/integration/transfer/peer_process.h"

namespace gka::transfer {
namespace {

constexpr absl::Duration kReplyTimeout = absl::Seconds(20);

int Code(const absl::Status& s) { return static_cast<int>(s.code()); }

std::vector<std::string> Fields(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

uint64_t U64(const std::string& s) {
  uint64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(s, &v)) << s;
  return v;
}

struct Setup {
  std::string transports;
  std::string data_path;  // "am" or "put"
};

void PrintTo(const Setup& setup, std::ostream* os) {
  *os << setup.transports << "/" << setup.data_path;
}

ucx::UcxOptions OptionsFor(const Setup& setup) {
  ucx::UcxOptions options;
  options.transports = setup.transports;
  options.data_path = setup.data_path == "put" ? ucx::UcxOptions::DataPath::kPut
                                               : ucx::UcxOptions::DataPath::kActiveMessage;
  return options;
}

class UcxTransferTest : public ::testing::TestWithParam<Setup> {
 protected:
  bool puts() const { return GetParam().data_path == "put"; }

  void SetUp() override {
    auto engine = ucx::UcxTransferEngine::Create(OptionsFor(GetParam()));
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  // Starts the helper with a registered buffer of `bytes`; fills target_ from its READY line.
  void StartPeer(uint64_t bytes) {
    auto peer = PeerProcess::Spawn({GKA_TRANSFER_PEER_PATH, "--transports=" + GetParam().transports,
                                    "--data-path=" + GetParam().data_path,
                                    absl::StrCat("--bytes=", bytes)});
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *std::move(peer);
    auto ready = peer_.Expect("READY", kReplyTimeout);
    ASSERT_TRUE(ready.ok()) << ready.status();
    const std::vector<std::string> f = Fields(*ready);
    ASSERT_EQ(f.size(), 5u) << *ready;
    peer_address_hex_ = f[1];
    target_.worker_address = absl::HexStringToBytes(f[1]);
    target_.regions = {{U64(f[2]), U64(f[3]), absl::HexStringToBytes(f[4])}};
  }

  int PeerCommand(const std::string& command, absl::string_view reply) {
    peer_.Send(command);
    auto line = peer_.Expect(reply, kReplyTimeout);
    EXPECT_TRUE(line.ok()) << line.status();
    if (!line.ok()) return -1;
    int code = -1;
    EXPECT_TRUE(absl::SimpleAtoi(Fields(*line)[1], &code)) << *line;
    return code;
  }

  // Registers `buffer`, expects `tid` into it, and starts the helper as the sender: it
  // writes the whole buffer (pattern 9) in `segment` pieces, pausing `pause_ms` halfway.
  std::unique_ptr<MemoryRegion> StartSenderPeer(std::vector<uint8_t>& buffer, uint64_t tid,
                                                uint64_t segment, uint64_t pause_ms,
                                                CompletionCallback on_complete) {
    auto region = engine_->RegisterMemory(buffer.data(), buffer.size());
    EXPECT_TRUE(region.ok()) << region.status();
    if (!region.ok()) return nullptr;
    const ExpectedTransfer expected{.transfer_id = tid,
                                    .lease_deadline = absl::Now() + absl::Seconds(60)};
    EXPECT_TRUE(engine_->Expect(expected, std::move(on_complete)).ok());
    StartPeer(1 << 12);
    peer_.Send(absl::StrCat("SEND ", absl::BytesToHexString(engine_->WorkerAddress()), " ",
                            (*region)->remote().remote_addr, " ", buffer.size(), " ",
                            absl::BytesToHexString((*region)->remote().packed_rkey), " ", tid, " ",
                            buffer.size(), " ", segment, " 9 ", pause_ms, " 90000"));
    EXPECT_TRUE(peer_.Expect("PAUSED", kReplyTimeout).ok());
    return *std::move(region);
  }

  // Writes 64 KiB into the peer's region as transfer `tid` (which the peer expects, its buffer
  // 64 KiB); the transfer must succeed.
  void SmallTransferSucceeds(uint64_t tid, const std::string& payload) {
    auto t = engine_->StartTransfer(target_, tid, absl::Now() + absl::Seconds(20));
    ASSERT_TRUE(t.ok()) << t.status();
    std::vector<uint8_t> small(1 << 16, 1);
    TransferDescriptor d;
    d.Add(small.data(), 0, target_.regions[0].remote_addr, small.size());
    ASSERT_TRUE((*t)->Put(d).ok());
    const TransferOutcome out = (*t)->FinishAndWait(payload);
    EXPECT_TRUE(out.status.ok()) << out.status;
  }

  // Source buffers an outcome said may still be read: freed only after the engine.
  std::vector<std::vector<uint8_t>> keep_alive_;
  std::unique_ptr<ucx::UcxTransferEngine> engine_;
  PeerProcess peer_;
  TransferTarget target_;
  std::string peer_address_hex_;
};

// Pages of `page` bytes written in a scrambled order, in several Put calls (like layers), so
// nothing merges: thousands of segments.
TEST_P(UcxTransferTest, ManySegmentsArriveIntactAndVerified) {
  constexpr uint64_t kBytes = 8 << 20, kPage = 4096, kSeed = 7;
  StartPeer(kBytes);
  ASSERT_EQ(PeerCommand("EXPECT 101 30000 1", "EXPECT"), 0);
  std::vector<uint8_t> source(kBytes);
  FillPattern(kSeed, source.data(), kBytes);

  auto t = engine_->StartTransfer(target_, 101, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(t.ok()) << t.status();
  const uint64_t pages = kBytes / kPage;
  const uint64_t stride = 769;  // coprime with the page count: a permutation
  uint64_t posted = 0;
  for (int layer = 0; layer < 4; ++layer) {
    TransferDescriptor d;
    for (uint64_t i = layer * pages / 4; i < (layer + 1) * pages / 4; ++i) {
      const uint64_t p = (i * stride) % pages;
      d.Add(source.data() + p * kPage, 0, target_.regions[0].remote_addr + p * kPage, kPage);
    }
    posted += d.segments.size();
    ASSERT_TRUE((*t)->Put(d).ok());
  }
  EXPECT_GT(posted, 1000u);
  const TransferOutcome out = (*t)->FinishAndWait("first-token:42");
  ASSERT_TRUE(out.status.ok()) << out.status;
  EXPECT_FALSE(out.remote_may_be_written);
  EXPECT_EQ(out.bytes, kBytes);
  EXPECT_EQ(out.segments, posted);
  EXPECT_EQ(out.checksum, Checksum64::Of(source.data(), kBytes));

  auto complete = peer_.Expect("COMPLETE", kReplyTimeout);
  ASSERT_TRUE(complete.ok()) << complete.status();
  const std::vector<std::string> f = Fields(*complete);
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[1], "101");
  EXPECT_EQ(f[2], "0");  // verified by the receiver
  EXPECT_EQ(U64(f[3]), out.checksum);
  EXPECT_EQ(U64(f[4]), kBytes);
  EXPECT_EQ(absl::HexStringToBytes(f[5]), "first-token:42");
  peer_.Send(absl::StrCat("VERIFY ", kSeed, " 0 ", kBytes));
  auto verify = peer_.Expect("VERIFY", kReplyTimeout);
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(*verify, "VERIFY ok");
  // Completed transfers are quiescent: fencing them is OK.
  EXPECT_EQ(PeerCommand("FENCE 101 1000", "FENCE"), 0);
}

// The receiver expects (and verifies) the first half; the sender writes the same amount into
// the second half. With puts the bytes land and the checksum differs; with active messages
// the receiver refuses the writes outright. Either way DATA_LOSS, and both sides learn it.
TEST_P(UcxTransferTest, MisplacedDataIsRefusedByTheChecksum) {
  constexpr uint64_t kBytes = 1 << 20;
  StartPeer(kBytes);
  ASSERT_EQ(PeerCommand("EXPECT 102 30000 2", "EXPECT"), 0);  // verifies the first half
  std::vector<uint8_t> source(kBytes / 2);
  FillPattern(3, source.data(), source.size());
  auto t = engine_->StartTransfer(target_, 102, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(t.ok()) << t.status();
  TransferDescriptor d;
  d.Add(source.data(), 0, target_.regions[0].remote_addr + kBytes / 2, kBytes / 2);
  ASSERT_TRUE((*t)->Put(d).ok());
  const TransferOutcome out = (*t)->FinishAndWait("x");
  EXPECT_EQ(out.status.code(), absl::StatusCode::kDataLoss) << out.status;
  EXPECT_NE(out.status.message().find(puts() ? "checksum mismatch" : "refused"),
            absl::string_view::npos)
      << out.status;
  EXPECT_FALSE(out.remote_may_be_written);
  auto complete = peer_.Expect("COMPLETE", kReplyTimeout);
  ASSERT_TRUE(complete.ok());
  EXPECT_EQ(Fields(*complete)[2], absl::StrCat(Code(absl::DataLossError(""))));
}

TEST_P(UcxTransferTest, UnknownExpiredAndFencedTransfersAreRefusedBeforeAnyWrite) {
  StartPeer(1 << 16);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  auto unknown = engine_->StartTransfer(target_, 999, deadline);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();

  ASSERT_EQ(PeerCommand("EXPECT 103 1 0", "EXPECT"), 0);  // 1 ms lease
  absl::SleepFor(absl::Milliseconds(20));
  auto expired = engine_->StartTransfer(target_, 103, deadline);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kDeadlineExceeded) << expired.status();

  ASSERT_EQ(PeerCommand("EXPECT 104 30000 0", "EXPECT"), 0);
  EXPECT_EQ(PeerCommand("FENCE 104 1000", "FENCE"), 0);  // before any sender: quiescent
  auto fenced = engine_->StartTransfer(target_, 104, deadline);
  EXPECT_EQ(fenced.status().code(), absl::StatusCode::kNotFound) << fenced.status();
  auto cancelled = peer_.Expect("COMPLETE", kReplyTimeout);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(Fields(*cancelled)[2], absl::StrCat(Code(absl::CancelledError(""))));

  ASSERT_EQ(PeerCommand("EXPECT 105 30000 0", "EXPECT"), 0);
  EXPECT_EQ(PeerCommand("EXPECT 105 30000 0", "EXPECT"), Code(absl::AlreadyExistsError("")));
}

TEST_P(UcxTransferTest, BadTicketsAreInvalidArgument) {
  StartPeer(1 << 16);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  TransferTarget no_address = target_;
  no_address.worker_address.clear();
  EXPECT_EQ(engine_->StartTransfer(no_address, 1, deadline).status().code(),
            absl::StatusCode::kInvalidArgument);
  TransferTarget no_key = target_;
  no_key.regions[0].packed_rkey.clear();
  EXPECT_EQ(engine_->StartTransfer(no_key, 1, deadline).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->StartTransfer(target_, 1, absl::Now() - absl::Seconds(1)).status().code(),
            absl::StatusCode::kDeadlineExceeded);

  ASSERT_EQ(PeerCommand("EXPECT 106 30000 0", "EXPECT"), 0);
  auto t = engine_->StartTransfer(target_, 106, deadline);
  ASSERT_TRUE(t.ok()) << t.status();
  char src[64] = {};
  TransferDescriptor outside;
  outside.Add(src, 0, target_.regions[0].remote_addr + target_.regions[0].length - 8, 64);
  EXPECT_EQ((*t)->Put(outside).code(), absl::StatusCode::kInvalidArgument);
  const TransferOutcome out = (*t)->CancelAndWait();
  EXPECT_EQ(out.status.code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(out.remote_may_be_written);
  auto complete = peer_.Expect("COMPLETE", kReplyTimeout);  // the receiver learns it
  ASSERT_TRUE(complete.ok());
  EXPECT_EQ(Fields(*complete)[2], absl::StrCat(Code(absl::CancelledError(""))));
}

// The receiver dies between two batches of puts: the sender gets an error outcome within its
// deadline, never a hang or a crash.
TEST_P(UcxTransferTest, ReceiverKilledMidTransferIsAnError) {
  constexpr uint64_t kBytes = 16 << 20, kPage = 64 << 10;
  StartPeer(kBytes);
  ASSERT_EQ(PeerCommand("EXPECT 107 60000 0", "EXPECT"), 0);
  std::vector<uint8_t> source(kBytes, 0x5a);
  const absl::Time start = absl::Now();
  // Shared memory cannot report a dead peer (see UcxTransferEngine); the deadline bounds it.
  auto t = engine_->StartTransfer(target_, 107, start + absl::Seconds(3));
  ASSERT_TRUE(t.ok()) << t.status();
  auto put_range = [&](uint64_t first, uint64_t last) {
    TransferDescriptor d;
    for (uint64_t p = first; p < last; p += 2) {  // every other page: no merging
      d.Add(source.data() + p * kPage, 0, target_.regions[0].remote_addr + p * kPage, kPage);
    }
    return (*t)->Put(d);
  };
  const uint64_t pages = kBytes / kPage;
  ASSERT_TRUE(put_range(0, pages / 2).ok());
  peer_.Kill();
  const absl::Status second = put_range(pages / 2, pages);  // may fail fast or later
  const TransferOutcome out = (*t)->FinishAndWait("never");
  EXPECT_FALSE(out.status.ok()) << "second put: " << second;
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  // Over tcp UCX cancels what was queued; over shared memory it may stay queued.
  if (GetParam().transports == "tcp") EXPECT_FALSE(out.local_may_be_read);
  if (out.local_may_be_read) {
    EXPECT_TRUE(out.remote_may_be_written);
    keep_alive_.push_back(std::move(source));
  }
  // The engine still works for others afterwards.
  StartPeer(1 << 16);
  ASSERT_EQ(PeerCommand("EXPECT 108 30000 1", "EXPECT"), 0);
  SmallTransferSucceeds(108, "ok");
}

// A receiver that cannot finish UCX's connection handshake (frozen here; in the chaos suite's
// partition, one that could not dial back) is named as such, not as a receiver that did not
// answer; once it answers again, the next transfer to it succeeds on the same engine.
TEST_P(UcxTransferTest, ConnectionThatNeverCameUpIsNamedAndRecovers) {
  if (GetParam().transports != "tcp") {
    GTEST_SKIP() << "shared-memory endpoints connect without the receiver's help";
  }
  StartPeer(1 << 16);
  ASSERT_EQ(PeerCommand("EXPECT 109 30000 1", "EXPECT"), 0);
  peer_.Freeze();
  const absl::Time start = absl::Now();
  auto frozen = engine_->StartTransfer(target_, 110, start + absl::Milliseconds(1500));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  peer_.Thaw();
  EXPECT_EQ(frozen.status().code(), absl::StatusCode::kDeadlineExceeded) << frozen.status();
  EXPECT_NE(frozen.status().message().find("before its request left this worker"),
            absl::string_view::npos)
      << frozen.status();
  SmallTransferSucceeds(109, "after-thaw");
  auto complete = peer_.Expect("COMPLETE", kReplyTimeout);
  ASSERT_TRUE(complete.ok()) << complete.status();
  EXPECT_EQ(Fields(*complete)[1], "109");
  EXPECT_EQ(Fields(*complete)[2], "0");
}

// The receiver fences while the sender (the helper) is paused between batches: the sender
// flushes, confirms, and its later puts fail; the memory is safe to reuse.
TEST_P(UcxTransferTest, FenceStopsALiveSender) {
  constexpr uint64_t kBytes = 4 << 20, kSegment = 64 << 10;
  std::vector<uint8_t> buffer(kBytes);
  // Shared: the engine (a fixture member) may call back after this body returned.
  auto completed = std::make_shared<std::promise<absl::Status>>();
  auto region = StartSenderPeer(
      buffer, 201, kSegment, 1500,
      [completed](absl::StatusOr<TransferCompletion> c) { completed->set_value(c.status()); });
  ASSERT_NE(region, nullptr);
  const absl::Time start = absl::Now();
  EXPECT_TRUE(engine_->Fence(201, absl::Seconds(10)).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));  // confirmed, not waited out
  EXPECT_EQ(completed->get_future().get().code(), absl::StatusCode::kCancelled);
  auto sent = peer_.Expect("SENT", kReplyTimeout);
  ASSERT_TRUE(sent.ok()) << sent.status();
  const std::vector<std::string> f = Fields(*sent);
  EXPECT_EQ(f[1], absl::StrCat(Code(absl::CancelledError(""))));  // outcome: fenced
  EXPECT_EQ(f[2], "0");                                           // nothing in flight
  EXPECT_EQ(f[4], absl::StrCat(Code(absl::CancelledError(""))));  // later puts refused
  // Nothing written after the fence landed (the helper writes from the end: the lower half
  // comes after the pause). With puts the sender flushed before confirming, so every page
  // before the pause landed; with active messages pages still in flight at the fence were
  // refused, whole.
  EXPECT_EQ(std::count(buffer.begin(), buffer.begin() + kBytes / 2, 0), kBytes / 2);
  for (uint64_t page = kBytes / 2; page < kBytes; page += kSegment) {
    const bool landed = FirstMismatch(9, buffer.data() + page, page, kSegment) == -1;
    const bool refused =
        std::count(buffer.begin() + page, buffer.begin() + page + kSegment, 0) == kSegment;
    EXPECT_TRUE(landed || (!puts() && refused)) << "page at " << page;
  }
  EXPECT_TRUE(engine_->Fence(201, absl::Seconds(1)).ok());  // forgotten: still quiescent
  region.reset();
}

// The sender dies mid-transfer. With puts the receiver cannot prove the memory quiescent
// (the fence reports an error promptly instead of hanging or claiming success); with active
// messages only the receiver writes, so the fence is immediate and nothing lands afterwards.
TEST_P(UcxTransferTest, FenceOnADeadSender) {
  constexpr uint64_t kBytes = 4 << 20, kSegment = 64 << 10;
  std::vector<uint8_t> buffer(kBytes);
  auto region = StartSenderPeer(buffer, 202, kSegment, 60000, nullptr);
  ASSERT_NE(region, nullptr);
  peer_.Kill();
  const absl::Time start = absl::Now();
  const absl::Status fence = engine_->Fence(202, absl::Milliseconds(1500));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  if (puts()) {
    EXPECT_TRUE(fence.code() == absl::StatusCode::kUnavailable ||
                fence.code() == absl::StatusCode::kDeadlineExceeded)
        << fence;
    // Still not provable later: the answer does not flip to OK by itself.
    EXPECT_FALSE(engine_->Fence(202, absl::Milliseconds(200)).ok());
  } else {
    EXPECT_TRUE(fence.ok()) << fence;
    const std::vector<uint8_t> snapshot = buffer;
    absl::SleepFor(absl::Milliseconds(200));
    EXPECT_TRUE(snapshot == buffer);  // nothing lands after the fence
  }
  region.reset();
}

// tcp with puts is not tested on purpose: UCX 1.13 aborts a receiver whose put sender dies
// (see UcxOptions::DataPath).
INSTANTIATE_TEST_SUITE_P(Transports, UcxTransferTest,
                         ::testing::Values(Setup{"tcp", "am"}, Setup{"sm", "am"},
                                           Setup{"sm", "put"}),
                         [](const auto& info) {
                           return info.param.transports + "_" + info.param.data_path;
                         });

}  // namespace
}  // namespace gka::transfer
