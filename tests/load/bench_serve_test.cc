// gka bench serve's statistics and load loops, against hand-made records and against a
// synthetic in-test gka.serving.v1.GenerateService with known delays.
//
// The exact tests run the real client path (SDK, gRPC, callbacks) on a virtual clock: the
// synthetic server advances it by each scripted delay and waits until the load generator has
// recorded a chunk before moving on, so every TTFT, ITL, TPOT and E2E the generator reports
// is known to the microsecond. Real-clock tests then check what only real time shows: open-
// loop schedules, concurrency caps and the duration bound.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cli/bench_plot.h"
#include "cli/bench_runner.h"
#include "cli/bench_stats.h"
#include "cli/bench_workload.h"
#include "common/rpc/server.h"
#include "gka/sdk/client.h"
#include "gka/serving/v1/serving.grpc.pb.h"

namespace gka::cli::bench {
namespace {

namespace pb = ::gka::serving::v1;
using absl::Milliseconds;

// ------------------------------------------------------------------------------------------
// Percentiles and summaries on hand-made records

TEST(BenchPercentile, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4], 50) == 2.5; of 1..10 at 90 == 9.1; of 1..100 at 99 == 99.01
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 50), 2.5);
  std::vector<double> ten(10), hundred(100);
  std::iota(ten.begin(), ten.end(), 1.0);
  std::iota(hundred.begin(), hundred.end(), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(ten, 90), 9.1);
  EXPECT_NEAR(Percentile(hundred, 99), 99.01, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  const Distribution d = Describe({4, 1, 3, 2});
  EXPECT_EQ(d.count, 4);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.std, std::sqrt(1.25));  // population std, as numpy.std
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 4);
}

RequestRecord Rec(int index, std::string tier, double sent_ms, std::vector<double> chunks_ms,
                  double done_ms, absl::StatusCode code = absl::StatusCode::kOk) {
  RequestRecord r;
  r.index = index;
  r.tier = std::move(tier);
  r.scheduled = r.sent = Milliseconds(sent_ms);
  for (double t : chunks_ms) {
    r.chunk_times.push_back(Milliseconds(t));
    r.chunk_tokens.push_back(1);
  }
  r.output_tokens = static_cast<int>(chunks_ms.size());
  r.prompt_tokens = 10;
  r.done = Milliseconds(done_ms);
  r.code = code;
  return r;
}

