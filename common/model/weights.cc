#include "common/model/weights.h"

#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/logging.h"
#include "common/base/status.h"

namespace gka::model {
namespace {

using tensor::DType;
using tensor::Shape;

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kBF16 || t == DType::kF16; }

// Converts n elements; `src` may be unaligned (a foreign writer's odd offsets), so each
// element is read with memcpy.
void ConvertElements(const uint8_t* src, DType from, uint8_t* dst, DType to, size_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * tensor::DTypeSize(from));
    return;
  }
  const size_t in_size = tensor::DTypeSize(from);
  for (size_t i = 0; i < n; ++i) {
    float f;
    if (from == DType::kF32) {
      std::memcpy(&f, src + i * in_size, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, src + i * in_size, 2);
      f = from == DType::kBF16 ? tensor::BF16ToFloat(h) : tensor::F16ToFloat(h);
    }
    if (to == DType::kF32) {
      std::memcpy(dst + i * 4, &f, 4);
    } else {
      const uint16_t h = to == DType::kBF16 ? tensor::FloatToBF16(f) : tensor::FloatToF16(f);
      std::memcpy(dst + i * 2, &h, 2);
    }
  }
}

std::string Where(const TensorInfo& t) { return absl::StrCat("'", t.name, "' in ", t.file); }

}  // namespace

std::vector<ExpectedTensor> ExpectedWeightShapes(const ModelConfig& c) {
  const int64_t hs = c.hidden_size;
  const GkaDims g = c.gka.dims();
  const int64_t k = c.gka.conv_size;
  std::vector<ExpectedTensor> s;
  auto add = [&s](std::string name, Shape shape) { s.push_back({std::move(name), shape}); };
  add("model.embed_tokens.weight", {c.vocab_size, hs});
  add("model.norm.weight", {hs});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, hs});
  for (int i = 0; i < c.num_layers(); ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    add(p + "input_layernorm.weight", {hs});
    add(p + "post_attention_layernorm.weight", {hs});
    add(p + "mlp.gate_proj.weight", {c.intermediate_size, hs});
    add(p + "mlp.up_proj.weight", {c.intermediate_size, hs});
    add(p + "mlp.down_proj.weight", {hs, c.intermediate_size});
    if (c.layer_kinds[i] == LayerKind::kAttention) {
      const std::string a = p + "self_attn.";
      add(a + "q_proj.weight", {c.q_dim(), hs});
      add(a + "k_proj.weight", {c.kv_dim(), hs});
      add(a + "v_proj.weight", {c.kv_dim(), hs});
      add(a + "o_proj.weight", {hs, c.q_dim()});
      add(a + "q_norm.weight", {c.head_dim});
      add(a + "k_norm.weight", {c.head_dim});
      continue;
    }
    const std::string m = p + "gka.";
    add(m + "q_proj.weight", {g.q_dim, hs});
    add(m + "k_proj.weight", {g.k_dim, hs});
    add(m + "v_proj.weight", {g.v_dim, hs});
    add(m + "a_proj.weight", {g.num_heads, hs});
    if (c.gka.use_beta_gate) {
      add(m + "b_proj.weight", {g.num_heads, hs});
      add(m + "b_proj.bias", {g.num_heads});
    }
    if (c.gka.use_alpha_connection) {
      add(m + "alpha_proj.weight", {g.num_heads, hs});
      add(m + "alpha_proj.bias", {g.num_heads});
    }
    add(m + "A_log", {g.num_heads});
    add(m + "dt_bias", {g.num_heads});
    add(m + "q_conv1d.weight", {g.q_dim, 1, k});
    add(m + "k_conv1d.weight", {g.k_dim, 1, k});
    if (c.gka.use_v_conv) add(m + "v_conv1d.weight", {g.v_dim, 1, k});
    if (c.gka.use_gate) add(m + "g_proj.weight", {g.expanded_dim, hs});
    add(m + "o_norm.weight", {g.head_dim});
    add(m + "o_proj.weight", {hs, g.expanded_dim});
  }
  return s;
}

