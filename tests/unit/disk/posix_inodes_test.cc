// Symlinks, fifos, sockets, device nodes and xattrs through the Datastore API on the
// simulated device: what each keeps, the limits and their errors, snapshots that keep
// them read-only, the space their extra chains take and give back, a power cut in the
// middle of changing them, and fsck after all of it.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <gtest/gtest.h>

#include <thread>

#include "format/format.h"
#include "support/borrowed_device.h"
#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;
using testing::BorrowedDevice;

template <typename T>
int err(const Result<T>& r) {
  return r.ok() ? 0 : r.error().errno_value;
}

std::string xattr_of(Datastore& ds, Ino ino, const std::string& name) {
  auto all = ds.xattrs(ino);
  EXPECT_TRUE(all.ok());
  for (const auto& [k, v] : *all) {
    if (k == name) return v;
  }
  return "<absent>";
}

void expect_fsck_clean(device::Device& dev) {
  auto report = fsck(dev, {});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_TRUE(report->problems.empty()) << report->problems.front();
}

TEST(PosixInodes, EveryKindIsKeptAndListed) {
  auto sim = fresh_device();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  auto d = ds->mkdir(kRootIno, "d", 0755, 1000, 1000);
  const auto dir_before = ds->getattr(d->ino);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  auto l = ds->symlink(d->ino, "l", "../some/where", 1000, 1000);
  ASSERT_TRUE(l.ok()) << l.error().to_string();
  EXPECT_EQ(l->mode, S_IFLNK | 0777u);
  EXPECT_EQ(l->size_bytes, 13u);
  EXPECT_EQ(l->uid, 1000u);
  EXPECT_EQ(l->nlink, 1u);
  EXPECT_GT(ds->getattr(d->ino)->mtime_ns, dir_before->mtime_ns);
  EXPECT_EQ(*ds->readlink(l->ino), "../some/where");
  auto p = ds->mknod(d->ino, "p", S_IFIFO | 0640, makedev(9, 9), 0, 0);
  auto s = ds->mknod(d->ino, "s", S_IFSOCK | 0755, 0, 0, 0);
  auto c = ds->mknod(d->ino, "c", S_IFCHR | 0600, makedev(1, 3), 0, 0);
  auto b = ds->mknod(d->ino, "b", S_IFBLK | 0660, makedev(8, 1), 0, 6);
  auto r = ds->mknod(d->ino, "r", S_IFREG | 0644, 0, 0, 0);
  ASSERT_TRUE(p.ok() && s.ok() && c.ok() && b.ok() && r.ok());
  EXPECT_EQ(p->mode, S_IFIFO | 0640u);
  EXPECT_EQ(p->rdev, 0u);  // only devices keep one
  EXPECT_EQ(s->mode, S_IFSOCK | 0755u);
  EXPECT_EQ(c->rdev, makedev(1, 3));
  EXPECT_EQ(b->rdev, makedev(8, 1));
  EXPECT_EQ(b->gid, 6u);
  EXPECT_EQ(r->mode, S_IFREG | 0644u);
  EXPECT_EQ(err(ds->mknod(d->ino, "x", 0030000 | 0644, 0, 0, 0)), EINVAL);
  EXPECT_EQ(err(ds->mknod(d->ino, "p", S_IFIFO | 0644, 0, 0, 0)), EEXIST);
  EXPECT_EQ(err(ds->readlink(p->ino)), EINVAL);
  // Data operations need a regular file.
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(err(ds->read_sync(p->ino, 0, buf.size(), buf.data())), EINVAL);
  EXPECT_EQ(err(ds->write_sync(c->ino, 0, buf.data(), buf.size())), EINVAL);
  EXPECT_EQ(err(ds->write_sync(l->ino, 0, buf.data(), buf.size())), EINVAL);
  // readdir gives each its type.
  auto list = ds->readdir(d->ino);
  ASSERT_TRUE(list.ok());
  std::map<std::string, uint32_t> types;
  for (const auto& e : *list) types[e.name] = e.mode;
  EXPECT_EQ(types["l"], uint32_t{S_IFLNK});
  EXPECT_EQ(types["p"], uint32_t{S_IFIFO});
  EXPECT_EQ(types["s"], uint32_t{S_IFSOCK});
  EXPECT_EQ(types["c"], uint32_t{S_IFCHR});
  EXPECT_EQ(types["b"], uint32_t{S_IFBLK});
  EXPECT_EQ(types["r"], uint32_t{S_IFREG});
  // Hard links of any kind but directories; rename keeps the kind.
  auto pl = ds->link(p->ino, kRootIno, "p2");
  ASSERT_TRUE(pl.ok());
  EXPECT_EQ(pl->nlink, 2u);
  ASSERT_TRUE(ds->rename(d->ino, "l", kRootIno, "l2", RenameFlags::kNone).ok());
  EXPECT_EQ(*ds->readlink(ds->lookup(kRootIno, "l2")->ino), "../some/where");
  // lchown and utimensat(AT_SYMLINK_NOFOLLOW) reach the symlink itself.
  SetAttr sa;
  sa.uid = 7;
  sa.mtime_ns = 1234567890ull * 1000000000ull;
  auto after = ds->setattr(l->ino, sa);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->uid, 7u);
  EXPECT_EQ(after->mtime_ns, sa.mtime_ns.value());
  EXPECT_EQ(after->mode, S_IFLNK | 0777u);

  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  EXPECT_EQ(*ds->readlink(ds->lookup(kRootIno, "l2")->ino), "../some/where");
  EXPECT_EQ(ds->lookup(d->ino, "c")->rdev, makedev(1, 3));
  EXPECT_EQ(ds->lookup(d->ino, "p")->nlink, 2u);
  EXPECT_EQ(ds->lookup(d->ino, "b")->mode, S_IFBLK | 0660u);
  ASSERT_TRUE(ds->close().ok());
}

