// CPU CausalConv against the reference formula (gka_reference.causal_conv_silu), with short
// sequences (T < K-1), state continuation across calls and strided input rows.
#include <algorithm>
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

constexpr int kC = 11, kK = 4, kSlots = 5;

// xp = [state ; x] (oldest first), y[t] = silu(Σ_j w[c, j]·xp[t + j]), state ← last K-1 of xp.
// x: [T, C] of one sequence; state: [C, K-1] updated in place.
std::vector<double> NaiveConv(const std::vector<float>& x, const HostTensor& w,
                              std::vector<float>& state, int k) {
  const int len = x.size() / kC;
  std::vector<double> y(len * kC);
  for (int c = 0; c < kC; ++c) {
    std::vector<float> xp;
    for (int i = 0; i < k - 1; ++i) xp.push_back(state[c * (k - 1) + i]);
    for (int t = 0; t < len; ++t) xp.push_back(x[t * kC + c]);
    for (int t = 0; t < len; ++t) {
      double acc = 0.0;
      for (int j = 0; j < k; ++j) acc += double{w[c * k + j]} * xp[t + j];
      y[t * kC + c] = testing::Silu(acc);
    }
    for (int i = 0; i < k - 1; ++i) state[c * (k - 1) + i] = xp[xp.size() - (k - 1) + i];
  }
  return y;
}

// CausalConv over sequences of `lens` tokens (one per slot in `slots`).
absl::Status RunConv(tensor::TensorView x, HostTensor& out, HostTensor& w, HostTensor& state,
                     const std::vector<int32_t>& slots, const std::vector<int32_t>& lens,
                     int64_t x_row_stride = 0) {
  const std::vector<int32_t> cu = testing::PrefixSums(lens);
  return CausalConv({.x = x,
                     .x_row_stride = x_row_stride,
                     .out = out.view(),
                     .weight = w.view(),
                     .state = state.view(),
                     .slots = slots.data(),
                     .cu_seqlens = cu.data(),
                     .num_seqs = static_cast<int32_t>(lens.size())});
}

std::vector<float> Rows(const HostTensor& t, int begin, int end, int width) {
  return {t.data() + begin * width, t.data() + end * width};
}

TEST(CpuCausalConvTest, VarlenBatchMatchesReferenceIncludingShortSequences) {
  std::mt19937 rng(1);
  const std::vector<int32_t> lens = {5, 1, 2, 0};  // 1 and 2 are shorter than K-1 = 3
  const std::vector<int32_t> slots = {2, 0, 3, 4};
  const std::vector<int32_t> cu = testing::PrefixSums(lens);
  HostTensor x = RandomTensor({cu.back(), kC}, rng, -2.0f, 2.0f);
  HostTensor w = RandomTensor({kC, kK}, rng, -0.5f, 0.5f);
  HostTensor state = RandomTensor({kSlots, kC, kK - 1}, rng, -2.0f, 2.0f);
  HostTensor expected_state = state;
  HostTensor out({cu.back(), kC});
  ASSERT_TRUE(RunConv(x.view(), out, w, state, slots, lens).ok());
  for (int b = 0; b < 4; ++b) {
    SCOPED_TRACE(b);
    std::vector<float> s(expected_state.data() + slots[b] * kC * (kK - 1),
                         expected_state.data() + (slots[b] + 1) * kC * (kK - 1));
    const std::vector<double> y = NaiveConv(Rows(x, cu[b], cu[b + 1], kC), w, s, kK);
    std::copy(s.begin(), s.end(), expected_state.data() + slots[b] * kC * (kK - 1));
    EXPECT_TRUE(AllClose(Rows(out, cu[b], cu[b + 1], kC), y, 1e-5, 1e-6));
  }
  // Slot 1 is not in the batch and slot 4's sequence is empty: both unchanged.
  EXPECT_TRUE(BitwiseEqual(state.values(), expected_state.values()));
}

