// Tensor parallelism inside the workers (issue 5 points 1–2): a prefill worker at TP = p and a
// decode worker at TP = d in this process, each rank its own engine and thread over the
// in-process communicator, each decode rank its own UCX transfer engine; real gRPC servers on
// 127.0.0.1 and real UCX (tcp or shared memory). The test plays the router.
//
// p = d moves every segment rank to rank; p ≠ d (1→2, 2→1, 2→4, 4→2) makes each decode rank
// receive exactly its heads from the prefill ranks holding them. Either way the greedy tokens
// must be the TP = 1 offline engine's, and each token's logprob within 1e-5 (relative, as
// tests/engine/tp_test's logits) of the TP = 1 engine fed the same tokens (teacher-forced:
// CPU fp32, only the order of the all-reduce sums differs; ~3e-6 is typical).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/model/tiny_model.h"
#include "decode_worker/common/sampling.h"
#include "decode_worker/decode_worker.h"
#include "gtest/gtest.h"
#include "prefill_worker/prefill_worker.h"
#include "tests/integration/workers/worker_test_util.h"

namespace gka::workers_test {
namespace {

using decode_worker::DecodeWorker;
using prefill_worker::PrefillWorker;

worker_common::WorkerOptions Common(const std::string& id, int tp, const std::string& tls) {
  worker_common::WorkerOptions o;
  o.worker_id = id;
  o.metrics_address = "";
  o.ucx_transports = tls;
  o.model = {.model_dir = TpModelDir(), .num_slots = 8, .max_seq_len = 256, .tp_size = tp};
  return o;
}

struct Layout {
  int prefill_tp;
  int decode_tp;
  std::string transports;
};

void PrintTo(const Layout& l, std::ostream* os) {
  *os << "prefill TP=" << l.prefill_tp << " -> decode TP=" << l.decode_tp << " over "
      << l.transports;
}

bool FaultInjectionCompiled() {
#ifdef GKA_FAULT_INJECTION
  return true;
#else
  return false;
#endif
}

std::string Name(const ::testing::TestParamInfo<Layout>& info) {
  return absl::StrCat("P", info.param.prefill_tp, "D", info.param.decode_tp, "_",
                      info.param.transports);
}

// A prefill worker at TP = l.prefill_tp and a decode worker at TP = l.decode_tp, and the TP = 1
// engine as the reference.
class TpPairTest : public ::testing::Test {
 protected:
  struct DecodeMemory {
    int32_t slots = 8;
    int32_t pages = 0;
    int32_t max_seq_len = 256;
  };
  void Start(const Layout& l, const DecodeMemory& memory) {
    decode_worker::DecodeWorkerOptions d;
    d.common = Common("decode-tp", l.decode_tp, l.transports);
    d.common.model.num_slots = memory.slots;
    d.common.model.num_pages = memory.pages;
    d.common.model.max_seq_len = memory.max_seq_len;
    auto decode = DecodeWorker::Create(d);
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
    prefill_worker::PrefillWorkerOptions p;
    p.common = Common("prefill-tp", l.prefill_tp, l.transports);
    p.max_batch_tokens = 48;  // long prompts are chunked, short ones share steps
    p.prefill_chunk_size = 20;
    p.fault_injection = true;
    auto prefill = PrefillWorker::Create(p);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    prefill_ = *std::move(prefill);
    decode_stub_ = wpb::DecodeService::NewStub(rpc::CreateChannel(decode_->grpc_address(), {}));
    prefill_stub_ = wpb::PrefillService::NewStub(rpc::CreateChannel(prefill_->grpc_address(), {}));
    auto ref =
        worker_common::LoadModel({.model_dir = TpModelDir(), .num_slots = 1, .max_seq_len = 256});
    ASSERT_TRUE(ref.ok()) << ref.status();
    reference_ = *std::move(ref);
  }

  void TearDown() override {
    if (prefill_) prefill_->Shutdown(absl::Seconds(1));
    if (decode_) decode_->Shutdown(absl::Seconds(1));
  }

