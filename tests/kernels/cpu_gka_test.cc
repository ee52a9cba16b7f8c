// CPU GkaGates and GkaCore (model-spec §3.4) against double-precision loops written from the
// spec, plus the properties the engine relies on: decode steps == one prefill call, varlen
// batch == separate runs (bitwise), num_iter 0 still updates h_kk, and the Chebyshev solve
// converging to the ridge solution.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace gka::kernels::cpu {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::HostTensor;
using testing::IsInvalidArgumentStatus;
using testing::RandomTensor;

// ‖a − b‖ / ‖b‖.
double RelL2(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

double Softplus(double z) { return z > 20.0 ? z : std::log1p(std::exp(z)); }

// ---------------------------------------------------------------------------------------
// GkaGates

struct GateInputs {
  static constexpr int kT = 3, kH = 4, kHq = 4, kHk = 2, kHv = 2, kD = 8;
  static constexpr int kStride = 3 * kH + 1;  // a | b | c columns of one fused GEMM output
  HostTensor q_conv, k_conv, v_conv, fused, a_log, dt_bias, b_bias, alpha_bias;
  explicit GateInputs(std::mt19937& rng)
      : q_conv(RandomTensor({kT, kHq * kD}, rng)),
        k_conv(RandomTensor({kT, kHk * kD}, rng)),
        v_conv(RandomTensor({kT, kHv * kD}, rng)),
        fused(RandomTensor({kT, kStride}, rng, -3.0f, 3.0f)),
        a_log(RandomTensor({kH}, rng, 0.0f, 2.7f)),
        dt_bias(RandomTensor({kH}, rng, -6.0f, -2.0f)),
        b_bias(RandomTensor({kH}, rng)),
        alpha_bias(RandomTensor({kH}, rng)) {
    fused[kStride + 0] = 100.0f;  // a + dt_bias > 20 at token 1, head 0: softplus(z) = z
  }
  // Outputs.
  HostTensor q{{kT, kH, kD}}, k{{kT, kH, kD}}, v{{kT, kH, kD}};
  HostTensor alpha{{kT, kH}, -1.0f}, g{{kT, kH}, -1.0f};

  tensor::TensorView Column(int offset) {
    return tensor::TensorView{fused.data() + offset, tensor::DType::kF32, tensor::Shape{kT, kH}};
  }
  // Every gate on: beta, alpha and the forgetting gate with their biases.
  GkaGatesParams AllGates() {
    return {.q_conv = q_conv.view(),
            .k_conv = k_conv.view(),
            .v_conv = v_conv.view(),
            .a = Column(0),
            .b = Column(kH),
            .c = Column(2 * kH),
            .gate_row_stride = kStride,
            .a_log = a_log.view(),
            .dt_bias = dt_bias.view(),
            .b_bias = b_bias.view(),
            .alpha_bias = alpha_bias.view(),
            .q_out = q.view(),
            .k_out = k.view(),
            .v_out = v.view(),
            .alpha = alpha.view(),
            .g = g.view()};
  }
};

TEST(CpuGkaGatesTest, MatchesSpecWithGqaStrideAndAllGates) {
  using G = GateInputs;
  std::mt19937 rng(1);
  G in(rng);
  ASSERT_TRUE(GkaGates(in.AllGates()).ok());
  std::vector<double> eq, ek, ev, ealpha, eg;
  for (int t = 0; t < G::kT; ++t) {
    for (int e = 0; e < G::kH; ++e) {
      auto l2 = [](const float* x) {
        double s = 0.0;
        for (int j = 0; j < G::kD; ++j) s += double{x[j]} * x[j];
        return std::sqrt(s) + 1e-6;
      };
      const float* qs = in.q_conv.data() + (t * G::kHq + e / (G::kH / G::kHq)) * G::kD;
      const float* ks = in.k_conv.data() + (t * G::kHk + e / (G::kH / G::kHk)) * G::kD;
      const float* vs = in.v_conv.data() + (t * G::kHv + e / (G::kH / G::kHv)) * G::kD;
      const double a = in.fused[t * G::kStride + e];
      const double b = in.fused[t * G::kStride + G::kH + e];
      const double c = in.fused[t * G::kStride + 2 * G::kH + e];
      const double beta = testing::Sigmoid(b + in.b_bias[e]) + 1e-6;
      for (int j = 0; j < G::kD; ++j) {
        eq.push_back(qs[j] / l2(qs));
        ek.push_back(beta * ks[j] / l2(ks));
        ev.push_back(beta * vs[j]);
      }
      ealpha.push_back(testing::Sigmoid(c + in.alpha_bias[e]));
      eg.push_back(-std::exp(double{in.a_log[e]}) * Softplus(a + in.dt_bias[e]));
    }
  }
  EXPECT_TRUE(AllClose(in.q.values(), eq, 1e-5, 1e-7));
  EXPECT_TRUE(AllClose(in.k.values(), ek, 1e-5, 1e-7));
  EXPECT_TRUE(AllClose(in.v.values(), ev, 1e-5, 1e-7));
  EXPECT_TRUE(AllClose(in.alpha.values(), ealpha, 1e-5, 1e-7));
  EXPECT_TRUE(AllClose(in.g.values(), eg, 1e-5, 1e-7));
  // Above the softplus threshold g is exactly -exp(A_log)·z (no exp overflow at z = 100).
  EXPECT_EQ(in.g[1 * G::kH + 0], -std::exp(in.a_log[0]) * (100.0f + in.dt_bias[0]));
}

TEST(CpuGkaGatesTest, DisabledGatesGiveIdentityValues) {
  using G = GateInputs;
  std::mt19937 rng(2);
  G in(rng);
  GkaGatesParams p = in.AllGates();
  p.a = p.b = p.c = p.a_log = p.dt_bias = p.b_bias = p.alpha_bias = {};
  p.use_forgetting_gate = false;
  ASSERT_TRUE(GkaGates(p).ok());
  for (int t = 0; t < G::kT; ++t) {
    for (int e = 0; e < G::kH; ++e) {
      const float* vs = in.v_conv.data() + (t * G::kHv + e / 2) * G::kD;
      const float* k_row = in.k.data() + (t * G::kH + e) * G::kD;
      EXPECT_TRUE(BitwiseEqual(in.v.data() + (t * G::kH + e) * G::kD, vs, G::kD));  // ṽ = v
      double norm = 0.0;
      for (int j = 0; j < G::kD; ++j) norm += double{k_row[j]} * k_row[j];
      EXPECT_NEAR(norm, 1.0, 1e-5);  // k̃ = k̂, no beta factor
    }
  }
  const std::vector<float>& alpha = in.alpha.values();
  const std::vector<float>& g = in.g.values();
  EXPECT_TRUE(std::all_of(alpha.begin(), alpha.end(), [](float x) { return x == 1.0f; }));
  EXPECT_TRUE(std::all_of(g.begin(), g.end(), [](float x) { return x == 0.0f; }));
}

TEST(CpuGkaGatesTest, RejectsBadArguments) {
  using G = GateInputs;
  std::mt19937 rng(3);
  G in(rng);
  GkaGatesParams good = in.AllGates();
  good.b = good.b_bias = {};  // no beta gate
  ASSERT_TRUE(GkaGates(good).ok());
  auto with = [&](auto mutate) { return testing::CallChanged(GkaGates, good, mutate); };
  // Not whole heads of D; 3 native heads do not divide H = 4.
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.k_conv = in.k_conv.view_as({G::kT, 3 * G::kD / 2});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.q_conv = in.q_conv.view_as({G::kT, 3 * G::kD});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.a = {}; })));  // forgetting gate on
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.a_log = {}; })));
  EXPECT_TRUE(
      IsInvalidArgumentStatus(with([&](auto& p) { p.b_bias = in.b_bias.view(); })));  // no b
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.gate_row_stride = G::kH - 1; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.alpha = in.g.view_as({G::kT, G::kH - 1});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.q_conv = in.q_conv.view_as({G::kT, G::kHq * G::kD}, tensor::DType::kBF16);
  })));
}

