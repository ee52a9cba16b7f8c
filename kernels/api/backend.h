// The kernel backend interface: device memory plus every op the model needs.
//
// Owns: the op parameter structs (one header per op in this directory) and `Backend`, which
// the CPU reference (kernels/cpu) and the CUDA backend (kernels/cuda) implement. The engine
// talks only to this interface; `kernels/registry.h` picks the implementation.
// Must not depend on the engine, scheduler, gRPC or CUDA headers.
//
//   GKA_ASSIGN_OR_RETURN(auto backend, kernels::CreateBackend({.kind = BackendKind::kCpu}));
//   GKA_ASSIGN_OR_RETURN(auto x, backend->Allocate(Shape{T, hidden}, DType::kF32));
//   GKA_RETURN_IF_ERROR(backend->RmsNorm({.x = x.view(), .weight = w, .out = y, .eps = 1e-6f}));
//
// Conventions shared by all ops:
//  - TensorViews are contiguous row-major; shapes and dtypes are stated per field.
//  - Integer index arrays (`const int32_t*`) live in the backend's memory (host for CPU,
//    device for CUDA) unless the field name ends in `_host`.
//  - Ops validate shapes and dtypes and return InvalidArgument on mismatch; they never
//    abort on bad parameters.
//  - Ops run in order on the backend's single stream; Synchronize() waits for all of them.
//  - Dtypes the engine uses (the CPU backend accepts F32 only; CUDA must accept these):
//      activation dtype A = F32 (`--dtype fp32`) or BF16 (`--dtype bf16`);
//      GEMM weights and the embedding table: A; logits: F32 (Gemm y = F32 with x, w in A);
//      small per-channel vectors (every norm weight, conv weights, A_log, dt_bias, biases): F32;
//      CausalConv: x in A, out F32, state F32;  GkaGates: a/b/c in A, everything else F32;
//      GkaCore: all F32;  GatedRmsNorm: x F32, gate in A, out in A;
//      RmsNorm / QkNormRope / SiluMul / Add / Embedding / attention q,k,v,out and KV pages: A.
//
// Thread-safety: a Backend is used by one engine thread at a time.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/base/check.h"
#include "common/tensor/tensor.h"
#include "kernels/api/attention.h"
#include "kernels/api/conv.h"
#include "kernels/api/elementwise.h"
#include "kernels/api/gemm.h"
#include "kernels/api/gka.h"
#include "kernels/api/norm.h"
#include "kernels/api/sampling.h"

namespace gka::kernels {

class Backend;

// Owning device allocation, freed through the backend that made it. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* owner, tensor::TensorView view) : owner_(owner), view_(view) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept : owner_(o.owner_), view_(o.view_) {
    o.owner_ = nullptr;
    o.view_ = {};
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  const tensor::TensorView& view() const { return view_; }
  template <typename T>
  T* data() const {
    return view_.data<T>();
  }
  size_t nbytes() const { return view_.nbytes(); }
  bool empty() const { return view_.ptr == nullptr; }
  // Gives the buffer another shape with the same element count (e.g. [C, 1, K] -> [C, K]).
  void Reshape(tensor::Shape shape) {
    GKA_CHECK(shape.numel() == view_.shape.numel()) << shape.ToString();
    view_.shape = shape;
  }
  void Reset();

 private:
  Backend* owner_ = nullptr;
  tensor::TensorView view_;
};

enum class BackendKind { kCpu, kCuda };

// A recorded sequence of ops, replayed with one launch (a CUDA graph on the CUDA backend).
// Made by Backend::EndCapture; every pointer the recorded ops use (tensors, index arrays) is
// baked in, so the caller keeps those buffers alive and unmoved and changes only their
// contents between launches. Must not outlive its backend.
class OpGraph {
 public:
  virtual ~OpGraph() = default;
  // False once memory the backend handed the recorded ops internally (its scratch) has been
  // reallocated since the capture: launching would touch freed memory, so recapture instead.
  virtual bool IsCurrent() const = 0;
  // Queues the recorded ops on the backend's stream (asynchronous, like any op).
  virtual absl::Status Launch() = 0;
  // Number of recorded operations (kernels, copies, library calls' kernels).
  virtual int64_t num_nodes() const = 0;
};

