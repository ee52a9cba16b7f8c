// Mutual TLS and hashed API keys on a real gRPC server over 127.0.0.1. The certificates come
// from a throwaway CA made with the openssl tool in the test's own directory, and a second,
// unrelated CA plays the attacker.
#include "common/rpc/tls.h"

#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/rpc/auth.h"
#include "common/rpc/client.h"
#include "common/rpc/deadline.h"
#include "common/rpc/pki.h"
#include "common/rpc/server.h"
#include "common/rpc/status.h"
#include "gka/serving/v1/serving.grpc.pb.h"
#include "gtest/gtest.h"

namespace gka::rpc {
namespace {

namespace v1 = ::gka::serving::v1;

class CountingService final : public v1::GenerateService::CallbackService {
 public:
  std::atomic<int> calls{0};
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const v1::AbortRequest*,
                                  v1::AbortResponse* resp) override {
    ++calls;
    resp->set_found(true);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// Two CAs ("ca" and "rogue"), a server certificate for 127.0.0.1 / localhost and client
// certificates under each, written by the openssl tool.
class OpensslPki {
 public:
  OpensslPki() {
    char tmpl[] = "/tmp/gka-tls-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    ok_ = MakeCa("ca") && MakeCa("rogue") &&
          Issue("ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost") &&
          Issue("ca", "client", "") && Issue("rogue", "intruder", "subjectAltName=IP:127.0.0.1") &&
          Issue("ca", "named", "subjectAltName=DNS:gkaserve-router-registry");
  }
  ~OpensslPki() { std::filesystem::remove_all(dir_); }
  bool ok() const { return ok_; }
  TlsFiles Files(const std::string& ca, const std::string& name) const {
    return {.ca = Path(ca + ".pem"), .cert = Path(name + ".pem"), .key = Path(name + ".key")};
  }
  std::string Path(const std::string& file) const { return absl::StrCat(dir_, "/", file); }

 private:
  bool Run(const std::string& command) {
    return std::system(absl::StrCat("cd ", dir_, " && (", command, ") >/dev/null 2>&1").c_str()) ==
           0;
  }
  bool MakeCa(const std::string& name) {
    return Run(absl::StrCat(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=",
        name, " -keyout ", name, ".key -out ", name, ".pem"));
  }
  bool Issue(const std::string& ca, const std::string& name, const std::string& san) {
    return Run(absl::StrCat(
        "echo '", san, "' >", name, ".ext && ",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=", name,
        " -keyout ", name, ".key -out ", name, ".csr && openssl x509 -req -in ", name, ".csr -CA ",
        ca, ".pem -CAkey ", ca, ".key -CAcreateserial -days 1 -out ", name, ".pem -extfile ", name,
        ".ext"));
  }
  std::string dir_;
  bool ok_ = false;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok()) << "openssl could not make the test CA";
    absl::StatusOr<TlsConfig> tls = ReadTlsFiles(pki_.Files("ca", "server"));
    ASSERT_TRUE(tls.ok()) << tls.status();
    auto server = GrpcServer::Create({.tls = *tls}, {&service_});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // Abort over a channel with `tls`; the call's status.
  absl::Status Call(const TlsConfig& tls, absl::string_view token = "") {
    auto channel = CreateChannel(server_->address(), {.tls = tls});
    auto stub = v1::GenerateService::NewStub(channel);
    grpc::ClientContext ctx;
    SetTimeout(ctx, absl::Seconds(5));
    AddBearerToken(ctx, token);
    v1::AbortRequest req;
    v1::AbortResponse resp;
    return FromGrpcStatus(stub->Abort(&ctx, req, &resp));
  }

  OpensslPki pki_;
  CountingService service_;
  std::unique_ptr<GrpcServer> server_;
};

TEST_F(TlsTest, ClientWithACertificateOfTheCaIsServed) {
  absl::StatusOr<TlsConfig> client = ReadTlsFiles(pki_.Files("ca", "client"));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(Call(*client).ok());
  EXPECT_EQ(service_.calls.load(), 1);
}

TEST_F(TlsTest, ClientWithoutACertificateIsRefused) {
  absl::StatusOr<TlsConfig> client = ReadTlsFiles(pki_.Files("ca", "client"));
  ASSERT_TRUE(client.ok());
  client->cert_pem.clear();
  client->key_pem.clear();
  EXPECT_EQ(Call(*client).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.calls.load(), 0);
}

TEST_F(TlsTest, ClientCertificateOfAnotherCaIsRefused) {
  // The intruder trusts our CA (so it accepts the server) but its certificate is the rogue's.
  TlsFiles files = pki_.Files("ca", "intruder");
  absl::StatusOr<TlsConfig> client = ReadTlsFiles(files);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ(Call(*client).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.calls.load(), 0);
}

TEST_F(TlsTest, PlaintextClientIsRefused) {
  EXPECT_EQ(Call(TlsConfig{}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.calls.load(), 0);
}

TEST_F(TlsTest, ServerOfAnotherCaIsNotTrusted) {
  // A client that trusts only the rogue CA refuses our server (the handshake checks both ways).
  absl::StatusOr<TlsConfig> client = ReadTlsFiles(pki_.Files("rogue", "intruder"));
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(Call(*client).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service_.calls.load(), 0);
}

// A server whose certificate names only a Service (as a router pod's would), dialled at its
// IP: refused unless the channel names the Service (ChannelOptions::tls_server_name).
TEST_F(TlsTest, ServerNameOverrideForAnAddressResolvedFromAName) {
  absl::StatusOr<TlsConfig> server_tls = ReadTlsFiles(pki_.Files("ca", "named"));
  ASSERT_TRUE(server_tls.ok()) << server_tls.status();
  auto named = GrpcServer::Create({.tls = *server_tls}, {&service_});
  ASSERT_TRUE(named.ok()) << named.status();
  absl::StatusOr<TlsConfig> client = ReadTlsFiles(pki_.Files("ca", "client"));
  ASSERT_TRUE(client.ok()) << client.status();
  auto call = [&](const std::string& server_name) {
    auto channel =
        CreateChannel((*named)->address(), {.tls = *client, .tls_server_name = server_name});
    grpc::ClientContext ctx;
    SetTimeout(ctx, absl::Seconds(5));
    v1::AbortRequest req;
    v1::AbortResponse resp;
    return FromGrpcStatus(v1::GenerateService::NewStub(channel)->Abort(&ctx, req, &resp));
  };
  EXPECT_EQ(call("").code(), absl::StatusCode::kUnavailable);  // 127.0.0.1 is not named
  EXPECT_EQ(call("some-other-name").code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(call("gkaserve-router-registry").ok());
  EXPECT_EQ(service_.calls.load(), 1);
  (*named)->Shutdown(absl::ZeroDuration());
}

TEST(TlsFilesTest, PartialOrMissingFilesAreClearErrors) {
  EXPECT_FALSE(TlsFiles{}.enabled());
  EXPECT_FALSE(ReadTlsFiles({}).value().enabled());
  EXPECT_EQ(ReadTlsFiles({.ca = "/nonexistent/ca.pem"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status missing =
      ReadTlsFiles({.ca = "/nonexistent/ca.pem", .cert = "/x", .key = "/y"}).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("/nonexistent/ca.pem"), absl::string_view::npos);
  EXPECT_EQ(ReadTlsFiles({.ca = "/proc/self/cmdline", .cert = "/x", .key = "/y"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ApiKeysTest, StoredHashedAndMatchedByName) {
  const std::string stored = ApiKeys::Hash("k-alice");
  EXPECT_EQ(stored.rfind("sha256:", 0), 0u);
  EXPECT_EQ(stored.find("k-alice"), std::string::npos);
  // Same key, fresh salt: another digest (a table of precomputed digests is useless).
  EXPECT_NE(stored, ApiKeys::Hash("k-alice"));
  // Known answer: SHA-256("salt" || "key").
  EXPECT_EQ(ApiKeys::Hash("key", "salt"),
            "sha256:73616c74:"
            "4a466ea0657e479545b1d6c2d994824f80d8eecd7030f3092ff42a9bcad751d8");
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(
      absl::StrCat("# team keys\nalice ", stored, "\nbob ", ApiKeys::Hash("k-bob"), "  # ci\n\n"));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_EQ(keys->Match("k-alice").value_or(""), "alice");
  EXPECT_EQ(keys->Match("k-bob").value_or(""), "bob");
  EXPECT_FALSE(keys->Match("k-alicf").has_value());
  EXPECT_FALSE(keys->Match("").has_value());
  EXPECT_FALSE(keys->Match(stored).has_value());  // the stored form is not a key
}

TEST(ApiKeysTest, NewKeysAreRandom) {
  const std::string a = ApiKeys::NewKey(), b = ApiKeys::NewKey();
  EXPECT_EQ(a.size(), 52u);
  EXPECT_EQ(a.rfind("gka-", 0), 0u);
  EXPECT_NE(a, b);
}

TEST(ApiKeysTest, MalformedLinesNameTheLine) {
  for (const char* text : {"alice", "alice md5:00:00", "alice sha256:zz:00", "alice sha256:00:0011",
                           "a sha256:00:"
                           "0000000000000000000000000000000000000000000000000000000000000000 x"}) {
    absl::Status s = ApiKeys::Parse(text).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(s.message().find("line 1"), absl::string_view::npos) << s;
  }
  const std::string h = ApiKeys::Hash("x");
  EXPECT_EQ(ApiKeys::Parse(absl::StrCat("a ", h, "\na ", h)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ApiKeysTest, ServerAcceptsOnlyTheHashedKeysOverTls) {
  OpensslPki pki;
  ASSERT_TRUE(pki.ok());
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(absl::StrCat("ci ", ApiKeys::Hash("k-ci")));
  ASSERT_TRUE(keys.ok());
  CountingService service;
  auto server = GrpcServer::Create(
      {.api_keys = *keys, .tls = ReadTlsFiles(pki.Files("ca", "server")).value()}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  const TlsConfig client = ReadTlsFiles(pki.Files("ca", "client")).value();
  auto channel = CreateChannel((*server)->address(), {.tls = client});
  auto stub = v1::GenerateService::NewStub(channel);
  auto call = [&](absl::string_view token) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, absl::Seconds(5));
    AddBearerToken(ctx, token);
    v1::AbortRequest req;
    v1::AbortResponse resp;
    return FromGrpcStatus(stub->Abort(&ctx, req, &resp)).code();
  };
  EXPECT_EQ(call(""), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(call("k-cj"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(service.calls.load(), 0);
  EXPECT_EQ(call("k-ci"), absl::StatusCode::kOk);
  EXPECT_EQ(service.calls.load(), 1);
  // Health stays exempt from the key (probes), not from the certificate.
  EXPECT_TRUE(CheckHealth(*channel, "", absl::Now() + absl::Seconds(5)).value_or(false));
}

// The CA `gka local` makes in-process (pki.h): its certificates serve and dial, a certificate
// of another such CA and a plaintext client are refused, and the CA's key is never written.
TEST(ThrowawayPkiTest, CertificatesWorkBothWaysAndOtherCasAreRefused) {
  char tmpl[] = "/tmp/gka-pki-test-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  absl::StatusOr<Pki> pki =
      WriteThrowawayPki({.dir = dir + "/tls", .names = {"router", "prefill-0", "client"}});
  ASSERT_TRUE(pki.ok()) << pki.status();
  absl::StatusOr<Pki> other = WriteThrowawayPki({.dir = dir + "/other", .names = {"intruder"}});
  ASSERT_TRUE(other.ok()) << other.status();
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/tls")) {
    files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"ca.pem", "client.key", "client.pem", "prefill-0.key",
                                             "prefill-0.pem", "router.key", "router.pem"}));
  struct stat st;
  ASSERT_EQ(stat(pki->Files("router").key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  CountingService service;
  auto server = GrpcServer::Create({.tls = ReadTlsFiles(pki->Files("router")).value()}, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto call = [&](const TlsConfig& tls, const std::string& address) {
    grpc::ClientContext ctx;
    SetTimeout(ctx, absl::Seconds(5));
    v1::AbortRequest req;
    v1::AbortResponse resp;
    return FromGrpcStatus(v1::GenerateService::NewStub(CreateChannel(address, {.tls = tls}))
                              ->Abort(&ctx, req, &resp))
        .code();
  };
  const std::string ip = (*server)->address();
  const std::string host = absl::StrCat("localhost:", (*server)->port());
  EXPECT_EQ(call(ReadTlsFiles(pki->Files("prefill-0")).value(), ip), absl::StatusCode::kOk);
  EXPECT_EQ(call(ReadTlsFiles(pki->Files("client")).value(), host), absl::StatusCode::kOk);
  EXPECT_EQ(service.calls.load(), 2);
  // Trusts our CA (so it accepts the server) but presents the other CA's certificate.
  TlsFiles intruder = other->Files("intruder");
  intruder.ca = pki->ca_path;
  EXPECT_EQ(call(ReadTlsFiles(intruder).value(), ip), absl::StatusCode::kUnavailable);
  EXPECT_EQ(call(TlsConfig{}, ip), absl::StatusCode::kUnavailable);
  EXPECT_EQ(service.calls.load(), 2);
  std::filesystem::remove_all(dir);
}

TEST(ThrowawayPkiTest, BadOptionsAreClearErrors) {
  EXPECT_EQ(WriteThrowawayPki({.dir = "/tmp/unused"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (const char* name : {"", "a/b", "..", "ca"}) {
    EXPECT_EQ(WriteThrowawayPki({.dir = "/tmp/unused", .names = {name}}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_EQ(
      WriteThrowawayPki({.dir = "/tmp/unused", .names = {"x"}, .ip_addresses = {"localhost"}})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteThrowawayPki({.dir = "/nonexistent/dir/tls", .names = {"x"}}).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(InternalTlsTest, PlaintextOnlyWhenAskedFor) {
  absl::Status neither = InternalTls({}, /*insecure=*/false).status();
  EXPECT_EQ(neither.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(neither.message().find("--tls-ca"), absl::string_view::npos) << neither;
  EXPECT_NE(neither.message().find("--insecure"), absl::string_view::npos) << neither;
  EXPECT_EQ(InternalTls({.ca = "a", .cert = "b", .key = "c"}, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<TlsConfig> plaintext = InternalTls({}, /*insecure=*/true);
  ASSERT_TRUE(plaintext.ok());
  EXPECT_FALSE(plaintext->enabled());
}

}  // namespace
}  // namespace gka::rpc