// ---------------------------------------------------------------------------------------
// GkaCore

// Realistic core inputs: unit q̂, k̃ = (β + 1e-6)·k̂, ṽ = (β + 1e-6)·v, α ∈ (0, 1), g < 0.
struct CoreInputs {
  int t, h, d;
  HostTensor q, k, v, alpha, g;
  CoreInputs(int tokens, int heads, int dim, std::mt19937& rng)
      : t(tokens),
        h(heads),
        d(dim),
        q({tokens, heads, dim}),
        k({tokens, heads, dim}),
        v(RandomTensor({tokens, heads, dim}, rng)),
        alpha(RandomTensor({tokens, heads}, rng, 0.05f, 0.95f)),
        g(RandomTensor({tokens, heads}, rng, -0.5f, -0.001f)) {
    std::normal_distribution<float> normal;
    std::uniform_real_distribution<float> beta(0.05f, 1.0f);
    for (int row = 0; row < tokens * heads; ++row) {
      float qn = 0.0f, kn = 0.0f;
      for (int j = 0; j < dim; ++j) {
        q[row * dim + j] = normal(rng);
        k[row * dim + j] = normal(rng);
        qn += q[row * dim + j] * q[row * dim + j];
        kn += k[row * dim + j] * k[row * dim + j];
      }
      const float b = beta(rng) + 1e-6f;
      for (int j = 0; j < dim; ++j) {
        q[row * dim + j] /= std::sqrt(qn);
        k[row * dim + j] *= b / std::sqrt(kn);
        v[row * dim + j] *= b;
      }
    }
  }
  // Tokens [begin, end) as their own inputs.
  CoreInputs Slice(int begin, int end) const {
    CoreInputs s = *this;
    s.t = end - begin;
    auto cut = [&](const HostTensor& src, HostTensor& dst, int width) {
      tensor::Shape shape = src.shape();
      shape[0] = end - begin;
      dst = HostTensor(shape);
      std::copy(src.data() + begin * width, src.data() + end * width, dst.data());
    };
    cut(q, s.q, h * d);
    cut(k, s.k, h * d);
    cut(v, s.v, h * d);
    cut(alpha, s.alpha, h);
    cut(g, s.g, h);
    return s;
  }
};

