// ThreadSanitizer annotations for Debian's (uninstrumented) gRPC core: the hand-off from
// grpc_call_start_batch to the completion of its tag.
//
// Why: gRPC's C++ layer is inline header code compiled into our (instrumented) binaries. A
// reactor's StartWrite/StartRead fills a CallOpSet and our message on one thread and calls
// grpc_call_start_batch(..., tag); when the batch completes, a gRPC thread takes `tag` from
// grpc_completion_queue_next/pluck and runs it (CallOpSet::FinalizeResult, the message's
// parse, our OnWriteDone/OnReadDone). The core orders the two through its own lock-free
// queues and atomics, which TSan cannot see, so every callback reactor reports false races on
// the CallOpSet and the message. The core's contract is exactly "everything before
// start_batch happens before the tag comes out of the queue"; these wrappers state it to TSan:
// release on `tag` before the real grpc_call_start_batch, acquire on the event's tag after
// the real grpc_completion_queue_next/pluck. Both are exported C functions of libgrpc, called
// through the PLT by our inline code and by libgrpc++ (its callback threads loop on
// grpc_completion_queue_next), so this library's definitions take their place.
//
// Must not depend on anything but gRPC's C header, libdl and the TSan runtime.
// Thread-safety: as the wrapped functions.
#include <grpc/grpc.h>
#include <sanitizer/tsan_interface.h>

#include "tests/tsan/next_symbol.h"

namespace {

void AcquireTag(const grpc_event& ev) {
  if (ev.type == GRPC_OP_COMPLETE && ev.tag != nullptr) __tsan_acquire(ev.tag);
}

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
