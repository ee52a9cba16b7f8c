// The model runtime: weights on a kernel backend, paged KV cache + GKA state slots, and one
// forward step over a varlen batch of sequences (prefill chunks and decode tokens mixed).
//
// Owns: ModelWeights, the KV page pools and GKA state pools (allocated once at Create), the
// per-sequence memory bookkeeping (pages + slot), Forward/Sample, and export/import of one
// sequence's complete state as flat buffers (what the transfer layer moves).
// Must not depend on gRPC, protobuf, UCX or the scheduler.
//
//   GKA_ASSIGN_OR_RETURN(auto engine, Engine::Create(options, config, checkpoint));
//   GKA_RETURN_IF_ERROR(engine->AddSequence(SequenceId(1)));
//   GKA_ASSIGN_OR_RETURN(StepResult r, engine->Forward({{.id = SequenceId(1), .tokens = ids}}));
//   GKA_ASSIGN_OR_RETURN(tensor::Buffer logits, engine->LogitsToHost(r));   // [1, V] f32
//
// Thread-safety: not thread-safe. One engine thread owns an Engine; other threads talk to
// that thread through queues (architecture.md).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/base/ids.h"
#include "common/engine/dims.h"
#include "common/engine/page_pools.h"
#include "common/engine/weights.h"
#include "common/model/config.h"
#include "common/model/safetensors.h"
#include "common/parallel/communicator.h"
#include "common/tensor/tensor.h"
#include "kernels/api/backend.h"

namespace gka::engine {

using base::SequenceId;

struct EngineOptions {
  kernels::BackendKind backend = kernels::BackendKind::kCpu;
  int device_ordinal = 0;
  // Weights, activations and KV pages. The CPU backend supports F32 only; CUDA F32 or BF16.
  // GKA state (h_kk, h_kv, conv) is F32 always (model-spec §10).
  tensor::DType dtype = tensor::DType::kF32;
  int32_t page_size = 16;
  int32_t num_state_slots = 8;    // sequences that can be resident at once
  int32_t num_pages = 0;          // 0: enough for every slot at max_seq_len
  int32_t max_seq_len = 0;        // 0: config max_position_embeddings (capped at 8192)
  int32_t default_num_iter = -1;  // -1: the checkpoint's gka num_iter
  // Tensor parallelism: this engine is rank communicator->rank() of world_size() and holds
  // that share of the heads, MLP width and GKA state (model-spec §6). Not owned; must outlive
  // the engine. Null: a single rank. A device communicator (NCCL, kernels/nccl) is bound to
  // the backend's stream at Create and needs the CUDA backend.
  parallel::Communicator* communicator = nullptr;
  // Wraps the backend Create makes, before anything is allocated on it (benchmarks: a per-op
  // timing decorator). Null: the backend as made.
  std::function<std::unique_ptr<kernels::Backend>(std::unique_ptr<kernels::Backend>)> wrap_backend;
  // Decode steps (every sequence feeding one token) on a backend with graph capture (CUDA),
  // single-rank or with a device communicator (each rank captures its own step, all-reduces
  // included), replay a graph captured once per (batch bucket, context bucket) instead of
  // launching each op; other steps, and ranks on a host communicator, run op by op. The
  // environment variable GKA_CUDA_GRAPHS=0 turns them off too.
  bool cuda_graphs = true;
  // Each mixer's input projections (attention q|k|v; GKA q|k|v|a|b|alpha|g) run as one GEMM
  // over their stacked weight (weights.h), the consumers reading their column range of the
  // output with a row stride. False (or the environment variable GKA_FUSE_PROJECTIONS=0): one
  // GEMM per projection into packed buffers, for A/B in benchmarks. Logits are bitwise the
  // same either way on the CPU backend (each output is the same dot product).
  bool fuse_projections = true;
};

// New tokens of one sequence for one Forward.
struct SequenceInput {
  SequenceId id;
  std::vector<int32_t> tokens;  // prefill chunk (any length ≥ 1) or one decode token
  int32_t num_iter = -1;        // GKA Chebyshev iterations for these tokens; -1 = default
  bool all_logits = false;      // logits for every new token (eval) or only the last one
};

struct StepResult {
  // [R, V] F32 in backend memory, valid until the next Forward. Rows of sequence b are
  // row_offsets[b] .. row_offsets[b+1]-1, in the order of the Forward's inputs.
  tensor::TensorView logits;
  std::vector<int32_t> row_offsets;
};

// One named piece of a sequence's exported state, e.g. "layer1.h_kk" or "layer0.k".
struct StateSegment {
  std::string name;
  tensor::Buffer data;  // host copy; shapes in the segment docs of ExportSequence
};

struct SequenceState {
  int64_t length = 0;        // tokens consumed
  uint64_t layout_hash = 0;  // Engine::LayoutHash() of the exporting engine
  std::vector<StateSegment> segments;
};

// Where a sequence's memory lives in backend memory, for the transfer layer: segments in the
// canonical order of ExportSequence (per attention layer: its K pages in sequence order, then
// its V pages; per GKA layer: h_kk, h_kv, conv_q, conv_k, conv_v of its slot).
struct MemorySegment {
  void* ptr;
  size_t bytes;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                        const model::ModelConfig& config,
                                                        const model::Checkpoint& checkpoint);
  ~Engine();

