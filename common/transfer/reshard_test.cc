// Resharding between TP layouts: every receiver rank's segment is rebuilt exactly, byte for
// byte, from the sender ranks' segments, for every pair of TP sizes.
#include "common/transfer/reshard.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace gka::transfer {
namespace {

// Rank r of t's segment of a global [outer][units][unit_bytes] array whose byte at
// (o, u, b) is a distinct value.
std::vector<uint8_t> RankSegment(const ShardedShape& s, int t, int r) {
  const UnitRange share = EvenShare(s.units, t, r);
  std::vector<uint8_t> out;
  for (uint64_t o = 0; o < s.outer; ++o) {
    for (uint64_t u = share.first; u < share.end(); ++u) {
      for (uint64_t b = 0; b < s.unit_bytes; ++b) {
        out.push_back(static_cast<uint8_t>((o * 131 + u * 17 + b * 7 + 1) & 0xff));
      }
    }
  }
  return out;
}

TEST(ReshardTest, EveryReceiverRankIsRebuiltExactlyOnce) {
  // A KV page (16 tokens × 8 heads × 6 bytes) and a GKA state (8 heads × 12 bytes).
  for (const ShardedShape& shape :
       {ShardedShape{16, 8, 6}, ShardedShape{1, 8, 12}, ShardedShape{3, 24, 4}}) {
    for (int p : {1, 2, 4, 8}) {
      for (int d : {1, 2, 4, 8}) {
        SCOPED_TRACE(testing::Message() << "outer " << shape.outer << " p=" << p << " d=" << d);
        for (int j = 0; j < d; ++j) {
          std::vector<uint8_t> got(shape.RankBytes(d), 0);
          std::vector<int> writes(got.size(), 0);
          for (int i = 0; i < p; ++i) {
            const std::vector<uint8_t> src = RankSegment(shape, p, i);
            ASSERT_EQ(src.size(), shape.RankBytes(p));
            for (const Piece& c : ReshardPieces(shape, p, i, d, j)) {
              ASSERT_LE(c.src_offset + c.length, src.size());
              ASSERT_LE(c.dst_offset + c.length, got.size());
              for (uint64_t k = 0; k < c.length; ++k) {
                got[c.dst_offset + k] = src[c.src_offset + k];
                ++writes[c.dst_offset + k];
              }
            }
          }
          EXPECT_EQ(got, RankSegment(shape, d, j));
          for (int w : writes) ASSERT_EQ(w, 1);
        }
      }
    }
  }
}

TEST(ReshardTest, EqualLayoutsMoveWholeSegmentsRankToRank) {
  const ShardedShape page{16, 8, 256};
  for (int t : {1, 2, 4}) {
    for (int i = 0; i < t; ++i) {
      for (int j = 0; j < t; ++j) {
        const std::vector<Piece> pieces = ReshardPieces(page, t, i, t, j);
        if (i == j) {
          EXPECT_EQ(pieces, (std::vector<Piece>{{0, 0, page.RankBytes(t)}}));
        } else {
          EXPECT_TRUE(pieces.empty());
        }
      }
    }
  }
}

TEST(ReshardTest, UnequalLayoutsSplitPagesPerTokenButStatesPerRank) {
  // 2 -> 4: receiver rank 1 holds heads [2, 4) of 8, sender rank 0 holds [0, 4).
  const ShardedShape page{16, 8, 256};
  const std::vector<Piece> pieces = ReshardPieces(page, 2, 0, 4, 1);
  ASSERT_EQ(pieces.size(), 16u);
  EXPECT_EQ(pieces[0], (Piece{2 * 256, 0, 2 * 256}));
  EXPECT_EQ(pieces[1], (Piece{4 * 256 + 2 * 256, 2 * 256, 2 * 256}));
  const ShardedShape state{1, 8, 4096};
  EXPECT_EQ(ReshardPieces(state, 2, 0, 4, 1), (std::vector<Piece>{{2 * 4096, 0, 2 * 4096}}));
  // 4 -> 2: receiver rank 0 gets sender rank 1's whole state after sender rank 0's.
  EXPECT_EQ(ReshardPieces(state, 4, 1, 2, 0), (std::vector<Piece>{{0, 2 * 4096, 2 * 4096}}));
  EXPECT_TRUE(ReshardPieces(state, 4, 2, 2, 0).empty());
}

TEST(ReshardTest, SourceRanks) {
  EXPECT_EQ(SourceRanks(2, 4, 3), (std::vector<int>{1}));
  EXPECT_EQ(SourceRanks(4, 2, 1), (std::vector<int>{2, 3}));
  EXPECT_EQ(SourceRanks(1, 4, 2), (std::vector<int>{0}));
  EXPECT_EQ(SourceRanks(2, 3, 1), (std::vector<int>{0, 1}));
  EXPECT_EQ(SourceRanks(3, 3, 2), (std::vector<int>{2}));
}

TEST(ReshardTest, UnsplittableLayoutIsRefusedByName) {
  const absl::Status s = CheckShardable({16, 2, 128}, 4, "the KV heads");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("KV heads"), std::string::npos) << s;
  EXPECT_TRUE(CheckShardable({16, 2, 128}, 2, "the KV heads").ok());
  EXPECT_FALSE(CheckShardable({16, 2, 128}, 0, "the KV heads").ok());
}

}  // namespace
}  // namespace gka::transfer
