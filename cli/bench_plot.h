// gka bench serve: SVG plots of benchmark results, written by hand (no plotting library on
// the serving machines): line charts in stacked panels with axes, ticks and a legend.
//
//   RunPlot      one run: TTFT and ITL percentiles, and throughput and requests in flight,
//                over time (from a run's JSON result, see bench_command.cc)
//   SweepPlot    one or more rate sweeps overlaid: TTFT and ITL percentiles, and throughput
//                and goodput, against the offered request rate
//
// Both read the JSON the benchmark writes, so `gka bench plot` redraws saved results.
//
//   std::string svg = gka::cli::bench::SweepPlot({sweep_json}, "2 prefill + 2 decode");
//
// Owns nothing; pure functions. Thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gka::cli::bench {

struct PlotSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // a NaN y breaks the line
  std::string color;
  bool dashed = false;
};

struct PlotPanel {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  // Log-scaled y axis (values <= 0 are left out).
  bool log_y = false;
  // Fixed x range (so that stacked panels line up); unset: the data's.
  std::optional<std::pair<double, double>> x_range;
};

// A whole SVG document: `title` on top, the panels stacked, `note` (may be empty) below.
std::string RenderSvg(const std::string& title, const std::vector<PlotPanel>& panels,
                      const std::string& note);

// `run` is one run's result JSON (with "report"); `title` heads the plot.
std::string RunPlot(const nlohmann::json& run, const std::string& title);

// Each element is one sweep's result JSON (with "label" and "points"); `title` heads the plot.
std::string SweepPlot(const std::vector<nlohmann::json>& sweeps, const std::string& title);

}  // namespace gka::cli::bench
