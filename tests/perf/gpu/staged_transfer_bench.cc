// Device-memory hand-off bandwidth (issue 11 point 3): the host link (pinned cudaMemcpy both
// ways), the fused copy + poly61 kernel both ways and checksum-only, and whole staged
// transfers of one TP rank's state of the 32B shape — KV pages and GKA/conv states separately
// and together — from GPU 0 through pinned staging, real UCX (two engines in one process, the
// chosen transport), a pinned landing, into GPU 1 (GPU 0 when alone), checksum verified.
// A benchmark, not a test; scripts/gpu/cluster_bench.sh runs it on the GPU machine and prints
// ucx_perftest beside it. Prints one table.
//
//   staged_transfer_bench --tls sm --tp 2 --prompts 2048,8192,16384 --iters 3
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/base/check.h"
#include "common/transfer/staging/staging.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "kernels/cuda/copy_checksum.h"
#include "tests/perf/gpu/bench_check.h"

namespace gka::transfer::staging {
namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// --- the host link and the kernel -------------------------------------------------------------

void LinkTable(int device, uint64_t bytes, int iters) {
  CUDA_CHECK(cudaSetDevice(device));
  void *d = nullptr, *d2 = nullptr, *h = nullptr;
  uint64_t* acc = nullptr;
  CUDA_CHECK(cudaMalloc(&d, bytes));
  CUDA_CHECK(cudaMalloc(&d2, bytes));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&acc), 16));
  CUDA_CHECK(cudaHostAlloc(&h, bytes, cudaHostAllocPortable | cudaHostAllocMapped));
  CUDA_CHECK(cudaMemset(d, 1, bytes));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto time = [&](auto&& op) {
    std::vector<double> t;
    for (int i = 0; i < iters + 1; ++i) {
      CUDA_CHECK(cudaStreamSynchronize(s));
      const auto a = std::chrono::steady_clock::now();
      op();
      CUDA_CHECK(cudaStreamSynchronize(s));
      if (i > 0) t.push_back(Seconds(a, std::chrono::steady_clock::now()));
    }
    return bytes / Median(t) / 1e9;
  };
  auto fused = [&](const void* src, void* dst) {
    CUDA_CHECK(cudaMemsetAsync(acc, 0, 16, s));
    const kernels::CopyChecksumRange r{src, dst, bytes, 0};
    GKA_CHECK_OK(kernels::cuda::CopyChecksumAsync({&r, 1}, acc, s));
  };
  std::printf("host link, GPU %d, %llu MiB, median of %d:\n", device,
              static_cast<unsigned long long>(bytes >> 20), iters);
  std::printf("  %-44s %8.1f GB/s\n", "cudaMemcpyAsync device -> pinned",
              time([&] { CUDA_CHECK(cudaMemcpyAsync(h, d, bytes, cudaMemcpyDeviceToHost, s)); }));
  std::printf("  %-44s %8.1f GB/s\n", "cudaMemcpyAsync pinned -> device",
              time([&] { CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, s)); }));
  std::printf("  %-44s %8.1f GB/s\n", "copy+poly61 kernel device -> pinned",
              time([&] { fused(d, h); }));
  std::printf("  %-44s %8.1f GB/s\n", "copy+poly61 kernel pinned -> device",
              time([&] { fused(h, d); }));
  std::printf("  %-44s %8.1f GB/s\n", "copy+poly61 kernel device -> device",
              time([&] { fused(d, d2); }));
  std::printf("  %-44s %8.1f GB/s\n", "poly61 only, device memory",
              time([&] { fused(d, nullptr); }));
  cudaStreamDestroy(s);
  cudaFree(d);
  cudaFree(d2);
  cudaFree(acc);
  cudaFreeHost(h);
}

// --- whole staged transfers -----------------------------------------------------------------

struct Piece {
  uint64_t bytes;
  int32_t stage;
  bool kv;
};

