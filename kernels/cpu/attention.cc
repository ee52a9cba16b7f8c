// Paged KV-cache write and causal GQA attention over paged K/V (prefill and decode alike).
//
// Each (sequence, query head) is computed by one call with a fixed order: scores are
// internal::Dot(q, k_j)·scale for j ascending, softmax subtracts the row max and sums in
// order, and P·V accumulates keys in ascending order. Nothing depends on the other
// sequences of the batch or on the thread that runs the item, so results are batch
// invariant.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

// Checks that k_pages and v_pages are the same [num_pages, page_size, Hkv, D] F32 pool.
absl::Status CheckPagePools(absl::string_view op, const tensor::TensorView& k_pages,
                            const tensor::TensorView& v_pages) {
  GKA_RETURN_IF_ERROR(internal::CheckF32(op, "k_pages", k_pages, 4));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(op, "v_pages", v_pages, k_pages.shape));
  if (k_pages.shape[1] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": page_size must be positive, pages are ", k_pages.shape.ToString()));
  }
  return absl::OkStatus();
}

struct AttentionArgs {
  const float* q;
  int64_t q_row_stride;  // elements between tokens of q
  float* out;
  const float* k_pages;
  const float* v_pages;
  const int32_t* page_table;
  const int32_t* cu_q;
  const int32_t* context_lens;
  int64_t num_heads;     // Hq
  int64_t num_kv_heads;  // Hkv
  int64_t head_dim;
  int64_t page_size;
  int64_t max_pages_per_seq;
  float scale;
};

// All queries of sequence b for query head h.
GKA_CPU_MULTIVERSION
void AttendSequenceHead(const AttentionArgs& a, int64_t b, int64_t h) {
  const int64_t d = a.head_dim;
  const int64_t kv_head = h / (a.num_heads / a.num_kv_heads);
  const int64_t q_begin = a.cu_q[b];
  const int64_t q_len = a.cu_q[b + 1] - q_begin;
  const int64_t context = a.context_lens[b];
  const int32_t* pages = a.page_table + b * a.max_pages_per_seq;
  // Key j of this sequence and KV head, through the page table.
  auto row_offset = [&](int64_t j) {
    const int64_t page = pages[j / a.page_size];
    return ((page * a.page_size + j % a.page_size) * a.num_kv_heads + kv_head) * d;
  };
  std::vector<float> scores(context);
  std::vector<float> acc(d);
  for (int64_t i = 0; i < q_len; ++i) {
    const int64_t t = q_begin + i;
    const float* q = a.q + t * a.q_row_stride + h * d;
    const int64_t num_keys = context - q_len + i + 1;  // causal: keys 0..position
    float max_score = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < num_keys; ++j) {
      scores[j] = internal::Dot(q, a.k_pages + row_offset(j), d) * a.scale;
      max_score = std::max(max_score, scores[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < num_keys; ++j) {
      scores[j] = std::exp(scores[j] - max_score);
      sum += scores[j];
    }
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t j = 0; j < num_keys; ++j) {
      const float prob = scores[j] / sum;
      const float* v = a.v_pages + row_offset(j);
      for (int64_t e = 0; e < d; ++e) acc[e] += prob * v[e];
    }
    // q is fully consumed: out may alias a packed q.
    std::memcpy(a.out + (t * a.num_heads + h) * d, acc.data(), d * sizeof(float));
  }
}

}  // namespace

