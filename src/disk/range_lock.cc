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
  waiting_.push_back(Waiter{range, std::move(start), handle});
  return false;
}

std::vector<RangeLock::Start> RangeLock::release(Handle handle) {
  active_.erase(handle);
  std::vector<Start> ready;
  std::vector<GrainRange> still_waiting;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    bool free = true;
    for (const auto& a : active_) free = free && !a.conflicts(it->range);
    for (const auto& w : still_waiting) free = free && !w.conflicts(it->range);
    if (free) {
      *it->handle = active_.insert(active_.end(), it->range);
      ready.push_back(std::move(it->start));
      it = waiting_.erase(it);
    } else {
      still_waiting.push_back(it->range);
      ++it;
    }
  }
  return ready;
}

}  // namespace vsfs::disk
