// A prefill worker and a decode worker in this process, each with its own real gRPC server on
// 127.0.0.1 and its own UCX transfer engine (tcp, or shared memory), registered with a router
// stand-in; the test plays the router. Greedy output through the hand-off must equal the
// offline engine's token for token.
#include <atomic>
#include <thread>

#include "common/model/tiny_model.h"
#include "decode_worker/decode_worker.h"
#include "gtest/gtest.h"
#include "prefill_worker/prefill_worker.h"
#include "tests/integration/workers/worker_test_util.h"

namespace gka::workers_test {
namespace {

using decode_worker::DecodeWorker;
using decode_worker::DecodeWorkerOptions;
using prefill_worker::PrefillWorker;
using prefill_worker::PrefillWorkerOptions;

constexpr int32_t kVocab = 1024;  // the authors' tiny checkpoint

struct ClusterOptions {
  int32_t decode_slots = 16;
  int32_t decode_pages = 0;
  int32_t decode_max_seq_len = 256;
  absl::Duration fence_timeout = absl::Seconds(2);
  std::string model_dir = kModelDir;
};

class WorkersTest : public ::testing::TestWithParam<std::string> {
 protected:
  void StartCluster(const ClusterOptions& c = {}) {
    auto reference = OfflineReference::Load(c.model_dir);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = *std::move(reference);
    auto registry_server = rpc::GrpcServer::Create({.address = "127.0.0.1:0"}, {&registry_});
    ASSERT_TRUE(registry_server.ok()) << registry_server.status();
    registry_server_ = *std::move(registry_server);

    DecodeWorkerOptions d;
    d.common = Common("decode-0");
    d.common.model = {.model_dir = c.model_dir,
                      .num_slots = c.decode_slots,
                      .num_pages = c.decode_pages,
                      .max_seq_len = c.decode_max_seq_len};
    d.fence_timeout = c.fence_timeout;
    d.quarantine_retry = absl::Milliseconds(200);
    d.fault_injection = true;
    auto decode = DecodeWorker::Create(d);
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);

    PrefillWorkerOptions p;
    p.common = Common("prefill-0");
    p.common.model = {.model_dir = c.model_dir, .num_slots = 8, .max_seq_len = 256};
    p.max_batch_tokens = 64;  // several prompts share a step, long ones are chunked
    p.prefill_chunk_size = 24;
    p.fault_injection = true;
    auto prefill = PrefillWorker::Create(p);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    prefill_ = *std::move(prefill);

    decode_stub_ = wpb::DecodeService::NewStub(rpc::CreateChannel(decode_->grpc_address(), {}));
    prefill_stub_ = wpb::PrefillService::NewStub(rpc::CreateChannel(prefill_->grpc_address(), {}));
    baseline_ = decode_->Stats();
  }

  worker_common::WorkerOptions Common(const std::string& id) {
    worker_common::WorkerOptions o;
    o.worker_id = id;
    o.metrics_address = "";  // the registry is read directly (an exposer takes 2 s to stop)
    o.router_address = registry_server_->address();
    o.heartbeat_interval = absl::Milliseconds(100);
    o.ucx_transports = GetParam();
    o.tiers = {"interactive", "batch"};
    return o;
  }

  void TearDown() override {
    if (prefill_) prefill_->Shutdown(absl::Seconds(1));
    if (decode_) decode_->Shutdown(absl::Seconds(1));
    prefill_.reset();
    decode_.reset();
    if (registry_server_) registry_server_->Shutdown(absl::ZeroDuration());
  }

  RequestOutcome Run(const RequestSpec& spec) {
    return RunRequest(*decode_stub_, *prefill_stub_, spec);
  }

  // Runs every request at once (a thread each) and expects each to succeed with exactly the
  // offline engine's tokens.
  std::vector<RequestOutcome> RunAllAndCompare(const std::vector<RequestSpec>& specs) {
    const std::vector<RequestOutcome> outcomes =
        RunConcurrently(*decode_stub_, *prefill_stub_, specs);
    for (size_t i = 0; i < specs.size(); ++i) {
      SCOPED_TRACE(specs[i].id);
      const RequestOutcome& o = outcomes[i];
      EXPECT_TRUE(o.reserve.ok()) << o.reserve;
      EXPECT_TRUE(o.prefill.ok()) << o.prefill;
      EXPECT_TRUE(o.decode.ok()) << o.decode;
      absl::StatusOr<std::vector<int32_t>> expected = reference_->Generate(specs[i]);
      EXPECT_TRUE(expected.ok()) << expected.status();
      if (expected.ok()) EXPECT_EQ(o.tokens, *expected);
    }
    return outcomes;
  }

