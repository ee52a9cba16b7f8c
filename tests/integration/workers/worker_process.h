// A worker binary run as a child process: environment, stderr to a log file, the JSON ready
// line from stdout, SIGTERM/SIGSTOP/SIGCONT and the exit status.
//
// The child gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace gka::workers_test {

class WorkerProcess {
 public:
  // `env`: "NAME=value" entries added to the inherited environment.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Spawn(const std::vector<std::string>& argv,
                                                              const std::vector<std::string>& env,
                                                              const std::string& log_path) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      // The test's own mask (if any) must not leak into the worker.
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      dup2(out[1], 1);
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (log >= 0) dup2(log, 2);
      for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    auto p = std::unique_ptr<WorkerProcess>(new WorkerProcess);
    p->pid_ = pid;
    p->out_ = out[0];
    p->log_path_ = log_path;
    return p;
  }

  ~WorkerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
  }

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // The first stdout line, parsed as JSON.
  absl::StatusOr<nlohmann::json> ReadyLine(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    std::string line;
    while (true) {
      const size_t nl = buffered_.find('\n');
      if (nl != std::string::npos) {
        line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        break;
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(absl::StrCat("no ready line; see ", log_path_));
      }
      pollfd fd{out_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out_, buf, sizeof(buf));
      if (n <= 0) return absl::UnavailableError(absl::StrCat("the worker exited; see ", log_path_));
      buffered_.append(buf, n);
    }
    raw_ready_line_ = line;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return absl::DataLossError(absl::StrCat("not JSON: ", line));
    return j;
  }

  // The ready line as printed.
  const std::string& raw_ready_line() const { return raw_ready_line_; }

  void Signal(int signal) {
    if (pid_ > 0) kill(pid_, signal);
  }

  // SIGTERM, then the exit code; -1 (after SIGKILL) if it does not exit within `timeout`.
  int Terminate(absl::Duration timeout) {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    const absl::Time give_up = absl::Now() + timeout;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (absl::Now() > give_up) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return -1;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  WorkerProcess() = default;
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffered_;
  std::string log_path_;
  std::string raw_ready_line_;
};

}  // namespace gka::workers_test
