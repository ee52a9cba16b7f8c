#include "common/engine/weights.h"

#include <cstring>
#include <initializer_list>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/engine/dims.h"
#include "common/model/weights.h"

namespace gka::engine {

using kernels::DeviceBuffer;
using tensor::DType;
using tensor::Shape;

namespace {

// Loads tensors for one tensor-parallel rank (model-spec §6): column-parallel weights take
// this rank's rows, row-parallel weights its columns, per-head vectors its heads; everything
// else is replicated. Only the rank's slice is read from the mapped file.
class Uploader {
 public:
  Uploader(kernels::Backend& backend, const model::Checkpoint& ckpt, DType dtype, int rank,
           int world)
      : backend_(backend), ckpt_(ckpt), dtype_(dtype), rank_(rank), world_(world) {}

  // Replicated GEMM weight or embedding, in the engine dtype.
  absl::StatusOr<DeviceBuffer> Matrix(const std::string& name) { return Load({name}, dtype_, -1); }
  // Column-parallel: this rank's rows (output features).
  absl::StatusOr<DeviceBuffer> Rows(const std::string& name) { return Load({name}, dtype_, 0); }
  // Row-parallel: this rank's columns (input features).
  absl::StatusOr<DeviceBuffer> Cols(const std::string& name) { return Load({name}, dtype_, 1); }
  // Several column-parallel weights, each sliced to this rank's rows, stacked along dim 0 in
  // `names` order into one allocation (a fused projection, weights.h).
  absl::StatusOr<DeviceBuffer> StackedRows(const std::vector<std::string>& names) {
    return Load(names, dtype_, 0);
  }
  // Small F32 vectors: replicated (norm weights) or per head (A_log, biases).
  absl::StatusOr<DeviceBuffer> Vector(const std::string& name) {
    return Load({name}, DType::kF32, -1);
  }
  absl::StatusOr<DeviceBuffer> HeadVector(const std::string& name) {
    return Load({name}, DType::kF32, 0);
  }
  // A depthwise conv weight [C, 1, K]: this rank's channels as [C/t, K] F32.
  absl::StatusOr<DeviceBuffer> Conv(const std::string& name) {
    GKA_ASSIGN_OR_RETURN(DeviceBuffer b, Load({name}, DType::kF32, 0));
    const Shape s = b.view().shape;
    b.Reshape(Shape{s[0], s[2]});
    return b;
  }

 private:
  // `dim` < 0: whole tensor; else the rank's even slice along `dim`. Several names stack along
  // dim 0 into one device allocation, sized first from the headers; each slice then goes
  // host -> device on its own, so host memory holds one slice at a time and the device only
  // the stacked matrix (never the parts as well).
  absl::StatusOr<DeviceBuffer> Load(const std::vector<std::string>& names, DType to, int dim) {
    std::vector<std::optional<model::Slice>> slices;
    Shape shape;
    for (const std::string& n : names) {
      GKA_ASSIGN_OR_RETURN(model::TensorInfo info, ckpt_.Get(n));
      Shape part = info.shape;
      std::optional<model::Slice> slice;
      if (dim >= 0 && world_ > 1) {
        GKA_ASSIGN_OR_RETURN(slice, model::EvenSlice(info.shape[dim], dim, rank_, world_));
        part[dim] = slice->end - slice->begin;
      }
      if (slices.empty()) {
        shape = part;
      } else {
        // ValidateCheckpoint checked every shape; stacked parts share their trailing dims.
        GKA_CHECK(part.rank() == shape.rank()) << n << " " << part.ToString();
        shape[0] += part[0];
      }
      slices.push_back(slice);
    }
    GKA_ASSIGN_OR_RETURN(DeviceBuffer dev, backend_.Allocate(shape, to));
    size_t offset = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      GKA_ASSIGN_OR_RETURN(tensor::Buffer host, model::LoadTensor(ckpt_, names[i], to, slices[i]));
      GKA_CHECK(offset + host.nbytes() <= dev.nbytes()) << names[i];
      GKA_RETURN_IF_ERROR(
          backend_.CopyFromHost(dev.data<char>() + offset, host.data<void>(), host.nbytes()));
      offset += host.nbytes();
    }
    GKA_CHECK(offset == dev.nbytes()) << names[0];
    return dev;
  }

  kernels::Backend& backend_;
  const model::Checkpoint& ckpt_;
  DType dtype_;
  int rank_;
  int world_;
};

ProjectionParts MakeParts(std::initializer_list<int64_t> sizes) {
  ProjectionParts p;
  for (int64_t n : sizes) {
    p.offsets.push_back(p.total);
    p.sizes.push_back(n);
    p.total += n;
  }
  return p;
}

}  // namespace

ProjectionParts AttentionParts(const ModelDims& d) {
  const int64_t D = d.head_dim;
  return MakeParts({d.hq * D, d.hkv * D, d.hkv * D});
}

ProjectionParts GkaParts(const ModelDims& d) {
  const int64_t H = d.gka_h;
  return MakeParts(
      {d.dq, d.dk, d.dv, H, d.use_beta ? H : 0, d.use_alpha ? H : 0, d.use_gate ? d.de : 0});
}

