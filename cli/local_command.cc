// gka local: the whole cluster as separate processes on 127.0.0.1.
//
//   gka local --model DIR [--port 50051] [--metrics-port 9400] [--prefill-workers 1]
//             [--decode-workers 1] [--tiers FILE] [--state-file F] [--log-dir D]
//             [--backend cpu] [--num-slots 16] [--page-size 16] [--restart]
//             [--http-port 8000] [--served-model-name NAME] [--prefill-tp 1] [--decode-tp 1]
//             [--router-args "..."] [--prefill-args "..."] [--decode-args "..."]
//             [--prefill-gpus 0,1] [--decode-gpus 2,3] [--tls-dir D | --insecure]
//             [--internal-port 0]
//   gka local --model DIR --colocated [--decode-workers N] [--decode-tp D] [--decode-gpus ...]
//             [--max-batch-tokens 512] [--prefill-chunk-size 256]
//
// Starts the router (gRPC on --port, metrics on --metrics-port), then the prefill workers
// (metrics on MP+1, MP+2, ...) and the decode workers (numbered after the prefill ones), all
// workers loading at once; worker gRPC and UCX ports are ephemeral. With --colocated there are no
// prefill workers: each decode worker runs with --colocated (prefills its prompts itself, chunked
// into its decode batch), the baseline disaggregation is measured against. Prints one JSON line per
// process ({"role", "index", "pid", "grpc", "metrics"}) and writes them to --state-file. The
// children share one process group and get SIGKILL if this process dies (PR_SET_PDEATHSIG);
// SIGINT/SIGTERM stop them all.
//
// Router <-> workers is mutual TLS without the user doing anything: a throwaway CA and one
// certificate per process (plus "client", for tools and processes started beside the cluster)
// are made in --tls-dir (default: <log-dir>/tls, else a temporary directory removed at exit)
// and passed to every child; the CA's key is never written. --insecure keeps every internal
// port plaintext. The router's public port stays plaintext on 127.0.0.1 (clients need no
// certificate; API keys only if --router-args configures them).
//
// UCX's network transports are confined to loopback (UCX_NET_DEVICES=lo, unless the
// environment sets UCX_NET_DEVICES): the hand-offs between these processes must not depend on
// the host's other interfaces, which come and go.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/model/config.h"
#include "common/rpc/pki.h"
#include "common/text/tokenizer.h"

