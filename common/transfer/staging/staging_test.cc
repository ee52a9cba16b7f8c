// The device-transfer layer on the CPU: path selection (with the real UCX engine's memory-type
// query), the poly61 stream checksum's contract, and the staged and direct paths end to end
// over real UCX between two engines, with the host copier standing in for the device copies
// (the same PutStaged / Landing code; memcpy where the GPU build runs the copy kernel).
#include "common/transfer/staging/staging.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <numeric>
#include <random>

#include "common/base/status.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"

namespace gka::transfer::staging {
namespace {

using kernels::CopyChecksumRange;

TEST(SelectTransferPath, HostMemoryMovesInPlaceUnlessStagingIsAsked) {
  for (bool cuda : {false, true}) {
    for (StagingMode m : {StagingMode::kAuto, StagingMode::kStaged, StagingMode::kDirect}) {
      auto p = SelectTransferPath(MemoryKind::kHost, cuda, m);
      ASSERT_TRUE(p.ok());
      EXPECT_EQ(*p, m == StagingMode::kStaged ? TransferPath::kStaged : TransferPath::kHost);
    }
  }
}

TEST(SelectTransferPath, DeviceMemoryFollowsTheTransport) {
  EXPECT_EQ(*SelectTransferPath(MemoryKind::kCuda, true, StagingMode::kAuto),
            TransferPath::kDeviceDirect);
  EXPECT_EQ(*SelectTransferPath(MemoryKind::kCuda, false, StagingMode::kAuto),
            TransferPath::kStaged);
  EXPECT_EQ(*SelectTransferPath(MemoryKind::kCuda, true, StagingMode::kStaged),
            TransferPath::kStaged);
  EXPECT_EQ(*SelectTransferPath(MemoryKind::kCuda, true, StagingMode::kDirect),
            TransferPath::kDeviceDirect);
  auto refused = SelectTransferPath(MemoryKind::kCuda, false, StagingMode::kDirect);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SelectTransferPath, RealUcxChoosesAtRunTime) {
  auto engine = ucx::UcxTransferEngine::Create({.transports = "tcp"});
  ASSERT_TRUE(engine.ok()) << engine.status();
  // Whatever this UCX reports (Debian's 1.13: no cuda memory type), auto follows it.
  const bool cuda = (*engine)->SupportsCuda();
  EXPECT_EQ(*SelectTransferPath(MemoryKind::kCuda, cuda, StagingMode::kAuto),
            cuda ? TransferPath::kDeviceDirect : TransferPath::kStaged);
  // Registering device memory is refused unless the query said yes.
  if (!cuda) {
    char byte = 0;
    auto r = (*engine)->RegisterMemory(&byte, 1, MemoryKind::kCuda);
    EXPECT_FALSE(r.ok());
  }
}

TEST(ParseStagingMode, AcceptsTheThreeModes) {
  EXPECT_EQ(*ParseStagingMode("auto"), StagingMode::kAuto);
  EXPECT_EQ(*ParseStagingMode("staged"), StagingMode::kStaged);
  EXPECT_EQ(*ParseStagingMode("direct"), StagingMode::kDirect);
  EXPECT_EQ(ParseStagingMode("cuda").status().code(), absl::StatusCode::kInvalidArgument);
}

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

uint64_t WholeSum(const std::vector<uint8_t>& v) {
  CopyChecksumRange r{.src = v.data(), .dst = nullptr, .bytes = v.size(), .stream_offset = 0};
  return kernels::cpu::CopyChecksum({&r, 1});
}

TEST(Poly61, AnySplitInAnyOrderGivesTheSameSum) {
  const std::vector<uint8_t> data = RandomBytes(10007, 1);
  const uint64_t whole = WholeSum(data);
  std::mt19937_64 rng(2);
  for (int trial = 0; trial < 20; ++trial) {
    // Random cut points (odd sizes and misaligned offsets included), pieces shuffled.
    std::vector<uint64_t> cuts = {0, data.size()};
    for (int i = 0; i < 12; ++i) cuts.push_back(rng() % data.size());
    std::sort(cuts.begin(), cuts.end());
    std::vector<CopyChecksumRange> pieces;
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      pieces.push_back({.src = data.data() + cuts[i],
                        .dst = nullptr,
                        .bytes = cuts[i + 1] - cuts[i],
                        .stream_offset = cuts[i]});
    }
    std::shuffle(pieces.begin(), pieces.end(), rng);
    EXPECT_EQ(kernels::cpu::CopyChecksum(pieces), whole) << "trial " << trial;
  }
}

TEST(Poly61, DetectsFlippedAndSwappedBytes) {
  std::vector<uint8_t> data = RandomBytes(4096, 3);
  const uint64_t whole = WholeSum(data);
  std::vector<uint8_t> flipped = data;
  flipped[1234] ^= 0x01;
  EXPECT_NE(WholeSum(flipped), whole);
  std::vector<uint8_t> swapped = data;
  std::swap_ranges(swapped.begin(), swapped.begin() + 4, swapped.begin() + 8);  // two words
  ASSERT_NE(swapped, data);
  EXPECT_NE(WholeSum(swapped), whole);
  // Zero streams of different lengths sum to 0; the finalizer tells them apart.
  EXPECT_NE(kernels::Poly61Finalize(0, 64), kernels::Poly61Finalize(0, 128));
}

TEST(Poly61, CopiesWhatItHashes) {
  const std::vector<uint8_t> data = RandomBytes(999, 4);
  std::vector<uint8_t> out(data.size(), 0);
  CopyChecksumRange r{.src = data.data(), .dst = out.data(), .bytes = 999, .stream_offset = 3};
  kernels::cpu::CopyChecksum({&r, 1});
  EXPECT_EQ(out, data);
}

TEST(StreamOffsets, FollowTargetAddressOrderAndRefuseOverlaps) {
  auto o = StreamOffsets({{.target_addr = 300, .length = 10},
                          {.target_addr = 100, .length = 50},
                          {.target_addr = 200, .length = 7}});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(*o, (std::vector<uint64_t>{57, 0, 50}));
  EXPECT_FALSE(
      StreamOffsets({{.target_addr = 100, .length = 50}, {.target_addr = 120, .length = 1}}).ok());
}

TEST(StagedSender, RefusesBadSegments) {
  auto copier = MakeStageCopier({.device = false});
  ASSERT_TRUE(copier.ok());
  char a[64], b[64];
  auto bad_source = StagedSender::Start({copier->get()}, nullptr,
                                        {{.src = a, .remote_addr = 0, .length = 8, .source = 1}});
  EXPECT_EQ(bad_source.status().code(), absl::StatusCode::kInvalidArgument);
  auto backwards = StagedSender::Start({copier->get()}, nullptr,
                                       {{.src = a, .remote_addr = 0, .length = 8, .stage = 2},
                                        {.src = b, .remote_addr = 64, .length = 8, .stage = 1}});
  EXPECT_EQ(backwards.status().code(), absl::StatusCode::kInvalidArgument);
  auto overlap = StagedSender::Start(
      {copier->get()}, nullptr,
      {{.src = a, .remote_addr = 0, .length = 8}, {.src = b, .remote_addr = 4, .length = 8}});
  EXPECT_EQ(overlap.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StagingOffsets, AlignEverySegmentTo16Bytes) {
  EXPECT_EQ(StagingOffsets({12, 32, 5}), (std::vector<uint64_t>{0, 16, 48, 64}));
}

// Two UCX engines in one process: a "prefill" side whose device segments are host buffers and
// a "decode" side whose device segments are zeroed host buffers.
class StagedTransferTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    auto s = ucx::UcxTransferEngine::Create({.transports = GetParam(), .name = "sender"});
    ASSERT_TRUE(s.ok()) << s.status();
    sender_ = std::move(s).value();
    auto r = ucx::UcxTransferEngine::Create({.transports = GetParam(), .name = "receiver"});
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = std::move(r).value();
    auto c = MakeStageCopier({.device = false});
    ASSERT_TRUE(c.ok());
    copier_ = std::move(c).value();
    auto c2 = MakeStageCopier({.device = false});
    ASSERT_TRUE(c2.ok());
    copier2_ = std::move(c2).value();
    pool_ = std::make_unique<StagingPool>(copier_.get());
    // A KV-like layout: 3 "layers" of 4 pages of 4 KiB, then odd-sized "states" (12 · 37 B:
    // misaligned in the stream on purpose).
    for (int layer = 0; layer < 3; ++layer) {
      for (int p = 0; p < 4; ++p) sizes_.push_back({layer, 4096});
    }
    sizes_.push_back({3, 12 * 37});
    sizes_.push_back({3, 65536});
    for (size_t i = 0; i < sizes_.size(); ++i) {
      src_.push_back(RandomBytes(sizes_[i].second, 100 + i));
      dst_.emplace_back(sizes_[i].second, 0);
    }
  }
  void TearDown() override {
    regions_.clear();  // deregistered before the landing's memory goes back to the pool
    landing_.reset();
    sender_.reset();
    receiver_.reset();
  }

