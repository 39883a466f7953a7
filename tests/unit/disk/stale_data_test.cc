// Stale data: no disk ever reads another disk's old data. Every 512-byte sector written
// carries a tag (disk id, offset); after deleting a disk and reusing its space with new
// disks, clones and partial-grain writes, and also after power loss, no tag of the
// deleted disk is readable anywhere, and unwritten ranges read zeros.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "device/sim_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;

constexpr uint64_t kTagMagic = 0x5441475441475441ull;  // "ATGATGAT"

// Fills buf (sector-aligned offset) with tagged sectors of disk `id`.
void tag(std::vector<uint8_t>& buf, uint64_t id, uint64_t offset) {
  for (uint64_t s = 0; s + 512 <= buf.size(); s += 512) {
    uint64_t words[3] = {kTagMagic, id, offset + s};
    std::memcpy(buf.data() + s, words, sizeof words);
    std::memset(buf.data() + s + 24, static_cast<int>(id), 512 - 24);
  }
}

// Counts sectors in `data` that carry a tag of disk `id`.
uint64_t count_tags(const std::vector<uint8_t>& data, uint64_t id) {
  uint64_t n = 0;
  for (uint64_t s = 0; s + 24 <= data.size(); s += 8) {
    uint64_t w[2];
    std::memcpy(w, data.data() + s, 16);
    if (w[0] == kTagMagic && w[1] == id) ++n;
  }
  return n;
}

std::unique_ptr<SimDevice> device_of(uint64_t mib, uint64_t seed = 1) {
  device::SimOptions o;
  o.size_bytes = mib << 20;
  o.seed = seed;
  auto dev = std::make_unique<SimDevice>(o);
  MkfsOptions mo;
  mo.journal_bytes = 4 << 20;
  EXPECT_TRUE(mkfs(*dev, mo).ok());
  return dev;
}

std::vector<uint8_t> read_all(Datastore& ds, Ino ino) {
  std::vector<uint8_t> v(ds.getattr(ino)->size_bytes);
  EXPECT_TRUE(ds.read_sync(ino, 0, v.size(), v.data()).ok());
  return v;
}

void wait_released(Datastore& ds) {
  for (int i = 0; i < 500 && ds.stats().release_pending > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST(StaleData, DeletedDiskNeverReadable) {
  auto ds = std::move(Datastore::open(device_of(128), {})).value();
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  std::vector<uint8_t> buf(24 << 20);
  tag(buf, 7, 0);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, buf.data(), buf.size()).ok());
  ASSERT_TRUE(ds->fsync_sync(a->ino).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "a").ok());
  wait_released(*ds);
  ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());

  std::mt19937_64 rng(3);
  std::vector<Ino> disks;
  for (int d = 0; d < 4; ++d) {
    auto f = ds->create(kRootIno, "new" + std::to_string(d), 0644, 0, 0);
    ASSERT_TRUE(ds->truncate_sync(f->ino, 8 << 20).ok());
    disks.push_back(f->ino);
    for (int w = 0; w < 200; ++w) {
      const uint64_t off = rng() % (8 << 20);
      std::vector<uint8_t> small(1 + rng() % 3000, static_cast<uint8_t>(0x30 + d));
      if (off + small.size() > (8u << 20)) continue;
      ASSERT_TRUE(ds->write_sync(f->ino, off, small.data(), small.size()).ok());
    }
  }
  auto c = ds->create(kRootIno, "clone", 0644, 0, 0);
  ASSERT_TRUE(ds->clone_range_sync(disks[0], 0, c->ino, 0, 8 << 20).ok());
  std::vector<uint8_t> odd(777, 0x55);
  ASSERT_TRUE(ds->write_sync(c->ino, 4096 * 3 + 5, odd.data(), odd.size()).ok());
  disks.push_back(c->ino);
  for (Ino ino : disks) {
    auto data = read_all(*ds, ino);
    EXPECT_EQ(count_tags(data, 7), 0u) << "inode " << ino;
    // Bytes never written read zeros: every byte is 0 or a value a writer used.
    for (uint8_t b : data) ASSERT_TRUE(b == 0 || (b >= 0x30 && b <= 0x33) || b == 0x55) << int(b);
  }
  ASSERT_TRUE(ds->close().ok());
}

TEST(StaleData, FullDatastoreReusesFreedSpaceWithoutFailing) {
  // 64 MiB device: about 40 MiB of data space. Fill most of it, delete, write it again
  // at once: the freed blocks are waiting for the releaser and a checkpoint, and the
  // write must still succeed, without showing the old tags.
  auto ds = std::move(Datastore::open(device_of(64), {})).value();
  const uint64_t fill = (ds->space().free_bytes * 8 / 10) & ~uint64_t{kBlockBytes - 1};
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  std::vector<uint8_t> buf(fill);
  tag(buf, 9, 0);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, buf.data(), buf.size()).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "a").ok());
  auto b = ds->create(kRootIno, "b", 0644, 0, 0);
  tag(buf, 10, 0);
  auto w = ds->write_sync(b->ino, 0, buf.data(), buf.size());
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  auto data = read_all(*ds, b->ino);
  EXPECT_EQ(count_tags(data, 9), 0u);
  EXPECT_EQ(data, buf);
  // Allocation prefers formatted blocks: with the formatter done, new data goes there.
  ASSERT_TRUE(ds->close().ok());
}

