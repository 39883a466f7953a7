#include "meta/free_blocks.h"

#include <algorithm>
#include <bit>

#include "util/assert.h"

namespace vsfs::meta {

FreeBlocks::FreeBlocks(uint64_t first_block, uint64_t end_block)
    : first_(first_block), end_(end_block) {
  VSFS_ASSERT(first_block <= end_block);
  const uint64_t groups = (end_block + kGroupBlocks - 1) / kGroupBlocks;
  for (int k = 0; k < 2; ++k) {
    count_[k].assign(groups, 0);
    has_[k].assign((groups + 63) / 64, 0);
  }
  for (uint64_t g = 0; g < groups; ++g) set_count(kFormatted, g, group_size(g));
}

void FreeBlocks::grow(uint64_t end_block) {
  VSFS_ASSERT(end_block >= end_);
  VSFS_ASSERT(end_ % kGroupBlocks == 0 || is_explicit(group_of(end_)));
  const uint64_t old_groups = groups();
  end_ = end_block;
  const uint64_t groups = (end_block + kGroupBlocks - 1) / kGroupBlocks;
  for (int k = 0; k < 2; ++k) {
    count_[k].resize(groups, 0);
    has_[k].resize((groups + 63) / 64, 0);
  }
  for (uint64_t g = old_groups; g < groups; ++g) set_count(kFormatted, g, group_size(g));
}

uint64_t FreeBlocks::group_begin(uint64_t g) const {
  return std::min(std::max(g * kGroupBlocks, first_), end_);
}

uint64_t FreeBlocks::group_end(uint64_t g) const {
  return std::max(std::min((g + 1) * kGroupBlocks, end_), group_begin(g));
}

void FreeBlocks::set_count(Kind kind, uint64_t g, uint64_t n) {
  total_[kind] = total_[kind] - count_[kind][g] + n;
  count_[kind][g] = static_cast<uint16_t>(n);
  if (n != 0) {
    has_[kind][g / 64] |= 1ull << (g % 64);
  } else {
    has_[kind][g / 64] &= ~(1ull << (g % 64));
  }
}

void FreeBlocks::make_explicit(uint64_t g) {
  VSFS_ASSERT(g < groups() && !is_explicit(g));
  Bits& b = bits_[g];
  b = Bits{};
  for (uint64_t block = group_begin(g); block < group_end(g); ++block) {
    const uint64_t i = block - g * kGroupBlocks;
    b[kFormatted][i / 64] |= 1ull << (i % 64);
  }
}

void FreeBlocks::make_explicit_empty(uint64_t g) {
  VSFS_ASSERT(g < groups() && !is_explicit(g));
  bits_[g] = Bits{};
  set_count(kFormatted, g, 0);
  set_count(kToFormat, g, 0);
}

bool FreeBlocks::try_make_implicit(uint64_t g) {
  auto it = bits_.find(g);
  VSFS_ASSERT(it != bits_.end());
  if (count_[kFormatted][g] != group_size(g)) return false;
  VSFS_ASSERT(count_[kToFormat][g] == 0);
  bits_.erase(it);
  return true;
}

bool FreeBlocks::contains(Kind kind, uint64_t block) const {
  if (block < first_ || block >= end_) return false;
  const uint64_t g = group_of(block);
  auto it = bits_.find(g);
  if (it == bits_.end()) return kind == kFormatted;
  const uint64_t i = block - g * kGroupBlocks;
  return (it->second[kind][i / 64] >> (i % 64)) & 1;
}

FreeBlocks::Bits& FreeBlocks::bits_of(uint64_t block) {
  VSFS_ASSERT(block >= first_ && block < end_);
  auto it = bits_.find(group_of(block));
  VSFS_ASSERT(it != bits_.end());  // explicit
  return it->second;
}

void FreeBlocks::insert(Kind kind, uint64_t block) {
  Bits& b = bits_of(block);
  const uint64_t i = block % kGroupBlocks, bit = 1ull << (i % 64);
  VSFS_ASSERT(((b[0][i / 64] | b[1][i / 64]) & bit) == 0);
  b[kind][i / 64] |= bit;
  set_count(kind, group_of(block), count_[kind][group_of(block)] + 1);
}

void FreeBlocks::erase(Kind kind, uint64_t block) {
  Bits& b = bits_of(block);
  const uint64_t i = block % kGroupBlocks, bit = 1ull << (i % 64);
  VSFS_ASSERT((b[kind][i / 64] & bit) != 0);
  b[kind][i / 64] &= ~bit;
  set_count(kind, group_of(block), count_[kind][group_of(block)] - 1);
}

std::optional<uint64_t> FreeBlocks::first_in(Kind kind, uint64_t g, uint64_t from) const {
  const uint64_t begin = std::max(from, group_begin(g));
  if (count_[kind][g] == 0 || begin >= group_end(g)) return std::nullopt;
  auto it = bits_.find(g);
  if (it == bits_.end()) return begin;  // implicit: all formatted (count_ says kind is)
  const uint64_t base = g * kGroupBlocks;
  for (uint64_t i = begin - base; i < kWords * 64;) {
    const uint64_t word = it->second[kind][i / 64] >> (i % 64);
    if (word != 0) {
      const uint64_t block = base + i + std::countr_zero(word);
      return block < group_end(g) ? std::optional<uint64_t>(block) : std::nullopt;
    }
    i = (i / 64 + 1) * 64;
  }
  return std::nullopt;
}

std::optional<uint64_t> FreeBlocks::last_in(Kind kind, uint64_t g) const {
  if (count_[kind][g] == 0) return std::nullopt;
  auto it = bits_.find(g);
  if (it == bits_.end()) return group_end(g) - 1;
  for (uint64_t w = kWords; w-- > 0;) {
    const uint64_t word = it->second[kind][w];
    if (word != 0) return g * kGroupBlocks + w * 64 + 63 - std::countl_zero(word);
  }
  return std::nullopt;
}

std::optional<uint64_t> FreeBlocks::first(Kind kind, uint64_t from) const {
  if (from >= end_) return std::nullopt;
  uint64_t g = group_of(from);
  if (auto b = first_in(kind, g, from)) return b;
  // The next group that has any, from the per-group bits.
  for (++g; g < groups();) {
    const uint64_t word = has_[kind][g / 64] >> (g % 64);
    if (word == 0) {
      g = (g / 64 + 1) * 64;
      continue;
    }
    g += std::countr_zero(word);
    if (g >= groups()) break;
    return first_in(kind, g, 0);
  }
  return std::nullopt;
}

std::optional<uint64_t> FreeBlocks::last(Kind kind) const {
  for (uint64_t w = has_[kind].size(); w-- > 0;) {
    const uint64_t word = has_[kind][w];
    if (word != 0) return last_in(kind, w * 64 + 63 - std::countl_zero(word));
  }
  return std::nullopt;
}

uint64_t FreeBlocks::count_below(Kind kind, uint64_t end) const {
  uint64_t n = 0;
  for (auto b = first(kind); b && *b < end;) {
    const uint64_t g = group_of(*b);
    if (group_end(g) <= end) {
      n += count_[kind][g];  // the whole group is below
      b = first(kind, (g + 1) * kGroupBlocks);
    } else {
      ++n;
      b = first(kind, *b + 1);
    }
  }
  return n;
}

uint64_t FreeBlocks::memory_bytes() const {
  return 2 * (count_[0].capacity() * sizeof(uint16_t) + has_[0].capacity() * sizeof(uint64_t)) +
         bits_.size() * (sizeof(Bits) + 32);
}

}  // namespace vsfs::meta
