// gka-sdk-fake-router: the SDK's fake router as a process, for tests that run example
// programs and other languages' SDKs against it.
//
//   gka-sdk-fake-router [--address 127.0.0.1:0] [--api-key KEY] [--tls-cert F --tls-key F]
//
// Prints the bound "host:port" on the first line of stdout, then serves (echo behaviour, see
// fake_router.h) until SIGTERM, SIGINT or the end of stdin.
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "sdk/cpp/testing/fake_router.h"

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
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
  // Block the stop signals before gRPC starts its threads, then wait for one here.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto fake = gka::sdk::testing::FakeRouter::Start(options);
  if (!fake.ok()) {
    std::cerr << fake.status() << "\n";
    return 1;
  }
  std::cout << (*fake)->address() << std::endl;

  std::thread stdin_watch([] {
    char buf[256];
    while (read(0, buf, sizeof(buf)) > 0) {
    }
    kill(getpid(), SIGTERM);
  });
  stdin_watch.detach();
  int sig = 0;
  sigwait(&stop, &sig);
  (*fake)->Shutdown(absl::Milliseconds(200));
  return 0;
}
