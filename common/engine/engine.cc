#include "common/engine/engine.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/engine/dims.h"
#include "kernels/registry.h"

namespace gka::engine {

using kernels::DeviceBuffer;
using tensor::DType;
using tensor::Shape;
using tensor::TensorView;

namespace {

TensorView Reshape(TensorView v, Shape shape) {
  GKA_CHECK(shape.numel() == v.numel()) << v.shape.ToString() << " -> " << shape.ToString();
  v.shape = shape;
  return v;
}

// Rows [begin, end) of a row-major tensor.
TensorView Rows(const TensorView& v, int64_t begin, int64_t end) {
  const int64_t row = v.numel() / v.shape[0];
  TensorView out = v;
  out.ptr = static_cast<char*>(v.ptr) + begin * row * tensor::DTypeSize(v.dtype);
  out.shape[0] = end - begin;
  return out;
}

// Slot `slot` of a pool [num_slots, ...].
TensorView Slot(const DeviceBuffer& pool, int32_t slot) {
  TensorView v = Rows(pool.view(), slot, slot + 1);
  v.shape = Shape::FromRange(&v.shape[1], &v.shape[1] + (v.shape.rank() - 1));  // drop dim 0
  return v;
}

}  // namespace

// Scratch tensors reused across steps; grown when a step needs more, never shrunk.
class Engine::Workspace {
 public:
  explicit Workspace(kernels::Backend* backend) : backend_(backend) {}

  absl::StatusOr<TensorView> Get(int key, Shape shape, DType dtype) {
    if (key >= static_cast<int>(buffers_.size())) {
      if (frozen_) return FrozenError();
      buffers_.resize(key + 1);
    }
    DeviceBuffer& buf = buffers_[key];
    const size_t need = static_cast<size_t>(shape.numel()) * tensor::DTypeSize(dtype);
    if (buf.empty() || buf.nbytes() < need) {
      // While a graph is being captured nothing may move: the graph bakes in the addresses.
      if (frozen_) return FrozenError();
      ++generation_;
      buf.Reset();
      const int64_t elems = std::max<int64_t>(1, static_cast<int64_t>((need + 3) / 4 * 5 / 4));
      GKA_ASSIGN_OR_RETURN(buf, backend_->Allocate(Shape{elems}, DType::kF32));
    }
    return TensorView{buf.view().ptr, dtype, shape, backend_->device()};
  }

  absl::StatusOr<const int32_t*> Upload(int key, const std::vector<int32_t>& host) {
    GKA_ASSIGN_OR_RETURN(TensorView v,
                         Get(key, Shape{std::max<int64_t>(1, host.size())}, DType::kI32));
    GKA_RETURN_IF_ERROR(backend_->CopyFromHost(v.ptr, host.data(), host.size() * 4));
    return v.data<int32_t>();
  }

  // Counts reallocations: graphs captured at an older generation point at freed buffers.
  uint64_t generation() const { return generation_; }
  void set_frozen(bool frozen) { frozen_ = frozen; }

 private:
  static absl::Status FrozenError() {
    return absl::FailedPreconditionError(
        "engine workspace would grow during graph capture (the warm-up step must size it)");
  }

  kernels::Backend* backend_;
  std::vector<DeviceBuffer> buffers_;
  uint64_t generation_ = 0;
  bool frozen_ = false;
};

namespace {
// Workspace keys.
enum : int {
  kIds,
  kPositions,
  kCuSeqlens,
  kSlots,
  kNumIter,
  kPageTable,
  kContextLens,
  kSlotMapping,
  kRowIndex,
  kHidden,
  kResidual,
  kNormed,
  kMixOut,
  kAttnQkv,  // fused q|k|v output [T, AttentionParts.total]
  kAttnQ,
  kAttnK,
  kAttnV,
  kAttnO,
  kGkaInProj,  // fused q|k|v|a|b|alpha|g output [T, GkaParts.total]
  kGkaQRaw,
  kGkaKRaw,
  kGkaVRaw,
  kGkaA,
  kGkaB,
  kGkaC,
  kGkaZ,
  kGkaQConv,
  kGkaKConv,
  kGkaVConv,
  kGkaQ,
  kGkaK,
  kGkaV,
  kGkaAlpha,
  kGkaG,
  kGkaCore,
  kGkaGated,
  kMlpGateUp,
  kMlpAct,
  kGathered,
  kLogits,
  kLogitsByRank,  // vocab-parallel: [tp * R, V/tp] F32, rank k's logit columns in rows [kR, kR+R)
  kShardOrder,    // vocab-parallel: [R * tp] row ids reordering kLogitsByRank into kLogits
  kGraphMeta,     // a graph step's packed metadata (DecodePack), one upload per step
  kSampleRows,    // Sample's own buffers, so sampling never moves a graph's buffers
  kSampleLogits,
};

// Decode graphs are keyed by the batch padded up to a bucket (1, 2, 4, 8, then multiples of
// 8 to 256, then of 32) and the launch's max context rounded up to a quarter of its power of
// two (at least 256), so at most 25% of extra attention launch and a bounded number of graphs.
int32_t BatchBucket(int32_t b) {
  if (b <= 8) return static_cast<int32_t>(std::bit_ceil(static_cast<uint32_t>(b)));
  const int32_t step = b <= 256 ? 8 : 32;
  return (b + step - 1) / step * step;
}
int32_t ContextBucket(int32_t ctx, int32_t max_seq_len) {
  const uint32_t c = static_cast<uint32_t>(std::max(ctx, 256));
  const uint32_t quarter = std::bit_floor(c - 1) / 4;  // c in (2^k, 2^(k+1)]: steps of 2^(k-2)
  const int32_t bucket = static_cast<int32_t>((c + quarter - 1) / quarter * quarter);
  return std::max(ctx, std::min(bucket, max_seq_len));
}
// Graphs held at once; beyond it the least recently used is dropped.
constexpr size_t kMaxGraphs = 96;

// Unfused, the parts' workspace keys follow the stacked weights' part order (weights.h).
static_assert(kAttnV - kAttnQ == kAttnPartV && kGkaZ - kGkaQRaw == kGkaPartG &&
              kGkaC - kGkaQRaw == kGkaPartAlpha && kGkaA - kGkaQRaw == kGkaPartA);

// Row ids that turn the all-gathered rank-major logits [tp, R, V/tp] into row-major [R, V]:
// viewed as [R * tp, V/tp], the output's row r * tp + k (row r's k-th vocabulary block) is row
// k * R + r of the rank-major tensor viewed as [tp * R, V/tp]. `out` holds rows * tp ids.
void FillShardOrder(int64_t rows, int tp, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int k = 0; k < tp; ++k) out[r * tp + k] = static_cast<int32_t>(k * rows + r);
  }
}

bool FusionWanted(const EngineOptions& options) {
  const char* env = std::getenv("GKA_FUSE_PROJECTIONS");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return options.fuse_projections;
}

bool GraphsWanted(const EngineOptions& options) {
  const char* env = std::getenv("GKA_CUDA_GRAPHS");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return options.cuda_graphs;
}
}  // namespace

