// The CUDA StageCopier: pinned, device-mapped host staging buffers, one non-blocking copy
// stream (separate from the engine's compute stream, so staging overlaps compute), and the
// copy + poly61 kernel (kernels/cuda/copy_checksum.h) for every job.
//
// Owns the stream, a pool of accumulator slots (16 bytes of device memory and 16 of pinned
// host memory each) and every buffer it hands out. Private to common/transfer/staging: reach
// it through MakeStageCopier. CUDA headers stay in the .cc.
//
// Thread-safety: thread-safe; jobs from several threads share the stream and run in the
// order they were started.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/transfer/staging/staging.h"

namespace gka::transfer::staging {

// UNAVAILABLE without a GPU; the CUDA error otherwise.
absl::StatusOr<std::unique_ptr<StageCopier>> MakeCudaStageCopier(int ordinal);

}  // namespace gka::transfer::staging