namespace gka::cli {
namespace {

struct LocalFlags {
  std::string model_dir;
  int port = 50051;
  int metrics_port = 9400;
  int prefill_workers = 1;
  int decode_workers = 1;
  // Colocated serving: no prefill workers; decode workers prefill prompts themselves under
  // a token budget (0: the worker's defaults).
  bool colocated = false;
  int max_batch_tokens = 0;
  int prefill_chunk_size = 0;
  std::string tiers;
  std::string state_file;
  std::string log_dir;
  std::string backend = "cpu";
  int num_slots = 16;
  int page_size = 16;
  int ready_timeout_s = 120;
  bool restart = false;  // restart a child that exits instead of stopping the cluster
  int http_port = -1;    // the router's OpenAI-compatible HTTP port; -1: off
  std::string served_model_name;
  // Tensor-parallel ranks of every prefill / decode worker (--tp); they may differ: the
  // hand-off maps prefill ranks onto decode ranks by head.
  int prefill_tp = 1;
  int decode_tp = 1;
  // --backend cuda: GPU ids (CUDA_VISIBLE_DEVICES style) for the workers of a role, `tp` per
  // worker in launch order. Empty: every GPU is visible to every worker and worker i of the
  // role starts at --gpu (prefill first, then decode), so the default never shares a GPU.
  std::string prefill_gpus;
  std::string decode_gpus;
  // Extra flags for every process of a role, split at spaces (tests: short leases and
  // heartbeats, fault-injection hooks, drain grace).
  std::string router_args;
  std::string prefill_args;
  std::string decode_args;
  // Internal ports in plaintext (every child gets --insecure) instead of a throwaway CA.
  bool insecure = false;
  std::string tls_dir;
  int internal_port = 0;  // the router's worker registry port (0: any; pinned for restarts)
};

// The TLS flags of process `name` ("--tls-ca ... --tls-cert ... --tls-key ..."), or
// "--insecure". Empty when the role's extra flags bring their own.
std::string TlsArgs(const LocalFlags& f, const rpc::Pki& pki, const std::string& name,
                    const std::string& extra) {
  for (absl::string_view own : {"--tls-ca", "--tls-cert", "--tls-key", "--insecure"}) {
    if (absl::StrContains(extra, own)) return "";
  }
  if (f.insecure) return "--insecure";
  const rpc::TlsFiles files = pki.Files(name);
  return absl::StrCat("--tls-ca ", files.ca, " --tls-cert ", files.cert, " --tls-key ", files.key);
}

std::vector<std::string> WithArgs(std::vector<std::string> argv, const std::string& extra) {
  for (absl::string_view a : absl::StrSplit(extra, ' ', absl::SkipEmpty())) argv.emplace_back(a);
  return argv;
}

struct Child {
  std::string role;
  int index = 0;
  std::vector<std::string> argv;  // to restart it
  pid_t pid = -1;
  int stdout_fd = -1;
  nlohmann::json info;
};

std::atomic<int> g_stop_signal{0};
void OnSignal(int sig) { g_stop_signal.store(sig); }

std::string BinDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string exe(buf, n);
  return exe.substr(0, exe.rfind('/'));
}

// Forks and execs `argv` into process group `pgid` (0: start a new group). The child's stdout
// is a pipe we read; it dies with us. Its stderr goes to <log_dir>/<role>-<index>.log, which a
// restart (`restarted`) appends to: the log of the life that died is what explains a fault.
absl::StatusOr<Child> Spawn(const std::string& role, int index,
                            const std::vector<std::string>& argv, pid_t pgid,
                            const std::string& log_dir, bool restarted) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork failed: ", strerror(errno)));
  if (pid == 0) {
    setpgid(0, pgid);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
    dup2(fds[1], STDOUT_FILENO);
    if (!log_dir.empty()) {
      const std::string log = absl::StrCat(log_dir, "/", role, "-", index, ".log");
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | (restarted ? O_APPEND : O_TRUNC), 0644);
      if (fd >= 0) dup2(fd, STDERR_FILENO);
    }
    std::vector<std::string> copy = argv;
    std::vector<char*> args;
    for (std::string& a : copy) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "gka local: cannot exec %s: %s\n", args[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pgid == 0 ? pid : pgid);  // also from the parent: no race with the child
  close(fds[1]);
  return Child{.role = role, .index = index, .argv = argv, .pid = pid, .stdout_fd = fds[0]};
}

// Reads the child's first stdout line (its JSON "serving" line) with a deadline.
absl::Status AwaitReady(Child& child, int timeout_s) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  char c;
  while (std::chrono::steady_clock::now() < deadline) {
    fd_set set;
    FD_ZERO(&set);
    FD_SET(child.stdout_fd, &set);
    timeval tv{0, 200000};
    const int r = select(child.stdout_fd + 1, &set, nullptr, nullptr, &tv);
    if (r < 0 && errno != EINTR) break;
    if (g_stop_signal.load()) return absl::CancelledError("interrupted");
    if (r <= 0) continue;
    const ssize_t n = read(child.stdout_fd, &c, 1);
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat(child.role, "-", child.index, " exited before it was ready (see its log)"));
    }
    if (c != '\n') {
      line.push_back(c);
      continue;
    }
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("grpc")) {
      line.clear();  // a stray line; keep waiting for the JSON one
      continue;
    }
    child.info = std::move(j);
    return absl::OkStatus();
  }
  return absl::DeadlineExceededError(
      absl::StrCat(child.role, "-", child.index, " not ready within ", timeout_s, " s"));
}

