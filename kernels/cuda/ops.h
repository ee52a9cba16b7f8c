// Host entry points of the CUDA ops: validate, fill the kernel's arguments, pick the launch.
// One op (or one small family) per .cu file; CudaBackend forwards to these.
//
// Private to kernels/cuda. Every entry returns InvalidArgument for bad shapes/dtypes and an
// Internal status naming the kernel when a launch fails. All run on ctx.stream().
#pragma once

#include <cstdint>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kernels/api/attention.h"
#include "kernels/api/conv.h"
#include "kernels/api/elementwise.h"
#include "kernels/api/gemm.h"
#include "kernels/api/gka.h"
#include "kernels/api/norm.h"
#include "kernels/api/sampling.h"
#include "kernels/cuda/cuda_context.h"

namespace gka::kernels::cuda {

absl::Status Fill(const CudaContext& ctx, const tensor::TensorView& t,
                  float value);  // memory_ops.cu
absl::Status Convert(const CudaContext& ctx, const tensor::TensorView& src,
                     const tensor::TensorView& dst);                         // memory_ops.cu
absl::Status Gemm(const CudaContext& ctx, const GemmParams& p);              // gemm.cc
absl::Status Embedding(const CudaContext& ctx, const EmbeddingParams& p);    // elementwise.cu
absl::Status SiluMul(const CudaContext& ctx, const SiluMulParams& p);        // elementwise.cu
absl::Status Add(const CudaContext& ctx, const AddParams& p);                // elementwise.cu
absl::Status RmsNorm(const CudaContext& ctx, const RmsNormParams& p);        // rms_norm.cu
absl::Status QkNormRope(const CudaContext& ctx, const QkNormRopeParams& p);  // qk_norm_rope.cu
absl::Status GatedRmsNorm(const CudaContext& ctx,
                          const GatedRmsNormParams& p);  // gated_rms_norm.cu
absl::Status KvCacheWrite(const CudaContext& ctx,
                          const KvCacheWriteParams& p);  // kv_cache_write.cu
absl::Status PagedAttention(const CudaContext& ctx,
                            const PagedAttentionParams& p);                  // paged_attention.cu
absl::Status CausalConv(const CudaContext& ctx, const CausalConvParams& p);  // causal_conv.cu
absl::Status GkaGates(const CudaContext& ctx, const GkaGatesParams& p);      // gka_gates.cu
absl::Status GkaCore(const CudaContext& ctx, const GkaCoreParams& p);        // gka_core.cu
absl::Status Sample(const CudaContext& ctx, const SampleParams& p);          // sampling.cu

// The bf16 tensor-core attention path (paged_attention_mma.cu), for shapes where
// PagedAttentionMmaSupported(p) holds (validated params, BF16, head_dim 128, Hq/Hkv dividing
// 16); PagedAttention (paged_attention.cu) uses the generic kernel otherwise.
bool PagedAttentionMmaSupported(const PagedAttentionParams& p);
absl::Status PagedAttentionMma(const CudaContext& ctx, const PagedAttentionParams& p);

// ---- validation helpers shared by the host entries --------------------------------------

inline absl::Status CheckOnDevice(const tensor::TensorView& t, absl::string_view op,
                                  absl::string_view name) {
  if (t.ptr == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is empty"));
  if (t.device != tensor::Device::kCuda) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " is not CUDA memory (allocate it through the backend)"));
  }
  return absl::OkStatus();
}

inline absl::Status CheckDType(const tensor::TensorView& t, std::initializer_list<tensor::DType> ok,
                               absl::string_view op, absl::string_view name) {
  for (tensor::DType d : ok) {
    if (t.dtype == d) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": ", name, " has unsupported dtype ", tensor::DTypeName(t.dtype)));
}

inline absl::Status CheckShape(const tensor::TensorView& t, const tensor::Shape& want,
                               absl::string_view op, absl::string_view name) {
  if (!(t.shape == want)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", name, " has shape ", t.shape.ToString(), ", expected ", want.ToString()));
  }
  return absl::OkStatus();
}

inline absl::Status CheckRank(const tensor::TensorView& t, int rank, absl::string_view op,
                              absl::string_view name) {
  if (t.shape.rank() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " must have rank ", rank, ", has shape ", t.shape.ToString()));
  }
  return absl::OkStatus();
}

inline bool IsFloatActivation(tensor::DType d) {
  return d == tensor::DType::kF32 || d == tensor::DType::kBF16;
}

// Grid size for a grid-stride elementwise kernel over n items.
inline unsigned GridFor(int64_t n, int threads, const CudaContext& ctx) {
  int64_t blocks = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(ctx.num_sms()) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

}  // namespace gka::kernels::cuda