  // Feeds the prompt, then the worker's own tokens one at a time, to the TP = 1 engine: each
  // worker token must be that engine's greedy choice, with its logprob.
  void ExpectTeacherForcedTp1(const RequestSpec& spec, const RequestOutcome& o) {
    engine::Engine& ref = reference_.lead();
    ASSERT_EQ(o.tokens.size(), static_cast<size_t>(spec.max_tokens));
    ASSERT_EQ(o.logprobs.size(), o.tokens.size());
    wpb::WorkerSamplingParams greedy;
    absl::StatusOr<kernels::SamplingConfig> config = worker_common::SamplingFromProto(greedy);
    ASSERT_TRUE(config.ok());
    const base::SequenceId id(1);
    ASSERT_TRUE(ref.AddSequence(id).ok());
    absl::StatusOr<engine::StepResult> step = ref.Forward({{.id = id, .tokens = spec.prompt}});
    for (size_t k = 0; k < o.tokens.size(); ++k) {
      ASSERT_TRUE(step.ok()) << step.status();
      const std::vector<int32_t> history(o.tokens.begin(), o.tokens.begin() + k);
      auto sampled = ref.Sample(*step, {{.config = *config, .step = k, .history = history}}, 0);
      ASSERT_TRUE(sampled.ok()) << sampled.status();
      EXPECT_EQ(o.tokens[k], (*sampled)[0].token) << "token " << k;
      const float want = (*sampled)[0].logprob;
      const double rel = std::abs(o.logprobs[k] - want) / std::max(1.0f, std::abs(want));
      max_rel_logprob_error_ = std::max(max_rel_logprob_error_, rel);
      EXPECT_LE(rel, 1e-5) << "token " << k << ": " << o.logprobs[k] << " vs " << want;
      if (k + 1 < o.tokens.size()) step = ref.Forward({{.id = id, .tokens = {o.tokens[k]}}});
    }
    ASSERT_TRUE(ref.RemoveSequence(id).ok());
  }

  std::unique_ptr<DecodeWorker> decode_;
  std::unique_ptr<PrefillWorker> prefill_;
  std::unique_ptr<wpb::DecodeService::Stub> decode_stub_;
  std::unique_ptr<wpb::PrefillService::Stub> prefill_stub_;
  bool AtBaseline() { return DecodeAtBaseline(decode_->Stats()); }

  worker_common::LoadedModel reference_;
  double max_rel_logprob_error_ = 0;
};

class TpWorkersTest : public TpPairTest, public ::testing::WithParamInterface<Layout> {
 protected:
  void SetUp() override { Start(GetParam(), {}); }
};

TEST_P(TpWorkersTest, GreedyAndLogprobsEqualTheTp1Engine) {
  const Layout& l = GetParam();
  std::vector<RequestSpec> specs;
  // Within one page, page-crossing, chunked over several prefill steps.
  const int32_t lengths[] = {5, 16, 33, 47};
  for (int i = 0; i < 4; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("tp-", l.prefill_tp, "-", l.decode_tp, "-", i);
    s.prompt = Prompt(300 + i, lengths[i], kTpVocab);
    s.max_tokens = 10;
    s.logprobs = true;
    specs.push_back(s);
  }
  const std::vector<RequestOutcome> outcomes =
      RunConcurrently(*decode_stub_, *prefill_stub_, specs);
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].id);
    const RequestOutcome& o = outcomes[i];
    ASSERT_TRUE(o.reserve.ok()) << o.reserve;
    EXPECT_EQ(o.ticket.tp_size(), static_cast<uint32_t>(l.decode_tp));
    ASSERT_EQ(o.ticket.ranks_size(), l.decode_tp);
    for (int r = 0; r < l.decode_tp; ++r) {
      EXPECT_EQ(o.ticket.ranks(r).kv_heads().first(), static_cast<uint32_t>(r * 4 / l.decode_tp));
      EXPECT_EQ(o.ticket.ranks(r).kv_heads().count(), static_cast<uint32_t>(4 / l.decode_tp));
    }
    ASSERT_TRUE(o.prefill.ok()) << o.prefill;
    ASSERT_TRUE(o.decode.ok()) << o.decode;
    // Every byte of every decode rank's share arrived once: the whole state, whatever p and d.
    EXPECT_GT(o.prefill_result.transfer().kv_bytes(), 0u);
    ExpectTeacherForcedTp1(specs[i], o);
  }
  // KV + state bytes moved do not depend on the layouts (no rank sends anything twice).
  const uint64_t kv = outcomes[3].prefill_result.transfer().kv_bytes();
  const uint64_t state = outcomes[3].prefill_result.transfer().state_bytes();
  // 47 tokens = 3 pages × 2 attention layers × (K, V) × 16 tokens × 4 heads × 16 × 4 bytes.
  EXPECT_EQ(kv, 3u * 2 * 2 * 16 * 4 * 16 * 4);
  EXPECT_GT(state, 0u);
  std::cout << "prefill TP=" << l.prefill_tp << " -> decode TP=" << l.decode_tp
            << ": greedy tokens equal TP=1, max relative logprob error " << max_rel_logprob_error_
            << "; 47-token prompt: " << kv << " KV + " << state << " state bytes in "
            << outcomes[3].prefill_result.transfer().segments() << " UCX segments, "
            << outcomes[3].prefill_result.transfer().transfer_ms() << " ms\n";
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

