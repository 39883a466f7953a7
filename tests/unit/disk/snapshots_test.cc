// Snapshots and clones through the Datastore API on the simulated device.
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

std::unique_ptr<SimDevice> fresh_device() {
  device::SimOptions o;
  o.size_bytes = 256ull << 20;
  auto dev = std::make_unique<SimDevice>(o);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  return dev;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> read_all(Datastore& ds, Ino ino) {
  auto a = ds.getattr(ino);
  EXPECT_TRUE(a.ok());
  std::vector<uint8_t> v(a->size_bytes);
  auto r = ds.read_sync(ino, 0, v.size(), v.data());
  EXPECT_TRUE(r.ok());
  return v;
}

Ino snapdir(Ino dir) { return make_ino(kSnapshotsDirView, dir); }

TEST(Snapshot, FreezesTheTreeAndIsReadOnly) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = std::move(Datastore::open(std::move(dev), {})).value();
  auto vm = ds->mkdir(kRootIno, "vm1", 0755, 0, 0);
  auto img = ds->create(vm->ino, "vm1.img", 0644, 0, 0);
  auto v1 = pattern(300000, 1);
  ASSERT_TRUE(ds->write_sync(img->ino, 0, v1.data(), v1.size()).ok());
  const uint64_t gen0 = ds->stats().generation;

  auto snap = ds->mkdir(snapdir(kRootIno), "s1", 0755, 0, 0);
  ASSERT_TRUE(snap.ok()) << snap.error().to_string();
  EXPECT_EQ(ds->stats().generation, gen0 + 1);
  auto xa = ds->xattrs(snap->ino);
  ASSERT_TRUE(xa.ok());
  ASSERT_EQ(xa->size(), 3u);  // changeid, created, taker
  EXPECT_EQ((*xa)[0].first, "user.vsfs.changeid");
  EXPECT_EQ((*xa)[0].second, std::to_string(gen0));

  // Overwrite the live disk (in place before, redirected now) and grow it.
  auto v2 = pattern(400000, 2);
  ASSERT_TRUE(ds->write_sync(img->ino, 1000, v2.data(), v2.size()).ok());
  auto svm = ds->lookup(snap->ino, "vm1");
  ASSERT_TRUE(svm.ok());
  auto simg = ds->lookup(svm->ino, "vm1.img");
  ASSERT_TRUE(simg.ok());
  EXPECT_EQ(view_of(simg->ino), view_of(snap->ino));
  EXPECT_EQ(read_all(*ds, simg->ino), v1);
  auto live = read_all(*ds, img->ino);
  EXPECT_EQ(std::memcmp(live.data() + 1000, v2.data(), v2.size()), 0);

  // Every change under the snapshot answers EROFS.
  EXPECT_EQ(ds->write_sync(simg->ino, 0, "x", 1).error().errno_value, EROFS);
  EXPECT_EQ(ds->truncate_sync(simg->ino, 0).error().errno_value, EROFS);
  EXPECT_EQ(ds->punch_hole_sync(simg->ino, 0, 4096).error().errno_value, EROFS);
  EXPECT_EQ(ds->create(svm->ino, "new", 0644, 0, 0).error().errno_value, EROFS);
  EXPECT_EQ(ds->mkdir(svm->ino, "new", 0755, 0, 0).error().errno_value, EROFS);
  EXPECT_EQ(ds->unlink(svm->ino, "vm1.img").error().errno_value, EROFS);
  EXPECT_EQ(ds->rmdir(snap->ino, "vm1").error().errno_value, EROFS);
  EXPECT_EQ(ds->rename(svm->ino, "vm1.img", svm->ino, "x", RenameFlags::kNone).error().errno_value, EROFS);
  SetAttr chmod;
  chmod.mode = 0600;
  EXPECT_EQ(ds->setattr(simg->ino, chmod).error().errno_value, EROFS);
  // No recursion: a snapshot has no ".snapshots", and listings never show it.
  EXPECT_EQ(ds->lookup(snap->ino, kSnapshotsDirName).error().errno_value, ENOENT);
  auto root_list = ds->readdir(kRootIno);
  ASSERT_TRUE(root_list.ok());
  for (const auto& e : *root_list) EXPECT_NE(e.name, kSnapshotsDirName);

  // Names.
  EXPECT_EQ(ds->mkdir(snapdir(kRootIno), "s1", 0755, 0, 0).error().errno_value, EEXIST);
  EXPECT_EQ(ds->mkdir(snapdir(kRootIno), "full", 0755, 0, 0).error().errno_value, EINVAL);
  EXPECT_EQ(ds->mkdir(snapdir(kRootIno), "..", 0755, 0, 0).error().errno_value, EINVAL);
  EXPECT_EQ(ds->mkdir(snapdir(kRootIno), std::string(256, 'n'), 0755, 0, 0).error().errno_value, ENAMETOOLONG);
  EXPECT_TRUE(ds->mkdir(snapdir(kRootIno), std::string(255, 'n'), 0755, 0, 0).ok());
  EXPECT_EQ(ds->create(kRootIno, kSnapshotsDirName, 0644, 0, 0).error().errno_value, EEXIST);

  // Per-directory snapshot: its view is the directory.
  auto vs = ds->mkdir(snapdir(vm->ino), "vmsnap", 0755, 0, 0);
  ASSERT_TRUE(vs.ok());
  auto list = ds->readdir(snapdir(vm->ino));
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "vmsnap");
  EXPECT_TRUE(ds->lookup(vs->ino, "vm1.img").ok());
  EXPECT_EQ(ds->readdir(snapdir(kRootIno))->size(), 2u);

  // Survives a remount.
  ASSERT_TRUE(ds->close().ok());
  auto image = raw->clone();
  ds.reset();
  auto ds2 = std::move(Datastore::open(std::move(image), {})).value();
  auto s2 = ds2->lookup(snapdir(kRootIno), "s1");
  ASSERT_TRUE(s2.ok());
  auto s2img = ds2->lookup(ds2->lookup(s2->ino, "vm1")->ino, "vm1.img");
  ASSERT_TRUE(s2img.ok());
  EXPECT_EQ(read_all(*ds2, s2img->ino), v1);
  ASSERT_TRUE(ds2->close().ok());
}

