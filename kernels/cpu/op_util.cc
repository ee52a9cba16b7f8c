#include "kernels/cpu/op_util.h"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gka::kernels::cpu::internal {

using tensor::DType;
using tensor::TensorView;

absl::Status CheckF32(absl::string_view op, absl::string_view name, const TensorView& t, int rank) {
  if (IsAbsent(t)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is not set"));
  }
  if (t.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", name, " must be F32 on the CPU backend, got ", tensor::DTypeName(t.dtype)));
  }
  if (t.device != tensor::Device::kCpu) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " is a CUDA tensor; the CPU backend needs host memory"));
  }
  if (t.shape.rank() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " must have rank ", rank, ", got shape ", t.shape.ToString()));
  }
  for (int i = 0; i < rank; ++i) {
    if (t.shape[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(op, ": ", name, " has a negative dimension: ", t.shape.ToString()));
    }
  }
  if (t.ptr == nullptr && t.numel() > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", name, " ", t.shape.ToString(), " has no data pointer"));
  }
  return absl::OkStatus();
}

absl::Status CheckF32Shape(absl::string_view op, absl::string_view name, const TensorView& t,
                           const tensor::Shape& expected) {
  if (absl::Status s = CheckF32(op, name, t, expected.rank()); !s.ok()) return s;
  if (!(t.shape == expected)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": ", name, " must have shape ", expected.ToString(), ", got ", t.shape.ToString()));
  }
  return absl::OkStatus();
}

absl::Status CheckNotNull(absl::string_view op, absl::string_view name, const void* p) {
  if (p == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is null"));
  return absl::OkStatus();
}

absl::Status CheckPrefixSums(absl::string_view op, absl::string_view name, const int32_t* cu,
                             int32_t num_seqs, int64_t total) {
  if (num_seqs < 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": num_seqs is negative (", num_seqs, ")"));
  }
  if (cu == nullptr && num_seqs == 0 && total == 0) return absl::OkStatus();  // empty batch
  if (cu == nullptr) return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " is null"));
  if (cu[0] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, "[0] must be 0, got ", cu[0]));
  }
  for (int32_t b = 0; b < num_seqs; ++b) {
    if (cu[b + 1] < cu[b]) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, " decreases at sequence ", b,
                                                     " (", cu[b], " -> ", cu[b + 1], ")"));
    }
  }
  if (cu[num_seqs] != total) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, "[num_seqs] = ", cu[num_seqs],
                                                   " but the tensors hold ", total, " tokens"));
  }
  return absl::OkStatus();
}

absl::Status CheckSlots(absl::string_view op, const int32_t* slots, int32_t num_seqs,
                        int64_t num_slots) {
  if (num_seqs > 0 && slots == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": slots is null"));
  }
  std::vector<int32_t> seen(slots, slots + std::max(num_seqs, 0));
  for (int32_t b = 0; b < num_seqs; ++b) {
    if (slots[b] < 0 || slots[b] >= num_slots) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": slot ", slots[b], " of sequence ", b,
                                                     " is outside the state pool [0, ", num_slots,
                                                     ")"));
    }
  }
  std::sort(seen.begin(), seen.end());
  if (auto it = std::adjacent_find(seen.begin(), seen.end()); it != seen.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": slot ", *it, " is used by two sequences of one batch"));
  }
  return absl::OkStatus();
}

bool Overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a);
  const auto pb = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && pa < pb + b_bytes && pb < pa + a_bytes;
}

namespace {
std::atomic<int> max_threads_override{0};
}  // namespace

void SetMaxThreadsForTesting(int threads) { max_threads_override = std::max(threads, 0); }

void ParallelFor(int64_t n, double cost_per_item,
                 const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  // Starting a thread costs tens of microseconds; below ~2 Mflop a thread does not pay off.
  constexpr double kMinCostPerThread = 2e6;
  const int override_threads = max_threads_override.load();
  const int64_t hw = override_threads > 0
                         ? override_threads
                         : std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t by_cost = static_cast<int64_t>(n * cost_per_item / kMinCostPerThread);
  const int64_t threads = std::clamp<int64_t>(std::min(hw, by_cost), 1, n);
  if (threads == 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t begin = chunk; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    try {
      pool.emplace_back([&fn, begin, end] { fn(begin, end); });
    } catch (const std::system_error&) {
      fn(begin, end);  // No thread available: same work inline, same results.
    }
  }
  fn(0, std::min(n, chunk));
  for (std::thread& t : pool) t.join();
}

void ParallelForSequenceHeads(int64_t num_seqs, int64_t num_heads, double total_cost,
                              const std::function<void(int64_t b, int64_t h)>& fn) {
  const int64_t items = num_seqs * num_heads;
  ParallelFor(items, total_cost / std::max<int64_t>(items, 1), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) fn(item / num_heads, item % num_heads);
  });
}

}  // namespace gka::kernels::cpu::internal
