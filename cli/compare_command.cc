// gka compare: compares an eval result with a golden file, key by key.
//
//   gka compare --expected golden.safetensors --actual out.safetensors [--tol 1e-4]
//               [--expected-prefix num_iter_0.] [--keys prefill_logits,decode_logits]
//
// Every key of `actual` that the golden also holds (after prepending --expected-prefix) is
// compared: relative L2, max |diff|, and for logits the argmax agreement. Prints one line per
// key and exits non-zero when any relative L2 exceeds --tol or no key was compared.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/base/status.h"
#include "common/model/safetensors.h"

namespace gka::cli {
namespace {

struct CompareFlags {
  std::string expected;
  std::string actual;
  std::string expected_prefix;
  std::string keys;
  double tol = 1e-4;
};

std::vector<float> AsF32(const model::TensorInfo& t) {
  std::vector<float> v(t.shape.numel());
  tensor::ConvertToF32(t.data, t.dtype, v.size(), v.data());
  return v;
}

absl::Status RunCompare(const CompareFlags& f) {
  GKA_ASSIGN_OR_RETURN(auto expected, model::SafetensorsFile::Open(f.expected));
  GKA_ASSIGN_OR_RETURN(auto actual, model::SafetensorsFile::Open(f.actual));
  std::vector<std::string> only;
  if (!f.keys.empty()) only = absl::StrSplit(f.keys, ',');
  int compared = 0, failed = 0;
  std::printf("%-34s %12s %12s %9s\n", "key", "rel_l2", "max_abs", "argmax");
  for (const std::string& key : actual->names()) {
    if (!only.empty() && std::find(only.begin(), only.end(), key) == only.end()) continue;
    const std::string golden_key = f.expected_prefix + key;
    if (!expected->Contains(golden_key)) continue;
    GKA_ASSIGN_OR_RETURN(model::TensorInfo a, actual->Get(key));
    GKA_ASSIGN_OR_RETURN(model::TensorInfo e, expected->Get(golden_key));
    if (a.shape.numel() != e.shape.numel()) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": actual ", a.shape.ToString(), " vs expected ", e.shape.ToString()));
    }
    const std::vector<float> av = AsF32(a), ev = AsF32(e);
    double num = 0, den = 0, max_abs = 0;
    for (size_t i = 0; i < av.size(); ++i) {
      const double d = double(av[i]) - ev[i];
      num += d * d;
      den += double(ev[i]) * ev[i];
      max_abs = std::max(max_abs, std::fabs(d));
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    std::string argmax = "-";
    if (absl::EndsWith(key, "logits")) {
      const int64_t V = a.shape[a.shape.rank() - 1];
      int64_t agree = 0, rows = static_cast<int64_t>(av.size()) / V;
      for (int64_t r = 0; r < rows; ++r) {
        auto best = [&](const std::vector<float>& x) {
          return std::max_element(x.begin() + r * V, x.begin() + (r + 1) * V) - x.begin();
        };
        agree += best(av) == best(ev);
      }
      argmax = absl::StrFormat("%.1f%%", 100.0 * agree / std::max<int64_t>(rows, 1));
    }
    const bool ok = rel <= f.tol;
    std::printf("%-34s %12.3e %12.3e %9s %s\n", key.c_str(), rel, max_abs, argmax.c_str(),
                ok ? "" : "FAIL");
    ++compared;
    failed += !ok;
  }
  if (compared == 0) return absl::NotFoundError("no common keys to compare");
  if (failed > 0) {
    return absl::OutOfRangeError(
        absl::StrCat(failed, " of ", compared, " tensors exceed relative L2 ", f.tol));
  }
  std::printf("all %d tensors within relative L2 %.1e\n", compared, f.tol);
  return absl::OkStatus();
}

}  // namespace

void RegisterCompare(CLI::App& app, Action& run) {
  auto f = std::make_shared<CompareFlags>();
  CLI::App* cmd = app.add_subcommand("compare", "Compare an eval result with a golden file");
  cmd->add_option("--expected", f->expected, "golden safetensors")->required();
  cmd->add_option("--actual", f->actual, "gka eval output")->required();
  cmd->add_option("--expected-prefix", f->expected_prefix,
                  "prefix of the golden keys, e.g. num_iter_0.");
  cmd->add_option("--keys", f->keys, "comma-separated keys to compare (default: all common)");
  cmd->add_option("--tol", f->tol, "relative L2 tolerance")->capture_default_str();
  cmd->callback([f, &run] { run = [f] { return RunCompare(*f); }; });
}

}  // namespace gka::cli
