// Decode and prefill throughput of a real-size model through the engine at tensor parallelism
// TP on this machine's GPUs (issue 5's method): pure decode, no prefill of the context — every
// sequence's KV pages and GKA state are filled with random data in place — and the batch as
// large as the KV pages and state slots that fit beside the weights allow. One thread and one
// Engine (CUDA backend, NCCL communicator) per rank, as in a worker.
//
//   tp_throughput_bench --model DIR --tp 4 [--contexts 16384,131072] [--num-iter 30]
//                       [--steps 16] [--runs 2] [--max-batch 1024] [--prefill 16384]
//                       [--breakdown] [--label NAME] [--reserve-gib 3] [--make-model PRESET]
//
// --make-model hqwen3-32b-gka | qwen3-32b | tiny-hd128: first writes DIR with `gka
// make-random-model`'s code (model::PresetOptions + MakeTinyModel: real safetensors shards + index,
// seeded random bf16) unless DIR/config.json exists, and prints how long that took. The engine then
// loads DIR through the real loader, each rank reading only its slices.
//
// Per context it prints one row: batch, tokens/s of each run (steps × batch / wall time of
// `steps` synchronised Forward calls after 3 warm-up steps), per-GPU memory split (weights /
// KV / GKA state), bytes each GPU must read per step (its weights except the embedding table,
// its KV of every sequence, its GKA state read and written), and that over the step time as a
// fraction of the copy bandwidth measured here (the HBM roofline). --prefill T: one T-token
// prompt, time and MFU (matmul FLOPs 2·params·T + causal attention 2·T²·Hq·D per attention
// layer, over TP × 989 TFLOP/s, the H100 SXM bf16 dense datasheet rate; also over the cuBLAS
// rate measured here). --breakdown: device time per op of one decode step at the largest
// batch of the first context (rank 0), from events around every op; with --prefill, also of
// one more (untimed otherwise) prefill, GEMMs with their achieved TFLOP/s.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/engine/engine.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"
#include "kernels/nccl/nccl_communicator.h"
#include "kernels/registry.h"
#include "tests/perf/gpu/bench_check.h"
#include "tests/perf/gpu/bench_random.h"
#include "tests/perf/gpu/timing_backend.h"

namespace gka::gpu_testing {
namespace {

using engine::Engine;
using engine::SequenceId;
using engine::SequenceInput;
using tensor::DType;

void Die(const absl::Status& s, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), s.ToString().c_str());
  std::fflush(stderr);
  std::_Exit(1);  // other ranks may be inside a collective: don't wait for them
}
#define OK_OR_DIE(expr)                                         \
  do {                                                          \
    const auto& s_ = (expr);                                    \
    if (!s_.ok()) Die(s_, absl::StrCat(__LINE__, ": ", #expr)); \
  } while (0)

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kH100PeakBf16 = 989.4e12;  // dense, SXM datasheet

struct Args {
  std::string model;
  int tp = 1;
  std::vector<int64_t> contexts = {16384, 131072};
  int num_iter = 30;
  int steps = 16;
  int runs = 2;
  int max_batch = 1024;
  int64_t prefill = 0;
  bool breakdown = false;
  std::string label;
  double reserve_gib = 3.0;
  std::string make_model;
};

// A watchdog: a step (or load) that makes no progress for this long is a hang (e.g. a rank
// stuck in a collective): print and exit rather than eat the device lease.
std::atomic<int64_t> g_last_progress{0};
int64_t NowS() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
void Progress() { g_last_progress = NowS(); }
void StartWatchdog(int64_t limit_s) {
  Progress();
  std::thread([limit_s] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(5));
      if (NowS() - g_last_progress > limit_s) {
        std::fprintf(stderr, "watchdog: no progress for %lld s (hang in a collective?)\n",
                     static_cast<long long>(limit_s));
        std::fflush(stdout);
        std::_Exit(3);
      }
    }
  }).detach();
}

