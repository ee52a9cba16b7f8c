// DecodeWorker: the decode side of disaggregated serving — gka.worker.v1.DecodeService over
// gRPC, a UCX transfer engine receiving prefill hand-offs, one engine thread running the
// continuous decode batch, registration and heartbeats with the router, /metrics. With
// `colocated` it serves without a prefill worker: it prefills prompts itself, chunked into
// the running batch (decode_core.h).
//
// Owns the engine (and its memory), the transfer engine, the gRPC server, the metrics
// exposer, the engine thread and the fencer thread. DecodeCore (decode_core.h) holds the
// engine-thread state and documents the protocol. Depends on engine, scheduler, transfer,
// rpc, metrics, the worker proto.
//
//   GKA_ASSIGN_OR_RETURN(auto worker, DecodeWorker::Create(options));
//   std::cout << worker->ReadyLine() << std::endl;
//   ...
//   worker->Shutdown(absl::Seconds(5));
//
// Thread-safety: public methods are thread-safe. gRPC handlers only enqueue work for the
// engine thread and stream what it produces.
//
// Fault injection (builds with -DGKA_FAULT_INJECTION=ON and options.fault_injection): a
// StartDecode whose request id contains "fault-slow-close" has the engine thread sleep
// 100 ms right after it closed the stream (between the close and what the close starts),
// so that the last write's completion, Finish and OnDone on gRPC's threads run in that
// window: the sanitizer builds then catch any touch of the stream after it was closed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "decode_worker/common/runtime.h"
#include "decode_worker/decode_core.h"

namespace gka::decode_worker {

struct DecodeWorkerOptions {
  // Model, addresses, router, UCX transports, tiers (worker_id defaults to "decode-0").
  worker_common::WorkerOptions common;
  int32_t max_batch_tokens = 256;  // tokens per step (decode tokens + colocated prefill chunks)
  // Colocated serving: prefill prompts in this engine (registers WORKER_ROLE_COLOCATED), at
  // most prefill_chunk_size prompt tokens of one sequence per step (0: max_batch_tokens).
  bool colocated = false;
  int32_t prefill_chunk_size = 0;
  absl::Duration default_lease = absl::Seconds(10);
  absl::Duration max_lease = absl::Seconds(60);
  // How long one fence waits for the sender to confirm it stopped; then quarantine.
  absl::Duration fence_timeout = absl::Seconds(2);
  absl::Duration quarantine_retry = absl::Seconds(1);
  bool fault_injection = false;  // honoured only in GKA_FAULT_INJECTION builds
};

class DecodeWorker {
 public:
  static absl::StatusOr<std::unique_ptr<DecodeWorker>> Create(const DecodeWorkerOptions& options);
  ~DecodeWorker();  // Shutdown(zero grace) if not shut down yet

  const std::string& grpc_address() const;
  // "" without an exposer.
  const std::string& metrics_address() const;
  // The JSON line a launcher waits for (worker_common::ReadyLine).
  std::string ReadyLine() const;

  // Stops accepting calls, gives calls in flight `grace`, ends the rest, stops the threads.
  // Idempotent.
  void Shutdown(absl::Duration grace);

  // A snapshot published by the engine thread after each iteration.
  DecodeStats Stats() const;
  metrics::Registry& registry();
  // Registrations with the router so far (0 without --router).
  int64_t registrations() const;

  struct Impl;

 private:
  explicit DecodeWorker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gka::decode_worker
