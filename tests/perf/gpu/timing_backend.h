// A Backend decorator that times every op of the CUDA backend with events on its stream, and
// a Communicator decorator that does the same for collectives: the per-op breakdown of one
// engine step (what a decode step's time goes to). Benchmarks only.
//
//   auto timer = std::make_shared<OpTimer>();      // shared: the engine's backend and the bench
//   options.wrap_backend = [timer](auto be) { return WrapWithTimer(std::move(be), timer); };
//   ...  timer->set_enabled(true); engine->Forward(batch); timer->Collect();  // ms per op
//
// GEMMs are named by their weight shape ("gemm 5120x1280"), so the caller can tell q_proj
// from down_proj, and carry their FLOPs (achieved TFLOP/s per shape in a prefill). Events are
// recorded around each op on the stream: the times are device time between the op's neighbours,
// including any launch gap in front of it.
//
// Thread-safety: one OpTimer per engine thread.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/parallel/communicator.h"
#include "kernels/api/backend.h"

namespace gka::gpu_testing {

class OpTimer {
 public:
  OpTimer();
  ~OpTimer();
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  void set_stream(void* stream) { stream_ = stream; }
  // Records the start of an op named `name` doing `flops` FLOPs (GEMMs; 0: not counted);
  // End() closes the most recent one.
  void Begin(const std::string& name, double flops = 0);
  void End();
  // Waits for the stream and returns total ms per op name (and count), then clears.
  struct Entry {
    double ms = 0;
    int count = 0;
    double flops = 0;  // summed over the calls (GEMMs: 2·M·N·K each)
  };
  std::map<std::string, Entry> Collect();

 private:
  struct Pending {
    std::string name;
    void* begin;
    void* end;
    double flops;
  };
  void* NextEvent();
  bool enabled_ = false;
  void* stream_ = nullptr;
  std::vector<void*> events_;  // cudaEvent_t pool
  size_t used_ = 0;
  std::vector<Pending> pending_;
};

// `inner` must be the CUDA backend; every op is forwarded, timed when the timer is enabled.
std::unique_ptr<kernels::Backend> WrapWithTimer(std::unique_ptr<kernels::Backend> inner,
                                                std::shared_ptr<OpTimer> timer);

// Times AllReduceSum/AllGather of `inner` (not owned) on the stream it is bound to.
std::unique_ptr<parallel::Communicator> WrapCommunicator(parallel::Communicator* inner,
                                                         std::shared_ptr<OpTimer> timer);

}  // namespace gka::gpu_testing
