// Helpers shared by the device tests: a batch's completions counted, a zero check. (One
// IO run to its end is device::run_io.)
#pragma once

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "device/device.h"

namespace vsfs::device {

inline bool all_zero(const uint8_t* p, uint64_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// Counts completions of a batch (results, calls and order) and lets the test wait for
// all of them.
class Waiter {
 public:
  explicit Waiter(size_t n) : results_(n, INT64_MIN), calls_(n) {}
  Completion done(size_t i) {
    return [this, i](int64_t res) {
      std::lock_guard lk(mu_);
      results_[i] = res;
      ++calls_[i];
      order_.push_back(i);
      if (++finished_ == results_.size()) cv_.notify_all();
    };
  }
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return finished_ == results_.size(); });
  }
  std::vector<int64_t> results_;
  std::vector<int> calls_;
  std::vector<size_t> order_;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t finished_ = 0;
};

}  // namespace vsfs::device
