#include "router/http_gateway.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdlib>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/base/logging.h"
#include "common/rpc/auth.h"
#include "router/router_core.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;
using openai::ApiError;
using openai::Endpoint;

// A body over the limit is still read (up to this much) before the 413 goes out: a client
// that is still sending when the server closes gets a connection reset instead of the 413.
constexpr size_t kMaxDrainBytes = 64 << 20;
// How long Shutdown waits for cancelled requests to send their last words.
constexpr absl::Duration kShutdownFlush = absl::Seconds(5);

ApiError MakeError(int http_status, std::string type, std::string message, std::string code = "",
                   std::string param = "") {
  return ApiError{.http_status = http_status,
                  .type = std::move(type),
                  .message = std::move(message),
                  .param = std::move(param),
                  .code = std::move(code)};
}

bool ExpectsContinue(mg_connection* conn) {
  const char* expect = mg_get_header(conn, "Expect");
  return expect != nullptr && absl::EqualsIgnoreCase(expect, "100-continue");
}

// Writes one request's response. civetweb's header functions refuse to run once anything was
// written, and civetweb answers "Expect: 100-continue" only for its own file handlers, so
// after our interim "100 Continue" a response writes its header block itself (and closes the
// connection after it, leaving civetweb's keep-alive bookkeeping out of it).
class Responder {
 public:
  explicit Responder(mg_connection* conn) : conn_(conn) {}
  mg_connection* conn() const { return conn_; }

  // The interim response a client that sent "Expect: 100-continue" waits for before it sends
  // the body (curl: for bodies over 1 MiB).
  void SendContinue() {
    mg_printf(conn_, "HTTP/1.1 100 Continue\r\n\r\n");
    raw_headers_ = true;
  }

  // A whole response; returns `status` (civetweb logs the handler's return value).
  int Send(int status, absl::string_view content_type, absl::string_view body, bool close = false,
           uint32_t retry_after_ms = 0) {
    Headers headers = {{"Content-Type", std::string(content_type)},
                       {"Content-Length", absl::StrCat(body.size())}};
    if (status == 401) headers.push_back({"WWW-Authenticate", "Bearer"});
    if (retry_after_ms > 0) {
      // Admission control's hint: RFC 9110 Retry-After in whole seconds (rounded up), and the
      // millisecond header the OpenAI clients read first.
      headers.push_back({"Retry-After", absl::StrCat((retry_after_ms + 999) / 1000)});
      headers.push_back({"retry-after-ms", absl::StrCat(retry_after_ms)});
    }
    SendHeaders(status, headers, close);
    // HEAD: the headers of the GET, no body.
    if (absl::string_view(mg_get_request_info(conn_)->request_method) != "HEAD") {
      mg_write(conn_, body.data(), body.size());
    }
    return status;
  }
  int SendJson(int status, absl::string_view json) {
    return Send(status, "application/json", json);
  }
  int SendError(const ApiError& error, bool close = false, uint32_t retry_after_ms = 0) {
    return Send(error.http_status, "application/json", openai::ErrorJson(error), close,
                retry_after_ms);
  }

  // Server-sent events: the headers, then WriteChunk per batch of events, then EndStream.
  // False when the client is gone.
  bool StartStream() {
    return SendHeaders(200,
                       {{"Content-Type", "text/event-stream"},
                        {"Cache-Control", "no-cache"},
                        {"Transfer-Encoding", "chunked"},
                        // Proxies (nginx) would otherwise buffer the stream.
                        {"X-Accel-Buffering", "no"}},
                       /*close=*/false);
  }
  bool WriteChunk(absl::string_view data) {
    return mg_send_chunk(conn_, data.data(), static_cast<unsigned int>(data.size())) > 0;
  }
  void EndStream() { mg_write(conn_, "0\r\n\r\n", 5); }

  // No more requests on this connection (the client left, or the body was not read).
  void Close() { mg_disable_connection_keep_alive(conn_); }

