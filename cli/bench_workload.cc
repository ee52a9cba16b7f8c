#include "cli/bench_workload.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gka::cli::bench {

namespace {

// Common English words: text prompts that any tokenizer splits into roughly one token each.
constexpr const char* kWords[] = {
    "the",   "of",    "and",   "to",     "in",     "is",    "that",  "for",   "it",    "as",
    "was",   "with",  "be",    "by",     "on",     "not",   "he",    "this",  "are",   "or",
    "his",   "from",  "at",    "which",  "but",    "have",  "an",    "had",   "they",  "you",
    "were",  "their", "one",   "all",    "we",     "can",   "her",   "has",   "there", "been",
    "if",    "more",  "when",  "will",   "would",  "who",   "so",    "no",    "time",  "people",
    "water", "world", "house", "system", "number", "river", "light", "story", "model", "state"};

int Draw(std::mt19937_64& rng, const LengthSpec& spec) {
  if (spec.min == spec.max) return spec.min;
  return std::uniform_int_distribution<int>(spec.min, spec.max)(rng);
}

absl::Status TraceError(absl::string_view path, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

std::optional<int> IntField(const nlohmann::json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    if (j.contains(k) && j[k].is_number_integer()) return j[k].get<int>();
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<LengthSpec> ParseLengthSpec(absl::string_view flag, absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  LengthSpec spec;
  bool ok = parts.size() <= 2 && absl::SimpleAtoi(parts[0], &spec.min);
  spec.max = spec.min;
  if (ok && parts.size() == 2) ok = absl::SimpleAtoi(parts[1], &spec.max);
  if (!ok || spec.min < 1 || spec.max < spec.min) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", text, ": use N or MIN:MAX (uniform, inclusive) with 1 <= MIN <= MAX"));
  }
  return spec;
}

absl::StatusOr<std::vector<TierWeight>> ParseTierMix(absl::string_view text) {
  std::vector<TierWeight> mix;
  double total = 0;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> kv = absl::StrSplit(item, '=');
    TierWeight w;
    w.name = std::string(absl::StripAsciiWhitespace(kv[0]));
    if (kv.size() > 2 || w.name.empty() ||
        (kv.size() == 2 && !absl::SimpleAtod(absl::StripAsciiWhitespace(kv[1]), &w.weight)) ||
        !(w.weight >= 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--tier-mix: bad item '", item,
                                                     "' (use e.g. interactive=0.2,standard=0.8)"));
    }
    total += w.weight;
    mix.push_back(std::move(w));
  }
  if (mix.empty()) return std::vector<TierWeight>{{"", 1.0}};
  if (!(total > 0)) return absl::InvalidArgumentError("--tier-mix: the weights sum to 0");
  for (TierWeight& w : mix) w.weight /= total;
  return mix;
}

absl::StatusOr<Arrival> ParseArrival(absl::string_view text) {
  if (text == "poisson") return Arrival::kPoisson;
  if (text == "constant") return Arrival::kConstant;
  return absl::InvalidArgumentError(absl::StrCat("--arrival ", text, ": use poisson or constant"));
}

absl::StatusOr<std::unique_ptr<Workload>> Workload::Create(const WorkloadOptions& options) {
  std::unique_ptr<Workload> w(new Workload(options));
  if (w->options_.tier_mix.empty()) w->options_.tier_mix = {{"", 1.0}};
  if (!options.text_prompts) {
    for (int32_t id : options.excluded_token_ids) {
      if (id >= 0 && id < options.vocab_size) w->excluded_.push_back(id);
    }
    std::sort(w->excluded_.begin(), w->excluded_.end());
    w->excluded_.erase(std::unique(w->excluded_.begin(), w->excluded_.end()), w->excluded_.end());
    if (options.vocab_size - static_cast<int>(w->excluded_.size()) < 1) {
      return absl::InvalidArgumentError(
          "token-id prompts need a vocabulary (the server reported none); use --prompt text");
    }
  }
  if (options.trace_path.empty()) return w;

  std::ifstream in(options.trace_path);
  if (!in) return absl::NotFoundError(absl::StrCat("trace ", options.trace_path, " not found"));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return TraceError(options.trace_path, n, "not a JSON object");
    }
    TraceLine t;
    t.input_len = IntField(j, {"input_length", "input_len"});
    const std::optional<int> out = IntField(j, {"output_length", "output_len"});
    if (!out || *out < 1) {
      return TraceError(options.trace_path, n, "needs output_length (an integer >= 1)");
    }
    t.output_len = *out;
    if (j.contains("prompt")) {
      if (!j["prompt"].is_string()) return TraceError(options.trace_path, n, "prompt: not text");
      t.text = j["prompt"].get<std::string>();
    }
    if (j.contains("token_ids")) {
      if (!j["token_ids"].is_array()) {
        return TraceError(options.trace_path, n, "token_ids: not an array");
      }
      std::vector<int32_t> ids;
      for (const nlohmann::json& id : j["token_ids"]) {
        if (!id.is_number_integer()) {
          return TraceError(options.trace_path, n, "token_ids: not all integers");
        }
        ids.push_back(id.get<int32_t>());
      }
      t.token_ids = std::move(ids);
    }
    if (!t.text && !t.token_ids && (!t.input_len || *t.input_len < 1)) {
      return TraceError(options.trace_path, n, "needs input_length (>= 1), prompt or token_ids");
    }
    if (j.contains("tier") && j["tier"].is_string()) t.tier = j["tier"].get<std::string>();
    if (j.contains("timestamp") && j["timestamp"].is_number()) {
      t.timestamp = absl::Milliseconds(j["timestamp"].get<double>());
    }
    w->trace_.push_back(std::move(t));
  }
  if (w->trace_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("trace ", options.trace_path, " is empty"));
  }
  w->has_arrivals_ = std::all_of(w->trace_.begin(), w->trace_.end(),
                                 [](const TraceLine& t) { return t.timestamp.has_value(); });
  return w;
}

