// Device-side random fill for benchmark inputs (bench_random.cu).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gka::gpu_testing {

// n elements of F32 (bf16 = false) or BF16 at p, uniform with the given mean and std.
cudaError_t RandomFillDevice(void* p, int64_t n, bool bf16, uint64_t seed, float scale, float mean,
                             cudaStream_t stream);

}  // namespace gka::gpu_testing
