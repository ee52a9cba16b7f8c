#include "cli/bench_runner.h"

#include <deque>
#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gka/sdk/client.h"

namespace gka::cli::bench {

namespace {

sdk::Request MakeRequest(const PlannedRequest& p, const RunOptions& o, std::string id) {
  sdk::SamplingParams sampling;
  sampling.max_tokens = p.output_len;
  if (o.ignore_eos) sampling.ignore_eos = true;
  sdk::Request r = p.prompt_text.empty() ? sdk::Request::Tokens(p.prompt_ids, sampling)
                                         : sdk::Request::Text(p.prompt_text, sampling);
  r.request_id = std::move(id);
  r.tier = p.tier;
  r.prefill_num_iter = o.prefill_num_iter;
  r.decode_num_iter = o.decode_num_iter;
  return r;
}

// Sends requests and keeps their calls until they are done. Owned by RunLoad's thread; the
// SDK's callbacks touch only their own record and the counters under mu_.
class Launcher {
 public:
  Launcher(sdk::Client& client, const RunOptions& options, const RunHooks& hooks)
      : client_(client), options_(options), hooks_(hooks) {}

  ~Launcher() { WaitAll(); }

  // Sends `request`; its times go to `record` (nullptr for a warmup request) as offsets from
  // `start`. `hook_index` is what on_chunk_recorded is told.
  void Send(sdk::Request request, RequestRecord* record, absl::Time start, int hook_index) {
    if (record != nullptr) record->sent = hooks_.now() - start;
    const int key = next_key_++;
    {
      absl::MutexLock lock(&mu_);
      ++in_flight_;
    }
    sdk::StreamCallbacks callbacks;
    callbacks.on_chunk = [this, record, start, hook_index](const sdk::Chunk& chunk) {
      if (chunk.token_ids.empty()) return;  // text released late carries no new token
      const absl::Time t = hooks_.now();
      int chunks = 0;
      if (record != nullptr) {
        record->chunk_times.push_back(t - start);
        record->chunk_tokens.push_back(static_cast<int>(chunk.token_ids.size()));
        record->output_tokens += static_cast<int>(chunk.token_ids.size());
        chunks = static_cast<int>(record->chunk_times.size());
      }
      if (hooks_.on_chunk_recorded) hooks_.on_chunk_recorded(hook_index, chunks);
    };
    callbacks.on_done = [this, record, start, key](absl::StatusOr<sdk::Result> result) {
      const absl::Time t = hooks_.now();
      if (record != nullptr) Complete(*record, t - start, result);
      absl::MutexLock lock(&mu_);
      --in_flight_;
      finished_.push_back(key);
      changed_.SignalAll();
    };
    sdk::CallOptions call;
    call.timeout = options_.request_timeout;
    // No retries: a benchmark reports what the server answered the first time.
    call.retry = sdk::RetryPolicy{.max_attempts = 1};
    std::unique_ptr<sdk::CallHandle> handle =
        client_.GenerateStream(request, std::move(callbacks), call);
    std::vector<std::unique_ptr<sdk::CallHandle>> done;
    {
      absl::MutexLock lock(&mu_);
      handles_[key] = std::move(handle);
      TakeFinishedLocked(&done);
    }
    // `done` is destroyed here, outside mu_: a handle's destructor waits for its on_done,
    // which takes mu_.
  }

  // Blocks until fewer than `cap` requests are in flight (no wait for cap <= 0).
  void WaitForSlot(int cap) {
    if (cap <= 0) return;
    absl::MutexLock lock(&mu_);
    while (in_flight_ >= cap) changed_.Wait(&mu_);
  }

  void WaitAll() {
    std::map<int, std::unique_ptr<sdk::CallHandle>> handles;
    {
      absl::MutexLock lock(&mu_);
      while (in_flight_ > 0) changed_.Wait(&mu_);
      handles.swap(handles_);
      finished_.clear();
    }
  }

