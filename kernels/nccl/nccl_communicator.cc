#include "kernels/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/base/status.h"
#include "kernels/nccl/one_shot_all_reduce.h"

namespace gka::kernels::nccl {
namespace {

using tensor::DType;
using tensor::TensorView;

static_assert(sizeof(ncclUniqueId) == sizeof(NcclUniqueId), "NCCL_UNIQUE_ID_BYTES changed");

// ncclResult_t → Status. Usage errors are ours (InvalidArgument/FailedPrecondition); system
// and remote errors are a peer or the machine (Unavailable); the rest Internal. The message
// carries NCCL's own last-error text, which names the cause (e.g. "peer rank 2 died").
absl::Status NcclStatus(ncclResult_t r, absl::string_view call, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess) return absl::OkStatus();
  const char* last = ncclGetLastError(comm);
  const std::string msg =
      absl::StrCat(call, ": ", ncclGetErrorString(r), " (", static_cast<int>(r), ")",
                   last != nullptr && *last ? absl::StrCat(": ", last) : "");
  switch (r) {
    case ncclInvalidArgument:
      return absl::InvalidArgumentError(msg);
    case ncclInvalidUsage:
      return absl::FailedPreconditionError(msg);
    case ncclSystemError:
    case ncclRemoteError:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status CudaStatus(cudaError_t e, absl::string_view call) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, ": ", cudaGetErrorString(e)));
}

absl::Status CheckDevice(int device) {
  int count = 0;
  GKA_RETURN_IF_ERROR(CudaStatus(cudaGetDeviceCount(&count), "cudaGetDeviceCount"));
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ", device, " does not exist (", count, " visible)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ncclDataType_t> NcclType(DType d) {
  switch (d) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("NCCL collectives take F32, BF16, F16 or I32, not ", tensor::DTypeName(d)));
  }
}

absl::Status CheckDeviceTensor(const TensorView& t, const char* what) {
  if (t.device != tensor::Device::kCuda) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the NCCL communicator takes device memory (got a host tensor)"));
  }
  if (t.ptr == nullptr && t.numel() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null tensor"));
  }
  return absl::OkStatus();
}

class NcclCommunicator final : public parallel::Communicator {
 public:
  // `one_shot`: the group's small-message path, or null. Shared by the communicators of one
  // CreateNcclGroup (its co-owners): it holds every rank's staging memory, which the peers read.
  NcclCommunicator(ncclComm_t comm, int rank, int world, int device,
                   std::shared_ptr<OneShotGroup> one_shot = nullptr)
      : comm_(comm), rank_(rank), world_(world), device_(device), one_shot_(std::move(one_shot)) {}
  ~NcclCommunicator() override {
    // Destroy (not Abort): waits for the communicator's enqueued work, then frees its
    // buffers. Errors cannot be reported from here; a broken communicator is already torn down.
    if (comm_ != nullptr) {
      cudaSetDevice(device_);
      ncclCommDestroy(comm_);
    }
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  bool on_device() const override { return true; }

  absl::Status BindStream(void* native_stream) override {
    stream_ = static_cast<cudaStream_t>(native_stream);
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(const TensorView& t) override {
    GKA_RETURN_IF_ERROR(CheckDeviceTensor(t, "AllReduceSum"));
    if (t.dtype != DType::kF32 && t.dtype != DType::kBF16) {
      return absl::InvalidArgumentError("AllReduceSum: F32 or BF16 only");
    }
    GKA_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(t.dtype));
    if (world_ == 1) return absl::OkStatus();
    // Every rank sees the same size, so every rank takes the same path.
    if (one_shot_ != nullptr && one_shot_->Fits(t.ptr, t.numel(), t.dtype)) {
      return one_shot_->AllReduceSum(rank_, t.ptr, t.numel(), t.dtype, stream_);
    }
    return NcclStatus(
        ncclAllReduce(t.ptr, t.ptr, static_cast<size_t>(t.numel()), type, ncclSum, comm_, stream_),
        "ncclAllReduce", comm_);
  }

  absl::Status AllGather(const TensorView& in, const TensorView& out) override {
    GKA_RETURN_IF_ERROR(CheckDeviceTensor(in, "AllGather in"));
    GKA_RETURN_IF_ERROR(CheckDeviceTensor(out, "AllGather out"));
    if (in.dtype != out.dtype) return absl::InvalidArgumentError("AllGather: dtype mismatch");
    if (out.numel() != in.numel() * world_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AllGather: out has ", out.numel(), " elements, need ", world_, " x ", in.numel()));
    }
    GKA_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(in.dtype));
    return NcclStatus(
        ncclAllGather(in.ptr, out.ptr, static_cast<size_t>(in.numel()), type, comm_, stream_),
        "ncclAllGather", comm_);
  }

