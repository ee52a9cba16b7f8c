#include "common/metrics/metrics.h"

#include <dlfcn.h>
#include <prometheus/check_names.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <pthread.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <typeindex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/check.h"
#include "common/base/status.h"

// civetweb (the /metrics server, and the router's HTTP gateway) sizes its threads with a
// compile-time pthread_attr_setstacksize (~100 KiB in Debian's build). glibc carves a thread's
// static TLS out of that stack (glibc bug 11787), and a CUDA build links libcublasLt with
// ~94 KiB of it, so pthread_create fails and the exposer cannot start. civetweb offers no
// run-time knob, so every executable that links this library interposes the call and adds what
// glibc takes off the top (__pthread_get_minstack: static TLS + a page + PTHREAD_STACK_MIN, as
// Rust's std does). Exported to the dynamic symbol table by common/metrics/CMakeLists.txt.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_size) {
  using SetStackSize = int (*)(pthread_attr_t*, size_t);
  using MinStack = size_t (*)(const pthread_attr_t*);
  static const auto next =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  static const auto min_stack =
      reinterpret_cast<MinStack>(dlsym(RTLD_DEFAULT, "__pthread_get_minstack"));
  if (next == nullptr) return ENOSYS;
  if (min_stack != nullptr) {
    const size_t taken = min_stack(attr);
    if (stack_size <= SIZE_MAX - taken) stack_size += taken;
  }
  return next(attr, stack_size);
}

namespace gka::metrics {

void Counter::Increment(double amount) {
  if (amount >= 0) impl_->Increment(amount);
}
double Counter::Value() const { return impl_->Value(); }

void Gauge::Set(double value) { impl_->Set(value); }
void Gauge::Increment(double amount) { impl_->Increment(amount); }
void Gauge::Decrement(double amount) { impl_->Decrement(amount); }
double Gauge::Value() const { return impl_->Value(); }

void Histogram::Observe(double value) { impl_->Observe(value); }

namespace {

void CheckLabelNames(const Labels& labels, const std::vector<std::string>& declared) {
  bool same = labels.size() == declared.size();
  for (size_t i = 0; same && i < declared.size(); ++i) same = labels.count(declared[i]) == 1;
  GKA_CHECK(same) << "labels {" << absl::StrJoin(labels, ",", absl::PairFormatter("="))
                  << "} do not match the declared label names {" << absl::StrJoin(declared, ",")
                  << "}";
}

// prometheus-cpp wants std::map labels; ours are the same type.
template <typename Impl>
Impl& AddSeries(prometheus::Family<Impl>* family, const Labels& labels,
                const std::vector<double>& /*buckets*/) {
  return family->Add(labels);
}

template <>
prometheus::Histogram& AddSeries(prometheus::Family<prometheus::Histogram>* family,
                                 const Labels& labels, const std::vector<double>& buckets) {
  return family->Add(labels, prometheus::Histogram::BucketBoundaries(buckets));
}

}  // namespace

template <typename Series>
Series Family<Series>::Labels(const metrics::Labels& labels) {
  CheckLabelNames(labels, label_names_);
  // Label values are free-form text; prometheus-cpp only throws for label names, which were
  // validated when the family was registered.
  return Series(&AddSeries(impl_, labels, buckets_));
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> buckets;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) buckets.push_back(bound);
  return buckets;
}

std::vector<double> LatencyBuckets() { return ExponentialBuckets(0.0005, 2.0, 18); }

struct Registry::Impl {
  // Shared with the exposer's HTTP threads, which collect through a weak_ptr.
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::mutex mu;
  struct Entry {
    std::type_index type;
    std::vector<std::string> label_names;
    std::shared_ptr<void> family;  // Family<Counter|Gauge|Histogram>
  };
  std::map<std::string, Entry> entries;

  template <typename Series, typename Builder>
  absl::StatusOr<Family<Series>*> Add(absl::string_view name, absl::string_view help,
                                      std::vector<std::string> label_names,
                                      std::vector<double> buckets, Builder builder) {
    std::lock_guard<std::mutex> lock(mu);
    const std::string key(name);
    if (auto it = entries.find(key); it != entries.end()) {
      if (it->second.type != std::type_index(typeid(Series)) ||
          it->second.label_names != label_names) {
        return absl::InvalidArgumentError(absl::StrCat(
            "metric ", name, " is already registered with another type or label names {",
            absl::StrJoin(it->second.label_names, ","), "}"));
      }
      return static_cast<Family<Series>*>(it->second.family.get());
    }
    for (const std::string& label : label_names) {
      if (!prometheus::CheckLabelName(label)) {
        return absl::InvalidArgumentError(
            absl::StrCat("metric ", name, ": invalid label name '", label, "'"));
      }
    }
    if (!prometheus::CheckMetricName(key)) {
      return absl::InvalidArgumentError(absl::StrCat("invalid metric name '", name, "'"));
    }
    prometheus::Family<typename Series::Impl>* family = nullptr;
    try {
      family = &builder.Name(key).Help(std::string(help)).Register(*registry);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("metric ", name, ": ", e.what()));
    }
    auto wrapper = std::shared_ptr<Family<Series>>(
        new Family<Series>(family, std::move(label_names), std::move(buckets)));
    entries.emplace(key, Entry{typeid(Series), wrapper->label_names_, wrapper});
    return wrapper.get();
  }
};

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

absl::StatusOr<CounterFamily*> Registry::AddCounter(absl::string_view name, absl::string_view help,
                                                    std::vector<std::string> label_names) {
  return impl_->Add<Counter>(name, help, std::move(label_names), {}, prometheus::BuildCounter());
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(absl::string_view name, absl::string_view help,
                                                std::vector<std::string> label_names) {
  return impl_->Add<Gauge>(name, help, std::move(label_names), {}, prometheus::BuildGauge());
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(absl::string_view name,
                                                        absl::string_view help,
                                                        std::vector<std::string> label_names,
                                                        std::vector<double> buckets) {
  if (buckets.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("histogram ", name, ": no buckets"));
  }
  for (size_t i = 1; i < buckets.size(); ++i) {
    if (!(buckets[i] > buckets[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("histogram ", name, ": buckets must be strictly increasing"));
    }
  }
  return impl_->Add<Histogram>(name, help, std::move(label_names), std::move(buckets),
                               prometheus::BuildHistogram());
}

std::string Registry::Serialize() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

absl::StatusOr<std::unique_ptr<MetricsExposer>> MetricsExposer::Create(
    const ExposerOptions& options, std::shared_ptr<Registry> registry) {
  GKA_CHECK(registry != nullptr);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(options.address, options.num_threads);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve /metrics on ", options.address, " (port in use?): ", e.what()));
  }
  exposer->RegisterCollectable(registry->impl_->registry);
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("/metrics exposer on ", options.address, " reports no listening port"));
  }
  const size_t colon = options.address.rfind(':');
  std::string address =
      absl::StrCat(colon == std::string::npos ? options.address : options.address.substr(0, colon),
                   ":", ports[0]);
  return std::unique_ptr<MetricsExposer>(
      new MetricsExposer(std::move(exposer), std::move(registry), ports[0], std::move(address)));
}

MetricsExposer::MetricsExposer(std::unique_ptr<prometheus::Exposer> exposer,
                               std::shared_ptr<Registry> registry, int port, std::string address)
    : exposer_(std::move(exposer)),
      registry_(std::move(registry)),
      port_(port),
      address_(std::move(address)) {}

MetricsExposer::~MetricsExposer() = default;

}  // namespace gka::metrics
