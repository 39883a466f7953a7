// Journal replay of transactions whose descs name homes no metadata block can have.
// Such a desc ends the log: replay neither fails on a write the device refuses nor
// overwrites the ring it is reading (found by the journal replay fuzzer).
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "device/sim_device.h"
#include "format/format.h"
#include "meta/journal.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

struct Ring {
  std::unique_ptr<device::SimDevice> dev;
  format::Superblock sb;
};

Ring small_datastore() {
  Ring r;
  device::SimOptions o;
  o.size_bytes = format::kMinDeviceBytes;
  r.dev = std::make_unique<device::SimDevice>(o);
  auto made = mkfs(*r.dev, MkfsOptions{.journal_bytes = 4ull << 20, .force = true, .progress = {}});
  EXPECT_TRUE(made.ok()) << made.error().to_string();
  std::array<uint8_t, kGrainBytes> g{};
  r.dev->peek(0, g.data(), kGrainBytes);
  auto sb = format::decode_superblock(g);
  EXPECT_TRUE(sb.ok()) << sb.error().to_string();
  r.sb = *sb;
  return r;
}

JournalImage image_with(uint64_t home, uint8_t fill) {
  JournalImage img;
  img.home = home;
  img.data = AlignedBuffer(kGrainBytes, false);
  std::memset(img.data.data(), fill, kGrainBytes);
  return img;
}

// Writes one good transaction, then one with `bad_home`; replay applies the first only.
void expect_log_ends_at(uint64_t bad_home) {
  Ring r = small_datastore();
  const uint64_t good_home = r.sb.first_data_block * kGrainsPerBlock + 5;
  Journal j(*r.dev, r.sb.journal_start_grain, r.sb.journal_grains, 0, 1);
  std::vector<JournalImage> first;
  first.push_back(image_with(good_home, 0x11));
  ASSERT_TRUE(j.write_transaction(first).ok());
  std::vector<JournalImage> second;
  second.push_back(image_with(good_home, 0x22));
  second.push_back(image_with(bad_home, 0x33));
  ASSERT_TRUE(j.write_transaction(second).ok());

  auto before = r.dev->clone();
  auto once = Journal::replay(*r.dev, r.sb.journal_start_grain, r.sb.journal_grains, 0, 1, true);
  ASSERT_TRUE(once.ok()) << once.error().to_string();
  EXPECT_EQ(once->transactions, 1u);
  EXPECT_EQ(once->end_seq, 2u);
  std::array<uint8_t, kGrainBytes> g{};
  r.dev->peek(good_home * kGrainBytes, g.data(), kGrainBytes);
  EXPECT_EQ(g[0], 0x11);
  // The ring is as it was: replaying again gives the same.
  for (uint64_t i = 0; i < 8; ++i) {
    std::array<uint8_t, kGrainBytes> a{}, b{};
    const uint64_t off = (r.sb.journal_start_grain + i) * kGrainBytes;
    before->peek(off, a.data(), kGrainBytes);
    r.dev->peek(off, b.data(), kGrainBytes);
    EXPECT_EQ(a, b) << "ring grain " << i;
  }
  auto twice = Journal::replay(*r.dev, r.sb.journal_start_grain, r.sb.journal_grains, 0, 1, true);
  ASSERT_TRUE(twice.ok()) << twice.error().to_string();
  EXPECT_EQ(twice->transactions, 1u);
}

TEST(JournalReplay, HomePastTheDeviceEndsTheLog) {
  expect_log_ends_at(format::kMinDeviceBytes / kGrainBytes);
}

TEST(JournalReplay, HomeWhoseOffsetOverflowsEndsTheLog) {
  // home * 4096 wraps to byte 8192 (grain 2 of block 0).
  expect_log_ends_at((1ull << 52) + 2);
}

TEST(JournalReplay, HomeInsideTheRingEndsTheLog) {
  // The grain where the second transaction's desc was written.
  expect_log_ends_at(small_datastore().sb.journal_start_grain + 3);
}

TEST(JournalReplay, HomeInBlockZeroOtherThanTheSuperblockEndsTheLog) {
  expect_log_ends_at(format::kSuperblockCopyGrain);
}

}  // namespace
}  // namespace vsfs::meta
