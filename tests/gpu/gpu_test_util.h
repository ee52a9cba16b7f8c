// Helpers for GPU tests and benchmarks: random host data, uploads in F32 or BF16 (with the
// F32 image of exactly the values the GPU got, for the CPU reference), NaN poisoning, error
// metrics. Header-only; used by tests/gpu and tests/perf/gpu.
//
//   GpuTensor x = UploadRandom(cuda, Shape{64, 5120}, DType::kBF16, rng);   // x.host: F32 copy
//   HostTensor ref = ToCpu(cpu, x);        // same values on the CPU backend
//   Poison(cuda, y);                        // NaN-fill an output before the op
//   ErrorStats e = Compare(Download(cuda, y.view()), ref_out);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor/dtype.h"
#include "common/tensor/tensor.h"
#include "kernels/api/backend.h"

namespace gka::gpu_testing {

using kernels::Backend;
using kernels::DeviceBuffer;
using tensor::DType;
using tensor::Shape;
using tensor::TensorView;

// Rounds through the dtype, so the host copy equals what the device holds.
inline float RoundTo(DType d, float v) {
  return d == DType::kBF16 ? tensor::BF16ToFloat(tensor::FloatToBF16(v)) : v;
}

// A device tensor plus the F32 host image of its contents.
struct GpuTensor {
  DeviceBuffer buf;
  std::vector<float> host;
  TensorView view() const { return buf.view(); }
};

inline void CheckOk(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, std::string(s.message()).c_str());
    std::abort();
  }
}

// Uploads `values` (F32) as dtype `d`; the returned host image is rounded to `d`.
inline GpuTensor Upload(Backend& be, const Shape& shape, DType d, std::vector<float> values) {
  GpuTensor t;
  auto buf = be.Allocate(shape, d);
  CheckOk(buf.status(), "Allocate");
  t.buf = std::move(buf).value();
  for (float& v : values) v = RoundTo(d, v);
  if (d == DType::kF32) {
    CheckOk(be.CopyFromHost(t.buf.view().ptr, values.data(), values.size() * 4), "CopyFromHost");
  } else if (d == DType::kBF16) {
    std::vector<uint16_t> raw(values.size());
    for (size_t i = 0; i < values.size(); ++i) raw[i] = tensor::FloatToBF16(values[i]);
    CheckOk(be.CopyFromHost(t.buf.view().ptr, raw.data(), raw.size() * 2), "CopyFromHost");
  } else {
    std::abort();
  }
  t.host = std::move(values);
  return t;
}

inline std::vector<float> RandomVector(size_t n, std::mt19937_64& rng, float scale = 1.0f,
                                       float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Bulk random data (uniform on [-√3, √3): mean 0, variance 1), ~10× faster than
// normal_distribution, for multi-GB KV caches and states.
inline void FastRandomFill(float* p, size_t n, uint64_t seed) {
  uint64_t z = seed;
  for (size_t i = 0; i < n; ++i) {
    z += 0x9E3779B97F4A7C15ull;
    uint64_t x = z;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    p[i] = (static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f) * 3.4641016f;
  }
}

inline GpuTensor UploadRandom(Backend& be, const Shape& shape, DType d, std::mt19937_64& rng,
                              float scale = 1.0f, float mean = 0.0f) {
  return Upload(be, shape, d, RandomVector(static_cast<size_t>(shape.numel()), rng, scale, mean));
}

inline DeviceBuffer UploadInts(Backend& be, const std::vector<int32_t>& v) {
  auto buf = be.Allocate(Shape{static_cast<int64_t>(std::max<size_t>(v.size(), 1))}, DType::kI32);
  CheckOk(buf.status(), "Allocate");
  if (!v.empty()) CheckOk(be.CopyFromHost(buf->view().ptr, v.data(), v.size() * 4), "CopyFromHost");
  return std::move(buf).value();
}

// Device tensor (F32 or BF16) → F32 host values.
inline std::vector<float> Download(Backend& be, const TensorView& t) {
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  CheckOk(be.Synchronize(), "Synchronize");
  if (t.dtype == DType::kF32) {
    CheckOk(be.CopyToHost(out.data(), t.ptr, n * 4), "CopyToHost");
  } else if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> raw(n);
    CheckOk(be.CopyToHost(raw.data(), t.ptr, n * 2), "CopyToHost");
    for (size_t i = 0; i < n; ++i) out[i] = tensor::BF16ToFloat(raw[i]);
  } else {
    std::abort();
  }
  return out;
}

inline void Poison(Backend& be, const TensorView& t) {
  CheckOk(be.Fill(t, std::nanf("")), "Fill(NaN)");
}

// A host F32 tensor on the CPU backend holding `values`.
inline DeviceBuffer ToCpu(Backend& cpu, const Shape& shape, const std::vector<float>& values) {
  auto buf = cpu.Allocate(shape, DType::kF32);
  CheckOk(buf.status(), "cpu Allocate");
  std::memcpy(buf->view().ptr, values.data(), values.size() * 4);
  return std::move(buf).value();
}
inline DeviceBuffer ToCpu(Backend& cpu, const GpuTensor& t) {
  return ToCpu(cpu, t.view().shape, t.host);
}
inline std::vector<float> FromCpu(const TensorView& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

struct ErrorStats {
  double rel_l2 = 0;       // ‖got − want‖ / ‖want‖
  double max_abs = 0;      // max |got − want|
  int64_t non_finite = 0;  // got NaN/Inf where want is finite (unwritten or broken outputs)
  std::string ToString() const {
    return absl::StrCat("rel_l2=", rel_l2, " max_abs=", max_abs, " non_finite=", non_finite);
  }
};

inline ErrorStats Compare(const std::vector<float>& got, const std::vector<float>& want) {
  ErrorStats s;
  double num = 0, den = 0;
  const size_t n = std::min(got.size(), want.size());
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      ++s.non_finite;
      continue;
    }
    if (!std::isfinite(want[i])) continue;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
    s.max_abs = std::max(s.max_abs, std::abs(d));
  }
  s.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (got.size() != want.size()) s.non_finite += static_cast<int64_t>(want.size() - n);
  return s;
}

// Seed for "fresh random inputs": GKA_TEST_SEED if set, else from the clock; printed by tests.
inline uint64_t TestSeed() {
  if (const char* s = std::getenv("GKA_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32);
}

}  // namespace gka::gpu_testing
