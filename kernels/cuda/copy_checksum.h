// The CUDA copy + poly61 checksum (kernels/api/copy_checksum.h): the staging copy of a
// transfer and its checksum in one pass over the bytes, on a caller's stream (the transfer's
// copy stream, not the backend's compute stream).
//
// Public (no CUDA headers: the stream travels as void*), used by common/transfer/staging.
//
//   // acc: 2 × uint64 of device memory, zeroed; ranges on the host.
//   GKA_RETURN_IF_ERROR(CopyChecksumAsync(ranges, acc, stream));
//   ... cudaMemcpyAsync(host, acc, 16, ..., stream); sync;
//   uint64_t sum = Poly61FromHalves(host[0], host[1]);
//
// Roofline: reads and writes every byte once (2·bytes over the slower of the two memories —
// the host link when one side is pinned host memory); 5 mod-P multiplications per 16 bytes,
// far below the integer rate at PCIe or even HBM bandwidth.
//
// Thread-safety: reentrant; calls on one stream run in order.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/api/copy_checksum.h"

namespace gka::kernels::cuda {

// Enqueues the copies and adds the ranges' poly61 sums into device_acc[0..1] (the low and
// high 32-bit halves of each block's partial sum; fold with Poly61FromHalves). Ranges may be
// any size and alignment (misaligned ones take a slower byte path). `stream` is a
// cudaStream_t of the current device. INVALID_ARGUMENT for a null source or accumulator;
// INTERNAL when a launch fails.
absl::Status CopyChecksumAsync(absl::Span<const CopyChecksumRange> ranges, uint64_t* device_acc,
                               void* stream);

}  // namespace gka::kernels::cuda
