// Whole-engine throughput on the CPU (or --backend cuda): prefill and decode tokens/s for the
// tiny model and a larger shape, printed as a table. A benchmark, not a test.
//
//   build/bench/engine_bench [--backend cpu] [--shapes tiny,larger] [--prompt 256]
//                            [--decode 32] [--batch 1,8]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/check.h"
#include "common/engine/engine.h"
#include "common/model/safetensors.h"
#include "common/model/tiny_model.h"
#include "kernels/registry.h"

namespace gka {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  std::string name;
  model::TinyModelOptions options;
};

std::vector<Shape> Shapes() {
  Shape tiny{"tiny (make-tiny-model)", {}};
  tiny.options.vocab_size = 151936;
  Shape larger{"larger (h1024 L8 hd128 16q/4kv ffn4096 v32000)", {}};
  larger.options.pattern = "*-GKA-*-GKA-*-GKA-*-GKA";
  larger.options.hidden_size = 1024;
  larger.options.num_attention_heads = 16;
  larger.options.num_key_value_heads = 4;
  larger.options.head_dim = 128;
  larger.options.intermediate_size = 4096;
  larger.options.vocab_size = 32000;
  return {tiny, larger};
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Main(int argc, char** argv) {
  std::string backend = "cpu";
  int prompt_len = 256, decode_steps = 32;
  std::vector<int> batches = {1, 8};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--backend") backend = v;
    if (k == "--prompt") GKA_CHECK(absl::SimpleAtoi(v, &prompt_len));
    if (k == "--decode") GKA_CHECK(absl::SimpleAtoi(v, &decode_steps));
    if (k == "--batch") {
      batches.clear();
      for (auto p : absl::StrSplit(v, ',')) batches.push_back(std::stoi(std::string(p)));
    }
  }
  auto kind = kernels::ParseBackendKind(backend);
  GKA_CHECK(kind.ok()) << kind.status();
  std::printf("machine: %u hardware threads; backend %s; fp32; prompt %d; decode %d steps\n",
              std::thread::hardware_concurrency(), backend.c_str(), prompt_len, decode_steps);
  std::printf("%-48s %6s %14s %14s\n", "model", "batch", "prefill tok/s", "decode tok/s");
  for (Shape& shape : Shapes()) {
    const std::string dir = (std::filesystem::temp_directory_path() /
                             absl::StrCat("gka_bench_", shape.options.hidden_size))
                                .string();
    shape.options.weight_dtype = tensor::DType::kF32;
    GKA_CHECK_OK(model::MakeTinyModel(shape.options, dir));
    auto cfg = model::ModelConfig::FromJsonFile(dir + "/config.json");
    GKA_CHECK(cfg.ok());
    auto ckpt = model::Checkpoint::Open(dir);
    GKA_CHECK(ckpt.ok());
    for (int batch : batches) {
      auto eng = engine::Engine::Create({.backend = *kind,
                                         .num_state_slots = batch,
                                         .max_seq_len = prompt_len + decode_steps + 1},
                                        *cfg, **ckpt);
      GKA_CHECK(eng.ok()) << eng.status();
      std::vector<engine::SequenceInput> prefill;
      for (int b = 0; b < batch; ++b) {
        GKA_CHECK_OK((*eng)->AddSequence(engine::SequenceId(b)));
        std::vector<int32_t> ids(prompt_len);
        for (int i = 0; i < prompt_len; ++i) ids[i] = (i * 7919 + b * 104729) % 30000;
        prefill.push_back({.id = engine::SequenceId(b), .tokens = ids});
      }
      auto t0 = Clock::now();
      GKA_CHECK((*eng)->Forward(prefill).ok());
      GKA_CHECK_OK((*eng)->backend().Synchronize());
      auto t1 = Clock::now();
      for (int s = 0; s < decode_steps; ++s) {
        std::vector<engine::SequenceInput> step;
        for (int b = 0; b < batch; ++b)
          step.push_back({.id = engine::SequenceId(b), .tokens = {s + 1}});
        GKA_CHECK((*eng)->Forward(step).ok());
      }
      GKA_CHECK_OK((*eng)->backend().Synchronize());
      auto t2 = Clock::now();
      std::printf("%-48s %6d %14.1f %14.1f\n", shape.name.c_str(), batch,
                  batch * prompt_len / Seconds(t0, t1), batch * decode_steps / Seconds(t1, t2));
    }
    std::filesystem::remove_all(dir);
  }
  return 0;
}

}  // namespace
}  // namespace gka

int main(int argc, char** argv) { return gka::Main(argc, argv); }
