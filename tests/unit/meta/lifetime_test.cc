// Lifetime counters in the superblock (MetaStore): what a mount counts is added to what
// it found and stored by every superblock write (open, commit, checkpoint); the totals
// add up across reopens, survive a power cut as of the last superblock write without
// ever going backwards, count an unclean mount once, and a read-only open writes
// nothing.
#include <gtest/gtest.h>

#include <array>
#include <memory>

#include "device/sim_device.h"
#include "format/format.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

using format::LifetimeCounters;

std::unique_ptr<device::SimDevice> fresh_device() {
  device::SimOptions o;
  o.size_bytes = 64ull << 20;
  auto dev = std::make_unique<device::SimDevice>(o);
  auto made = mkfs(*dev, {});
  EXPECT_TRUE(made.ok()) << made.error().to_string();
  return dev;
}

std::unique_ptr<MetaStore> open_store(device::Device& dev, bool read_only = false,
                                      bool force = false) {
  MetaOptions o;
  o.read_only = read_only;
  o.force = force;
  auto r = MetaStore::open(dev, o);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// The primary superblock as it is on the device now.
format::Superblock on_device(const device::SimDevice& dev) {
  std::array<uint8_t, kGrainBytes> g{};
  dev.peek(0, g.data(), kGrainBytes);
  auto sb = format::decode_superblock(g);
  EXPECT_TRUE(sb.ok()) << sb.error().to_string();
  return sb.ok() ? *sb : format::Superblock{};
}

// Counts as the data path would, and takes a snapshot (a metadata change: the next
// commit has a transaction to write, carrying a superblock image).
void count_some(MetaStore& ms, uint64_t k, const std::string& snap) {
  std::lock_guard lock(ms.mu());
  LifetimeCounters& c = ms.lifetime_counts_locked();
  c.read_bytes += 1000 * k;
  c.write_bytes += 2000 * k;
  c.read_errors += k;
  c.write_errors += 2 * k;
  c.no_space_errors += k;
  auto s = ms.create_snapshot_locked(1, snap, 1);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
}

// Every counter but the clock-driven ones (mounted_seconds) and formatting.
void expect_counts(const LifetimeCounters& l, uint64_t k_sum, uint64_t snapshots,
                   uint64_t unclean) {
  EXPECT_EQ(l.read_bytes, 1000 * k_sum);
  EXPECT_EQ(l.write_bytes, 2000 * k_sum);
  EXPECT_EQ(l.read_errors, k_sum);
  EXPECT_EQ(l.write_errors, 2 * k_sum);
  EXPECT_EQ(l.no_space_errors, k_sum);
  EXPECT_EQ(l.snapshots_taken, snapshots);
  EXPECT_EQ(l.unclean_mounts, unclean);
}

// Three mounts, each closed cleanly: the stored totals are the sum of what each counted,
// and each mount's view starts from what the previous one stored.
TEST(Lifetime, CountersAddUpAcrossCleanReopens) {
  auto dev = fresh_device();
  EXPECT_EQ(on_device(*dev).lifetime, LifetimeCounters{}) << "mkfs writes zero counters";
  uint64_t k_sum = 0;
  for (uint64_t k = 1; k <= 3; ++k) {
    auto ms = open_store(*dev);
    ASSERT_TRUE(ms);
    {
      std::lock_guard lock(ms->mu());
      const LifetimeView v = ms->lifetime_locked();
      expect_counts(v.total, k_sum, k - 1, 0);
      expect_counts(v.this_mount, 0, 0, 0);
      EXPECT_EQ(v.stored, on_device(*dev).lifetime);
    }
    count_some(*ms, k, "s" + std::to_string(k));
    k_sum += k;
    {
      std::lock_guard lock(ms->mu());
      expect_counts(ms->lifetime_locked().this_mount, k, 1, 0);
      expect_counts(ms->lifetime_locked().total, k_sum, k, 0);
    }
    ASSERT_TRUE(ms->checkpoint(true).ok());
    ms.reset();
    const format::Superblock sb = on_device(*dev);
    expect_counts(sb.lifetime, k_sum, k, 0);
    EXPECT_EQ(sb.mount_count, k);
    EXPECT_EQ(sb.lifetime.snapshots_deleted, 0u);
  }
  // A deletion counts too.
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  {
    std::lock_guard lock(ms->mu());
    ASSERT_TRUE(ms->delete_snapshot_locked(1, "s2").ok());
  }
  ASSERT_TRUE(ms->checkpoint(true).ok());
  ms.reset();
  EXPECT_EQ(on_device(*dev).lifetime.snapshots_deleted, 1u);
  EXPECT_EQ(on_device(*dev).lifetime.snapshots_taken, 3u);
}

// Counts with no metadata change (in-place overwrites commit nothing) reach the
// superblock at the next checkpoint: it stores the newest totals, not those of the last
// commit.
TEST(Lifetime, CheckpointStoresCountsWithoutAMetadataChange) {
  auto dev = fresh_device();
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  auto commits = [&] {
    std::lock_guard lock(ms->mu());
    return ms->counters_locked().commits;
  };
  const uint64_t commits_before = commits();
  {
    std::lock_guard lock(ms->mu());
    ms->lifetime_counts_locked().write_bytes += 4096;
    EXPECT_FALSE(ms->has_changes_locked());
  }
  ASSERT_TRUE(ms->commit().ok());
  EXPECT_EQ(commits(), commits_before) << "nothing to commit, nothing written";
  EXPECT_EQ(on_device(*dev).lifetime.write_bytes, 0u);
  ASSERT_TRUE(ms->checkpoint(false).ok());
  EXPECT_EQ(on_device(*dev).lifetime.write_bytes, 4096u);
  {
    std::lock_guard lock(ms->mu());
    ms->lifetime_counts_locked().write_bytes += 4096;
  }
  ASSERT_TRUE(ms->checkpoint(true).ok());
  ms.reset();
  EXPECT_EQ(on_device(*dev).lifetime.write_bytes, 8192u);
}

// A power cut: the next mount finds what the last superblock write stored (here the
// image of the last committed transaction, replayed), never less than what the last
// checkpoint stored, and counts itself as an unclean mount. What was counted after the
// last write is lost.
TEST(Lifetime, PowerLossKeepsTheLastSuperblockWriteAndNeverGoesBack) {
  auto dev = fresh_device();
  {
    auto ms = open_store(*dev);
    ASSERT_TRUE(ms);
    count_some(*ms, 1, "a");
    ASSERT_TRUE(ms->checkpoint(true).ok());
  }
  const LifetimeCounters clean = on_device(*dev).lifetime;
  expect_counts(clean, 1, 1, 0);

  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  count_some(*ms, 2, "b");
  ASSERT_TRUE(ms->checkpoint(false).ok());  // home superblock: k = 1 + 2
  const LifetimeCounters checkpointed = on_device(*dev).lifetime;
  expect_counts(checkpointed, 3, 2, 0);
  count_some(*ms, 4, "c");
  ASSERT_TRUE(ms->commit().ok());  // journal only: k = 1 + 2 + 4
  LifetimeCounters committed;
  {
    std::lock_guard lock(ms->mu());
    committed = ms->lifetime_locked().stored;
  }
  expect_counts(committed, 7, 3, 0);
  EXPECT_EQ(on_device(*dev).lifetime, checkpointed) << "a commit wrote the home superblock";
  {
    // Counted, never written: lost with the power.
    std::lock_guard lock(ms->mu());
    ms->lifetime_counts_locked().write_bytes += 1ull << 40;
  }
  auto image = dev->power_loss(device::PowerLossMode::kDropAll, 1);
  ms.reset();  // the crashed mount's memory; its device is no longer looked at

  auto after = open_store(*image, false, /*force=*/true);  // marked mounted: it crashed
  ASSERT_TRUE(after);
  const format::Superblock sb = on_device(*image);
  expect_counts(sb.lifetime, 7, 3, 1);
  EXPECT_GE(sb.lifetime.mounted_seconds, committed.mounted_seconds);
  {
    std::lock_guard lock(after->mu());
    const LifetimeView v = after->lifetime_locked();
    EXPECT_EQ(v.this_mount.unclean_mounts, 1u);
    expect_counts(v.total, 7, 3, 1);
  }
  ASSERT_TRUE(after->checkpoint(true).ok());
  after.reset();
  // A clean mount after it is not unclean.
  auto again = open_store(*image);
  ASSERT_TRUE(again);
  ASSERT_TRUE(again->checkpoint(true).ok());
  again.reset();
  expect_counts(on_device(*image).lifetime, 7, 3, 1);
}

// Power cuts at many points of a mount that counts and commits: every mount after one
// finds totals at least those of the clean unmount before, and at most what the crashed
// mount had counted.
TEST(Lifetime, NeverBackwardsAtAnyPowerCut) {
  auto base = fresh_device();
  {
    auto ms = open_store(*base);
    ASSERT_TRUE(ms);
    count_some(*ms, 5, "base");
    ASSERT_TRUE(ms->checkpoint(true).ok());
  }
  const LifetimeCounters clean = on_device(*base).lifetime;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    auto dev = base->clone();
    auto ms = open_store(*dev);
    ASSERT_TRUE(ms);
    for (uint64_t i = 0; i < seed; ++i) {
      count_some(*ms, 1, "s" + std::to_string(i));
      ASSERT_TRUE((i % 3 == 2 ? ms->checkpoint(false) : ms->commit()).ok());
    }
    auto image = dev->power_loss(device::PowerLossMode::kRandom, seed);
    ms.reset();
    auto after = open_store(*image, false, true);
    ASSERT_TRUE(after) << "seed " << seed;
    const LifetimeCounters got = on_device(*image).lifetime;
    EXPECT_GE(got.write_bytes, clean.write_bytes) << "seed " << seed;
    EXPECT_GE(got.snapshots_taken, clean.snapshots_taken) << "seed " << seed;
    EXPECT_LE(got.write_bytes, clean.write_bytes + 2000 * seed) << "seed " << seed;
    EXPECT_EQ(got.unclean_mounts, 1u) << "seed " << seed;
    // The snapshot count matches the snapshots the recovered datastore holds.
    std::lock_guard lock(after->mu());
    EXPECT_EQ(got.snapshots_taken, after->snapshots_locked().size()) << "seed " << seed;
  }
}

