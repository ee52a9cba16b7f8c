#include "cli/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gka::cli::bench {

namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// Per-request latencies of a successful request; nullopt fields where undefined.
struct Latencies {
  std::optional<double> ttft_ms, tpot_ms, mean_itl_ms;
  double e2e_ms = 0;
  std::vector<double> itl_ms;
};

Latencies Measure(const RequestRecord& r) {
  Latencies l;
  l.e2e_ms = Ms(r.done - r.sent);
  if (r.chunk_times.empty()) return l;
  l.ttft_ms = Ms(r.chunk_times.front() - r.sent);
  for (size_t i = 1; i < r.chunk_times.size(); ++i) {
    l.itl_ms.push_back(Ms(r.chunk_times[i] - r.chunk_times[i - 1]));
  }
  if (!l.itl_ms.empty()) {
    l.mean_itl_ms = std::accumulate(l.itl_ms.begin(), l.itl_ms.end(), 0.0) /
                    static_cast<double>(l.itl_ms.size());
  }
  if (r.output_tokens > 1) {
    l.tpot_ms = Ms(r.done - r.chunk_times.front()) / (r.output_tokens - 1);
  }
  return l;
}

bool Within(std::optional<double> value, std::optional<double> limit) {
  return !limit || !value || *value <= *limit;
}

bool MeetsSlo(const Latencies& l, const Slo& slo) {
  // A request that produced no token cannot meet a TTFT objective.
  if (slo.ttft_ms && !l.ttft_ms) return false;
  return Within(l.ttft_ms, slo.ttft_ms) && Within(l.mean_itl_ms, slo.itl_ms) &&
         Within(l.tpot_ms, slo.tpot_ms) && Within(l.e2e_ms, slo.e2e_ms);
}

Summary SummarizeGroup(const std::vector<const RequestRecord*>& group, double duration_s,
                       const Slo& slo) {
  Summary s;
  std::vector<double> ttft, itl, tpot, e2e, overhead, router, admission, queue, prefill, transfer;
  for (const RequestRecord* r : group) {
    ++s.sent;
    ++s.by_code[absl::StatusCodeToString(r->code)];
    if (r->code != absl::StatusCode::kOk) {
      ++s.failed;
      s.error_examples.emplace(absl::StatusCodeToString(r->code), r->error);
      continue;
    }
    ++s.ok;
    s.input_tokens += r->prompt_tokens;
    s.output_tokens += r->output_tokens;
    if (r->decode_num_iter > 0) ++s.decode_num_iter[r->decode_num_iter];
    ++s.degrade_rung[r->degrade_rung];
    if (r->server_router_ms >= 0) router.push_back(r->server_router_ms);
    if (r->server_admission_ms >= 0) admission.push_back(r->server_admission_ms);
    if (r->server_queue_ms >= 0) queue.push_back(r->server_queue_ms);
    if (r->server_prefill_ms >= 0) prefill.push_back(r->server_prefill_ms);
    if (r->server_transfer_ms >= 0) transfer.push_back(r->server_transfer_ms);
    const Latencies l = Measure(*r);
    if (l.ttft_ms) ttft.push_back(*l.ttft_ms);
    if (l.ttft_ms && r->server_ttft_ms >= 0) overhead.push_back(*l.ttft_ms - r->server_ttft_ms);
    if (l.tpot_ms) tpot.push_back(*l.tpot_ms);
    itl.insert(itl.end(), l.itl_ms.begin(), l.itl_ms.end());
    e2e.push_back(l.e2e_ms);
    if (!slo.empty() && MeetsSlo(l, slo)) ++s.good;
  }
  if (duration_s > 0) {
    s.request_throughput = s.ok / duration_s;
    s.output_token_throughput = static_cast<double>(s.output_tokens) / duration_s;
    s.total_token_throughput = static_cast<double>(s.input_tokens + s.output_tokens) / duration_s;
    s.goodput = s.good / duration_s;
  }
  s.ttft_ms = Describe(std::move(ttft));
  s.itl_ms = Describe(std::move(itl));
  s.tpot_ms = Describe(std::move(tpot));
  s.e2e_ms = Describe(std::move(e2e));
  s.client_overhead_ms = Describe(std::move(overhead));
  s.router_ms = Describe(std::move(router));
  s.admission_ms = Describe(std::move(admission));
  s.queue_ms = Describe(std::move(queue));
  s.prefill_ms = Describe(std::move(prefill));
  s.transfer_ms = Describe(std::move(transfer));
  return s;
}