struct CoreState {
  HostTensor h_kk, h_kv;
  CoreState(int slots, int heads, int dim)
      : h_kk({slots, heads, dim, dim}), h_kv({slots, heads, dim, dim}) {}
};

// Sequence lengths, slots and iteration counts of one GkaCore call (kept alive for it).
struct CoreBatch {
  std::vector<int32_t> lens, slots, num_iter, cu;
  CoreBatch(std::vector<int32_t> l, std::vector<int32_t> s, std::vector<int32_t> n)
      : lens(std::move(l)),
        slots(std::move(s)),
        num_iter(std::move(n)),
        cu(testing::PrefixSums(lens)) {}
};

GkaCoreParams CoreParams(CoreInputs& in, CoreState& st, HostTensor& out, const CoreBatch& batch,
                         bool decay_kk = true, float scale = -1.0f) {
  return {.q = in.q.view(),
          .k = in.k.view(),
          .v = in.v.view(),
          .alpha = in.alpha.view(),
          .g = in.g.view(),
          .out = out.view(),
          .h_kk = st.h_kk.view(),
          .h_kv = st.h_kv.view(),
          .slots = batch.slots.data(),
          .cu_seqlens = batch.cu.data(),
          .num_iter = batch.num_iter.data(),
          .num_seqs = static_cast<int32_t>(batch.lens.size()),
          .max_seqlen = *std::max_element(batch.lens.begin(), batch.lens.end()),
          .ridge_ratio = 0.02f,
          .scale = scale > 0.0f ? scale : 1.0f / std::sqrt(float(in.d)),
          .decay_kk = decay_kk};
}

absl::Status RunCore(CoreInputs& in, CoreState& st, HostTensor& out,
                     const std::vector<int32_t>& lens, const std::vector<int32_t>& slots,
                     const std::vector<int32_t>& num_iter, bool decay_kk = true,
                     float scale = -1.0f) {
  const CoreBatch batch(lens, slots, num_iter);
  return GkaCore(CoreParams(in, st, out, batch, decay_kk, scale));
}

