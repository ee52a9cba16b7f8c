// Collective communication between the tensor-parallel ranks of one worker.
//
// Owns: the Communicator interface (rank, world size, in-place all-reduce sum, all-gather), a
// single-rank implementation, and an in-process multi-rank group for CPU tests and CPU
// workers (one thread per rank, host memory). The NCCL implementation (one communicator per
// GPU rank) lives beside the CUDA backend, in kernels/nccl. Must not depend on the engine or
// kernels.
//
//   auto group = CreateInProcessGroup(4);        // ranks 0..3, one per thread
//   // on rank r's thread:
//   GKA_RETURN_IF_ERROR(group[r]->AllReduceSum(partial));   // [T, hidden] f32, summed in place
//
// Thread-safety: each Communicator belongs to its rank's thread; collectives must be called by
// every rank in the same order (as with NCCL).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "common/tensor/tensor.h"

namespace gka::parallel {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // t ← Σ_ranks t, elementwise, F32 or BF16. Every rank gets bitwise the same result: the sum
  // runs in rank order 0..N-1 (in fp32).
  virtual absl::Status AllReduceSum(const tensor::TensorView& t) = 0;
  // out = concat over ranks of `in` along dim 0 (out has world_size × in's elements, rank r's
  // at element offset r × in.numel()). In place when `in` is this rank's block of `out` (its
  // ptr is out's plus rank × in.nbytes(), NCCL's in-place form); otherwise they must not
  // overlap.
  virtual absl::Status AllGather(const tensor::TensorView& in, const tensor::TensorView& out) = 0;

  // Device communicators (NCCL, kernels/nccl) take device memory and enqueue collectives on a
  // stream, so the caller need not synchronise first; host communicators (these here) read
  // host memory when called, so device work producing it must be finished.
  virtual bool on_device() const { return false; }
  // Device communicators: enqueue later collectives on `native_stream` (a cudaStream_t of
  // the rank's device, e.g. the CUDA backend's). Host communicators ignore it.
  virtual absl::Status BindStream(void* native_stream) { return absl::OkStatus(); }
};

std::unique_ptr<Communicator> CreateSingleRank();

// `world_size` communicators over host memory sharing one rendezvous; hand communicator r to
// the thread that runs rank r. A rank that calls a collective with a different size than the
// others gets InvalidArgument (all ranks do).
std::vector<std::unique_ptr<Communicator>> CreateInProcessGroup(int world_size);

}  // namespace gka::parallel
