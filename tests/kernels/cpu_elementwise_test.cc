// CPU Embedding, SiluMul and Add against naive loops, plus argument validation.
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace gka::kernels::cpu {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::HostTensor;
using testing::IsInvalidArgumentStatus;
using testing::RandomTensor;

TEST(CpuEmbeddingTest, CopiesTableRows) {
  std::mt19937 rng(1);
  HostTensor table = RandomTensor({10, 6}, rng);
  const std::vector<int32_t> ids = {3, 0, 9, 3};
  HostTensor out({4, 6});
  ASSERT_TRUE(Embedding({.table = table.view(), .ids = ids.data(), .out = out.view()}).ok());
  for (int t = 0; t < 4; ++t) {
    EXPECT_TRUE(BitwiseEqual(out.data() + t * 6, table.data() + ids[t] * 6, 6)) << t;
  }
}

TEST(CpuEmbeddingTest, RejectsBadArguments) {
  HostTensor table({10, 6}), out({2, 6});
  const std::vector<int32_t> out_of_range = {1, 10};
  const std::vector<int32_t> negative = {-1, 0};
  const std::vector<int32_t> ok = {1, 2};
  EXPECT_TRUE(IsInvalidArgumentStatus(
      Embedding({.table = table.view(), .ids = out_of_range.data(), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(
      Embedding({.table = table.view(), .ids = negative.data(), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(Embedding({.table = table.view(), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(
      Embedding({.table = table.view(), .ids = ok.data(), .out = out.view_as({2, 5})})));
  EXPECT_TRUE(
      IsInvalidArgumentStatus(Embedding({.table = table.view_as({10, 6}, tensor::DType::kBF16),
                                         .ids = ok.data(),
                                         .out = out.view()})));
}

TEST(CpuSiluMulTest, MatchesNaive) {
  std::mt19937 rng(2);
  constexpr int kT = 3, kF = 13;
  HostTensor gate_up = RandomTensor({kT, 2 * kF}, rng, -30.0f, 30.0f);
  HostTensor out({kT, kF});
  ASSERT_TRUE(SiluMul({.gate_up = gate_up.view(), .out = out.view()}).ok());
  std::vector<double> expected(kT * kF);
  for (int t = 0; t < kT; ++t) {
    for (int j = 0; j < kF; ++j) {
      expected[t * kF + j] = testing::Silu(gate_up[t * 2 * kF + j]) * gate_up[t * 2 * kF + kF + j];
    }
  }
  EXPECT_TRUE(AllClose(out.values(), expected, 1e-6, 1e-7));
}

TEST(CpuSiluMulTest, RejectsBadArguments) {
  HostTensor gate_up({2, 8}), out({2, 4});
  EXPECT_TRUE(
      IsInvalidArgumentStatus(SiluMul({.gate_up = gate_up.view_as({2, 7}), .out = out.view()})));
  EXPECT_TRUE(
      IsInvalidArgumentStatus(SiluMul({.gate_up = gate_up.view(), .out = out.view_as({2, 3})})));
  EXPECT_TRUE(IsInvalidArgumentStatus(
      SiluMul({.gate_up = gate_up.view(), .out = out.view_as({2, 4}, tensor::DType::kF16)})));
}

TEST(CpuAddTest, AddsInPlace) {
  std::mt19937 rng(3);
  HostTensor x = RandomTensor({4, 5, 3}, rng);
  HostTensor y = RandomTensor({4, 5, 3}, rng);
  std::vector<float> expected(y.values().size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = y[i] + x[i];
  ASSERT_TRUE(Add({.x = x.view(), .y = y.view()}).ok());
  EXPECT_TRUE(BitwiseEqual(y.values(), expected));
}

TEST(CpuAddTest, RejectsBadArguments) {
  HostTensor x({4, 5}), y({4, 5});
  EXPECT_TRUE(IsInvalidArgumentStatus(Add({.x = x.view(), .y = y.view_as({5, 4})})));
  EXPECT_TRUE(
      IsInvalidArgumentStatus(Add({.x = x.view_as({4, 5}, tensor::DType::kBF16), .y = y.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(Add({.y = y.view()})));
}

}  // namespace
}  // namespace gka::kernels::cpu
