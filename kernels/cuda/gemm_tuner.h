// Picks the cuBLASLt algorithm of each bf16 GEMM shape at decode sizes by timing the candidates
// once, at first use, and caching the winner (issue 5). Off unless GKA_GEMM_TUNE=1.
//
// Why it exists, and why it is off: issue 5's step breakdown on 4× H200 had the weight GEMMs
// at M = 209 rows moving 48 % of the copy bandwidth, blamed on cuBLAS's choice. Measured on
// 4× H100 (tests/perf/gpu/decode_gemm_bench.cc, RESULTS.md): for every decode shape of the 32B
// model at TP 4 and M = 64..256, no cuBLASLt heuristic algorithm nor split-K variant beats
// cublasGemmEx's default by more than a few percent (all rows together 1.00×), and a tuned
// choice makes bf16 results depend on timing noise across processes. Kept, opt-in, to measure
// other cards (H200) and cuBLAS versions with the same code.
//
// Owns: the cuBLASLt handle, the CUDA events used for timing, and the cache
//   key   (M bucket, N, K, y dtype, beta ≠ 0, pointer alignments of x, w, y)
//   value the fastest of {cublasGemmEx's default, each heuristic algorithm, split-K variants},
//         timed at the bucket's largest M on scratch buffers with the L2 flushed before each
//         run (the model streams every weight from HBM once per step); a candidate must beat
//         the default by 3 %.
// Timing synchronises the stream, so it never runs inside a CUDA-graph capture: a shape first
// seen while capturing falls back to cublasGemmEx uncached (the engine runs every graph's step
// once uncaptured first, which tunes it). Private to kernels/cuda.
//
// Numerics: every candidate accumulates in fp32 (CUBLAS_COMPUTE_32F); split-K partials are
// reduced in fp32 (reduction schemes that add partials in the bf16 output are excluded). Which
// algorithm wins may differ between runs of the process (timing noise), and different
// algorithms round differently: with the tuner on, bf16 results are reproducible within one
// process, across processes only within bf16 tolerance.
//
// Thread-safety: one thread (the backend's), like CudaContext.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/api/gemm.h"

namespace gka::kernels::cuda {

class CudaContext;

class GemmTuner {
 public:
  struct Options {
    bool enabled = false;     // GKA_GEMM_TUNE=1 / 0 in the environment overrides it
    int64_t max_rows = 512;   // M above this runs through cublasGemmEx (prefill: compute bound)
    int max_candidates = 48;  // heuristic algorithms + split-K variants timed per shape
  };

  static absl::StatusOr<std::unique_ptr<GemmTuner>> Create(const Options& options);
  ~GemmTuner();
  GemmTuner(const GemmTuner&) = delete;
  GemmTuner& operator=(const GemmTuner&) = delete;

  // Runs y = x·wᵀ (+ beta·y) (shapes checked by the caller: x [M, K] bf16, w [N, K] bf16,
  // y [M, N] bf16 or f32) with the tuned algorithm, tuning the shape first if it is new.
  // Returns false, having enqueued nothing, when the caller should use cublasGemmEx: tuner
  // off, not bf16, M above max_rows, cublasGemmEx won, or a new shape while capturing.
  absl::StatusOr<bool> Run(const CudaContext& ctx, const GemmParams& p);

 private:
  struct Impl;
  GemmTuner(const Options& options, std::unique_ptr<Impl> impl);
  Options options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gka::kernels::cuda
