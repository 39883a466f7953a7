// Geometry constants and distinct unit types.
//
// A byte offset, a grain index inside a disk, a physical grain number on the device and
// a storage block number are different things; each has its own type so one can never
// be passed where another is meant. Conversions are explicit and checked.
// Thread-safety: plain values.
#pragma once

#include <compare>
#include <cstdint>

#include "util/assert.h"

namespace vsfs {

inline constexpr uint64_t kGrainBytes = 4096;             // unit of mapping and COW
inline constexpr uint64_t kGrainsPerBlock = 256;          // grains in a storage block
inline constexpr uint64_t kBlockBytes = kGrainBytes * kGrainsPerBlock;  // 1 MiB
inline constexpr uint64_t kSectorBytes = 512;

template <typename Tag>
struct Unit {
  uint64_t v = 0;
  constexpr Unit() = default;
  constexpr explicit Unit(uint64_t value) : v(value) {}
  constexpr auto operator<=>(const Unit&) const = default;
};

struct PhysGrainTag {};
struct BlockTag {};
// A physical grain number on the device: byte offset / kGrainBytes. Zero means "none"
// in on-disk pointers (grain 0 holds the primary superblock, so no pointer targets it).
using PhysGrain = Unit<PhysGrainTag>;
// A storage block number on the device: byte offset / kBlockBytes.
using BlockIndex = Unit<BlockTag>;

constexpr uint64_t grain_to_bytes(PhysGrain g) { return g.v * kGrainBytes; }
constexpr BlockIndex block_of(PhysGrain g) { return BlockIndex{g.v / kGrainsPerBlock}; }
constexpr PhysGrain first_grain_of(BlockIndex b) { return PhysGrain{b.v * kGrainsPerBlock}; }
inline PhysGrain grain_at_bytes(uint64_t offset_bytes) {
  VSFS_ASSERT(offset_bytes % kGrainBytes == 0);
  return PhysGrain{offset_bytes / kGrainBytes};
}

// Logical grain index inside one disk: file byte offset / kGrainBytes.
constexpr uint64_t file_grain_of(uint64_t offset_bytes) { return offset_bytes / kGrainBytes; }

constexpr uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }
constexpr uint64_t div_round_up(uint64_t v, uint64_t by) { return (v + by - 1) / by; }

}  // namespace vsfs