TEST(StaleData, SurvivesPowerLoss) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(seed);
    auto dev = device_of(96, seed);
    SimDevice* raw = dev.get();
    OpenOptions oo;
    oo.commit_interval_ms = 20;
    auto ds = std::move(Datastore::open(std::move(dev), oo)).value();
    auto a = ds->create(kRootIno, "a", 0644, 0, 0);
    std::vector<uint8_t> buf(8 << 20);
    tag(buf, 7, 0);
    ASSERT_TRUE(ds->write_sync(a->ino, 0, buf.data(), buf.size()).ok());
    ASSERT_TRUE(ds->fsync_sync(a->ino).ok());
    std::mt19937_64 rng(seed);
    raw->die_at_io(1 + rng() % 300);
    (void)ds->unlink(kRootIno, "a");
    auto b = ds->create(kRootIno, "b", 0644, 0, 0);
    for (int i = 0; b.ok() && i < 100; ++i) {
      std::vector<uint8_t> small(1 + rng() % 9000, 0x42);
      if (!ds->write_sync(b->ino, rng() % (6 << 20), small.data(), small.size()).ok()) break;
      if (i % 10 == 0 && !ds->fsync_sync(b->ino).ok()) break;
    }
    (void)ds->close();
    auto image = raw->power_loss(device::PowerLossMode::kRandom, seed);
    ds.reset();
    OpenOptions ro;
    ro.force = true;
    auto re = Datastore::open(std::move(image), ro);
    ASSERT_TRUE(re.ok()) << re.error().to_string();
    auto ds2 = std::move(re).value();
    auto lb = ds2->lookup(kRootIno, "b");
    if (lb.ok()) {
      auto data = read_all(*ds2, lb->ino);
      EXPECT_EQ(count_tags(data, 7), 0u);
      for (uint8_t x : data) ASSERT_TRUE(x == 0 || x == 0x42);
    }
    ASSERT_TRUE(ds2->close().ok());
  }
}

// fsck reading every formatted block (not one in 16) finds no problem: in particular,
// every formatted block reads zeros.
void expect_every_formatted_block_zero(SimDevice& image) {
  FsckOptions fo;
  fo.full_zero_check = true;
  auto rep = fsck(image, fo);
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  std::string problems;
  for (const auto& p : rep->problems) problems += p + "\n";
  EXPECT_TRUE(rep->problems.empty()) << problems;
}

TEST(Formatter, MovesFreedBlocksToTheFormattedList) {
  auto dev = device_of(128);
  SimDevice* raw = dev.get();
  auto ds = std::move(Datastore::open(std::move(dev), {})).value();
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  std::vector<uint8_t> buf(16 << 20);
  tag(buf, 5, 0);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, buf.data(), buf.size()).ok());
  const uint64_t formatted_before = ds->space().formatted_blocks;
  ASSERT_TRUE(ds->unlink(kRootIno, "a").ok());
  wait_released(*ds);
  ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());
  EXPECT_GE(ds->space().to_format_blocks, 15u);
  // Freed blocks become allocatable after a checkpoint; the formatter then takes them.
  for (int i = 0; i < 500 && ds->stats().space.formatted_bytes_total < (15u << 20); ++i) {
    if (i % 50 == 0) {
      ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (i == 100) {
      // Force the checkpoint that releases the quarantine.
      ASSERT_TRUE(ds->close().ok());
      auto image = raw->clone();
      ds.reset();
      raw = image.get();
      ds = std::move(Datastore::open(std::move(image), {})).value();
    }
  }
  EXPECT_GE(ds->stats().space.formatted_bytes_total, 15u << 20);
  EXPECT_GE(ds->space().formatted_blocks, formatted_before + 15);
  ASSERT_TRUE(ds->close().ok());
  auto image = raw->clone();
  ds.reset();
  expect_every_formatted_block_zero(*image);
}

// Data written into a block whose allocation never committed stays on the device; after
// the crash that block is on the formatted list again. The next open formats it again,
// so after a clean close every formatted block reads zeros.
TEST(Formatter, CrashLeavesNoDataInFormattedBlocks) {
  auto dev = device_of(64);
  SimDevice* raw = dev.get();
  OpenOptions oo;
  oo.commit_interval_ms = 600000;  // nothing commits but the fsync below
  auto ds = std::move(Datastore::open(std::move(dev), oo)).value();
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());
  std::vector<uint8_t> buf(4 << 20);
  tag(buf, 9, 0);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, buf.data(), buf.size()).ok());  // not committed
  auto image = raw->power_loss(device::PowerLossMode::kKeepAll, 1);
  ds.reset();

  OpenOptions ro;
  ro.force = true;
  ro.format_rate_mib_s = 0;  // no formatter: what the open itself did stays visible
  SimDevice* img = image.get();
  auto re = Datastore::open(std::move(image), ro);
  ASSERT_TRUE(re.ok()) << re.error().to_string();
  auto ds2 = std::move(re).value();
  EXPECT_EQ(ds2->space().formatted_blocks, 0u);
  EXPECT_EQ(ds2->getattr(ds2->lookup(kRootIno, "a")->ino)->size_bytes, 0u);
  ASSERT_TRUE(ds2->close().ok());
  auto closed = img->clone();
  ds2.reset();
  expect_every_formatted_block_zero(*closed);
}

}  // namespace
}  // namespace vsfs
