// The grain mapper: copy-on-write of shared map nodes and grains, reference counts, the
// in-place rule, and the journal (replay, torn commit, idempotence).
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstring>

#include "device/sim_device.h"
#include "meta/journal.h"
#include "meta/meta_store.h"
#include "util/crc32c.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

using device::SimDevice;
using format::SlotState;

std::unique_ptr<SimDevice> fresh(uint64_t size = 128ull << 20) {
  device::SimOptions o;
  o.size_bytes = size;
  auto dev = std::make_unique<SimDevice>(o);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  return dev;
}

struct Opened {
  std::unique_ptr<SimDevice> dev;
  std::unique_ptr<MetaStore> ms;
};

Opened open_meta() {
  Opened o;
  o.dev = fresh();
  auto r = MetaStore::open(*o.dev, MetaOptions{});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  o.ms = std::move(r).value();
  return o;
}

// Maps file grain `fg` of `ino` to a fresh data grain, as a redirected write does.
uint64_t map_new(MetaStore& ms, uint64_t ino, uint64_t fg, uint64_t& hint) {
  auto g = ms.reserve_data_grain_locked(hint);
  EXPECT_TRUE(g.ok());
  EXPECT_TRUE(ms.map_install_locked(ino, fg, *g).ok());
  return *g;
}

TEST(Map, InstallLookupAndRefcounts) {
  auto o = open_meta();
  auto& ms = *o.ms;
  std::lock_guard lock(ms.mu());
  auto ino = ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  ASSERT_TRUE(ino.ok());
  uint64_t hint = 0;
  const uint64_t g0 = map_new(ms, *ino, 0, hint);
  const uint64_t g1 = map_new(ms, *ino, 1, hint);
  const uint64_t far = map_new(ms, *ino, 5'000'000, hint);  // grows the tree to 3 levels
  EXPECT_EQ(g1, g0 + 1);  // contiguous in the disk's current block
  auto l = ms.map_lookup_locked(*ino, 1);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->state, SlotState::kMapped);
  EXPECT_EQ(l->grain, g1);
  EXPECT_TRUE(l->exclusive);
  EXPECT_EQ(l->stamp, ms.generation_locked());
  EXPECT_EQ(ms.map_lookup_locked(*ino, 2)->state, SlotState::kUnmapped);
  EXPECT_EQ(ms.map_lookup_locked(*ino, 5'000'000)->grain, far);
  EXPECT_EQ(*ms.refcount_locked(g0), 1);
  // Overwriting a slot releases the old grain (quarantined until commit).
  const uint64_t g0b = map_new(ms, *ino, 0, hint);
  EXPECT_NE(g0b, g0);
  EXPECT_EQ(*ms.refcount_locked(g0), 0);
  EXPECT_EQ((*ms.inode_locked(*ino))->allocated_grains, 3u);
}

TEST(Map, CloneSharesThenCopiesOnWrite) {
  auto o = open_meta();
  auto& ms = *o.ms;
  std::lock_guard lock(ms.mu());
  const uint64_t a = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  const uint64_t b = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  uint64_t hint = 0;
  std::vector<uint64_t> grains;
  for (uint64_t fg = 0; fg < 600; ++fg) grains.push_back(map_new(ms, a, fg, hint));
  const uint64_t root = (*ms.inode_locked(a))->map_root;
  const uint64_t used_before = ms.space_locked().used_grains;
  ASSERT_TRUE(ms.map_clone_locked(a, 0, b).ok());
  // O(1): one more reference on the root, no new grains.
  EXPECT_EQ((*ms.inode_locked(b))->map_root, root);
  EXPECT_EQ(*ms.refcount_locked(root), 2);
  EXPECT_EQ(ms.space_locked().used_grains, used_before);
  // Both sides see the data as shared: no in-place writes.
  EXPECT_FALSE(ms.map_lookup_locked(a, 7)->exclusive);
  EXPECT_FALSE(ms.map_lookup_locked(b, 7)->exclusive);
  // A write to b copies the root and the one leaf on its path; a keeps everything.
  const uint64_t nb = map_new(ms, b, 7, hint);
  EXPECT_NE((*ms.inode_locked(b))->map_root, root);
  EXPECT_EQ(*ms.refcount_locked(root), 1);
  EXPECT_EQ(ms.map_lookup_locked(a, 7)->grain, grains[7]);
  EXPECT_EQ(ms.map_lookup_locked(b, 7)->grain, nb);
  EXPECT_EQ(ms.map_lookup_locked(b, 8)->grain, grains[8]);
  EXPECT_EQ(*ms.refcount_locked(grains[7]), 1);  // b's copy of the leaf let go of it
  EXPECT_EQ(*ms.refcount_locked(grains[8]), 2);  // still shared
  EXPECT_EQ(*ms.refcount_locked(grains[300]), 1);  // another leaf: its node is shared, not the grain
  // Unmapping in b never touches a's grains.
  ASSERT_TRUE(ms.map_unmap_range_locked(b, 0, 600).ok());
  EXPECT_EQ(ms.map_lookup_locked(a, 8)->grain, grains[8]);
  EXPECT_EQ(ms.map_lookup_locked(b, 8)->state, SlotState::kZero);
  EXPECT_EQ(*ms.refcount_locked(grains[8]), 1);
}

