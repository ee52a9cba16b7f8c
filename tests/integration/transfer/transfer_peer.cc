// transfer_peer: the other process of the UCX transfer integration tests.
//
// One UcxTransferEngine with one registered buffer, driven by line commands on stdin;
// answers and events are single lines on stdout (binary fields in hex):
//   start        -> READY <worker_addr> <region_addr> <region_len> <rkey>
//   EXPECT <tid> <lease_ms> <verify:0|1>         -> EXPECT <code>
//                   later, from the engine       -> COMPLETE <tid> <code> <checksum> <bytes>
//                   <payload>
//   FENCE <tid> <timeout_ms>                      -> FENCE <code> <millis>
//   VERIFY <seed> <offset> <length>               -> VERIFY ok | VERIFY bad <offset>
//        (buffer[offset, offset + length) holds the pattern's bytes at the same offsets)
//   SEND <worker_addr> <region_addr> <region_len> <rkey> <tid> <bytes> <segment_bytes> <seed>
//        <pause_ms> <deadline_ms>                 -> [PAUSED] then SENT <code> <may_be_written>
//                                                    <checksum> <put_code>
//        (writes `bytes` of pattern `seed` in `segment_bytes` pieces in reverse order, pausing
//         `pause_ms` after the first half, then finishes with payload "first-token")
//   EXIT
// Exits when stdin closes, so a dying test leaves no process behind.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/transfer/ucx/ucx_transfer_engine.h"
#include "tests/integration/transfer/pattern.h"

namespace gka::transfer {
namespace {

std::mutex out_mu;

void Say(const std::string& line) {
  std::lock_guard<std::mutex> lock(out_mu);
  std::cout << line << std::endl;
}

uint64_t U64(absl::string_view s) {
  uint64_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) {
    std::cerr << "transfer_peer: bad number '" << s << "'\n";
    std::exit(2);
  }
  return v;
}

int Run(int argc, char** argv) {
  ucx::UcxOptions options;
  uint64_t buffer_bytes = 1 << 20;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--transports=")) options.transports = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--bytes=")) buffer_bytes = U64(arg);
    if (absl::ConsumePrefix(&arg, "--data-path=")) {
      options.data_path = arg == "put" ? ucx::UcxOptions::DataPath::kPut
                                       : ucx::UcxOptions::DataPath::kActiveMessage;
    }
  }
  auto engine = ucx::UcxTransferEngine::Create(options);
  if (!engine.ok()) {
    std::cerr << "transfer_peer: " << engine.status() << "\n";
    return 1;
  }
  std::vector<uint8_t> buffer(buffer_bytes, 0);
  auto region = (*engine)->RegisterMemory(buffer.data(), buffer.size());
  if (!region.ok()) {
    std::cerr << "transfer_peer: " << region.status() << "\n";
    return 1;
  }
  Say(absl::StrCat("READY ", absl::BytesToHexString((*engine)->WorkerAddress()), " ",
                   (*region)->remote().remote_addr, " ", (*region)->remote().length, " ",
                   absl::BytesToHexString((*region)->remote().packed_rkey)));

  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.empty()) continue;
    if (f[0] == "EXIT") break;
    if (f[0] == "EXPECT" && f.size() == 4) {
      ExpectedTransfer expected;
      expected.transfer_id = U64(f[1]);
      expected.lease_deadline = absl::Now() + absl::Milliseconds(U64(f[2]));
      if (f[3] == "1") expected.verify_ranges.push_back({buffer.data(), buffer.size()});
      if (f[3] == "2") {  // the first half only
        expected.verify_ranges.push_back({buffer.data(), buffer.size() / 2});
      }
      const absl::Status s =
          (*engine)->Expect(std::move(expected), [](absl::StatusOr<TransferCompletion> c) {
            if (c.ok()) {
              Say(absl::StrCat("COMPLETE ", c->transfer_id, " 0 ", c->checksum, " ", c->bytes, " ",
                               absl::BytesToHexString(c->payload)));
            } else {
              Say(absl::StrCat("COMPLETE 0 ", static_cast<int>(c.status().code()), " 0 0 -"));
            }
          });
      Say(absl::StrCat("EXPECT ", static_cast<int>(s.code())));
    } else if (f[0] == "FENCE" && f.size() == 3) {
      const absl::Time start = absl::Now();
      const absl::Status s = (*engine)->Fence(U64(f[1]), absl::Milliseconds(U64(f[2])));
      Say(absl::StrCat("FENCE ", static_cast<int>(s.code()), " ",
                       absl::ToInt64Milliseconds(absl::Now() - start)));
    } else if (f[0] == "VERIFY" && f.size() == 4) {
      const uint64_t offset = U64(f[2]);
      int64_t bad;
      {
        // The driver sends VERIFY only after reading COMPLETE, which the progress thread
        // printed under out_mu after its last write into `buffer`. That order runs through
        // the driver process, where ThreadSanitizer cannot follow it; taking out_mu states
        // it inside this process.
        std::lock_guard<std::mutex> lock(out_mu);
        bad = FirstMismatch(U64(f[1]), buffer.data() + offset, offset, U64(f[3]));
      }
      Say(bad < 0 ? std::string("VERIFY ok") : absl::StrCat("VERIFY bad ", offset + bad));
    } else if (f[0] == "SEND" && f.size() == 11) {
      TransferTarget target;
      target.worker_address = absl::HexStringToBytes(f[1]);
      target.regions.push_back({U64(f[2]), U64(f[3]), absl::HexStringToBytes(f[4])});
      const uint64_t tid = U64(f[5]), bytes = U64(f[6]), segment = U64(f[7]), seed = U64(f[8]);
      const absl::Duration pause = absl::Milliseconds(U64(f[9]));
      std::vector<uint8_t> source(bytes);
      FillPattern(seed, source.data(), bytes);
      auto t = (*engine)->StartTransfer(target, tid, absl::Now() + absl::Milliseconds(U64(f[10])));
      if (!t.ok()) {
        Say(absl::StrCat("SENT ", static_cast<int>(t.status().code()), " 0 0 0"));
        continue;
      }
      absl::Status put_status;
      const uint64_t segments = bytes / segment;
      for (uint64_t i = 0; i < segments && put_status.ok(); ++i) {
        const uint64_t k = segments - 1 - i;  // reverse order: the checksum must not care
        TransferDescriptor d;
        d.Add(source.data() + k * segment, 0, target.regions[0].remote_addr + k * segment, segment);
        put_status = (*t)->Put(d);
        if (i + 1 == segments / 2 && pause > absl::ZeroDuration()) {
          Say("PAUSED");
          absl::SleepFor(pause);
        }
      }
      TransferOutcome out = (*t)->FinishAndWait("first-token");
      Say(absl::StrCat("SENT ", static_cast<int>(out.status.code()), " ",
                       out.remote_may_be_written ? 1 : 0, " ", out.checksum, " ",
                       static_cast<int>(put_status.code())));
    } else {
      Say(absl::StrCat("ERROR unknown command: ", line));
    }
  }
  region->reset();
  return 0;
}

}  // namespace
}  // namespace gka::transfer

int main(int argc, char** argv) { return gka::transfer::Run(argc, argv); }
