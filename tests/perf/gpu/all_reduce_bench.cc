// The TP all-reduce per message size (issue 5): NCCL vs the one-shot and two-shot P2P kernels
// (kernels/nccl/one_shot_all_reduce.h), bf16, on the first N visible GPUs, one thread per rank
// as in a worker. Picks the two-shot threshold: the smallest size from which two-shot beats
// one-shot in both runs.
//
// Per size and path: 5 warm-up calls, then 50 calls back to back on each rank's stream; the
// time per call is rank 0's events around the 50 (every call waits for all ranks, so rank 0
// sees the group's pace); twice.
//
//   all_reduce_bench [--ranks 4]
#include <cuda_runtime_api.h>

#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/parallel/communicator.h"
#include "common/tensor/dtype.h"
#include "kernels/nccl/nccl_communicator.h"
#include "tests/perf/gpu/bench_check.h"

namespace gka::kernels::nccl {
namespace {

using Group = std::vector<std::unique_ptr<parallel::Communicator>>;

// Microseconds per call of `numel` bf16 through the group (rank 0's view).
double TimeAllReduce(Group& g, int64_t numel) {
  const int n = static_cast<int>(g.size());
  constexpr int kWarm = 5, kCalls = 50;
  double us = 0;
  std::barrier sync(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CUDA_CHECK(cudaSetDevice(r));
      cudaStream_t stream;
      CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      if (!g[r]->BindStream(stream).ok()) std::exit(1);
      void* d = nullptr;
      CUDA_CHECK(cudaMalloc(&d, numel * 2));
      CUDA_CHECK(cudaMemset(d, 0, numel * 2));
      const tensor::TensorView t{d, tensor::DType::kBF16, tensor::Shape{numel},
                                 tensor::Device::kCuda};
      for (int i = 0; i < kWarm; ++i) {
        if (!g[r]->AllReduceSum(t).ok()) std::exit(1);
      }
      CUDA_CHECK(cudaStreamSynchronize(stream));
      sync.arrive_and_wait();
      cudaEvent_t e0, e1;
      CUDA_CHECK(cudaEventCreate(&e0));
      CUDA_CHECK(cudaEventCreate(&e1));
      CUDA_CHECK(cudaEventRecord(e0, stream));
      for (int i = 0; i < kCalls; ++i) {
        if (!g[r]->AllReduceSum(t).ok()) std::exit(1);
      }
      CUDA_CHECK(cudaEventRecord(e1, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
      if (r == 0) {
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        us = 1000.0 * ms / kCalls;
      }
      sync.arrive_and_wait();  // nobody frees while a peer may still read its staging
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
      cudaFree(d);
      cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
  return us;
}

int Main(int argc, char** argv) {
  int ranks = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--ranks") == 0) ranks = std::atoi(argv[i + 1]);
  }
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  unsetenv("GKA_TWO_SHOT_MIN_BYTES");
  unsetenv("GKA_ONESHOT_ALLREDUCE");
  std::vector<int> devices;
  for (int r = 0; r < ranks; ++r) devices.push_back(r);
  constexpr int64_t kCap = int64_t{8} << 20, kNever = int64_t{1} << 62;
  auto nccl = CreateNcclGroup(devices, {.one_shot_max_bytes = 0});
  auto one = CreateNcclGroup(devices, {.one_shot_max_bytes = kCap, .two_shot_min_bytes = kNever});
  auto two = CreateNcclGroup(devices, {.one_shot_max_bytes = kCap, .two_shot_min_bytes = 0});
  if (!nccl.ok() || !one.ok() || !two.ok()) {
    std::fprintf(stderr, "group: %s %s %s\n", nccl.status().ToString().c_str(),
                 one.status().ToString().c_str(), two.status().ToString().c_str());
    return 1;
  }
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# %d x %s; bf16 all-reduce, us per call (run 1 / 2)\n", ranks, prop.name);
  std::printf("# bytes | NCCL | one-shot | two-shot | two-shot faster than one-shot?\n");
  int64_t threshold = -1;
  // Decode messages of the 32B model: batch × 5120 bf16 (batch 25 .. 409).
  for (int64_t rows : {25, 51, 101, 128, 160, 209, 256, 320, 409}) {
    const int64_t numel = rows * 5120, bytes = numel * 2;
    double t[3][2];
    for (int run = 0; run < 2; ++run) {
      t[0][run] = TimeAllReduce(*nccl, numel);
      t[1][run] = TimeAllReduce(*one, numel);
      t[2][run] = TimeAllReduce(*two, numel);
    }
    const bool faster = t[2][0] < t[1][0] && t[2][1] < t[1][1];
    if (faster && threshold < 0) threshold = bytes;
    if (!faster) threshold = -1;  // the threshold is where two-shot wins from on
    std::printf(
        "ALLREDUCE %8lld B (%3lld x 5120) | %6.1f / %6.1f | %6.1f / %6.1f | %6.1f / %6.1f | %s\n",
        static_cast<long long>(bytes), static_cast<long long>(rows), t[0][0], t[0][1], t[1][0],
        t[1][1], t[2][0], t[2][1], faster ? "yes" : "no");
    std::fflush(stdout);
  }
  std::printf("# two-shot wins from %lld bytes on (-1: not at these sizes)\n",
              static_cast<long long>(threshold));
  return 0;
}

}  // namespace
}  // namespace gka::kernels::nccl

int main(int argc, char** argv) { return gka::kernels::nccl::Main(argc, argv); }
