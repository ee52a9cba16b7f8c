#include "common/transfer/ucx/ucx_transfer_engine.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/base/check.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/transfer/checksum.h"
#include "common/transfer/ucx/ucx_handles.h"

namespace gka::transfer::ucx {
namespace {

using ucx::UcsError;

// ---------------------------------------------------------------------------------------
// Wire format of the control messages (one UCP active-message id).

constexpr unsigned kAmId = 0x47;
constexpr uint32_t kMagic = 0x54414b47;  // "GKAT"
constexpr uint16_t kWireVersion = 1;
constexpr uint64_t kMaxAddressBytes = 64 * 1024;
// Session ids whose writes could not be proven stopped, remembered to answer late fences.
constexpr size_t kMaxUnsafeSessions = 4096;

enum class MsgType : uint8_t {
  kBegin = 1,       // sender -> receiver: may I write transfer_id? (session_id is the sender's)
  kBeginReply = 2,  // receiver -> sender: code OK = accepted, otherwise refused
  kDone = 3,        // sender -> receiver: all puts flushed; checksum, bytes, body = payload
  kDoneAck = 4,     // receiver -> sender: code = verification result
  kFence = 5,       // receiver -> sender: stop writing transfer_id and confirm
  kFenced = 6,      // sender -> receiver: code OK = stopped and flushed
  kAbort = 7,       // sender -> receiver: cancelled after a successful flush
  kData = 8,        // sender -> receiver (active-message data path): bytes for `addr`
};

// WireHeader::flags
constexpr uint8_t kFlagDataViaAm = 1;  // BEGIN: the sender moves data with kData messages

struct WireHeader {
  uint32_t magic = kMagic;
  uint16_t version = kWireVersion;
  uint8_t type = 0;
  uint8_t flags = 0;
  uint64_t session_id = 0;
  uint64_t transfer_id = 0;
  uint64_t checksum = 0;
  uint64_t bytes = 0;
  uint64_t addr = 0;  // kData: target address of the body
  int32_t code = 0;   // absl::StatusCode
  uint32_t reserved = 0;
};
static_assert(sizeof(WireHeader) == 56, "wire header layout is part of the protocol");

const char* MsgName(uint8_t type) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kBegin:
      return "BEGIN";
    case MsgType::kBeginReply:
      return "BEGIN_REPLY";
    case MsgType::kDone:
      return "DONE";
    case MsgType::kDoneAck:
      return "DONE_ACK";
    case MsgType::kFence:
      return "FENCE";
    case MsgType::kFenced:
      return "FENCED";
    case MsgType::kAbort:
      return "ABORT";
    case MsgType::kData:
      return "DATA";
  }
  return "UNKNOWN";
}

