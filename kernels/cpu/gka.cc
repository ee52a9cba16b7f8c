// Gated KalmaNet gates and state core (gka.h; model-spec §3.4 steps 4-11), fp32.
//
// GkaCore runs the token recurrence itself (no chunked form): per sequence and head, token by
// token from the slot state, so a prompt, a continuation chunk and a decode step are the same
// loop and a prompt fed one token per call gives the same bits as one call. Items (sequence,
// head) are independent and each runs start to end on one thread: batch and thread-count
// invariant. All matrix-vector products go through internal::Dot's fixed order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

constexpr float kL2Eps = 1e-6f;    // q / (‖q‖ + eps), training layer's form
constexpr float kBetaEps = 1e-6f;  // k and v scaled by (beta + eps)

// softplus with torch's threshold: z above 20 is returned as is.
inline float Softplus(float z) { return z > 20.0f ? z : std::log1p(std::exp(z)); }

// A [T, heads * head_dim] input whose heads are repeated to `num_heads` expanded heads.
absl::StatusOr<int64_t> NativeHeads(absl::string_view name, const tensor::TensorView& t,
                                    int64_t num_tokens, int64_t num_heads, int64_t head_dim) {
  GKA_RETURN_IF_ERROR(internal::CheckF32("GkaGates", name, t, 2));
  const int64_t width = t.shape[1];
  if (t.shape[0] != num_tokens || head_dim == 0 || width % head_dim != 0 || width == 0 ||
      num_heads % (width / head_dim) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GkaGates: ", name, " ", t.shape.ToString(), " must be [T = ", num_tokens,
                     ", heads * D] with D = ", head_dim, " and heads dividing H = ", num_heads));
  }
  return width / head_dim;
}

// An optional (or, with `required`, mandatory) [T, H] gate input with row stride.
absl::Status CheckGateInput(absl::string_view name, const tensor::TensorView& t, bool required,
                            int64_t num_tokens, int64_t num_heads, int64_t stride) {
  if (internal::IsAbsent(t)) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("GkaGates: ", name, " is required with use_forgetting_gate"));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape("GkaGates", name, t, {num_tokens, num_heads}));
  if (stride < num_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("GkaGates: gate_row_stride ", stride, " is smaller than H = ", num_heads));
  }
  return absl::OkStatus();
}

// An optional per-head [H] vector; `bias` must be absent when its gate input is.
absl::Status CheckHeadVector(absl::string_view name, const tensor::TensorView& v, bool required,
                             bool allowed, int64_t num_heads) {
  if (internal::IsAbsent(v)) {
    if (!required) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("GkaGates: ", name, " is required"));
  }
  if (!allowed) {
    return absl::InvalidArgumentError(
        absl::StrCat("GkaGates: ", name, " is set but its gate input is empty"));
  }
  return internal::CheckF32Shape("GkaGates", name, v, {num_heads});
}

struct CoreArgs {
  const float* q;
  const float* k;
  const float* v;
  const float* alpha;
  const float* g;
  float* out;
  float* h_kk;
  float* h_kv;
  const int32_t* slots;
  const int32_t* cu_seqlens;
  const int32_t* num_iter;
  int64_t num_heads;
  int64_t head_dim;
  float ridge_ratio;
  float scale;
  bool decay_kk;
};

