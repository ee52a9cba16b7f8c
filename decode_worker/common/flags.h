// Command-line flags both worker binaries share, and their serve-until-signalled main loop.
//
// Owns nothing.
//
//   CLI::App app{"gka-decode-worker"};
//   WorkerOptions options;
//   WorkerFlags flags;
//   AddWorkerFlags(app, options, flags);
//   ... app.add_option(...) for the worker's own flags; CLI11_PARSE(app, argc, argv);
//   GKA_RETURN_IF_ERROR(ApplyWorkerFlags(flags, options));
//
// Thread-safety: call from main.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "common/rpc/tls.h"
#include "decode_worker/common/runtime.h"

namespace CLI {
class App;
}  // namespace CLI

namespace gka::worker_common {

struct WorkerFlags {
  std::string host = "127.0.0.1";
  int port = 0;
  int metrics_port = 0;  // -1: no exposer
  int health_port = -1;  // -1: none
  int heartbeat_ms = 1000;
  int shutdown_grace_ms = 5000;
  std::string tiers_file;
  // Mutual TLS on the worker's gRPC port and its channel to the router (all three), or
  // `insecure` for plaintext; ApplyWorkerFlags refuses neither (rpc::InternalTls).
  rpc::TlsFiles tls;
  bool insecure = false;
};

// --model --router --router-service --host --port --metrics-port --worker-id --backend --tp
// --num-slots
// --num-pages --page-size --max-seq-len --heartbeat-ms --ucx-transports --vocab-limit
// --tiers --shutdown-grace-ms.
void AddWorkerFlags(CLI::App& app, WorkerOptions& options, WorkerFlags& flags);

// Turns the parsed flags into addresses, durations and tier names. INVALID_ARGUMENT for an
// unreadable tier file, and for neither TLS files nor --insecure (or both).
absl::Status ApplyWorkerFlags(const WorkerFlags& flags, WorkerOptions& options);

// Prints `ready_line` on stdout, waits for SIGINT/SIGTERM (BlockTerminationSignals must have
// run first), then calls `shutdown` with the grace. Returns main's exit code.
int ServeUntilSignalled(const std::string& ready_line, const WorkerFlags& flags,
                        const std::function<void(absl::Duration)>& shutdown);

}  // namespace gka::worker_common
