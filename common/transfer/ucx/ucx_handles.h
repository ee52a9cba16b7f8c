// RAII owners of UCP handles and UCX status conversion. Internal to gka_transfer_ucx: this
// header includes UCX and must not be included from public headers.
//
// Owns: ucp_config, ucp_context, ucp_worker, ucp_mem (memory registration), ucp_rkey, and the
// packed buffers UCX hands out. Endpoints are not here: closing one is asynchronous (it needs
// worker progress), so the engine drives their lifetime.
//
// Thread-safety: none; the engine's progress thread is the only user.
#pragma once

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::transfer::ucx {

// UCX status -> absl::Status: "what: <UCX's text>". Peer/transport failures become
// UNAVAILABLE, so a caller can tell them from its own mistakes (INVALID_ARGUMENT).
absl::Status UcsError(ucs_status_t status, absl::string_view what);

struct ConfigDeleter {
  void operator()(ucp_config_t* c) const { ucp_config_release(c); }
};
struct ContextDeleter {
  void operator()(ucp_context* c) const { ucp_cleanup(c); }
};
struct WorkerDeleter {
  void operator()(ucp_worker* w) const { ucp_worker_destroy(w); }
};
struct RkeyDeleter {
  void operator()(ucp_rkey* k) const { ucp_rkey_destroy(k); }
};

using UcpConfig = std::unique_ptr<ucp_config_t, ConfigDeleter>;
using UcpContext = std::unique_ptr<ucp_context, ContextDeleter>;
using UcpWorker = std::unique_ptr<ucp_worker, WorkerDeleter>;
using UcpRkey = std::unique_ptr<ucp_rkey, RkeyDeleter>;

// A ucp_mem_map registration; unmaps on destruction (needs its context alive).
class UcpMemHandle {
 public:
  UcpMemHandle() = default;
  UcpMemHandle(ucp_context_h context, ucp_mem_h memh) : context_(context), memh_(memh) {}
  UcpMemHandle(UcpMemHandle&& other) noexcept { *this = std::move(other); }
  UcpMemHandle& operator=(UcpMemHandle&& other) noexcept;
  ~UcpMemHandle() { Reset(); }
  ucp_mem_h get() const { return memh_; }
  void Reset();

 private:
  ucp_context_h context_ = nullptr;
  ucp_mem_h memh_ = nullptr;
};

// Reads UCX's configuration (environment) and applies `transports` (UCX_TLS syntax) if set.
absl::StatusOr<UcpConfig> ReadConfig(absl::string_view transports);

// The worker's address as bytes (what peers pass to ucp_ep_create).
absl::StatusOr<std::string> WorkerAddressBytes(ucp_worker_h worker);

// ucp_rkey_pack of a registration, as bytes.
absl::StatusOr<std::string> PackRkey(ucp_context_h context, ucp_mem_h memh);

// ucp_ep_rkey_unpack; INVALID_ARGUMENT for an empty or unreadable key.
absl::StatusOr<UcpRkey> UnpackRkey(ucp_ep_h ep, absl::string_view packed);

}  // namespace gka::transfer::ucx
