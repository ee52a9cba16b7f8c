// The one-shot and two-shot all-reduces on every visible GPU (label gpu; skipped with fewer
// than 2 or without peer access): bitwise equal to the CPU reference
// (parallel::CreateInProcessGroup: fp32 sums in rank order, rounded once) on every rank, within
// bf16 rounding of NCCL's sum, correct over many calls enqueued back to back with one rank late
// (one-shot only, two-shot only, and the two mixed call by call), and inside CUDA graphs
// replayed with fresh data; argument errors are statuses.
#include "kernels/nccl/one_shot_all_reduce.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "common/parallel/communicator.h"
#include "common/tensor/dtype.h"
#include "kernels/nccl/nccl_communicator.h"
#include "kernels/nccl/nccl_test_util.h"

namespace gka::kernels::nccl {
namespace {

using tensor::DType;
using tensor::Shape;
using tensor::TensorView;
using testing::DeviceCount;
using testing::OnRanks;

bool AllPeers(int n) {
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      int can = 0;
      if (i != j && (cudaDeviceCanAccessPeer(&can, i, j) != cudaSuccess || !can)) return false;
    }
  return true;
}

#define SKIP_WITHOUT_PEER_GPUS()                                          \
  if (DeviceCount() < 2) GTEST_SKIP() << "needs at least 2 CUDA devices"; \
  if (!AllPeers(DeviceCount())) GTEST_SKIP() << "needs peer access between GPUs"

std::vector<int> AllDevices() {
  std::vector<int> d;
  for (int i = 0; i < DeviceCount(); ++i) d.push_back(i);
  return d;
}

size_t ElemBytes(DType d) { return d == DType::kF32 ? 4 : 2; }

constexpr int64_t kNever = int64_t{1} << 62;  // a two-shot threshold no message reaches

// numel elements of `dtype` as raw bytes, uniform in [-1, 1) (bf16: rounded), distinct per seed.
std::vector<char> RandomBytes(int64_t numel, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<char> out(numel * ElemBytes(dtype));
  for (int64_t i = 0; i < numel; ++i) {
    const float x = u(rng);
    if (dtype == DType::kF32) {
      std::memcpy(&out[i * 4], &x, 4);
    } else {
      const uint16_t h = tensor::FloatToBF16(x);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

// The CPU reference: the in-process group's all-reduce of the same bytes (rank order, fp32).
std::vector<char> CpuReference(const std::vector<std::vector<char>>& data, int64_t numel,
                               DType dtype) {
  const int n = static_cast<int>(data.size());
  auto group = parallel::CreateInProcessGroup(n);
  std::vector<std::vector<char>> work = data;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      const TensorView t{work[r].data(), dtype, Shape{numel}, tensor::Device::kCpu};
      EXPECT_TRUE(group[r]->AllReduceSum(t).ok());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 1; r < n; ++r) EXPECT_EQ(work[r], work[0]);
  return work[0];
}

// Every rank's data through the communicators' AllReduceSum on its GPU; results per rank.
std::vector<std::vector<char>> OnGpus(std::vector<std::unique_ptr<parallel::Communicator>>& comms,
                                      const std::vector<std::vector<char>>& data, int64_t numel,
                                      DType dtype) {
  const int n = static_cast<int>(comms.size());
  std::vector<std::vector<char>> out(n);
  OnRanks(n, [&](int r) {
    const size_t bytes = data[r].size();
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_TRUE(comms[r]->BindStream(stream).ok());
    void* d = nullptr;
    ASSERT_EQ(cudaMalloc(&d, bytes), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d, data[r].data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_TRUE(comms[r]->AllReduceSum({d, dtype, Shape{numel}, tensor::Device::kCuda}).ok());
    out[r].resize(bytes);
    ASSERT_EQ(cudaMemcpyAsync(out[r].data(), d, bytes, cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    cudaFree(d);
    cudaStreamDestroy(stream);
  });
  return out;
}

double MaxAbsDiff(const std::vector<char>& a, const std::vector<char>& b, DType dtype) {
  double worst = 0;
  for (size_t i = 0; i < a.size() / ElemBytes(dtype); ++i) {
    float x, y;
    if (dtype == DType::kF32) {
      std::memcpy(&x, &a[i * 4], 4);
      std::memcpy(&y, &b[i * 4], 4);
    } else {
      uint16_t hx, hy;
      std::memcpy(&hx, &a[i * 2], 2);
      std::memcpy(&hy, &b[i * 2], 2);
      x = tensor::BF16ToFloat(hx);
      y = tensor::BF16ToFloat(hy);
    }
    worst = std::max<double>(worst, std::fabs(x - y));
  }
  return worst;
}

TEST(OneShotAllReduceTest, BitwiseEqualToTheCpuReferenceAndCloseToNccl) {
  SKIP_WITHOUT_PEER_GPUS();
  unsetenv("GKA_TWO_SHOT_MIN_BYTES");  // the options below decide
  const std::vector<int> devices = AllDevices();
  const int n = static_cast<int>(devices.size());
  auto one_shot = CreateNcclGroup(devices, {.two_shot_min_bytes = kNever});  // ≤ 4 MiB
  ASSERT_TRUE(one_shot.ok()) << one_shot.status();
  auto two_shot = CreateNcclGroup(devices, {.two_shot_min_bytes = 0});
  ASSERT_TRUE(two_shot.ok()) << two_shot.status();
  auto nccl = CreateNcclGroup(devices, {.one_shot_max_bytes = 0});
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  struct Size {
    int64_t numel;
    DType dtype;
  };
  // One vector (two-shot: fewer vectors than ranks, so one-shot); a decode step's all-reduce at
  // batch 101 of the 32B model (101 × 5120 bf16); exactly the 4 MiB capacity; 1 MiB of fp32;
  // vector counts that do not split evenly over the ranks (two-shot's segments).
  for (const Size& s :
       {Size{8, DType::kBF16}, Size{101 * 5120, DType::kBF16}, Size{2 << 20, DType::kBF16},
        Size{1 << 18, DType::kF32}, Size{8 * 1001, DType::kBF16}, Size{4 * 1003, DType::kF32}}) {
    std::vector<std::vector<char>> data(n);
    for (int r = 0; r < n; ++r) data[r] = RandomBytes(s.numel, s.dtype, 77 + r * 1000 + s.numel);
    const std::vector<char> ref = CpuReference(data, s.numel, s.dtype);
    const auto got = OnGpus(*one_shot, data, s.numel, s.dtype);
    const auto got2 = OnGpus(*two_shot, data, s.numel, s.dtype);
    const auto by_nccl = OnGpus(*nccl, data, s.numel, s.dtype);
    for (int r = 0; r < n; ++r) {
      EXPECT_TRUE(got[r] == ref) << "one-shot rank " << r << ", " << s.numel << " elements of "
                                 << tensor::DTypeName(s.dtype) << ": max |diff| "
                                 << MaxAbsDiff(got[r], ref, s.dtype);
      EXPECT_TRUE(got2[r] == ref) << "two-shot rank " << r << ", " << s.numel << " elements of "
                                  << tensor::DTypeName(s.dtype) << ": max |diff| "
                                  << MaxAbsDiff(got2[r], ref, s.dtype);
      // NCCL sums in its own order (bf16: rounding each partial): within a few ulps of n
      // terms of |x| < 1 — bf16's step at 4 is 2^-5.
      const double nccl_diff = MaxAbsDiff(by_nccl[r], ref, s.dtype);
      EXPECT_LE(nccl_diff, s.dtype == DType::kF32 ? 1e-5 * n : 0.04 * n) << "rank " << r;
      if (r == 0) {
        std::printf(
            "one-shot vs CPU reference: bitwise %s; two-shot: bitwise %s; NCCL vs CPU reference "
            "max |diff| %.3g (%lld x %s, %d ranks)\n",
            got[r] == ref ? "equal" : "DIFFERENT", got2[r] == ref ? "equal" : "DIFFERENT",
            nccl_diff, static_cast<long long>(s.numel), tensor::DTypeName(s.dtype).data(), n);
      }
    }
  }
}

// Host arithmetic of the reference (fp32 sum in rank order, rounded once), for many buffers.
std::vector<char> RankOrderSum(const std::vector<std::vector<char>>& data, DType dtype) {
  const int64_t numel = static_cast<int64_t>(data[0].size() / ElemBytes(dtype));
  std::vector<char> out(data[0].size());
  for (int64_t i = 0; i < numel; ++i) {
    float sum = 0.0f;
    for (const auto& d : data) {
      if (dtype == DType::kF32) {
        float x;
        std::memcpy(&x, &d[i * 4], 4);
        sum += x;
      } else {
        uint16_t h;
        std::memcpy(&h, &d[i * 2], 2);
        sum += tensor::BF16ToFloat(h);
      }
    }
    if (dtype == DType::kF32) {
      std::memcpy(&out[i * 4], &sum, 4);
    } else {
      const uint16_t h = tensor::FloatToBF16(sum);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

// 40 calls in flight with a late rank, then graph replays, through a group whose two-shot
// threshold is `two_shot_min_bytes`.
void ManyCallsInFlightThenGraphReplays(int64_t two_shot_min_bytes) {
  const std::vector<int> devices = AllDevices();
  const int n = static_cast<int>(devices.size());
  auto group = OneShotGroup::Create(devices, 1 << 20, two_shot_min_bytes);
  ASSERT_TRUE(group.ok()) << group.status();
  OneShotGroup& g = **group;
  // 40 calls of mixed sizes and dtypes, enqueued without waiting; the last rank sleeps before
  // its 11th call, so the others' kernels spin on its flags meanwhile.
  constexpr int kCalls = 40;
  auto call_dtype = [](int c) { return c % 3 == 2 ? DType::kF32 : DType::kBF16; };
  auto call_numel = [](int c) { return int64_t{8} * (1 + (c * 977) % 4000); };
  std::vector<std::vector<std::vector<char>>> in(kCalls, std::vector<std::vector<char>>(n));
  for (int c = 0; c < kCalls; ++c)
    for (int r = 0; r < n; ++r) in[c][r] = RandomBytes(call_numel(c), call_dtype(c), c * 31 + r);
  // Graph part: 3 buffers of 4096 values per rank, summed inside a captured graph.
  constexpr int kGraphBufs = 3, kReplays = 5;
  constexpr int64_t kGraphNumel = 4096;
  std::vector<std::vector<std::vector<char>>> graph_in(kReplays * kGraphBufs,
                                                       std::vector<std::vector<char>>(n));
  for (int k = 0; k < kReplays * kGraphBufs; ++k)
    for (int r = 0; r < n; ++r)
      graph_in[k][r] = RandomBytes(kGraphNumel, DType::kBF16, 9000 + k * 17 + r);
  std::vector<std::vector<std::vector<char>>> out(kCalls + kReplays * kGraphBufs,
                                                  std::vector<std::vector<char>>(n));
  OnRanks(n, [&](int r) {
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    std::vector<void*> bufs(kCalls);
    for (int c = 0; c < kCalls; ++c) {
      ASSERT_EQ(cudaMalloc(&bufs[c], in[c][r].size()), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(bufs[c], in[c][r].data(), in[c][r].size(), cudaMemcpyHostToDevice),
                cudaSuccess);
    }
    for (int c = 0; c < kCalls; ++c) {
      if (r == n - 1 && c == 10) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      ASSERT_TRUE(g.AllReduceSum(r, bufs[c], call_numel(c), call_dtype(c), stream).ok());
    }
    for (int c = 0; c < kCalls; ++c) {
      out[c][r].resize(in[c][r].size());
      ASSERT_EQ(cudaMemcpyAsync(out[c][r].data(), bufs[c], out[c][r].size(), cudaMemcpyDeviceToHost,
                                stream),
                cudaSuccess);
    }
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    for (void* b : bufs) cudaFree(b);

    // Capture three all-reduces (each preceded by a copy from its source buffer) into one
    // graph, then replay it with fresh sources each time.
    const size_t gbytes = kGraphNumel * 2;
    void *src[kGraphBufs], *dst[kGraphBufs];
    for (int i = 0; i < kGraphBufs; ++i) {
      ASSERT_EQ(cudaMalloc(&src[i], gbytes), cudaSuccess);
      ASSERT_EQ(cudaMalloc(&dst[i], gbytes), cudaSuccess);
    }
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    for (int i = 0; i < kGraphBufs; ++i) {
      ASSERT_EQ(cudaMemcpyAsync(dst[i], src[i], gbytes, cudaMemcpyDeviceToDevice, stream),
                cudaSuccess);
      ASSERT_TRUE(g.AllReduceSum(r, dst[i], kGraphNumel, DType::kBF16, stream).ok());
    }
    cudaGraph_t graph;
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int k = 0; k < kReplays; ++k) {
      for (int i = 0; i < kGraphBufs; ++i) {
        ASSERT_EQ(cudaMemcpyAsync(src[i], graph_in[k * kGraphBufs + i][r].data(), gbytes,
                                  cudaMemcpyHostToDevice, stream),
                  cudaSuccess);
      }
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      for (int i = 0; i < kGraphBufs; ++i) {
        auto& o = out[kCalls + k * kGraphBufs + i][r];
        o.resize(gbytes);
        ASSERT_EQ(cudaMemcpyAsync(o.data(), dst[i], gbytes, cudaMemcpyDeviceToHost, stream),
                  cudaSuccess);
      }
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);  // the host buffers are reused
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    for (int i = 0; i < kGraphBufs; ++i) {
      cudaFree(src[i]);
      cudaFree(dst[i]);
    }
    cudaStreamDestroy(stream);
  });
  int wrong = 0;
  for (int c = 0; c < kCalls + kReplays * kGraphBufs; ++c) {
    const bool graph_call = c >= kCalls;
    const auto& ins = graph_call ? graph_in[c - kCalls] : in[c];
    const std::vector<char> want = RankOrderSum(ins, graph_call ? DType::kBF16 : call_dtype(c));
    for (int r = 0; r < n; ++r) wrong += out[c][r] != want;
  }
  EXPECT_EQ(wrong, 0) << "of " << (kCalls + kReplays * kGraphBufs) * n
                      << " (call, rank) results, two-shot from " << two_shot_min_bytes << " bytes";
}

TEST(OneShotAllReduceTest, ManyCallsInFlightWithALateRankThenGraphReplays) {
  SKIP_WITHOUT_PEER_GPUS();
  ManyCallsInFlightThenGraphReplays(kNever);
}

TEST(OneShotAllReduceTest, TwoShotManyCallsInFlightWithALateRankThenGraphReplays) {
  SKIP_WITHOUT_PEER_GPUS();
  ManyCallsInFlightThenGraphReplays(0);
}

// The calls' sizes span 16 B .. 128 KB: from 32 KiB on they take the two-shot kernel, so the
// two kernels alternate on the same per-block counters and staging buffers.
TEST(OneShotAllReduceTest, OneAndTwoShotMixedCallByCall) {
  SKIP_WITHOUT_PEER_GPUS();
  ManyCallsInFlightThenGraphReplays(32 << 10);
}

TEST(OneShotAllReduceTest, BadArgumentsAreStatuses) {
  SKIP_WITHOUT_PEER_GPUS();
  EXPECT_EQ(OneShotGroup::Create({0}, 1024).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OneShotGroup::Create({0, 1}, 100).status().code(), absl::StatusCode::kInvalidArgument);
  auto g = OneShotGroup::Create({0, 1}, 1024);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 4096), cudaSuccess);
  EXPECT_TRUE((*g)->Fits(d, 512, DType::kBF16));
  EXPECT_FALSE((*g)->Fits(d, 513, DType::kBF16));                        // over 1024 bytes
  EXPECT_FALSE((*g)->Fits(d, 12, DType::kBF16));                         // 24 B: not whole vectors
  EXPECT_FALSE((*g)->Fits(static_cast<char*>(d) + 8, 8, DType::kBF16));  // misaligned
  EXPECT_FALSE((*g)->Fits(d, 8, DType::kI32));
  // Refused before any kernel is enqueued (no peer is left waiting).
  EXPECT_EQ((*g)->AllReduceSum(0, d, 513, DType::kBF16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*g)->AllReduceSum(2, d, 8, DType::kBF16, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  cudaFree(d);
}

}  // namespace
}  // namespace gka::kernels::nccl