// Per-step metadata, uploaded once and shared by every layer.
struct Engine::BatchMeta {
  int32_t num_seqs = 0;
  int64_t num_tokens = 0;
  int32_t max_q_len = 0;
  int32_t max_context = 0;
  const int32_t* positions = nullptr;     // [T]
  const int32_t* cu_seqlens = nullptr;    // [B+1]
  const int32_t* slots = nullptr;         // [B]
  const int32_t* num_iter = nullptr;      // [B]
  const int32_t* page_table = nullptr;    // [B, max_pages_per_seq]
  const int32_t* context_lens = nullptr;  // [B]
  const int32_t* slot_mapping = nullptr;  // [T]
};

// A decode step's metadata padded to its bucket and packed into one host array (one upload):
// the B real sequences first, then padded - B empty sequences (no tokens of their own; their
// rows are computed and ignored, they touch no KV page and no real state slot).
struct Engine::DecodePack {
  int32_t batch = 0;       // real sequences B
  int32_t padded = 0;      // bucket >= B
  int32_t ctx_bucket = 0;  // PagedAttention's max_context_len
  std::vector<int32_t> host;
  // Element offsets into `host` (each a multiple of 4, 16-byte aligned on the device).
  int64_t ids = 0, positions = 0, cu = 0, slots = 0, num_iter = 0, context_lens = 0,
          slot_mapping = 0, row_index = 0, page_table = 0;
  int64_t shard_order = -1;  // vocab-parallel only: FillShardOrder(padded, tp)
};

Engine::Engine(const EngineOptions& options, const model::ModelConfig& config,
               const ModelDims& dims, std::unique_ptr<kernels::Backend> backend)
    : options_(options),
      config_(config),
      backend_(std::move(backend)),
      dims_(dims),
      pages_(0),
      slots_(0) {}

Engine::~Engine() {
  // Graphs and buffers free through the backend; drop them before it.
  graphs_.clear();
  ws_.reset();
  kv_.clear();
  gka_.clear();
  weights_ = ModelWeights();
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options,
                                                       const model::ModelConfig& config,
                                                       const model::Checkpoint& checkpoint) {
  if (options.page_size <= 0 || options.num_state_slots <= 0) {
    return absl::InvalidArgumentError("page_size and num_state_slots must be positive");
  }
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16) {
    return absl::InvalidArgumentError("engine dtype must be fp32 or bf16");
  }
  if (options.backend == kernels::BackendKind::kCpu && options.dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        "the CPU backend computes in fp32 only: use --dtype fp32 (bf16 needs --backend cuda)");
  }
  const int tp = options.communicator ? options.communicator->world_size() : 1;
  const int rank = options.communicator ? options.communicator->rank() : 0;
  GKA_ASSIGN_OR_RETURN(ModelDims dims, DimsFromConfig(config, tp, rank));
  GKA_ASSIGN_OR_RETURN(
      auto backend,
      kernels::CreateBackend({.kind = options.backend, .device_ordinal = options.device_ordinal}));
  if (options.communicator != nullptr && options.communicator->on_device()) {
    // NCCL enqueues on the backend's stream, so collectives order with the kernels around them
    // without a host round trip.
    void* stream = kernels::NativeStream(*backend);
    if (stream == nullptr) {
      return absl::InvalidArgumentError(
          "a device communicator (NCCL) needs the cuda backend (--backend cuda)");
    }
    GKA_RETURN_IF_ERROR(options.communicator->BindStream(stream));
  }
  if (options.wrap_backend) backend = options.wrap_backend(std::move(backend));
  std::unique_ptr<Engine> engine(new Engine(options, config, dims, std::move(backend)));
  const ModelDims& d = engine->dims_;
  engine->default_num_iter_ = options.default_num_iter >= 0 ? options.default_num_iter : d.num_iter;
  engine->fuse_projections_ = FusionWanted(options);
  engine->attn_parts_ = AttentionParts(d);
  engine->gka_parts_ = GkaParts(d);
  int64_t max_len = options.max_seq_len > 0
                        ? options.max_seq_len
                        : std::min<int64_t>(config.max_position_embeddings, 8192);
  if (max_len <= 0) max_len = 8192;
  engine->max_seq_len_ = static_cast<int32_t>(max_len);
  engine->max_pages_per_seq_ = PagesFor(max_len, options.page_size);
  GKA_ASSIGN_OR_RETURN(engine->weights_,
                       LoadWeights(*engine->backend_, config, checkpoint, options.dtype, dims));
  engine->ws_ = std::make_unique<Workspace>(engine->backend_.get());
  // Graphs bake in every address and need the whole step on this thread's stream: a single
  // rank, or a device communicator (NCCL and its one-shot path enqueue on the backend's stream
  // and can be captured). A host communicator synchronises on the host: op by op. Each rank
  // captures its own graph; every rank sees the same step shapes, so all capture (and replay)
  // the same steps and issue their collectives in the same order.
  const bool device_collectives =
      tp == 1 || (options.communicator != nullptr && options.communicator->on_device());
  engine->graphs_enabled_ =
      GraphsWanted(options) && engine->backend_->SupportsGraphs() && device_collectives;
  engine->graph_stats_.enabled = engine->graphs_enabled_;
  GKA_RETURN_IF_ERROR(engine->AllocatePools());
  return engine;
}

