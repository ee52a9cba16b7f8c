// gka bench serve: a load generator for a gkaserve router (gka.serving.v1, through the C++
// SDK), after vLLM's `bench serve` and NVIDIA's GenAI-Perf (metric definitions in
// bench_stats.h).
//
//   gka bench serve --addr HOST:PORT (--concurrency N | --request-rate R [--arrival constant])
//       [--num-requests N] [--duration S] [--input-len 128|64:256] [--output-len 64|16:128]
//       [--trace FILE.jsonl] [--prompt tokens|text] [--tier-mix interactive=0.2,standard=0.8]
//       [--ignore-eos] [--slo ttft=500ms,itl=50ms] [--out result.json] [--plot result.svg]
//       [--sweep 1,2,4,8]           one open-loop run per rate; TTFT/ITL/goodput vs rate
//   gka bench plot --in result.json [--in other.json ...] --out plot.svg
//
// The human-readable report goes to stderr; the JSON result to --out (stdout without it).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/bench_plot.h"
#include "cli/bench_stats.h"
#include "cli/bench_workload.h"
#include "cli/commands.h"
#include "common/base/status.h"
#if GKA_WITH_GRPC
#include "cli/bench_runner.h"
#include "cli/client_commands.h"
#include "gka/sdk/client.h"
#endif

namespace gka::cli {
namespace {

struct BenchFlags {
  std::string addr;
  TlsFlags tls;
  std::string api_key;
  int concurrency = 0;
  double request_rate = 0;
  std::string arrival = "poisson";
  int max_concurrency = 0;
  int num_requests = 0;
  double duration_s = 0;
  int warmup_requests = 0;
  std::string input_len = "128";
  std::string output_len = "64";
  std::string trace;
  std::string prompt = "tokens";
  std::string tier_mix;
  bool ignore_eos = false;
  int prefill_num_iter = -1;
  int decode_num_iter = -1;
  std::string slo;
  uint64_t seed = 0;
  double timeout_s = 300;
  std::string out;
  std::string plot;
  std::string sweep;
  std::string label;
  std::string request_id_prefix;
  std::string title;
  bool save_requests = false;
};

absl::Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, " not found"));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  return j;
}

#if GKA_WITH_GRPC

// The 1-minute load average: on a shared machine, other work competes with the cluster and
// the client for the same cores, and the numbers need that said next to them.
double LoadAverage() {
  double load = -1;
  std::ifstream("/proc/loadavg") >> load;
  return load;
}

// What machine produced the numbers: they mean little without it.
nlohmann::json Machine() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string cpu;
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; cpu.empty() && std::getline(info, line);) {
    if (absl::StartsWith(line, "model name")) {
      cpu = std::string(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
    }
  }
  return {{"hostname", host},
          {"cpus", std::thread::hardware_concurrency()},
          {"cpu_model", cpu},
          {"loadavg", LoadAverage()}};
}

std::string PlotPath(const BenchFlags& f) {
  if (!f.plot.empty()) return f.plot;
  if (f.out.empty()) return "";
  std::string base = f.out;
  if (absl::EndsWith(base, ".json")) base.resize(base.size() - 5);
  return base + ".svg";
}

absl::StatusOr<std::vector<double>> ParseRates(absl::string_view text) {
  std::vector<double> rates;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double r = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(item), &r) || !(r > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--sweep: '", item, "' is not a request rate > 0"));
    }
    rates.push_back(r);
  }
  if (rates.empty()) return absl::InvalidArgumentError("--sweep: no rates");
  return rates;
}

std::string ModeName(const bench::RunOptions& o, const BenchFlags& f) {
  if (o.trace_arrivals) return "open loop, trace timestamps";
  if (o.request_rate > 0) {
    return absl::StrCat(
        "open loop, ", f.arrival, " ", o.request_rate, " req/s",
        o.max_concurrency > 0 ? absl::StrCat(", max ", o.max_concurrency, " in flight") : "");
  }
  return absl::StrCat("closed loop, concurrency ", o.concurrency);
}

