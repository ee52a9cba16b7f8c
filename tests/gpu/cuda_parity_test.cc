// Every CUDA op against the CPU reference (kernels/cpu) on fresh random inputs, at the real
// per-rank shapes of GKA-primed-HQwen3-32B (head_dim 128; 64, 16 and 8 GKA heads; hidden 5120;
// FFN 25600/8; page sizes 16 and 64; contexts up to 32K; batches up to 256), plus the tiny
// golden model's head_dim 64. Outputs are NaN-poisoned before each op, so an unwritten element
// fails the test. BF16 cases give the CPU the F32 image of exactly the bf16 values the GPU got.
//
// Tolerances (relative L2 of CUDA vs CPU, and no non-finite output where the CPU is finite):
//   F32 elementwise/norm/conv/gates/copies ........ 1e-5  (fp32, only summation order differs)
//   F32 GEMM (true fp32, no TF32) .................. 1e-5
//   BF16 GEMM → F32 output ......................... 1e-4  (same bf16 inputs, fp32 accumulate)
//   BF16 outputs (GEMM, norms, activations) ........ 1e-2  (one bf16 rounding of the output)
//   F32 attention (generic kernel) ................. 1e-5
//   BF16 attention (tensor-core kernel) ............ 2e-2  (P rounded to bf16 for P·V)
//   GKA core out / states .......................... 1e-4 / 1e-5  (Chebyshev amplifies rounding
//                                                    by up to κ ≈ 51 of (h_kk + λI))
//   Sampling: identical token ids, logprobs within 1e-4, penalised logits within 1e-6;
//   top_logprobs alternatives: identical ids in identical order, logprobs within 1e-4.
// The seed is printed; GKA_TEST_SEED=<n> reproduces a run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace gka::gpu_testing {
namespace {

using kernels::GemmParams;

struct GemmCase {
  int64_t m, n, k;
  DType a, y;
  float beta;
  double tol;
};

class CudaParityTest : public ::testing::Test {
 protected:
  // Each case through cuda_ and the CPU reference, compared (`tag` marks the printed rows).
  void RunGemmCases(absl::Span<const GemmCase> cases, const char* tag);

  void SetUp() override {
    if (kernels::cuda::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
    auto be = kernels::cuda::CudaBackend::Create({});
    ASSERT_TRUE(be.ok()) << be.status();
    cuda_ = std::move(be).value();
    cpu_ = std::make_unique<kernels::cpu::CpuBackend>();
    seed_ = TestSeed();
    rng_.seed(seed_);
    std::printf("[ seed     ] GKA_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed_));
  }

  // Expects got ≈ want within `tol` relative L2 and no non-finite output.
  void Expect(const char* what, const std::vector<float>& got, const std::vector<float>& want,
              double tol) {
    const ErrorStats e = Compare(got, want);
    std::printf("[ parity   ] %-48s %s (tol %.0e)\n", what, e.ToString().c_str(), tol);
    EXPECT_EQ(e.non_finite, 0) << what << " seed " << seed_;
    EXPECT_LE(e.rel_l2, tol) << what << " seed " << seed_;
  }

  std::vector<int32_t> Permutation(int n) {
    std::vector<int32_t> p(n);
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), rng_);
    return p;
  }
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  float UniformF(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng_); }

  std::unique_ptr<kernels::Backend> cuda_, cpu_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

const char* Name(DType d) { return d == DType::kBF16 ? "bf16" : "f32"; }

// ---- memory ------------------------------------------------------------------------------

TEST_F(CudaParityTest, FillAndConvert) {
  GpuTensor x = UploadRandom(*cuda_, Shape{1000, 37}, DType::kF32, rng_);
  auto b = cuda_->Allocate(Shape{1000, 37}, DType::kBF16);
  auto f = cuda_->Allocate(Shape{1000, 37}, DType::kF32);
  ASSERT_TRUE(b.ok() && f.ok());
  Poison(*cuda_, b->view());
  Poison(*cuda_, f->view());
  ASSERT_TRUE(cuda_->Convert(x.view(), b->view()).ok());
  ASSERT_TRUE(cuda_->Convert(b->view(), f->view()).ok());
  std::vector<float> want(x.host.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = RoundTo(DType::kBF16, x.host[i]);
  Expect("Convert f32->bf16->f32 (exact)", Download(*cuda_, f->view()), want, 0.0);
  ASSERT_TRUE(cuda_->Fill(b->view(), 1.5f).ok());
  Expect("Fill bf16", Download(*cuda_, b->view()), std::vector<float>(want.size(), 1.5f), 0.0);
}

// Every kernel is a programmatic dependent launch (device_util.cuh: the next kernel is scheduled
// while this one runs and waits in PdlEnter for it to finish). A long chain in which each kernel
// overwrites what the next one reads: a kernel that read before its wait, or wrote before the
// previous one finished reading, leaves a wrong sum. 4M floats: each kernel spans many waves.
TEST_F(CudaParityTest, DependentKernelChainKeepsStreamOrder) {
  const int64_t n = int64_t{1} << 22;
  auto x = cuda_->Allocate(Shape{n}, DType::kF32);
  auto y = cuda_->Allocate(Shape{n}, DType::kF32);
  ASSERT_TRUE(x.ok() && y.ok());
  ASSERT_TRUE(cuda_->Fill(y->view(), 0.0f).ok());
  constexpr int kSteps = 200;
  for (int k = 1; k <= kSteps; ++k) {
    ASSERT_TRUE(cuda_->Fill(x->view(), static_cast<float>(k)).ok());  // x = k
    ASSERT_TRUE(cuda_->Add({.x = x->view(), .y = y->view()}).ok());   // y += x
  }
  const char* pdl = std::getenv("GKA_PDL");
  Expect(absl::StrCat("200 x (Fill, Add) chain, PDL ",
                      pdl != nullptr && std::string(pdl) == "0" ? "off" : "on")
             .c_str(),
         Download(*cuda_, y->view()), std::vector<float>(n, kSteps * (kSteps + 1) / 2.0f), 0.0);
}

// ---- GEMM --------------------------------------------------------------------------------

TEST_F(CudaParityTest, Gemm) {
  const GemmCase cases[] = {
      {64, 6400, 5120, DType::kBF16, DType::kBF16, 0.f, 1e-2},   // MLP gate_up, TP 8, decode
      {64, 5120, 3200, DType::kBF16, DType::kBF16, 1.f, 1e-2},   // down proj + residual
      {8, 18992, 5120, DType::kBF16, DType::kF32, 0.f, 1e-4},    // lm_head shard → F32 logits
      {300, 1024, 5120, DType::kBF16, DType::kBF16, 0.f, 1e-2},  // prefill k/v proj
      {33, 257, 129, DType::kF32, DType::kF32, 0.f, 1e-5},       // odd sizes, true fp32
      {64, 1024, 5120, DType::kF32, DType::kF32, 1.f, 1e-5},
  };
  RunGemmCases(cases, "");
}

// The GemmTuner's path (GKA_GEMM_TUNE=1; bf16, M ≤ 512) on a backend of its own: a shape tuned
// at its row bucket (101 → 128), then run at another M of the same bucket (the cached
// algorithm re-checked for 97 rows), a down proj accumulating into y, and the lm_head shard.
TEST_F(CudaParityTest, TunedGemm) {
  setenv("GKA_GEMM_TUNE", "1", 1);
  auto tuned = kernels::cuda::CudaBackend::Create({});
  unsetenv("GKA_GEMM_TUNE");
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  cuda_ = std::move(tuned).value();
  const GemmCase cases[] = {
      {101, 4656, 5120, DType::kBF16, DType::kBF16, 0.f, 1e-2},
      {97, 4656, 5120, DType::kBF16, DType::kBF16, 0.f, 1e-2},
      {209, 5120, 6400, DType::kBF16, DType::kBF16, 1.f, 1e-2},
      {160, 37984, 5120, DType::kBF16, DType::kF32, 0.f, 1e-4},
  };
  RunGemmCases(cases, " tuned");
}

void CudaParityTest::RunGemmCases(absl::Span<const GemmCase> cases, const char* tag) {
  for (const GemmCase& c : cases) {
    GpuTensor x = UploadRandom(*cuda_, Shape{c.m, c.k}, c.a, rng_);
    GpuTensor w = UploadRandom(*cuda_, Shape{c.n, c.k}, c.a, rng_, 1.0f / std::sqrt(c.k));
    GpuTensor y = UploadRandom(*cuda_, Shape{c.m, c.n}, c.y, rng_);
    DeviceBuffer xc = ToCpu(*cpu_, x), wc = ToCpu(*cpu_, w), yc = ToCpu(*cpu_, y);
    if (c.beta == 0.f) Poison(*cuda_, y.view());
    ASSERT_TRUE(cuda_->Gemm({.x = x.view(), .w = w.view(), .y = y.view(), .beta = c.beta}).ok());
    ASSERT_TRUE(cpu_->Gemm({.x = xc.view(), .w = wc.view(), .y = yc.view(), .beta = c.beta}).ok());
    const std::string what = absl::StrCat("Gemm ", c.m, "x", c.n, "x", c.k, " ", Name(c.a), "->",
                                          Name(c.y), c.beta != 0 ? " beta=1" : "", tag);
    Expect(what.c_str(), Download(*cuda_, y.view()), FromCpu(yc.view()), c.tol);
  }
}

// ---- elementwise -------------------------------------------------------------------------

TEST_F(CudaParityTest, Embedding) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    const int64_t V = 4096, hidden = 5120, T = 256;
    GpuTensor table = UploadRandom(*cuda_, Shape{V, hidden}, d, rng_);
    std::vector<int32_t> ids(T);
    for (auto& id : ids) id = Uniform(0, V - 1);
    DeviceBuffer ids_dev = UploadInts(*cuda_, ids);
    auto out = cuda_->Allocate(Shape{T, hidden}, d);
    ASSERT_TRUE(out.ok());
    Poison(*cuda_, out->view());
    ASSERT_TRUE(
        cuda_
            ->Embedding({.table = table.view(), .ids = ids_dev.data<int32_t>(), .out = out->view()})
            .ok());
    DeviceBuffer tc = ToCpu(*cpu_, table);
    DeviceBuffer oc = ToCpu(*cpu_, Shape{T, hidden}, std::vector<float>(T * hidden));
    ASSERT_TRUE(cpu_->Embedding({.table = tc.view(), .ids = ids.data(), .out = oc.view()}).ok());
    Expect(absl::StrCat("Embedding ", Name(d)).c_str(), Download(*cuda_, out->view()),
           FromCpu(oc.view()), 0.0);
  }
}

