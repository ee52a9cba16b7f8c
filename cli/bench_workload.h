// gka bench serve: what to send and when. A Workload turns the flags (or a JSONL trace) into
// the i-th request — tier, prompt and output length — the same for a given seed whatever the
// run's timing; an ArrivalProcess gives the open loop's send times.
//
// Prompts are random token ids (no tokenizer needed; EOS ids are left out so a prompt never
// ends early) or random words for text input (then --input-len counts words, and the
// server's prompt_tokens in the result is the real count).
//
// Trace lines (JSONL), one request each; unknown keys are ignored, so Mooncake-style traces
// ({"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [...]}) load:
//   {"input_length" | "input_len": N, "output_length" | "output_len": M,
//    "prompt": "text" | "token_ids": [..], "tier": "interactive", "timestamp": ms}
// "timestamp" (ms from the trace's start) replays the trace's own arrival times when no
// --request-rate is given.
//
// Owns nothing but values; no gRPC.
//
//   GKA_ASSIGN_OR_RETURN(auto workload, gka::cli::bench::Workload::Create(options));
//   gka::cli::bench::PlannedRequest r = workload->Get(7);
//
// Thread-safety: Workload::Get is const and thread-safe; ArrivalProcess is not.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace gka::cli::bench {

// A length that is fixed ("128") or uniform over an inclusive range ("64:256").
struct LengthSpec {
  int min = 0;
  int max = 0;
};
absl::StatusOr<LengthSpec> ParseLengthSpec(absl::string_view flag, absl::string_view text);

struct TierWeight {
  std::string name;
  double weight = 1;
};
// "interactive=0.2,standard=0.8" (weights are normalised); "" is the server's default tier.
absl::StatusOr<std::vector<TierWeight>> ParseTierMix(absl::string_view text);

struct WorkloadOptions {
  LengthSpec input_len{128, 128};
  LengthSpec output_len{64, 64};
  bool text_prompts = false;
  // Token ids are drawn from [0, vocab_size) without these.
  int vocab_size = 0;
  std::vector<int32_t> excluded_token_ids;
  std::vector<TierWeight> tier_mix;
  // JSONL trace; when set it replaces the lengths and the tier mix (a trace line without a
  // tier still draws one from the mix). Requests past its end wrap around.
  std::string trace_path;
  uint64_t seed = 0;
};

struct PlannedRequest {
  int index = 0;
  std::string tier;
  // Exactly one of the two is used: text when text_prompts or the trace gave text.
  std::vector<int32_t> prompt_ids;
  std::string prompt_text;
  int input_len = 0;
  int output_len = 0;
  // The trace's arrival time, when it had one (offset from the trace's first request).
  std::optional<absl::Duration> trace_arrival;
};

class Workload {
 public:
  // InvalidArgument for bad lengths, an empty vocabulary with token prompts or a bad trace
  // line (naming the file and line); NotFound for a missing trace.
  static absl::StatusOr<std::unique_ptr<Workload>> Create(const WorkloadOptions& options);

  // The i-th request; depends only on the options and i.
  PlannedRequest Get(int index) const;
  // Requests in the trace (0 without one).
  int trace_size() const { return static_cast<int>(trace_.size()); }
  // True when every trace line has a timestamp.
  bool trace_has_arrivals() const { return has_arrivals_; }

 private:
  struct TraceLine {
    std::optional<int> input_len;
    int output_len = 0;
    std::optional<std::string> text;
    std::optional<std::vector<int32_t>> token_ids;
    std::optional<std::string> tier;
    std::optional<absl::Duration> timestamp;
  };
  explicit Workload(WorkloadOptions options) : options_(std::move(options)) {}
  std::string DrawTier(std::mt19937_64& rng) const;
  std::vector<int32_t> RandomIds(std::mt19937_64& rng, int n) const;
  std::string RandomWords(std::mt19937_64& rng, int n) const;

  WorkloadOptions options_;
  std::vector<int32_t> excluded_;  // sorted, unique, inside [0, vocab_size)
  std::vector<TraceLine> trace_;
  bool has_arrivals_ = false;
};

enum class Arrival { kPoisson, kConstant };
absl::StatusOr<Arrival> ParseArrival(absl::string_view text);

// Send times of the open loop: a Poisson process (exponential gaps of mean 1/rate) or a
// constant rate; the first request goes at 0 either way.
class ArrivalProcess {
 public:
  ArrivalProcess(double rate, Arrival kind, uint64_t seed);
  // The next request's offset from the start.
  absl::Duration Next();

 private:
  double rate_;
  Arrival kind_;
  std::mt19937_64 rng_;
  int count_ = 0;
  double t_s_ = 0;
};

}  // namespace gka::cli::bench
