// The NCCL communicator on every visible GPU (label gpu; skipped with fewer than 2): sums and
// gathers against host arithmetic, both constructors (ncclCommInitAll from one thread,
// ncclCommInitRank from one thread per rank), collectives ordered on a bound stream, and the
// argument errors.
#include "kernels/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

#include "common/tensor/dtype.h"
#include "kernels/nccl/nccl_test_util.h"

namespace gka::kernels::nccl {
namespace {

using tensor::DType;
using tensor::Shape;
using tensor::TensorView;
using testing::DeviceCount;
using testing::OnRanks;

#define SKIP_WITHOUT_TWO_GPUS() \
  if (DeviceCount() < 2) GTEST_SKIP() << "needs at least 2 CUDA devices"

// One device buffer, freed on the device it came from.
struct DeviceArray {
  explicit DeviceArray(size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, bytes), cudaSuccess); }
  ~DeviceArray() { cudaFree(ptr); }
  void* ptr = nullptr;
};

std::vector<float> RankData(int rank, int64_t n) {
  std::mt19937 rng(1234 + rank);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// All-reduce of F32 and BF16 data (a length that is not a multiple of anything NCCL likes),
// then an all-gather (into another buffer, and in place); checked on the host against the
// rank-order sum and the ranks' data.
void CheckCollectives(std::vector<std::unique_ptr<parallel::Communicator>>& comms) {
  const int n = static_cast<int>(comms.size());
  const int64_t len = 100003;
  std::vector<std::vector<float>> data(n);
  for (int r = 0; r < n; ++r) data[r] = RankData(r, len);
  std::vector<float> sum(len, 0.f);
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < len; ++i) sum[i] += data[r][i];

  OnRanks(n, [&](int r) {
    parallel::Communicator& c = *comms[r];
    EXPECT_EQ(c.rank(), r);
    EXPECT_EQ(c.world_size(), n);
    EXPECT_TRUE(c.on_device());
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_TRUE(c.BindStream(stream).ok());

    // F32 in place.
    DeviceArray f32(len * 4);
    ASSERT_EQ(cudaMemcpy(f32.ptr, data[r].data(), len * 4, cudaMemcpyHostToDevice), cudaSuccess);
    const TensorView tf{f32.ptr, DType::kF32, Shape{len}, tensor::Device::kCuda};
    ASSERT_TRUE(c.AllReduceSum(tf).ok());
    std::vector<float> got(len);
    ASSERT_EQ(cudaMemcpyAsync(got.data(), f32.ptr, len * 4, cudaMemcpyDeviceToHost, stream),
              cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    double max_err = 0;
    for (int64_t i = 0; i < len; ++i)
      max_err = std::max<double>(max_err, std::fabs(got[i] - sum[i]));
    EXPECT_LE(max_err, 1e-5) << "rank " << r;  // fp32 sums of n terms in another order

    // BF16 in place: each partial rounded to bf16 (NCCL's bf16 arithmetic), so compare
    // against the exact sum with bf16's relative step per addition.
    std::vector<uint16_t> h16(len);
    for (int64_t i = 0; i < len; ++i) h16[i] = tensor::FloatToBF16(data[r][i]);
    DeviceArray b16(len * 2);
    ASSERT_EQ(cudaMemcpy(b16.ptr, h16.data(), len * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(c.AllReduceSum({b16.ptr, DType::kBF16, Shape{len}, tensor::Device::kCuda}).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(h16.data(), b16.ptr, len * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    double worst = 0;
    for (int64_t i = 0; i < len; ++i) {
      worst = std::max<double>(worst, std::fabs(tensor::BF16ToFloat(h16[i]) - sum[i]));
    }
    EXPECT_LE(worst, 0.03 * n) << "rank " << r;  // |terms| ≤ 1: a few bf16 ulps of ≤ n
    EXPECT_GT(worst, 0.0) << "bf16 sums exactly equal to fp32: was the data really bf16?";

    // All-gather of each rank's first 1000 values: rows in rank order.
    const int64_t m = 1000;
    DeviceArray in(m * 4), out(m * n * 4);
    ASSERT_EQ(cudaMemcpy(in.ptr, data[r].data(), m * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(c.AllGather({in.ptr, DType::kF32, Shape{m}, tensor::Device::kCuda},
                            {out.ptr, DType::kF32, Shape{n * m}, tensor::Device::kCuda})
                    .ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<float> all(m * n);
    ASSERT_EQ(cudaMemcpy(all.data(), out.ptr, m * n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < m; ++i) ASSERT_EQ(all[q * m + i], data[q][i]) << q << " " << i;

    // In place (the engine's vocab-parallel logits): `in` is this rank's block of `out`.
    DeviceArray inplace(m * n * 4);
    ASSERT_EQ(cudaMemset(inplace.ptr, 0xff, m * n * 4), cudaSuccess);  // NaNs elsewhere
    float* mine = static_cast<float*>(inplace.ptr) + r * m;
    ASSERT_EQ(cudaMemcpy(mine, data[r].data() + m, m * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(c.AllGather({mine, DType::kF32, Shape{m}, tensor::Device::kCuda},
                            {inplace.ptr, DType::kF32, Shape{n * m}, tensor::Device::kCuda})
                    .ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(all.data(), inplace.ptr, m * n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < m; ++i) ASSERT_EQ(all[q * m + i], data[q][m + i]) << q << " " << i;
    cudaStreamDestroy(stream);
  });
}

TEST(NcclCommunicatorTest, GroupOnAllDevicesSumsAndGathers) {
  SKIP_WITHOUT_TWO_GPUS();
  std::vector<int> devices;
  for (int d = 0; d < DeviceCount(); ++d) devices.push_back(d);
  auto comms = CreateNcclGroup(devices);
  ASSERT_TRUE(comms.ok()) << comms.status();
  CheckCollectives(*comms);
}

TEST(NcclCommunicatorTest, InitRankPerThreadSumsAndGathers) {
  SKIP_WITHOUT_TWO_GPUS();
  const int n = DeviceCount();
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<std::unique_ptr<parallel::Communicator>> comms(n);
  // ncclCommInitRank blocks until every rank has joined: one thread each.
  OnRanks(n, [&](int r) {
    auto c = CreateNcclCommunicator(*id, n, r, r);
    ASSERT_TRUE(c.ok()) << c.status();
    comms[r] = std::move(*c);
  });
  for (auto& c : comms) ASSERT_NE(c, nullptr);
  CheckCollectives(comms);
}

TEST(NcclCommunicatorTest, BadArgumentsAreStatuses) {
  SKIP_WITHOUT_TWO_GPUS();
  EXPECT_EQ(CreateNcclGroup({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateNcclGroup({0, 0}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateNcclGroup({0, 999}).status().code(), absl::StatusCode::kInvalidArgument);
  NcclUniqueId id{};
  EXPECT_EQ(CreateNcclCommunicator(id, 2, 2, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto comms = CreateNcclGroup({0, 1});
  ASSERT_TRUE(comms.ok()) << comms.status();
  // Host memory and non-float sums are refused before NCCL sees them (no rank is left
  // waiting in a collective).
  float host[4] = {};
  EXPECT_EQ((*comms)[0]->AllReduceSum({host, DType::kF32, Shape{4}, tensor::Device::kCpu}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*comms)[0]->AllReduceSum({host, DType::kI32, Shape{4}, tensor::Device::kCuda}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*comms)[0]
                ->AllGather({host, DType::kF32, Shape{4}, tensor::Device::kCuda},
                            {host, DType::kF32, Shape{4}, tensor::Device::kCuda})
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto v = NcclRuntimeVersion();
  ASSERT_TRUE(v.ok());
  EXPECT_GE(*v, 21300);  // ncclGetLastError, used in every error message, is 2.13+
}

}  // namespace
}  // namespace gka::kernels::nccl