  bool AtBaseline() { return DecodeAtBaseline(decode_->Stats()); }

  std::string DecodeMetrics() { return decode_->registry().Serialize(); }
  std::string PrefillMetrics() { return prefill_->registry().Serialize(); }

  std::unique_ptr<OfflineReference> reference_;
  RegistryStandIn registry_;
  std::unique_ptr<rpc::GrpcServer> registry_server_;
  std::unique_ptr<DecodeWorker> decode_;
  std::unique_ptr<PrefillWorker> prefill_;
  std::unique_ptr<wpb::DecodeService::Stub> decode_stub_;
  std::unique_ptr<wpb::PrefillService::Stub> prefill_stub_;
  decode_worker::DecodeStats baseline_;
};

bool FaultInjectionCompiled() {
#ifdef GKA_FAULT_INJECTION
  return true;
#else
  return false;
#endif
}

// Several prompts (crossing page boundaries, some chunked) with two tiers of different
// num_iter, all in flight at once so decode batches mix them.
TEST_P(WorkersTest, GreedyHandOffMatchesOfflineEngineTokenForToken) {
  StartCluster();
  ASSERT_TRUE(registry_.WaitFor("decode-0", 1, absl::Seconds(10)));
  ASSERT_TRUE(registry_.WaitFor("prefill-0", 1, absl::Seconds(10)));
  EXPECT_EQ(registry_.Get("decode-0")->registration.role(), wpb::WORKER_ROLE_DECODE);
  EXPECT_EQ(registry_.Get("prefill-0")->registration.role(), wpb::WORKER_ROLE_PREFILL);
  EXPECT_EQ(registry_.Get("decode-0")->registration.compat_hash(),
            registry_.Get("prefill-0")->registration.compat_hash());
  EXPECT_EQ(registry_.Get("decode-0")->registration.vocab_size(), static_cast<uint32_t>(kVocab));

  std::vector<RequestSpec> specs;
  const int32_t lengths[] = {3, 16, 17, 29, 40, 57};
  for (int i = 0; i < 6; ++i) {
    for (int tier = 0; tier < 2; ++tier) {
      RequestSpec s;
      s.id = absl::StrCat("greedy-", i, "-", tier);
      s.prompt = Prompt(100 + i, lengths[i], kVocab);
      s.max_tokens = 12 + i;
      s.tier = tier == 0 ? "interactive" : "batch";
      s.prefill_num_iter = tier == 0 ? 30 : 10;
      s.decode_num_iter = tier == 0 ? 30 : 5;
      specs.push_back(s);
    }
  }
  const std::vector<RequestOutcome> outcomes = RunAllAndCompare(specs);
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].id);
    const RequestOutcome& o = outcomes[i];
    if (!o.decode.ok() || o.tokens.empty()) continue;
    ASSERT_TRUE(o.done.has_value());
    EXPECT_EQ(o.done->finish_reason(), spb::FINISH_REASON_LENGTH);
    EXPECT_EQ(o.done->generated_tokens(), static_cast<uint32_t>(specs[i].max_tokens));
    EXPECT_EQ(o.done->decode_num_iter(), specs[i].decode_num_iter);
    EXPECT_EQ(o.prefill_result.first_token(), o.tokens.front());
    EXPECT_EQ(o.prefill_result.prefill_num_iter(), specs[i].prefill_num_iter);
    EXPECT_GT(o.prefill_result.transfer().kv_bytes(), 0u);
    EXPECT_GT(o.prefill_result.transfer().state_bytes(), 0u);
    EXPECT_NE(o.prefill_result.transfer().checksum(), 0u);
  }
  // One decode batch held more than one sequence (the tiers were mixed in flight).
  const std::string dm = DecodeMetrics();
  const double steps = MetricValue(dm, "gka_decode_batch_size_count", {{"worker", "decode-0"}});
  const double single =
      MetricValue(dm, "gka_decode_batch_size_bucket", {{"worker", "decode-0"}, {"le", "1"}});
  EXPECT_GT(steps, single) << dm;
  EXPECT_GT(
      MetricValue(dm, "gka_decode_num_iter_count", {{"worker", "decode-0"}, {"tier", "batch"}}), 0);
  const std::string pm = PrefillMetrics();
  EXPECT_GT(MetricValue(pm, "gka_transfer_bytes_total", {{"worker", "prefill-0"}, {"kind", "kv"}}),
            0);
  EXPECT_GT(
      MetricValue(pm, "gka_transfer_bytes_total", {{"worker", "prefill-0"}, {"kind", "state"}}), 0);
  EXPECT_EQ(MetricValue(pm, "gka_prefill_seconds_count",
                        {{"worker", "prefill-0"}, {"tier", "interactive"}}),
            6);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  // Heartbeats carry the load.
  ASSERT_TRUE(registry_.WaitFor("decode-0", 3, absl::Seconds(10)));
  EXPECT_EQ(registry_.Get("decode-0")->last_load.total_kv_pages(),
            static_cast<uint32_t>(baseline_.total_pages));
}