 private:
  using Headers = std::vector<std::pair<std::string, std::string>>;

  // civetweb adds the Connection header from its keep-alive decision, which Close() sets.
  bool SendHeaders(int status, const Headers& headers, bool close) {
    if (close || raw_headers_) Close();
    if (!raw_headers_) {
      mg_response_header_start(conn_, status);
      for (const auto& [name, value] : headers) {
        mg_response_header_add(conn_, name.c_str(), value.c_str(), -1);
      }
      return mg_response_header_send(conn_) == 0;
    }
    std::string head =
        absl::StrCat("HTTP/1.1 ", status, " ", mg_get_response_code_text(conn_, status), "\r\n");
    for (const auto& [name, value] : headers) absl::StrAppend(&head, name, ": ", value, "\r\n");
    absl::StrAppend(&head, "Connection: close\r\n\r\n");
    return mg_write(conn_, head.data(), head.size()) > 0;
  }

  mg_connection* const conn_;
  bool raw_headers_ = false;
};

constexpr size_t kReadChunk = 64 << 10;

// Reads and drops up to `limit` bytes of body.
void Drain(mg_connection* conn, size_t limit) {
  std::string buf(kReadChunk, '\0');
  size_t total = 0;
  while (total < limit) {
    const int n = mg_read(conn, buf.data(), buf.size());
    if (n <= 0) return;
    total += static_cast<size_t>(n);
  }
}

// The whole body, or the error to answer with (413 past `max_bytes`).
std::optional<ApiError> ReadBody(Responder& out, size_t max_bytes, std::string* body) {
  mg_connection* conn = out.conn();
  const ApiError too_large = MakeError(
      413, "invalid_request_error",
      absl::StrCat("the request body is larger than ", max_bytes, " bytes"), "request_too_large");
  const long long declared = mg_get_request_info(conn)->content_length;
  if (declared > 0 && static_cast<unsigned long long>(declared) > max_bytes) {
    // With Expect: 100-continue the client waits for our answer before sending the body;
    // otherwise it is sending it now.
    if (!ExpectsContinue(conn)) Drain(conn, kMaxDrainBytes);
    out.Close();
    return too_large;
  }
  if (declared > 0) body->reserve(static_cast<size_t>(declared));
  if (ExpectsContinue(conn)) out.SendContinue();
  std::string buf(kReadChunk, '\0');
  while (true) {
    const int n = mg_read(conn, buf.data(), buf.size());
    if (n == 0) return std::nullopt;
    if (n < 0) {
      return MakeError(400, "invalid_request_error", "could not read the request body");
    }
    if (body->size() + static_cast<size_t>(n) > max_bytes) {
      Drain(conn, kMaxDrainBytes);
      out.Close();
      return too_large;
    }
    body->append(buf.data(), static_cast<size_t>(n));
  }
}

// The socket of the connection being served, found by its addresses: civetweb has no API
// for it, and a request that waits on the workers must notice the client leaving (the peer's
// FIN) without reading from a socket civetweb owns. -1 when not found; then only a failed
// write tells. A client that half-closes its side while waiting for the answer counts as
// gone (HTTP clients do not). One per request, used by its handler thread only.
class ClientWatch {
 public:
  explicit ClientWatch(const mg_request_info* info) {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return;
    while (const dirent* entry = readdir(dir)) {
      int fd;
      if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == dirfd(dir)) continue;
      if (Matches(fd, *info)) {
        fd_ = fd;
        break;
      }
    }
    closedir(dir);
  }

  // True once the client has closed its side (or the socket failed). Looks at most once
  // per `period`: callers ask after every event, and tokens come faster than that.
  bool HungUp(absl::Duration period) {
    if (fd_ < 0) return false;
    const absl::Time now = absl::Now();
    if (now < next_check_) return false;
    next_check_ = now + period;
    pollfd p{.fd = fd_, .events = POLLRDHUP, .revents = 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

 private:
  static bool PortAndHost(const sockaddr_storage& a, int* port, std::string* host) {
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&a);
      *port = ntohs(in->sin_port);
      inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
    } else if (a.ss_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
      *port = ntohs(in6->sin6_port);
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    } else {
      return false;
    }
    *host = text;
    return true;
  }

  static bool Matches(int fd, const mg_request_info& info) {
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
      return false;
    }
    int local_port, peer_port;
    std::string local_host, peer_host;
    return PortAndHost(local, &local_port, &local_host) &&
           PortAndHost(peer, &peer_port, &peer_host) && local_port == info.server_port &&
           peer_port == info.remote_port && peer_host == info.remote_addr;
  }

  int fd_ = -1;
  absl::Time next_check_ = absl::InfinitePast();
};

