// Token sampling (sampling.h): penalties → temperature → top-k → top-p → min-p → draw.
//
// Every sequence is handled alone from its own logits row, config, history and (seed, step),
// so its token never depends on the batch. The draw is counter based: u = Uniform(seed, step)
// below, a pure function that the CUDA backend can reproduce:
//   z = SplitMix64(seed ^ SplitMix64(step ^ 0x5851F42D4C957F2D));  u = (z >> 11) · 2^-53
// and the token is the first kept id (ascending id order) whose cumulative weight exceeds
// u · (total kept weight), weights exp(l/T − max) in fp64.
//
// Edge cases: temperature 0 is greedy (lowest id among equal maxima); NaN logits count as
// -inf; if every logit is -inf the result is id 0 with logprob -inf. out_logprobs is the
// log-softmax of the chosen id over ids < vocab_limit after penalties and temperature (at
// temperature 0: of the penalised logits), before top-k/top-p/min-p. The reported
// alternatives (num_top_logprobs) are the first ids of that distribution in (s desc, id asc)
// order with the same log-softmax, so the chosen id's entry, when listed, equals its logprob.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "kernels/cpu/op_util.h"
#include "kernels/cpu/ops.h"

namespace gka::kernels::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 53 random bits, a pure function of (seed, step).
double Uniform(uint64_t seed, uint64_t step) {
  const uint64_t z = SplitMix64(seed ^ SplitMix64(step ^ 0x5851F42D4C957F2Dull));
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

absl::Status CheckConfig(int32_t b, const SamplingConfig& c) {
  auto bad = [b](absl::string_view what, double value) {
    return absl::InvalidArgumentError(
        absl::StrCat("Sample: sequence ", b, ": ", what, " (got ", value, ")"));
  };
  if (!(c.temperature >= 0.0f) || !std::isfinite(c.temperature)) {
    return bad("temperature must be >= 0", c.temperature);
  }
  if (c.top_k < 0) return bad("top_k must be >= 0 (0 = off)", c.top_k);
  if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) return bad("top_p must be in (0, 1]", c.top_p);
  if (!(c.min_p >= 0.0f && c.min_p <= 1.0f)) return bad("min_p must be in [0, 1]", c.min_p);
  if (!(c.repetition_penalty > 0.0f) || !std::isfinite(c.repetition_penalty)) {
    return bad("repetition_penalty must be > 0 (1 = off)", c.repetition_penalty);
  }
  if (!std::isfinite(c.presence_penalty)) return bad("presence_penalty", c.presence_penalty);
  if (!std::isfinite(c.frequency_penalty)) return bad("frequency_penalty", c.frequency_penalty);
  if (c.num_top_logprobs < 0 || c.num_top_logprobs > kMaxTopLogprobs) {
    return bad(absl::StrCat("num_top_logprobs must be in [0, ", kMaxTopLogprobs, "]"),
               c.num_top_logprobs);
  }
  return absl::OkStatus();
}

// HF repetition penalty on every distinct id of the history, then OpenAI frequency and
// presence penalties, written back into the logits row (the contract: modified in place).
void ApplyPenalties(const SamplingConfig& c, const int32_t* history, int64_t count, float* logits) {
  if (count == 0 ||
      (c.repetition_penalty == 1.0f && c.presence_penalty == 0.0f && c.frequency_penalty == 0.0f)) {
    return;
  }
  std::vector<int32_t> ids(history, history + count);
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    float& l = logits[ids[i]];
    if (c.repetition_penalty != 1.0f) {
      l = l > 0.0f ? l / c.repetition_penalty : l * c.repetition_penalty;
    }
    l = l - c.frequency_penalty * static_cast<float>(j - i) - c.presence_penalty;
    i = j;
  }
}

struct Choice {
  int32_t id;
  float logprob;
};

