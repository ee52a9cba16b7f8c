// Real gRPC servers on 127.0.0.1:0: health, status mapping over the wire, bearer auth,
// deadline propagation, reflection, bind errors.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/rpc/auth.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/server.h"
#include "common/rpc/status.h"
#include "gka/serving/v1/serving.grpc.pb.h"
#include "gtest/gtest.h"

namespace gka::rpc {
namespace {

namespace v1 = ::gka::serving::v1;

// Abort("code:N:message") answers with status N; Tokenize calls GetModelInfo on `peer`
// through ChildContext; GetModelInfo reports the time it had left (ms) as max_context_tokens.
class TestService final : public v1::GenerateService::CallbackService {
 public:
  std::atomic<int> calls{0};
  std::shared_ptr<grpc::Channel> peer;
  absl::Duration child_cap = absl::InfiniteDuration();

  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const v1::AbortRequest* req,
                                  v1::AbortResponse* resp) override {
    ++calls;
    auto* reactor = ctx->DefaultReactor();
    std::vector<std::string> parts = absl::StrSplit(req->request_id(), absl::MaxSplits(':', 2));
    int code = 0;
    if (parts.size() == 3 && parts[0] == "code" && absl::SimpleAtoi(parts[1], &code)) {
      reactor->Finish(ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(code), parts[2])));
    } else {
      resp->set_found(true);
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest*,
                                         v1::GetModelInfoResponse* resp) override {
    ++calls;
    const absl::Duration left = TimeLeft(*ctx);
    resp->set_max_context_tokens(
        left == absl::InfiniteDuration() ? -1 : static_cast<int>(absl::ToInt64Milliseconds(left)));
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const v1::TokenizeRequest*,
                                     v1::TokenizeResponse* resp) override {
    ++calls;
    auto* reactor = ctx->DefaultReactor();
    struct Call {
      std::unique_ptr<grpc::ClientContext> ctx;
      v1::GetModelInfoRequest req;
      v1::GetModelInfoResponse resp;
      std::unique_ptr<v1::GenerateService::Stub> stub;
    };
    auto* call =
        new Call{ChildContext(*ctx, child_cap), {}, {}, v1::GenerateService::NewStub(peer)};
    call->stub->async()->GetModelInfo(call->ctx.get(), &call->req, &call->resp,
                                      [call, reactor, resp](grpc::Status s) {
                                        resp->add_token_ids(call->resp.max_context_tokens());
                                        delete call;
                                        reactor->Finish(s);
                                      });
    return reactor;
  }
};

TEST(RpcStatusTest, EveryCodeRoundTrips) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  for (int code = 1; code <= 16; ++code) {
    const absl::Status s(static_cast<absl::StatusCode>(code), "msg");
    const grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "msg");
    EXPECT_EQ(FromGrpcStatus(g), s);
  }
  // 20: not a canonical code, yet inside grpc::StatusCode's range of values (99 would be
  // undefined behaviour to form, and UBSan says so).
  const absl::Status odd = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(20), "x"));
  EXPECT_EQ(odd.code(), absl::StatusCode::kUnknown);
  EXPECT_NE(odd.message().find("20"), absl::string_view::npos);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"), "Reserve on w1")
                .message(),
            "Reserve on w1: down");
}

TEST(RpcServerTest, BindsPortZeroAndServesHealth) {
  TestService service;
  auto server = GrpcServer::Create({.address = "127.0.0.1:0"}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  EXPECT_EQ((*server)->address(), absl::StrCat("127.0.0.1:", (*server)->port()));

  auto channel = CreateChannel((*server)->address(), {});
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  ASSERT_TRUE(WaitForReady(*channel, deadline).ok());
  absl::StatusOr<bool> serving = CheckHealth(*channel, "", deadline);
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_TRUE(*serving);

  (*server)->SetServing(false);
  serving = CheckHealth(*channel, "", deadline);
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_FALSE(*serving);
  (*server)->SetServing(true);
  EXPECT_TRUE(CheckHealth(*channel, "", deadline).value_or(false));

  (*server)->Shutdown(absl::Milliseconds(100));
  (*server)->Shutdown(absl::Milliseconds(100));  // idempotent
  serving = CheckHealth(*channel, "", absl::Now() + absl::Seconds(2));
  EXPECT_FALSE(serving.ok() && *serving);
}

TEST(RpcServerTest, StatusCodesSurviveTheWire) {
  TestService service;
  auto server = GrpcServer::Create({}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::GenerateService::NewStub(CreateChannel((*server)->address(), {}));
  for (int code = 1; code <= 16; ++code) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, absl::Seconds(5));
    v1::AbortRequest req;
    req.set_request_id(absl::StrCat("code:", code, ":failure number ", code));
    v1::AbortResponse resp;
    const absl::Status got = FromGrpcStatus(stub->Abort(&ctx, req, &resp));
    EXPECT_EQ(static_cast<int>(got.code()), code) << got;
    EXPECT_EQ(got.message(), absl::StrCat("failure number ", code));
  }
}

