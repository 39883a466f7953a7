// Byte counts as people read them in messages: "4096 bytes", "1.50 GiB" (powers of
// 1024). Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace vsfs {

inline std::string human_bytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} bytes", bytes);
  return fmt::format("{:.2f} {}", v, kUnits[u]);
}

}  // namespace vsfs
