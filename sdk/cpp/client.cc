#include "gka/sdk/client.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <deque>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/base/status.h"
#include "common/rpc/auth.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/tls.h"
#include "sdk/cpp/client_core.h"
#include "sdk/cpp/convert.h"
#include "sdk/cpp/retry.h"
#include "sdk/cpp/stream_call.h"

namespace gka::sdk {

namespace pb = ::gka::serving::v1;
using internal::CallObserver;
using internal::StreamCall;

namespace {

std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& o) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(o.max_message_bytes);
  args.SetMaxSendMessageSize(o.max_message_bytes);
  // rpc::CreateChannel's keepalive settings; it has no TLS, hence our own channel here.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetString(GRPC_ARG_PRIMARY_USER_AGENT_STRING, absl::StrCat("gkaserve-cpp-sdk/", Version()));
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (o.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = o.tls_root_certs_pem;
    ssl.pem_cert_chain = o.tls_cert_chain_pem;
    ssl.pem_private_key = o.tls_private_key_pem;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(o.address, creds, args);
}

// Pull style: chunks and the outcome queue up for the consumer thread.
class PullObserver final : public CallObserver {
 public:
  void OnChunk(const Chunk& chunk) override {
    absl::MutexLock lock(&mu_);
    chunks_.push_back(chunk);
  }
  void OnDone(absl::StatusOr<Result> result) override {
    absl::MutexLock lock(&mu_);
    outcome_ = std::move(result);
  }

  bool Next(Chunk* chunk) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](PullObserver* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
          return !self->chunks_.empty() || self->outcome_.has_value();
        },
        this));
    if (chunks_.empty()) return false;
    *chunk = std::move(chunks_.front());
    chunks_.pop_front();
    return true;
  }

  absl::StatusOr<Result> Finish() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](PullObserver* self)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) { return self->outcome_.has_value(); },
        this));
    if (finished_) return absl::FailedPreconditionError("Stream::Finish called twice");
    finished_ = true;
    chunks_.clear();
    return *std::move(outcome_);
  }

  bool done() {
    absl::MutexLock lock(&mu_);
    return outcome_.has_value();
  }

 private:
  absl::Mutex mu_;
  std::deque<Chunk> chunks_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::StatusOr<Result>> outcome_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// Callback style: user callbacks, and a flag Wait can block on.
class CallbackObserver final : public CallObserver {
 public:
  explicit CallbackObserver(StreamCallbacks callbacks) : callbacks_(std::move(callbacks)) {}

  void OnChunk(const Chunk& chunk) override {
    if (callbacks_.on_chunk) callbacks_.on_chunk(chunk);
  }
  void OnDone(absl::StatusOr<Result> result) override {
    if (callbacks_.on_done) callbacks_.on_done(std::move(result));
    absl::MutexLock lock(&mu_);
    done_ = true;
  }

  bool WaitUntil(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&done_), deadline);
  }

 private:
  const StreamCallbacks callbacks_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

// ------------------------------------------------------------------------------------------
// Client::Core

namespace {

std::string ApiKey(const ClientOptions& options) {
  if (options.api_key) return *options.api_key;
  const char* env = std::getenv("GKA_API_KEY");
  return env != nullptr ? env : "";
}

}  // namespace

Client::Core::Core(const ClientOptions& options)
    : options_(options),
      api_key_(ApiKey(options)),
      channel_(MakeChannel(options)),
      stub_(pb::GenerateService::NewStub(channel_)),
      id_prefix_(absl::StrFormat("sdk-%016x-", absl::Uniform<uint64_t>(absl::BitGen()))) {}

Client::Core::~Core() {
  if (!internal::InGrpcReaction()) return;
  std::thread([channel = std::move(channel_), stub = std::move(stub_)]() mutable {
    stub.reset();
    channel.reset();
  }).detach();
}

std::string Client::Core::NewRequestId() {
  return absl::StrCat(id_prefix_, next_id_.fetch_add(1, std::memory_order_relaxed));
}

absl::Time Client::Core::DeadlineFor(const CallOptions& call, absl::Time now) const {
  const absl::Duration timeout = call.timeout.value_or(options_.default_timeout);
  return timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : now + timeout;
}

const RetryPolicy& Client::Core::RetryFor(const CallOptions& call) const {
  return call.retry ? *call.retry : options_.retry;
}

void Client::Core::Prepare(grpc::ClientContext& ctx, absl::Time deadline) const {
  rpc::SetDeadline(ctx, deadline);
  rpc::AddBearerToken(ctx, api_key_);
}

// ------------------------------------------------------------------------------------------
// Stream and CallHandle

