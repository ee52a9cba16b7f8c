// The checkpoint a config implies: expected tensor names and shapes (model-spec §2),
// validation of a Checkpoint against them, and loading tensors into host buffers — whole,
// converted to another float dtype, or one rank's slice along a dimension for tensor
// parallelism (model-spec §6).
//
// Owns: ExpectedWeightShapes, ValidateCheckpoint, LoadTensor/LoadAsF32/LoadSlice, EvenSlice.
// Must not depend on kernels or the engine: it knows names and shapes, not the math.
//
//   GKA_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(dir));
//   GKA_RETURN_IF_ERROR(ValidateCheckpoint(cfg, *ckpt));
//   // Rank 1 of 4 of a column-parallel projection: rows [Dq/4, 2*Dq/4) of [Dq, hidden].
//   GKA_ASSIGN_OR_RETURN(Slice rows, EvenSlice(cfg.gka.dims().q_dim, /*dim=*/0, 1, 4));
//   GKA_ASSIGN_OR_RETURN(tensor::Buffer wq,
//                        LoadSlice(*ckpt, "model.layers.1.gka.q_proj.weight", rows,
//                                  tensor::DType::kBF16));
//
// Thread-safety: free functions over immutable inputs; safe to call concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/tensor/tensor.h"

namespace gka::model {

struct ExpectedTensor {
  std::string name;     // e.g. "model.layers.1.gka.q_proj.weight"
  tensor::Shape shape;  // e.g. [Dq, hidden]; linear weights are [out, in]
};

// Every tensor the checkpoint of `config` must hold, in the reference's order
// (expected_weight_shapes): model.embed_tokens.weight, model.norm.weight, lm_head.weight
// (unless tie_word_embeddings), then layer by layer. Optional GKA tensors follow the flags:
// b_proj.* with use_beta_gate, alpha_proj.* with use_alpha_connection, v_conv1d with
// use_v_conv, g_proj with use_gate.
std::vector<ExpectedTensor> ExpectedWeightShapes(const ModelConfig& config);

// Checks that every expected tensor is present with the expected shape and a float dtype
// (BF16, F16 or F32; A_log/dt_bias are often F32 in BF16 checkpoints). Extra tensors are
// logged, not rejected. InvalidArgument listing the problems (first 8), each naming the
// tensor, expected vs actual shape or dtype, and the file it came from.
absl::Status ValidateCheckpoint(const ModelConfig& config, const Checkpoint& checkpoint);

// A range [begin, end) along one dimension of a tensor: dim 0 = rows of a [out, in] weight
// (column-parallel: a rank's output features), dim 1 = its columns (row-parallel: a rank's
// input features), dim 0 of a 1-D tensor = a rank's entries.
struct Slice {
  int dim = 0;
  int64_t begin = 0;
  int64_t end = 0;  // exclusive
};

// The `rank`-th of `world_size` equal parts of `extent` along `dim`. InvalidArgument when
// world_size does not divide extent (a head or GQA group would straddle ranks) or the rank
// is out of range.
absl::StatusOr<Slice> EvenSlice(int64_t extent, int dim, int rank, int world_size);

// Copies tensor `name` (or only `slice` of it) from the mapping into a new host buffer of
// dtype `out`. Float tensors convert among F32/BF16/F16 (round to nearest even); integer
// tensors load only as their own dtype. NotFound for a missing tensor; InvalidArgument for a
// slice out of range or an impossible conversion (both name the tensor and file).
absl::StatusOr<tensor::Buffer> LoadTensor(const Checkpoint& checkpoint, absl::string_view name,
                                          tensor::DType out,
                                          const std::optional<Slice>& slice = std::nullopt);

// LoadTensor(checkpoint, name, kF32): the CPU backend's path.
absl::StatusOr<tensor::Buffer> LoadAsF32(const Checkpoint& checkpoint, absl::string_view name);

// LoadTensor with a slice; the result's shape is the tensor's with `slice.dim` set to
// end - begin.
absl::StatusOr<tensor::Buffer> LoadSlice(const Checkpoint& checkpoint, absl::string_view name,
                                         const Slice& slice, tensor::DType out);

}  // namespace gka::model
