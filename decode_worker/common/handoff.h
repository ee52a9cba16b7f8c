// The prefill -> decode hand-off format both workers share: the canonical layout of one
// sequence's state (what a decode worker's ticket lists and a prefill worker writes), the
// compatibility hash, and the completion message's payload.
//
// Owns: plain functions over immutable engine facts (dims, page size, KV dtype). Must not
// depend on UCX (common/transfer's interface only) or on either worker's service code.
//
//   const HandoffLayout layout = HandoffLayout::Of(*engine);       // at start-up
//   std::vector<SegmentSpec> specs = layout.Segments(prompt_len);   // ticket order
//   uint64_t compat = layout.compat_hash();                        // travels in the ticket
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
#include "gka/worker/v1/worker.pb.h"

namespace gka::worker_common {

namespace wpb = ::gka::worker::v1;

// Version of the hand-off state format (segment order, what a segment holds). Bump it when
// either changes: it is part of the compatibility hash, so mismatched workers refuse each
// other's tickets instead of writing garbage.
inline constexpr int64_t kStateFormatVersion = 1;

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
  uint64_t bytes;  // exact size of the segment
};

class HandoffLayout {
 public:
  // Reads only what Engine::Create fixed (dims, page size, dtype, layout hash), so the
  // result may be computed on the engine thread and used on any other.
  static HandoffLayout Of(const engine::Engine& engine);

  // The segments of a sequence of `length` tokens in Engine::DescribeSequence order: per
  // attention layer its K pages then its V pages, per GKA layer h_kk, h_kv, conv_q, conv_k
  // and conv_v (without a v conv, no conv_v).
  std::vector<SegmentSpec> Segments(int64_t length) const;

  // INTERNAL when the engine's description of a sequence of `length` tokens differs from
  // Segments(length) (count or sizes): the two sides would disagree about the format.
  absl::Status Check(const std::vector<engine::MemorySegment>& described, int64_t length) const;

  uint64_t compat_hash() const { return compat_hash_; }
  // The hashed fields, one "key=value" per line (for mismatch reports).
  const std::string& compat_description() const { return compat_description_; }
  int32_t page_size() const { return page_size_; }
  int32_t kv_heads() const { return dims_.hkv; }
  int32_t gka_heads() const { return dims_.gka_h; }

 private:
  engine::ModelDims dims_;
  int32_t page_size_ = 0;
  tensor::DType kv_dtype_ = tensor::DType::kF32;
  uint64_t compat_hash_ = 0;
  std::string compat_description_;
};

// The completion payload: what the decode worker needs besides the bytes.
std::string EncodeCompletion(const wpb::HandoffCompletion& completion);
// DATA_LOSS when the bytes are not a HandoffCompletion.
absl::StatusOr<wpb::HandoffCompletion> DecodeCompletion(absl::string_view payload);

}  // namespace gka::worker_common
