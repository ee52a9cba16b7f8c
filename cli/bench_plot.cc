#include "cli/bench_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace gka::cli::bench {

namespace {

constexpr double kPlotWidth = 652;  // the axes' box; the legend goes to its right
constexpr double kPanelHeight = 250;
constexpr double kLeft = 78, kTop = 28, kBottom = 44;
constexpr double kTitleHeight = 40;
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

// Colour-blind-safe palette (Okabe-Ito), then greys.
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                    "#E69F00", "#56B4E9", "#000000", "#999999"};

std::string Escape(const std::string& s) {
  return absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}});
}

std::string Num(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e4 || a < 1e-3) return absl::StrFormat("%.0e", v);
  if (a >= 100 || v == std::round(v)) return absl::StrFormat("%.0f", v);
  if (a >= 1) return absl::StrFormat("%.3g", v);
  return absl::StrFormat("%.2g", v);
}

// Step of about `range / 6`, rounded to 1, 2, 2.5 or 5 times a power of ten.
double NiceStep(double range) {
  const double raw = range / 6;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;
  // Fraction [0, 1] of the axis at value v.
  double Frac(double v) const {
    if (log) return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }
};

// `tight`: the axis spans exactly [lo, hi] (a time or rate axis ends where the data does);
// otherwise it widens to the next ticks.
Axis MakeAxis(double lo, double hi, bool log, bool from_zero, bool tight) {
  Axis a;
  a.log = log;
  if (log) {
    a.lo = std::pow(10.0, std::floor(std::log10(lo)));
    a.hi = std::pow(10.0, std::ceil(std::log10(hi)));
    if (a.hi <= a.lo) a.hi = a.lo * 10;
    for (double t = a.lo; t <= a.hi * 1.0001; t *= 10) a.ticks.push_back(t);
    return a;
  }
  if (from_zero) lo = std::min(lo, 0.0);
  if (hi <= lo) hi = lo + (lo == 0 ? 1 : std::fabs(lo));
  const double step = NiceStep(hi - lo);
  a.lo = tight ? lo : std::floor(lo / step) * step;
  a.hi = tight ? hi : std::ceil(hi / step) * step;
  for (double t = std::ceil(a.lo / step - 1e-6) * step; t <= a.hi + step * 1e-6; t += step) {
    a.ticks.push_back(t);
  }
  return a;
}

