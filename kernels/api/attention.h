// Paged KV cache write and GQA attention over paged K/V (prefill and decode in one op).
//
// Cache layout, per attention layer: k_pages, v_pages [num_pages, page_size, Hkv, D].
// Sequence b's token at position p lives in page page_table[b * max_pages + p / page_size],
// row p % page_size. Pages are indices into pools allocated once; the table holds PageIds.
#pragma once

#include <cstdint>

#include "common/tensor/tensor.h"

namespace gka::kernels {

// Writes the new tokens' K and V (after q/k-norm and RoPE) into their pages.
struct KvCacheWriteParams {
  tensor::TensorView k;  // [T_total, Hkv, D] new keys of all sequences
  tensor::TensorView v;  // [T_total, Hkv, D]
  // Elements between consecutive tokens of k and of v; 0 = Hkv·D (packed). Larger when k and v
  // are column ranges of one fused projection output [T, q|k|v] (a token's Hkv·D stay packed).
  int64_t row_stride = 0;
  tensor::TensorView k_pages;             // [num_pages, page_size, Hkv, D]
  tensor::TensorView v_pages;             // [num_pages, page_size, Hkv, D]
  const int32_t* slot_mapping = nullptr;  // [T_total] page * page_size + row for each token
};

// Causal GQA attention for a varlen batch. Sequence b has q_len[b] = cu_q[b+1] - cu_q[b] new
// queries at positions context_lens[b] - q_len[b] ... context_lens[b] - 1; each query sees
// keys 0..its position (the new keys must already be written to the cache). Query head h
// uses KV head h / (Hq / Hkv). Softmax in fp32. Decode is q_len = 1 for every sequence.
struct PagedAttentionParams {
  tensor::TensorView q;        // [T_total, Hq, D] (token stride q_row_stride)
  int64_t q_row_stride = 0;    // elements between tokens of q; 0 = Hq·D (packed)
  tensor::TensorView out;      // [T_total, Hq, D] packed; may alias q only when q is packed
  tensor::TensorView k_pages;  // [num_pages, page_size, Hkv, D]
  tensor::TensorView v_pages;  // [num_pages, page_size, Hkv, D]
  const int32_t* page_table = nullptr;    // [B, max_pages_per_seq]
  const int32_t* cu_q = nullptr;          // [B + 1] prefix sums of q_len
  const int32_t* context_lens = nullptr;  // [B] keys visible to the last query of b
  int32_t num_seqs = 0;
  int32_t max_pages_per_seq = 0;
  int32_t max_q_len = 0;        // max over b of q_len[b] (launch sizing)
  int32_t max_context_len = 0;  // max over b of context_lens[b] (launch sizing)
  float scale = 0.0f;           // usually D^-0.5
};

}  // namespace gka::kernels
