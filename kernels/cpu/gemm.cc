// y = x·Wᵀ (+ beta·y), fp32, batch invariant.
//
// Why not cblas_sgemm: OpenBLAS (0.3.21, measured on its Haswell kernels) does not give a
// row of y the same bits when that row is computed in batches of different M: M = 1, 2, 3
// agree, M ≥ 7 or 16 do not; with a fixed M = 16 tile the result also depends on the row's
// position in the tile and on OPENBLAS_NUM_THREADS; the transposed form (batch as BLAS
// columns) changes at M ≥ 8. Padding to fixed tiles therefore does not make it batch
// invariant, and the kernels OpenBLAS picks differ per CPU anyway. See
// tests/kernels/cpu_gemm_test.cc (OpenBlasRowsAgreeOnlyApproximately) for the probe.
//
// Here every output element is internal::Dot(x row, W row, K): eight lane sums over K in
// order, a fixed fold, then the tail. The order depends only on K, never on M, on the tile
// an element falls in, or on the thread count, so a sequence's rows are bitwise the same in
// any batch. Register tiles of 4 x-rows by 2 W-rows reuse loads; column blocks keep a slab
// of W in L2 while all rows stream past. About 4x slower than OpenBLAS at large M on one
// core (28 vs 110 GFLOP/s with AVX2), as fast for decode-sized M.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

using internal::DotTile;

constexpr int kTileRows = 4;                // x rows per register tile
constexpr int kTileCols = 2;                // W rows per register tile
constexpr int64_t kSlabBytes = 256 * 1024;  // W bytes per column block (fits L2)

template <int RM>
inline void GemmRowTile(const float* x, const float* w, int64_t k_dim, float* y, int64_t ldy,
                        int64_t n0, int64_t n1, float beta) {
  int64_t n = n0;
  for (; n + kTileCols <= n1; n += kTileCols) {
    DotTile<RM, kTileCols>(x, w + n * k_dim, k_dim, y + n, ldy, beta);
  }
  for (; n < n1; ++n) DotTile<RM, 1>(x, w + n * k_dim, k_dim, y + n, ldy, beta);
}

// Columns [n0, n1) of y for all M rows.
GKA_CPU_MULTIVERSION
void GemmColumnBlock(const float* x, const float* w, float* y, int64_t m_dim, int64_t n_dim,
                     int64_t k_dim, int64_t n0, int64_t n1, float beta) {
  int64_t m = 0;
  for (; m + kTileRows <= m_dim; m += kTileRows) {
    GemmRowTile<kTileRows>(x + m * k_dim, w, k_dim, y + m * n_dim, n_dim, n0, n1, beta);
  }
  for (; m < m_dim; ++m) {
    GemmRowTile<1>(x + m * k_dim, w, k_dim, y + m * n_dim, n_dim, n0, n1, beta);
  }
}

}  // namespace

absl::Status Gemm(const GemmParams& p) {
  constexpr absl::string_view kOp = "Gemm";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "x", p.x, 2));
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "w", p.w, 2));
  const int64_t m_dim = p.x.shape[0];
  const int64_t k_dim = p.x.shape[1];
  const int64_t n_dim = p.w.shape[0];
  if (p.w.shape[1] != k_dim) {
    return absl::InvalidArgumentError(absl::StrCat("Gemm: x ", p.x.shape.ToString(), " and w ",
                                                   p.w.shape.ToString(),
                                                   " disagree on K (w is [N, K], y = x·wᵀ)"));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "y", p.y, tensor::Shape{m_dim, n_dim}));
  if (internal::Overlaps(p.y.ptr, p.y.nbytes(), p.x.ptr, p.x.nbytes()) ||
      internal::Overlaps(p.y.ptr, p.y.nbytes(), p.w.ptr, p.w.nbytes())) {
    return absl::InvalidArgumentError("Gemm: y must not overlap x or w");
  }
  if (m_dim == 0 || n_dim == 0) return absl::OkStatus();

  const int64_t slab_rows = std::max<int64_t>(1, kSlabBytes / (4 * std::max<int64_t>(k_dim, 1)));
  const int64_t block = std::max<int64_t>(kTileCols, slab_rows / kTileCols * kTileCols);
  const int64_t num_blocks = (n_dim + block - 1) / block;
  const float* x = p.x.data<float>();
  const float* w = p.w.data<float>();
  float* y = p.y.data<float>();
  internal::ParallelFor(num_blocks, 2.0 * m_dim * block * k_dim, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      GemmColumnBlock(x, w, y, m_dim, n_dim, k_dim, b * block, std::min(n_dim, (b + 1) * block),
                      p.beta);
    }
  });
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