// One rank's hand-off of the 32B shape (model-spec §1: 64 layers alternating, 32 attention with
// 8 KV heads of 128, 32 GKA with 64 heads of 128, short conv K = 4) at TP = tp, prompt T.
std::vector<Piece> Shape32B(int64_t tokens, int tp, bool kv, bool state) {
  const int64_t page = 16, pages = (tokens + page - 1) / page;
  const uint64_t page_bytes = page * (8 / tp) * 128 * 2;  // bf16
  const uint64_t h_bytes = uint64_t{64} / tp * 128 * 128 * 4;
  const uint64_t conv_q = uint64_t{64} / tp * 128 * 3 * 4, conv_kv = uint64_t{8} / tp * 128 * 3 * 4;
  std::vector<Piece> out;
  for (int layer = 0; layer < 64; ++layer) {
    if (layer % 2 == 0) {
      if (kv) {
        for (int64_t p = 0; p < 2 * pages; ++p) out.push_back({page_bytes, layer, true});
      }
    } else if (state) {
      for (uint64_t b : {h_bytes, h_bytes, conv_q, conv_kv, conv_kv}) {
        out.push_back({b, layer, false});
      }
    }
  }
  return out;
}

struct Timing {
  double total = 0, send = 0, copy_in = 0, copy_wait = 0;
  uint64_t bytes = 0;
};

Timing RunTransfer(ucx::UcxTransferEngine& tx, ucx::UcxTransferEngine& rx, StageCopier& tx_copier,
                   StageCopier& rx_copier, StagingPool& tx_pool, StagingPool& rx_pool,
                   const std::vector<Piece>& pieces, char* src_arena, char* dst_arena,
                   uint64_t id) {
  // Device pieces at 256-byte-aligned offsets of one arena per side (the engine's pools).
  std::vector<DeviceRange> dst;
  std::vector<const void*> src;
  uint64_t off = 0;
  for (const Piece& p : pieces) {
    src.push_back(src_arena + off);
    dst.push_back({dst_arena + off, p.bytes});
    off += (p.bytes + 255) / 256 * 256;
  }
  Timing t;
  const auto start = std::chrono::steady_clock::now();
  auto landing = Landing::Create(rx_pool, dst);
  GKA_CHECK(landing.ok()) << landing.status();
  auto region = rx.RegisterMemory((*landing)->data(), (*landing)->size());
  GKA_CHECK(region.ok()) << region.status();
  std::promise<absl::StatusOr<TransferCompletion>> done;
  ExpectedTransfer expected{.transfer_id = id, .lease_deadline = absl::Now() + absl::Seconds(120)};
  expected.verify_ranges = (*landing)->VerifyRanges();
  expected.caller_verifies_checksum = true;
  GKA_CHECK_OK(rx.Expect(std::move(expected), [&](absl::StatusOr<TransferCompletion> c) {
    done.set_value(std::move(c));
  }));
  std::vector<DeviceSegment> segments;
  for (size_t i = 0; i < pieces.size(); ++i) {
    segments.push_back({src[i], 0, reinterpret_cast<uint64_t>((*landing)->landing(i)),
                        pieces[i].bytes, pieces[i].stage});
  }
  const auto send_start = std::chrono::steady_clock::now();
  auto out = tx.StartTransfer({rx.WorkerAddress(), {(*region)->remote()}}, id,
                              absl::Now() + absl::Seconds(120));
  GKA_CHECK(out.ok()) << out.status();
  std::unique_ptr<StagedSender> staging;
  auto sent = PutStaged(**out, tx_copier, &tx_pool, segments, nullptr, &staging);
  GKA_CHECK(sent.ok()) << sent.status();
  (*out)->SupplyChecksum(sent->checksum);
  TransferOutcome o = (*out)->FinishAndWait("x");
  GKA_CHECK_OK(o.status);
  auto completion = done.get_future().get();
  GKA_CHECK(completion.ok()) << completion.status();
  const auto copy_start = std::chrono::steady_clock::now();
  GKA_CHECK_OK((*landing)->CopyInAndVerify(rx_copier, completion->checksum, completion->bytes));
  const auto end = std::chrono::steady_clock::now();
  t.total = Seconds(start, end);
  t.send = Seconds(send_start, copy_start);
  t.copy_in = Seconds(copy_start, end);
  t.copy_wait = absl::ToDoubleSeconds(sent->copy_wait);
  t.bytes = sent->bytes;
  return t;
}

