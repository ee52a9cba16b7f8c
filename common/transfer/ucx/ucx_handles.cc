#include "common/transfer/ucx/ucx_handles.h"

#include "absl/strings/str_cat.h"

namespace gka::transfer::ucx {

absl::Status UcsError(ucs_status_t status, absl::string_view what) {
  if (status == UCS_OK) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", ucs_status_string(status));
  switch (status) {
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return absl::InvalidArgumentError(message);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(message);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(message);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(message);
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
      return absl::UnimplementedError(message);
    default:
      // Unreachable peers, connection resets, endpoint timeouts, I/O errors, missing
      // devices: the other side or the transport is gone.
      return absl::UnavailableError(message);
  }
}

UcpMemHandle& UcpMemHandle::operator=(UcpMemHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    context_ = other.context_;
    memh_ = other.memh_;
    other.context_ = nullptr;
    other.memh_ = nullptr;
  }
  return *this;
}

void UcpMemHandle::Reset() {
  if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
  memh_ = nullptr;
  context_ = nullptr;
}

absl::StatusOr<UcpConfig> ReadConfig(absl::string_view transports) {
  ucp_config_t* raw = nullptr;
  ucs_status_t status = ucp_config_read(nullptr, nullptr, &raw);
  if (status != UCS_OK) return UcsError(status, "reading UCX configuration (UCX_* variables)");
  UcpConfig config(raw);
  if (!transports.empty()) {
    status = ucp_config_modify(config.get(), "TLS", std::string(transports).c_str());
    if (status != UCS_OK) {
      return UcsError(status, absl::StrCat("setting UCX transports to '", transports, "'"));
    }
  }
  return config;
}

absl::StatusOr<std::string> WorkerAddressBytes(ucp_worker_h worker) {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  const ucs_status_t status = ucp_worker_get_address(worker, &address, &length);
  if (status != UCS_OK) return UcsError(status, "querying the UCX worker address");
  std::string bytes(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(worker, address);
  return bytes;
}

absl::StatusOr<std::string> PackRkey(ucp_context_h context, ucp_mem_h memh) {
  void* buffer = nullptr;
  size_t size = 0;
  const ucs_status_t status = ucp_rkey_pack(context, memh, &buffer, &size);
  if (status != UCS_OK) return UcsError(status, "packing a remote key");
  std::string bytes(static_cast<const char*>(buffer), size);
  ucp_rkey_buffer_release(buffer);
  return bytes;
}

absl::StatusOr<UcpRkey> UnpackRkey(ucp_ep_h ep, absl::string_view packed) {
  if (packed.empty()) return absl::InvalidArgumentError("empty remote key");
  ucp_rkey_h rkey = nullptr;
  const ucs_status_t status = ucp_ep_rkey_unpack(ep, packed.data(), &rkey);
  if (status != UCS_OK) {
    // A key UCX cannot read is a bad ticket, not a dead peer.
    return absl::InvalidArgumentError(absl::StrCat("cannot unpack remote key (", packed.size(),
                                                   " bytes): ", ucs_status_string(status)));
  }
  return UcpRkey(rkey);
}

}  // namespace gka::transfer::ucx
