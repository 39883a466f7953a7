// The allocation window (vsfs-format(5), ro_compat bit 0): after a crash only the
// formatted blocks the allocator may have handed out since the last commit are formatted
// again, writes into a block taken past the window wait for the commit that covers it,
// and a datastore made before the window reformats all of them until vsfs-fsck -y turns
// it on.
#include <gtest/gtest.h>

#include "format/format.h"
#include "meta/meta_store.h"
#include "support/borrowed_device.h"
#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;
using testing::BorrowedDevice;

constexpr uint64_t kDevice = 2ull << 30;  // about 2000 storage blocks

void expect_fsck_clean(device::Device& dev) {
  FsckOptions o;
  o.full_zero_check = true;  // every formatted block: none may hold data
  auto report = fsck(dev, o);
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

// Writes `mib` MiB of data to a new file and syncs it, then keeps writing another 4 MiB
// that no commit covers.
void write_some(Datastore& ds, const std::string& name, uint64_t mib) {
  auto f = ds.create(kRootIno, name, 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  const auto data = pattern(1 << 20, 7);
  for (uint64_t i = 0; i < mib; ++i) {
    ASSERT_TRUE(ds.write_sync(f->ino, i << 20, data.data(), data.size()).ok());
  }
  ASSERT_TRUE(ds.fsync_sync(f->ino).ok());
  for (uint64_t i = mib; i < mib + 4; ++i) {
    ASSERT_TRUE(ds.write_sync(f->ino, i << 20, data.data(), data.size()).ok());
  }
}

TEST(AllocWindow, RecoveryFormatsOnlyTheWindow) {
  auto owned = fresh_device(kDevice);
  SimDevice* sim = owned.get();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), manual_commits())).value();
  write_some(*ds, "f", 40);
  const SpaceInfo before = ds->stats().space;
  ASSERT_TRUE(before.alloc_window);
  EXPECT_GT(before.alloc_window_end, 0u);
  auto image = sim->power_loss(device::PowerLossMode::kKeepAll, 1);
  ds.reset();
  expect_fsck_clean(*image);
  auto after = open_after_power_loss(std::move(image));
  ASSERT_NE(after, nullptr);
  const SpaceInfo sp = after->stats().space;
  // The window: twice what the last commit interval took (44 blocks of data and a few of
  // metadata), not the ~2000 formatted blocks of the device.
  EXPECT_GT(sp.crash_reformat_blocks, 0u);
  EXPECT_LE(sp.crash_reformat_blocks, 2u * (44u + 4u));
  EXPECT_GT(sp.formatted_blocks, 1500u);
  ASSERT_TRUE(after->close().ok());
}

// With a window of one block, most new blocks are taken past it: their first writes wait
// for a commit, and a power cut at any point leaves no data in a formatted block outside
// the window.
TEST(AllocWindow, WritesPastTheWindowWaitForTheCommitThatCoversThem) {
  auto owned = fresh_device(kDevice);
  SimDevice* sim = owned.get();
  OpenOptions o = quiet();
  o.alloc_window_blocks = 1;
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), o)).value();
  write_some(*ds, "f", 12);
  EXPECT_GT(ds->stats().window_waits, 0u);
  for (uint32_t seed = 0; seed < 6; ++seed) {
    auto image = sim->power_loss(seed % 2 ? device::PowerLossMode::kKeepAll
                                          : device::PowerLossMode::kRandom,
                                 seed);
    expect_fsck_clean(*image);
  }
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
}

// A datastore made before the window (ro_compat bit clear): every formatted block is
// formatted again after a crash, as before; vsfs-fsck -y turns the window on.
TEST(AllocWindow, DatastoreWithoutTheWindow) {
  auto owned = fresh_device(kDevice);
  SimDevice* sim = owned.get();
  {
    auto sb = meta::read_superblock(*sim);
    ASSERT_TRUE(sb.ok());
    sb->ro_compat = 0;
    sb->alloc_window_end = 0;
    AlignedBuffer raw(kGrainBytes);
    format::encode_superblock(*sb, sb->generation, format::Grain(raw.data(), kGrainBytes));
    sim->poke(0, raw.data(), kGrainBytes);
    sim->poke(format::kSuperblockCopyGrain * kGrainBytes, raw.data(), kGrainBytes);
  }
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), manual_commits())).value();
  EXPECT_FALSE(ds->stats().space.alloc_window);
  write_some(*ds, "f", 4);
  EXPECT_EQ(ds->stats().window_waits, 0u);
  auto image = sim->power_loss(device::PowerLossMode::kKeepAll, 1);
  ds.reset();
  auto raw = image.get();
  auto after = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*raw), [] {
                           OpenOptions o = quiet();
                           o.force = true;
                           return o;
                         }()))
                   .value();
  EXPECT_FALSE(after->stats().space.alloc_window);
  EXPECT_GT(after->stats().space.crash_reformat_blocks, 1500u);  // all of them
  ASSERT_TRUE(after->close().ok());
  after.reset();
  FsckOptions y;
  y.repair = true;
  auto fixed = fsck(*raw, y);
  ASSERT_TRUE(fixed.ok());
  EXPECT_TRUE(fixed->problems.empty());
  auto sb = meta::read_superblock(*raw);
  ASSERT_TRUE(sb.ok());
  // The space summary too: the old datastore's block table region has room for it (and
  // the lease bit, which the mounts above set).
  EXPECT_EQ(sb->ro_compat, format::kRoCompatAllocWindow | format::kRoCompatSpaceSummary |
                               format::kRoCompatLease);
  auto again = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*raw), quiet())).value();
  EXPECT_TRUE(again->stats().space.alloc_window);
  ASSERT_TRUE(again->close().ok());
}

}  // namespace
}  // namespace vsfs