INSTANTIATE_TEST_SUITE_P(Layouts, TpWorkersTest,
                         ::testing::Values(Layout{2, 2, "tcp"}, Layout{1, 2, "sm"},
                                           Layout{2, 1, "sm"}, Layout{2, 4, "sm"},
                                           Layout{4, 2, "tcp"}),
                         Name);

// Decode memory for fewer tokens than the batch wants: sequences are swapped out to host
// (every rank exports its own share) and resumed (every rank imports its own) — exactly.
TEST_F(TpPairTest, PreemptionAtDecodeTp2SwapsEveryRanksShareAndResumesExactly) {
  ASSERT_NO_FATAL_FAILURE(Start({1, 2, "sm"}, {.slots = 4, .pages = 10, .max_seq_len = 128}));
  std::vector<RequestSpec> specs;
  for (int i = 0; i < 4; ++i) {
    RequestSpec s;
    s.id = absl::StrCat("tp-preempt-", i);
    s.prompt = Prompt(500 + i, 18 + i, kTpVocab);
    s.max_tokens = 40;
    s.logprobs = true;
    specs.push_back(s);
  }
  const std::vector<RequestOutcome> outcomes =
      RunConcurrently(*decode_stub_, *prefill_stub_, specs);
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].id);
    ASSERT_TRUE(outcomes[i].decode.ok()) << outcomes[i].decode;
    ExpectTeacherForcedTp1(specs[i], outcomes[i]);
  }
  EXPECT_GT(decode_->Stats().preemptions, 0);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
}

// One decode rank's share fails its checksum (the fault flips a byte of the last prefill
// rank's last segment, which only the last decode rank receives): the whole hand-off is
// refused, every rank's memory returns, and the pair keeps serving.
TEST_F(TpPairTest, OneRanksCorruptedShareFailsTheWholeHandOff) {
  if (!FaultInjectionCompiled()) GTEST_SKIP() << "needs -DGKA_FAULT_INJECTION=ON";
  ASSERT_NO_FATAL_FAILURE(Start({2, 2, "tcp"}, {}));
  RequestSpec s;
  s.id = "tp-fault-corrupt";
  s.prompt = Prompt(21, 23, kTpVocab);
  RequestOutcome o = RunRequest(*decode_stub_, *prefill_stub_, s);
  ASSERT_TRUE(o.reserve.ok()) << o.reserve;
  EXPECT_EQ(o.prefill.code(), absl::StatusCode::kDataLoss) << o.prefill;
  EXPECT_NE(o.prefill.message().find("decode rank 1"), std::string::npos) << o.prefill;
  EXPECT_EQ(o.decode.code(), absl::StatusCode::kDataLoss) << o.decode;
  EXPECT_FALSE(o.started);
  EXPECT_TRUE(Eventually([&] { return AtBaseline(); }));
  EXPECT_EQ(decode_->Stats().checksum_failures, 1);
  RequestSpec ok;
  ok.id = "tp-after-corrupt";
  ok.prompt = s.prompt;
  ok.logprobs = true;
  RequestOutcome o2 = RunRequest(*decode_stub_, *prefill_stub_, ok);
  ASSERT_TRUE(o2.decode.ok()) << o2.decode;
  ExpectTeacherForcedTp1(ok, o2);
}

