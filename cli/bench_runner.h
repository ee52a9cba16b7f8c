// gka bench serve: drives load at a gkaserve router through the C++ SDK and records what
// every request saw (bench_stats.h turns the records into numbers).
//
// Closed loop (`concurrency` > 0, no rate): that many requests are always in flight; the
// next one goes as soon as one finishes. Open loop (`request_rate` > 0, or a trace's own
// timestamps): requests go at the arrival process's times whatever the server does, capped
// by `max_concurrency` when set (a capped request waits, and its TTFT counts from when it
// was sent; the wait shows as send lag). The run stops sending at `num_requests` or after
// `duration`, whichever comes first, and waits for what is in flight.
//
// One launcher thread sends; the SDK's callbacks record chunk times on gRPC threads, so a
// slow consumer cannot delay the timestamps. No retries: a failed request counts as failed.
//
//   GKA_ASSIGN_OR_RETURN(auto client, gka::sdk::Client::Create({.address = addr}));
//   GKA_ASSIGN_OR_RETURN(RunResult run,
//                        RunLoad(*client, *workload, {.concurrency = 8, .num_requests = 100}));
//   Report report = Summarize(run.records, run.duration, slo);
//
// Thread-safety: RunLoad blocks its caller; hooks run on gRPC threads and must not block.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cli/bench_stats.h"
#include "cli/bench_workload.h"

namespace gka::sdk {
class Client;
}  // namespace gka::sdk

namespace gka::cli::bench {

struct RunOptions {
  int concurrency = 0;      // closed loop when > 0 and request_rate == 0
  double request_rate = 0;  // open loop, requests per second
  Arrival arrival = Arrival::kPoisson;
  // Open loop: most requests in flight at once (0: no cap).
  int max_concurrency = 0;
  // Replay the workload's trace timestamps (open loop without a rate).
  bool trace_arrivals = false;
  int num_requests = 0;  // 0: until `duration`
  absl::Duration duration = absl::InfiniteDuration();
  // Requests sent (closed loop, `concurrency` at a time) before the measured run; not
  // recorded. They warm connections, threads and caches.
  int warmup_requests = 0;
  bool ignore_eos = false;
  std::optional<int> prefill_num_iter;
  std::optional<int> decode_num_iter;
  // Bounds each request (the SDK's deadline).
  absl::Duration request_timeout = absl::Minutes(5);
  // Prefix of the request ids ("<prefix>-<index>"), so the server's logs name the run.
  std::string request_id_prefix = "bench";
  uint64_t seed = 0;
};

// Test seams; the defaults are the real clock and nothing.
struct RunHooks {
  std::function<absl::Time()> now = [] { return absl::Now(); };
  // After request `index` recorded its `chunks`-th token chunk (on a gRPC thread).
  std::function<void(int index, int chunks)> on_chunk_recorded;
};

struct RunResult {
  std::vector<RequestRecord> records;  // by index
  // First request sent to last one finished (bench_stats.h's benchmark duration).
  absl::Duration duration;
};

// InvalidArgument for options that name no loop or no bound. Errors of single requests are
// in their records, not here.
absl::StatusOr<RunResult> RunLoad(sdk::Client& client, const Workload& workload,
                                  const RunOptions& options, const RunHooks& hooks = {});

}  // namespace gka::cli::bench
