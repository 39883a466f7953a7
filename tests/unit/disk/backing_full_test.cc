// A datastore in a sparse file whose filesystem fills up (SimOptions::backing_bytes):
// writes get ENOSPC, and nothing else breaks. Every metadata block, the journal and the
// tables have their backing storage before they are written, so namespace changes
// (above all the unlink that frees space), commits, checkpoints, a clean or crashed
// close and the next open keep working while the host has no room at all.
#include <gtest/gtest.h>

#include <random>

#include "device/sim_device.h"
#include "support/borrowed_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;
using testing::BorrowedDevice;

constexpr uint64_t kDeviceBytes = 512ull << 20;

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Writes 1 MiB pieces of `f` from `offset` until one fails; returns the bytes written
// and the failure.
std::pair<uint64_t, Error> fill(Datastore& ds, Ino f, uint64_t offset) {
  const auto chunk = pattern(1 << 20, 7);
  for (uint64_t done = 0;; done += chunk.size()) {
    auto r = ds.write_sync(f, offset + done, chunk.data(), chunk.size());
    if (!r.ok()) return {done, r.error()};
    if (done > kDeviceBytes) return {done, Error{0, ErrorKind::kIo, "never filled"}};
  }
}

TEST(BackingFull, WritesGetEnospcAndEverythingElseWorks) {
  for (uint64_t room_mib : {160, 200, 257}) {
    SCOPED_TRACE(room_mib);
    device::SimOptions so;
    so.size_bytes = kDeviceBytes;
    so.backing_bytes = room_mib << 20;  // the host has room for part of the datastore
    SimDevice sim(so);
    ASSERT_TRUE(mkfs(sim, {}).ok());
    auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(sim), {})).value();
    auto dir = ds->mkdir(kRootIno, "vm", 0755, 0, 0);
    auto big = ds->create(dir->ino, "big.img", 0644, 0, 0);
    auto keep = ds->create(dir->ino, "keep.img", 0644, 0, 0);
    const auto kept = pattern(3 << 20, 3);
    ASSERT_TRUE(ds->write_sync(keep->ino, 0, kept.data(), kept.size()).ok());
    ASSERT_TRUE(ds->fsync_sync(keep->ino).ok());
    auto [written, error] = fill(*ds, big->ino, 0);
    EXPECT_EQ(error.errno_value, ENOSPC) << error.to_string();
    EXPECT_LT(written, room_mib << 20);
    // The datastore has room, the host none: df says so, and nothing has failed.
    SpaceInfo sp = ds->space();
    EXPECT_GT(sp.free_bytes, 100ull << 20);
    EXPECT_LT(sp.available_bytes, 2ull << 20);
    EXPECT_FALSE(ds->stats().metadata_failed);
    // Namespace changes, a snapshot, fsync and the unlink that frees space all work.
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(ds->create(dir->ino, "small" + std::to_string(i), 0644, 0, 0).ok()) << i;
    }
    ASSERT_TRUE(ds->mkdir(make_ino(kSnapshotsDirView, kRootIno), "s", 0755, 0, 0).ok());
    ASSERT_TRUE(ds->rmdir(make_ino(kSnapshotsDirView, kRootIno), "s").ok());
    ASSERT_TRUE(ds->fsync_sync(keep->ino).ok());
    ASSERT_TRUE(ds->unlink(dir->ino, "big.img").ok());
    ASSERT_TRUE(ds->fsync_sync(keep->ino).ok());
    EXPECT_FALSE(ds->stats().metadata_failed);
    // The freed blocks are formatted (a hole punched: the host gets its room back) and
    // writes go on.
    for (int i = 0; i < 500 && ds->space().available_bytes < (64ull << 20); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_GE(ds->space().available_bytes, 64ull << 20);
    auto again = ds->create(dir->ino, "again.img", 0644, 0, 0);
    ASSERT_TRUE(again.ok());
    const auto more = pattern(32 << 20, 4);
    ASSERT_TRUE(ds->write_sync(again->ino, 0, more.data(), more.size()).ok());
    // Full again, then a clean close and an open: neither needs room.
    auto [w2, e2] = fill(*ds, again->ino, more.size());
    EXPECT_EQ(e2.errno_value, ENOSPC) << e2.to_string();
    ASSERT_TRUE(ds->close().ok());
    ds.reset();
    EXPECT_LT(sim.backing_free_bytes().value(), 2ull << 20);
    auto report = fsck(sim, {});
    ASSERT_TRUE(report.ok()) << report.error().to_string();
    EXPECT_TRUE(report->problems.empty()) << report->problems.front();
    auto reopened = Datastore::open(std::make_unique<BorrowedDevice>(sim), {});
    ASSERT_TRUE(reopened.ok()) << reopened.error().to_string();
    ds = std::move(reopened).value();
    auto k = ds->lookup(dir->ino, "keep.img");
    ASSERT_TRUE(k.ok());
    std::vector<uint8_t> back(kept.size());
    ASSERT_TRUE(ds->read_sync(k->ino, 0, back.size(), back.data()).ok());
    EXPECT_EQ(back, kept);
    ASSERT_TRUE(ds->unlink(dir->ino, "again.img").ok());
    ASSERT_TRUE(ds->close().ok());
  }
}

