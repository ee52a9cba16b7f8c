#include "decode_worker/common/model_loader.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/model/safetensors.h"
#include "kernels/registry.h"
#if GKA_WITH_NCCL
#include "kernels/nccl/nccl_communicator.h"
#endif

namespace gka::worker_common {
namespace {

// The ranks' communicators when the flags name none: on the CPU the in-process group (host
// memory); on GPUs one NCCL communicator per rank (rank r on device gpu + r), since the
// engines' activations live in device memory, which the host group cannot read.
absl::StatusOr<CommunicatorFactory> DefaultCommunicators(const ModelOptions& options,
                                                         kernels::BackendKind backend) {
  if (options.communicators || options.tp_size == 1 || backend != kernels::BackendKind::kCuda) {
    return options.communicators;  // empty: RankGroup's in-process default
  }
#if GKA_WITH_NCCL
  const int first = options.gpu;
  return CommunicatorFactory([first](int n) {
    std::vector<int> devices;
    for (int r = 0; r < n; ++r) devices.push_back(first + r);
    return kernels::nccl::CreateNcclGroup(devices);
  });
#else
  return absl::FailedPreconditionError(absl::StrCat(
      "--tp ", options.tp_size, " with --backend cuda needs NCCL, and this build has none "
      "(configure with the CUDA toolkit's NCCL: GKA_WITH_NCCL=ON), or use --tp 1"));
#endif
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModel(const ModelOptions& options) {
  if (options.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  if (options.page_size < 1) return absl::InvalidArgumentError("--page-size must be >= 1");
  if (options.num_slots < 1) return absl::InvalidArgumentError("--num-slots must be >= 1");
  if (options.num_pages < 0) return absl::InvalidArgumentError("--num-pages must be >= 0");
  if (options.max_seq_len < 0) return absl::InvalidArgumentError("--max-seq-len must be >= 0");
  if (options.tp_size < 1) return absl::InvalidArgumentError("--tp must be >= 1");
  LoadedModel m;
  GKA_ASSIGN_OR_RETURN(m.config,
                       model::ModelConfig::FromJsonFile(options.model_dir + "/config.json"));
  GKA_ASSIGN_OR_RETURN(model::GenerationDefaults generation,
                       model::GenerationDefaults::FromModelDir(options.model_dir));
  for (int64_t id : generation.eos_token_ids) m.eos_token_ids.push_back(static_cast<int32_t>(id));
  if (m.eos_token_ids.empty()) {
    for (int64_t id : m.config.eos_token_ids) m.eos_token_ids.push_back(static_cast<int32_t>(id));
  }
  GKA_ASSIGN_OR_RETURN(auto checkpoint, model::Checkpoint::Open(options.model_dir));
  engine::EngineOptions eo;
  GKA_ASSIGN_OR_RETURN(eo.backend, kernels::ParseBackendKind(options.backend));
  eo.page_size = options.page_size;
  eo.num_state_slots = options.num_slots;
  eo.num_pages = options.num_pages;
  eo.max_seq_len = options.max_seq_len;
  if (options.gpu < 0) return absl::InvalidArgumentError("--gpu must be >= 0");
  eo.device_ordinal = options.gpu;
  // The GPU serving dtypes (issue 4): bf16 weights, activations and KV; GKA state stays fp32
  // in the engine whatever this says. The CPU backend computes in fp32.
  if (eo.backend == kernels::BackendKind::kCuda) eo.dtype = tensor::DType::kBF16;
  GKA_ASSIGN_OR_RETURN(CommunicatorFactory communicators,
                       DefaultCommunicators(options, eo.backend));
  GKA_ASSIGN_OR_RETURN(m.ranks, RankGroup::Create({.tp_size = options.tp_size,
                                                   .communicators = std::move(communicators)},
                                                  eo, m.config, *checkpoint));
  m.total_pages = m.lead().free_pages();
  m.total_slots = m.lead().free_slots();
  std::vector<absl::string_view> parts = absl::StrSplit(options.model_dir, '/', absl::SkipEmpty());
  m.name = parts.empty() ? options.model_dir : std::string(parts.back());
  GKA_LOG(INFO) << "loaded " << options.model_dir << " (" << m.config.LayoutString() << ") on "
                << options.backend << " at TP=" << options.tp_size << ": " << m.total_slots
                << " slots, " << m.total_pages << " pages of " << options.page_size
                << " tokens, max_seq_len " << m.lead().max_seq_len();
  return m;
}

}  // namespace gka::worker_common
