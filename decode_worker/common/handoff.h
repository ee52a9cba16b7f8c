// The prefill -> decode hand-off format both workers share: the canonical layout of one
// sequence's state (what a decode worker's ticket lists and a prefill worker writes), how
// each segment is sharded over tensor-parallel ranks, the compatibility hashes, and the
// completion message's payload.
//
// Owns: plain functions over immutable engine facts (dims, TP size, page size, KV dtype).
// Must not depend on UCX (common/transfer's interface only) or on either worker's service
// code.
//
//   const HandoffLayout layout = HandoffLayout::Of(ranks.lead());    // at start-up
//   std::vector<SegmentSpec> specs = layout.Segments(prompt_len);     // ticket order, this TP
//   ticket.set_compat_hash(layout.TicketHash(layout.tp_size()));      // format + decode layout
//
// Three hashes, one model format (model dims, layer pattern, dtypes, page size, state format):
//   compat_hash()          the format alone, whatever the TP size: what workers register, so
//                          the router may pair a TP=p prefill worker with a TP=d decode worker;
//   TicketHash(d)          format + the decode layout (d ranks, even head shares): the ticket's
//                          compat_hash, checked by the prefill worker before it writes;
//   TransferHash(p, d)     format + both layouts: the completion's layout_hash, checked by the
//                          decode worker before the sequence may run.
//
// Thread-safety: HandoffLayout is an immutable value; share const copies freely.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/engine/dims.h"
#include "common/engine/engine.h"
#include "common/tensor/dtype.h"
#include "common/transfer/lease.h"
#include "common/transfer/reshard.h"
#include "gka/worker/v1/worker.pb.h"

namespace gka::worker_common {

namespace wpb = ::gka::worker::v1;

// Version of the hand-off state format (segment order, what a segment holds). Bump it when
// either changes: it is part of the compatibility hash, so mismatched workers refuse each
// other's tickets instead of writing garbage.
// 2: tickets carry one rank per decode TP rank, segments are sharded by head (reshard.h).
inline constexpr int64_t kStateFormatVersion = 2;

enum class SegmentKind {
  kKv,         // one KV page of one attention layer (K or V)
  kGkaState,   // h_kk or h_kv of one GKA layer
  kConvState,  // conv_q, conv_k or conv_v of one GKA layer
};

// "kv" for KV pages, "state" for GKA and conv states (the `kind` metric label).
absl::string_view KindLabel(SegmentKind kind);
wpb::RegionKind ToRegionKind(SegmentKind kind);

struct SegmentSpec {
  SegmentKind kind;
  int32_t layer;   // model layer index
  uint64_t bytes;  // exact size of the segment on one rank of the layout it was made for
  // How every TP layout shards it: a KV page [page_size][KV heads][head_dim × dtype], h_kk /
  // h_kv [GKA heads][D × D × 4], conv state [channels][(K-1) × 4].
  transfer::ShardedShape shape;
};

class HandoffLayout {
 public:
  // Reads only what Engine::Create fixed (dims, page size, dtype, layout hash), so the
  // result may be computed on the engine thread and used on any other.
  static HandoffLayout Of(const engine::Engine& engine);

  // The segments of a sequence of `length` tokens in Engine::DescribeSequence order: per
  // attention layer its K pages then its V pages, per GKA layer h_kk, h_kv, conv_q, conv_k
  // and conv_v (without a v conv, no conv_v); bytes as one rank of this worker's TP holds.
  std::vector<SegmentSpec> Segments(int64_t length) const {
    return SegmentsFor(length, dims_.tp_size);
  }
  // The same, bytes as one rank of a TP=`tp` layout holds (CheckTp(tp) must pass).
  std::vector<SegmentSpec> SegmentsFor(int64_t length, int tp) const;
  // FAILED_PRECONDITION naming what does not split when a TP=`tp` layout of this model's
  // state is impossible (its KV heads, GKA heads or conv channels do not divide by tp).
  absl::Status CheckTp(int tp) const;
  // The heads rank `rank` of a TP=`tp` layout owns (a ticket's RankTicket.kv_heads/gka_heads).
  transfer::UnitRange KvHeads(int tp, int rank) const;
  transfer::UnitRange GkaHeads(int tp, int rank) const;

  // INTERNAL when the engine's description of a sequence of `length` tokens differs from
  // Segments(length) (count or sizes): the two sides would disagree about the format.
  absl::Status Check(const std::vector<engine::MemorySegment>& described, int64_t length) const;

  // See the file comment.
  uint64_t compat_hash() const { return compat_hash_; }
  uint64_t TicketHash(int decode_tp) const;
  uint64_t TransferHash(int prefill_tp, int decode_tp) const;
  // The hashed fields of the format, one "key=value" per line (for mismatch reports).
  const std::string& compat_description() const { return compat_description_; }
  int32_t page_size() const { return page_size_; }
  int tp_size() const { return dims_.tp_size; }
  // Over all ranks.
  int32_t kv_heads() const { return dims_.hkv * dims_.tp_size; }
  int32_t gka_heads() const { return dims_.gka_h * dims_.tp_size; }

 private:
  engine::ModelDims dims_;  // one rank's (dims_.tp_size ranks)
  int32_t page_size_ = 0;
  tensor::DType kv_dtype_ = tensor::DType::kF32;
  transfer::CompatHashBuilder format_;  // the format's fields
  uint64_t compat_hash_ = 0;
  std::string compat_description_;
};

// The completion payload: what the decode worker needs besides the bytes.
std::string EncodeCompletion(const wpb::HandoffCompletion& completion);
// DATA_LOSS when the bytes are not a HandoffCompletion.
absl::StatusOr<wpb::HandoffCompletion> DecodeCompletion(absl::string_view payload);

}  // namespace gka::worker_common
