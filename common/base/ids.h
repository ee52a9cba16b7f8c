// Strong integer ids, so a page index can never be passed where a slot index is expected.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>

namespace gka::base {

template <typename Tag, typename T = int32_t>
class StrongId {
 public:
  using ValueType = T;
  constexpr StrongId() = default;
  constexpr explicit StrongId(T v) : value_(v) {}
  constexpr T value() const { return value_; }
  constexpr bool valid() const { return value_ >= 0; }
  auto operator<=>(const StrongId&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const StrongId& id) {
    return H::combine(std::move(h), id.value_);
  }
  friend std::ostream& operator<<(std::ostream& os, const StrongId& id) { return os << id.value_; }

 private:
  T value_ = -1;
};

using PageId = StrongId<struct PageIdTag>;
using SlotId = StrongId<struct SlotIdTag>;
using SequenceId = StrongId<struct SequenceIdTag, int64_t>;

}  // namespace gka::base