 private:
  static void Complete(RequestRecord& r, absl::Duration done,
                       const absl::StatusOr<sdk::Result>& result) {
    r.done = done;
    if (!result.ok()) {
      r.code = result.status().code();
      r.error = std::string(result.status().message());
      return;
    }
    r.code = absl::StatusCode::kOk;
    r.prompt_tokens = static_cast<int>(result->usage.prompt_tokens);
    // The server's count is the truth; the client's (from the chunks) stands in without one.
    if (result->usage.completion_tokens > 0) {
      r.output_tokens = static_cast<int>(result->usage.completion_tokens);
    }
    r.prefill_num_iter = result->num_iter.prefill;
    r.decode_num_iter = result->num_iter.decode;
    const sdk::Timings& t = result->timings;
    if (t.total_ms > 0 || t.ttft_ms > 0) {
      r.server_queue_ms = t.queue_ms;
      r.server_ttft_ms = t.ttft_ms;
      r.server_admission_ms = t.admission_ms;
      r.server_router_ms = t.router_ms;
      r.server_prefill_ms = t.prefill_ms;
      r.server_transfer_ms = t.transfer_ms;
    }
    r.degrade_rung = result->degrade_rung;
  }

  void TakeFinishedLocked(std::vector<std::unique_ptr<sdk::CallHandle>>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // A call can finish before its handle is stored; such keys wait for the next round.
    std::vector<int> keep;
    for (int key : finished_) {
      auto it = handles_.find(key);
      if (it == handles_.end()) {
        keep.push_back(key);
        continue;
      }
      out->push_back(std::move(it->second));
      handles_.erase(it);
    }
    finished_.swap(keep);
  }

  sdk::Client& client_;
  const RunOptions& options_;
  const RunHooks& hooks_;
  int next_key_ = 0;  // launcher thread only

  absl::Mutex mu_;
  absl::CondVar changed_;  // in_flight_ went down
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int> finished_ ABSL_GUARDED_BY(mu_);
  std::map<int, std::unique_ptr<sdk::CallHandle>> handles_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<RunResult> RunLoad(sdk::Client& client, const Workload& workload,
                                  const RunOptions& options, const RunHooks& hooks) {
  const bool open = options.request_rate > 0 || options.trace_arrivals;
  if (!open && options.concurrency <= 0) {
    return absl::InvalidArgumentError(
        "give --concurrency N (closed loop) or --request-rate R (open loop)");
  }
  if (options.request_rate < 0 || options.concurrency < 0 || options.max_concurrency < 0) {
    return absl::InvalidArgumentError("--request-rate and --concurrency must be >= 0");
  }
  if (options.num_requests <= 0 && options.duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError("give --num-requests or --duration to bound the run");
  }
  if (options.trace_arrivals && !workload.trace_has_arrivals()) {
    return absl::InvalidArgumentError("the trace has no timestamp on every line to replay");
  }
  const int cap = open ? options.max_concurrency : options.concurrency;

  Launcher launcher(client, options, hooks);
  for (int k = 0; k < options.warmup_requests; ++k) {
    launcher.WaitForSlot(std::max(1, cap));
    // Warmup requests reuse the workload's first requests' shapes.
    launcher.Send(MakeRequest(workload.Get(k), options,
                              absl::StrCat(options.request_id_prefix, "-warmup-", k)),
                  nullptr, hooks.now(), -1 - k);
  }
  launcher.WaitAll();

  // Records must not move while calls write into them: a deque keeps its elements in place.
  std::deque<RequestRecord> records;
  ArrivalProcess arrivals(options.request_rate, options.arrival, options.seed);
  const absl::Time start = hooks.now();
  for (int i = 0; options.num_requests <= 0 || i < options.num_requests; ++i) {
    // Built before waiting for its time, so that making a long prompt cannot delay it.
    const PlannedRequest planned = workload.Get(i);
    sdk::Request request =
        MakeRequest(planned, options, absl::StrCat(options.request_id_prefix, "-", i));
    absl::Duration scheduled;
    if (open) {
      scheduled = options.trace_arrivals ? *planned.trace_arrival : arrivals.Next();
      if (scheduled >= options.duration) break;
      const absl::Duration wait = start + scheduled - hooks.now();
      if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
      launcher.WaitForSlot(cap);
    } else {
      launcher.WaitForSlot(cap);
      scheduled = hooks.now() - start;
      if (scheduled >= options.duration) break;
    }
    RequestRecord& record = records.emplace_back();
    record.index = i;
    record.tier = planned.tier;
    record.scheduled = scheduled;
    launcher.Send(std::move(request), &record, start, i);
  }
  launcher.WaitAll();

  RunResult result;
  result.records.assign(std::make_move_iterator(records.begin()),
                        std::make_move_iterator(records.end()));
  result.duration = MeasuredDuration(result.records);
  return result;
}

}  // namespace gka::cli::bench