nlohmann::json Config(const BenchFlags& f, const bench::RunOptions& o) {
  return {{"addr", f.addr},
          {"concurrency", o.concurrency},
          {"request_rate", o.request_rate},
          {"arrival", f.arrival},
          {"max_concurrency", o.max_concurrency},
          {"num_requests", o.num_requests},
          {"duration_s", f.duration_s},
          {"warmup_requests", o.warmup_requests},
          {"input_len", f.input_len},
          {"output_len", f.output_len},
          {"trace", f.trace},
          {"prompt", f.prompt},
          {"tier_mix", f.tier_mix},
          {"ignore_eos", f.ignore_eos},
          {"prefill_num_iter", f.prefill_num_iter},
          {"decode_num_iter", f.decode_num_iter},
          {"seed", f.seed},
          {"timeout_s", f.timeout_s}};
}

absl::Status RunBenchServe(BenchFlags f) {
  GKA_ASSIGN_OR_RETURN(const bench::Slo slo, bench::ParseSlo(f.slo));
  GKA_ASSIGN_OR_RETURN(const bench::Arrival arrival, bench::ParseArrival(f.arrival));
  bench::WorkloadOptions w;
  GKA_ASSIGN_OR_RETURN(w.input_len, bench::ParseLengthSpec("--input-len", f.input_len));
  GKA_ASSIGN_OR_RETURN(w.output_len, bench::ParseLengthSpec("--output-len", f.output_len));
  GKA_ASSIGN_OR_RETURN(w.tier_mix, bench::ParseTierMix(f.tier_mix));
  if (f.prompt != "tokens" && f.prompt != "text") {
    return absl::InvalidArgumentError(absl::StrCat("--prompt ", f.prompt, ": use tokens or text"));
  }
  w.text_prompts = f.prompt == "text";
  w.trace_path = f.trace;
  w.seed = f.seed;
  std::vector<double> sweep;
  if (!f.sweep.empty()) {
    GKA_ASSIGN_OR_RETURN(sweep, ParseRates(f.sweep));
  }

  sdk::ClientOptions client_options{.address = f.addr};
  if (!f.api_key.empty()) client_options.api_key = f.api_key;
  GKA_RETURN_IF_ERROR(ApplyClientTls(f.tls, client_options));
  client_options.default_timeout = absl::Seconds(f.timeout_s);
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<sdk::Client> client, sdk::Client::Create(client_options));
  GKA_RETURN_IF_ERROR(client->WaitForReady(absl::Seconds(30)));
  GKA_ASSIGN_OR_RETURN(const sdk::ModelInfo model, client->GetModelInfo());
  w.vocab_size = model.vocab_size;
  w.excluded_token_ids = model.eos_token_ids;
  GKA_ASSIGN_OR_RETURN(std::unique_ptr<bench::Workload> workload, bench::Workload::Create(w));

  bench::RunOptions o;
  o.concurrency = f.concurrency;
  o.request_rate = f.request_rate;
  o.arrival = arrival;
  o.max_concurrency = f.max_concurrency;
  o.num_requests = f.num_requests;
  if (f.duration_s > 0) o.duration = absl::Seconds(f.duration_s);
  // Unbounded otherwise: a trace once through, or 100 requests.
  if (o.num_requests <= 0 && f.duration_s <= 0) {
    o.num_requests = workload->trace_size() > 0 ? workload->trace_size() : 100;
  }
  o.warmup_requests = f.warmup_requests;
  o.ignore_eos = f.ignore_eos;
  if (f.prefill_num_iter >= 0) o.prefill_num_iter = f.prefill_num_iter;
  if (f.decode_num_iter >= 0) o.decode_num_iter = f.decode_num_iter;
  o.request_timeout = absl::Seconds(f.timeout_s);
  o.trace_arrivals =
      f.request_rate <= 0 && f.concurrency <= 0 && sweep.empty() && workload->trace_has_arrivals();
  o.seed = f.seed;
  o.request_id_prefix = f.request_id_prefix.empty()
                            ? absl::StrCat("bench-", absl::ToUnixMillis(absl::Now()))
                            : f.request_id_prefix;

  const nlohmann::json header = {
      {"model",
       {{"name", model.model},
        {"vocab_size", model.vocab_size},
        {"max_context_tokens", model.max_context_tokens}}},
      {"machine", Machine()},
      {"label", f.label},
      {"started_at", absl::FormatTime(absl::Now(), absl::UTCTimeZone())}};
  auto run_once = [&](const bench::RunOptions& options) -> absl::StatusOr<nlohmann::json> {
    const std::string mode = ModeName(options, f);
    std::cerr << "gka bench serve: " << mode << " against " << f.addr << std::endl;
    GKA_ASSIGN_OR_RETURN(bench::RunResult run, bench::RunLoad(*client, *workload, options));
    const bench::Report report = bench::Summarize(run.records, run.duration, slo);
    std::cerr << bench::FormatReport(report) << std::flush;
    nlohmann::json j = header;
    j["kind"] = "gka bench serve";
    j["mode"] = mode;
    j["config"] = Config(f, options);
    j["report"] = bench::ToJson(report);
    j["report"]["loadavg_after"] = LoadAverage();
    if (f.save_requests) {
      j["requests"] = nlohmann::json::array();
      for (const bench::RequestRecord& r : run.records) j["requests"].push_back(bench::ToJson(r));
    }
    return j;
  };

  nlohmann::json result;
  std::string svg;
  if (sweep.empty()) {
    GKA_ASSIGN_OR_RETURN(result, run_once(o));
    svg = bench::RunPlot(result, f.title.empty() ? absl::StrCat("gka bench serve: ",
                                                                result["mode"].get<std::string>())
                                                 : f.title);
  } else {
    result = header;
    result["kind"] = "gka bench serve sweep";
    result["slo"] = bench::ToJson(slo);
    result["config"] = Config(f, o);
    result["points"] = nlohmann::json::array();
    for (double rate : sweep) {
      bench::RunOptions point = o;
      point.request_rate = rate;
      point.trace_arrivals = false;
      GKA_ASSIGN_OR_RETURN(nlohmann::json run, run_once(point));
      result["points"].push_back(
          {{"request_rate", rate}, {"mode", run["mode"]}, {"report", run["report"]}});
      // Written after every point: a long sweep that is stopped keeps what it measured.
      if (!f.out.empty()) GKA_RETURN_IF_ERROR(WriteFile(f.out, result.dump(2)));
    }
    svg = bench::SweepPlot({result}, f.title.empty() ? "gka bench serve: rate sweep" : f.title);
  }
  if (f.out.empty()) {
    std::cout << result.dump(2) << std::endl;
  } else {
    GKA_RETURN_IF_ERROR(WriteFile(f.out, result.dump(2)));
  }
  const std::string plot = PlotPath(f);
  if (!plot.empty()) GKA_RETURN_IF_ERROR(WriteFile(plot, svg));
  return absl::OkStatus();
}