// One HTTP request's choices: a GenerationSink per choice, all feeding one queue that the
// request's handler thread reads (sinks are called on gRPC threads and must not block on
// the client's socket). Lives on the handler's stack; the handler waits for every started
// choice's OnFinish before it returns.
class Exchange {
 public:
  struct Event {
    int choice = 0;
    std::optional<v1::GenerateResponse> response;
    std::optional<absl::Status> finish;
  };

  explicit Exchange(int num_choices) : generations_(num_choices) {
    for (int i = 0; i < num_choices; ++i) sinks_.push_back(std::make_unique<Sink>(this, i));
  }
  ~Exchange() { AwaitAllFinished(); }

  // Admits choice `choice` (a rejection arrives as an Error event before this returns);
  // `api_key`: the caller's key name, for the per-key rate limits.
  void Start(RouterCore& core, const v1::GenerateRequest& request, int choice,
             const std::string& api_key) {
    {
      absl::MutexLock lock(&mu_);
      if (cancelled_) return;
      ++unfinished_;
    }
    std::shared_ptr<Generation> generation =
        core.StartGeneration(request, sinks_[choice].get(), absl::InfiniteFuture(), api_key);
    bool cancel;
    {
      absl::MutexLock lock(&mu_);
      generations_[choice] = generation;
      cancel = cancelled_;  // CancelAll ran while StartGeneration did
    }
    if (cancel && generation != nullptr) generation->Cancel();
  }

  // The next event, or nullopt after `timeout` or once nothing more can come.
  std::optional<Event> Next(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &Exchange::HasEventOrDone), timeout);
    if (events_.empty()) return std::nullopt;
    Event e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

  // True when every started choice has finished and its events were taken.
  bool Done() {
    absl::MutexLock lock(&mu_);
    return unfinished_ == 0 && events_.empty();
  }

  // Ends every choice (client gone, an error in a sibling choice, shutdown); each finishes
  // with CANCELLED unless it already finished. Idempotent.
  void CancelAll() {
    std::vector<std::shared_ptr<Generation>> running;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      for (const auto& g : generations_) {
        if (g != nullptr) running.push_back(g);
      }
    }
    for (const auto& g : running) g->Cancel();
  }

  void AwaitAllFinished() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* unfinished) { return *unfinished == 0; }, &unfinished_));
  }

 private:
  class Sink final : public GenerationSink {
   public:
    Sink(Exchange* exchange, int choice) : exchange_(exchange), choice_(choice) {}
    void OnResponse(v1::GenerateResponse response) override {
      absl::MutexLock lock(&exchange_->mu_);
      exchange_->events_.push_back({.choice = choice_, .response = std::move(response)});
    }
    void OnFinish(const absl::Status& status) override {
      absl::MutexLock lock(&exchange_->mu_);
      exchange_->events_.push_back({.choice = choice_, .finish = status});
      --exchange_->unfinished_;
    }

   private:
    Exchange* const exchange_;
    const int choice_;
  };

  bool HasEventOrDone() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !events_.empty() || unfinished_ == 0;
  }

  absl::Mutex mu_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  std::vector<std::shared_ptr<Generation>> generations_ ABSL_GUARDED_BY(mu_);
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  int unfinished_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A choice that ended without a Final or an Error: cancelled by the server's shutdown (the
// client's own cancellations never get here).
absl::Status FinishedWithout(const absl::Status& finish) {
  if (!finish.ok()) {
    return absl::UnavailableError(
        "the server cancelled the request because it is shutting down; retry");
  }
  return absl::InternalError("the request ended without a result");
}

}  // namespace

