// Whole-engine decode step on the GPU, op by op vs replayed CUDA graphs (EngineOptions::
// cuda_graphs): the time of Engine::Forward + Synchronize for one token per sequence, host
// metadata and upload included, as a serving engine pays it. Not a test: run by
// scripts/gpu/run_all.sh on the GPU machine; prints a table.
//
//   engine_decode_bench [--dir /tmp/gka_rank32b] [--layers 64] [--batch 1,64] [--ctx 4056]
//                       [--steps 30]
//
// Model: one TP = 8 rank of the 32B shape as a single-rank checkpoint (hidden 5120, 8 query /
// 1 KV heads of 128, 8 GKA heads, FFN 3200, vocabulary 18992 = the lm_head shard, layers
// alternating attention and GKA), random bf16 weights written once to --dir (reused when
// present). Every sequence starts at --ctx tokens with random bf16 KV (ReserveForImport then
// a device fill; GKA states start at zero) and decodes --steps tokens after 3 warm-up steps,
// staying inside one context bucket (4056 + 30 <= 4096).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/check.h"
#include "common/engine/engine.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"
#include "tests/perf/gpu/bench_random.h"

namespace gka {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string dir = "/tmp/gka_rank32b";
  int layers = 64;
  std::vector<int> batches = {1, 64};
  int ctx = 4056;
  int steps = 30;
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir") a.dir = v;
    if (k == "--layers") GKA_CHECK(absl::SimpleAtoi(v, &a.layers));
    if (k == "--ctx") GKA_CHECK(absl::SimpleAtoi(v, &a.ctx));
    if (k == "--steps") GKA_CHECK(absl::SimpleAtoi(v, &a.steps));
    if (k == "--batch") {
      a.batches.clear();
      for (absl::string_view p : absl::StrSplit(v, ',')) {
        int b = 0;
        GKA_CHECK(absl::SimpleAtoi(p, &b));
        a.batches.push_back(b);
      }
    }
  }
  return a;
}

void MakeModel(const Args& a) {
  if (std::filesystem::exists(a.dir + "/config.json")) return;
  // The 32B preset (hidden 5120, head_dim 128, GKA at the odd layers), cut to one TP = 8
  // rank's heads and widths and to --layers layers.
  auto preset = model::PresetOptions("hqwen3-32b-gka");
  GKA_CHECK(preset.ok()) << preset.status();
  model::TinyModelOptions o = *preset;
  std::vector<std::string> kinds = absl::StrSplit(o.pattern, '-');
  kinds.resize(std::min<size_t>(kinds.size(), a.layers));
  o.pattern = absl::StrJoin(kinds, "-");
  o.num_attention_heads = 8;
  o.num_key_value_heads = 1;
  o.intermediate_size = 25600 / 8;
  o.vocab_size = 151936 / 8;
  o.max_position_embeddings = 8192;
  o.weight_dtype = tensor::DType::kBF16;
  const auto t0 = Clock::now();
  GKA_CHECK_OK(model::MakeTinyModel(o, a.dir));
  std::printf("model written to %s in %.1f s (pattern %s)\n", a.dir.c_str(),
              std::chrono::duration<double>(Clock::now() - t0).count(), o.pattern.c_str());
}

struct Row {
  double median_us, mean_us;
  engine::Engine::GraphStats stats;
};

