// The poly61 copy + checksum reference (kernels/api/copy_checksum.h), written byte-generic so
// that any alignment of a range in the stream is covered; whole aligned words take the fast
// loop. The CUDA kernel must return the same sums bit for bit (exact integer arithmetic).
#include <cstring>

#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

// Σ over one range, its first byte at stream position s0.
uint64_t RangeSum(const uint8_t* p, uint64_t n, uint64_t s0) {
  uint64_t sum = 0;
  uint64_t i = 0;
  // Leading bytes up to the next word boundary of the stream.
  for (; i < n && (s0 + i) % 4 != 0; ++i) {
    const uint64_t s = s0 + i;
    const uint64_t v = static_cast<uint64_t>(p[i]) << (8 * (s % 4));
    sum = AddMod61(sum, MulMod61(v, Poly61WordWeight(s / 4)));
  }
  if (i + 4 <= n) {
    uint64_t weight = Poly61WordWeight((s0 + i) / 4);
    for (; i + 4 <= n; i += 4) {
      uint32_t w;
      std::memcpy(&w, p + i, 4);
      sum = AddMod61(sum, MulMod61(w, weight));
      weight = MulMod61(weight, kPoly61Key);
    }
  }
  for (; i < n; ++i) {
    const uint64_t s = s0 + i;
    const uint64_t v = static_cast<uint64_t>(p[i]) << (8 * (s % 4));
    sum = AddMod61(sum, MulMod61(v, Poly61WordWeight(s / 4)));
  }
  return sum;
}

}  // namespace

uint64_t CopyChecksum(absl::Span<const CopyChecksumRange> ranges) {
  uint64_t sum = 0;
  for (const CopyChecksumRange& r : ranges) {
    if (r.bytes == 0) continue;
    const auto* src = static_cast<const uint8_t*>(r.src);
    sum = AddMod61(sum, RangeSum(src, r.bytes, r.stream_offset));
    if (r.dst != nullptr) std::memcpy(r.dst, src, r.bytes);
  }
  return sum;
}

}  // namespace gka::kernels::cpu