absl::StatusOr<ModelWeights> LoadWeights(kernels::Backend& backend,
                                         const model::ModelConfig& config,
                                         const model::Checkpoint& checkpoint, DType dtype,
                                         const ModelDims& d) {
  GKA_RETURN_IF_ERROR(model::ValidateCheckpoint(config, checkpoint));
  Uploader up(backend, checkpoint, dtype, d.tp_rank, d.tp_size);
  ModelWeights w;
  GKA_ASSIGN_OR_RETURN(w.embed, up.Matrix("model.embed_tokens.weight"));
  GKA_ASSIGN_OR_RETURN(w.final_norm, up.Vector("model.norm.weight"));
  // Vocab-parallel: this rank's rows only, read from the file's slice (tied: the embedding
  // table's, which itself stays whole because any rank may look up any token).
  const std::string head =
      config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  if (d.vocab_parallel) {
    GKA_ASSIGN_OR_RETURN(w.lm_head, up.Rows(head));
    GKA_CHECK(w.lm_head.view().shape[0] == d.vocab_shard);
  } else {
    if (d.tp_size > 1) {
      static std::once_flag logged;
      std::call_once(logged, [&] {
        GKA_LOG(WARNING) << "vocab_size " << d.vocab << " is not a multiple of the tensor-parallel "
                         << "size " << d.tp_size << ": every rank holds the whole lm_head ("
                         << d.vocab * d.hidden * tensor::DTypeSize(dtype)
                         << " bytes) and computes every logit, instead of 1/" << d.tp_size
                         << " of them and an all-gather";
      });
    }
    GKA_ASSIGN_OR_RETURN(w.lm_head, up.Matrix(head));
  }
  w.layers.resize(d.num_layers);
  for (int l = 0; l < d.num_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    GKA_ASSIGN_OR_RETURN(lw.input_norm, up.Vector(p + "input_layernorm.weight"));
    GKA_ASSIGN_OR_RETURN(lw.post_norm, up.Vector(p + "post_attention_layernorm.weight"));
    GKA_ASSIGN_OR_RETURN(lw.gate_up,
                         up.StackedRows({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}));
    GKA_ASSIGN_OR_RETURN(lw.down, up.Cols(p + "mlp.down_proj.weight"));
    if (!d.is_gka[l]) {
      const std::string a = p + "self_attn.";
      GKA_ASSIGN_OR_RETURN(lw.attn.qkv, up.StackedRows({a + "q_proj.weight", a + "k_proj.weight",
                                                        a + "v_proj.weight"}));
      GKA_CHECK(lw.attn.qkv.view().shape[0] == AttentionParts(d).total);
      GKA_ASSIGN_OR_RETURN(lw.attn.o_proj, up.Cols(a + "o_proj.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.q_norm, up.Vector(a + "q_norm.weight"));
      GKA_ASSIGN_OR_RETURN(lw.attn.k_norm, up.Vector(a + "k_norm.weight"));
      continue;
    }
    const std::string g = p + "gka.";
    GkaWeights& gw = lw.gka;
    // In GkaParts order; optional parts follow the flags.
    std::vector<std::string> in_names = {g + "q_proj.weight", g + "k_proj.weight",
                                         g + "v_proj.weight", g + "a_proj.weight"};
    if (d.use_beta) in_names.push_back(g + "b_proj.weight");
    if (d.use_alpha) in_names.push_back(g + "alpha_proj.weight");
    if (d.use_gate) in_names.push_back(g + "g_proj.weight");
    GKA_ASSIGN_OR_RETURN(gw.in_proj, up.StackedRows(in_names));
    GKA_CHECK(gw.in_proj.view().shape[0] == GkaParts(d).total);
    GKA_ASSIGN_OR_RETURN(gw.o_proj, up.Cols(g + "o_proj.weight"));
    GKA_ASSIGN_OR_RETURN(gw.a_log, up.HeadVector(g + "A_log"));
    GKA_ASSIGN_OR_RETURN(gw.dt_bias, up.HeadVector(g + "dt_bias"));
    GKA_ASSIGN_OR_RETURN(gw.o_norm, up.Vector(g + "o_norm.weight"));
    GKA_ASSIGN_OR_RETURN(gw.q_conv, up.Conv(g + "q_conv1d.weight"));
    GKA_ASSIGN_OR_RETURN(gw.k_conv, up.Conv(g + "k_conv1d.weight"));
    if (d.use_v_conv) {
      GKA_ASSIGN_OR_RETURN(gw.v_conv, up.Conv(g + "v_conv1d.weight"));
    }
    if (d.use_beta) {
      GKA_ASSIGN_OR_RETURN(gw.b_bias, up.HeadVector(g + "b_proj.bias"));
    }
    if (d.use_alpha) {
      GKA_ASSIGN_OR_RETURN(gw.alpha_bias, up.HeadVector(g + "alpha_proj.bias"));
    }
  }
  return w;
}

}  // namespace gka::engine