Row Run(const Args& a, const model::ModelConfig& cfg, const model::Checkpoint& ckpt, int B,
        bool graphs) {
  auto eng = engine::Engine::Create({.backend = kernels::BackendKind::kCuda,
                                     .dtype = tensor::DType::kBF16,
                                     .page_size = 16,
                                     .num_state_slots = B,
                                     .max_seq_len = a.ctx + a.steps + 16,
                                     .cuda_graphs = graphs},
                                    cfg, ckpt);
  GKA_CHECK(eng.ok()) << eng.status();
  engine::Engine& e = **eng;
  // Sequences at --ctx tokens; KV pages random (adjacent pages filled in one launch).
  const size_t page_bytes = size_t{16} * e.dims().hkv * e.dims().head_dim * 2;
  for (int b = 0; b < B; ++b) {
    GKA_CHECK_OK(e.ReserveForImport(engine::SequenceId(b), a.ctx));
    auto segs = e.DescribeSequence(engine::SequenceId(b));
    GKA_CHECK(segs.ok());
    std::vector<engine::MemorySegment> merged;
    for (const auto& s : *segs) {
      if (s.bytes != page_bytes) continue;  // GKA states and conv tails stay zero
      if (!merged.empty() &&
          static_cast<char*>(merged.back().ptr) + merged.back().bytes == s.ptr) {
        merged.back().bytes += s.bytes;
      } else {
        merged.push_back(s);
      }
    }
    for (const auto& m : merged) {
      GKA_CHECK(gpu_testing::RandomFillDevice(m.ptr, static_cast<int64_t>(m.bytes / 2), true,
                                              1234 + b, 1.0f, 0.0f, nullptr) == cudaSuccess);
    }
  }
  GKA_CHECK(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<double> us;
  for (int s = 0; s < a.steps + 3; ++s) {
    std::vector<engine::SequenceInput> batch;
    for (int b = 0; b < B; ++b) {
      batch.push_back({.id = engine::SequenceId(b),
                       .tokens = {static_cast<int32_t>((s * 7919 + b * 104729) % 18992)}});
    }
    const auto t0 = Clock::now();
    auto r = e.Forward(batch);
    GKA_CHECK(r.ok()) << r.status();
    GKA_CHECK_OK(e.backend().Synchronize());
    const double dt = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (s >= 3) us.push_back(dt);
  }
  Row row;
  row.mean_us = 0;
  for (double v : us) row.mean_us += v / us.size();
  std::sort(us.begin(), us.end());
  row.median_us = us[us.size() / 2];
  row.stats = e.graph_stats();
  return row;
}

int Main(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  MakeModel(a);
  auto cfg = model::ModelConfig::FromJsonFile(a.dir + "/config.json");
  GKA_CHECK(cfg.ok()) << cfg.status();
  auto ckpt = model::Checkpoint::Open(a.dir);
  GKA_CHECK(ckpt.ok()) << ckpt.status();
  cudaDeviceProp prop;
  GKA_CHECK(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  std::vector<std::string> lines;
  for (int B : a.batches) {
    const Row eager = Run(a, *cfg, **ckpt, B, false);
    const Row graph = Run(a, *cfg, **ckpt, B, true);
    char line[512];
    std::snprintf(line, sizeof(line),
                  "| %d layers, batch %d, ctx %d..%d | %.0f (mean %.0f) | %.0f (mean %.0f) | "
                  "%.1f%% | %lld captures, %lld replays, %lld nodes |",
                  a.layers, B, a.ctx, a.ctx + a.steps + 3, eager.median_us, eager.mean_us,
                  graph.median_us, graph.mean_us,
                  100.0 * (eager.median_us - graph.median_us) / eager.median_us,
                  static_cast<long long>(graph.stats.captures),
                  static_cast<long long>(graph.stats.replays),
                  static_cast<long long>(graph.stats.last_nodes));
    std::printf("%s\n", line);
    std::fflush(stdout);
    GKA_CHECK(graph.stats.enabled && graph.stats.replays >= a.steps) << "graphs were not replayed";
    lines.push_back(line);
  }
  std::printf("==== engine decode step, Forward + Synchronize, µs per step (median of %d), %s\n",
              a.steps, prop.name);
  std::printf("| case | op by op | CUDA graphs | saved | graph engine |\n|---|---|---|---|---|\n");
  for (const auto& l : lines) std::printf("%s\n", l.c_str());
  return 0;
}

}  // namespace
}  // namespace gka

int main(int argc, char** argv) { return gka::Main(argc, argv); }