// call_ is null when the call could not start (the observer already holds the error).
class Stream::Impl {
 public:
  Impl(std::shared_ptr<StreamCall> call, std::shared_ptr<PullObserver> observer)
      : call_(std::move(call)), observer_(std::move(observer)) {}
  std::shared_ptr<StreamCall> call_;
  std::shared_ptr<PullObserver> observer_;
};

Stream::Stream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
// The call and its observer are shared, so nothing waits here: cancelling is enough.
Stream::~Stream() {
  if (!impl_->observer_->done()) Cancel();
}
bool Stream::Next(Chunk* chunk) { return impl_->observer_->Next(chunk); }
absl::StatusOr<Result> Stream::Finish() { return impl_->observer_->Finish(); }
void Stream::Cancel() {
  if (impl_->call_ != nullptr) impl_->call_->Cancel();
}
std::string Stream::request_id() const {
  return impl_->call_ != nullptr ? impl_->call_->request_id() : "";
}

class CallHandle::Impl {
 public:
  Impl(std::shared_ptr<StreamCall> call, std::shared_ptr<CallbackObserver> observer)
      : call_(std::move(call)), observer_(std::move(observer)) {}
  std::shared_ptr<StreamCall> call_;
  std::shared_ptr<CallbackObserver> observer_;
};

CallHandle::CallHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CallHandle::~CallHandle() {
  Cancel();
  // Inside a callback (this call's or another's) waiting could block gRPC's thread on itself.
  if (!internal::InGrpcReaction()) Wait();
}
void CallHandle::Cancel() {
  if (impl_->call_ != nullptr) impl_->call_->Cancel();
}
void CallHandle::Wait() { impl_->observer_->WaitUntil(absl::InfiniteFuture()); }
bool CallHandle::WaitFor(absl::Duration timeout) {
  return impl_->observer_->WaitUntil(absl::Now() + timeout);
}
std::string CallHandle::request_id() const {
  return impl_->call_ != nullptr ? impl_->call_->request_id() : "";
}

// ------------------------------------------------------------------------------------------
// Client

namespace {

// Runs a unary call with the client's deadline, API key and retry rule. `call` is
// (ClientContext&) -> grpc::Status and fills its own response.
template <typename Call>
absl::Status Unary(Client::Core& core, const CallOptions& options, Call call) {
  const absl::Time deadline = core.DeadlineFor(options, absl::Now());
  internal::Retrier retrier(core.RetryFor(options), deadline);
  for (;;) {
    retrier.BeginAttempt();
    grpc::ClientContext ctx;
    core.Prepare(ctx, deadline);
    const grpc::Status status = call(ctx);
    if (status.ok()) return absl::OkStatus();
    ErrorDetails details = internal::DetailsOf(status, nullptr, ctx);
    std::optional<absl::Duration> wait = retrier.NextWait(&details, false, absl::Now());
    if (!wait) return internal::MakeError(details);
    absl::SleepFor(*wait);
  }
}

}  // namespace

