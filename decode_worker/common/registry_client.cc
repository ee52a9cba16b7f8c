#include "decode_worker/common/registry_client.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/status.h"

namespace gka::worker_common {

std::vector<std::string> SplitAddressList(absl::string_view list) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(list, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

namespace {

// "host:port" / "[v6]:port" -> host and port; INVALID_ARGUMENT when malformed.
absl::Status SplitHostPort(absl::string_view host_port, std::string& host, int& port_number) {
  absl::string_view port;
  if (!host_port.empty() && host_port.front() == '[') {
    const size_t close = host_port.find(']');
    if (close == absl::string_view::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("router service '", host_port, "' is not [ipv6]:port"));
    }
    host = std::string(host_port.substr(1, close - 1));
    port = host_port.substr(close + 2);
  } else {
    const size_t colon = host_port.rfind(':');
    if (colon == absl::string_view::npos || host_port.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("router service '", host_port, "' is not host:port"));
    }
    host = std::string(host_port.substr(0, colon));
    port = host_port.substr(colon + 1);
  }
  if (host.empty() || !absl::SimpleAtoi(port, &port_number) || port_number <= 0 ||
      port_number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("router service '", host_port, "' needs a host and a port in 1..65535"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ResolveAllAddresses(absl::string_view host_port) {
  std::string host;
  int port_number = 0;
  GKA_RETURN_IF_ERROR(SplitHostPort(host_port, host, port_number));
  const std::string port = absl::StrCat(port_number);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("resolving router service '", host_port, "': ", gai_strerror(rc)));
  }
  std::set<std::string> v4, v6;
  for (const addrinfo* a = list; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr, text,
                sizeof(text));
      v4.insert(absl::StrCat(text, ":", port_number));
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr, text,
                sizeof(text));
      v6.insert(absl::StrCat("[", text, "]:", port_number));
    }
  }
  freeaddrinfo(list);
  // One family: on a dual-stack name each router has an A and an AAAA record, and two
  // memberships with one router would register the worker there twice.
  const std::set<std::string>& addresses = v4.empty() ? v6 : v4;
  if (addresses.empty()) {
    return absl::UnavailableError(
        absl::StrCat("router service '", host_port, "' resolves to no IP address"));
  }
  return std::vector<std::string>(addresses.begin(), addresses.end());
}

// One router: register, heartbeat, re-register, deregister — on its own thread, so a router
// that does not answer (rpc_timeout per call) never delays the others.
class RegistryClient::Membership {
 public:
  // `server_name`: the name the router's certificate carries when `address` was resolved from
  // it ("" for an address given as is).
  Membership(std::string address, std::string server_name, RegistryClient& owner)
      : address_(std::move(address)),
        server_name_(std::move(server_name)),
        owner_(owner),
        stub_(NewStub()),
        interval_(owner.options_.heartbeat_interval) {
    thread_ = std::thread([this] { Run(); });
  }

  // Stops the thread, then deregisters (best effort).
  ~Membership() {
    RequestStop();
    if (thread_.joinable()) thread_.join();
    Deregister();
  }

  std::unique_ptr<wpb::WorkerRegistry::Stub> NewStub() const {
    rpc::ChannelOptions channel = owner_.options_.channel;
    // An explicit --tls-server-name wins over the Service name an address was resolved from.
    if (!server_name_.empty() && channel.tls_server_name.empty()) {
      channel.tls_server_name = server_name_;
    }
    return wpb::WorkerRegistry::NewStub(rpc::CreateChannel(address_, channel));
  }

  // After UNAVAILABLE (refused) or DEADLINE_EXCEEDED (an address nobody answers): the next
  // call goes over a new channel, which connects at once.
  void Reconnect(const absl::Status& s) {
    if (s.code() == absl::StatusCode::kUnavailable ||
        s.code() == absl::StatusCode::kDeadlineExceeded) {
      stub_ = NewStub();
    }
  }

