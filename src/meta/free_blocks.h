// FreeBlocks: the free lists of the allocator, two disjoint ordered sets of storage
// blocks (formatted, and to be formatted), kept in a form whose size grows with the
// space in use, not with the device.
//
// The blocks are split into groups, one per block-table grain (504 blocks). A group is
// implicit or explicit. Implicit: every block of the group in the data area is on the
// formatted list, and nothing else is known or stored (a fresh or fully formatted part
// of the device costs a few bytes). Explicit: two bits per block say which list holds
// it, if any. MetaStore makes a group explicit (after loading its block-table grain)
// before it changes anything in it, and lets it go back to implicit when it holds every
// block formatted again. Per group, a count per list; per list, a bit per group that has
// any, so the lowest or highest block of a list is found without walking the device.
//
// Pure bookkeeping: no IO, no locking (the caller holds MetaStore::mu()).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "format/format.h"

namespace vsfs::meta {

class FreeBlocks {
 public:
  enum Kind : uint8_t { kFormatted = 0, kToFormat = 1 };
  static constexpr uint64_t kGroupBlocks = format::kBlocksPerTableGrain;

  FreeBlocks() = default;
  // Blocks [first_block, end_block) form the data area; every group starts implicit
  // (all of its data-area blocks formatted).
  FreeBlocks(uint64_t first_block, uint64_t end_block);

  uint64_t groups() const { return count_[0].size(); }
  static uint64_t group_of(uint64_t block) { return block / kGroupBlocks; }
  bool is_explicit(uint64_t group) const { return bits_.count(group) != 0; }
  // Makes an implicit group explicit with the same contents.
  void make_explicit(uint64_t group);
  // Makes an implicit group explicit and empty: the caller inserts what its grain says.
  void make_explicit_empty(uint64_t group);
  // Makes an explicit group implicit again if it holds exactly every data-area block as
  // formatted; returns whether it did.
  bool try_make_implicit(uint64_t group);

  // The data area now ends at `end_block` (the datastore grew). The group holding the
  // old end, if the end falls inside one, must be explicit: its new blocks are on no
  // list until inserted. Groups wholly past the old end start implicit.
  void grow(uint64_t end_block);

  bool contains(Kind kind, uint64_t block) const;
  // The block's group must be explicit; insert: on neither list; erase: on `kind`'s.
  void insert(Kind kind, uint64_t block);
  void erase(Kind kind, uint64_t block);

  uint64_t count(Kind kind) const { return total_[kind]; }
  bool empty(Kind kind) const { return total_[kind] == 0; }
  // The lowest block of the list at or after `from`, or the highest.
  std::optional<uint64_t> first(Kind kind, uint64_t from = 0) const;
  std::optional<uint64_t> last(Kind kind) const;
  // Blocks of the list below `end`.
  uint64_t count_below(Kind kind, uint64_t end) const;
  // Memory held, for tests and stats.
  uint64_t memory_bytes() const;
  uint64_t explicit_groups() const { return bits_.size(); }

 private:
  static constexpr uint64_t kWords = (kGroupBlocks + 63) / 64;
  using Bits = std::array<std::array<uint64_t, kWords>, 2>;
  uint64_t group_begin(uint64_t g) const;  // first data-area block of the group
  uint64_t group_end(uint64_t g) const;
  uint64_t group_size(uint64_t g) const { return group_end(g) - group_begin(g); }
  void set_count(Kind kind, uint64_t g, uint64_t n);
  Bits& bits_of(uint64_t block);  // of the block's group, which must be explicit
  // Within group g (explicit or not), the lowest / highest block of the list at or
  // after `from` / at all.
  std::optional<uint64_t> first_in(Kind kind, uint64_t g, uint64_t from) const;
  std::optional<uint64_t> last_in(Kind kind, uint64_t g) const;

  uint64_t first_ = 0, end_ = 0;
  std::array<std::vector<uint16_t>, 2> count_;   // per group, per list
  std::array<std::vector<uint64_t>, 2> has_;     // per list: bit g = count_[kind][g] > 0
  std::array<uint64_t, 2> total_{};
  std::unordered_map<uint64_t, Bits> bits_;      // explicit groups
};

}  // namespace vsfs::meta
