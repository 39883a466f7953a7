// The deadline thread of the coalescing queues: see coalesce_timer.h.
#include "io/coalesce_timer.h"

#include "io/coalesce_queue.h"

namespace vsfs::io {

CoalesceTimer::CoalesceTimer() : thread_([this] { loop(); }) {}

CoalesceTimer::~CoalesceTimer() {
  {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CoalesceTimer::arm(std::weak_ptr<CoalesceQueue> queue, Clock::time_point when) {
  bool earliest;
  {
    std::lock_guard l(mu_);
    if (stop_) return;
    earliest = entries_.empty() || when < entries_.top().when;
    entries_.push(Entry{when, std::move(queue)});
  }
  if (earliest) cv_.notify_one();
}

void CoalesceTimer::loop() {
  std::unique_lock l(mu_);
  while (!stop_) {
    if (entries_.empty()) {
      cv_.wait(l);
      continue;
    }
    const Clock::time_point when = entries_.top().when;
    if (Clock::now() < when) {
      cv_.wait_until(l, when);
      continue;
    }
    std::weak_ptr<CoalesceQueue> weak = entries_.top().queue;
    entries_.pop();
    l.unlock();
    if (std::shared_ptr<CoalesceQueue> q = weak.lock()) q->on_deadline();
    l.lock();
  }
}

}  // namespace vsfs::io
