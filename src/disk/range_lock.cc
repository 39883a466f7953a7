// The per-disk grain range queue.
#include "disk/range_lock.h"

#include <vector>

namespace vsfs::disk {

bool RangeLock::acquire(const GrainRange& range, Start start, Handle* handle) {
  bool free = true;
  for (const auto& a : active_) free = free && !a.conflicts(range);
  for (const auto& w : waiting_) free = free && !w.range.conflicts(range);
  if (free) {
    *handle = active_.insert(active_.end(), range);
    start();
    return true;
  }
  waiting_.push_back(Waiter{range, std::move(start), handle, std::chrono::steady_clock::now()});
  return false;
}

std::vector<RangeLock::Granted> RangeLock::release(Handle handle) {
  active_.erase(handle);
  std::vector<Granted> ready;
  const auto now = std::chrono::steady_clock::now();
  std::vector<GrainRange> still_waiting;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    bool free = true;
    for (const auto& a : active_) free = free && !a.conflicts(it->range);
    for (const auto& w : still_waiting) free = free && !w.conflicts(it->range);
    if (free) {
      *it->handle = active_.insert(active_.end(), it->range);
      const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(now - it->since);
      ready.push_back(Granted{std::move(it->start), static_cast<uint64_t>(waited.count())});
      it = waiting_.erase(it);
    } else {
      still_waiting.push_back(it->range);
      ++it;
    }
  }
  return ready;
}

}  // namespace vsfs::disk