TEST(BenchSummarize, DefinitionsPerTierAndOverall) {
  std::vector<RequestRecord> records = {
      // TTFT 100, gaps 10 and 30, TPOT (240-100)/2 = 70, E2E 240.
      Rec(0, "interactive", 0, {100, 110, 140}, 240),
      // TTFT 50, one token: no gap and no TPOT; E2E 60.
      Rec(1, "standard", 100, {150}, 160),
      // Failed: left out of every latency, counted by code.
      Rec(2, "standard", 200, {210}, 300, absl::StatusCode::kResourceExhausted),
      // TTFT 20, gap 40, TPOT (480-420)/1 = 60, E2E 80 -> ends the run at 480 ms.
      Rec(3, "", 400, {420, 460}, 480),
  };
  records[3].decode_num_iter = 10;
  Slo slo;
  slo.ttft_ms = 60;  // request 0 misses it (100 ms)
  slo.itl_ms = 35;   // request 3's mean gap is 40 ms: misses
  const Report r = Summarize(records, MeasuredDuration(records), slo);
  EXPECT_DOUBLE_EQ(r.duration_s, 0.48);
  const Summary& all = r.overall;
  EXPECT_EQ(all.sent, 4);
  EXPECT_EQ(all.ok, 3);
  EXPECT_EQ(all.failed, 1);
  EXPECT_EQ(all.by_code.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(all.by_code.at("OK"), 3);
  EXPECT_EQ(all.error_examples.count("RESOURCE_EXHAUSTED"), 1u);
  EXPECT_EQ(all.error_examples.count("OK"), 0u);
  EXPECT_EQ(all.output_tokens, 3 + 1 + 2);
  EXPECT_EQ(all.input_tokens, 30);
  EXPECT_DOUBLE_EQ(all.request_throughput, 3 / 0.48);
  EXPECT_DOUBLE_EQ(all.output_token_throughput, 6 / 0.48);
  EXPECT_DOUBLE_EQ(all.total_token_throughput, 36 / 0.48);
  EXPECT_EQ(all.ttft_ms.count, 3);
  EXPECT_DOUBLE_EQ(all.ttft_ms.mean, (100 + 50 + 20) / 3.0);
  EXPECT_DOUBLE_EQ(all.ttft_ms.p50, 50);
  EXPECT_EQ(all.itl_ms.count, 3);  // 10, 30, 40: per gap, not per request
  EXPECT_DOUBLE_EQ(all.itl_ms.p50, 30);
  EXPECT_DOUBLE_EQ(all.itl_ms.max, 40);
  EXPECT_EQ(all.tpot_ms.count, 2);
  EXPECT_DOUBLE_EQ(all.tpot_ms.mean, 65);
  EXPECT_DOUBLE_EQ(all.e2e_ms.mean, (240 + 60 + 80) / 3.0);
  EXPECT_EQ(all.good, 1);  // only request 1
  EXPECT_DOUBLE_EQ(all.goodput, 1 / 0.48);
  EXPECT_EQ(all.decode_num_iter.at(10), 1);

  ASSERT_EQ(r.tiers.size(), 3u);
  EXPECT_EQ(r.tiers.at("default").ok, 1);
  EXPECT_EQ(r.tiers.at("standard").sent, 2);
  EXPECT_EQ(r.tiers.at("standard").failed, 1);
  EXPECT_DOUBLE_EQ(r.tiers.at("interactive").ttft_ms.p99, 100);
  // Per-tier throughput is over the whole run's duration.
  EXPECT_DOUBLE_EQ(r.tiers.at("interactive").request_throughput, 1 / 0.48);

  // The timeline counts each token in the bin it arrived in.
  double tokens = 0;
  for (const TimelineBin& b : r.timeline) tokens += b.output_tokens_per_s * r.timeline_bin_s;
  EXPECT_NEAR(tokens, 6, 1e-9);
}

TEST(BenchSummarize, NoSloMeansNoGoodputAndAFailedFirstTokenMissesTtft) {
  std::vector<RequestRecord> records = {Rec(0, "", 0, {}, 10)};  // OK but no token
  Report r = Summarize(records, MeasuredDuration(records), {});
  EXPECT_EQ(r.overall.good, 0);
  EXPECT_EQ(r.overall.ttft_ms.count, 0);
  Slo slo;
  slo.ttft_ms = 1000;
  r = Summarize(records, MeasuredDuration(records), slo);
  EXPECT_EQ(r.overall.good, 0);
  slo = Slo{};
  slo.e2e_ms = 1000;
  r = Summarize(records, MeasuredDuration(records), slo);
  EXPECT_EQ(r.overall.good, 1);
}

TEST(BenchParseSlo, UnitsAndErrors) {
  absl::StatusOr<Slo> slo = ParseSlo("ttft=500ms, itl=0.05s,tpot=30,e2e=2s");
  ASSERT_TRUE(slo.ok()) << slo.status();
  EXPECT_DOUBLE_EQ(*slo->ttft_ms, 500);
  EXPECT_DOUBLE_EQ(*slo->itl_ms, 50);
  EXPECT_DOUBLE_EQ(*slo->tpot_ms, 30);
  EXPECT_DOUBLE_EQ(*slo->e2e_ms, 2000);
  EXPECT_TRUE(ParseSlo("")->empty());
  EXPECT_EQ(ParseSlo("latency=5").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSlo("ttft=soon").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseSlo("ttft=-5").status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// Workloads and arrivals

TEST(BenchWorkload, FlagsParse) {
  EXPECT_EQ(ParseLengthSpec("--input-len", "128")->max, 128);
  EXPECT_EQ(ParseLengthSpec("--input-len", "64:256")->min, 64);
  EXPECT_FALSE(ParseLengthSpec("--input-len", "0").ok());
  EXPECT_FALSE(ParseLengthSpec("--input-len", "9:3").ok());
  EXPECT_FALSE(ParseLengthSpec("--input-len", "1:2:3").ok());
  absl::StatusOr<std::vector<TierWeight>> mix = ParseTierMix("interactive=1,standard=3");
  ASSERT_TRUE(mix.ok());
  EXPECT_DOUBLE_EQ((*mix)[0].weight, 0.25);
  EXPECT_EQ((*ParseTierMix(""))[0].name, "");
  EXPECT_FALSE(ParseTierMix("a=x").ok());
  EXPECT_FALSE(ParseTierMix("a=0").ok());
}

TEST(BenchWorkload, DeterministicWithinRangesAndAvoidsExcludedIds) {
  WorkloadOptions o;
  o.input_len = {5, 9};
  o.output_len = {1, 3};
  o.vocab_size = 8;
  o.excluded_token_ids = {0, 7, 3};
  o.tier_mix = *ParseTierMix("a=0.25,b=0.75");
  o.seed = 42;
  auto w = Workload::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  std::map<std::string, int> tiers;
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const PlannedRequest r = (*w)->Get(i);
    ASSERT_GE(r.input_len, 5);
    ASSERT_LE(r.input_len, 9);
    ASSERT_EQ(static_cast<int>(r.prompt_ids.size()), r.input_len);
    ASSERT_GE(r.output_len, 1);
    ASSERT_LE(r.output_len, 3);
    seen.insert(r.prompt_ids.begin(), r.prompt_ids.end());
    ++tiers[r.tier];
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2, 4, 5, 6}));  // every allowed id, no excluded one
  EXPECT_NEAR(tiers["a"] / 2000.0, 0.25, 0.03);
  // The i-th request does not depend on what was drawn before it.
  auto again = Workload::Create(o);
  EXPECT_EQ((*again)->Get(1234).prompt_ids, (*w)->Get(1234).prompt_ids);
  o.seed = 43;
  auto other = Workload::Create(o);
  EXPECT_NE((*other)->Get(1234).prompt_ids, (*w)->Get(1234).prompt_ids);
}

