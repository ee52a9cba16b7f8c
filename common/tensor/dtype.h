// Element types and the scalar conversions the CPU side needs (bf16/f16 <-> f32).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::tensor {

enum class DType : uint8_t { kF32, kBF16, kF16, kI64, kI32, kU8 };

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF16:
      return 2;
    case DType::kI64:
      return 8;
    case DType::kI32:
      return 4;
    case DType::kU8:
      return 1;
  }
  return 0;
}

// Names as safetensors writes them ("F32", "BF16", ...).
absl::string_view DTypeName(DType t);
absl::StatusOr<DType> DTypeFromName(absl::string_view name);

// bf16 is the top half of an f32; rounding to nearest even, NaN kept quiet.
inline float BF16ToFloat(uint16_t h) { return std::bit_cast<float>(uint32_t{h} << 16); }
inline uint16_t FloatToBF16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float F16ToFloat(uint16_t h);
uint16_t FloatToF16(float f);

// Converts n elements of `src` (dtype `from`, floating) to f32.
void ConvertToF32(const void* src, DType from, size_t n, float* dst);

}  // namespace gka::tensor
