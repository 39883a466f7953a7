// The snapshot policy (who may take and delete snapshots, limits on users other than
// root, names scoped by directory, history per taker) and the space a snapshot holds,
// through the Datastore API on the simulated device.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "device/sim_device.h"
#include "format/format.h"
#include "meta/meta_store.h"
#include "support/borrowed_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;
using testing::BorrowedDevice;

constexpr uint32_t kAlice = 1000, kBob = 1001, kCarol = 1002;

std::unique_ptr<Datastore> open_fresh(const OpenOptions& o = {}, uint64_t bytes = 256ull << 20) {
  device::SimOptions so;
  so.size_bytes = bytes;
  auto dev = std::make_unique<SimDevice>(so);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  auto ds = Datastore::open(std::move(dev), o);
  EXPECT_TRUE(ds.ok());
  return std::move(ds).value();
}

Ino snapdir(Ino dir) { return make_ino(kSnapshotsDirView, dir); }

int err(const Result<Attr>& r) { return r.ok() ? 0 : r.error().errno_value; }
int err(const Result<void>& r) { return r.ok() ? 0 : r.error().errno_value; }

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::string xattr(Datastore& ds, Ino ino, const std::string& name) {
  auto xa = ds.xattrs(ino);
  EXPECT_TRUE(xa.ok());
  for (const auto& [k, v] : *xa) {
    if (k == name) return v;
  }
  return "";
}

TEST(SnapshotPolicy, OwnerAndRootTakeByDefault) {
  auto ds = open_fresh();
  auto home = ds->mkdir(kRootIno, "alice", 0777, kAlice, kAlice);
  ASSERT_TRUE(home.ok());
  auto mine = ds->mkdir(snapdir(home->ino), "s1", 0755, kAlice, kAlice);
  ASSERT_TRUE(mine.ok()) << mine.error().to_string();
  EXPECT_EQ(xattr(*ds, mine->ino, "user.vsfs.taker"), "1000");
  // Bob may write the directory (0777) but does not own it.
  EXPECT_EQ(err(ds->mkdir(snapdir(home->ino), "s2", 0755, kBob, kBob)), EPERM);
  EXPECT_TRUE(ds->mkdir(snapdir(home->ino), "s3", 0755, 0, 0).ok());
  // The whole datastore is root's, whoever owns the root directory.
  EXPECT_EQ(err(ds->mkdir(snapdir(kRootIno), "all", 0755, kAlice, kAlice)), EPERM);
  SetAttr chown;
  chown.uid = kAlice;
  ASSERT_TRUE(ds->setattr(kRootIno, chown).ok());
  EXPECT_EQ(err(ds->mkdir(snapdir(kRootIno), "all", 0755, kAlice, kAlice)), EPERM);
  EXPECT_TRUE(ds->mkdir(snapdir(kRootIno), "all", 0755, 0, 0).ok());
  // Deleting: the taker, the directory's owner and root; nobody else.
  EXPECT_EQ(err(ds->rmdir(snapdir(home->ino), "s1", kBob)), EPERM);
  EXPECT_TRUE(ds->lookup(snapdir(home->ino), "s1").ok());
  EXPECT_TRUE(ds->rmdir(snapdir(home->ino), "s3", kAlice).ok());  // root took it; Alice owns the directory
  EXPECT_TRUE(ds->rmdir(snapdir(home->ino), "s1", kAlice).ok());
  EXPECT_EQ(err(ds->rmdir(snapdir(kRootIno), "all", kAlice)), EPERM);  // owner or not
  // ".snapshots" lets the owner through to the policy, and nobody else.
  auto sd = ds->getattr(snapdir(home->ino));
  ASSERT_TRUE(sd.ok());
  EXPECT_EQ(sd->mode, S_IFDIR | 0755u);
  EXPECT_EQ(sd->uid, kAlice);
  ASSERT_TRUE(ds->close().ok());
}

