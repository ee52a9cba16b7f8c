// Helpers for the tests of kernels/nccl (GPU tests, one thread per rank): the visible device
// count, running a function on one thread per rank with its device current, and NVLink
// multicast kept off. Header-only; test code only.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

namespace gka::kernels::nccl::testing {

// NVLink multicast (NVLS) stays off on shared hosts; an explicit setting in the environment wins.
inline const bool kNvlsOff = setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0) == 0;

// Every test asks this before it makes a communicator, which also makes sure kNvlsOff's
// initialisation is kept (an unused inline variable need not be emitted).
inline int DeviceCount() {
  static_cast<void>(kNvlsOff);
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// Runs fn(rank) on one thread per rank (rank r on device r, current), and joins them.
inline void OnRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
      fn(r);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace gka::kernels::nccl::testing
