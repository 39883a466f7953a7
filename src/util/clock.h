// Clocks in nanoseconds: wall-clock time (CLOCK_REALTIME), the unit of every time vsfs
// stores, and monotonic time (CLOCK_MONOTONIC) for waits and deadlines.
// Thread-safety: plain system calls (vDSO).
#pragma once

#include <cstdint>
#include <ctime>

namespace vsfs {

inline uint64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace vsfs
