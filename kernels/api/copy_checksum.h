// Copy + checksum: the staging copy of a transfer (device → pinned host on the sender, pinned
// host → device on the receiver) with the transfer checksum computed in the same pass, so
// integrity costs no extra read of host memory.
//
// The checksum ("poly61", the device-memory transfer checksum; common/transfer/checksum.h has
// the host one, XXH3): XXH3 is a sequential stream over 1 KiB blocks and cannot be split over
// thousands of GPU threads, so device transfers use a polynomial hash over the same stream:
//   S     = the written bytes concatenated in target-address order (as XXH3's definition),
//   w_j   = the little-endian uint32 of S[4j .. 4j+3] (zero-padded past the end), j ≥ 0,
//   sum   = Σ_j w_j · K^(j+1)  mod P,   P = 2^61 − 1 (prime), K = kPoly61Key,
//   value = Poly61Finalize(sum, |S|)    (splitmix64 of sum ^ |S|·φ: the length counts too).
// The sum is linear in the bytes — byte b at stream position s adds b · 256^(s mod 4) ·
// K^(⌊s/4⌋+1) — so any split of S into ranges, hashed in any order by any number of threads
// and added mod P, gives the same value: the sender's segmentation (one range per page, merged
// runs, one launch per layer) never changes it. Two different streams of n words collide for a
// fixed K with probability ≤ n/P for random errors (≈ 2^-34 for a 16 GiB transfer); it is an
// integrity check against torn, misplaced or stale bytes, not a MAC.
//
// CPU reference: kernels/cpu/copy_checksum.cc; CUDA: kernels/cuda/copy_checksum.cu; parity:
// tests/gpu/copy_checksum_test.cc. Header usable from .cu files (GKA_HD functions).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GKA_POLY61_HD __host__ __device__ __forceinline__
#else
#define GKA_POLY61_HD inline
#endif

namespace gka::kernels {

inline constexpr uint64_t kPoly61Prime = (uint64_t{1} << 61) - 1;
// Any fixed K in [2, P) works; these are the fractional bits of √2, reduced below P.
inline constexpr uint64_t kPoly61Key = 0x16A09E667F3BCC91ull;
static_assert(kPoly61Key < kPoly61Prime);

GKA_POLY61_HD uint64_t AddMod61(uint64_t a, uint64_t b) {
  uint64_t r = a + b;  // a, b < 2^61: no overflow
  return r >= kPoly61Prime ? r - kPoly61Prime : r;
}

// a · b mod P for a, b < P: the 122-bit product folds as hi·2^61 + lo ≡ hi + lo.
GKA_POLY61_HD uint64_t MulMod61(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  const uint64_t lo = a * b;
  const uint64_t hi = __umul64hi(a, b);
#else
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  const uint64_t lo = static_cast<uint64_t>(p);
  const uint64_t hi = static_cast<uint64_t>(p >> 64);
#endif
  const uint64_t r = (lo & kPoly61Prime) + ((lo >> 61) | (hi << 3));
  return r >= kPoly61Prime ? r - kPoly61Prime : r;
}

GKA_POLY61_HD uint64_t PowMod61(uint64_t base, uint64_t e) {
  uint64_t r = 1;
  while (e != 0) {
    if (e & 1) r = MulMod61(r, base);
    base = MulMod61(base, base);
    e >>= 1;
  }
  return r;
}

// The weight of stream word j: K^(j+1).
GKA_POLY61_HD uint64_t Poly61WordWeight(uint64_t j) { return PowMod61(kPoly61Key, j + 1); }

// A kernel accumulates its sum as two 64-bit halves (low and high 32 bits of each block's
// partial sum, added with plain atomics that cannot overflow below 2^32 blocks); this folds
// them back into a sum mod P.
GKA_POLY61_HD uint64_t Poly61FromHalves(uint64_t low_halves, uint64_t high_halves) {
  const uint64_t hi = MulMod61(high_halves % kPoly61Prime, uint64_t{1} << 32);
  return AddMod61(low_halves % kPoly61Prime, hi);
}

inline uint64_t Poly61Finalize(uint64_t sum, uint64_t total_bytes) {
  uint64_t x = sum ^ (total_bytes * 0x9E3779B97F4A7C15ull);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One contiguous piece of a transfer: `bytes` from `src` (copied to `dst` unless dst is null:
// checksum only), whose first byte sits at `stream_offset` in S. Memory spaces: host for the
// CPU reference; for CUDA anything the device can address (device memory, mapped pinned host
// memory, UVA).
struct CopyChecksumRange {
  const void* src = nullptr;
  void* dst = nullptr;
  uint64_t bytes = 0;
  uint64_t stream_offset = 0;
};

}  // namespace gka::kernels