TEST(Map, SeekSkipsHolesAndZeroSubtrees) {
  auto o = open_meta();
  auto& ms = *o.ms;
  std::lock_guard lock(ms.mu());
  const uint64_t a = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  uint64_t hint = 0;
  map_new(ms, a, 10, hint);
  map_new(ms, a, 3'000'000, hint);
  EXPECT_EQ(*ms.map_seek_locked(a, 0, 1ull << 30, true), 10u);
  EXPECT_EQ(*ms.map_seek_locked(a, 10, 1ull << 30, false), 11u);
  EXPECT_EQ(*ms.map_seek_locked(a, 11, 1ull << 30, true), 3'000'000u);
  EXPECT_EQ(*ms.map_seek_locked(a, 3'000'001, 1ull << 30, true), 1ull << 30);
  ASSERT_TRUE(ms.map_unmap_range_locked(a, 0, 2'000'000).ok());
  EXPECT_EQ(*ms.map_seek_locked(a, 0, 1ull << 30, true), 3'000'000u);
}

TEST(Journal, ReplayAppliesCommittedAndIgnoresTornCommit) {
  auto dev = fresh();
  auto sb = read_superblock(*dev);
  ASSERT_TRUE(sb.ok());
  Journal j(*dev, sb->journal_start_grain, sb->journal_grains, sb->journal_tail_grain,
            sb->journal_tail_seq);
  const uint64_t home = sb->first_data_block * kGrainsPerBlock + 100;
  auto image = [&](uint8_t fill) {
    JournalImage img;
    img.home = home;
    img.data = AlignedBuffer(kGrainBytes);
    std::memset(img.data.data(), fill, kGrainBytes);
    return img;
  };
  std::vector<JournalImage> t1;
  t1.push_back(image(0x11));
  ASSERT_TRUE(j.write_transaction(t1).ok());
  std::vector<JournalImage> t2;
  t2.push_back(image(0x22));
  ASSERT_TRUE(j.write_transaction(t2).ok());
  // Tear the second transaction's commit record.
  const uint64_t commit2 = sb->journal_start_grain + j.head_grain() - 1;
  uint8_t junk[512];
  std::memset(junk, 0xee, sizeof junk);
  dev->poke(commit2 * kGrainBytes + 1024, junk, sizeof junk);

  auto r = Journal::replay(*dev, sb->journal_start_grain, sb->journal_grains,
                           sb->journal_tail_grain, sb->journal_tail_seq, true);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->transactions, 1u);
  uint8_t got[kGrainBytes];
  dev->peek(home * kGrainBytes, got, kGrainBytes);
  EXPECT_EQ(got[0], 0x11);
  EXPECT_EQ(got[kGrainBytes - 1], 0x11);
  // Replaying again gives the same result.
  auto again = Journal::replay(*dev, sb->journal_start_grain, sb->journal_grains,
                               sb->journal_tail_grain, sb->journal_tail_seq, true);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->transactions, 1u);
  EXPECT_EQ(again->end_grain, r->end_grain);
  dev->peek(home * kGrainBytes, got, kGrainBytes);
  EXPECT_EQ(got[100], 0x11);
}

TEST(Journal, WrapsAroundTheRing) {
  auto dev = fresh();
  auto sb = read_superblock(*dev);
  ASSERT_TRUE(sb.ok());
  const uint64_t ring = sb->journal_grains;
  // Start near the end of the ring so the second transaction must wrap to 0.
  const uint64_t tail = ring - 4;
  Journal j(*dev, sb->journal_start_grain, ring, tail, 50);
  const uint64_t home = sb->first_data_block * kGrainsPerBlock + 7;
  std::vector<JournalImage> t;
  for (int k = 0; k < 2; ++k) {
    JournalImage img;
    img.home = home + k;
    img.data = AlignedBuffer(kGrainBytes);
    std::memset(img.data.data(), 0x40 + k, kGrainBytes);
    t.push_back(std::move(img));
  }
  ASSERT_TRUE(j.write_transaction(t).ok());  // 4 grains: desc, 2 images, commit
  EXPECT_EQ(j.head_grain(), 0u);  // ended at the ring's end: the head is offset 0
  j.add_pending(t);  // takes the images: t is empty again
  JournalImage img;
  img.home = home + 5;
  img.data = AlignedBuffer(kGrainBytes);
  std::memset(img.data.data(), 0x77, kGrainBytes);
  t.push_back(std::move(img));
  ASSERT_TRUE(j.write_transaction(t).ok());
  EXPECT_EQ(j.head_grain(), 3u);
  auto r = Journal::replay(*dev, sb->journal_start_grain, ring, tail, 50, true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->transactions, 2u);
  EXPECT_EQ(r->end_seq, 52u);
  uint8_t got[16];
  dev->peek((home + 5) * kGrainBytes, got, sizeof got);
  EXPECT_EQ(got[0], 0x77);
}

}  // namespace
}  // namespace vsfs::meta
