// A colocated decode worker (--colocated) in this process: its real gRPC server on 127.0.0.1,
// registered with a router stand-in; the test plays the router, whose StartDecode carries the
// prompt (no Reserve, no prefill worker, no transfer). The worker prefills each prompt in
// chunks mixed into its running decode batch under a small token budget, so long prompts
// are prefilled while other sequences decode. Greedy tokens must equal the offline engine's
// (TP = 1) token for token, each token's logprob within 1e-5 relative of the offline
// engine's (tp_workers_test's bar: at TP = 1 only the chunking differs, at TP = 2 also the
// order of the all-reduce sums), at TP = 1 and TP = 2 (one engine thread per rank).
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "decode_worker/decode_worker.h"
#include "gtest/gtest.h"
#include "tests/integration/workers/worker_test_util.h"

namespace gka::workers_test {
namespace {

using decode_worker::DecodeWorker;
using decode_worker::DecodeWorkerOptions;

constexpr int32_t kVocab = kTpVocab;
constexpr int32_t kMaxSeqLen = 256;

struct Outcome {
  absl::Status status;
  std::vector<int32_t> tokens;  // the first token, then the streamed ones
  std::vector<float> logprobs;  // with logprobs: one per token
  bool accepted = false;        // DecodeAccepted came first
  std::optional<wpb::DecodeStarted> started;
  std::optional<wpb::DecodeDone> done;
};

wpb::StartDecodeRequest ColocatedRequest(const RequestSpec& spec) {
  wpb::StartDecodeRequest sd;
  sd.set_request_id(spec.id);
  for (int32_t t : spec.prompt) sd.add_prompt_token_ids(t);
  sd.set_prefill_num_iter(spec.prefill_num_iter);
  sd.set_decode_num_iter(spec.decode_num_iter);
  sd.set_max_new_tokens(spec.max_tokens);
  sd.set_tier(spec.tier);
  sd.mutable_sampling()->set_temperature(spec.temperature);
  sd.mutable_sampling()->set_logprobs(spec.logprobs);
  for (int32_t id : spec.stop_ids) sd.mutable_sampling()->add_stop_token_ids(id);
  return sd;
}

// The router's part of one colocated request: one StartDecode, read to its end. `ctx` lets
// another thread cancel it.
Outcome RunColocated(wpb::DecodeService::Stub& stub, const wpb::StartDecodeRequest& request,
                     grpc::ClientContext* ctx = nullptr) {
  grpc::ClientContext own;
  if (ctx == nullptr) ctx = &own;
  rpc::SetTimeout(*ctx, absl::Seconds(120));
  Outcome out;
  auto reader = stub.StartDecode(ctx, request);
  wpb::DecodeStreamResponse m;
  while (reader->Read(&m)) {
    if (m.has_accepted()) {
      out.accepted = out.tokens.empty() && !out.started.has_value();
    } else if (m.has_started()) {
      out.started = m.started();
      out.tokens.push_back(m.started().first_token());
      if (m.started().has_first_logprob()) {
        out.logprobs.push_back(m.started().first_logprob().logprob());
      }
    } else if (m.has_tokens()) {
      for (int32_t t : m.tokens().token_ids()) out.tokens.push_back(t);
      for (const spb::TokenLogprob& lp : m.tokens().logprobs())
        out.logprobs.push_back(lp.logprob());
    } else if (m.has_done()) {
      out.done = m.done();
    }
  }
  out.status = rpc::FromGrpcStatus(reader->Finish());
  return out;
}

class ColocatedTest : public ::testing::TestWithParam<int> {
 protected:
  // A budget of 16 tokens a step with chunks of at most 8: a prompt of 100 tokens takes 13
  // steps or more, during which every decoding sequence keeps stepping.
  void Start(int32_t num_slots = 8, int32_t max_batch_tokens = 16, int32_t chunk = 8) {
    auto registry_server = rpc::GrpcServer::Create({.address = "127.0.0.1:0"}, {&registry_});
    ASSERT_TRUE(registry_server.ok()) << registry_server.status();
    registry_server_ = *std::move(registry_server);
    DecodeWorkerOptions d;
    d.common.worker_id = "colocated-0";
    d.common.metrics_address = "";
    d.common.router_address = registry_server_->address();
    d.common.heartbeat_interval = absl::Milliseconds(100);
    d.common.ucx_transports = "tcp";
    d.common.tiers = {"interactive", "batch"};
    d.common.model = {.model_dir = TpModelDir(),
                      .num_slots = num_slots,
                      .max_seq_len = kMaxSeqLen,
                      .tp_size = GetParam()};
    d.colocated = true;
    d.max_batch_tokens = max_batch_tokens;
    d.prefill_chunk_size = chunk;
    auto worker = DecodeWorker::Create(d);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
    stub_ = wpb::DecodeService::NewStub(rpc::CreateChannel(worker_->grpc_address(), {}));
    auto reference = OfflineReference::Load(TpModelDir());
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = *std::move(reference);
    // The offline engine's logprobs (teacher-forced on its own greedy tokens).
    auto model =
        worker_common::LoadModel({.model_dir = TpModelDir(), .num_slots = 1, .max_seq_len = 512});
    ASSERT_TRUE(model.ok()) << model.status();
    offline_ = *std::move(model);
  }

