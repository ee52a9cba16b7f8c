// The NCCL Communicator: collectives between the tensor-parallel GPU ranks of one worker, on
// device memory, enqueued on the CUDA backend's stream so they order with its kernels.
//
// Owns: one ncclComm_t per rank (RAII: destroyed with the object), the ncclResult_t → Status
// mapping, and the choice of CUDA stream. Lives beside the CUDA backend (architecture.md:
// common/parallel must not depend on kernels or CUDA); depends on common/parallel for the
// interface only. NCCL's and CUDA's headers stay in the .cc.
//
// One process, one thread per GPU (the worker layout):
//
//   GKA_ASSIGN_OR_RETURN(auto comms, nccl::CreateNcclGroup({0, 1, 2, 3}));  // rank r on GPU r
//   // thread r:
//   GKA_ASSIGN_OR_RETURN(auto engine, engine::Engine::Create(
//       {.backend = kernels::BackendKind::kCuda, .device_ordinal = r,
//        .communicator = comms[r].get()}, config, checkpoint));  // binds the engine's stream
//   // the engine's o_proj/down_proj outputs are then summed with ncclAllReduce in place.
//
// Several processes (one rank each): rank 0 calls NewNcclUniqueId(), ships the 128 bytes to
// the others out of band, and every rank calls CreateNcclCommunicator(id, world, rank, gpu)
// at the same time (it blocks until all ranks have joined).
//
// Collectives run on the stream given to BindStream (the engine passes its backend's
// stream); until then on the legacy default stream of the rank's device. They return when
// enqueued, not when done: synchronise the stream before reading the result on the host.
// Every rank gets bitwise the same result. NCCL's summation order is its own (ring or tree), with
// BF16 sums rounded to bf16 at each step; the one-shot path of a group (NcclGroupOptions) sums
// in fp32 in rank order, as the in-process group does, and rounds once.
//
// Thread-safety: each communicator belongs to its rank's thread; every rank must issue the
// same collectives in the same order. Memory that a collective may still be using must not be
// cudaFree'd by another rank's thread meanwhile (the single-process NCCL hang); the engine
// synchronises after collectives in steps that may allocate.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/parallel/communicator.h"
#include "kernels/nccl/one_shot_all_reduce.h"

namespace gka::kernels::nccl {

// ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES), kept opaque so this header needs no nccl.h.
using NcclUniqueId = std::array<char, 128>;

// A fresh id for one communicator group. Unavailable when NCCL cannot start its bootstrap.
absl::StatusOr<NcclUniqueId> NewNcclUniqueId();

// Rank `rank` of `world_size` on CUDA device `device`; blocks until every rank has called it
// with the same id. InvalidArgument for a bad rank/size/device.
absl::StatusOr<std::unique_ptr<parallel::Communicator>> CreateNcclCommunicator(
    const NcclUniqueId& id, int world_size, int rank, int device);

struct NcclGroupOptions {
  // All-reduces of at most this many bytes (F32/BF16, 16-byte aligned whole vectors) run as
  // one kernel that reads the peers' partials over NVLink/P2P (one_shot_all_reduce.h) instead
  // of NCCL, summed in fp32 in rank order: the result is then bitwise the CPU in-process
  // group's. Used only when every pair of devices has peer access. 0, or the environment
  // variable GKA_ONESHOT_ALLREDUCE=0: NCCL for every size.
  int64_t one_shot_max_bytes = int64_t{4} << 20;
  // Of those, messages of at least this many bytes run the two-shot kernel (reduce-scatter +
  // all-gather over P2P, same sums and bits; one_shot_all_reduce.h). The environment variable
  // GKA_TWO_SHOT_MIN_BYTES overrides it (a huge value: never two-shot).
  int64_t two_shot_min_bytes = OneShotGroup::kDefaultTwoShotMinBytes;
};

// One communicator per listed device (rank r on devices[r]), created together from this
// thread (ncclCommInitAll); hand communicator r to the thread that runs rank r.
// InvalidArgument for an empty list, a repeated device or a device that does not exist.
absl::StatusOr<std::vector<std::unique_ptr<parallel::Communicator>>> CreateNcclGroup(
    const std::vector<int>& devices, const NcclGroupOptions& options = {});

// The NCCL library's version as major*10000 + minor*100 + patch (e.g. 22809), read at run
// time (the loaded libnccl.so.2, not the headers this was built with).
absl::StatusOr<int> NcclRuntimeVersion();

}  // namespace gka::kernels::nccl