TEST(Snapshot, DeleteInAnyOrderReleasesSpace) {
  for (int order = 0; order < 6; ++order) {
    auto ds = std::move(Datastore::open(fresh_device(), {})).value();
    auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
    const uint64_t free0 = ds->space().free_bytes;
    std::vector<std::vector<uint8_t>> versions;
    const char* names[3] = {"a", "b", "c"};
    for (int i = 0; i < 3; ++i) {
      versions.push_back(pattern(2 << 20, 10 + i));
      ASSERT_TRUE(ds->write_sync(f->ino, 0, versions.back().data(), versions.back().size()).ok());
      ASSERT_TRUE(ds->mkdir(snapdir(kRootIno), names[i], 0755, 0, 0).ok());
    }
    int perm[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    std::vector<bool> gone(3, false);
    for (int k = 0; k < 3; ++k) {
      const int victim = perm[order][k];
      ASSERT_TRUE(ds->rmdir(snapdir(kRootIno), names[victim]).ok());
      gone[victim] = true;
      for (int i = 0; i < 3; ++i) {
        auto s = ds->lookup(snapdir(kRootIno), names[i]);
        ASSERT_EQ(s.ok(), !gone[i]);
        if (!s.ok()) continue;
        EXPECT_EQ(read_all(*ds, ds->lookup(s->ino, "disk")->ino), versions[i]) << order << " " << i;
      }
      EXPECT_EQ(read_all(*ds, f->ino), versions[2]);
    }
    // History keeps the deleted names and changeIds.
    auto all = ds->snapshots();
    ASSERT_EQ(all.size(), 3u);
    for (const auto& s : all) EXPECT_TRUE(s.deleted);
    ASSERT_TRUE(ds->unlink(kRootIno, "disk").ok());
    for (int i = 0; i < 300 && ds->space().free_bytes < free0 - (256 << 10); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GE(ds->space().free_bytes, free0 - (256 << 10));
    ASSERT_TRUE(ds->close().ok());
  }
}

// A snapshot deleted while a file of it is open leaves the namespace at once (its name
// is free again), but the open file reads to the end and stats as before while the
// background release runs; its tree is released after the last close, and its view id
// is not handed to a new snapshot meanwhile.
TEST(Snapshot, DeletedWhileOpenIsReleasedAfterTheLastClose) {
  OpenOptions o;
  o.start_background = false;  // the test runs the releaser's steps
  auto ds = std::move(Datastore::open(fresh_device(), o)).value();
  auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
  const auto v1 = pattern(4 << 20, 21);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v1.data(), v1.size()).ok());
  auto s1 = ds->mkdir(snapdir(kRootIno), "s1", 0755, 0, 0);
  ASSERT_TRUE(s1.ok());
  auto in_s1 = ds->lookup(s1->ino, "disk");
  ASSERT_TRUE(in_s1.ok());
  ASSERT_TRUE(ds->open_ref(in_s1->ino).ok());
  const auto v2 = pattern(4 << 20, 22);  // the live disk moves on: s1 alone holds v1
  ASSERT_TRUE(ds->write_sync(f->ino, 0, v2.data(), v2.size()).ok());
  auto release_all = [&] {
    while (true) {
      auto more = ds->run_background_step(BackgroundStep::kRelease);
      ASSERT_TRUE(more.ok()) << more.error().to_string();
      if (!*more) break;
    }
    ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
  };
  release_all();
  const uint64_t used = ds->space().used_bytes;

  ASSERT_TRUE(ds->rmdir(snapdir(kRootIno), "s1").ok());
  EXPECT_FALSE(ds->lookup(snapdir(kRootIno), "s1").ok());
  release_all();
  EXPECT_EQ(read_all(*ds, in_s1->ino), v1) << "the open file of the deleted snapshot";
  EXPECT_TRUE(ds->getattr(in_s1->ino).ok());
  EXPECT_GE(ds->space().used_bytes, used) << "its grains were freed while it was open";
  // Its name is free; a new snapshot does not take its view.
  auto again = ds->mkdir(snapdir(kRootIno), "s1", 0755, 0, 0);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(view_of(again->ino), view_of(in_s1->ino));
  EXPECT_EQ(read_all(*ds, in_s1->ino), v1);
  ASSERT_TRUE(ds->rmdir(snapdir(kRootIno), "s1").ok());

  ds->release_ref(in_s1->ino);
  release_all();
  ASSERT_TRUE(ds->run_background_step(BackgroundStep::kCommit).ok());
  EXPECT_LE(ds->space().used_bytes + (4 << 20) - (256 << 10), used)
      << "the deleted snapshot's grains were not released after the last close";
  EXPECT_FALSE(ds->getattr(in_s1->ino).ok());
  ASSERT_TRUE(ds->close().ok());
}