std::string Workload::DrawTier(std::mt19937_64& rng) const {
  const std::vector<TierWeight>& mix = options_.tier_mix;
  if (mix.size() == 1) return mix[0].name;
  double u = std::uniform_real_distribution<double>(0, 1)(rng);
  for (const TierWeight& w : mix) {
    if (u < w.weight) return w.name;
    u -= w.weight;
  }
  return mix.back().name;  // rounding left u just above the last weight
}

std::vector<int32_t> Workload::RandomIds(std::mt19937_64& rng, int n) const {
  std::uniform_int_distribution<int32_t> dist(
      0, options_.vocab_size - static_cast<int32_t>(excluded_.size()) - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) {
    id = dist(rng);
    // Step over the excluded ids at or below the drawn one: a uniform draw over the rest.
    for (int32_t e : excluded_) {
      if (e <= id) ++id;
    }
  }
  return ids;
}

std::string Workload::RandomWords(std::mt19937_64& rng, int n) const {
  std::uniform_int_distribution<size_t> dist(0, std::size(kWords) - 1);
  std::vector<absl::string_view> words(n);
  for (absl::string_view& w : words) w = kWords[dist(rng)];
  return absl::StrJoin(words, " ");
}

PlannedRequest Workload::Get(int index) const {
  // One generator per request, seeded by (seed, index): request i is the same however many
  // requests the run sends or in which order.
  std::seed_seq seq{static_cast<uint32_t>(options_.seed),
                    static_cast<uint32_t>(options_.seed >> 32), static_cast<uint32_t>(index)};
  std::mt19937_64 rng(seq);
  PlannedRequest r;
  r.index = index;
  r.tier = DrawTier(rng);
  if (trace_.empty()) {
    r.input_len = Draw(rng, options_.input_len);
    r.output_len = Draw(rng, options_.output_len);
    if (options_.text_prompts) {
      r.prompt_text = RandomWords(rng, r.input_len);
    } else {
      r.prompt_ids = RandomIds(rng, r.input_len);
    }
    return r;
  }
  const size_t n = trace_.size();
  const TraceLine& t = trace_[index % n];
  if (t.tier) r.tier = *t.tier;
  r.output_len = t.output_len;
  if (t.token_ids) {
    r.prompt_ids = *t.token_ids;
  } else if (t.text) {
    r.prompt_text = *t.text;
  } else if (options_.text_prompts) {
    r.prompt_text = RandomWords(rng, *t.input_len);
  } else {
    r.prompt_ids = RandomIds(rng, *t.input_len);
  }
  if (t.input_len) {
    r.input_len = *t.input_len;
  } else if (t.token_ids) {
    r.input_len = static_cast<int>(t.token_ids->size());
  } else {
    std::vector<absl::string_view> words = absl::StrSplit(r.prompt_text, ' ', absl::SkipEmpty());
    r.input_len = static_cast<int>(words.size());
  }
  if (trace_has_arrivals()) {
    // A wrapped-around trace keeps going: each pass starts after the previous one's span.
    const absl::Duration first = *trace_.front().timestamp;
    const absl::Duration span = *trace_.back().timestamp - first;
    const int pass = index / static_cast<int>(n);
    r.trace_arrival = (*t.timestamp - first) + pass * (span + absl::Milliseconds(1));
  }
  return r;
}

ArrivalProcess::ArrivalProcess(double rate, Arrival kind, uint64_t seed)
    : rate_(rate), kind_(kind), rng_(seed ^ 0x9e3779b97f4a7c15ULL) {}

absl::Duration ArrivalProcess::Next() {
  const int n = count_++;
  // n / rate rather than a running sum: no drift over a long run.
  if (kind_ == Arrival::kConstant) return absl::Seconds(n / rate_);
  if (n > 0) t_s_ += std::exponential_distribution<double>(rate_)(rng_);
  return absl::Seconds(t_s_);
}

}  // namespace gka::cli::bench