// A ticket this prefill worker cannot map is refused before anything is written, with a
// message that says what to change.
class TpLayoutRefusalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    decode_worker::DecodeWorkerOptions d;
    d.common = Common("decode-tp2", 2, "sm");
    auto decode = DecodeWorker::Create(d);
    ASSERT_TRUE(decode.ok()) << decode.status();
    decode_ = *std::move(decode);
    prefill_worker::PrefillWorkerOptions p;
    p.common = Common("prefill-tp2", 2, "sm");
    auto prefill = PrefillWorker::Create(p);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    prefill_ = *std::move(prefill);
    decode_stub_ = wpb::DecodeService::NewStub(rpc::CreateChannel(decode_->grpc_address(), {}));
    prefill_stub_ = wpb::PrefillService::NewStub(rpc::CreateChannel(prefill_->grpc_address(), {}));
  }
  void TearDown() override {
    if (prefill_) prefill_->Shutdown(absl::Seconds(1));
    if (decode_) decode_->Shutdown(absl::Seconds(1));
  }

  wpb::TransferTicket Reserve(const std::string& id, int32_t prompt) {
    wpb::ReserveRequest r;
    r.set_request_id(id);
    r.set_prompt_tokens(prompt);
    r.set_max_new_tokens(4);
    wpb::TransferTicket t;
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, absl::Seconds(10));
    EXPECT_TRUE(decode_stub_->Reserve(&ctx, r, &t).ok());
    return t;
  }

  absl::Status Prefill(const std::string& id, const std::vector<int32_t>& prompt,
                       const wpb::TransferTicket& ticket) {
    wpb::PrefillRequest p;
    p.set_request_id(id);
    for (int32_t t : prompt) p.add_token_ids(t);
    *p.mutable_ticket() = ticket;
    wpb::PrefillResult result;
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, absl::Seconds(20));
    return rpc::FromGrpcStatus(prefill_stub_->Prefill(&ctx, p, &result));
  }

  std::unique_ptr<DecodeWorker> decode_;
  std::unique_ptr<PrefillWorker> prefill_;
  std::unique_ptr<wpb::DecodeService::Stub> decode_stub_;
  std::unique_ptr<wpb::PrefillService::Stub> prefill_stub_;
};

TEST_F(TpLayoutRefusalTest, UnmappableTicketsGetAnActionableStatus) {
  const std::vector<int32_t> prompt = Prompt(7, 20, kTpVocab);
  const wpb::TransferTicket good = Reserve("bad-layouts", 20);
  ASSERT_EQ(good.ranks_size(), 2);

  // A decode TP that cannot split this model's 4 KV heads.
  wpb::TransferTicket t8 = good;
  t8.set_tp_size(8);
  absl::Status s = Prefill("bad-layouts", prompt, t8);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("TP=8"), std::string::npos) << s;
  EXPECT_NE(s.message().find("--tp"), std::string::npos) << s;

  // Rank head ranges that are not the even shares (a decode worker sharding another way).
  wpb::TransferTicket swapped = good;
  swapped.mutable_ranks(0)->mutable_kv_heads()->set_first(2);
  swapped.mutable_ranks(1)->mutable_kv_heads()->set_first(0);
  s = Prefill("bad-layouts", prompt, swapped);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("cannot map"), std::string::npos) << s;
  EXPECT_NE(s.message().find("ranks[0]"), std::string::npos) << s;

  // A ticket whose layout claim does not match its hash (TP=1 with rank 0's share only).
  wpb::TransferTicket truncated = good;
  truncated.set_tp_size(1);
  truncated.mutable_ranks()->RemoveLast();
  s = Prefill("bad-layouts", prompt, truncated);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("compatibility hash"), std::string::npos) << s;

  // The reservation is untouched by the refusals: the real ticket still works.
  EXPECT_TRUE(Prefill("bad-layouts", prompt, good).ok());

  // A worker cannot start at a TP its model cannot split.
  prefill_worker::PrefillWorkerOptions p3;
  p3.common = Common("prefill-tp3", 3, "sm");
  auto three = PrefillWorker::Create(p3);
  EXPECT_EQ(three.status().code(), absl::StatusCode::kInvalidArgument) << three.status();
  EXPECT_NE(three.status().message().find("tensor-parallel size 3"), std::string::npos)
      << three.status();
}

}  // namespace
}  // namespace gka::workers_test
