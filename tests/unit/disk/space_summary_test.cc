// The space summary (vsfs-format(5), ro_compat bit 1) and the free lists built on it
// (meta/free_blocks.h): a mount holds only the block-table grains of space in use, takes
// the others in as the allocator reaches them and lets them go once their blocks are all
// formatted free again; the summary is journaled with the block table, so a power cut
// anywhere leaves the two in agreement (fsck checks it).
#include <gtest/gtest.h>

#include <random>

#include "format/format.h"
#include "meta/meta_store.h"
#include "support/borrowed_device.h"
#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;
using testing::BorrowedDevice;

void expect_fsck_clean(device::Device& dev) {
  FsckOptions o;
  auto report = fsck(dev, o);
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

OpenOptions stepped() {
  OpenOptions o = quiet();
  o.start_background = false;
  return o;
}

// Runs background steps of one kind until there is nothing left to do.
void drain(Datastore& ds, BackgroundStep step) {
  for (int i = 0; i < 100000; ++i) {
    auto more = ds.run_background_step(step);
    ASSERT_TRUE(more.ok()) << more.error().to_string();
    if (!*more) return;
  }
  FAIL() << "background step never finished";
}

// Deletes a file and runs what frees and formats its space.
void delete_and_format(Datastore& ds, const std::string& name) {
  ASSERT_TRUE(ds.unlink(kRootIno, name).ok());
  drain(ds, BackgroundStep::kRelease);
  ASSERT_TRUE(ds.run_background_step(BackgroundStep::kCommit).ok());  // commit + checkpoint
  ASSERT_TRUE(ds.run_background_step(BackgroundStep::kCommit).ok());
  drain(ds, BackgroundStep::kFormat);
  ASSERT_TRUE(ds.run_background_step(BackgroundStep::kCommit).ok());
}

TEST(SpaceSummary, AMountHoldsOnlyTheTableGrainsOfSpaceInUse) {
  auto owned = fresh_device(8ull << 30);  // 17 block-table grains
  SimDevice* sim = owned.get();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), stepped())).value();
  SpaceInfo sp = ds->stats().space;
  EXPECT_TRUE(sp.space_summary);
  EXPECT_EQ(sp.table_grains, 17u);
  // The grain of the fixed regions and the first metadata block, and the one of the
  // spare metadata block kept at the end of the device.
  EXPECT_EQ(sp.table_grains_loaded, 2u);

  // 1.5 GiB allocated takes blocks from the next three grains' space.
  auto f = ds->create(kRootIno, "big", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(ds->allocate_sync(f->ino, 0, 1536ull << 20).ok());
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  sp = ds->stats().space;
  EXPECT_EQ(sp.table_grains_loaded, 5u);
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);

  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), stepped())).value();
  EXPECT_EQ(ds->stats().space.table_grains_loaded, 5u);  // what the summary marks
  delete_and_format(*ds, "big");
  sp = ds->stats().space;
  EXPECT_EQ(sp.to_format_blocks, 0u);
  EXPECT_EQ(sp.table_grains_loaded, 2u);  // all formatted again: let go
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), stepped())).value();
  EXPECT_EQ(ds->stats().space.table_grains_loaded, 2u);
  ASSERT_TRUE(ds->close().ok());
}

// Random allocation, writes, deletion, release and formatting over six block-table
// grains' worth of space, with power cut at random points: after each cut fsck finds the
// summary in agreement with the block table (and no formatted block holding data), and
// the datastore opens and closes clean. Counts the grains taken in and let go, and the
// cuts, and fails when one never happened.
TEST(SpaceSummary, PowerCutsLeaveTheSummaryInAgreement) {
  constexpr uint64_t kDevice = 2500ull << 20;  // 5 block-table grains
  uint64_t taken_in = 0, let_go = 0, cuts = 0, reopened_loaded = 0;
  for (uint32_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    auto owned = fresh_device(kDevice);
    SimDevice* sim = owned.get();
    OpenOptions o = stepped();
    o.alloc_window_blocks = 1 + rng() % 64;
    auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), o)).value();
    std::vector<std::string> files;
    uint64_t loaded = ds->stats().space.table_grains_loaded;
    const auto data = pattern(1 << 20, seed);
    for (int op = 0; op < 40; ++op) {
      switch (rng() % 7) {
        case 0: case 1: {  // a file with allocated space and some data
          const std::string name = "f" + std::to_string(op);
          auto f = ds->create(kRootIno, name, 0644, 0, 0);
          ASSERT_TRUE(f.ok());
          // Within the free space, with what deletions freed made available (a commit
          // and the checkpoint after it): with no background threads, a write or an
          // allocation that finds no space would wait for a step nobody runs.
          ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
          ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
          const uint64_t free_mib = ds->stats().space.free_bytes >> 20;
          const uint64_t mib = std::min<uint64_t>(50 + rng() % 400, free_mib / 2);
          if (mib < 8) break;
          ASSERT_TRUE(ds->allocate_sync(f->ino, 0, mib << 20).ok());
          for (int w = 0; w < 4; ++w) {
            ASSERT_TRUE(ds->write_sync(f->ino, (rng() % mib) << 20, data.data(), data.size()).ok());
          }
          files.push_back(name);
          break;
        }
        case 2: case 3:  // a file goes, and its space is formatted
          if (files.empty()) break;
          {
            const size_t i = rng() % files.size();
            ASSERT_TRUE(ds->unlink(kRootIno, files[i]).ok());
            files.erase(files.begin() + static_cast<ptrdiff_t>(i));
          }
          for (int s = 0; s < 1 + static_cast<int>(rng() % 400); ++s) {
            const auto step = static_cast<BackgroundStep>(rng() % 4);
            ASSERT_TRUE(ds->run_background_step(step).ok());
          }
          break;
        case 4:
          ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
          break;
        case 5:  // everything goes, and is formatted: the grains are let go
          for (const auto& name : files) ASSERT_TRUE(ds->unlink(kRootIno, name).ok());
          files.clear();
          drain(*ds, BackgroundStep::kRelease);
          ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
          ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
          drain(*ds, BackgroundStep::kFormat);
          ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
          break;
        default: {  // a power cut: the image as the next mount finds it
          auto image = sim->power_loss(rng() % 2 ? device::PowerLossMode::kRandom
                                                 : device::PowerLossMode::kKeepAll,
                                       static_cast<uint32_t>(rng()));
          ++cuts;
          expect_fsck_clean(*image);
          auto after = open_after_power_loss(std::move(image));
          ASSERT_NE(after, nullptr);
          reopened_loaded = std::max(reopened_loaded, after->stats().space.table_grains_loaded);
          ASSERT_TRUE(after->close().ok());
          break;
        }
      }
      const uint64_t now = ds->stats().space.table_grains_loaded;
      taken_in += now > loaded ? now - loaded : 0;
      let_go += now < loaded ? loaded - now : 0;
      loaded = now;
    }
    ASSERT_TRUE(ds->close().ok());
    ds.reset();
    expect_fsck_clean(*sim);
  }
  EXPECT_GT(taken_in, 0u);
  EXPECT_GT(let_go, 0u);
  EXPECT_GT(cuts, 0u);
  EXPECT_GT(reopened_loaded, 2u);  // a recovery that found space in use past the first grain
  std::printf("space summary: %llu table grains taken in, %llu let go, %llu power cuts\n",
              static_cast<unsigned long long>(taken_in), static_cast<unsigned long long>(let_go),
              static_cast<unsigned long long>(cuts));
}

}  // namespace
}  // namespace vsfs