absl::Status Engine::AllocatePools() {
  const ModelDims& d = dims_;
  const int32_t num_pages =
      options_.num_pages > 0 ? options_.num_pages : max_pages_per_seq_ * options_.num_state_slots;
  pages_ = KvPagePool(num_pages);
  slots_ = StateSlotPool(options_.num_state_slots);
  kv_.resize(d.num_layers);
  gka_.resize(d.num_layers);
  // With graphs, one more state slot that is never handed out: a padded batch's empty
  // sequences point at it (CausalConv rewrites their unchanged conv state in place).
  const int64_t s = options_.num_state_slots + (graphs_enabled_ ? 1 : 0);
  if (graphs_enabled_) pad_slot_ = options_.num_state_slots;
  for (int l = 0; l < d.num_layers; ++l) {
    if (!d.is_gka[l]) {
      const Shape page_shape{num_pages, options_.page_size, d.hkv, d.head_dim};
      GKA_ASSIGN_OR_RETURN(kv_[l].k_pages, backend_->Allocate(page_shape, options_.dtype));
      GKA_ASSIGN_OR_RETURN(kv_[l].v_pages, backend_->Allocate(page_shape, options_.dtype));
    } else {
      const int64_t k1 = d.conv_k - 1;
      GKA_ASSIGN_OR_RETURN(gka_[l].h_kk,
                           backend_->Allocate(Shape{s, d.gka_h, d.gka_d, d.gka_d}, DType::kF32));
      GKA_ASSIGN_OR_RETURN(gka_[l].h_kv,
                           backend_->Allocate(Shape{s, d.gka_h, d.gka_d, d.gka_d}, DType::kF32));
      GKA_ASSIGN_OR_RETURN(gka_[l].conv_q, backend_->Allocate(Shape{s, d.dq, k1}, DType::kF32));
      GKA_ASSIGN_OR_RETURN(gka_[l].conv_k, backend_->Allocate(Shape{s, d.dk, k1}, DType::kF32));
      if (d.use_v_conv) {
        GKA_ASSIGN_OR_RETURN(gka_[l].conv_v, backend_->Allocate(Shape{s, d.dv, k1}, DType::kF32));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::ZeroSlot(SlotId slot) {
  for (GkaState& g : gka_) {
    for (DeviceBuffer* b : {&g.h_kk, &g.h_kv, &g.conv_q, &g.conv_k, &g.conv_v}) {
      if (!b->empty()) GKA_RETURN_IF_ERROR(backend_->Fill(Slot(*b, slot.value()), 0.0f));
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::AddSequence(SequenceId id) {
  if (sequences_.contains(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id.value(), " already exists"));
  }
  auto slot = slots_.Allocate(1);
  if (!slot.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no free GKA state slot (", slots_.capacity(), " in use)"));
  }
  absl::Status zeroed = ZeroSlot((*slot)[0]);
  if (!zeroed.ok()) {
    slots_.Free(*slot);
    return zeroed;
  }
  sequences_[id] = SequenceMemory{.slot = (*slot)[0]};
  return absl::OkStatus();
}

absl::Status Engine::RemoveSequence(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("no sequence ", id.value()));
  }
  pages_.Free(it->second.pages);
  slots_.Free({it->second.slot});
  sequences_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Engine::SequenceLength(SequenceId id) const {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("no sequence ", id.value()));
  return it->second.length;
}

absl::Status Engine::EnsurePages(SequenceMemory& mem, int64_t new_length) {
  const int32_t need =
      PagesFor(new_length, options_.page_size) - static_cast<int32_t>(mem.pages.size());
  if (need <= 0) return absl::OkStatus();
  GKA_ASSIGN_OR_RETURN(std::vector<PageId> got, pages_.Allocate(need));
  mem.pages.insert(mem.pages.end(), got.begin(), got.end());
  return absl::OkStatus();
}

absl::StatusOr<StepResult> Engine::Forward(absl::Span<const SequenceInput> batch) {
  const ModelDims& d = dims_;
  if (batch.empty()) return absl::InvalidArgumentError("empty batch");

  // ---- validate everything before changing any state -------------------------------
  int64_t total_tokens = 0;
  int32_t pages_needed = 0;
  absl::flat_hash_map<SequenceId, int> seen;
  for (const SequenceInput& in : batch) {
    auto it = sequences_.find(in.id);
    if (it == sequences_.end()) {
      return absl::NotFoundError(absl::StrCat("no sequence ", in.id.value()));
    }
    if (!seen.emplace(in.id, 1).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", in.id.value(), " appears twice in one batch"));
    }
    if (in.tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", in.id.value(), ": no tokens to feed"));
    }
    for (int32_t t : in.tokens) {
      if (t < 0 || t >= d.vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("token id ", t, " out of range [0, ", d.vocab, ")"));
      }
    }
    if (in.num_iter < -1 || in.num_iter > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat("num_iter ", in.num_iter, " out of range [0, 1000]"));
    }
    const int64_t new_len = it->second.length + static_cast<int64_t>(in.tokens.size());
    if (new_len > max_seq_len_) {
      return absl::OutOfRangeError(absl::StrCat("sequence ", in.id.value(), " would reach ",
                                                new_len, " tokens; the limit is ", max_seq_len_));
    }
    pages_needed += std::max<int32_t>(
        0, PagesFor(new_len, options_.page_size) - static_cast<int32_t>(it->second.pages.size()));
    total_tokens += static_cast<int64_t>(in.tokens.size());
  }
  if (pages_needed > pages_.num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("step needs ", pages_needed, " KV pages, ", pages_.num_free(), " free"));
  }

  // ---- host metadata ------------------------------------------------------------------
  const int32_t B = static_cast<int32_t>(batch.size());
  const int64_t T = total_tokens;
  std::vector<int32_t> ids, positions, cu{0}, slots, num_iter, table(B * max_pages_per_seq_, 0),
      context_lens, slot_mapping, row_index, row_offsets{0};
  ids.reserve(T);
  BatchMeta meta;
  meta.num_seqs = B;
  meta.num_tokens = T;
  for (int32_t b = 0; b < B; ++b) {
    const SequenceInput& in = batch[b];
    SequenceMemory& mem = sequences_[in.id];
    GKA_CHECK_OK(EnsurePages(mem, mem.length + static_cast<int64_t>(in.tokens.size())));
    const int32_t q_len = static_cast<int32_t>(in.tokens.size());
    for (int32_t i = 0; i < q_len; ++i) {
      const int64_t pos = mem.length + i;
      ids.push_back(in.tokens[i]);
      positions.push_back(static_cast<int32_t>(pos));
      const PageId page = mem.pages[pos / options_.page_size];
      slot_mapping.push_back(page.value() * options_.page_size +
                             static_cast<int32_t>(pos % options_.page_size));
    }
    for (size_t p = 0; p < mem.pages.size(); ++p) {
      table[b * max_pages_per_seq_ + p] = mem.pages[p].value();
    }
    const int32_t row0 = cu.back();
    cu.push_back(row0 + q_len);
    slots.push_back(mem.slot.value());
    num_iter.push_back(in.num_iter >= 0 ? in.num_iter : default_num_iter_);
    context_lens.push_back(static_cast<int32_t>(mem.length + q_len));
    if (in.all_logits) {
      for (int32_t i = 0; i < q_len; ++i) row_index.push_back(row0 + i);
    } else {
      row_index.push_back(row0 + q_len - 1);
    }
    row_offsets.push_back(static_cast<int32_t>(row_index.size()));
    meta.max_q_len = std::max(meta.max_q_len, q_len);
    meta.max_context = std::max(meta.max_context, context_lens.back());
  }
  NoteStepShape(T, B, meta.max_context);
  TensorView logits;
  if (graphs_enabled_ && meta.max_q_len == 1) {
    // ---- decode step: replay (or capture) the bucket's graph ---------------------------
    DecodePack pack;
    pack.batch = B;
    pack.padded = BatchBucket(B);
    pack.ctx_bucket = ContextBucket(meta.max_context, max_seq_len_);
    const int32_t P = pack.padded;
    auto section = [&pack](int64_t n, int32_t fill) {
      const int64_t at = static_cast<int64_t>(pack.host.size());
      pack.host.resize(at + (n + 3) / 4 * 4, fill);
      return at;
    };
    pack.ids = section(P, 0);
    pack.positions = section(P, 0);
    pack.cu = section(P + 1, B);  // empty sequences after the real ones
    pack.slots = section(P, pad_slot_);
    pack.num_iter = section(P, 0);
    pack.context_lens = section(P, 0);
    pack.slot_mapping = section(P, -1);  // KvCacheWrite skips negative slots
    pack.row_index = section(P, 0);
    pack.page_table = section(static_cast<int64_t>(P) * max_pages_per_seq_, 0);
    if (d.vocab_parallel) pack.shard_order = section(static_cast<int64_t>(P) * d.tp_size, 0);
    int32_t* h = pack.host.data();
    std::copy(ids.begin(), ids.end(), h + pack.ids);
    std::copy(positions.begin(), positions.end(), h + pack.positions);
    std::copy(cu.begin(), cu.end(), h + pack.cu);
    std::copy(slots.begin(), slots.end(), h + pack.slots);
    std::copy(num_iter.begin(), num_iter.end(), h + pack.num_iter);
    std::copy(context_lens.begin(), context_lens.end(), h + pack.context_lens);
    std::copy(slot_mapping.begin(), slot_mapping.end(), h + pack.slot_mapping);
    for (int32_t r = 0; r < P; ++r) h[pack.row_index + r] = r;  // rows are the tokens
    std::copy(table.begin(), table.end(), h + pack.page_table);
    if (d.vocab_parallel) FillShardOrder(P, d.tp_size, h + pack.shard_order);
    GKA_ASSIGN_OR_RETURN(TensorView all, DecodeWithGraph(pack));
    logits = Rows(all, 0, B);
  } else {
    Workspace& ws = *ws_;
    GKA_ASSIGN_OR_RETURN(const int32_t* ids_dev, ws.Upload(kIds, ids));
    GKA_ASSIGN_OR_RETURN(meta.positions, ws.Upload(kPositions, positions));
    GKA_ASSIGN_OR_RETURN(meta.cu_seqlens, ws.Upload(kCuSeqlens, cu));
    GKA_ASSIGN_OR_RETURN(meta.slots, ws.Upload(kSlots, slots));
    GKA_ASSIGN_OR_RETURN(meta.num_iter, ws.Upload(kNumIter, num_iter));
    GKA_ASSIGN_OR_RETURN(meta.page_table, ws.Upload(kPageTable, table));
    GKA_ASSIGN_OR_RETURN(meta.context_lens, ws.Upload(kContextLens, context_lens));
    GKA_ASSIGN_OR_RETURN(meta.slot_mapping, ws.Upload(kSlotMapping, slot_mapping));
    GKA_ASSIGN_OR_RETURN(const int32_t* row_index_dev, ws.Upload(kRowIndex, row_index));
    const int64_t rows = static_cast<int64_t>(row_index.size());
    const int32_t* shard_order_dev = nullptr;
    if (d.vocab_parallel) {
      std::vector<int32_t> order(rows * d.tp_size);
      FillShardOrder(rows, d.tp_size, order.data());
      GKA_ASSIGN_OR_RETURN(shard_order_dev, ws.Upload(kShardOrder, order));
    }
    GKA_ASSIGN_OR_RETURN(logits, RunModel(meta, ids_dev, row_index_dev, shard_order_dev, rows));
    ++graph_stats_.eager_steps;
  }

  for (const SequenceInput& in : batch) {
    sequences_[in.id].length += static_cast<int64_t>(in.tokens.size());
  }
  return StepResult{.logits = logits, .row_offsets = std::move(row_offsets)};
}

absl::StatusOr<TensorView> Engine::DecodeWithGraph(const DecodePack& pack) {
  Workspace& ws = *ws_;
  kernels::Backend& be = *backend_;
  GKA_ASSIGN_OR_RETURN(
      TensorView meta_dev,
      ws.Get(kGraphMeta, Shape{static_cast<int64_t>(pack.host.size())}, DType::kI32));
  GKA_RETURN_IF_ERROR(be.CopyFromHost(meta_dev.ptr, pack.host.data(), pack.host.size() * 4));
  const int32_t* base = meta_dev.data<int32_t>();
  BatchMeta meta;
  meta.num_seqs = pack.padded;
  meta.num_tokens = pack.padded;
  meta.max_q_len = 1;
  meta.max_context = pack.ctx_bucket;
  meta.positions = base + pack.positions;
  meta.cu_seqlens = base + pack.cu;
  meta.slots = base + pack.slots;
  meta.num_iter = base + pack.num_iter;
  meta.page_table = base + pack.page_table;
  meta.context_lens = base + pack.context_lens;
  meta.slot_mapping = base + pack.slot_mapping;
  const int32_t* ids = base + pack.ids;
  const int32_t* row_index = base + pack.row_index;
  const int32_t* shard_order = pack.shard_order >= 0 ? base + pack.shard_order : nullptr;
  const int64_t rows = pack.padded;
  const std::pair<int32_t, int32_t> key{pack.padded, pack.ctx_bucket};

  auto it = graphs_.find(key);
  if (it != graphs_.end() && it->second.graph->IsCurrent() &&
      it->second.ws_generation == ws.generation()) {
    // Same shapes as the capture, so the logits land where they did then.
    GKA_RETURN_IF_ERROR(it->second.graph->Launch());
    it->second.last_use = ++graph_clock_;
    ++graph_stats_.replays;
    GKA_ASSIGN_OR_RETURN(TensorView logits, ws.Get(kLogits, Shape{rows, dims_.vocab}, DType::kF32));
    return logits;
  }
  if (it != graphs_.end()) graphs_.erase(it);  // stale: a buffer it uses has moved

  // Run the step op by op first: it is this step's result, and it sizes every workspace
  // buffer and the backend's scratch for exactly these shapes, so the capture allocates
  // nothing. Then record the same ops (recording runs nothing).
  GKA_ASSIGN_OR_RETURN(TensorView logits, RunModel(meta, ids, row_index, shard_order, rows));
  ++graph_stats_.eager_steps;
  const uint64_t generation = ws.generation();
  absl::Status captured = be.BeginCapture();
  absl::StatusOr<std::unique_ptr<kernels::OpGraph>> graph = absl::UnknownError("no capture");
  if (captured.ok()) {
    ws.set_frozen(true);
    // Recording runs nothing and allocates nothing (the warm-up step sized every buffer), and
    // a stream cannot be synchronised while it is captured: no waits after the collectives.
    const bool sync_collectives = sync_collectives_;
    sync_collectives_ = false;
    capturing_ = true;
    absl::StatusOr<TensorView> recorded = RunModel(meta, ids, row_index, shard_order, rows);
    capturing_ = false;
    sync_collectives_ = sync_collectives;
    ws.set_frozen(false);
    graph = be.EndCapture();  // always ends the capture, also after a failed op
    captured = !recorded.ok() ? recorded.status() : graph.status();
    if (captured.ok() && (recorded->ptr != logits.ptr || ws.generation() != generation)) {
      captured = absl::InternalError("graph capture saw other buffers than its warm-up step");
    }
  }
  if (!captured.ok()) {
    // Not fatal: this step's result is already computed. Stay op by op from now on.
    GKA_LOG(WARNING) << "decode-step graph capture failed, continuing without graphs: " << captured;
    graphs_enabled_ = false;
    graph_stats_.enabled = false;
    graphs_.clear();
    graph_stats_.live_graphs = 0;
    return logits;
  }
  if (graphs_.size() >= kMaxGraphs) {
    auto lru = std::min_element(graphs_.begin(), graphs_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    graphs_.erase(lru);
  }
  ++graph_stats_.captures;
  graph_stats_.last_nodes = (*graph)->num_nodes();
  graphs_[key] = DecodeGraph{
      .graph = std::move(*graph), .ws_generation = generation, .last_use = ++graph_clock_};
  graph_stats_.live_graphs = static_cast<int64_t>(graphs_.size());
  return logits;
}

Engine::GraphStats Engine::graph_stats() const { return graph_stats_; }

absl::StatusOr<TensorView> Engine::RunModel(const BatchMeta& meta, const int32_t* ids_dev,
                                            const int32_t* row_index_dev,
                                            const int32_t* shard_order_dev, int64_t R) {
  const ModelDims& d = dims_;
  Workspace& ws = *ws_;
  const int64_t T = meta.num_tokens;
  // ---- the model ------------------------------------------------------------------------
  const DType A = options_.dtype;
  kernels::Backend& be = *backend_;
  GKA_ASSIGN_OR_RETURN(TensorView hidden, ws.Get(kHidden, Shape{T, d.hidden}, A));
  GKA_ASSIGN_OR_RETURN(TensorView residual, ws.Get(kResidual, Shape{T, d.hidden}, A));
  GKA_ASSIGN_OR_RETURN(TensorView normed, ws.Get(kNormed, Shape{T, d.hidden}, A));
  GKA_ASSIGN_OR_RETURN(TensorView mix, ws.Get(kMixOut, Shape{T, d.hidden}, A));
  GKA_RETURN_IF_ERROR(
      be.Embedding({.table = weights_.embed.view(), .ids = ids_dev, .out = hidden}));
  // residual = embedding; every later norm fuses "residual += x" (vLLM's form).
  GKA_RETURN_IF_ERROR(be.Fill(residual, 0.0f));
  for (int l = 0; l < d.num_layers; ++l) {
    const LayerWeights& lw = weights_.layers[l];
    GKA_RETURN_IF_ERROR(be.RmsNorm({.x = hidden,
                                    .residual = residual,
                                    .weight = lw.input_norm.view(),
                                    .out = normed,
                                    .eps = d.rms_eps}));
    if (d.is_gka[l]) {
      GKA_RETURN_IF_ERROR(GkaLayer(l, meta, normed, mix));
    } else {
      GKA_RETURN_IF_ERROR(AttentionLayer(l, meta, normed, mix));
    }
    GKA_RETURN_IF_ERROR(be.RmsNorm({.x = mix,
                                    .residual = residual,
                                    .weight = lw.post_norm.view(),
                                    .out = normed,
                                    .eps = d.rms_eps}));
    GKA_RETURN_IF_ERROR(Mlp(l, normed, hidden));
    if (layer_observer_ && !capturing_) layer_observer_(l);
  }
  GKA_RETURN_IF_ERROR(be.RmsNorm({.x = hidden,
                                  .residual = residual,
                                  .weight = weights_.final_norm.view(),
                                  .out = normed,
                                  .eps = d.rms_eps}));
  GKA_ASSIGN_OR_RETURN(TensorView gathered, ws.Get(kGathered, Shape{R, d.hidden}, A));
  // A row gather is an embedding lookup with the hidden states as the table.
  GKA_RETURN_IF_ERROR(be.Embedding({.table = normed, .ids = row_index_dev, .out = gathered}));
  GKA_ASSIGN_OR_RETURN(TensorView logits, ws.Get(kLogits, Shape{R, d.vocab}, DType::kF32));
  if (!d.vocab_parallel) {
    GKA_RETURN_IF_ERROR(be.Gemm({.x = gathered, .w = weights_.lm_head.view(), .y = logits}));
    return logits;
  }
  // Vocab-parallel lm_head (model-spec §6): this rank's vocab_shard logit columns of every row
  // land in its block of a rank-major [tp, R, V/tp] buffer, the all-gather fills the other
  // blocks in place (NCCL's in-place form: no separate send buffer), and a row gather reorders
  // the blocks into the row-major [R, V] every consumer reads. Per rank and step this reads
  // 1/tp of the lm_head (the 32B model at TP 4: 0.39 GB instead of 1.56 GB), for R·V·4·(tp-1)/tp
  // bytes received over the interconnect and R·V·4 copied by the reorder.
  const int64_t S = d.vocab_shard;
  GKA_ASSIGN_OR_RETURN(TensorView by_rank,
                       ws.Get(kLogitsByRank, Shape{d.tp_size * R, S}, DType::kF32));
  const TensorView mine = Rows(by_rank, d.tp_rank * R, (d.tp_rank + 1) * R);
  GKA_RETURN_IF_ERROR(be.Gemm({.x = gathered, .w = weights_.lm_head.view(), .y = mine}));
  GKA_RETURN_IF_ERROR(
      Collective([&](parallel::Communicator& comm) { return comm.AllGather(mine, by_rank); }));
  GKA_RETURN_IF_ERROR(be.Embedding(
      {.table = by_rank, .ids = shard_order_dev, .out = Reshape(logits, Shape{R * d.tp_size, S})}));
  return logits;
}

absl::Status Engine::AttentionLayer(int layer, const BatchMeta& meta, const TensorView& x,
                                    const TensorView& out) {
  const ModelDims& d = dims_;
  const AttentionWeights& w = weights_.layers[layer].attn;
  kernels::Backend& be = *backend_;
  Workspace& ws = *ws_;
  const int64_t T = meta.num_tokens;
  const DType A = options_.dtype;
  // q, k, v: column ranges of one fused GEMM's output (or packed, unfused), all with token
  // stride `stride`; QkNormRope normalises q and k in place there.
  std::vector<TensorView> qkv;
  GKA_ASSIGN_OR_RETURN(const int64_t stride, Project(x, w.qkv, attn_parts_, kAttnQkv, kAttnQ, qkv));
  GKA_ASSIGN_OR_RETURN(TensorView o, ws.Get(kAttnO, Shape{T, d.hq * d.head_dim}, A));
  const TensorView q3 = Reshape(qkv[kAttnPartQ], Shape{T, d.hq, d.head_dim});
  const TensorView k3 = Reshape(qkv[kAttnPartK], Shape{T, d.hkv, d.head_dim});
  const TensorView v3 = Reshape(qkv[kAttnPartV], Shape{T, d.hkv, d.head_dim});
  GKA_RETURN_IF_ERROR(be.QkNormRope({.q = q3,
                                     .k = k3,
                                     .row_stride = stride,
                                     .q_weight = w.q_norm.view(),
                                     .k_weight = w.k_norm.view(),
                                     .positions = meta.positions,
                                     .theta = d.rope_theta,
                                     .eps = d.rms_eps}));
  const AttentionCache& cache = kv_[layer];
  GKA_RETURN_IF_ERROR(be.KvCacheWrite({.k = k3,
                                       .v = v3,
                                       .row_stride = stride,
                                       .k_pages = cache.k_pages.view(),
                                       .v_pages = cache.v_pages.view(),
                                       .slot_mapping = meta.slot_mapping}));
  GKA_RETURN_IF_ERROR(
      be.PagedAttention({.q = q3,
                         .q_row_stride = stride,
                         .out = Reshape(o, Shape{T, d.hq, d.head_dim}),
                         .k_pages = cache.k_pages.view(),
                         .v_pages = cache.v_pages.view(),
                         .page_table = meta.page_table,
                         .cu_q = meta.cu_seqlens,
                         .context_lens = meta.context_lens,
                         .num_seqs = meta.num_seqs,
                         .max_pages_per_seq = max_pages_per_seq_,
                         .max_q_len = meta.max_q_len,
                         .max_context_len = meta.max_context,
                         .scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim))}));
  GKA_RETURN_IF_ERROR(be.Gemm({.x = o, .w = w.o_proj.view(), .y = out}));
  return AllReduce(out);
}