TEST(SnapshotPolicy, TakersRootAndWriters) {
  OpenOptions o;
  o.snapshot_policy.takers = SnapshotTakers::kRoot;
  auto ds = open_fresh(o);
  auto home = ds->mkdir(kRootIno, "alice", 0770, kAlice, kAlice);
  EXPECT_EQ(err(ds->mkdir(snapdir(home->ino), "s", 0755, kAlice, kAlice)), EPERM);
  EXPECT_TRUE(ds->mkdir(snapdir(home->ino), "s", 0755, 0, 0).ok());
  EXPECT_EQ(err(ds->rmdir(snapdir(home->ino), "s", kBob)), EPERM);
  EXPECT_TRUE(ds->rmdir(snapdir(home->ino), "s", kAlice).ok());  // her directory
  ASSERT_TRUE(ds->close().ok());

  o.snapshot_policy.takers = SnapshotTakers::kWriters;
  ds = open_fresh(o);
  home = ds->mkdir(kRootIno, "shared", 0770, kAlice, kAlice);
  // .snapshots carries the directory's bits, so the kernel lets its writers through.
  EXPECT_EQ(ds->getattr(snapdir(home->ino))->mode, S_IFDIR | 0770u);
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "bobs", 0755, kBob, kBob).ok());
  EXPECT_EQ(err(ds->rmdir(snapdir(home->ino), "bobs", kCarol)), EPERM);
  EXPECT_TRUE(ds->rmdir(snapdir(home->ino), "bobs", kBob).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "bobs", 0755, kBob, kBob).ok());
  EXPECT_TRUE(ds->rmdir(snapdir(home->ino), "bobs", kAlice).ok());
  ASSERT_TRUE(ds->close().ok());
}

// Names are per directory: a user's snapshot never takes a name root needs elsewhere.
TEST(SnapshotPolicy, NamesAreScopedByDirectory) {
  auto ds = open_fresh();
  auto home = ds->mkdir(kRootIno, "alice", 0755, kAlice, kAlice);
  auto f = ds->create(home->ino, "disk.img", 0600, kAlice, kAlice);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, "x", 1).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "nightly", 0755, kAlice, kAlice).ok());
  auto all = ds->mkdir(snapdir(kRootIno), "nightly", 0755, 0, 0);
  ASSERT_TRUE(all.ok()) << all.error().to_string();
  EXPECT_EQ(err(ds->mkdir(snapdir(kRootIno), "nightly", 0755, 0, 0)), EEXIST);
  EXPECT_EQ(err(ds->mkdir(snapdir(home->ino), "nightly", 0755, kAlice, kAlice)), EEXIST);
  // Each directory's .snapshots and .cbt see their own.
  auto in_home = ds->lookup(snapdir(home->ino), "nightly");
  ASSERT_TRUE(in_home.ok());
  EXPECT_NE(in_home->ino, all->ino);
  EXPECT_TRUE(ds->lookup(all->ino, "alice").ok());
  EXPECT_TRUE(ds->lookup(in_home->ino, "disk.img").ok());
  auto cbt = ds->lookup(home->ino, kCbtDirName);
  ASSERT_TRUE(cbt.ok());
  EXPECT_TRUE(ds->lookup(cbt->ino, "nightly").ok());
  // Deleting one leaves the other.
  ASSERT_TRUE(ds->rmdir(snapdir(kRootIno), "nightly").ok());
  EXPECT_TRUE(ds->lookup(snapdir(home->ino), "nightly").ok());
  ASSERT_TRUE(ds->close().ok());
}

TEST(SnapshotPolicy, CountLimitsBindUsersNotRoot) {
  OpenOptions o;
  o.snapshot_policy.max_per_directory = 2;
  o.snapshot_policy.max_per_user = 3;
  auto ds = open_fresh(o);
  auto a = ds->mkdir(kRootIno, "a", 0755, kAlice, kAlice);
  auto b = ds->mkdir(kRootIno, "b", 0755, kAlice, kAlice);
  ASSERT_TRUE(ds->mkdir(snapdir(a->ino), "1", 0755, kAlice, kAlice).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(a->ino), "2", 0755, kAlice, kAlice).ok());
  EXPECT_EQ(err(ds->mkdir(snapdir(a->ino), "3", 0755, kAlice, kAlice)), EDQUOT);
  EXPECT_TRUE(ds->mkdir(snapdir(a->ino), "root", 0755, 0, 0).ok());  // root is not limited
  ASSERT_TRUE(ds->mkdir(snapdir(b->ino), "1", 0755, kAlice, kAlice).ok());
  EXPECT_EQ(err(ds->mkdir(snapdir(b->ino), "2", 0755, kAlice, kAlice)), EDQUOT);  // 3 taken
  ASSERT_TRUE(ds->rmdir(snapdir(a->ino), "1", kAlice).ok());
  // a has "2" and root's: still full for Alice; b has room and so has she now.
  EXPECT_EQ(err(ds->mkdir(snapdir(a->ino), "4", 0755, kAlice, kAlice)), EDQUOT);
  EXPECT_TRUE(ds->mkdir(snapdir(b->ino), "2", 0755, kAlice, kAlice).ok());
  ASSERT_TRUE(ds->close().ok());
}

