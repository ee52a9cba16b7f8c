// Tensor parallelism on GPUs (label gpu; skips with fewer than 2 CUDA devices): one thread per
// rank, each an Engine on the CUDA backend of its own device with an NCCL communicator (its
// one-shot path for small all-reduces where the GPUs have peer access), at TP = 2 and 4
// against TP = 1 on one GPU; decode steps as CUDA graphs (the default) and, in
// TensorParallelGraphTest, against the same ranks op by op. A head_dim-128 model (the real head
// size, so the tensor-core attention and the GKA core run their production paths), attention and
// GKA layers, two sequences of different lengths in one batch: prefill (every logits row), then 4
// decode steps. Bars are model-spec §10's for the precision:
//   fp32: logits rel L2 ≤ 1e-4; every rank's h_kk/h_kv/conv equal to its heads' slice of
//         TP 1's within rel L2 1e-4 (so the gathered state equals TP 1's);
//   bf16 (bf16 weights, GEMMs, residual and all-reduce; fp32 GKA state): logits rel L2
//         ≤ 6e-2 and argmax agreement ≥ 95 % (prefill rows); h_kk/h_kv ≤ 2e-2. §10's bf16 bars
//         (3e-2, 1e-2) are one bf16 engine against the exact model; here two bf16 engines (TP 1,
//         and TP n whose partial sums are rounded to bf16 before the all-reduce) each sit within
//         that of the exact result, so their distance is bounded by twice it (measured on an H100:
//         state ≤ 1.8e-2). The fp32 case is what shows the sharding itself is exact.
// The lm_head is vocab-parallel (each rank's rows, the logits all-gathered with NCCL in place
// and reordered on the device, inside the decode graphs too). The vocabulary-2046 cases cover
// TP 2's 1023-column shards (not 16-byte rows: the reorder's element-wise path) and TP 4, which
// does not divide 2046 and keeps the replicated lm_head.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"
#include "kernels/nccl/nccl_communicator.h"
#include "kernels/registry.h"
#include "tests/testing/golden_util.h"

