#include "common/transfer/reshard.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"

namespace gka::transfer {

UnitRange EvenShare(uint64_t units, int tp, int rank) {
  GKA_CHECK(tp >= 1 && rank >= 0 && rank < tp && units % static_cast<uint64_t>(tp) == 0)
      << "EvenShare(" << units << ", " << tp << ", " << rank << ")";
  const uint64_t share = units / static_cast<uint64_t>(tp);
  return {share * static_cast<uint64_t>(rank), share};
}

absl::Status CheckShardable(const ShardedShape& shape, int tp, absl::string_view what) {
  if (tp < 1) {
    return absl::FailedPreconditionError(absl::StrCat("tensor-parallel size ", tp, " is not >= 1"));
  }
  if (shape.units % static_cast<uint64_t>(tp) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("TP=", tp, " cannot hold ", what, ": ", shape.units,
                     " units do not split evenly over ", tp, " ranks"));
  }
  return absl::OkStatus();
}

std::vector<Piece> ReshardPieces(const ShardedShape& shape, int src_tp, int src_rank, int dst_tp,
                                 int dst_rank) {
  const UnitRange src = EvenShare(shape.units, src_tp, src_rank);
  const UnitRange dst = EvenShare(shape.units, dst_tp, dst_rank);
  const uint64_t first = std::max(src.first, dst.first);
  const uint64_t end = std::min(src.end(), dst.end());
  std::vector<Piece> pieces;
  if (first >= end) return pieces;
  const uint64_t length = (end - first) * shape.unit_bytes;
  const uint64_t src_row = src.count * shape.unit_bytes;
  const uint64_t dst_row = dst.count * shape.unit_bytes;
  for (uint64_t o = 0; o < shape.outer; ++o) {
    const Piece p{o * src_row + (first - src.first) * shape.unit_bytes,
                  o * dst_row + (first - dst.first) * shape.unit_bytes, length};
    if (!pieces.empty() && pieces.back().src_offset + pieces.back().length == p.src_offset &&
        pieces.back().dst_offset + pieces.back().length == p.dst_offset) {
      pieces.back().length += p.length;
    } else {
      pieces.push_back(p);
    }
  }
  return pieces;
}

std::vector<int> SourceRanks(int src_tp, int dst_tp, int dst_rank) {
  // In units of lcm-free arithmetic: rank i of p covers [i/p, (i+1)/p) of the whole, rank j
  // of d covers [j/d, (j+1)/d); they overlap when i*d < (j+1)*p and j*p < (i+1)*d.
  std::vector<int> out;
  for (int i = 0; i < src_tp; ++i) {
    const int64_t a = static_cast<int64_t>(i) * dst_tp, b = static_cast<int64_t>(i + 1) * dst_tp;
    const int64_t c = static_cast<int64_t>(dst_rank) * src_tp,
                  e = static_cast<int64_t>(dst_rank + 1) * src_tp;
    if (a < e && c < b) out.push_back(i);
  }
  return out;
}

}  // namespace gka::transfer
