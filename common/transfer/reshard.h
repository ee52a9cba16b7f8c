// Moving tensor-parallel state between TP layouts: which bytes of a sender rank's segment land
// where in a receiver rank's segment, when the sender runs TP = p and the receiver TP = d.
//
// Owns nothing. Depends on Abseil only (no engine, no proto, no transport).
//
// Every piece of a sequence's state is sharded the same way (model-spec §6): a segment is
// `outer` blocks of `units` units (KV heads, GKA heads, conv channels) of `unit_bytes` bytes,
// and rank r of t holds, in every block, the even contiguous share EvenShare(units, t, r),
// stored as [outer][units / t][unit_bytes]. So a receiver rank can be filled straight from
// the sender ranks that hold its units — sub-ranges of their segments, no gather:
//
//   ShardedShape page{.outer = page_size, .units = kv_heads, .unit_bytes = head_dim * 2};
//   for (int i = 0; i < p; ++i)
//     for (const Piece& c : ReshardPieces(page, p, i, d, j))
//       desc.Add(src[i] + c.src_offset, region, dst[j] + c.dst_offset, c.length);
//
// With p = d every rank pairs with itself and each segment is one piece; with p ≠ d a KV page
// splits into `page_size` strided pieces per sender rank (its rows interleave heads), while
// GKA and conv states stay one piece per sender rank (heads are the outermost dimension).
//
// Thread-safety: pure functions over values.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gka::transfer {

// Half-open range of units [first, first + count).
struct UnitRange {
  uint64_t first = 0;
  uint64_t count = 0;
  uint64_t end() const { return first + count; }
  bool operator==(const UnitRange&) const = default;
};

// The share rank `rank` of `tp` holds of `units` units: [rank * units / tp, (rank+1) * ...).
// Requires 0 <= rank < tp and tp dividing units (CheckShardable).
UnitRange EvenShare(uint64_t units, int tp, int rank);

// A segment as every TP layout sees it (see the file comment).
struct ShardedShape {
  uint64_t outer = 1;       // blocks, e.g. the tokens of a KV page
  uint64_t units = 0;       // sharded units per block over all ranks, e.g. KV heads
  uint64_t unit_bytes = 0;  // bytes of one unit, e.g. head_dim × dtype size
  // Bytes rank r of `tp` holds (the same for every rank).
  uint64_t RankBytes(int tp) const {
    return outer * (units / static_cast<uint64_t>(tp)) * unit_bytes;
  }
};

// FAILED_PRECONDITION naming `what` when `tp` < 1 or does not divide shape.units: a layout
// this state cannot be split into without one unit straddling two ranks.
absl::Status CheckShardable(const ShardedShape& shape, int tp, absl::string_view what);

// One contiguous copy: `length` bytes at `src_offset` in the sender rank's segment go to
// `dst_offset` in the receiver rank's segment.
struct Piece {
  uint64_t src_offset = 0;
  uint64_t dst_offset = 0;
  uint64_t length = 0;
  bool operator==(const Piece&) const = default;
};

// The copies that move the units both sender rank `src_rank` of `src_tp` and receiver rank
// `dst_rank` of `dst_tp` hold, in increasing offset order; empty when they share none. Pieces
// that continue each other on both sides are merged (equal shares: the whole segment is one
// piece). Over all sender ranks, the pieces of one receiver rank cover its segment exactly
// once. Requires CheckShardable for both TP sizes.
std::vector<Piece> ReshardPieces(const ShardedShape& shape, int src_tp, int src_rank, int dst_tp,
                                 int dst_rank);

// The sender ranks of `src_tp` that hold some of receiver rank `dst_rank`'s units, in order.
std::vector<int> SourceRanks(int src_tp, int dst_tp, int dst_rank);

}  // namespace gka::transfer
