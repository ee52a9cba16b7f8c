#include "decode_worker/common/handoff.h"

#include "absl/strings/str_cat.h"
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
  transfer::CompatHashBuilder compat;
  // LayoutHash covers model dims, the layer pattern, the KV dtype and the page size; the
  // rest is what this format adds on top.
  compat.Add("engine_layout", static_cast<int64_t>(engine.LayoutHash()))
      .Add("state_format", kStateFormatVersion)
      .Add("state_dtype", "f32")
      .Add("tp_size", 1)
      .Add("segments", "canonical-v1");
  l.compat_hash_ = compat.Hash();
  l.compat_description_ = compat.Canonical();
  return l;
}

std::vector<SegmentSpec> HandoffLayout::Segments(int64_t length) const {
  const engine::ModelDims& d = dims_;
  const int32_t pages = engine::PagesFor(length, page_size_);
  const uint64_t page_bytes =
      static_cast<uint64_t>(page_size_) * d.hkv * d.head_dim * tensor::DTypeSize(kv_dtype_);
  const uint64_t h_bytes = static_cast<uint64_t>(d.gka_h) * d.gka_d * d.gka_d * 4;
  const uint64_t k1 = static_cast<uint64_t>(d.conv_k - 1);
  std::vector<SegmentSpec> out;
  for (int32_t l = 0; l < d.num_layers; ++l) {
    if (!d.is_gka[l]) {
      for (int kv = 0; kv < 2; ++kv) {
        for (int32_t p = 0; p < pages; ++p) out.push_back({SegmentKind::kKv, l, page_bytes});
      }
      continue;
    }
    out.push_back({SegmentKind::kGkaState, l, h_bytes});
    out.push_back({SegmentKind::kGkaState, l, h_bytes});
    out.push_back({SegmentKind::kConvState, l, static_cast<uint64_t>(d.dq) * k1 * 4});
    out.push_back({SegmentKind::kConvState, l, static_cast<uint64_t>(d.dk) * k1 * 4});
    if (d.use_v_conv) {
      out.push_back({SegmentKind::kConvState, l, static_cast<uint64_t>(d.dv) * k1 * 4});
    }
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
