// gka-router: the gkaserve router process.
//
//   gka-router --port 50051 --internal-port 50052 --metrics-port 9400 --http-port 8000 \
//              --tls-ca ca.pem --tls-cert router.pem --tls-key router.key \
//              --model /models/GKA-primed-HQwen3-32B-Instruct
//
// The internal port (workers register there) is mutual TLS; without --tls-* the router refuses
// to start unless --insecure is given. The public port (--port) is plaintext unless
// --public-tls; --api-key / --api-keys-file guard it.
//
// On start it prints one JSON line on stdout, for launchers ("http" is "" without
// --http-port; "internal" is what workers' --router names):
//   {"role":"router","grpc":"127.0.0.1:50051","internal":"127.0.0.1:50052",
//    "metrics":"127.0.0.1:9400","http":"127.0.0.1:8000","pid":1234}
// Logs go to stderr. SIGTERM / SIGINT drain: new requests are refused (UNAVAILABLE,
// retryable), running ones get --drain-grace-ms to finish, then the process exits 0.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "router/http_gateway.h"
#include "router/router.h"

namespace {

// JSON string literal (addresses and ids are plain ASCII, but stay correct regardless).
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrCat("\\u00", c < 0x10 ? "0" : "", absl::Hex(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gka-router: the gkaserve router (public gRPC API, worker registry, metrics)"};
  gka::router::RouterOptions options;
  std::string host = "127.0.0.1";
  int port = 0;
  int internal_port = 0;
  bool insecure = false;
  int metrics_port = 0;
  int64_t heartbeat_timeout_ms = 3000;
  int64_t drain_grace_ms = 30000;
  int64_t lease_ms = 30000;
  int http_port = -1;
  gka::router::HttpGatewayOptions http_options;
  app.add_option("--host", host, "address to listen on (gRPC and metrics)")->capture_default_str();
  app.add_option("--port", port, "gRPC port; 0 picks a free one (printed on stdout)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--internal-port", internal_port,
                 "worker registry port (mutual TLS); 0 picks a free one (printed on stdout)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--metrics-port", metrics_port,
                 "Prometheus /metrics port; 0 picks a free one, -1 disables")
      ->capture_default_str()
      ->check(CLI::Range(-1, 65535));
  app.add_option("--http-port", http_port,
                 "OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
                 "/v1/models, /health) port; 0 picks a free one, -1 disables")
      ->capture_default_str()
      ->check(CLI::Range(-1, 65535));
  app.add_option("--http-threads", http_options.num_threads,
                 "HTTP connections served at once (one thread each)")
      ->capture_default_str();
  app.add_option("--http-max-body-bytes", http_options.max_body_bytes,
                 "larger HTTP request bodies get 413")
      ->capture_default_str();
  app.add_option("--tiers", options.tiers_file,
                 "tier file (JSON); default: interactive 30/30, standard 10/10, batch 5/5");
  app.add_option("--model", options.model_dir,
                 "model directory: served model name, EOS ids, sampling defaults, tokenizer");
  app.add_option("--tokenizer", options.tokenizer_dir,
                 "directory with tokenizer.json (+ tokenizer_config.json); default: --model's");
  app.add_option("--served-model-name", options.served_model_name,
                 "model name clients must use; default: the --model directory's name");
  app.add_option("--default-max-tokens", options.default_max_tokens,
                 "max_tokens for requests that leave it out")
      ->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", heartbeat_timeout_ms,
                 "a worker silent this long is unhealthy (it heartbeats every third of it)")
      ->capture_default_str();
  app.add_option("--api-key", options.api_key,
                 "require 'authorization: Bearer KEY' on public calls (health exempt); "
                 "default: env GKA_API_KEY, else none");
  std::string api_keys_file;
  app.add_option("--api-keys-file", api_keys_file,
                 "accepted API keys, one '<name> sha256:<salt>:<digest>' per line (gka "
                 "hash-api-key); the keys themselves are never stored");
  gka::rpc::TlsFiles tls_files;
  app.add_option("--tls-ca", tls_files.ca,
                 "mutual TLS on the internal port: CA (PEM) workers' certificates must chain to");
  app.add_option("--tls-cert", tls_files.cert, "mutual TLS: this router's certificate (PEM)");
  app.add_option("--tls-key", tls_files.key, "mutual TLS: the certificate's private key (PEM)");
  app.add_option("--tls-server-name", options.tls_server_name,
                 "the name workers' certificates must carry (default: their registered address)");
  app.add_flag("--public-tls", options.public_tls,
               "serve the public port over mutual TLS too (clients present a certificate of "
               "--tls-ca); default: plaintext, guarded by API keys when configured");
  app.add_flag("--insecure", insecure,
               "serve the internal port and dial workers in plaintext (no --tls-*): only on a "
               "network you trust");
  app.add_option("--router-id", options.router_id, "id reported in responses; default: random");
  app.add_option("--max-attempts", options.max_attempts,
                 "placements per request (retries on another worker before the first token)")
      ->capture_default_str();
  app.add_option("--lease-ms", lease_ms, "reservation lease asked of decode workers")
      ->capture_default_str();
  app.add_option("--admission", options.admission,
                 "queue requests per tier when every decode slot is taken, refuse beyond the "
                 "tier's queue_limit with RESOURCE_EXHAUSTED + retry-after (false: place at once)")
      ->capture_default_str();
  app.add_option("--rate-limit", options.rate_limits,
                 "per-API-key limit NAME=REQUESTS_PER_SECOND[:BURST] (repeatable; NAME '*': every "
                 "key without its own, each in its own bucket; callers without a key count as "
                 "the key ''); over it: RESOURCE_EXHAUSTED + retry-after");
  app.add_option("--key-tiers", options.key_tiers,
                 "per-API-key tier limit NAME=TIER[|TIER...] (repeatable; NAME '*': every key "
                 "without its own; callers without a key are the key ''): the key's requests run "
                 "in its first tier unless they name another it may use; any other tier: "
                 "PERMISSION_DENIED / HTTP 403");
  app.add_option("--max-running", options.max_running,
                 "requests placed at once; 0 = the healthy decode workers' state slots")
      ->capture_default_str();
  app.add_option("--drain-grace-ms", drain_grace_ms,
                 "on SIGTERM, how long running requests may take to finish")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (options.api_key.empty()) {
    if (const char* key = std::getenv("GKA_API_KEY")) options.api_key = key;
  }
  if (!api_keys_file.empty()) {
    absl::StatusOr<gka::rpc::ApiKeys> keys = gka::rpc::ApiKeys::ReadFile(api_keys_file);
    if (!keys.ok()) {
      std::cerr << "gka-router: " << keys.status() << std::endl;
      return 2;
    }
    options.api_keys = *std::move(keys);
  }
  absl::StatusOr<gka::rpc::TlsConfig> tls = gka::rpc::InternalTls(tls_files, insecure);
  if (!tls.ok()) {
    std::cerr << "gka-router: " << tls.status().message() << std::endl;
    return 2;
  }
  options.tls = *std::move(tls);
  if (options.public_tls && !options.tls.enabled()) {
    std::cerr << "gka-router: --public-tls needs --tls-ca, --tls-cert and --tls-key" << std::endl;
    return 2;
  }
  options.address = absl::StrCat(host, ":", port);
  options.internal_address = absl::StrCat(host, ":", internal_port);
  options.metrics_address = metrics_port < 0 ? "" : absl::StrCat(host, ":", metrics_port);
  options.heartbeat_timeout = absl::Milliseconds(heartbeat_timeout_ms);
  options.lease = absl::Milliseconds(lease_ms);

  // Signals are taken by sigwait below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<gka::router::Router>> router =
      gka::router::Router::Create(options);
  if (!router.ok()) {
    std::cerr << "gka-router: " << router.status() << std::endl;
    return 1;
  }
  // Beside the gRPC API, over the same core and with the same API key.
  std::unique_ptr<gka::router::HttpGateway> http;
  if (http_port >= 0) {
    http_options.address = absl::StrCat(host, ":", http_port);
    http_options.api_key = options.api_key;
    http_options.api_keys = options.api_keys;
    absl::StatusOr<std::unique_ptr<gka::router::HttpGateway>> gateway =
        gka::router::HttpGateway::Create(http_options, (*router)->core());
    if (!gateway.ok()) {
      std::cerr << "gka-router: " << gateway.status() << std::endl;
      return 1;
    }
    http = std::move(*gateway);
  }
  std::cout << "{\"role\":\"router\",\"grpc\":" << JsonString((*router)->address())
            << ",\"internal\":" << JsonString((*router)->internal_address())
            << ",\"metrics\":" << JsonString((*router)->metrics_address())
            << ",\"http\":" << JsonString(http != nullptr ? http->address() : "")
            << ",\"pid\":" << getpid() << "}" << std::endl;

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  GKA_LOG(INFO) << "signal " << signal_number << ": draining";
  // HTTP requests run in the core like gRPC ones, so the router's drain waits for both; the
  // gateway goes before the core it uses.
  if (http != nullptr) http->StopAccepting();
  (*router)->Drain(absl::Milliseconds(drain_grace_ms));
  http.reset();
  router->reset();
  GKA_LOG(INFO) << "router stopped";
  return 0;
}
