// A fake gkaserve router for SDK tests and examples: a real gRPC server on 127.0.0.1 that
// serves gka.serving.v1.GenerateService with scripted streams and failures.
//
// Owns: the gRPC server (plaintext with an optional API key, or TLS) and the service with
// its queue of scripts and its record of what clients did. Test-only; never installed.
//
//   GKA_ASSIGN_OR_RETURN(auto fake, gka::sdk::testing::FakeRouter::Start({}));
//   fake->service().Push({.end = FakeScript::kStatus, .code = absl::StatusCode::kUnavailable});
//   ... a client on fake->address() ...
//   EXPECT_TRUE(fake->service().WaitForCancelled("req-1", absl::Seconds(5)));
//
// Unscripted calls echo: text input T answers "echo: T", chat answers "you said: <last
// message>", token ids answer "tokens: <n>"; one token per word, max_tokens honoured. Tiers
// other than "", "standard", "interactive" and "batch" get INVALID_ARGUMENT, as from the
// router.
//
// Thread-safety: every method is thread-safe; handlers run on gRPC's sync thread pool.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gka/serving/v1/serving.grpc.pb.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace gka::rpc {
class GrpcServer;
}  // namespace gka::rpc

namespace gka::sdk::testing {

// What one Generate call does.
struct FakeScript {
  enum End {
    kFinal,   // a Final message, status OK
    kError,   // an Error message, then the same code as the call's status
    kStatus,  // only a non-OK call status (transport-like failure), no Error message
    kHang,    // nothing more until the client cancels or its deadline passes
  };
  // Tokens streamed before the end (empty with kFinal: the echo reply).
  std::vector<std::string> tokens;
  absl::Duration first_token_delay = absl::ZeroDuration();
  absl::Duration token_interval = absl::ZeroDuration();
  End end = kFinal;
  absl::StatusCode code = absl::StatusCode::kUnavailable;  // kError, kStatus
  std::string message = "scripted failure";
  bool retryable = true;  // kError
  std::map<std::string, std::string> trailing_metadata;
};

class FakeGenerateService final : public serving::v1::GenerateService::Service {
 public:
  // Queues a script for the next unscripted Generate call (FIFO).
  void Push(FakeScript script);
  // The next `count` unary calls (Tokenize, GetModelInfo, Abort) fail with `code`.
  void FailUnary(int count, absl::StatusCode code);

  int generate_calls() const;
  int unary_calls() const;
  std::vector<serving::v1::GenerateRequest> requests() const;
  // Request ids whose call ended because the client cancelled or its deadline passed.
  std::set<std::string> cancelled() const;
  bool WaitForCancelled(const std::string& request_id, absl::Duration timeout) const;

  grpc::Status Generate(grpc::ServerContext* ctx, const serving::v1::GenerateRequest* request,
                        grpc::ServerWriter<serving::v1::GenerateResponse>* writer) override;
  grpc::Status Abort(grpc::ServerContext* ctx, const serving::v1::AbortRequest* request,
                     serving::v1::AbortResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx,
                            const serving::v1::GetModelInfoRequest* request,
                            serving::v1::GetModelInfoResponse* response) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const serving::v1::TokenizeRequest* request,
                        serving::v1::TokenizeResponse* response) override;

 private:
  FakeScript NextScript(const serving::v1::GenerateRequest& request);
  grpc::Status UnaryFailure();
  // Sleeps `d` in small steps; false when the client went away or the request was aborted.
  bool Pause(grpc::ServerContext* ctx, const std::string& id, absl::Duration d);
  bool Aborted(const std::string& id) const;

  mutable absl::Mutex mu_;
  std::deque<FakeScript> scripts_ ABSL_GUARDED_BY(mu_);
  int unary_failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::StatusCode unary_failure_code_ ABSL_GUARDED_BY(mu_) = absl::StatusCode::kUnavailable;
  int generate_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int unary_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<serving::v1::GenerateRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> running_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> aborted_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> cancelled_ ABSL_GUARDED_BY(mu_);
};

struct FakeRouterOptions {
  std::string address = "127.0.0.1:0";
  // Plaintext only: calls must carry "authorization: Bearer <api_key>".
  std::string api_key;
  // Both set: serve TLS with this certificate chain and key (PEM).
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

class FakeRouter {
 public:
  static absl::StatusOr<std::unique_ptr<FakeRouter>> Start(const FakeRouterOptions& options);
  ~FakeRouter();

  // "127.0.0.1:<port>".
  const std::string& address() const { return address_; }
  FakeGenerateService& service() { return service_; }
  // Stops serving; calls in flight are cancelled after `grace`. Idempotent.
  void Shutdown(absl::Duration grace = absl::ZeroDuration());

 private:
  FakeRouter() = default;

  FakeGenerateService service_;
  std::unique_ptr<rpc::GrpcServer> plain_;
  std::unique_ptr<grpc::Server> tls_;
  std::string address_;
};

}  // namespace gka::sdk::testing
