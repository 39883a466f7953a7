// Lifetime counters through the Datastore API: bytes the data path reads and writes, its
// failed IOs, snapshots and the formatter are counted into the superblock's totals,
// which add up across mounts while the per-mount counters start again at each one; a
// power cut keeps what the last superblock write stored and counts an unclean mount.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;

// Writes `bytes` of data into "f" (created when missing) and reads it back.
void write_and_read(Datastore& ds, uint64_t bytes, uint32_t seed) {
  auto f = ds.lookup(kRootIno, "f");
  if (!f.ok()) f = ds.create(kRootIno, "f", 0644, 0, 0);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  const auto data = pattern(bytes, seed);
  auto w = ds.write_sync(f->ino, 0, data.data(), data.size());
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  std::vector<uint8_t> back(bytes);
  auto r = ds.read_sync(f->ino, 0, back.size(), back.data());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(back, data);
}

// A mount of the image: the datastore owns its device, `raw` points at it.
std::unique_ptr<Datastore> mount(const SimDevice& image, SimDevice*& raw,
                                 OpenOptions o = quiet()) {
  auto dev = image.clone();
  raw = dev.get();
  return open_ds(std::move(dev), o);
}

TEST(DatastoreLifetime, TotalsAddUpOverThreeMountsPerMountCountersRestart) {
  std::unique_ptr<SimDevice> image = fresh_device();
  const uint64_t sizes[] = {100000, 300000, 50000};
  uint64_t sum = 0;
  for (int m = 0; m < 3; ++m) {
    SimDevice* raw = nullptr;
    auto ds = mount(*image, raw);
    ASSERT_TRUE(ds);
    DatastoreStats s = ds->stats();
    EXPECT_EQ(s.lifetime.total.write_bytes, sum) << "mount " << m;
    EXPECT_EQ(s.lifetime.stored.write_bytes, sum) << "mount " << m;
    EXPECT_EQ(s.lifetime.this_mount.write_bytes, 0u) << "mount " << m;
    write_and_read(*ds, sizes[m], m + 1);
    sum += sizes[m];
    s = ds->stats();
    EXPECT_EQ(s.write_bytes, sizes[m]) << "the per-mount counter starts at each mount";
    EXPECT_EQ(s.lifetime.this_mount.write_bytes, sizes[m]);
    EXPECT_EQ(s.lifetime.this_mount.read_bytes, sizes[m]);
    EXPECT_EQ(s.lifetime.total.write_bytes, sum);
    EXPECT_EQ(s.lifetime.total.read_bytes, sum);
    EXPECT_EQ(s.mount_count, static_cast<uint64_t>(m + 1));
    ASSERT_TRUE(ds->close().ok());
    image = raw->clone();
    ds.reset();
  }
  SimDevice* raw = nullptr;
  auto ds = mount(*image, raw);
  ASSERT_TRUE(ds);
  const DatastoreStats s = ds->stats();
  EXPECT_EQ(s.lifetime.total.write_bytes, sum);
  EXPECT_EQ(s.lifetime.total.read_bytes, sum);
  EXPECT_EQ(s.lifetime.total.unclean_mounts, 0u);
  EXPECT_EQ(s.write_bytes, 0u);
  ASSERT_TRUE(ds->close().ok());
}

// Failed data IOs count into the lifetime totals as into the per-mount health counters,
// and reach the superblock at the next superblock write.
TEST(DatastoreLifetime, FailedDataIosAreCounted) {
  std::unique_ptr<SimDevice> image = fresh_device();
  SimDevice* raw = nullptr;
  auto ds = mount(*image, raw);
  ASSERT_TRUE(ds);
  write_and_read(*ds, 65536, 1);
  auto f = ds->lookup(kRootIno, "f");
  ASSERT_TRUE(f.ok());
  std::vector<uint8_t> buf(8192);
  raw->fail_nth(device::OpKind::kRead, 1);
  EXPECT_FALSE(ds->read_sync(f->ino, 0, buf.size(), buf.data()).ok());
  raw->fail_nth(device::OpKind::kWrite, 1);
  EXPECT_FALSE(ds->write_sync(f->ino, 0, buf.data(), buf.size()).ok());
  const DatastoreStats s = ds->stats();
  EXPECT_EQ(s.device_read_errors, 1u);
  EXPECT_EQ(s.device_write_errors, 1u);
  EXPECT_EQ(s.lifetime.this_mount.read_errors, 1u);
  EXPECT_EQ(s.lifetime.this_mount.write_errors, 1u);
  EXPECT_EQ(s.lifetime.this_mount.no_space_errors, 0u) << "EIO is not ENOSPC";
  ASSERT_TRUE(ds->close().ok());
  image = raw->clone();
  ds.reset();
  ds = mount(*image, raw);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->stats().lifetime.total.read_errors, 1u);
  EXPECT_EQ(ds->stats().lifetime.total.write_errors, 1u);
  EXPECT_EQ(ds->stats().device_read_errors, 0u);
  ASSERT_TRUE(ds->close().ok());
}

