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

class Client::Core {
 public:
  explicit Core(const ClientOptions& options);

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
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<serving::v1::GenerateService::Stub> stub_;
  const std::string id_prefix_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace gka::sdk
