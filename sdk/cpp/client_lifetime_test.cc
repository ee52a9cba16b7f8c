// Client lifetimes against a fake router in another process: with no gRPC server in this
// process, the last channel is the last user of gRPC's shared callback completion queue, and
// releasing it on gRPC's own thread (the call's OnDone holding the last reference to the
// client) used to abort the process in grpc_cq_internal_unref.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "absl/synchronization/notification.h"
#include "gka/sdk/client.h"

namespace gka::sdk {
namespace {

// gka-sdk-fake-router as a child; its first stdout line is the address. Closing its stdin
// stops it.
class FakeRouterProcess {
 public:
  FakeRouterProcess() {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
    char* argv[] = {const_cast<char*>(GKA_SDK_FAKE_ROUTER), nullptr};
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv, environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    stdin_ = in[1];
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') address_ += c;
    close(out[0]);
  }
  ~FakeRouterProcess() {
    close(stdin_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  const std::string& address() const { return address_; }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1;
  std::string address_;
};

TEST(ClientLifetimeTest, ClientsDestroyedAsTheirCallsEnd) {
  FakeRouterProcess fake;
  ASSERT_FALSE(fake.address().empty());
  for (int i = 0; i < 200; ++i) {
    auto client = Client::Create({.address = fake.address()});
    ASSERT_TRUE(client.ok());
    absl::StatusOr<Result> r = (*client)->Generate(Request::Text("x"));
    ASSERT_TRUE(r.ok()) << r.status();
    // The client goes here, while the call may still be inside its OnDone.
  }
}

TEST(ClientLifetimeTest, ClientDestroyedInsideItsCallback) {
  FakeRouterProcess fake;
  for (int i = 0; i < 50; ++i) {
    auto client = Client::Create({.address = fake.address()});
    ASSERT_TRUE(client.ok());
    Client* raw = client->release();
    absl::Notification done;
    auto call = raw->GenerateStream(Request::Text("x"), {.on_done = [&](absl::StatusOr<Result>) {
                                      delete raw;  // the user's last reference, on gRPC's thread
                                      done.Notify();
                                    }});
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
}

}  // namespace
}  // namespace gka::sdk