// All tokens of sequence b for expanded head h, updating that head's state in place.
GKA_CPU_MULTIVERSION
void CoreSequenceHead(const CoreArgs& a, int64_t b, int64_t h) {
  const int64_t d = a.head_dim;
  const int64_t hh = a.num_heads;
  float* h_kk = a.h_kk + (a.slots[b] * hh + h) * d * d;  // [D, D], symmetric
  float* h_kv = a.h_kv + (a.slots[b] * hh + h) * d * d;  // [D key, D value]
  const int32_t num_iter = a.num_iter[b];
  std::vector<float> scratch(5 * d);
  float* x = scratch.data();
  float* x_prev = x + d;
  float* x_new = x_prev + d;
  float* hx = x_new + d;
  float* q_mix = hx + d;
  for (int64_t t = a.cu_seqlens[b]; t < a.cu_seqlens[b + 1]; ++t) {
    const int64_t row = t * hh + h;
    const float* q = a.q + row * d;
    const float* k = a.k + row * d;
    const float* v = a.v + row * d;
    const float alpha = a.alpha[row];
    const float decay = std::exp(a.g[row]);
    const float decay_kk = a.decay_kk ? decay : 1.0f;

    // Step 6 (decay first, then add) with ‖h_kk‖²_F gathered row by row; step 10 likewise.
    float fro_sq = 0.0f;
    for (int64_t i = 0; i < d; ++i) {
      float* r = h_kk + i * d;
      const float ki = k[i];
      for (int64_t j = 0; j < d; ++j) r[j] = decay_kk * r[j] + ki * k[j];
      fro_sq += internal::Dot(r, r, d);
    }
    for (int64_t i = 0; i < d; ++i) {
      float* r = h_kv + i * d;
      const float ki = k[i];
      for (int64_t j = 0; j < d; ++j) r[j] = decay * r[j] + ki * v[j];
    }

    // Steps 7-9: N Chebyshev iterations on (h_kk + λI) x = q̂, in the reference's order.
    const float* readout = q;  // N = 0: q_mix = q̂, the solver is skipped entirely
    if (num_iter > 0) {
      const float fro = std::sqrt(fro_sq);
      if (fro == 0.0f) {
        // Only when every k̃ so far was zero; spec §10 item 11 says x = 0.
        std::fill(x, x + d, 0.0f);
      } else {
        const float lam = a.ridge_ratio * fro;
        const float denom = 2.0f * lam + fro;
        const float step = 2.0f / denom;
        const float rho_half = fro / denom / 2.0f;
        const float rho_sq_4 = rho_half * rho_half;
        float omega = 2.0f;
        for (int64_t i = 0; i < d; ++i) {
          x_prev[i] = 0.0f;
          x[i] = step * q[i];
        }
        for (int32_t it = 0; it < num_iter; ++it) {
          omega = 1.0f / (1.0f - rho_sq_4 * omega);
          // h_kk is symmetric, so h_kk·x is the rows of h_kk dotted with x.
          internal::MatVecRows(h_kk, x, d, d, hx);
          for (int64_t i = 0; i < d; ++i) {
            const float resid = hx[i] + lam * x[i] - q[i];
            x_new[i] = omega * (x[i] - step * resid) + (1.0f - omega) * x_prev[i];
          }
          std::swap(x_prev, x);  // x_prev ← x
          std::swap(x, x_new);   // x ← x_new (old x_prev becomes the next scratch)
        }
      }
      for (int64_t i = 0; i < d; ++i) q_mix[i] = q[i] + alpha * (x[i] - q[i]);
      readout = q_mix;
    }

    // Step 11: out = scale · h_kvᵀ q_mix, accumulated over key rows in order.
    std::fill(hx, hx + d, 0.0f);
    for (int64_t i = 0; i < d; ++i) {
      const float qi = readout[i];
      const float* r = h_kv + i * d;
      for (int64_t j = 0; j < d; ++j) hx[j] += qi * r[j];
    }
    float* out = a.out + row * d;
    for (int64_t j = 0; j < d; ++j) out[j] = a.scale * hx[j];
  }
}

}  // namespace

