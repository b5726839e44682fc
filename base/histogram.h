// A fixed-bucket histogram of non-negative samples, in the shape Prometheus
// exposes: cumulative counts per upper bound, a sum and a count.
// Thread-safety: none; a value type copied into snapshots.
#ifndef TIDEMAP_BASE_HISTOGRAM_H_
#define TIDEMAP_BASE_HISTOGRAM_H_

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace tidemap {

class Histogram {
 public:
  // `bounds` are the buckets' upper bounds, ascending; an implicit +Inf bucket follows.
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

  // 1 ms .. 60 s, for durations in seconds.
  static std::vector<double> DefaultSecondsBounds() {
    return {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60};
  }

  void Observe(double value) {
    size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) -
                                   bounds_.begin());
    ++counts_[i];
    sum_ += value;
    ++count_;
  }

  const std::vector<double>& bounds() const { return bounds_; }
  // Samples <= bounds()[i] (cumulative); index bounds().size() is +Inf, equal to count().
  uint64_t CumulativeCount(size_t i) const {
    uint64_t total = 0;
    for (size_t j = 0; j <= i && j < counts_.size(); ++j) total += counts_[j];
    return total;
  }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace tidemap

#endif  // TIDEMAP_BASE_HISTOGRAM_H_
