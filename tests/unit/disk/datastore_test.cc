// Datastore API on the simulated device: the facade as a whole: create, write, read and
// reopen; refusal of a mounted or damaged datastore; fsync; close with requests in flight.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "unit/disk/datastore_test_util.h"

namespace vsfs {
namespace {

using namespace test;

TEST(Datastore, CreateWriteReadReopen) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  ASSERT_TRUE(ds);
  auto dir = ds->mkdir(kRootIno, "vm1", 0755, 0, 0);
  ASSERT_TRUE(dir.ok()) << dir.error().to_string();
  auto f = ds->create(dir->ino, "vm1.img", 0644, 1, 2);
  ASSERT_TRUE(f.ok());
  auto data = pattern(3 * 1024 * 1024 + 1234, 7);
  auto w = ds->write_sync(f->ino, 5000, data.data(), data.size());
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  EXPECT_EQ(*w, data.size());
  std::vector<uint8_t> back(data.size());
  auto r = ds->read_sync(f->ino, 5000, back.size(), back.data());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(back, data);
  // The unwritten head reads zeros.
  std::vector<uint8_t> head(5000, 0xff);
  ASSERT_TRUE(ds->read_sync(f->ino, 0, head.size(), head.data()).ok());
  EXPECT_EQ(head, std::vector<uint8_t>(5000, 0));
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  ASSERT_TRUE(ds->close().ok());
  auto image = raw->clone();
  ds.reset();

  auto ds2 = open_ds(std::move(image));
  ASSERT_TRUE(ds2);
  auto d2 = ds2->lookup(kRootIno, "vm1");
  ASSERT_TRUE(d2.ok());
  auto f2 = ds2->lookup(d2->ino, "vm1.img");
  ASSERT_TRUE(f2.ok());
  EXPECT_EQ(f2->size_bytes, 5000 + data.size());
  EXPECT_EQ(f2->uid, 1u);
  EXPECT_EQ(f2->gid, 2u);
  std::fill(back.begin(), back.end(), 0);
  ASSERT_TRUE(ds2->read_sync(f2->ino, 5000, back.size(), back.data()).ok());
  EXPECT_EQ(back, data);
  ASSERT_TRUE(ds2->close().ok());
}

TEST(Datastore, RefusesMountedAndReportsDamage) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  auto crashed = raw->clone();  // still marked mounted
  auto r = Datastore::open(std::move(crashed), quiet());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kBusy);
  ASSERT_TRUE(ds->close().ok());
  auto zero = std::make_unique<SimDevice>(SimOptions{});
  auto z = Datastore::open(std::move(zero), quiet());
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.error().kind, ErrorKind::kCorruption);
}

}  // namespace
}  // namespace vsfs

namespace vsfs {
namespace {

// fsync flushes the device only when a write has completed since the last flush: an
// fsync with nothing new costs no device command, and an in-place overwrite (no
// metadata to commit) is still made durable: after power loss with every unflushed
// write dropped, it reads back.
TEST(Datastore, FsyncFlushesOnlyWhenSomethingWasWritten) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev), manual_commits());
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "f", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  const auto first = pattern(8192, 1), second = pattern(8192, 2);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, first.data(), first.size()).ok());
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());  // the commit's own journal writes
  auto flushes = [&] { return raw->counters().ops[static_cast<int>(device::OpKind::kFlush)]; };
  const uint64_t idle = flushes();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  EXPECT_EQ(flushes(), idle) << "an fsync with nothing new flushed the device";

  const uint64_t in_place = ds->stats().in_place_grain_writes;
  const uint64_t commits = ds->stats().journal_commits;
  ASSERT_TRUE(ds->write_sync(f->ino, 0, second.data(), second.size()).ok());
  ASSERT_EQ(ds->stats().in_place_grain_writes, in_place + 2);
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  EXPECT_EQ(ds->stats().journal_commits, commits) << "the overwrite had metadata to commit";
  EXPECT_GT(flushes(), idle) << "the overwrite was not flushed";

  auto image = raw->power_loss(device::PowerLossMode::kDropAll, 1);
  ds.reset();
  auto ds2 = open_after_power_loss(std::move(image));
  ASSERT_TRUE(ds2);
  std::vector<uint8_t> back(second.size());
  ASSERT_TRUE(ds2->read_sync(f->ino, 0, back.size(), back.data()).ok());
  EXPECT_TRUE(back == second) << "the fsynced overwrite was lost";
  ASSERT_TRUE(ds2->close().ok());
}

// Closing, or destroying, a datastore with data requests in flight waits for them, also
// when its last commit fails at once (every flush fails): each is answered exactly once
// before close() returns. (With the device failing, close() used to return at once and
// the destructor freed what the completions then used: a heap corruption that sim-crash
// hit about once in six runs of 3000 seeds.)
TEST(Datastore, CloseWaitsForRequestsInFlight) {
  for (const bool explicit_close : {true, false}) {
    SCOPED_TRACE(explicit_close ? "close()" : "destructor");
    auto dev = slow_device(20000);  // every IO takes up to 20 ms
    SimDevice* raw = dev.get();
    auto ds = open_ds(std::move(dev));
    ASSERT_TRUE(ds);
    auto f = ds->create(kRootIno, "f", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    constexpr int kWrites = 32;
    std::atomic<int> answered{0}, failed{0};
    const auto data = pattern(64 * 1024, 3);
    for (int i = 0; i < kWrites; ++i) {
      ds->write(f->ino, uint64_t(i) * data.size(), data.data(), data.size(),
                [&](Result<uint64_t> r) {
                  if (!r.ok()) failed.fetch_add(1);
                  answered.fetch_add(1);
                });
    }
    EXPECT_LT(answered.load(), kWrites) << "the device was too fast to test anything";
    raw->fail_nth(device::OpKind::kFlush, 1, /*persistent=*/true);
    if (explicit_close) {
      EXPECT_FALSE(ds->close().ok());
      EXPECT_EQ(answered.load(), kWrites) << "close() returned with requests in flight";
    }
    ds.reset();
    EXPECT_EQ(answered.load(), kWrites);
    EXPECT_EQ(failed.load(), 0);
  }
}

}  // namespace
}  // namespace vsfs