// Seeded sampling: the prefill worker draws the first token as generation step 0, the
// decode worker the rest as steps 1, 2, ...; the same draws as the offline engine's.
TEST_P(WorkersTest, SeededSamplingMatchesOfflineEngine) {
  StartCluster();
  std::vector<RequestSpec> specs;
  for (int i = 0; i < 4; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("seeded-", i);
    s.prompt = Prompt(900 + i, 11 + 5 * i, kVocab);
    s.max_tokens = 12;
    s.temperature = 0.9f;
    s.top_k = 40;
    s.seed = 1234 + i;
    specs.push_back(s);
  }
  const std::vector<RequestOutcome> outcomes = RunAllAndCompare(specs);
  // Not greedy in disguise: some answer differs from the greedy one.
  bool differs = false;
  for (size_t i = 0; i < specs.size(); ++i) {
    RequestSpec greedy = specs[i];
    greedy.temperature = 0;
    differs |= outcomes[i].tokens != *reference_->Generate(greedy);
  }
  EXPECT_TRUE(differs);
}

// A checkpoint shaped like one TP=8 rank of the 32B model (head_dim 128, 8 GKA heads, one KV
// head): about 1 MiB of GKA state per layer moves per request.
TEST_P(WorkersTest, RankShapedCheckpointHandOffMatchesOfflineEngine) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/rank_shaped_", GetParam(), "_", getpid());
  model::TinyModelOptions m;
  m.pattern = "*-GKA-*-GKA";
  m.vocab_size = kVocab;
  m.hidden_size = 256;
  m.num_attention_heads = 8;
  m.num_key_value_heads = 1;
  m.head_dim = 128;
  m.weight_dtype = tensor::DType::kF32;
  ASSERT_TRUE(model::MakeTinyModel(m, dir).ok());
  StartCluster({.model_dir = dir});
  std::vector<RequestSpec> specs;
  for (int i = 0; i < 4; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("rank-", i);
    s.prompt = Prompt(700 + i, 7 + 13 * i, kVocab);
    s.max_tokens = 8;
    s.prefill_num_iter = i % 2 == 0 ? 30 : 10;
    s.decode_num_iter = i % 2 == 0 ? 30 : 5;
    specs.push_back(s);
  }
  const std::vector<RequestOutcome> outcomes = RunAllAndCompare(specs);
  for (const RequestOutcome& o : outcomes) {
    // Two GKA layers: h_kk + h_kv of [8, 128, 128] f32 each, plus conv states.
    EXPECT_GT(o.prefill_result.transfer().state_bytes(), 2u * (1u << 20));
  }
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