absl::Status Engine::AllReduce(const TensorView& t) {
  if (options_.communicator == nullptr || dims_.tp_size == 1) return absl::OkStatus();
  return Collective([&](parallel::Communicator& comm) { return comm.AllReduceSum(t); });
}

absl::Status Engine::Collective(absl::FunctionRef<absl::Status(parallel::Communicator&)> op) {
  GKA_CHECK(options_.communicator != nullptr);
  parallel::Communicator& comm = *options_.communicator;
  if (!comm.on_device()) {
    // The in-process communicator reads host-visible memory now: finish the producers.
    GKA_RETURN_IF_ERROR(backend_->Synchronize());
    return op(comm);
  }
  // NCCL: enqueued on our stream, in order with the kernels (no host round trip).
  GKA_RETURN_IF_ERROR(op(comm));
  // In one process, a cudaFree/cudaMalloc on this thread while this device's NCCL kernel
  // still waits for a peer can block that peer's own allocation behind the driver's lock, and
  // neither rank moves again (the single-process NCCL hang). A step larger than any before
  // may grow the workspace or a kernel's scratch, so it waits for each collective instead.
  if (sync_collectives_) GKA_RETURN_IF_ERROR(backend_->Synchronize());
  return absl::OkStatus();
}

void Engine::NoteStepShape(int64_t tokens, int32_t seqs, int32_t max_context) {
  int32_t context = 1;
  while (context < max_context) context *= 2;
  sync_collectives_ =
      tokens > max_step_tokens_ || seqs > max_step_seqs_ || context > max_step_context_;
  max_step_tokens_ = std::max(max_step_tokens_, tokens);
  max_step_seqs_ = std::max(max_step_seqs_, seqs);
  max_step_context_ = std::max(max_step_context_, context);
}

