// PrefillWorker: the prefill side of disaggregated serving — gka.worker.v1.PrefillService
// over gRPC, one engine thread batching prompts under a token budget (chunked prefill, each
// request's num_iter), sender threads handing finished sequences to decode workers over UCX,
// registration and heartbeats with the router, /metrics.
//
// Owns the engine, the transfer engine, the gRPC server, the metrics exposer and its threads.
// PrefillCore holds the engine-thread state; handoff_sender.h the transfer protocol.
//
//   GKA_ASSIGN_OR_RETURN(auto worker, PrefillWorker::Create(options));
//   std::cout << worker->ReadyLine() << std::endl;
//   worker->Shutdown(absl::Seconds(5));
//
// A sequence's hand-off streams while it is prefilled (handoff_sender.h: pages after each
// chunk, layers in the last step), unless --stream-handoff=false. A Prefill call returns only
// after UCX reported every write complete at the decode worker and the decode worker
// acknowledged (and verified) the completion message.
//
// Fault injection (builds with -DGKA_FAULT_INJECTION=ON and options.fault_injection): a
// request id containing "fault-corrupt" corrupts a transferred byte, "fault-delay-<ms>"
// delays the completion, "fault-delay-puts-<ms>" delays the writes (both overstay the
// lease), "fault-freeze" freezes before the completion until cancelled,
// "fault-stale-generation" sends a completion naming another generation,
// "fault-step-delay-<ms>" sleeps after each prefill step of the request (a slow prefill: the
// hand-off streams while it lasts).
//
// Thread-safety: public methods are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "decode_worker/common/runtime.h"
#include "prefill_worker/prefill_core.h"

namespace gka::prefill_worker {

struct PrefillWorkerOptions {
  // Model, addresses, router, UCX transports, tiers (worker_id defaults to "prefill-0").
  worker_common::WorkerOptions common;
  int32_t max_batch_tokens = 2048;   // prompt tokens per prefill step
  int32_t prefill_chunk_size = 512;  // most tokens of one prompt per step
  int32_t sender_threads = 2;        // hand-offs in flight at once
  // Stream hand-offs while prompts are prefilled (PrefillCore::Options::stream_handoff).
  bool stream_handoff = true;
  bool fault_injection = false;  // honoured only in GKA_FAULT_INJECTION builds
};

class PrefillWorker {
 public:
  static absl::StatusOr<std::unique_ptr<PrefillWorker>> Create(const PrefillWorkerOptions& options);
  ~PrefillWorker();

  const std::string& grpc_address() const;
  const std::string& metrics_address() const;
  std::string ReadyLine() const;
  void Shutdown(absl::Duration grace);
  PrefillStats Stats() const;
  metrics::Registry& registry();
  int64_t registrations() const;

  struct Impl;

 private:
  explicit PrefillWorker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gka::prefill_worker
