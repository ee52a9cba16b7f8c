// gka-sdk-fake-router: the SDK's fake router as a process, so that example programs and the
// Python SDK's tests run against the very fake the C++ tests use.
//
//   gka-sdk-fake-router [--address 127.0.0.1:0] [--api-key KEY] [--tls-cert F --tls-key F]
//
// Prints the bound "host:port" as the first line of stdout, then serves until stdin ends.
// Each stdin line is a command; each gets one line of answer on stdout:
//   push {"tokens": ["a", " b"], "first_token_delay_ms": 0, "token_interval_ms": 0,
//         "end": "final|error|status|hang", "code": 14, "message": "...",
//         "retryable": true, "trailing_metadata": {"retry-after-ms": "300"}}   -> ok
//   fail_unary COUNT CODE                                -> ok
//   calls                                                -> "<generate calls> <unary calls>"
//   cancelled REQUEST_ID TIMEOUT_MS                      -> yes | no
//   requests                                             -> JSON array of the requests seen
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "sdk/cpp/testing/fake_router.h"

namespace {

using gka::sdk::testing::FakeScript;

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

absl::StatusOr<FakeScript> ParseScript(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::InvalidArgumentError("push: expected a JSON object");
  FakeScript s;
  try {
    s.tokens = j.value("tokens", std::vector<std::string>{});
    s.first_token_delay = absl::Milliseconds(j.value("first_token_delay_ms", 0));
    s.token_interval = absl::Milliseconds(j.value("token_interval_ms", 0));
    const std::string end = j.value("end", "final");
    if (end == "final") {
      s.end = FakeScript::kFinal;
    } else if (end == "error") {
      s.end = FakeScript::kError;
    } else if (end == "status") {
      s.end = FakeScript::kStatus;
    } else if (end == "hang") {
      s.end = FakeScript::kHang;
    } else {
      return absl::InvalidArgumentError("push: end must be final, error, status or hang");
    }
    s.code = static_cast<absl::StatusCode>(j.value("code", 14));
    s.message = j.value("message", s.message);
    s.retryable = j.value("retryable", true);
    s.trailing_metadata = j.value("trailing_metadata", std::map<std::string, std::string>{});
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(std::string("push: ") + e.what());
  }
  return s;
}

std::string RequestsJson(const gka::sdk::testing::FakeGenerateService& service) {
  std::string out = "[";
  for (const auto& request : service.requests()) {
    std::string one;
    (void)google::protobuf::util::MessageToJsonString(request, &one);
    if (out.size() > 1) out += ",";
    out += one;
  }
  return out + "]";
}

// One command line -> one answer line.
std::string Execute(gka::sdk::testing::FakeGenerateService& service, const std::string& line) {
  const std::vector<std::string> words = absl::StrSplit(line, absl::MaxSplits(' ', 1));
  const std::string& command = words[0];
  const std::string rest = words.size() > 1 ? words[1] : "";
  if (command == "push") {
    absl::StatusOr<FakeScript> script = ParseScript(rest);
    if (!script.ok()) return "error " + std::string(script.status().message());
    service.Push(*std::move(script));
    return "ok";
  }
  if (command == "fail_unary") {
    const std::vector<std::string> args = absl::StrSplit(rest, ' ');
    int count = 0, code = 0;
    if (args.size() != 2 || !absl::SimpleAtoi(args[0], &count) ||
        !absl::SimpleAtoi(args[1], &code)) {
      return "error usage: fail_unary COUNT CODE";
    }
    service.FailUnary(count, static_cast<absl::StatusCode>(code));
    return "ok";
  }
  if (command == "calls") {
    return std::to_string(service.generate_calls()) + " " + std::to_string(service.unary_calls());
  }
  if (command == "cancelled") {
    const std::vector<std::string> args = absl::StrSplit(rest, ' ');
    int timeout_ms = 0;
    if (args.size() != 2 || !absl::SimpleAtoi(args[1], &timeout_ms)) {
      return "error usage: cancelled REQUEST_ID TIMEOUT_MS";
    }
    return service.WaitForCancelled(args[0], absl::Milliseconds(timeout_ms)) ? "yes" : "no";
  }
  if (command == "requests") return RequestsJson(service);
  return "error unknown command " + command;
}

}  // namespace

int main(int argc, char** argv) {
  gka::sdk::testing::FakeRouterOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "missing value for " << flag << "\n";
      return 2;
    }
    const std::string value = argv[++i];
    if (flag == "--address") {
      options.address = value;
    } else if (flag == "--api-key") {
      options.api_key = value;
    } else if (flag == "--tls-cert" || flag == "--tls-key") {
      std::string& pem = flag == "--tls-cert" ? options.tls_cert_pem : options.tls_key_pem;
      if (!ReadFile(value, &pem)) {
        std::cerr << "cannot read " << value << "\n";
        return 2;
      }
    } else {
      std::cerr << "unknown flag " << flag << "\n";
      return 2;
    }
  }
  auto fake = gka::sdk::testing::FakeRouter::Start(options);
  if (!fake.ok()) {
    std::cerr << fake.status() << "\n";
    return 1;
  }
  std::cout << (*fake)->address() << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    std::cout << Execute((*fake)->service(), line) << std::endl;
  }
  (*fake)->Shutdown(absl::Milliseconds(200));
  return 0;
}
