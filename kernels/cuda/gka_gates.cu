// GKA per-token gates (model-spec §3.4 steps 3-5): L2-normalised q̂ and k̂, β-scaled k̃ and ṽ,
// α and the log-decay g, per token and expanded head, all fp32.
//
// Roofline: reads T·(Hq+Hk+Hv)·D·4 (conv outputs) + 3·T·H·size (a, b, c), writes 3·T·H·D·4 +
// 2·T·H·4; ~10 FLOPs per element: memory bound. One warp per (token, expanded head); lane l
// holds dims l + 32i, the norms are warp reductions.
#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

constexpr float kL2Eps = 1e-6f;    // q / (||q|| + eps)  (training layer form)
constexpr float kBetaEps = 1e-6f;  // k, v scaled by (beta + eps)

struct GatesArgs {
  const float* q_conv;
  const float* k_conv;
  const float* v_conv;
  const void* a;
  const void* b;  // null: no beta gate
  const void* c;  // null: alpha = 1
  int64_t gate_stride;
  const float* a_log;
  const float* dt_bias;
  const float* b_bias;      // may be null
  const float* alpha_bias;  // may be null
  bool use_decay;
  float* q_out;
  float* k_out;
  float* v_out;
  float* alpha;
  float* g;
  int64_t T;
  int H, Hq, Hk, Hv;
};

template <typename A, int kE>  // A: dtype of a/b/c; kE = D / 32
__global__ void GkaGatesKernel(const GatesArgs args) {
  PdlEnter();
  constexpr int D = kE * 32;
  const int lane = threadIdx.x & 31;
  const int64_t item = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
  if (item >= args.T * args.H) return;
  const int64_t t = item / args.H;
  const int e = static_cast<int>(item - t * args.H);
  const int hq = e / (args.H / args.Hq), hk = e / (args.H / args.Hk), hv = e / (args.H / args.Hv);
  const float* qs = args.q_conv + (t * args.Hq + hq) * D;
  const float* ks = args.k_conv + (t * args.Hk + hk) * D;
  const float* vs = args.v_conv + (t * args.Hv + hv) * D;
  float q[kE], k[kE], v[kE];
  float qq = 0.0f, kk = 0.0f;
#pragma unroll
  for (int i = 0; i < kE; ++i) {
    q[i] = qs[lane + 32 * i];
    k[i] = ks[lane + 32 * i];
    v[i] = vs[lane + 32 * i];
    qq += q[i] * q[i];
    kk += k[i] * k[i];
  }
  const float qn = sqrtf(WarpSum(qq)) + kL2Eps;
  const float kn = sqrtf(WarpSum(kk)) + kL2Eps;
  const int64_t gi = t * args.gate_stride + e;
  float kscale = 1.0f, vscale = 1.0f;
  if (args.b != nullptr) {
    const float bz = ToFloat(static_cast<const A*>(args.b)[gi]) +
                     (args.b_bias != nullptr ? args.b_bias[e] : 0.0f);
    const float beta = Sigmoid(bz) + kBetaEps;
    kscale = beta;
    vscale = beta;
  }
  float* qo = args.q_out + (t * args.H + e) * D;
  float* ko = args.k_out + (t * args.H + e) * D;
  float* vo = args.v_out + (t * args.H + e) * D;
#pragma unroll
  for (int i = 0; i < kE; ++i) {
    qo[lane + 32 * i] = q[i] / qn;
    ko[lane + 32 * i] = kscale * (k[i] / kn);
    vo[lane + 32 * i] = vscale * v[i];
  }
  if (lane == 0) {
    float alpha = 1.0f;
    if (args.c != nullptr) {
      alpha = Sigmoid(ToFloat(static_cast<const A*>(args.c)[gi]) +
                      (args.alpha_bias != nullptr ? args.alpha_bias[e] : 0.0f));
    }
    float g = 0.0f;
    if (args.use_decay) {
      const float z = ToFloat(static_cast<const A*>(args.a)[gi]) + args.dt_bias[e];
      const float sp = z > 20.0f ? z : log1pf(expf(z));  // torch softplus, threshold 20
      g = -expf(args.a_log[e]) * sp;
    }
    args.alpha[t * args.H + e] = alpha;
    args.g[t * args.H + e] = g;
  }
}

}  // namespace