TEST_F(CudaParityTest, SiluMulAndAdd) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    for (int64_t F : {3200, 1001}) {  // FFN 25600 / 8, and a width that defeats vectorising
      const int64_t T = 64;
      GpuTensor gu = UploadRandom(*cuda_, Shape{T, 2 * F}, d, rng_, 2.0f);
      auto out = cuda_->Allocate(Shape{T, F}, d);
      ASSERT_TRUE(out.ok());
      Poison(*cuda_, out->view());
      ASSERT_TRUE(cuda_->SiluMul({.gate_up = gu.view(), .out = out->view()}).ok());
      DeviceBuffer gc = ToCpu(*cpu_, gu);
      DeviceBuffer oc = ToCpu(*cpu_, Shape{T, F}, std::vector<float>(T * F));
      ASSERT_TRUE(cpu_->SiluMul({.gate_up = gc.view(), .out = oc.view()}).ok());
      Expect(absl::StrCat("SiluMul ", Name(d), " F=", F).c_str(), Download(*cuda_, out->view()),
             FromCpu(oc.view()), d == DType::kBF16 ? 1e-2 : 1e-5);

      GpuTensor x = UploadRandom(*cuda_, Shape{T, F}, d, rng_);
      GpuTensor y = UploadRandom(*cuda_, Shape{T, F}, d, rng_);
      DeviceBuffer xc = ToCpu(*cpu_, x), yc = ToCpu(*cpu_, y);
      ASSERT_TRUE(cuda_->Add({.x = x.view(), .y = y.view()}).ok());
      ASSERT_TRUE(cpu_->Add({.x = xc.view(), .y = yc.view()}).ok());
      Expect(absl::StrCat("Add ", Name(d), " F=", F).c_str(), Download(*cuda_, y.view()),
             FromCpu(yc.view()), d == DType::kBF16 ? 1e-2 : 1e-6);
    }
  }
}

// ---- norms -------------------------------------------------------------------------------

TEST_F(CudaParityTest, RmsNorm) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    for (bool fused : {false, true}) {
      for (bool alias : {false, true}) {
        const int64_t rows = 256, n = 5120;
        GpuTensor x = UploadRandom(*cuda_, Shape{rows, n}, d, rng_, 3.0f);
        GpuTensor res = UploadRandom(*cuda_, Shape{rows, n}, d, rng_, 3.0f);
        GpuTensor w = UploadRandom(*cuda_, Shape{n}, DType::kF32, rng_, 0.1f, 1.0f);
        auto out_buf = cuda_->Allocate(Shape{rows, n}, d);
        ASSERT_TRUE(out_buf.ok());
        const TensorView out = alias ? x.view() : out_buf->view();
        if (!alias) Poison(*cuda_, out);
        DeviceBuffer xc = ToCpu(*cpu_, x), rc = ToCpu(*cpu_, res), wc = ToCpu(*cpu_, w);
        DeviceBuffer oc = ToCpu(*cpu_, Shape{rows, n}, std::vector<float>(rows * n));
        ASSERT_TRUE(cuda_
                        ->RmsNorm({.x = x.view(),
                                   .residual = fused ? res.view() : TensorView{},
                                   .weight = w.view(),
                                   .out = out,
                                   .eps = 1e-6f})
                        .ok());
        ASSERT_TRUE(cpu_->RmsNorm({.x = xc.view(),
                                   .residual = fused ? rc.view() : TensorView{},
                                   .weight = wc.view(),
                                   .out = oc.view(),
                                   .eps = 1e-6f})
                        .ok());
        const double tol = d == DType::kBF16 ? 1e-2 : 1e-5;
        const std::string tag =
            absl::StrCat(Name(d), fused ? " fused-residual" : "", alias ? " out=x" : "");
        Expect(absl::StrCat("RmsNorm out ", tag).c_str(), Download(*cuda_, out), FromCpu(oc.view()),
               tol);
        if (fused) {
          Expect(absl::StrCat("RmsNorm residual ", tag).c_str(), Download(*cuda_, res.view()),
                 FromCpu(rc.view()), d == DType::kBF16 ? 1e-2 : 1e-6);
        }
      }
    }
  }
}