// Per-rank bytes of the weights as the engine loads them: matrices in bf16, small vectors in
// F32; per-layer tensors split over TP except norms; the embedding table replicated; the
// lm_head vocab-parallel (1/tp of its rows) when tp divides the vocabulary, else replicated
// (tied: a slice of the embedding table, allocated on its own).
struct WeightBytes {
  double per_rank = 0;       // resident on each GPU
  double embed = 0;          // the embedding table (not read by a decode step)
  double matmul_params = 0;  // whole-model parameters of per-layer GEMMs (prefill FLOPs)
};
WeightBytes CountWeights(const model::Checkpoint& ckpt, int tp) {
  WeightBytes w;
  const bool tied = !ckpt.Contains("lm_head.weight");
  for (const std::string& name : ckpt.names()) {
    auto info = ckpt.Get(name);
    OK_OR_DIE(info.status());
    const double n = static_cast<double>(info->shape.numel());
    const bool matrix = info->shape.rank() == 2;
    const double bytes = n * (matrix ? 2 : 4);
    const bool layer = name.find("layers.") != std::string::npos;
    const bool norm = name.find("norm") != std::string::npos;
    const bool split = layer && !norm;
    const bool embed = name == "model.embed_tokens.weight";
    const double lm_head = info->shape[0] % tp == 0 ? bytes / tp : bytes;  // if it is one
    if (name == "lm_head.weight") {
      w.per_rank += lm_head;
    } else {
      w.per_rank += split ? bytes / tp : bytes;
    }
    if (embed) w.embed = bytes;
    if (embed && tied) w.per_rank += lm_head;
    if (layer && matrix) w.matmul_params += n;
  }
  return w;
}

// Measured once on GPU 0: device-to-device copy bandwidth (bytes read + written) and the
// bf16 GEMM rate of cuBLAS is left to cuda_kernels_bench; here the copy only.
double CopyBandwidth() {
  const size_t bytes = size_t{4} << 30;
  void *a, *b;
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaMalloc(&a, bytes));
  CUDA_CHECK(cudaMalloc(&b, bytes));
  CUDA_CHECK(RandomFillDevice(a, bytes / 4, false, 1, 1.f, 0.f, nullptr));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    CUDA_CHECK(cudaEventRecord(e0));
    CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaEventRecord(e1));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float t;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3);
}

struct Shape {
  int attn_layers = 0, gka_layers = 0;
  double page_bytes = 0;   // one KV page of one layer, K or V, per rank
  double state_bytes = 0;  // one slot's GKA state (h_kk, h_kv, conv), all layers, per rank
  double hkk_hkv_bytes = 0;
  int64_t hq = 0, head_dim = 0;
};
Shape ShapeOf(const model::ModelConfig& c, int tp, int page_size) {
  Shape s;
  for (model::LayerKind k : c.layer_kinds)
    (k == model::LayerKind::kGka ? s.gka_layers : s.attn_layers)++;
  s.page_bytes = static_cast<double>(page_size) * (c.num_key_value_heads / tp) * c.head_dim * 2;
  const model::GkaDims g = c.gka.dims();
  const double h = static_cast<double>(g.num_heads / tp) * g.head_dim * g.head_dim * 4 * 2;
  const double conv =
      static_cast<double>((g.q_dim + g.k_dim + g.v_dim) / tp) * (c.gka.conv_size - 1) * 4;
  s.hkk_hkv_bytes = s.gka_layers * h;
  s.state_bytes = s.gka_layers * (h + conv);
  s.hq = c.num_attention_heads;
  s.head_dim = c.head_dim;
  return s;
}

struct RunResult {
  int batch = 0;
  std::vector<double> tok_s;
  std::vector<double> step_ms;
  double prefill_ms[2] = {0, 0};
  std::map<std::string, OpTimer::Entry> breakdown;
  Engine::GraphStats graphs;  // rank 0's, after the timed runs
};

