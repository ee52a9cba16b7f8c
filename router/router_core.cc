#include "router/router_core.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/rpc/client.h"
#include "router/files.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;

}  // namespace

RouterCore::RouterCore(CoreOptions options, TierTable tiers, TextAssets text,
                       ModelDescription model, metrics::Registry& metrics_registry)
    : options_(std::move(options)),
      tiers_(std::move(tiers)),
      text_(std::move(text)),
      model_(std::move(model)),
      metrics_registry_(metrics_registry),
      registry_(options_.registry),
      admission_(std::make_unique<Admission>(options_.admission, tiers_, &registry_)),
      rate_limits_(options_.rate_limits),
      key_tiers_(options_.key_tiers) {}

RouterCore::~RouterCore() {
  // Normally empty: the server's shutdown cancelled every call. In-process callers may have
  // left some running.
  absl::flat_hash_map<std::string, std::shared_ptr<Generation>> running;
  {
    absl::MutexLock lock(&running_mu_);
    running.swap(running_);
  }
  for (auto& [id, generation] : running) generation->Cancel();
  running.clear();
  // Completions of Abort/Release calls (bounded by cleanup_timeout) may still hold requests.
  absl::MutexLock lock(&running_mu_);
  while (
      !running_mu_.AwaitWithTimeout(absl::Condition(
                                        +[](int* live) { return *live == 0; }, &live_generations_),
                                    absl::Seconds(5))) {
    GKA_LOG(WARNING) << "waiting for " << live_generations_ << " requests to finish their calls";
  }
}

absl::Status RouterCore::Init() {
  GKA_ASSIGN_OR_RETURN(metrics_, RouterMetrics::Create(metrics_registry_, tiers_));
  GKA_RETURN_IF_ERROR(admission_->Init(metrics_registry_));
  OnRegistryChanged();
  return absl::OkStatus();
}

void RouterCore::TrackGeneration(int delta) {
  absl::MutexLock lock(&running_mu_);
  live_generations_ += delta;
}

WorkerStubs& RouterCore::StubsFor(const std::string& address) {
  absl::MutexLock lock(&stubs_mu_);
  std::unique_ptr<WorkerStubs>& stubs = stubs_[address];
  if (stubs == nullptr) {
    stubs = std::make_unique<WorkerStubs>();
    stubs->channel = rpc::CreateChannel(
        address, {.tls = options_.worker_tls, .tls_server_name = options_.worker_tls_server_name});
    stubs->decode = worker::v1::DecodeService::NewStub(stubs->channel);
    stubs->prefill = worker::v1::PrefillService::NewStub(stubs->channel);
  }
  return *stubs;
}

std::string RouterCore::ServedModelName() const {
  if (!options_.served_model_name.empty()) return options_.served_model_name;
  if (!model_.name.empty()) return model_.name;
  const std::string from_worker = registry_.ModelName();
  return from_worker.empty() ? "" : BaseName(from_worker);
}

RequestContext RouterCore::MakeRequestContext() const {
  RequestContext context;
  context.tiers = &tiers_;
  context.served_model = ServedModelName();
  context.tokenizer = text_.tokenizer.get();
  context.chat_template = text_.chat_template.has_value() ? &*text_.chat_template : nullptr;
  context.vocab_size =
      model_.vocab_size > 0 ? model_.vocab_size : static_cast<int32_t>(registry_.VocabSize());
  context.max_context_tokens = registry_.MaxContextTokens();
  context.eos_token_ids =
      ResolveEosIds(model_.eos_token_ids.empty() ? registry_.EosTokenIds() : model_.eos_token_ids,
                    text_.tokenizer.get());
  context.sampling_defaults = model_.sampling;
  context.default_max_tokens = options_.default_max_tokens;
  return context;
}

void RouterCore::Reject(GenerationSink* sink, const std::string& request_id, absl::string_view tier,
                        const absl::Status& status, bool retryable) {
  metrics_->CountFinished(tier, status.code());
  v1::GenerateResponse response;
  response.set_request_id(request_id);
  v1::Error* error = response.mutable_error();
  error->set_code(static_cast<int32_t>(status.code()));
  error->set_message(std::string(status.message()));
  error->set_retryable(retryable);
  if (std::optional<absl::Duration> retry_after = RetryAfterOf(status)) {
    error->set_retry_after_ms(
        static_cast<uint32_t>(std::max<int64_t>(1, absl::ToInt64Milliseconds(*retry_after))));
  }
  sink->OnResponse(std::move(response));
  sink->OnFinish(status);
}