TEST_F(CudaParityTest, QkNormRope) {
  struct Case {
    int64_t T, hq, hkv, D;
    DType d;
  };
  for (const Case c : {Case{256, 8, 1, 128, DType::kBF16}, Case{256, 8, 1, 128, DType::kF32},
                       Case{64, 64, 8, 128, DType::kF32}, Case{33, 8, 2, 64, DType::kF32}}) {
    GpuTensor q = UploadRandom(*cuda_, Shape{c.T, c.hq, c.D}, c.d, rng_);
    GpuTensor k = UploadRandom(*cuda_, Shape{c.T, c.hkv, c.D}, c.d, rng_);
    GpuTensor qw = UploadRandom(*cuda_, Shape{c.D}, DType::kF32, rng_, 0.1f, 1.0f);
    GpuTensor kw = UploadRandom(*cuda_, Shape{c.D}, DType::kF32, rng_, 0.1f, 1.0f);
    std::vector<int32_t> pos(c.T);
    for (auto& p : pos) p = Uniform(0, 32767);
    pos[0] = 0;
    DeviceBuffer pos_dev = UploadInts(*cuda_, pos);
    DeviceBuffer qc = ToCpu(*cpu_, q), kc = ToCpu(*cpu_, k), qwc = ToCpu(*cpu_, qw),
                 kwc = ToCpu(*cpu_, kw);
    ASSERT_TRUE(cuda_
                    ->QkNormRope({.q = q.view(),
                                  .k = k.view(),
                                  .q_weight = qw.view(),
                                  .k_weight = kw.view(),
                                  .positions = pos_dev.data<int32_t>(),
                                  .theta = 5e6f,
                                  .eps = 1e-6f})
                    .ok());
    ASSERT_TRUE(cpu_->QkNormRope({.q = qc.view(),
                                  .k = kc.view(),
                                  .q_weight = qwc.view(),
                                  .k_weight = kwc.view(),
                                  .positions = pos.data(),
                                  .theta = 5e6f,
                                  .eps = 1e-6f})
                    .ok());
    const double tol = c.d == DType::kBF16 ? 1e-2 : 1e-5;
    const std::string tag =
        absl::StrCat(Name(c.d), " T=", c.T, " Hq=", c.hq, " Hkv=", c.hkv, " D=", c.D);
    Expect(absl::StrCat("QkNormRope q ", tag).c_str(), Download(*cuda_, q.view()),
           FromCpu(qc.view()), tol);
    Expect(absl::StrCat("QkNormRope k ", tag).c_str(), Download(*cuda_, k.view()),
           FromCpu(kc.view()), tol);
  }
}

TEST_F(CudaParityTest, GatedRmsNorm) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    for (bool gated : {true, false}) {
      for (int64_t D : {128, 64}) {
        const int64_t rows = 64 * 16;  // T · H at 16 GKA heads
        GpuTensor x = UploadRandom(*cuda_, Shape{rows, D}, DType::kF32, rng_, 0.3f);
        GpuTensor gate = UploadRandom(*cuda_, Shape{rows, D}, d, rng_, 2.0f);
        GpuTensor w = UploadRandom(*cuda_, Shape{D}, DType::kF32, rng_, 0.1f, 1.0f);
        auto out = cuda_->Allocate(Shape{rows, D}, d);
        ASSERT_TRUE(out.ok());
        Poison(*cuda_, out->view());
        ASSERT_TRUE(cuda_
                        ->GatedRmsNorm({.x = x.view(),
                                        .gate = gated ? gate.view() : TensorView{},
                                        .weight = w.view(),
                                        .out = out->view(),
                                        .eps = 1e-6f})
                        .ok());
        DeviceBuffer xc = ToCpu(*cpu_, x), gc = ToCpu(*cpu_, gate), wc = ToCpu(*cpu_, w);
        DeviceBuffer oc = ToCpu(*cpu_, Shape{rows, D}, std::vector<float>(rows * D));
        ASSERT_TRUE(cpu_->GatedRmsNorm({.x = xc.view(),
                                        .gate = gated ? gc.view() : TensorView{},
                                        .weight = wc.view(),
                                        .out = oc.view(),
                                        .eps = 1e-6f})
                        .ok());
        Expect(absl::StrCat("GatedRmsNorm ", Name(d), gated ? " gated" : "", " D=", D).c_str(),
               Download(*cuda_, out->view()), FromCpu(oc.view()), d == DType::kBF16 ? 1e-2 : 1e-5);
      }
    }
  }
}

// ---- attention ---------------------------------------------------------------------------

TEST_F(CudaParityTest, KvCacheWrite) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    const int64_t T = 100, hkv = 8, D = 128, pages = 64, ps = 16;
    GpuTensor k = UploadRandom(*cuda_, Shape{T, hkv, D}, d, rng_);
    GpuTensor v = UploadRandom(*cuda_, Shape{T, hkv, D}, d, rng_);
    GpuTensor kp = UploadRandom(*cuda_, Shape{pages, ps, hkv, D}, d, rng_);
    GpuTensor vp = UploadRandom(*cuda_, Shape{pages, ps, hkv, D}, d, rng_);
    std::vector<int32_t> perm = Permutation(pages * ps);
    std::vector<int32_t> slots(perm.begin(), perm.begin() + T);
    DeviceBuffer slots_dev = UploadInts(*cuda_, slots);
    ASSERT_TRUE(cuda_
                    ->KvCacheWrite({.k = k.view(),
                                    .v = v.view(),
                                    .k_pages = kp.view(),
                                    .v_pages = vp.view(),
                                    .slot_mapping = slots_dev.data<int32_t>()})
                    .ok());
    DeviceBuffer kc = ToCpu(*cpu_, k), vc = ToCpu(*cpu_, v), kpc = ToCpu(*cpu_, kp),
                 vpc = ToCpu(*cpu_, vp);
    ASSERT_TRUE(cpu_->KvCacheWrite({.k = kc.view(),
                                    .v = vc.view(),
                                    .k_pages = kpc.view(),
                                    .v_pages = vpc.view(),
                                    .slot_mapping = slots.data()})
                    .ok());
    Expect(absl::StrCat("KvCacheWrite k_pages ", Name(d)).c_str(), Download(*cuda_, kp.view()),
           FromCpu(kpc.view()), 0.0);
    Expect(absl::StrCat("KvCacheWrite v_pages ", Name(d)).c_str(), Download(*cuda_, vp.view()),
           FromCpu(vpc.view()), 0.0);
  }
}

struct AttnCase {
  const char* name;
  DType d;
  int64_t hq, hkv, D, page_size;
  std::vector<int> q_lens;    // new queries per sequence
  std::vector<int> ctx_lens;  // keys visible to the last query (incl. the new ones)
  double tol;
};

