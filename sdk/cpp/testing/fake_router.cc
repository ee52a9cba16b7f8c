#include "sdk/cpp/testing/fake_router.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/rpc/server.h"

namespace gka::sdk::testing {

namespace pb = ::gka::serving::v1;

namespace {

constexpr int32_t kFirstTokenId = 1000;

std::vector<std::string> Words(absl::string_view text) {
  std::vector<std::string> words;
  for (absl::string_view w : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    words.push_back(absl::StrCat(words.empty() ? "" : " ", w));
  }
  return words;
}

std::string EchoReply(const pb::GenerateRequest& r) {
  switch (r.input_case()) {
    case pb::GenerateRequest::kText:
      return absl::StrCat("echo: ", r.text());
    case pb::GenerateRequest::kChat:
      return absl::StrCat(
          "you said: ", r.chat().messages().empty() ? "" : r.chat().messages().rbegin()->content());
    case pb::GenerateRequest::kTokenIds:
      return absl::StrCat("tokens: ", r.token_ids().ids_size());
    default:
      return "";
  }
}

uint32_t PromptTokens(const pb::GenerateRequest& r) {
  switch (r.input_case()) {
    case pb::GenerateRequest::kText:
      return Words(r.text()).size();
    case pb::GenerateRequest::kChat: {
      uint32_t n = 0;
      for (const pb::ChatMessage& m : r.chat().messages()) n += Words(m.content()).size() + 2;
      return n;
    }
    case pb::GenerateRequest::kTokenIds:
      return r.token_ids().ids_size();
    default:
      return 0;
  }
}

grpc::Status ToGrpc(absl::StatusCode code, const std::string& message) {
  return grpc::Status(static_cast<grpc::StatusCode>(code), message);
}

}  // namespace

void FakeGenerateService::Push(FakeScript script) {
  absl::MutexLock lock(&mu_);
  scripts_.push_back(std::move(script));
}

void FakeGenerateService::FailUnary(int count, absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  unary_failures_ = count;
  unary_failure_code_ = code;
}

int FakeGenerateService::generate_calls() const {
  absl::MutexLock lock(&mu_);
  return generate_calls_;
}

int FakeGenerateService::unary_calls() const {
  absl::MutexLock lock(&mu_);
  return unary_calls_;
}

std::vector<pb::GenerateRequest> FakeGenerateService::requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

std::set<std::string> FakeGenerateService::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool FakeGenerateService::WaitForCancelled(const std::string& request_id,
                                           absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto seen = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> bool {
    return cancelled_.count(request_id) > 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
}

FakeScript FakeGenerateService::NextScript(const pb::GenerateRequest& request) {
  FakeScript script;
  {
    absl::MutexLock lock(&mu_);
    if (!scripts_.empty()) {
      script = std::move(scripts_.front());
      scripts_.pop_front();
    }
  }
  if (script.end == FakeScript::kFinal && script.tokens.empty()) {
    script.tokens = Words(EchoReply(request));
  }
  return script;
}

bool FakeGenerateService::Aborted(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  return aborted_.count(id) > 0;
}

bool FakeGenerateService::Pause(grpc::ServerContext* ctx, const std::string& id, absl::Duration d) {
  const absl::Time until = absl::Now() + d;
  for (;;) {
    if (ctx->IsCancelled() || Aborted(id)) return false;
    const absl::Time now = absl::Now();
    if (now >= until) return true;
    absl::SleepFor(std::min(until - now, absl::Milliseconds(2)));
  }
}

grpc::Status FakeGenerateService::Generate(grpc::ServerContext* ctx,
                                           const pb::GenerateRequest* request,
                                           grpc::ServerWriter<pb::GenerateResponse>* writer) {
  const std::string id = request->request_id().empty() ? "fake-assigned-id" : request->request_id();
  {
    absl::MutexLock lock(&mu_);
    ++generate_calls_;
    requests_.push_back(*request);
    running_.insert(id);
  }
  FakeScript script = NextScript(*request);
  if (!request->tier().empty() && request->tier() != "standard" &&
      request->tier() != "interactive" && request->tier() != "batch") {
    // As the router does: the first (and only) response is the Error.
    script = {.end = FakeScript::kError,
              .code = absl::StatusCode::kInvalidArgument,
              .message = absl::StrCat("tier: unknown tier '", request->tier(), "'"),
              .retryable = false};
  }
  auto finish = [&](grpc::Status status) {
    absl::MutexLock lock(&mu_);
    running_.erase(id);
    if (ctx->IsCancelled()) cancelled_.insert(id);
    return status;
  };
  for (const auto& [key, value] : script.trailing_metadata) ctx->AddTrailingMetadata(key, value);

  const int max_tokens = request->sampling().has_max_tokens()
                             ? request->sampling().max_tokens()
                             : static_cast<int>(script.tokens.size());
  const uint32_t prompt_tokens = PromptTokens(*request);
  uint32_t sent = 0;
  bool aborted = false;
  for (const std::string& token : script.tokens) {
    if (static_cast<int>(sent) >= max_tokens) break;
    if (!Pause(ctx, id, sent == 0 ? script.first_token_delay : script.token_interval)) {
      aborted = !ctx->IsCancelled();
      break;
    }
    pb::GenerateResponse response;
    response.set_request_id(id);
    pb::Chunk* chunk = response.mutable_chunk();
    chunk->add_token_ids(kFirstTokenId + static_cast<int32_t>(sent));
    chunk->set_text(token);
    ++sent;
    chunk->mutable_usage()->set_prompt_tokens(prompt_tokens);
    chunk->mutable_usage()->set_completion_tokens(sent);
    // As the router: top_logprobs implies logprobs.
    if (request->sampling().logprobs() || request->sampling().top_logprobs() > 0) {
      pb::TokenLogprob* lp = chunk->add_logprobs();
      lp->set_token_id(chunk->token_ids(0));
      lp->set_logprob(-0.5f);
      // Alternatives as the router reports them: most likely first, the token's text spelled.
      for (int32_t k = 0; k < request->sampling().top_logprobs(); ++k) {
        pb::TopLogprob* top = lp->add_top();
        top->set_token_id(chunk->token_ids(0) + k);
        top->set_logprob(-0.5f * static_cast<float>(k + 1));
        top->set_text(absl::StrCat("alt", k));
      }
    }
    writer->Write(response);
  }
  if (ctx->IsCancelled()) return finish(grpc::Status::CANCELLED);

  pb::GenerateResponse response;
  response.set_request_id(id);
  if (aborted || script.end == FakeScript::kFinal) {
    pb::Final* f = response.mutable_final();
    f->set_finish_reason(aborted ? pb::FINISH_REASON_ABORT
                         : static_cast<int>(sent) >= max_tokens && sent < script.tokens.size()
                             ? pb::FINISH_REASON_LENGTH
                             : pb::FINISH_REASON_STOP);
    f->mutable_usage()->set_prompt_tokens(prompt_tokens);
    f->mutable_usage()->set_completion_tokens(sent);
    f->mutable_timings()->set_queue_ms(0.5);
    f->mutable_timings()->set_ttft_ms(1.5);
    f->mutable_timings()->set_total_ms(2.5);
    f->mutable_served_by()->set_router_id("fake-router");
    f->mutable_served_by()->set_prefill_worker_id("fake-prefill-0");
    f->mutable_served_by()->set_decode_worker_id("fake-decode-0");
    f->set_tier(request->tier().empty() ? "standard" : request->tier());
    f->set_prefill_num_iter(request->has_prefill_num_iter() ? request->prefill_num_iter() : 10);
    f->set_decode_num_iter(request->has_decode_num_iter() ? request->decode_num_iter() : 10);
    writer->Write(response);
    return finish(grpc::Status::OK);
  }
  if (script.end == FakeScript::kError) {
    pb::Error* e = response.mutable_error();
    e->set_code(static_cast<int32_t>(script.code));
    e->set_message(script.message);
    e->set_retryable(script.retryable);
    writer->Write(response);
    return finish(ToGrpc(script.code, script.message));
  }
  if (script.end == FakeScript::kHang) {
    while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(2));
    return finish(grpc::Status::CANCELLED);
  }
  return finish(ToGrpc(script.code, script.message));
}

grpc::Status FakeGenerateService::UnaryFailure() {
  absl::MutexLock lock(&mu_);
  ++unary_calls_;
  if (unary_failures_ == 0) return grpc::Status::OK;
  --unary_failures_;
  return ToGrpc(unary_failure_code_, "scripted unary failure");
}

grpc::Status FakeGenerateService::Abort(grpc::ServerContext* ctx, const pb::AbortRequest* request,
                                        pb::AbortResponse* response) {
  if (grpc::Status s = UnaryFailure(); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  const bool found = running_.count(request->request_id()) > 0;
  if (found) aborted_.insert(request->request_id());
  response->set_found(found);
  return grpc::Status::OK;
}

grpc::Status FakeGenerateService::GetModelInfo(grpc::ServerContext* ctx,
                                               const pb::GetModelInfoRequest* request,
                                               pb::GetModelInfoResponse* response) {
  if (grpc::Status s = UnaryFailure(); !s.ok()) return s;
  response->set_model("fake-model");
  response->set_max_context_tokens(4096);
  response->set_vocab_size(151936);
  response->set_has_tokenizer(true);
  response->add_eos_token_ids(151645);
  response->set_default_tier("standard");
  pb::TierInfo* tier = response->add_tiers();
  tier->set_name("standard");
  tier->set_prefill_num_iter(10);
  tier->set_decode_num_iter(10);
  tier->set_num_iter_min(1);
  tier->set_num_iter_max(30);
  return grpc::Status::OK;
}

grpc::Status FakeGenerateService::Tokenize(grpc::ServerContext* ctx,
                                           const pb::TokenizeRequest* request,
                                           pb::TokenizeResponse* response) {
  if (grpc::Status s = UnaryFailure(); !s.ok()) return s;
  std::string text = request->text();
  if (request->has_chat()) {
    text.clear();
    for (const pb::ChatMessage& m : request->chat().messages()) {
      absl::StrAppend(&text, "<|im_start|>", m.role(), "\n", m.content(), "<|im_end|>\n");
    }
    absl::StrAppend(&text, "<|im_start|>assistant\n");
    response->set_prompt_text(text);
  }
  // One id per byte: enough to check that the right text arrived.
  for (unsigned char c : text) response->add_token_ids(c);
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<FakeRouter>> FakeRouter::Start(const FakeRouterOptions& options) {
  std::unique_ptr<FakeRouter> fake(new FakeRouter());
  if (options.tls_cert_pem.empty()) {
    absl::StatusOr<std::unique_ptr<rpc::GrpcServer>> server = rpc::GrpcServer::Create(
        {.address = options.address, .auth_token = options.api_key}, {&fake->service_});
    if (!server.ok()) return server.status();
    fake->plain_ = *std::move(server);
    fake->address_ = fake->plain_->address();
    return fake;
  }
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.address, grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(&fake->service_);
  fake->tls_ = builder.BuildAndStart();
  if (fake->tls_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve TLS on ", options.address));
  }
  absl::StatusOr<std::string> address = rpc::WithPort(options.address, port);
  if (!address.ok()) return address.status();
  fake->address_ = *address;
  return fake;
}

FakeRouter::~FakeRouter() { Shutdown(); }

void FakeRouter::Shutdown(absl::Duration grace) {
  if (plain_ != nullptr) plain_->Shutdown(grace);
  if (tls_ != nullptr) {
    tls_->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(absl::ToInt64Milliseconds(grace)));
    tls_->Wait();
    tls_.reset();
  }
}

}  // namespace gka::sdk::testing
