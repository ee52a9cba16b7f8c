// gka-decode-worker: serves gka.worker.v1.DecodeService; see decode_worker.h.
//
//   gka-decode-worker --model DIR --router 127.0.0.1:50052 --port 0 --metrics-port 0 \
//       --tls-ca ca.pem --tls-cert worker.pem --tls-key worker.key   (or --insecure)
//   gka-decode-worker ... --colocated --max-batch-tokens 512 --prefill-chunk-size 256
//
// --router names the router's internal port; without certificates or --insecure the worker
// exits 2 (its port carries reservations and transfer tickets).
//
// Prints one JSON line {"role":"decode","grpc":...,"metrics":...,"pid":...} on stdout once it
// serves; SIGINT/SIGTERM shut it down gracefully.
#include <CLI/CLI.hpp>
#include <iostream>

#include "decode_worker/common/flags.h"
#include "decode_worker/common/process.h"
#include "decode_worker/decode_worker.h"

int main(int argc, char** argv) {
  namespace wc = gka::worker_common;
  wc::BlockTerminationSignals();
  CLI::App app{"gka-decode-worker: decode side of disaggregated GKA serving"};
  gka::decode_worker::DecodeWorkerOptions o;
  o.common.worker_id = "decode-0";
  wc::WorkerFlags flags;
  wc::AddWorkerFlags(app, o.common, flags);
  int default_lease_ms = 10000, max_lease_ms = 60000, fence_timeout_ms = 2000;
  app.add_option("--max-batch-tokens", o.max_batch_tokens,
                 "tokens per step (decode tokens + colocated prefill chunks)")
      ->capture_default_str();
  app.add_flag("--colocated", o.colocated,
               "prefill prompts in this worker's engine (no prefill worker, no hand-offs): "
               "chunked prefill mixed with the decode batch");
  app.add_option("--prefill-chunk-size", o.prefill_chunk_size,
                 "colocated: most prompt tokens of one sequence per step (0: --max-batch-tokens)")
      ->capture_default_str();
  app.add_option("--default-lease-ms", default_lease_ms, "lease when a Reserve names none")
      ->capture_default_str();
  app.add_option("--max-lease-ms", max_lease_ms, "longest lease granted")->capture_default_str();
  app.add_option("--fence-timeout-ms", fence_timeout_ms,
                 "how long a fence waits for a sender to confirm it stopped (then quarantine)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.default_lease = absl::Milliseconds(default_lease_ms);
  o.max_lease = absl::Milliseconds(max_lease_ms);
  o.fence_timeout = absl::Milliseconds(fence_timeout_ms);
  if (absl::Status s = wc::ApplyWorkerFlags(flags, o.common); !s.ok()) {
    std::cerr << "gka-decode-worker: " << s << "\n";
    return 2;
  }
  auto worker = gka::decode_worker::DecodeWorker::Create(o);
  if (!worker.ok()) {
    std::cerr << "gka-decode-worker: " << worker.status() << "\n";
    return 1;
  }
  return wc::ServeUntilSignalled((*worker)->ReadyLine(), flags,
                                 [&](absl::Duration grace) { (*worker)->Shutdown(grace); });
}