TEST(PosixInodes, SymlinkTargetLimits) {
  auto ds = open_ds(fresh_device());
  const std::string longest(format::kMaxSymlinkBytes, 't');  // PATH_MAX - 1, as ext4
  auto l = ds->symlink(kRootIno, "long", longest, 0, 0);
  ASSERT_TRUE(l.ok()) << l.error().to_string();
  EXPECT_EQ(l->size_bytes, longest.size());
  EXPECT_EQ(*ds->readlink(l->ino), longest);
  EXPECT_EQ(err(ds->symlink(kRootIno, "longer", longest + "t", 0, 0)), ENAMETOOLONG);
  EXPECT_EQ(err(ds->symlink(kRootIno, "empty", "", 0, 0)), ENOENT);
  EXPECT_EQ(err(ds->symlink(kRootIno, std::string(256, 'n'), "x", 0, 0)), ENAMETOOLONG);
  EXPECT_EQ(err(ds->symlink(kRootIno, ".snapshots", "x", 0, 0)), EEXIST);
  EXPECT_FALSE(ds->lookup(kRootIno, "longer").ok());  // nothing left of a refusal
  ASSERT_TRUE(ds->close().ok());
}

TEST(PosixInodes, XattrsOnEveryKind) {
  auto sim = fresh_device();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  auto f = ds->create(kRootIno, "disk.img", 0600, 0, 0);
  auto d = ds->mkdir(kRootIno, "vm", 0755, 0, 0);
  auto l = ds->symlink(kRootIno, "l", "disk.img", 0, 0);
  auto p = ds->mknod(kRootIno, "p", S_IFIFO | 0644, 0, 0, 0);
  for (Ino ino : {f->ino, d->ino, l->ino, p->ino}) {
    const auto before = ds->getattr(ino);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_TRUE(ds->setxattr(ino, "trusted.libvirt.security.dac", "+107:+107", 0).ok());
    ASSERT_TRUE(ds->setxattr(ino, "security.selinux", "system_u:object_r:svirt_image_t:s0", 0).ok());
    ASSERT_TRUE(ds->setxattr(ino, "user.empty", "", 0).ok());
    EXPECT_GT(ds->getattr(ino)->ctime_ns, before->ctime_ns);
    EXPECT_EQ(ds->getattr(ino)->mtime_ns, before->mtime_ns);
    auto all = ds->xattrs(ino);
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 3u);
    EXPECT_EQ((*all)[0].first, "security.selinux");  // sorted
    EXPECT_EQ(xattr_of(*ds, ino, "user.empty"), "");
  }
  EXPECT_EQ(*ds->readlink(l->ino), "disk.img");  // the target shares the chain
  // Flags, names, sizes.
  EXPECT_EQ(err(ds->setxattr(f->ino, "user.empty", "x", XATTR_CREATE)), EEXIST);
  EXPECT_EQ(err(ds->setxattr(f->ino, "user.none", "x", XATTR_REPLACE)), ENODATA);
  ASSERT_TRUE(ds->setxattr(f->ino, "user.empty", "now", XATTR_REPLACE).ok());
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.empty"), "now");
  EXPECT_EQ(err(ds->setxattr(f->ino, "system.posix_acl_access", "x", 0)), EOPNOTSUPP);
  EXPECT_EQ(err(ds->setxattr(f->ino, "user.vsfs.changeid", "1", 0)), EPERM);
  EXPECT_EQ(err(ds->setxattr(f->ino, "user." + std::string(251, 'n'), "x", 0)), ERANGE);
  ASSERT_TRUE(ds->setxattr(f->ino, "user." + std::string(250, 'n'), "x", 0).ok());
  const std::string grain(4096, 'v');
  ASSERT_TRUE(ds->setxattr(f->ino, "user.grain", grain, 0).ok());
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.grain"), grain);
  EXPECT_EQ(err(ds->setxattr(f->ino, "user.more", grain + "v", 0)), E2BIG);
  // Up to 64 KiB in all, then ENOSPC with nothing changed.
  int stored = 0;
  Result<void> r = ok_result();
  for (; stored < 40 && r.ok(); ++stored) {
    r = ds->setxattr(f->ino, "user.fill" + std::to_string(stored), grain, 0);
  }
  EXPECT_EQ(r.ok() ? 0 : r.error().errno_value, ENOSPC);
  EXPECT_GE(stored, 14);
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.fill" + std::to_string(stored - 1)), "<absent>");
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.fill" + std::to_string(stored - 2)), grain);
  EXPECT_EQ(err(ds->removexattr(f->ino, "user.none")), ENODATA);
  ASSERT_TRUE(ds->removexattr(f->ino, "user.fill0").ok());
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.fill0"), "<absent>");

  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.grain"), grain);
  EXPECT_EQ(xattr_of(*ds, l->ino, "trusted.libvirt.security.dac"), "+107:+107");
  EXPECT_EQ(*ds->readlink(l->ino), "disk.img");
  ASSERT_TRUE(ds->close().ok());
}

