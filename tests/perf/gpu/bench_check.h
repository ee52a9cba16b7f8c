// Fail-fast checks for the GPU benchmarks: a failed Status or CUDA call prints where and exits 1
// (a benchmark has nothing to recover). Benchmarks only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#define BENCH_CHECK(expr)                                                \
  do {                                                                   \
    const auto& bench_s_ = (expr);                                       \
    if (!bench_s_.ok()) {                                                \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, \
                   std::string(bench_s_.message()).c_str());             \
      std::exit(1);                                                      \
    }                                                                    \
  } while (0)
#define CUDA_CHECK(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)