// A prompt split anywhere (including pieces shorter than K-1) gives the unsplit bits.
TEST(CpuCausalConvTest, SplitContinuationEqualsUnsplitRun) {
  std::mt19937 rng(2);
  constexpr int kT = 9;
  HostTensor x = RandomTensor({kT, kC}, rng, -2.0f, 2.0f);
  HostTensor w = RandomTensor({kC, kK}, rng, -0.5f, 0.5f);
  const std::vector<int32_t> slot = {1};
  auto run = [&](HostTensor& state, int begin, int end, float* out) {
    HostTensor piece({end - begin, kC}), y({end - begin, kC});
    std::copy_n(x.data() + begin * kC, (end - begin) * kC, piece.data());
    ASSERT_TRUE(RunConv(piece.view(), y, w, state, slot, {end - begin}).ok());
    std::copy(y.values().begin(), y.values().end(), out + begin * kC);
  };
  HostTensor whole_state({2, kC, kK - 1}), whole({kT, kC});
  run(whole_state, 0, kT, whole.data());
  for (std::vector<int> cuts : {std::vector<int>{2, 3}, {1, 2, 3, 4, 5, 6, 7, 8}, {5}}) {
    SCOPED_TRACE(cuts.size());
    HostTensor split_state({2, kC, kK - 1}), split({kT, kC});
    int begin = 0;
    cuts.push_back(kT);
    for (int end : cuts) {
      run(split_state, begin, end, split.data());
      begin = end;
    }
    EXPECT_TRUE(BitwiseEqual(split.values(), whole.values()));
    EXPECT_TRUE(BitwiseEqual(split_state.values(), whole_state.values()));
  }
}

// Rows of a wider buffer (e.g. one projection's columns of a fused GEMM output).
TEST(CpuCausalConvTest, RowStrideReadsTheRightColumns) {
  std::mt19937 rng(3);
  constexpr int kT = 6, kWide = 3 * kC, kOffset = kC;
  HostTensor wide = RandomTensor({kT, kWide}, rng);
  HostTensor packed({kT, kC});
  for (int t = 0; t < kT; ++t) {
    std::copy_n(wide.data() + t * kWide + kOffset, kC, packed.data() + t * kC);
  }
  HostTensor w = RandomTensor({kC, kK}, rng);
  HostTensor state_a({1, kC, kK - 1}), state_b({1, kC, kK - 1}), out_a({kT, kC}), out_b({kT, kC});
  const tensor::TensorView columns{wide.data() + kOffset, tensor::DType::kF32,
                                   tensor::Shape{kT, kC}};
  ASSERT_TRUE(RunConv(columns, out_a, w, state_a, {0}, {kT}, /*x_row_stride=*/kWide).ok());
  ASSERT_TRUE(RunConv(packed.view(), out_b, w, state_b, {0}, {kT}).ok());
  EXPECT_TRUE(BitwiseEqual(out_a.values(), out_b.values()));
  EXPECT_TRUE(BitwiseEqual(state_a.values(), state_b.values()));
}

TEST(CpuCausalConvTest, KernelWidthOneHasNoState) {
  std::mt19937 rng(4);
  HostTensor x = RandomTensor({3, kC}, rng), w = RandomTensor({kC, 1}, rng);
  HostTensor state({1, kC, 0}), out({3, kC});
  ASSERT_TRUE(RunConv(x.view(), out, w, state, {0}, {3}).ok());
  std::vector<double> expected(3 * kC);
  for (int t = 0; t < 3; ++t) {
    for (int c = 0; c < kC; ++c) expected[t * kC + c] = testing::Silu(double{w[c]} * x[t * kC + c]);
  }
  EXPECT_TRUE(AllClose(out.values(), expected, 1e-6, 1e-7));
}

TEST(CpuCausalConvTest, RejectsBadArguments) {
  HostTensor x({4, kC}), w({kC, kK}), state({kSlots, kC, kK - 1}), out({4, kC});
  const std::vector<int32_t> slots = {0, 1}, cu = {0, 1, 4};
  const CausalConvParams good{.x = x.view(),
                              .out = out.view(),
                              .weight = w.view(),
                              .state = state.view(),
                              .slots = slots.data(),
                              .cu_seqlens = cu.data(),
                              .num_seqs = 2};
  ASSERT_TRUE(CausalConv(good).ok());
  auto with = [&](auto mutate) { return testing::CallChanged(CausalConv, good, mutate); };
  const std::vector<int32_t> same_slot = {1, 1}, far_slot = {0, kSlots}, bad_cu = {0, 1, 3};
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.weight = w.view_as({kC - 1, kK}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.state = state.view_as({kSlots, kC, kK});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.x_row_stride = kC - 1; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.slots = same_slot.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.slots = far_slot.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.cu_seqlens = bad_cu.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.out = x.view(); })));  // overlaps x
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.out = out.view_as({4, kC - 1}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.x = x.view_as({4, kC}, tensor::DType::kBF16);
  })));
}

}  // namespace
}  // namespace gka::kernels::cpu