  const model::ModelConfig& config() const { return config_; }
  const ModelDims& dims() const { return dims_; }
  const EngineOptions& options() const { return options_; }
  kernels::Backend& backend() { return *backend_; }
  int32_t vocab_size() const { return static_cast<int32_t>(config_.vocab_size); }
  int32_t default_num_iter() const { return default_num_iter_; }

  // --- sequences ---------------------------------------------------------------------
  // Takes a zeroed state slot. ResourceExhausted when none is free; AlreadyExists on reuse.
  absl::Status AddSequence(SequenceId id);
  // Frees the sequence's pages and slot. NotFound for an unknown id.
  absl::Status RemoveSequence(SequenceId id);
  bool HasSequence(SequenceId id) const { return sequences_.contains(id); }
  absl::StatusOr<int64_t> SequenceLength(SequenceId id) const;
  int32_t free_pages() const { return pages_.num_free(); }
  int32_t free_slots() const { return slots_.num_free(); }
  int32_t max_seq_len() const { return max_seq_len_; }

  // --- compute -----------------------------------------------------------------------
  // Runs the model over every sequence's new tokens (appended after its current length) and
  // returns logits. Validates ids, lengths and capacity before touching any state: on error
  // nothing changed. A sequence's results are bitwise independent of the rest of the batch.
  absl::StatusOr<StepResult> Forward(absl::Span<const SequenceInput> batch);
  absl::StatusOr<tensor::Buffer> LogitsToHost(const StepResult& result);

  // Called on this engine's thread during each op-by-op Forward, after layer `layer`'s work
  // (its mixer, whose KV page or GKA/conv state writes are the layer's last, and its MLP) is
  // enqueued on the backend: once the backend's stream reaches this point (Backend::Mark; the
  // CPU backend is there already), that layer's state for the batch's tokens is final. The
  // prefill worker streams a sequence's hand-off from here. Never called while a decode graph
  // is captured or replayed. Empty: none.
  void SetLayerObserver(std::function<void(int32_t layer)> observer) {
    layer_observer_ = std::move(observer);
  }

  // Samples one token per sequence from the last logits row of each sequence in `result`.
  struct SampleRequest {
    kernels::SamplingConfig config;
    uint64_t step = 0;                  // generation step index (seeds the RNG)
    absl::Span<const int32_t> history;  // previously generated ids (penalties)
  };
  struct TopLogprob {
    int32_t token;
    float logprob;
  };
  struct Sampled {
    int32_t token;
    float logprob;
    // config.num_top_logprobs most likely ids (fewer when the vocabulary is smaller) with
    // their logprobs, most likely first: kernels::SampleParams::out_top_ids.
    std::vector<TopLogprob> top;
  };
  absl::StatusOr<std::vector<Sampled>> Sample(const StepResult& result,
                                              absl::Span<const SampleRequest> requests,
                                              int32_t vocab_limit);

