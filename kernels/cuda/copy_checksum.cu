// Copy + poly61 checksum in one pass (kernels/api/copy_checksum.h has the definition).
//
// Work split: the host cuts every range into tiles of at most kTileBytes and gives each its
// stream weight K^(⌊s0/4⌋+1) (consecutive ranges reuse the previous weight: one power per
// distinct gap, not one per page); one block per tile, tiles passed by value in the launch's
// parameters (up to kMaxTilesPerLaunch per launch, so no device-side tile table to manage).
// Fast path (tile 16-byte aligned on both sides, stream offset word-aligned): coalesced uint4
// loads and stores, the four words folded by Horner (3 mulmods) and weighted (1), the weight
// stepped by K^(4·blockDim) (1). Anything else takes a byte path with one power per byte —
// correct for any alignment, and only hit by odd-sized pieces (never by KV pages or states).
// Block sums reduce mod P and are added to the accumulator as 32-bit halves (plain 64-bit
// atomics, no overflow below 2^32 blocks).
//
// Roofline: 2 × bytes moved; on a device→pinned or pinned→device copy the host link bounds it
// (the loads or the stores cross PCIe as zero-copy traffic).
#include <cuda_runtime.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/copy_checksum.h"
#include "kernels/cuda/cuda_status.h"

namespace gka::kernels::cuda {
namespace {

constexpr uint64_t kTileBytes = 256 * 1024;
constexpr int kThreads = 256;

struct Tile {
  const uint8_t* src;
  uint8_t* dst;     // null: checksum only
  uint64_t weight;  // K^(⌊s0/4⌋ + 1), s0 = the tile's first stream position
  uint32_t bytes;
  uint32_t lead;  // s0 mod 4
};

// 30 KiB of tiles: within the 32 KiB kernel-parameter limit of CUDA ≥ 12.1 on Volta+.
constexpr int kMaxTilesPerLaunch = 950;
struct TileBatch {
  Tile tiles[kMaxTilesPerLaunch];
};
static_assert(sizeof(TileBatch) <= 32000);

__device__ __forceinline__ uint64_t WarpSumMod61(uint64_t v) {
  for (int off = 16; off > 0; off >>= 1) v = AddMod61(v, __shfl_down_sync(0xffffffffu, v, off));
  return v;
}

__global__ void __launch_bounds__(kThreads)
    CopyChecksumKernel(const __grid_constant__ TileBatch batch, unsigned long long* acc) {
  const Tile& tile = batch.tiles[blockIdx.x];
  uint64_t sum = 0;
  const bool fast =
      tile.lead == 0 && (tile.bytes % 16) == 0 &&
      ((reinterpret_cast<uintptr_t>(tile.src) | reinterpret_cast<uintptr_t>(tile.dst)) % 16) == 0;
  if (fast) {
    const uint64_t k4 = PowMod61(kPoly61Key, 4);
    uint64_t weight = MulMod61(tile.weight, PowMod61(k4, threadIdx.x));
    const uint64_t step = PowMod61(k4, blockDim.x);
    const uint4* src = reinterpret_cast<const uint4*>(tile.src);
    uint4* dst = reinterpret_cast<uint4*>(tile.dst);
    const uint32_t n = tile.bytes / 16;
    for (uint32_t v = threadIdx.x; v < n; v += blockDim.x) {
      const uint4 x = src[v];
      if (dst != nullptr) dst[v] = x;
      uint64_t h = x.w;
      h = AddMod61(MulMod61(h, kPoly61Key), x.z);
      h = AddMod61(MulMod61(h, kPoly61Key), x.y);
      h = AddMod61(MulMod61(h, kPoly61Key), x.x);
      sum = AddMod61(sum, MulMod61(h, weight));
      weight = MulMod61(weight, step);
    }
  } else {
    for (uint32_t i = threadIdx.x; i < tile.bytes; i += blockDim.x) {
      const uint8_t b = tile.src[i];
      if (tile.dst != nullptr) tile.dst[i] = b;
      const uint32_t pos = tile.lead + i;
      const uint64_t v = static_cast<uint64_t>(b) << (8 * (pos % 4));
      sum = AddMod61(sum, MulMod61(v, MulMod61(tile.weight, PowMod61(kPoly61Key, pos / 4))));
    }
  }
  __shared__ uint64_t warp_sums[kThreads / 32];
  sum = WarpSumMod61(sum);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0;
    sum = WarpSumMod61(sum);
    if (threadIdx.x == 0 && sum != 0) {
      atomicAdd(&acc[0], static_cast<unsigned long long>(sum & 0xffffffffu));
      atomicAdd(&acc[1], static_cast<unsigned long long>(sum >> 32));
    }
  }
}

// K^(j+1) for a rising sequence of word indices, one power per distinct gap.
class WeightCursor {
 public:
  uint64_t At(uint64_t j) {
    if (!valid_ || j < j_) {
      weight_ = Poly61WordWeight(j);
    } else if (j != j_) {
      const uint64_t gap = j - j_;
      if (gap != gap_) {
        gap_ = gap;
        gap_pow_ = PowMod61(kPoly61Key, gap);
      }
      weight_ = MulMod61(weight_, gap_pow_);
    }
    j_ = j;
    valid_ = true;
    return weight_;
  }

 private:
  bool valid_ = false;
  uint64_t j_ = 0, weight_ = 0, gap_ = 0, gap_pow_ = 1;
};

}  // namespace

absl::Status CopyChecksumAsync(absl::Span<const CopyChecksumRange> ranges, uint64_t* device_acc,
                               void* stream) {
  if (device_acc == nullptr) return absl::InvalidArgumentError("CopyChecksum: null accumulator");
  auto s = static_cast<cudaStream_t>(stream);
  // Host-side batches are large (30 KiB); one reused buffer per thread keeps them off the
  // stack.
  thread_local std::vector<TileBatch> storage(1);
  TileBatch& batch = storage[0];
  int count = 0;
  auto launch = [&]() -> absl::Status {
    if (count == 0) return absl::OkStatus();
    CopyChecksumKernel<<<count, kThreads, 0, s>>>(
        batch, reinterpret_cast<unsigned long long*>(device_acc));
    count = 0;
    return CudaStatus(cudaGetLastError(), "CopyChecksumKernel");
  };
  WeightCursor cursor;
  for (size_t r = 0; r < ranges.size(); ++r) {
    const CopyChecksumRange& range = ranges[r];
    if (range.bytes == 0) continue;
    if (range.src == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("CopyChecksum: range ", r, " has no source"));
    }
    for (uint64_t off = 0; off < range.bytes; off += kTileBytes) {
      const uint64_t s0 = range.stream_offset + off;
      Tile& t = batch.tiles[count];
      t.src = static_cast<const uint8_t*>(range.src) + off;
      t.dst = range.dst == nullptr ? nullptr : static_cast<uint8_t*>(range.dst) + off;
      t.bytes = static_cast<uint32_t>(std::min(kTileBytes, range.bytes - off));
      t.lead = static_cast<uint32_t>(s0 % 4);
      t.weight = cursor.At(s0 / 4);
      if (++count == kMaxTilesPerLaunch) {
        if (absl::Status st = launch(); !st.ok()) return st;
      }
    }
  }
  return launch();
}

}  // namespace gka::kernels::cuda