absl::Status StatusFromWire(int32_t code, absl::string_view message) {
  if (code < 0 || code > 16) {
    return absl::UnknownError(absl::StrCat("peer sent status code ", code, ": ", message));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

// A short, stable name for a peer in messages (addresses are long binary blobs).
std::string PeerName(absl::string_view address) {
  return absl::StrCat("peer#",
                      absl::Hex(Checksum64::Of(address.data(), address.size()) & 0xffffff));
}

// The transport list in effect (UcxOptions::transports, else UCX_TLS, else "all"), split.
// A leading '^' ("all but ...") is returned as the single entry "^".
std::vector<std::string> TransportList(const UcxOptions& options) {
  std::string tls = options.transports;
  if (tls.empty()) {
    const char* env = std::getenv("UCX_TLS");
    tls = env == nullptr || *env == '\0' ? "all" : env;
  }
  if (tls[0] == '^') return {"^"};
  return absl::StrSplit(tls, ',', absl::SkipWhitespace());
}

bool IsSharedMemory(absl::string_view t) {
  return t == "sm" || t == "shm" || t == "posix" || t == "sysv" || t == "cma" || t == "knem" ||
         t == "xpmem" || t == "self";
}

// Whether endpoints ask UCX for peer failure handling. UCX 1.13's shared-memory transports
// (posix, sysv) cannot provide it: an endpoint that asks finds no transport. The choice is
// made from configuration, never by trial, because both sides of a connection must create
// their endpoints alike (a failed attempt on one side only breaks UCX's endpoint matching).
bool UsePeerErrorHandling(const UcxOptions& options) {
  if (options.peer_error_handling != UcxOptions::PeerErrorHandling::kAuto) {
    return options.peer_error_handling == UcxOptions::PeerErrorHandling::kOn;
  }
  // On unless every transport is shared memory ("^..." and "all" keep a network one).
  for (const std::string& t : TransportList(options)) {
    if (!IsSharedMemory(t)) return true;
  }
  return false;
}

// kAuto: RMA puts only where the transport does them in hardware. UCX emulates RMA over tcp
// and over posix/sysv shared memory with active messages, and 1.13's emulation aborts the
// *receiving* process when the sender dies mid-put (its acknowledgement path treats the
// send error as fatal). Active messages we place ourselves are as fast there, and let the
// receiver refuse late writes on its own.
bool UsePuts(const UcxOptions& options) {
  if (options.data_path != UcxOptions::DataPath::kAuto) {
    return options.data_path == UcxOptions::DataPath::kPut;
  }
  bool hardware_rma = false;
  for (const std::string& t : TransportList(options)) {
    if (t == "^" || t == "all" || t == "tcp" || (IsSharedMemory(t) && t != "self")) {
      return false;
    }
    hardware_rma |= absl::StartsWith(t, "rc") || absl::StartsWith(t, "dc") || t == "ib" ||
                    t == "cuda_ipc" || t == "gdr_copy";
  }
  return hardware_rma;
}

}  // namespace

// ---------------------------------------------------------------------------------------

struct UcxTransferEngine::Impl {
  // A UCX operation in flight; owns what the operation reads until it completes.
  struct PendingOp {
    Impl* impl = nullptr;
    void* request = nullptr;  // UCX's handle while in flight
    absl::AnyInvocable<void(ucs_status_t)> done;
    WireHeader header;
    std::string body;
  };

  struct Peer {
    uint64_t id = 0;
    std::string address;
    ucp_ep_h ep = nullptr;
    bool closing = false;
    // Created with UCP_ERR_HANDLING_MODE_PEER: UCX reports its failure and allows a forced
    // close. False for shared-memory transports in UCX 1.13.
    bool detects_failure = true;
  };

  enum class SessionState { kBeginning, kOpen, kFlushing, kAwaitAck, kClosing, kResolved };
  enum class FlushPurpose { kFinish, kCancel, kFence, kFail };

  // Sender side of one transfer.
  struct Session {
    uint64_t id = 0;
    uint64_t transfer_id = 0;
    uint64_t peer_id = 0;
    std::string peer_name;
    std::vector<ucx::UcpRkey> rkeys;
    absl::Time start;
    absl::Time deadline;
    absl::Time begin_deadline;  // the receiver must answer BEGIN by then
    // UCX handed BEGIN to the transport. Until then it waits in the endpoint's queue for UCX's
    // connection handshake (wireup), which needs the receiver to reach this worker's addresses.
    bool begin_sent = false;
    SessionState state = SessionState::kBeginning;
    std::shared_ptr<std::promise<absl::Status>> begin_waiter;
    // Puts posted that no successful flush has confirmed yet.
    bool unflushed = false;
    FlushPurpose flush_purpose = FlushPurpose::kFinish;
    bool fenced = false;
    bool cancel_requested = false;
    absl::Status pending_failure;
    absl::Time fail_deadline = absl::InfiniteFuture();
    absl::StatusOr<uint64_t> checksum = uint64_t{0};
    std::string payload;
    TransferOutcome outcome;
    bool resolved = false;
    OutcomeCallback on_outcome;
    bool has_callback = false;
  };

  enum class IncomingState { kExpected, kActive, kFencing, kUnsafe };

  struct FenceWaiter {
    absl::Time deadline;
    std::shared_ptr<std::promise<absl::Status>> promise;
  };

  // Receiver side of one transfer.
  struct Incoming {
    ExpectedTransfer expected;
    CompletionCallback on_complete;
    IncomingState state = IncomingState::kExpected;
    uint64_t session_id = 0;
    uint64_t sender_peer_id = 0;
    std::string sender_address;
    absl::Status sender_lost;    // set when our endpoint to the sender failed
    absl::Status unsafe_status;  // kUnsafe: why the memory may still be written
    std::vector<FenceWaiter> waiters;
    // Active-message data path: we write the bytes ourselves, so quiescence is local.
    bool data_via_am = false;
    uint64_t bytes_written = 0;
    uint64_t bytes_refused = 0;
  };

  UcxOptions options;
  ucx::UcpContext context;
  ucx::UcpWorker worker;
  std::string address;
  bool supports_cuda = false;
  int ucp_efd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::atomic<std::thread::id> progress_thread_id;
  std::atomic<int> live_regions{0};
  std::atomic<int> live_transfers{0};
  std::atomic<bool> stop_requested{false};

  absl::Mutex queue_mu;
  std::deque<absl::AnyInvocable<void()>> queue ABSL_GUARDED_BY(queue_mu);
  bool accepting ABSL_GUARDED_BY(queue_mu) = true;

  // ---- Everything below is touched only by the progress thread. ----
  // Work queued by UCX callbacks, run after ucp_worker_progress returns (so that nothing we
  // do re-enters UCX from inside its own callbacks).
  std::vector<absl::AnyInvocable<void()>> deferred;
  // Operations UCX has not completed yet (some never do against a dead shared-memory peer).
  absl::flat_hash_set<PendingOp*> inflight;
  // Endpoints are created with UCP_ERR_HANDLING_MODE_PEER (see UsePeerErrorHandling).
  bool detect_peer_failure = true;
  // Outgoing data moves as active messages the receiver places, not as RMA puts.
  bool data_via_am = true;
  // Registered host regions (address -> length): the only memory kData messages may write.
  std::map<uint64_t, uint64_t> registered;
  uint64_t next_peer_id = 1;
  uint64_t next_session_id = 1;
  std::map<uint64_t, Peer> peers;
  absl::flat_hash_map<std::string, uint64_t> peer_by_address;
  absl::flat_hash_map<ucp_ep_h, uint64_t> peer_by_ep;
  std::map<uint64_t, Session> sessions;
  std::map<uint64_t, Incoming> incoming;
  std::deque<uint64_t> unsafe_order;
  absl::flat_hash_set<uint64_t> unsafe_sessions;

  ~Impl() {
    if (wake_fd >= 0) close(wake_fd);
  }

  // ---------------------------------------------------------------- threading

  bool OnProgressThread() const { return progress_thread_id.load() == std::this_thread::get_id(); }

  bool Post(absl::AnyInvocable<void()> fn) {
    {
      absl::MutexLock lock(&queue_mu);
      if (!accepting) return false;
      queue.push_back(std::move(fn));
    }
    Wake();
    return true;
  }

  void Wake() {
    const uint64_t one = 1;
    // EAGAIN (counter saturated) still leaves the fd readable, which is all we need.
    [[maybe_unused]] ssize_t n = write(wake_fd, &one, sizeof(one));
  }

  // Runs `fn` on the progress thread and returns its result (inline when already there).
  template <typename F>
  auto RunSync(F fn) -> decltype(fn()) {
    using R = decltype(fn());
    if (OnProgressThread()) return fn();
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    if (!Post([&promise, &fn] { promise.set_value(fn()); })) {
      return R(absl::CancelledError("the transfer engine is shutting down"));
    }
    return future.get();
  }

  // Returns whether there was anything to run.
  bool RunCommands() {
    std::deque<absl::AnyInvocable<void()>> batch;
    {
      absl::MutexLock lock(&queue_mu);
      batch.swap(queue);
    }
    for (auto& fn : batch) fn();
    return !batch.empty();
  }

  void RunDeferred() {
    while (!deferred.empty()) {
      std::vector<absl::AnyInvocable<void()>> batch;
      batch.swap(deferred);
      for (auto& fn : batch) fn();
    }
  }

  void Loop() {
    progress_thread_id.store(std::this_thread::get_id());
    // While operations are in flight and progressing, spin (yielding the core) instead of
    // sleeping: shared-memory sends wait for FIFO space without any wakeup event, and a
    // 1 ms sleep per FIFO-full caps them at a few hundred MB/s. Operations that stop
    // progressing (stuck on a dead peer) fall back to 1 ms polls, so they cost no core.
    constexpr absl::Duration kSpinWindow = absl::Milliseconds(2);
    absl::Time last_progress = absl::InfinitePast();
    while (true) {
      bool progressed = RunCommands();
      while (ucp_worker_progress(worker.get()) != 0) progressed = true;
      progressed |= !deferred.empty();
      RunDeferred();
      const absl::Time now = absl::Now();
      const absl::Time next_timer = CheckTimers(now);
      RunDeferred();
      if (stop_requested.load()) break;
      if (progressed) last_progress = now;
      {
        absl::MutexLock lock(&queue_mu);
        if (!queue.empty()) continue;
      }
      if (!inflight.empty() && now - last_progress < kSpinWindow) {
        std::this_thread::yield();
        continue;
      }
      if (ucp_efd >= 0 && ucp_worker_arm(worker.get()) == UCS_ERR_BUSY) continue;
      // Transports without wakeup support, and operations a transport completes without an
      // event, are covered by short polls while anything is in flight.
      int timeout_ms = 100;
      if (!inflight.empty() || ucp_efd < 0) timeout_ms = 1;
      const absl::Duration until_timer = next_timer - absl::Now();
      if (until_timer < absl::Milliseconds(timeout_ms)) {
        timeout_ms =
            static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(until_timer) + 1));
      }
      pollfd fds[2] = {{wake_fd, POLLIN, 0}, {ucp_efd, POLLIN, 0}};
      poll(fds, ucp_efd >= 0 ? 2 : 1, timeout_ms);
      uint64_t drained;
      [[maybe_unused]] ssize_t n = read(wake_fd, &drained, sizeof(drained));
    }
    ShutdownOnProgressThread();
  }

  // ---------------------------------------------------------------- UCX operations

  static void OnSendComplete(void* request, ucs_status_t status, void* user_data) {
    auto* op = static_cast<PendingOp*>(user_data);
    ucp_request_free(request);
    Impl* impl = op->impl;
    impl->inflight.erase(op);
    impl->deferred.push_back([op, status] {
      op->done(status);
      delete op;
    });
  }

  PendingOp* NewOp(absl::AnyInvocable<void(ucs_status_t)> done) {
    auto* op = new PendingOp;
    op->impl = this;
    op->done = std::move(done);
    return op;
  }

  static ucp_request_param_t Params(PendingOp* op, uint32_t flags = 0) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &OnSendComplete;
    p.user_data = op;
    if (flags != 0) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = flags;
    }
    return p;
  }

  // Takes over `op` after a *_nbx call: immediate completions and immediate errors run its
  // callback from the deferred queue, like asynchronous ones. Returns the immediate error.
  ucs_status_t Track(ucs_status_ptr_t request, PendingOp* op) {
    if (request == nullptr || UCS_PTR_IS_ERR(request)) {
      const ucs_status_t status = request == nullptr ? UCS_OK : UCS_PTR_STATUS(request);
      deferred.push_back([op, status] {
        op->done(status);
        delete op;
      });
      return status;
    }
    op->request = request;
    inflight.insert(op);
    return UCS_OK;
  }

  // ---------------------------------------------------------------- peers

  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* impl = static_cast<Impl*>(arg);
    impl->deferred.push_back([impl, ep, status] {
      auto it = impl->peer_by_ep.find(ep);
      if (it == impl->peer_by_ep.end()) return;
      Peer& peer = impl->peers.at(it->second);
      if (peer.closing) return;
      impl->ClosePeer(peer, UcsError(status, absl::StrCat(PeerName(peer.address), " failed")));
    });
  }

  absl::StatusOr<Peer*> GetPeer(const std::string& peer_address) {
    if (auto it = peer_by_address.find(peer_address); it != peer_by_address.end()) {
      return &peers.at(it->second);
    }
    if (peer_address.empty() || peer_address.size() > kMaxAddressBytes) {
      return absl::InvalidArgumentError(absl::StrCat("a worker address of ", peer_address.size(),
                                                     " bytes is not a UCX worker address"));
    }
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t*>(peer_address.data());
    params.err_mode = detect_peer_failure ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    params.err_handler.cb = &OnEpError;
    params.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    const ucs_status_t status = ucp_ep_create(worker.get(), &params, &ep);
    if (status != UCS_OK) {
      return UcsError(status, absl::StrCat("connecting to ", PeerName(peer_address),
                                           " (no common transport, or a bad address?)"));
    }
    const uint64_t id = next_peer_id++;
    Peer& peer = peers[id];
    peer.id = id;
    peer.address = peer_address;
    peer.ep = ep;
    peer.detects_failure = detect_peer_failure;
    peer_by_address[peer_address] = id;
    peer_by_ep[ep] = id;
    return &peer;
  }

  Peer* FindPeer(uint64_t id) {
    auto it = peers.find(id);
    return it == peers.end() ? nullptr : &it->second;
  }

  // Force-closes the endpoint: UCX cancels everything in flight on it, after which nothing
  // more is read from our buffers or sent. Sessions on it resolve once the close completed.
  void ClosePeer(Peer& peer, const absl::Status& why) {
    if (peer.closing) return;
    peer.closing = true;
    if (auto it = peer_by_address.find(peer.address);
        it != peer_by_address.end() && it->second == peer.id) {
      peer_by_address.erase(it);
    }
    std::vector<uint64_t> beginning;
    for (auto& [id, s] : sessions) {
      if (s.peer_id != peer.id || s.resolved) continue;
      if (s.state == SessionState::kBeginning) {
        beginning.push_back(id);
        continue;
      }
      if (s.pending_failure.ok()) s.pending_failure = why;
      if (s.unflushed) MarkUnsafe(s);
      s.state = SessionState::kClosing;
    }
    for (uint64_t id : beginning) {
      sessions.at(id).begin_waiter->set_value(why);
      sessions.erase(id);
    }
    for (auto& [tid, in] : incoming) {
      if (in.sender_peer_id != peer.id) continue;
      in.sender_lost = absl::UnavailableError(absl::StrCat(
          "sender of transfer ", tid, " is unreachable (", why.message(),
          "); a dead sender writes no more, but bytes it sent may still be in flight"));
      if (in.state == IncomingState::kFencing) NotifyWaiters(in, in.sender_lost);
    }
    const uint64_t peer_id = peer.id;
    if (!peer.detects_failure) {
      // UCX allows a forced close only with peer error handling, and a graceful one never
      // completes against a dead peer: the endpoint is abandoned to the worker's destruction,
      // with whatever operations are queued on it (TransferOutcome::local_may_be_read).
      OnPeerClosed(peer_id, /*abandoned=*/true);
      return;
    }
    PendingOp* op = NewOp([this, peer_id](ucs_status_t) { OnPeerClosed(peer_id); });
    ucp_request_param_t params = Params(op, UCP_EP_CLOSE_FLAG_FORCE);
    Track(ucp_ep_close_nbx(peer.ep, &params), op);
  }

  // Shutdown: a graceful close for endpoints that cannot be force-closed (bounded by
  // shutdown_timeout), a forced one for the others.
  void CloseForShutdown(Peer& peer) {
    if (peer.closing) return;
    if (peer.detects_failure) return ClosePeer(peer, absl::CancelledError("shutdown"));
    peer.closing = true;
    const uint64_t peer_id = peer.id;
    PendingOp* op = NewOp([this, peer_id](ucs_status_t) { OnPeerClosed(peer_id); });
    ucp_request_param_t params = Params(op);
    Track(ucp_ep_close_nbx(peer.ep, &params), op);
  }

  void OnPeerClosed(uint64_t peer_id, bool abandoned = false) {
    Peer* peer = FindPeer(peer_id);
    if (peer == nullptr) return;
    peer_by_ep.erase(peer->ep);
    peers.erase(peer_id);
    std::vector<uint64_t> ids;
    for (auto& [id, s] : sessions) {
      if (s.peer_id == peer_id && s.state == SessionState::kClosing) ids.push_back(id);
    }
    for (uint64_t id : ids) {
      Session& s = sessions.at(id);
      // An abandoned endpoint (no forced close possible) keeps its queued writes.
      s.outcome.local_may_be_read = s.unflushed && abandoned;
      Resolve(s, s.pending_failure, /*may_be_written=*/s.unflushed);
    }
  }

  // `on_sent` (optional) runs when UCX completes the send: OK once the message was handed to
  // the transport.
  void Send(Peer& peer, MsgType type, uint64_t session_id, uint64_t transfer_id,
            const absl::Status& status, absl::string_view body, uint64_t checksum = 0,
            uint64_t bytes = 0, uint8_t flags = 0,
            absl::AnyInvocable<void(ucs_status_t)> on_sent = nullptr) {
    if (peer.closing) return;
    PendingOp* op = NewOp([this, type, name = PeerName(peer.address),
                           on_sent = std::move(on_sent)](ucs_status_t s) mutable {
      if (s != UCS_OK && s != UCS_ERR_CANCELED) {
        GKA_LOG(WARNING) << "transfer: sending " << MsgName(static_cast<uint8_t>(type)) << " to "
                         << name << " failed: " << ucs_status_string(s);
      }
      if (on_sent) on_sent(s);
    });
    op->header.type = static_cast<uint8_t>(type);
    op->header.session_id = session_id;
    op->header.transfer_id = transfer_id;
    op->header.checksum = checksum;
    op->header.bytes = bytes;
    op->header.flags = flags;
    op->header.code = static_cast<int32_t>(status.code());
    // Body: [u32 length][our worker address][message body]; error text rides as the body.
    const absl::string_view text = status.ok() ? body : status.message();
    const uint32_t length = static_cast<uint32_t>(address.size());
    op->body.reserve(4 + address.size() + text.size());
    op->body.append(reinterpret_cast<const char*>(&length), 4);
    op->body.append(address);
    op->body.append(text.data(), text.size());
    // Eager only: control messages are small and must not wait for a rendezvous.
    ucp_request_param_t params = Params(op, UCP_AM_SEND_FLAG_EAGER);
    Track(ucp_am_send_nbx(peer.ep, kAmId, &op->header, sizeof(op->header), op->body.data(),
                          op->body.size(), &params),
          op);
  }

  // Sends to the owner of `peer_address` (connecting if needed); drops with a log line when
  // it cannot connect: the other side's timers cover a lost reply.
  void SendTo(const std::string& peer_address, MsgType type, uint64_t session_id,
              uint64_t transfer_id, const absl::Status& status, absl::string_view body = {}) {
    absl::StatusOr<Peer*> peer = GetPeer(peer_address);
    if (!peer.ok()) {
      GKA_LOG(WARNING) << "transfer: cannot answer " << PeerName(peer_address) << ": "
                       << peer.status();
      return;
    }
    Send(**peer, type, session_id, transfer_id, status, body);
  }

  static ucs_status_t OnAm(void* arg, const void* header, size_t header_length, void* data,
                           size_t length, const ucp_am_recv_param_t* param) {
    auto* impl = static_cast<Impl*>(arg);
    // Returning UCS_OK drops a rendezvous descriptor; our senders never use rendezvous.
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
        header_length != sizeof(WireHeader)) {
      GKA_LOG(WARNING) << "transfer: dropped a malformed message (header " << header_length
                       << " bytes, body " << length << " bytes)";
      return UCS_OK;
    }
    WireHeader h;
    std::memcpy(&h, header, sizeof(h));
    if (h.magic != kMagic || h.version != kWireVersion) {
      GKA_LOG(WARNING) << "transfer: dropped a message with a bad magic or version " << h.version;
      return UCS_OK;
    }
    if (h.type == static_cast<uint8_t>(MsgType::kData)) {
      impl->OnData(h, data, length);
      return UCS_OK;
    }
    uint32_t address_length = 0;
    if (length >= 4) std::memcpy(&address_length, data, 4);
    if (length < 4 || address_length == 0 || address_length > length - 4) {
      GKA_LOG(WARNING) << "transfer: dropped a control message without a sender address";
      return UCS_OK;
    }
    const char* bytes = static_cast<const char*>(data);
    std::string sender(bytes + 4, address_length);
    std::string body(bytes + 4 + address_length, length - 4 - address_length);
    impl->deferred.push_back([impl, h, sender = std::move(sender), body = std::move(body)] {
      impl->Dispatch(h, sender, body);
    });
    return UCS_OK;
  }

  void Dispatch(const WireHeader& h, const std::string& sender, const std::string& body) {
    switch (static_cast<MsgType>(h.type)) {
      case MsgType::kBegin:
        return OnBegin(h, sender);
      case MsgType::kBeginReply:
        return OnBeginReply(h, body);
      case MsgType::kDone:
        return OnDone(h, sender, body);
      case MsgType::kDoneAck:
        return OnDoneAck(h, body);
      case MsgType::kFence:
        return OnFence(h, sender);
      case MsgType::kFenced:
        return OnFenced(h, body);
      case MsgType::kAbort:
        return OnAbort(h, body);
      case MsgType::kData:
        break;  // handled in OnAm
    }
    GKA_LOG(WARNING) << "transfer: dropped a control message of unknown type " << int{h.type};
  }

  // ---------------------------------------------------------------- sender

  Session* FindSession(uint64_t id) {
    auto it = sessions.find(id);
    return it == sessions.end() ? nullptr : &it->second;
  }

  void MarkUnsafe(const Session& s) {
    if (unsafe_sessions.insert(s.id).second) {
      unsafe_order.push_back(s.id);
      if (unsafe_order.size() > kMaxUnsafeSessions) {
        unsafe_sessions.erase(unsafe_order.front());
        unsafe_order.pop_front();
      }
    }
  }

  // Records the outcome; delivers it when the caller has asked for it (Finish/Cancel).
  void Resolve(Session& s, absl::Status status, bool may_be_written) {
    if (s.resolved) return;
    s.resolved = true;
    s.state = SessionState::kResolved;
    s.outcome.status = std::move(status);
    s.outcome.remote_may_be_written = may_be_written;
    if (may_be_written) MarkUnsafe(s);
    s.outcome.elapsed = absl::Now() - s.start;
    MaybeDeliver(s);
  }

  void MaybeDeliver(Session& s) {
    if (!s.resolved || !s.has_callback) return;
    OutcomeCallback callback = std::move(s.on_outcome);
    TransferOutcome outcome = s.outcome;
    sessions.erase(s.id);  // destroys the rkeys: nothing of this transfer is in flight
    if (callback) callback(std::move(outcome));
  }

  absl::StatusOr<std::shared_ptr<std::promise<absl::Status>>> BeginSession(
      const TransferTarget& target, uint64_t transfer_id, absl::Time deadline,
      uint64_t* session_id) {
    GKA_ASSIGN_OR_RETURN(Peer * peer, GetPeer(target.worker_address));
    std::vector<ucx::UcpRkey> rkeys;
    for (size_t i = 0; i < target.regions.size(); ++i) {
      absl::StatusOr<ucx::UcpRkey> rkey = ucx::UnpackRkey(peer->ep, target.regions[i].packed_rkey);
      if (!rkey.ok()) return base::Annotate(rkey.status(), absl::StrCat("region ", i));
      rkeys.push_back(*std::move(rkey));
    }
    const uint64_t id = next_session_id++;
    Session& s = sessions[id];
    s.id = id;
    s.transfer_id = transfer_id;
    s.peer_id = peer->id;
    s.peer_name = PeerName(peer->address);
    s.rkeys = std::move(rkeys);
    s.start = absl::Now();
    s.deadline = deadline;
    s.begin_deadline = std::min(deadline, s.start + options.begin_timeout);
    s.begin_waiter = std::make_shared<std::promise<absl::Status>>();
    Send(*peer, MsgType::kBegin, id, transfer_id, absl::OkStatus(), {}, 0, 0,
         data_via_am ? kFlagDataViaAm : 0, [this, id](ucs_status_t status) {
           if (Session* sent = FindSession(id); sent != nullptr && status == UCS_OK) {
             sent->begin_sent = true;
           }
         });
    *session_id = id;
    return s.begin_waiter;
  }

  void OnBeginReply(const WireHeader& h, const std::string& body) {
    Session* s = FindSession(h.session_id);
    if (s == nullptr || s->state != SessionState::kBeginning || s->transfer_id != h.transfer_id) {
      return;  // we gave up already (deadline); the receiver's fence will find nothing
    }
    absl::Status status = StatusFromWire(h.code, body);
    if (status.ok()) {
      s->state = SessionState::kOpen;
      s->begin_waiter->set_value(absl::OkStatus());
      return;
    }
    s->begin_waiter->set_value(
        base::Annotate(status, absl::StrCat(s->peer_name, " refused transfer ", s->transfer_id)));
    sessions.erase(h.session_id);
  }

  absl::Status PostPuts(uint64_t session_id, const TransferDescriptor& descriptor) {
    Session* s = FindSession(session_id);
    if (s == nullptr) return absl::FailedPreconditionError("the transfer has ended");
    if (s->resolved || s->state == SessionState::kClosing) {
      return s->resolved ? s->outcome.status : s->pending_failure;
    }
    if (s->fenced) {
      return absl::CancelledError(absl::StrCat("the receiver fenced transfer ", s->transfer_id,
                                               " (lease expired or released)"));
    }
    if (s->state != SessionState::kOpen) {
      return absl::FailedPreconditionError(
          absl::StrCat("transfer ", s->transfer_id, " is finishing; no more puts"));
    }
    Peer* peer = FindPeer(s->peer_id);
    GKA_CHECK(peer != nullptr && !peer->closing);
    for (const Segment& seg : descriptor.segments) {
      // The active-message path splits segments into chunks the receiver reassembles
      // cheaply; puts go whole.
      const uint64_t chunk = data_via_am ? options.am_chunk_bytes : seg.length;
      for (uint64_t offset = 0; offset < seg.length; offset += chunk) {
        const uint64_t length = std::min(chunk, seg.length - offset);
        const void* local = static_cast<const char*>(seg.local) + offset;
        const uint64_t id = session_id;
        PendingOp* op = NewOp([this, id](ucs_status_t status) { OnPutDone(id, status); });
        s->unflushed = true;
        ucs_status_ptr_t request;
        if (data_via_am) {
          op->header.type = static_cast<uint8_t>(MsgType::kData);
          op->header.session_id = s->id;
          op->header.transfer_id = s->transfer_id;
          op->header.addr = seg.remote_addr + offset;
          op->header.bytes = length;
          ucp_request_param_t params = Params(op, UCP_AM_SEND_FLAG_EAGER);
          request = ucp_am_send_nbx(peer->ep, kAmId, &op->header, sizeof(op->header), local, length,
                                    &params);
        } else {
          ucp_request_param_t params = Params(op);
          request = ucp_put_nbx(peer->ep, local, length, seg.remote_addr + offset,
                                s->rkeys[seg.region].get(), &params);
        }
        const ucs_status_t status = Track(request, op);
        if (status != UCS_OK) {
          absl::Status error = UcsError(status, absl::StrCat("writing to ", s->peer_name));
          FailSession(*s, error);
          return error;
        }
      }
    }
    return absl::OkStatus();
  }

  void OnPutDone(uint64_t session_id, ucs_status_t status) {
    if (status == UCS_OK || status == UCS_ERR_CANCELED) return;
    Session* s = FindSession(session_id);
    if (s == nullptr) return;
    FailSession(*s, UcsError(status, absl::StrCat("put to ", s->peer_name)));
  }

  void Flush(Session& s, FlushPurpose purpose) {
    s.state = SessionState::kFlushing;
    s.flush_purpose = purpose;
    Peer* peer = FindPeer(s.peer_id);
    GKA_CHECK(peer != nullptr && !peer->closing);
    const uint64_t id = s.id;
    PendingOp* op = NewOp([this, id](ucs_status_t status) { OnFlushed(id, status); });
    ucp_request_param_t params = Params(op);
    Track(ucp_ep_flush_nbx(peer->ep, &params), op);
  }

  void OnFlushed(uint64_t session_id, ucs_status_t status) {
    Session* s = FindSession(session_id);
    if (s == nullptr || s->state != SessionState::kFlushing) return;
    if (status != UCS_OK) {
      // The endpoint is broken: nothing proves the puts stopped, so force-close it.
      s->flush_purpose = FlushPurpose::kFail;
      if (s->pending_failure.ok()) {
        s->pending_failure = UcsError(status, absl::StrCat("flushing writes to ", s->peer_name));
      }
      ForceClose(*s);
      return;
    }
    s->unflushed = false;  // every put posted so far is complete at the target
    Peer* peer = FindPeer(s->peer_id);
    if (s->fenced) Send(*peer, MsgType::kFenced, s->id, s->transfer_id, absl::OkStatus(), {});
    absl::Status end;
    if (s->flush_purpose == FlushPurpose::kFail) {
      end = s->pending_failure;
    } else if (s->fenced) {
      end = absl::CancelledError(absl::StrCat("receiver fenced transfer ", s->transfer_id,
                                              " (lease expired or released)"));
    } else if (s->cancel_requested) {
      end = absl::CancelledError("cancelled by the sender");
    } else if (!s->checksum.ok()) {
      end = s->checksum.status();
    }
    if (!end.ok()) {
      if (!s->fenced) Send(*peer, MsgType::kAbort, s->id, s->transfer_id, end, {});
      Resolve(*s, end, false);
      return;
    }
    s->state = SessionState::kAwaitAck;
    Send(*peer, MsgType::kDone, s->id, s->transfer_id, absl::OkStatus(), s->payload, *s->checksum,
         s->outcome.bytes);
  }

  void OnDoneAck(const WireHeader& h, const std::string& body) {
    Session* s = FindSession(h.session_id);
    if (s == nullptr || s->state != SessionState::kAwaitAck) return;
    absl::Status status = StatusFromWire(h.code, body);
    Resolve(*s, status.ok() ? status : base::Annotate(status, s->peer_name), false);
  }

  // A failure with writes possibly in flight: first try to prove them complete with a flush
  // (bounded by fail_flush_grace), and force-close the endpoint only when that fails.
  void FailSession(Session& s, absl::Status why) {
    if (s.resolved || s.state == SessionState::kClosing) return;
    if (s.state == SessionState::kBeginning) {
      s.begin_waiter->set_value(std::move(why));
      sessions.erase(s.id);
      return;
    }
    if (s.pending_failure.ok()) s.pending_failure = why;
    if (!s.unflushed) {
      if (Peer* peer = FindPeer(s.peer_id); peer != nullptr && s.state != SessionState::kAwaitAck) {
        Send(*peer, MsgType::kAbort, s.id, s.transfer_id, why, {});
      }
      Resolve(s, why, false);
      return;
    }
    if (s.state == SessionState::kFlushing && s.flush_purpose == FlushPurpose::kFail) return;
    s.fail_deadline = absl::Now() + options.fail_flush_grace;
    if (s.state == SessionState::kFlushing) {
      s.flush_purpose = FlushPurpose::kFail;  // the flush in flight proves the same thing
    } else {
      Flush(s, FlushPurpose::kFail);
    }
  }

  void ForceClose(Session& s) {
    Peer* peer = FindPeer(s.peer_id);
    MarkUnsafe(s);
    s.state = SessionState::kClosing;
    if (peer == nullptr) {
      Resolve(s, s.pending_failure, true);
      return;
    }
    ClosePeer(*peer, absl::AbortedError(absl::StrCat(
                         "endpoint to ", s.peer_name, " force-closed: transfer ", s.transfer_id,
                         " failed with writes in flight (", s.pending_failure.message(), ")")));
  }

  void FinishSession(uint64_t session_id, absl::StatusOr<uint64_t> checksum, uint64_t bytes,
                     uint32_t segments, std::string payload, OutcomeCallback on_outcome) {
    Session* s = FindSession(session_id);
    if (s == nullptr) {
      TransferOutcome outcome;
      outcome.status = absl::FailedPreconditionError("Finish on a transfer that already ended");
      if (on_outcome) on_outcome(std::move(outcome));
      return;
    }
    s->on_outcome = std::move(on_outcome);
    s->has_callback = true;
    s->outcome.bytes = bytes;
    s->outcome.segments = segments;
    if (checksum.ok()) s->outcome.checksum = *checksum;
    s->checksum = std::move(checksum);
    s->payload = std::move(payload);
    if (s->resolved) return MaybeDeliver(*s);
    if (s->state == SessionState::kOpen) Flush(*s, FlushPurpose::kFinish);
    // kFlushing (a fence's flush) or kClosing: the outcome follows from those.
  }

  void CancelSession(uint64_t session_id, OutcomeCallback on_outcome) {
    Session* s = FindSession(session_id);
    if (s == nullptr) return;
    s->on_outcome = std::move(on_outcome);
    s->has_callback = true;
    s->cancel_requested = true;
    if (s->resolved) return MaybeDeliver(*s);
    if (s->state != SessionState::kOpen) return;  // finishing; its outcome will be delivered
    if (s->unflushed) {
      Flush(*s, FlushPurpose::kCancel);
    } else {
      Send(*FindPeer(s->peer_id), MsgType::kAbort, s->id, s->transfer_id,
           absl::CancelledError("cancelled by the sender"), {});
      Resolve(*s, absl::CancelledError("cancelled by the sender"), false);
    }
  }

  void OnFence(const WireHeader& h, const std::string& receiver) {
    Session* s = FindSession(h.session_id);
    if (s == nullptr || s->transfer_id != h.transfer_id || s->resolved ||
        s->state == SessionState::kClosing) {
      // Not active here: either it ended cleanly (flushed) or it ended with writes in flight.
      const bool unsafe = unsafe_sessions.contains(h.session_id);
      SendTo(receiver, MsgType::kFenced, h.session_id, h.transfer_id,
             unsafe ? absl::AbortedError(absl::StrCat(
                          "transfer ", h.transfer_id,
                          " ended with writes in flight; the sender cannot prove they stopped"))
                    : absl::OkStatus());
      return;
    }
    s->fenced = true;
    switch (s->state) {
      case SessionState::kOpen:
        Flush(*s, FlushPurpose::kFence);
        break;
      case SessionState::kAwaitAck:
        // DONE went out after a successful flush: nothing is in flight.
        Send(*FindPeer(s->peer_id), MsgType::kFenced, s->id, s->transfer_id, absl::OkStatus(), {});
        break;
      default:
        break;  // kFlushing: OnFlushed answers once the flush completed
    }
  }

  // ---------------------------------------------------------------- receiver

  absl::Status AddExpectation(ExpectedTransfer expected, CompletionCallback on_complete) {
    const uint64_t id = expected.transfer_id;
    if (incoming.contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat("transfer ", id, " is already expected"));
    }
    // Adjacent ranges become one: a sender merges writes that continue each other (e.g. two
    // KV pages that happen to be neighbours in the pool), and such a write must be accepted
    // even though it spans two of the ranges the receiver listed. The checksum is over bytes
    // in address order, so merging changes nothing else.
    std::vector<LocalRange>& ranges = expected.verify_ranges;
    std::sort(ranges.begin(), ranges.end(), [](const LocalRange& a, const LocalRange& b) {
      return reinterpret_cast<uintptr_t>(a.addr) < reinterpret_cast<uintptr_t>(b.addr);
    });
    std::vector<LocalRange> merged;
    for (const LocalRange& r : ranges) {
      if (!merged.empty() && static_cast<const char*>(merged.back().addr) + merged.back().length ==
                                 static_cast<const char*>(r.addr)) {
        merged.back().length += r.length;
      } else {
        merged.push_back(r);
      }
    }
    ranges = std::move(merged);
    Incoming& in = incoming[id];
    in.expected = std::move(expected);
    in.on_complete = std::move(on_complete);
    return absl::OkStatus();
  }

  void NotifyWaiters(Incoming& in, const absl::Status& status) {
    for (FenceWaiter& w : in.waiters) w.promise->set_value(status);
    in.waiters.clear();
  }

  // The transfer can no longer write: tell the owner and the fence waiters, forget it.
  void Quiesce(uint64_t transfer_id, absl::StatusOr<TransferCompletion> result) {
    auto it = incoming.find(transfer_id);
    if (it == incoming.end()) return;
    Incoming in = std::move(it->second);
    incoming.erase(it);
    NotifyWaiters(in, absl::OkStatus());
    if (in.on_complete) in.on_complete(std::move(result));
  }

  Incoming* FindIncoming(const WireHeader& h) {
    auto it = incoming.find(h.transfer_id);
    if (it == incoming.end() || it->second.state == IncomingState::kExpected ||
        it->second.session_id != h.session_id) {
      return nullptr;
    }
    return &it->second;
  }

  void OnBegin(const WireHeader& h, const std::string& sender) {
    absl::Status verdict;
    auto it = incoming.find(h.transfer_id);
    const absl::Time now = absl::Now();
    if (it == incoming.end()) {
      verdict = absl::NotFoundError(absl::StrCat(
          "transfer ", h.transfer_id, " is not expected (never reserved, released or expired)"));
    } else if (it->second.state != IncomingState::kExpected) {
      verdict = absl::FailedPreconditionError(
          absl::StrCat("transfer ", h.transfer_id, " was already begun by a sender"));
    } else if (now >= it->second.expected.lease_deadline) {
      verdict = absl::DeadlineExceededError(
          absl::StrCat("the lease of transfer ", h.transfer_id, " expired ",
                       absl::FormatDuration(now - it->second.expected.lease_deadline), " ago"));
    }
    absl::StatusOr<Peer*> peer = GetPeer(sender);
    if (!peer.ok()) {
      // Without a way back we cannot accept: the sender gives up at its deadline.
      GKA_LOG(WARNING) << "transfer: BEGIN of " << h.transfer_id
                       << " from a sender we cannot reach: " << peer.status();
      return;
    }
    if (verdict.ok()) {
      Incoming& in = it->second;
      in.state = IncomingState::kActive;
      in.session_id = h.session_id;
      in.sender_peer_id = (*peer)->id;
      in.sender_address = sender;
      in.data_via_am = (h.flags & kFlagDataViaAm) != 0;
    }
    Send(**peer, MsgType::kBeginReply, h.session_id, h.transfer_id, verdict, {});
  }

  absl::Status Verify(const Incoming& in, const WireHeader& h) {
    if (in.data_via_am && in.bytes_written != h.bytes) {
      return absl::DataLossError(absl::StrCat(
          "transfer ", h.transfer_id, ": the sender wrote ", h.bytes, " bytes, ", in.bytes_written,
          " arrived (", in.bytes_refused, " refused as outside the transfer's registered ranges)"));
    }
    if (in.expected.verify_ranges.empty()) return absl::OkStatus();
    std::vector<ChecksumRange> ranges;
    uint64_t expected_bytes = 0;
    for (const LocalRange& r : in.expected.verify_ranges) {
      ranges.push_back({reinterpret_cast<uint64_t>(r.addr), r.addr, r.length});
      expected_bytes += r.length;
    }
    if (h.bytes != expected_bytes) {
      return absl::DataLossError(absl::StrCat("transfer ", h.transfer_id, ": the sender wrote ",
                                              h.bytes, " bytes, the reservation expects ",
                                              expected_bytes));
    }
    if (in.expected.caller_verifies_checksum) return absl::OkStatus();
    GKA_ASSIGN_OR_RETURN(uint64_t ours, ChecksumInAddressOrder(std::move(ranges)));
    if (ours != h.checksum) {
      return absl::DataLossError(absl::StrCat(
          "transfer ", h.transfer_id, ": checksum mismatch (sender 0x", absl::Hex(h.checksum),
          ", receiver 0x", absl::Hex(ours), " over ", h.bytes, " bytes)"));
    }
    return absl::OkStatus();
  }

  // Runs inside ucp_worker_progress (from OnAm), on the progress thread: the only place the
  // active-message data path writes memory, so a transfer that is not active here writes
  // nothing, whatever its sender still sends.
  void OnData(const WireHeader& h, const void* data, size_t length) {
    auto it = incoming.find(h.transfer_id);
    if (it == incoming.end() || it->second.state != IncomingState::kActive ||
        it->second.session_id != h.session_id || !it->second.data_via_am) {
      return;  // fenced, released, expired, or never ours: dropped
    }
    Incoming& in = it->second;
    if (h.bytes != length || !WritableByTransfer(in, h.addr, length)) {
      in.bytes_refused += length;
      return;  // DONE will report the shortfall
    }
    std::memcpy(reinterpret_cast<void*>(h.addr), data, length);
    in.bytes_written += length;
  }

  // [addr, addr + length) lies in a region registered with this engine and, when the
  // expectation names ranges, inside one of them.
  bool WritableByTransfer(const Incoming& in, uint64_t addr, uint64_t length) const {
    auto Within = [&](uint64_t base, uint64_t size) {
      return addr >= base && addr - base <= size && length <= size - (addr - base);
    };
    auto r = registered.upper_bound(addr);
    if (r == registered.begin() || !Within(std::prev(r)->first, std::prev(r)->second)) {
      return false;
    }
    if (in.expected.verify_ranges.empty()) return true;
    for (const LocalRange& range : in.expected.verify_ranges) {
      if (Within(reinterpret_cast<uint64_t>(range.addr), range.length)) return true;
    }
    return false;
  }

  void OnDone(const WireHeader& h, const std::string& sender, const std::string& payload) {
    Incoming* in = FindIncoming(h);
    if (in == nullptr) {
      SendTo(sender, MsgType::kDoneAck, h.session_id, h.transfer_id,
             absl::NotFoundError(absl::StrCat("transfer ", h.transfer_id,
                                              " is no longer expected (released, expired or "
                                              "fenced); its data was discarded")));
      return;
    }
    if (in->state != IncomingState::kActive) {
      // Fencing: the sender flushed before DONE, so the transfer is quiescent now.
      SendTo(sender, MsgType::kDoneAck, h.session_id, h.transfer_id,
             absl::CancelledError(absl::StrCat("transfer ", h.transfer_id,
                                               " was fenced before its completion arrived")));
      Quiesce(h.transfer_id, absl::CancelledError("fenced"));
      return;
    }
    const absl::Status verdict = Verify(*in, h);
    SendTo(sender, MsgType::kDoneAck, h.session_id, h.transfer_id, verdict);
    if (!verdict.ok()) {
      Quiesce(h.transfer_id, verdict);
      return;
    }
    TransferCompletion completion;
    completion.transfer_id = h.transfer_id;
    completion.bytes = h.bytes;
    completion.checksum = h.checksum;
    completion.verified =
        !in->expected.verify_ranges.empty() && !in->expected.caller_verifies_checksum;
    completion.payload = payload;
    Quiesce(h.transfer_id, std::move(completion));
  }

  void OnFenced(const WireHeader& h, const std::string& body) {
    Incoming* in = FindIncoming(h);
    if (in == nullptr) return;
    const absl::Status status = StatusFromWire(h.code, body);
    if (status.ok()) {
      Quiesce(h.transfer_id, absl::CancelledError(absl::StrCat("transfer ", h.transfer_id,
                                                               " was fenced by the receiver")));
      return;
    }
    in->state = IncomingState::kUnsafe;
    in->unsafe_status = base::Annotate(status, "sender");
    NotifyWaiters(*in, in->unsafe_status);
  }

  void OnAbort(const WireHeader& h, const std::string& body) {
    if (FindIncoming(h) == nullptr) return;
    // Only sent after a successful flush: nothing of this transfer is in flight.
    Quiesce(h.transfer_id, absl::CancelledError(absl::StrCat("the sender abandoned transfer ",
                                                             h.transfer_id, ": ", body)));
  }

  // Returns a waiter when the answer depends on the sender, else the answer.
  absl::StatusOr<std::shared_ptr<std::promise<absl::Status>>> StartFence(uint64_t transfer_id,
                                                                         absl::Duration timeout) {
    auto it = incoming.find(transfer_id);
    if (it == incoming.end()) return nullptr;  // unknown: nothing can write
    Incoming& in = it->second;
    switch (in.state) {
      case IncomingState::kExpected:
        Quiesce(transfer_id, absl::CancelledError(absl::StrCat(
                                 "transfer ", transfer_id, " was fenced before a sender began")));
        return nullptr;
      case IncomingState::kUnsafe:
        return in.unsafe_status;
      case IncomingState::kActive:
      case IncomingState::kFencing:
        break;
    }
    if (in.data_via_am) {
      // Only our own progress thread writes for this transfer, and from now on it refuses:
      // quiescent at once, whatever the sender's state. It is told, to stop wasting bandwidth.
      SendTo(in.sender_address, MsgType::kFence, in.session_id, transfer_id, absl::OkStatus());
      Quiesce(transfer_id, absl::CancelledError(absl::StrCat("transfer ", transfer_id,
                                                             " was fenced by the receiver")));
      return nullptr;
    }
    if (!in.sender_lost.ok()) return in.sender_lost;
    in.state = IncomingState::kFencing;
    auto waiter = std::make_shared<std::promise<absl::Status>>();
    in.waiters.push_back({absl::Now() + timeout, waiter});
    SendTo(in.sender_address, MsgType::kFence, in.session_id, transfer_id, absl::OkStatus());
    return waiter;
  }

  // ---------------------------------------------------------------- timers, shutdown

  // Applies expired deadlines; returns the next one.
  absl::Time CheckTimers(absl::Time now) {
    absl::Time next = absl::InfiniteFuture();
    std::vector<uint64_t> expired;
    for (auto& [id, s] : sessions) {
      if (s.resolved || s.state == SessionState::kClosing) continue;
      if (s.state == SessionState::kFlushing && s.flush_purpose == FlushPurpose::kFail) {
        if (now >= s.fail_deadline) expired.push_back(id);
        next = std::min(next, s.fail_deadline);
      } else {
        const absl::Time due = s.state == SessionState::kBeginning ? s.begin_deadline : s.deadline;
        if (now >= due) expired.push_back(id);
        next = std::min(next, due);
      }
    }
    for (uint64_t id : expired) {
      Session* s = FindSession(id);
      if (s == nullptr || s->resolved || s->state == SessionState::kClosing) continue;
      if (s->state == SessionState::kFlushing && s->flush_purpose == FlushPurpose::kFail) {
        ForceClose(*s);  // the grace flush did not complete
      } else {
        // A BEGIN still queued means UCX never connected: name that, so a receiver that cannot
        // reach us (a one-way route) is not mistaken for one that did not answer.
        const bool never_connected = s->state == SessionState::kBeginning && !s->begin_sent;
        FailSession(*s, absl::DeadlineExceededError(absl::StrCat(
                            "transfer ", s->transfer_id, " to ", s->peer_name, ": deadline passed ",
                            never_connected ? kNeverConnected : StateName(s->state))));
      }
    }
    for (auto& [tid, in] : incoming) {
      for (auto w = in.waiters.begin(); w != in.waiters.end();) {
        if (now >= w->deadline) {
          w->promise->set_value(absl::DeadlineExceededError(
              absl::StrCat("the sender of transfer ", tid,
                           " did not confirm the fence in time; the memory may still be written: "
                           "quarantine it")));
          w = in.waiters.erase(w);
        } else {
          next = std::min(next, w->deadline);
          ++w;
        }
      }
    }
    return next;
  }

  static constexpr const char* kNeverConnected =
      "before its request left this worker: UCX still held it, its connection to the receiver "
      "not up (the receiver must be able to reach every address this worker advertises)";

  static const char* StateName(SessionState state) {
    switch (state) {
      case SessionState::kBeginning:
        return "waiting for the receiver to accept";
      case SessionState::kOpen:
        return "while writing";
      case SessionState::kFlushing:
        return "while waiting for writes to complete";
      case SessionState::kAwaitAck:
        return "waiting for the receiver's acknowledgement";
      case SessionState::kClosing:
      case SessionState::kResolved:
        return "after the end";
    }
    return "";
  }

  void ShutdownOnProgressThread() {
    {
      absl::MutexLock lock(&queue_mu);
      accepting = false;
    }
    RunCommands();
    RunDeferred();
    const absl::Status shutting_down = absl::CancelledError("the transfer engine shut down");
    std::vector<uint64_t> ids;
    for (auto& [id, s] : sessions) ids.push_back(id);
    for (uint64_t id : ids) {
      Session* s = FindSession(id);
      if (s == nullptr) continue;
      if (s->state == SessionState::kBeginning) {
        s->begin_waiter->set_value(shutting_down);
        sessions.erase(id);
        continue;
      }
      s->has_callback = true;  // an outcome nobody asked for yet is dropped
      Resolve(*s, s->pending_failure.ok() ? shutting_down : s->pending_failure, s->unflushed);
      if (Session* left = FindSession(id)) MaybeDeliver(*left);
    }
    std::vector<uint64_t> tids;
    for (auto& [tid, in] : incoming) tids.push_back(tid);
    for (uint64_t tid : tids) {
      Incoming in = std::move(incoming.at(tid));
      incoming.erase(tid);
      NotifyWaiters(in, absl::CancelledError(
                            "the transfer engine shut down while fencing; quarantine the memory"));
      if (in.on_complete) in.on_complete(shutting_down);
    }
    for (auto& [id, peer] : peers) CloseForShutdown(peer);
    const absl::Time give_up = absl::Now() + options.shutdown_timeout;
    while (!peers.empty() && absl::Now() < give_up) {
      ucp_worker_progress(worker.get());
      RunDeferred();
    }
    if (!peers.empty()) {
      GKA_LOG(WARNING) << "transfer: " << peers.size() << " endpoints did not close within "
                       << absl::FormatDuration(options.shutdown_timeout);
    }
    // Operations stuck on dead peers: hand the requests back (UCX requires it before the
    // worker goes; it invokes no callback for a released request).
    for (PendingOp* op : inflight) {
      ucp_request_free(op->request);
      delete op;
    }
    inflight.clear();
  }
};