// A user's mkdir/rmdir rounds push out only that user's deleted records: root's backup
// point stays, and root's next incremental backup still has its base.
TEST(SnapshotPolicy, HistoryIsKeptPerTaker) {
  OpenOptions o;
  o.cbt_history = 16;
  o.snapshot_policy.max_per_directory = 0;
  auto ds = open_fresh(o);
  auto home = ds->mkdir(kRootIno, "alice", 0755, kAlice, kAlice);
  auto f = ds->create(kRootIno, "disk.img", 0600, 0, 0);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, "a", 1).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(kRootIno), "monday", 0755, 0, 0).ok());
  ASSERT_TRUE(ds->rmdir(snapdir(kRootIno), "monday").ok());  // a backup point on record
  for (int i = 0; i < 1000; ++i) {
    const std::string name = "pin" + std::to_string(i);
    ASSERT_TRUE(ds->mkdir(snapdir(home->ino), name, 0755, kAlice, kAlice).ok());
    ASSERT_TRUE(ds->rmdir(snapdir(home->ino), name, kAlice).ok());
  }
  size_t alices = 0;
  bool monday = false;
  for (const auto& s : ds->snapshots()) {
    alices += s.taker_uid == kAlice ? 1 : 0;
    monday |= s.name == "monday" && s.deleted && s.taker_uid == 0;
  }
  EXPECT_EQ(alices, 16u);
  EXPECT_TRUE(monday);
  ASSERT_TRUE(ds->write_sync(f->ino, 8192, "b", 1).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(kRootIno), "tuesday", 0755, 0, 0).ok());
  auto cbt = ds->lookup(kRootIno, kCbtDirName);
  auto tue = ds->lookup(cbt->ino, "tuesday");
  ASSERT_TRUE(tue.ok());
  auto since = ds->lookup(tue->ino, "monday");
  ASSERT_TRUE(since.ok()) << since.error().to_string();
  auto map = ds->lookup(since->ino, "disk.img");
  ASSERT_TRUE(map.ok());
  std::string text(map->size_bytes, '\0');
  ASSERT_TRUE(ds->read_sync(map->ino, 0, text.size(), text.data()).ok());
  EXPECT_EQ(text, "8192 1 data\n");  // the grain written, to the end of the file
  ASSERT_TRUE(ds->close().ok());
}

// A datastore whose snapshots are all root's keeps the older on-disk form; the first
// record of another taker sets the feature bit, and both read back after a remount;
// fsck accepts a name used in two directories and by two takers' histories.
TEST(SnapshotPolicy, TakerSurvivesRemount) {
  device::SimOptions so;
  so.size_bytes = 256ull << 20;
  SimDevice sim(so);
  ASSERT_TRUE(mkfs(sim, {}).ok());
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(sim), {})).value();
  auto home = ds->mkdir(kRootIno, "alice", 0755, kAlice, kAlice);
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "roots", 0755, 0, 0).ok());
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  BorrowedDevice look(sim);
  auto sb = meta::read_superblock(look);
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->incompat, 0u);  // root's records only: the older form
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(sim), {})).value();
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "mine", 0755, kAlice, kAlice).ok());
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  sb = meta::read_superblock(look);
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->incompat, format::kIncompatSnapshotTakers);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(sim), {})).value();
  std::map<std::string, uint32_t> takers;
  for (const auto& s : ds->snapshots()) takers[s.name] = s.taker_uid;
  EXPECT_EQ(takers["mine"], kAlice);
  EXPECT_EQ(takers["roots"], 0u);
  for (Ino dir : {kRootIno, home->ino}) {
    ASSERT_TRUE(ds->mkdir(snapdir(dir), "same", 0755, 0, 0).ok());
  }
  ASSERT_TRUE(ds->rmdir(snapdir(home->ino), "same").ok());
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "same", 0755, kAlice, kAlice).ok());
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  auto report = fsck(look, {});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