// The token recurrence of model-spec §3.4 steps 6-11 in double for one sequence; h_kk and
// h_kv are this sequence's [H, D, D] states, updated in place.
void NaiveCore(const CoreInputs& in, int t0, int t1, int num_iter, bool decay_kk,
               std::vector<double>& h_kk, std::vector<double>& h_kv, std::vector<double>& out) {
  const int d = in.d;
  const double scale = 1.0 / std::sqrt(double(d));
  for (int t = t0; t < t1; ++t) {
    for (int h = 0; h < in.h; ++h) {
      const int row = t * in.h + h;
      const float* q = in.q.data() + row * d;
      const float* k = in.k.data() + row * d;
      const float* v = in.v.data() + row * d;
      double* hkk = h_kk.data() + h * d * d;
      double* hkv = h_kv.data() + h * d * d;
      const double decay = std::exp(double{in.g[row]});
      double fro = 0.0;
      for (int i = 0; i < d; ++i) {
        for (int j = 0; j < d; ++j) {
          hkk[i * d + j] = (decay_kk ? decay : 1.0) * hkk[i * d + j] + double{k[i]} * k[j];
          hkv[i * d + j] = decay * hkv[i * d + j] + double{k[i]} * v[j];
          fro += hkk[i * d + j] * hkk[i * d + j];
        }
      }
      fro = std::sqrt(fro);
      std::vector<double> qm(q, q + d);
      if (num_iter > 0) {
        const double lam = 0.02 * fro, step = 2.0 / (2.0 * lam + fro);
        const double r4 = std::pow(fro / (2.0 * lam + fro) / 2.0, 2);
        std::vector<double> x_prev(d, 0.0), x(d), x_new(d);
        for (int i = 0; i < d; ++i) x[i] = step * q[i];
        double omega = 2.0;
        for (int it = 0; it < num_iter; ++it) {
          omega = 1.0 / (1.0 - r4 * omega);
          for (int i = 0; i < d; ++i) {
            double hx = 0.0;
            for (int j = 0; j < d; ++j) hx += hkk[i * d + j] * x[j];
            const double res = hx + lam * x[i] - q[i];
            x_new[i] = omega * (x[i] - step * res) + (1.0 - omega) * x_prev[i];
          }
          x_prev = x;
          x = x_new;
        }
        for (int i = 0; i < d; ++i) qm[i] = q[i] + in.alpha[row] * (x[i] - q[i]);
      }
      for (int j = 0; j < d; ++j) {
        double acc = 0.0;
        for (int i = 0; i < d; ++i) acc += qm[i] * hkv[i * d + j];
        out[row * d + j] = scale * acc;
      }
    }
  }
}

std::vector<float> SlotState(const HostTensor& s, int slot, int heads, int d) {
  const float* p = s.data() + slot * heads * d * d;
  return {p, p + heads * d * d};
}

std::vector<double> ToDouble(const std::vector<float>& v) { return {v.begin(), v.end()}; }

TEST(CpuGkaCoreTest, MatchesNaiveRecurrenceFromCarriedState) {
  std::mt19937 rng(1);
  constexpr int kH = 3, kD = 32;
  const std::vector<int32_t> lens = {9, 4}, slots = {1, 0}, num_iter = {30, 5};
  CoreState st(2, kH, kD);
  // Carried state: a short earlier prefill of each slot.
  CoreInputs warm(6, kH, kD, rng);
  HostTensor warm_out({6, kH, kD});
  ASSERT_TRUE(RunCore(warm, st, warm_out, {3, 3}, {0, 1}, {10, 10}).ok());

  CoreInputs in(13, kH, kD, rng);
  HostTensor out({13, kH, kD});
  std::vector<std::vector<double>> hkk, hkv;
  for (int s : slots) {
    hkk.push_back(ToDouble(SlotState(st.h_kk, s, kH, kD)));
    hkv.push_back(ToDouble(SlotState(st.h_kv, s, kH, kD)));
  }
  ASSERT_TRUE(RunCore(in, st, out, lens, slots, num_iter).ok());
  std::vector<double> expected(out.values().size());
  NaiveCore(in, 0, 9, 30, true, hkk[0], hkv[0], expected);
  NaiveCore(in, 9, 13, 5, true, hkk[1], hkv[1], expected);
  EXPECT_LT(RelL2(out.values(), expected), 1e-5);
  for (int b = 0; b < 2; ++b) {
    EXPECT_LT(RelL2(SlotState(st.h_kk, slots[b], kH, kD), hkk[b]), 1e-6) << b;
    EXPECT_LT(RelL2(SlotState(st.h_kv, slots[b], kH, kD), hkv[b]), 1e-6) << b;
  }
}

