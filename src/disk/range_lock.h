// RangeLock: the per-disk queue of requests waiting for grains that other requests are
// using. A request holds a range of disk grains, shared (reads) or exclusive (writes,
// punch, truncate); a conflicting request waits in FIFO order and is started by the
// release that frees its range. A waiting request also blocks later requests that
// overlap it, so overlapping writes are never reordered.
// Thread-safety: none; the owner guards it (InodeTable, under MetaStore's mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <vector>

namespace vsfs::disk {

struct GrainRange {
  uint64_t first = 0;
  uint64_t end = 0;  // exclusive
  bool exclusive = false;
  bool conflicts(const GrainRange& o) const {
    return first < o.end && o.first < end && (exclusive || o.exclusive);
  }
};

class RangeLock {
 public:
  using Start = std::function<void()>;
  using Handle = std::list<GrainRange>::iterator;

  // Starts `start` now (returns true) when the range is free, else queues it.
  bool acquire(const GrainRange& range, Start start, Handle* handle);
  struct Granted {
    Start start;
    uint64_t waited_us = 0;  // how long it waited in the queue
  };
  // Releases a held range; returns the starts of waiters that now hold their ranges,
  // for the caller to run.
  std::vector<Granted> release(Handle handle);
  bool idle() const { return active_.empty() && waiting_.empty(); }
  size_t waiting() const { return waiting_.size(); }

 private:
  struct Waiter {
    GrainRange range;
    Start start;
    Handle* handle;
    std::chrono::steady_clock::time_point since;
  };
  std::list<GrainRange> active_;
  std::deque<Waiter> waiting_;
};

}  // namespace vsfs::disk
