// The CPU reference implementation of every op: plain, fp32, exact to the spec's formulas.
// One op (or one small family) per .cc file. No BLAS: OpenBLAS results depend on the batch
// size (gemm.cc), and every op here must be batch invariant.
// These are the definitions the CUDA kernels are checked against.
#pragma once

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/api/attention.h"
#include "kernels/api/conv.h"
#include "kernels/api/copy_checksum.h"
#include "kernels/api/elementwise.h"
#include "kernels/api/gemm.h"
#include "kernels/api/gka.h"
#include "kernels/api/norm.h"
#include "kernels/api/sampling.h"

namespace gka::kernels::cpu {

absl::Status Gemm(const GemmParams& p);                      // gemm.cc
absl::Status Embedding(const EmbeddingParams& p);            // elementwise.cc
absl::Status SiluMul(const SiluMulParams& p);                // elementwise.cc
absl::Status Add(const AddParams& p);                        // elementwise.cc
absl::Status RmsNorm(const RmsNormParams& p);                // norm.cc
absl::Status QkNormRope(const QkNormRopeParams& p);          // norm.cc
absl::Status GatedRmsNorm(const GatedRmsNormParams& p);      // norm.cc
absl::Status KvCacheWrite(const KvCacheWriteParams& p);      // attention.cc
absl::Status PagedAttention(const PagedAttentionParams& p);  // attention.cc
absl::Status CausalConv(const CausalConvParams& p);          // conv.cc
absl::Status GkaGates(const GkaGatesParams& p);              // gka.cc
absl::Status GkaCore(const GkaCoreParams& p);                // gka.cc
absl::Status Sample(const SampleParams& p);                  // sampling.cc
// Copies each range (unless its dst is null) and returns Σ of its poly61 contributions mod P
// (not finalized: sums of several calls add mod P).
uint64_t CopyChecksum(absl::Span<const CopyChecksumRange> ranges);  // copy_checksum.cc

}  // namespace gka::kernels::cpu
