// The CUDA backend: device memory, one stream, one cuBLAS handle and every op of
// kernels/api on Hopper (sm_90a).
//
// Owns: the device context (stream, cuBLAS handle, scratch arena) and every allocation it
// hands out. Must not depend on the engine; keeps CUDA headers out of this header so that
// code built without nvcc can include it (kernels/registry.cc does).
//
//   GKA_ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, cuda::CudaBackend::Create({}));
//   GKA_ASSIGN_OR_RETURN(DeviceBuffer x, be->Allocate(Shape{T, 5120}, DType::kBF16));
//   GKA_RETURN_IF_ERROR(be->RmsNorm({.x = x.view(), .weight = w, .out = y}));
//   GKA_RETURN_IF_ERROR(be->Synchronize());
//
// Dtypes: activations (x, residual, q/k/v, pages, GEMM operands) are F32 or BF16, all of one
// op's activation tensors alike; norm weights, conv weights, gates and GKA state are F32
// (kernels/api/backend.h lists them). Index arrays are device pointers; the sampling
// arguments the API marks as host stay on the host.
//
// Thread-safety: one thread at a time (the engine thread), like every Backend. Ops are
// asynchronous on the backend's stream; Copy*Host and Synchronize wait for it.
//
// CUDA graphs: every op except Sample (host in/out) and the host copies is capturable, through
// BeginCapture/EndCapture (thread-local capture of the backend's stream) or directly on
// stream_handle(). PagedAttention's split-KV scratch grows on first use: run the same step
// once uncaptured before capturing it (a capture that would allocate fails with
// FailedPrecondition); a graph whose scratch was reallocated since reports !IsCurrent().
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/api/backend.h"

namespace gka::kernels::cuda {

class CudaContext;

struct CudaBackendOptions {
  int device_ordinal = 0;
};

// Number of visible CUDA devices; 0 when there is no GPU or no driver (never fails).
int CudaDeviceCount();

class CudaBackend final : public Backend {
 public:
  // Unavailable without a GPU/driver; FailedPrecondition on a pre-Hopper device.
  static absl::StatusOr<std::unique_ptr<Backend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;

  BackendKind kind() const override { return BackendKind::kCuda; }
  absl::string_view name() const override { return "cuda"; }

  absl::StatusOr<DeviceBuffer> Allocate(tensor::Shape shape, tensor::DType dtype) override;
  absl::Status CopyFromHost(void* dst, const void* src_host, size_t bytes) override;
  absl::Status CopyToHost(void* dst_host, const void* src, size_t bytes) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status Fill(const tensor::TensorView& t, float value) override;
  absl::Status Convert(const tensor::TensorView& src, const tensor::TensorView& dst) override;
  absl::Status Synchronize() override;
  absl::StatusOr<std::shared_ptr<StreamMark>> Mark() override;

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

  bool SupportsGraphs() const override { return true; }
  absl::Status BeginCapture() override;
  absl::StatusOr<std::unique_ptr<OpGraph>> EndCapture() override;

  // For benchmarks and tests: the stream every op runs on (a cudaStream_t) and the device.
  void* stream_handle() const;
  absl::string_view device_name() const;

 protected:
  void Free(const tensor::TensorView& view) override;

 private:
  explicit CudaBackend(std::unique_ptr<CudaContext> ctx);
  std::unique_ptr<CudaContext> ctx_;
};

}  // namespace gka::kernels::cuda
