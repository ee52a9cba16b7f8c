#include "decode_worker/common/handoff.h"

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/engine/page_pools.h"
#include "common/transfer/lease.h"

namespace gka::worker_common {

absl::string_view KindLabel(SegmentKind kind) { return kind == SegmentKind::kKv ? "kv" : "state"; }

wpb::RegionKind ToRegionKind(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::kKv:
      return wpb::REGION_KIND_KV_PAGES;
    case SegmentKind::kGkaState:
      return wpb::REGION_KIND_GKA_STATE;
    case SegmentKind::kConvState:
      return wpb::REGION_KIND_CONV_STATE;
  }
  return wpb::REGION_KIND_UNSPECIFIED;
}

HandoffLayout HandoffLayout::Of(const engine::Engine& engine) {
  HandoffLayout l;
  l.dims_ = engine.dims();
  l.page_size_ = engine.options().page_size;
  l.kv_dtype_ = engine.options().dtype;
  const engine::ModelDims& d = l.dims_;
  const int64_t t = d.tp_size;
  std::string pattern;
  for (bool g : d.is_gka) pattern += g ? 'G' : 'A';
  // Whole-model numbers (a rank's dims times the TP size): the format is the same for every
  // TP layout, so workers of different TP sizes recognise each other.
  l.format_.Add("hidden", d.hidden)
      .Add("layers", pattern)
      .Add("kv_heads", d.hkv * t)
      .Add("head_dim", d.head_dim)
      .Add("kv_dtype", tensor::DTypeName(l.kv_dtype_))
      .Add("page_size", l.page_size_)
      .Add("gka_heads", d.gka_h * t)
      .Add("gka_head_dim", d.gka_d)
      .Add("conv_q", d.dq * t)
      .Add("conv_k", d.dk * t)
      .Add("conv_v", d.use_v_conv ? d.dv * t : 0)
      .Add("conv_size", d.conv_k)
      .Add("state_format", kStateFormatVersion)
      .Add("state_dtype", "f32")
      .Add("segments", "canonical-v2");
  l.compat_hash_ = l.format_.Hash();
  l.compat_description_ = l.format_.Canonical();
  return l;
}

uint64_t HandoffLayout::TicketHash(int decode_tp) const {
  transfer::CompatHashBuilder b = format_;
  return b.Add("sharding", "even-by-head").Add("decode_tp", decode_tp).Hash();
}

uint64_t HandoffLayout::TransferHash(int prefill_tp, int decode_tp) const {
  transfer::CompatHashBuilder b = format_;
  return b.Add("sharding", "even-by-head")
      .Add("decode_tp", decode_tp)
      .Add("prefill_tp", prefill_tp)
      .Hash();
}

absl::Status HandoffLayout::CheckTp(int tp) const {
  const engine::ModelDims& d = dims_;
  const int64_t t = d.tp_size;
  const uint64_t k1 = static_cast<uint64_t>(d.conv_k - 1) * 4;
  const std::pair<transfer::ShardedShape, const char*> shapes[] = {
      {{1, static_cast<uint64_t>(d.hkv * t), 1}, "the attention KV heads"},
      {{1, static_cast<uint64_t>(d.gka_h * t), 1}, "the GKA heads"},
      {{1, static_cast<uint64_t>(d.dq * t), k1}, "the GKA q conv channels"},
      {{1, static_cast<uint64_t>(d.dk * t), k1}, "the GKA k conv channels"},
      {{1, static_cast<uint64_t>(d.dv * t), k1}, "the GKA v conv channels"},
  };
  for (const auto& [shape, what] : shapes) {
    GKA_RETURN_IF_ERROR(transfer::CheckShardable(shape, tp, what));
  }
  return absl::OkStatus();
}

transfer::UnitRange HandoffLayout::KvHeads(int tp, int rank) const {
  return transfer::EvenShare(static_cast<uint64_t>(kv_heads()), tp, rank);
}

transfer::UnitRange HandoffLayout::GkaHeads(int tp, int rank) const {
  return transfer::EvenShare(static_cast<uint64_t>(gka_heads()), tp, rank);
}

std::vector<SegmentSpec> HandoffLayout::SegmentsFor(int64_t length, int tp) const {
  const engine::ModelDims& d = dims_;
  const uint64_t t = static_cast<uint64_t>(d.tp_size);
  const int32_t pages = engine::PagesFor(length, page_size_);
  const uint64_t k1 = static_cast<uint64_t>(d.conv_k - 1) * 4;
  const transfer::ShardedShape page{
      static_cast<uint64_t>(page_size_), d.hkv * t,
      static_cast<uint64_t>(d.head_dim) * tensor::DTypeSize(kv_dtype_)};
  const transfer::ShardedShape h{1, d.gka_h * t, static_cast<uint64_t>(d.gka_d) * d.gka_d * 4};
  const transfer::ShardedShape cq{1, d.dq * t, k1}, ck{1, d.dk * t, k1}, cv{1, d.dv * t, k1};
  std::vector<SegmentSpec> out;
  auto add = [&](SegmentKind kind, int32_t layer, const transfer::ShardedShape& shape) {
    out.push_back({kind, layer, shape.RankBytes(tp), shape});
  };
  for (int32_t l = 0; l < d.num_layers; ++l) {
    if (!d.is_gka[l]) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int32_t p = 0; p < pages; ++p) add(SegmentKind::kKv, l, page);
      }
      continue;
    }
    add(SegmentKind::kGkaState, l, h);
    add(SegmentKind::kGkaState, l, h);
    add(SegmentKind::kConvState, l, cq);
    add(SegmentKind::kConvState, l, ck);
    if (d.use_v_conv) add(SegmentKind::kConvState, l, cv);
  }
  return out;
}

absl::Status HandoffLayout::Check(const std::vector<engine::MemorySegment>& described,
                                  int64_t length) const {
  const std::vector<SegmentSpec> specs = Segments(length);
  if (specs.size() != described.size()) {
    return absl::InternalError(absl::StrCat("the engine describes ", described.size(),
                                            " state segments for ", length,
                                            " tokens, the hand-off format has ", specs.size()));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].bytes != described[i].bytes) {
      return absl::InternalError(absl::StrCat("state segment ", i, " (layer ", specs[i].layer,
                                              ") is ", described[i].bytes, " bytes in the engine, ",
                                              specs[i].bytes, " in the hand-off format"));
    }
  }
  return absl::OkStatus();
}

std::string EncodeCompletion(const wpb::HandoffCompletion& completion) {
  return completion.SerializeAsString();
}

absl::StatusOr<wpb::HandoffCompletion> DecodeCompletion(absl::string_view payload) {
  wpb::HandoffCompletion c;
  if (!c.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return absl::DataLossError(absl::StrCat("the completion payload (", payload.size(),
                                            " bytes) is not a HandoffCompletion"));
  }
  return c;
}

}  // namespace gka::worker_common