// Fills the memory of every sequence with random data, coalescing neighbouring pages.
void FillRandom(Engine& e, int batch, uint64_t seed) {
  const auto& d = e.dims();
  for (int b = 0; b < batch; ++b) {
    auto segs = e.DescribeSequence(SequenceId(b));
    OK_OR_DIE(segs.status());
    // Canonical order: per attention layer its K pages then its V pages (bf16), per GKA layer
    // h_kk, h_kv, conv_q, conv_k[, conv_v] (F32): the dtype follows the layer.
    const size_t pages = e.SequenceLength(SequenceId(b)).value() / e.options().page_size +
                         (e.SequenceLength(SequenceId(b)).value() % e.options().page_size != 0);
    size_t i = 0;
    for (int l = 0; l < d.num_layers; ++l) {
      const size_t n = d.is_gka[l] ? (d.use_v_conv ? 5 : 4) : 2 * pages;
      const bool bf16 = !d.is_gka[l] && e.options().dtype == DType::kBF16;
      for (size_t j = i; j < i + n;) {
        char* begin = static_cast<char*>(segs->at(j).ptr);
        size_t bytes = segs->at(j).bytes;
        size_t k = j + 1;
        while (k < i + n && static_cast<char*>(segs->at(k).ptr) == begin + bytes) {
          bytes += segs->at(k).bytes;
          ++k;
        }
        // KV ~ N(0, 1)-sized values; states small (a GKA state's entries are sums of
        // products of normalised keys, decayed).
        CUDA_CHECK(RandomFillDevice(begin, bytes / (bf16 ? 2 : 4), bf16, seed + l * 7919 + b,
                                    bf16 ? 1.0f : 0.05f, 0.f, nullptr));
        j = k;
      }
      i += n;
    }
  }
  CUDA_CHECK(cudaDeviceSynchronize());
}

RunResult RunContext(const Args& a, const model::ModelConfig& cfg, const model::Checkpoint& ckpt,
                     int64_t context, int batch, int32_t num_pages, bool breakdown,
                     int64_t prefill_tokens) {
  std::vector<std::unique_ptr<parallel::Communicator>> comms;
  if (a.tp > 1) {
    std::vector<int> devices;
    for (int r = 0; r < a.tp; ++r) devices.push_back(r);
    auto c = kernels::nccl::CreateNcclGroup(devices);
    OK_OR_DIE(c.status());
    comms = std::move(*c);
  }
  RunResult res;
  res.batch = batch;
  std::barrier sync(a.tp);
  std::vector<std::thread> threads;
  for (int r = 0; r < a.tp; ++r) {
    threads.emplace_back([&, r] {
      CUDA_CHECK(cudaSetDevice(r));
      std::shared_ptr<OpTimer> timer;
      std::unique_ptr<parallel::Communicator> timed_comm;
      engine::EngineOptions o{
          .backend = kernels::BackendKind::kCuda,
          .device_ordinal = r,
          .dtype = DType::kBF16,
          .num_state_slots = std::max(1, batch),
          .num_pages = num_pages,
          .max_seq_len = static_cast<int32_t>(std::max<int64_t>(context, prefill_tokens) +
                                              a.steps * (a.runs + 1) + 64),
          .default_num_iter = a.num_iter,
          .communicator = a.tp > 1 ? comms[r].get() : nullptr};
      if (breakdown && r == 0) {
        timer = std::make_shared<OpTimer>();
        o.wrap_backend = [timer](std::unique_ptr<kernels::Backend> be) {
          return WrapWithTimer(std::move(be), timer);
        };
        if (o.communicator != nullptr) {
          timed_comm = WrapCommunicator(o.communicator, timer);
          o.communicator = timed_comm.get();
        }
      }
      auto eng = Engine::Create(o, cfg, ckpt);
      OK_OR_DIE(eng.status());
      Engine& e = **eng;
      const int64_t vocab = e.vocab_size();
      Progress();
      sync.arrive_and_wait();
      if (prefill_tokens > 0) {
        // One prompt of prefill_tokens random ids, twice (a fresh sequence each time).
        std::vector<int32_t> prompt(prefill_tokens);
        for (int64_t i = 0; i < prefill_tokens; ++i) prompt[i] = (i * 7919 + 13) % vocab;
        for (int run = 0; run < 3; ++run) {  // run 0 warms up (workspace, kernels)
          OK_OR_DIE(e.AddSequence(SequenceId(1000 + run)));
          sync.arrive_and_wait();
          const auto t0 = std::chrono::steady_clock::now();
          auto step = e.Forward({{.id = SequenceId(1000 + run), .tokens = prompt}});
          OK_OR_DIE(step.status());
          OK_OR_DIE(e.backend().Synchronize());
          sync.arrive_and_wait();
          const double ms =
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count();
          if (r == 0 && run > 0) res.prefill_ms[run - 1] = ms;
          OK_OR_DIE(e.RemoveSequence(SequenceId(1000 + run)));
          Progress();
        }
        if (breakdown) {  // a fourth prefill with events around every op (rank 0's)
          OK_OR_DIE(e.AddSequence(SequenceId(1003)));
          sync.arrive_and_wait();
          if (timer) timer->set_enabled(true);
          OK_OR_DIE(e.Forward({{.id = SequenceId(1003), .tokens = prompt}}).status());
          OK_OR_DIE(e.backend().Synchronize());
          if (timer) {
            res.breakdown = timer->Collect();
            timer->set_enabled(false);
          }
          sync.arrive_and_wait();
          OK_OR_DIE(e.RemoveSequence(SequenceId(1003)));
        }
        return;
      }
      for (int b = 0; b < batch; ++b) OK_OR_DIE(e.ReserveForImport(SequenceId(b), context));
      FillRandom(e, batch, 1000 + r);
      Progress();
      std::vector<SequenceInput> step(batch);
      for (int b = 0; b < batch; ++b) {
        step[b] = {.id = SequenceId(b), .tokens = {static_cast<int32_t>((b * 131 + 7) % vocab)}};
      }
      auto one_step = [&] {
        auto s = e.Forward(step);
        OK_OR_DIE(s.status());
        OK_OR_DIE(e.backend().Synchronize());
      };
      for (int w = 0; w < 3; ++w) one_step();
      Progress();
      for (int run = 0; run < a.runs; ++run) {
        sync.arrive_and_wait();
        const auto t0 = std::chrono::steady_clock::now();
        for (int s = 0; s < a.steps; ++s) one_step();
        sync.arrive_and_wait();
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        if (r == 0) {
          res.step_ms.push_back(ms / a.steps);
          res.tok_s.push_back(1000.0 * batch * a.steps / ms);
        }
        Progress();
      }
      if (r == 0) res.graphs = e.graph_stats();
      if (timer) {
        timer->set_enabled(true);
        one_step();
        res.breakdown = timer->Collect();
        timer->set_enabled(false);
      } else if (breakdown) {
        one_step();  // the other ranks join rank 0's timed step's collectives
      }
      sync.arrive_and_wait();
    });
  }
  for (auto& t : threads) t.join();
  return res;
}

