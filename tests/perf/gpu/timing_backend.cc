#include "tests/perf/gpu/timing_backend.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "kernels/registry.h"

namespace gka::gpu_testing {

using kernels::Backend;

OpTimer::OpTimer() = default;
OpTimer::~OpTimer() {
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

void* OpTimer::NextEvent() {
  if (used_ == events_.size()) {
    cudaEvent_t e;
    if (cudaEventCreate(&e) != cudaSuccess) {
      std::fprintf(stderr, "cudaEventCreate failed\n");
      std::abort();
    }
    events_.push_back(e);
  }
  return events_[used_++];
}

void OpTimer::Begin(const std::string& name, double flops) {
  if (!enabled_) return;
  void* b = NextEvent();
  cudaEventRecord(static_cast<cudaEvent_t>(b), static_cast<cudaStream_t>(stream_));
  pending_.push_back({name, b, nullptr, flops});
}

void OpTimer::End() {
  if (!enabled_ || pending_.empty() || pending_.back().end != nullptr) return;
  void* e = NextEvent();
  cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(stream_));
  pending_.back().end = e;
}

std::map<std::string, OpTimer::Entry> OpTimer::Collect() {
  cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
  std::map<std::string, Entry> out;
  for (const Pending& p : pending_) {
    if (p.end == nullptr) continue;
    float ms = 0;
    cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(p.begin), static_cast<cudaEvent_t>(p.end));
    out[p.name].ms += ms;
    out[p.name].count += 1;
    out[p.name].flops += p.flops;
  }
  pending_.clear();
  used_ = 0;
  return out;
}

namespace {

// Begin on construction, End on destruction: one op's interval.
class Scope {
 public:
  Scope(OpTimer& t, const std::string& name, double flops = 0) : t_(t) { t_.Begin(name, flops); }
  ~Scope() { t_.End(); }

 private:
  OpTimer& t_;
};

class TimingBackend final : public Backend {
 public:
  TimingBackend(std::unique_ptr<Backend> inner, std::shared_ptr<OpTimer> timer)
      : inner_(std::move(inner)), t_(std::move(timer)) {
    t_->set_stream(kernels::NativeStream(*inner_));
  }
  kernels::BackendKind kind() const override { return inner_->kind(); }
  absl::string_view name() const override { return inner_->name(); }

  absl::StatusOr<kernels::DeviceBuffer> Allocate(tensor::Shape s, tensor::DType d) override {
    return inner_->Allocate(s, d);  // owned (and freed) by the inner backend
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t n) override {
    Scope s(*t_, "copy host->device");
    return inner_->CopyFromHost(dst, src, n);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t n) override {
    return inner_->CopyToHost(dst, src, n);
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t n) override {
    Scope s(*t_, "copy device");
    return inner_->CopyOnDevice(dst, src, n);
  }
  absl::Status Fill(const tensor::TensorView& v, float x) override {
    Scope s(*t_, "fill");
    return inner_->Fill(v, x);
  }
  absl::Status Convert(const tensor::TensorView& a, const tensor::TensorView& b) override {
    Scope s(*t_, "convert");
    return inner_->Convert(a, b);
  }
  absl::Status Synchronize() override { return inner_->Synchronize(); }
  absl::StatusOr<std::shared_ptr<kernels::StreamMark>> Mark() override { return inner_->Mark(); }

  absl::Status Gemm(const kernels::GemmParams& p) override {
    Scope s(*t_, absl::StrCat("gemm ", p.w.shape[0], "x", p.w.shape[1]),
            2.0 * static_cast<double>(p.x.shape[0]) * static_cast<double>(p.w.shape[0]) *
                static_cast<double>(p.w.shape[1]));
    return inner_->Gemm(p);
  }
#define GKA_TIMED_OP(Op, Params, label)                \
  absl::Status Op(const kernels::Params& p) override { \
    Scope s(*t_, label);                               \
    return inner_->Op(p);                              \
  }
  GKA_TIMED_OP(Embedding, EmbeddingParams, "embedding / row gather")
  GKA_TIMED_OP(RmsNorm, RmsNormParams, "rms_norm (+residual)")
  GKA_TIMED_OP(QkNormRope, QkNormRopeParams, "qk_norm_rope")
  GKA_TIMED_OP(SiluMul, SiluMulParams, "silu_mul")
  GKA_TIMED_OP(Add, AddParams, "add")
  GKA_TIMED_OP(KvCacheWrite, KvCacheWriteParams, "kv_cache_write")
  GKA_TIMED_OP(PagedAttention, PagedAttentionParams, "paged_attention")
  GKA_TIMED_OP(CausalConv, CausalConvParams, "gka causal_conv")
  GKA_TIMED_OP(GkaGates, GkaGatesParams, "gka gates")
  GKA_TIMED_OP(GkaCore, GkaCoreParams, "gka core (solver)")
  GKA_TIMED_OP(GatedRmsNorm, GatedRmsNormParams, "gka gated_rms_norm")
  GKA_TIMED_OP(Sample, SampleParams, "sample")
#undef GKA_TIMED_OP

 protected:
  // Never called: every buffer is owned by the inner backend, which frees it.
  void Free(const tensor::TensorView&) override {}

 private:
  std::unique_ptr<Backend> inner_;
  std::shared_ptr<OpTimer> t_;
};

class TimingCommunicator final : public parallel::Communicator {
 public:
  TimingCommunicator(parallel::Communicator* inner, std::shared_ptr<OpTimer> timer)
      : inner_(inner), t_(std::move(timer)) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  bool on_device() const override { return inner_->on_device(); }
  absl::Status BindStream(void* s) override { return inner_->BindStream(s); }
  absl::Status AllReduceSum(const tensor::TensorView& v) override {
    Scope s(*t_, "all_reduce (one-shot or nccl)");
    return inner_->AllReduceSum(v);
  }
  absl::Status AllGather(const tensor::TensorView& a, const tensor::TensorView& b) override {
    Scope s(*t_, "nccl all_gather");
    return inner_->AllGather(a, b);
  }

 private:
  parallel::Communicator* inner_;
  std::shared_ptr<OpTimer> t_;
};

}  // namespace

std::unique_ptr<Backend> WrapWithTimer(std::unique_ptr<Backend> inner,
                                       std::shared_ptr<OpTimer> timer) {
  return std::make_unique<TimingBackend>(std::move(inner), std::move(timer));
}

std::unique_ptr<parallel::Communicator> WrapCommunicator(parallel::Communicator* inner,
                                                         std::shared_ptr<OpTimer> timer) {
  return std::make_unique<TimingCommunicator>(inner, std::move(timer));
}

}  // namespace gka::gpu_testing
