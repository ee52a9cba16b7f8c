// Fill and dtype conversion.
//
// Roofline: pure streaming. Fill writes n·size bytes; Convert reads n·size_in and writes
// n·size_out bytes; no FLOPs to speak of. Grid-stride loops over elements (both are small next
// to the GEMMs; vectorising them is not worth the alignment cases).
#include <cuda_fp16.h>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

using tensor::DType;

template <typename T>
__device__ __forceinline__ T Cast(float v);
template <>
__device__ __forceinline__ float Cast<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 Cast<bf16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half Cast<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ int32_t Cast<int32_t>(float v) {
  return static_cast<int32_t>(v);
}

__device__ __forceinline__ float Widen(float v) { return v; }
__device__ __forceinline__ float Widen(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float Widen(__half v) { return __half2float(v); }

template <typename T>
__global__ void FillKernel(T* __restrict__ out, int64_t n, float value) {
  PdlEnter();
  const T v = Cast<T>(value);
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = v;
  }
}

template <typename S, typename D>
__global__ void ConvertKernel(const S* __restrict__ in, D* __restrict__ out, int64_t n) {
  PdlEnter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = Cast<D>(Widen(in[i]));
  }
}

template <typename S>
absl::Status LaunchConvert(const CudaContext& ctx, const S* in, const tensor::TensorView& dst,
                           int64_t n) {
  const unsigned grid = GridFor(n, 256, ctx);
  switch (dst.dtype) {
    case DType::kF32:
      Launch(ConvertKernel<S, float>, grid, 256, 0, ctx.stream(), in, dst.data<float>(), n);
      break;
    case DType::kBF16:
      Launch(ConvertKernel<S, bf16>, grid, 256, 0, ctx.stream(), in, dst.data<bf16>(), n);
      break;
    case DType::kF16:
      Launch(ConvertKernel<S, __half>, grid, 256, 0, ctx.stream(), in, dst.data<__half>(), n);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Convert: unsupported destination dtype ", tensor::DTypeName(dst.dtype)));
  }
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("ConvertKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status Fill(const CudaContext& ctx, const tensor::TensorView& t, float value) {
  const int64_t n = t.numel();
  if (n == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(t, "Fill", "t"));
  const unsigned grid = GridFor(n, 256, ctx);
  switch (t.dtype) {
    case DType::kF32:
      Launch(FillKernel<float>, grid, 256, 0, ctx.stream(), t.data<float>(), n, value);
      break;
    case DType::kBF16:
      Launch(FillKernel<bf16>, grid, 256, 0, ctx.stream(), t.data<bf16>(), n, value);
      break;
    case DType::kF16:
      Launch(FillKernel<__half>, grid, 256, 0, ctx.stream(), t.data<__half>(), n, value);
      break;
    case DType::kI32:
      Launch(FillKernel<int32_t>, grid, 256, 0, ctx.stream(), t.data<int32_t>(), n, value);
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Fill: unsupported dtype ", tensor::DTypeName(t.dtype)));
  }
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("FillKernel");
  return absl::OkStatus();
}

absl::Status Convert(const CudaContext& ctx, const tensor::TensorView& src,
                     const tensor::TensorView& dst) {
  if (src.numel() != dst.numel()) {
    return absl::InvalidArgumentError(absl::StrCat("Convert: element counts differ (",
                                                   src.shape.ToString(), " vs ",
                                                   dst.shape.ToString(), ")"));
  }
  const int64_t n = src.numel();
  if (n == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(src, "Convert", "src"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(dst, "Convert", "dst"));
  switch (src.dtype) {
    case DType::kF32:
      return LaunchConvert(ctx, src.data<float>(), dst, n);
    case DType::kBF16:
      return LaunchConvert(ctx, src.data<bf16>(), dst, n);
    case DType::kF16:
      return LaunchConvert(ctx, src.data<__half>(), dst, n);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Convert: unsupported source dtype ", tensor::DTypeName(src.dtype)));
  }
}

}  // namespace gka::kernels::cuda