TEST_F(CudaParityTest, PagedAttention) {
  std::vector<AttnCase> cases = {
      {"decode bf16 TP8 page16 ctx<=32K (mma)",
       DType::kBF16,
       8,
       1,
       128,
       16,
       {1, 1, 1, 1, 1, 1, 1, 1},
       {1, 17, 64, 65, 1000, 4097, 20000, 32768},
       2e-2},
      {"decode f32 TP8 page64 (generic)",
       DType::kF32,
       8,
       1,
       128,
       64,
       {1, 1, 1, 1},
       {1, 63, 200, 8192},
       1e-5},
      {"prefill bf16 Hq16/Hkv2 page64 (mma)",
       DType::kBF16,
       16,
       2,
       128,
       64,
       {200, 64, 1, 130},
       {200, 1064, 5000, 130},
       2e-2},
      {"prefill f32 Hq16/Hkv2 page16 (generic)",
       DType::kF32,
       16,
       2,
       128,
       16,
       {37, 1, 100},
       {37, 700, 300},
       1e-5},
      {"prefill bf16 G=1 (mma)", DType::kBF16, 4, 4, 128, 16, {70, 3}, {100, 3}, 2e-2},
      {"prefill bf16 G=16 (mma)", DType::kBF16, 16, 1, 128, 64, {33, 1}, {33, 999}, 2e-2},
      {"prefill bf16 G=3 (generic)", DType::kBF16, 6, 2, 128, 16, {20, 1}, {50, 77}, 2e-2},
      {"tiny-model bf16 D=64 (generic)", DType::kBF16, 8, 2, 64, 16, {12, 1}, {12, 40}, 2e-2},
      {"decode bf16 real shape B=64 ctx=16K page16 (mma)", DType::kBF16, 8, 1, 128, 16,
       std::vector<int>(64, 1), std::vector<int>(64, 16384), 2e-2},
  };
  for (const AttnCase& c : cases) {
    const int B = static_cast<int>(c.q_lens.size());
    const int64_t ps = c.page_size;
    std::vector<int32_t> cu_q{0}, ctx(c.ctx_lens.begin(), c.ctx_lens.end());
    int max_q = 0, max_ctx = 0, max_pages = 0;
    int64_t total_pages = 0;
    for (int b = 0; b < B; ++b) {
      cu_q.push_back(cu_q.back() + c.q_lens[b]);
      max_q = std::max(max_q, c.q_lens[b]);
      max_ctx = std::max(max_ctx, c.ctx_lens[b]);
      const int np = static_cast<int>((c.ctx_lens[b] + ps - 1) / ps);
      max_pages = std::max(max_pages, np);
      total_pages += np;
    }
    const int64_t num_pages = total_pages + 3;  // a few pages nobody owns
    const int64_t T = cu_q.back();
    // Pages in random order; every slot past a sequence's context is NaN (never read).
    std::vector<int32_t> perm = Permutation(static_cast<int>(num_pages));
    std::vector<int32_t> table(static_cast<size_t>(B) * max_pages, 0);
    const int64_t row = c.hkv * c.D;
    std::vector<float> kh(num_pages * ps * row, std::nanf("")), vh = kh;
    int64_t next = 0;
    for (int b = 0; b < B; ++b) {
      const int np = static_cast<int>((c.ctx_lens[b] + ps - 1) / ps);
      for (int i = 0; i < np; ++i) table[static_cast<size_t>(b) * max_pages + i] = perm[next++];
      for (int j = 0; j < c.ctx_lens[b]; ++j) {
        const int64_t slot = static_cast<int64_t>(table[b * max_pages + j / ps]) * ps + j % ps;
        FastRandomFill(kh.data() + slot * row, row, rng_());
        FastRandomFill(vh.data() + slot * row, row, rng_());
      }
    }
    GpuTensor q = UploadRandom(*cuda_, Shape{T, c.hq, c.D}, c.d, rng_, 2.0f);
    GpuTensor kp = Upload(*cuda_, Shape{num_pages, ps, c.hkv, c.D}, c.d, kh);
    GpuTensor vp = Upload(*cuda_, Shape{num_pages, ps, c.hkv, c.D}, c.d, vh);
    DeviceBuffer table_dev = UploadInts(*cuda_, table), cu_dev = UploadInts(*cuda_, cu_q),
                 ctx_dev = UploadInts(*cuda_, ctx);
    auto out = cuda_->Allocate(Shape{T, c.hq, c.D}, c.d);
    ASSERT_TRUE(out.ok());
    Poison(*cuda_, out->view());
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
    const absl::Status s = cuda_->PagedAttention({.q = q.view(),
                                                  .out = out->view(),
                                                  .k_pages = kp.view(),
                                                  .v_pages = vp.view(),
                                                  .page_table = table_dev.data<int32_t>(),
                                                  .cu_q = cu_dev.data<int32_t>(),
                                                  .context_lens = ctx_dev.data<int32_t>(),
                                                  .num_seqs = B,
                                                  .max_pages_per_seq = max_pages,
                                                  .max_q_len = max_q,
                                                  .max_context_len = max_ctx,
                                                  .scale = scale});
    ASSERT_TRUE(s.ok()) << s;
    DeviceBuffer qc = ToCpu(*cpu_, q), kc = ToCpu(*cpu_, kp), vc = ToCpu(*cpu_, vp);
    DeviceBuffer oc = ToCpu(*cpu_, Shape{T, c.hq, c.D}, std::vector<float>(T * c.hq * c.D));
    const absl::Status sc = cpu_->PagedAttention({.q = qc.view(),
                                                  .out = oc.view(),
                                                  .k_pages = kc.view(),
                                                  .v_pages = vc.view(),
                                                  .page_table = table.data(),
                                                  .cu_q = cu_q.data(),
                                                  .context_lens = ctx.data(),
                                                  .num_seqs = B,
                                                  .max_pages_per_seq = max_pages,
                                                  .max_q_len = max_q,
                                                  .max_context_len = max_ctx,
                                                  .scale = scale});
    ASSERT_TRUE(sc.ok()) << sc;
    Expect(absl::StrCat("PagedAttention ", c.name).c_str(), Download(*cuda_, out->view()),
           FromCpu(oc.view()), c.tol);
  }
}

// ---- GKA ---------------------------------------------------------------------------------

TEST_F(CudaParityTest, CausalConv) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    for (int64_t C : {1024, 8192}) {  // q channels per rank at TP 8, and at TP 1
      const int64_t K = 4, slots_n = 16;
      const std::vector<int> lens = {1, 2, 5, 100, 1, 1, 0, 3};
      std::vector<int32_t> cu{0};
      for (int l : lens) cu.push_back(cu.back() + l);
      const int B = static_cast<int>(lens.size());
      const int64_t T = cu.back();
      std::vector<int32_t> perm = Permutation(static_cast<int>(slots_n));
      std::vector<int32_t> slots(perm.begin(), perm.begin() + B);
      GpuTensor x = UploadRandom(*cuda_, Shape{T, C}, d, rng_, 2.0f);
      GpuTensor w = UploadRandom(*cuda_, Shape{C, K}, DType::kF32, rng_, 0.3f);
      GpuTensor st = UploadRandom(*cuda_, Shape{slots_n, C, K - 1}, DType::kF32, rng_, 2.0f);
      DeviceBuffer slots_dev = UploadInts(*cuda_, slots), cu_dev = UploadInts(*cuda_, cu);
      auto out = cuda_->Allocate(Shape{T, C}, DType::kF32);
      ASSERT_TRUE(out.ok());
      Poison(*cuda_, out->view());
      ASSERT_TRUE(cuda_
                      ->CausalConv({.x = x.view(),
                                    .out = out->view(),
                                    .weight = w.view(),
                                    .state = st.view(),
                                    .slots = slots_dev.data<int32_t>(),
                                    .cu_seqlens = cu_dev.data<int32_t>(),
                                    .num_seqs = B})
                      .ok());
      DeviceBuffer xc = ToCpu(*cpu_, x), wc = ToCpu(*cpu_, w), sc = ToCpu(*cpu_, st);
      DeviceBuffer oc = ToCpu(*cpu_, Shape{T, C}, std::vector<float>(T * C));
      ASSERT_TRUE(cpu_->CausalConv({.x = xc.view(),
                                    .out = oc.view(),
                                    .weight = wc.view(),
                                    .state = sc.view(),
                                    .slots = slots.data(),
                                    .cu_seqlens = cu.data(),
                                    .num_seqs = B})
                      .ok());
      const std::string tag = absl::StrCat(Name(d), " C=", C);
      Expect(absl::StrCat("CausalConv out ", tag).c_str(), Download(*cuda_, out->view()),
             FromCpu(oc.view()), 1e-5);
      Expect(absl::StrCat("CausalConv state ", tag).c_str(), Download(*cuda_, st.view()),
             FromCpu(sc.view()), 0.0);
    }
  }
}