  // The staged paths' receiver: landing_ (one pinned buffer for all of dst_, registered with
  // the receiver as region 0), segments_ putting each src_[i] at its landing slot (from
  // copier i % 2; with its stage when `with_stages`, else all in stage 0) and the expected
  // transfer `id` that leaves the checksum to the landing's copy-in. Call through
  // ASSERT_NO_FATAL_FAILURE.
  void LandEverySegment(uint64_t id, bool with_stages) {
    auto landing = Landing::Create(*pool_, DstRanges());
    ASSERT_TRUE(landing.ok()) << landing.status();
    landing_ = std::move(landing).value();
    auto region = receiver_->RegisterMemory(landing_->data(), landing_->size());
    ASSERT_TRUE(region.ok()) << region.status();
    regions_.push_back(std::move(region).value());
    for (size_t i = 0; i < src_.size(); ++i) {
      segments_.push_back({.src = src_[i].data(),
                           .region = 0,
                           .remote_addr = reinterpret_cast<uint64_t>(landing_->landing(i)),
                           .length = src_[i].size(),
                           .stage = with_stages ? sizes_[i].first : 0,
                           .source = static_cast<int32_t>(i % 2)});
    }
    expected_ = {.transfer_id = id};
    expected_.verify_ranges = landing_->VerifyRanges();
    expected_.caller_verifies_checksum = true;
  }

