// The 32B model's decode GEMMs at TP 4 (issue 5): cuBLAS's default choice vs the GemmTuner's
// (kernels/cuda/gemm_tuner.h), per shape and batch rows M, as achieved bandwidth.
//
// Decode GEMMs are weight-streaming bound: bytes = N·K·2 (weight) + M·K·2 (x) + M·N·size(y),
// so the roofline is that over the device-to-device copy bandwidth measured here first (bytes
// read + written, as tests/perf/RESULTS.md's rooflines). Each (shape, M) is timed per call with
// events around each of 24 calls that cycle through enough copies of the weight to exceed
// 2 × L2 (the model reads every weight from HBM once per step), median; twice (two sessions);
// the tuned backend's first call at each shape tunes it (not timed). Also checks the tuned
// result against the default's (relative L2; both accumulate in fp32).
//
//   decode_gemm_bench [--device 0] [--rows 64,101,128,160,209,256]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/tensor/dtype.h"
#include "kernels/api/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/perf/gpu/bench_check.h"
#include "tests/perf/gpu/bench_random.h"

namespace gka::gpu_testing {
namespace {

using kernels::Backend;
using kernels::DeviceBuffer;
using tensor::DType;
using tensor::Shape;
using tensor::TensorView;

struct GemmShape {
  const char* what;
  int64_t n, k;
  DType y;
};

// Per-rank shapes of hqwen3-32b-gka at TP 4 (hidden 5120, FFN 25600, vocab 151936).
const GemmShape kShapes[] = {
    {"gate_up", 12800, 5120, DType::kBF16}, {"down", 5120, 6400, DType::kBF16},
    {"o_proj", 5120, 2048, DType::kBF16},   {"gka qkvabg", 4656, 5120, DType::kBF16},
    {"attn qkv", 2560, 5120, DType::kBF16}, {"lm_head", 37984, 5120, DType::kF32},
};

// Median per-call µs of `calls` GEMMs cycling through the weight copies.
double TimeGemm(Backend& be, const std::vector<DeviceBuffer>& ws, const TensorView& x,
                const TensorView& y, int calls) {
  auto stream =
      static_cast<cudaStream_t>(static_cast<kernels::cuda::CudaBackend&>(be).stream_handle());
  std::vector<cudaEvent_t> ev(calls + 1);
  for (auto& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  for (int i = 0; i < 3; ++i) BENCH_CHECK(be.Gemm({.x = x, .w = ws[i % ws.size()].view(), .y = y}));
  CUDA_CHECK(cudaEventRecord(ev[0], stream));
  for (int i = 0; i < calls; ++i) {
    BENCH_CHECK(be.Gemm({.x = x, .w = ws[i % ws.size()].view(), .y = y}));
    CUDA_CHECK(cudaEventRecord(ev[i + 1], stream));
  }
  CUDA_CHECK(cudaEventSynchronize(ev[calls]));
  std::vector<double> us(calls);
  for (int i = 0; i < calls; ++i) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]));
    us[i] = 1000.0 * ms;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::nth_element(us.begin(), us.begin() + calls / 2, us.end());
  return us[calls / 2];
}