  // Lets the thread finish its current call and exit; the destructor joins. Calling this on
  // every membership first lets them wind down in parallel.
  void RequestStop() {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }

  bool registered() const {
    absl::MutexLock lock(&mu_);
    return registered_;
  }
  std::string worker_id() const {
    absl::MutexLock lock(&mu_);
    return worker_id_;
  }

 private:
  void Run() {
    while (true) {
      bool registered;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        registered = registered_;
      }
      // A fresh registration reports load at once, so the router sees capacity before the
      // first period passes; a router that forgot us is answered with a registration at once.
      if (registered || Register()) {
        Heartbeat();
        if (!this->registered() && Register()) Heartbeat();
      }
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), interval_);
    }
  }

  bool Register() {
    const RegistryClientOptions& options = owner_.options_;
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, options.rpc_timeout);
    wpb::RegisterResponse response;
    const absl::Status s =
        rpc::FromGrpcStatus(stub_->Register(&ctx, options.registration, &response), "Register");
    if (!s.ok()) {
      GKA_LOG(WARNING) << "registering with the router at " << address_ << ": " << s
                       << " (retrying)";
      Reconnect(s);
      return false;
    }
    absl::MutexLock lock(&mu_);
    registered_ = true;
    worker_id_ =
        response.worker_id().empty() ? options.registration.worker_id() : response.worker_id();
    if (response.heartbeat_interval_ms() > 0) {
      interval_ = absl::Milliseconds(response.heartbeat_interval_ms());
    }
    ++owner_.registrations_;
    GKA_LOG(INFO) << "registered with the router at " << address_ << " as " << worker_id_
                  << ", heartbeat every " << interval_;
    return true;
  }

  void Heartbeat() {
    wpb::HeartbeatRequest request;
    request.set_worker_id(worker_id());
    *request.mutable_load() = owner_.load_();
    request.set_draining(owner_.draining_);
    request.set_unix_ms(absl::ToUnixMillis(absl::Now()));
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, owner_.options_.rpc_timeout);
    wpb::HeartbeatResponse response;
    const absl::Status s =
        rpc::FromGrpcStatus(stub_->Heartbeat(&ctx, request, &response), "Heartbeat");
    Reconnect(s);
    if (s.ok() && owner_.options_.on_num_iter_caps) {
      const std::map<std::string, int32_t> caps(response.decode_num_iter_caps().begin(),
                                                response.decode_num_iter_caps().end());
      owner_.options_.on_num_iter_caps(address_, caps);
    }
    absl::MutexLock lock(&mu_);
    if (!s.ok()) {
      // NOT_FOUND: a router that answers this way forgot us too. Anything else (router down):
      // keep heartbeating; it tells us to re-register when it is back without our record.
      if (s.code() == absl::StatusCode::kNotFound) registered_ = false;
      GKA_LOG(WARNING) << "heartbeat to " << address_ << ": " << s;
      return;
    }
    ++owner_.heartbeats_;
    if (response.heartbeat_interval_ms() > 0) {
      interval_ = absl::Milliseconds(response.heartbeat_interval_ms());
    }
    if (response.reregister()) {
      GKA_LOG(INFO) << "the router at " << address_ << " forgot worker " << worker_id_
                    << ": registering again";
      registered_ = false;
    }
  }

  void Deregister() {
    std::string id;
    {
      absl::MutexLock lock(&mu_);
      if (!registered_) return;
      id = worker_id_;
      registered_ = false;
    }
    wpb::DeregisterRequest request;
    request.set_worker_id(id);
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, absl::Milliseconds(500));
    wpb::DeregisterResponse response;
    const absl::Status s =
        rpc::FromGrpcStatus(stub_->Deregister(&ctx, request, &response), "Deregister");
    if (!s.ok()) {
      GKA_LOG(WARNING) << "deregistering " << id << " from " << address_ << ": " << s;
    }
  }

  const std::string address_;
  const std::string server_name_;
  RegistryClient& owner_;
  // Used by the membership thread only (and by Deregister after it stopped).
  std::unique_ptr<wpb::WorkerRegistry::Stub> stub_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  absl::Duration interval_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts after every member above is initialised
};