// A snapshot keeps what the inodes were: the target, the kind, the xattrs, read-only.
// Changes after it copy the chain; deleting the snapshot and the files gives every
// grain back.
TEST(PosixInodes, SnapshotsKeepThemAndTheSpaceComesBack) {
  auto sim = fresh_device();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  const uint64_t used0 = ds->space().used_bytes;
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  auto l = ds->symlink(kRootIno, "l", std::string(3000, 'a'), 0, 0);
  auto c = ds->mknod(kRootIno, "c", S_IFCHR | 0644, makedev(4, 64), 0, 0);
  const std::string big(4000, 'x');
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(ds->setxattr(f->ino, "user.k" + std::to_string(i), big, 0).ok());
  }
  ASSERT_TRUE(ds->setxattr(l->ino, "trusted.t", "before", 0).ok());
  auto snap = ds->mkdir(make_ino(kSnapshotsDirView, kRootIno), "s", 0755, 0, 0);
  ASSERT_TRUE(snap.ok());
  // After the snapshot the live inodes change; the snapshot's do not.
  ASSERT_TRUE(ds->setxattr(l->ino, "trusted.t", "after", 0).ok());
  ASSERT_TRUE(ds->removexattr(f->ino, "user.k3").ok());
  auto sl = ds->lookup(snap->ino, "l");
  auto sf = ds->lookup(snap->ino, "f");
  auto sc = ds->lookup(snap->ino, "c");
  ASSERT_TRUE(sl.ok() && sf.ok() && sc.ok());
  EXPECT_EQ(sl->mode, S_IFLNK | 0777u);
  EXPECT_EQ(*ds->readlink(sl->ino), std::string(3000, 'a'));
  EXPECT_EQ(xattr_of(*ds, sl->ino, "trusted.t"), "before");
  EXPECT_EQ(xattr_of(*ds, l->ino, "trusted.t"), "after");
  EXPECT_EQ(xattr_of(*ds, sf->ino, "user.k3"), big);
  EXPECT_EQ(xattr_of(*ds, f->ino, "user.k3"), "<absent>");
  EXPECT_EQ(sc->rdev, makedev(4, 64));
  EXPECT_EQ(sc->mode, S_IFCHR | 0444u);
  EXPECT_EQ(err(ds->setxattr(sf->ino, "user.new", "x", 0)), EROFS);
  EXPECT_EQ(err(ds->removexattr(sf->ino, "user.k1")), EROFS);
  EXPECT_EQ(err(ds->symlink(snap->ino, "n", "x", 0, 0)), EROFS);
  EXPECT_EQ(err(ds->mknod(snap->ino, "n", S_IFIFO | 0644, 0, 0, 0)), EROFS);
  // The snapshot holds the chains the live inodes no longer name.
  auto held = ds->snapshot_space(view_of(snap->ino));
  ASSERT_TRUE(held.ok());
  EXPECT_GE(held->exclusive_bytes, 11 * 4096u);  // f's old chain (10+ blocks), l's old one
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
  ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), quiet())).value();
  snap = ds->lookup(make_ino(kSnapshotsDirView, kRootIno), "s");
  EXPECT_EQ(xattr_of(*ds, ds->lookup(snap->ino, "l")->ino, "trusted.t"), "before");
  ASSERT_TRUE(ds->rmdir(make_ino(kSnapshotsDirView, kRootIno), "s").ok());
  for (const char* name : {"f", "l", "c"}) ASSERT_TRUE(ds->unlink(kRootIno, name).ok());
  for (int i = 0; i < 500 && ds->space().used_bytes > used0 + 8 * 4096; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_LE(ds->space().used_bytes, used0 + 8 * 4096);
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
}

