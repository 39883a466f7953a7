// WaitHistogram: how long requests waited in a resource queue, in power-of-two
// microsecond buckets, with percentiles for .vsfs/stats.
// Thread-safety: none; the owner guards it.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

#include "vsfs/datastore.h"

namespace vsfs::disk {

class WaitHistogram {
 public:
  void add(uint64_t us) {
    ++buckets_[std::min<size_t>(std::bit_width(us), buckets_.size() - 1)];
    ++count_;
    if (us > max_) max_ = us;
  }
  // Fills the counters of `q` (waits and percentiles; waiting_now is the caller's).
  void fill(QueueStats& q) const {
    q.waits = count_;
    q.wait_us_p50 = percentile(50);
    q.wait_us_p99 = percentile(99);
    q.wait_us_max = max_;
  }

 private:
  // The upper bound of the bucket holding the p-th percentile.
  uint64_t percentile(unsigned p) const {
    if (count_ == 0) return 0;
    const uint64_t rank = (count_ * p + 99) / 100;
    uint64_t seen = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen >= rank) return std::min<uint64_t>(i == 0 ? 0 : (uint64_t{1} << i) - 1, max_);
    }
    return max_;
  }
  std::array<uint64_t, 40> buckets_{};
  uint64_t count_ = 0, max_ = 0;
};

}  // namespace vsfs::disk
