// Helpers shared by the device tests: one IO run to completion, a batch's completions
// counted, a zero check.
#pragma once

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <vector>

#include "device/device.h"

namespace vsfs::device {

inline bool all_zero(const uint8_t* p, uint64_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// Submits one IO and waits for its result.
inline int64_t run_io(Device& dev, OpKind kind, uint64_t offset, void* buf, uint64_t length) {
  iovec iov{buf, length};
  IoRequest r;
  r.kind = kind;
  r.offset_bytes = offset;
  r.length_bytes = length;
  if (kind == OpKind::kRead || kind == OpKind::kWrite) {
    r.iov = &iov;
    r.iovcnt = 1;
  }
  auto p = std::make_shared<std::promise<int64_t>>();
  auto f = p->get_future();
  r.done = [p](int64_t res) { p->set_value(res); };
  dev.submit_one(std::move(r));
  return f.get();
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
