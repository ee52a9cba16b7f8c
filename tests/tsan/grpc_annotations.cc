// ThreadSanitizer annotations for Debian's (uninstrumented) gRPC: the hand-offs of a batch
// from grpc_call_start_batch to the completion of its tag, and of a callback-API call's
// reactions to its OnDone.
//
// Why: gRPC's C++ layer is mostly inline header code compiled into our (instrumented)
// binaries. A reactor's StartWrite/StartRead/Finish fills a CallOpSet and our message on one
// thread and calls grpc_call_start_batch(..., tag); when the batch completes, a gRPC thread
// takes `tag` and runs it (CallOpSet::FinalizeResult, the message's parse, our
// OnWriteDone/OnReadDone). The core orders the two through its own lock-free queues and
// atomics, which TSan cannot see, so callback reactors report false races on the CallOpSet,
// the message and the reactor. The core's contract is exactly "everything before start_batch
// happens before the tag completes"; the wrappers below state it to TSan:
//   - release on `tag` before the real grpc_call_start_batch;
//   - acquire on `tag` in grpc_cq_end_op, where the core completes it. For a callback
//     completion queue (the callback API) the functor runs on that thread or on an executor
//     thread it hands the functor to under gpr_mu (absl::Mutex, annotated by
//     absl_annotations.cc); grpc_completion_queue_next/pluck never see these tags;
//   - acquire on the event's tag after the real grpc_completion_queue_next/pluck (the
//     completion-queue APIs: sync calls, async CQs), whose hand-off from grpc_cq_end_op is
//     again lock-free.
// libgrpc++ (not instrumented either) also runs two pieces of the server callback API itself;
// see ServerCallbackCall below.
//
// All wrapped functions are exported by libgrpc/libgrpc++ and reached through the PLT, also
// from inside their own library (checked on Debian's 1.51: every call of grpc_cq_end_op,
// ScheduleOnDone and CallOnCancel there is a PLT call), so this library's definitions take
// their place; the real ones are found with dlsym(RTLD_NEXT).
//
// Must not depend on anything but gRPC's headers, Abseil's Status, libdl and the TSan runtime.
// Thread-safety: as the wrapped functions.
#include <dlfcn.h>
#include <grpc/grpc.h>
#include <grpcpp/support/server_callback.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "absl/base/options.h"
#include "absl/status/status.h"
#include "tests/tsan/next_symbol.h"

// gRPC core's completion storage: only passed through.
struct grpc_cq_completion;

// gRPC core's internal completion entry point (src/core/lib/surface/completion_queue.h),
// exported by libgrpc; not in an installed header, so declared here exactly as 1.51 has it
// (grpc_error_handle is absl::Status). A wrong declaration would mangle to another name and
// silently wrap nothing: CheckEndOpWrapped below rules that out at load time.
void grpc_cq_end_op(grpc_completion_queue* cq, void* tag, absl::Status error,
                    void (*done)(void* done_arg, grpc_cq_completion* storage), void* done_arg,
                    grpc_cq_completion* storage, bool internal);

namespace {

#define GKA_TSAN_STRINGIFY2(x) #x
#define GKA_TSAN_STRINGIFY(x) GKA_TSAN_STRINGIFY2(x)

// The mangled name of grpc_cq_end_op: absl::Status sits in Abseil's inline namespace.
std::string EndOpName() {
  const std::string ns = GKA_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return "_Z14grpc_cq_end_opP21grpc_completion_queuePvN4absl" + std::to_string(ns.size()) + ns +
         "6StatusEPFvS1_P18grpc_cq_completionES1_S6_b";
}

// Load-time check that the definition below is the one the mangled name resolves to.
const bool kEndOpWrapped = [] {
  if (dlsym(RTLD_DEFAULT, EndOpName().c_str()) != reinterpret_cast<void*>(&grpc_cq_end_op)) {
    std::fprintf(stderr, "gka tsan annotations: %s does not name this library's grpc_cq_end_op\n",
                 EndOpName().c_str());
    std::abort();
  }
  return true;
}();

void AcquireTag(const grpc_event& ev) {
  if (ev.type == GRPC_OP_COMPLETE && ev.tag != nullptr) __tsan_acquire(ev.tag);
}

// Stands in for the reactor passed to ServerCallbackCall::CallOnCancel; see there.
class ReleasingCancelReactor final : public grpc::internal::ServerReactor {
 public:
  ReleasingCancelReactor(grpc::internal::ServerReactor* reactor, void* sync)
      : reactor_(reactor), sync_(sync) {}

