// RMSNorm (optionally fused with the residual add), per-head q/k RMSNorm + neox RoPE, and the
// GKA gated output norm. All row-local, fp32, with the fixed-order sum of squares of
// internal::Dot, so batch invariant.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

// out[j] = (x[j] · rsqrt(mean(x²) + eps)) · w[j], the reference's fp32 order. out may be x.
inline void NormalizeRow(const float* x, const float* w, int64_t n, float eps, float* out) {
  const float inv = internal::InvRms(x, n, eps);
  for (int64_t j = 0; j < n; ++j) out[j] = x[j] * inv * w[j];
}

// x [rows..., n] of rank ≥ 1 and weight [n]; returns n.
absl::Status CheckRowsAndWeight(absl::string_view op, const tensor::TensorView& x,
                                const tensor::TensorView& weight) {
  if (x.shape.rank() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": x must be [rows, n], got rank 0"));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32(op, "x", x, x.shape.rank()));
  return internal::CheckF32Shape(op, "weight", weight, tensor::Shape{x.shape[-1]});
}

}  // namespace

absl::Status RmsNorm(const RmsNormParams& p) {
  constexpr absl::string_view kOp = "RmsNorm";
  GKA_RETURN_IF_ERROR(CheckRowsAndWeight(kOp, p.x, p.weight));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "out", p.out, p.x.shape));
  const bool fused = !internal::IsAbsent(p.residual);
  if (fused) {
    GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "residual", p.residual, p.x.shape));
    if (internal::Overlaps(p.out.ptr, p.out.nbytes(), p.residual.ptr, p.residual.nbytes())) {
      return absl::InvalidArgumentError(
          "RmsNorm: out must not alias residual (residual keeps the un-normalised sum)");
    }
  }
  const int64_t n = p.x.shape[-1];
  if (n == 0) return absl::OkStatus();
  const int64_t rows = p.x.numel() / n;
  const float* w = p.weight.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = p.x.data<float>() + r * n;
    float* out = p.out.data<float>() + r * n;
    if (fused) {
      float* res = p.residual.data<float>() + r * n;
      for (int64_t j = 0; j < n; ++j) res[j] = x[j] + res[j];
      NormalizeRow(res, w, n, p.eps, out);
    } else {
      NormalizeRow(x, w, n, p.eps, out);
    }
  }
  return absl::OkStatus();
}

absl::Status QkNormRope(const QkNormRopeParams& p) {
  constexpr absl::string_view kOp = "QkNormRope";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "q", p.q, 3));
  const int64_t num_tokens = p.q.shape[0];
  const int64_t head_dim = p.q.shape[2];
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "k", p.k, 3));
  if (p.k.shape[0] != num_tokens || p.k.shape[2] != head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("QkNormRope: k ", p.k.shape.ToString(),
                                                   " must be [T, Hkv, D] with q's T and D (q ",
                                                   p.q.shape.ToString(), ")"));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "q_weight", p.q_weight, {head_dim}));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "k_weight", p.k_weight, {head_dim}));
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QkNormRope: head_dim ", head_dim, " must be even (rotate-half pairs)"));
  }
  if (!(p.theta > 0.0f) || !std::isfinite(p.theta)) {
    return absl::InvalidArgumentError(absl::StrCat("QkNormRope: theta must be > 0, got ", p.theta));
  }
  if (p.row_stride != 0 && p.row_stride < std::max(p.q.shape[1], p.k.shape[1]) * head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("QkNormRope: row_stride ", p.row_stride,
                                                   " is smaller than a token's q or k heads"));
  }
  if (num_tokens == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "positions", p.positions));
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (p.positions[t] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("QkNormRope: positions[", t, "] = ", p.positions[t], " is negative"));
    }
  }

  const int64_t half = head_dim / 2;
  // As norm.h states (and HF, which trained the model, does): inv_freq in fp32 (from an fp64
  // pow), angle = the fp32 product position · inv_freq, then cos/sin of that fp32 angle,
  // evaluated in fp64 and rounded once. The CUDA kernel computes the same table, so the
  // backends agree to an ulp at any position. The fp64 golden reference uses an fp64 angle;
  // the two differ by < 1e-6 at golden positions but by up to ~4e-3 rad near 128K.
  std::vector<float> inv_freq(half);
  for (int64_t j = 0; j < half; ++j) {
    inv_freq[j] = static_cast<float>(
        1.0 / std::pow(static_cast<double>(p.theta),
                       static_cast<double>(2 * j) / static_cast<double>(head_dim)));
  }
  std::vector<float> cos_t(half), sin_t(half), normed(head_dim);
  auto norm_rope = [&](float* head, const float* w) {
    NormalizeRow(head, w, head_dim, p.eps, normed.data());
    for (int64_t j = 0; j < half; ++j) {
      const float x1 = normed[j];
      const float x2 = normed[j + half];
      head[j] = x1 * cos_t[j] - x2 * sin_t[j];
      head[j + half] = x2 * cos_t[j] + x1 * sin_t[j];
    }
  };
  const int64_t hq = p.q.shape[1];
  const int64_t hkv = p.k.shape[1];
  const int64_t q_stride = p.row_stride == 0 ? hq * head_dim : p.row_stride;
  const int64_t k_stride = p.row_stride == 0 ? hkv * head_dim : p.row_stride;
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t j = 0; j < half; ++j) {
      const double angle = static_cast<float>(p.positions[t]) * inv_freq[j];  // fp32 product
      cos_t[j] = static_cast<float>(std::cos(angle));
      sin_t[j] = static_cast<float>(std::sin(angle));
    }
    for (int64_t h = 0; h < hq; ++h) {
      norm_rope(p.q.data<float>() + t * q_stride + h * head_dim, p.q_weight.data<float>());
    }
    for (int64_t h = 0; h < hkv; ++h) {
      norm_rope(p.k.data<float>() + t * k_stride + h * head_dim, p.k_weight.data<float>());
    }
  }
  return absl::OkStatus();
}

absl::Status GatedRmsNorm(const GatedRmsNormParams& p) {
  constexpr absl::string_view kOp = "GatedRmsNorm";
  GKA_RETURN_IF_ERROR(CheckRowsAndWeight(kOp, p.x, p.weight));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "out", p.out, p.x.shape));
  const bool gated = !internal::IsAbsent(p.gate);
  if (gated) GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "gate", p.gate, p.x.shape));
  const int64_t n = p.x.shape[-1];
  if (n == 0) return absl::OkStatus();
  const int64_t rows = p.x.numel() / n;
  const int64_t heads = p.gate_token_stride == 0 ? 1 : p.gate_heads;
  const int64_t token_stride = p.gate_token_stride == 0 ? n : p.gate_token_stride;
  if (gated && (heads <= 0 || rows % heads != 0 || token_stride < heads * n)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GatedRmsNorm: gate_heads ", p.gate_heads, " must divide the ", rows,
        " rows and gate_token_stride ", p.gate_token_stride, " must be >= gate_heads * ", n));
  }
  // Through a row buffer so that out may alias x or gate.
  std::vector<float> normed(n);
  for (int64_t r = 0; r < rows; ++r) {
    float* out = p.out.data<float>() + r * n;
    NormalizeRow(p.x.data<float>() + r * n, p.weight.data<float>(), n, p.eps, normed.data());
    if (gated) {
      const float* gate = p.gate.data<float>() + (r / heads) * token_stride + (r % heads) * n;
      for (int64_t j = 0; j < n; ++j) out[j] = normed[j] * internal::Silu(gate[j]);
    } else {
      for (int64_t j = 0; j < n; ++j) out[j] = normed[j];
    }
  }
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