  void TearDown() override {
    if (worker_) worker_->Shutdown(absl::Seconds(1));
    worker_.reset();
    if (registry_server_) registry_server_->Shutdown(absl::ZeroDuration());
  }

  bool AtBaseline() { return DecodeAtBaseline(worker_->Stats()); }

  absl::StatusOr<cli::GenerateResult> Offline(const RequestSpec& spec) {
    cli::GenerateOptions o;
    o.prompt = spec.prompt;
    o.max_tokens = spec.max_tokens;
    o.sampling.temperature = 0;
    o.prefill_num_iter = spec.prefill_num_iter;
    o.decode_num_iter = spec.decode_num_iter;
    return cli::Generate(offline_.lead(), o, {}, 0);
  }

  RegistryStandIn registry_;
  std::unique_ptr<rpc::GrpcServer> registry_server_;
  std::unique_ptr<DecodeWorker> worker_;
  std::unique_ptr<wpb::DecodeService::Stub> stub_;
  std::unique_ptr<OfflineReference> reference_;
  worker_common::LoadedModel offline_;
};

// Short requests start decoding first; long prompts (chunked over many steps) arrive while
// they decode. Every answer equals the offline engine's, in two tiers of different num_iter.
TEST_P(ColocatedTest, GreedyEqualsOfflineWhilePrefillInterleavesWithDecode) {
  Start();
  ASSERT_TRUE(registry_.WaitFor("colocated-0", 1, absl::Seconds(10)));
  EXPECT_EQ(registry_.Get("colocated-0")->registration.role(), wpb::WORKER_ROLE_COLOCATED);
  std::vector<RequestSpec> specs;
  const int32_t lengths[] = {3, 9, 17, 100, 140, 61};
  for (int i = 0; i < 6; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("colocated-", i);
    s.prompt = Prompt(300 + i, lengths[i], kVocab);
    s.max_tokens = i < 3 ? 40 : 10;
    s.tier = i % 2 == 0 ? "interactive" : "batch";
    s.prefill_num_iter = i % 2 == 0 ? 30 : 10;
    s.decode_num_iter = i % 2 == 0 ? 30 : 5;
    s.logprobs = true;
    specs.push_back(s);
  }
  std::vector<Outcome> outcomes(specs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < 3; ++i) {
    threads.emplace_back(
        [&, i] { outcomes[i] = RunColocated(*stub_, ColocatedRequest(specs[i])); });
  }
  // The long prompts come once the short ones are decoding.
  ASSERT_TRUE(Eventually([&] { return worker_->Stats().generated_tokens >= 6; }));
  for (size_t i = 3; i < specs.size(); ++i) {
    threads.emplace_back(
        [&, i] { outcomes[i] = RunColocated(*stub_, ColocatedRequest(specs[i])); });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].id);
    const Outcome& o = outcomes[i];
    ASSERT_TRUE(o.status.ok()) << o.status;
    absl::StatusOr<cli::GenerateResult> expected = Offline(specs[i]);
    ASSERT_TRUE(expected.ok()) << expected.status();
    EXPECT_EQ(o.tokens, expected->token_ids);
    EXPECT_TRUE(o.accepted);
    ASSERT_TRUE(o.started.has_value());
    EXPECT_EQ(o.started->prefill_num_iter(), specs[i].prefill_num_iter);
    EXPECT_GE(o.started->prefill_ms(), 0);
    ASSERT_TRUE(o.done.has_value());
    EXPECT_EQ(o.done->finish_reason(), spb::FINISH_REASON_LENGTH);
    EXPECT_EQ(o.done->generated_tokens(), static_cast<uint32_t>(specs[i].max_tokens));
    EXPECT_EQ(o.done->decode_num_iter(), specs[i].decode_num_iter);
    ASSERT_EQ(o.logprobs.size(), expected->samples.size());
    for (size_t k = 0; k < o.logprobs.size(); ++k) {
      const float want = expected->samples[k].logprob;
      EXPECT_LE(std::abs(o.logprobs[k] - want), 1e-5f * std::max(1.0f, std::abs(want)))
          << "token " << k << ": " << o.logprobs[k] << " vs offline " << want;
    }
  }
  // Prompt chunks shared steps with decode tokens (vLLM-style chunked prefill), not turns.
  EXPECT_GT(worker_->Stats().mixed_steps, 0);
  EXPECT_GT(MetricValue(worker_->registry().Serialize(), "gka_decode_mixed_steps_total",
                        {{"worker", "colocated-0"}}),
            0);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  // The load report carries the queue of prompt tokens (0 now) and the capacity.
  ASSERT_TRUE(registry_.WaitFor("colocated-0", 3, absl::Seconds(10)));
  EXPECT_EQ(registry_.Get("colocated-0")->last_load.queued_prompt_tokens(), 0u);
}