// A decode step (every sequence 0 or 1 token, some empty as in a padded graph batch; T ≤ 2·B
// takes the one-launch per-sequence path): against the CPU reference, and bitwise against the
// general two-launch path, reached by appending one long sequence to the same batch (T > 2·B).
TEST_F(CudaParityTest, CausalConvDecodeStep) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    const int64_t C = 2048, K = 4, slots_n = 16;  // GKA q channels per rank at TP 4
    const std::vector<int> lens = {1, 1, 0, 1, 1, 1, 0, 1, 1, 1};
    const int B = static_cast<int>(lens.size());
    std::vector<int32_t> cu{0};
    for (int l : lens) cu.push_back(cu.back() + l);
    const int64_t T = cu.back();
    const int64_t long_len = 4 * (B + 1);  // the appended sequence: T + long_len > 2 (B + 1)
    std::vector<int32_t> cu_long = cu;
    cu_long.push_back(static_cast<int32_t>(T + long_len));
    std::vector<int32_t> perm = Permutation(static_cast<int>(slots_n));
    std::vector<int32_t> slots(perm.begin(), perm.begin() + B + 1);
    // Rows of x strided as in the fused projection's output (x_row_stride > C).
    const int64_t stride = C + 512, rows = T + long_len;
    GpuTensor x = UploadRandom(*cuda_, Shape{rows, stride}, d, rng_, 2.0f);
    GpuTensor w = UploadRandom(*cuda_, Shape{C, K}, DType::kF32, rng_, 0.3f);
    GpuTensor st = UploadRandom(*cuda_, Shape{slots_n, C, K - 1}, DType::kF32, rng_, 2.0f);
    const std::vector<float> st0 = st.host;
    DeviceBuffer slots_dev = UploadInts(*cuda_, slots);
    DeviceBuffer cu_dev = UploadInts(*cuda_, cu), cu_long_dev = UploadInts(*cuda_, cu_long);
    std::vector<float> outs[2], states[2];
    for (int general = 0; general < 2; ++general) {
      const int64_t t_all = general ? rows : T;
      ASSERT_TRUE(cuda_->CopyFromHost(st.view().ptr, st0.data(), st0.size() * 4).ok());
      auto out = cuda_->Allocate(Shape{t_all, C}, DType::kF32);
      ASSERT_TRUE(out.ok());
      Poison(*cuda_, out->view());
      ASSERT_TRUE(cuda_
                      ->CausalConv({.x = {x.view().ptr, d, Shape{t_all, C}, tensor::Device::kCuda},
                                    .x_row_stride = stride,
                                    .out = out->view(),
                                    .weight = w.view(),
                                    .state = st.view(),
                                    .slots = slots_dev.data<int32_t>(),
                                    .cu_seqlens = (general ? cu_long_dev : cu_dev).data<int32_t>(),
                                    .num_seqs = general ? B + 1 : B})
                      .ok());
      outs[general] = Download(*cuda_, out->view());
      outs[general].resize(T * C);  // the decode sequences' rows
      states[general] = Download(*cuda_, st.view());
    }
    // CPU reference of the decode batch, on packed x (the same values).
    std::vector<float> packed(T * C);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) packed[t * C + c] = x.host[t * stride + c];
    DeviceBuffer xc = ToCpu(*cpu_, Shape{T, C}, packed), wc = ToCpu(*cpu_, w);
    DeviceBuffer sc = ToCpu(*cpu_, Shape{slots_n, C, K - 1}, st0);
    DeviceBuffer oc = ToCpu(*cpu_, Shape{T, C}, std::vector<float>(T * C));
    ASSERT_TRUE(cpu_->CausalConv({.x = xc.view(),
                                  .out = oc.view(),
                                  .weight = wc.view(),
                                  .state = sc.view(),
                                  .slots = slots.data(),
                                  .cu_seqlens = cu.data(),
                                  .num_seqs = B})
                    .ok());
    Expect(absl::StrCat("CausalConv decode out ", Name(d)).c_str(), outs[0], FromCpu(oc.view()),
           1e-5);
    Expect(absl::StrCat("CausalConv decode state ", Name(d)).c_str(), states[0], FromCpu(sc.view()),
           0.0);
    EXPECT_EQ(outs[0], outs[1]) << "per-sequence path differs from the general path";
    // The decode sequences' slots (the long one's slot differs, of course).
    for (int b = 0; b < B; ++b) {
      const int64_t at = static_cast<int64_t>(slots[b]) * C * (K - 1);
      EXPECT_TRUE(std::equal(states[0].begin() + at, states[0].begin() + at + C * (K - 1),
                             states[1].begin() + at))
          << "state of sequence " << b;
    }
  }
}

