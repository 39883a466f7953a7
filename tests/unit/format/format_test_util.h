// Helpers shared by the format tests: grain buffers, valid sample structures, byte
// pokes that re-seal the block (so a test reaches the field check it means, past the
// crc), and an assertion on an error's kind and message.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string_view>

#include "format/format.h"
#include "util/endian.h"

namespace vsfs::format::testing {

using Buf = std::array<uint8_t, kGrainBytes>;

// A superblock whose geometry is that of compute_layout() for a 1 GiB device.
inline Superblock sample_superblock() {
  auto layout = compute_layout(1ull << 30);
  EXPECT_TRUE(layout.ok());
  Superblock sb;
  sb.compat = 0;
  sb.ro_compat = 0;
  sb.incompat = 0;
  for (size_t i = 0; i < sb.uuid.size(); ++i) sb.uuid[i] = static_cast<uint8_t>(0xa0 + i);
  sb.device_bytes = 1ull << 30;
  sb.total_blocks = layout->total_blocks;
  sb.journal_start_grain = layout->journal_start_grain;
  sb.journal_grains = layout->journal_grains;
  sb.block_table_start_grain = layout->block_table_start_grain;
  sb.block_table_grains = layout->block_table_grains;
  sb.refcount_start_grain = layout->refcount_start_grain;
  sb.refcount_grains = layout->refcount_grains;
  sb.first_data_block = layout->first_data_block;
  sb.inode_root = layout->first_data_block * kGrainsPerBlock + 3;
  sb.inode_height = 2;
  sb.next_ino = 1234;
  sb.generation = 77;
  sb.journal_tail_grain = 100;
  sb.journal_tail_seq = 9001;
  sb.release_list = layout->first_data_block * kGrainsPerBlock + 9;
  sb.state = kStateClean;
  sb.mount_count = 12;
  sb.mkfs_time_ns = 1'700'000'000'123'456'789ull;
  sb.snapshot_root = 0;
  return sb;
}

// Lifetime counters with a distinct value in every field (a swapped pair shows).
inline LifetimeCounters sample_lifetime() {
  LifetimeCounters l;
  l.read_bytes = 0x0101'0000'0000'1001ull;
  l.write_bytes = 0x0202'0000'0000'2002ull;
  l.read_errors = 3;
  l.write_errors = 4;
  l.no_space_errors = 5;
  l.unclean_mounts = 6;
  l.snapshots_taken = 7;
  l.snapshots_deleted = 8;
  l.formatted_bytes = 9ull << 20;
  l.mounted_seconds = 86400 * 365;
  return l;
}

// Overwrites a little-endian value at `off` and re-seals the block.
template <typename T>
void poke(Buf& buf, size_t off, T value) {
  store_le<T>(buf.data() + off, value);
  seal(buf);
}

// The error is of `kind` and its message contains every one of `needles`.
template <typename T>
::testing::AssertionResult fails_with(const Result<T>& r, ErrorKind kind,
                                      std::initializer_list<std::string_view> needles) {
  if (r.ok()) return ::testing::AssertionFailure() << "decoded without error";
  const Error& e = r.error();
  if (e.kind != kind) {
    return ::testing::AssertionFailure()
           << "kind " << error_kind_name(e.kind) << ", expected " << error_kind_name(kind)
           << ": " << e.message;
  }
  if (kind == ErrorKind::kCorruption && e.errno_value != EUCLEAN) {
    return ::testing::AssertionFailure() << "errno " << e.errno_value << ": " << e.message;
  }
  for (std::string_view n : needles) {
    if (e.message.find(n) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message \"" << e.message << "\" does not mention \"" << n << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
::testing::AssertionResult corrupt(const Result<T>& r,
                                   std::initializer_list<std::string_view> needles) {
  return fails_with(r, ErrorKind::kCorruption, needles);
}

}  // namespace vsfs::format::testing
