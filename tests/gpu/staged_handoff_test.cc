// The disaggregated path on the GPU, below the gRPC workers: a prefill engine (GPU 0) prefills
// a prompt, its KV pages and GKA/conv states go device → pinned staging → UCX (real engines,
// shared memory and tcp) → pinned landing → device of a decode engine (GPU 1 when there is
// one, else GPU 0), with the poly61 checksum computed on both GPUs inside the copies; then the
// same continuation tokens are teacher-forced through both engines and the logits compared
// (the colocated engine is the prefill engine continuing its own sequence). Both engines run
// bf16 weights/KV and fp32 GKA state; with identical state bytes and batch-of-one steps the
// logits must agree within bf16 tolerance (the test prints the measured difference; equal
// kernels on equal inputs usually give 0). Skips without a GPU.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <filesystem>
#include <future>
#include <random>

#include "common/engine/engine.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"
#include "common/transfer/staging/staging.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace gka::gpu_testing {
namespace {

using engine::Engine;
using engine::MemorySegment;
using transfer::staging::DeviceRange;
using transfer::staging::DeviceSegment;

std::unique_ptr<Engine> MakeEngine(const std::string& dir, int device) {
  auto config = model::ModelConfig::FromJsonFile(dir + "/config.json");
  EXPECT_TRUE(config.ok()) << config.status();
  auto ckpt = model::Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  engine::EngineOptions o;
  o.backend = kernels::BackendKind::kCuda;
  o.device_ordinal = device;
  o.dtype = tensor::DType::kBF16;
  o.num_state_slots = 4;
  o.max_seq_len = 2048;
  auto e = Engine::Create(o, *config, **ckpt);
  EXPECT_TRUE(e.ok()) << e.status();
  if (!e.ok()) std::printf("[ engine   ] GPU %d: %s\n", device, e.status().ToString().c_str());
  return e.ok() ? std::move(e).value() : nullptr;
}

// The CUDA current device is per thread and an engine assumes its own (one engine thread per
// engine in the workers); this test drives two engines from one thread, so it switches.
void Use(int device) { ASSERT_EQ(cudaSetDevice(device), cudaSuccess); }

// The stage of each DescribeSequence segment: its layer (the order a layer-streaming prefill
// finishes them in).
std::vector<int32_t> SegmentStages(const Engine& e, int64_t length) {
  const engine::ModelDims& d = e.dims();
  const int32_t pages =
      static_cast<int32_t>((length + e.options().page_size - 1) / e.options().page_size);
  std::vector<int32_t> stages;
  for (int32_t l = 0; l < d.num_layers; ++l) {
    const int n = d.is_gka[l] ? (d.use_v_conv ? 5 : 4) : 2 * pages;
    for (int i = 0; i < n; ++i) stages.push_back(l);
  }
  return stages;
}

class StagedHandoffTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    const int gpus = kernels::cuda::CudaDeviceCount();
    if (gpus == 0) GTEST_SKIP() << "no CUDA device visible";
    decode_device_ = gpus > 1 ? 1 : 0;
    dir_ = (std::filesystem::temp_directory_path() / "gka_staged_handoff_model").string();
    model::TinyModelOptions mo;
    mo.vocab_size = 2048;
    mo.head_dim = 128;  // the real head_dim: the tensor-core kernels' shapes
    mo.seed = 11;
    ASSERT_TRUE(model::MakeTinyModel(mo, dir_).ok());
  }

  std::string dir_;
  int decode_device_ = 0;
};