// One BREAKDOWN row per op, longest first; GEMM rows with their achieved TFLOP/s.
void PrintBreakdown(const std::map<std::string, OpTimer::Entry>& breakdown,
                    const std::string& header) {
  if (breakdown.empty()) return;
  double total = 0;
  for (const auto& [name, e] : breakdown) total += e.ms;
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [name, e] : breakdown) order.push_back({e.ms, name});
  std::sort(order.rbegin(), order.rend());
  std::printf("BREAKDOWN | %s: %.2f ms of op time (events around each op)\n", header.c_str(),
              total);
  for (const auto& [ms, name] : order) {
    const OpTimer::Entry& e = breakdown.at(name);
    std::printf("BREAKDOWN |   %-28s | %5d calls | %8.3f ms | %5.1f %%", name.c_str(), e.count, ms,
                100.0 * ms / total);
    if (e.flops > 0 && ms > 0) std::printf(" | %.0f TFLOP/s", e.flops / (ms * 1e-3) / 1e12);
    std::printf("\n");
  }
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    auto num = [&](auto& v) {
      const std::string s = next();
      if (!absl::SimpleAtoi(s, &v)) {
        std::fprintf(stderr, "%s: bad number '%s'\n", k.c_str(), s.c_str());
        std::exit(2);
      }
    };
    if (k == "--model")
      a.model = next();
    else if (k == "--tp")
      num(a.tp);
    else if (k == "--num-iter")
      num(a.num_iter);
    else if (k == "--steps")
      num(a.steps);
    else if (k == "--runs")
      num(a.runs);
    else if (k == "--max-batch")
      num(a.max_batch);
    else if (k == "--prefill")
      num(a.prefill);
    else if (k == "--breakdown")
      a.breakdown = true;
    else if (k == "--label")
      a.label = next();
    else if (k == "--make-model")
      a.make_model = next();
    else if (k == "--reserve-gib") {
      const std::string s = next();
      if (!absl::SimpleAtod(s, &a.reserve_gib)) std::exit(2);
    } else if (k == "--contexts") {
      a.contexts.clear();
      for (absl::string_view c : absl::StrSplit(next(), ',', absl::SkipEmpty())) {
        int64_t v;
        if (!absl::SimpleAtoi(c, &v)) std::exit(2);
        a.contexts.push_back(v);
      }
    } else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.model.empty()) {
    std::fprintf(stderr, "--model DIR is required\n");
    std::exit(2);
  }
  return a;
}

