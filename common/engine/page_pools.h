// Metadata-only allocators for the engine's two kinds of per-sequence memory.
//
// KvPagePool hands out PageIds: indices into per-layer K/V page tensors allocated once at
// start-up ([num_pages, page_size, Hkv, D] each). StateSlotPool hands out SlotIds: indices
// into per-GKA-layer state tensors (h_kk, h_kv, conv). Neither touches tensor memory; the
// scheduler and the transfer layer hold ids, never pointers (TensorRT-LLM's block manager
// split). Must not depend on kernels, gRPC or CUDA.
//
//   KvPagePool pages(/*num_pages=*/1024);
//   GKA_ASSIGN_OR_RETURN(std::vector<PageId> got, pages.Allocate(3));
//   pages.Free(got);
//
// Thread-safety: not thread-safe; owned by the engine thread.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/ids.h"

namespace gka::engine {

using base::PageId;
using base::SlotId;

// LIFO free list of integer ids [0, capacity). All-or-nothing allocation.
template <typename Id>
class IdPool {
 public:
  explicit IdPool(int32_t capacity);
  int32_t capacity() const { return capacity_; }
  int32_t num_free() const { return static_cast<int32_t>(free_.size()); }
  // ResourceExhausted (nothing taken) when fewer than n ids are free.
  absl::StatusOr<std::vector<Id>> Allocate(int32_t n);
  // GKA_CHECKs that each id is in use: a double free is our bug, not bad input.
  void Free(const std::vector<Id>& ids);
  bool InUse(Id id) const { return id.valid() && id.value() < capacity_ && in_use_[id.value()]; }

 private:
  int32_t capacity_;
  std::vector<Id> free_;
  std::vector<bool> in_use_;
};

using KvPagePool = IdPool<PageId>;
using StateSlotPool = IdPool<SlotId>;

// Pages needed to hold `tokens` tokens.
inline int32_t PagesFor(int64_t tokens, int32_t page_size) {
  return static_cast<int32_t>((tokens + page_size - 1) / page_size);
}

}  // namespace gka::engine
