// The CUDA ops that read a fused projection's output in place (label gpu): each strided input
// is a column range of a [T, sum_out] row-major GEMM output, the way the engine runs them when
// EngineOptions::fuse_projections is on. Every op must give bitwise the result it gives on the
// same values packed (each output element does the same arithmetic; only addresses differ),
// and write nothing outside its own column range when it works in place.
//
//   QkNormRope (q, k in place), KvCacheWrite (k, v), PagedAttention (q; the tensor-core and the
//   generic kernel), CausalConv (x), GkaGates (a, b, c with one stride), GatedRmsNorm (gate).
//
// Shapes are a rank's share at TP 4 of the 32B model (GKA: 16 heads of 128; attention: 16 q /
// 2 KV heads of 128) plus a small odd-stride case for the unvectorised paths. Skips cleanly
// without a GPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace gka::gpu_testing {
namespace {

class CudaStrideTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::cuda::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
    auto be = kernels::cuda::CudaBackend::Create({});
    ASSERT_TRUE(be.ok()) << be.status();
    cuda_ = std::move(be).value();
    rng_.seed(TestSeed());
  }

  // Columns [offset, offset + n) of every row of a [rows, stride] host image, packed.
  static std::vector<float> Columns(const std::vector<float>& wide, int64_t stride, int64_t offset,
                                    int64_t n) {
    const int64_t rows = static_cast<int64_t>(wide.size()) / stride;
    std::vector<float> out(static_cast<size_t>(rows * n));
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(wide.data() + r * stride + offset, n, out.data() + r * n);
    }
    return out;
  }
  // A view of columns [offset, offset + n) of `wide` [T, stride] with the logical `shape`.
  static TensorView Part(const GpuTensor& wide, int64_t offset, Shape shape) {
    TensorView v = wide.view();
    v.ptr = static_cast<char*>(v.ptr) + offset * tensor::DTypeSize(v.dtype);
    v.shape = shape;
    return v;
  }
  static ::testing::AssertionResult Same(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes differ";
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::memcmp(&a[i], &b[i], 4) != 0) {
        return ::testing::AssertionFailure()
               << "element " << i << ": " << a[i] << " vs " << b[i] << " (packed)";
      }
    }
    return ::testing::AssertionSuccess();
  }

  std::unique_ptr<kernels::Backend> cuda_;
  std::mt19937_64 rng_;
};

struct AttnShape {
  int64_t T, hq, hkv, D, pad;  // pad: extra columns after q|k|v (0 = the engine's layout)
  DType d;
};

TEST_F(CudaStrideTest, QkNormRopeAndKvCacheWrite) {
  for (const AttnShape c :
       {AttnShape{101, 16, 2, 128, 0, DType::kBF16}, AttnShape{37, 16, 2, 128, 0, DType::kF32},
        AttnShape{9, 8, 2, 64, 2, DType::kF32}, AttnShape{9, 8, 2, 64, 2, DType::kBF16}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.T << " D=" << c.D << " pad=" << c.pad);
    const int64_t nq = c.hq * c.D, nk = c.hkv * c.D, S = nq + 2 * nk + c.pad;
    GpuTensor wide = UploadRandom(*cuda_, Shape{c.T, S}, c.d, rng_);
    GpuTensor q = Upload(*cuda_, Shape{c.T, c.hq, c.D}, c.d, Columns(wide.host, S, 0, nq));
    GpuTensor k = Upload(*cuda_, Shape{c.T, c.hkv, c.D}, c.d, Columns(wide.host, S, nq, nk));
    GpuTensor v = Upload(*cuda_, Shape{c.T, c.hkv, c.D}, c.d, Columns(wide.host, S, nq + nk, nk));
    GpuTensor w = UploadRandom(*cuda_, Shape{c.D}, DType::kF32, rng_, 0.1f, 1.0f);
    std::vector<int32_t> pos(c.T);
    for (int64_t t = 0; t < c.T; ++t) pos[t] = static_cast<int32_t>(t * 157 % 16384);
    DeviceBuffer pos_dev = UploadInts(*cuda_, pos);
    kernels::QkNormRopeParams p{.q = q.view(),
                                .k = k.view(),
                                .q_weight = w.view(),
                                .k_weight = w.view(),
                                .positions = pos_dev.data<int32_t>(),
                                .theta = 1e6f};
    ASSERT_TRUE(cuda_->QkNormRope(p).ok());
    p.q = Part(wide, 0, Shape{c.T, c.hq, c.D});
    p.k = Part(wide, nq, Shape{c.T, c.hkv, c.D});
    p.row_stride = S;
    ASSERT_TRUE(cuda_->QkNormRope(p).ok());
    const std::vector<float> after = Download(*cuda_, wide.view());
    EXPECT_TRUE(Same(Columns(after, S, 0, nq), Download(*cuda_, q.view())));
    EXPECT_TRUE(Same(Columns(after, S, nq, nk), Download(*cuda_, k.view())));
    EXPECT_TRUE(Same(Columns(after, S, nq + nk, nk + c.pad),
                     Columns(wide.host, S, nq + nk, nk + c.pad)));  // v and pad untouched

    // The normalised k and the raw v into pages, packed and strided.
    const int64_t pages = (c.T + 15) / 16 + 2;
    std::vector<int32_t> slots(c.T);
    for (int64_t t = 0; t < c.T; ++t) slots[t] = static_cast<int32_t>((t * 7 + 3) % (pages * 16));
    slots[0] = -1;  // a padding token: skipped by both
    DeviceBuffer slots_dev = UploadInts(*cuda_, slots);
    std::vector<DeviceBuffer> pools;
    for (int i = 0; i < 4; ++i) {
      pools.push_back(std::move(cuda_->Allocate(Shape{pages, 16, c.hkv, c.D}, c.d)).value());
    }
    kernels::KvCacheWriteParams kw{.k = k.view(),
                                   .v = v.view(),
                                   .k_pages = pools[0].view(),
                                   .v_pages = pools[1].view(),
                                   .slot_mapping = slots_dev.data<int32_t>()};
    ASSERT_TRUE(cuda_->KvCacheWrite(kw).ok());
    kw.k = Part(wide, nq, Shape{c.T, c.hkv, c.D});
    kw.v = Part(wide, nq + nk, Shape{c.T, c.hkv, c.D});
    kw.row_stride = S;
    kw.k_pages = pools[2].view();
    kw.v_pages = pools[3].view();
    ASSERT_TRUE(cuda_->KvCacheWrite(kw).ok());
    EXPECT_TRUE(Same(Download(*cuda_, pools[2].view()), Download(*cuda_, pools[0].view())));
    EXPECT_TRUE(Same(Download(*cuda_, pools[3].view()), Download(*cuda_, pools[1].view())));
    kw.row_stride = nk - 1;
    EXPECT_FALSE(cuda_->KvCacheWrite(kw).ok());
  }
}

