// Metrics registry facade over prometheus-cpp, and the /metrics HTTP exposer.
//
// Owns: families of counters, gauges and histograms with declared label names, and an
// HTTP server that serves them in the Prometheus text format. prometheus-cpp types stay
// behind forward declarations; nothing here throws (prometheus-cpp's exceptions become
// Status at registration and exposer start). Depends on base and Abseil only.
//
//   auto registry = std::make_shared<gka::metrics::Registry>();
//   GKA_ASSIGN_OR_RETURN(auto* requests, registry->AddCounter(
//       "gka_requests_total", "Requests finished, by tier and status code", {"tier", "code"}));
//   gka::metrics::Counter ok = requests->Labels({{"tier", "standard"}, {"code", "OK"}});
//   ok.Increment();                                   // hot path: keep the handle
//   GKA_ASSIGN_OR_RETURN(auto exposer, gka::metrics::MetricsExposer::Create(
//       {.address = "127.0.0.1:0"}, registry));
//   // curl http://127.0.0.1:<exposer->port()>/metrics
//
// Thread-safety: Registry, families and handles are thread-safe (prometheus-cpp locks per
// family and uses atomics per series). Handles stay valid as long as the Registry lives.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
class Exposer;
template <typename T>
class Family;
}  // namespace prometheus

namespace gka::metrics {

// Label name -> value. The names must be exactly the family's declared label names.
using Labels = std::map<std::string, std::string>;

template <typename Series>
class Family;

// Series handles: cheap to copy, valid while the Registry lives.
class Counter {
 public:
  using Impl = prometheus::Counter;
  void Increment(double amount = 1.0);  // amount >= 0 (negative amounts are ignored)
  double Value() const;

 private:
  friend class Family<Counter>;
  explicit Counter(Impl* impl) : impl_(impl) {}
  Impl* impl_;
};

class Gauge {
 public:
  using Impl = prometheus::Gauge;
  void Set(double value);
  void Increment(double amount = 1.0);
  void Decrement(double amount = 1.0);
  double Value() const;

 private:
  friend class Family<Gauge>;
  explicit Gauge(Impl* impl) : impl_(impl) {}
  Impl* impl_;
};

class Histogram {
 public:
  using Impl = prometheus::Histogram;
  void Observe(double value);

 private:
  friend class Family<Histogram>;
  explicit Histogram(Impl* impl) : impl_(impl) {}
  Impl* impl_;
};

// A metric name with its label names; Labels(...) gets or creates one series (creating the
// series at start-up makes it visible at 0 before the first event). Passing label names
// other than the declared ones is a bug in our code and aborts (GKA_CHECK).
template <typename Series>
class Family {
 public:
  Series Labels(const metrics::Labels& labels);

 private:
  friend class Registry;
  Family(prometheus::Family<typename Series::Impl>* impl, std::vector<std::string> label_names,
         std::vector<double> buckets)
      : impl_(impl), label_names_(std::move(label_names)), buckets_(std::move(buckets)) {}
  prometheus::Family<typename Series::Impl>* impl_;
  std::vector<std::string> label_names_;
  std::vector<double> buckets_;  // histograms only
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Upper bounds start, start*factor, ..., count of them (the +Inf bucket is implicit).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Seconds, 0.5 ms .. about 65 s: TTFT, inter-token, end-to-end, transfer latencies.
std::vector<double> LatencyBuckets();

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // INVALID_ARGUMENT for a bad metric or label name, or a name already registered with a
  // different type or label names. Registering the same name, type and labels again returns
  // the existing family. Returned pointers live as long as the Registry.
  absl::StatusOr<CounterFamily*> AddCounter(absl::string_view name, absl::string_view help,
                                            std::vector<std::string> label_names = {});
  absl::StatusOr<GaugeFamily*> AddGauge(absl::string_view name, absl::string_view help,
                                        std::vector<std::string> label_names = {});
  // `buckets`: strictly increasing upper bounds.
  absl::StatusOr<HistogramFamily*> AddHistogram(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> buckets);

  // The Prometheus text exposition of everything registered (what /metrics serves).
  std::string Serialize() const;

 private:
  friend class MetricsExposer;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ExposerOptions {
  // host:port; port 0 picks a free port.
  std::string address = "127.0.0.1:0";
  int num_threads = 2;
};

// Serves GET /metrics for one registry. Co-owns the registry (shared_ptr) because the HTTP
// threads read it until the exposer is destroyed. Destruction can take up to 2 s: civetweb's
// accept loop polls with that period before it notices the stop.
class MetricsExposer {
 public:
  // UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsExposer>> Create(const ExposerOptions& options,
                                                                std::shared_ptr<Registry> registry);
  ~MetricsExposer();

  int port() const { return port_; }
  // "host:port" with the bound port.
  const std::string& address() const { return address_; }

 private:
  MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer, std::shared_ptr<Registry> registry,
                 int port, std::string address);
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<Registry> registry_;
  int port_;
  std::string address_;
};

}  // namespace gka::metrics