// ---------------------------------------------------------------------------------------
// MemoryRegion and OutgoingTransfer handles

namespace {

class UcxMemoryRegion final : public MemoryRegion {
 public:
  UcxMemoryRegion(UcxTransferEngine::Impl* impl, ucx::UcpMemHandle memh, void* addr,
                  uint64_t length, MemoryKind kind, std::string rkey)
      : impl_(impl), memh_(std::move(memh)), addr_(addr), length_(length), kind_(kind) {
    remote_ = RemoteRegion{reinterpret_cast<uint64_t>(addr), length, std::move(rkey)};
    ++impl_->live_regions;
  }
  ~UcxMemoryRegion() override {
    // Registrations belong to the context the progress thread owns.
    impl_
        ->RunSync([this] {
          impl_->registered.erase(reinterpret_cast<uint64_t>(addr_));
          memh_.Reset();
          return absl::OkStatus();
        })
        .IgnoreError();
    --impl_->live_regions;
  }
  void* addr() const override { return addr_; }
  uint64_t length() const override { return length_; }
  MemoryKind kind() const override { return kind_; }
  const RemoteRegion& remote() const override { return remote_; }

 private:
  UcxTransferEngine::Impl* impl_;
  ucx::UcpMemHandle memh_;
  void* addr_;
  uint64_t length_;
  MemoryKind kind_;
  RemoteRegion remote_;
};

class UcxOutgoingTransfer final : public OutgoingTransfer {
 public:
  UcxOutgoingTransfer(UcxTransferEngine::Impl* impl, uint64_t session_id, uint64_t transfer_id,
                      TransferTarget target)
      : impl_(impl),
        session_id_(session_id),
        transfer_id_(transfer_id),
        target_(std::move(target)) {
    ++impl_->live_transfers;
  }

