// Checksums, descriptors, leases and compatibility hashes (no transport).
#include <cstring>
#include <numeric>
#include <vector>

#include "common/transfer/checksum.h"
#include "common/transfer/lease.h"
#include "common/transfer/transfer_engine.h"
#include "gtest/gtest.h"

namespace gka::transfer {
namespace {

TEST(ChecksumTest, IndependentOfSegmentationAndOrder) {
  std::vector<uint8_t> data(10000);
  std::iota(data.begin(), data.end(), 0);
  const uint64_t whole = Checksum64::Of(data.data(), data.size());
  // Three pieces given out of order, with target addresses that put them back in order.
  const uint64_t base = 0x10000;
  auto sum = ChecksumInAddressOrder({{base + 7000, data.data() + 7000, 3000},
                                     {base, data.data(), 1},
                                     {base + 1, data.data() + 1, 6999}});
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, whole);
  Checksum64 streaming;
  streaming.Update(data.data(), 5000);
  streaming.Update(data.data() + 5000, 5000);
  EXPECT_EQ(streaming.Digest(), whole);
  // Any changed byte changes it.
  data[4321] ^= 1;
  EXPECT_NE(Checksum64::Of(data.data(), data.size()), whole);
}

TEST(ChecksumTest, OverlapIsAnError) {
  char buf[16] = {};
  auto sum = ChecksumInAddressOrder({{100, buf, 8}, {104, buf, 8}});
  EXPECT_EQ(sum.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ChecksumInAddressOrder({{100, buf, 8}, {108, buf, 8}}).ok());
}

TEST(DescriptorTest, MergesContiguousRuns) {
  char src[64];
  TransferDescriptor d;
  d.Add(src, 0, 1000, 16).Add(src + 16, 0, 1016, 16);  // both sides continue: merged
  d.Add(src + 32, 0, 2000, 16);                        // remote jumps: new segment
  d.Add(src + 48, 1, 2016, 16);                        // other region: new segment
  ASSERT_EQ(d.segments.size(), 3u);
  EXPECT_EQ(d.segments[0].length, 32u);
  EXPECT_EQ(d.TotalBytes(), 64u);
}

TEST(DescriptorTest, ValidationNamesTheBadSegment) {
  char src[64];
  TransferTarget target;
  target.regions.push_back({.remote_addr = 1000, .length = 100, .packed_rkey = "k"});
  TransferDescriptor ok;
  ok.Add(src, 0, 1000, 100);
  EXPECT_TRUE(ValidateDescriptor(ok, target).ok());

  TransferDescriptor past_end;
  past_end.Add(src, 0, 1000, 10).Add(src, 0, 1095, 10);
  absl::Status s = ValidateDescriptor(past_end, target);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("segment 1"), absl::string_view::npos) << s;

  TransferDescriptor before;
  before.Add(src, 0, 999, 2);
  EXPECT_FALSE(ValidateDescriptor(before, target).ok());
  TransferDescriptor wrap;  // remote_addr + length overflows
  wrap.segments.push_back({src, 0, 1050, ~uint64_t{0} - 10});
  EXPECT_FALSE(ValidateDescriptor(wrap, target).ok());
  TransferDescriptor no_region;
  no_region.Add(src, 3, 1000, 1);
  EXPECT_FALSE(ValidateDescriptor(no_region, target).ok());
  TransferDescriptor empty;
  empty.segments.push_back({src, 0, 1000, 0});
  EXPECT_FALSE(ValidateDescriptor(empty, target).ok());
}

TEST(LeaseTest, ExpiryAndUnixMillis) {
  const absl::Time now = absl::FromUnixMillis(1'700'000'000'000);
  const Lease lease = Lease::In(absl::Seconds(2), now);
  EXPECT_FALSE(lease.Expired(now));
  EXPECT_EQ(lease.Remaining(now), absl::Seconds(2));
  EXPECT_TRUE(lease.Expired(now + absl::Seconds(2)));
  EXPECT_EQ(lease.Remaining(now + absl::Seconds(3)), absl::ZeroDuration());
  EXPECT_EQ(Lease::FromUnixMillis(lease.ToUnixMillis()).deadline, lease.deadline);
}

TEST(CompatHashTest, OrderFreeAndSensitiveToEveryField) {
  CompatHashBuilder a;
  a.Add("model", "GKA-primed-HQwen3-32B").Add("kv_dtype", "bf16").Add("page_size", 16);
  CompatHashBuilder b;
  b.Add("page_size", 16).Add("model", "GKA-primed-HQwen3-32B").Add("kv_dtype", "bf16");
  EXPECT_EQ(a.Hash(), b.Hash());
  EXPECT_EQ(a.Canonical(), "kv_dtype=bf16\nmodel=GKA-primed-HQwen3-32B\npage_size=16\n");
  b.Add("page_size", 32);
  EXPECT_NE(a.Hash(), b.Hash());
  EXPECT_TRUE(CheckCompat(a.Hash(), a.Hash(), "w1").ok());
  absl::Status s = CheckCompat(a.Hash(), b.Hash(), "decode worker w1");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("decode worker w1"), absl::string_view::npos);
}

}  // namespace
}  // namespace gka::transfer
