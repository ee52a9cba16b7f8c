// Helpers shared by golden and engine tests: comparing float tensors and reading goldens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "common/model/safetensors.h"

namespace gka::testing {

// ‖a − b‖₂ / ‖b‖₂ (‖b‖ = 0 → ‖a − b‖₂).
double RelL2(absl::Span<const float> a, absl::Span<const float> b);
double MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b);

// A float tensor of a golden file as F32 values (F32/BF16/F16 accepted).
std::vector<float> ReadF32(const model::SafetensorsFile& file, const std::string& name);
// An integer tensor (I64/I32) as int32 values.
std::vector<int32_t> ReadIds(const model::SafetensorsFile& file, const std::string& name);

// Argmax with the lowest index on ties.
int32_t Argmax(absl::Span<const float> row);

// Absolute path of a file under the repository root (tests run from the root, but ctest may
// run a test binary from elsewhere).
std::string RepoPath(const std::string& relative);

}  // namespace gka::testing
