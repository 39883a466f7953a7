// Hard links through the Datastore API on the simulated device: one disk with several
// names (one map, one space count, a changed-block map under each name), the link,
// unlink and rename rules, timestamps, snapshots, and fsck after all of it.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <thread>

#include "support/borrowed_device.h"
#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;
using testing::BorrowedDevice;

int err(const Result<Attr>& r) { return r.ok() ? 0 : r.error().errno_value; }

TEST(HardLink, OneDiskTwoNames) {
  auto sim = fresh_device();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  auto d = ds->mkdir(kRootIno, "d", 0755, 0, 0);
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  const auto v1 = pattern(3 << 20, 1);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v1.data(), v1.size()).ok());
  const uint64_t used = ds->space().used_bytes;
  const auto dir_before = ds->getattr(d->ino);
  const auto f_before = ds->getattr(f->ino);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  auto g = ds->link(f->ino, d->ino, "g");
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  EXPECT_EQ(g->ino, f->ino);
  EXPECT_EQ(g->nlink, 2u);
  EXPECT_GT(g->ctime_ns, f_before->ctime_ns);                           // the inode changed
  EXPECT_EQ(g->mtime_ns, f_before->mtime_ns);                           // its data did not
  EXPECT_GT(ds->getattr(d->ino)->mtime_ns, dir_before->mtime_ns);       // the directory did
  EXPECT_EQ(ds->lookup(d->ino, "g")->ino, f->ino);
  EXPECT_LT(ds->space().used_bytes, used + 64 * 4096);  // no data: a few metadata grains
  // A write through one name is read through the other.
  const auto v2 = pattern(1 << 20, 2);
  ASSERT_TRUE(ds->write_sync(g->ino, 4096, v2.data(), v2.size()).ok());
  auto want = v1;
  std::copy(v2.begin(), v2.end(), want.begin() + 4096);
  EXPECT_EQ(read_all(*ds, ds->lookup(kRootIno, "f")->ino), want);
  // Refusals.
  EXPECT_EQ(err(ds->link(d->ino, kRootIno, "dirlink")), EPERM);
  EXPECT_EQ(err(ds->link(f->ino, d->ino, "g")), EEXIST);
  EXPECT_EQ(err(ds->link(f->ino, kRootIno, ".snapshots")), EEXIST);
  EXPECT_EQ(err(ds->link(f->ino, kRootIno, std::string(256, 'x'))), ENAMETOOLONG);
  auto s = ds->mkdir(make_ino(kSnapshotsDirView, kRootIno), "s", 0755, 0, 0);
  ASSERT_TRUE(s.ok());
  auto in_snap = ds->lookup(s->ino, "f");
  ASSERT_TRUE(in_snap.ok());
  EXPECT_EQ(in_snap->nlink, 2u);
  EXPECT_EQ(err(ds->link(in_snap->ino, kRootIno, "from_snap")), EXDEV);
  EXPECT_EQ(err(ds->link(f->ino, s->ino, "into_snap")), EROFS);
  // Both names are in the snapshot, and in its changed-block maps, with the same map.
  auto sd = ds->lookup(s->ino, "d");
  EXPECT_EQ(ds->lookup(sd->ino, "g")->ino, make_ino(view_of(s->ino), f->ino));
  auto cbt = ds->lookup(kRootIno, kCbtDirName);
  auto full = ds->lookup(ds->lookup(cbt->ino, "s")->ino, "full");
  auto map_f = ds->lookup(full->ino, "f");
  auto map_g = ds->lookup(ds->lookup(full->ino, "d")->ino, "g");
  ASSERT_TRUE(map_f.ok() && map_g.ok());
  EXPECT_EQ(read_all(*ds, map_f->ino), read_all(*ds, map_g->ino));
  EXPECT_FALSE(read_all(*ds, map_f->ino).empty());
  // rename of one name over the other (the same inode) changes nothing.
  ASSERT_TRUE(ds->rename(kRootIno, "f", d->ino, "g", RenameFlags::kNone).ok());
  EXPECT_TRUE(ds->lookup(kRootIno, "f").ok());
  EXPECT_EQ(ds->getattr(f->ino)->nlink, 2u);
  // Unlinking one name keeps the disk; the last frees it.
  ASSERT_TRUE(ds->rmdir(make_ino(kSnapshotsDirView, kRootIno), "s").ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "f").ok());
  EXPECT_EQ(ds->getattr(f->ino)->nlink, 1u);
  EXPECT_EQ(read_all(*ds, f->ino), want);
  ASSERT_TRUE(ds->link(f->ino, kRootIno, "f2").ok());
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  auto report = fsck(*sim, {});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  EXPECT_EQ(ds->getattr(f->ino)->nlink, 2u);
  EXPECT_EQ(read_all(*ds, ds->lookup(kRootIno, "f2")->ino), want);
  ASSERT_TRUE(ds->unlink(kRootIno, "f2").ok());
  ASSERT_TRUE(ds->unlink(d->ino, "g").ok());
  EXPECT_EQ(ds->getattr(f->ino).error().errno_value, ENOENT);
  for (int i = 0; i < 300 && ds->space().used_bytes > used - (2 << 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LT(ds->space().used_bytes, used - (2 << 20));  // the data went with the last name
  ASSERT_TRUE(ds->close().ok());
}

// The last name unlinked while the disk is open: it reads on until the last close, and
// cannot get a new name meanwhile (as on a local filesystem, without O_TMPFILE).
TEST(HardLink, UnlinkedWhileOpen) {
  auto ds = open_ds(fresh_device());
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  ASSERT_TRUE(ds->link(f->ino, kRootIno, "g").ok());
  const auto v = pattern(1 << 20, 3);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v.data(), v.size()).ok());
  ASSERT_TRUE(ds->open_ref(f->ino).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "f").ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "g").ok());
  EXPECT_EQ(read_all(*ds, f->ino), v);
  EXPECT_EQ(err(ds->link(f->ino, kRootIno, "again")), ENOENT);
  ds->release_ref(f->ino);
  EXPECT_EQ(ds->getattr(f->ino).error().errno_value, ENOENT);
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