TEST(Clone, SharesGrainsAndCopiesOnlyWhatIsWritten) {
  auto ds = std::move(Datastore::open(fresh_device(), {})).value();
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  auto data = pattern(8 << 20, 3);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, data.data(), data.size()).ok());
  const uint64_t used0 = ds->space().used_bytes;
  auto b = ds->create(kRootIno, "b", 0644, 0, 0);
  auto n = ds->clone_range_sync(a->ino, 0, b->ino, 0, UINT64_MAX / 2);
  ASSERT_TRUE(n.ok()) << n.error().to_string();
  EXPECT_EQ(*n, data.size());
  EXPECT_LE(ds->space().used_bytes - used0, 64u << 10);  // metadata only
  EXPECT_EQ(read_all(*ds, b->ino), data);
  // Write to both sides: each sees its own change only.
  auto pa = pattern(5000, 4), pb = pattern(7000, 5);
  ASSERT_TRUE(ds->write_sync(a->ino, 12345, pa.data(), pa.size()).ok());
  ASSERT_TRUE(ds->write_sync(b->ino, 777777, pb.data(), pb.size()).ok());
  auto ea = data, eb = data;
  std::memcpy(ea.data() + 12345, pa.data(), pa.size());
  std::memcpy(eb.data() + 777777, pb.data(), pb.size());
  EXPECT_EQ(read_all(*ds, a->ino), ea);
  EXPECT_EQ(read_all(*ds, b->ino), eb);
  // An unaligned range into a non-empty file: whole grains shared, edges copied.
  auto c = ds->create(kRootIno, "c", 0644, 0, 0);
  auto base = pattern(1 << 20, 6);
  ASSERT_TRUE(ds->write_sync(c->ino, 0, base.data(), base.size()).ok());
  ASSERT_TRUE(ds->clone_range_sync(a->ino, 100, c->ino, 100, 50000).ok());
  auto ec = base;
  std::memcpy(ec.data() + 100, ea.data() + 100, 50000);
  EXPECT_EQ(read_all(*ds, c->ino), ec);
  EXPECT_EQ(ds->clone_range_sync(a->ino, 100, c->ino, 101, 5000).error().errno_value, EOPNOTSUPP);

  // Revert: clone a snapshot's disk over the live one.
  ASSERT_TRUE(ds->mkdir(snapdir(kRootIno), "before", 0755, 0, 0).ok());
  auto junk = pattern(3 << 20, 9);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, junk.data(), junk.size()).ok());
  auto sa = ds->lookup(ds->lookup(snapdir(kRootIno), "before")->ino, "a");
  ASSERT_TRUE(ds->truncate_sync(a->ino, 0).ok());
  ASSERT_TRUE(ds->clone_range_sync(sa->ino, 0, a->ino, 0, UINT64_MAX / 2).ok());
  EXPECT_EQ(read_all(*ds, a->ino), ea);
  ASSERT_TRUE(ds->close().ok());
}

