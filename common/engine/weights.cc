#include "common/engine/weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/engine/dims.h"
#include "common/model/weights.h"

namespace gka::engine {

using kernels::DeviceBuffer;
using tensor::DType;
using tensor::Shape;

namespace {

class Uploader {
 public:
  Uploader(kernels::Backend& backend, const model::Checkpoint& ckpt, DType dtype)
      : backend_(backend), ckpt_(ckpt), dtype_(dtype) {}

  // A GEMM weight or the embedding: the engine dtype.
  absl::StatusOr<DeviceBuffer> Matrix(const std::string& name) { return Load({name}, dtype_); }
  // A small vector: F32 whatever the checkpoint stores.
  absl::StatusOr<DeviceBuffer> Vector(const std::string& name) { return Load({name}, DType::kF32); }
  // Tensors stacked along dim 0 into one buffer (e.g. gate_proj over up_proj).
  absl::StatusOr<DeviceBuffer> Stacked(const std::vector<std::string>& names) {
    return Load(names, dtype_);
  }
  // A depthwise conv weight [C, 1, K] as [C, K] F32.
  absl::StatusOr<DeviceBuffer> Conv(const std::string& name) {
    GKA_ASSIGN_OR_RETURN(DeviceBuffer b, Load({name}, DType::kF32));
    const Shape s = b.view().shape;
    b.Reshape(Shape{s[0], s[2]});
    return b;
  }

 private:
  absl::StatusOr<DeviceBuffer> Load(const std::vector<std::string>& names, DType to) {
    std::vector<model::TensorInfo> infos;
    int64_t rows = 0;
    for (const std::string& n : names) {
      GKA_ASSIGN_OR_RETURN(model::TensorInfo t, ckpt_.Get(n));
      rows += t.shape[0];
      infos.push_back(std::move(t));
    }
    Shape shape = infos[0].shape;
    shape[0] = rows;
    GKA_ASSIGN_OR_RETURN(DeviceBuffer dev, backend_.Allocate(shape, to));
    size_t offset = 0;
    for (const model::TensorInfo& t : infos) {
      tensor::Buffer host = tensor::Buffer::Allocate(t.shape, to);
      const size_t n = static_cast<size_t>(t.shape.numel());
      if (t.dtype == to) {
        std::memcpy(host.data<void>(), t.data, t.nbytes);
      } else if (to == DType::kF32) {
        tensor::ConvertToF32(t.data, t.dtype, n, host.data<float>());
      } else if (to == DType::kBF16) {
        std::vector<float> f(n);
        tensor::ConvertToF32(t.data, t.dtype, n, f.data());
        for (size_t i = 0; i < n; ++i) host.data<uint16_t>()[i] = tensor::FloatToBF16(f[i]);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("cannot convert ", t.name, " to ",
                                                       tensor::DTypeName(to)));
      }
      GKA_RETURN_IF_ERROR(backend_.CopyFromHost(dev.data<char>() + offset, host.data<void>(),
                                                host.nbytes()));
      offset += host.nbytes();
    }
    return dev;
  }

  kernels::Backend& backend_;
  const model::Checkpoint& ckpt_;
  DType dtype_;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(kernels::Backend& backend,
                                         const model::ModelConfig& config,
                                         const model::Checkpoint& checkpoint, DType dtype) {
  GKA_RETURN_IF_ERROR(model::ValidateCheckpoint(config, checkpoint));
  const ModelDims d = DimsFromConfig(config);
  Uploader up(backend, checkpoint, dtype);
  ModelWeights w;
  GKA_ASSIGN_OR_RETURN(w.embed, up.Matrix("model.embed_tokens.weight"));
  GKA_ASSIGN_OR_RETURN(w.final_norm, up.Vector("model.norm.weight"));
  GKA_ASSIGN_OR_RETURN(w.lm_head, up.Matrix(config.tie_word_embeddings
                                                ? "model.embed_tokens.weight"
                                                : "lm_head.weight"));
  w.layers.resize(d.num_layers);
  for (int l = 0; l < d.num_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    GKA_ASSIGN_OR_RETURN(lw.input_norm, up.Vector(p + "input_layernorm.weight"));
    GKA_ASSIGN_OR_RETURN(lw.post_norm, up.Vector(p + "post_attention_layernorm.weight"));
    GKA_ASSIGN_OR_RETURN(lw.gate_up,
                         up.Stacked({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}));
    GKA_ASSIGN_OR_RETURN(lw.down, up.Matrix(p + "mlp.down_proj.weight"));
    if (!d.is_gka[l]) {
      const std::string a = p + "self_attn.";
      GKA_ASSIGN_OR_RETURN(lw.attn.q_proj, up.Matrix(a + "q_proj.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.k_proj, up.Matrix(a + "k_proj.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.v_proj, up.Matrix(a + "v_proj.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.o_proj, up.Matrix(a + "o_proj.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.q_norm, up.Vector(a + "q_norm.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.k_norm, up.Vector(a + "k_norm.weight"));
      continue;
    }
    const std::string g = p + "gka.";
    GkaWeights& gw = lw.gka;
    GKA_ASSIGN_OR_RETURN(gw.q_proj, up.Matrix(g + "q_proj.weight"));
    GKA_ASSIGN_OR_RETURN(gw.k_proj, up.Matrix(g + "k_proj.weight"));
    GKA_ASSIGN_OR_RETURN(gw.v_proj, up.Matrix(g + "v_proj.weight"));
    GKA_ASSIGN_OR_RETURN(gw.a_proj, up.Matrix(g + "a_proj.weight"));
    GKA_ASSIGN_OR_RETURN(gw.o_proj, up.Matrix(g + "o_proj.weight"));
    GKA_ASSIGN_OR_RETURN(gw.a_log, up.Vector(g + "A_log"));
    GKA_ASSIGN_OR_RETURN(gw.dt_bias, up.Vector(g + "dt_bias"));
    GKA_ASSIGN_OR_RETURN(gw.o_norm, up.Vector(g + "o_norm.weight"));
    GKA_ASSIGN_OR_RETURN(gw.q_conv, up.Conv(g + "q_conv1d.weight"));
    GKA_ASSIGN_OR_RETURN(gw.k_conv, up.Conv(g + "k_conv1d.weight"));
    if (d.use_v_conv) {
      GKA_ASSIGN_OR_RETURN(gw.v_conv, up.Conv(g + "v_conv1d.weight"));
    }
    if (d.use_beta) {
      GKA_ASSIGN_OR_RETURN(gw.b_proj, up.Matrix(g + "b_proj.weight"));
      GKA_ASSIGN_OR_RETURN(gw.b_bias, up.Vector(g + "b_proj.bias"));
    }
    if (d.use_alpha) {
      GKA_ASSIGN_OR_RETURN(gw.alpha_proj, up.Matrix(g + "alpha_proj.weight"));
      GKA_ASSIGN_OR_RETURN(gw.alpha_bias, up.Vector(g + "alpha_proj.bias"));
    }
    if (d.use_gate) {
      GKA_ASSIGN_OR_RETURN(gw.g_proj, up.Matrix(g + "g_proj.weight"));
    }
  }
  return w;
}

}  // namespace gka::engine
