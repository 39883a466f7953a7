// Little-endian load/store of fixed-width integers at byte offsets of a buffer. All
// on-disk integers of vsfs are little-endian and go through these.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace vsfs {

static_assert(std::endian::native == std::endian::little,
              "vsfs encodes by memcpy on little-endian hosts only");

template <typename T>
inline T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void store_le(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

}  // namespace vsfs