absl::Status ValidateCheckpoint(const ModelConfig& config, const Checkpoint& checkpoint) {
  constexpr size_t kMaxListed = 8;
  std::vector<std::string> problems;
  size_t total = 0;
  auto problem = [&](std::string p) {
    if (problems.size() < kMaxListed) problems.push_back(std::move(p));
    ++total;
  };
  const std::vector<ExpectedTensor> expected = ExpectedWeightShapes(config);
  absl::flat_hash_set<absl::string_view> expected_names;
  for (const ExpectedTensor& e : expected) {
    expected_names.insert(e.name);
    absl::StatusOr<TensorInfo> t = checkpoint.Get(e.name);
    if (!t.ok()) {
      problem(absl::StrCat("tensor '", e.name, "' ", e.shape.ToString(), " is missing"));
      continue;
    }
    if (!(t->shape == e.shape)) {
      problem(absl::StrCat("tensor ", Where(*t), " has shape ", t->shape.ToString(), ", expected ",
                           e.shape.ToString()));
    }
    if (!IsFloat(t->dtype)) {
      problem(absl::StrCat("tensor ", Where(*t), " has dtype ", tensor::DTypeName(t->dtype),
                           ", expected BF16, F16 or F32"));
    }
  }
  if (total > 0) {
    if (total > problems.size()) {
      problems.push_back(absl::StrCat("... and ", total - problems.size(), " more"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", checkpoint.path(), " does not match its config (",
                     config.num_hidden_layers, " layers ", config.LayoutString(), "): ", total,
                     " problem(s): ", absl::StrJoin(problems, "; ")));
  }
  size_t extra = 0;
  std::string first_extra;
  for (const std::string& name : checkpoint.names()) {
    if (expected_names.contains(name)) continue;
    if (extra++ == 0) first_extra = name;
  }
  if (extra > 0) {
    GKA_LOG(WARNING) << "checkpoint " << checkpoint.path() << " holds " << extra
                     << " tensor(s) the config does not use (first: '" << first_extra
                     << "'); ignoring them";
  }
  return absl::OkStatus();
}

absl::StatusOr<Slice> EvenSlice(int64_t extent, int dim, int rank, int world_size) {
  if (world_size <= 0 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is not in [0, ", world_size, ")"));
  }
  if (extent % world_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor-parallel size ", world_size, " does not divide extent ", extent, " of dim ", dim));
  }
  const int64_t part = extent / world_size;
  return Slice{dim, rank * part, (rank + 1) * part};
}

absl::StatusOr<tensor::Buffer> LoadTensor(const Checkpoint& checkpoint, absl::string_view name,
                                          DType out, const std::optional<Slice>& slice) {
  GKA_ASSIGN_OR_RETURN(TensorInfo t, checkpoint.Get(name));
  if (t.dtype != out && !(IsFloat(t.dtype) && IsFloat(out))) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", Where(t), " is ", tensor::DTypeName(t.dtype),
                     " and cannot be loaded as ", tensor::DTypeName(out)));
  }
  Shape shape = t.shape;
  // Copy `outer` runs of `run` elements, each starting `stride` elements after the last.
  int64_t outer = 1, run = t.shape.numel(), stride = 0, first = 0;
  if (slice) {
    const Slice& s = *slice;
    if (s.dim < 0 || s.dim >= t.shape.rank() || s.begin < 0 || s.begin > s.end ||
        s.end > t.shape[s.dim]) {
      return absl::InvalidArgumentError(absl::StrCat("slice [", s.begin, ", ", s.end, ") of dim ",
                                                     s.dim,
                                                     " is out of range "
                                                     "for tensor ",
                                                     Where(t), " of shape ", t.shape.ToString()));
    }
    int64_t inner = 1;
    for (int d = s.dim + 1; d < t.shape.rank(); ++d) inner *= t.shape[d];
    for (int d = 0; d < s.dim; ++d) outer *= t.shape[d];
    shape[s.dim] = s.end - s.begin;
    run = (s.end - s.begin) * inner;
    stride = t.shape[s.dim] * inner;
    first = s.begin * inner;
  }
  tensor::Buffer buf = tensor::Buffer::Allocate(shape, out);
  const auto* src = static_cast<const uint8_t*>(t.data);
  auto* dst = buf.data<uint8_t>();
  const size_t in_size = tensor::DTypeSize(t.dtype), out_size = tensor::DTypeSize(out);
  for (int64_t o = 0; o < outer; ++o) {
    ConvertElements(src + (o * stride + first) * in_size, t.dtype, dst + o * run * out_size, out,
                    static_cast<size_t>(run));
  }
  return buf;
}

absl::StatusOr<tensor::Buffer> LoadAsF32(const Checkpoint& checkpoint, absl::string_view name) {
  return LoadTensor(checkpoint, name, DType::kF32);
}

absl::StatusOr<tensor::Buffer> LoadSlice(const Checkpoint& checkpoint, absl::string_view name,
                                         const Slice& slice, DType out) {
  return LoadTensor(checkpoint, name, out, slice);
}

}  // namespace gka::model