  std::vector<DeviceRange> DstRanges() {
    std::vector<DeviceRange> out;
    for (auto& d : dst_) out.push_back({d.data(), d.size()});
    return out;
  }

  // Runs one transfer; the receiver's side returns the completion.
  // `streamed`: the segments' sources are supplied group by group in an order unlike the
  // stages' (as a prefill still running makes them final), each group put once copied.
  absl::StatusOr<TransferCompletion> Send(const std::vector<DeviceSegment>& segments,
                                          ExpectedTransfer expected, bool staged, StagedSend* sent,
                                          bool streamed = false) {
    std::promise<absl::StatusOr<TransferCompletion>> done;
    auto done_future = done.get_future();
    const uint64_t id = expected.transfer_id;
    expected.lease_deadline = absl::Now() + absl::Seconds(30);
    GKA_RETURN_IF_ERROR(receiver_->Expect(
        std::move(expected),
        [&done](absl::StatusOr<TransferCompletion> c) { done.set_value(std::move(c)); }));
    TransferTarget target{receiver_->WorkerAddress(), {}};
    for (auto& r : regions_) target.regions.push_back(r->remote());
    GKA_ASSIGN_OR_RETURN(auto t,
                         sender_->StartTransfer(target, id, absl::Now() + absl::Seconds(30)));
    // Two copiers (the GPUs of two prefill ranks): segments name theirs by `source`.
    if (streamed) {
      std::vector<DeviceSegment> layout = segments;
      for (DeviceSegment& d : layout) d.src = nullptr;  // not final yet
      GKA_ASSIGN_OR_RETURN(auto sender,
                           StagedSender::Create({copier_.get(), copier2_.get()},
                                                staged ? pool_.get() : nullptr, layout));
      // Odd segments first (a chunk's pages across layers), then the even ones backwards.
      std::vector<size_t> order;
      for (size_t i = 1; i < segments.size(); i += 2) order.push_back(i);
      for (size_t i = segments.size(); i-- > 0;) {
        if (i % 2 == 0) order.push_back(i);
      }
      for (size_t at = 0; at < order.size(); at += 3) {
        std::vector<size_t> which;
        std::vector<const void*> sources;
        for (size_t n = at; n < std::min(at + 3, order.size()); ++n) {
          which.push_back(order[n]);
          sources.push_back(segments[order[n]].src);
        }
        EXPECT_EQ(sender->Checksum().status().code(), absl::StatusCode::kFailedPrecondition);
        GKA_RETURN_IF_ERROR(sender->Copy(which, sources, {nullptr, nullptr}));
        GKA_RETURN_IF_ERROR(sender->PutCopied(*t, /*wait=*/false).status());
      }
      // A segment is copied once.
      EXPECT_EQ(sender->Copy({order[0]}, {segments[order[0]].src}, {}).code(),
                absl::StatusCode::kInvalidArgument);
      GKA_RETURN_IF_ERROR(sender->PutCopied(*t, /*wait=*/true).status());
      GKA_ASSIGN_OR_RETURN(*sent, sender->Checksum());
    } else {
      GKA_ASSIGN_OR_RETURN(auto sender,
                           StagedSender::Start({copier_.get(), copier2_.get()},
                                               staged ? pool_.get() : nullptr, segments));
      GKA_ASSIGN_OR_RETURN(*sent, sender->PutAll(*t, nullptr));
    }
    t->SupplyChecksum(sent->checksum);
    TransferOutcome out = t->FinishAndWait("payload");
    GKA_RETURN_IF_ERROR(out.status);
    EXPECT_EQ(out.checksum, sent->checksum);
    return done_future.get();
  }

