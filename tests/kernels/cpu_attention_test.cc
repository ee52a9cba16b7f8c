// CPU KvCacheWrite + PagedAttention against dense per-sequence attention without pages, and
// bitwise equality of a varlen batch with separate runs.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace gka::kernels::cpu {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::HostTensor;
using testing::IsInvalidArgumentStatus;
using testing::RandomTensor;

constexpr int kHq = 4, kHkv = 2, kD = 16, kPageSize = 4, kNumPages = 24;

// A varlen batch: per sequence a full K/V history (context tokens) written into shuffled
// pages, and q_len new queries at the end of the context.
struct PagedBatch {
  std::vector<int32_t> q_lens, context_lens;
  std::vector<std::vector<float>> keys, values;  // per sequence [context, Hkv, D]
  std::vector<int32_t> page_table;               // [B, max_pages]
  int32_t max_pages = 0;
  HostTensor k_pages{{kNumPages, kPageSize, kHkv, kD}};
  HostTensor v_pages{{kNumPages, kPageSize, kHkv, kD}};
  HostTensor q;  // [T_total, Hq, D]
  std::vector<int32_t> cu_q;

  PagedBatch(std::vector<int32_t> q_len, std::vector<int32_t> context, std::mt19937& rng)
      : q_lens(q_len), context_lens(context) {
    const int num_seqs = q_lens.size();
    for (int32_t c : context_lens) max_pages = std::max(max_pages, (c + kPageSize - 1) / kPageSize);
    std::vector<int32_t> free_pages(kNumPages);
    std::iota(free_pages.begin(), free_pages.end(), 0);
    std::shuffle(free_pages.begin(), free_pages.end(), rng);
    page_table.assign(num_seqs * max_pages, -1);  // unused entries stay invalid
    int next = 0;
    for (int b = 0; b < num_seqs; ++b) {
      for (int i = 0; i < (context_lens[b] + kPageSize - 1) / kPageSize; ++i) {
        page_table[b * max_pages + i] = free_pages[next++];
      }
      HostTensor k = RandomTensor({context_lens[b], kHkv, kD}, rng);
      HostTensor v = RandomTensor({context_lens[b], kHkv, kD}, rng);
      keys.push_back(k.values());
      values.push_back(v.values());
      std::vector<int32_t> slots(context_lens[b]);
      for (int p = 0; p < context_lens[b]; ++p) {
        slots[p] = page_table[b * max_pages + p / kPageSize] * kPageSize + p % kPageSize;
      }
      EXPECT_TRUE(KvCacheWrite({.k = k.view(),
                                .v = v.view(),
                                .k_pages = k_pages.view(),
                                .v_pages = v_pages.view(),
                                .slot_mapping = slots.data()})
                      .ok());
    }
    cu_q = testing::PrefixSums(q_lens);
    q = RandomTensor({cu_q.back(), kHq, kD}, rng, -2.0f, 2.0f);
  }

  PagedAttentionParams Params(HostTensor& out) {
    return {.q = q.view(),
            .out = out.view(),
            .k_pages = k_pages.view(),
            .v_pages = v_pages.view(),
            .page_table = page_table.data(),
            .cu_q = cu_q.data(),
            .context_lens = context_lens.data(),
            .num_seqs = static_cast<int32_t>(q_lens.size()),
            .max_pages_per_seq = max_pages,
            .max_q_len = *std::max_element(q_lens.begin(), q_lens.end()),
            .max_context_len = *std::max_element(context_lens.begin(), context_lens.end()),
            .scale = 1.0f / std::sqrt(float{kD})};
  }

  // Dense causal GQA attention per sequence, in double, from the unpaged K/V.
  std::vector<double> Naive() const {
    std::vector<double> out(q.values().size());
    const double scale = 1.0 / std::sqrt(double{kD});
    for (size_t b = 0; b < q_lens.size(); ++b) {
      for (int i = 0; i < q_lens[b]; ++i) {
        const int t = cu_q[b] + i;
        const int pos = context_lens[b] - q_lens[b] + i;
        for (int h = 0; h < kHq; ++h) {
          const int g = h / (kHq / kHkv);
          std::vector<double> s(pos + 1);
          for (int j = 0; j <= pos; ++j) {
            double dot = 0.0;
            for (int e = 0; e < kD; ++e) {
              dot += double{q[(t * kHq + h) * kD + e]} * keys[b][(j * kHkv + g) * kD + e];
            }
            s[j] = dot * scale;
          }
          const double m = *std::max_element(s.begin(), s.end());
          double sum = 0.0;
          for (double& v : s) sum += (v = std::exp(v - m));
          for (int e = 0; e < kD; ++e) {
            double acc = 0.0;
            for (int j = 0; j <= pos; ++j) acc += s[j] / sum * values[b][(j * kHkv + g) * kD + e];
            out[(t * kHq + h) * kD + e] = acc;
          }
        }
      }
    }
    return out;
  }
};

