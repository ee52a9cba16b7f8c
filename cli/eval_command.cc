// gka eval: run a checkpoint over golden inputs and write every output a golden holds.
//
//   gka eval --model DIR --inputs golden.safetensors --out result.safetensors
//            [--backend cpu|cuda] [--dtype fp32|bf16] [--num-iter N]
//
// Inputs: `input_ids` [B,T] int64 and optional `decode_ids` [B,S] int64 (other keys ignored).
// Output keys (make_golden.py's): prefill_logits [B,T,V], decode_logits [B,S,V], and after
// the prompt, per GKA layer l: state.layer{l}.h_kk|h_kv [B,H,D,D], .conv_q|conv_k|conv_v
// [B,C,K-1]; per attention layer: state.layer{l}.k|v [B,T,Hkv,D] (after q/k-norm and RoPE).
// All rows are prefilled in one batch, then decoded one token per step.
#include <CLI/CLI.hpp>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/engine_setup.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/engine/engine.h"
#include "common/model/safetensors.h"

namespace gka::cli {
namespace {

using engine::SequenceId;
using tensor::Buffer;
using tensor::DType;
using tensor::Shape;

struct EvalFlags {
  EngineFlags engine;
  std::string inputs;
  std::string out;
};

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadIds(const model::SafetensorsFile& file,
                                                          absl::string_view key, bool required) {
  if (!file.Contains(key)) {
    if (required) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.path(), " has no '", key, "' tensor ([B,T] int64)"));
    }
    return std::vector<std::vector<int32_t>>{};
  }
  GKA_ASSIGN_OR_RETURN(model::TensorInfo t, file.Get(key));
  if (t.shape.rank() != 2 || (t.dtype != DType::kI64 && t.dtype != DType::kI32)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", key, "' in ", file.path(), " must be [B,T] int64, got ",
                     tensor::DTypeName(t.dtype), " ", t.shape.ToString()));
  }
  std::vector<std::vector<int32_t>> rows(t.shape[0]);
  for (int64_t b = 0; b < t.shape[0]; ++b) {
    for (int64_t i = 0; i < t.shape[1]; ++i) {
      const int64_t idx = b * t.shape[1] + i;
      int64_t v;
      if (t.dtype == DType::kI64) {
        std::memcpy(&v, static_cast<const char*>(t.data) + idx * 8, 8);
      } else {
        int32_t v32;
        std::memcpy(&v32, static_cast<const char*>(t.data) + idx * 4, 4);
        v = v32;
      }
      if (v < 0 || v > INT32_MAX) {
        return absl::InvalidArgumentError(absl::StrCat("'", key, "' holds id ", v));
      }
      rows[b].push_back(static_cast<int32_t>(v));
    }
  }
  return rows;
}

// Copies logits rows [R, V] of a step into out[b] at token offset `t0`.
void Scatter(const Buffer& logits, const std::vector<int32_t>& row_offsets, int64_t V,
             int64_t per_seq_stride, int64_t t0, Buffer& out) {
  for (size_t b = 0; b + 1 < row_offsets.size(); ++b) {
    const int32_t r0 = row_offsets[b], r1 = row_offsets[b + 1];
    std::memcpy(out.data<float>() + b * per_seq_stride + t0 * V, logits.data<float>() + r0 * V,
                static_cast<size_t>(r1 - r0) * V * 4);
  }
}