void DrawPanel(const PlotPanel& panel, double y0, std::string* svg) {
  const double px0 = kLeft, px1 = kLeft + kPlotWidth;
  const double py0 = y0 + kTop, py1 = y0 + kPanelHeight - kBottom;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const PlotSeries& s : panel.series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (panel.log_y && y <= 0)) continue;
      xlo = std::min(xlo, x);
      xhi = std::max(xhi, x);
      ylo = std::min(ylo, y);
      yhi = std::max(yhi, y);
    }
  }
  absl::StrAppendFormat(svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"pt\">%s</text>\n", px0, py0 - 9,
                        Escape(panel.title));
  absl::StrAppendFormat(svg,
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                        "fill=\"none\" stroke=\"#444\"/>\n",
                        px0, py0, px1 - px0, py1 - py0);
  if (!std::isfinite(xlo)) {
    absl::StrAppendFormat(svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"ax\">no data</text>\n",
                          (px0 + px1) / 2 - 20, (py0 + py1) / 2);
    return;
  }
  if (panel.x_range) std::tie(xlo, xhi) = *panel.x_range;
  const Axis xa = MakeAxis(xlo, xhi, false, false, /*tight=*/xhi > xlo);
  const Axis ya = MakeAxis(ylo, yhi, panel.log_y, true, /*tight=*/false);
  auto X = [&](double x) { return px0 + xa.Frac(x) * (px1 - px0); };
  auto Y = [&](double y) { return py1 - ya.Frac(y) * (py1 - py0); };
  for (double t : xa.ticks) {
    absl::StrAppendFormat(svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                          "<text x=\"%.1f\" y=\"%.1f\" class=\"ax\" text-anchor=\"middle\">%s"
                          "</text>\n",
                          X(t), py0, X(t), py1, X(t), py1 + 15, Num(t));
  }
  for (double t : ya.ticks) {
    absl::StrAppendFormat(
        svg,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
        "<text x=\"%.1f\" y=\"%.1f\" class=\"ax\" text-anchor=\"end\">%s</text>\n",
        px0, Y(t), px1, Y(t), px0 - 5, Y(t) + 4, Num(t));
  }
  absl::StrAppendFormat(
      svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"ax\" text-anchor=\"middle\">%s</text>\n",
      (px0 + px1) / 2, py1 + 32, Escape(panel.x_label));
  absl::StrAppendFormat(svg,
                        "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" class=\"ax\" "
                        "text-anchor=\"middle\">%s</text>\n",
                        px0 - 58, (py0 + py1) / 2, Escape(panel.y_label));
  double ly = py0 + 12;
  for (const PlotSeries& s : panel.series) {
    const std::string dash = s.dashed ? " stroke-dasharray=\"6,4\"" : "";
    std::string path;
    bool pen_down = false;
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (panel.log_y && y <= 0)) {
        pen_down = false;  // a gap in the data is a gap in the line
        continue;
      }
      absl::StrAppendFormat(&path, "%s%.1f,%.1f ", pen_down ? "L" : "M", X(x), Y(y));
      absl::StrAppendFormat(svg, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.2\" fill=\"%s\"/>", X(x),
                            Y(y), s.color);
      pen_down = true;
    }
    absl::StrAppendFormat(svg,
                          "\n<path d=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\"%s/>\n",
                          path, s.color, dash);
    absl::StrAppendFormat(svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                          "stroke-width=\"2\"%s/><text x=\"%.1f\" y=\"%.1f\" class=\"lg\">%s"
                          "</text>\n",
                          px1 + 10, ly, px1 + 34, ly, s.color, dash, px1 + 40, ly + 4,
                          Escape(s.name));
    ly += 16;
  }
}

double Get(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* node = &j;
  for (const char* key : path) {
    if (!node->is_object() || !node->contains(key)) return kNan;
    node = &(*node)[key];
  }
  return node->is_number() ? node->get<double>() : kNan;
}

// True when a latency panel's values span so much that a linear axis would hide the
// low-load points under the saturated ones.
bool WantsLog(const PlotPanel& p) {
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const PlotSeries& s : p.series) {
    for (const auto& [x, y] : s.points) {
      if (std::isfinite(y) && y > 0) {
        lo = std::min(lo, y);
        hi = std::max(hi, y);
      }
    }
  }
  return hi > 0 && hi / lo > 50;
}

}  // namespace

std::string RenderSvg(const std::string& title, const std::vector<PlotPanel>& panels,
                      const std::string& note) {
  // A long title wraps once, at the last space that keeps the first line inside the plot.
  constexpr size_t kTitleChars = 100;
  std::vector<std::string> lines = {title};
  if (title.size() > kTitleChars) {
    const size_t cut = title.rfind(' ', kTitleChars);
    if (cut != std::string::npos) lines = {title.substr(0, cut), title.substr(cut + 1)};
  }
  const double title_height = kTitleHeight + 18 * (lines.size() - 1);
  const double height = title_height + panels.size() * kPanelHeight + (note.empty() ? 10 : 30);
  // Wide enough for the longest legend entry (overlaid sweeps carry their labels).
  size_t longest = 0;
  for (const PlotPanel& p : panels) {
    for (const PlotSeries& s : p.series) longest = std::max(longest, s.name.size());
  }
  const double width = kLeft + kPlotWidth + std::max(190.0, 52 + 6.2 * longest);
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "viewBox=\"0 0 %.0f %.0f\" font-family=\"Helvetica, Arial, sans-serif\">\n"
      "<style>.t{font-size:14px;font-weight:bold}.pt{font-size:13px;font-weight:bold}"
      ".ax{font-size:11px;fill:#333}.lg{font-size:11px}.nt{font-size:11px;fill:#555}"
      ".grid{stroke:#e4e4e4;stroke-width:1}</style>\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      width, height, width, height);
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"t\">%s</text>\n", kLeft,
                          24.0 + 18 * i, Escape(lines[i]));
  }
  for (size_t i = 0; i < panels.size(); ++i) {
    DrawPanel(panels[i], title_height + i * kPanelHeight, &svg);
  }
  if (!note.empty()) {
    absl::StrAppendFormat(&svg, "<text x=\"%.1f\" y=\"%.1f\" class=\"nt\">%s</text>\n", kLeft,
                          height - 12, Escape(note));
  }
  svg += "</svg>\n";
  return svg;
}