  std::unique_ptr<ucx::UcxTransferEngine> sender_, receiver_;
  std::unique_ptr<StageCopier> copier_, copier2_;
  std::unique_ptr<StagingPool> pool_;
  std::vector<std::pair<int, uint64_t>> sizes_;  // (stage, bytes)
  std::vector<std::vector<uint8_t>> src_, dst_;
  std::vector<std::unique_ptr<MemoryRegion>> regions_;
  std::unique_ptr<Landing> landing_;     // LandEverySegment's
  std::vector<DeviceSegment> segments_;  // LandEverySegment's
  ExpectedTransfer expected_;            // LandEverySegment's
};

TEST_P(StagedTransferTest, StagedPathLandsVerifiesAndCopiesIn) {
  ASSERT_NO_FATAL_FAILURE(LandEverySegment(/*id=*/7, /*with_stages=*/true));
  Landing& l = *landing_;
  StagedSend sent;
  auto completion = Send(segments_, std::move(expected_), /*staged=*/true, &sent);
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(sent.stages, 4);
  EXPECT_FALSE(completion->verified);  // the caller's job
  EXPECT_EQ(completion->checksum, sent.checksum);
  ASSERT_TRUE(l.CopyInAndVerify(*copier_, completion->checksum, completion->bytes).ok());
  for (size_t i = 0; i < src_.size(); ++i) EXPECT_EQ(dst_[i], src_[i]) << "segment " << i;

  // The two-step form (a decode engine thread polls the job between steps) agrees.
  auto job = l.StartCopyIn(*copier_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(l.FinishCopyIn(**job, completion->checksum, completion->bytes).ok());

  // A byte changed in the landing after the transfer is caught on the copy-in.
  l.landing(5)[17] ^= 0x40;
  absl::Status bad = l.CopyInAndVerify(*copier_, completion->checksum, completion->bytes);
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss) << bad;
  // So is a sender that claims a different size.
  EXPECT_EQ(l.CopyInAndVerify(*copier_, completion->checksum, completion->bytes + 1).code(),
            absl::StatusCode::kDataLoss);
}

