// Datastore::set_read_only (a remount read-only and back): once it returns, every change
// is refused with EROFS and the device no longer changes, also with writes in flight and
// background release and formatting pending; what completed before it is durable without
// a replay; read-write again resumes writes and background work. A datastore opened
// read-only cannot turn read-write.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;

uint64_t device_changes(const SimDevice& dev) {
  const auto c = dev.counters();
  uint64_t n = 0;
  for (auto k : {device::OpKind::kWrite, device::OpKind::kFlush, device::OpKind::kDiscard,
                 device::OpKind::kWriteZeroes}) {
    n += c.ops[static_cast<int>(k)];
  }
  return n;
}

TEST(ReadOnlySwitch, RefusesChangesAndLeavesTheDeviceAlone) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  OpenOptions o = quiet();
  o.format_rate_mib_s = 4;  // slow: blocks stay to be formatted while it is read-only
  auto ds = open_ds(std::move(dev), o);
  ASSERT_TRUE(ds);
  auto keep = ds->create(kRootIno, "keep", 0644, 0, 0);
  auto drop = ds->create(kRootIno, "drop", 0644, 0, 0);
  ASSERT_TRUE(keep.ok() && drop.ok());
  const auto data = pattern(4 << 20, 3);
  ASSERT_TRUE(ds->write_sync(keep->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(ds->write_sync(drop->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(ds->fsync_sync(drop->ino).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "drop").ok());  // release and formatting to come
  const auto tail = pattern(8192, 4);
  ASSERT_TRUE(ds->write_sync(keep->ino, data.size(), tail.data(), tail.size()).ok());

  ASSERT_TRUE(ds->set_read_only(true).ok());
  EXPECT_TRUE(ds->stats().read_only);
  const uint64_t changes = device_changes(*raw);
  auto w = ds->write_sync(keep->ino, 0, tail.data(), tail.size());
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().errno_value, EROFS);
  auto c = ds->create(kRootIno, "new", 0644, 0, 0);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().errno_value, EROFS);
  auto t = ds->truncate_sync(keep->ino, 0);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().errno_value, EROFS);
  EXPECT_EQ(ds->punch_hole_sync(keep->ino, 0, 4096).error().errno_value, EROFS);
  EXPECT_EQ(ds->unlink(kRootIno, "keep").error().errno_value, EROFS);
  EXPECT_EQ(ds->mkdir(make_ino(kSnapshotsDirView, kRootIno), "s", 0755, 0, 0).error().errno_value,
            EROFS);
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(ds->read_sync(keep->ino, 0, back.size(), back.data()).ok());
  EXPECT_TRUE(back == data);
  EXPECT_TRUE(ds->fsync_sync(keep->ino).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(700));  // a few background rounds
  EXPECT_EQ(device_changes(*raw), changes) << "the device changed while read-only";
  EXPECT_GT(ds->stats().space.to_format_blocks + ds->stats().release_pending, 0u)
      << "nothing was left for the background work to do while read-only";

  // Everything before the switch is on the device, with nothing to replay: an image
  // that drops every unflushed write has it all.
  auto image = raw->power_loss(device::PowerLossMode::kDropAll, 1);
  {
    auto seen = open_after_power_loss(std::move(image));
    ASSERT_TRUE(seen);
    std::vector<uint8_t> got(tail.size());
    ASSERT_TRUE(seen->read_sync(keep->ino, data.size(), got.size(), got.data()).ok());
    EXPECT_TRUE(got == tail);
    EXPECT_FALSE(seen->lookup(kRootIno, "drop").ok());
    ASSERT_TRUE(seen->close().ok());
  }

  ASSERT_TRUE(ds->set_read_only(false).ok());
  EXPECT_FALSE(ds->stats().read_only);
  ASSERT_TRUE(ds->write_sync(keep->ino, 0, tail.data(), tail.size()).ok());
  ASSERT_TRUE(ds->create(kRootIno, "new", 0644, 0, 0).ok());
  for (int i = 0; i < 300 && device_changes(*raw) == changes; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(device_changes(*raw), changes);
  ASSERT_TRUE(ds->close().ok());
}