absl::Status Engine::GkaLayer(int layer, const BatchMeta& meta, const TensorView& x,
                              const TensorView& out) {
  const ModelDims& d = dims_;
  const GkaWeights& w = weights_.layers[layer].gka;
  const GkaState& st = gka_[layer];
  kernels::Backend& be = *backend_;
  Workspace& ws = *ws_;
  const int64_t T = meta.num_tokens;
  const int64_t H = d.gka_h, D = d.gka_d;
  const DType A = options_.dtype;
  const DType F32 = DType::kF32;

  // The seven input projections: column ranges of one fused GEMM's output (or packed,
  // unfused), all with token stride `stride`. Absent parts (flags off) are empty views.
  std::vector<TensorView> in;
  GKA_ASSIGN_OR_RETURN(const int64_t stride,
                       Project(x, w.in_proj, gka_parts_, kGkaInProj, kGkaQRaw, in));
  const TensorView& q_raw = in[kGkaPartQ];
  const TensorView& k_raw = in[kGkaPartK];
  TensorView v_raw = in[kGkaPartV];
  const TensorView& a = in[kGkaPartA];
  const TensorView& b = in[kGkaPartB];
  const TensorView& c = in[kGkaPartAlpha];
  const TensorView& z = in[kGkaPartG];
  if (!d.use_v_conv && stride != 0) {
    // Convert below reads v packed: its own GEMM over v's rows of the stacked weight (no
    // checkpoint we serve lacks the v conv; this keeps the flag working).
    const int64_t v0 = gka_parts_.offsets[kGkaPartV];
    GKA_ASSIGN_OR_RETURN(v_raw, ws.Get(kGkaVRaw, Shape{T, d.dv}, A));
    GKA_RETURN_IF_ERROR(be.Gemm({.x = x, .w = Rows(w.in_proj.view(), v0, v0 + d.dv), .y = v_raw}));
  }

  // Short causal convs over the raw projections, carrying the slot's conv state.
  GKA_ASSIGN_OR_RETURN(TensorView q_conv, ws.Get(kGkaQConv, Shape{T, d.dq}, F32));
  GKA_ASSIGN_OR_RETURN(TensorView k_conv, ws.Get(kGkaKConv, Shape{T, d.dk}, F32));
  GKA_ASSIGN_OR_RETURN(TensorView v_conv, ws.Get(kGkaVConv, Shape{T, d.dv}, F32));
  auto conv = [&](const TensorView& raw, const TensorView& y, const DeviceBuffer& weight,
                  const DeviceBuffer& state) {
    return be.CausalConv({.x = raw,
                          .x_row_stride = stride,
                          .out = y,
                          .weight = weight.view(),
                          .state = state.view(),
                          .slots = meta.slots,
                          .cu_seqlens = meta.cu_seqlens,
                          .num_seqs = meta.num_seqs});
  };
  GKA_RETURN_IF_ERROR(conv(q_raw, q_conv, w.q_conv, st.conv_q));
  GKA_RETURN_IF_ERROR(conv(k_raw, k_conv, w.k_conv, st.conv_k));
  if (d.use_v_conv) {
    GKA_RETURN_IF_ERROR(conv(v_raw, v_conv, w.v_conv, st.conv_v));
  } else {
    GKA_RETURN_IF_ERROR(be.Convert(v_raw, v_conv));
  }

  // Per-token gates, then the state core.
  GKA_ASSIGN_OR_RETURN(TensorView qh, ws.Get(kGkaQ, Shape{T, H, D}, F32));
  GKA_ASSIGN_OR_RETURN(TensorView kh, ws.Get(kGkaK, Shape{T, H, D}, F32));
  GKA_ASSIGN_OR_RETURN(TensorView vh, ws.Get(kGkaV, Shape{T, H, D}, F32));
  GKA_ASSIGN_OR_RETURN(TensorView alpha, ws.Get(kGkaAlpha, Shape{T, H}, F32));
  GKA_ASSIGN_OR_RETURN(TensorView g, ws.Get(kGkaG, Shape{T, H}, F32));
  GKA_RETURN_IF_ERROR(be.GkaGates({.q_conv = q_conv,
                                   .k_conv = k_conv,
                                   .v_conv = v_conv,
                                   .a = a,
                                   .b = b,
                                   .c = c,
                                   .gate_row_stride = stride,
                                   .a_log = w.a_log.view(),
                                   .dt_bias = w.dt_bias.view(),
                                   .b_bias = d.use_beta ? w.b_bias.view() : TensorView{},
                                   .alpha_bias = d.use_alpha ? w.alpha_bias.view() : TensorView{},
                                   .use_forgetting_gate = d.use_decay,
                                   .q_out = qh,
                                   .k_out = kh,
                                   .v_out = vh,
                                   .alpha = alpha,
                                   .g = g}));
  GKA_ASSIGN_OR_RETURN(TensorView core, ws.Get(kGkaCore, Shape{T, H, D}, F32));
  GKA_RETURN_IF_ERROR(
      be.GkaCore({.q = qh,
                  .k = kh,
                  .v = vh,
                  .alpha = alpha,
                  .g = g,
                  .out = core,
                  .h_kk = st.h_kk.view(),
                  .h_kv = st.h_kv.view(),
                  .slots = meta.slots,
                  .cu_seqlens = meta.cu_seqlens,
                  .num_iter = meta.num_iter,
                  .num_seqs = meta.num_seqs,
                  .max_seqlen = meta.max_q_len,
                  .ridge_ratio = d.ridge,
                  .scale = d.gla_rescale ? 1.0f / std::sqrt(static_cast<float>(D)) : 1.0f,
                  .decay_kk = d.use_decay && d.use_decay_kk}));

  GKA_ASSIGN_OR_RETURN(TensorView gated, ws.Get(kGkaGated, Shape{T * H, D}, A));
  GKA_RETURN_IF_ERROR(
      be.GatedRmsNorm({.x = Reshape(core, Shape{T * H, D}),
                       .gate = d.use_gate ? Reshape(z, Shape{T * H, D}) : TensorView{},
                       .gate_token_stride = stride,
                       .gate_heads = static_cast<int32_t>(H),
                       .weight = w.o_norm.view(),
                       .out = gated,
                       .eps = d.gka_norm_eps}));
  GKA_RETURN_IF_ERROR(
      be.Gemm({.x = Reshape(gated, Shape{T, H * D}), .w = w.o_proj.view(), .y = out}));
  return AllReduce(out);
}