void StopAll(std::vector<Child>& children, pid_t pgid) {
  if (pgid > 0) kill(-pgid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (Child& c : children) {
    while (true) {
      const pid_t r = waitpid(c.pid, nullptr, WNOHANG);
      if (r == c.pid || r < 0) break;
      if (std::chrono::steady_clock::now() > deadline) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (c.stdout_fd >= 0) close(c.stdout_fd);
  }
}

// How worker `index` of a role with `tp` ranks gets its GPUs: with a list, `env
// CUDA_VISIBLE_DEVICES=<its tp ids>` in front of the command (the worker then uses its devices
// 0..tp-1; a restart reuses the same argv, so the same GPUs); without one, `--gpu first` where
// `first` counts the GPUs of the workers started before it. Nothing for the CPU backend.
struct GpuPlacement {
  std::vector<std::string> prefix;  // before the binary
  std::vector<std::string> args;    // after the worker's own flags
};
absl::StatusOr<GpuPlacement> PlaceGpus(const LocalFlags& f, absl::string_view role, int index,
                                       int tp, const std::string& list, int first) {
  GpuPlacement p;
  if (f.backend != "cuda") return p;
  if (list.empty()) {
    p.args = {"--gpu", absl::StrCat(first + index * tp)};
    return p;
  }
  std::vector<std::string> ids = absl::StrSplit(list, ',', absl::SkipEmpty());
  if (static_cast<int>(ids.size()) < (index + 1) * tp) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", role, "-gpus '", list, "' lists ", ids.size(), " GPUs; ", role, " worker ", index,
        " at TP=", tp, " needs ids ", index * tp, "..", (index + 1) * tp - 1));
  }
  std::vector<std::string> mine(ids.begin() + index * tp, ids.begin() + (index + 1) * tp);
  p.prefix = {"/usr/bin/env", absl::StrCat("CUDA_VISIBLE_DEVICES=", absl::StrJoin(mine, ","))};
  return p;
}

std::vector<std::string> Placed(const GpuPlacement& p, std::vector<std::string> argv) {
  argv.insert(argv.begin(), p.prefix.begin(), p.prefix.end());
  argv.insert(argv.end(), p.args.begin(), p.args.end());
  return argv;
}