TEST(RpcServerTest, BearerTokenRejectsBeforeTheHandler) {
  TestService service;
  auto server = GrpcServer::Create({.auth_token = "s3cret"}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = CreateChannel((*server)->address(), {});
  auto stub = v1::GenerateService::NewStub(channel);
  auto call = [&](absl::string_view token) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, absl::Seconds(5));
    AddBearerToken(ctx, token);
    v1::AbortRequest req;
    v1::AbortResponse resp;
    return FromGrpcStatus(stub->Abort(&ctx, req, &resp));
  };
  absl::Status none = call("");
  EXPECT_EQ(none.code(), absl::StatusCode::kUnauthenticated) << none;
  EXPECT_NE(none.message().find("authorization"), absl::string_view::npos) << none;
  EXPECT_EQ(call("wrong").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(call("s3cret!").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(service.calls.load(), 0);
  EXPECT_TRUE(call("s3cret").ok());
  EXPECT_EQ(service.calls.load(), 1);
  // Health checks are exempt, so probes need no token.
  EXPECT_TRUE(CheckHealth(*channel, "", absl::Now() + absl::Seconds(5)).value_or(false));
}

TEST(RpcAuthTest, TokenComparison) {
  EXPECT_TRUE(BearerTokenMatches("Bearer abc", "abc"));
  EXPECT_FALSE(BearerTokenMatches("Bearer abd", "abc"));
  EXPECT_FALSE(BearerTokenMatches("Bearer abcd", "abc"));
  EXPECT_FALSE(BearerTokenMatches("bearer abc", "abc"));
  EXPECT_FALSE(BearerTokenMatches("abc", "abc"));
}

TEST(RpcDeadlineTest, ChildCallInheritsTheCallersDeadline) {
  TestService service;
  auto server = GrpcServer::Create({}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  service.peer = CreateChannel((*server)->address(), {});
  auto stub = v1::GenerateService::NewStub(service.peer);

  auto child_time_left_ms = [&](absl::Duration client_timeout) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, client_timeout);
    v1::TokenizeRequest req;
    v1::TokenizeResponse resp;
    const grpc::Status s = stub->Tokenize(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.token_ids_size() == 1 ? resp.token_ids(0) : -2;
  };
  // gRPC rounds the timeout it puts on the wire up, so allow a few milliseconds.
  constexpr int kWireRounding = 10;
  int left = child_time_left_ms(absl::Seconds(3));
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 3000 + kWireRounding);
  // The cap shortens an inherited deadline.
  service.child_cap = absl::Milliseconds(500);
  left = child_time_left_ms(absl::Seconds(30));
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 500 + kWireRounding);
  // No deadline anywhere stays unbounded.
  service.child_cap = absl::InfiniteDuration();
  EXPECT_EQ(child_time_left_ms(absl::InfiniteDuration()), -1);
}

TEST(RpcServerTest, ReflectionListsOurServices) {
  TestService service;
  auto server = GrpcServer::Create({}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  grpc::GenericStub stub(CreateChannel((*server)->address(), {}));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  SetTimeout(ctx, absl::Seconds(5));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto step = [&](intptr_t expect) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), expect);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  // ServerReflectionRequest{list_services: ""}: field 7, wire type 2, length 0.
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string response;
  for (const auto& s : slices) response.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_NE(response.find("gka.serving.v1.GenerateService"), std::string::npos);
  EXPECT_NE(response.find("grpc.health.v1.Health"), std::string::npos);
  ctx.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  step(4);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST(RpcServerTest, BindErrorsAreStatuses) {
  TestService service;
  auto first = GrpcServer::Create({}, {&service});
  ASSERT_TRUE(first.ok()) << first.status();
  TestService other;
  auto second = GrpcServer::Create({.address = (*first)->address()}, {&other});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
  EXPECT_EQ(GrpcServer::Create({.address = "127.0.0.1"}, {&other}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GrpcServer::Create({}, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WithPort("[::1]:0", 81).value_or(""), "[::1]:81");
}

}  // namespace
}  // namespace gka::rpc