TEST(CpuPagedAttentionTest, PrefillAndContinuationMatchDense) {
  std::mt19937 rng(1);
  // A fresh prompt, a continuation chunk after 9 cached tokens, a one-token decode, and an
  // idle sequence with no new queries.
  PagedBatch batch({7, 5, 1, 0}, {7, 14, 22, 3}, rng);
  HostTensor out(batch.q.shape());
  ASSERT_TRUE(PagedAttention(batch.Params(out)).ok());
  EXPECT_TRUE(AllClose(out.values(), batch.Naive(), 1e-5, 1e-6));
}

TEST(CpuPagedAttentionTest, DecodeMatchesDense) {
  std::mt19937 rng(2);
  PagedBatch batch({1, 1, 1}, {1, 9, 17}, rng);
  HostTensor out(batch.q.shape());
  ASSERT_TRUE(PagedAttention(batch.Params(out)).ok());
  EXPECT_TRUE(AllClose(out.values(), batch.Naive(), 1e-5, 1e-6));
}

TEST(CpuPagedAttentionTest, VarlenBatchEqualsSeparateRunsBitwise) {
  std::mt19937 rng(3);
  PagedBatch batch({6, 1, 3}, {6, 11, 20}, rng);
  HostTensor out(batch.q.shape());
  ASSERT_TRUE(PagedAttention(batch.Params(out)).ok());
  for (int b = 0; b < 3; ++b) {
    SCOPED_TRACE(b);
    const int q_len = batch.q_lens[b];
    HostTensor q_alone({q_len, kHq, kD}), out_alone({q_len, kHq, kD});
    std::copy_n(batch.q.data() + batch.cu_q[b] * kHq * kD, q_len * kHq * kD, q_alone.data());
    const std::vector<int32_t> cu = {0, q_len};
    PagedAttentionParams p = batch.Params(out_alone);
    p.q = q_alone.view();
    p.page_table = batch.page_table.data() + b * batch.max_pages;
    p.cu_q = cu.data();
    p.context_lens = &batch.context_lens[b];
    p.num_seqs = 1;
    ASSERT_TRUE(PagedAttention(p).ok());
    EXPECT_TRUE(
        BitwiseEqual(out_alone.data(), out.data() + batch.cu_q[b] * kHq * kD, q_len * kHq * kD));
  }
}

TEST(CpuPagedAttentionTest, RejectsBadArguments) {
  std::mt19937 rng(4);
  PagedBatch batch({3, 1}, {5, 8}, rng);
  HostTensor out(batch.q.shape());
  ASSERT_TRUE(PagedAttention(batch.Params(out)).ok());
  auto with = [&](auto mutate) {
    return testing::CallChanged(PagedAttention, batch.Params(out), mutate);
  };
  const std::vector<int32_t> short_context = {2, 8};  // 3 queries need >= 3 keys
  const std::vector<int32_t> bad_cu = {0, 3, 5};      // 5 != T_total = 4
  std::vector<int32_t> bad_table = batch.page_table;
  bad_table[0] = kNumPages;
  EXPECT_TRUE(
      IsInvalidArgumentStatus(with([&](auto& p) { p.context_lens = short_context.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.cu_q = bad_cu.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.page_table = bad_table.data(); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.scale = 0.0f; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.max_q_len = 1; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.max_context_len = 5; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.max_pages_per_seq = 1; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.page_table = nullptr; })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.q = batch.q.view_as({4, 3, kD}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) { p.out = out.view_as({4, kHq, 8}); })));
  EXPECT_TRUE(IsInvalidArgumentStatus(with([&](auto& p) {
    p.k_pages = batch.k_pages.view_as(batch.k_pages.shape(), tensor::DType::kBF16);
  })));
}