absl::Status GkaGates(const CudaContext& ctx, const GkaGatesParams& p) {
  constexpr absl::string_view kOp = "GkaGates";
  GKA_RETURN_IF_ERROR(CheckRank(p.q_out, 3, kOp, "q_out"));
  const int64_t T = p.q_out.shape[0], H = p.q_out.shape[1], D = p.q_out.shape[2];
  if (D != 64 && D != 128 && D != 256) {
    return absl::InvalidArgumentError(absl::StrCat("GkaGates: head_dim ", D, " unsupported"));
  }
  GKA_RETURN_IF_ERROR(CheckShape(p.k_out, p.q_out.shape, kOp, "k_out"));
  GKA_RETURN_IF_ERROR(CheckShape(p.v_out, p.q_out.shape, kOp, "v_out"));
  GKA_RETURN_IF_ERROR(CheckShape(p.alpha, tensor::Shape{T, H}, kOp, "alpha"));
  GKA_RETURN_IF_ERROR(CheckShape(p.g, tensor::Shape{T, H}, kOp, "g"));
  for (const auto* t :
       {&p.q_out, &p.k_out, &p.v_out, &p.alpha, &p.g, &p.q_conv, &p.k_conv, &p.v_conv}) {
    GKA_RETURN_IF_ERROR(
        CheckDType(*t, {tensor::DType::kF32}, kOp, "outputs, conv inputs, A_log, dt_bias"));
  }
  GKA_RETURN_IF_ERROR(CheckRank(p.q_conv, 2, kOp, "q_conv"));
  GKA_RETURN_IF_ERROR(CheckRank(p.k_conv, 2, kOp, "k_conv"));
  GKA_RETURN_IF_ERROR(CheckRank(p.v_conv, 2, kOp, "v_conv"));
  const int64_t Hq = p.q_conv.shape[1] / D, Hk = p.k_conv.shape[1] / D, Hv = p.v_conv.shape[1] / D;
  if (p.q_conv.shape[0] != T || p.k_conv.shape[0] != T || p.v_conv.shape[0] != T ||
      Hq * D != p.q_conv.shape[1] || Hk * D != p.k_conv.shape[1] || Hv * D != p.v_conv.shape[1] ||
      Hq == 0 || Hk == 0 || Hv == 0 || H % Hq != 0 || H % Hk != 0 || H % Hv != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GkaGates: conv shapes q ", p.q_conv.shape.ToString(), " k ", p.k_conv.shape.ToString(),
        " v ", p.v_conv.shape.ToString(), " do not divide into heads of ", D, " under H = ", H));
  }
  const int64_t stride = p.gate_row_stride == 0 ? H : p.gate_row_stride;
  const bool has_a = p.a.ptr != nullptr, has_b = p.b.ptr != nullptr, has_c = p.c.ptr != nullptr;
  if (p.use_forgetting_gate && !has_a) {
    return absl::InvalidArgumentError("GkaGates: a is required with use_forgetting_gate");
  }
  // a, b and c share one dtype (the activation dtype) and the shape [T, H].
  tensor::DType gate_dtype = tensor::DType::kF32;
  bool first = true;
  for (const auto* t : {&p.a, &p.b, &p.c}) {
    if (t->ptr == nullptr) continue;
    if (t->shape.rank() != 2 || t->shape[0] != T || t->shape[1] != H) {
      return absl::InvalidArgumentError(absl::StrCat("GkaGates: a/b/c must be [T, H] = [", T, ", ",
                                                     H, "], got ", t->shape.ToString()));
    }
    if (!first && t->dtype != gate_dtype) {
      return absl::InvalidArgumentError("GkaGates: a, b and c must share one dtype");
    }
    gate_dtype = t->dtype;
    first = false;
  }
  if (stride < H) return absl::InvalidArgumentError("GkaGates: gate_row_stride < H");
  if (!IsFloatActivation(gate_dtype)) {
    return absl::InvalidArgumentError("GkaGates: a/b/c must be F32 or BF16");
  }
  if (p.use_forgetting_gate) {
    GKA_RETURN_IF_ERROR(CheckShape(p.a_log, tensor::Shape{H}, kOp, "a_log"));
    GKA_RETURN_IF_ERROR(CheckShape(p.dt_bias, tensor::Shape{H}, kOp, "dt_bias"));
  }
  if (p.b_bias.ptr != nullptr)
    GKA_RETURN_IF_ERROR(CheckShape(p.b_bias, tensor::Shape{H}, kOp, "b_bias"));
  if (p.alpha_bias.ptr != nullptr) {
    GKA_RETURN_IF_ERROR(CheckShape(p.alpha_bias, tensor::Shape{H}, kOp, "alpha_bias"));
  }
  if (T == 0) return absl::OkStatus();
  GatesArgs args{.q_conv = p.q_conv.data<float>(),
                 .k_conv = p.k_conv.data<float>(),
                 .v_conv = p.v_conv.data<float>(),
                 .a = p.a.ptr,
                 .b = has_b ? p.b.ptr : nullptr,
                 .c = has_c ? p.c.ptr : nullptr,
                 .gate_stride = stride,
                 .a_log = p.use_forgetting_gate ? p.a_log.data<float>() : nullptr,
                 .dt_bias = p.use_forgetting_gate ? p.dt_bias.data<float>() : nullptr,
                 .b_bias = p.b_bias.ptr != nullptr ? p.b_bias.data<float>() : nullptr,
                 .alpha_bias = p.alpha_bias.ptr != nullptr ? p.alpha_bias.data<float>() : nullptr,
                 .use_decay = p.use_forgetting_gate,
                 .q_out = p.q_out.data<float>(),
                 .k_out = p.k_out.data<float>(),
                 .v_out = p.v_out.data<float>(),
                 .alpha = p.alpha.data<float>(),
                 .g = p.g.data<float>(),
                 .T = T,
                 .H = static_cast<int>(H),
                 .Hq = static_cast<int>(Hq),
                 .Hk = static_cast<int>(Hk),
                 .Hv = static_cast<int>(Hv)};
  constexpr int kWarps = 8;
  const unsigned grid = static_cast<unsigned>((T * H + kWarps - 1) / kWarps);
  GKA_DISPATCH_ACT(gate_dtype, A, {
    if (D == 64) {
      Launch(GkaGatesKernel<A, 2>, grid, kWarps * 32, 0, ctx.stream(), args);
    } else if (D == 128) {
      Launch(GkaGatesKernel<A, 4>, grid, kWarps * 32, 0, ctx.stream(), args);
    } else {
      Launch(GkaGatesKernel<A, 8>, grid, kWarps * 32, 0, ctx.stream(), args);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("GkaGatesKernel");
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
