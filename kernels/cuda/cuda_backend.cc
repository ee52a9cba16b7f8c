#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/ops.h"

namespace gka::kernels::cuda {

int CudaDeviceCount() {
  int n = 0;
  // Without a driver this returns cudaErrorInsufficientDriver (35); without a GPU
  // cudaErrorNoDevice. Both mean "no CUDA here", never a crash.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> CudaBackend::Create(const CudaBackendOptions& options) {
  if (CudaDeviceCount() == 0) {
    return absl::UnavailableError("no CUDA device is visible (no GPU or no driver)");
  }
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<CudaContext> ctx,
                       CudaContext::Create(options.device_ordinal));
  return std::unique_ptr<Backend>(new CudaBackend(std::move(ctx)));
}

CudaBackend::CudaBackend(std::unique_ptr<CudaContext> ctx) : ctx_(std::move(ctx)) {}

CudaBackend::~CudaBackend() {
  // Buffers still owned by the engine must be gone by now (DeviceBuffer frees through us);
  // drain the stream so no kernel outlives the handles destroyed next.
  if (ctx_ != nullptr) cudaStreamSynchronize(ctx_->stream());
}

void* CudaBackend::stream_handle() const { return ctx_->stream(); }
absl::string_view CudaBackend::device_name() const { return ctx_->device_name(); }

absl::StatusOr<DeviceBuffer> CudaBackend::Allocate(tensor::Shape shape, tensor::DType dtype) {
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("negative dimension in ", shape.ToString()));
    }
  }
  const size_t bytes = static_cast<size_t>(shape.numel()) * tensor::DTypeSize(dtype);
  // Round up so vectorised kernels may touch a full 16-byte word at the end; never 0 bytes,
  // so an empty tensor still has a distinct non-null pointer.
  const size_t rounded = (bytes + 255) / 256 * 256 + 256;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, rounded);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return CudaStatus(e, absl::StrCat("cudaMalloc(", bytes, " bytes for ", shape.ToString(), " ",
                                      tensor::DTypeName(dtype), ")"));
  }
  // Zero-initialised per the Backend contract. Stream-ordered, so later ops see zeros.
  GKA_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, rounded, ctx_->stream()));
  return DeviceBuffer(this, tensor::TensorView{p, dtype, shape, tensor::Device::kCuda});
}

void CudaBackend::Free(const tensor::TensorView& view) {
  // cudaFree waits for the device, so kernels still reading the buffer finish first.
  cudaFree(view.ptr);
}