// Snapshots taken and deleted through the facade, and a power cut: the mount after it
// finds what the last commit stored (here an fsync's), counts itself unclean, and its
// totals are not below what the clean unmount before stored.
TEST(DatastoreLifetime, PowerLossKeepsTheLastCommitAndCountsAnUncleanMount) {
  std::unique_ptr<SimDevice> image = fresh_device();
  SimDevice* raw = nullptr;
  auto ds = mount(*image, raw);
  ASSERT_TRUE(ds);
  write_and_read(*ds, 40000, 1);
  ASSERT_TRUE(ds->close().ok());
  image = raw->clone();
  ds.reset();

  // No background threads: nothing commits but the fsync below, so what the cut keeps
  // is exactly what that commit stored.
  OpenOptions stepped = manual_commits();
  stepped.start_background = false;
  ds = mount(*image, raw, stepped);
  ASSERT_TRUE(ds);
  const LifetimeCounts clean = ds->stats().lifetime.stored;
  EXPECT_EQ(clean.write_bytes, 40000u);
  const Ino snaps = make_ino(kSnapshotsDirView, kRootIno);
  ASSERT_TRUE(ds->mkdir(snaps, "one", 0755, 0, 0).ok());
  ASSERT_TRUE(ds->mkdir(snaps, "two", 0755, 0, 0).ok());
  ASSERT_TRUE(ds->rmdir(snaps, "one").ok());
  write_and_read(*ds, 70000, 2);
  auto f = ds->lookup(kRootIno, "f");
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  const LifetimeCounts stored = ds->stats().lifetime.stored;
  EXPECT_EQ(stored.write_bytes, 40000u + 70000u) << "the fsync's commit carries the totals";
  EXPECT_EQ(stored.snapshots_taken, 2u);
  EXPECT_EQ(stored.snapshots_deleted, 1u);
  // Counted after the last superblock write: lost with the power.
  write_and_read(*ds, 4096, 3);
  EXPECT_EQ(ds->stats().lifetime.total.write_bytes, 40000u + 70000u + 4096u);
  auto cut = raw->power_loss(device::PowerLossMode::kDropAll, 1);
  ds.reset();

  ds = open_after_power_loss(std::move(cut));
  ASSERT_TRUE(ds);
  const DatastoreStats s = ds->stats();
  EXPECT_EQ(s.lifetime.this_mount.unclean_mounts, 1u);
  EXPECT_EQ(s.lifetime.total.unclean_mounts, 1u);
  EXPECT_EQ(s.lifetime.total.write_bytes, stored.write_bytes);
  EXPECT_GE(s.lifetime.total.write_bytes, clean.write_bytes);
  EXPECT_GE(s.lifetime.total.read_bytes, clean.read_bytes);
  EXPECT_EQ(s.lifetime.total.snapshots_taken, 2u);
  EXPECT_EQ(s.lifetime.total.snapshots_deleted, 1u);
  EXPECT_GE(s.lifetime.total.mounted_seconds, clean.mounted_seconds);
  ASSERT_TRUE(ds->close().ok());
}

// The background formatter's bytes are counted: free a file's blocks, format them.
TEST(DatastoreLifetime, FormattedBytesAreCounted) {
  std::unique_ptr<SimDevice> image = fresh_device();
  SimDevice* raw = nullptr;
  OpenOptions o = quiet();
  o.start_background = false;
  auto ds = mount(*image, raw, o);
  ASSERT_TRUE(ds);
  write_and_read(*ds, 3 << 20, 1);
  ASSERT_TRUE(ds->unlink(kRootIno, "f").ok());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(ds->run_background_step(BackgroundStep::kRelease).ok());
    ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
  }
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(ds->run_background_step(BackgroundStep::kFormat).ok());
  const DatastoreStats s = ds->stats();
  EXPECT_GT(s.space.formatted_bytes_total, 0u);
  EXPECT_EQ(s.lifetime.this_mount.formatted_bytes, s.space.formatted_bytes_total);
  ASSERT_TRUE(ds->close().ok());
  image = raw->clone();
  ds.reset();
  ds = mount(*image, raw, o);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->stats().lifetime.total.formatted_bytes, s.space.formatted_bytes_total);
  ASSERT_TRUE(ds->close().ok());
}

// mounted_seconds counts read-write time only: turned read-only (remount,ro), the clock
// stops, and the switch's checkpoint stores the time so far; read-write again, it goes
// on. (Whole seconds: the test sleeps past them.)
TEST(DatastoreLifetime, ReadOnlySwitchStopsTheReadWriteClock) {
  std::unique_ptr<SimDevice> image = fresh_device();
  SimDevice* raw = nullptr;
  auto ds = mount(*image, raw);
  ASSERT_TRUE(ds);
  auto seconds = [&] { return ds->stats().lifetime.this_mount.mounted_seconds; };
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_GE(seconds(), 1u);
  ASSERT_TRUE(ds->set_read_only(true).ok());
  const uint64_t at_switch = seconds();
  EXPECT_EQ(ds->stats().lifetime.stored.mounted_seconds, at_switch)
      << "the switch's checkpoint did not store the read-write time";
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(seconds(), at_switch) << "the clock ran while read-only";
  ASSERT_TRUE(ds->set_read_only(false).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_GE(seconds(), at_switch + 1);
  ASSERT_TRUE(ds->close().ok());
  image = raw->clone();
  ds.reset();
  ds = mount(*image, raw);
  ASSERT_TRUE(ds);
  EXPECT_GE(ds->stats().lifetime.total.mounted_seconds, at_switch + 1);
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
