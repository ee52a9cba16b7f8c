// gka-prefill-worker: serves gka.worker.v1.PrefillService; see prefill_worker.h.
//
//   gka-prefill-worker --model DIR --router 127.0.0.1:50052 --port 0 --metrics-port 0 \
//       --tls-ca ca.pem --tls-cert worker.pem --tls-key worker.key   (or --insecure)
//
// --router names the router's internal port; without certificates or --insecure the worker
// exits 2 (its port carries reservations and transfer tickets).
//
// Prints one JSON line {"role":"prefill","grpc":...,"metrics":...,"pid":...} on stdout once
// it serves; SIGINT/SIGTERM shut it down gracefully.
#include <CLI/CLI.hpp>
#include <iostream>

#include "decode_worker/common/flags.h"
#include "decode_worker/common/process.h"
#include "prefill_worker/prefill_worker.h"

int main(int argc, char** argv) {
  namespace wc = gka::worker_common;
  wc::BlockTerminationSignals();
  CLI::App app{"gka-prefill-worker: prefill side of disaggregated GKA serving"};
  gka::prefill_worker::PrefillWorkerOptions o;
  o.common.worker_id = "prefill-0";
  wc::WorkerFlags flags;
  wc::AddWorkerFlags(app, o.common, flags);
  app.add_option("--max-batch-tokens", o.max_batch_tokens, "prompt tokens per prefill step")
      ->capture_default_str();
  app.add_option("--prefill-chunk", o.prefill_chunk_size, "most tokens of one prompt per step")
      ->capture_default_str();
  app.add_option("--sender-threads", o.sender_threads, "hand-offs in flight at once")
      ->capture_default_str();
  app.add_option("--stream-handoff", o.stream_handoff,
                 "send KV pages and states while the prompt is prefilled (false: after it)")
      ->capture_default_str();
#ifdef GKA_FAULT_INJECTION
  app.add_flag(
      "--fault-injection", o.fault_injection,
      "honour fault-injection request ids (fault-corrupt, fault-delay-<ms>, "
      "fault-delay-puts-<ms>, fault-freeze, fault-stale-generation, fault-step-delay-<ms>)");
#endif
  CLI11_PARSE(app, argc, argv);
  if (absl::Status s = wc::ApplyWorkerFlags(flags, o.common); !s.ok()) {
    std::cerr << "gka-prefill-worker: " << s << "\n";
    return 2;
  }
  auto worker = gka::prefill_worker::PrefillWorker::Create(o);
  if (!worker.ok()) {
    std::cerr << "gka-prefill-worker: " << worker.status() << "\n";
    return 1;
  }
  return wc::ServeUntilSignalled((*worker)->ReadyLine(), flags,
                                 [&](absl::Duration grace) { (*worker)->Shutdown(grace); });
}