TEST_P(WorkersTest, LeaseExpiryReturnsPagesAndSlot) {
  StartCluster();
  RequestSpec s;
  s.id = "lease";
  s.prompt = Prompt(7, 20, kVocab);
  s.lease_ms = 300;
  s.skip_prefill = true;  // the prefill never comes
  RequestOutcome o = Run(s);
  ASSERT_TRUE(o.reserve.ok()) << o.reserve;
  EXPECT_EQ(o.decode.code(), absl::StatusCode::kDeadlineExceeded) << o.decode;
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  EXPECT_TRUE(Eventually([&] { return decode_->Stats().reservations_expired == 1; }));
  EXPECT_EQ(
      MetricValue(DecodeMetrics(), "gka_reservations_expired_total", {{"worker", "decode-0"}}), 1);
  // The expired ticket is refused before any byte moves.
  wpb::PrefillRequest p;
  p.set_request_id("lease");
  for (int32_t t : s.prompt) p.add_token_ids(t);
  *p.mutable_ticket() = o.ticket;
  wpb::PrefillResult result;
  grpc::ClientContext ctx;
  EXPECT_EQ(prefill_stub_->Prefill(&ctx, p, &result).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_P(WorkersTest, ReleaseAbortAndCancellationReturnMemory) {
  StartCluster();
  // Release of a reservation that will not be used; a second Release finds nothing.
  {
    wpb::ReserveRequest r;
    r.set_request_id("released");
    r.set_prompt_tokens(33);
    r.set_max_new_tokens(8);
    wpb::TransferTicket ticket;
    grpc::ClientContext ctx;
    ASSERT_TRUE(decode_stub_->Reserve(&ctx, r, &ticket).ok());
    EXPECT_TRUE(Eventually([&] { return decode_->Stats().free_pages < baseline_.free_pages; }));
    for (bool expect_released : {true, false}) {
      wpb::ReleaseRequest rel;
      rel.set_request_id("released");
      rel.set_transfer_id(ticket.transfer_id());
      wpb::ReleaseResponse resp;
      grpc::ClientContext rctx;
      ASSERT_TRUE(decode_stub_->Release(&rctx, rel, &resp).ok());
      EXPECT_EQ(resp.released(), expect_released);
      EXPECT_FALSE(resp.quarantined());
    }
    EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  }
  // Abort mid-decode: DecodeDone(ABORT), memory back.
  {
    RequestSpec s;
    s.id = "aborted";
    s.prompt = Prompt(8, 21, kVocab);
    s.max_tokens = 200;
    std::atomic<int> seen{0};
    s.on_token = [&](int32_t) {
      if (++seen == 3) {
        spb::AbortRequest a;
        a.set_request_id("aborted");
        spb::AbortResponse resp;
        grpc::ClientContext ctx;
        EXPECT_TRUE(decode_stub_->Abort(&ctx, a, &resp).ok());
        EXPECT_TRUE(resp.found());
      }
    };
    RequestOutcome o = Run(s);
    ASSERT_TRUE(o.prefill.ok()) << o.prefill;
    EXPECT_TRUE(o.decode.ok()) << o.decode;
    ASSERT_TRUE(o.done.has_value());
    EXPECT_EQ(o.done->finish_reason(), spb::FINISH_REASON_ABORT);
    EXPECT_LT(o.tokens.size(), 200u);
    EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  }
  // Cancelling the StartDecode call before the prefill arrives: the reservation is fenced and
  // freed; the late prefill is refused.
  {
    wpb::ReserveRequest r;
    r.set_request_id("cancelled");
    r.set_prompt_tokens(5);
    r.set_max_new_tokens(8);
    wpb::TransferTicket ticket;
    grpc::ClientContext ctx;
    ASSERT_TRUE(decode_stub_->Reserve(&ctx, r, &ticket).ok());
    grpc::ClientContext dctx;
    wpb::StartDecodeRequest sd;
    sd.set_request_id("cancelled");
    sd.set_max_new_tokens(8);
    auto reader = decode_stub_->StartDecode(&dctx, sd);
    absl::SleepFor(absl::Milliseconds(100));
    dctx.TryCancel();
    wpb::DecodeStreamResponse m;
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
    wpb::PrefillRequest p;
    p.set_request_id("cancelled");
    for (int32_t t : Prompt(9, 5, kVocab)) p.add_token_ids(t);
    *p.mutable_ticket() = ticket;
    wpb::PrefillResult result;
    grpc::ClientContext pctx;
    const grpc::Status s = prefill_stub_->Prefill(&pctx, p, &result);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
    EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  }
}

// Few pages: decoding sequences outgrow memory, the scheduler swaps some out to host and
// back, and every answer is still the offline engine's.
TEST_P(WorkersTest, PreemptionSwapsToHostAndResumesExactly) {
  StartCluster({.decode_slots = 4, .decode_pages = 10, .decode_max_seq_len = 128});
  std::vector<RequestSpec> specs;
  for (int i = 0; i < 4; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("preempt-", i);
    s.prompt = Prompt(300 + i, 18 + i, kVocab);
    s.max_tokens = 40;
    s.decode_num_iter = i % 2 == 0 ? 30 : 5;
    specs.push_back(s);
  }
  RunAllAndCompare(specs);
  EXPECT_TRUE(Eventually([&] { return decode_->Stats().preemptions > 0; }));
  EXPECT_GT(MetricValue(DecodeMetrics(), "gka_preemptions_total", {{"worker", "decode-0"}}), 0);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

// The engine thread closes a stream while its last write is still in flight and then sleeps
// ("fault-slow-close"): meanwhile the write completes, the reactor finishes the call, and gRPC
// deletes it. The engine thread must not touch the stream after the close: before session 4
// its Close re-locked the reactor after that window, and the TSan and ASan stages (which run
// this case) reported heap-use-after-free here. In any build: the tokens stay exact.
TEST_P(WorkersTest, StreamClosedWhileItsLastWriteCompletesIsNotTouchedAgain) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  StartCluster();
  for (int i = 0; i < 3; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("req-fault-slow-close-", i);
    s.prompt = Prompt(70 + i, 15, kVocab);
    s.max_tokens = 6;
    RequestOutcome o = Run(s);
    ASSERT_TRUE(o.decode.ok()) << o.decode;
    EXPECT_EQ(o.tokens, *reference_->Generate(s));
  }
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

TEST_P(WorkersTest, CorruptedTransferIsRefusedByTheChecksum) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  StartCluster();
  RequestSpec s;
  s.id = "req-fault-corrupt";
  s.prompt = Prompt(11, 23, kVocab);
  RequestOutcome o = Run(s);
  ASSERT_TRUE(o.reserve.ok());
  EXPECT_EQ(o.prefill.code(), absl::StatusCode::kDataLoss) << o.prefill;
  EXPECT_EQ(o.decode.code(), absl::StatusCode::kDataLoss) << o.decode;
  EXPECT_FALSE(o.started);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  EXPECT_TRUE(Eventually([&] { return decode_->Stats().checksum_failures == 1; }));
  EXPECT_EQ(MetricValue(DecodeMetrics(), "gka_checksum_failures_total", {{"worker", "decode-0"}}),
            1);
  EXPECT_EQ(MetricValue(PrefillMetrics(), "gka_transfer_failures_total",
                        {{"worker", "prefill-0"}, {"reason", "checksum"}}),
            1);
  // The servers keep serving, correctly.
  RequestSpec ok;
  ok.id = "after-corrupt";
  ok.prompt = s.prompt;
  RequestOutcome o2 = Run(ok);
  ASSERT_TRUE(o2.decode.ok()) << o2.decode;
  EXPECT_EQ(o2.tokens, *reference_->Generate(ok));
}

// The hand-off streams while the prompt is prefilled: the Prefill call is cancelled once its
// first chunks' pages were written and while later chunks still compute. The stream stops
// (its puts flushed, the transfer cancelled) before the sequence's memory is freed; both
// workers return to their baseline; and no write of the cancelled transfer lands after the
// decode worker fenced it: the next request, which gets the very same pages, is exact.
TEST_P(WorkersTest, CancelWhileEarlyChunksStreamReturnsMemoryAndWritesNothingLate) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  StartCluster();
  const prefill_worker::PrefillStats prefill_baseline = prefill_->Stats();
  RequestSpec s;
  s.id = "cancel-mid-stream-fault-step-delay-100";  // 9 chunks of 24 tokens, 100 ms each
  s.prompt = Prompt(40, 200, kVocab);
  PrefillCanceller canceller;
  s.canceller = &canceller;
  RequestOutcome o;
  std::thread request([&] { o = Run(s); });
  // Early chunks were written, later ones are still being prefilled.
  const bool streamed = Eventually([&] { return prefill_->Stats().streaming_bytes > 0; });
  canceller.Cancel();
  request.join();
  ASSERT_TRUE(streamed);
  ASSERT_TRUE(o.reserve.ok()) << o.reserve;
  EXPECT_EQ(o.prefill.code(), absl::StatusCode::kCancelled) << o.prefill;
  EXPECT_FALSE(o.decode.ok());
  EXPECT_FALSE(o.started);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  EXPECT_TRUE(Eventually([&] {
    const prefill_worker::PrefillStats p = prefill_->Stats();
    return p.free_pages == prefill_baseline.free_pages &&
           p.free_slots == prefill_baseline.free_slots && p.running == 0 && p.handing_off == 0;
  }));
  EXPECT_EQ(prefill_->Stats().quarantined_pages, 0);

  RequestSpec next;
  next.id = "reuses-the-cancelled-pages";
  next.prompt = Prompt(41, 200, kVocab);  // same length: the same pages (LIFO pools)
  next.max_tokens = 16;
  next.decode_after_prefill = true;
  // Any late write of the cancelled transfer would have landed by now, over this one's bytes.
  next.before_decode = [] { absl::SleepFor(absl::Milliseconds(300)); };
  RequestOutcome n = Run(next);
  ASSERT_TRUE(n.prefill.ok()) << n.prefill;
  ASSERT_TRUE(n.decode.ok()) << n.decode;
  ASSERT_GT(n.ticket.ranks(0).segments_size(), 0);
  EXPECT_EQ(n.ticket.ranks(0).segments(0).remote_addr(),
            o.ticket.ranks(0).segments(0).remote_addr());
  EXPECT_EQ(n.tokens, *reference_->Generate(next));
  // The next request streamed too: most of its bytes moved while it was prefilled.
  EXPECT_GT(
      MetricValue(PrefillMetrics(), "gka_prefill_streamed_bytes_total", {{"worker", "prefill-0"}}),
      0);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

// The completion arrives after the lease expired: the decode worker fenced the transfer and
// freed the memory; the completion (generation of the dead reservation) is discarded, and
// the next request, which reuses the same pages, is exact.
TEST_P(WorkersTest, LateCompletionAfterExpiryIsDiscarded) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  StartCluster();
  RequestSpec s;
  s.id = "req-fault-delay-1500";
  s.prompt = Prompt(12, 30, kVocab);
  s.lease_ms = 500;
  RequestOutcome o = Run(s);
  ASSERT_TRUE(o.reserve.ok());
  EXPECT_FALSE(o.prefill.ok());
  EXPECT_EQ(o.decode.code(), absl::StatusCode::kDeadlineExceeded) << o.decode;
  EXPECT_FALSE(o.started);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  EXPECT_TRUE(Eventually([&] { return decode_->Stats().reservations_expired == 1; }));
  EXPECT_EQ(MetricValue(PrefillMetrics(), "gka_transfer_failures_total",
                        {{"worker", "prefill-0"}, {"reason", "lease"}}),
            1);
  RequestSpec next;
  next.id = "after-late";
  next.prompt = Prompt(13, 30, kVocab);
  RequestOutcome o2 = Run(next);
  ASSERT_TRUE(o2.decode.ok()) << o2.decode;
  EXPECT_EQ(o2.tokens, *reference_->Generate(next));
  EXPECT_NE(o2.ticket.transfer_id(), o.ticket.transfer_id());
}

// A sender that overstays its lease before it writes anything: the decode worker fences the
// transfer and frees the memory, the next reservation gets the very same pages and slot, and
// the late writes must not land in them (the next request's answer stays exact).
TEST_P(WorkersTest, LateWritesAfterExpiryNeverReachReusedMemory) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  StartCluster();
  RequestSpec late;
  late.id = "req-fault-delay-puts-1500";
  late.prompt = Prompt(20, 30, kVocab);
  late.lease_ms = 400;
  RequestOutcome late_outcome;
  std::thread late_thread([&] { late_outcome = Run(late); });
  ASSERT_TRUE(Eventually([&] { return decode_->Stats().reservations_expired == 1; }));
  ASSERT_TRUE(Eventually([&] { return AtBaseline(); }));

  RequestSpec next;
  next.id = "reuses-the-pages";
  next.prompt = Prompt(21, 30, kVocab);  // same length: the same pages (LIFO pools)
  next.max_tokens = 16;
  next.decode_after_prefill = true;
  // Decode only once the late sender has finished trying: its writes had their chance.
  next.before_decode = [&] { late_thread.join(); };
  RequestOutcome o = Run(next);
  EXPECT_FALSE(late_outcome.prefill.ok());
  EXPECT_EQ(late_outcome.decode.code(), absl::StatusCode::kDeadlineExceeded) << late_outcome.decode;
  ASSERT_TRUE(o.prefill.ok()) << o.prefill;
  ASSERT_TRUE(o.decode.ok()) << o.decode;
  ASSERT_GT(o.ticket.ranks(0).segments_size(), 0);
  EXPECT_EQ(o.ticket.ranks(0).segments(0).remote_addr(),
            late_outcome.ticket.ranks(0).segments(0).remote_addr());
  EXPECT_EQ(o.tokens, *reference_->Generate(next));
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

// A completion that names another generation than the reservation it reaches is refused.
TEST_P(WorkersTest, CompletionOfAnotherGenerationIsRefused) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  StartCluster();
  RequestSpec s;
  s.id = "req-fault-stale-generation";
  s.prompt = Prompt(14, 9, kVocab);
  RequestOutcome o = Run(s);
  ASSERT_TRUE(o.reserve.ok());
  EXPECT_EQ(o.decode.code(), absl::StatusCode::kDataLoss) << o.decode;
  EXPECT_NE(o.decode.message().find("generation"), std::string::npos) << o.decode;
  EXPECT_FALSE(o.started);
  EXPECT_TRUE(Eventually([&] { return decode_->Stats().completions_discarded == 1; }));
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

TEST_P(WorkersTest, BadRequestsAreRefusedAndTheWorkersKeepServing) {
  StartCluster();
  auto reserve = [&](const std::string& id, uint32_t prompt, uint32_t max_new) {
    wpb::ReserveRequest r;
    r.set_request_id(id);
    r.set_prompt_tokens(prompt);
    r.set_max_new_tokens(max_new);
    wpb::TransferTicket t;
    grpc::ClientContext ctx;
    const grpc::Status s = decode_stub_->Reserve(&ctx, r, &t);
    return std::make_pair(s.error_code(), t);
  };
  EXPECT_EQ(reserve("", 5, 5).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(reserve("no-prompt", 0, 5).first, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(reserve("too-long", 250, 10).first, grpc::StatusCode::INVALID_ARGUMENT);

  auto [code, ticket] = reserve("good", 6, 4);
  ASSERT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(reserve("good", 6, 4).first, grpc::StatusCode::ALREADY_EXISTS);
  auto prefill = [&](const wpb::PrefillRequest& p) {
    wpb::PrefillResult r;
    grpc::ClientContext ctx;
    return prefill_stub_->Prefill(&ctx, p, &r).error_code();
  };
  wpb::PrefillRequest p;
  p.set_request_id("good");
  for (int32_t t : Prompt(15, 6, kVocab)) p.add_token_ids(t);
  *p.mutable_ticket() = ticket;
  {
    wpb::PrefillRequest bad = p;
    bad.clear_token_ids();
    EXPECT_EQ(prefill(bad), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    wpb::PrefillRequest bad = p;
    bad.set_token_ids(0, kVocab);
    EXPECT_EQ(prefill(bad), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    wpb::PrefillRequest bad = p;
    bad.mutable_sampling()->set_temperature(-1);
    EXPECT_EQ(prefill(bad), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    wpb::PrefillRequest bad = p;
    bad.mutable_ticket()->set_compat_hash(ticket.compat_hash() ^ 1);
    EXPECT_EQ(prefill(bad), grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    wpb::PrefillRequest bad = p;  // a prompt of another length than was reserved
    bad.add_token_ids(1);
    bad.add_token_ids(2);
    bad.add_token_ids(3);
    bad.add_token_ids(4);
    bad.add_token_ids(5);
    bad.add_token_ids(6);
    bad.add_token_ids(7);
    bad.add_token_ids(8);
    bad.add_token_ids(9);
    bad.add_token_ids(10);
    bad.add_token_ids(11);
    EXPECT_EQ(prefill(bad), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    wpb::PrefillRequest bad = p;
    bad.mutable_ticket()->mutable_ranks(0)->mutable_segments(0)->set_remote_addr(1);
    EXPECT_EQ(prefill(bad), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    wpb::PrefillRequest bad = p;
    bad.clear_ticket();
    EXPECT_EQ(prefill(bad), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    wpb::StartDecodeRequest sd;
    sd.set_request_id("never-reserved");
    sd.set_max_new_tokens(4);
    auto reader = decode_stub_->StartDecode(&ctx, sd);
    wpb::DecodeStreamResponse m;
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    // A prompt is for colocated workers only: this one decodes hand-offs.
    grpc::ClientContext ctx;
    wpb::StartDecodeRequest sd;
    sd.set_request_id("prompt-to-a-decode-worker");
    sd.set_max_new_tokens(4);
    sd.add_prompt_token_ids(1);
    auto reader = decode_stub_->StartDecode(&ctx, sd);
    wpb::DecodeStreamResponse m;
    while (reader->Read(&m)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    wpb::ReleaseRequest rel;
    rel.set_request_id("good");
    wpb::ReleaseResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(decode_stub_->Release(&ctx, rel, &resp).ok());
    EXPECT_TRUE(resp.released());
  }
  RequestSpec s;
  s.id = "good-after-bad";
  s.prompt = Prompt(16, 12, kVocab);
  RequestOutcome o = Run(s);
  ASSERT_TRUE(o.decode.ok()) << o.decode;
  EXPECT_EQ(o.tokens, *reference_->Generate(s));
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

TEST_P(WorkersTest, WorkersRegisterAgainWhenTheRouterForgetsThem) {
  StartCluster();
  ASSERT_TRUE(registry_.WaitFor("decode-0", 1, absl::Seconds(10)));
  ASSERT_TRUE(registry_.WaitFor("prefill-0", 1, absl::Seconds(10)));
  registry_.Forget();
  EXPECT_TRUE(
      Eventually([&] { return decode_->registrations() >= 2 && prefill_->registrations() >= 2; }));
  EXPECT_TRUE(registry_.WaitFor("decode-0", 1, absl::Seconds(10)));
  EXPECT_TRUE(registry_.WaitFor("prefill-0", 1, absl::Seconds(10)));
}

// Every catalogued series whose labels are known at start exists at 0 before any request.
TEST_P(WorkersTest, CatalogueSeriesExistFromStart) {
  StartCluster();
  const std::string dm = DecodeMetrics();
  const std::map<std::string, std::string> d = {{"worker", "decode-0"}};
  for (const char* name :
       {"gka_decode_running", "gka_decode_waiting", "gka_decode_batch_size_count",
        "gka_decode_step_seconds_count", "gka_kv_pages_used", "gka_state_slots_used",
        "gka_reservations_active", "gka_reservations_expired_total", "gka_checksum_failures_total",
        "gka_preemptions_total"}) {
    EXPECT_EQ(MetricValue(dm, name, d), 0) << name;
  }
  EXPECT_EQ(MetricValue(dm, "gka_kv_pages_capacity", d), baseline_.total_pages);
  EXPECT_EQ(MetricValue(dm, "gka_state_slots_capacity", d), 16);
  EXPECT_EQ(MetricValue(dm, "gka_decode_num_iter_count",
                        {{"worker", "decode-0"}, {"tier", "interactive"}}),
            0);
  const std::string pm = PrefillMetrics();
  const std::map<std::string, std::string> p = {{"worker", "prefill-0"}};
  EXPECT_EQ(MetricValue(pm, "gka_prefill_queue_tokens", p), 0);
  EXPECT_EQ(MetricValue(pm, "gka_prefill_batch_tokens_count", p), 0);
  EXPECT_EQ(MetricValue(pm, "gka_prefill_transfer_tail_seconds_count", p), 0);
  EXPECT_EQ(MetricValue(pm, "gka_prefill_streamed_bytes_total", p), 0);
  EXPECT_EQ(
      MetricValue(pm, "gka_prefill_seconds_count", {{"worker", "prefill-0"}, {"tier", "batch"}}),
      0);
  for (const char* kind : {"kv", "state"}) {
    EXPECT_EQ(
        MetricValue(pm, "gka_transfer_seconds_count", {{"worker", "prefill-0"}, {"kind", kind}}),
        0);
    EXPECT_EQ(
        MetricValue(pm, "gka_transfer_bytes_total", {{"worker", "prefill-0"}, {"kind", kind}}), 0);
  }
  for (const char* reason : {"peer", "timeout", "lease", "checksum"}) {
    EXPECT_EQ(MetricValue(pm, "gka_transfer_failures_total",
                          {{"worker", "prefill-0"}, {"reason", reason}}),
              0);
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, WorkersTest, ::testing::Values("tcp", "sm"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace gka::workers_test
