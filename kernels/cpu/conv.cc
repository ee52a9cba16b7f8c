// Causal depthwise short convolution + SiLU with per-sequence carried state (conv.h).
//
// Per output element the taps are summed j = 0..K-1 in order from 0, as the reference's
// causal_conv_silu does, and each sequence reads only its own tokens and state slot: batch
// invariant, and a prompt split at any point gives the same bits as the whole prompt.
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {

absl::Status CausalConv(const CausalConvParams& p) {
  constexpr absl::string_view kOp = "CausalConv";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "x", p.x, 2));
  const int64_t num_tokens = p.x.shape[0];
  const int64_t channels = p.x.shape[1];
  const int64_t stride = p.x_row_stride == 0 ? channels : p.x_row_stride;
  if (stride < channels) {
    return absl::InvalidArgumentError(
        absl::StrCat("CausalConv: x_row_stride ", p.x_row_stride,
                     " is smaller than the row width C = ", channels));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "out", p.out, {num_tokens, channels}));
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "weight", p.weight, 2));
  const int64_t width = p.weight.shape[1];  // K
  if (p.weight.shape[0] != channels || width < 1) {
    return absl::InvalidArgumentError(absl::StrCat("CausalConv: weight ", p.weight.shape.ToString(),
                                                   " must be [C = ", channels, ", K >= 1]"));
  }
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "state", p.state, 3));
  const int64_t hist = width - 1;  // K - 1 carried raw inputs
  if (p.state.shape[1] != channels || p.state.shape[2] != hist) {
    return absl::InvalidArgumentError(absl::StrCat("CausalConv: state ", p.state.shape.ToString(),
                                                   " must be [num_slots, C = ", channels,
                                                   ", K - 1 = ", hist, "]"));
  }
  GKA_RETURN_IF_ERROR(
      internal::CheckPrefixSums(kOp, "cu_seqlens", p.cu_seqlens, p.num_seqs, num_tokens));
  GKA_RETURN_IF_ERROR(internal::CheckSlots(kOp, p.slots, p.num_seqs, p.state.shape[0]));
  const size_t x_bytes =
      num_tokens == 0 ? 0 : ((num_tokens - 1) * stride + channels) * sizeof(float);
  if (internal::Overlaps(p.out.ptr, p.out.nbytes(), p.x.ptr, x_bytes) ||
      internal::Overlaps(p.out.ptr, p.out.nbytes(), p.state.ptr, p.state.nbytes())) {
    return absl::InvalidArgumentError(
        "CausalConv: out must not overlap x or state (later tokens still read them)");
  }

  // Tap-major weights so every inner loop runs over contiguous channels.
  std::vector<float> taps(width * channels);
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t j = 0; j < width; ++j)
      taps[j * channels + c] = p.weight.data<float>()[c * width + j];
  }
  std::vector<float> acc(channels);
  const float* x = p.x.data<float>();
  for (int32_t b = 0; b < p.num_seqs; ++b) {
    const int64_t t0 = p.cu_seqlens[b];
    const int64_t len = p.cu_seqlens[b + 1] - t0;
    float* state = p.state.data<float>() + p.slots[b] * channels * hist;  // [C, K-1]
    // xp = [state ; x rows of this sequence]; xp index i < K-1 is state column i.
    for (int64_t t = 0; t < len; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < width; ++j) {
        const int64_t i = t + j;
        const float* w = taps.data() + j * channels;
        if (i < hist) {
          for (int64_t c = 0; c < channels; ++c) acc[c] += w[c] * state[c * hist + i];
        } else {
          const float* row = x + (t0 + i - hist) * stride;
          for (int64_t c = 0; c < channels; ++c) acc[c] += w[c] * row[c];
        }
      }
      float* out = p.out.data<float>() + (t0 + t) * channels;
      for (int64_t c = 0; c < channels; ++c) out[c] = internal::Silu(acc[c]);
    }
    // New state = xp[len .. len + K-2]. Ascending i reads old columns at i + len > i before
    // they are overwritten, so the shift works in place, also when len < K - 1.
    for (int64_t i = 0; i < hist; ++i) {
      const int64_t src = len + i;
      if (src < hist) {
        for (int64_t c = 0; c < channels; ++c) state[c * hist + i] = state[c * hist + src];
      } else {
        const float* row = x + (t0 + src - hist) * stride;
        for (int64_t c = 0; c < channels; ++c) state[c * hist + i] = row[c];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