// A reservation (fallocate) takes its room on the host too: after another disk filled
// the host, every byte of the reserved disk is still written without ENOSPC.
TEST(BackingFull, ReservedGrainsHaveTheirHostRoom) {
  device::SimOptions so;
  so.size_bytes = kDeviceBytes;
  so.backing_bytes = 200ull << 20;
  SimDevice sim(so);
  ASSERT_TRUE(mkfs(sim, {}).ok());
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(sim), {})).value();
  auto thick = ds->create(kRootIno, "thick.img", 0644, 0, 0);
  const uint64_t room = sim.backing_free_bytes().value();
  ASSERT_TRUE(ds->allocate_sync(thick->ino, 0, 64 << 20).ok());
  EXPECT_LE(sim.backing_free_bytes().value(), room - (64 << 20));
  auto other = ds->create(kRootIno, "other.img", 0644, 0, 0);
  auto [written, error] = fill(*ds, other->ino, 0);
  ASSERT_EQ(error.errno_value, ENOSPC) << error.to_string();
  const auto data = pattern(64 << 20, 9);
  auto w = ds->write_sync(thick->ino, 0, data.data(), data.size());
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(ds->read_sync(thick->ino, 0, back.size(), back.data()).ok());
  EXPECT_EQ(back, data);
  // No room left on the host for a new reservation.
  auto more = ds->create(kRootIno, "more.img", 0644, 0, 0);
  EXPECT_EQ(ds->allocate_sync(more->ino, 0, 16 << 20).error().errno_value, ENOSPC);
  EXPECT_FALSE(ds->stats().metadata_failed);
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  auto report = fsck(sim, {});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

// A power cut while the host is full: the journal replays into backed space, and the
// reopened datastore is consistent and writable once room returns.
TEST(BackingFull, CrashWhileFullRecovers) {
  device::SimOptions so;
  so.size_bytes = kDeviceBytes;
  so.backing_bytes = 180ull << 20;
  SimDevice sim(so);
  ASSERT_TRUE(mkfs(sim, {}).ok());
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(sim), {})).value();
  auto big = ds->create(kRootIno, "big.img", 0644, 0, 0);
  auto [written, error] = fill(*ds, big->ino, 0);
  ASSERT_EQ(error.errno_value, ENOSPC);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(ds->create(kRootIno, "f" + std::to_string(i), 0644, 0, 0).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "f3").ok());
  ASSERT_TRUE(ds->fsync_sync(big->ino).ok());
  auto cut = sim.power_loss(device::PowerLossMode::kRandom, 11);
  ds.reset();  // the old datastore closes against the old device; `cut` is the crash
  auto report = fsck(*cut, {});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
  OpenOptions force;
  force.force = true;  // marked mounted: it crashed
  auto reopened = Datastore::open(std::make_unique<BorrowedDevice>(*cut), force);
  ASSERT_TRUE(reopened.ok()) << reopened.error().to_string();
  auto r = std::move(reopened).value();
  EXPECT_TRUE(r->lookup(kRootIno, "f29").ok());
  EXPECT_FALSE(r->lookup(kRootIno, "f3").ok());
  ASSERT_TRUE(r->unlink(kRootIno, "big.img").ok());
  ASSERT_TRUE(r->close().ok());
}

}  // namespace
}  // namespace vsfs