absl::StatusOr<int64_t> Engine::Project(const TensorView& x, const DeviceBuffer& w,
                                        const ProjectionParts& parts, int fused_key,
                                        int first_part_key, std::vector<TensorView>& out) {
  const int64_t T = x.shape[0];
  const DType A = options_.dtype;
  const size_t n = parts.sizes.size();
  out.assign(n, TensorView{});
  if (fuse_projections_) {
    // [T, total]: part i is columns [offsets[i], offsets[i] + sizes[i]) of every row.
    GKA_ASSIGN_OR_RETURN(TensorView y, ws_->Get(fused_key, Shape{T, parts.total}, A));
    GKA_RETURN_IF_ERROR(backend_->Gemm({.x = x, .w = w.view(), .y = y}));
    for (size_t i = 0; i < n; ++i) {
      if (parts.sizes[i] == 0) continue;
      out[i] = y;
      out[i].ptr = static_cast<char*>(y.ptr) + parts.offsets[i] * tensor::DTypeSize(A);
      out[i].shape = Shape{T, parts.sizes[i]};
    }
    return parts.total;
  }
  for (size_t i = 0; i < n; ++i) {
    if (parts.sizes[i] == 0) continue;
    GKA_ASSIGN_OR_RETURN(
        out[i], ws_->Get(first_part_key + static_cast<int>(i), Shape{T, parts.sizes[i]}, A));
    const TensorView wi = Rows(w.view(), parts.offsets[i], parts.offsets[i] + parts.sizes[i]);
    GKA_RETURN_IF_ERROR(backend_->Gemm({.x = x, .w = wi, .y = out[i]}));
  }
  return int64_t{0};
}