// What the space figures promise: exclusive_bytes is exactly what deleting the snapshot
// frees, and shared_bytes what of its disks' data others reference too. Random writes,
// clones, unlinks and snapshots; then each snapshot, in random order, is measured and
// deleted, and the space the release frees is compared.
TEST(SnapshotSpace, ExclusiveIsWhatDeletionFrees) {
  for (uint32_t seed = 1; seed <= 16; ++seed) {
    OpenOptions o;
    o.start_background = false;
    o.snapshot_policy.max_per_directory = 0;
    auto ds = open_fresh(o, 512ull << 20);
    std::mt19937 rng(seed);
    auto dir = ds->mkdir(kRootIno, "vm", 0755, 0, 0);
    std::vector<std::pair<Ino, std::string>> files;  // (dir, name)
    auto settle = [&] {
      for (;;) {
        auto more = ds->run_background_step(BackgroundStep::kRelease);
        ASSERT_TRUE(more.ok()) << more.error().to_string();
        ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
        if (!*more) break;
      }
      ASSERT_EQ(ds->stats().release_pending, 0u);
    };
    std::vector<std::pair<Ino, std::string>> snaps;
    for (int step = 0; step < 40; ++step) {
      const int op = static_cast<int>(rng() % 10);
      const Ino where = rng() % 2 ? kRootIno : dir->ino;
      if (op < 4 || files.empty()) {
        const std::string name = "f" + std::to_string(step);
        ASSERT_TRUE(ds->create(where, name, 0644, 0, 0).ok());
        files.emplace_back(where, name);
      }
      auto [fdir, fname] = files[rng() % files.size()];
      auto f = ds->lookup(fdir, fname);
      ASSERT_TRUE(f.ok());
      if (op < 6) {
        const uint64_t off = (rng() % 512) * kGrainBytes + (rng() % 2 ? rng() % 4096 : 0);
        auto data = pattern(kGrainBytes * (1 + rng() % 300), seed * 1000 + step);
        ASSERT_TRUE(ds->write_sync(f->ino, off, data.data(), data.size()).ok());
      } else if (op == 6 && files.size() > 1) {
        auto [d2, n2] = files[rng() % files.size()];
        auto g = ds->lookup(d2, n2);
        if (g->ino != f->ino) {
          ASSERT_TRUE(ds->clone_range_sync(f->ino, 0, g->ino, 0, f->size_bytes).ok());
        }
      } else if (op == 7 && rng() % 2) {
        ASSERT_TRUE(ds->punch_hole_sync(f->ino, (rng() % 256) * kGrainBytes, 64 * kGrainBytes).ok());
      } else if (op == 7) {  // reserved grains are held like written ones
        ASSERT_TRUE(ds->allocate_sync(f->ino, (rng() % 512) * kGrainBytes,
                                      (1 + rng() % 128) * kGrainBytes, rng() % 2 == 0)
                        .ok());
      } else if (op == 8 && files.size() > 2) {
        ASSERT_TRUE(ds->unlink(fdir, fname).ok());
        files.erase(std::find(files.begin(), files.end(), std::make_pair(fdir, fname)));
      } else {
        const std::string name = "s" + std::to_string(step);
        ASSERT_TRUE(ds->mkdir(snapdir(where), name, 0755, 0, 0).ok());
        snaps.emplace_back(where, name);
      }
    }
    std::shuffle(snaps.begin(), snaps.end(), rng);
    for (const auto& [where, name] : snaps) {
      settle();
      auto s = ds->lookup(snapdir(where), name);
      ASSERT_TRUE(s.ok());
      auto space = ds->snapshot_space(view_of(s->ino));
      ASSERT_TRUE(space.ok()) << space.error().to_string();
      EXPECT_LE(space->shared_bytes, space->referenced_bytes);
      EXPECT_EQ(xattr(*ds, s->ino, "user.vsfs.changeid").empty(), false);
      const uint64_t used = ds->space().used_bytes;
      ASSERT_TRUE(ds->rmdir(snapdir(where), name).ok());
      settle();
      EXPECT_EQ(used - ds->space().used_bytes, space->exclusive_bytes)
          << "seed " << seed << " snapshot " << name << " referenced " << space->referenced_bytes
          << " shared " << space->shared_bytes << " live snapshots " << snaps.size();
    }
    ASSERT_TRUE(ds->close().ok());
  }
}

