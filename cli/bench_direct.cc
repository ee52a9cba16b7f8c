// `gka bench direct`: the router's added latency, measured by doing the router's job from the
// client (issue 9: "the router's own added latency, measured against real workers called
// directly"). Closed loop: each of --concurrency threads sends a request as the router would
// — Reserve on the decode worker, then Prefill (with the ticket) on the prefill worker and,
// concurrently, StartDecode — and records when tokens arrive, exactly as `gka bench serve`
// records them through the router. Open loop (--request-rate R --duration S): requests sent
// on the arrival schedule `gka bench serve` draws from the same --seed and --arrival, one
// thread per request in flight, so a rate sweep of both paths offers the same load. Running both
// against the same cluster with the same workload gives TTFT/ITL/E2E through the router vs direct;
// the difference is what the router adds (its own work, the extra gRPC hop, relaying every token).
//
//   gka bench direct --prefill HOST:PORT --decode HOST:PORT --concurrency 4 --num-requests 200 \
//       --input-len 128 --output-len 32 [--vocab 4096] [--prefill-num-iter 10] \
//       [--decode-num-iter 10] [--out direct.json]
//   gka bench direct ... --request-rate 4 --duration 30 [--arrival poisson] [--seed 1]
//
// The prompt is random token ids below --vocab; greedy, EOS ignored (every request gives
// exactly --output-len tokens). Requests go to the named workers only (no placement).
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cli/bench_stats.h"
#include "cli/bench_workload.h"
#include "cli/client_commands.h"
#include "cli/commands.h"
#include "common/base/status.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::cli {
namespace {

namespace w = ::gka::worker::v1;
using bench::RequestRecord;

struct DirectFlags {
  std::string prefill_addr;
  std::string decode_addr;
  TlsFlags tls;  // the workers' internal ports
  int concurrency = 1;
  int num_requests = 100;
  // Open loop when > 0: --duration bounds the run.
  double request_rate = 0;
  double duration_s = 0;
  std::string arrival = "poisson";
  int input_len = 128;
  int output_len = 32;
  int vocab = 4096;
  int prefill_num_iter = 10;
  int decode_num_iter = 10;
  int warmup_requests = 4;
  double timeout_s = 60;
  uint64_t seed = 1;
  std::string out;
};

struct Clients {
  std::unique_ptr<w::PrefillService::Stub> prefill;
  std::unique_ptr<w::DecodeService::Stub> decode;
};

// One request the router's way; times are offsets from `start`.
void RunOne(const DirectFlags& f, Clients& c, const std::string& id,
            const std::vector<int32_t>& prompt, absl::Time start, RequestRecord* r) {
  const absl::Time deadline = absl::Now() + absl::Seconds(f.timeout_s);
  r->sent = absl::Now() - start;
  r->prompt_tokens = static_cast<int>(prompt.size());
  auto fail = [&](const absl::Status& s) {
    r->code = s.code();
    r->error = std::string(s.message());
    r->done = absl::Now() - start;
  };
  w::ReserveRequest reserve;
  reserve.set_request_id(id);
  reserve.set_prompt_tokens(static_cast<uint32_t>(prompt.size()));
  reserve.set_max_new_tokens(static_cast<uint32_t>(f.output_len));
  reserve.set_lease_ms(30000);
  w::TransferTicket ticket;
  {
    grpc::ClientContext ctx;
    rpc::SetDeadline(ctx, deadline);
    const absl::Status s =
        rpc::FromGrpcStatus(c.decode->Reserve(&ctx, reserve, &ticket), "Reserve");
    if (!s.ok()) return fail(s);
  }
  w::WorkerSamplingParams sampling;
  sampling.set_ignore_eos(true);

  // Prefill on the callback API while this thread reads the decode stream (the router opens
  // both at once too).
  w::PrefillRequest prefill;
  prefill.set_request_id(id);
  prefill.mutable_token_ids()->Add(prompt.begin(), prompt.end());
  *prefill.mutable_sampling() = sampling;
  prefill.set_prefill_num_iter(f.prefill_num_iter);
  *prefill.mutable_ticket() = ticket;
  w::PrefillResult prefill_result;
  grpc::ClientContext prefill_ctx;
  rpc::SetDeadline(prefill_ctx, deadline);
  absl::Mutex mu;
  bool first_sent = false;  // guarded by mu
  std::promise<grpc::Status> prefill_done;
  auto first_token = [&] {
    absl::MutexLock lock(&mu);
    if (first_sent) return;
    first_sent = true;
    r->chunk_times.push_back(absl::Now() - start);
    r->chunk_tokens.push_back(1);
  };
  c.prefill->async()->Prefill(&prefill_ctx, &prefill, &prefill_result, [&](grpc::Status status) {
    if (status.ok()) first_token();
    prefill_done.set_value(status);
  });

  w::StartDecodeRequest decode;
  decode.set_request_id(id);
  decode.set_transfer_id(ticket.transfer_id());
  *decode.mutable_sampling() = sampling;
  decode.set_max_new_tokens(static_cast<uint32_t>(f.output_len));
  decode.set_decode_num_iter(f.decode_num_iter);
  grpc::ClientContext decode_ctx;
  rpc::SetDeadline(decode_ctx, deadline);
  std::unique_ptr<grpc::ClientReader<w::DecodeStreamResponse>> stream =
      c.decode->StartDecode(&decode_ctx, decode);
  w::DecodeStreamResponse m;
  int tokens = 0;
  bool done = false;
  while (stream->Read(&m)) {
    if (m.kind_case() == w::DecodeStreamResponse::kStarted) {
      first_token();
      tokens = 1;
    } else if (m.kind_case() == w::DecodeStreamResponse::kTokens) {
      absl::MutexLock lock(&mu);
      r->chunk_times.push_back(absl::Now() - start);
      r->chunk_tokens.push_back(m.tokens().token_ids_size());
      tokens += m.tokens().token_ids_size();
    } else if (m.kind_case() == w::DecodeStreamResponse::kDone) {
      done = true;
    }
  }
  const absl::Status decode_status = rpc::FromGrpcStatus(stream->Finish(), "StartDecode");
  const absl::Status prefill_status =
      rpc::FromGrpcStatus(prefill_done.get_future().get(), "Prefill");
  if (!prefill_status.ok()) return fail(prefill_status);
  if (!decode_status.ok()) return fail(decode_status);
  if (!done) return fail(absl::InternalError("the decode stream ended without DecodeDone"));
  r->done = absl::Now() - start;
  r->code = absl::StatusCode::kOk;
  r->output_tokens = tokens;
  r->prefill_num_iter = f.prefill_num_iter;
  r->decode_num_iter = f.decode_num_iter;
}

// Sends request i at start + its arrival offset, each on its own thread (RunOne blocks for the
// request's life), until the schedule passes --duration.
std::vector<RequestRecord> RunOpenLoop(const DirectFlags& f, bench::Arrival arrival,
                                       Clients& clients, const std::string& prefix,
                                       const std::function<std::vector<int32_t>()>& prompt) {
  bench::ArrivalProcess arrivals(f.request_rate, arrival, f.seed);
  const absl::Duration duration = absl::Seconds(f.duration_s);
  // Records must not move while threads write into them.
  std::deque<RequestRecord> records;
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int i = 0;; ++i) {
    const absl::Duration scheduled = arrivals.Next();
    if (scheduled >= duration) break;
    std::vector<int32_t> ids = prompt();  // made before waiting, so it cannot delay the send
    const absl::Duration wait = start + scheduled - absl::Now();
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
    RequestRecord& r = records.emplace_back();
    r.index = i;
    r.scheduled = scheduled;
    threads.emplace_back([&f, &clients, &r, id = absl::StrCat(prefix, "-", i), ids = std::move(ids),
                          start] { RunOne(f, clients, id, ids, start, &r); });
  }
  for (std::thread& t : threads) t.join();
  return {std::make_move_iterator(records.begin()), std::make_move_iterator(records.end())};
}