// A power cut at any point of a run of symlink, mknod, setxattr and removexattr leaves
// a datastore that opens, checks clean, and holds each committed change whole.
TEST(PosixInodes, PowerCutLeavesWholeInodes) {
  auto owned = fresh_device();
  SimDevice* sim = owned.get();
  auto ds = std::move(Datastore::open(std::make_unique<BorrowedDevice>(*sim), manual_commits())).value();
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  const std::string v(3000, 'q');
  for (int round = 0; round < 12; ++round) {
    const std::string n = std::to_string(round);
    ASSERT_TRUE(ds->symlink(kRootIno, "l" + n, std::string(100 + round * 300, 'a' + round), 0, 0).ok());
    ASSERT_TRUE(ds->mknod(kRootIno, "p" + n, S_IFIFO | 0644, 0, 0, 0).ok());
    ASSERT_TRUE(ds->setxattr(f->ino, "user.r" + n, v + n, 0).ok());
    if (round % 3 == 2) {
      ASSERT_TRUE(ds->removexattr(f->ino, "user.r" + std::to_string(round - 1)).ok());
    }
    if (round % 2 == 1) {
      ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
    }
    auto image = sim->power_loss(device::PowerLossMode::kDropAll, static_cast<uint32_t>(round));
    auto after = open_after_power_loss(std::move(image));
    ASSERT_NE(after, nullptr);
    // Committed rounds are there; whatever is there is whole.
    const int committed = round % 2 == 1 ? round : round - 1;
    for (int k = 0; k <= round; ++k) {
      const std::string m = std::to_string(k);
      auto l = after->lookup(kRootIno, "l" + m);
      if (k <= committed) {
        ASSERT_TRUE(l.ok()) << "round " << round << " symlink " << k;
      }
      if (!l.ok()) continue;
      EXPECT_EQ(*after->readlink(l->ino), std::string(100 + k * 300, 'a' + k));
      EXPECT_EQ(after->lookup(kRootIno, "p" + m)->mode, S_IFIFO | 0644u);
      const std::string x = xattr_of(*after, f->ino, "user.r" + m);
      const bool removal = k % 3 == 1 && k + 1 <= round;
      if (removal && k + 1 <= committed) {
        EXPECT_EQ(x, "<absent>") << "round " << round << " xattr " << k;
      } else if (!removal) {
        EXPECT_EQ(x, v + m) << "round " << round << " xattr " << k;
      } else {
        EXPECT_TRUE(x == "<absent>" || x == v + m) << "round " << round << " xattr " << k;
      }
    }
    ASSERT_TRUE(after->close().ok());
  }
  ASSERT_TRUE(ds->close().ok());
  ds.reset();
  expect_fsck_clean(*sim);
}

}  // namespace
}  // namespace vsfs
