// Growing a datastore (Datastore::grow, vsfs-grow): the added blocks take their tables
// from a region of their own (format::Growth), and one commit makes them part of the
// datastore. The data, the snapshots and the changed-block history stay as they were,
// the new space takes writes, fsck finds nothing, and a power cut at any IO of the
// growth leaves either the old datastore or the grown one, never a mix.
#include <gtest/gtest.h>

#include <cstring>

#include "format/format.h"
#include "support/borrowed_device.h"
#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;
using testing::BorrowedDevice;

void expect_fsck_clean(device::Device& dev) {
  auto report = fsck(dev, FsckOptions{});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

// A device of `device_bytes` holding a datastore of only `ds_bytes` of it.
std::unique_ptr<SimDevice> small_datastore(uint64_t device_bytes, uint64_t ds_bytes,
                                           bool discard_zeroes = true) {
  SimOptions o;
  o.size_bytes = device_bytes;
  o.discard_zeroes = discard_zeroes;
  auto dev = std::make_unique<SimDevice>(o);
  MkfsOptions m;
  m.size_bytes = ds_bytes;
  auto r = mkfs(*dev, m);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return dev;
}

format::Superblock superblock_of(SimDevice& dev) {
  AlignedBuffer buf(kGrainBytes);
  dev.peek(0, buf.data(), kGrainBytes);
  return format::decode_superblock(format::ConstGrain(buf.data(), kGrainBytes)).value();
}

// What a test keeps to compare after the growth: a disk, a snapshot of it, and the
// disk's changed-block map between that snapshot and a later one (.cbt/s2/s1/vm.img).
struct Before {
  std::vector<uint8_t> disk, snap, cbt;
};

Ino snapdir(Ino dir) { return make_ino(kSnapshotsDirView, dir); }

std::vector<uint8_t> cbt_text(Datastore& ds) {
  auto root = ds.lookup(kRootIno, kCbtDirName);
  EXPECT_TRUE(root.ok());
  auto b = ds.lookup(root->ino, "s2");
  EXPECT_TRUE(b.ok());
  auto a = ds.lookup(b->ino, "s1");
  EXPECT_TRUE(a.ok());
  auto f = ds.lookup(a->ino, "vm.img");
  EXPECT_TRUE(f.ok());
  return f.ok() ? read_all(ds, f->ino) : std::vector<uint8_t>{};
}

Before fill(Datastore& ds) {
  Before b;
  auto f = ds.create(kRootIno, "vm.img", 0644, 0, 0);
  EXPECT_TRUE(f.ok());
  auto v1 = pattern(3 << 20, 1);
  EXPECT_TRUE(ds.write_sync(f->ino, 0, v1.data(), v1.size()).ok());
  EXPECT_TRUE(ds.mkdir(snapdir(kRootIno), "s1", 0755, 0, 0).ok());
  auto v2 = pattern(256 << 10, 2);
  EXPECT_TRUE(ds.write_sync(f->ino, 1 << 20, v2.data(), v2.size()).ok());
  EXPECT_TRUE(ds.mkdir(snapdir(kRootIno), "s2", 0755, 0, 0).ok());
  EXPECT_TRUE(ds.fsync_sync(f->ino).ok());
  b.disk = read_all(ds, f->ino);
  auto snap = ds.lookup(snapdir(kRootIno), "s1");
  EXPECT_TRUE(snap.ok());
  auto simg = ds.lookup(snap->ino, "vm.img");
  EXPECT_TRUE(simg.ok());
  b.snap = read_all(ds, simg->ino);
  b.cbt = cbt_text(ds);
  EXPECT_FALSE(b.cbt.empty());
  return b;
}

void expect_unchanged(Datastore& ds, const Before& b) {
  auto f = ds.lookup(kRootIno, "vm.img");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(read_all(ds, f->ino), b.disk);
  auto snap = ds.lookup(snapdir(kRootIno), "s1");
  ASSERT_TRUE(snap.ok());
  auto simg = ds.lookup(snap->ino, "vm.img");
  ASSERT_TRUE(simg.ok());
  EXPECT_EQ(read_all(ds, simg->ino), b.snap);
  EXPECT_EQ(cbt_text(ds), b.cbt);
}

// Writes `bytes` into a new file and reads them back: more than the datastore had free
// before it grew.
void write_into_new_space(Datastore& ds, const std::string& name, uint64_t bytes) {
  auto f = ds.create(kRootIno, name, 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  const auto data = pattern(1 << 20, 7);
  for (uint64_t off = 0; off < bytes; off += data.size()) {
    auto w = ds.write_sync(f->ino, off, data.data(), data.size());
    ASSERT_TRUE(w.ok()) << w.error().to_string() << " at " << off;
  }
  ASSERT_TRUE(ds.fsync_sync(f->ino).ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(ds.read_sync(f->ino, bytes - data.size(), back.size(), back.data()).ok());
  EXPECT_EQ(back, data);
}

TEST(Grow, TakesInTheDevicesNewSpaceAndKeepsEverything) {
  // 300 MiB of 2 GiB: the old end falls inside a block-table grain (504 blocks), so
  // that grain changes, and the growth adds grains of its own.
  auto owned = small_datastore(2ull << 30, 300ull << 20);
  SimDevice* sim = owned.get();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  const Before before = fill(*ds);
  const SpaceInfo small = ds->stats().space;

  auto grown = ds->grow(0, {});
  ASSERT_TRUE(grown.ok()) << grown.error().to_string();
  EXPECT_EQ(grown->old_bytes, 300ull << 20);
  EXPECT_EQ(grown->new_bytes, 2ull << 30);
  EXPECT_TRUE(grown->formatted);
  EXPECT_GT(grown->table_bytes, 0u);
  // The new space is free at once, less what its tables took.
  const SpaceInfo big = ds->stats().space;
  EXPECT_EQ(big.total_bytes - small.total_bytes,
            (2ull << 30) - (300ull << 20) - grown->table_bytes);
  EXPECT_EQ(big.free_bytes - small.free_bytes, big.total_bytes - small.total_bytes);
  expect_unchanged(*ds, before);
  write_into_new_space(*ds, "big", 1ull << 30);
  // Asking again changes nothing.
  auto again = ds->grow(0, {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->old_bytes, again->new_bytes);
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);

  const format::Superblock sb = superblock_of(*sim);
  EXPECT_NE(sb.incompat & format::kIncompatGrown, 0u);
  ASSERT_EQ(sb.growths.size(), 1u);
  EXPECT_EQ(sb.growths[0].region_block, 300u);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  expect_unchanged(*ds, before);
  EXPECT_EQ(ds->stats().space.total_bytes, big.total_bytes);
  ASSERT_TRUE(ds->close().ok());
}

TEST(Grow, TwiceAndWithoutDiscardTheFormatterFormatsTheNewSpace) {
  // A device that does not read discarded space as zeros: the new blocks go on the
  // to-be-formatted list and the formatter zeroes them.
  auto owned = small_datastore(1ull << 30, 200ull << 20, false);
  SimDevice* sim = owned.get();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  const Before before = fill(*ds);
  auto g1 = ds->grow(504ull << 20, {});  // exactly one block-table grain's worth
  ASSERT_TRUE(g1.ok()) << g1.error().to_string();
  EXPECT_FALSE(g1->formatted);
  EXPECT_GT(ds->stats().space.to_format_blocks, 0u);
  auto g2 = ds->grow(0, {});
  ASSERT_TRUE(g2.ok()) << g2.error().to_string();
  EXPECT_EQ(g2->old_bytes, 504ull << 20);
  write_into_new_space(*ds, "big", 700ull << 20);
  expect_unchanged(*ds, before);
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
  EXPECT_EQ(superblock_of(*sim).growths.size(), 2u);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  expect_unchanged(*ds, before);
  ASSERT_TRUE(ds->close().ok());
}

TEST(Grow, RefusesWhatItCannotDoAndChangesNothing) {
  auto owned = small_datastore(1ull << 30, 400ull << 20);
  SimDevice* sim = owned.get();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());
  const uint64_t ios = sim->io_count();
  struct Case {
    uint64_t bytes;
    const char* says;
  } cases[] = {
      {200ull << 20, "shrinking"},        // smaller
      {2ull << 30, "grow the device"},    // larger than the device
      {401ull << 20, "too little"},       // no room for its tables and data
  };
  for (const Case& c : cases) {
    auto r = ds->grow(c.bytes, {});
    ASSERT_FALSE(r.ok()) << c.bytes;
    EXPECT_EQ(r.error().errno_value, EINVAL);
    EXPECT_NE(r.error().message.find(c.says), std::string::npos) << r.error().message;
  }
  EXPECT_EQ(sim->io_count(), ios);  // not one IO
  ASSERT_TRUE(ds->set_read_only(true).ok());
  EXPECT_EQ(ds->grow(0, {}).error().errno_value, EROFS);
  ASSERT_TRUE(ds->close().ok());
}

// A power cut at every IO of a growth (and just after it): the next mount finds the
// datastore as it was before, or grown, and clean either way; the data is there.
TEST(Grow, APowerCutAtAnyIoLeavesTheOldOrTheGrownDatastore) {
  auto base = small_datastore(1ull << 30, 300ull << 20);
  Before before;
  {
    auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*base), manual_commits())).value();
    before = fill(*ds);
    ASSERT_TRUE(ds->close().ok());
  }
  // How many IOs a growth issues, from an open datastore.
  uint64_t grow_ios = 0;
  {
    auto copy = base->clone();
    auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*copy), manual_commits())).value();
    const uint64_t at = copy->io_count();
    ASSERT_TRUE(ds->grow(0, {}).ok());
    grow_ios = copy->io_count() - at;
    ASSERT_TRUE(ds->close().ok());
  }
  ASSERT_GT(grow_ios, 5u);
  uint64_t old_seen = 0, grown_seen = 0;
  // Every IO of the growth, and the first one after it returned (the growth committed).
  for (uint64_t n = 1; n <= grow_ios + 1; ++n) {
    SCOPED_TRACE(n);
    auto copy = base->clone();
    {
      auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*copy), manual_commits())).value();
      copy->die_at_io(n);
      (void)ds->grow(0, {});
      (void)ds->close();
    }
    auto image = copy->power_loss(n % 2 ? device::PowerLossMode::kRandom
                                        : device::PowerLossMode::kDropAll,
                                  n);
    expect_fsck_clean(*image);
    SimDevice* img = image.get();
    auto ds = open_after_power_loss(std::move(image));
    ASSERT_NE(ds, nullptr);
    const uint64_t blocks = superblock_of(*img).total_blocks;
    ASSERT_TRUE(blocks == 300 || blocks == 1024) << blocks;
    (blocks == 300 ? old_seen : grown_seen) += 1;
    expect_unchanged(*ds, before);
    // Whichever it is, it grows (again) and takes writes.
    auto g = ds->grow(0, {});
    ASSERT_TRUE(g.ok()) << g.error().to_string();
    write_into_new_space(*ds, "after", 400ull << 20);
    ASSERT_TRUE(ds->close().ok());
  }
  EXPECT_GT(old_seen, 0u);
  EXPECT_GT(grown_seen, 0u);
  std::printf("grow: %llu IOs; cut at each: %llu left the old datastore, %llu the grown one\n",
              static_cast<unsigned long long>(grow_ios), static_cast<unsigned long long>(old_seen),
              static_cast<unsigned long long>(grown_seen));
}

}  // namespace
}  // namespace vsfs