absl::Status RunDirect(const DirectFlags& f) {
  if (f.concurrency < 1 || f.num_requests < 1 || f.input_len < 1 || f.output_len < 1 ||
      f.vocab < 2) {
    return absl::InvalidArgumentError(
        "--concurrency, --num-requests, --input-len, --output-len must be >= 1, --vocab >= 2");
  }
  if (f.request_rate < 0 || (f.request_rate > 0 && f.duration_s <= 0)) {
    return absl::InvalidArgumentError(
        "--request-rate must be >= 0; an open-loop run (--request-rate > 0) needs --duration");
  }
  GKA_ASSIGN_OR_RETURN(const bench::Arrival arrival, bench::ParseArrival(f.arrival));
  Clients clients;
  // The workers' ports are internal: mutual TLS unless they run --insecure.
  GKA_ASSIGN_OR_RETURN(const rpc::TlsConfig tls, ReadClientTls(f.tls));
  clients.prefill = w::PrefillService::NewStub(rpc::CreateChannel(f.prefill_addr, {.tls = tls}));
  clients.decode = w::DecodeService::NewStub(rpc::CreateChannel(f.decode_addr, {.tls = tls}));
  absl::BitGen rng(std::seed_seq{f.seed});
  const std::string prefix = absl::StrCat("direct-", absl::ToUnixMillis(absl::Now()));
  auto prompt = [&] {
    std::vector<int32_t> ids(f.input_len);
    for (int32_t& id : ids) id = absl::Uniform<int32_t>(rng, 1, f.vocab);
    return ids;
  };
  // Unmeasured warmup (connections, first transfers).
  for (int i = 0; i < f.warmup_requests; ++i) {
    RequestRecord r;
    RunOne(f, clients, absl::StrCat(prefix, "-warm-", i), prompt(), absl::Now(), &r);
    if (r.code != absl::StatusCode::kOk) {
      return absl::Status(r.code, absl::StrCat("warmup request failed: ", r.error));
    }
  }
  std::vector<RequestRecord> records;
  if (f.request_rate > 0) {
    records = RunOpenLoop(f, arrival, clients, prefix, prompt);
  } else {
    std::vector<std::vector<int32_t>> prompts(f.num_requests);
    for (auto& p : prompts) p = prompt();
    records.resize(f.num_requests);
    std::atomic<int> next{0};
    const absl::Time start = absl::Now();
    std::vector<std::thread> threads;
    for (int t = 0; t < f.concurrency; ++t) {
      threads.emplace_back([&] {
        for (int i = next++; i < f.num_requests; i = next++) {
          records[i].index = i;
          RunOne(f, clients, absl::StrCat(prefix, "-", i), prompts[i], start, &records[i]);
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }
  const bench::Report report = bench::Summarize(records, bench::MeasuredDuration(records), {});
  std::cerr << bench::FormatReport(report);
  const nlohmann::json result = {{"kind", "direct"},
                                 {"config",
                                  {{"prefill", f.prefill_addr},
                                   {"decode", f.decode_addr},
                                   {"concurrency", f.concurrency},
                                   {"request_rate", f.request_rate},
                                   {"duration_s", f.duration_s},
                                   {"arrival", f.arrival},
                                   {"seed", f.seed},
                                   {"num_requests", f.num_requests},
                                   {"input_len", f.input_len},
                                   {"output_len", f.output_len},
                                   {"prefill_num_iter", f.prefill_num_iter},
                                   {"decode_num_iter", f.decode_num_iter}}},
                                 {"report", bench::ToJson(report)}};
  if (f.out.empty()) {
    std::cout << result.dump(1) << std::endl;
  } else {
    std::ofstream(f.out) << result.dump(1) << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterBenchDirect(CLI::App& bench, Action& run) {
  auto f = std::make_shared<DirectFlags>();
  CLI::App* cmd = bench.add_subcommand(
      "direct",
      "Closed loop straight to one prefill and one decode worker (the router's protocol, "
      "without the router): the baseline for the router's added latency");
  cmd->add_option("--prefill", f->prefill_addr, "prefill worker HOST:PORT")->required();
  cmd->add_option("--decode", f->decode_addr, "decode worker HOST:PORT")->required();
  AddTlsFlags(*cmd, f->tls);
  cmd->add_option("--concurrency", f->concurrency, "requests in flight")->capture_default_str();
  cmd->add_option("--num-requests", f->num_requests, "closed loop: measured requests");
  cmd->add_option("--request-rate", f->request_rate,
                  "open loop: requests per second (with --duration; 0: closed loop)");
  cmd->add_option("--duration", f->duration_s, "open loop: seconds of arrivals");
  cmd->add_option("--arrival", f->arrival, "open-loop arrivals: poisson or constant")
      ->capture_default_str();
  cmd->add_option("--input-len", f->input_len, "prompt tokens")->capture_default_str();
  cmd->add_option("--output-len", f->output_len, "generated tokens")->capture_default_str();
  cmd->add_option("--vocab", f->vocab, "prompt ids are drawn from [1, VOCAB)")
      ->capture_default_str();
  cmd->add_option("--prefill-num-iter", f->prefill_num_iter, "GKA iterations (prompt)")
      ->capture_default_str();
  cmd->add_option("--decode-num-iter", f->decode_num_iter, "GKA iterations (decode)")
      ->capture_default_str();
  cmd->add_option("--warmup-requests", f->warmup_requests, "unmeasured requests first")
      ->capture_default_str();
  cmd->add_option("--timeout", f->timeout_s, "per-request deadline, seconds")
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "prompt seed")->capture_default_str();
  cmd->add_option("--out", f->out, "result JSON (stdout without)");
  cmd->callback([f, &run] { run = [f] { return RunDirect(*f); }; });
}

}  // namespace gka::cli