// 1, 2 or 5 times a power of ten, at least `raw`.
double RoundUpNice(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  }
  return 10 * p;
}

std::vector<TimelineBin> Timeline(const std::vector<RequestRecord>& records, double duration_s,
                                  double bin_s) {
  const int n = std::max(1, static_cast<int>(std::ceil(duration_s / bin_s - 1e-9)));
  std::vector<TimelineBin> bins(n);
  std::vector<std::vector<double>> ttft(n), itl(n);
  auto bin_of = [&](absl::Duration t) {
    return std::clamp(static_cast<int>(absl::ToDoubleSeconds(t) / bin_s), 0, n - 1);
  };
  for (const RequestRecord& r : records) {
    if (r.code != absl::StatusCode::kOk) continue;
    bins[bin_of(r.done)].requests_per_s += 1;
    for (size_t i = 0; i < r.chunk_times.size(); ++i) {
      const int b = bin_of(r.chunk_times[i]);
      bins[b].output_tokens_per_s += r.chunk_tokens[i];
      if (i == 0) {
        ttft[b].push_back(Ms(r.chunk_times[0] - r.sent));
      } else {
        itl[b].push_back(Ms(r.chunk_times[i] - r.chunk_times[i - 1]));
      }
    }
  }
  for (int b = 0; b < n; ++b) {
    TimelineBin& bin = bins[b];
    bin.t_s = b * bin_s;
    // The last bin may be shorter than the others: rates use its real width.
    const double width = std::min(bin_s, std::max(duration_s - bin.t_s, 1e-9));
    bin.requests_per_s /= width;
    bin.output_tokens_per_s /= width;
    const absl::Duration end = absl::Seconds(bin.t_s + width);
    for (const RequestRecord& r : records) {
      if (r.sent <= end && r.done > end) ++bin.in_flight;
    }
    bin.ttft_ms = Describe(std::move(ttft[b]));
    bin.itl_ms = Describe(std::move(itl[b]));
  }
  return bins;
}

absl::StatusOr<double> ParseMs(absl::string_view key, absl::string_view value) {
  double ms = 0;
  absl::Duration d;
  if (absl::SimpleAtod(value, &ms)) {
    // A bare number is milliseconds, as in vLLM's --goodput.
  } else if (absl::ParseDuration(value, &d)) {
    ms = Ms(d);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--slo ", key, "=", value, ": not a duration (use e.g. 500ms, 0.5s or 500)"));
  }
  if (!(ms > 0) || !std::isfinite(ms)) {
    return absl::InvalidArgumentError(absl::StrCat("--slo ", key, "=", value, ": must be > 0"));
  }
  return ms;
}

}  // namespace

double Percentile(const std::vector<double>& sorted, double q) {
  const double pos = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

Distribution Describe(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = static_cast<int>(values.size());
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / d.count;
  double var = 0;
  for (double v : values) var += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(var / d.count);  // population std, as numpy.std (and vLLM) report it
  d.min = values.front();
  d.max = values.back();
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  return d;
}

absl::StatusOr<Slo> ParseSlo(absl::string_view text) {
  Slo slo;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    const std::string key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(kv.first));
    const absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    std::optional<double>* field = nullptr;
    if (key == "ttft") field = &slo.ttft_ms;
    if (key == "itl") field = &slo.itl_ms;
    if (key == "tpot") field = &slo.tpot_ms;
    if (key == "e2e" || key == "e2el") field = &slo.e2e_ms;
    if (field == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--slo: unknown objective '", key, "' (use ttft, itl, tpot, e2e)"));
    }
    absl::StatusOr<double> ms = ParseMs(key, value);
    if (!ms.ok()) return ms.status();
    *field = *ms;
  }
  return slo;
}

absl::Duration MeasuredDuration(const std::vector<RequestRecord>& records) {
  if (records.empty()) return absl::ZeroDuration();
  absl::Duration first = absl::InfiniteDuration(), last = -absl::InfiniteDuration();
  for (const RequestRecord& r : records) {
    first = std::min(first, r.sent);
    last = std::max(last, r.done);
  }
  return last - first;
}

std::string TierLabel(absl::string_view tier) {
  return tier.empty() ? "default" : std::string(tier);
}