  ~UcxOutgoingTransfer() override {
    if (!finished_) {
      auto* impl = impl_;
      const uint64_t id = session_id_;
      impl_->Post([impl, id] { impl->CancelSession(id, nullptr); });
    }
    --impl_->live_transfers;
  }

  absl::Status Put(const TransferDescriptor& descriptor) override {
    if (finished_) {
      return absl::FailedPreconditionError(
          absl::StrCat("transfer ", transfer_id_, ": Put after Finish or Cancel"));
    }
    GKA_RETURN_IF_ERROR(ValidateDescriptor(descriptor, target_));
    GKA_RETURN_IF_ERROR(impl_->RunSync([&] { return impl_->PostPuts(session_id_, descriptor); }));
    for (const Segment& s : descriptor.segments) {
      ranges_.push_back(ChecksumRange{s.remote_addr, s.local, s.length});
      bytes_ += s.length;
    }
    return absl::OkStatus();
  }

  void Finish(std::string payload, OutcomeCallback on_outcome) override {
    if (finished_) return on_outcome(Misuse("Finish"));
    finished_ = true;
    const uint32_t segments = static_cast<uint32_t>(ranges_.size());
    // Hashing the sources here overlaps it with the puts still moving.
    absl::StatusOr<uint64_t> checksum = supplied_checksum_.has_value()
                                            ? absl::StatusOr<uint64_t>(*supplied_checksum_)
                                            : ChecksumInAddressOrder(std::move(ranges_));
    if (payload.size() > kMaxPayloadBytes) {
      checksum = absl::InvalidArgumentError(absl::StrCat("completion payload of ", payload.size(),
                                                         " bytes exceeds ", kMaxPayloadBytes));
    }
    PostOrFail(
        [impl = impl_, id = session_id_, checksum = std::move(checksum), bytes = bytes_, segments,
         payload = std::move(payload)](OutcomeCallback cb) mutable {
          impl->FinishSession(id, std::move(checksum), bytes, segments, std::move(payload),
                              std::move(cb));
        },
        std::move(on_outcome));
  }