namespace {

// ClientOptions::tls's environment fallback (GKA_TLS_CA / GKA_TLS_CERT / GKA_TLS_KEY).
absl::StatusOr<ClientOptions> WithTlsFromEnvironment(ClientOptions options) {
  const char* ca = std::getenv("GKA_TLS_CA");
  if (options.tls || ca == nullptr || *ca == '\0') return options;
  options.tls = true;
  GKA_ASSIGN_OR_RETURN(options.tls_root_certs_pem, rpc::ReadPemFile(ca, "CA (GKA_TLS_CA)"));
  const char* cert = std::getenv("GKA_TLS_CERT");
  const char* key = std::getenv("GKA_TLS_KEY");
  if (cert != nullptr && *cert != '\0') {
    GKA_ASSIGN_OR_RETURN(options.tls_cert_chain_pem, rpc::ReadPemFile(cert, "certificate (GKA_TLS_CERT)"));
  }
  if (key != nullptr && *key != '\0') {
    GKA_ASSIGN_OR_RETURN(options.tls_private_key_pem, rpc::ReadPemFile(key, "key (GKA_TLS_KEY)"));
  }
  return options;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const ClientOptions& given) {
  GKA_ASSIGN_OR_RETURN(const ClientOptions options, WithTlsFromEnvironment(given));
  if (options.address.empty()) return absl::InvalidArgumentError("address: empty");
  if (options.tls_cert_chain_pem.empty() != options.tls_private_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_chain_pem and tls_private_key_pem: give both (mutual TLS) or neither");
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes: must be positive");
  }
  if (options.default_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default_timeout: must be positive (or infinite)");
  }
  GKA_RETURN_IF_ERROR(internal::ValidateRetryPolicy(options.retry));
  return std::unique_ptr<Client>(new Client(std::make_shared<Core>(options)));
}

Client::Client(std::shared_ptr<Core> core) : core_(std::move(core)) {}
Client::~Client() = default;

const ClientOptions& Client::options() const { return core_->options(); }

namespace {

// The common start of both stream styles: validate, assign an id, start the call. A call
// that cannot start ends at once (the observer gets the error) and nullptr is returned.
std::shared_ptr<StreamCall> StartCall(std::shared_ptr<Client::Core> core, const Request& request,
                                      const CallOptions& options,
                                      std::shared_ptr<CallObserver> observer) {
  const RetryPolicy& policy = core->RetryFor(options);
  if (absl::Status valid = internal::ValidateRetryPolicy(policy); !valid.ok()) {
    observer->OnDone(
        internal::MakeError({.code = valid.code(), .message = std::string(valid.message())}));
    return nullptr;
  }
  pb::GenerateRequest wire = internal::ToProto(request);
  if (wire.request_id().empty() && core->options().assign_request_ids) {
    wire.set_request_id(core->NewRequestId());
  }
  const absl::Time deadline = core->DeadlineFor(options, absl::Now());
  auto call = std::make_shared<StreamCall>(std::move(core), std::move(wire), deadline, policy,
                                           std::move(observer));
  call->Start();
  return call;
}

}  // namespace

std::unique_ptr<Stream> Client::GenerateStream(const Request& request, const CallOptions& options) {
  auto observer = std::make_shared<PullObserver>();
  std::shared_ptr<StreamCall> call = StartCall(core_, request, options, observer);
  return std::make_unique<Stream>(std::make_unique<Stream::Impl>(call, observer));
}

std::unique_ptr<CallHandle> Client::GenerateStream(const Request& request,
                                                   StreamCallbacks callbacks,
                                                   const CallOptions& options) {
  auto observer = std::make_shared<CallbackObserver>(std::move(callbacks));
  std::shared_ptr<StreamCall> call = StartCall(core_, request, options, observer);
  return std::make_unique<CallHandle>(std::make_unique<CallHandle::Impl>(call, observer));
}

absl::StatusOr<Result> Client::Generate(const Request& request, const CallOptions& options) {
  return GenerateStream(request, options)->Finish();
}

absl::StatusOr<Result> Client::Chat(std::vector<ChatMessage> messages, SamplingParams sampling,
                                    const CallOptions& options) {
  return Generate(ChatRequest(std::move(messages), std::move(sampling)), options);
}

absl::StatusOr<bool> Client::Abort(absl::string_view request_id, const CallOptions& options) {
  pb::AbortRequest request;
  request.set_request_id(std::string(request_id));
  pb::AbortResponse response;
  GKA_RETURN_IF_ERROR(Unary(*core_, options, [&](grpc::ClientContext& ctx) {
    return core_->stub().Abort(&ctx, request, &response);
  }));
  return response.found();
}

namespace {

absl::StatusOr<TokenizeResult> TokenizeCall(Client::Core& core, const pb::TokenizeRequest& req,
                                            const CallOptions& options) {
  pb::TokenizeResponse response;
  GKA_RETURN_IF_ERROR(Unary(core, options, [&](grpc::ClientContext& ctx) {
    return core.stub().Tokenize(&ctx, req, &response);
  }));
  return internal::FromProto(response);
}

}  // namespace

absl::StatusOr<TokenizeResult> Client::Tokenize(absl::string_view text,
                                                const CallOptions& options) {
  pb::TokenizeRequest request;
  request.set_text(std::string(text));
  return TokenizeCall(*core_, request, options);
}

absl::StatusOr<TokenizeResult> Client::Tokenize(const gka::sdk::Chat& chat,
                                                const CallOptions& options) {
  pb::TokenizeRequest request;
  *request.mutable_chat() = internal::ToProto(chat);
  return TokenizeCall(*core_, request, options);
}

absl::StatusOr<ModelInfo> Client::GetModelInfo(const CallOptions& options) {
  pb::GetModelInfoResponse response;
  GKA_RETURN_IF_ERROR(Unary(*core_, options, [&](grpc::ClientContext& ctx) {
    return core_->stub().GetModelInfo(&ctx, pb::GetModelInfoRequest(), &response);
  }));
  return internal::FromProto(response);
}

absl::Status Client::WaitForReady(absl::Duration timeout) {
  return base::Annotate(rpc::WaitForReady(core_->channel(), absl::Now() + timeout),
                        core_->options().address);
}

}  // namespace gka::sdk