TEST(BenchWorkload, TextPromptsCountWords) {
  WorkloadOptions o;
  o.text_prompts = true;
  o.input_len = {12, 12};
  auto w = Workload::Create(o);
  ASSERT_TRUE(w.ok());
  const PlannedRequest r = (*w)->Get(0);
  EXPECT_TRUE(r.prompt_ids.empty());
  EXPECT_EQ(std::count(r.prompt_text.begin(), r.prompt_text.end(), ' '), 11);
}

TEST(BenchWorkload, TraceLinesAndTheirTimestamps) {
  const std::string path = testing::TempDir() + "/trace.jsonl";
  {
    std::ofstream out(path);
    out << R"({"timestamp": 0, "input_length": 4, "output_length": 2, "hash_ids": [1]})"
        << "\n"
        << R"({"timestamp": 250, "prompt": "hello there world", "output_len": 3, "tier": "batch"})"
        << "\n\n"
        << R"({"timestamp": 1000, "token_ids": [5, 6], "output_length": 1})"
        << "\n";
  }
  WorkloadOptions o;
  o.trace_path = path;
  o.vocab_size = 100;
  auto w = Workload::Create(o);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->trace_size(), 3);
  EXPECT_TRUE((*w)->trace_has_arrivals());
  EXPECT_EQ((*w)->Get(0).prompt_ids.size(), 4u);
  EXPECT_EQ((*w)->Get(1).prompt_text, "hello there world");
  EXPECT_EQ((*w)->Get(1).input_len, 3);
  EXPECT_EQ((*w)->Get(1).tier, "batch");
  EXPECT_EQ((*w)->Get(2).prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(*(*w)->Get(1).trace_arrival, Milliseconds(250));
  // Wrapping around starts a second pass after the first one's span.
  EXPECT_EQ(*(*w)->Get(4).trace_arrival, Milliseconds(1001 + 250));

  std::ofstream(path) << R"({"input_length": 4})"
                      << "\n";
  absl::Status bad = Workload::Create(o).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("trace.jsonl:1"), std::string::npos) << bad;
}

