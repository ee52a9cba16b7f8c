// Writes each new token's K and V rows into its page slot (in place).
//
// Roofline: reads and writes 2·T·Hkv·D·size bytes; no FLOPs. One block per token copies its
// K and V rows (Hkv·D contiguous elements each) with 16-byte accesses. Slots < 0 (padding
// tokens, vLLM's convention) and slots past the pool are skipped instead of faulting.
#include <algorithm>

#include "common/base/status.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {
namespace {

template <typename V>  // V: uint4 for 16-byte vectors, or the element type itself
__global__ void KvCacheWriteKernel(const V* __restrict__ k, const V* __restrict__ v,
                                   V* __restrict__ k_pages, V* __restrict__ v_pages,
                                   const int32_t* __restrict__ slot_mapping, int64_t row_elems,
                                   int64_t src_stride, int64_t num_slots) {
  PdlEnter();
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0 || slot >= num_slots) return;
  const V* ks = k + t * src_stride;
  const V* vs = v + t * src_stride;
  V* kd = k_pages + slot * row_elems;
  V* vd = v_pages + slot * row_elems;
  for (int64_t i = threadIdx.x; i < row_elems; i += blockDim.x) {
    kd[i] = ks[i];
    vd[i] = vs[i];
  }
}

}  // namespace

absl::Status KvCacheWrite(const CudaContext& ctx, const KvCacheWriteParams& p) {
  constexpr absl::string_view kOp = "KvCacheWrite";
  GKA_RETURN_IF_ERROR(CheckRank(p.k, 3, kOp, "k"));
  GKA_RETURN_IF_ERROR(CheckRank(p.k_pages, 4, kOp, "k_pages"));
  const int64_t T = p.k.shape[0], hkv = p.k.shape[1], D = p.k.shape[2];
  const int64_t num_pages = p.k_pages.shape[0], page_size = p.k_pages.shape[1];
  GKA_RETURN_IF_ERROR(CheckShape(p.v, p.k.shape, kOp, "v"));
  GKA_RETURN_IF_ERROR(
      CheckShape(p.k_pages, tensor::Shape{num_pages, page_size, hkv, D}, kOp, "k_pages"));
  GKA_RETURN_IF_ERROR(CheckShape(p.v_pages, p.k_pages.shape, kOp, "v_pages"));
  const tensor::DType dt = p.k.dtype;
  if (!IsFloatActivation(dt) || p.v.dtype != dt || p.k_pages.dtype != dt || p.v_pages.dtype != dt) {
    return absl::InvalidArgumentError(
        "KvCacheWrite: k, v and the pages must share one dtype, F32 or BF16");
  }
  if (T == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.k, kOp, "k"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.v, kOp, "v"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.k_pages, kOp, "k_pages"));
  GKA_RETURN_IF_ERROR(CheckOnDevice(p.v_pages, kOp, "v_pages"));
  if (p.slot_mapping == nullptr)
    return absl::InvalidArgumentError("KvCacheWrite: slot_mapping is null");
  const int64_t num_slots = num_pages * page_size;
  const int64_t elem = static_cast<int64_t>(tensor::DTypeSize(dt));
  const int64_t row_bytes = hkv * D * elem;
  // k and v may be column ranges of a fused [T, q|k|v]: tokens row_stride elements apart.
  const int64_t stride = p.row_stride == 0 ? hkv * D : p.row_stride;
  if (stride < hkv * D) return absl::InvalidArgumentError("KvCacheWrite: row_stride < Hkv * D");
  const int64_t stride_bytes = stride * elem;
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (row_bytes % 16 == 0 && stride_bytes % 16 == 0 && aligned(p.k.ptr) && aligned(p.v.ptr) &&
      aligned(p.k_pages.ptr) && aligned(p.v_pages.ptr)) {
    const int threads = static_cast<int>(std::min<int64_t>(256, row_bytes / 16));
    Launch(KvCacheWriteKernel<uint4>, T, threads, 0, ctx.stream(),
           static_cast<const uint4*>(p.k.ptr), static_cast<const uint4*>(p.v.ptr),
           static_cast<uint4*>(p.k_pages.ptr), static_cast<uint4*>(p.v_pages.ptr), p.slot_mapping,
           row_bytes / 16, stride_bytes / 16, num_slots);
  } else {
    GKA_DISPATCH_ACT(dt, T_,
                     Launch(KvCacheWriteKernel<T_>, T, 256, 0, ctx.stream(), p.k.data<T_>(),
                            p.v.data<T_>(), p.k_pages.data<T_>(), p.v_pages.data<T_>(),
                            p.slot_mapping, hkv * D, stride, num_slots));
  }
  GKA_CUDA_RETURN_IF_LAUNCH_ERROR("KvCacheWriteKernel");
  return absl::OkStatus();
}

}  // namespace gka::kernels::cuda