absl::Status CudaBackend::CopyFromHost(void* dst, const void* src_host, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  // Pageable host memory: the copy is staged, and returns once the source may be reused.
  GKA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, ctx_->stream()));
  GKA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* dst_host, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  GKA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, ctx_->stream()));
  GKA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyOnDevice(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  GKA_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Fill(const tensor::TensorView& t, float value) {
  return cuda::Fill(*ctx_, t, value);
}
absl::Status CudaBackend::Convert(const tensor::TensorView& src, const tensor::TensorView& dst) {
  return cuda::Convert(*ctx_, src, dst);
}
namespace {

// A cudaEvent_t recorded on the backend's stream; destroyed with the last holder (CUDA defers
// the destruction of an event a stream still waits on).
class CudaStreamMark final : public StreamMark {
 public:
  explicit CudaStreamMark(cudaEvent_t event) : event_(event) {}
  ~CudaStreamMark() override { cudaEventDestroy(event_); }
  void* native_event() const override { return event_; }

 private:
  cudaEvent_t event_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<StreamMark>> CudaBackend::Mark() {
  cudaEvent_t event = nullptr;
  GKA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  auto mark = std::make_shared<CudaStreamMark>(event);
  GKA_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, ctx_->stream()));
  return std::shared_ptr<StreamMark>(std::move(mark));
}

absl::Status CudaBackend::Synchronize() {
  GKA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Gemm(const GemmParams& p) { return cuda::Gemm(*ctx_, p); }
absl::Status CudaBackend::Embedding(const EmbeddingParams& p) { return cuda::Embedding(*ctx_, p); }
absl::Status CudaBackend::RmsNorm(const RmsNormParams& p) { return cuda::RmsNorm(*ctx_, p); }
absl::Status CudaBackend::QkNormRope(const QkNormRopeParams& p) {
  return cuda::QkNormRope(*ctx_, p);
}
absl::Status CudaBackend::SiluMul(const SiluMulParams& p) { return cuda::SiluMul(*ctx_, p); }
absl::Status CudaBackend::Add(const AddParams& p) { return cuda::Add(*ctx_, p); }
absl::Status CudaBackend::KvCacheWrite(const KvCacheWriteParams& p) {
  return cuda::KvCacheWrite(*ctx_, p);
}
absl::Status CudaBackend::PagedAttention(const PagedAttentionParams& p) {
  return cuda::PagedAttention(*ctx_, p);
}
absl::Status CudaBackend::CausalConv(const CausalConvParams& p) {
  return cuda::CausalConv(*ctx_, p);
}
absl::Status CudaBackend::GkaGates(const GkaGatesParams& p) { return cuda::GkaGates(*ctx_, p); }
absl::Status CudaBackend::GkaCore(const GkaCoreParams& p) { return cuda::GkaCore(*ctx_, p); }
absl::Status CudaBackend::GatedRmsNorm(const GatedRmsNormParams& p) {
  return cuda::GatedRmsNorm(*ctx_, p);
}
absl::Status CudaBackend::Sample(const SampleParams& p) { return cuda::Sample(*ctx_, p); }

namespace {

// An instantiated CUDA graph plus the scratch epoch it was captured at.
class CudaOpGraph final : public OpGraph {
 public:
  CudaOpGraph(const CudaContext* ctx, cudaGraphExec_t exec, uint64_t epoch, int64_t nodes)
      : ctx_(ctx), exec_(exec), epoch_(epoch), nodes_(nodes) {}
  CudaOpGraph(const CudaOpGraph&) = delete;
  CudaOpGraph& operator=(const CudaOpGraph&) = delete;
  ~CudaOpGraph() override { cudaGraphExecDestroy(exec_); }

  bool IsCurrent() const override { return ctx_->scratch_epoch() == epoch_; }
  absl::Status Launch() override {
    if (!IsCurrent()) {
      return absl::FailedPreconditionError(
          "CUDA graph is stale: the backend's scratch was reallocated after the capture");
    }
    GKA_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, ctx_->stream()));
    return absl::OkStatus();
  }
  int64_t num_nodes() const override { return nodes_; }

 private:
  const CudaContext* ctx_;
  cudaGraphExec_t exec_;
  uint64_t epoch_;
  int64_t nodes_;
};

// Owns a captured (not yet instantiated) graph.
struct GraphDeleter {
  void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};
using GraphPtr = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDeleter>;

}  // namespace

absl::Status CudaBackend::BeginCapture() {
  // Thread-local: other threads (another engine on another device) may keep calling CUDA
  // APIs that a global-mode capture would forbid; this thread is the only one using the
  // stream anyway.
  GKA_CUDA_RETURN_IF_ERROR(
      cudaStreamBeginCapture(ctx_->stream(), cudaStreamCaptureModeThreadLocal));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<OpGraph>> CudaBackend::EndCapture() {
  // Read the epoch first: an op that grew the scratch during the capture already failed.
  const uint64_t epoch = ctx_->scratch_epoch();
  cudaGraph_t raw = nullptr;
  const cudaError_t end = cudaStreamEndCapture(ctx_->stream(), &raw);
  GraphPtr graph(raw);
  if (end != cudaSuccess) {
    cudaGetLastError();  // an invalidated capture leaves a non-sticky error behind
    return CudaStatus(end, "cudaStreamEndCapture");
  }
  size_t nodes = 0;
  GKA_CUDA_RETURN_IF_ERROR(cudaGraphGetNodes(graph.get(), nullptr, &nodes));
  cudaGraphExec_t exec = nullptr;
  GKA_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&exec, graph.get(), 0));
  return std::unique_ptr<OpGraph>(
      new CudaOpGraph(ctx_.get(), exec, epoch, static_cast<int64_t>(nodes)));
}

}  // namespace gka::kernels::cuda
