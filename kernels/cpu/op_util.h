// Internal helpers shared by the CPU ops (not part of the backend interface): argument
// validation with actionable messages, fixed-order reductions, and a parallel-for whose
// results never depend on the number of threads.
//
// Batch invariance: every reduction here has an order that depends only on its own inputs
// (vector length), never on the batch, the tile an element lands in, or the thread count.
// That is why the ops use these helpers instead of BLAS (see gemm.cc for the measurements).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/tensor/tensor.h"

// Compiles a hot function twice (AVX2 and baseline x86-64) and picks one at load time.
// Both clones run the same IEEE operations in the same order: the arithmetic is written with
// explicit 8-lane vectors, no FMA is enabled (-ffp-contract=off, and "avx2" does not imply
// "fma"), so the results are bitwise identical on every x86-64 machine.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(__clang__)
#define GKA_CPU_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define GKA_CPU_MULTIVERSION
#endif

namespace gka::kernels::cpu::internal {

// --- validation -----------------------------------------------------------------------

// An optional tensor that was not set (default-constructed view). A tensor with a zero
// dimension is present, just empty.
inline bool IsAbsent(const tensor::TensorView& t) {
  return t.ptr == nullptr && t.shape.rank() == 0;
}

// `t` is an F32 host tensor of the given rank with storage (unless it has no elements).
// Messages read "<op>: <name> must be ...".
absl::Status CheckF32(absl::string_view op, absl::string_view name, const tensor::TensorView& t,
                      int rank);
// As CheckF32, and the shape equals `expected` exactly.
absl::Status CheckF32Shape(absl::string_view op, absl::string_view name,
                           const tensor::TensorView& t, const tensor::Shape& expected);
absl::Status CheckNotNull(absl::string_view op, absl::string_view name, const void* p);
// cu[0] == 0, non-decreasing, cu[num_seqs] == total. `cu` must not be null.
absl::Status CheckPrefixSums(absl::string_view op, absl::string_view name, const int32_t* cu,
                             int32_t num_seqs, int64_t total);
// Every slot in [0, num_slots) and no slot twice (two sequences updating one state in the
// same call would race on a GPU and depend on order here).
absl::Status CheckSlots(absl::string_view op, const int32_t* slots, int32_t num_seqs,
                        int64_t num_slots);
// The byte ranges of a and b do not overlap.
bool Overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes);

// --- arithmetic -----------------------------------------------------------------------

// Eight fp32 lanes; GCC lowers it to one AVX or two SSE registers with identical results.
// These helpers are inline and never cross a library boundary, so GCC's note that 32-byte
// vector arguments change the ABI without AVX does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float Lanes8 __attribute__((vector_size(32)));

inline Lanes8 LoadLanes8(const float* p) {
  Lanes8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Folds the lanes in a fixed tree, then adds the scalar tail.
inline float ReduceLanes8(Lanes8 v, float tail) {
  float l[8];
  std::memcpy(l, &v, sizeof(l));
  return (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) + tail;
}

// Dot products of RM rows of x with RN rows of w (both with row length k), written to
// y[i * ldy + j] (+ beta · y; beta = 0 never reads y). Each element gets the same operations
// in the same order whatever RM and RN are (see Dot()); the tile shape only decides which
// loads are shared between elements.
template <int RM, int RN>
inline void DotTile(const float* x, const float* w, int64_t k, float* y, int64_t ldy, float beta) {
  Lanes8 acc[RM][RN];
  for (int i = 0; i < RM; ++i) {
    for (int j = 0; j < RN; ++j) acc[i][j] = Lanes8{};
  }
  const int64_t k8 = k & ~int64_t{7};
  for (int64_t kk = 0; kk < k8; kk += 8) {
    Lanes8 xv[RM];
    Lanes8 wv[RN];
    for (int i = 0; i < RM; ++i) xv[i] = LoadLanes8(x + i * k + kk);
    for (int j = 0; j < RN; ++j) wv[j] = LoadLanes8(w + j * k + kk);
    for (int i = 0; i < RM; ++i) {
      for (int j = 0; j < RN; ++j) acc[i][j] += xv[i] * wv[j];
    }
  }
  for (int i = 0; i < RM; ++i) {
    for (int j = 0; j < RN; ++j) {
      float tail = 0.0f;
      for (int64_t kk = k8; kk < k; ++kk) tail += x[i * k + kk] * w[j * k + kk];
      const float dot = ReduceLanes8(acc[i][j], tail);
      float& out = y[i * ldy + j];
      out = beta == 0.0f ? dot : dot + beta * out;
    }
  }
}

// Σ a[i]·b[i] in a fixed order that depends only on n: lane i % 8 accumulates elements
// i < n - n % 8 in order, the lanes fold in a fixed tree, and the tail is summed in order.
// Every dot product of every CPU op (GEMM included) uses this order.
inline float Dot(const float* a, const float* b, int64_t n) {
  float y;
  DotTile<1, 1>(a, b, n, &y, 1, 0.0f);
  return y;
}

// y[r] = Dot(m + r·k, x, k) for r < rows: a matrix-vector product over the rows of m.
inline void MatVecRows(const float* m, const float* x, int64_t rows, int64_t k, float* y) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) DotTile<1, 4>(x, m + r * k, k, y + r, 1, 0.0f);
  for (; r < rows; ++r) DotTile<1, 1>(x, m + r * k, k, y + r, 1, 0.0f);
}

#pragma GCC diagnostic pop

// 1 / sqrt(mean(x²) + eps), the RMSNorm factor, in fp32.
inline float InvRms(const float* x, int64_t n, float eps) {
  return 1.0f / std::sqrt(Dot(x, x, n) / static_cast<float>(n) + eps);
}

inline float Sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }
// z·sigmoid(z) in PyTorch's CPU form; for z < -88 exp overflows and the result is -0.
inline float Silu(float z) { return z / (1.0f + std::exp(-z)); }

// --- threading ------------------------------------------------------------------------

// Calls fn(begin, end) on disjoint ranges covering [0, n), on up to
// std::thread::hardware_concurrency() threads when n · cost_per_item (≈ flops) is large
// enough to pay for starting threads, else inline. Each index is processed by exactly one
// call, so results are identical for any thread count as long as items are independent.
void ParallelFor(int64_t n, double cost_per_item,
                 const std::function<void(int64_t begin, int64_t end)>& fn);

// Caps the threads ParallelFor may use (default: hardware_concurrency; 0 restores it).
// Lets tests show that results do not depend on the thread count.
void SetMaxThreadsForTesting(int threads);

// ParallelFor over every (sequence b, head h) pair, calling fn(b, h); `total_cost` is the
// flop estimate of the whole call.
void ParallelForSequenceHeads(int64_t num_seqs, int64_t num_heads, double total_cost,
                              const std::function<void(int64_t b, int64_t h)>& fn);

}  // namespace gka::kernels::cpu::internal