absl::Status GkaGates(const GkaGatesParams& p) {
  constexpr absl::string_view kOp = "GkaGates";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "q_out", p.q_out, 3));
  const int64_t num_tokens = p.q_out.shape[0];
  const int64_t num_heads = p.q_out.shape[1];
  const int64_t head_dim = p.q_out.shape[2];
  const tensor::Shape per_head{num_tokens, num_heads, head_dim};
  const tensor::Shape per_token{num_tokens, num_heads};
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "k_out", p.k_out, per_head));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "v_out", p.v_out, per_head));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "alpha", p.alpha, per_token));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "g", p.g, per_token));
  GKA_ASSIGN_OR_RETURN(const int64_t hq,
                       NativeHeads("q_conv", p.q_conv, num_tokens, num_heads, head_dim));
  GKA_ASSIGN_OR_RETURN(const int64_t hk,
                       NativeHeads("k_conv", p.k_conv, num_tokens, num_heads, head_dim));
  GKA_ASSIGN_OR_RETURN(const int64_t hv,
                       NativeHeads("v_conv", p.v_conv, num_tokens, num_heads, head_dim));
  const int64_t stride = p.gate_row_stride == 0 ? num_heads : p.gate_row_stride;
  const bool use_beta = !internal::IsAbsent(p.b);
  const bool use_alpha = !internal::IsAbsent(p.c);
  GKA_RETURN_IF_ERROR(
      CheckGateInput("a", p.a, p.use_forgetting_gate, num_tokens, num_heads, stride));
  GKA_RETURN_IF_ERROR(CheckGateInput("b", p.b, false, num_tokens, num_heads, stride));
  GKA_RETURN_IF_ERROR(CheckGateInput("c", p.c, false, num_tokens, num_heads, stride));
  GKA_RETURN_IF_ERROR(CheckHeadVector("a_log", p.a_log, p.use_forgetting_gate, true, num_heads));
  GKA_RETURN_IF_ERROR(
      CheckHeadVector("dt_bias", p.dt_bias, p.use_forgetting_gate, true, num_heads));
  GKA_RETURN_IF_ERROR(CheckHeadVector("b_bias", p.b_bias, false, use_beta, num_heads));
  GKA_RETURN_IF_ERROR(CheckHeadVector("alpha_bias", p.alpha_bias, false, use_alpha, num_heads));

  const int64_t d = head_dim;
  const float* b_bias = internal::IsAbsent(p.b_bias) ? nullptr : p.b_bias.data<float>();
  const float* alpha_bias = internal::IsAbsent(p.alpha_bias) ? nullptr : p.alpha_bias.data<float>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t e = 0; e < num_heads; ++e) {
      // Expanded head e reads native heads e / (H / H_native): repeat_interleave order.
      const float* q = p.q_conv.data<float>() + (t * hq + e / (num_heads / hq)) * d;
      const float* k = p.k_conv.data<float>() + (t * hk + e / (num_heads / hk)) * d;
      const float* v = p.v_conv.data<float>() + (t * hv + e / (num_heads / hv)) * d;
      const int64_t row = t * num_heads + e;
      float* q_out = p.q_out.data<float>() + row * d;
      float* k_out = p.k_out.data<float>() + row * d;
      float* v_out = p.v_out.data<float>() + row * d;
      const float q_denom = std::sqrt(internal::Dot(q, q, d)) + kL2Eps;
      const float k_denom = std::sqrt(internal::Dot(k, k, d)) + kL2Eps;
      for (int64_t j = 0; j < d; ++j) q_out[j] = q[j] / q_denom;
      if (use_beta) {
        const float z = p.b.data<float>()[t * stride + e] + (b_bias ? b_bias[e] : 0.0f);
        const float kv_scale = internal::Sigmoid(z) + kBetaEps;  // beta + 1e-6
        for (int64_t j = 0; j < d; ++j) k_out[j] = kv_scale * (k[j] / k_denom);
        for (int64_t j = 0; j < d; ++j) v_out[j] = kv_scale * v[j];
      } else {
        for (int64_t j = 0; j < d; ++j) k_out[j] = k[j] / k_denom;
        for (int64_t j = 0; j < d; ++j) v_out[j] = v[j];
      }
      p.alpha.data<float>()[row] = use_alpha
                                       ? internal::Sigmoid(p.c.data<float>()[t * stride + e] +
                                                           (alpha_bias ? alpha_bias[e] : 0.0f))
                                       : 1.0f;
      p.g.data<float>()[row] =
          p.use_forgetting_gate
              ? -std::exp(p.a_log.data<float>()[e]) *
                    Softplus(p.a.data<float>()[t * stride + e] + p.dt_bias.data<float>()[e])
              : 0.0f;
    }
  }
  return absl::OkStatus();
}