std::shared_ptr<Generation> RouterCore::StartGeneration(const v1::GenerateRequest& keyed_request,
                                                        GenerationSink* sink, absl::Time deadline,
                                                        const std::string& api_key) {
  const absl::Time arrival = absl::Now();
  // The key's tier limit first: a key restricted to some tiers runs in its first one when the
  // request names none, and may not name another.
  absl::StatusOr<std::string> key_tier = key_tiers_.Resolve(api_key, keyed_request.tier());
  if (!key_tier.ok()) {
    Reject(sink, keyed_request.request_id(), tiers_.default_tier().name, key_tier.status(), false);
    return nullptr;
  }
  v1::GenerateRequest retiered;
  if (*key_tier != keyed_request.tier()) {
    retiered = keyed_request;
    retiered.set_tier(*key_tier);
  }
  const v1::GenerateRequest& request =
      *key_tier != keyed_request.tier() ? retiered : keyed_request;
  // Requests that fail before their tier is known count under the default tier.
  absl::StatusOr<const Tier*> tier = tiers_.Find(request.tier());
  const std::string tier_name = tier.ok() ? (*tier)->name : tiers_.default_tier().name;
  bool accepting;
  {
    absl::MutexLock lock(&running_mu_);
    accepting = accepting_;
  }
  if (!accepting) {
    Reject(sink, request.request_id(), tier_name,
           absl::UnavailableError("the router is draining (shutting down); send the request "
                                  "to another router or retry shortly"),
           true);
    return nullptr;
  }
  absl::StatusOr<ResolvedRequest> plan = ResolveRequest(request, MakeRequestContext());
  if (!plan.ok()) {
    Reject(sink, request.request_id(), tier_name, plan.status(), false);
    return nullptr;
  }
  if (absl::Status limited = rate_limits_.Take(api_key, absl::Now()); !limited.ok()) {
    admission_->CountRateLimited(tier_name);
    Reject(sink, request.request_id(), tier_name, limited, /*retryable=*/true);
    return nullptr;
  }
  absl::StatusOr<OutputText> output =
      OutputText::Create(text_.tokenizer.get(), plan->stop_strings,
                         std::vector<int32_t>(plan->sampling.stop_token_ids().begin(),
                                              plan->sampling.stop_token_ids().end()));
  if (!output.ok()) {
    Reject(sink, request.request_id(), tier_name, output.status(), false);
    return nullptr;
  }
  std::string id = plan->request_id;
  if (id.empty()) {
    id = absl::StrFormat("%s-%06d", options_.router_id, next_request_.fetch_add(1) + 1);
  }
  const absl::Time admitting = absl::Now();
  const Tier& tier_ref = *plan->tier;
  const size_t plan_prompt_tokens = plan->prompt.token_ids.size();
  const int32_t plan_max_tokens = plan->max_tokens;
  auto generation = std::make_shared<Generation>(*this, id, std::move(*plan), std::move(*output),
                                                 sink, arrival, admitting, deadline);
  bool unique;
  {
    absl::MutexLock lock(&running_mu_);
    unique = running_.emplace(id, generation).second;
  }
  if (!unique) {
    Reject(sink, id, tier_name,
           absl::AlreadyExistsError(absl::StrCat("request_id: ", QuoteForMessage(id),
                                                 " is already running; use a unique id")),
           false);
    return nullptr;
  }
  const absl::Status admitted = admission_->Admit(
      tier_ref,
      {.id = id,
       .demand = {.prompt_tokens = static_cast<uint32_t>(plan_prompt_tokens),
                  .max_new_tokens = static_cast<uint32_t>(plan_max_tokens)},
       .start = [generation](int rung) { generation->Start(rung); },
       .shed = [generation](const absl::Status& refused) { generation->Shed(refused); }},
      admitting);
  if (!admitted.ok()) {
    Forget(id, generation.get());
    // Queue full or shed: retry after the hint. No hint: no decode worker could ever hold it.
    Reject(sink, id, tier_name, admitted, /*retryable=*/RetryAfterOf(admitted).has_value());
    return nullptr;
  }
  return generation;
}

void RouterCore::Forget(const std::string& request_id, const Generation* generation) {
  {
    absl::MutexLock lock(&running_mu_);
    auto it = running_.find(request_id);
    if (it == running_.end() || it->second.get() != generation) return;
    running_.erase(it);
  }
  admission_->Finished(request_id, absl::Now());
}

