// Deterministic test data for transfer tests: 8-byte words of splitmix64(seed + word index),
// so any misplaced or missing page shows up as a mismatch at a known offset.
#pragma once

#include <cstdint>
#include <cstring>

namespace gka::transfer {

inline uint64_t PatternWord(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + index + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// `length` must be a multiple of 8.
inline void FillPattern(uint64_t seed, uint8_t* data, uint64_t length) {
  for (uint64_t i = 0; i < length / 8; ++i) {
    const uint64_t w = PatternWord(seed, i);
    std::memcpy(data + 8 * i, &w, 8);
  }
}

// Offset (from `data`) of the first 8-byte word of data[0, length) that differs from the
// pattern's bytes [first, first + length), or -1. `first` and `length` are multiples of 8.
inline int64_t FirstMismatch(uint64_t seed, const uint8_t* data, uint64_t first, uint64_t length) {
  for (uint64_t i = 0; i < length / 8; ++i) {
    const uint64_t w = PatternWord(seed, first / 8 + i);
    if (std::memcmp(data + 8 * i, &w, 8) != 0) return static_cast<int64_t>(8 * i);
  }
  return -1;
}

}  // namespace gka::transfer