absl::Status GkaCore(const GkaCoreParams& p) {
  constexpr absl::string_view kOp = "GkaCore";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "q", p.q, 3));
  const int64_t num_tokens = p.q.shape[0];
  const int64_t num_heads = p.q.shape[1];
  const int64_t head_dim = p.q.shape[2];
  const tensor::Shape per_head{num_tokens, num_heads, head_dim};
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "k", p.k, per_head));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "v", p.v, per_head));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "out", p.out, per_head));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "alpha", p.alpha, {num_tokens, num_heads}));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "g", p.g, {num_tokens, num_heads}));
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "h_kk", p.h_kk, 4));
  const int64_t num_slots = p.h_kk.shape[0];
  const tensor::Shape state{num_slots, num_heads, head_dim, head_dim};
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "h_kk", p.h_kk, state));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "h_kv", p.h_kv, state));
  if (internal::Overlaps(p.h_kk.ptr, p.h_kk.nbytes(), p.h_kv.ptr, p.h_kv.nbytes()) ||
      internal::Overlaps(p.out.ptr, p.out.nbytes(), p.h_kk.ptr, p.h_kk.nbytes()) ||
      internal::Overlaps(p.out.ptr, p.out.nbytes(), p.h_kv.ptr, p.h_kv.nbytes())) {
    return absl::InvalidArgumentError("GkaCore: h_kk, h_kv and out must not overlap");
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GkaCore: scale must be > 0 (D^-0.5 or 1), got ", p.scale));
  }
  if (!(p.ridge_ratio >= 0.0f) || !std::isfinite(p.ridge_ratio)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GkaCore: ridge_ratio must be >= 0 (0.02 in the checkpoint), got ", p.ridge_ratio));
  }
  GKA_RETURN_IF_ERROR(
      internal::CheckPrefixSums(kOp, "cu_seqlens", p.cu_seqlens, p.num_seqs, num_tokens));
  GKA_RETURN_IF_ERROR(internal::CheckSlots(kOp, p.slots, p.num_seqs, num_slots));
  if (p.num_seqs == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "num_iter", p.num_iter));
  double total_cost = 0.0;
  for (int32_t b = 0; b < p.num_seqs; ++b) {
    const int64_t len = p.cu_seqlens[b + 1] - p.cu_seqlens[b];
    if (p.num_iter[b] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GkaCore: num_iter[", b, "] = ", p.num_iter[b], " is negative"));
    }
    // The CUDA kernel sizes its launch from max_seqlen; catch a stale value here too.
    if (len > p.max_seqlen) {
      return absl::InvalidArgumentError(absl::StrCat("GkaCore: sequence ", b, " has ", len,
                                                     " tokens but max_seqlen = ", p.max_seqlen));
    }
    total_cost += 2.0 * len * (p.num_iter[b] + 3) * head_dim * head_dim * num_heads;
  }

  const CoreArgs args{.q = p.q.data<float>(),
                      .k = p.k.data<float>(),
                      .v = p.v.data<float>(),
                      .alpha = p.alpha.data<float>(),
                      .g = p.g.data<float>(),
                      .out = p.out.data<float>(),
                      .h_kk = p.h_kk.data<float>(),
                      .h_kv = p.h_kv.data<float>(),
                      .slots = p.slots,
                      .cu_seqlens = p.cu_seqlens,
                      .num_iter = p.num_iter,
                      .num_heads = num_heads,
                      .head_dim = head_dim,
                      .ridge_ratio = p.ridge_ratio,
                      .scale = p.scale,
                      .decay_kk = p.decay_kk};
  internal::ParallelForSequenceHeads(p.num_seqs, num_heads, total_cost,
                                     [&](int64_t b, int64_t h) { CoreSequenceHead(args, b, h); });
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