// A read-only open writes nothing: not the counters, not mount_count; its own counts
// are shown but never stored.
TEST(Lifetime, ReadOnlyOpenDoesNotChangeThem) {
  auto dev = fresh_device();
  {
    auto ms = open_store(*dev);
    ASSERT_TRUE(ms);
    count_some(*ms, 3, "a");
    ASSERT_TRUE(ms->checkpoint(true).ok());
  }
  std::array<uint8_t, kGrainBytes> before{}, after{};
  dev->peek(0, before.data(), kGrainBytes);
  const uint64_t writes = dev->counters().ops[static_cast<int>(device::OpKind::kWrite)];
  {
    auto ro = open_store(*dev, /*read_only=*/true);
    ASSERT_TRUE(ro);
    std::lock_guard lock(ro->mu());
    ro->lifetime_counts_locked().read_bytes += 12345;
    const LifetimeView v = ro->lifetime_locked();
    EXPECT_EQ(v.this_mount.read_bytes, 12345u);
    EXPECT_EQ(v.this_mount.mounted_seconds, 0u) << "only read-write time counts";
    EXPECT_EQ(v.stored, on_device(*dev).lifetime);
  }
  {
    auto ro = open_store(*dev, true);
    ASSERT_TRUE(ro);
    ASSERT_TRUE(ro->checkpoint(true).ok());
  }
  dev->peek(0, after.data(), kGrainBytes);
  EXPECT_EQ(before, after);
  EXPECT_EQ(dev->counters().ops[static_cast<int>(device::OpKind::kWrite)], writes);
  expect_counts(on_device(*dev).lifetime, 3, 1, 0);
}

}  // namespace
}  // namespace vsfs::meta

namespace vsfs::meta {
namespace {

// A datastore left marked mounted (its daemon died) is refused before anything is
// written, the journal's replay included: the open that refuses it changes no byte, and
// only the forced open that follows replays (once).
TEST(MetaStoreOpen, AMarkedDatastoreIsRefusedBeforeItsJournalIsReplayed) {
  auto dev = fresh_device();
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  count_some(*ms, 1, "a");
  ASSERT_TRUE(ms->commit().ok());  // in the journal, not home yet
  auto image = dev->power_loss(device::PowerLossMode::kKeepAll, 1);
  ms.reset();
  const uint64_t writes = image->counters().ops[static_cast<int>(device::OpKind::kWrite)];
  MetaOptions o;
  auto refused = MetaStore::open(*image, o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorKind::kBusy, refused.error().kind) << refused.error().to_string();
  EXPECT_EQ(writes, image->counters().ops[static_cast<int>(device::OpKind::kWrite)])
      << "the refused open wrote";
  auto forced = open_store(*image, false, /*force=*/true);
  ASSERT_TRUE(forced);
  std::lock_guard lock(forced->mu());
  EXPECT_EQ(1u, forced->lifetime_locked().this_mount.unclean_mounts);
}

}  // namespace
}  // namespace vsfs::meta