#endif  // GKA_WITH_GRPC

absl::Status RunBenchPlot(const std::vector<std::string>& inputs, const std::string& out,
                          const std::string& title) {
  std::vector<nlohmann::json> sweeps;
  std::vector<nlohmann::json> runs;
  for (const std::string& path : inputs) {
    GKA_ASSIGN_OR_RETURN(nlohmann::json j, ReadJson(path));
    (j.contains("points") ? sweeps : runs).push_back(std::move(j));
  }
  if (!sweeps.empty() && !runs.empty()) {
    return absl::InvalidArgumentError("--in: give sweeps or one run, not both");
  }
  if (runs.size() > 1) return absl::InvalidArgumentError("--in: one run at a time");
  const std::string svg =
      sweeps.empty()
          ? bench::RunPlot(runs[0], title.empty() ? "gka bench serve" : title)
          : bench::SweepPlot(sweeps, title.empty() ? "gka bench serve: rate sweep" : title);
  return WriteFile(out, svg);
}

}  // namespace

#if GKA_WITH_GRPC
// bench_direct.cc
void RegisterBenchDirect(CLI::App& bench, Action& run);
#endif

void RegisterBench(CLI::App& app, Action& run) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks against a running cluster");
  bench->require_subcommand(1);
#if GKA_WITH_GRPC
  RegisterBenchDirect(*bench, run);
