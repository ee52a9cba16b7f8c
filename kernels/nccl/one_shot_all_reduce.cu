// The one-shot and two-shot all-reduce kernels and their set-up (see one_shot_all_reduce.h for
// the protocol).
//
// Roofline, per rank, for a message of S bytes over N ranks: S read + S written locally for the
// copy into staging, (N − 1)·S read over NVLink, S read + S written for the sum; at N = 4 and
// S = 1 MiB (batch 101 × hidden 5120 bf16) the NVLink reads dominate: 3 MiB at ~400 GB/s
// ≈ 8 µs, plus one flag round trip (~2 µs) — against ~23 µs for NCCL's ring (issue 5's
// breakdown). No FLOPs to speak of (N − 1 adds per element). Two-shot: (N − 1)/N·S staged
// locally, 2·(N − 1)/N·S read over NVLink (1.5 MiB at N = 4, S = 1 MiB), two flag round trips.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/nccl/one_shot_all_reduce.h"

namespace gka::kernels::nccl {
namespace {

using tensor::DType;

constexpr int kMaxBlocks = 64;
constexpr int kThreads = 512;
// Per-rank allocation: [counter: kMaxBlocks u32][flags: kMaxBlocks × kMaxRanks u32][flags2:
// the same, the two-shot's second phase], padded to kHeaderBytes, then the two staging buffers.
constexpr int64_t kFlagsOffset = kMaxBlocks * 4;
constexpr int64_t kFlags2Offset = kFlagsOffset + kMaxBlocks * OneShotGroup::kMaxRanks * 4;
constexpr int64_t kHeaderBytes = 8192;
static_assert(kFlags2Offset + kMaxBlocks * OneShotGroup::kMaxRanks * 4 <= kHeaderBytes);

absl::Status CudaStatus(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, ": ", cudaGetErrorString(e)));
}

struct Params {
  uint4* data;   // [nvec] this rank's partial in, the sum out
  int64_t nvec;  // 16-byte vectors in the message
  int world;
  int rank;
  int64_t parity_vecs;                        // one staging buffer, in vectors
  uint4* staging[OneShotGroup::kMaxRanks];    // each rank's two staging buffers
  uint32_t* flags[OneShotGroup::kMaxRanks];   // each rank's flags [kMaxBlocks][kMaxRanks]
  uint32_t* flags2[OneShotGroup::kMaxRanks];  // each rank's second-phase flags (two-shot)
  uint32_t* counter;                          // this rank's [kMaxBlocks] calls so far, per block
};

__device__ __forceinline__ void StoreRelease(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t LoadAcquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// 16 bytes as 16 / sizeof(T) floats, and back (round to nearest even for bf16, as the CPU's
// FloatToBF16).
template <typename T>
struct VecOps;
template <>
struct VecOps<float> {
  static constexpr int kElems = 4;
  __device__ static void Add(float* acc, const uint4& v) {
    acc[0] += __uint_as_float(v.x);
    acc[1] += __uint_as_float(v.y);
    acc[2] += __uint_as_float(v.z);
    acc[3] += __uint_as_float(v.w);
  }
  __device__ static uint4 Pack(const float* acc) {
    return make_uint4(__float_as_uint(acc[0]), __float_as_uint(acc[1]), __float_as_uint(acc[2]),
                      __float_as_uint(acc[3]));
  }
};
template <>
struct VecOps<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ static void Add(float* acc, const uint4& v) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // bf16 → f32 is exact: the bf16 bits are the high half of the float.
      acc[2 * i] += __uint_as_float(w[i] << 16);
      acc[2 * i + 1] += __uint_as_float(w[i] & 0xffff0000u);
    }
  }
  __device__ static uint4 Pack(const float* acc) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(acc[2 * i], acc[2 * i + 1]);
      w[i] = *reinterpret_cast<const uint32_t*>(&h);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
};

// Block b's view of this call: its epoch (the per-block call count, kept in device memory so
// graph replays count too), the staging parity's offset, and its grid-stride walk.
struct CallSlot {
  uint32_t epoch;
  int64_t off;     // vectors: the staging buffer of this call's parity
  int64_t first;   // this thread's first vector of the walk
  int64_t stride;  // vectors between its steps
};
__device__ __forceinline__ CallSlot BeginCall(const Params& p) {
  __shared__ uint32_t epoch_s;
  if (threadIdx.x == 0) epoch_s = p.counter[blockIdx.x] + 1;
  __syncthreads();
  const uint32_t epoch = epoch_s;
  return {epoch, static_cast<int64_t>(epoch & 1) * p.parity_vecs,
          static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x,
          static_cast<int64_t>(gridDim.x) * kThreads};
}

// Block b tells every rank (itself too) that its part of this call's phase is done, then waits
// until every rank's block b has said the same. Called by the whole block.
__device__ __forceinline__ void SignalAndWait(uint32_t* const* flags, int world, int rank, int b,
                                              uint32_t epoch) {
  __syncthreads();  // the block's stores happen before the release below
  if (threadIdx.x < world) {
    const int q = threadIdx.x;
    StoreRelease(flags[q] + b * OneShotGroup::kMaxRanks + rank, epoch);
    const uint32_t* f = flags[rank] + b * OneShotGroup::kMaxRanks + q;
    // Signed distance: a peer may already be one call ahead, and the counter may wrap.
    while (static_cast<int32_t>(LoadAcquire(f) - epoch) < 0) {
    }
  }
  __syncthreads();  // every thread's reads after this happen after the acquires
}

