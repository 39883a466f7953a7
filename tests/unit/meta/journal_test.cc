// The journal at the edges of the commit and checkpoint path: a transaction that ends
// exactly at the end of the ring, a commit whose transaction does not fit (the
// checkpoint runs first), and a second power cut while recovery replays the log. Every
// power cut here is placed at each IO in turn, not at a random one.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "device/sim_device.h"
#include "support/borrowed_device.h"
#include "meta/journal.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

using device::PowerLossMode;
using device::SimDevice;

constexpr uint64_t kDeviceBytes = 80ull << 20;

using Borrowed = vsfs::testing::BorrowedDevice;

std::unique_ptr<SimDevice> fresh(uint64_t journal_bytes) {
  device::SimOptions o;
  o.size_bytes = kDeviceBytes;
  auto dev = std::make_unique<SimDevice>(o);
  MkfsOptions mo;
  mo.journal_bytes = journal_bytes;
  EXPECT_TRUE(mkfs(*dev, mo).ok());
  return dev;
}

JournalImage image_of(uint64_t home, uint8_t fill) {
  JournalImage img;
  img.home = home;
  img.data = AlignedBuffer(kGrainBytes);
  std::memset(img.data.data(), fill, kGrainBytes);
  return img;
}

TEST(Journal, TransactionEndingAtTheRingEndLeavesTheTailInside) {
  auto dev = fresh(8ull << 20);
  auto sb = read_superblock(*dev);
  ASSERT_TRUE(sb.ok());
  const uint64_t ring = sb->journal_grains;
  Journal j(*dev, sb->journal_start_grain, ring, sb->journal_tail_grain, sb->journal_tail_seq);
  const uint64_t home = sb->first_data_block * kGrainsPerBlock;
  // Two transactions that fill the ring exactly: the second ends at its last grain.
  const uint64_t first_images = 1000;
  uint64_t second_images = ring - Journal::grains_for(first_images) - 2;
  while (Journal::grains_for(first_images) + Journal::grains_for(second_images) > ring) {
    --second_images;
  }
  ASSERT_EQ(Journal::grains_for(first_images) + Journal::grains_for(second_images), ring);
  for (uint64_t n : {first_images, second_images}) {
    std::vector<JournalImage> t;
    for (uint64_t i = 0; i < n; ++i) t.push_back(image_of(home + i, static_cast<uint8_t>(n)));
    ASSERT_TRUE(j.write_transaction(t).ok());
  }
  // A checkpoint records the head as the tail: it must be a tail the superblock accepts.
  EXPECT_LT(j.head_grain(), ring);
  format::Superblock moved = *sb;
  moved.journal_tail_grain = j.head_grain();
  moved.journal_tail_seq = j.head_seq();
  AlignedBuffer buf(kGrainBytes);
  format::encode_superblock(moved, moved.generation, format::Grain(buf.data(), kGrainBytes));
  EXPECT_TRUE(format::decode_superblock(format::ConstGrain(buf.data(), kGrainBytes)).ok());

  auto r = Journal::replay(*dev, sb->journal_start_grain, ring, sb->journal_tail_grain,
                           sb->journal_tail_seq, false);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->transactions, 2u);
  EXPECT_EQ(r->end_grain, j.head_grain());
}