int Main(int argc, char** argv) {
  std::string tls = "sm";
  int tp = 2, iters = 3;
  std::vector<int64_t> prompts = {2048, 8192, 16384};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tls") tls = v;
    if (k == "--tp") GKA_CHECK(absl::SimpleAtoi(v, &tp));
    if (k == "--iters") GKA_CHECK(absl::SimpleAtoi(v, &iters));
    if (k == "--prompts") {
      prompts.clear();
      for (absl::string_view p : absl::StrSplit(v, ',')) {
        int64_t n;
        GKA_CHECK(absl::SimpleAtoi(p, &n));
        prompts.push_back(n);
      }
    }
  }
  int gpus = 0;
  CUDA_CHECK(cudaGetDeviceCount(&gpus));
  GKA_CHECK(gpus > 0) << "no GPU";
  const int rx_dev = gpus > 1 ? 1 : 0;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("GPU: %s x%d\n", prop.name, gpus);
  LinkTable(0, uint64_t{1} << 30, 5);

  auto tx = ucx::UcxTransferEngine::Create({.transports = tls, .name = "bench-tx"});
  GKA_CHECK(tx.ok()) << tx.status();
  auto rx = ucx::UcxTransferEngine::Create({.transports = tls, .name = "bench-rx"});
  GKA_CHECK(rx.ok()) << rx.status();
  const auto path =
      SelectTransferPath(MemoryKind::kCuda, (*rx)->SupportsCuda(), StagingMode::kAuto);
  std::printf("UCX reports cuda memory: %s -> path %s\n", (*rx)->SupportsCuda() ? "yes" : "no",
              std::string(TransferPathName(*path)).c_str());
  auto txc = MakeStageCopier({.device = true, .ordinal = 0});
  GKA_CHECK(txc.ok()) << txc.status();
  auto rxc = MakeStageCopier({.device = true, .ordinal = rx_dev});
  GKA_CHECK(rxc.ok()) << rxc.status();
  StagingPool tx_pool(txc->get()), rx_pool(rxc->get());

  const int64_t largest = *std::max_element(prompts.begin(), prompts.end());
  uint64_t arena = 0;
  for (const Piece& p : Shape32B(largest, tp, true, true)) arena += (p.bytes + 255) / 256 * 256;
  char *src = nullptr, *dst = nullptr;
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&src), arena));
  CUDA_CHECK(cudaMemset(src, 7, arena));
  CUDA_CHECK(cudaSetDevice(rx_dev));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dst), arena));

  std::printf(
      "\nstaged hand-off of one rank's state, 32B shape TP=%d, GPU 0 -> GPU %d, UCX tls=%s, "
      "median of %d\n",
      tp, rx_dev, tls.c_str(), iters);
  std::printf("%-7s %-6s %9s %9s %9s %9s %9s %8s\n", "prompt", "what", "MiB", "total_ms", "send_ms",
              "d2h_wait", "h2d_ms", "GB/s");
  uint64_t id = 1;
  for (int64_t T : prompts) {
    for (int what = 0; what < 3; ++what) {
      const bool kv = what != 1, state = what != 0;
      const auto pieces = Shape32B(T, tp, kv, state);
      std::vector<double> total, send, copy_in, wait;
      uint64_t bytes = 0;
      for (int i = 0; i < iters + 1; ++i) {  // the first warms connections and the pools
        Timing t = RunTransfer(**tx, **rx, **txc, **rxc, tx_pool, rx_pool, pieces, src, dst, id++);
        if (i == 0) continue;
        total.push_back(t.total);
        send.push_back(t.send);
        copy_in.push_back(t.copy_in);
        wait.push_back(t.copy_wait);
        bytes = t.bytes;
      }
      const double m = Median(total);
      std::printf("%-7lld %-6s %9.1f %9.2f %9.2f %9.2f %9.2f %8.2f\n", static_cast<long long>(T),
                  what == 0   ? "kv"
                  : what == 1 ? "state"
                              : "both",
                  bytes / 1048576.0, m * 1e3, Median(send) * 1e3, Median(wait) * 1e3,
                  Median(copy_in) * 1e3, bytes / m / 1e9);
    }
  }
  CUDA_CHECK(cudaFree(dst));
  CUDA_CHECK(cudaSetDevice(0));
  CUDA_CHECK(cudaFree(src));
  return 0;
}

}  // namespace
}  // namespace gka::transfer::staging

int main(int argc, char** argv) { return gka::transfer::staging::Main(argc, argv); }