std::string RunPlot(const nlohmann::json& run, const std::string& title) {
  const nlohmann::json& report = run.contains("report") ? run["report"] : run;
  PlotPanel ttft{"TTFT over time (by first-token arrival)", "time since start (s)", "ms"};
  PlotPanel itl{"ITL over time (by gap end)", "time since start (s)", "ms"};
  PlotPanel tokens{"Output token throughput over time", "time since start (s)", "tokens/s"};
  PlotPanel load{"Requests over time", "time since start (s)", "requests/s, requests"};
  struct Line {
    PlotPanel* panel;
    const char* name;
    std::initializer_list<const char*> path;
    const char* color;
    bool dashed;
  };
  const Line lines[] = {
      {&ttft, "TTFT p50", {"ttft_ms", "p50"}, kPalette[0], false},
      {&ttft, "TTFT p90", {"ttft_ms", "p90"}, kPalette[1], false},
      {&ttft, "TTFT p99", {"ttft_ms", "p99"}, kPalette[2], false},
      {&itl, "ITL p50", {"itl_ms", "p50"}, kPalette[0], false},
      {&itl, "ITL p90", {"itl_ms", "p90"}, kPalette[1], false},
      {&itl, "ITL p99", {"itl_ms", "p99"}, kPalette[2], false},
      {&tokens, "output tok/s", {"output_tokens_per_s"}, kPalette[0], false},
      {&load, "completed/s", {"requests_per_s"}, kPalette[1], false},
      {&load, "in flight", {"in_flight"}, kPalette[6], true},
  };
  const double bin = Get(report, {"timeline_bin_s"});
  const double duration = Get(report, {"duration_s"});
  for (const Line& line : lines) {
    PlotSeries s{line.name, {}, line.color, line.dashed};
    if (report.contains("timeline")) {
      for (const nlohmann::json& b : report["timeline"]) {
        const bool is_latency = line.path.size() == 2;
        const double count = is_latency ? Get(b, {*line.path.begin(), "count"}) : 1;
        // A bin without samples has no percentile: leave a gap rather than a false zero.
        const double y = count > 0 ? Get(b, line.path) : kNan;
        // At the middle of the bin; the last bin ends with the run, so it may be narrower.
        const double t = Get(b, {"t_s"});
        const double width = std::isfinite(bin) ? bin : 0;
        const double end = std::isfinite(duration) ? std::min(t + width, duration) : t + width;
        s.points.push_back({(t + std::max(t, end)) / 2, y});
      }
    }
    line.panel->series.push_back(std::move(s));
  }
  for (PlotPanel* p : {&ttft, &itl}) p->log_y = WantsLog(*p);
  if (std::isfinite(duration) && duration > 0) {
    for (PlotPanel* p : {&ttft, &itl, &tokens, &load}) p->x_range = {0.0, duration};
  }
  const std::string note = absl::StrFormat(
      "%s; %.0f s, %d requests ok, %d failed; bins of %s s", run.value("mode", std::string()),
      Get(report, {"duration_s"}), static_cast<int>(Get(report, {"overall", "requests", "ok"})),
      static_cast<int>(Get(report, {"overall", "requests", "failed"})), Num(bin));
  return RenderSvg(title, {ttft, itl, tokens, load}, note);
}