absl::StatusOr<std::unique_ptr<RegistryClient>> RegistryClient::Start(
    const RegistryClientOptions& options, LoadFn load) {
  if (options.router_addresses.empty() && options.router_services.empty()) {
    return absl::InvalidArgumentError("the registry client needs a router address or service");
  }
  for (const std::string& service : options.router_services) {
    std::string host;
    int port = 0;
    GKA_RETURN_IF_ERROR(SplitHostPort(service, host, port));
  }
  std::unique_ptr<RegistryClient> client(new RegistryClient(options, std::move(load)));
  // A service not resolvable yet (no router pod exists) is tried again by the resolver thread.
  client->Reconcile(client->ResolveServices().resolved);
  if (!options.router_services.empty()) {
    client->resolver_ = std::thread([c = client.get()] { c->ResolveLoop(); });
  }
  return client;
}

RegistryClient::RegistryClient(const RegistryClientOptions& options, LoadFn load)
    : options_(options), load_(std::move(load)) {}

RegistryClient::~RegistryClient() {
  std::map<std::string, std::unique_ptr<Membership>> members;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (resolver_.joinable()) resolver_.join();
  {
    absl::MutexLock lock(&mu_);
    members.swap(members_);
  }
  for (auto& [address, m] : members) m->RequestStop();
  members.clear();  // joins each thread, then deregisters from that router
}

RegistryClient::Resolution RegistryClient::ResolveServices() const {
  Resolution r;
  for (const std::string& service : options_.router_services) {
    absl::StatusOr<std::vector<std::string>> addresses = ResolveAllAddresses(service);
    if (!addresses.ok()) {
      GKA_LOG(WARNING) << addresses.status() << " (trying again in " << options_.resolve_interval
                       << ")";
      r.complete = false;
      continue;
    }
    std::string host;
    int port = 0;
    SplitHostPort(service, host, port).IgnoreError();  // valid: it just resolved
    for (const std::string& a : *addresses) r.resolved.emplace(a, host);
  }
  return r;
}

void RegistryClient::Reconcile(const std::map<std::string, std::string>& resolved) {
  // address -> TLS server name ("" for the addresses given as they are).
  std::map<std::string, std::string> want = resolved;
  for (const std::string& a : options_.router_addresses) want[a] = "";
  std::vector<std::unique_ptr<Membership>> leaving;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = members_.begin(); it != members_.end();) {
      if (want.count(it->first) == 0) {
        GKA_LOG(INFO) << "router " << it->first << " left the router service: deregistering";
        leaving.push_back(std::move(it->second));
        it = members_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [address, server_name] : want) {
      if (members_.count(address) != 0) continue;
      members_.emplace(address, std::make_unique<Membership>(address, server_name, *this));
    }
  }
  for (auto& m : leaving) m->RequestStop();
  leaving.clear();
}

void RegistryClient::ResolveLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.resolve_interval)) return;
    }
    // A failed lookup keeps the current routers (a DNS hiccup must not drop them all).
    const Resolution r = ResolveServices();
    if (r.complete) Reconcile(r.resolved);
  }
}

bool RegistryClient::registered() const {
  absl::MutexLock lock(&mu_);
  return std::any_of(members_.begin(), members_.end(),
                     [](const auto& m) { return m.second->registered(); });
}

std::string RegistryClient::worker_id() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [address, m] : members_) {
    std::string id = m->worker_id();
    if (!id.empty()) return id;
  }
  return "";
}

std::vector<std::string> RegistryClient::routers() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [address, m] : members_) out.push_back(address);
  return out;
}

void RegistryClient::SetDraining() { draining_ = true; }

}  // namespace gka::worker_common
