// Transfer-engine bandwidth: two UcxTransferEngines in one process (separate UCP contexts,
// so the bytes cross the chosen transport), a KV-page-like descriptor of many segments,
// checksum verified by the receiver as in the real hand-off. A benchmark, not a test;
// tests/perf/transfer_bench.sh prints it beside ucx_perftest on the same transport.
//
//   build/bench/transfer_bench --tls tcp --bytes 67108864 --segment 65536 --iters 10
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "common/base/check.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"

namespace gka::transfer {
namespace {

int Main(int argc, char** argv) {
  std::string tls = "tcp";
  uint64_t bytes = 64ull << 20, segment = 64 << 10;
  int iters = 10;
  bool verify = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tls") tls = v;
    if (k == "--bytes") GKA_CHECK(absl::SimpleAtoi(v, &bytes));
    if (k == "--segment") GKA_CHECK(absl::SimpleAtoi(v, &segment));
    if (k == "--iters") GKA_CHECK(absl::SimpleAtoi(v, &iters));
    if (k == "--verify") verify = v == "1";
  }
  auto receiver = ucx::UcxTransferEngine::Create({.transports = tls, .name = "bench-rx"});
  GKA_CHECK(receiver.ok()) << receiver.status();
  auto sender = ucx::UcxTransferEngine::Create({.transports = tls, .name = "bench-tx"});
  GKA_CHECK(sender.ok()) << sender.status();
  std::vector<uint8_t> dst(bytes), src(bytes);
  for (uint64_t i = 0; i < bytes; ++i) src[i] = static_cast<uint8_t>(i * 131 + 7);
  {
    auto region = (*receiver)->RegisterMemory(dst.data(), bytes);
    GKA_CHECK(region.ok()) << region.status();
    const TransferTarget target{(*receiver)->WorkerAddress(), {(*region)->remote()}};
    std::vector<double> gbps;
    for (int it = 0; it < iters + 1; ++it) {  // first iteration warms up connections
      const uint64_t id = 1000 + it;
      std::promise<absl::StatusOr<TransferCompletion>> done;
      ExpectedTransfer expected{.transfer_id = id,
                                .lease_deadline = absl::Now() + absl::Seconds(60)};
      if (verify) expected.verify_ranges = {{dst.data(), bytes}};
      GKA_CHECK_OK((*receiver)->Expect(
          expected, [&](absl::StatusOr<TransferCompletion> c) { done.set_value(std::move(c)); }));
      const auto t0 = std::chrono::steady_clock::now();
      auto t = (*sender)->StartTransfer(target, id, absl::Now() + absl::Seconds(60));
      GKA_CHECK(t.ok()) << t.status();
      TransferDescriptor d;
      // Every other segment first, then the rest: no two neighbours merge into one write,
      // as with a sequence's scattered KV pages.
      for (int pass = 0; pass < 2; ++pass) {
        for (uint64_t off = pass * segment; off < bytes; off += 2 * segment) {
          d.Add(src.data() + off, 0, (*region)->remote().remote_addr + off,
                std::min(segment, bytes - off));
        }
      }
      GKA_CHECK_OK((*t)->Put(d));
      const TransferOutcome out = (*t)->FinishAndWait("first-token");
      GKA_CHECK(out.status.ok()) << out.status;
      auto completion = done.get_future().get();
      GKA_CHECK(completion.ok()) << completion.status();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (it > 0) gbps.push_back(bytes / s / 1e9);
    }
    GKA_CHECK(std::memcmp(src.data(), dst.data(), bytes) == 0) << "bytes differ";
    std::sort(gbps.begin(), gbps.end());
    std::printf(
        "gka transfer  tls=%-10s bytes=%-10llu segment=%-8llu verify=%d  median %.2f GB/s  best "
        "%.2f GB/s\n",
        tls.c_str(), static_cast<unsigned long long>(bytes),
        static_cast<unsigned long long>(segment), verify, gbps[gbps.size() / 2], gbps.back());
  }
  return 0;
}

}  // namespace
}  // namespace gka::transfer

int main(int argc, char** argv) { return gka::transfer::Main(argc, argv); }