TEST_F(CudaStrideTest, PagedAttention) {
  // Decode at the engine's layout (bf16: the tensor-core kernel), a mixed prefill step, and
  // f32 / odd strides (the generic kernel).
  struct Case {
    AttnShape s;
    std::vector<int> q_lens, ctx;
  };
  const std::vector<Case> cases = {
      {{0, 16, 2, 128, 0, DType::kBF16}, std::vector<int>(24, 1), std::vector<int>(24, 3000)},
      {{0, 16, 2, 128, 0, DType::kBF16}, {40, 1, 7}, {40, 900, 20}},
      {{0, 16, 2, 128, 0, DType::kF32}, {1, 1, 5}, {700, 33, 5}},
      {{0, 8, 2, 64, 2, DType::kBF16}, {3, 1}, {3, 100}},
  };
  for (const Case& c : cases) {
    const AttnShape& s = c.s;
    const int B = static_cast<int>(c.q_lens.size());
    std::vector<int32_t> cu{0}, ctx(c.ctx.begin(), c.ctx.end());
    int max_q = 0, max_ctx = 0, max_pages = 0;
    for (int b = 0; b < B; ++b) {
      cu.push_back(cu.back() + c.q_lens[b]);
      max_q = std::max(max_q, c.q_lens[b]);
      max_ctx = std::max(max_ctx, c.ctx[b]);
      max_pages = std::max(max_pages, (c.ctx[b] + 15) / 16);
    }
    const int64_t T = cu.back(), num_pages = static_cast<int64_t>(B) * max_pages;
    SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << s.D << " pad=" << s.pad);
    std::vector<int32_t> table(num_pages);
    for (int64_t i = 0; i < num_pages; ++i)
      table[i] = static_cast<int32_t>((i * 5 + 1) % num_pages);
    const int64_t nq = s.hq * s.D, S = nq + 2 * s.hkv * s.D + s.pad;
    GpuTensor wide = UploadRandom(*cuda_, Shape{T, S}, s.d, rng_, 2.0f);
    GpuTensor q = Upload(*cuda_, Shape{T, s.hq, s.D}, s.d, Columns(wide.host, S, 0, nq));
    GpuTensor kp = UploadRandom(*cuda_, Shape{num_pages, 16, s.hkv, s.D}, s.d, rng_);
    GpuTensor vp = UploadRandom(*cuda_, Shape{num_pages, 16, s.hkv, s.D}, s.d, rng_);
    DeviceBuffer table_dev = UploadInts(*cuda_, table), cu_dev = UploadInts(*cuda_, cu),
                 ctx_dev = UploadInts(*cuda_, ctx);
    auto packed = cuda_->Allocate(Shape{T, s.hq, s.D}, s.d);
    auto strided = cuda_->Allocate(Shape{T, s.hq, s.D}, s.d);
    ASSERT_TRUE(packed.ok() && strided.ok());
    Poison(*cuda_, packed->view());
    Poison(*cuda_, strided->view());
    kernels::PagedAttentionParams p{.q = q.view(),
                                    .out = packed->view(),
                                    .k_pages = kp.view(),
                                    .v_pages = vp.view(),
                                    .page_table = table_dev.data<int32_t>(),
                                    .cu_q = cu_dev.data<int32_t>(),
                                    .context_lens = ctx_dev.data<int32_t>(),
                                    .num_seqs = B,
                                    .max_pages_per_seq = max_pages,
                                    .max_q_len = max_q,
                                    .max_context_len = max_ctx,
                                    .scale = 1.0f / std::sqrt(static_cast<float>(s.D))};
    ASSERT_TRUE(cuda_->PagedAttention(p).ok());
    p.q = Part(wide, 0, Shape{T, s.hq, s.D});
    p.q_row_stride = S;
    p.out = strided->view();
    ASSERT_TRUE(cuda_->PagedAttention(p).ok());
    EXPECT_TRUE(Same(Download(*cuda_, strided->view()), Download(*cuda_, packed->view())));
  }
}