TEST(CpuKvCacheWriteTest, WritesSlotsAndRejectsOutOfRange) {
  std::mt19937 rng(5);
  HostTensor k = RandomTensor({3, kHkv, kD}, rng), v = RandomTensor({3, kHkv, kD}, rng);
  HostTensor k_pages({4, kPageSize, kHkv, kD}), v_pages({4, kPageSize, kHkv, kD});
  const std::vector<int32_t> slots = {13, 0, 6};
  KvCacheWriteParams p{.k = k.view(),
                       .v = v.view(),
                       .k_pages = k_pages.view(),
                       .v_pages = v_pages.view(),
                       .slot_mapping = slots.data()};
  ASSERT_TRUE(KvCacheWrite(p).ok());
  const int row = kHkv * kD;
  for (int t = 0; t < 3; ++t) {
    EXPECT_TRUE(BitwiseEqual(k_pages.data() + slots[t] * row, k.data() + t * row, row));
    EXPECT_TRUE(BitwiseEqual(v_pages.data() + slots[t] * row, v.data() + t * row, row));
  }
  EXPECT_EQ(std::count(k_pages.values().begin(), k_pages.values().end(), 0.0f), (16 - 3) * row);

  const HostTensor before = k_pages;
  const std::vector<int32_t> out_of_range = {1, 16, 2};  // 4 pages * 4 rows = 16 slots
  p.slot_mapping = out_of_range.data();
  EXPECT_TRUE(IsInvalidArgumentStatus(KvCacheWrite(p)));
  EXPECT_TRUE(BitwiseEqual(k_pages.values(), before.values()));  // nothing written
  p.slot_mapping = slots.data();
  p.v = v.view_as({3, kHkv, kD / 2});
  EXPECT_TRUE(IsInvalidArgumentStatus(KvCacheWrite(p)));
  p.v = v.view();
  p.k_pages = k_pages.view_as({4, kPageSize, 1, 2 * kD});
  EXPECT_TRUE(IsInvalidArgumentStatus(KvCacheWrite(p)));
}

}  // namespace
}  // namespace gka::kernels::cpu

namespace gka::kernels::cpu {
namespace {

// q, k, v as column ranges of one fused [T, q|k|v] output: the strided KV write and attention
// give bitwise the packed results.
TEST(CpuPagedAttentionTest, StridedQkvMatchesPackedBitwise) {
  std::mt19937 rng(6);
  PagedBatch batch({3, 1}, {5, 9}, rng);
  const int64_t T = batch.q.shape()[0];
  constexpr int kQ = kHq * kD, kKv = kHkv * kD, kStride = kQ + 2 * kKv + 4;
  HostTensor packed_out(batch.q.shape()), strided_out(batch.q.shape());
  ASSERT_TRUE(PagedAttention(batch.Params(packed_out)).ok());
  HostTensor wide = testing::WideColumns(batch.q, kStride, 0);
  PagedAttentionParams p = batch.Params(strided_out);
  p.q = tensor::TensorView{wide.data(), tensor::DType::kF32, {T, kHq, kD}};
  p.q_row_stride = kStride;
  ASSERT_TRUE(PagedAttention(p).ok());
  EXPECT_TRUE(BitwiseEqual(strided_out.values(), packed_out.values()));
  p.q_row_stride = kQ - 1;
  EXPECT_TRUE(IsInvalidArgumentStatus(PagedAttention(p)));

  HostTensor k = RandomTensor({T, kHkv, kD}, rng), v = RandomTensor({T, kHkv, kD}, rng);
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(k.data() + t * kKv, kKv, wide.data() + t * kStride + kQ);
    std::copy_n(v.data() + t * kKv, kKv, wide.data() + t * kStride + kQ + kKv);
  }
  std::vector<int32_t> slots(T);
  std::iota(slots.begin(), slots.end(), 2);
  HostTensor kp({4, kPageSize, kHkv, kD}), vp({4, kPageSize, kHkv, kD});
  HostTensor kp_packed = kp, vp_packed = vp;
  ASSERT_TRUE(KvCacheWrite({.k = k.view(),
                            .v = v.view(),
                            .k_pages = kp_packed.view(),
                            .v_pages = vp_packed.view(),
                            .slot_mapping = slots.data()})
                  .ok());
  KvCacheWriteParams w{
      .k = tensor::TensorView{wide.data() + kQ, tensor::DType::kF32, {T, kHkv, kD}},
      .v = tensor::TensorView{wide.data() + kQ + kKv, tensor::DType::kF32, {T, kHkv, kD}},
      .row_stride = kStride,
      .k_pages = kp.view(),
      .v_pages = vp.view(),
      .slot_mapping = slots.data()};
  ASSERT_TRUE(KvCacheWrite(w).ok());
  EXPECT_TRUE(BitwiseEqual(kp.values(), kp_packed.values()));
  EXPECT_TRUE(BitwiseEqual(vp.values(), vp_packed.values()));
  w.row_stride = kKv - 1;
  EXPECT_TRUE(IsInvalidArgumentStatus(KvCacheWrite(w)));
}

}  // namespace
}  // namespace gka::kernels::cpu