TEST(BenchArrivalProcess, ConstantIsExactAndPoissonHasTheMeanGap) {
  ArrivalProcess constant(4, Arrival::kConstant, 0);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(constant.Next(), Milliseconds(250 * i));
  ArrivalProcess poisson(10, Arrival::kPoisson, 7);
  EXPECT_EQ(poisson.Next(), absl::ZeroDuration());
  absl::Duration last;
  int n = 20000;
  double sum_sq = 0, sum = 0;
  absl::Duration prev = absl::ZeroDuration();
  for (int i = 1; i < n; ++i) {
    last = poisson.Next();
    const double gap = absl::ToDoubleSeconds(last - prev);
    ASSERT_GT(gap, 0);
    sum += gap;
    sum_sq += gap * gap;
    prev = last;
  }
  const double mean = sum / (n - 1), var = sum_sq / (n - 1) - mean * mean;
  // Exponential gaps: mean 1/rate and standard deviation 1/rate (a constant one has 0).
  EXPECT_NEAR(mean, 0.1, 0.003);
  EXPECT_NEAR(std::sqrt(var), 0.1, 0.005);
}

// ------------------------------------------------------------------------------------------
// The synthetic server

// Time as both sides see it: real (sleeps) or virtual (advanced by the server only).
class TestClock {
 public:
  explicit TestClock(bool virtual_time) : virtual_(virtual_time) {}
  absl::Time Now() {
    if (!virtual_) return absl::Now();
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    if (!virtual_) {
      absl::SleepFor(d);
      return;
    }
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  bool is_virtual() const { return virtual_; }

 private:
  const bool virtual_;
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

// What the synthetic server does for request `index`.
struct Script {
  absl::Duration ttft;
  std::vector<absl::Duration> gaps;  // before chunks 2, 3, ...
  std::vector<int> chunk_tokens;     // tokens per chunk (default: max_tokens chunks of 1)
  absl::Duration final_delay = absl::ZeroDuration();
  absl::StatusCode fail = absl::StatusCode::kOk;  // fail after `ttft` instead of answering
  std::optional<pb::Timings> timings;             // Final's timings (none by default)
};

class SyntheticService final : public pb::GenerateService::Service {
 public:
  SyntheticService(TestClock& clock, std::function<Script(int index)> script)
      : clock_(clock), script_(std::move(script)) {}

  // The load generator's on_chunk_recorded hook: lets a virtual-clock server move on.
  void Recorded(int index, int chunks) {
    absl::MutexLock lock(&mu_);
    recorded_[index] = chunks;
  }

  grpc::Status Generate(grpc::ServerContext* ctx, const pb::GenerateRequest* request,
                        grpc::ServerWriter<pb::GenerateResponse>* writer) override {
    int index = -1;
    const std::string& id = request->request_id();
    if (!absl::SimpleAtoi(id.substr(id.rfind('-') + 1), &index)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "request id without index");
    }
    {
      absl::MutexLock lock(&mu_);
      requests_.push_back(*request);
      max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
    }
    grpc::Status status = Serve(index, *request, writer);
    absl::MutexLock lock(&mu_);
    --in_flight_;
    return status;
  }

  int max_in_flight() {
    absl::MutexLock lock(&mu_);
    return max_in_flight_;
  }
  std::vector<pb::GenerateRequest> requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }

 private:
  grpc::Status Serve(int index, const pb::GenerateRequest& request,
                     grpc::ServerWriter<pb::GenerateResponse>* writer) {
    // Warmup requests (negative hook indices) are answered at once with one token.
    const bool warmup = request.request_id().find("warmup") != std::string::npos;
    Script s = warmup ? Script{} : script_(index);
    if (s.chunk_tokens.empty()) s.chunk_tokens.assign(request.sampling().max_tokens(), 1);
    clock_.Advance(s.ttft);
    if (s.fail != absl::StatusCode::kOk) {
      return grpc::Status(static_cast<grpc::StatusCode>(s.fail), "scripted failure");
    }
    int total = 0;
    for (size_t c = 0; c < s.chunk_tokens.size(); ++c) {
      if (c > 0) clock_.Advance(s.gaps.at(c - 1));
      pb::GenerateResponse chunk;
      chunk.set_request_id(request.request_id());
      for (int t = 0; t < s.chunk_tokens[c]; ++t)
        chunk.mutable_chunk()->add_token_ids(100 + total++);
      writer->Write(chunk);
      if (clock_.is_virtual() && !warmup && !AwaitRecorded(index, static_cast<int>(c) + 1)) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "the client never recorded the chunk");
      }
    }
    clock_.Advance(s.final_delay);
    pb::GenerateResponse final;
    final.set_request_id(request.request_id());
    pb::Final* f = final.mutable_final();
    f->set_finish_reason(pb::FINISH_REASON_LENGTH);
    f->mutable_usage()->set_prompt_tokens(request.token_ids().ids_size());
    f->mutable_usage()->set_completion_tokens(total);
    f->set_tier(request.tier());
    f->set_decode_num_iter(request.has_decode_num_iter() ? request.decode_num_iter() : 10);
    if (s.timings) *f->mutable_timings() = *s.timings;
    writer->WriteLast(final, grpc::WriteOptions());
    return grpc::Status::OK;
  }

  bool AwaitRecorded(int index, int chunks) {
    absl::MutexLock lock(&mu_);
    auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return recorded_[index] >= chunks; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(20));
  }

  TestClock& clock_;
  std::function<Script(int)> script_;
  absl::Mutex mu_;
  std::map<int, int> recorded_ ABSL_GUARDED_BY(mu_);
  std::vector<pb::GenerateRequest> requests_ ABSL_GUARDED_BY(mu_);
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