 private:
  ncclComm_t comm_;
  const int rank_;
  const int world_;
  const int device_;
  cudaStream_t stream_ = nullptr;  // legacy default stream until BindStream
  std::shared_ptr<OneShotGroup> one_shot_;
};

int64_t TwoShotMinBytes(const NcclGroupOptions& options) {
  const char* env = std::getenv("GKA_TWO_SHOT_MIN_BYTES");
  int64_t v = 0;
  if (env != nullptr && absl::SimpleAtoi(env, &v)) return v;
  return options.two_shot_min_bytes;
}

bool OneShotWanted(const NcclGroupOptions& options) {
  const char* env = std::getenv("GKA_ONESHOT_ALLREDUCE");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return options.one_shot_max_bytes > 0;
}

}  // namespace

absl::StatusOr<NcclUniqueId> NewNcclUniqueId() {
  ncclUniqueId id;
  GKA_RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  NcclUniqueId out;
  std::memcpy(out.data(), id.internal, out.size());
  return out;
}

absl::StatusOr<std::unique_ptr<parallel::Communicator>> CreateNcclCommunicator(
    const NcclUniqueId& id, int world_size, int rank, int device) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad NCCL rank ", rank, " of world size ", world_size));
  }
  GKA_RETURN_IF_ERROR(CheckDevice(device));
  GKA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  ncclUniqueId nid;
  std::memcpy(nid.internal, id.data(), id.size());
  ncclComm_t comm = nullptr;
  GKA_RETURN_IF_ERROR(
      NcclStatus(ncclCommInitRank(&comm, world_size, nid, rank), "ncclCommInitRank"));
  return std::unique_ptr<parallel::Communicator>(
      new NcclCommunicator(comm, rank, world_size, device));
}

absl::StatusOr<std::vector<std::unique_ptr<parallel::Communicator>>> CreateNcclGroup(
    const std::vector<int>& devices, const NcclGroupOptions& options) {
  if (devices.empty()) return absl::InvalidArgumentError("CreateNcclGroup: no devices");
  absl::flat_hash_set<int> seen;
  for (int d : devices) {
    GKA_RETURN_IF_ERROR(CheckDevice(d));
    if (!seen.insert(d).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("CreateNcclGroup: device ", d, " listed twice (one rank per GPU)"));
    }
  }
  const int n = static_cast<int>(devices.size());
  // The small-message path first, so that its errors leave no NCCL communicator behind. Shared
  // by the group's communicators (co-owners): it holds the staging memory every rank reads.
  std::shared_ptr<OneShotGroup> one_shot;
  if (n > 1 && n <= OneShotGroup::kMaxRanks && OneShotWanted(options)) {
    absl::StatusOr<std::unique_ptr<OneShotGroup>> g =
        OneShotGroup::Create(devices, std::max<int64_t>(16, options.one_shot_max_bytes / 16 * 16),
                             TwoShotMinBytes(options));
    if (g.ok()) {
      one_shot = std::move(*g);
    } else if (g.status().code() != absl::StatusCode::kFailedPrecondition) {
      return g.status();  // FailedPrecondition: no peer access, NCCL serves every size
    }
  }
  std::vector<ncclComm_t> comms(n, nullptr);
  GKA_RETURN_IF_ERROR(
      NcclStatus(ncclCommInitAll(comms.data(), n, devices.data()), "ncclCommInitAll"));
  std::vector<std::unique_ptr<parallel::Communicator>> out;
  for (int r = 0; r < n; ++r) {
    out.push_back(std::make_unique<NcclCommunicator>(comms[r], r, n, devices[r], one_shot));
  }
  return out;
}

absl::StatusOr<int> NcclRuntimeVersion() {
  int v = 0;
  GKA_RETURN_IF_ERROR(NcclStatus(ncclGetVersion(&v), "ncclGetVersion"));
  return v;
}

}  // namespace gka::kernels::nccl
