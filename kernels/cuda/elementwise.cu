// Embedding row gather, SwiGLU activation and elementwise add.
//
// Roofline (all memory bound, ~0 FLOPs per byte):
//   Embedding: reads T·hidden·size(table) (only the gathered rows), writes T·hidden·size(out).
//   SiluMul:   reads T·2F·size, writes T·F·size; 4 FLOPs + 1 exp per output.
//   Add:       reads 2n·size, writes n·size.
// 16-byte accesses when rows are 16-byte aligned, else element by element.
#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

// One block per output row; ids outside [0, V) produce a zero row instead of a wild read
// (the API says the caller guarantees the range; this only keeps a bug from faulting).
__global__ void EmbeddingVecKernel(const uint4* __restrict__ table, const int32_t* __restrict__ ids,
                                   uint4* __restrict__ out, int64_t row_vecs, int64_t num_rows) {
  PdlEnter();
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  uint4* dst = out + t * row_vecs;
  if (id < 0 || id >= num_rows) {
    for (int64_t i = threadIdx.x; i < row_vecs; i += blockDim.x) dst[i] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* src = table + static_cast<int64_t>(id) * row_vecs;
  for (int64_t i = threadIdx.x; i < row_vecs; i += blockDim.x) dst[i] = src[i];
}

template <typename T>
__global__ void EmbeddingKernel(const T* __restrict__ table, const int32_t* __restrict__ ids,
                                T* __restrict__ out, int64_t hidden, int64_t num_rows) {
  PdlEnter();
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  T* dst = out + t * hidden;
  const bool valid = id >= 0 && id < num_rows;
  const T* src = table + (valid ? static_cast<int64_t>(id) : 0) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    dst[i] = valid ? src[i] : FromFloat<T>(0.0f);
  }
}

// out[t, f] = silu(gu[t, f]) · gu[t, F + f]; four outputs per thread.
template <typename T>
__global__ void SiluMulVec4Kernel(const T* __restrict__ gu, T* __restrict__ out, int64_t rows,
                                  int64_t F) {
  PdlEnter();
  const int64_t f4 = F / 4;
  const int64_t n = rows * f4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / f4, f = (i - t * f4) * 4;
    const float4 g = Load4(gu + t * 2 * F + f);
    const float4 u = Load4(gu + t * 2 * F + F + f);
    Store4(out + t * F + f,
           make_float4(Silu(g.x) * u.x, Silu(g.y) * u.y, Silu(g.z) * u.z, Silu(g.w) * u.w));
  }
}

template <typename T>
__global__ void SiluMulKernel(const T* __restrict__ gu, T* __restrict__ out, int64_t rows,
                              int64_t F) {
  PdlEnter();
  const int64_t n = rows * F;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / F, f = i - t * F;
    out[i] = FromFloat<T>(Silu(ToFloat(gu[t * 2 * F + f])) * ToFloat(gu[t * 2 * F + F + f]));
  }
}

template <typename X, typename Y>
__global__ void AddKernel(const X* __restrict__ x, Y* __restrict__ y, int64_t n) {
  PdlEnter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = FromFloat<Y>(ToFloat(y[i]) + ToFloat(x[i]));
  }
}

template <typename X, typename Y>
__global__ void AddVec4Kernel(const X* __restrict__ x, Y* __restrict__ y, int64_t n4) {
  PdlEnter();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float4 a = Load4(x + 4 * i);
    const float4 b = Load4(y + 4 * i);
    Store4(y + 4 * i, make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w));
  }
}

bool Aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