  // --- state export / import ---------------------------------------------------------
  // Segments (host, in canonical order): per attention layer l: "layer{l}.k", "layer{l}.v"
  // [num_pages_used, page_size, Hkv, D] in the engine dtype (rows past `length` are
  // don't-care); per GKA layer l: "layer{l}.h_kk", "layer{l}.h_kv" [H, D, D] F32,
  // "layer{l}.conv_q|conv_k|conv_v" [C, K-1] F32 (oldest input first).
  absl::StatusOr<SequenceState> ExportSequence(SequenceId id);
  // Creates sequence `id` (must not exist) from an exported state of this model and layout.
  absl::Status ImportSequence(SequenceId id, const SequenceState& state);
  // Reserves memory for a sequence of `length` tokens whose state will be written directly
  // into backend memory (by the transfer layer), and describes where.
  absl::StatusOr<std::vector<MemorySegment>> DescribeSequence(SequenceId id);
  absl::Status ReserveForImport(SequenceId id, int64_t length);

  // Hash of everything that fixes the exported layout (model dims, layer pattern, dtypes,
  // page size). Sender and receiver must agree before moving bytes.
  uint64_t LayoutHash() const;

  // --- decode-step graphs (EngineOptions::cuda_graphs) -------------------------------------
  struct GraphStats {
    bool enabled = false;     // graphs in use for this engine
    int64_t captures = 0;     // graphs captured (a bucket's first step, or after staleness)
    int64_t replays = 0;      // decode steps served by replaying a graph
    int64_t eager_steps = 0;  // steps run op by op (prefill, mixed, or a capturing step)
    int64_t live_graphs = 0;  // graphs held now
    int64_t last_nodes = 0;   // operations in the last captured graph
  };
  GraphStats graph_stats() const;

 private:
  struct SequenceMemory {
    SlotId slot;
    std::vector<PageId> pages;
    int64_t length = 0;
  };
  struct AttentionCache {
    kernels::DeviceBuffer k_pages;  // [num_pages, page_size, Hkv, D] dtype
    kernels::DeviceBuffer v_pages;
  };
  struct GkaState {
    kernels::DeviceBuffer h_kk;    // [num_slots, H, D, D] F32
    kernels::DeviceBuffer h_kv;    // [num_slots, H, D, D] F32
    kernels::DeviceBuffer conv_q;  // [num_slots, Dq, K-1] F32
    kernels::DeviceBuffer conv_k;  // [num_slots, Dk, K-1] F32
    kernels::DeviceBuffer conv_v;  // [num_slots, Dv, K-1] F32 (empty without v conv)
  };
  class Workspace;
  struct BatchMeta;

  Engine(const EngineOptions& options, const model::ModelConfig& config, const ModelDims& dims,
         std::unique_ptr<kernels::Backend> backend);
  // Sums a row-parallel GEMM's partial output over the tensor-parallel ranks.
  absl::Status AllReduce(const tensor::TensorView& t);
  // Runs one collective on the communicator (there must be one), ordered with the backend's
  // work: a host communicator after the backend has finished, a device one enqueued on its
  // stream (then waited for when this step may allocate; see AllReduce).
  absl::Status Collective(absl::FunctionRef<absl::Status(parallel::Communicator&)> op);
  // Device TP: whether this Forward waits for each collective (a step larger than any before
  // may allocate; see AllReduce).
  void NoteStepShape(int64_t tokens, int32_t seqs, int32_t max_context);
  absl::Status AllocatePools();
  absl::Status ZeroSlot(SlotId slot);
  absl::Status EnsurePages(SequenceMemory& mem, int64_t new_length);
  std::vector<std::pair<std::string, MemorySegment>> Segments(const SequenceMemory& mem);

