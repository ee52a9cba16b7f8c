// gka bench serve: what one benchmark request recorded, and the statistics made from the
// records (per tier and overall), with the metric definitions of vLLM's `bench serve` and
// NVIDIA's GenAI-Perf:
//
//   TTFT  first token received - request sent (so it includes every queue on the way)
//   ITL   one sample per gap between consecutive chunks that carried tokens (per gap, not
//         per request; a chunk of several tokens is one arrival, as in vLLM)
//   TPOT  per request, (end - first token) / (output tokens - 1); requests of one token
//         have none
//   E2E   end (the call's completion) - request sent
//   throughput  successful requests (or their tokens) / benchmark duration, where the
//         duration runs from the first request sent to the last one finished
//   goodput  successful requests per second that met every SLO given (TTFT, the request's
//         mean ITL, TPOT, E2E)
// Failed requests count by status code and are left out of every latency and throughput
// figure. Percentiles interpolate linearly between order statistics (numpy's default, as
// vLLM reports them).
//
// Owns nothing but values; no gRPC, no clock: times are offsets from the run's start, so the
// same records give the same numbers anywhere (tests build records by hand).
//
//   gka::cli::bench::Slo slo;
//   GKA_ASSIGN_OR_RETURN(slo, gka::cli::bench::ParseSlo("ttft=500ms,itl=50ms"));
//   gka::cli::bench::Report report = gka::cli::bench::Summarize(records, duration, slo);
//   nlohmann::json j = gka::cli::bench::ToJson(report);
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace gka::cli::bench {

// One request as the load generator saw it. Times are offsets from the run's start.
struct RequestRecord {
  int index = 0;
  // The tier asked for; "" (the server's default tier) is reported as "default".
  std::string tier;
  // When the arrival process wanted it sent, and when it was.
  absl::Duration scheduled;
  absl::Duration sent;
  // Arrival of every chunk that carried tokens, and how many tokens each carried.
  std::vector<absl::Duration> chunk_times;
  std::vector<int> chunk_tokens;
  // The call's completion (Final received, or the error).
  absl::Duration done;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string error;
  // From the server's Final when there is one; else what the client counted.
  int prompt_tokens = 0;
  int output_tokens = 0;
  // What the server reports it used (0 when unknown).
  int prefill_num_iter = 0;
  int decode_num_iter = 0;
  // The router's own timings from Final (ms); negative when absent.
  double server_queue_ms = -1;
  double server_ttft_ms = -1;
  // The router's admission-queue wait and its own work before the first token (Final's
  // timings; negative when absent), and the degrade-ladder rung that served the request.
  double server_admission_ms = -1;
  double server_router_ms = -1;
  // Where the server's TTFT went (Final's timings; negative when absent): queue_ms is router
  // admission -> the prefill worker starting (includes the decode worker's Reserve),
  // prefill_ms the prompt's compute, transfer_ms the hand-off to the decode worker.
  double server_prefill_ms = -1;
  double server_transfer_ms = -1;
  int degrade_rung = 0;
};

// A latency distribution in milliseconds.
struct Distribution {
  int count = 0;
  double mean = 0, std = 0, min = 0, max = 0, p50 = 0, p90 = 0, p99 = 0;
};

// Linear interpolation between order statistics (numpy.percentile's default); q in [0, 100].
// `sorted` must be ascending and non-empty.
double Percentile(const std::vector<double>& sorted, double q);
Distribution Describe(std::vector<double> values);

// Service-level objectives; an unset one is not checked.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> itl_ms;  // the request's mean gap between token chunks
  std::optional<double> tpot_ms;
  std::optional<double> e2e_ms;
  bool empty() const { return !ttft_ms && !itl_ms && !tpot_ms && !e2e_ms; }
};

// "ttft=500ms,itl=50ms" (also tpot=, e2e=). Values are absl durations ("0.5s", "500ms") or
// plain numbers of milliseconds. InvalidArgument naming the bad item otherwise.
absl::StatusOr<Slo> ParseSlo(absl::string_view text);

// Statistics of one group of requests (one tier, or all).
struct Summary {
  int sent = 0;
  int ok = 0;
  int failed = 0;
  // Status code name ("RESOURCE_EXHAUSTED", ...) -> requests; "OK" included.
  std::map<std::string, int> by_code;
  // Status code name -> the first failed request's message, to tell causes apart.
  std::map<std::string, std::string> error_examples;
  int64_t input_tokens = 0;            // successful requests only
  int64_t output_tokens = 0;           // successful requests only
  double request_throughput = 0;       // ok / duration
  double output_token_throughput = 0;  // output tokens / duration
  double total_token_throughput = 0;   // (input + output tokens) / duration
  Distribution ttft_ms, itl_ms, tpot_ms, e2e_ms;
  // Client-observed TTFT minus the router's own ttft_ms (network, gRPC and client work);
  // count 0 when the server gave no timings.
  Distribution client_overhead_ms;
  // Requests that met the SLO (0 without one), and per second over the duration.
  int good = 0;
  double goodput = 0;
  // decode num_iter value -> successful requests served with it.
  std::map<int, int> decode_num_iter;
  // Degrade-ladder rung -> successful requests served on it.
  std::map<int, int> degrade_rung;
  // The router's own time before the first token (Timings.router_ms) and the time waiting in
  // its admission queue (Timings.admission_ms); count 0 when the server gave no timings.
  Distribution router_ms;
  Distribution admission_ms;
  // The server's queue (Timings.queue_ms), prefill and hand-off times; count 0 without timings.
  Distribution queue_ms;
  Distribution prefill_ms;
  Distribution transfer_ms;
};

// One time bin of the run, for the plots.
struct TimelineBin {
  double t_s = 0;                  // bin start, seconds from the run's start
  double requests_per_s = 0;       // successful completions in the bin
  double output_tokens_per_s = 0;  // tokens by arrival time
  int in_flight = 0;               // requests sent but not finished at the bin's end
  Distribution ttft_ms;            // requests whose first token arrived in the bin
  Distribution itl_ms;             // gaps that ended in the bin
};

struct Report {
  double duration_s = 0;
  Slo slo;
  Summary overall;
  std::map<std::string, Summary> tiers;
  std::vector<TimelineBin> timeline;
  double timeline_bin_s = 0;
  // How late the client sent requests against the arrival schedule (ms): when large, the
  // load generator, not the server, limited the offered rate.
  Distribution send_lag_ms;
};

// `duration` is the benchmark's duration (first sent to last finished). `bin` is the
// timeline's bin width; zero chooses about 30 bins of a round width.
Report Summarize(const std::vector<RequestRecord>& records, absl::Duration duration, const Slo& slo,
                 absl::Duration bin = absl::ZeroDuration());

// From the earliest `sent` to the latest `done` of `records`; zero for none.
absl::Duration MeasuredDuration(const std::vector<RequestRecord>& records);

std::string TierLabel(absl::string_view tier);

nlohmann::json ToJson(const Distribution& d);
nlohmann::json ToJson(const Slo& slo);
nlohmann::json ToJson(const Summary& s);
nlohmann::json ToJson(const Report& r);
nlohmann::json ToJson(const RequestRecord& r);

// Human-readable table (vLLM-like) of the overall and per-tier results.
std::string FormatReport(const Report& r);

}  // namespace gka::cli::bench
