// NamespaceOps through the Datastore API on the simulated device: errors of namespace
// operations, large directories, unlink of an open disk.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;

TEST(Datastore, NamespaceErrors) {
  auto ds = open_ds(fresh_device());
  ASSERT_TRUE(ds);
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(ds->create(kRootIno, "a", 0644, 0, 0).error().errno_value, EEXIST);
  EXPECT_EQ(ds->lookup(kRootIno, "b").error().errno_value, ENOENT);
  EXPECT_EQ(ds->create(kRootIno, std::string(256, 'x'), 0644, 0, 0).error().errno_value, ENAMETOOLONG);
  EXPECT_TRUE(ds->create(kRootIno, std::string(255, 'x'), 0644, 0, 0).ok());
  auto d = ds->mkdir(kRootIno, "d", 0755, 0, 0);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(ds->create(d->ino, "inner", 0644, 0, 0).ok());
  EXPECT_EQ(ds->rmdir(kRootIno, "d").error().errno_value, ENOTEMPTY);
  EXPECT_EQ(ds->rmdir(kRootIno, "a").error().errno_value, ENOTDIR);
  EXPECT_EQ(ds->unlink(kRootIno, "d").error().errno_value, EISDIR);
  EXPECT_EQ(ds->rename(kRootIno, "d", d->ino, "x", RenameFlags::kNone).error().errno_value, EINVAL);
  EXPECT_EQ(ds->rename(kRootIno, "a", kRootIno, "d", RenameFlags::kNone).error().errno_value, EISDIR);
  EXPECT_EQ(ds->rename(kRootIno, "a", kRootIno, std::string(255, 'x'), RenameFlags::kNoReplace).error().errno_value, EEXIST);
  // rename over an existing file replaces it
  ASSERT_TRUE(ds->rename(kRootIno, "a", kRootIno, std::string(255, 'x'), RenameFlags::kNone).ok());
  EXPECT_EQ(ds->lookup(kRootIno, "a").error().errno_value, ENOENT);
  EXPECT_EQ(ds->lookup(kRootIno, std::string(255, 'x'))->ino, a->ino);
  // exchange
  ASSERT_TRUE(ds->rename(kRootIno, std::string(255, 'x'), kRootIno, "d", RenameFlags::kExchange).ok());
  EXPECT_EQ(ds->lookup(kRootIno, "d")->ino, a->ino);
  // move a directory across: nlink follows
  auto e = ds->mkdir(kRootIno, "e", 0755, 0, 0);
  ASSERT_TRUE(e.ok());
  ASSERT_TRUE(ds->rename(kRootIno, std::string(255, 'x'), e->ino, "moved", RenameFlags::kNone).ok());
  EXPECT_EQ(ds->getattr(e->ino)->nlink, 3u);
  auto list = ds->readdir(kRootIno);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);  // d (the file), e
  ASSERT_TRUE(ds->close().ok());
}

TEST(Datastore, ManyFilesInOneDirectory) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(ds->create(kRootIno, "file-number-" + std::to_string(i), 0644, 0, 0).ok());
  }
  for (int i = 0; i < 2000; i += 2) {
    ASSERT_TRUE(ds->unlink(kRootIno, "file-number-" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(ds->close().ok());
  auto ds2 = open_ds(raw->clone());
  auto list = ds2->readdir(kRootIno);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 1000u);
  EXPECT_TRUE(ds2->lookup(kRootIno, "file-number-1999").ok());
  EXPECT_FALSE(ds2->lookup(kRootIno, "file-number-1998").ok());
  ASSERT_TRUE(ds2->close().ok());
}

TEST(Datastore, UnlinkFreesSpaceAndOpenFileLives) {
  auto ds = open_ds(fresh_device());
  auto free0 = ds->space().free_bytes;
  auto f = ds->create(kRootIno, "big", 0644, 0, 0);
  auto data = pattern(8 << 20, 5);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  EXPECT_LT(ds->space().free_bytes, free0 - (8 << 20) + 1);
  ASSERT_TRUE(ds->open_ref(f->ino).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "big").ok());
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE(ds->read_sync(f->ino, 4096, 4096, back.data()).ok());
  EXPECT_EQ(std::memcmp(back.data(), data.data() + 4096, 4096), 0);
  ds->release_ref(f->ino);
  EXPECT_FALSE(ds->getattr(f->ino).ok());
  // The background releaser returns the space, but for the metadata block the file's
  // map opened: it stays metadata's room (not free for writes) while other metadata
  // lives in it.
  const uint64_t back_to = free0 - kBlockBytes - (64 << 10);
  for (int i = 0; i < 200 && ds->space().free_bytes < back_to; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(ds->space().free_bytes, back_to);
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
