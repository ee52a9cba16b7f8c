// Device-side random fill for benchmark inputs: multi-GiB KV caches and GKA states are
// generated in place instead of on the host and copied (seconds of device time saved per run).
#include <cuda_bf16.h>

#include <cstdint>

#include "tests/perf/gpu/bench_random.h"

namespace gka::gpu_testing {
namespace {

// Uniform on [mean - scale·√3, mean + scale·√3): variance scale², never zero-filled data
// (zeros can time faster than real data).
__global__ void RandomFillKernel(void* p, int64_t n, bool bf16, uint64_t seed, float scale,
                                 float mean) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    uint64_t x = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(i + 1);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    const float v =
        mean + scale * (static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f) * 3.4641016f;
    if (bf16) {
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    } else {
      static_cast<float*>(p)[i] = v;
    }
  }
}

}  // namespace

cudaError_t RandomFillDevice(void* p, int64_t n, bool bf16, uint64_t seed, float scale, float mean,
                             cudaStream_t stream) {
  RandomFillKernel<<<1024, 256, 0, stream>>>(p, n, bf16, seed, scale, mean);
  return cudaGetLastError();
}

}  // namespace gka::gpu_testing