// Token-id prompts of 8 tokens, `output_len` tokens out.
WorkloadOptions Tokens(int output_len = 4) {
  WorkloadOptions w;
  w.input_len = {8, 8};
  w.output_len = {output_len, output_len};
  w.vocab_size = 1000;
  return w;
}

class SyntheticServer {
 public:
  SyntheticServer(bool virtual_time, std::function<Script(int)> script)
      : clock_(virtual_time), service_(clock_, std::move(script)) {
    auto server = rpc::GrpcServer::Create({.address = "127.0.0.1:0"}, {&service_});
    if (!server.ok()) {
      ADD_FAILURE() << server.status();
      std::abort();  // nothing below can run without the server
    }
    server_ = std::move(*server);
    client_ = std::move(*sdk::Client::Create({.address = server_->address()}));
    hooks_.now = [this] { return clock_.Now(); };
    hooks_.on_chunk_recorded = [this](int index, int chunks) { service_.Recorded(index, chunks); };
  }

  absl::StatusOr<RunResult> Run(const RunOptions& options, const WorkloadOptions& w = Tokens()) {
    auto workload = Workload::Create(w);
    if (!workload.ok()) return workload.status();
    return RunLoad(*client_, **workload, options, hooks_);
  }

  SyntheticService& service() { return service_; }

 private:
  TestClock clock_;
  SyntheticService service_;
  std::unique_ptr<rpc::GrpcServer> server_;
  std::unique_ptr<sdk::Client> client_;
  RunHooks hooks_;
};

// ------------------------------------------------------------------------------------------
// Exact statistics through the real client path (virtual clock)