// Cancelling the call, or Abort, while the prompt is still being prefilled frees its slot
// and pages: the worker's stats return to the baseline.
TEST_P(ColocatedTest, CancelAndAbortMidPrefillReturnMemory) {
  // 4 prompt tokens a step: a prompt of 200 tokens is prefilled over 50 steps.
  Start(/*num_slots=*/4, /*max_batch_tokens=*/4, /*chunk=*/4);
  ASSERT_TRUE(AtBaseline());
  for (const bool abort : {false, true}) {
    SCOPED_TRACE(abort ? "Abort" : "cancelled call");
    RequestSpec s;
    s.id = abort ? "aborted" : "cancelled";
    s.prompt = Prompt(abort ? 41 : 42, 200, kVocab);
    s.max_tokens = 8;
    grpc::ClientContext ctx;
    Outcome o;
    std::thread call([&] { o = RunColocated(*stub_, ColocatedRequest(s), &ctx); });
    // Mid-prefill: part of the prompt fed, its slot and some pages taken.
    const bool mid = Eventually(
        [&] {
          const decode_worker::DecodeStats st = worker_->Stats();
          return st.queued_prompt_tokens > 0 && st.queued_prompt_tokens < 200 &&
                 st.free_pages < st.total_pages;
        },
        absl::Seconds(30));
    if (abort) {
      spb::AbortRequest a;
      a.set_request_id(s.id);
      spb::AbortResponse r;
      grpc::ClientContext actx;
      EXPECT_TRUE(stub_->Abort(&actx, a, &r).ok());
      EXPECT_TRUE(r.found());
    } else {
      ctx.TryCancel();
    }
    call.join();
    EXPECT_TRUE(mid) << "never saw the prompt partly prefilled";
    EXPECT_FALSE(o.started.has_value()) << "the prefill finished before it was stopped";
    if (abort) {
      ASSERT_TRUE(o.done.has_value());
      EXPECT_EQ(o.done->finish_reason(), spb::FINISH_REASON_ABORT);
    } else {
      EXPECT_EQ(o.status.code(), absl::StatusCode::kCancelled) << o.status;
    }
    EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  }
  // The worker serves on.
  RequestSpec s;
  s.id = "after";
  s.prompt = Prompt(43, 20, kVocab);
  s.max_tokens = 6;
  const Outcome o = RunColocated(*stub_, ColocatedRequest(s));
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.tokens, *reference_->Generate(s));
}