// The first min(k, vocab) ids by (s desc, id asc) into top_ids / top_logprobs (entries past
// them stay as the caller filled them). `logprob` maps an id to its log-softmax.
template <typename LogprobFn>
void TopLogprobs(const std::vector<float>& s, int32_t k, LogprobFn logprob, int32_t* top_ids,
                 float* top_logprobs) {
  const int64_t n = std::min<int64_t>(k, static_cast<int64_t>(s.size()));
  if (n == 0) return;
  std::vector<int32_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + n, order.end(),
                    [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
  for (int64_t j = 0; j < n; ++j) {
    top_ids[j] = order[j];
    top_logprobs[j] = logprob(order[j]);
  }
}

// Sampling for one sequence over logits[0, vocab); with c.num_top_logprobs > 0 also the
// alternatives into top_ids / top_logprobs ([kMaxTopLogprobs] each).
Choice SampleRow(const SamplingConfig& c, uint64_t step, const float* logits, int64_t vocab,
                 int32_t* top_ids, float* top_logprobs) {
  const bool greedy = c.temperature == 0.0f;
  const float inv_temp = greedy ? 1.0f : 1.0f / c.temperature;
  std::vector<float> s(vocab);
  int32_t best = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    s[i] = std::isnan(logits[i]) ? kNegInf : logits[i] * inv_temp;
    if (s[i] > s[best]) best = static_cast<int32_t>(i);  // strict: lowest id wins ties
  }
  const double max_s = s[best];
  const bool all_neg_inf = max_s == -std::numeric_limits<double>::infinity();
  if (all_neg_inf) {
    if (c.num_top_logprobs > 0) {
      TopLogprobs(
          s, c.num_top_logprobs, [](int32_t) { return kNegInf; }, top_ids, top_logprobs);
    }
    return {0, kNegInf};
  }
  // Unnormalised probabilities relative to the maximum (which has weight 1).
  std::vector<double> w(vocab);
  double total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    w[i] = std::exp(static_cast<double>(s[i]) - max_s);
    total += w[i];
  }
  const double log_total = std::log(total);
  auto logprob = [&](int32_t id) {
    return static_cast<float>(static_cast<double>(s[id]) - max_s - log_total);
  };
  if (c.num_top_logprobs > 0) TopLogprobs(s, c.num_top_logprobs, logprob, top_ids, top_logprobs);
  if (greedy) return {best, logprob(best)};

  std::vector<char> keep(vocab, 1);
  const bool use_top_k = c.top_k > 0 && c.top_k < vocab;
  const bool use_top_p = c.top_p < 1.0f;
  if (use_top_k || use_top_p) {
    // Candidates by descending logit, ascending id among equals.
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    auto before = [&](int32_t a, int32_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
    int64_t kept = vocab;
    if (use_top_k) {
      kept = c.top_k;
      std::nth_element(order.begin(), order.begin() + (kept - 1), order.end(), before);
    }
    std::sort(order.begin(), order.begin() + kept, before);
    if (use_top_p) {
      // Smallest prefix of the (top-k renormalised) distribution with mass >= top_p.
      double kept_total = 0.0;
      for (int64_t r = 0; r < kept; ++r) kept_total += w[order[r]];
      const double target = static_cast<double>(c.top_p) * kept_total;
      double cum = 0.0;
      int64_t r = 0;
      while (r < kept) {
        cum += w[order[r++]];
        if (cum >= target) break;
      }
      kept = r;
    }
    std::fill(keep.begin(), keep.end(), 0);
    for (int64_t r = 0; r < kept; ++r) keep[order[r]] = 1;
  }
  if (c.min_p > 0.0f) {
    // The max logit survives top-k/top-p, so prob_i / max_prob is w[i] itself.
    for (int64_t i = 0; i < vocab; ++i) {
      if (w[i] < static_cast<double>(c.min_p)) keep[i] = 0;
    }
  }
  double kept_total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (keep[i]) kept_total += w[i];
  }
  const double target = Uniform(c.seed, step) * kept_total;
  double cum = 0.0;
  int32_t chosen = best;  // rounding fallback: the most likely token
  for (int64_t i = 0; i < vocab; ++i) {
    if (!keep[i] || w[i] == 0.0) continue;
    cum += w[i];
    if (cum > target) {
      chosen = static_cast<int32_t>(i);
      break;
    }
  }
  return {chosen, logprob(chosen)};
}

}  // namespace

absl::Status Sample(const SampleParams& p) {
  constexpr absl::string_view kOp = "Sample";
  GKA_RETURN_IF_ERROR(internal::CheckF32(kOp, "logits", p.logits, 2));
  const int64_t vocab_size = p.logits.shape[1];
  if (p.logits.shape[0] != p.num_seqs) {
    return absl::InvalidArgumentError(absl::StrCat("Sample: logits ", p.logits.shape.ToString(),
                                                   " must have num_seqs = ", p.num_seqs, " rows"));
  }
  if (p.vocab_limit < 0 || p.vocab_limit > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Sample: vocab_limit ", p.vocab_limit, " must be in [0, V = ", vocab_size, "] (0 = all)"));
  }
  const int64_t vocab = p.vocab_limit == 0 ? vocab_size : p.vocab_limit;
  if (p.num_seqs == 0) return absl::OkStatus();
  if (vocab == 0) return absl::InvalidArgumentError("Sample: the vocabulary is empty");
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "configs", p.configs));
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "steps", p.steps));
  GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "out_ids", p.out_ids));
  bool any_top = false;
  for (int32_t b = 0; b < p.num_seqs; ++b) {
    GKA_RETURN_IF_ERROR(CheckConfig(b, p.configs[b]));
    any_top = any_top || p.configs[b].num_top_logprobs > 0;
  }
  if (any_top) {
    GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "out_top_ids", p.out_top_ids));
    GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "out_top_logprobs", p.out_top_logprobs));
  }
  if (p.history_offsets != nullptr) {
    const int64_t total = p.history_offsets[p.num_seqs];
    GKA_RETURN_IF_ERROR(
        internal::CheckPrefixSums(kOp, "history_offsets", p.history_offsets, p.num_seqs, total));
    if (total > 0) GKA_RETURN_IF_ERROR(internal::CheckNotNull(kOp, "history", p.history));
    for (int64_t i = 0; i < total; ++i) {
      if (p.history[i] < 0 || p.history[i] >= vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("Sample: history[", i, "] = ", p.history[i],
                                                       " is outside [0, ", vocab_size, ")"));
      }
    }
  }

  for (int32_t b = 0; b < p.num_seqs; ++b) {
    float* row = p.logits.data<float>() + b * vocab_size;
    if (p.history_offsets != nullptr) {
      ApplyPenalties(p.configs[b], p.history + p.history_offsets[b],
                     p.history_offsets[b + 1] - p.history_offsets[b], row);
    }
    int32_t* top_ids = nullptr;
    float* top_logprobs = nullptr;
    if (any_top) {
      top_ids = p.out_top_ids + static_cast<int64_t>(b) * kMaxTopLogprobs;
      top_logprobs = p.out_top_logprobs + static_cast<int64_t>(b) * kMaxTopLogprobs;
      std::fill(top_ids, top_ids + kMaxTopLogprobs, -1);
      std::fill(top_logprobs, top_logprobs + kMaxTopLogprobs, kNegInf);
    }
    const Choice choice = SampleRow(p.configs[b], p.steps[b], row, vocab, top_ids, top_logprobs);
    p.out_ids[b] = choice.id;
    if (p.out_logprobs != nullptr) p.out_logprobs[b] = choice.logprob;
  }
  return absl::OkStatus();
}

}  // namespace gka::kernels::cpu