TEST_F(CudaParityTest, GkaGates) {
  struct Case {
    int64_t T, H, hq, hk, D;
    DType d;
    bool beta, alpha, decay;
  };
  for (const Case c : {Case{64, 16, 16, 2, 128, DType::kBF16, true, true, true},
                       Case{64, 8, 8, 1, 128, DType::kF32, true, true, true},
                       Case{64, 64, 64, 8, 128, DType::kBF16, true, true, true},
                       Case{17, 16, 16, 2, 128, DType::kF32, false, false, false},
                       Case{9, 8, 8, 2, 64, DType::kF32, true, false, true}}) {
    GpuTensor qc = UploadRandom(*cuda_, Shape{c.T, c.hq * c.D}, DType::kF32, rng_);
    GpuTensor kc = UploadRandom(*cuda_, Shape{c.T, c.hk * c.D}, DType::kF32, rng_);
    GpuTensor vc = UploadRandom(*cuda_, Shape{c.T, c.hk * c.D}, DType::kF32, rng_);
    GpuTensor a = UploadRandom(*cuda_, Shape{c.T, c.H}, c.d, rng_, 3.0f);
    GpuTensor b = UploadRandom(*cuda_, Shape{c.T, c.H}, c.d, rng_, 3.0f);
    GpuTensor cc = UploadRandom(*cuda_, Shape{c.T, c.H}, c.d, rng_, 3.0f);
    a.host[0] = RoundTo(c.d, 30.0f);  // softplus threshold branch
    a = Upload(*cuda_, Shape{c.T, c.H}, c.d, a.host);
    std::vector<float> alog(c.H), dtb(c.H);
    for (auto& x : alog) x = std::log(UniformF(1.f, 16.f));
    for (auto& x : dtb) x = UniformF(-6.f, -2.f);
    GpuTensor alog_t = Upload(*cuda_, Shape{c.H}, DType::kF32, alog);
    GpuTensor dtb_t = Upload(*cuda_, Shape{c.H}, DType::kF32, dtb);
    GpuTensor bb = UploadRandom(*cuda_, Shape{c.H}, DType::kF32, rng_, 0.5f);
    GpuTensor ab = UploadRandom(*cuda_, Shape{c.H}, DType::kF32, rng_, 0.5f);
    std::vector<DeviceBuffer> outs;
    for (int i = 0; i < 3; ++i)
      outs.push_back(std::move(cuda_->Allocate(Shape{c.T, c.H, c.D}, DType::kF32)).value());
    for (int i = 0; i < 2; ++i)
      outs.push_back(std::move(cuda_->Allocate(Shape{c.T, c.H}, DType::kF32)).value());
    for (auto& o : outs) Poison(*cuda_, o.view());
    ASSERT_TRUE(cuda_
                    ->GkaGates({.q_conv = qc.view(),
                                .k_conv = kc.view(),
                                .v_conv = vc.view(),
                                .a = c.decay ? a.view() : TensorView{},
                                .b = c.beta ? b.view() : TensorView{},
                                .c = c.alpha ? cc.view() : TensorView{},
                                .a_log = c.decay ? alog_t.view() : TensorView{},
                                .dt_bias = c.decay ? dtb_t.view() : TensorView{},
                                .b_bias = c.beta ? bb.view() : TensorView{},
                                .alpha_bias = c.alpha ? ab.view() : TensorView{},
                                .use_forgetting_gate = c.decay,
                                .q_out = outs[0].view(),
                                .k_out = outs[1].view(),
                                .v_out = outs[2].view(),
                                .alpha = outs[3].view(),
                                .g = outs[4].view()})
                    .ok());
    DeviceBuffer qh = ToCpu(*cpu_, qc), kh = ToCpu(*cpu_, kc), vh = ToCpu(*cpu_, vc),
                 ah = ToCpu(*cpu_, a), bh = ToCpu(*cpu_, b), ch = ToCpu(*cpu_, cc),
                 alh = ToCpu(*cpu_, alog_t), dth = ToCpu(*cpu_, dtb_t), bbh = ToCpu(*cpu_, bb),
                 abh = ToCpu(*cpu_, ab);
    std::vector<DeviceBuffer> couts;
    for (int i = 0; i < 3; ++i)
      couts.push_back(ToCpu(*cpu_, Shape{c.T, c.H, c.D}, std::vector<float>(c.T * c.H * c.D)));
    for (int i = 0; i < 2; ++i)
      couts.push_back(ToCpu(*cpu_, Shape{c.T, c.H}, std::vector<float>(c.T * c.H)));
    const absl::Status s = cpu_->GkaGates({.q_conv = qh.view(),
                                           .k_conv = kh.view(),
                                           .v_conv = vh.view(),
                                           .a = c.decay ? ah.view() : TensorView{},
                                           .b = c.beta ? bh.view() : TensorView{},
                                           .c = c.alpha ? ch.view() : TensorView{},
                                           .a_log = c.decay ? alh.view() : TensorView{},
                                           .dt_bias = c.decay ? dth.view() : TensorView{},
                                           .b_bias = c.beta ? bbh.view() : TensorView{},
                                           .alpha_bias = c.alpha ? abh.view() : TensorView{},
                                           .use_forgetting_gate = c.decay,
                                           .q_out = couts[0].view(),
                                           .k_out = couts[1].view(),
                                           .v_out = couts[2].view(),
                                           .alpha = couts[3].view(),
                                           .g = couts[4].view()});
    ASSERT_TRUE(s.ok()) << s;
    const char* names[] = {"q_hat", "k_tilde", "v_tilde", "alpha", "g"};
    for (int i = 0; i < 5; ++i) {
      Expect(absl::StrCat("GkaGates ", names[i], " ", Name(c.d), " H=", c.H, " D=", c.D,
                          c.beta ? "" : " no-beta", c.decay ? "" : " no-decay")
                 .c_str(),
             Download(*cuda_, outs[i].view()), FromCpu(couts[i].view()), 1e-5);
    }
  }
}

// Realistic GKA state: h_kk = Σ w_i k_i k_iᵀ (PSD, symmetric), h_kv = Σ w_i k_i v_iᵀ, from
// `rank` random unit keys; unused slots stay NaN (a read of the wrong slot shows up).
void FillStates(std::mt19937_64& rng, int64_t H, int64_t D, const std::vector<int32_t>& used,
                int rank, std::vector<float>& kk, std::vector<float>& kv) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.05f, 1.0f);
  std::vector<float> k(D), v(D);
  for (int32_t s : used) {
    for (int64_t h = 0; h < H; ++h) {
      float* a = kk.data() + (s * H + h) * D * D;
      float* c = kv.data() + (s * H + h) * D * D;
      std::fill(a, a + D * D, 0.f);
      std::fill(c, c + D * D, 0.f);
      for (int r = 0; r < rank; ++r) {
        float nrm = 0;
        for (auto& x : k) {
          x = nd(rng);
          nrm += x * x;
        }
        const float w = ud(rng) / std::sqrt(nrm);
        for (auto& x : k) x *= w;
        for (auto& x : v) x = nd(rng) * w;
        for (int64_t i = 0; i < D; ++i) {
          for (int64_t j = 0; j < D; ++j) {
            a[i * D + j] += k[i] * k[j];
            c[i * D + j] += k[i] * v[j];
          }
        }
      }
    }
  }
}

struct CoreCase {
  const char* name;
  int64_t H, D;
  std::vector<int> lens;
  std::vector<int> iters;
  int state_rank;  // 0: zero initial state
  bool decay_kk = true;
};