  void Cancel(OutcomeCallback on_outcome) override {
    if (finished_) return on_outcome(Misuse("Cancel"));
    finished_ = true;
    PostOrFail([impl = impl_, id = session_id_](
                   OutcomeCallback cb) mutable { impl->CancelSession(id, std::move(cb)); },
               std::move(on_outcome));
  }

  uint64_t transfer_id() const override { return transfer_id_; }

 private:
  TransferOutcome Misuse(absl::string_view what) const {
    TransferOutcome outcome;
    outcome.status = absl::FailedPreconditionError(
        absl::StrCat("transfer ", transfer_id_, ": ", what, " after Finish or Cancel"));
    return outcome;
  }

  template <typename F>
  void PostOrFail(F fn, OutcomeCallback on_outcome) {
    auto shared = std::make_shared<OutcomeCallback>(std::move(on_outcome));
    const bool posted =
        impl_->Post([fn = std::move(fn), shared]() mutable { fn(std::move(*shared)); });
    if (!posted) {
      // The engine is going away: it cannot say whether puts were in flight.
      TransferOutcome outcome;
      outcome.status = absl::CancelledError("the transfer engine is shutting down");
      outcome.remote_may_be_written = true;
      (*shared)(std::move(outcome));
    }
  }

  UcxTransferEngine::Impl* impl_;
  const uint64_t session_id_;
  const uint64_t transfer_id_;
  const TransferTarget target_;
  std::vector<ChecksumRange> ranges_;
  uint64_t bytes_ = 0;
  bool finished_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------
// UcxTransferEngine

absl::StatusOr<std::unique_ptr<UcxTransferEngine>> UcxTransferEngine::Create(
    const UcxOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->detect_peer_failure = UsePeerErrorHandling(options);
  impl->data_via_am = !UsePuts(options);
  GKA_ASSIGN_OR_RETURN(ucx::UcpConfig config, ucx::ReadConfig(options.transports));
  const std::string keepalive =
      absl::StrCat(absl::ToInt64Milliseconds(options.keepalive_interval), "ms");
  if (ucs_status_t s = ucp_config_modify(config.get(), "KEEPALIVE_INTERVAL", keepalive.c_str());
      s != UCS_OK) {
    return UcsError(s, "setting UCX_KEEPALIVE_INTERVAL");
  }

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = options.name.c_str();
  ucp_context_h context = nullptr;
  ucs_status_t status = ucp_init(&params, config.get(), &context);
  if (status != UCS_OK) {
    return base::Annotate(
        UcsError(status, "ucp_init"),
        absl::StrCat("starting UCX with transports '",
                     options.transports.empty() ? "(UCX_TLS or default)" : options.transports,
                     "'"));
  }
  impl->context.reset(context);

  ucp_context_attr_t attr{};
  attr.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
  if (ucp_context_query(context, &attr) == UCS_OK) {
    impl->supports_cuda = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
  }

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // Only the progress thread touches the worker.
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h worker = nullptr;
  status = ucp_worker_create(context, &worker_params, &worker);
  if (status != UCS_OK) {
    return UcsError(status, "creating a UCX worker (no usable transport for RMA + AM?)");
  }
  impl->worker.reset(worker);
  if (ucp_worker_get_efd(worker, &impl->ucp_efd) != UCS_OK) impl->ucp_efd = -1;
  GKA_ASSIGN_OR_RETURN(impl->address, ucx::WorkerAddressBytes(worker));

  ucp_am_handler_param_t am{};
  am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                  UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  am.id = kAmId;
  am.cb = &Impl::OnAm;
  am.arg = impl.get();
  am.flags = UCP_AM_FLAG_WHOLE_MSG;
  status = ucp_worker_set_am_recv_handler(worker, &am);
  if (status != UCS_OK) return UcsError(status, "registering the transfer message handler");

  impl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl->wake_fd < 0) {
    return absl::ResourceExhaustedError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<UcxTransferEngine>(new UcxTransferEngine(std::move(impl)));
}

UcxTransferEngine::UcxTransferEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UcxTransferEngine::~UcxTransferEngine() {
  GKA_CHECK(impl_->live_regions.load() == 0)
      << impl_->live_regions.load() << " memory regions outlive their transfer engine";
  GKA_CHECK(impl_->live_transfers.load() == 0)
      << impl_->live_transfers.load() << " outgoing transfers outlive their transfer engine";
  impl_->stop_requested.store(true);
  impl_->Wake();
  impl_->thread.join();
  // Members go in reverse order: the worker before the context.
}

const std::string& UcxTransferEngine::WorkerAddress() const { return impl_->address; }

bool UcxTransferEngine::SupportsCuda() const { return impl_->supports_cuda; }

absl::StatusOr<std::unique_ptr<MemoryRegion>> UcxTransferEngine::RegisterMemory(void* addr,
                                                                                uint64_t length,
                                                                                MemoryKind kind) {
  if (addr == nullptr || length == 0) {
    return absl::InvalidArgumentError("cannot register an empty memory range");
  }
  if (kind == MemoryKind::kCuda && !impl_->supports_cuda) {
    return absl::FailedPreconditionError(
        "this UCX build has no CUDA memory support: stage device memory through pinned host "
        "memory");
  }
  Impl* impl = impl_.get();
  return impl->RunSync([&]() -> absl::StatusOr<std::unique_ptr<MemoryRegion>> {
    ucp_mem_map_params_t params{};
    params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                        UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    params.address = addr;
    params.length = length;
    params.memory_type = kind == MemoryKind::kCuda ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
    ucp_mem_h memh = nullptr;
    const ucs_status_t status = ucp_mem_map(impl->context.get(), &params, &memh);
    if (status != UCS_OK) {
      return UcsError(status, absl::StrCat("registering ", length, " bytes with UCX"));
    }
    ucx::UcpMemHandle handle(impl->context.get(), memh);
    GKA_ASSIGN_OR_RETURN(std::string rkey, ucx::PackRkey(impl->context.get(), memh));
    // The active-message path copies with the CPU, so only host memory is writable by it.
    if (kind == MemoryKind::kHost) impl->registered[reinterpret_cast<uint64_t>(addr)] = length;
    return std::unique_ptr<MemoryRegion>(
        new UcxMemoryRegion(impl, std::move(handle), addr, length, kind, std::move(rkey)));
  });
}

absl::StatusOr<std::unique_ptr<OutgoingTransfer>> UcxTransferEngine::StartTransfer(
    const TransferTarget& target, uint64_t transfer_id, absl::Time deadline) {
  if (impl_->OnProgressThread()) {
    return absl::FailedPreconditionError(
        "StartTransfer blocks; it cannot be called from a transfer callback");
  }
  if (deadline == absl::InfiniteFuture()) {
    return absl::InvalidArgumentError(
        absl::StrCat("transfer ", transfer_id, " needs a finite deadline (the ticket's lease)"));
  }
  if (absl::Now() >= deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat("transfer ", transfer_id, ": deadline passed before it started"));
  }
  Impl* impl = impl_.get();
  uint64_t session_id = 0;
  GKA_ASSIGN_OR_RETURN(std::shared_ptr<std::promise<absl::Status>> accepted, impl->RunSync([&] {
    return impl->BeginSession(target, transfer_id, deadline, &session_id);
  }));
  GKA_RETURN_IF_ERROR(accepted->get_future().get());
  return std::unique_ptr<OutgoingTransfer>(
      new UcxOutgoingTransfer(impl, session_id, transfer_id, target));
}

absl::Status UcxTransferEngine::Expect(ExpectedTransfer expected, CompletionCallback on_complete) {
  Impl* impl = impl_.get();
  return impl->RunSync(
      [&] { return impl->AddExpectation(std::move(expected), std::move(on_complete)); });
}

absl::Status UcxTransferEngine::Fence(uint64_t transfer_id, absl::Duration timeout) {
  if (impl_->OnProgressThread()) {
    return absl::FailedPreconditionError(
        "Fence blocks; it cannot be called from a transfer callback");
  }
  Impl* impl = impl_.get();
  GKA_ASSIGN_OR_RETURN(std::shared_ptr<std::promise<absl::Status>> waiter,
                       impl->RunSync([&] { return impl->StartFence(transfer_id, timeout); }));
  if (waiter == nullptr) return absl::OkStatus();
  return waiter->get_future().get();
}

}  // namespace gka::transfer::ucx