template <typename X>
absl::Status LaunchAdd(const CudaContext& ctx, const X* x, const tensor::TensorView& y, int64_t n) {
  const bool vec =
      n % 4 == 0 && Aligned(x, 4 * sizeof(X)) && Aligned(y.ptr, 4 * tensor::DTypeSize(y.dtype));
  const int64_t work = vec ? n / 4 : n;
  const unsigned grid = GridFor(work, 256, ctx);
  GKA_DISPATCH_ACT(y.dtype, Y, {
    if (vec) {
      Launch(AddVec4Kernel<X, Y>, grid, 256, 0, ctx.stream(), x, y.data<Y>(), n / 4);
    } else {
      Launch(AddKernel<X, Y>, grid, 256, 0, ctx.stream(), x, y.data<Y>(), n);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("AddKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status Embedding(const CudaContext& ctx, const EmbeddingParams& p) {
  constexpr absl::string_view kOp = "Embedding";
  GKA_RETURN_IF_ERROR(CheckRank(p.table, 2, kOp, "table"));
  GKA_RETURN_IF_ERROR(CheckRank(p.out, 2, kOp, "out"));
  const int64_t V = p.table.shape[0], hidden = p.table.shape[1], T = p.out.shape[0];
  if (p.out.shape[1] != hidden) {
    return absl::InvalidArgumentError(absl::StrCat("Embedding: out ", p.out.shape.ToString(),
                                                   " vs table ", p.table.shape.ToString()));
  }
  if (p.out.dtype != p.table.dtype || !IsFloatActivation(p.out.dtype)) {
    return absl::InvalidArgumentError("Embedding: table and out must share dtype F32 or BF16");
  }
  if (T == 0 || hidden == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.table, kOp, "table"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
  if (p.ids == nullptr) return absl::InvalidArgumentError("Embedding: ids is null");
  const size_t row_bytes = hidden * tensor::DTypeSize(p.out.dtype);
  if (row_bytes % 16 == 0 && Aligned(p.table.ptr, 16) && Aligned(p.out.ptr, 16)) {
    Launch(EmbeddingVecKernel, T, 256, 0, ctx.stream(), static_cast<const uint4*>(p.table.ptr),
           p.ids, static_cast<uint4*>(p.out.ptr), row_bytes / 16, V);
  } else {
    GKA_DISPATCH_ACT(p.out.dtype, T_,
                     Launch(EmbeddingKernel<T_>, T, 256, 0, ctx.stream(), p.table.data<T_>(), p.ids,
                            p.out.data<T_>(), hidden, V));
  }
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("EmbeddingKernel");
  return absl::OkStatus();
}

absl::Status SiluMul(const CudaContext& ctx, const SiluMulParams& p) {
  constexpr absl::string_view kOp = "SiluMul";
  GKA_RETURN_IF_ERROR(CheckRank(p.gate_up, 2, kOp, "gate_up"));
  const int64_t rows = p.gate_up.shape[0], F = p.gate_up.shape[1] / 2;
  if (p.gate_up.shape[1] % 2 != 0) {
    return absl::InvalidArgumentError("SiluMul: gate_up width must be even");
  }
  GKA_RETURN_IF_ERROR(CheckShape(p.out, tensor::Shape{rows, F}, kOp, "out"));
  if (p.out.dtype != p.gate_up.dtype || !IsFloatActivation(p.out.dtype)) {
    return absl::InvalidArgumentError("SiluMul: gate_up and out must share dtype F32 or BF16");
  }
  if (rows == 0 || F == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.gate_up, kOp, "gate_up"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.out, kOp, "out"));
  const size_t es = tensor::DTypeSize(p.out.dtype);
  const bool vec = F % 4 == 0 && Aligned(p.gate_up.ptr, 4 * es) && Aligned(p.out.ptr, 4 * es);
  GKA_DISPATCH_ACT(p.out.dtype, T, {
    if (vec) {
      Launch(SiluMulVec4Kernel<T>, GridFor(rows * F / 4, 256, ctx), 256, 0, ctx.stream(),
             p.gate_up.data<T>(), p.out.data<T>(), rows, F);
    } else {
      Launch(SiluMulKernel<T>, GridFor(rows * F, 256, ctx), 256, 0, ctx.stream(),
             p.gate_up.data<T>(), p.out.data<T>(), rows, F);
    }
  });
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("SiluMulKernel");
  return absl::OkStatus();
}

absl::Status Add(const CudaContext& ctx, const AddParams& p) {
  constexpr absl::string_view kOp = "Add";
  if (!(p.x.shape == p.y.shape)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Add: x ", p.x.shape.ToString(), " vs y ", p.y.shape.ToString()));
  }
  const int64_t n = p.x.numel();
  if (n == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.x, kOp, "x"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.y, kOp, "y"));
  if (!IsFloatActivation(p.x.dtype) || !IsFloatActivation(p.y.dtype)) {
    return absl::InvalidArgumentError("Add: x and y must be F32 or BF16");
  }
  GKA_DISPATCH_ACT(p.x.dtype, X, return LaunchAdd<X>(ctx, p.x.data<X>(), p.y, n));
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
