// y[M,N] = x[M,K] · w[N,K]ᵀ (+ beta·y) through cuBLAS.
//
// Roofline: 2·M·N·K FLOPs; bytes = (M·K + N·K)·size(A) + M·N·size(y) (·2 with beta ≠ 0).
// Decode (M ≤ 256) is weight-streaming bound: N·K·2 bytes at the copy bandwidth; prefill is
// compute bound at the bf16 tensor-core rate. BF16 operands accumulate in fp32
// (CUBLAS_COMPUTE_32F); F32 operands stay true fp32 (the handle's math mode excludes TF32).
// With GKA_GEMM_TUNE=1, BF16 GEMMs of at most 512 rows (decode) take the algorithm the GemmTuner
// measured fastest for their shape (cuBLASLt candidates vs this cublasGemmEx call;
// gemm_tuner.h says why it is off by default).
#include <cublas_v2.h>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm_tuner.h"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

cudaDataType_t CudaType(tensor::DType d) {
  return d == tensor::DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

}  // namespace

absl::Status Gemm(const CudaContext& ctx, const GemmParams& p) {
  constexpr absl::string_view kOp = "Gemm";
  GKA_RETURN_IF_ERROR(CheckRank(p.x, 2, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckRank(p.w, 2, kOp, "w"));
  GKA_RETURN_IF_ERROR(CheckRank(p.y, 2, kOp, "y"));
  const int64_t M = p.x.shape[0], K = p.x.shape[1], N = p.w.shape[0];
  if (p.w.shape[1] != K) {
    return absl::InvalidArgumentError(absl::StrCat("Gemm: x ", p.x.shape.ToString(), " and w ",
                                                   p.w.shape.ToString(), " disagree on K"));
  }
  GKA_RETURN_IF_ERROR(CheckShape(p.y, tensor::Shape{M, N}, kOp, "y"));
  if (!IsFloatActivation(p.x.dtype) || p.w.dtype != p.x.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("Gemm: x and w must both be F32 or both BF16 (x ",
                     tensor::DTypeName(p.x.dtype), ", w ", tensor::DTypeName(p.w.dtype), ")"));
  }
  if (p.y.dtype != p.x.dtype && p.y.dtype != tensor::DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("Gemm: y must be ", tensor::DTypeName(p.x.dtype),
                                                   " or F32, not ", tensor::DTypeName(p.y.dtype)));
  }
  if (M == 0 || N == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.x, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.w, kOp, "w"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.y, kOp, "y"));
  constexpr int64_t kMax = 0x7fffffff;
  if (M > kMax || N > kMax || K > kMax) {
    return absl::InvalidArgumentError("Gemm: dimension exceeds int32");
  }
  GKA_ASSIGN_OR_RETURN(const bool tuned, ctx.gemm_tuner().Run(ctx, p));
  if (tuned) return absl::OkStatus();
  // Row-major y = x·wᵀ is column-major yᵀ[N,M] = w[N,K] (stored as col-major K×N, so op T)
  // times xᵀ (col-major K×M, op N).
  const float alpha = 1.0f;
  const float beta = p.beta;
  GKA_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
      static_cast<int>(K), &alpha, p.w.ptr, CudaType(p.w.dtype), static_cast<int>(K), p.x.ptr,
      CudaType(p.x.dtype), static_cast<int>(K), &beta, p.y.ptr, CudaType(p.y.dtype),
      static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