absl::Status RunEval(const EvalFlags& flags) {
  GKA_ASSIGN_OR_RETURN(auto inputs, model::SafetensorsFile::Open(flags.inputs));
  GKA_ASSIGN_OR_RETURN(auto prompts, ReadIds(*inputs, "input_ids", true));
  GKA_ASSIGN_OR_RETURN(auto decode, ReadIds(*inputs, "decode_ids", false));
  const int64_t B = static_cast<int64_t>(prompts.size());
  const int64_t T = B ? static_cast<int64_t>(prompts[0].size()) : 0;
  const int64_t S = decode.empty() ? 0 : static_cast<int64_t>(decode[0].size());
  if (B == 0 || T == 0) return absl::InvalidArgumentError("input_ids is empty");
  if (!decode.empty() && static_cast<int64_t>(decode.size()) != B) {
    return absl::InvalidArgumentError("decode_ids and input_ids have different batch sizes");
  }

  EngineFlags ef = flags.engine;
  ef.num_state_slots = static_cast<int32_t>(B);
  ef.max_seq_len = static_cast<int32_t>(T + S);
  GKA_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(ef));
  engine::Engine& eng = *loaded.engine;
  const int64_t V = eng.vocab_size();
  const engine::ModelDims& d = eng.dims();

  std::vector<engine::SequenceInput> batch;
  for (int64_t b = 0; b < B; ++b) {
    GKA_RETURN_IF_ERROR(eng.AddSequence(SequenceId(b)));
    batch.push_back({.id = SequenceId(b), .tokens = prompts[b], .all_logits = true});
  }
  std::map<std::string, Buffer> out;
  out["prefill_logits"] = Buffer::Allocate(Shape{B, T, V}, DType::kF32);
  GKA_ASSIGN_OR_RETURN(engine::StepResult step, eng.Forward(batch));
  GKA_ASSIGN_OR_RETURN(Buffer logits, eng.LogitsToHost(step));
  Scatter(logits, step.row_offsets, V, T * V, 0, out["prefill_logits"]);

  // States after the prompt, stacked over the batch; K/V trimmed to the T prompt rows.
  for (int64_t b = 0; b < B; ++b) {
    GKA_ASSIGN_OR_RETURN(engine::SequenceState st, eng.ExportSequence(SequenceId(b)));
    for (engine::StateSegment& seg : st.segments) {
      const std::string key = "state." + seg.name;
      const bool is_kv = seg.data.shape().rank() == 4;
      Shape per_seq = is_kv ? Shape{T, d.hkv, d.head_dim} : seg.data.shape();
      if (!is_kv) {
        const int64_t n = seg.data.shape().numel();
        const bool conv = absl::StrContains(seg.name, "conv_");
        per_seq = conv ? Shape{n / (d.conv_k - 1), d.conv_k - 1} : Shape{d.gka_h, d.gka_d, d.gka_d};
      }
      auto [it, inserted] = out.try_emplace(key);
      if (inserted) {
        std::vector<int64_t> dims{B};
        for (int i = 0; i < per_seq.rank(); ++i) dims.push_back(per_seq[i]);
        it->second = Buffer::Allocate(Shape::FromRange(dims.begin(), dims.end()), DType::kF32);
      }
      const int64_t n = per_seq.numel();
      float* dst = it->second.data<float>() + b * n;
      // Exported K/V are in the engine dtype; everything else is F32.
      tensor::ConvertToF32(seg.data.data<void>(), seg.data.dtype(), n, dst);
    }
  }

  if (S > 0) {
    out["decode_logits"] = Buffer::Allocate(Shape{B, S, V}, DType::kF32);
    for (int64_t s = 0; s < S; ++s) {
      std::vector<engine::SequenceInput> step_batch;
      for (int64_t b = 0; b < B; ++b) {
        step_batch.push_back({.id = SequenceId(b), .tokens = {decode[b][s]}});
      }
      GKA_ASSIGN_OR_RETURN(engine::StepResult r, eng.Forward(step_batch));
      GKA_ASSIGN_OR_RETURN(Buffer l, eng.LogitsToHost(r));
      Scatter(l, r.row_offsets, V, S * V, s, out["decode_logits"]);
    }
  }

  std::vector<model::NamedTensor> named;
  for (auto& [k, v] : out) named.push_back({k, v.view()});
  GKA_RETURN_IF_ERROR(
      model::WriteSafetensors(flags.out, named,
                              {{"backend", flags.engine.backend},
                               {"dtype", flags.engine.dtype},
                               {"num_iter", absl::StrCat(eng.default_num_iter())}}));
  GKA_LOG(INFO) << "wrote " << named.size() << " tensors to " << flags.out;
  return absl::OkStatus();
}

}  // namespace

void RegisterEval(CLI::App& app, Action& run) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* cmd = app.add_subcommand("eval", "Run a checkpoint over golden inputs");
  AddEngineFlags(*cmd, flags->engine);
  cmd->add_option("--inputs", flags->inputs, "safetensors with input_ids [B,T] (+decode_ids)")
      ->required();
  cmd->add_option("--out", flags->out, "output safetensors")->required();
  cmd->callback([flags, &run] { run = [flags] { return RunEval(*flags); }; });
}

}  // namespace gka::cli