absl::Status Engine::Mlp(int layer, const TensorView& x, const TensorView& out) {
  const ModelDims& d = dims_;
  const LayerWeights& lw = weights_.layers[layer];
  const int64_t T = x.shape[0];
  GKA_ASSIGN_OR_RETURN(TensorView gate_up,
                       ws_->Get(kMlpGateUp, Shape{T, 2 * d.ffn}, options_.dtype));
  GKA_ASSIGN_OR_RETURN(TensorView act, ws_->Get(kMlpAct, Shape{T, d.ffn}, options_.dtype));
  GKA_RETURN_IF_ERROR(backend_->Gemm({.x = x, .w = lw.gate_up.view(), .y = gate_up}));
  GKA_RETURN_IF_ERROR(backend_->SiluMul({.gate_up = gate_up, .out = act}));
  GKA_RETURN_IF_ERROR(backend_->Gemm({.x = act, .w = lw.down.view(), .y = out}));
  return AllReduce(out);
}

absl::StatusOr<tensor::Buffer> Engine::LogitsToHost(const StepResult& result) {
  tensor::Buffer host = tensor::Buffer::Allocate(result.logits.shape, DType::kF32);
  GKA_RETURN_IF_ERROR(backend_->CopyToHost(host.data<void>(), result.logits.ptr, host.nbytes()));
  return host;
}

absl::StatusOr<std::vector<Engine::Sampled>> Engine::Sample(
    const StepResult& result, absl::Span<const SampleRequest> requests, int32_t vocab_limit) {
  const int32_t B = static_cast<int32_t>(result.row_offsets.size()) - 1;
  if (static_cast<int32_t>(requests.size()) != B) {
    return absl::InvalidArgumentError(
        absl::StrCat(requests.size(), " sampling requests for ", B, " sequences"));
  }
  // Last row of each sequence, gathered into a [B, V] tensor (penalties modify it in place).
  const int64_t V = result.logits.shape[1];
  std::vector<int32_t> last_rows;
  for (int32_t b = 0; b < B; ++b) last_rows.push_back(result.row_offsets[b + 1] - 1);
  GKA_ASSIGN_OR_RETURN(const int32_t* rows_dev, ws_->Upload(kSampleRows, last_rows));
  GKA_ASSIGN_OR_RETURN(TensorView sel, ws_->Get(kSampleLogits, Shape{B, V}, DType::kF32));
  GKA_RETURN_IF_ERROR(backend_->Embedding({.table = result.logits, .ids = rows_dev, .out = sel}));

  std::vector<kernels::SamplingConfig> configs;
  std::vector<uint64_t> steps;
  std::vector<int32_t> history, offsets{0};
  bool any_top = false;
  for (const SampleRequest& r : requests) {
    any_top = any_top || r.config.num_top_logprobs > 0;
    configs.push_back(r.config);
    steps.push_back(r.step);
    history.insert(history.end(), r.history.begin(), r.history.end());
    offsets.push_back(static_cast<int32_t>(history.size()));
  }
  std::vector<int32_t> out(B);
  std::vector<float> logprobs(B);
  // [B, kMaxTopLogprobs], only when some sequence asks for alternatives.
  const size_t top_size = any_top ? static_cast<size_t>(B) * kernels::kMaxTopLogprobs : 0;
  std::vector<int32_t> top_ids(top_size);
  std::vector<float> top_logprobs(top_size);
  GKA_RETURN_IF_ERROR(backend_->Sample({.logits = sel,
                                        .vocab_limit = vocab_limit,
                                        .configs = configs.data(),
                                        .steps = steps.data(),
                                        .history = history.data(),
                                        .history_offsets = offsets.data(),
                                        .out_ids = out.data(),
                                        .out_logprobs = logprobs.data(),
                                        .out_top_ids = any_top ? top_ids.data() : nullptr,
                                        .out_top_logprobs = any_top ? top_logprobs.data() : nullptr,
                                        .num_seqs = B}));
  std::vector<Sampled> sampled(B);
  for (int32_t b = 0; b < B; ++b) {
    sampled[b] = {out[b], logprobs[b], {}};
    for (int32_t j = 0; j < configs[b].num_top_logprobs; ++j) {
      const size_t at = static_cast<size_t>(b) * kernels::kMaxTopLogprobs + j;
      if (top_ids[at] < 0) break;  // a vocabulary smaller than the count asked for
      sampled[b].top.push_back({top_ids[at], top_logprobs[at]});
    }
  }
  return sampled;
}