// Element i summed over the ranks in rank order 0..N-1 in fp32, rounded once: rank `rank`'s
// own partial from `mine`, the others from their staging (ld.cg: another GPU wrote it). All
// loads first (up to kMaxRanks in flight per thread).
template <typename T>
__device__ __forceinline__ uint4 SumInRankOrder(const Params& p, uint4 mine, int64_t off,
                                                int64_t i) {
  using Ops = VecOps<T>;
  uint4 v[OneShotGroup::kMaxRanks];
#pragma unroll
  for (int q = 0; q < OneShotGroup::kMaxRanks; ++q) {
    if (q < p.world) v[q] = q == p.rank ? mine : __ldcg(p.staging[q] + off + i);
  }
  float acc[Ops::kElems];
#pragma unroll
  for (int e = 0; e < Ops::kElems; ++e) acc[e] = 0.0f;
#pragma unroll
  for (int q = 0; q < OneShotGroup::kMaxRanks; ++q) {
    if (q < p.world) Ops::Add(acc, v[q]);
  }
  return Ops::Pack(acc);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    OneShotAllReduceKernel(const __grid_constant__ Params p) {
  const CallSlot c = BeginCall(p);
  // 1. My partial into my staging buffer of this parity (the peers read it from there).
  uint4* mine = p.staging[p.rank] + c.off;
  for (int64_t i = c.first; i < p.nvec; i += c.stride) mine[i] = p.data[i];
  // 2. Tell every rank that this block's slice is staged, then wait for theirs.
  SignalAndWait(p.flags, p.world, p.rank, blockIdx.x, c.epoch);
  // 3. Sum in fp32 in rank order.
  for (int64_t i = c.first; i < p.nvec; i += c.stride) {
    p.data[i] = SumInRankOrder<T>(p, p.data[i], c.off, i);
  }
  if (threadIdx.x == 0) p.counter[blockIdx.x] = c.epoch;
}

// The two-shot variant: each rank reduces only its 1/N segment of the message (reading that
// segment from every peer), publishes the sums in its own staging buffer, and then gathers the
// other N − 1 segments' sums from their owners. NVLink reads per rank: 2·(N − 1)/N·S instead of
// the one-shot's (N − 1)·S (at N = 4: 1.5·S vs 3·S), for one more flag round trip. Same
// arithmetic (SumInRankOrder), so the bits equal the one-shot's and the CPU reference's.
// Element ownership: segment s = vectors [s·seg, min((s+1)·seg, nvec)); within a segment,
// block b handles the same grid-stride walk on every rank, so block b's flags cover exactly the
// elements block b of every rank reads next.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    TwoShotAllReduceKernel(const __grid_constant__ Params p) {
  const CallSlot c = BeginCall(p);
  const int64_t seg = (p.nvec + p.world - 1) / p.world;
  uint4* mine = p.staging[p.rank] + c.off;

  // 1. Stage the segments the peers reduce (my own segment stays in data).
  for (int s = 0; s < p.world; ++s) {
    if (s == p.rank) continue;
    const int64_t begin = s * seg, end = min(p.nvec, begin + seg);
    for (int64_t i = begin + c.first; i < end; i += c.stride) mine[i] = p.data[i];
  }
  SignalAndWait(p.flags, p.world, p.rank, blockIdx.x, c.epoch);

  // 2. Reduce my segment; the sums go to data and to my staging (where the peers gather them).
  {
    const int64_t begin = p.rank * seg, end = min(p.nvec, begin + seg);
    for (int64_t i = begin + c.first; i < end; i += c.stride) {
      const uint4 sum = SumInRankOrder<T>(p, p.data[i], c.off, i);
      p.data[i] = sum;
      mine[i] = sum;
    }
  }
  SignalAndWait(p.flags2, p.world, p.rank, blockIdx.x, c.epoch);

  // 3. Gather the other segments' sums from their owners.
  for (int s = 0; s < p.world; ++s) {
    if (s == p.rank) continue;
    const int64_t begin = s * seg, end = min(p.nvec, begin + seg);
    for (int64_t i = begin + c.first; i < end; i += c.stride) {
      p.data[i] = __ldcg(p.staging[s] + c.off + i);
    }
  }
  if (threadIdx.x == 0) p.counter[blockIdx.x] = c.epoch;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OneShotGroup>> OneShotGroup::Create(const std::vector<int>& devices,
                                                                   int64_t capacity_bytes,
                                                                   int64_t two_shot_min_bytes) {
  const int n = static_cast<int>(devices.size());
  if (n < 2 || n > kMaxRanks) {
    return absl::InvalidArgumentError(
        absl::StrCat("one-shot all-reduce: 2 to ", kMaxRanks, " devices, not ", n));
  }
  if (capacity_bytes <= 0 || capacity_bytes % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("one-shot all-reduce: capacity must be a positive multiple of 16 bytes, not ",
                     capacity_bytes));
  }
  int blocks = kMaxBlocks;
  for (int i = 0; i < n; ++i) {
    int sms = 0;
    GKA_RETURN_IF_ERROR(
        CudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, devices[i]),
                   "cudaDeviceGetAttribute"));
    blocks = std::min(blocks, sms);
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      int can = 0;
      GKA_RETURN_IF_ERROR(CudaStatus(cudaDeviceCanAccessPeer(&can, devices[i], devices[j]),
                                     "cudaDeviceCanAccessPeer"));
      if (!can) {
        return absl::FailedPreconditionError(absl::StrCat(
            "one-shot all-reduce: device ", devices[i], " cannot access device ", devices[j]));
      }
    }
  }
  int current = 0;
  GKA_RETURN_IF_ERROR(CudaStatus(cudaGetDevice(&current), "cudaGetDevice"));
  absl::Cleanup restore = [current] { cudaSetDevice(current); };
  std::unique_ptr<OneShotGroup> g(
      new OneShotGroup(devices, capacity_bytes, std::max<int64_t>(0, two_shot_min_bytes), blocks));
  for (int i = 0; i < n; ++i) {
    GKA_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(devices[i]), "cudaSetDevice"));
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const cudaError_t e = cudaDeviceEnablePeerAccess(devices[j], 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) {
        cudaGetLastError();  // NCCL (or an earlier group) enabled it: fine
      } else {
        GKA_RETURN_IF_ERROR(CudaStatus(e, "cudaDeviceEnablePeerAccess"));
      }
    }
    void* mem = nullptr;
    const size_t bytes = kHeaderBytes + 2 * static_cast<size_t>(capacity_bytes);
    GKA_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&mem, bytes), "cudaMalloc"));
    g->memory_.push_back(mem);  // freed by ~OneShotGroup, also on a later error
    GKA_RETURN_IF_ERROR(CudaStatus(cudaMemset(mem, 0, bytes), "cudaMemset"));
    GKA_RETURN_IF_ERROR(CudaStatus(cudaDeviceSynchronize(), "cudaDeviceSynchronize"));
  }
  return g;
}