bool RouterCore::AbortRequest(absl::string_view request_id) {
  std::shared_ptr<Generation> generation;
  {
    absl::MutexLock lock(&running_mu_);
    auto it = running_.find(request_id);
    if (it == running_.end()) return false;
    generation = it->second;
  }
  generation->Abort();
  return true;
}

void RouterCore::OnWorkersLost(const std::vector<std::string>& worker_ids) {
  if (worker_ids.empty()) return;
  std::vector<std::shared_ptr<Generation>> running;
  {
    absl::MutexLock lock(&running_mu_);
    for (const auto& [id, g] : running_) running.push_back(g);
  }
  for (const std::string& worker : worker_ids) {
    for (const std::shared_ptr<Generation>& g : running) g->OnWorkerLost(worker);
  }
}

absl::StatusOr<v1::TokenizeResponse> RouterCore::Tokenize(
    const v1::TokenizeRequest& request) const {
  GKA_ASSIGN_OR_RETURN(Prompt prompt, TokenizeRequest(request, MakeRequestContext()));
  v1::TokenizeResponse response;
  response.mutable_token_ids()->Add(prompt.token_ids.begin(), prompt.token_ids.end());
  if (request.input_case() == v1::TokenizeRequest::kChat) {
    response.set_prompt_text(std::move(prompt.text));
  }
  return response;
}

v1::GetModelInfoResponse RouterCore::ModelInfo() const {
  const RequestContext context = MakeRequestContext();
  v1::GetModelInfoResponse info;
  info.set_model(context.served_model);
  info.set_max_context_tokens(context.max_context_tokens);
  info.set_vocab_size(context.vocab_size > 0
                          ? context.vocab_size
                          : (context.tokenizer != nullptr ? context.tokenizer->VocabSize() : 0));
  info.set_has_tokenizer(context.tokenizer != nullptr);
  info.mutable_eos_token_ids()->Add(context.eos_token_ids.begin(), context.eos_token_ids.end());
  info.set_default_tier(tiers_.default_tier().name);
  for (const Tier& tier : tiers_.tiers()) {
    v1::TierInfo* t = info.add_tiers();
    t->set_name(tier.name);
    t->set_prefill_num_iter(tier.prefill_num_iter);
    t->set_decode_num_iter(tier.decode_num_iter);
    t->set_num_iter_min(tier.num_iter_min);
    t->set_num_iter_max(tier.num_iter_max);
    t->set_priority(tier.priority);
    t->set_max_tokens(tier.max_tokens);
  }
  return info;
}

void RouterCore::SetHealthCallback(std::function<void(bool)> callback) {
  {
    absl::MutexLock lock(&health_mu_);
    health_callback_ = std::move(callback);
    last_health_ = -1;
  }
  OnRegistryChanged();
}

void RouterCore::OnRegistryChanged() {
  const WorkerCounts counts = registry_.Counts();
  if (metrics_ != nullptr) metrics_->SetWorkers(counts);
  admission_->SetCapacity(registry_.HealthyDecodeSlots());
  bool accepting;
  {
    absl::MutexLock lock(&running_mu_);
    accepting = accepting_;
  }
  const bool serving = accepting && counts.CanServe();
  absl::MutexLock lock(&health_mu_);
  if (last_health_ == static_cast<int>(serving) || !health_callback_) return;
  last_health_ = static_cast<int>(serving);
  GKA_LOG(INFO) << "cluster " << (serving ? "SERVING" : "NOT_SERVING") << ": "
                << counts.prefill_healthy << " healthy prefill, " << counts.decode_healthy
                << " healthy decode, " << counts.colocated_healthy << " healthy colocated worker(s)"
                << (accepting ? "" : ", draining");
  health_callback_(serving);
}

void RouterCore::StopAccepting() {
  {
    absl::MutexLock lock(&running_mu_);
    accepting_ = false;
  }
  OnRegistryChanged();
}

bool RouterCore::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&running_mu_);
  return running_mu_.AwaitWithDeadline(
      absl::Condition(
          +[](absl::flat_hash_map<std::string, std::shared_ptr<Generation>>* running) {
            return running->empty();
          },
          &running_),
      deadline);
}

size_t RouterCore::RunningRequests() const {
  absl::MutexLock lock(&running_mu_);
  return running_.size();
}

}  // namespace gka::router