Report Summarize(const std::vector<RequestRecord>& records, absl::Duration duration, const Slo& slo,
                 absl::Duration bin) {
  Report report;
  report.duration_s = absl::ToDoubleSeconds(duration);
  report.slo = slo;
  std::vector<const RequestRecord*> all;
  std::map<std::string, std::vector<const RequestRecord*>> by_tier;
  std::vector<double> lag;
  for (const RequestRecord& r : records) {
    all.push_back(&r);
    by_tier[TierLabel(r.tier)].push_back(&r);
    lag.push_back(Ms(r.sent - r.scheduled));
  }
  report.overall = SummarizeGroup(all, report.duration_s, slo);
  for (const auto& [tier, group] : by_tier) {
    report.tiers[tier] = SummarizeGroup(group, report.duration_s, slo);
  }
  report.send_lag_ms = Describe(std::move(lag));
  if (report.duration_s > 0) {
    report.timeline_bin_s = bin > absl::ZeroDuration() ? absl::ToDoubleSeconds(bin)
                                                       : RoundUpNice(report.duration_s / 30);
    report.timeline = Timeline(records, report.duration_s, report.timeline_bin_s);
  }
  return report;
}

nlohmann::json ToJson(const Distribution& d) {
  return {{"count", d.count}, {"mean", d.mean}, {"std", d.std}, {"min", d.min},
          {"max", d.max},     {"p50", d.p50},   {"p90", d.p90}, {"p99", d.p99}};
}

nlohmann::json ToJson(const Slo& slo) {
  nlohmann::json j = nlohmann::json::object();
  if (slo.ttft_ms) j["ttft_ms"] = *slo.ttft_ms;
  if (slo.itl_ms) j["itl_ms"] = *slo.itl_ms;
  if (slo.tpot_ms) j["tpot_ms"] = *slo.tpot_ms;
  if (slo.e2e_ms) j["e2e_ms"] = *slo.e2e_ms;
  return j;
}

nlohmann::json ToJson(const Summary& s) {
  nlohmann::json iters = nlohmann::json::object();
  for (const auto& [n, count] : s.decode_num_iter) iters[absl::StrCat(n)] = count;
  nlohmann::json rungs = nlohmann::json::object();
  for (const auto& [n, count] : s.degrade_rung) rungs[absl::StrCat(n)] = count;
  return {{"requests",
           {{"sent", s.sent},
            {"ok", s.ok},
            {"failed", s.failed},
            {"by_code", s.by_code},
            {"error_examples", s.error_examples}}},
          {"input_tokens", s.input_tokens},
          {"output_tokens", s.output_tokens},
          {"request_throughput", s.request_throughput},
          {"output_token_throughput", s.output_token_throughput},
          {"total_token_throughput", s.total_token_throughput},
          {"ttft_ms", ToJson(s.ttft_ms)},
          {"itl_ms", ToJson(s.itl_ms)},
          {"tpot_ms", ToJson(s.tpot_ms)},
          {"e2e_ms", ToJson(s.e2e_ms)},
          {"client_overhead_ms", ToJson(s.client_overhead_ms)},
          {"good_requests", s.good},
          {"goodput", s.goodput},
          {"decode_num_iter", iters},
          {"degrade_rung", rungs},
          {"router_ms", ToJson(s.router_ms)},
          {"admission_ms", ToJson(s.admission_ms)},
          {"server_queue_ms", ToJson(s.queue_ms)},
          {"server_prefill_ms", ToJson(s.prefill_ms)},
          {"server_transfer_ms", ToJson(s.transfer_ms)}};
}

nlohmann::json ToJson(const Report& r) {
  nlohmann::json tiers = nlohmann::json::object();
  for (const auto& [name, s] : r.tiers) tiers[name] = ToJson(s);
  nlohmann::json timeline = nlohmann::json::array();
  for (const TimelineBin& b : r.timeline) {
    timeline.push_back({{"t_s", b.t_s},
                        {"requests_per_s", b.requests_per_s},
                        {"output_tokens_per_s", b.output_tokens_per_s},
                        {"in_flight", b.in_flight},
                        {"ttft_ms", ToJson(b.ttft_ms)},
                        {"itl_ms", ToJson(b.itl_ms)}});
  }
  return {{"duration_s", r.duration_s},
          {"slo", ToJson(r.slo)},
          {"overall", ToJson(r.overall)},
          {"tiers", tiers},
          {"send_lag_ms", ToJson(r.send_lag_ms)},
          {"timeline_bin_s", r.timeline_bin_s},
          {"timeline", timeline}};
}