OneShotGroup::~OneShotGroup() {
  int current = 0;
  cudaGetDevice(&current);
  for (size_t i = 0; i < memory_.size(); ++i) {
    cudaSetDevice(devices_[i]);
    cudaFree(memory_[i]);  // waits for this device's work; errors cannot be reported here
  }
  cudaSetDevice(current);
}

bool OneShotGroup::Fits(const void* ptr, int64_t numel, DType dtype) const {
  if (dtype != DType::kF32 && dtype != DType::kBF16) return false;
  const int64_t bytes = numel * (dtype == DType::kF32 ? 4 : 2);
  return bytes > 0 && bytes <= capacity_ && bytes % 16 == 0 &&
         reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

bool OneShotGroup::UsesTwoShot(int64_t numel, DType dtype) const {
  const int64_t bytes = numel * (dtype == DType::kF32 ? 4 : 2);
  return bytes >= two_shot_min_ && bytes / 16 >= world_size();
}

absl::Status OneShotGroup::AllReduceSum(int rank, void* data, int64_t numel, DType dtype,
                                        void* stream) {
  if (rank < 0 || rank >= world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("one-shot all-reduce: no rank ", rank));
  }
  if (!Fits(data, numel, dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "one-shot all-reduce: ", numel, " elements of ", tensor::DTypeName(dtype),
        " do not fit (F32/BF16, 16-byte aligned whole vectors, at most ", capacity_, " bytes)"));
  }
  Params p{};
  p.data = static_cast<uint4*>(data);
  p.nvec = numel * (dtype == DType::kF32 ? 4 : 2) / 16;
  p.world = world_size();
  p.rank = rank;
  p.parity_vecs = capacity_ / 16;
  for (int q = 0; q < world_size(); ++q) {
    char* base = static_cast<char*>(memory_[q]);
    p.flags[q] = reinterpret_cast<uint32_t*>(base + kFlagsOffset);
    p.flags2[q] = reinterpret_cast<uint32_t*>(base + kFlags2Offset);
    p.staging[q] = reinterpret_cast<uint4*>(base + kHeaderBytes);
  }
  p.counter = static_cast<uint32_t*>(memory_[rank]);
  auto s = static_cast<cudaStream_t>(stream);
  const bool two_shot = UsesTwoShot(numel, dtype);
  if (dtype == DType::kF32) {
    (two_shot ? TwoShotAllReduceKernel<float>
              : OneShotAllReduceKernel<float>)<<<blocks_, kThreads, 0, s>>>(p);
  } else {
    (two_shot ? TwoShotAllReduceKernel<__nv_bfloat16>
              : OneShotAllReduceKernel<__nv_bfloat16>)<<<blocks_, kThreads, 0, s>>>(p);
  }
  return CudaStatus(cudaGetLastError(), "one-shot all-reduce launch");
}

}  // namespace gka::kernels::nccl