int Main(int argc, char** argv) {
  // NVLink multicast (NVLS) stays off on shared hosts (it can take every GPU of the host out of
  // service); an explicit setting in the environment wins.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  const Args a = Parse(argc, argv);
  int gpus = 0;
  CUDA_CHECK(cudaGetDeviceCount(&gpus));
  if (gpus < a.tp) {
    std::fprintf(stderr, "--tp %d needs %d GPUs, %d visible\n", a.tp, a.tp, gpus);
    return 2;
  }
  if (!a.make_model.empty() && !std::filesystem::exists(a.model + "/config.json")) {
    // "tiny-hd128": a small model of the real head size, for a quick end-to-end check.
    absl::StatusOr<model::TinyModelOptions> o = model::TinyModelOptions{};
    if (a.make_model == "tiny-hd128") {
      o->pattern = "*-GKA-*-GKA";
      o->hidden_size = 1024;
      o->num_attention_heads = 8;
      o->num_key_value_heads = 4;
      o->head_dim = 128;
      o->intermediate_size = 2048;
      o->vocab_size = 4096;
      o->max_position_embeddings = 131072;
    } else {
      o = model::PresetOptions(a.make_model);
    }
    OK_OR_DIE(o.status());
    const auto t0 = std::chrono::steady_clock::now();
    OK_OR_DIE(model::MakeTinyModel(*o, a.model));
    std::printf("# wrote %s (%s) in %.0f s\n", a.model.c_str(), a.make_model.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::fflush(stdout);
  }
  StartWatchdog(400);
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  auto cfg = model::ModelConfig::FromJsonFile(a.model + "/config.json");
  OK_OR_DIE(cfg.status());
  auto ckpt = model::Checkpoint::Open(a.model);
  OK_OR_DIE(ckpt.status());
  const WeightBytes w = CountWeights(**ckpt, a.tp);
  const int page_size = 16;
  const Shape sh = ShapeOf(*cfg, a.tp, page_size);
  const double bw = CopyBandwidth();
  size_t free_b = SIZE_MAX, total_b = 0;
  for (int r = 0; r < a.tp; ++r) {
    size_t f, t;
    CUDA_CHECK(cudaSetDevice(r));
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    free_b = std::min(free_b, f);
    total_b = t;
  }
  const std::string label = a.label.empty() ? a.model : a.label;
  std::printf(
      "# %s on %d x %s (%.1f GiB HBM each, %.1f GiB free); copy bandwidth %.0f GB/s; "
      "weights %.2f GiB per GPU; %d attention + %d GKA layers; num_iter %d\n",
      label.c_str(), a.tp, prop.name, total_b / kGiB, free_b / kGiB, bw / 1e9, w.per_rank / kGiB,
      sh.attn_layers, sh.gka_layers, a.num_iter);
  std::fflush(stdout);
  const double avail = static_cast<double>(free_b) - w.per_rank - a.reserve_gib * kGiB;

  if (a.prefill > 0) {
    const int32_t pages = static_cast<int32_t>((a.prefill + 64) / page_size + 4);
    const auto t0 = std::chrono::steady_clock::now();
    RunResult r = RunContext(a, *cfg, **ckpt, 0, 1, pages * 4, a.breakdown, a.prefill);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double T = static_cast<double>(a.prefill);
    const double flops =
        2.0 * w.matmul_params * T + sh.attn_layers * 2.0 * T * T * sh.hq * sh.head_dim;
    for (int run = 0; run < 2; ++run) {
      const double s = r.prefill_ms[run] * 1e-3;
      std::printf(
          "PREFILL | %s | TP%d | %lld tokens | run %d | %.1f ms | %.0f tok/s | %.1f "
          "TFLOP/s per GPU | MFU %.1f %% (of %d x 989 TFLOP/s)\n",
          label.c_str(), a.tp, static_cast<long long>(a.prefill), run + 1, r.prefill_ms[run], T / s,
          flops / s / a.tp / 1e12, 100.0 * flops / s / (a.tp * kH100PeakBf16), a.tp);
    }
    std::printf("# (engine load + both prefills: %.0f s)\n", load_s);
    PrintBreakdown(r.breakdown, absl::StrFormat("%s | TP%d | prefill %lld tokens | one prefill, "
                                                "rank 0",
                                                label, a.tp, static_cast<long long>(a.prefill)));
    std::fflush(stdout);
  }

  bool first = true;
  for (int64_t ctx : a.contexts) {
    const int64_t tokens = ctx + a.steps * (a.runs + 1) + 8;
    const int64_t pages_per_seq = (tokens + page_size - 1) / page_size;
    const double seq_bytes = sh.attn_layers * 2.0 * sh.page_bytes * pages_per_seq + sh.state_bytes;
    int batch = static_cast<int>(std::min<double>(a.max_batch, std::floor(avail / seq_bytes)));
    if (batch < 1) {
      std::printf(
          "DECODE | %s | TP%d | ctx %lld | does not fit: one sequence needs %.2f GiB per "
          "GPU, %.2f GiB left beside the weights\n",
          label.c_str(), a.tp, static_cast<long long>(ctx), seq_bytes / kGiB, avail / kGiB);
      continue;
    }
    const int32_t num_pages = static_cast<int32_t>(pages_per_seq * batch);
    const auto t0 = std::chrono::steady_clock::now();
    RunResult r = RunContext(a, *cfg, **ckpt, ctx, batch, num_pages, a.breakdown && first, 0);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double kv = sh.attn_layers * 2.0 * sh.page_bytes * num_pages;
    const double state = sh.state_bytes * batch;
    // Bytes one GPU reads per step: weights (not the embedding table), each sequence's KV up
    // to its context (K and V), GKA h_kk/h_kv read and written.
    const double kv_read = sh.attn_layers * 2.0 * sh.page_bytes / page_size * ctx * batch;
    const double step_bytes = (w.per_rank - w.embed) + kv_read + 2.0 * sh.hkk_hkv_bytes * batch;
    for (size_t run = 0; run < r.tok_s.size(); ++run) {
      const double ms = r.step_ms[run];
      std::printf(
          "DECODE | %s | TP%d | ctx %lld | batch %d | run %zu | %.0f tok/s | %.2f ms/step | "
          "mem/GPU GiB: weights %.1f, KV %.1f, state %.1f | %.1f GB read/step/GPU | "
          "%.1f %% of HBM roofline\n",
          label.c_str(), a.tp, static_cast<long long>(ctx), batch, run + 1, r.tok_s[run], ms,
          w.per_rank / kGiB, kv / kGiB, state / kGiB, step_bytes / 1e9,
          100.0 * (step_bytes / bw) / (ms * 1e-3));
    }
    const char* one_shot = std::getenv("GKA_ONESHOT_ALLREDUCE");
    std::printf(
        "# (ctx %lld: engine load, fill and runs %.0f s; rank 0 decode graphs %s: %lld captures, "
        "%lld replays, %lld eager steps; one-shot all-reduce %s)\n",
        static_cast<long long>(ctx), wall, r.graphs.enabled ? "on" : "off",
        static_cast<long long>(r.graphs.captures), static_cast<long long>(r.graphs.replays),
        static_cast<long long>(r.graphs.eager_steps),
        one_shot != nullptr && std::strcmp(one_shot, "0") == 0 ? "off (NCCL)" : "on");
    PrintBreakdown(r.breakdown, absl::StrFormat("%s | TP%d | ctx %lld | batch %d | one decode "
                                                "step, rank 0",
                                                label, a.tp, static_cast<long long>(ctx), batch));
    std::fflush(stdout);
    first = false;
  }
  return 0;
}

}  // namespace
}  // namespace gka::gpu_testing

int main(int argc, char** argv) { return gka::gpu_testing::Main(argc, argv); }