  // Every op of one step after the metadata upload: embedding, layers, final norm, the row
  // gather and lm_head (vocab-parallel: this rank's slice, the all-gather and the reorder by
  // `shard_order` [rows * tp], null otherwise). Returns the logits [rows, V] F32 (workspace
  // memory).
  absl::StatusOr<tensor::TensorView> RunModel(const BatchMeta& meta, const int32_t* ids,
                                              const int32_t* row_index, const int32_t* shard_order,
                                              int64_t rows);
  // A decode step (one token per sequence) through a captured graph: the batch padded to its
  // bucket with empty sequences, metadata uploaded in one copy into fixed buffers.
  struct DecodePack;
  absl::StatusOr<tensor::TensorView> DecodeWithGraph(const DecodePack& pack);
  absl::Status AttentionLayer(int layer, const BatchMeta& meta, const tensor::TensorView& x,
                              const tensor::TensorView& out);
  absl::Status GkaLayer(int layer, const BatchMeta& meta, const tensor::TensorView& x,
                        const tensor::TensorView& out);
  absl::Status Mlp(int layer, const tensor::TensorView& x, const tensor::TensorView& out);
  // x [T, hidden] through the stacked projection `w` [parts.total, hidden]: one GEMM into
  // workspace `fused_key` [T, parts.total] when fusing, else one GEMM per part into workspace
  // `first_part_key` + i (packed). Fills `out` with each part's [T, size] view (empty for a
  // size-0 part) and returns the row stride the consumers pass on (0: packed).
  absl::StatusOr<int64_t> Project(const tensor::TensorView& x, const kernels::DeviceBuffer& w,
                                  const ProjectionParts& parts, int fused_key, int first_part_key,
                                  std::vector<tensor::TensorView>& out);

  EngineOptions options_;
  model::ModelConfig config_;
  std::unique_ptr<kernels::Backend> backend_;
  ModelDims dims_;
  ModelWeights weights_;
  int32_t default_num_iter_ = 0;
  bool fuse_projections_ = true;  // options_.fuse_projections and GKA_FUSE_PROJECTIONS
  ProjectionParts attn_parts_;    // AttentionParts(dims_)
  ProjectionParts gka_parts_;     // GkaParts(dims_)
  int32_t max_seq_len_ = 0;
  int32_t max_pages_per_seq_ = 0;

  KvPagePool pages_;
  StateSlotPool slots_;
  std::vector<AttentionCache> kv_;  // indexed by layer (empty for GKA layers)
  std::vector<GkaState> gka_;       // indexed by layer (empty for attention layers)
  absl::flat_hash_map<SequenceId, SequenceMemory> sequences_;

  std::unique_ptr<Workspace> ws_;
  // Largest step so far (tokens, sequences, context rounded up to a power of two) and whether
  // the current Forward exceeds it.
  int64_t max_step_tokens_ = 0;
  int32_t max_step_seqs_ = 0, max_step_context_ = 0;
  bool sync_collectives_ = true;

  // Decode graphs by (padded batch, context bucket); each remembers the workspace generation
  // it was captured at (a workspace buffer reallocated since makes it stale).
  struct DecodeGraph {
    std::unique_ptr<kernels::OpGraph> graph;
    uint64_t ws_generation = 0;
    uint64_t last_use = 0;  // graph_clock_ at the last replay (least recently used goes first)
  };
  bool graphs_enabled_ = false;
  int32_t pad_slot_ = -1;  // state slot the padding sequences point at (never handed out)
  absl::flat_hash_map<std::pair<int32_t, int32_t>, DecodeGraph> graphs_;
  GraphStats graph_stats_;
  uint64_t graph_clock_ = 0;
  std::function<void(int32_t layer)> layer_observer_;
  bool capturing_ = false;  // RunModel is recording a graph: no observer calls
};

}  // namespace gka::engine