namespace gka::engine {
namespace {

// NVLink multicast (NVLS) stays off on shared hosts; an explicit setting in the environment wins.
const bool kNvlsOff = setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0) == 0;

using tensor::DType;
using testing::RelL2;

int Gpus() {
  int n = 0;
  return kernels::CudaAvailable() && cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

const std::string& ModelDir(DType dtype, int64_t vocab) {
  static auto* dirs = new std::map<std::pair<DType, int64_t>, std::string>();
  auto it = dirs->find({dtype, vocab});
  if (it != dirs->end()) return it->second;
  const std::string dir = (std::filesystem::temp_directory_path() /
                           absl::StrCat("gka_tp_gpu_model_", getpid(),
                                        dtype == DType::kF32 ? "_f32" : "_bf16", "_v", vocab))
                              .string();
  model::TinyModelOptions o;
  o.pattern = "*-GKA-*-GKA";
  o.hidden_size = 512;
  o.num_attention_heads = 8;  // also GKA q heads; 8 expanded GKA heads
  o.num_key_value_heads = 4;  // GQA group 2; TP 4 leaves one KV head per rank
  o.head_dim = 128;
  o.intermediate_size = 1024;
  o.vocab_size = vocab;
  o.weight_dtype = dtype;
  GKA_CHECK_OK(model::MakeTinyModel(o, dir));
  return dirs->emplace(std::make_pair(dtype, vocab), dir).first->second;
}

struct RankResult {
  std::vector<float> prefill;         // [rows of both sequences, V]
  std::vector<float> decode;          // [steps, 2, V]
  std::vector<SequenceState> states;  // after prefill, per sequence
  Engine::GraphStats graphs;          // after the decode steps
  bool vocab_parallel = false;        // ModelDims::vocab_parallel
  absl::Status status = absl::OkStatus();
};

std::vector<std::vector<int32_t>> Prompts(int64_t vocab) {
  std::vector<std::vector<int32_t>> p(2);
  for (int i = 0; i < 97; ++i) p[0].push_back(static_cast<int32_t>((i * 131 + 7) % vocab));
  for (int i = 0; i < 41; ++i) p[1].push_back(static_cast<int32_t>((i * 71 + 3) % vocab));
  return p;
}

void RunRank(const std::string& dir, DType dtype, int device, parallel::Communicator* comm,
             RankResult& res, bool graphs = true) {
  auto fail = [&](const absl::Status& s) { res.status = s; };
  auto cfg = model::ModelConfig::FromJsonFile(dir + "/config.json");
  if (!cfg.ok()) return fail(cfg.status());
  auto ckpt = model::Checkpoint::Open(dir);
  if (!ckpt.ok()) return fail(ckpt.status());
  auto eng = Engine::Create({.backend = kernels::BackendKind::kCuda,
                             .device_ordinal = device,
                             .dtype = dtype,
                             .num_state_slots = 2,
                             .max_seq_len = 512,
                             .communicator = comm,
                             .cuda_graphs = graphs},
                            *cfg, **ckpt);
  if (!eng.ok()) return fail(eng.status());
  Engine& e = **eng;
  res.vocab_parallel = e.dims().vocab_parallel;
  const auto prompts = Prompts(cfg->vocab_size);
  std::vector<SequenceInput> batch;
  for (int b = 0; b < 2; ++b) {
    if (auto s = e.AddSequence(SequenceId(b)); !s.ok()) return fail(s);
    batch.push_back({.id = SequenceId(b), .tokens = prompts[b], .all_logits = true});
  }
  auto step = e.Forward(batch);
  if (!step.ok()) return fail(step.status());
  auto host = e.LogitsToHost(*step);
  if (!host.ok()) return fail(host.status());
  res.prefill.assign(host->data<float>(), host->data<float>() + host->shape().numel());
  for (int b = 0; b < 2; ++b) {
    auto st = e.ExportSequence(SequenceId(b));
    if (!st.ok()) return fail(st.status());
    res.states.push_back(std::move(*st));
  }
  for (int i = 0; i < 4; ++i) {
    auto d = e.Forward({{.id = SequenceId(0), .tokens = {prompts[0][i] + 1}},
                        {.id = SequenceId(1), .tokens = {prompts[1][i] + 2}}});
    if (!d.ok()) return fail(d.status());
    auto h = e.LogitsToHost(*d);
    if (!h.ok()) return fail(h.status());
    res.decode.insert(res.decode.end(), h->data<float>(), h->data<float>() + h->shape().numel());
  }
  res.graphs = e.graph_stats();
}

std::vector<RankResult> RunTp(int tp, DType dtype, bool graphs = true, int64_t vocab = 2048) {
  const std::string& dir = ModelDir(dtype, vocab);
  std::vector<RankResult> out(tp);
  if (tp == 1) {
    RunRank(dir, dtype, 0, nullptr, out[0], graphs);
    return out;
  }
  std::vector<int> devices;
  for (int r = 0; r < tp; ++r) devices.push_back(r);
  auto comms = kernels::nccl::CreateNcclGroup(devices);
  GKA_CHECK(comms.ok()) << comms.status();
  std::vector<std::thread> threads;
  for (int r = 0; r < tp; ++r) {
    threads.emplace_back([&, r] { RunRank(dir, dtype, r, (*comms)[r].get(), out[r], graphs); });
  }
  for (auto& t : threads) t.join();
  return out;
}

double ArgmaxAgreement(const std::vector<float>& a, const std::vector<float>& b, int64_t v) {
  int64_t agree = 0, rows = static_cast<int64_t>(a.size()) / v;
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = &a[r * v];
    const float* y = &b[r * v];
    agree += std::max_element(x, x + v) - x == std::max_element(y, y + v) - y;
  }
  return static_cast<double>(agree) / static_cast<double>(rows);
}

struct Case {
  int tp;
  DType dtype;
  int64_t vocab = 2048;
};

// gtest would print the struct's bytes, padding included (different on every run).
void PrintTo(const Case& c, std::ostream* os) {
  *os << "TP " << c.tp << (c.dtype == DType::kF32 ? " fp32" : " bf16") << " vocab " << c.vocab;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat("Tp", info.param.tp, info.param.dtype == DType::kF32 ? "Fp32" : "Bf16",
                      info.param.vocab == 2048 ? "" : absl::StrCat("Vocab", info.param.vocab));
}

class TensorParallelGpuTest : public ::testing::TestWithParam<Case> {};

TEST_P(TensorParallelGpuTest, LogitsAndGatheredStatesMatchTp1) {
  const auto [tp, dtype, V] = GetParam();
  if (Gpus() < tp) GTEST_SKIP() << "needs " << tp << " CUDA devices, " << Gpus() << " visible";
  const bool f32 = dtype == DType::kF32;
  const double logit_bar = f32 ? 1e-4 : 6e-2;  // see the header
  const double state_bar = f32 ? 1e-4 : 2e-2;  // see the header
  const std::vector<RankResult> ref = RunTp(1, dtype, true, V);
  ASSERT_TRUE(ref[0].status.ok()) << ref[0].status;
  const std::vector<RankResult> ranks = RunTp(tp, dtype, true, V);
  for (int r = 0; r < tp; ++r) {
    ASSERT_TRUE(ranks[r].status.ok()) << "rank " << r << ": " << ranks[r].status;
    EXPECT_EQ(ranks[r].vocab_parallel, V % tp == 0) << "rank " << r;
    ASSERT_EQ(ranks[r].prefill.size(), ref[0].prefill.size());
    ASSERT_EQ(ranks[r].decode.size(), ref[0].decode.size());
    const double pre = RelL2(ranks[r].prefill, ref[0].prefill);
    const double dec = RelL2(ranks[r].decode, ref[0].decode);
    EXPECT_LE(pre, logit_bar) << "rank " << r;
    EXPECT_LE(dec, logit_bar) << "rank " << r;
    std::printf("TP%d %s rank %d: prefill logits rel L2 %.3g, decode %.3g\n", tp,
                f32 ? "fp32" : "bf16", r, pre, dec);
    if (!f32) {
      // Over the 138 prefill rows. The 8 decode rows are too few for a 95 % bar: random
      // weights leave near-ties (§10: 96-97 % agreement), and one flip is 87.5 % (seen on an
      // H100 at TP 2 and 4, with decode logits at rel L2 1.3e-2); their rel L2 is checked above.
      EXPECT_GE(ArgmaxAgreement(ranks[r].prefill, ref[0].prefill, V), 0.95) << "rank " << r;
    }
    // Every rank gets the same sum (NCCL, or the one-shot path's rank-order fp32 sum), and each
    // rank then runs the same replicated ops.
    EXPECT_EQ(ranks[r].prefill, ranks[0].prefill) << "rank " << r << " disagrees with rank 0";
  }
  // Each rank's state is the r-th contiguous slice of TP 1's (its heads, or its channels for
  // the conv states): compare slices, i.e. the gathered state.
  int compared = 0;
  double worst = 0;
  for (int b = 0; b < 2; ++b) {
    const SequenceState& whole = ref[0].states[b];
    for (size_t i = 0; i < whole.segments.size(); ++i) {
      const StateSegment& seg = whole.segments[i];
      const bool h = seg.name.find(".h_") != std::string::npos;
      const bool conv = seg.name.find(".conv_") != std::string::npos;
      if (!h && !conv) continue;
      const float* w = seg.data.data<float>();
      const int64_t n = seg.data.shape().numel();
      for (int r = 0; r < tp; ++r) {
        const StateSegment& part = ranks[r].states[b].segments[i];
        ASSERT_EQ(part.name, seg.name);
        ASSERT_EQ(part.data.shape().numel() * tp, n) << part.name;
        const int64_t m = n / tp;
        const std::vector<float> slice(w + r * m, w + (r + 1) * m);
        const std::vector<float> mine(part.data.data<float>(), part.data.data<float>() + m);
        const double err = RelL2(mine, slice);
        // conv states hold raw bf16-rounded projections in the bf16 engine: the logits' bar.
        EXPECT_LE(err, f32 ? 1e-4 : (h ? state_bar : logit_bar)) << seg.name << " rank " << r;
        worst = std::max(worst, err);
        ++compared;
      }
    }
  }
  std::printf("TP%d %s: %d state slices, worst rel L2 %.3g\n", tp, f32 ? "fp32" : "bf16", compared,
              worst);
  EXPECT_GT(compared, 0);
}

INSTANTIATE_TEST_SUITE_P(Tp, TensorParallelGpuTest,
                         ::testing::Values(Case{2, DType::kF32}, Case{4, DType::kF32},
                                           Case{2, DType::kBF16}, Case{4, DType::kBF16},
                                           Case{2, DType::kF32, 2046}, Case{4, DType::kF32, 2046}),
                         CaseName);

// Decode steps at TP > 1 as CUDA graphs (each rank captures its own step, the all-reduces
// included) against the same ranks op by op: the 4 decode steps are one capture and 3 replays
// on every rank, and their logits equal op by op's within cuda_graph_test's bars (fp32: only the
// padded GEMM row count may change cuBLAS's kernel; bf16 measured bitwise there).
class TensorParallelGraphTest : public ::testing::TestWithParam<Case> {};

TEST_P(TensorParallelGraphTest, DecodeGraphsMatchOpByOp) {
  const auto [tp, dtype, vocab] = GetParam();
  if (Gpus() < tp) GTEST_SKIP() << "needs " << tp << " CUDA devices, " << Gpus() << " visible";
  const bool f32 = dtype == DType::kF32;
  const std::vector<RankResult> eager = RunTp(tp, dtype, /*graphs=*/false, vocab);
  const std::vector<RankResult> graph = RunTp(tp, dtype, /*graphs=*/true, vocab);
  for (int r = 0; r < tp; ++r) {
    ASSERT_TRUE(eager[r].status.ok()) << "rank " << r << ": " << eager[r].status;
    ASSERT_TRUE(graph[r].status.ok()) << "rank " << r << ": " << graph[r].status;
    EXPECT_FALSE(eager[r].graphs.enabled);
    EXPECT_TRUE(graph[r].graphs.enabled) << "rank " << r;
    EXPECT_EQ(graph[r].graphs.captures, 1) << "rank " << r;
    EXPECT_EQ(graph[r].graphs.replays, 3) << "rank " << r;
    ASSERT_EQ(graph[r].decode.size(), eager[r].decode.size());
    EXPECT_EQ(graph[r].prefill, eager[r].prefill)
        << "rank " << r << ": prefill is op by op in both";
    const double e = RelL2(graph[r].decode, eager[r].decode);
    EXPECT_LE(e, f32 ? 2e-5 : 2e-2) << "rank " << r;
    EXPECT_EQ(graph[r].decode, graph[0].decode) << "rank " << r << " disagrees with rank 0";
    std::printf(
        "TP%d %s rank %d: decode graphs vs op by op rel L2 %.3g (%lld captures, %lld "
        "replays, %lld nodes)\n",
        tp, f32 ? "fp32" : "bf16", r, e, static_cast<long long>(graph[r].graphs.captures),
        static_cast<long long>(graph[r].graphs.replays),
        static_cast<long long>(graph[r].graphs.last_nodes));
  }
}

INSTANTIATE_TEST_SUITE_P(Tp, TensorParallelGraphTest,
                         ::testing::Values(Case{2, DType::kBF16}, Case{4, DType::kBF16},
                                           Case{4, DType::kF32}, Case{2, DType::kBF16, 2046}),
                         CaseName);

TEST(TensorParallelGpuTest, NcclCommunicatorNeedsTheCudaBackend) {
  if (Gpus() < 2) GTEST_SKIP() << "needs 2 CUDA devices";
  auto comms = kernels::nccl::CreateNcclGroup({0, 1});
  ASSERT_TRUE(comms.ok()) << comms.status();
  const std::string& dir = ModelDir(DType::kF32, 2048);
  auto cfg = model::ModelConfig::FromJsonFile(dir + "/config.json");
  auto ckpt = model::Checkpoint::Open(dir);
  ASSERT_TRUE(cfg.ok() && ckpt.ok());
  auto eng = Engine::Create({.communicator = (*comms)[0].get()}, *cfg, **ckpt);  // CPU backend
  EXPECT_EQ(eng.status().code(), absl::StatusCode::kInvalidArgument) << eng.status();
}

}  // namespace
}  // namespace gka::engine
