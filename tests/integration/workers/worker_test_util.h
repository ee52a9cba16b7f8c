// Test helpers for the prefill/decode worker integration tests: a router stand-in (a real
// gka.worker.v1.WorkerRegistry gRPC server), a client that plays the router's part of one
// request (Reserve -> StartDecode + Prefill -> token stream), the offline reference (the
// Engine on the same checkpoint, prefill + greedy decode), and metric scraping.
#pragma once

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cli/offline_generate.h"
#include "common/base/check.h"
#include "common/model/tiny_model.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/server.h"
#include "common/rpc/status.h"
#include "decode_worker/common/model_loader.h"
#include "decode_worker/decode_core.h"
#include "gka/worker/v1/worker.grpc.pb.h"

namespace gka::workers_test {

namespace wpb = ::gka::worker::v1;
namespace spb = ::gka::serving::v1;

inline constexpr char kModelDir[] = "tests/data/authors_tiny/hybrid_fp32";

// A tiny checkpoint with 8 query heads and 4 KV heads (GKA: 8 q heads, 4 k/v heads) so TP 1,
// 2 and 4 all split them; made once per process in the temp directory.
inline constexpr int32_t kTpVocab = 512;
inline const std::string& TpModelDir() {
  static const std::string* dir = [] {
    auto* d = new std::string(
        (std::filesystem::temp_directory_path() / absl::StrCat("gka_tp_workers_", getpid()))
            .string());
    model::TinyModelOptions o;
    o.pattern = "*-GKA-*-GKA";
    o.hidden_size = 64;
    o.num_attention_heads = 8;
    o.num_key_value_heads = 4;
    o.head_dim = 16;
    o.intermediate_size = 128;
    o.vocab_size = kTpVocab;
    o.weight_dtype = tensor::DType::kF32;
    GKA_CHECK_OK(model::MakeTinyModel(o, *d));
    return d;
  }();
  return *dir;
}

// The router's WorkerRegistry, reduced to what workers need: registration, heartbeats with
// load reports, "register again" once Forget() was called.
class RegistryStandIn final : public wpb::WorkerRegistry::CallbackService {
 public:
  struct Worker {
    wpb::RegisterRequest registration;
    wpb::LoadReport last_load;
    int64_t heartbeats = 0;
  };

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const wpb::RegisterRequest* request,
                                     wpb::RegisterResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      std::string id =
          request->worker_id().empty() ? absl::StrCat("w", workers_.size()) : request->worker_id();
      workers_[id].registration = *request;
      ++registrations_;
      response->set_worker_id(id);
      response->set_heartbeat_interval_ms(100);
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const wpb::HeartbeatRequest* request,
                                      wpb::HeartbeatResponse* response) override {
    {
      absl::MutexLock lock(&mu_);
      auto it = workers_.find(request->worker_id());
      if (it == workers_.end()) {
        response->set_reregister(true);
      } else {
        it->second.last_load = request->load();
        ++it->second.heartbeats;
      }
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Deregister(grpc::CallbackServerContext* ctx,
                                       const wpb::DeregisterRequest* request,
                                       wpb::DeregisterResponse*) override {
    {
      absl::MutexLock lock(&mu_);
      workers_.erase(request->worker_id());
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  // The router "restarts": it knows no worker any more.
  void Forget() {
    absl::MutexLock lock(&mu_);
    workers_.clear();
  }

  // Waits until `id` is registered and has sent `heartbeats` heartbeats since.
  bool WaitFor(const std::string& id, int64_t heartbeats, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      auto it = workers_.find(id);
      return it != workers_.end() && it->second.heartbeats >= heartbeats;
    };
    return mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  }

  std::optional<Worker> Get(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(id);
    if (it == workers_.end()) return std::nullopt;
    return it->second;
  }

  int64_t registrations() {
    absl::MutexLock lock(&mu_);
    return registrations_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  int64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;
};

// Lets another thread cancel a request's Prefill call while it runs (TryCancel on a context
// that RunRequest owns; before the call starts, the call is cancelled as it starts).
class PrefillCanceller {
 public:
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  void Attach(grpc::ClientContext* ctx) {
    absl::MutexLock lock(&mu_);
    ctx_ = ctx;
    if (cancelled_ && ctx_ != nullptr) ctx_->TryCancel();
  }

 private:
  absl::Mutex mu_;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

struct RequestSpec {
  std::string id;
  std::vector<int32_t> prompt;
  int32_t max_tokens = 8;  // generated tokens, the first included
  int32_t prefill_num_iter = -1;
  int32_t decode_num_iter = -1;
  uint32_t lease_ms = 20000;
  std::vector<int32_t> stop_ids;
  // Sampling: greedy unless temperature > 0 (then seeded, top-k).
  float temperature = 0;
  int32_t top_k = 0;
  uint64_t seed = 0;
  std::string tier;
  bool logprobs = false;      // ask for each token's logprob (RequestOutcome::logprobs)
  bool skip_prefill = false;  // reserve and stream only (lease expiry)
  // Open StartDecode only after the Prefill call returned and `before_decode` ran.
  bool decode_after_prefill = false;
  std::function<void()> before_decode;
  // Called with each token as it arrives (the first included); may abort the request.
  std::function<void(int32_t)> on_token;
  PrefillCanceller* canceller = nullptr;  // not owned
};

struct RequestOutcome {
  absl::Status reserve, prefill, decode;
  wpb::TransferTicket ticket;
  wpb::PrefillResult prefill_result;
  std::vector<int32_t> tokens;  // the first token, then the streamed ones
  std::vector<float> logprobs;  // with spec.logprobs: one per token
  bool started = false;
  std::optional<wpb::DecodeDone> done;
};

// The router's part of one request: Reserve on the decode worker, open StartDecode, Prefill
// with the ticket on the prefill worker, read the stream to its end.
inline RequestOutcome RunRequest(wpb::DecodeService::Stub& decode,
                                 wpb::PrefillService::Stub& prefill, const RequestSpec& spec) {
  RequestOutcome out;
  {
    wpb::ReserveRequest r;
    r.set_request_id(spec.id);
    r.set_prompt_tokens(static_cast<uint32_t>(spec.prompt.size()));
    r.set_max_new_tokens(spec.max_tokens);
    r.set_lease_ms(spec.lease_ms);
    r.set_tier(spec.tier);
    grpc::ClientContext ctx;
    rpc::SetTimeout(ctx, absl::Seconds(30));
    out.reserve = rpc::FromGrpcStatus(decode.Reserve(&ctx, r, &out.ticket));
    if (!out.reserve.ok()) return out;
  }
  wpb::WorkerSamplingParams sampling;
  sampling.set_temperature(spec.temperature);
  sampling.set_top_k(spec.top_k);
  sampling.set_seed(spec.seed);
  sampling.set_logprobs(spec.logprobs);
  for (int32_t id : spec.stop_ids) sampling.add_stop_token_ids(id);
  grpc::ClientContext dctx;
  rpc::SetTimeout(dctx, absl::Seconds(120));
  wpb::StartDecodeRequest sd;
  sd.set_request_id(spec.id);
  sd.set_transfer_id(out.ticket.transfer_id());
  *sd.mutable_sampling() = sampling;
  sd.set_max_new_tokens(spec.max_tokens);
  sd.set_decode_num_iter(spec.decode_num_iter);
  sd.set_tier(spec.tier);
  std::unique_ptr<grpc::ClientReader<wpb::DecodeStreamResponse>> reader;
  if (!spec.decode_after_prefill) reader = decode.StartDecode(&dctx, sd);
  if (!spec.skip_prefill) {
    wpb::PrefillRequest p;
    p.set_request_id(spec.id);
    for (int32_t t : spec.prompt) p.add_token_ids(t);
    *p.mutable_sampling() = sampling;
    p.set_prefill_num_iter(spec.prefill_num_iter);
    *p.mutable_ticket() = out.ticket;
    p.set_tier(spec.tier);
    grpc::ClientContext pctx;
    rpc::SetTimeout(pctx, absl::Seconds(60));
    if (spec.canceller != nullptr) spec.canceller->Attach(&pctx);
    out.prefill = rpc::FromGrpcStatus(prefill.Prefill(&pctx, p, &out.prefill_result));
    if (spec.canceller != nullptr) spec.canceller->Attach(nullptr);
  }
  if (spec.before_decode) spec.before_decode();
  if (spec.decode_after_prefill) reader = decode.StartDecode(&dctx, sd);
  wpb::DecodeStreamResponse m;
  while (reader->Read(&m)) {
    if (m.has_started()) {
      out.started = true;
      out.tokens.push_back(m.started().first_token());
      if (spec.logprobs) out.logprobs.push_back(out.prefill_result.first_logprob().logprob());
      if (spec.on_token) spec.on_token(m.started().first_token());
    } else if (m.has_tokens()) {
      for (const spb::TokenLogprob& lp : m.tokens().logprobs())
        out.logprobs.push_back(lp.logprob());
      for (int32_t t : m.tokens().token_ids()) {
        out.tokens.push_back(t);
        if (spec.on_token) spec.on_token(t);
      }
    } else if (m.has_done()) {
      out.done = m.done();
    }
  }
  out.decode = rpc::FromGrpcStatus(reader->Finish());
  return out;
}

// Runs every request at once, a thread each (so prefill steps and decode batches mix them).
inline std::vector<RequestOutcome> RunConcurrently(wpb::DecodeService::Stub& decode,
                                                   wpb::PrefillService::Stub& prefill,
                                                   const std::vector<RequestSpec>& specs) {
  std::vector<RequestOutcome> outcomes(specs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < specs.size(); ++i) {
    threads.emplace_back([&, i] { outcomes[i] = RunRequest(decode, prefill, specs[i]); });
  }
  for (std::thread& t : threads) t.join();
  return outcomes;
}

// The offline engine's answer: prefill + greedy decode on one Engine (cli::Generate, what
// `gka generate` runs).
class OfflineReference {
 public:
  static absl::StatusOr<std::unique_ptr<OfflineReference>> Load(const std::string& dir) {
    auto r = std::unique_ptr<OfflineReference>(new OfflineReference);
    absl::StatusOr<worker_common::LoadedModel> m =
        worker_common::LoadModel({.model_dir = dir, .num_slots = 1, .max_seq_len = 512});
    if (!m.ok()) return m.status();
    r->model_ = *std::move(m);
    return r;
  }
  absl::StatusOr<std::vector<int32_t>> Generate(const RequestSpec& spec) {
    cli::GenerateOptions o;
    o.prompt = spec.prompt;
    o.max_tokens = spec.max_tokens;
    o.sampling.temperature = spec.temperature;
    o.sampling.top_k = spec.top_k;
    o.sampling.seed = spec.seed;
    o.prefill_num_iter = spec.prefill_num_iter;
    o.decode_num_iter = spec.decode_num_iter;
    o.stop_token_ids = spec.stop_ids;
    absl::StatusOr<cli::GenerateResult> r = cli::Generate(model_.lead(), o, {}, 0);
    if (!r.ok()) return r.status();
    return r->token_ids;
  }

 private:
  OfflineReference() = default;
  worker_common::LoadedModel model_;
};

// The value of one series in Prometheus text: `name` with every label in `labels` (others
// may be present). -1 when absent.
inline double MetricValue(const std::string& text, const std::string& name,
                          const std::map<std::string, std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name)) continue;
    absl::string_view rest = line.substr(name.size());
    std::map<std::string, std::string> have;
    if (absl::StartsWith(rest, "{")) {
      const size_t close = rest.find('}');
      if (close == absl::string_view::npos) continue;
      for (absl::string_view kv :
           absl::StrSplit(rest.substr(1, close - 1), ',', absl::SkipEmpty())) {
        const size_t eq = kv.find('=');
        if (eq == absl::string_view::npos) continue;
        std::string v(kv.substr(eq + 1));
        if (v.size() >= 2) v = v.substr(1, v.size() - 2);
        have[std::string(kv.substr(0, eq))] = v;
      }
      rest = rest.substr(close + 1);
    } else if (!absl::StartsWith(rest, " ")) {
      continue;  // a longer name with this prefix
    }
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = have.find(k);
      if (it == have.end() || it->second != v) match = false;
    }
    if (!match) continue;
    double value = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(rest), &value)) return value;
  }
  return -1;
}

// Random prompts of the given lengths (ids below `vocab`), reproducible.
inline std::vector<int32_t> Prompt(uint64_t seed, int32_t length, int32_t vocab) {
  std::vector<int32_t> p;
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 12345;
  for (int32_t i = 0; i < length; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p.push_back(static_cast<int32_t>(x % vocab));
  }
  return p;
}

// A decode worker at rest: every page and slot back in its pool, nothing reserved, fencing,
// quarantined, running, waiting or queued for a colocated prefill.
inline bool DecodeAtBaseline(const decode_worker::DecodeStats& s) {
  return s.free_pages == s.total_pages && s.free_slots == s.total_slots && s.reservations == 0 &&
         s.freeing == 0 && s.quarantined_pages == 0 && s.running == 0 && s.waiting == 0 &&
         s.queued_prompt_tokens == 0;
}

// Polls `pred` until true or `timeout`.
template <typename Pred>
bool Eventually(Pred pred, absl::Duration timeout = absl::Seconds(15)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return pred();
}

}  // namespace gka::workers_test