#endif

  auto f = std::make_shared<BenchFlags>();
  CLI::App* serve = bench->add_subcommand(
      "serve", "Load a router: TTFT, ITL, TPOT, E2E, throughput and goodput, with plots");
  serve->add_option("--addr", f->addr, "router HOST:PORT")->required();
  AddTlsFlags(*serve, f->tls);
  serve->add_option("--api-key", f->api_key, "bearer token (default: $GKA_API_KEY)");
  serve->add_option("--concurrency", f->concurrency, "closed loop: requests kept in flight");
  serve->add_option("--request-rate", f->request_rate, "open loop: requests per second");
  serve->add_option("--arrival", f->arrival, "open-loop arrivals: poisson or constant")
      ->capture_default_str();
  serve->add_option("--max-concurrency", f->max_concurrency,
                    "open loop: cap on requests in flight");
  serve->add_option("--num-requests", f->num_requests,
                    "requests to send (default without --duration: the trace once, or 100)");
  serve->add_option("--duration", f->duration_s, "seconds to keep sending");
  serve->add_option("--warmup-requests", f->warmup_requests, "unmeasured requests first");
  serve->add_option("--input-len", f->input_len, "prompt length: N or MIN:MAX (uniform)")
      ->capture_default_str();
  serve->add_option("--output-len", f->output_len, "max_tokens: N or MIN:MAX (uniform)")
      ->capture_default_str();
  serve->add_option("--trace", f->trace,
                    "JSONL requests (input_length, output_length, prompt, token_ids, tier, "
                    "timestamp ms)");
  serve->add_option("--prompt", f->prompt, "tokens (random ids) or text (random words)")
      ->capture_default_str();
  serve->add_option("--tier-mix", f->tier_mix, "e.g. interactive=0.2,standard=0.8");
  serve->add_flag("--ignore-eos", f->ignore_eos, "generate exactly --output-len tokens");
  serve->add_option("--prefill-num-iter", f->prefill_num_iter, "GKA iterations override");
  serve->add_option("--decode-num-iter", f->decode_num_iter, "GKA iterations override");
  serve->add_option("--slo", f->slo, "goodput objectives, e.g. ttft=500ms,itl=50ms (tpot, e2e)");
  serve->add_option("--seed", f->seed, "workload and arrival seed")->capture_default_str();
  serve->add_option("--timeout", f->timeout_s, "seconds per request")->capture_default_str();
  serve->add_option("--out", f->out, "JSON result file (default: stdout)");
  serve->add_option("--plot", f->plot, "SVG plot (default: --out with .svg)");
  serve->add_option("--sweep", f->sweep, "request rates to sweep, e.g. 1,2,4,8");
  serve->add_option("--label", f->label, "name of this run in the result and plots");
  serve->add_option("--title", f->title, "plot title");
  serve->add_flag("--save-requests", f->save_requests, "every request's record in the JSON");
  serve->add_option("--request-id-prefix", f->request_id_prefix,
                    "request ids are PREFIX-<i> (default bench-<unix ms>; the chaos tests name "
                    "fault-injection hooks here)");
  serve->callback([f, &run] {
    run = [f] {
#if GKA_WITH_GRPC
      return RunBenchServe(*f);
#else
      return absl::UnimplementedError("this build has no gRPC client");
#endif
    };
  });

  auto inputs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto title = std::make_shared<std::string>();
  CLI::App* plot = bench->add_subcommand("plot", "Redraw saved results (sweeps overlay)");
  plot->add_option("--in", *inputs, "result JSON (repeat to overlay sweeps)")->required();
  plot->add_option("--out", *out, "SVG file")->required();
  plot->add_option("--title", *title, "plot title");
  plot->callback([inputs, out, title, &run] {
    run = [inputs, out, title] { return RunBenchPlot(*inputs, *out, *title); };
  });
}

}  // namespace gka::cli
