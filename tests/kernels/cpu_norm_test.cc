// CPU RmsNorm, QkNormRope and GatedRmsNorm against double-precision loops.
#include <algorithm>
#include <cmath>
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

// w ⊙ x / sqrt(mean(x²) + eps) per row of n, in double.
std::vector<double> NaiveRmsNorm(const std::vector<double>& x, const HostTensor& w, double eps) {
  const int64_t n = w.values().size();
  std::vector<double> out(x.size());
  for (size_t r = 0; r < x.size() / n; ++r) {
    double ss = 0.0;
    for (int64_t j = 0; j < n; ++j) ss += x[r * n + j] * x[r * n + j];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    for (int64_t j = 0; j < n; ++j) out[r * n + j] = x[r * n + j] * inv * w[j];
  }
  return out;
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(CpuRmsNormTest, MatchesNaive) {
  std::mt19937 rng(1);
  HostTensor x = RandomTensor({5, 37}, rng, -3.0f, 3.0f);
  HostTensor w = RandomTensor({37}, rng, 0.5f, 1.5f);
  HostTensor out({5, 37});
  ASSERT_TRUE(RmsNorm({.x = x.view(), .weight = w.view(), .out = out.view(), .eps = 1e-6f}).ok());
  EXPECT_TRUE(AllClose(out.values(), NaiveRmsNorm(ToDouble(x.values()), w, 1e-6), 1e-5, 1e-6));
}

TEST(CpuRmsNormTest, FusedResidualUpdatesResidualThenNormalises) {
  std::mt19937 rng(2);
  HostTensor x = RandomTensor({2, 3, 16}, rng);  // leading dims are rows
  HostTensor residual = RandomTensor({2, 3, 16}, rng);
  HostTensor w = RandomTensor({16}, rng, 0.5f, 1.5f);
  std::vector<float> sum(x.values().size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = x[i] + residual[i];
  // out aliases x, as the engine does for the residual stream.
  ASSERT_TRUE(RmsNorm({.x = x.view(),
                       .residual = residual.view(),
                       .weight = w.view(),
                       .out = x.view(),
                       .eps = 1e-5f})
                  .ok());
  EXPECT_TRUE(BitwiseEqual(residual.values(), sum));
  EXPECT_TRUE(AllClose(x.values(), NaiveRmsNorm(ToDouble(sum), w, 1e-5), 1e-5, 1e-6));
}

TEST(CpuRmsNormTest, RejectsBadArguments) {
  HostTensor x({2, 8}), w({8}), out({2, 8}), res({2, 8});
  EXPECT_TRUE(IsInvalidArgumentStatus(
      RmsNorm({.x = x.view(), .weight = w.view_as({7}), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(
      RmsNorm({.x = x.view(), .weight = w.view(), .out = out.view_as({8, 2})})));
  EXPECT_TRUE(IsInvalidArgumentStatus(RmsNorm(
      {.x = x.view(), .residual = res.view_as({16}), .weight = w.view(), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(
      RmsNorm({.x = x.view(), .residual = res.view(), .weight = w.view(), .out = res.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(RmsNorm(
      {.x = x.view_as({2, 8}, tensor::DType::kBF16), .weight = w.view(), .out = out.view()})));
}

// Per-head RMSNorm then neox RoPE, in double with the fp32 angle of norm.h's contract.
void NaiveQkNormRope(std::vector<double>& x, int64_t heads, int64_t d, const HostTensor& w,
                     const std::vector<int32_t>& positions, float theta, double eps) {
  const int64_t half = d / 2;
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = x.data() + (t * heads + h) * d;
      std::vector<double> head(v, v + d);
      head = NaiveRmsNorm(head, w, eps);
      for (int64_t j = 0; j < half; ++j) {
        const float inv_freq = static_cast<float>(std::pow(double{theta}, -2.0 * j / d));
        const double angle = static_cast<float>(positions[t]) * inv_freq;
        v[j] = head[j] * std::cos(angle) - head[j + half] * std::sin(angle);
        v[j + half] = head[j + half] * std::cos(angle) + head[j] * std::sin(angle);
      }
    }
  }
}

TEST(CpuQkNormRopeTest, MatchesNaive) {
  std::mt19937 rng(3);
  constexpr int kT = 4, kHq = 4, kHkv = 2, kD = 16;
  HostTensor q = RandomTensor({kT, kHq, kD}, rng);
  HostTensor k = RandomTensor({kT, kHkv, kD}, rng);
  HostTensor qw = RandomTensor({kD}, rng, 0.5f, 1.5f);
  HostTensor kw = RandomTensor({kD}, rng, 0.5f, 1.5f);
  const std::vector<int32_t> positions = {0, 1, 37, 131071};
  std::vector<double> q_ref = ToDouble(q.values()), k_ref = ToDouble(k.values());
  NaiveQkNormRope(q_ref, kHq, kD, qw, positions, 5e6f, 1e-6);
  NaiveQkNormRope(k_ref, kHkv, kD, kw, positions, 5e6f, 1e-6);
  ASSERT_TRUE(QkNormRope({.q = q.view(),
                          .k = k.view(),
                          .q_weight = qw.view(),
                          .k_weight = kw.view(),
                          .positions = positions.data(),
                          .theta = 5e6f,
                          .eps = 1e-6f})
                  .ok());
  EXPECT_TRUE(AllClose(q.values(), q_ref, 1e-5, 1e-5));
  EXPECT_TRUE(AllClose(k.values(), k_ref, 1e-5, 1e-5));
}

// Position 0 is the identity rotation: the result is the plain per-head RMSNorm, so the
// norm comes before the rotation; and the pairs are (j, j + D/2), not (2j, 2j + 1).
TEST(CpuQkNormRopeTest, NormFirstAndHalfSplitPairs) {
  constexpr int kD = 8;
  HostTensor q({2, 1, kD}), k({2, 1, kD});
  HostTensor w({kD}, 1.0f);
  for (int j = 0; j < kD; ++j) q[j] = q[kD + j] = k[j] = k[kD + j] = (j == 0 ? 2.0f : 0.0f);
  const std::vector<int32_t> positions = {0, 1};
  ASSERT_TRUE(QkNormRope({.q = q.view(),
                          .k = k.view(),
                          .q_weight = w.view(),
                          .k_weight = w.view(),
                          .positions = positions.data(),
                          .theta = 10000.0f,
                          .eps = 0.0f})
                  .ok());
  // x = 2·e0 normalises to sqrt(8)·e0; at position 1, pair (0, 4) rotates by 1 rad.
  EXPECT_NEAR(q[0], std::sqrt(8.0), 1e-6);
  EXPECT_NEAR(q[kD + 0], std::sqrt(8.0) * std::cos(1.0), 1e-6);
  EXPECT_NEAR(q[kD + 4], std::sqrt(8.0) * std::sin(1.0), 1e-6);
  EXPECT_EQ(q[kD + 1], 0.0f);
}

TEST(CpuQkNormRopeTest, RejectsBadArguments) {
  HostTensor q({2, 4, 8}), k({2, 2, 8}), w({8});
  const std::vector<int32_t> pos = {0, 1};
  const std::vector<int32_t> negative = {0, -1};
  QkNormRopeParams p{.q = q.view(),
                     .k = k.view(),
                     .q_weight = w.view(),
                     .k_weight = w.view(),
                     .positions = pos.data()};
  ASSERT_TRUE(QkNormRope(p).ok());
  auto with = [&](auto mutate) { return testing::CallChanged(QkNormRope, p, mutate); };
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) { b.k = k.view_as({2, 1, 16}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) {
    b.q = q.view_as({2, 4, 7});
  })));  // odd D
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) { b.q_weight = w.view_as({4}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) { b.positions = nullptr; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) { b.positions = negative.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) { b.theta = 0.0f; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& b) {
    b.k = k.view_as({2, 2, 8}, tensor::DType::kBF16);
  })));
}

// q and k as column ranges of a fused [T, q|k|v] output (one row stride): bitwise the packed
// result, in place, and nothing outside the two ranges written.
TEST(CpuQkNormRopeTest, StridedColumnsMatchPackedBitwise) {
  std::mt19937 rng(7);
  constexpr int kT = 3, kHq = 4, kHkv = 2, kD = 16;
  constexpr int kStride = (kHq + 2 * kHkv) * kD + 3;
  HostTensor q = RandomTensor({kT, kHq, kD}, rng), k = RandomTensor({kT, kHkv, kD}, rng);
  HostTensor qw = RandomTensor({kD}, rng, 0.5f, 1.5f), kw = RandomTensor({kD}, rng, 0.5f, 1.5f);
  const std::vector<int32_t> positions = {5, 900, 70000};
  HostTensor wide = testing::WideColumns(q, kStride, 0);
  for (int t = 0; t < kT; ++t) {
    std::copy_n(k.data() + t * kHkv * kD, kHkv * kD, wide.data() + t * kStride + kHq * kD);
  }
  const HostTensor before = wide;
  QkNormRopeParams p{.q = q.view(),
                     .k = k.view(),
                     .q_weight = qw.view(),
                     .k_weight = kw.view(),
                     .positions = positions.data(),
                     .theta = 1e6f};
  ASSERT_TRUE(QkNormRope(p).ok());
  p.q = tensor::TensorView{wide.data(), tensor::DType::kF32, {kT, kHq, kD}};
  p.k = tensor::TensorView{wide.data() + kHq * kD, tensor::DType::kF32, {kT, kHkv, kD}};
  p.row_stride = kStride;
  ASSERT_TRUE(QkNormRope(p).ok());
  for (int t = 0; t < kT; ++t) {
    const float* row = wide.data() + t * kStride;
    EXPECT_TRUE(BitwiseEqual(row, q.data() + t * kHq * kD, kHq * kD));
    EXPECT_TRUE(BitwiseEqual(row + kHq * kD, k.data() + t * kHkv * kD, kHkv * kD));
    const int rest = (kHq + kHkv) * kD;
    EXPECT_TRUE(BitwiseEqual(row + rest, before.data() + t * kStride + rest, kStride - rest));
  }
  p.row_stride = kHq * kD - 1;  // narrower than a token's q heads
  EXPECT_TRUE(IsInvalidArgumentStatus(QkNormRope(p)));
}

TEST(CpuGatedRmsNormTest, MatchesNaiveWithAndWithoutGate) {
  std::mt19937 rng(4);
  constexpr int kRows = 6, kD = 24;
  HostTensor x = RandomTensor({kRows, kD}, rng, -2.0f, 2.0f);
  HostTensor gate = RandomTensor({kRows, kD}, rng, -4.0f, 4.0f);
  HostTensor w = RandomTensor({kD}, rng, 0.5f, 1.5f);
  const std::vector<double> normed = NaiveRmsNorm(ToDouble(x.values()), w, 1e-6);
  std::vector<double> gated(normed.size());
  for (size_t i = 0; i < gated.size(); ++i) gated[i] = normed[i] * testing::Silu(gate[i]);

  HostTensor out({kRows, kD});
  ASSERT_TRUE(
      GatedRmsNorm({.x = x.view(), .gate = gate.view(), .weight = w.view(), .out = out.view()})
          .ok());
  EXPECT_TRUE(AllClose(out.values(), gated, 1e-5, 1e-6));
  ASSERT_TRUE(GatedRmsNorm({.x = x.view(), .weight = w.view(), .out = out.view()}).ok());
  EXPECT_TRUE(AllClose(out.values(), normed, 1e-5, 1e-6));
  // [T, H, D] views are accepted as rows of D; out may alias the gate.
  HostTensor gate_copy = gate;
  ASSERT_TRUE(GatedRmsNorm({.x = x.view_as({2, 3, kD}),
                            .gate = gate_copy.view_as({2, 3, kD}),
                            .weight = w.view(),
                            .out = gate_copy.view_as({2, 3, kD})})
                  .ok());
  EXPECT_TRUE(AllClose(gate_copy.values(), gated, 1e-5, 1e-6));
}

// The gate as a column range of the fused GKA projection [T, ...|g|...]: row r = token
// r / H, head r % H; bitwise the packed result.
TEST(CpuGatedRmsNormTest, StridedGateMatchesPackedBitwise) {
  std::mt19937 rng(8);
  constexpr int kT = 3, kH = 2, kD = 8, kOffset = 5, kStride = kH * kD + 11;
  HostTensor x = RandomTensor({kT * kH, kD}, rng, -2.0f, 2.0f);
  HostTensor gate = RandomTensor({kT, kH * kD}, rng, -4.0f, 4.0f);
  HostTensor w = RandomTensor({kD}, rng, 0.5f, 1.5f);
  HostTensor packed({kT * kH, kD}), strided({kT * kH, kD});
  ASSERT_TRUE(GatedRmsNorm({.x = x.view(),
                            .gate = gate.view_as({kT * kH, kD}),
                            .weight = w.view(),
                            .out = packed.view()})
                  .ok());
  HostTensor wide = testing::WideColumns(gate, kStride, kOffset);
  GatedRmsNormParams p{
      .x = x.view(),
      .gate = tensor::TensorView{wide.data() + kOffset, tensor::DType::kF32, {kT * kH, kD}},
      .gate_token_stride = kStride,
      .gate_heads = kH,
      .weight = w.view(),
      .out = strided.view()};
  ASSERT_TRUE(GatedRmsNorm(p).ok());
  EXPECT_TRUE(BitwiseEqual(strided.values(), packed.values()));
  p.gate_heads = 4;  // does not divide the 6 rows
  EXPECT_TRUE(IsInvalidArgumentStatus(GatedRmsNorm(p)));
  p.gate_heads = kH;
  p.gate_token_stride = kH * kD - 1;
  EXPECT_TRUE(IsInvalidArgumentStatus(GatedRmsNorm(p)));
}

TEST(CpuGatedRmsNormTest, RejectsBadArguments) {
  HostTensor x({4, 8}), gate({4, 8}), w({8}), out({4, 8});
  EXPECT_TRUE(IsInvalidArgumentStatus(GatedRmsNorm(
      {.x = x.view(), .gate = gate.view_as({8, 4}), .weight = w.view(), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(
      GatedRmsNorm({.x = x.view(), .weight = w.view_as({4}), .out = out.view()})));
  EXPECT_TRUE(IsInvalidArgumentStatus(GatedRmsNorm(
      {.x = x.view(), .weight = w.view(), .out = out.view_as({4, 8}, tensor::DType::kBF16)})));
}

}  // namespace
}  // namespace gka::kernels::cpu