TEST_P(StagedHandoffTest, TeacherForcedLogitsMatchTheColocatedEngine) {
  auto prefill = MakeEngine(dir_, 0);
  auto decode = MakeEngine(dir_, decode_device_);
  ASSERT_NE(prefill, nullptr);
  ASSERT_NE(decode, nullptr);
  std::mt19937_64 rng(5);
  const int64_t prompt_len = 333;  // 21 pages of 16, the last one partial
  std::vector<int32_t> prompt(prompt_len), continuation(24);
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % 2000);
  for (auto& t : continuation) t = static_cast<int32_t>(rng() % 2000);

  const base::SequenceId seq(1);
  Use(0);
  ASSERT_TRUE(prefill->AddSequence(seq).ok());
  ASSERT_TRUE(prefill->Forward({{.id = seq, .tokens = prompt}}).ok());
  ASSERT_TRUE(prefill->backend().Synchronize().ok());

  // Receiver: reserve, land in pinned staging on the decode GPU, register the landing.
  Use(decode_device_);
  ASSERT_TRUE(decode->ReserveForImport(seq, prompt_len).ok());
  auto dst = decode->DescribeSequence(seq);
  ASSERT_TRUE(dst.ok()) << dst.status();
  Use(0);
  auto src = prefill->DescribeSequence(seq);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ(src->size(), dst->size());

  auto rx_copier = transfer::staging::MakeStageCopier({.device = true, .ordinal = decode_device_});
  ASSERT_TRUE(rx_copier.ok()) << rx_copier.status();
  auto tx_copier = transfer::staging::MakeStageCopier({.device = true, .ordinal = 0});
  ASSERT_TRUE(tx_copier.ok()) << tx_copier.status();
  transfer::staging::StagingPool rx_pool(rx_copier->get()), tx_pool(tx_copier->get());
  std::vector<DeviceRange> dst_ranges;
  for (const MemorySegment& m : *dst) dst_ranges.push_back({m.ptr, m.bytes});
  auto landing = transfer::staging::Landing::Create(rx_pool, dst_ranges);
  ASSERT_TRUE(landing.ok()) << landing.status();

  auto receiver =
      transfer::ucx::UcxTransferEngine::Create({.transports = GetParam(), .name = "rx"});
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  auto sender = transfer::ucx::UcxTransferEngine::Create({.transports = GetParam(), .name = "tx"});
  ASSERT_TRUE(sender.ok()) << sender.status();
  auto path = transfer::staging::SelectTransferPath(transfer::MemoryKind::kCuda,
                                                    (*receiver)->SupportsCuda(),
                                                    transfer::staging::StagingMode::kStaged);
  ASSERT_EQ(*path, transfer::staging::TransferPath::kStaged);
  {
    auto region = (*receiver)->RegisterMemory((*landing)->data(), (*landing)->size());
    ASSERT_TRUE(region.ok()) << region.status();
    std::promise<absl::StatusOr<transfer::TransferCompletion>> done;
    transfer::ExpectedTransfer expected{.transfer_id = 42,
                                        .lease_deadline = absl::Now() + absl::Seconds(60)};
    expected.verify_ranges = (*landing)->VerifyRanges();
    expected.caller_verifies_checksum = true;
    ASSERT_TRUE((*receiver)
                    ->Expect(std::move(expected),
                             [&](absl::StatusOr<transfer::TransferCompletion> c) {
                               done.set_value(std::move(c));
                             })
                    .ok());
    const std::vector<int32_t> stages = SegmentStages(*prefill, prompt_len);
    ASSERT_EQ(stages.size(), src->size());
    std::vector<DeviceSegment> segments;
    for (size_t i = 0; i < src->size(); ++i) {
      ASSERT_EQ((*src)[i].bytes, (*dst)[i].bytes);
      segments.push_back({.src = (*src)[i].ptr,
                          .region = 0,
                          .remote_addr = reinterpret_cast<uint64_t>((*landing)->landing(i)),
                          .length = (*src)[i].bytes,
                          .stage = stages[i]});
    }
    const transfer::TransferTarget target{(*receiver)->WorkerAddress(), {(*region)->remote()}};
    auto t = (*sender)->StartTransfer(target, 42, absl::Now() + absl::Seconds(60));
    ASSERT_TRUE(t.ok()) << t.status();
    std::unique_ptr<transfer::staging::StagedSender> staging;
    auto sent =
        transfer::staging::PutStaged(**t, **tx_copier, &tx_pool, segments, nullptr, &staging);
    ASSERT_TRUE(sent.ok()) << sent.status();
    (*t)->SupplyChecksum(sent->checksum);
    transfer::TransferOutcome outcome = (*t)->FinishAndWait("first-token");
    ASSERT_TRUE(outcome.status.ok()) << outcome.status;
    auto completion = done.get_future().get();
    ASSERT_TRUE(completion.ok()) << completion.status();
    std::printf("[ handoff  ] %s: %llu bytes in %d stages, poly61 0x%llx\n", GetParam(),
                static_cast<unsigned long long>(sent->bytes), sent->stages,
                static_cast<unsigned long long>(sent->checksum));
    ASSERT_TRUE(
        (*landing)->CopyInAndVerify(**rx_copier, completion->checksum, completion->bytes).ok());
  }

  // Teacher forcing: the same tokens through both engines, one decode step at a time.
  double worst = 0;
  for (size_t i = 0; i < continuation.size(); ++i) {
    const std::vector<int32_t> tok = {continuation[i]};
    Use(0);
    auto a = prefill->Forward({{.id = seq, .tokens = tok}});
    ASSERT_TRUE(a.ok()) << a.status();
    auto la = prefill->LogitsToHost(*a);
    ASSERT_TRUE(la.ok());
    Use(decode_device_);
    auto b = decode->Forward({{.id = seq, .tokens = tok}});
    ASSERT_TRUE(b.ok()) << b.status();
    auto lb = decode->LogitsToHost(*b);
    ASSERT_TRUE(lb.ok());
    const float* pa = la->view().data<float>();
    const float* pb = lb->view().data<float>();
    const int64_t n = la->view().numel();
    const ErrorStats e = Compare(std::vector<float>(pb, pb + n), std::vector<float>(pa, pa + n));
    worst = std::max(worst, e.rel_l2);
    EXPECT_EQ(e.non_finite, 0) << "step " << i;
    EXPECT_LE(e.rel_l2, 2e-2) << "step " << i;  // bf16 tolerance (model-spec §10)
  }
  std::printf(
      "[ parity   ] disaggregated vs colocated logits, %zu teacher-forced steps: worst "
      "rel_l2 %.3g (GPU %d -> GPU %d)\n",
      continuation.size(), worst, 0, decode_device_);
}

INSTANTIATE_TEST_SUITE_P(Transports, StagedHandoffTest, ::testing::Values("sm", "tcp"));

}  // namespace
}  // namespace gka::gpu_testing