// The figures on simple cases: a fresh snapshot holds nothing alone; once the live disk
// is rewritten it holds the old data alone; a per-directory snapshot counts its own
// disks as referenced.
TEST(SnapshotSpace, FreshSharedThenExclusive) {
  auto ds = open_fresh();
  auto vm = ds->mkdir(kRootIno, "vm", 0755, 0, 0);
  auto f = ds->create(vm->ino, "disk", 0644, 0, 0);
  auto other = ds->create(kRootIno, "other", 0644, 0, 0);
  const auto v1 = pattern(1 << 20, 1);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v1.data(), v1.size()).ok());
  ASSERT_TRUE(ds->write_sync(other->ino, 0, v1.data(), v1.size()).ok());
  auto s = ds->mkdir(snapdir(vm->ino), "s", 0755, 0, 0);
  ASSERT_TRUE(s.ok());
  auto fresh = ds->snapshot_space(view_of(s->ino));
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->exclusive_bytes, 0u);
  EXPECT_EQ(fresh->referenced_bytes, 1u << 20);  // its own disk, not "other"
  EXPECT_EQ(fresh->shared_bytes, 1u << 20);
  const auto v2 = pattern(1 << 20, 2);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v2.data(), v2.size()).ok());
  auto moved = ds->snapshot_space(view_of(s->ino));
  ASSERT_TRUE(moved.ok());
  EXPECT_GE(moved->exclusive_bytes, 1u << 20);         // the old data, and its map
  EXPECT_LE(moved->exclusive_bytes, (1u << 20) + 64 * kGrainBytes);
  EXPECT_EQ(moved->shared_bytes, 0u);
  EXPECT_EQ(xattr(*ds, s->ino, "user.vsfs.taker"), "0");
  ASSERT_TRUE(ds->rmdir(snapdir(vm->ino), "s").ok());
  EXPECT_EQ(ds->snapshot_space(view_of(s->ino)).error().errno_value, ENOENT);
  ASSERT_TRUE(ds->close().ok());
}

// A deleted disk's map waiting for the releaser is no holder: the snapshot that shares
// it holds it alone as soon as the disk is gone.
TEST(SnapshotSpace, TreesWaitingForReleaseDoNotShare) {
  OpenOptions o;
  o.start_background = false;  // nothing is released unless the test runs it
  auto ds = open_fresh(o);
  auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
  const auto v1 = pattern(1 << 20, 1);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v1.data(), v1.size()).ok());
  auto s = ds->mkdir(snapdir(kRootIno), "s", 0755, 0, 0);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "disk").ok());
  ASSERT_GT(ds->stats().release_pending, 0u);
  auto space = ds->snapshot_space(view_of(s->ino));
  ASSERT_TRUE(space.ok());
  EXPECT_GE(space->exclusive_bytes, 1u << 20);
  EXPECT_EQ(space->shared_bytes, 0u);
  ASSERT_TRUE(ds->close().ok());
}

// max_held_bytes_per_user: a user whose snapshots hold that much alone takes no more
// until one is deleted.
TEST(SnapshotPolicy, HeldBytesLimit) {
  OpenOptions o;
  o.snapshot_policy.max_held_bytes_per_user = 1 << 20;
  auto ds = open_fresh(o);
  auto home = ds->mkdir(kRootIno, "alice", 0755, kAlice, kAlice);
  auto f = ds->create(home->ino, "disk", 0600, kAlice, kAlice);
  const auto v1 = pattern(2 << 20, 1);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v1.data(), v1.size()).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(home->ino), "a", 0755, kAlice, kAlice).ok());  // holds nothing alone
  const auto v2 = pattern(2 << 20, 2);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v2.data(), v2.size()).ok());  // "a" now holds v1
  EXPECT_EQ(err(ds->mkdir(snapdir(home->ino), "c", 0755, kAlice, kAlice)), EDQUOT);
  EXPECT_TRUE(ds->mkdir(snapdir(home->ino), "r", 0755, 0, 0).ok());  // root is not limited
  ASSERT_TRUE(ds->rmdir(snapdir(home->ino), "a", kAlice).ok());
  EXPECT_TRUE(ds->mkdir(snapdir(home->ino), "c", 0755, kAlice, kAlice).ok());
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