// Streamed (a prefill still running): groups copied and put as they become final, in any
// order; the checksum is the same stream checksum, and the landing verifies and copies in.
TEST_P(StagedTransferTest, StreamedGroupsLandAndVerifyLikeOneShot) {
  ASSERT_NO_FATAL_FAILURE(LandEverySegment(/*id=*/9, /*with_stages=*/false));
  Landing& l = *landing_;
  StagedSend sent;
  auto completion =
      Send(segments_, std::move(expected_), /*staged=*/true, &sent, /*streamed=*/true);
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(completion->checksum, sent.checksum);
  ASSERT_TRUE(l.CopyInAndVerify(*copier_, completion->checksum, completion->bytes).ok());
  for (size_t i = 0; i < src_.size(); ++i) EXPECT_EQ(dst_[i], src_[i]) << "segment " << i;
  // The same bytes in one shot give the same checksum: it does not depend on the grouping.
  std::vector<kernels::CopyChecksumRange> ranges;
  uint64_t pos = 0, bytes = 0;
  for (size_t i = 0; i < src_.size(); ++i) {
    ranges.push_back(
        {.src = src_[i].data(), .dst = nullptr, .bytes = src_[i].size(), .stream_offset = pos});
    pos += src_[i].size();
    bytes += src_[i].size();
  }
  EXPECT_EQ(sent.checksum, kernels::Poly61Finalize(kernels::cpu::CopyChecksum(ranges), bytes));
}

TEST_P(StagedTransferTest, DirectPathVerifiesInPlace) {
  // The receiver registers its "device" segments themselves (one region each).
  std::vector<DeviceSegment> segments;
  ExpectedTransfer expected{.transfer_id = 8};
  for (size_t i = 0; i < dst_.size(); ++i) {
    auto region = receiver_->RegisterMemory(dst_[i].data(), dst_[i].size());
    ASSERT_TRUE(region.ok()) << region.status();
    segments.push_back({.src = src_[i].data(),
                        .region = static_cast<uint32_t>(i),
                        .remote_addr = region.value()->remote().remote_addr,
                        .length = src_[i].size(),
                        .stage = sizes_[i].first});
    expected.verify_ranges.push_back({dst_[i].data(), dst_[i].size()});
    regions_.push_back(std::move(region).value());
  }
  expected.caller_verifies_checksum = true;
  StagedSend sent;
  auto completion = Send(segments, std::move(expected), /*staged=*/false, &sent);
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_TRUE(VerifyInPlace(*copier_, DstRanges(), completion->checksum, completion->bytes).ok());
  for (size_t i = 0; i < src_.size(); ++i) EXPECT_EQ(dst_[i], src_[i]) << "segment " << i;
  dst_[2][0] ^= 1;
  EXPECT_EQ(VerifyInPlace(*copier_, DstRanges(), completion->checksum, completion->bytes).code(),
            absl::StatusCode::kDataLoss);
}

constexpr uint64_t kMiB = uint64_t{1} << 20;

TEST(StagingPool, ReusesIdleBuffers) {
  auto copier = MakeStageCopier({.device = false});
  ASSERT_TRUE(copier.ok());
  StagingPool pool(copier->get());
  char* first = nullptr;
  {
    auto a = pool.Acquire(1000);
    ASSERT_TRUE(a.ok());
    first = (*a)->data();
    EXPECT_GE((*a)->size(), 1000u);
  }
  auto b = pool.Acquire(5000);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->data(), first);  // the idle 2 MiB buffer came back
}

