// The state a Client shares with its calls: options, channel, stub, request-id source.
//
// Owns: the gRPC channel and the GenerateService stub. Held by shared_ptr by the Client and
// by every call in flight, so calls may outlive the Client. Internal to the SDK.
//
// Thread-safety: immutable after construction except the request-id counter (atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "gka/sdk/client.h"
#include "gka/serving/v1/serving.grpc.pb.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace gka::sdk {

namespace internal {

// True on a thread while it runs one of the SDK's gRPC reactions (reactor or alarm callbacks,
// user callbacks included).
bool InGrpcReaction();

// Marks the current thread as running a gRPC reaction for its lifetime.
class GrpcReactionScope {
 public:
  GrpcReactionScope();
  ~GrpcReactionScope();
  GrpcReactionScope(const GrpcReactionScope&) = delete;
  GrpcReactionScope& operator=(const GrpcReactionScope&) = delete;

 private:
  const bool outer_;
};

}  // namespace internal

class Client::Core {
 public:
  explicit Core(const ClientOptions& options);
  // On a thread running one of the SDK's gRPC reactions, hands the channel to a short-lived
  // thread to destroy: with the callback API on Linux, the last channel releases gRPC's
  // shared callback completion queue and joins its threads — one of which would be this
  // one (gRPC then aborts in grpc_cq_internal_unref). That happens when a call's last
  // reference, and with it the Client's, drops inside its own OnDone.
  ~Core();

  const ClientOptions& options() const { return options_; }
  grpc::Channel& channel() { return *channel_; }
  serving::v1::GenerateService::Stub& stub() { return *stub_; }

  // "sdk-<random>-<n>", unique per client and (with overwhelming odds) across clients.
  std::string NewRequestId();
  absl::Time DeadlineFor(const CallOptions& call, absl::Time now) const;
  const RetryPolicy& RetryFor(const CallOptions& call) const;
  // Deadline and API key on a fresh context for one attempt.
  void Prepare(grpc::ClientContext& ctx, absl::Time deadline) const;

 private:
  const ClientOptions options_;
  const std::string api_key_;  // options_.api_key, or $GKA_API_KEY when unset
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<serving::v1::GenerateService::Stub> stub_;
  const std::string id_prefix_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace gka::sdk