  void OnCancel() override {
    reactor_->OnCancel();
    __tsan_release(sync_);
    delete this;  // CallOnCancel calls OnCancel exactly once and never touches it again
  }
  // gRPC calls OnDone on the call's own reactor, never on the one CallOnCancel was given.
  void OnDone() override { std::abort(); }
  bool InternalInlineable() override { return reactor_->InternalInlineable(); }

 private:
  grpc::internal::ServerReactor* const reactor_;
  void* const sync_;
};

}  // namespace

extern "C" {

grpc_call_error grpc_call_start_batch(grpc_call* call, const grpc_op* ops, size_t nops, void* tag,
                                      void* reserved) {
  static auto real =
      gka::tsan::Next<grpc_call_error (*)(grpc_call*, const grpc_op*, size_t, void*, void*)>(
          "grpc_call_start_batch");
  if (tag != nullptr) __tsan_release(tag);
  return real(call, ops, nops, tag, reserved);
}

grpc_event grpc_completion_queue_next(grpc_completion_queue* cq, gpr_timespec deadline,
                                      void* reserved) {
  static auto real = gka::tsan::Next<grpc_event (*)(grpc_completion_queue*, gpr_timespec, void*)>(
      "grpc_completion_queue_next");
  grpc_event ev = real(cq, deadline, reserved);
  AcquireTag(ev);
  return ev;
}

grpc_event grpc_completion_queue_pluck(grpc_completion_queue* cq, void* tag, gpr_timespec deadline,
                                       void* reserved) {
  static auto real =
      gka::tsan::Next<grpc_event (*)(grpc_completion_queue*, void*, gpr_timespec, void*)>(
          "grpc_completion_queue_pluck");
  grpc_event ev = real(cq, tag, deadline, reserved);
  AcquireTag(ev);
  return ev;
}

}  // extern "C"

void grpc_cq_end_op(grpc_completion_queue* cq, void* tag, absl::Status error,
                    void (*done)(void* done_arg, grpc_cq_completion* storage), void* done_arg,
                    grpc_cq_completion* storage, bool internal) {
  using EndOp = void (*)(grpc_completion_queue*, void*, absl::Status,
                         void (*)(void*, grpc_cq_completion*), void*, grpc_cq_completion*, bool);
  static auto real = gka::tsan::Next<EndOp>(EndOpName().c_str());
  (void)kEndOpWrapped;
  // Tags that were never released (a server's request_call, an alarm) have no sync object
  // and the acquire does nothing.
  if (tag != nullptr) __tsan_acquire(tag);
  real(cq, tag, std::move(error), done, done_arg, storage, internal);
}

namespace grpc::internal {

// A server callback call counts its outstanding reactions in callbacks_outstanding_ and runs
// OnDone (ScheduleOnDone, then CallOnDone on an executor thread) after the last one ends;
// OnCancel runs once both the reactor is bound and the call is cancelled
// (on_cancel_conditions_remaining_). Most decrements are inline header code in our binaries,
// so TSan sees them as the acq_rel atomics they are. libgrpc++ makes two itself, unseen:
//   - ServerContextBase::CompletionOp (the cancellation notice) decrements
//     on_cancel_conditions_remaining_ and may be the one that calls CallOnCancel: acquire what
//     the reactor side released there (the handler's writes, the reactor's construction);
//   - CallOnCancel's closure runs reactor->OnCancel() and then decrements
//     callbacks_outstanding_: release there after OnCancel (ReleasingCancelReactor), and
//     acquire in ScheduleOnDone, which runs on whichever thread made the last decrement.
// Both are the orderings gRPC guarantees (OnDone after every reaction has returned, OnCancel
// after the reactor is bound); the member definitions here have access to the counters.

void ServerCallbackCall::ScheduleOnDone(bool inline_ondone) {
  static auto real = gka::tsan::Next<void (*)(ServerCallbackCall*, bool)>(
      "_ZN4grpc8internal18ServerCallbackCall14ScheduleOnDoneEb");
  __tsan_acquire(&callbacks_outstanding_);
  real(this, inline_ondone);
}

void ServerCallbackCall::CallOnCancel(ServerReactor* reactor) {
  static auto real = gka::tsan::Next<void (*)(ServerCallbackCall*, ServerReactor*)>(
      "_ZN4grpc8internal18ServerCallbackCall12CallOnCancelEPNS0_13ServerReactorE");
  __tsan_acquire(&on_cancel_conditions_remaining_);
  real(this, new ReleasingCancelReactor(reactor, &callbacks_outstanding_));
}

}  // namespace grpc::internal