absl::Status KvCacheWrite(const KvCacheWriteParams& p) {
  constexpr absl::string_view kOp = "KvCacheWrite";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "k", p.k, 3));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "v", p.v, p.k.shape));
  GKA_RETURN_IF_ERROR(CheckPagePools(kOp, p.k_pages, p.v_pages));
  const int64_t num_tokens = p.k.shape[0];
  const int64_t row = p.k.shape[1] * p.k.shape[2];
  const int64_t stride = p.row_stride == 0 ? row : p.row_stride;
  if (stride < row) {
    return absl::InvalidArgumentError(absl::StrCat("KvCacheWrite: row_stride ", p.row_stride,
                                                   " is smaller than Hkv * D = ", row));
  }
  if (p.k_pages.shape[2] != p.k.shape[1] || p.k_pages.shape[3] != p.k.shape[2]) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCacheWrite: k ", p.k.shape.ToString(), " [T, Hkv, D] does not match the ",
                     "pages ", p.k_pages.shape.ToString(), " [num_pages, page_size, Hkv, D]"));
  }
  if (num_tokens == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "slot_mapping", p.slot_mapping));
  const int64_t num_slots = p.k_pages.shape[0] * p.k_pages.shape[1];
  // Validate everything before writing anything: a rejected call leaves the cache untouched.
  for (int64_t t = 0; t < num_tokens; ++t) {
    if (p.slot_mapping[t] < 0 || p.slot_mapping[t] >= num_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("KvCacheWrite: slot_mapping[", t, "] = ", p.slot_mapping[t],
                       " is outside the cache [0, num_pages * page_size = ", num_slots, ")"));
    }
  }
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t dst = p.slot_mapping[t] * row;
    std::memcpy(p.k_pages.data<float>() + dst, p.k.data<float>() + t * stride, row * sizeof(float));
    std::memcpy(p.v_pages.data<float>() + dst, p.v.data<float>() + t * stride, row * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status PagedAttention(const PagedAttentionParams& p) {
  constexpr absl::string_view kOp = "PagedAttention";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "q", p.q, 3));
  GKA_RETURN_IF_ERROR(internal::CheckF32Shape(kOp, "out", p.out, p.q.shape));
  GKA_RETURN_IF_ERROR(CheckPagePools(kOp, p.k_pages, p.v_pages));
  const int64_t num_heads = p.q.shape[1];
  const int64_t head_dim = p.q.shape[2];
  const int64_t num_pages = p.k_pages.shape[0];
  const int64_t page_size = p.k_pages.shape[1];
  const int64_t num_kv_heads = p.k_pages.shape[2];
  if (p.k_pages.shape[3] != head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: q ", p.q.shape.ToString(),
                                                   " and pages ", p.k_pages.shape.ToString(),
                                                   " disagree on head_dim"));
  }
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: Hq = ", num_heads,
                                                   " must be a multiple of Hkv = ", num_kv_heads));
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: scale must be > 0 (usually D^-0.5), got ", p.scale));
  }
  const int64_t q_stride = p.q_row_stride == 0 ? num_heads * head_dim : p.q_row_stride;
  if (q_stride < num_heads * head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("PagedAttention: q_row_stride ", p.q_row_stride,
                     " is smaller than Hq * D = ", num_heads * head_dim));
  }
  GKA_RETURN_IF_ERROR(internal::CheckPrefixSums(kOp, "cu_q", p.cu_q, p.num_seqs, p.q.shape[0]));
  if (p.num_seqs == 0) return absl::OkStatus();
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "context_lens", p.context_lens));
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "page_table", p.page_table));
  if (p.max_pages_per_seq < 0) {
    return absl::InvalidArgumentError("PagedAttention: max_pages_per_seq is negative");
  }
  double total_cost = 0.0;
  for (int32_t b = 0; b < p.num_seqs; ++b) {
    const int64_t q_len = p.cu_q[b + 1] - p.cu_q[b];
    const int64_t context = p.context_lens[b];
    if (context < q_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PagedAttention: sequence ", b, " has ", q_len, " new queries but context_lens = ",
          context, " (the new keys must be counted and already written)"));
    }
    // The CUDA kernel sizes its launch from these; catch a stale value on the CPU too.
    if (q_len > p.max_q_len || context > p.max_context_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PagedAttention: sequence ", b, " (q_len ", q_len, ", context ", context,
          ") exceeds max_q_len ", p.max_q_len, " / max_context_len ", p.max_context_len));
    }
    const int64_t pages_needed = (context + page_size - 1) / page_size;
    if (pages_needed > p.max_pages_per_seq) {
      return absl::InvalidArgumentError(
          absl::StrCat("PagedAttention: sequence ", b, " needs ", pages_needed, " pages for ",
                       context, " keys but max_pages_per_seq = ", p.max_pages_per_seq));
    }
    for (int64_t i = 0; i < pages_needed; ++i) {
      const int32_t page = p.page_table[b * p.max_pages_per_seq + i];
      if (page < 0 || page >= num_pages) {
        return absl::InvalidArgumentError(absl::StrCat("PagedAttention: page_table[", b, ", ", i,
                                                       "] = ", page, " is outside [0, ", num_pages,
                                                       ")"));
      }
    }
    total_cost += 4.0 * q_len * context * head_dim * num_heads;
  }

  const AttentionArgs args{.q = p.q.data<float>(),
                           .q_row_stride = q_stride,
                           .out = p.out.data<float>(),
                           .k_pages = p.k_pages.data<float>(),
                           .v_pages = p.v_pages.data<float>(),
                           .page_table = p.page_table,
                           .cu_q = p.cu_q,
                           .context_lens = p.context_lens,
                           .num_heads = num_heads,
                           .num_kv_heads = num_kv_heads,
                           .head_dim = head_dim,
                           .page_size = page_size,
                           .max_pages_per_seq = p.max_pages_per_seq,
                           .scale = p.scale};
  internal::ParallelForSequenceHeads(p.num_seqs, num_heads, total_cost,
                                     [&](int64_t b, int64_t h) { AttendSequenceHead(args, b, h); });
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