TEST_F(CudaParityTest, GkaCore) {
  std::vector<CoreCase> cases = {
      {"decode N=128 H=16 D=128 num_iter {0,1,10,30}",
       16,
       128,
       std::vector<int>(128, 1),
       {0, 1, 10, 30},
       6},
      {"decode N=16 H=64 D=128", 64, 128, std::vector<int>(16, 1), {30, 10}, 6},
      {"decode N=256 H=8 D=128", 8, 128, std::vector<int>(256, 1), {30}, 3},
      {"prefill varlen {37,64,1,0} H=8 D=128 from state",
       8,
       128,
       {37, 64, 1, 0},
       {30, 10, 0, 5},
       4},
      {"prefill {50} H=8 D=128 from zero state", 8, 128, {50}, {30}, 0},
      {"tiny D=64 {5,1,9} H=4", 4, 64, {5, 1, 9}, {30, 1, 10}, 3},
      // Sequences longer than 64 tokens take the chunk-parallel path (gka_prefill.cu); the
      // short ones in the same batch stay token-sequential.
      {"chunked varlen {300,64,129,1,0,65} H=8 from state",
       8,
       128,
       {300, 64, 129, 1, 0, 65},
       {30, 10, 0, 5},
       4},
      {"chunked {200} H=8 decay_kk=false from state", 8, 128, {200}, {30}, 4, false},
      {"chunked {1000} H=8 from zero state", 8, 128, {1000}, {30}, 0},
      {"chunked T=16384 H=8 num_iter 10 from state", 8, 128, {16384}, {10}, 4},
  };
  // GKA_PARITY_CASE=<substring>: only the cases whose name holds it (compute-sanitizer runs
  // take the chunked ones alone: scripts/gpu/run_all.sh sanitize-gka).
  const char* only = std::getenv("GKA_PARITY_CASE");
  for (const CoreCase& c : cases) {
    if (only != nullptr && std::string(c.name).find(only) == std::string::npos) continue;
    const int B = static_cast<int>(c.lens.size());
    const int64_t H = c.H, D = c.D;
    std::vector<int32_t> cu{0}, iters(B);
    int max_len = 0;
    for (int b = 0; b < B; ++b) {
      cu.push_back(cu.back() + c.lens[b]);
      iters[b] = c.iters[b % c.iters.size()];
      max_len = std::max(max_len, c.lens[b]);
    }
    const int64_t T = cu.back();
    const int64_t num_slots = 2 * B;
    std::vector<int32_t> perm = Permutation(static_cast<int>(num_slots));
    std::vector<int32_t> slots(perm.begin(), perm.begin() + B);
    std::vector<float> kk(num_slots * H * D * D, std::nanf("")), kv = kk;
    if (c.state_rank > 0) {
      FillStates(rng_, H, D, slots, c.state_rank, kk, kv);
    } else {
      for (int32_t s : slots) {
        std::fill(kk.begin() + s * H * D * D, kk.begin() + (s + 1) * H * D * D, 0.f);
        std::fill(kv.begin() + s * H * D * D, kv.begin() + (s + 1) * H * D * D, 0.f);
      }
    }
    // Inputs shaped like GkaGates' outputs: unit q̂, (β+ε)·unit k̂, (β+ε)·v, α, g < 0.
    std::vector<float> q(T * H * D), k(T * H * D), v(T * H * D), alpha(T * H), g(T * H);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int64_t r = 0; r < T * H; ++r) {
      float qn = 0, kn = 0;
      for (int64_t j = 0; j < D; ++j) {
        q[r * D + j] = nd(rng_);
        k[r * D + j] = nd(rng_);
        v[r * D + j] = nd(rng_);
        qn += q[r * D + j] * q[r * D + j];
        kn += k[r * D + j] * k[r * D + j];
      }
      const float beta = UniformF(0.f, 1.f) + 1e-6f;
      for (int64_t j = 0; j < D; ++j) {
        q[r * D + j] /= std::sqrt(qn) + 1e-6f;
        k[r * D + j] *= beta / (std::sqrt(kn) + 1e-6f);
        v[r * D + j] *= beta;
      }
      alpha[r] = UniformF(0.f, 1.f);
      g[r] = -std::exp(UniformF(-7.f, -1.f));
    }
    GpuTensor qd = Upload(*cuda_, Shape{T, H, D}, DType::kF32, q);
    GpuTensor kd = Upload(*cuda_, Shape{T, H, D}, DType::kF32, k);
    GpuTensor vd = Upload(*cuda_, Shape{T, H, D}, DType::kF32, v);
    GpuTensor ad = Upload(*cuda_, Shape{T, H}, DType::kF32, alpha);
    GpuTensor gd = Upload(*cuda_, Shape{T, H}, DType::kF32, g);
    GpuTensor kkd = Upload(*cuda_, Shape{num_slots, H, D, D}, DType::kF32, kk);
    GpuTensor kvd = Upload(*cuda_, Shape{num_slots, H, D, D}, DType::kF32, kv);
    DeviceBuffer slots_dev = UploadInts(*cuda_, slots), cu_dev = UploadInts(*cuda_, cu),
                 it_dev = UploadInts(*cuda_, iters);
    auto out = cuda_->Allocate(Shape{T, H, D}, DType::kF32);
    ASSERT_TRUE(out.ok());
    Poison(*cuda_, out->view());
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const absl::Status s = cuda_->GkaCore({.q = qd.view(),
                                           .k = kd.view(),
                                           .v = vd.view(),
                                           .alpha = ad.view(),
                                           .g = gd.view(),
                                           .out = out->view(),
                                           .h_kk = kkd.view(),
                                           .h_kv = kvd.view(),
                                           .slots = slots_dev.data<int32_t>(),
                                           .cu_seqlens = cu_dev.data<int32_t>(),
                                           .num_iter = it_dev.data<int32_t>(),
                                           .num_seqs = B,
                                           .max_seqlen = max_len,
                                           .ridge_ratio = 0.02f,
                                           .scale = scale,
                                           .decay_kk = c.decay_kk});
    ASSERT_TRUE(s.ok()) << s;
    DeviceBuffer qc = ToCpu(*cpu_, qd), kc = ToCpu(*cpu_, kd), vc = ToCpu(*cpu_, vd),
                 ac = ToCpu(*cpu_, ad), gc = ToCpu(*cpu_, gd), kkc = ToCpu(*cpu_, kkd),
                 kvc = ToCpu(*cpu_, kvd);
    DeviceBuffer oc = ToCpu(*cpu_, Shape{T, H, D}, std::vector<float>(T * H * D));
    const absl::Status sc = cpu_->GkaCore({.q = qc.view(),
                                           .k = kc.view(),
                                           .v = vc.view(),
                                           .alpha = ac.view(),
                                           .g = gc.view(),
                                           .out = oc.view(),
                                           .h_kk = kkc.view(),
                                           .h_kv = kvc.view(),
                                           .slots = slots.data(),
                                           .cu_seqlens = cu.data(),
                                           .num_iter = iters.data(),
                                           .num_seqs = B,
                                           .max_seqlen = max_len,
                                           .ridge_ratio = 0.02f,
                                           .scale = scale,
                                           .decay_kk = c.decay_kk});
    ASSERT_TRUE(sc.ok()) << sc;
    Expect(absl::StrCat("GkaCore out ", c.name).c_str(), Download(*cuda_, out->view()),
           FromCpu(oc.view()), 1e-4);
    Expect(absl::StrCat("GkaCore h_kk ", c.name).c_str(), Download(*cuda_, kkd.view()),
           FromCpu(kkc.view()), 1e-5);
    Expect(absl::StrCat("GkaCore h_kv ", c.name).c_str(), Download(*cuda_, kvd.view()),
           FromCpu(kvc.view()), 1e-5);
  }
}

// ---- sampling ----------------------------------------------------------------------------

TEST_F(CudaParityTest, Sample) {
  const int64_t V = 151936;
  std::vector<kernels::SamplingConfig> configs = {
      {.temperature = 0.0f},
      {.temperature = 0.7f},
      {.temperature = 1.0f, .top_k = 50},
      {.temperature = 1.0f, .top_p = 0.9f},
      {.temperature = 0.8f, .min_p = 0.05f},
      {.temperature = 1.2f, .top_k = 1},
      {.temperature = 1.0f, .top_k = 40, .top_p = 0.8f, .min_p = 0.02f},
      {.temperature = 0.0f,
       .repetition_penalty = 1.3f,
       .presence_penalty = 0.5f,
       .frequency_penalty = 0.2f},
      {.temperature = 0.9f, .top_p = 0.95f, .repetition_penalty = 1.1f, .frequency_penalty = 0.3f},
      {.temperature = 1.0f, .top_k = 7, .top_p = 0.5f},  // tie-heavy row below
      {.temperature = 1.0f, .top_p = 0.3f},              // tie-heavy row below
      {.temperature = 2.0f},
  };
  const int B = static_cast<int>(configs.size());
  std::vector<uint64_t> steps(B);
  for (int b = 0; b < B; ++b) {
    configs[b].seed = rng_();
    steps[b] = rng_() % 1000;
  }
  std::vector<float> logits = RandomVector(static_cast<size_t>(B) * V, rng_, 2.0f);
  for (int b : {9, 10}) {  // quantised logits: many exact ties at every cut
    for (int64_t i = 0; i < V; ++i) logits[b * V + i] = std::round(logits[b * V + i] * 2) / 2;
  }
  logits[3 * V + 5] = std::nanf("");  // NaN counts as -inf
  std::vector<int32_t> history, offsets{0};
  for (int b = 0; b < B; ++b) {
    const int n = Uniform(0, 40);
    for (int i = 0; i < n; ++i) history.push_back(Uniform(0, 200));  // repeats on purpose
    offsets.push_back(static_cast<int32_t>(history.size()));
  }
  for (int32_t vocab_limit : {0, 151669}) {
    GpuTensor lg = Upload(*cuda_, Shape{B, V}, DType::kF32, logits);
    DeviceBuffer lc = ToCpu(*cpu_, lg);
    std::vector<int32_t> ids_gpu(B, -1), ids_cpu(B, -2);
    std::vector<float> lp_gpu(B), lp_cpu(B);
    const kernels::SampleParams base{.vocab_limit = vocab_limit,
                                     .configs = configs.data(),
                                     .steps = steps.data(),
                                     .history = history.data(),
                                     .history_offsets = offsets.data(),
                                     .num_seqs = B};
    kernels::SampleParams pg = base, pc = base;
    pg.logits = lg.view();
    pg.out_ids = ids_gpu.data();
    pg.out_logprobs = lp_gpu.data();
    pc.logits = lc.view();
    pc.out_ids = ids_cpu.data();
    pc.out_logprobs = lp_cpu.data();
    const absl::Status s = cuda_->Sample(pg);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(cpu_->Sample(pc).ok());
    for (int b = 0; b < B; ++b) {
      std::printf(
          "[ parity   ] Sample row %2d limit %6d: cuda id %6d lp %.6f | cpu id %6d lp %.6f\n", b,
          vocab_limit, ids_gpu[b], lp_gpu[b], ids_cpu[b], lp_cpu[b]);
      EXPECT_EQ(ids_gpu[b], ids_cpu[b]) << "row " << b << " seed " << seed_;
      EXPECT_NEAR(lp_gpu[b], lp_cpu[b], 1e-4) << "row " << b;
    }
    Expect("Sample penalised logits", Download(*cuda_, lg.view()), FromCpu(lc.view()), 1e-6);
  }
}