// Earlier vsfs recorded the end of the ring as the tail; such a datastore opens, and
// the next transaction goes to ring offset 0.
TEST(Journal, TailAtTheRingEndWrittenEarlierStillOpens) {
  auto dev = fresh(1ull << 20);
  auto sb = read_superblock(*dev);
  ASSERT_TRUE(sb.ok());
  format::Superblock old = *sb;
  old.journal_tail_grain = old.journal_grains;
  AlignedBuffer buf(kGrainBytes);
  format::encode_superblock(old, old.generation, format::Grain(buf.data(), kGrainBytes));
  dev->poke(0, buf.data(), kGrainBytes);
  dev->poke(format::kSuperblockCopyGrain * kGrainBytes, buf.data(), kGrainBytes);
  {
    auto ds = Datastore::open(std::make_unique<Borrowed>(*dev), OpenOptions{});
    ASSERT_TRUE(ds.ok()) << ds.error().to_string();
    ASSERT_TRUE((*ds)->create(kRootIno, "f", 0644, 0, 0).ok());
    ASSERT_TRUE((*ds)->fsync_sync(kRootIno).ok());
    ASSERT_TRUE((*ds)->close().ok());
  }
  auto after = read_superblock(*dev);
  ASSERT_TRUE(after.ok()) << after.error().to_string();
  EXPECT_LT(after->journal_tail_grain, after->journal_grains);
  auto report = fsck(*dev, FsckOptions{});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

// A workload of creates, writes and fsyncs on a 1 MiB journal (256 grains): the ring
// fills every few dozen commits, so commits run the checkpoint first. Returns how many
// fsyncs were acknowledged; file i holds pattern(i).
std::vector<uint8_t> pattern(uint64_t i) {
  std::vector<uint8_t> v(3 * kGrainBytes + 100);
  for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<uint8_t>(i * 31 + k * 7 + 1);
  return v;
}

constexpr int kFsyncs = 24;

OpenOptions stepped() {
  OpenOptions o;
  o.start_background = false;  // fsync commits on the caller's thread: a fixed IO order
  o.force = true;
  return o;
}

int run_workload(Datastore& ds) {
  int acked = 0;
  for (int i = 0; i < kFsyncs; ++i) {
    auto f = ds.create(kRootIno, "f" + std::to_string(i), 0644, 0, 0);
    if (!f.ok()) break;
    const auto data = pattern(i);
    if (!ds.write_sync(f->ino, 0, data.data(), data.size()).ok()) break;
    // Some commits carry many blocks. Nine in ten iterations end with a snapshot
    // instead of an fsync: its commit never checkpoints, so the ring fills until a commit
    // finds no room and checkpoints first, and the writes after a snapshot copy the
    // trees, so that the superblock's roots change in that transaction.
    if (i % 2 == 1) {
      // One grain in each of 60 map leaves of its own: 60 blocks more in the transaction.
      for (uint64_t k = 1; k <= 60; ++k) {
        if (!ds.write_sync(f->ino, k * 252 * kGrainBytes, data.data(), kGrainBytes).ok()) {
          return acked;
        }
      }
    }
    if (i % 10 != 0) {
      if (!ds.mkdir(make_ino(kSnapshotsDirView, kRootIno), "s" + std::to_string(i), 0755, 0, 0)
               .ok()) {
        break;
      }
    } else if (!ds.fsync_sync(f->ino).ok()) {
      break;
    }
    acked = i + 1;
  }
  return acked;
}

// fsck is clean, and every acknowledged file reads back.
std::string check(std::unique_ptr<SimDevice> image, int acked) {
  auto report = fsck(*image, FsckOptions{});
  if (!report.ok()) return "fsck: " + report.error().to_string();
  if (!report->problems.empty()) return "fsck: " + report->problems.front();
  auto opened = Datastore::open(std::move(image), stepped());
  if (!opened.ok()) return "open: " + opened.error().to_string();
  auto& ds = **opened;
  for (int i = 0; i < acked; ++i) {
    auto a = ds.lookup(kRootIno, "f" + std::to_string(i));
    if (!a.ok()) return "f" + std::to_string(i) + " is missing";
    const auto want = pattern(i);
    std::vector<uint8_t> got(want.size());
    if (i % 2 == 1) {
      std::vector<uint8_t> far(kGrainBytes);
      auto r = ds.read_sync(a->ino, 60 * 252 * kGrainBytes, far.size(), far.data());
      if (!r.ok() || !std::equal(far.begin(), far.end(), want.begin())) {
        return "f" + std::to_string(i) + " reads wrong far out";
      }
    }
    auto r = ds.read_sync(a->ino, 0, got.size(), got.data());
    if (!r.ok() || got != want) return "f" + std::to_string(i) + " reads wrong";
  }
  if (!ds.close().ok()) return "close failed";
  return "";
}

struct Cut {
  std::unique_ptr<SimDevice> image;
  int acked = 0;
  uint64_t ios = 0;        // IOs the run issued (with no cut: all of them)
  uint64_t checkpoints = 0;
  uint64_t full_checkpoints = 0;  // run by a commit whose transaction did not fit
};

// Runs the workload with the power cut at IO `cut_at` (0: never) and returns the image.
Cut run_with_cut(uint64_t cut_at, PowerLossMode mode) {
  Cut c;
  auto dev = fresh(1ull << 20);
  SimDevice* raw = dev.get();
  auto opened = Datastore::open(std::move(dev), stepped());
  EXPECT_TRUE(opened.ok());
  auto ds = std::move(opened).value();
  const uint64_t before = raw->io_count();
  if (cut_at > 0) raw->die_at_io(cut_at);
  c.acked = run_workload(*ds);
  c.ios = raw->io_count() - before;
  c.checkpoints = ds->stats().checkpoints;
  c.full_checkpoints = ds->stats().full_journal_checkpoints;
  if (cut_at == 0) raw->die_at_io(1);  // no final checkpoint: the log must be replayed
  (void)ds->close();
  c.image = raw->power_loss(mode, cut_at);
  return c;
}

TEST(JournalCut, EveryIoOfCommitsThatCheckpointFirst) {
  const Cut dry = run_with_cut(0, PowerLossMode::kDropAll);
  ASSERT_EQ(dry.acked, kFsyncs);
  ASSERT_GT(dry.full_checkpoints, 2u) << "no commit found the ring full: the test reaches nothing (" << dry.checkpoints << " checkpoints)";
  std::fprintf(stderr, "journal cut: %llu IOs, %llu checkpoints, %llu with the ring full\n",
               static_cast<unsigned long long>(dry.ios),
               static_cast<unsigned long long>(dry.checkpoints),
               static_cast<unsigned long long>(dry.full_checkpoints));
  for (uint64_t k = 1; k <= dry.ios; ++k) {
    // Odd cuts lose every unflushed write, even ones a random choice of them.
    {
      const PowerLossMode mode = k % 2 ? PowerLossMode::kDropAll : PowerLossMode::kRandom;
      Cut c = run_with_cut(k, mode);
      const std::string problem = check(std::move(c.image), c.acked);
      ASSERT_EQ(problem, "") << "power cut at IO " << k << " of " << dry.ios
                             << (mode == PowerLossMode::kDropAll ? " (drop all)" : " (random)");
    }
  }
}

// The image of a run cut after its last fsync holds a log of many transactions written
// since several checkpoints. Recovery replays it; cut the power again at every IO of
// that replay, then recover once more: nothing acknowledged may be lost.
TEST(JournalCut, SecondCutDuringRecovery) {
  Cut c = run_with_cut(0, PowerLossMode::kDropAll);
  ASSERT_EQ(c.acked, kFsyncs);
  ASSERT_GT(c.checkpoints, 2u);
  // Count the IOs of one clean recovery.
  auto probe = c.image->clone();
  SimDevice* probe_raw = probe.get();
  auto opened = Datastore::open(std::move(probe), stepped());
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  const uint64_t recovery_ios = probe_raw->io_count();
  ASSERT_GT(recovery_ios, 10u);
  (void)(*opened)->close();
  opened->reset();
  for (uint64_t j = 1; j <= recovery_ios; ++j) {
    for (PowerLossMode mode : {PowerLossMode::kDropAll, PowerLossMode::kKeepAll,
                               PowerLossMode::kRandom}) {
      auto dev = c.image->clone();
      SimDevice* raw = dev.get();
      raw->die_at_io(j);
      auto ds = Datastore::open(std::make_unique<Borrowed>(*raw), stepped());
      std::unique_ptr<SimDevice> second;
      if (ds.ok()) {
        raw->die_at_io(1);
        (void)(*ds)->close();
        second = raw->power_loss(mode, j);
        ds->reset();
      } else {
        second = raw->power_loss(mode, j);
      }
      const std::string problem = check(std::move(second), c.acked);
      ASSERT_EQ(problem, "") << "second power cut at recovery IO " << j << " of "
                             << recovery_ios << " (mode " << static_cast<int>(mode) << ")";
    }
  }
}

// A power cut at each IO of a mount of a cleanly unmounted datastore (the superblock's
// copy and primary are rewritten there): fsck finds nothing wrong, and it mounts.
TEST(JournalCut, CutDuringMountOfACleanDatastore) {
  auto clean = fresh(1ull << 20);
  {
    auto ds = Datastore::open(std::make_unique<Borrowed>(*clean), OpenOptions{});
    ASSERT_TRUE(ds.ok());
    auto f = (*ds)->create(kRootIno, "f0", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    const auto data = pattern(0);
    ASSERT_TRUE((*ds)->write_sync(f->ino, 0, data.data(), data.size()).ok());
    ASSERT_TRUE((*ds)->close().ok());
  }
  auto probe = clean->clone();
  SimDevice* probe_raw = probe.get();
  {
    auto ds = Datastore::open(std::move(probe), stepped());
    ASSERT_TRUE(ds.ok());
    ASSERT_GT(probe_raw->io_count(), 3u);
    for (uint64_t j = 1; j <= probe_raw->io_count(); ++j) {
      for (PowerLossMode mode : {PowerLossMode::kKeepAll, PowerLossMode::kRandom}) {
        auto dev = clean->clone();
        SimDevice* raw = dev.get();
        raw->die_at_io(j);
        {
          auto opened = Datastore::open(std::make_unique<Borrowed>(*raw), stepped());
          if (opened.ok()) (void)(*opened)->close();
        }
        const std::string problem = check(raw->power_loss(mode, j), 1);
        ASSERT_EQ(problem, "") << "power cut at mount IO " << j;
      }
    }
    (void)(*ds)->close();
  }
}

// Many writes in flight at once, each to its own map leaf, on a 1 MiB journal (room
// for about 250 blocks per transaction): together they would dirty more blocks than a
// transaction can hold. Changes wait for room instead, and every write succeeds.
TEST(JournalRoom, ManyChangesInFlightWaitForRoomInTheTransaction) {
  device::SimOptions so;
  so.size_bytes = kDeviceBytes;
  so.manual_completions = true;
  auto dev = std::make_unique<SimDevice>(so);
  MkfsOptions mo;
  mo.journal_bytes = 1ull << 20;
  ASSERT_TRUE(mkfs(*dev, mo).ok());
  SimDevice* raw = dev.get();
  OpenOptions oo = stepped();
  auto opened = Datastore::open(std::move(dev), oo);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& ds = **opened;
  auto f = ds.create(kRootIno, "sparse.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  constexpr int kWrites = 400;
  constexpr uint64_t kLeafBytes = 252 * kGrainBytes;  // one map leaf's span
  std::vector<uint8_t> data(kGrainBytes, 0x3c);
  int answered = 0, failed = 0;
  for (int i = 0; i < kWrites; ++i) {
    ds.write(f->ino, i * kLeafBytes, data.data(), data.size(), [&](Result<uint64_t> r) {
      ++answered;
      if (!r.ok()) ++failed;
    });
  }
  for (int rounds = 0; answered < kWrites && rounds < 100000; ++rounds) {
    const uint64_t ran = raw->run_pending();
    auto stepped_commit = ds.run_background_step(BackgroundStep::kCommitIfWanted);
    ASSERT_TRUE(stepped_commit.ok()) << stepped_commit.error().to_string();
    ASSERT_TRUE(ran > 0 || *stepped_commit || answered == kWrites) << "nothing can go on";
  }
  ASSERT_EQ(answered, kWrites);
  EXPECT_EQ(failed, 0);
  EXPECT_GT(ds.stats().journal_queue.waits, 0u) << "no change ever waited: the test tests nothing";
  ASSERT_TRUE(ds.fsync_sync(f->ino).ok());
  std::vector<uint8_t> back(kGrainBytes);
  for (int i = 0; i < kWrites; i += 37) {
    std::optional<Result<uint64_t>> r;
    ds.read(f->ino, i * kLeafBytes, back.size(), back.data(), [&](Result<uint64_t> x) { r = x; });
    raw->run_pending();
    ASSERT_TRUE(r && r->ok());
    EXPECT_EQ(back, data) << "write " << i;
  }
  ASSERT_TRUE(ds.close().ok());
  auto report = fsck(*raw, FsckOptions{});
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

}  // namespace
}  // namespace vsfs::meta
