#include "common/engine/page_pools.h"

#include "absl/strings/str_cat.h"
#include "common/base/check.h"

namespace gka::engine {

template <typename Id>
IdPool<Id>::IdPool(int32_t capacity) : capacity_(capacity), in_use_(capacity, false) {
  free_.reserve(capacity);
  // Highest id at the bottom so low ids are handed out first (easier to read in logs).
  for (int32_t i = capacity - 1; i >= 0; --i) free_.push_back(Id(i));
}

template <typename Id>
absl::StatusOr<std::vector<Id>> IdPool<Id>::Allocate(int32_t n) {
  if (n < 0) return absl::InvalidArgumentError("negative allocation");
  if (n > num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("need ", n, " ids, ", num_free(), " of ", capacity_, " free"));
  }
  std::vector<Id> out(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  for (Id id : out) in_use_[id.value()] = true;
  return out;
}

template <typename Id>
void IdPool<Id>::Free(const std::vector<Id>& ids) {
  for (Id id : ids) {
    GKA_CHECK(InUse(id)) << "freeing id " << id << " that is not in use";
    in_use_[id.value()] = false;
    free_.push_back(id);
  }
}

template class IdPool<PageId>;
template class IdPool<SlotId>;

}  // namespace gka::engine
