// Helpers for the CPU kernel tests: host F32 tensors backed by std::vector, random fills,
// comparisons. Header-only; used by tests/kernels/*_test.cc and tests/perf.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tensor/tensor.h"
#include "gtest/gtest.h"

namespace gka::kernels::testing {

// An F32 host tensor that owns its values. view() is valid while the HostTensor lives and
// is not resized.
class HostTensor {
 public:
  HostTensor() = default;
  explicit HostTensor(tensor::Shape shape, float fill = 0.0f)
      : shape_(shape), values_(static_cast<size_t>(shape.numel()), fill) {}

  tensor::TensorView view() {
    return tensor::TensorView{values_.data(), tensor::DType::kF32, shape_, tensor::Device::kCpu};
  }
  // The same storage seen with another shape or dtype (for negative tests).
  tensor::TensorView view_as(tensor::Shape shape, tensor::DType dtype = tensor::DType::kF32) {
    return tensor::TensorView{values_.data(), dtype, shape, tensor::Device::kCpu};
  }
  float* data() { return values_.data(); }
  const float* data() const { return values_.data(); }
  std::vector<float>& values() { return values_; }
  const std::vector<float>& values() const { return values_; }
  const tensor::Shape& shape() const { return shape_; }
  float& operator[](int64_t i) { return values_[i]; }
  float operator[](int64_t i) const { return values_[i]; }

 private:
  tensor::Shape shape_;
  std::vector<float> values_;
};

// A packed [rows, n] tensor placed at columns [offset, offset + n) of [rows, stride] filled
// with `junk`: a column range of a fused projection's output, for the strided-input ops.
inline HostTensor WideColumns(const HostTensor& packed, int64_t stride, int64_t offset,
                              float junk = 7.5f) {
  const int64_t rows = packed.shape()[0];
  const int64_t n = packed.shape().numel() / rows;
  HostTensor wide({rows, stride}, junk);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(wide.data() + r * stride + offset, packed.data() + r * n, n * sizeof(float));
  }
  return wide;
}

inline HostTensor RandomTensor(tensor::Shape shape, std::mt19937& rng, float lo = -1.0f,
                               float hi = 1.0f) {
  HostTensor t(shape);
  std::uniform_real_distribution<float> dist(lo, hi);
  for (float& v : t.values()) v = dist(rng);
  return t;
}

// max_i |a[i] - b[i]| / (atol + rtol · |b[i]|) ≤ 1, reporting the worst index.
inline ::testing::AssertionResult AllClose(const std::vector<float>& a,
                                           const std::vector<double>& b, double rtol, double atol) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  }
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double ratio = std::abs(a[i] - b[i]) / (atol + rtol * std::abs(b[i]));
    if (!(ratio <= worst)) {  // also catches NaN
      worst = std::isnan(ratio) ? INFINITY : ratio;
      worst_i = i;
    }
  }
  if (worst <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << worst_i << ": got " << a[worst_i] << ", expected " << b[worst_i]
         << " (rtol " << rtol << ", atol " << atol << ")";
}

inline ::testing::AssertionResult AllClose(const std::vector<float>& a, const std::vector<float>& b,
                                           double rtol, double atol) {
  return AllClose(a, std::vector<double>(b.begin(), b.end()), rtol, atol);
}

// Same bits (NaN payloads included), reporting the first difference.
inline ::testing::AssertionResult BitwiseEqual(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure()
             << "first difference at element " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult BitwiseEqual(const std::vector<float>& a,
                                               const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " vs " << b.size();
  }
  return BitwiseEqual(a.data(), b.data(), a.size());
}

inline ::testing::AssertionResult IsInvalidArgumentStatus(const absl::Status& s) {
  if (s.code() == absl::StatusCode::kInvalidArgument) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected InvalidArgument, got " << s.ToString();
}

// Runs op(params) on a copy of `good` changed by mutate(copy&): one bad field at a time.
//   auto with = [&](auto m) { return CallChanged(Gemm, good, m); };
//   EXPECT_TRUE(IsInvalidArgumentStatus(with([](auto& p) { p.beta = ...; })));
template <typename Params, typename Mutate>
absl::Status CallChanged(absl::Status (*op)(const Params&), const Params& good, Mutate mutate) {
  Params changed = good;
  mutate(changed);
  return op(changed);
}

// Prefix sums of lengths: {0, l0, l0 + l1, ...}.
inline std::vector<int32_t> PrefixSums(const std::vector<int32_t>& lengths) {
  std::vector<int32_t> cu(lengths.size() + 1, 0);
  for (size_t i = 0; i < lengths.size(); ++i) cu[i + 1] = cu[i] + lengths[i];
  return cu;
}

inline double Sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }
inline double Silu(double z) { return z * Sigmoid(z); }

}  // namespace gka::kernels::testing