// A directory with a snapshot is not empty: rmdir, and a rename over it, fail with
// ENOTEMPTY (its snapshots would be left with no path to delete them by, holding their
// space). Once they are deleted it goes, and so does its .cbt node.
TEST(Snapshot, DirectoryWithSnapshotsIsNotRemoved) {
  auto ds = std::move(Datastore::open(fresh_device(), {})).value();
  auto vm = ds->mkdir(kRootIno, "vm1", 0755, 0, 0);
  ASSERT_TRUE(vm.ok());
  ASSERT_TRUE(ds->mkdir(snapdir(vm->ino), "s1", 0755, 0, 0).ok());
  ASSERT_TRUE(ds->lookup(vm->ino, kCbtDirName).ok());
  const uint64_t nodes = ds->stats().cbt_nodes;
  auto r = ds->rmdir(kRootIno, "vm1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, ENOTEMPTY);
  EXPECT_NE(r.error().message.find("snapshots"), std::string::npos) << r.error().message;
  ASSERT_TRUE(ds->mkdir(kRootIno, "other", 0755, 0, 0).ok());
  auto mv = ds->rename(kRootIno, "other", kRootIno, "vm1", RenameFlags::kNone);
  ASSERT_FALSE(mv.ok());
  EXPECT_EQ(mv.error().errno_value, ENOTEMPTY);
  ASSERT_TRUE(ds->lookup(snapdir(vm->ino), "s1").ok()) << "the snapshot went";

  ASSERT_TRUE(ds->rmdir(snapdir(vm->ino), "s1").ok());
  ASSERT_TRUE(ds->rename(kRootIno, "other", kRootIno, "vm1", RenameFlags::kNone).ok());
  EXPECT_EQ(ds->stats().cbt_nodes, nodes - 1) << "the removed directory's .cbt node stayed";
  ASSERT_TRUE(ds->rmdir(kRootIno, "vm1").ok());
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
