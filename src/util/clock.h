// Wall-clock time in nanoseconds (CLOCK_REALTIME), the unit of every time vsfs stores.
// Thread-safety: a plain system call.
#pragma once

#include <cstdint>
#include <ctime>

namespace vsfs {

inline uint64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace vsfs
