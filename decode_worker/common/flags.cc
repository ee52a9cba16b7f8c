#include "decode_worker/common/flags.h"

#include <CLI/CLI.hpp>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "decode_worker/common/process.h"

namespace gka::worker_common {

void AddWorkerFlags(CLI::App& app, WorkerOptions& o, WorkerFlags& f) {
  app.add_option("--model", o.model.model_dir, "checkpoint directory")->required();
  app.add_option("--router", o.router_address,
                 "host:port of the router's internal port (WorkerRegistry; the router's "
                 "\"internal\" address); comma-separated for several routers, each registered "
                 "with (empty: do not register)");
  app.add_option("--router-service", o.router_service,
                 "host:port whose name resolves to every router (a headless Service): "
                 "register with each address, resolved again every 5 s; comma-separated");
  app.add_option("--host", f.host, "address to listen on")->capture_default_str();
  app.add_option("--port", f.port, "gRPC port (0: pick a free one)")->capture_default_str();
  app.add_option("--metrics-port", f.metrics_port,
                 "Prometheus /metrics port (0: pick a free one, -1: none)")
      ->capture_default_str();
  app.add_option("--health-port", f.health_port,
                 "plaintext grpc.health.v1-only port for probes that cannot speak TLS (the "
                 "kubelet's; 0: pick a free one, -1: none)")
      ->capture_default_str();
  app.add_option("--worker-id", o.worker_id, "worker id (metrics label, registration)")
      ->capture_default_str();
  app.add_option("--backend", o.model.backend, "cpu | cuda (bf16 weights and KV, fp32 GKA state)")
      ->capture_default_str();
  app.add_option("--gpu", o.model.gpu,
                 "CUDA device of rank 0 (rank r: gpu + r), numbered after CUDA_VISIBLE_DEVICES")
      ->capture_default_str();
  app.add_option("--device-transfer", o.device_transfer,
                 "GPU state hand-offs: auto (UCX registers GPU memory if it can, else pinned "
                 "staging) | staged | direct")
      ->capture_default_str();
  app.add_option("--staging-prewarm", o.staging_prewarm,
                 "staged hand-offs: pinned staging of this many max-length sequences per rank, "
                 "allocated at startup and shared by hand-offs of any length (beyond it, "
                 "memory is pinned on the fly, stalling a decode worker's steps)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--tp", o.model.tp_size,
                 "tensor-parallel ranks: one engine and one thread per rank, each holding 1/tp "
                 "of the heads and GKA state (prefill and decode workers may differ)")
      ->capture_default_str();
  app.add_option("--num-slots", o.model.num_slots, "GKA state slots (sequences resident at once)")
      ->capture_default_str();
  app.add_option("--num-pages", o.model.num_pages, "KV pages (0: enough for every slot)")
      ->capture_default_str();
  app.add_option("--page-size", o.model.page_size,
                 "tokens per KV page (prefill and decode workers must agree)")
      ->capture_default_str();
  app.add_option("--max-seq-len", o.model.max_seq_len, "context limit (0: the model's)")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", f.heartbeat_ms, "heartbeat period unless the router sets one")
      ->capture_default_str();
  app.add_option("--ucx-transports", o.ucx_transports,
                 "UCX transports (UCX_TLS syntax; empty: UCX_TLS or UCX's default)");
  app.add_option("--vocab-limit", o.vocab_limit, "sample ids below this (0: whole vocabulary)")
      ->capture_default_str();
  app.add_option("--tls-ca", f.tls.ca,
                 "mutual TLS: CA (PEM) the router's certificate must chain to (and clients')");
  app.add_option("--tls-cert", f.tls.cert, "mutual TLS: this worker's certificate (PEM)");
  app.add_option("--tls-key", f.tls.key, "mutual TLS: the certificate's private key (PEM)");
  app.add_option("--tls-server-name", o.tls_server_name,
                 "the name the router's certificate must carry (default: --router's host)");
  app.add_flag("--insecure", f.insecure,
               "serve gRPC and dial the router in plaintext (no --tls-*): only on a network you "
               "trust");
  app.add_option("--tiers", f.tiers_file, "tier file (JSON): per-tier series exist from start");
  app.add_option("--shutdown-grace-ms", f.shutdown_grace_ms,
                 "time calls in flight get to finish on SIGTERM")
      ->capture_default_str();
}

absl::Status ApplyWorkerFlags(const WorkerFlags& f, WorkerOptions& o) {
  o.grpc_address = absl::StrCat(f.host, ":", f.port);
  o.metrics_address = f.metrics_port < 0 ? "" : absl::StrCat(f.host, ":", f.metrics_port);
  o.health_address = f.health_port < 0 ? "" : absl::StrCat(f.host, ":", f.health_port);
  o.heartbeat_interval = absl::Milliseconds(f.heartbeat_ms);
  GKA_ASSIGN_OR_RETURN(o.tls, rpc::InternalTls(f.tls, f.insecure));
  if (!f.tiers_file.empty()) {
    GKA_ASSIGN_OR_RETURN(o.tiers, ReadTierNames(f.tiers_file));
  }
  return absl::OkStatus();
}

int ServeUntilSignalled(const std::string& ready_line, const WorkerFlags& flags,
                        const std::function<void(absl::Duration)>& shutdown) {
  std::cout << ready_line << std::endl;
  const int signal = WaitForTerminationSignal();
  GKA_LOG(INFO) << "signal " << signal << ": shutting down";
  shutdown(absl::Milliseconds(flags.shutdown_grace_ms));
  return 0;
}

}  // namespace gka::worker_common