TEST(CpuGkaCoreTest, PrefillEqualsOneDecodeStepPerTokenBitwise) {
  std::mt19937 rng(2);
  constexpr int kT = 7, kH = 2, kD = 24;  // D % 8 != 0 exercises the scalar tails
  CoreInputs in(kT, kH, kD, rng);
  CoreState whole(1, kH, kD), steps(1, kH, kD);
  HostTensor whole_out({kT, kH, kD}), step_out({kT, kH, kD});
  ASSERT_TRUE(RunCore(in, whole, whole_out, {kT}, {0}, {10}).ok());
  for (int t = 0; t < kT; ++t) {
    CoreInputs one = in.Slice(t, t + 1);
    HostTensor out({1, kH, kD});
    ASSERT_TRUE(RunCore(one, steps, out, {1}, {0}, {10}).ok());
    std::copy(out.values().begin(), out.values().end(), step_out.data() + t * kH * kD);
  }
  EXPECT_TRUE(BitwiseEqual(step_out.values(), whole_out.values()));
  EXPECT_TRUE(BitwiseEqual(steps.h_kk.values(), whole.h_kk.values()));
  EXPECT_TRUE(BitwiseEqual(steps.h_kv.values(), whole.h_kv.values()));
}

// Big enough to run on several threads: no sequence's bits depend on its neighbours.
TEST(CpuGkaCoreTest, VarlenBatchEqualsSeparateRunsBitwise) {
  std::mt19937 rng(3);
  constexpr int kH = 4, kD = 64;
  const std::vector<int32_t> lens = {5, 1, 8, 0}, slots = {2, 0, 3, 1}, num_iter = {30, 0, 7, 30};
  const std::vector<int32_t> cu = testing::PrefixSums(lens);
  CoreInputs in(cu.back(), kH, kD, rng);
  CoreState batch(4, kH, kD);
  for (float& x : batch.h_kv.values()) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  CoreState alone = batch;
  HostTensor out({cu.back(), kH, kD});
  ASSERT_TRUE(RunCore(in, batch, out, lens, slots, num_iter).ok());
  for (int b = 0; b < 4; ++b) {
    SCOPED_TRACE(b);
    if (lens[b] == 0) continue;
    CoreInputs mine = in.Slice(cu[b], cu[b + 1]);
    HostTensor mine_out({lens[b], kH, kD});
    ASSERT_TRUE(RunCore(mine, alone, mine_out, {lens[b]}, {slots[b]}, {num_iter[b]}).ok());
    EXPECT_TRUE(BitwiseEqual(mine_out.data(), out.data() + cu[b] * kH * kD, lens[b] * kH * kD));
  }
  EXPECT_TRUE(BitwiseEqual(alone.h_kk.values(), batch.h_kk.values()));
  EXPECT_TRUE(BitwiseEqual(alone.h_kv.values(), batch.h_kv.values()));
}

TEST(CpuGkaCoreTest, ResultsDoNotDependOnThreadCount) {
  std::mt19937 rng(9);
  constexpr int kH = 8, kD = 64;
  const std::vector<int32_t> lens = {3, 1, 4}, slots = {0, 1, 2}, num_iter = {30, 30, 10};
  CoreInputs in(8, kH, kD, rng);
  std::vector<HostTensor> outs;
  std::vector<CoreState> states;
  for (int threads : {1, 3, 8}) {
    internal::SetMaxThreadsForTesting(threads);
    states.emplace_back(3, kH, kD);
    outs.emplace_back(tensor::Shape{8, kH, kD});
    ASSERT_TRUE(RunCore(in, states.back(), outs.back(), lens, slots, num_iter).ok());
  }
  internal::SetMaxThreadsForTesting(0);
  for (int i = 1; i < 3; ++i) {
    EXPECT_TRUE(BitwiseEqual(outs[i].values(), outs[0].values())) << i;
    EXPECT_TRUE(BitwiseEqual(states[i].h_kk.values(), states[0].h_kk.values())) << i;
    EXPECT_TRUE(BitwiseEqual(states[i].h_kv.values(), states[0].h_kv.values())) << i;
  }
}