TEST_F(CudaStrideTest, GkaConvGatesAndGatedNorm) {
  struct Case {
    int64_t T, H, D;
    DType d;
    int64_t pad;
  };
  for (const Case c : {Case{101, 16, 128, DType::kBF16, 0}, Case{33, 16, 128, DType::kF32, 0},
                       Case{7, 4, 64, DType::kF32, 3}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.T << " H=" << c.H << " pad=" << c.pad);
    // The GKA layer's layout: q | k | v | a | b | alpha | g with q = k = v = g = H·D (one
    // K/V head per query head keeps the shapes simple; the ops do not care).
    const int64_t HD = c.H * c.D;
    const int64_t off_q = 0, off_k = HD, off_v = 2 * HD, off_a = 3 * HD, off_g = 3 * HD + 3 * c.H;
    const int64_t S = off_g + HD + c.pad;
    GpuTensor wide = UploadRandom(*cuda_, Shape{c.T, S}, c.d, rng_, 2.0f);
    // Several sequences, some continuing from a conv state.
    const std::vector<int32_t> cu = {0, 1, 2, static_cast<int32_t>(c.T / 2),
                                     static_cast<int32_t>(c.T)};
    const std::vector<int32_t> slots = {3, 0, 2, 1};
    const int B = 4;
    DeviceBuffer cu_dev = UploadInts(*cuda_, cu), slots_dev = UploadInts(*cuda_, slots);

    // CausalConv over q: packed vs strided, out and state.
    const int64_t K = 4;
    GpuTensor cw = UploadRandom(*cuda_, Shape{HD, K}, DType::kF32, rng_, 0.3f);
    const std::vector<float> state0 = RandomVector(static_cast<size_t>(4 * HD * (K - 1)), rng_);
    GpuTensor st_packed = Upload(*cuda_, Shape{4, HD, K - 1}, DType::kF32, state0);
    GpuTensor st_strided = Upload(*cuda_, Shape{4, HD, K - 1}, DType::kF32, state0);
    GpuTensor xq = Upload(*cuda_, Shape{c.T, HD}, c.d, Columns(wide.host, S, off_q, HD));
    std::vector<DeviceBuffer> conv_out;
    for (int i = 0; i < 2; ++i) {
      conv_out.push_back(std::move(cuda_->Allocate(Shape{c.T, HD}, DType::kF32)).value());
    }
    kernels::CausalConvParams cp{.x = xq.view(),
                                 .out = conv_out[0].view(),
                                 .weight = cw.view(),
                                 .state = st_packed.view(),
                                 .slots = slots_dev.data<int32_t>(),
                                 .cu_seqlens = cu_dev.data<int32_t>(),
                                 .num_seqs = B};
    ASSERT_TRUE(cuda_->CausalConv(cp).ok());
    cp.x = Part(wide, off_q, Shape{c.T, HD});
    cp.x_row_stride = S;
    cp.out = conv_out[1].view();
    cp.state = st_strided.view();
    ASSERT_TRUE(cuda_->CausalConv(cp).ok());
    EXPECT_TRUE(Same(Download(*cuda_, conv_out[1].view()), Download(*cuda_, conv_out[0].view())));
    EXPECT_TRUE(Same(Download(*cuda_, st_strided.view()), Download(*cuda_, st_packed.view())));

    // GkaGates: a, b, alpha from the fused row with one stride.
    GpuTensor qc = UploadRandom(*cuda_, Shape{c.T, HD}, DType::kF32, rng_);
    GpuTensor kc = UploadRandom(*cuda_, Shape{c.T, HD}, DType::kF32, rng_);
    GpuTensor vc = UploadRandom(*cuda_, Shape{c.T, HD}, DType::kF32, rng_);
    GpuTensor a = Upload(*cuda_, Shape{c.T, c.H}, c.d, Columns(wide.host, S, off_a, c.H));
    GpuTensor b = Upload(*cuda_, Shape{c.T, c.H}, c.d, Columns(wide.host, S, off_a + c.H, c.H));
    GpuTensor al =
        Upload(*cuda_, Shape{c.T, c.H}, c.d, Columns(wide.host, S, off_a + 2 * c.H, c.H));
    GpuTensor alog = UploadRandom(*cuda_, Shape{c.H}, DType::kF32, rng_, 0.5f, 1.0f);
    GpuTensor dtb = UploadRandom(*cuda_, Shape{c.H}, DType::kF32, rng_, 0.5f, -4.0f);
    GpuTensor bb = UploadRandom(*cuda_, Shape{c.H}, DType::kF32, rng_, 0.5f);
    GpuTensor ab = UploadRandom(*cuda_, Shape{c.H}, DType::kF32, rng_, 0.5f);
    std::vector<DeviceBuffer> outs[2];
    for (auto& o : outs) {
      for (int i = 0; i < 3; ++i) {
        o.push_back(std::move(cuda_->Allocate(Shape{c.T, c.H, c.D}, DType::kF32)).value());
      }
      for (int i = 0; i < 2; ++i) {
        o.push_back(std::move(cuda_->Allocate(Shape{c.T, c.H}, DType::kF32)).value());
      }
    }
    kernels::GkaGatesParams gp{.q_conv = qc.view(),
                               .k_conv = kc.view(),
                               .v_conv = vc.view(),
                               .a = a.view(),
                               .b = b.view(),
                               .c = al.view(),
                               .a_log = alog.view(),
                               .dt_bias = dtb.view(),
                               .b_bias = bb.view(),
                               .alpha_bias = ab.view(),
                               .q_out = outs[0][0].view(),
                               .k_out = outs[0][1].view(),
                               .v_out = outs[0][2].view(),
                               .alpha = outs[0][3].view(),
                               .g = outs[0][4].view()};
    ASSERT_TRUE(cuda_->GkaGates(gp).ok());
    gp.a = Part(wide, off_a, Shape{c.T, c.H});
    gp.b = Part(wide, off_a + c.H, Shape{c.T, c.H});
    gp.c = Part(wide, off_a + 2 * c.H, Shape{c.T, c.H});
    gp.gate_row_stride = S;
    gp.q_out = outs[1][0].view();
    gp.k_out = outs[1][1].view();
    gp.v_out = outs[1][2].view();
    gp.alpha = outs[1][3].view();
    gp.g = outs[1][4].view();
    ASSERT_TRUE(cuda_->GkaGates(gp).ok());
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(Same(Download(*cuda_, outs[1][i].view()), Download(*cuda_, outs[0][i].view())))
          << "GkaGates output " << i;
    }

    // GatedRmsNorm: the gate g as rows (token, head) of the fused output.
    GpuTensor x = UploadRandom(*cuda_, Shape{c.T * c.H, c.D}, DType::kF32, rng_, 0.3f);
    GpuTensor g = Upload(*cuda_, Shape{c.T * c.H, c.D}, c.d, Columns(wide.host, S, off_g, HD));
    GpuTensor w = UploadRandom(*cuda_, Shape{c.D}, DType::kF32, rng_, 0.1f, 1.0f);
    auto packed = cuda_->Allocate(Shape{c.T * c.H, c.D}, c.d);
    auto strided = cuda_->Allocate(Shape{c.T * c.H, c.D}, c.d);
    ASSERT_TRUE(packed.ok() && strided.ok());
    kernels::GatedRmsNormParams np{
        .x = x.view(), .gate = g.view(), .weight = w.view(), .out = packed->view()};
    ASSERT_TRUE(cuda_->GatedRmsNorm(np).ok());
    np.gate = Part(wide, off_g, Shape{c.T * c.H, c.D});
    np.gate_token_stride = S;
    np.gate_heads = static_cast<int32_t>(c.H);
    np.out = strided->view();
    ASSERT_TRUE(cuda_->GatedRmsNorm(np).ok());
    EXPECT_TRUE(Same(Download(*cuda_, strided->view()), Download(*cuda_, packed->view())));
  }
}

}  // namespace
}  // namespace gka::gpu_testing
