// Backend over host memory: allocations are aligned host buffers, ops are kernels/cpu/ops.h.
// Computes in fp32; ops reject other float dtypes with InvalidArgument.
// Thread-safety: one engine thread at a time (ops may use BLAS threads internally).
#pragma once

#include "kernels/api/backend.h"

namespace gka::kernels::cpu {

class CpuBackend final : public Backend {
 public:
  BackendKind kind() const override { return BackendKind::kCpu; }
  absl::string_view name() const override { return "cpu"; }

  absl::StatusOr<DeviceBuffer> Allocate(tensor::Shape shape, tensor::DType dtype) override;
  absl::Status CopyFromHost(void* dst, const void* src_host, size_t bytes) override;
  absl::Status CopyToHost(void* dst_host, const void* src, size_t bytes) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status Fill(const tensor::TensorView& t, float value) override;
  absl::Status Convert(const tensor::TensorView& src, const tensor::TensorView& dst) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status Gemm(const GemmParams& p) override;
  absl::Status Embedding(const EmbeddingParams& p) override;
  absl::Status RmsNorm(const RmsNormParams& p) override;
  absl::Status QkNormRope(const QkNormRopeParams& p) override;
  absl::Status SiluMul(const SiluMulParams& p) override;
  absl::Status Add(const AddParams& p) override;
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override;
  absl::Status PagedAttention(const PagedAttentionParams& p) override;
  absl::Status CausalConv(const CausalConvParams& p) override;
  absl::Status GkaGates(const GkaGatesParams& p) override;
  absl::Status GkaCore(const GkaCoreParams& p) override;
  absl::Status GatedRmsNorm(const GatedRmsNormParams& p) override;
  absl::Status Sample(const SampleParams& p) override;

 protected:
  void Free(const tensor::TensorView& view) override;
};

}  // namespace gka::kernels::cpu
