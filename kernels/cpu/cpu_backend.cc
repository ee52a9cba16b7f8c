#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {

using tensor::DType;

absl::StatusOr<DeviceBuffer> CpuBackend::Allocate(tensor::Shape shape, DType dtype) {
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("negative dimension in ", shape.ToString()));
    }
  }
  const size_t bytes = static_cast<size_t>(shape.numel()) * tensor::DTypeSize(dtype);
  const size_t rounded = (bytes + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("host allocation of ", bytes, " bytes failed"));
  }
  std::memset(p, 0, rounded);
  return DeviceBuffer(this, tensor::TensorView{p, dtype, shape, tensor::Device::kCpu});
}

void CpuBackend::Free(const tensor::TensorView& view) { std::free(view.ptr); }

absl::Status CpuBackend::CopyFromHost(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}
absl::Status CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}
absl::Status CpuBackend::CopyOnDevice(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::Fill(const tensor::TensorView& t, float value) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::kF32:
      for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = value;
      return absl::OkStatus();
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = tensor::FloatToBF16(value);
      return absl::OkStatus();
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = static_cast<int32_t>(value);
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("Fill: unsupported dtype ", tensor::DTypeName(t.dtype)));
  }
}

absl::Status CpuBackend::Convert(const tensor::TensorView& src, const tensor::TensorView& dst) {
  if (src.numel() != dst.numel()) {
    return absl::InvalidArgumentError("Convert: element counts differ");
  }
  const int64_t n = src.numel();
  if (dst.dtype == DType::kF32 &&
      (src.dtype == DType::kF32 || src.dtype == DType::kBF16 || src.dtype == DType::kF16)) {
    tensor::ConvertToF32(src.ptr, src.dtype, n, dst.data<float>());
    return absl::OkStatus();
  }
  if (src.dtype == DType::kF32 && dst.dtype == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i)
      dst.data<uint16_t>()[i] = tensor::FloatToBF16(src.data<float>()[i]);
    return absl::OkStatus();
  }
  if (src.dtype == DType::kF32 && dst.dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i)
      dst.data<uint16_t>()[i] = tensor::FloatToF16(src.data<float>()[i]);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("Convert: ", tensor::DTypeName(src.dtype), " -> ",
                                                 tensor::DTypeName(dst.dtype), " unsupported"));
}

absl::Status CpuBackend::Gemm(const GemmParams& p) { return cpu::Gemm(p); }
absl::Status CpuBackend::Embedding(const EmbeddingParams& p) { return cpu::Embedding(p); }
absl::Status CpuBackend::RmsNorm(const RmsNormParams& p) { return cpu::RmsNorm(p); }
absl::Status CpuBackend::QkNormRope(const QkNormRopeParams& p) { return cpu::QkNormRope(p); }
absl::Status CpuBackend::SiluMul(const SiluMulParams& p) { return cpu::SiluMul(p); }
absl::Status CpuBackend::Add(const AddParams& p) { return cpu::Add(p); }
absl::Status CpuBackend::KvCacheWrite(const KvCacheWriteParams& p) { return cpu::KvCacheWrite(p); }
absl::Status CpuBackend::PagedAttention(const PagedAttentionParams& p) {
  return cpu::PagedAttention(p);
}
absl::Status CpuBackend::CausalConv(const CausalConvParams& p) { return cpu::CausalConv(p); }
absl::Status CpuBackend::GkaGates(const GkaGatesParams& p) { return cpu::GkaGates(p); }
absl::Status CpuBackend::GkaCore(const GkaCoreParams& p) { return cpu::GkaCore(p); }
absl::Status CpuBackend::GatedRmsNorm(const GatedRmsNormParams& p) { return cpu::GatedRmsNorm(p); }
absl::Status CpuBackend::Sample(const SampleParams& p) { return cpu::Sample(p); }

}  // namespace gka::kernels::cpu