double CopyGbs(Backend& be) {
  const size_t bytes = size_t{1} << 30;
  auto a = be.Allocate(Shape{static_cast<int64_t>(bytes)}, DType::kU8);
  auto b = be.Allocate(Shape{static_cast<int64_t>(bytes)}, DType::kU8);
  BENCH_CHECK(a.status());
  BENCH_CHECK(b.status());
  BENCH_CHECK(be.CopyOnDevice(b->view().ptr, a->view().ptr, bytes));
  BENCH_CHECK(be.Synchronize());
  auto stream =
      static_cast<cudaStream_t>(static_cast<kernels::cuda::CudaBackend&>(be).stream_handle());
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    CUDA_CHECK(cudaEventRecord(e0, stream));
    BENCH_CHECK(be.CopyOnDevice(b->view().ptr, a->view().ptr, bytes));
    CUDA_CHECK(cudaEventRecord(e1, stream));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min<double>(best, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 2.0 * bytes / (best * 1e-3) / 1e9;
}

std::vector<float> Download(Backend& be, const TensorView& t) {
  std::vector<float> out(t.numel());
  if (t.dtype == DType::kF32) {
    BENCH_CHECK(be.CopyToHost(out.data(), t.ptr, out.size() * 4));
  } else {
    std::vector<uint16_t> h(t.numel());
    BENCH_CHECK(be.CopyToHost(h.data(), t.ptr, h.size() * 2));
    for (size_t i = 0; i < h.size(); ++i) out[i] = tensor::BF16ToFloat(h[i]);
  }
  return out;
}

int Main(int argc, char** argv) {
  int device = 0;
  std::vector<int64_t> rows = {64, 101, 128, 160, 209, 256};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--device") == 0) {
      device = std::atoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--rows") == 0) {
      rows.clear();
      for (absl::string_view r : absl::StrSplit(argv[i + 1], ',')) {
        int64_t v = 0;
        if (absl::SimpleAtoi(r, &v)) rows.push_back(v);
      }
    }
  }
  // The tuner reads GKA_GEMM_TUNE when a backend is created: one backend each way.
  setenv("GKA_GEMM_TUNE", "0", 1);
  auto base = kernels::cuda::CudaBackend::Create({.device_ordinal = device});
  BENCH_CHECK(base.status());
  setenv("GKA_GEMM_TUNE", "1", 1);
  auto tuned = kernels::cuda::CudaBackend::Create({.device_ordinal = device});
  BENCH_CHECK(tuned.status());
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const double copy = CopyGbs(**base);
  std::printf("# device %d: %s, L2 %d MiB; copy bandwidth %.0f GB/s (read + written)\n", device,
              prop.name, prop.l2CacheSize >> 20, copy);
  std::printf(
      "# GEMM N x K, M rows | cuBLAS default: us (run 1 / 2), GB/s, %% of copy | tuned: us (run 1 "
      "/ 2), GB/s, %% of copy | speed-up | tuned vs default rel L2\n");
  double sum_base = 0, sum_tuned = 0;
  const int64_t max_m = *std::max_element(rows.begin(), rows.end());
  for (const GemmShape& s : kShapes) {
    const size_t w_bytes = static_cast<size_t>(s.n * s.k * 2);
    const size_t copies = std::max<size_t>(
        1, (2 * static_cast<size_t>(prop.l2CacheSize) * 3 + w_bytes - 1) / w_bytes);
    std::vector<DeviceBuffer> ws;
    for (size_t c = 0; c < copies; ++c) {
      auto w = (*base)->Allocate(Shape{s.n, s.k}, DType::kBF16);
      BENCH_CHECK(w.status());
      CUDA_CHECK(RandomFillDevice(w->view().ptr, s.n * s.k, true, 1000 + c,
                                  1.0f / std::sqrt(static_cast<float>(s.k)), 0.0f, nullptr));
      ws.push_back(std::move(*w));
    }
    auto x_all = (*base)->Allocate(Shape{max_m, s.k}, DType::kBF16);
    auto y_base = (*base)->Allocate(Shape{max_m, s.n}, s.y);
    auto y_tuned = (*base)->Allocate(Shape{max_m, s.n}, s.y);
    BENCH_CHECK(x_all.status());
    BENCH_CHECK(y_base.status());
    BENCH_CHECK(y_tuned.status());
    CUDA_CHECK(RandomFillDevice(x_all->view().ptr, max_m * s.k, true, 7, 1.0f, 0.0f, nullptr));
    CUDA_CHECK(cudaDeviceSynchronize());
    for (int64_t m : rows) {
      auto rows_of = [m](const TensorView& t) {
        TensorView v = t;
        v.shape = Shape{m, t.shape[1]};
        return v;
      };
      const TensorView x = rows_of(x_all->view()), yb = rows_of(y_base->view()),
                       yt = rows_of(y_tuned->view());
      double b[2], t[2];
      for (int run = 0; run < 2; ++run) {
        b[run] = TimeGemm(**base, ws, x, yb, 24);
        BENCH_CHECK((*base)->Synchronize());
        t[run] = TimeGemm(**tuned, ws, x, yt, 24);
        BENCH_CHECK((*tuned)->Synchronize());
      }
      // Same inputs (weight copy 0) through both paths.
      BENCH_CHECK((*base)->Gemm({.x = x, .w = ws[0].view(), .y = yb}));
      BENCH_CHECK((*base)->Synchronize());
      BENCH_CHECK((*tuned)->Gemm({.x = x, .w = ws[0].view(), .y = yt}));
      BENCH_CHECK((*tuned)->Synchronize());
      const std::vector<float> vb = Download(**base, yb), vt = Download(**tuned, yt);
      double num = 0, den = 0;
      for (size_t i = 0; i < vb.size(); ++i) {
        num += (vb[i] - vt[i]) * double(vb[i] - vt[i]);
        den += double(vb[i]) * vb[i];
      }
      const double bytes =
          double(w_bytes) + double(m * s.k * 2) + double(m * s.n * (s.y == DType::kF32 ? 4 : 2));
      const double bmin = std::min(b[0], b[1]), tmin = std::min(t[0], t[1]);
      const double gb_b = bytes / (bmin * 1e-6) / 1e9, gb_t = bytes / (tmin * 1e-6) / 1e9;
      std::printf(
          "GEMM %-10s %5lldx%-5lld M %3lld | %7.1f / %7.1f us %6.0f GB/s %3.0f%% | %7.1f / %7.1f "
          "us %6.0f GB/s %3.0f%% | %.2fx | %.1e\n",
          s.what, static_cast<long long>(s.n), static_cast<long long>(s.k),
          static_cast<long long>(m), b[0], b[1], gb_b, 100 * gb_b / copy, t[0], t[1], gb_t,
          100 * gb_t / copy, bmin / tmin, std::sqrt(num / std::max(den, 1e-30)));
      std::fflush(stdout);
      sum_base += bmin;
      sum_tuned += tmin;
    }
  }
  std::printf("# all rows: cuBLAS default %.1f us, tuned %.1f us (%.2fx)\n", sum_base, sum_tuned,
              sum_base / sum_tuned);
  return 0;
}

}  // namespace
}  // namespace gka::gpu_testing

int main(int argc, char** argv) { return gka::gpu_testing::Main(argc, argv); }