nlohmann::json ToJson(const RequestRecord& r) {
  nlohmann::json chunks = nlohmann::json::array();
  for (size_t i = 0; i < r.chunk_times.size(); ++i) {
    chunks.push_back({Ms(r.chunk_times[i]), r.chunk_tokens[i]});
  }
  return {{"index", r.index},
          {"tier", TierLabel(r.tier)},
          {"scheduled_ms", Ms(r.scheduled)},
          {"sent_ms", Ms(r.sent)},
          {"done_ms", Ms(r.done)},
          {"code", absl::StatusCodeToString(r.code)},
          {"error", r.error},
          {"prompt_tokens", r.prompt_tokens},
          {"output_tokens", r.output_tokens},
          {"prefill_num_iter", r.prefill_num_iter},
          {"decode_num_iter", r.decode_num_iter},
          {"server_queue_ms", r.server_queue_ms},
          {"server_ttft_ms", r.server_ttft_ms},
          {"server_admission_ms", r.server_admission_ms},
          {"server_router_ms", r.server_router_ms},
          {"server_prefill_ms", r.server_prefill_ms},
          {"server_transfer_ms", r.server_transfer_ms},
          {"degrade_rung", r.degrade_rung},
          {"chunks_ms_tokens", chunks}};
}

std::string FormatReport(const Report& r) {
  std::string out;
  auto dist = [&](absl::string_view name, const Distribution& d) {
    absl::StrAppendFormat(&out, "  %-6s mean %9.2f  p50 %9.2f  p90 %9.2f  p99 %9.2f  (n=%d)\n",
                          name, d.mean, d.p50, d.p90, d.p99, d.count);
  };
  auto section = [&](absl::string_view title, const Summary& s) {
    absl::StrAppendFormat(&out, "%s: %d sent, %d ok, %d failed", title, s.sent, s.ok, s.failed);
    for (const auto& [code, n] : s.by_code) {
      if (code != "OK") absl::StrAppendFormat(&out, " [%s %d]", code, n);
    }
    absl::StrAppendFormat(&out, "\n  throughput %.3f req/s, %.1f output tok/s, %.1f total tok/s\n",
                          s.request_throughput, s.output_token_throughput,
                          s.total_token_throughput);
    if (!r.slo.empty()) {
      absl::StrAppendFormat(&out, "  goodput %.3f req/s (%d of %d ok met the SLO)\n", s.goodput,
                            s.good, s.ok);
    }
    out += "  latency (ms):\n";
    dist("TTFT", s.ttft_ms);
    dist("ITL", s.itl_ms);
    dist("TPOT", s.tpot_ms);
    dist("E2E", s.e2e_ms);
    if (s.router_ms.count > 0) dist("router", s.router_ms);
    if (s.admission_ms.count > 0 && s.admission_ms.max > 0) dist("admit", s.admission_ms);
    if (s.prefill_ms.count > 0 && s.prefill_ms.max > 0) {  // the server's share of TTFT
      dist("queue", s.queue_ms);
      dist("prefil", s.prefill_ms);
      dist("xfer", s.transfer_ms);
    }
    if (s.degrade_rung.size() > 1 ||
        (s.degrade_rung.size() == 1 && s.degrade_rung.begin()->first > 0)) {
      out += "  served on degrade rung:";
      for (const auto& [rung, n] : s.degrade_rung) absl::StrAppendFormat(&out, " %d: %d", rung, n);
      out += "\n";
    }
  };
  absl::StrAppendFormat(&out, "benchmark duration %.3f s\n", r.duration_s);
  section("overall", r.overall);
  if (r.tiers.size() > 1) {
    for (const auto& [name, s] : r.tiers) section(absl::StrCat("tier ", name), s);
  }
  if (r.send_lag_ms.count > 0 && r.send_lag_ms.p99 > 10) {
    absl::StrAppendFormat(&out,
                          "warning: requests went out late against the schedule (p99 %.1f ms): "
                          "the client limited the offered load\n",
                          r.send_lag_ms.p99);
  }
  return out;
}

}  // namespace gka::cli::bench
