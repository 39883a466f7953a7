// CoalesceTimer: one thread that wakes coalescing queues when their oldest held request
// reaches its deadline (hold_us_max), so no request waits longer than that for lack of
// a completion. One timer serves every queue of a mount.
//
// A queue arms the timer once when it starts holding (and again at each deadline while
// it still holds), so the timer sleeps while nothing is held and wakes at most about
// once per hold_us_max per holding queue. Entries name their queue by weak_ptr: a queue
// that went away meanwhile is skipped.
// Threading: arm() from any thread; on_deadline() runs on the timer thread with no
// timer lock held (queues take their own mutex first and then call arm(): lock order
// queue before timer).
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

namespace vsfs::io {

class CoalesceQueue;

class CoalesceTimer {
 public:
  using Clock = std::chrono::steady_clock;

  CoalesceTimer();
  ~CoalesceTimer();  // stops and joins the thread; pending entries are dropped
  CoalesceTimer(const CoalesceTimer&) = delete;
  CoalesceTimer& operator=(const CoalesceTimer&) = delete;

  void arm(std::weak_ptr<CoalesceQueue> queue, Clock::time_point when);

 private:
  struct Entry {
    Clock::time_point when;
    std::weak_ptr<CoalesceQueue> queue;
    bool operator>(const Entry& o) const { return when > o.when; }
  };
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> entries_;  // guarded by mu_
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace vsfs::io
