// libFuzzer target: the transfer ticket and completion decoding. A prefill worker takes a
// TransferTicket from the router (which got it from a decode worker) and writes into the
// memory it names; a decode worker takes a completion payload off the wire. Neither may
// crash, and every destination of an accepted ticket must lie inside one of the regions it
// names (or the sender would write out of bounds of what the receiver registered).
//
// Input: byte 0 picks the prompt length and whether the ticket's compat hash, page size and
// lease are fixed up to this layout's (so the fuzzer reaches the per-rank checks, which sit
// behind the hash); the rest is a serialized TransferTicket, also fed to DecodeCompletion.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/model/tiny_model.h"
#include "decode_worker/common/handoff.h"
#include "decode_worker/common/model_loader.h"
#include "gka/worker/v1/worker.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "decode_worker/common/handoff_sender.h"

namespace {

namespace wc = gka::worker_common;
namespace wpb = gka::worker::v1;

wc::HandoffLayout* layout = nullptr;
const absl::Time kNow = absl::FromUnixSeconds(1'700'000'000);

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is a parse failure, logged by protobuf on every input.
  google::protobuf::SetLogHandler(nullptr);
  // A tiny hybrid model (attention and GKA layers) with a small vocabulary: the layout only
  // depends on its dims, page size and dtypes.
  const std::string dir = "/tmp/gka-ticket-fuzz-" + std::to_string(getpid());
  gka::model::TinyModelOptions options;
  options.vocab_size = 256;
  if (!gka::model::MakeTinyModel(options, dir).ok()) std::abort();
  auto model = wc::LoadModel({.model_dir = dir, .num_slots = 2});
  if (!model.ok()) std::abort();
  layout = new wc::HandoffLayout(wc::HandoffLayout::Of(model->lead()));
  std::filesystem::remove_all(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string payload(reinterpret_cast<const char*>(data + 1), size - 1);
  (void)wc::DecodeCompletion(payload);  // a Status or a message, never a crash

  wpb::TransferTicket ticket;
  if (!ticket.ParseFromString(payload)) return 0;
  const int64_t prompt_tokens = 1 + (data[0] >> 1) % 70;
  if ((data[0] & 1) != 0 && ticket.tp_size() >= 1 && ticket.tp_size() <= 8) {
    ticket.set_compat_hash(layout->TicketHash(static_cast<int>(ticket.tp_size())));
    ticket.set_page_size(layout->page_size());
    ticket.set_lease_deadline_unix_ms(absl::ToUnixMillis(kNow) + 1000);
  }
  auto parsed = gka::worker_common::ParseTicket(ticket, *layout, prompt_tokens, kNow);
  if (!parsed.ok()) {
    const absl::StatusCode code = parsed.status().code();
    if (code != absl::StatusCode::kInvalidArgument &&
        code != absl::StatusCode::kFailedPrecondition &&
        code != absl::StatusCode::kDeadlineExceeded) {
      std::abort();
    }
    return 0;
  }
  // Accepted: one destination list per decode rank, each destination inside a region that
  // rank registered.
  if (parsed->ranks.size() != static_cast<size_t>(ticket.ranks_size())) std::abort();
  for (size_t j = 0; j < parsed->ranks.size(); ++j) {
    const wpb::RankTicket& rank = ticket.ranks(static_cast<int>(j));
    if (parsed->ranks[j].destinations.empty()) std::abort();
    for (const gka::transfer::Segment& d : parsed->ranks[j].destinations) {
      bool inside = false;
      for (const wpb::MemoryRegion& r : rank.regions()) {
        if (d.remote_addr >= r.remote_addr() && d.length <= r.length() &&
            d.remote_addr - r.remote_addr() <= r.length() - d.length) {
          inside = true;
        }
      }
      if (!inside) std::abort();
    }
  }
  return 0;
}