// A point in a backend's stream of work: everything enqueued on it before Backend::Mark.
// Another stream (a staging copier's) waits for it before reading what that work wrote.
// Thread-safety: immutable; may be shared across threads (it outlives nothing it names).
class StreamMark {
 public:
  virtual ~StreamMark() = default;
  // The native handle another stream waits on: a cudaEvent_t on the CUDA backend.
  virtual void* native_event() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual BackendKind kind() const = 0;
  virtual absl::string_view name() const = 0;
  tensor::Device device() const {
    return kind() == BackendKind::kCpu ? tensor::Device::kCpu : tensor::Device::kCuda;
  }

  // --- memory -------------------------------------------------------------------------
  // Zero-initialised. ResourceExhausted when the device is full.
  virtual absl::StatusOr<DeviceBuffer> Allocate(tensor::Shape shape, tensor::DType dtype) = 0;
  // Copies between host memory and this backend's memory. Sizes in bytes.
  virtual absl::Status CopyFromHost(void* dst, const void* src_host, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* dst_host, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status Fill(const tensor::TensorView& t, float value) = 0;
  // Converts between float dtypes (F32, BF16, F16); same shape.
  virtual absl::Status Convert(const tensor::TensorView& src, const tensor::TensorView& dst) = 0;
  virtual absl::Status Synchronize() = 0;
  // A mark after every op this thread enqueued so far. Null (and OK) for a backend whose ops
  // are complete when they return (the CPU reference): there is nothing to wait for.
  virtual absl::StatusOr<std::shared_ptr<StreamMark>> Mark() {
    return std::shared_ptr<StreamMark>();
  }

  // --- ops (one params struct per op, see the headers included above) ------------------
  virtual absl::Status Gemm(const GemmParams& p) = 0;
  virtual absl::Status Embedding(const EmbeddingParams& p) = 0;
  virtual absl::Status RmsNorm(const RmsNormParams& p) = 0;
  virtual absl::Status QkNormRope(const QkNormRopeParams& p) = 0;
  virtual absl::Status SiluMul(const SiluMulParams& p) = 0;
  virtual absl::Status Add(const AddParams& p) = 0;
  virtual absl::Status KvCacheWrite(const KvCacheWriteParams& p) = 0;
  virtual absl::Status PagedAttention(const PagedAttentionParams& p) = 0;
  virtual absl::Status CausalConv(const CausalConvParams& p) = 0;
  virtual absl::Status GkaGates(const GkaGatesParams& p) = 0;
  virtual absl::Status GkaCore(const GkaCoreParams& p) = 0;
  virtual absl::Status GatedRmsNorm(const GatedRmsNormParams& p) = 0;
  virtual absl::Status Sample(const SampleParams& p) = 0;

  // --- graph capture (optional) --------------------------------------------------------
  // Between BeginCapture and EndCapture the ops called on this thread are recorded, not run.
  // Recorded ops must not allocate, copy to or from the host, synchronise or Sample (all
  // fail or would be recorded). EndCapture always ends the capture, also after an op failed
  // mid-way (then discard its graph: it is incomplete). Backends without graphs (the CPU
  // reference) return Unimplemented, and SupportsGraphs() tells beforehand.
  virtual bool SupportsGraphs() const { return false; }
  virtual absl::Status BeginCapture() {
    return absl::UnimplementedError(absl::StrCat(name(), " backend has no graph capture"));
  }
  virtual absl::StatusOr<std::unique_ptr<OpGraph>> EndCapture() {
    return absl::UnimplementedError(absl::StrCat(name(), " backend has no graph capture"));
  }

 protected:
  friend class DeviceBuffer;
  virtual void Free(const tensor::TensorView& view) = 0;
};

inline DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    owner_ = o.owner_;
    view_ = o.view_;
    o.owner_ = nullptr;
    o.view_ = {};
  }
  return *this;
}

inline void DeviceBuffer::Reset() {
  if (owner_ != nullptr && view_.ptr != nullptr) owner_->Free(view_);
  owner_ = nullptr;
  view_ = {};
}

}  // namespace gka::kernels
