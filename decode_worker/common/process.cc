#include "decode_worker/common/process.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gka::worker_common {

std::string ReadyLine(absl::string_view role, absl::string_view grpc_address,
                      absl::string_view metrics_address) {
  nlohmann::ordered_json j;  // keys in this order
  j["role"] = std::string(role);
  j["grpc"] = std::string(grpc_address);
  j["metrics"] = std::string(metrics_address);
  j["pid"] = static_cast<int64_t>(getpid());
  return j.dump();
}

absl::StatusOr<std::vector<std::string>> ReadTierNames(absl::string_view path) {
  std::ifstream in{std::string(path)};
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read tier file ", path));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("tiers") || !j["tiers"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tier file ", path, ": expected an object with a \"tiers\" array"));
  }
  std::vector<std::string> names;
  for (const nlohmann::json& t : j["tiers"]) {
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tier file ", path, ": every tier needs a string \"name\""));
    }
    names.push_back(t["name"].get<std::string>());
  }
  return names;
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int signal = 0;
  while (sigwait(&set, &signal) != 0) {
  }
  return signal;
}

}  // namespace gka::worker_common
