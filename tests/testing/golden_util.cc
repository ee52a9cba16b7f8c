#include "tests/testing/golden_util.h"

#include <cmath>
#include <cstring>

#include "common/base/check.h"

namespace gka::testing {

double RelL2(absl::Span<const float> a, absl::Span<const float> b) {
  GKA_CHECK(a.size() == b.size()) << a.size() << " vs " << b.size();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b) {
  GKA_CHECK(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

std::vector<float> ReadF32(const model::SafetensorsFile& file, const std::string& name) {
  auto t = file.Get(name);
  GKA_CHECK(t.ok()) << t.status().ToString();
  std::vector<float> out(t->shape.numel());
  tensor::ConvertToF32(t->data, t->dtype, out.size(), out.data());
  return out;
}

std::vector<int32_t> ReadIds(const model::SafetensorsFile& file, const std::string& name) {
  auto t = file.Get(name);
  GKA_CHECK(t.ok()) << t.status().ToString();
  std::vector<int32_t> out(t->shape.numel());
  for (size_t i = 0; i < out.size(); ++i) {
    if (t->dtype == tensor::DType::kI64) {
      int64_t v;
      std::memcpy(&v, static_cast<const char*>(t->data) + 8 * i, 8);
      out[i] = static_cast<int32_t>(v);
    } else {
      std::memcpy(&out[i], static_cast<const char*>(t->data) + 4 * i, 4);
    }
  }
  return out;
}

int32_t Argmax(absl::Span<const float> row) {
  int32_t best = 0;
  for (size_t i = 1; i < row.size(); ++i) {
    if (row[i] > row[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

std::string RepoPath(const std::string& relative) {
  return std::string(GKA_SOURCE_DIR) + "/" + relative;
}

}  // namespace gka::testing