TEST(BenchSyntheticServer, ClosedLoopStatisticsAreExact) {
  // Request k: TTFT 10 + 10k ms; gaps 2, 3, 4 ms; 1 ms to the final message. Request 2
  // streams its 4 tokens as chunks of 1, 2 and 1 (so 2 gaps); request 3 fails after 5 ms.
  SyntheticServer server(/*virtual_time=*/true, [](int k) {
    Script s;
    s.ttft = Milliseconds(10 + 10 * k);
    s.gaps = {Milliseconds(2), Milliseconds(3), Milliseconds(4)};
    s.final_delay = Milliseconds(1);
    if (k == 2) s.chunk_tokens = {1, 2, 1};
    if (k == 3) {
      s.ttft = Milliseconds(5);
      s.fail = absl::StatusCode::kResourceExhausted;
    }
    return s;
  });
  absl::StatusOr<RunResult> run = server.Run({.concurrency = 1, .num_requests = 5});
  ASSERT_TRUE(run.ok()) << run.status();
  Slo slo;
  slo.ttft_ms = 35;
  const Report r = Summarize(run->records, run->duration, slo);

  // Sequential requests on a clock only the server moves: the run lasts the sum of their
  // E2E latencies: 20, 30, 36, 5 (failed), 60 ms.
  EXPECT_DOUBLE_EQ(r.duration_s, 0.151);
  const Summary& s = r.overall;
  EXPECT_EQ(s.ok, 4);
  EXPECT_EQ(s.by_code.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(s.output_tokens, 16);
  EXPECT_EQ(s.input_tokens, 32);
  EXPECT_DOUBLE_EQ(s.request_throughput, 4 / 0.151);
  EXPECT_DOUBLE_EQ(s.output_token_throughput, 16 / 0.151);

  // TTFT {10, 20, 30, 50}.
  EXPECT_EQ(s.ttft_ms.count, 4);
  EXPECT_DOUBLE_EQ(s.ttft_ms.mean, 27.5);
  EXPECT_DOUBLE_EQ(s.ttft_ms.p50, 25);
  EXPECT_DOUBLE_EQ(s.ttft_ms.p90, 44);    // 30 + 0.7 * 20
  EXPECT_DOUBLE_EQ(s.ttft_ms.p99, 49.4);  // 30 + 0.97 * 20
  // ITL per gap: {2, 3, 4} three times and {2, 3} once.
  EXPECT_EQ(s.itl_ms.count, 11);
  EXPECT_DOUBLE_EQ(s.itl_ms.mean, 32.0 / 11);
  EXPECT_DOUBLE_EQ(s.itl_ms.p50, 3);
  EXPECT_DOUBLE_EQ(s.itl_ms.max, 4);
  // TPOT: (9 + 1) / 3 for the chunk-per-token requests, (5 + 1) / 3 for request 2.
  EXPECT_EQ(s.tpot_ms.count, 4);
  EXPECT_DOUBLE_EQ(s.tpot_ms.min, 2);
  EXPECT_DOUBLE_EQ(s.tpot_ms.max, 10.0 / 3);
  // E2E {20, 30, 36, 60}.
  EXPECT_DOUBLE_EQ(s.e2e_ms.mean, 36.5);
  EXPECT_DOUBLE_EQ(s.e2e_ms.p50, 33);
  EXPECT_DOUBLE_EQ(s.e2e_ms.max, 60);
  // Goodput at TTFT <= 35 ms: requests 0, 1 and 2.
  EXPECT_EQ(s.good, 3);
  EXPECT_DOUBLE_EQ(s.goodput, 3 / 0.151);
  EXPECT_EQ(s.decode_num_iter.at(10), 4);
  // A closed loop sends when a slot frees: no lag against its own schedule.
  EXPECT_DOUBLE_EQ(r.send_lag_ms.max, 0);
}

// The server's breakdown of TTFT (queue, prefill, hand-off) travels from each Final into the
// report: what tells a disaggregated cluster's added TTFT apart.
TEST(BenchSyntheticServer, ServerTimingsAreSummarized) {
  SyntheticServer server(/*virtual_time=*/true, [](int k) {
    Script s{.ttft = Milliseconds(1), .gaps = {Milliseconds(1), Milliseconds(1), Milliseconds(1)}};
    pb::Timings t;
    t.set_ttft_ms(1);
    t.set_total_ms(3);
    t.set_queue_ms(1 + k);
    t.set_prefill_ms(10 * (k + 1));
    t.set_transfer_ms(0.5 * (k + 1));
    s.timings = t;
    return s;
  });
  absl::StatusOr<RunResult> run = server.Run({.concurrency = 1, .num_requests = 4});
  ASSERT_TRUE(run.ok()) << run.status();
  const Report r = Summarize(run->records, run->duration, {});
  const Summary& s = r.overall;
  ASSERT_EQ(s.ok, 4);
  ASSERT_EQ(s.prefill_ms.count, 4);
  EXPECT_DOUBLE_EQ(s.queue_ms.mean, 2.5);   // {1, 2, 3, 4}
  EXPECT_DOUBLE_EQ(s.prefill_ms.mean, 25);  // {10, 20, 30, 40}
  EXPECT_DOUBLE_EQ(s.prefill_ms.p50, 25);
  EXPECT_DOUBLE_EQ(s.transfer_ms.max, 2);  // {0.5, 1, 1.5, 2}
  const nlohmann::json j = ToJson(r);
  EXPECT_DOUBLE_EQ(j["overall"]["server_prefill_ms"]["mean"].get<double>(), 25);
  EXPECT_DOUBLE_EQ(j["overall"]["server_transfer_ms"]["p50"].get<double>(), 1.25);
  EXPECT_NE(FormatReport(r).find("prefil"), std::string::npos);
}

TEST(BenchSyntheticServer, TierMixAndRequestShapeReachTheServer) {
  SyntheticServer server(/*virtual_time=*/true, [](int) {
    return Script{.ttft = Milliseconds(1), .gaps = {Milliseconds(1), Milliseconds(1)}};
  });
  WorkloadOptions w = Tokens(3);
  w.tier_mix = *ParseTierMix("interactive=0.5,batch=0.5");
  absl::StatusOr<RunResult> run = server.Run(
      {.concurrency = 1, .num_requests = 20, .ignore_eos = true, .decode_num_iter = 7}, w);
  ASSERT_TRUE(run.ok()) << run.status();
  const Report r = Summarize(run->records, run->duration, {});
  const std::vector<pb::GenerateRequest> seen = server.service().requests();
  ASSERT_EQ(seen.size(), 20u);
  std::map<std::string, int> tiers;
  for (const pb::GenerateRequest& req : seen) {
    ++tiers[req.tier()];
    EXPECT_EQ(req.token_ids().ids_size(), 8);
    EXPECT_EQ(req.sampling().max_tokens(), 3);
    EXPECT_TRUE(req.sampling().ignore_eos());
    EXPECT_EQ(req.decode_num_iter(), 7);
  }
  ASSERT_EQ(r.tiers.size(), 2u);
  EXPECT_EQ(r.tiers.at("interactive").sent, tiers["interactive"]);
  EXPECT_EQ(r.tiers.at("batch").ok, tiers["batch"]);
  EXPECT_EQ(r.tiers.at("batch").itl_ms.count, 2 * tiers["batch"]);
  EXPECT_EQ(r.overall.decode_num_iter.at(7), 20);
}

// ------------------------------------------------------------------------------------------
// Real time: schedules, caps and bounds

TEST(BenchSyntheticServer, RealClockLatenciesAreBoundedByTheScript) {
  SyntheticServer server(/*virtual_time=*/false, [](int) {
    return Script{.ttft = Milliseconds(40), .gaps = {Milliseconds(15), Milliseconds(15)}};
  });
  absl::StatusOr<RunResult> run = server.Run({.concurrency = 3, .num_requests = 12}, Tokens(3));
  ASSERT_TRUE(run.ok()) << run.status();
  const Report r = Summarize(run->records, run->duration, {});
  EXPECT_EQ(r.overall.ok, 12);
  EXPECT_EQ(server.service().max_in_flight(), 3);
  // The client measures from before it sends, so TTFT can never be below the server's delay
  // (the upper bounds allow for a loaded 2-core machine).
  EXPECT_GE(r.overall.ttft_ms.min, 40);
  EXPECT_LT(r.overall.ttft_ms.p50, 40 + 60);
  EXPECT_EQ(r.overall.itl_ms.count, 24);
  EXPECT_NEAR(r.overall.itl_ms.p50, 15, 10);
  EXPECT_GE(r.overall.e2e_ms.min, 70);
}

TEST(BenchSyntheticServer, OpenLoopKeepsItsScheduleAndItsCap) {
  SyntheticServer server(/*virtual_time=*/false,
                         [](int) { return Script{.ttft = Milliseconds(5)}; });
  absl::StatusOr<RunResult> run = server.Run(
      {.request_rate = 25, .arrival = Arrival::kConstant, .num_requests = 10}, Tokens(1));
  ASSERT_TRUE(run.ok()) << run.status();
  for (const RequestRecord& rec : run->records) {
    EXPECT_LT(absl::AbsDuration(rec.scheduled - Milliseconds(40 * rec.index)),
              absl::Microseconds(1));
    EXPECT_GE(rec.sent, rec.scheduled);  // never early
    // Real clock on a shared 2-core CI machine: a loose bound (a scheduler that waited for
    // answers is caught by the in-flight counts below, not by this).
    EXPECT_LT(rec.sent - rec.scheduled, Milliseconds(200)) << rec.index;
  }
  // An open loop does not wait for answers: 400 ms of slow requests overlap...
  SyntheticServer slow(/*virtual_time=*/false,
                       [](int) { return Script{.ttft = Milliseconds(300)}; });
  run = slow.Run({.request_rate = 50, .arrival = Arrival::kConstant, .num_requests = 8}, Tokens(1));
  ASSERT_TRUE(run.ok());
  EXPECT_GE(slow.service().max_in_flight(), 5);
  // ...unless capped, and then the wait shows as send lag.
  SyntheticServer capped(/*virtual_time=*/false,
                         [](int) { return Script{.ttft = Milliseconds(100)}; });
  run = capped.Run(
      {.request_rate = 100, .arrival = Arrival::kConstant, .max_concurrency = 2, .num_requests = 6},
      Tokens(1));
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(capped.service().max_in_flight(), 2);
  const Report r = Summarize(run->records, run->duration, {});
  EXPECT_GE(r.send_lag_ms.max, 150);  // the 6th request waited for two rounds of 100 ms
}

TEST(BenchSyntheticServer, DurationBoundsTheSending) {
  SyntheticServer server(/*virtual_time=*/false,
                         [](int) { return Script{.ttft = Milliseconds(30)}; });
  absl::StatusOr<RunResult> run =
      server.Run({.concurrency = 2, .duration = Milliseconds(300)}, Tokens(1));
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_GE(run->records.size(), 4u);
  EXPECT_LE(run->records.size(), 22u);  // 2 in flight x 300 ms / 30 ms, and some slack
  for (const RequestRecord& rec : run->records) {
    EXPECT_LT(rec.sent, Milliseconds(300));
    EXPECT_EQ(rec.code, absl::StatusCode::kOk);  // what was sent was waited for
  }
}

TEST(BenchSyntheticServer, FailuresCountByCode) {
  SyntheticServer server(/*virtual_time=*/true, [](int k) {
    Script s{.ttft = Milliseconds(1)};
    if (k % 3 == 1) s.fail = absl::StatusCode::kResourceExhausted;
    if (k % 3 == 2) s.fail = absl::StatusCode::kUnavailable;
    return s;
  });
  absl::StatusOr<RunResult> run = server.Run({.concurrency = 1, .num_requests = 9}, Tokens(1));
  ASSERT_TRUE(run.ok()) << run.status();
  const Report r = Summarize(run->records, run->duration, {});
  EXPECT_EQ(r.overall.ok, 3);
  EXPECT_EQ(r.overall.by_code.at("RESOURCE_EXHAUSTED"), 3);
  // UNAVAILABLE would be retried by the SDK's default policy; the benchmark sends once.
  EXPECT_EQ(r.overall.by_code.at("UNAVAILABLE"), 3);
  EXPECT_EQ(r.overall.error_examples.at("UNAVAILABLE").rfind("scripted failure", 0), 0u);
  EXPECT_EQ(server.service().requests().size(), 9u);
}

TEST(BenchSyntheticServer, BadOptionsAreRefused) {
  SyntheticServer server(/*virtual_time=*/true, [](int) { return Script{}; });
  EXPECT_EQ(server.Run({.num_requests = 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.Run({.concurrency = 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      server.Run({.concurrency = 1, .trace_arrivals = true, .num_requests = 1}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------------------------------
// Plots

TEST(BenchPlot, RunAndSweepPlotsAreWellFormedSvg) {
  std::vector<RequestRecord> records = {Rec(0, "a", 0, {100, 110, 140}, 240),
                                        Rec(1, "b", 100, {150, 170}, 200)};
  Slo slo;
  slo.ttft_ms = 60;
  const nlohmann::json run = {{"mode", "closed loop"},
                              {"report", ToJson(Summarize(records, absl::Seconds(1), slo))}};
  const std::string svg = RunPlot(run, "a <run> & more");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("a &lt;run&gt; &amp; more"), std::string::npos);  // escaped
  EXPECT_NE(svg.find("TTFT p99"), std::string::npos);
  EXPECT_NE(svg.find("<path d=\"M"), std::string::npos);

  nlohmann::json sweep = {
      {"label", "x"}, {"slo", ToJson(slo)}, {"points", nlohmann::json::array()}};
  for (double rate : {1.0, 2.0, 4.0}) {
    sweep["points"].push_back({{"request_rate", rate}, {"report", run["report"]}});
  }
  const std::string overlay = SweepPlot({sweep, sweep}, "sweep");
  EXPECT_NE(overlay.find("x: TTFT p50"), std::string::npos);
  EXPECT_NE(overlay.find("offered"), std::string::npos);
  EXPECT_EQ(std::count(overlay.begin(), overlay.end(), '<') -
                std::count(overlay.begin(), overlay.end(), '>'),
            0);
}

}  // namespace
}  // namespace gka::cli::bench
