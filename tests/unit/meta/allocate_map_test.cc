// Allocated slots (fallocate) in the grain mapper: lookups, the claim by a write,
// sharing through clones, release by unmapping, changed-block queries, and the incompat
// bit in the superblock.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "device/sim_device.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

using device::SimDevice;
using format::SlotState;

struct Opened {
  std::unique_ptr<SimDevice> dev;
  std::unique_ptr<MetaStore> ms;
};

Opened open_meta() {
  Opened o;
  device::SimOptions so;
  so.size_bytes = 128ull << 20;
  o.dev = std::make_unique<SimDevice>(so);
  EXPECT_TRUE(mkfs(*o.dev, {}).ok());
  auto r = MetaStore::open(*o.dev, MetaOptions{});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  o.ms = std::move(r).value();
  return o;
}

TEST(AllocateMap, SlotsHoldPrivateGrainsUntilClaimed) {
  auto o = open_meta();
  auto& ms = *o.ms;
  std::lock_guard lock(ms.mu());
  const uint64_t a = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  uint64_t hint = 0;
  EXPECT_EQ(ms.superblock_locked().incompat & format::kIncompatAllocated, 0u);
  const uint64_t used0 = ms.space_locked().used_grains;
  auto n = ms.map_allocate_range_locked(a, 0, 300, hint);  // two leaves
  ASSERT_TRUE(n.ok()) << n.error().to_string();
  EXPECT_EQ(*n, 300u);
  EXPECT_NE(ms.superblock_locked().incompat & format::kIncompatAllocated, 0u);
  EXPECT_EQ((*ms.inode_locked(a))->allocated_grains, 300u);
  EXPECT_EQ(*ms.map_count_held_locked(a, 0, 1000), 300u);
  EXPECT_EQ(*ms.map_count_held_locked(a, 250, 10), 10u);
  // 300 data grains, two leaves and the interior root above them.
  EXPECT_EQ(ms.space_locked().used_grains - used0, 303u);
  auto l = ms.map_lookup_locked(a, 7);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->state, SlotState::kAllocated);
  EXPECT_TRUE(l->exclusive);
  EXPECT_EQ(*ms.refcount_locked(l->grain), 1);
  // Allocated grains are holes for SEEK_DATA.
  EXPECT_EQ(*ms.map_seek_locked(a, 0, 300, /*data=*/true), 300u);
  EXPECT_EQ(*ms.map_seek_locked(a, 0, 300, /*data=*/false), 0u);
  // Again over the same range: nothing new.
  EXPECT_EQ(*ms.map_allocate_range_locked(a, 0, 300, hint), 0u);
  // A write in place claims the slot: mapped, same grain, same count.
  ASSERT_TRUE(ms.map_claim_allocated_locked(a, 7, l->grain).ok());
  EXPECT_EQ(ms.map_lookup_locked(a, 7)->state, SlotState::kMapped);
  EXPECT_EQ(ms.map_lookup_locked(a, 7)->grain, l->grain);
  EXPECT_EQ((*ms.inode_locked(a))->allocated_grains, 300u);
  EXPECT_EQ(*ms.map_seek_locked(a, 0, 300, /*data=*/true), 7u);
  // Claiming a grain the slot does not hold is damage, not a silent change.
  EXPECT_FALSE(ms.map_claim_allocated_locked(a, 8, l->grain).ok());
}

TEST(AllocateMap, ClonesShareAndUnmapReleases) {
  auto o = open_meta();
  auto& ms = *o.ms;
  std::lock_guard lock(ms.mu());
  const uint64_t a = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  const uint64_t b = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  uint64_t hint = 0;
  ASSERT_TRUE(ms.map_allocate_range_locked(a, 0, 100, hint).ok());
  const uint64_t g = ms.map_lookup_locked(a, 3)->grain;
  ASSERT_TRUE(ms.map_clone_locked(a, 0, b).ok());
  EXPECT_FALSE(ms.map_lookup_locked(a, 3)->exclusive);
  EXPECT_EQ((*ms.inode_locked(b))->allocated_grains, 100u);
  // b lets go of its share: its copy of the leaf took references on every grain.
  ASSERT_TRUE(ms.map_unmap_range_locked(b, 0, 100).ok());
  EXPECT_EQ(*ms.refcount_locked(g), 1);
  EXPECT_EQ(ms.map_lookup_locked(b, 3)->state, SlotState::kZero);
  EXPECT_EQ((*ms.inode_locked(b))->allocated_grains, 0u);
  EXPECT_EQ(ms.map_lookup_locked(a, 3)->state, SlotState::kAllocated);
  // a's own unmap frees the grain.
  const uint64_t used = ms.space_locked().used_grains;
  ASSERT_TRUE(ms.map_unmap_range_locked(a, 0, 50).ok());
  EXPECT_EQ(*ms.refcount_locked(g), 0);
  EXPECT_EQ(used - ms.space_locked().used_grains, 50u);
  EXPECT_EQ((*ms.inode_locked(a))->allocated_grains, 50u);
}

TEST(AllocateMap, ChangedBlocksListAnAllocationAsZeros) {
  auto o = open_meta();
  auto& ms = *o.ms;
  std::lock_guard lock(ms.mu());
  const uint64_t a = *ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  uint64_t hint = 0;
  auto g = ms.reserve_data_grain_locked(hint);
  ASSERT_TRUE(ms.map_install_locked(a, 0, *g).ok());
  (*ms.inode_for_update_locked(a))->size_bytes = 100 * kGrainBytes;
  const uint64_t before = ms.generation_locked();
  auto snap = ms.create_snapshot_locked(1, "base", 1);
  ASSERT_TRUE(snap.ok()) << snap.error().to_string();
  ASSERT_TRUE(ms.map_allocate_range_locked(a, 10, 20, hint).ok());
  auto ext = ms.changed_extents_locked(a, 0, before, (*ms.inode_locked(a))->ino + 1);
  ASSERT_TRUE(ext.ok());
  ASSERT_EQ(ext->size(), 1u);
  EXPECT_EQ((*ext)[0].offset_bytes, 10 * kGrainBytes);
  EXPECT_EQ((*ext)[0].length_bytes, 20 * kGrainBytes);
  EXPECT_FALSE((*ext)[0].data);
  // A full listing (no backup point) lists data only: allocated grains read zeros.
  auto full = ms.changed_extents_locked(a, 0, std::nullopt, 0);
  ASSERT_TRUE(full.ok());
  ASSERT_EQ(full->size(), 1u);
  EXPECT_EQ((*full)[0].offset_bytes, 0u);
  EXPECT_EQ((*full)[0].length_bytes, kGrainBytes);
}

}  // namespace
}  // namespace vsfs::meta