// Spec §7: the states never depend on num_iter; N = 0 reads out q̂ directly.
TEST(CpuGkaCoreTest, NumIterZeroStillUpdatesHkk) {
  std::mt19937 rng(4);
  constexpr int kT = 5, kH = 2, kD = 16;
  CoreInputs in(kT, kH, kD, rng);
  CoreState zero(1, kH, kD), ten(1, kH, kD);
  HostTensor out_zero({kT, kH, kD}), out_ten({kT, kH, kD});
  ASSERT_TRUE(RunCore(in, zero, out_zero, {kT}, {0}, {0}).ok());
  ASSERT_TRUE(RunCore(in, ten, out_ten, {kT}, {0}, {10}).ok());
  EXPECT_TRUE(BitwiseEqual(zero.h_kk.values(), ten.h_kk.values()));
  EXPECT_TRUE(BitwiseEqual(zero.h_kv.values(), ten.h_kv.values()));
  EXPECT_GT(*std::max_element(zero.h_kk.values().begin(), zero.h_kk.values().end()), 0.0f);
  EXPECT_FALSE(BitwiseEqual(out_zero.values(), out_ten.values()));

  std::vector<double> hkk(kH * kD * kD), hkv(kH * kD * kD), expected(kT * kH * kD);
  NaiveCore(in, 0, kT, 0, true, hkk, hkv, expected);
  EXPECT_LT(RelL2(out_zero.values(), expected), 1e-6);
}

TEST(CpuGkaCoreTest, DecayKkFalseLeavesHkkUndecayed) {
  std::mt19937 rng(5);
  constexpr int kT = 4, kH = 2, kD = 16;
  CoreInputs in(kT, kH, kD, rng);
  CoreState st(1, kH, kD);
  HostTensor out({kT, kH, kD});
  ASSERT_TRUE(RunCore(in, st, out, {kT}, {0}, {10}, /*decay_kk=*/false).ok());
  std::vector<double> hkk(kH * kD * kD), hkv(kH * kD * kD), expected(kT * kH * kD);
  NaiveCore(in, 0, kT, 10, false, hkk, hkv, expected);
  EXPECT_LT(RelL2(out.values(), expected), 1e-5);
  EXPECT_LT(RelL2(st.h_kk.values(), hkk), 1e-6);
  EXPECT_LT(RelL2(st.h_kv.values(), hkv), 1e-6);
}

// x of (H + λI)x = q̂, λ = 0.02·‖H‖_F, by Gaussian elimination with partial pivoting.
std::vector<double> RidgeSolve(std::vector<double> a, std::vector<double> rhs, int n) {
  double fro = 0.0;
  for (double v : a) fro += v * v;
  for (int i = 0; i < n; ++i) a[i * n + i] += 0.02 * std::sqrt(fro);
  for (int c = 0; c < n; ++c) {
    int pivot = c;
    for (int r = c + 1; r < n; ++r) {
      if (std::abs(a[r * n + c]) > std::abs(a[pivot * n + c])) pivot = r;
    }
    for (int j = 0; j < n; ++j) std::swap(a[c * n + j], a[pivot * n + j]);
    std::swap(rhs[c], rhs[pivot]);
    for (int r = c + 1; r < n; ++r) {
      const double f = a[r * n + c] / a[c * n + c];
      for (int j = c; j < n; ++j) a[r * n + j] -= f * a[c * n + j];
      rhs[r] -= f * rhs[c];
    }
  }
  std::vector<double> x(n);
  for (int r = n - 1; r >= 0; --r) {
    double s = rhs[r];
    for (int j = r + 1; j < n; ++j) s -= a[r * n + j] * x[j];
    x[r] = s / a[r * n + r];
  }
  return x;
}

