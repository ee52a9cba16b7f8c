// The CUDA copy + poly61 checksum against the CPU reference (kernels/cpu/copy_checksum.cc):
// exact equality of the sums (integer arithmetic) and of the copied bytes, for device →
// pinned, pinned → device and checksum-only launches, with page-sized aligned ranges, odd
// sizes, misaligned stream offsets and more tiles than one launch takes. Outputs are poisoned
// (0xA5) first, so an unwritten byte fails. Skips without a GPU.
#include "kernels/cuda/copy_checksum.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace gka::gpu_testing {
namespace {

using kernels::CopyChecksumRange;

class CopyChecksumTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::cuda::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device visible";
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&acc_), 16), cudaSuccess);
    seed_ = TestSeed();
    std::printf("[ seed     ] GKA_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed_));
  }
  void TearDown() override {
    if (acc_ != nullptr) cudaFree(acc_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  uint64_t RunGpu(const std::vector<CopyChecksumRange>& ranges) {
    EXPECT_EQ(cudaMemsetAsync(acc_, 0, 16, stream_), cudaSuccess);
    absl::Status s = kernels::cuda::CopyChecksumAsync(ranges, acc_, stream_);
    EXPECT_TRUE(s.ok()) << s;
    uint64_t halves[2] = {0, 0};
    EXPECT_EQ(cudaMemcpyAsync(halves, acc_, 16, cudaMemcpyDeviceToHost, stream_), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    return kernels::Poly61FromHalves(halves[0], halves[1]);
  }

  cudaStream_t stream_ = nullptr;
  uint64_t* acc_ = nullptr;
  uint64_t seed_ = 0;
};

// Piece sizes: KV pages of the 32B shape per rank (16 tokens · 8 heads · 128 · 2 B = 32 KiB),
// an h_kk state of 16 heads (1 MiB), odd sizes, and one of 1.5 MiB (several tiles).
TEST_F(CopyChecksumTest, DeviceToPinnedToDeviceMatchesTheReference) {
  std::mt19937_64 rng(seed_);
  std::vector<uint64_t> sizes = {32768, 32768, 1 << 20, 12 * 37, 3, 1536 * 1024, 32768, 4100};
  for (int i = 0; i < 1200; ++i) sizes.push_back(4096);  // > one launch's 950 tiles
  uint64_t total = 0;
  std::vector<uint64_t> offsets;
  for (uint64_t n : sizes) {
    offsets.push_back(total);
    total += n;
  }
  std::vector<uint8_t> host(total);
  for (auto& b : host) b = static_cast<uint8_t>(rng());
  uint8_t* device = nullptr;
  uint8_t* device_back = nullptr;
  uint8_t* pinned = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device), total), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device_back), total), cudaSuccess);
  ASSERT_EQ(cudaHostAlloc(reinterpret_cast<void**>(&pinned), total,
                          cudaHostAllocPortable | cudaHostAllocMapped),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device, host.data(), total, cudaMemcpyHostToDevice), cudaSuccess);
  std::memset(pinned, 0xA5, total);
  ASSERT_EQ(cudaMemset(device_back, 0xA5, total), cudaSuccess);

  // Stream offsets: pieces scattered in the stream (reverse order), one odd lead (+1 byte gap
  // is not allowed, so shift the whole stream by 2: every piece misaligned by 2 mod 4).
  std::vector<CopyChecksumRange> to_pinned, to_device, checksum_only, reference;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint64_t s = total - offsets[i] - sizes[i] + 2;
    to_pinned.push_back({device + offsets[i], pinned + offsets[i], sizes[i], s});
    to_device.push_back({pinned + offsets[i], device_back + offsets[i], sizes[i], s});
    checksum_only.push_back({device + offsets[i], nullptr, sizes[i], s});
    reference.push_back({host.data() + offsets[i], nullptr, sizes[i], s});
  }
  const uint64_t want = kernels::cpu::CopyChecksum(reference);
  EXPECT_EQ(RunGpu(to_pinned), want) << "device -> pinned";
  EXPECT_EQ(std::memcmp(pinned, host.data(), total), 0) << "device -> pinned copy";
  EXPECT_EQ(RunGpu(to_device), want) << "pinned -> device";
  EXPECT_EQ(RunGpu(checksum_only), want) << "checksum only";
  std::vector<uint8_t> back(total);
  ASSERT_EQ(cudaMemcpy(back.data(), device_back, total, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host) << "pinned -> device copy";

  // Word-aligned stream (the fast path everywhere it is aligned) agrees as well.
  for (auto* v : {&checksum_only, &reference}) {
    for (size_t i = 0; i < sizes.size(); ++i) (*v)[i].stream_offset = offsets[i];
  }
  EXPECT_EQ(RunGpu(checksum_only), kernels::cpu::CopyChecksum(reference)) << "aligned stream";

  // One flipped bit in device memory changes the sum.
  uint8_t flip = host[12345] ^ 0x10;
  ASSERT_EQ(cudaMemcpy(device + 12345, &flip, 1, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_NE(RunGpu(checksum_only), kernels::cpu::CopyChecksum(reference)) << "flipped bit";

  cudaFree(device);
  cudaFree(device_back);
  cudaFreeHost(pinned);
}

}  // namespace
}  // namespace gka::gpu_testing
