// A child process driven by line commands over pipes, for two-process transfer tests.
//
// The child gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test; reads time out, so a
// stuck child fails a test instead of hanging it.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace gka::transfer {

class PeerProcess {
 public:
  static absl::StatusOr<PeerProcess> Spawn(const std::vector<std::string>& argv) {
    int to_child[2], from_child[2];
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
      return absl::InternalError("pipe2 failed");
    }
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    PeerProcess p;
    p.pid_ = pid;
    p.in_ = to_child[1];
    p.out_ = from_child[0];
    return p;
  }

  PeerProcess() = default;
  PeerProcess(PeerProcess&& o) noexcept { *this = std::move(o); }
  PeerProcess& operator=(PeerProcess&& o) noexcept {
    std::swap(pid_, o.pid_);
    std::swap(in_, o.in_);
    std::swap(out_, o.out_);
    std::swap(buffered_, o.buffered_);
    std::swap(stash_, o.stash_);
    return *this;
  }
  ~PeerProcess() {
    if (pid_ > 0) {
      Send("EXIT");
      close(in_);
      in_ = -1;
      const absl::Time give_up = absl::Now() + absl::Seconds(5);
      while (waitpid(pid_, nullptr, WNOHANG) == 0) {
        if (absl::Now() > give_up) {
          kill(pid_, SIGKILL);
          waitpid(pid_, nullptr, 0);
          break;
        }
        absl::SleepFor(absl::Milliseconds(5));
      }
    }
    if (in_ >= 0) close(in_);
    if (out_ >= 0) close(out_);
  }

  void Send(const std::string& line) {
    const std::string data = line + "\n";
    [[maybe_unused]] ssize_t n = write(in_, data.data(), data.size());
  }

  // The next line starting with `prefix` (other lines are kept for later reads).
  absl::StatusOr<std::string> Expect(absl::string_view prefix, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      size_t nl;
      while ((nl = buffered_.find('\n')) != std::string::npos) {
        stash_.push_back(buffered_.substr(0, nl));
        buffered_.erase(0, nl + 1);
      }
      for (auto it = stash_.begin(); it != stash_.end(); ++it) {
        if (absl::StartsWith(*it, prefix)) {
          std::string line = *it;
          stash_.erase(it);
          return line;
        }
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(absl::StrCat("no '", prefix, "' line from the peer"));
      }
      pollfd fd{out_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out_, buf, sizeof(buf));
      if (n <= 0) return absl::UnavailableError(absl::StrCat("peer exited before '", prefix, "'"));
      buffered_.append(buf, n);
    }
  }

  // SIGSTOP / SIGCONT: the process (and its UCX worker) stops answering, then resumes.
  void Freeze() { kill(pid_, SIGSTOP); }
  void Thaw() { kill(pid_, SIGCONT); }

  // SIGKILL and reap.
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string buffered_;
  std::vector<std::string> stash_;
};

}  // namespace gka::transfer