// Malformed requests get INVALID_ARGUMENT naming what is wrong; a full worker answers
// RESOURCE_EXHAUSTED (the router places the request elsewhere); Reserve is refused (a
// colocated worker takes no hand-offs).
TEST_P(ColocatedTest, MalformedAndUnplaceableRequestsAreRefused) {
  Start(/*num_slots=*/2);
  RequestSpec good;
  good.id = "bad";
  good.prompt = Prompt(50, 10, kVocab);
  good.max_tokens = 4;
  auto refused = [&](const wpb::StartDecodeRequest& r) { return RunColocated(*stub_, r).status; };
  {
    wpb::StartDecodeRequest r = ColocatedRequest(good);
    r.clear_prompt_token_ids();
    const absl::Status s = refused(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("prompt_token_ids is empty"), absl::string_view::npos) << s;
  }
  {
    RequestSpec too_long = good;
    too_long.prompt = Prompt(51, kMaxSeqLen - 2, kVocab);  // + 4 new tokens > the context
    const absl::Status s = refused(ColocatedRequest(too_long));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("exceed this worker's context"), absl::string_view::npos) << s;
  }
  {
    wpb::StartDecodeRequest r = ColocatedRequest(good);
    r.set_prompt_token_ids(3, kVocab);
    const absl::Status s = refused(r);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("prompt_token_ids[3]"), absl::string_view::npos) << s;
  }
  {
    wpb::StartDecodeRequest r = ColocatedRequest(good);
    r.set_prefill_num_iter(-2);
    EXPECT_EQ(refused(r).code(), absl::StatusCode::kInvalidArgument);
    r = ColocatedRequest(good);
    r.set_max_new_tokens(0);
    EXPECT_EQ(refused(r).code(), absl::StatusCode::kInvalidArgument);
    r = ColocatedRequest(good);
    r.set_transfer_id(7);
    EXPECT_EQ(refused(r).code(), absl::StatusCode::kInvalidArgument);
    r = ColocatedRequest(good);
    r.mutable_sampling()->set_temperature(-1);
    EXPECT_EQ(refused(r).code(), absl::StatusCode::kInvalidArgument);
  }
  {
    wpb::ReserveRequest r;
    r.set_request_id("reserve");
    r.set_prompt_tokens(5);
    r.set_max_new_tokens(5);
    wpb::TransferTicket t;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->Reserve(&ctx, r, &t).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  EXPECT_TRUE(AtBaseline());
  // Both slots taken by long generations: a third request is refused, not queued.
  std::vector<grpc::ClientContext> contexts(2);
  std::vector<Outcome> running(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    RequestSpec s = good;
    s.id = absl::StrCat("long-", i);
    s.max_tokens = 200;
    threads.emplace_back(
        [&, i, s] { running[i] = RunColocated(*stub_, ColocatedRequest(s), &contexts[i]); });
  }
  ASSERT_TRUE(Eventually([&] { return worker_->Stats().free_slots == 0; }));
  RequestSpec third = good;
  third.id = "third";
  EXPECT_EQ(refused(ColocatedRequest(third)).code(), absl::StatusCode::kResourceExhausted);
  for (grpc::ClientContext& c : contexts) c.TryCancel();
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  // And serves a good request after all that.
  good.id = "good";
  const Outcome o = RunColocated(*stub_, ColocatedRequest(good));
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(o.tokens, *reference_->Generate(good));
}

INSTANTIATE_TEST_SUITE_P(Tp, ColocatedTest, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat("Tp", info.param);
                         });

}  // namespace
}  // namespace gka::workers_test