// OpenAI top_logprobs: the alternatives the CUDA sampler lists (k rounds of a block arg-max)
// against the CPU's partial sort, with penalties, temperature 0, quantised (tie-heavy) rows, a
// NaN, an all -inf row and a vocab_limit; asking for them must not change the draw.
TEST_F(CudaParityTest, SampleTopLogprobs) {
  const int64_t V = 151936;
  std::vector<kernels::SamplingConfig> configs = {
      {.temperature = 0.0f, .num_top_logprobs = 20},
      {.temperature = 0.7f, .num_top_logprobs = 5},
      {.temperature = 1.0f, .top_k = 50, .num_top_logprobs = 1},
      {.temperature = 1.0f, .top_p = 0.9f},  // no alternatives in a batch that has some
      {.temperature = 0.9f,
       .repetition_penalty = 1.3f,
       .presence_penalty = 0.5f,
       .frequency_penalty = 0.2f,
       .num_top_logprobs = 20},
      {.temperature = 1.0f, .top_k = 7, .num_top_logprobs = 20},  // tie-heavy row below
      {.temperature = 0.0f, .num_top_logprobs = 13},              // tie-heavy row below
      {.temperature = 1.0f, .num_top_logprobs = 3},               // every logit -inf
  };
  const int B = static_cast<int>(configs.size());
  std::vector<uint64_t> steps(B);
  for (int b = 0; b < B; ++b) {
    configs[b].seed = rng_();
    steps[b] = rng_() % 1000;
  }
  std::vector<float> logits = RandomVector(static_cast<size_t>(B) * V, rng_, 2.0f);
  for (int b : {5, 6}) {  // quantised logits: ties everywhere in the top 20
    for (int64_t i = 0; i < V; ++i) logits[b * V + i] = std::round(logits[b * V + i] * 2) / 2;
  }
  for (int64_t i = 0; i < V; ++i) logits[7 * V + i] = -INFINITY;
  logits[1 * V + 7] = std::nanf("");  // NaN counts as -inf
  std::vector<int32_t> history, offsets{0};
  for (int b = 0; b < B; ++b) {
    const int n = Uniform(0, 40);
    for (int i = 0; i < n; ++i) history.push_back(Uniform(0, 200));
    offsets.push_back(static_cast<int32_t>(history.size()));
  }
  constexpr int K = kernels::kMaxTopLogprobs;
  for (int32_t vocab_limit : {0, 151669, 10}) {
    GpuTensor lg = Upload(*cuda_, Shape{B, V}, DType::kF32, logits);
    GpuTensor plain = Upload(*cuda_, Shape{B, V}, DType::kF32, logits);
    DeviceBuffer lc = ToCpu(*cpu_, lg);
    std::vector<int32_t> ids_gpu(B, -1), ids_cpu(B, -2), ids_plain(B, -3);
    std::vector<float> lp_gpu(B), lp_cpu(B), lp_plain(B);
    std::vector<int32_t> top_gpu(B * K, -5), top_cpu(B * K, -6);
    std::vector<float> tlp_gpu(B * K, 5.0f), tlp_cpu(B * K, 6.0f);
    const kernels::SampleParams base{.vocab_limit = vocab_limit,
                                     .configs = configs.data(),
                                     .steps = steps.data(),
                                     .history = history.data(),
                                     .history_offsets = offsets.data(),
                                     .num_seqs = B};
    kernels::SampleParams pg = base, pc = base;
    pg.logits = lg.view();
    pg.out_ids = ids_gpu.data();
    pg.out_logprobs = lp_gpu.data();
    pg.out_top_ids = top_gpu.data();
    pg.out_top_logprobs = tlp_gpu.data();
    pc.logits = lc.view();
    pc.out_ids = ids_cpu.data();
    pc.out_logprobs = lp_cpu.data();
    pc.out_top_ids = top_cpu.data();
    pc.out_top_logprobs = tlp_cpu.data();
    const absl::Status s = cuda_->Sample(pg);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(cpu_->Sample(pc).ok());
    // The same rows without alternatives draw the same tokens.
    std::vector<kernels::SamplingConfig> none = configs;
    for (kernels::SamplingConfig& c : none) c.num_top_logprobs = 0;
    kernels::SampleParams pp = base;
    pp.configs = none.data();
    pp.logits = plain.view();
    pp.out_ids = ids_plain.data();
    pp.out_logprobs = lp_plain.data();
    ASSERT_TRUE(cuda_->Sample(pp).ok());
    for (int b = 0; b < B; ++b) {
      EXPECT_EQ(ids_gpu[b], ids_cpu[b]) << "row " << b << " seed " << seed_;
      EXPECT_EQ(ids_gpu[b], ids_plain[b]) << "row " << b;
      EXPECT_EQ(lp_gpu[b], lp_plain[b]) << "row " << b;
      double worst = 0.0;
      for (int j = 0; j < K; ++j) {
        const int at = b * K + j;
        EXPECT_EQ(top_gpu[at], top_cpu[at]) << "row " << b << " rank " << j << " seed " << seed_;
        if (std::isinf(tlp_cpu[at])) {
          EXPECT_EQ(tlp_gpu[at], tlp_cpu[at]) << "row " << b << " rank " << j;
        } else {
          worst = std::max(worst, std::fabs(double{tlp_gpu[at]} - tlp_cpu[at]));
        }
      }
      std::printf(
          "[ parity   ] SampleTopLogprobs row %d limit %6d k %2d: first ids cuda %6d cpu %6d, "
          "max |dlogprob| %.2e\n",
          b, vocab_limit, configs[b].num_top_logprobs, top_gpu[b * K], top_cpu[b * K], worst);
      EXPECT_LE(worst, 1e-4) << "row " << b;
    }
  }
}

}  // namespace
}  // namespace gka::gpu_testing