TEST(StagingPool, PrewarmedBuffersServeWithoutPinningAndMissesAreCounted) {
  auto copier = MakeStageCopier({.device = false});
  ASSERT_TRUE(copier.ok());
  StagingPool pool(copier->get(), /*keep_bytes=*/8 * kMiB);
  ASSERT_TRUE(pool.Prewarm(3 * kMiB, 2).ok());  // two 4 MiB buffers (2 MiB granules)
  auto a = pool.Acquire(3 * kMiB);
  auto b = pool.Acquire(3 * kMiB);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(pool.misses(), 0);
  EXPECT_NE((*a)->data(), (*b)->data());
  auto c = pool.Acquire(3 * kMiB);  // a third at once: pinned on the fly
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(pool.misses(), 1);
  // Prewarming stops at keep_bytes (a buffer beyond it would be freed on its first return).
  StagingPool small(copier->get(), /*keep_bytes=*/6 * kMiB);
  ASSERT_TRUE(small.Prewarm(3 * kMiB, 3).ok());
  auto d = small.Acquire(3 * kMiB);
  auto e = small.Acquire(3 * kMiB);
  ASSERT_TRUE(d.ok() && e.ok());
  EXPECT_EQ(small.misses(), 1);
}

// The stall this prevents: eight concurrent 512-token hand-offs each pinned their own 162 MiB
// beside two idle max-length buffers, and every pin stalled the decode batch (RESULTS.md).
TEST(StagingPool, SmallHandOffsShareAPrewarmedSlabAndFreedRangesCoalesce) {
  auto copier = MakeStageCopier({.device = false});
  ASSERT_TRUE(copier.ok());
  StagingPool pool(copier->get(), /*keep_bytes=*/16 * kMiB);
  ASSERT_TRUE(pool.Prewarm(8 * kMiB, 1).ok());
  std::vector<std::unique_ptr<StagingPool::Lease>> leases;
  for (int i = 0; i < 4; ++i) {
    auto l = pool.Acquire(2 * kMiB - 100);
    ASSERT_TRUE(l.ok()) << l.status();
    leases.push_back(*std::move(l));
  }
  EXPECT_EQ(pool.misses(), 0);
  EXPECT_EQ(pool.pinned_bytes(), 8 * kMiB);
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(leases[i]->data(), leases[i - 1]->data() + 2 * kMiB) << "first fit, in order";
  }
  std::memset(leases[0]->data(), 1, leases[0]->size());  // the whole lease is usable
  std::memset(leases[3]->data(), 4, leases[3]->size());
  char* second = leases[1]->data();
  leases[1].reset();
  leases[2].reset();
  auto middle = pool.Acquire(4 * kMiB);  // fits only if the two freed ranges merged
  ASSERT_TRUE(middle.ok());
  EXPECT_EQ((*middle)->data(), second);
  EXPECT_EQ(pool.misses(), 0);
  middle->reset();
  leases.clear();
  auto whole = pool.Acquire(8 * kMiB);  // everything merged back into one range
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(pool.misses(), 0);
}

TEST(StagingPool, SlabsBeyondKeepBytesAreUnpinnedWhenIdle) {
  auto copier = MakeStageCopier({.device = false});
  ASSERT_TRUE(copier.ok());
  StagingPool pool(copier->get(), /*keep_bytes=*/4 * kMiB);
  ASSERT_TRUE(pool.Prewarm(4 * kMiB, 1).ok());
  auto held = pool.Acquire(4 * kMiB);
  auto extra = pool.Acquire(2 * kMiB);  // no room: a new slab
  ASSERT_TRUE(held.ok() && extra.ok());
  EXPECT_EQ(pool.misses(), 1);
  EXPECT_EQ(pool.pinned_bytes(), 6 * kMiB);
  extra->reset();
  EXPECT_EQ(pool.pinned_bytes(), 4 * kMiB);
  held->reset();  // within keep_bytes: stays pinned for the next hand-off
  EXPECT_EQ(pool.pinned_bytes(), 4 * kMiB);
}

INSTANTIATE_TEST_SUITE_P(Transports, StagedTransferTest, ::testing::Values("tcp", "sm"));

}  // namespace
}  // namespace gka::transfer::staging
