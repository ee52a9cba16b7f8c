#include "common/parallel/communicator.h"

#include <gtest/gtest.h>

#include <thread>

#include "absl/strings/str_cat.h"

namespace gka::parallel {
namespace {

using tensor::Buffer;
using tensor::DType;
using tensor::Shape;

TEST(InProcessGroupTest, AllReduceSumsInRankOrderAndAllGatherConcatenates) {
  constexpr int kRanks = 4;
  auto group = CreateInProcessGroup(kRanks);
  std::vector<Buffer> bufs, gathered;
  for (int r = 0; r < kRanks; ++r) {
    bufs.push_back(Buffer::Allocate(Shape{3}, DType::kF32));
    gathered.push_back(Buffer::Allocate(Shape{kRanks, 3}, DType::kF32));
    for (int i = 0; i < 3; ++i) bufs[r].data<float>()[i] = static_cast<float>(r * 10 + i);
  }
  std::vector<std::thread> threads;
  std::vector<absl::Status> status(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      for (int rep = 0; rep < 50 && status[r].ok(); ++rep) {
        status[r] = group[r]->AllGather(bufs[r].view(), gathered[r].view());
      }
      if (status[r].ok()) status[r] = group[r]->AllReduceSum(bufs[r].view());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(bufs[r].data<float>()[i], 60.0f + 4 * i);  // Σ_r (10r + i)
      for (int q = 0; q < kRanks; ++q) {
        EXPECT_EQ(gathered[r].data<float>()[q * 3 + i], static_cast<float>(q * 10 + i));
      }
    }
  }
}

// The engine's vocab-parallel lm_head: each rank writes its logits into its own block of the
// gathered buffer and gathers in place (NCCL's in-place form).
TEST(InProcessGroupTest, AllGatherInPlaceFillsTheOtherBlocks) {
  constexpr int kRanks = 3;
  constexpr int64_t kBlock = 5;
  auto group = CreateInProcessGroup(kRanks);
  std::vector<Buffer> gathered;
  for (int r = 0; r < kRanks; ++r) {
    gathered.push_back(Buffer::Allocate(Shape{kRanks * kBlock}, DType::kF32));
    for (int64_t i = 0; i < kRanks * kBlock; ++i) gathered[r].data<float>()[i] = -1.0f;
  }
  std::vector<std::thread> threads;
  std::vector<absl::Status> status(kRanks);
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      for (int rep = 0; rep < 20 && status[r].ok(); ++rep) {
        float* mine = gathered[r].data<float>() + r * kBlock;
        for (int64_t i = 0; i < kBlock; ++i) mine[i] = static_cast<float>(rep * 100 + r * 10 + i);
        const tensor::TensorView in{mine, DType::kF32, Shape{kBlock}, tensor::Device::kCpu};
        status[r] = group[r]->AllGather(in, gathered[r].view());
        for (int q = 0; q < kRanks && status[r].ok(); ++q) {
          for (int64_t i = 0; i < kBlock; ++i) {
            if (gathered[r].data<float>()[q * kBlock + i] != rep * 100 + q * 10 + i) {
              status[r] = absl::InternalError(
                  absl::StrCat("rank ", r, " rep ", rep, ": block ", q, " element ", i, " wrong"));
              break;
            }
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(status[r].ok()) << status[r];
}

TEST(InProcessGroupTest, MismatchedSizesFailOnEveryRank) {
  auto group = CreateInProcessGroup(2);
  Buffer a = Buffer::Allocate(Shape{3}, DType::kF32), b = Buffer::Allocate(Shape{4}, DType::kF32);
  absl::Status sa, sb;
  std::thread ta([&] { sa = group[0]->AllReduceSum(a.view()); });
  std::thread tb([&] { sb = group[1]->AllReduceSum(b.view()); });
  ta.join();
  tb.join();
  EXPECT_EQ(sa.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sb.code(), absl::StatusCode::kInvalidArgument);
}

TEST(SingleRankTest, IsIdentity) {
  auto c = CreateSingleRank();
  Buffer a = Buffer::Allocate(Shape{2}, DType::kF32);
  a.data<float>()[0] = 1.5f;
  ASSERT_TRUE(c->AllReduceSum(a.view()).ok());
  EXPECT_EQ(a.data<float>()[0], 1.5f);
  EXPECT_EQ(c->world_size(), 1);
}

}  // namespace
}  // namespace gka::parallel