class HttpGateway::Impl {
 public:
  Impl(const HttpGatewayOptions& options, RouterCore& core) : options_(options), core_(core) {}

  ~Impl() { Shutdown(); }

  absl::Status Start() {
    // Process-wide and reference-counted; never undone, as the metrics exposer's civetweb
    // server shares the library's global state.
    mg_init_library(0);
    const size_t colon = options_.address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP address '", options_.address, "' is not host:port"));
    }
    host_ = options_.address.substr(0, colon);
    const std::string threads = absl::StrCat(options_.num_threads);
    // clang-format off
    const char* config[] = {
        "listening_ports", options_.address.c_str(),
        "num_threads", threads.c_str(),
        "enable_keep_alive", "yes",
        // Longer than HTTP clients' idle keep-alive (undici: 4 s), so that they close first
        // and never reuse a socket the server is closing.
        "keep_alive_timeout_ms", "10000",
        // Reading a request, and each blocked write of a response.
        "request_timeout_ms", "60000",
        // Every server-sent event is one small write; Nagle would hold it back.
        "tcp_nodelay", "1",
        nullptr};
    // clang-format on
    mg_callbacks callbacks{};
    callbacks.log_message = [](const mg_connection*, const char* message) {
      GKA_LOG(WARNING) << "http: " << message;
      return 1;
    };
    ctx_ = mg_start(&callbacks, this, config);
    if (ctx_ == nullptr) {
      return absl::UnavailableError(absl::StrCat("cannot serve HTTP on ", options_.address,
                                                 " (port in use or bad address?)"));
    }
    mg_server_port port{};
    if (mg_get_server_ports(ctx_, 1, &port) < 1) {
      return absl::InternalError("the HTTP server reports no listening port");
    }
    address_ = absl::StrCat(host_, ":", port.port);
    mg_set_request_handler(ctx_, "/", &Impl::Dispatch, this);
    return absl::OkStatus();
  }

  const std::string& address() const { return address_; }

  void StopAccepting() {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
  }

  void Shutdown() {
    {
      absl::MutexLock lock(&mu_);
      accepting_ = false;
      if (stopped_) return;
      stopped_ = true;
      for (Exchange* e : live_) e->CancelAll();
      // Cancelled requests still tell their clients (an error event, [DONE]); civetweb
      // refuses every write once mg_stop has begun, so they go first.
      mu_.AwaitWithTimeout(
          absl::Condition(
              +[](absl::flat_hash_set<Exchange*>* live) { return live->empty(); }, &live_),
          kShutdownFlush);
    }
    // Joins the handler threads.
    if (ctx_ != nullptr) mg_stop(ctx_);
    ctx_ = nullptr;
  }

 private:
  // Debian's civetweb runs handlers on 100 KiB stacks, too small for what a request does
  // (JSON parsing, tokenizing, the chat template, protobuf): each request runs on a thread
  // of the default size while the civetweb thread that owns the connection waits for it.
  static int Dispatch(mg_connection* conn, void* self) {
    int status = 500;
    std::optional<std::thread> worker;
    try {
      worker.emplace([&] { status = static_cast<Impl*>(self)->Handle(conn); });
    } catch (const std::system_error& e) {  // out of threads: refuse, retryably
      return Responder(conn).SendError(openai::ErrorFromStatus(absl::UnavailableError(
          absl::StrCat("the router cannot take more HTTP requests now (", e.what(), ")"))));
    }
    worker->join();
    return status;
  }

  int Handle(mg_connection* conn) {
    Responder out(conn);
    const mg_request_info* info = mg_get_request_info(conn);
    const absl::string_view method = info->request_method;
    const absl::string_view path = info->local_uri != nullptr ? info->local_uri : "";
    const auto only = [&](absl::string_view allowed) -> std::optional<int> {
      if (method == allowed || (allowed == "GET" && method == "HEAD")) return std::nullopt;
      return out.SendError(MakeError(405, "invalid_request_error",
                                     absl::StrCat(method, " ", path, ": use ", allowed),
                                     "method_not_allowed"));
    };
    if (path == "/health") {
      if (auto r = only("GET")) return *r;
      return Health(out);
    }
    if (path != "/v1/models" && !absl::StartsWith(path, "/v1/models/") &&
        path != "/v1/chat/completions" && path != "/v1/completions") {
      return out.SendError(MakeError(404, "invalid_request_error",
                                     absl::StrCat("no such endpoint: ", method, " ", path),
                                     "unknown_url"));
    }
    std::string api_key;  // the key's name ("" without authentication)
    if (std::optional<ApiError> denied = Authenticate(conn, &api_key)) {
      return out.SendError(*denied);
    }
    if (path == "/v1/models") {
      if (auto r = only("GET")) return *r;
      return Models(out, "");
    }
    if (absl::StartsWith(path, "/v1/models/")) {
      if (auto r = only("GET")) return *r;
      return Models(out, path.substr(std::string("/v1/models/").size()));
    }
    if (auto r = only("POST")) return *r;
    return Complete(
        out, path == "/v1/chat/completions" ? Endpoint::kChatCompletions : Endpoint::kCompletions,
        api_key);
  }

  // Sets *name to the matched key's name ("default" for --api-key, as on gRPC).
  std::optional<ApiError> Authenticate(mg_connection* conn, std::string* name) const {
    if (options_.api_key.empty() && options_.api_keys.empty()) return std::nullopt;
    const char* header = mg_get_header(conn, "Authorization");
    if (header != nullptr && !options_.api_key.empty() &&
        rpc::BearerTokenMatches(header, options_.api_key)) {
      *name = "default";
      return std::nullopt;
    }
    const std::optional<absl::string_view> key =
        header == nullptr ? std::nullopt : rpc::BearerKey(header);
    if (key.has_value()) {
      if (std::optional<std::string> matched = options_.api_keys.Match(*key)) {
        *name = *std::move(matched);
        return std::nullopt;
      }
    }
    return MakeError(401, "authentication_error",
                     header == nullptr ? "missing API key: send 'Authorization: Bearer <key>'"
                                       : "incorrect API key provided",
                     "invalid_api_key");
  }

  bool Accepting() {
    absl::MutexLock lock(&mu_);
    return accepting_;
  }

  int Health(Responder& out) {
    const WorkerCounts counts = core_.registry().Counts();
    const bool accepting = Accepting();
    const bool ok = accepting && counts.CanServe();
    nlohmann::json body = {{"status", ok ? "ok" : "unavailable"},
                           {"accepting", accepting},
                           {"prefill_workers", counts.prefill_healthy},
                           {"decode_workers", counts.decode_healthy},
                           {"colocated_workers", counts.colocated_healthy}};
    return out.SendJson(ok ? 200 : 503, body.dump());
  }

  int Models(Responder& out, absl::string_view id) {
    const v1::GetModelInfoResponse info = core_.ModelInfo();
    nlohmann::json model = {{"id", info.model()},
                            {"object", "model"},
                            {"created", absl::ToUnixSeconds(started_)},
                            {"owned_by", "gkaserve"},
                            {"root", info.model()}};
    if (info.max_context_tokens() > 0) model["max_model_len"] = info.max_context_tokens();
    if (id.empty()) {
      nlohmann::json list = {{"object", "list"}, {"data", nlohmann::json::array({model})}};
      return out.SendJson(200, list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    if (id != info.model()) return out.SendError(ModelNotFound(id));
    return out.SendJson(200, model.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }

  static ApiError ModelNotFound(absl::string_view model) {
    return MakeError(404, "invalid_request_error",
                     absl::StrCat("The model '", model, "' does not exist"), "model_not_found",
                     "model");
  }

  int Complete(Responder& out, Endpoint endpoint, const std::string& api_key) {
    std::string body;
    if (std::optional<ApiError> error = ReadBody(out, options_.max_body_bytes, &body)) {
      return out.SendError(*error);
    }
    absl::StatusOr<openai::ParsedRequest> request =
        openai::ParseRequest(endpoint, body, options_.limits);
    if (!request.ok()) return out.SendError(openai::ErrorFromStatus(request.status()));
    const std::string served = core_.ModelInfo().model();
    if (!request->model.empty() && !served.empty() && request->model != served) {
      return out.SendError(ModelNotFound(request->model));
    }
    openai::ResponseMeta meta{.id = openai::NewResponseId(endpoint),
                              .created = absl::ToUnixSeconds(absl::Now()),
                              .model = served.empty() ? request->model : served,
                              .tokenizer = core_.tokenizer()};

    Exchange exchange(request->num_choices());
    if (!Register(&exchange)) {
      return out.SendError(openai::ErrorFromStatus(
          absl::UnavailableError("the router is draining (shutting down); retry shortly")));
    }
    for (int c = 0; c < request->num_choices(); ++c) {
      exchange.Start(core_, openai::RequestForChoice(*request, meta.id, c), c, api_key);
    }
    ClientWatch watch(mg_get_request_info(out.conn()));
    const int status = request->stream ? Stream(out, *request, meta, exchange, watch)
                                       : Collect(out, *request, meta, exchange, watch);
    exchange.AwaitAllFinished();
    Unregister(&exchange);
    return status;
  }

  // Non-streaming: gathers every choice, then one response (or the first choice's error).
  int Collect(Responder& out, const openai::ParsedRequest& request,
              const openai::ResponseMeta& meta, Exchange& exchange, ClientWatch& watch) {
    std::vector<openai::ChoiceResult> choices(request.num_choices());
    std::optional<absl::Status> error;
    uint32_t retry_after_ms = 0;  // the router's hint with a refusal (429)
    while (!exchange.Done()) {
      std::optional<Exchange::Event> e = exchange.Next(options_.disconnect_poll);
      if (watch.HungUp(options_.disconnect_poll)) return ClientGone(out, exchange);
      if (!e.has_value()) continue;
      if (e->response.has_value() && e->response->has_error()) {
        retry_after_ms = std::max(retry_after_ms, e->response->error().retry_after_ms());
      }
      openai::ChoiceResult& choice = choices[e->choice];
      if (e->response.has_value()) openai::Accumulate(*e->response, &choice);
      if (e->finish.has_value() && !choice.error.has_value() &&
          choice.finish_reason == v1::FINISH_REASON_UNSPECIFIED) {
        choice.error = FinishedWithout(*e->finish);
      }
      if (choice.error.has_value() && !error.has_value()) {
        error = choice.error;
        exchange.CancelAll();  // the response is an error now; siblings are wasted work
      }
    }
    if (error.has_value()) {
      return out.SendError(openai::ErrorFromStatus(*error), /*close=*/false, retry_after_ms);
    }
    return out.SendJson(200, openai::ResponseJson(request, meta, choices));
  }

  // Streaming: the status line waits for the first event, so that a request the workers
  // refuse still gets its HTTP status; afterwards errors are {"error": ...} events.
  int Stream(Responder& out, const openai::ParsedRequest& request, const openai::ResponseMeta& meta,
             Exchange& exchange, ClientWatch& watch) {
    openai::StreamEncoder encoder(request, meta);
    std::vector<bool> answered(request.num_choices(), false);  // got a Final or an Error
    bool headers_sent = false;
    bool failed = false;
    while (!exchange.Done()) {
      std::optional<Exchange::Event> e = exchange.Next(options_.disconnect_poll);
      if (watch.HungUp(options_.disconnect_poll)) return ClientGone(out, exchange);
      if (!e.has_value()) continue;
      std::optional<absl::Status> error;
      if (e->response.has_value()) {
        const v1::GenerateResponse& r = *e->response;
        if (r.has_final() || r.has_error()) answered[e->choice] = true;
        if (r.has_error()) {
          error =
              absl::Status(static_cast<absl::StatusCode>(r.error().code()), r.error().message());
        }
      } else if (e->finish.has_value() && !answered[e->choice]) {
        answered[e->choice] = true;
        error = FinishedWithout(*e->finish);
      }
      if (failed) continue;  // draining the siblings' cancellations
      if (error.has_value()) {
        failed = true;
        exchange.CancelAll();
        const ApiError api = openai::ErrorFromStatus(*error);
        if (!headers_sent) {
          const uint32_t retry_after_ms = e->response.has_value() && e->response->has_error()
                                              ? e->response->error().retry_after_ms()
                                              : 0;
          return out.SendError(api, /*close=*/false, retry_after_ms);
        }
        if (!out.WriteChunk(openai::StreamEncoder::Error(api))) return ClientGone(out, exchange);
        continue;
      }
      if (!e->response.has_value()) continue;
      if (!headers_sent) {
        headers_sent = true;
        if (!out.StartStream()) return ClientGone(out, exchange);
      }
      const std::string events = encoder.OnResponse(e->choice, *e->response);
      if (!events.empty() && !out.WriteChunk(events)) return ClientGone(out, exchange);
    }
    if (!headers_sent) {
      return out.SendError(
          openai::ErrorFromStatus(absl::InternalError("the request ended without a result")));
    }
    const std::string done = failed ? "data: [DONE]\n\n" : encoder.Done();
    out.WriteChunk(done);
    out.EndStream();
    return 200;
  }

  // The client left: abort its choices on the workers (frees their pages and slots).
  static int ClientGone(Responder& out, Exchange& exchange) {
    exchange.CancelAll();
    out.Close();
    return 499;  // nginx's "client closed request", for civetweb's access log only
  }

  bool Register(Exchange* exchange) {
    absl::MutexLock lock(&mu_);
    if (!accepting_ || stopped_) return false;
    live_.insert(exchange);
    return true;
  }

  void Unregister(Exchange* exchange) {
    absl::MutexLock lock(&mu_);
    live_.erase(exchange);
  }

  const HttpGatewayOptions options_;
  RouterCore& core_;
  const absl::Time started_ = absl::Now();
  mg_context* ctx_ = nullptr;
  std::string host_;
  std::string address_;

  absl::Mutex mu_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<Exchange*> live_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Create(const HttpGatewayOptions& options,
                                                                 RouterCore& core) {
  if (options.num_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP threads must be >= 1, got ", options.num_threads));
  }
  if (options.max_body_bytes < 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("the HTTP body limit must be >= 1024 bytes, got ", options.max_body_bytes));
  }
  auto impl = std::make_unique<Impl>(options, core);
  absl::Status started = impl->Start();
  if (!started.ok()) return started;
  GKA_LOG(INFO) << "OpenAI-compatible HTTP on " << impl->address();
  return std::unique_ptr<HttpGateway>(new HttpGateway(std::move(impl)));
}

HttpGateway::HttpGateway(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpGateway::~HttpGateway() { Shutdown(); }
const std::string& HttpGateway::address() const { return impl_->address(); }
void HttpGateway::StopAccepting() { impl_->StopAccepting(); }
void HttpGateway::Shutdown() { impl_->Shutdown(); }

}  // namespace gka::router