absl::Status RunLocal(const LocalFlags& f) {
  if (f.decode_workers < 1 || (!f.colocated && f.prefill_workers < 1)) {
    return absl::InvalidArgumentError(f.colocated
                                          ? "need at least one (colocated) decode worker"
                                          : "need at least one prefill and one decode worker");
  }
  if (f.max_batch_tokens < 0 || f.prefill_chunk_size < 0) {
    return absl::InvalidArgumentError("--max-batch-tokens and --prefill-chunk-size must be >= 0");
  }
  if (f.prefill_tp < 1 || f.decode_tp < 1) {
    return absl::InvalidArgumentError("--prefill-tp and --decode-tp must be >= 1");
  }
  if (!std::ifstream(f.model_dir + "/config.json").good()) {
    return absl::NotFoundError(absl::StrCat(f.model_dir, "/config.json not found"));
  }
  // The throwaway PKI, before any child starts. Paths are split at spaces (WithArgs).
  rpc::Pki pki;
  std::string temp_dir;  // removed at exit
  if (!f.insecure) {
    std::string dir = f.tls_dir;
    if (dir.empty() && !f.log_dir.empty()) dir = f.log_dir + "/tls";
    if (dir.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      std::string tmpl =
          absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/gka-local-XXXXXX");
      if (mkdtemp(tmpl.data()) == nullptr) {
        return absl::InternalError(absl::StrCat("mkdtemp ", tmpl, ": ", strerror(errno)));
      }
      temp_dir = tmpl;
      dir = temp_dir + "/tls";
    }
    if (absl::StrContains(dir, ' ')) {
      return absl::InvalidArgumentError(absl::StrCat("--tls-dir '", dir, "' contains a space"));
    }
    std::vector<std::string> names = {"router", "client"};
    for (int i = 0; i < f.prefill_workers; ++i) names.push_back(absl::StrCat("prefill-", i));
    for (int i = 0; i < f.decode_workers; ++i) names.push_back(absl::StrCat("decode-", i));
#if GKA_WITH_GRPC
    absl::StatusOr<rpc::Pki> made = rpc::WriteThrowawayPki({.dir = dir, .names = names});
#else
    absl::StatusOr<rpc::Pki> made = absl::UnimplementedError("this build has no gRPC servers");
#endif
    if (!made.ok()) {
      if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir);
      return made.status();
    }
    pki = *std::move(made);
    const rpc::TlsFiles client = pki.Files("client");
    GKA_LOG(INFO) << "mutual TLS between router and workers: a throwaway CA and certificates in "
                  << pki.dir << " (a worker or tool beside the cluster: --tls-ca " << client.ca
                  << " --tls-cert " << client.cert << " --tls-key " << client.key
                  << "); --insecure turns it off";
  }
  absl::Cleanup remove_temp = [&temp_dir] {
    if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir);
  };
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  // UCX's network transports on loopback only (the children inherit it), as every process of
  // this cluster is on this host. Otherwise each worker advertises every interface up when it
  // starts, and UCX 1.13 runs all traffic between two workers over the one it scores best —
  // by link speed, so a 10 Gb/s veth of a container or test namespace outranks a VM's eth0 of
  // unknown speed — and when that interface goes down or away, every connection to the
  // worker fails ("Destination is unreachable", or a BEGIN never answered). An explicit
  // UCX_NET_DEVICES wins (the chaos test's namespace worker needs the host's uplink).
  // Shared-memory and GPU transports are not network devices: unaffected.
  setenv("UCX_NET_DEVICES", "lo", /*overwrite=*/0);
  const std::string bin = BinDir();
  std::vector<Child> children;
  pid_t pgid = 0;
  // Starts (or, with `slot` >= 0, restarts in place) one child and waits for its JSON line.
  // A child in two halves, so that workers load their models side by side (a 32B model takes
  // most of a minute per worker): spawn returns its slot in `children`, await_ready waits
  // for its JSON line and prints it.
  auto spawn = [&](const std::string& role, int index, std::vector<std::string> argv,
                   int slot = -1) -> absl::StatusOr<int> {
    GKA_ASSIGN_OR_RETURN(Child c, Spawn(role, index, argv, pgid, f.log_dir, slot >= 0));
    if (pgid == 0) pgid = c.pid;
    if (slot < 0) {
      children.push_back(std::move(c));
      return static_cast<int>(children.size()) - 1;
    }
    if (children[slot].stdout_fd >= 0) close(children[slot].stdout_fd);
    children[slot] = std::move(c);
    return slot;
  };
  auto await_ready = [&](int slot) -> absl::Status {
    Child& child = children[slot];
    GKA_RETURN_IF_ERROR(AwaitReady(child, f.ready_timeout_s));
    nlohmann::json line = child.info;
    line["role"] = child.role;
    line["index"] = child.index;
    line["pid"] = child.pid;
    // Where the certificates are, for tools and workers started beside the cluster.
    if (child.role == "router" && !pki.dir.empty()) line["tls_dir"] = pki.dir;
    std::cout << line.dump() << std::endl;
    child.info = line;
    return absl::OkStatus();
  };
  auto start = [&](const std::string& role, int index, std::vector<std::string> argv,
                   int slot = -1) -> absl::Status {
    GKA_ASSIGN_OR_RETURN(slot, spawn(role, index, std::move(argv), slot));
    return await_ready(slot);
  };
  auto write_state = [&] {
    if (f.state_file.empty()) return;
    const std::string tmp = f.state_file + ".tmp";
    {
      std::ofstream out(tmp);
      for (const Child& c : children) out << c.info.dump() << "\n";
    }
    std::rename(tmp.c_str(), f.state_file.c_str());
  };

  std::vector<std::string> router = {
      bin + "/gka-router",          "--port",  absl::StrCat(f.port), "--metrics-port",
      absl::StrCat(f.metrics_port), "--model", f.model_dir};
  // The registry port, pinned once bound (below): a restarted router is found where it was.
  const size_t internal_port_arg = router.size() + 1;
  router.push_back("--internal-port");
  router.push_back(absl::StrCat(f.internal_port));
  if (!f.tiers.empty()) {
    router.push_back("--tiers");
    router.push_back(f.tiers);
  }
  if (f.http_port >= 0) {
    router.push_back("--http-port");
    router.push_back(absl::StrCat(f.http_port));
  }
  if (!f.served_model_name.empty()) {
    router.push_back("--served-model-name");
    router.push_back(f.served_model_name);
  }
  // Workers sample inside the tokenizer's vocabulary, as `gka generate` does: the embedding's
  // padding rows map to no text (and would shift every logprob).
  std::string vocab_limit;  // "--vocab-limit N", or empty without a tokenizer
  if (std::ifstream(f.model_dir + "/tokenizer.json").good()) {
    absl::StatusOr<std::unique_ptr<text::Tokenizer>> tokenizer =
        text::Tokenizer::FromFile(f.model_dir);
    absl::StatusOr<model::ModelConfig> config =
        model::ModelConfig::FromJsonFile(f.model_dir + "/config.json");
    if (!tokenizer.ok()) return tokenizer.status();
    if (!config.ok()) return config.status();
    const int64_t limit = std::min<int64_t>((*tokenizer)->VocabSize(), config->vocab_size);
    vocab_limit = absl::StrCat("--vocab-limit ", limit);
  }
  // The extra worker flags, after the vocabulary limit unless they set their own.
  auto WithVocabLimit = [&](const std::string& extra) {
    if (vocab_limit.empty() || absl::StrContains(extra, "--vocab-limit")) return extra;
    return absl::StrCat(vocab_limit, " ", extra);
  };
  absl::Status status =
      start("router", 0,
            WithArgs(WithArgs(router, TlsArgs(f, pki, "router", f.router_args)), f.router_args));
  std::string router_addr;    // the public port
  std::string registry_addr;  // the internal port: workers' --router
  if (status.ok()) {
    Child& r = children[0];
    router_addr = r.info["grpc"].get<std::string>();
    registry_addr = r.info.value("internal", "");
    if (const size_t colon = registry_addr.rfind(':'); colon != std::string::npos) {
      r.argv[internal_port_arg] = registry_addr.substr(colon + 1);
      // A wildcard listen address (--router-args "--host 0.0.0.0") is no address to dial, nor
      // one a certificate names: the workers dial loopback.
      const std::string host = registry_addr.substr(0, colon);
      if (host == "0.0.0.0" || host == "[::]") {
        registry_addr = absl::StrCat("127.0.0.1", registry_addr.substr(colon));
      }
    }
  }
  // Workers' metrics ports follow the router's; with --metrics-port 0 every port is ephemeral.
  int metrics = f.metrics_port;
  auto NextMetricsPort = [&] { return absl::StrCat(f.metrics_port == 0 ? 0 : ++metrics); };
  // Worker `i` of a role: its GPUs placed, the flags every worker gets, the role's own flags,
  // then the role's extra flags.
  auto start_worker = [&](const std::string& role, int i, int tp, const std::string& gpus,
                          int first_gpu, const std::string& own,
                          const std::string& extra) -> absl::StatusOr<int> {
    GKA_ASSIGN_OR_RETURN(GpuPlacement placement, PlaceGpus(f, role, i, tp, gpus, first_gpu));
    const std::string binary = absl::StrCat(bin, "/gka-", role, "-worker");
    return spawn(
        role, i,
        WithArgs(
            Placed(placement,
                   WithArgs(
                       {binary, "--model", f.model_dir, "--router", registry_addr, "--port", "0",
                        "--metrics-port", NextMetricsPort(), "--backend", f.backend, "--worker-id",
                        absl::StrCat(role, "-", i), "--page-size", absl::StrCat(f.page_size),
                        "--tp", absl::StrCat(tp)},
                       absl::StrCat(own, " ", TlsArgs(f, pki, absl::StrCat(role, "-", i), extra)))),
            WithVocabLimit(extra)));
  };
  const int prefill_workers = f.colocated ? 0 : f.prefill_workers;
  // Every worker is spawned before any is awaited; their lines print in launch order.
  std::vector<int> worker_slots;
  auto add_worker = [&](absl::StatusOr<int> slot) {
    if (slot.ok()) {
      worker_slots.push_back(*slot);
    } else {
      status = slot.status();
    }
  };
  for (int i = 0; status.ok() && i < prefill_workers; ++i) {
    add_worker(start_worker("prefill", i, f.prefill_tp, f.prefill_gpus, 0, "", f.prefill_args));
  }
  std::string decode_own = absl::StrCat("--num-slots ", f.num_slots);
  if (f.colocated) absl::StrAppend(&decode_own, " --colocated");
  if (f.max_batch_tokens > 0)
    absl::StrAppend(&decode_own, " --max-batch-tokens ", f.max_batch_tokens);
  if (f.prefill_chunk_size > 0) {
    absl::StrAppend(&decode_own, " --prefill-chunk-size ", f.prefill_chunk_size);
  }
  for (int i = 0; status.ok() && i < f.decode_workers; ++i) {
    add_worker(start_worker("decode", i, f.decode_tp, f.decode_gpus, prefill_workers * f.prefill_tp,
                            decode_own, f.decode_args));
  }
  for (size_t k = 0; status.ok() && k < worker_slots.size(); ++k) {
    status = await_ready(worker_slots[k]);
  }
  if (status.ok()) write_state();
  if (status.ok()) {
    GKA_LOG(INFO) << "cluster up: router " << router_addr << "; Ctrl-C stops it";
    // Serve until a signal or until any child exits (then everything stops: no half cluster).
    while (!g_stop_signal.load()) {
      int wstatus;
      const pid_t gone = waitpid(-pgid, &wstatus, WNOHANG);
      if (gone > 0) {
        for (size_t i = 0; i < children.size(); ++i) {
          Child& c = children[i];
          if (c.pid != gone) continue;
          c.pid = -1;
          if (f.restart) {
            GKA_LOG(WARNING) << c.role << "-" << c.index << " (pid " << gone
                             << ") exited; restarting it";
            status = start(c.role, c.index, c.argv, static_cast<int>(i));
            if (status.ok()) write_state();
          } else {
            status = absl::AbortedError(absl::StrCat(c.role, "-", c.index, " (pid ", gone,
                                                     ") exited; stopping the cluster"));
          }
        }
        if (!status.ok()) break;
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  std::vector<Child> alive;
  for (Child& c : children) {
    if (c.pid > 0) alive.push_back(c);
  }
  StopAll(alive, pgid);
  if (!f.state_file.empty()) std::remove(f.state_file.c_str());
  if (g_stop_signal.load() && (status.ok() || absl::IsCancelled(status))) return absl::OkStatus();
  return status;
}

}  // namespace

void RegisterLocal(CLI::App& app, Action& run) {
  auto f = std::make_shared<LocalFlags>();
  CLI::App* cmd = app.add_subcommand("local", "Run router + workers as processes on 127.0.0.1");
  cmd->add_option("--model", f->model_dir, "checkpoint directory")->required();
  cmd->add_option("--port", f->port, "router gRPC port (0 = any)")->capture_default_str();
  cmd->add_option("--metrics-port", f->metrics_port, "router metrics port; workers use the next")
      ->capture_default_str();
  cmd->add_option("--prefill-workers", f->prefill_workers, "prefill processes")
      ->capture_default_str();
  cmd->add_option("--decode-workers", f->decode_workers, "decode processes")->capture_default_str();
  cmd->add_flag("--colocated", f->colocated,
                "no prefill workers: every decode worker prefills its prompts itself (chunked "
                "prefill mixed with its decode batch), the baseline for disaggregation");
  cmd->add_option("--max-batch-tokens", f->max_batch_tokens,
                  "decode workers' tokens per step (0: their default)")
      ->capture_default_str();
  cmd->add_option("--prefill-chunk-size", f->prefill_chunk_size,
                  "colocated: most prompt tokens of one sequence per step (0: --max-batch-tokens)")
      ->capture_default_str();
  cmd->add_option("--tiers", f->tiers, "tier file (JSON)");
  cmd->add_option("--http-port", f->http_port,
                  "router's OpenAI-compatible HTTP port (0 = any, -1 = off)")
      ->capture_default_str();
  cmd->add_option("--served-model-name", f->served_model_name,
                  "model name clients use; default: the --model directory's name");
  cmd->add_option("--state-file", f->state_file, "write the processes' JSON lines here");
  cmd->add_option("--log-dir", f->log_dir, "children's stderr to DIR/<role>-<i>.log");
  cmd->add_option("--backend", f->backend, "cpu | cuda")->capture_default_str();
  cmd->add_option("--prefill-gpus", f->prefill_gpus,
                  "cuda: GPU ids for the prefill workers, --prefill-tp each, e.g. 0,1 (empty: "
                  "consecutive GPUs from 0)");
  cmd->add_option("--decode-gpus", f->decode_gpus,
                  "cuda: GPU ids for the decode workers, --decode-tp each, e.g. 2,3 (empty: the "
                  "GPUs after the prefill workers')");
  cmd->add_option("--num-slots", f->num_slots, "decode worker state slots")->capture_default_str();
  cmd->add_option("--page-size", f->page_size, "KV page size")->capture_default_str();
  cmd->add_option("--prefill-tp", f->prefill_tp, "tensor-parallel ranks per prefill worker")
      ->capture_default_str();
  cmd->add_option("--decode-tp", f->decode_tp,
                  "tensor-parallel ranks per decode worker (may differ from --prefill-tp)")
      ->capture_default_str();
  cmd->add_option("--ready-timeout", f->ready_timeout_s, "seconds to wait for each process")
      ->capture_default_str();
  cmd->add_option("--router-args", f->router_args, "extra gka-router flags (space-separated)");
  cmd->add_option("--prefill-args", f->prefill_args, "extra gka-prefill-worker flags");
  cmd->add_option("--decode-args", f->decode_args, "extra gka-decode-worker flags");
  cmd->add_flag("--insecure", f->insecure,
                "plaintext between router and workers (default: mutual TLS with a throwaway CA)");
  cmd->add_option("--tls-dir", f->tls_dir,
                  "where the throwaway CA's certificate and every process's certificate and key "
                  "go (default: <log-dir>/tls, else a temporary directory removed at exit)");
  cmd->add_option("--internal-port", f->internal_port,
                  "the router's worker registry port (0 = any)")
      ->capture_default_str();
  cmd->add_flag("--restart", f->restart,
                "restart a process that exits (default: stop the whole cluster); a restarted "
                "router keeps its address only with a fixed --port");
  cmd->callback([f, &run] { run = [f] { return RunLocal(*f); }; });
}

}  // namespace gka::cli