std::string SweepPlot(const std::vector<nlohmann::json>& sweeps, const std::string& title) {
  PlotPanel ttft{"TTFT vs offered load", "offered request rate (req/s)", "ms"};
  PlotPanel itl{"ITL vs offered load", "offered request rate (req/s)", "ms"};
  PlotPanel tput{"Throughput and goodput vs offered load", "offered request rate (req/s)",
                 "requests/s"};
  const bool several = sweeps.size() > 1;
  int colour = 0;
  for (const nlohmann::json& sweep : sweeps) {
    const std::string label = sweep.value("label", std::string());
    auto name = [&](const std::string& what) {
      return several && !label.empty() ? absl::StrCat(label, ": ", what) : what;
    };
    // One colour per sweep when overlaid (percentiles told apart by dashes); one colour per
    // percentile for a single sweep.
    const char* c0 = kPalette[(colour) % 8];
    const char* c1 = several ? c0 : kPalette[(colour + 1) % 8];
    const char* c2 = several ? c0 : kPalette[(colour + 2) % 8];
    struct Line {
      PlotPanel* panel;
      std::string name;
      std::initializer_list<const char*> path;
      const char* color;
      bool dashed;
    };
    const Line lines[] = {
        {&ttft, name("TTFT p50"), {"overall", "ttft_ms", "p50"}, c0, false},
        {&ttft, name("TTFT p99"), {"overall", "ttft_ms", "p99"}, c2, true},
        {&itl, name("ITL p50"), {"overall", "itl_ms", "p50"}, c0, false},
        {&itl, name("ITL p99"), {"overall", "itl_ms", "p99"}, c2, true},
        {&tput, name("throughput"), {"overall", "request_throughput"}, c0, false},
        {&tput, name("goodput"), {"overall", "goodput"}, c1, true},
    };
    for (const Line& line : lines) {
      PlotSeries s{line.name, {}, line.color, line.dashed};
      if (sweep.contains("points")) {
        for (const nlohmann::json& p : sweep["points"]) {
          s.points.push_back({Get(p, {"request_rate"}), Get(p["report"], line.path)});
        }
      }
      line.panel->series.push_back(std::move(s));
    }
    colour += several ? 1 : 3;
  }
  // The offered load itself, for reading saturation off the throughput panel.
  if (!sweeps.empty() && sweeps[0].contains("points")) {
    PlotSeries offered{"offered", {}, kPalette[7], true};
    for (const nlohmann::json& p : sweeps[0]["points"]) {
      const double r = Get(p, {"request_rate"});
      offered.points.push_back({r, r});
    }
    tput.series.push_back(std::move(offered));
  }
  for (PlotPanel* p : {&ttft, &itl}) p->log_y = WantsLog(*p);
  double max_rate = 0;
  for (const PlotSeries& s : tput.series) {
    for (const auto& [x, y] : s.points) {
      if (std::isfinite(x)) max_rate = std::max(max_rate, x);
    }
  }
  if (max_rate > 0) {
    for (PlotPanel* p : {&ttft, &itl, &tput}) p->x_range = {0.0, max_rate};
  }
  std::string note;
  if (!sweeps.empty()) {
    const nlohmann::json& slo = sweeps[0].contains("slo") ? sweeps[0]["slo"] : nlohmann::json();
    note = absl::StrCat("goodput SLO: ", slo.is_object() && !slo.empty() ? slo.dump() : "none");
  }
  return RenderSvg(title, {ttft, itl, tput}, note);
}

}  // namespace gka::cli::bench