// Writes in flight when the switch begins either complete before it returns or fail
// with EROFS; none changes the device afterwards, and each one answered ok is durable.
TEST(ReadOnlySwitch, WritesInFlightEndBeforeItReturns) {
  auto dev = slow_device(5000);
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  constexpr int kWrites = 96;
  std::vector<std::vector<uint8_t>> blocks;
  for (int i = 0; i < kWrites; ++i) blocks.push_back(pattern(16384, 100 + i));
  std::vector<std::atomic<int>> result(kWrites);  // 0 pending, 1 ok, 2 EROFS, 3 other
  for (auto& r : result) r = 0;
  std::vector<iovec> iov(kWrites);
  // Writes 0..63 go in while the switch begins (after 32); 64..95 after it returned.
  std::atomic<int> submitted{0};
  std::atomic<bool> switched{false};
  std::thread writer([&] {
    for (int i = 0; i < kWrites; ++i) {
      if (i == 64) {
        while (!switched) std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      iov[i] = iovec{blocks[i].data(), blocks[i].size()};
      ds->writev(f->ino, uint64_t(i) * (1 << 20), &iov[i], 1, [&, i](Result<uint64_t> r) {
        result[i] = r.ok() ? 1 : (r.error().errno_value == EROFS ? 2 : 3);
      });
      submitted = i + 1;
      if (i % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  while (submitted < 32) std::this_thread::sleep_for(std::chrono::microseconds(50));
  ASSERT_TRUE(ds->set_read_only(true).ok());
  switched = true;
  const uint64_t changes = device_changes(*raw);
  writer.join();
  for (int i = 0; i < 2000; ++i) {
    bool all = true;
    for (auto& r : result) all &= r != 0;
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  int refused = 0;
  for (auto& r : result) {
    ASSERT_NE(r, 0) << "a write was never answered";
    ASSERT_NE(r, 3) << "a write failed with something else than EROFS";
    refused += r == 2;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(device_changes(*raw), changes) << "a write changed the device after the switch";
  EXPECT_GE(refused, 32) << "writes after the switch were not refused";

  auto image = raw->power_loss(device::PowerLossMode::kDropAll, 2);
  auto seen = open_after_power_loss(std::move(image));
  ASSERT_TRUE(seen);
  for (int i = 0; i < kWrites; ++i) {
    if (result[i] != 1) continue;
    std::vector<uint8_t> got(blocks[i].size());
    ASSERT_TRUE(seen->read_sync(f->ino, uint64_t(i) * (1 << 20), got.size(), got.data()).ok());
    EXPECT_TRUE(got == blocks[i]) << "write " << i << " answered ok was lost";
  }
  ASSERT_TRUE(seen->close().ok());
  ASSERT_TRUE(ds->close().ok());
}

TEST(ReadOnlySwitch, OpenedReadOnlyStaysReadOnly) {
  auto dev = fresh_device();
  OpenOptions o = quiet();
  o.read_only = true;
  o.mark_mounted = false;
  auto ds = open_ds(std::move(dev), o);
  ASSERT_TRUE(ds);
  EXPECT_TRUE(ds->set_read_only(true).ok());
  auto r = ds->set_read_only(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, EROFS);
  EXPECT_NE(r.error().message.find("opened read-only"), std::string::npos) << r.error().message;
  ASSERT_TRUE(ds->close().ok());
}

// A disk unlinked while open and closed while read-only is freed only once the datastore
// is read-write again: freeing it would change the device.
TEST(ReadOnlySwitch, LastCloseOfAnUnlinkedDiskWaitsForReadWrite) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  const auto data = pattern(2 << 20, 9);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(ds->open_ref(f->ino).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "f").ok());
  ASSERT_TRUE(ds->set_read_only(true).ok());
  const uint64_t changes = device_changes(*raw);
  const uint64_t inodes = ds->stats().space.inodes;
  ds->release_ref(f->ino);
  EXPECT_TRUE(ds->fsync_sync(kRootIno).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(device_changes(*raw), changes) << "freeing the disk changed the device";
  EXPECT_EQ(ds->stats().space.inodes, inodes);
  ASSERT_TRUE(ds->set_read_only(false).ok());
  EXPECT_EQ(ds->stats().space.inodes, inodes - 1) << "the held inode was not freed";
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