TEST(CpuGkaCoreTest, ChebyshevConvergesToTheRidgeSolution) {
  std::mt19937 rng(6);
  constexpr int kD = 32;
  CoreInputs in(1, 1, kD, rng);
  // No decay, ṽ = 0 and h_kv = I, α = 1, scale 1: out is exactly the solver's x.
  in.g[0] = 0.0f;
  in.alpha[0] = 1.0f;
  std::fill(in.v.values().begin(), in.v.values().end(), 0.0f);
  CoreState initial(1, 1, kD);
  // A random SPD h_kk = A·Aᵀ / D with a spread of eigenvalues.
  HostTensor a = RandomTensor({kD, kD}, rng);
  for (int i = 0; i < kD; ++i) {
    for (int j = 0; j < kD; ++j) {
      double s = 0.0;
      for (int l = 0; l < kD; ++l) s += double{a[i * kD + l]} * a[j * kD + l];
      initial.h_kk[i * kD + j] = static_cast<float>(s / kD);
    }
    initial.h_kv[i * kD + i] = 1.0f;
  }
  CoreState many = initial, few = initial;
  HostTensor out_many({1, 1, kD}), out_few({1, 1, kD});
  ASSERT_TRUE(RunCore(in, many, out_many, {1}, {0}, {200}, true, /*scale=*/1.0f).ok());
  ASSERT_TRUE(RunCore(in, few, out_few, {1}, {0}, {2}, true, /*scale=*/1.0f).ok());
  // The solve is against the updated H (= initial + k̃k̃ᵀ as stored).
  const std::vector<double> exact =
      RidgeSolve(ToDouble(many.h_kk.values()), ToDouble(in.q.values()), kD);
  EXPECT_LT(RelL2(out_many.values(), exact), 1e-4);
  // Two iterations are visibly not converged: the check above can tell the difference.
  EXPECT_GT(RelL2(out_few.values(), exact), 1e-2);
}

// ‖h_kk‖_F = 0 (every key so far zero) must not divide by zero: x = 0, q_mix = (1 − α)q̂.
TEST(CpuGkaCoreTest, ZeroGramMatrixGivesZeroSolverOutput) {
  std::mt19937 rng(7);
  constexpr int kD = 8;
  CoreInputs in(1, 1, kD, rng);
  std::fill(in.k.values().begin(), in.k.values().end(), 0.0f);
  in.g[0] = 0.0f;
  CoreState st(1, 1, kD);
  for (int i = 0; i < kD; ++i) st.h_kv[i * kD + i] = 1.0f;
  HostTensor out({1, 1, kD});
  ASSERT_TRUE(RunCore(in, st, out, {1}, {0}, {10}, true, 1.0f).ok());
  std::vector<double> expected(kD);
  for (int i = 0; i < kD; ++i) expected[i] = (1.0 - in.alpha[0]) * in.q[i];
  EXPECT_TRUE(AllClose(out.values(), expected, 1e-6, 1e-7));
}

TEST(CpuGkaCoreTest, RejectsBadArguments) {
  std::mt19937 rng(8);
  constexpr int kH = 2, kD = 8;
  CoreInputs in(3, kH, kD, rng);
  CoreState st(2, kH, kD);
  HostTensor out({3, kH, kD});
  const CoreBatch batch({1, 2}, {0, 1}, {3, 3});
  const GkaCoreParams good = CoreParams(in, st, out, batch);
  ASSERT_TRUE(GkaCore(good).ok());
  auto with = [&](auto mutate) { return testing::CallChanged(GkaCore, good, mutate); };
  const std::vector<int32_t> negative = {3, -1}, same_slot = {1, 1};
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.num_iter = negative.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.num_iter = nullptr; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.max_seqlen = 1; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.slots = same_slot.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.scale = 0.0f; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.h_kv = st.h_kv.view_as({2, kH, kD, kD - 1});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.h_kk = st.h_kk.view_as({4, 1, kD, kD});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.g = in.g.view_as({3, kH, 1}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.out = st.h_kk.view_as({3, kH, kD});
  })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.q = in.q.view_as({3, kH, kD}, tensor::DType::kBF16);
  })));
}

}  // namespace
}  // namespace gka::kernels::cpu