// ---- export / import -------------------------------------------------------------------

std::vector<std::pair<std::string, MemorySegment>> Engine::Segments(const SequenceMemory& mem) {
  const ModelDims& d = dims_;
  std::vector<std::pair<std::string, MemorySegment>> out;
  for (int l = 0; l < d.num_layers; ++l) {
    if (!d.is_gka[l]) {
      for (const char* which : {"k", "v"}) {
        const DeviceBuffer& pool = which[0] == 'k' ? kv_[l].k_pages : kv_[l].v_pages;
        for (PageId p : mem.pages) {
          const TensorView page = Slot(pool, p.value());
          out.push_back({absl::StrCat("layer", l, ".", which), {page.ptr, page.nbytes()}});
        }
      }
    } else {
      const GkaState& g = gka_[l];
      const std::pair<const char*, const DeviceBuffer*> parts[] = {{"h_kk", &g.h_kk},
                                                                   {"h_kv", &g.h_kv},
                                                                   {"conv_q", &g.conv_q},
                                                                   {"conv_k", &g.conv_k},
                                                                   {"conv_v", &g.conv_v}};
      for (const auto& [name, buf] : parts) {
        if (buf->empty()) continue;
        const TensorView s = Slot(*buf, mem.slot.value());
        out.push_back({absl::StrCat("layer", l, ".", name), {s.ptr, s.nbytes()}});
      }
    }
  }
  return out;
}

absl::StatusOr<SequenceState> Engine::ExportSequence(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("no sequence ", id.value()));
  const ModelDims& d = dims_;
  SequenceState state;
  state.length = it->second.length;
  state.layout_hash = LayoutHash();
  const int64_t num_pages = static_cast<int64_t>(it->second.pages.size());
  // Group consecutive segments of the same name (a layer's pages) into one host tensor.
  auto segments = Segments(it->second);
  for (size_t i = 0; i < segments.size();) {
    size_t j = i;
    size_t bytes = 0;
    while (j < segments.size() && segments[j].first == segments[i].first) {
      bytes += segments[j].second.bytes;
      ++j;
    }
    const std::string& name = segments[i].first;
    Shape shape;
    DType dtype = DType::kF32;
    const bool is_kv = absl::EndsWith(name, ".k") || absl::EndsWith(name, ".v");
    if (is_kv) {
      shape = Shape{num_pages, options_.page_size, d.hkv, d.head_dim};
      dtype = options_.dtype;
    } else {
      shape = Shape{static_cast<int64_t>(bytes / 4)};
    }
    tensor::Buffer buf = tensor::Buffer::Allocate(shape, dtype);
    GKA_CHECK(buf.nbytes() == bytes) << name;
    size_t off = 0;
    for (size_t s = i; s < j; ++s) {
      GKA_RETURN_IF_ERROR(backend_->CopyToHost(buf.data<char>() + off, segments[s].second.ptr,
                                               segments[s].second.bytes));
      off += segments[s].second.bytes;
    }
    state.segments.push_back({name, std::move(buf)});
    i = j;
  }
  return state;
}

absl::Status Engine::ReserveForImport(SequenceId id, int64_t length) {
  if (length < 0 || length > max_seq_len_) {
    return absl::OutOfRangeError(
        absl::StrCat("sequence length ", length, " outside [0, ", max_seq_len_, "]"));
  }
  if (PagesFor(length, options_.page_size) > pages_.num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("need ", PagesFor(length, options_.page_size),
                                                     " KV pages, ", pages_.num_free(), " free"));
  }
  GKA_RETURN_IF_ERROR(AddSequence(id));
  SequenceMemory& mem = sequences_[id];
  GKA_CHECK_OK(EnsurePages(mem, length));
  mem.length = length;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MemorySegment>> Engine::DescribeSequence(SequenceId id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("no sequence ", id.value()));
  std::vector<MemorySegment> out;
  for (auto& [name, seg] : Segments(it->second)) out.push_back(seg);
  return out;
}

absl::Status Engine::ImportSequence(SequenceId id, const SequenceState& state) {
  if (state.layout_hash != LayoutHash()) {
    return absl::InvalidArgumentError(
        absl::StrCat("imported state has layout hash ", state.layout_hash, ", this engine's is ",
                     LayoutHash(), " (different model, dtype or page size)"));
  }
  GKA_RETURN_IF_ERROR(ReserveForImport(id, state.length));
  auto segments = Segments(sequences_[id]);
  // Validate names and sizes against our own layout before writing anything.
  size_t seg = 0;
  std::vector<std::pair<const StateSegment*, size_t>> plan;
  for (const StateSegment& s : state.segments) {
    size_t bytes = 0;
    const size_t first = seg;
    while (seg < segments.size() && segments[seg].first == s.name) {
      bytes += segments[seg].second.bytes;
      ++seg;
    }
    if (seg == first || bytes != s.data.nbytes()) {
      (void)RemoveSequence(id);
      return absl::InvalidArgumentError(
          absl::StrCat("imported state segment '", s.name, "' (", s.data.nbytes(),
                       " bytes) does not match this engine's layout (", bytes, " bytes expected)"));
    }
    plan.push_back({&s, first});
  }
  if (seg != segments.size()) {
    (void)RemoveSequence(id);
    return absl::InvalidArgumentError(
        absl::StrCat("imported state is missing segment '", segments[seg].first, "'"));
  }
  for (const auto& [s, first] : plan) {
    size_t off = 0;
    for (size_t i = first; off < s->data.nbytes(); ++i) {
      GKA_RETURN_IF_ERROR(backend_->CopyFromHost(segments[i].second.ptr, s->data.data<char>() + off,
                                                 segments[i].second.bytes));
      off += segments[i].second.bytes;
    }
  }
  return absl::OkStatus();
}

uint64_t Engine::LayoutHash() const {
  const ModelDims& d = dims_;
  // FNV-1a over the numbers that fix the byte layout of a sequence's state.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](int64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>((v >> (8 * i)) & 0xff);
      h *= 1099511628211ull;
    }
  };
  mix(d.hidden);
  mix(d.num_layers);
  for (bool g : d.is_gka) mix(g);
  mix(d.hkv);
  mix(d.head_dim);
  mix(d.gka_h);
  mix(d.gka_d);
  mix(d.dq);
  mix(d.dk);
  mix(d.dv);
  mix(d.conv_k);
  mix(d.use_v_conv);
  mix(options_.page_size);
  mix(static_cast<int64_t>(options_.dtype));
  mix(d.tp_size);
  mix(d.tp_rank);
  return h;
}

}  // namespace gka::engine
