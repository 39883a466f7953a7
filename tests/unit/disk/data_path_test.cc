// DataPath through the Datastore API on the simulated device: in-place and redirected
// writes, truncate, punch and seek, vectored and stable writes, the callers' buffers.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "unit/disk/datastore_test_util.h"
#include "util/log.h"

namespace vsfs {
namespace {

using namespace test;

TEST(Datastore, OverwriteInPlaceCostsOneDeviceWrite) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
  auto data = pattern(kGrainBytes, 1);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  const uint64_t writes_before = raw->counters().ops[static_cast<int>(device::OpKind::kWrite)];
  auto s0 = ds->stats();
  data[0] ^= 1;
  ASSERT_TRUE(ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  const uint64_t writes_after = raw->counters().ops[static_cast<int>(device::OpKind::kWrite)];
  EXPECT_EQ(writes_after - writes_before, 1u);
  auto s1 = ds->stats();
  EXPECT_EQ(s1.in_place_grain_writes - s0.in_place_grain_writes, 1u);
  // No metadata changed: the next fsync commits nothing.
  ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
  EXPECT_EQ(ds->stats().journal_commits, s1.journal_commits);
  ASSERT_TRUE(ds->close().ok());
}

TEST(Datastore, TruncatePunchSeek) {
  auto ds = open_ds(fresh_device());
  auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
  ASSERT_TRUE(ds->truncate_sync(f->ino, 10ull << 30).ok());
  EXPECT_EQ(ds->getattr(f->ino)->size_bytes, 10ull << 30);
  EXPECT_EQ(ds->getattr(f->ino)->allocated_bytes, 0u);
  auto data = pattern(1 << 20, 3);
  ASSERT_TRUE(ds->write_sync(f->ino, 5ull << 30, data.data(), data.size()).ok());
  EXPECT_EQ(ds->getattr(f->ino)->allocated_bytes, 1u << 20);
  EXPECT_EQ(*ds->seek(f->ino, 0, true), 5ull << 30);
  EXPECT_EQ(*ds->seek(f->ino, 5ull << 30, false), (5ull << 30) + (1 << 20));
  EXPECT_EQ(*ds->seek(f->ino, 0, false), 0u);
  EXPECT_EQ(ds->seek(f->ino, (5ull << 30) + (1 << 20), true).error().errno_value, ENXIO);
  // punch the middle, partially unaligned
  ASSERT_TRUE(ds->punch_hole_sync(f->ino, (5ull << 30) + 1000, 8192).ok());
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(ds->read_sync(f->ino, 5ull << 30, back.size(), back.data()).ok());
  auto expect = data;
  std::memset(expect.data() + 1000, 0, 8192);
  EXPECT_EQ(back, expect);
  EXPECT_EQ(ds->getattr(f->ino)->allocated_bytes, (1u << 20) - kGrainBytes);  // one whole grain freed
  // shrink into the data, then grow: the tail reads zeros
  ASSERT_TRUE(ds->truncate_sync(f->ino, (5ull << 30) + 100).ok());
  ASSERT_TRUE(ds->truncate_sync(f->ino, 6ull << 30).ok());
  ASSERT_TRUE(ds->read_sync(f->ino, 5ull << 30, 8192, back.data()).ok());
  EXPECT_EQ(std::memcmp(back.data(), data.data(), 100), 0);
  for (int i = 100; i < 8192; ++i) ASSERT_EQ(back[i], 0) << i;
  ASSERT_TRUE(ds->close().ok());
}

// A grain shared by a clone stays shared until the change that unshares it is durable:
// after the clone's reference goes (a punch, or the clone's unlink) in a transaction not
// yet committed, a write to the original still goes to a new grain, since a crash
// would bring the clone's reference back, and the clone must then read its own data.
TEST(Datastore, GrainUnsharedInTheOpenTransactionIsNotWrittenInPlace) {
  for (const bool unlink : {false, true}) {
    SCOPED_TRACE(unlink ? "the clone unlinked" : "the clone's grain punched");
    auto dev = fresh_device();
    SimDevice* raw = dev.get();
    auto ds = open_ds(std::move(dev), manual_commits());
    ASSERT_TRUE(ds);
    auto f = ds->create(kRootIno, "f", 0644, 0, 0);
    const auto before = pattern(8192, 1);
    ASSERT_TRUE(ds->write_sync(f->ino, 0, before.data(), before.size()).ok());
    auto c = ds->create(kRootIno, "clone", 0644, 0, 0);
    ASSERT_TRUE(ds->clone_range_sync(f->ino, 0, c->ino, 0, before.size()).ok());
    ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
    if (unlink) {
      ASSERT_TRUE(ds->unlink(kRootIno, "clone").ok());
    } else {
      ASSERT_TRUE(ds->punch_hole_sync(c->ino, 0, before.size()).ok());
    }
    const uint64_t redirected = ds->stats().redirected_grain_writes;
    const auto after = pattern(8192, 2);
    ASSERT_TRUE(ds->write_sync(f->ino, 0, after.data(), after.size()).ok());
    EXPECT_EQ(ds->stats().redirected_grain_writes, redirected + 2) << "written in place";
    // The power fails before anything more is committed: the clone is back, intact.
    auto image = raw->power_loss(device::PowerLossMode::kKeepAll, 1);
    ds.reset();
    auto ds2 = open_after_power_loss(std::move(image));
    ASSERT_TRUE(ds2);
    auto c2 = ds2->lookup(kRootIno, "clone");
    ASSERT_TRUE(c2.ok());
    std::vector<uint8_t> back(before.size());
    ASSERT_TRUE(ds2->read_sync(c2->ino, 0, back.size(), back.data()).ok());
    EXPECT_TRUE(back == before) << "the clone reads the original's later write";
    // Once the unsharing is committed, writes go in place again.
    ASSERT_TRUE(ds2->unlink(kRootIno, "clone").ok());
    auto f2 = ds2->lookup(kRootIno, "f");
    ASSERT_TRUE(f2.ok());
    ASSERT_TRUE(ds2->fsync_sync(f2->ino).ok());
    ASSERT_TRUE(ds2->write_sync(f2->ino, 0, after.data(), after.size()).ok());  // redirected
    const uint64_t in_place = ds2->stats().in_place_grain_writes;
    ASSERT_TRUE(ds2->write_sync(f2->ino, 0, before.data(), before.size()).ok());
    EXPECT_EQ(ds2->stats().in_place_grain_writes, in_place + 2);
    ASSERT_TRUE(ds2->close().ok());
  }
}

// writev: the buffers land one after the other, across grain edges, copied at once.
TEST(Datastore, WritevWritesTheBuffersInOrder) {
  auto ds = open_ds(fresh_device());
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  auto a = pattern(1000, 1), b = pattern(5000, 2), c = pattern(3, 3);
  const iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  std::promise<Result<uint64_t>> p;
  ds->writev(f->ino, 4090, iov, 3, [&](Result<uint64_t> r) { p.set_value(std::move(r)); });
  std::fill(a.begin(), a.end(), 0);  // copied before writev returned
  auto r = p.get_future().get();
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(*r, 6003u);
  std::vector<uint8_t> back(6003);
  ASSERT_TRUE(ds->read_sync(f->ino, 4090, back.size(), back.data()).ok());
  auto want = pattern(1000, 1);
  want.insert(want.end(), b.begin(), b.end());
  want.insert(want.end(), c.begin(), c.end());
  EXPECT_EQ(back, want);
  ASSERT_TRUE(ds->close().ok());
}

// write_stable: whole grains from aligned memory (written in place), and a write that
// is not (copied, as by write), both read back as written, over existing data too.
TEST(Datastore, WriteStableWritesAlignedAndUnalignedData) {
  auto ds = open_ds(fresh_device());
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  AlignedBuffer aligned(3 * 4096, false);
  auto want = pattern(3 * 4096, 7);
  std::memcpy(aligned.data(), want.data(), want.size());
  auto write_stable = [&](uint64_t off, const void* data, uint64_t len) {
    std::promise<Result<uint64_t>> p;
    ds->write_stable(f->ino, off, data, len, [&](Result<uint64_t> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(*r, len);
  };
  write_stable(8192, aligned.data(), 3 * 4096);          // in place
  auto odd = pattern(5000, 8);
  write_stable(8192 + 100, odd.data(), odd.size());      // partial grains: copied
  std::copy(odd.begin(), odd.end(), want.begin() + 100);
  write_stable(8192 + 2 * 4096, aligned.data(), 4096);   // in place, over mapped data
  std::copy(aligned.data(), aligned.data() + 4096, want.begin() + 2 * 4096);
  std::vector<uint8_t> back(3 * 4096);
  ASSERT_TRUE(ds->read_sync(f->ino, 8192, back.size(), back.data()).ok());
  EXPECT_EQ(back, want);
  ASSERT_TRUE(ds->close().ok());
}

// readv: the read lands in the caller's buffers, one after the other: whole aligned
// grains straight from the device (a hole as zeros), a read cut short by the end of
// file, and buffers that are not whole grains (through an aligned buffer). writev_stable
// of several aligned buffers, and of one that is not, reads back as written.
TEST(Datastore, ReadvAndWritevStableUseTheCallersBuffers) {
  auto ds = open_ds(fresh_device());
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  constexpr uint64_t kG = 4096;
  const uint64_t size = 5 * kG + 1000;
  auto want = pattern(size, 11);
  std::fill(want.begin() + 2 * kG, want.begin() + 3 * kG, 0);  // grain 2: a hole
  ASSERT_TRUE(ds->write_sync(f->ino, 0, want.data(), 2 * kG).ok());
  ASSERT_TRUE(ds->write_sync(f->ino, 3 * kG, want.data() + 3 * kG, size - 3 * kG).ok());
  // Runs one asynchronous call of the pair and waits for its result.
  auto wait = [](const std::function<void(Done<uint64_t>)>& start) {
    std::promise<Result<uint64_t>> p;
    start([&](Result<uint64_t> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    return r.ok() ? *r : 0;
  };
  auto readv = [&](uint64_t off, const std::vector<iovec>& iov) {
    return wait([&](Done<uint64_t> d) {
      ds->readv(f->ino, off, iov.data(), static_cast<int>(iov.size()), std::move(d));
    });
  };
  auto joined = [](const std::vector<iovec>& iov, uint64_t n) {
    std::vector<uint8_t> out;
    for (const iovec& v : iov) {
      const auto* b = static_cast<const uint8_t*>(v.iov_base);
      const uint64_t k = std::min<uint64_t>(n - out.size(), v.iov_len);
      out.insert(out.end(), b, b + k);
    }
    return out;
  };
  auto slice = [&](uint64_t off, uint64_t n) {
    return std::vector<uint8_t>(want.begin() + static_cast<ptrdiff_t>(off),
                                want.begin() + static_cast<ptrdiff_t>(off + n));
  };
  AlignedBuffer a(2 * kG, false), b(kG, false), c(2 * kG, false);
  const std::vector<iovec> whole = {{a.data(), 2 * kG}, {b.data(), kG}, {c.data(), 2 * kG}};
  EXPECT_EQ(readv(0, whole), 5 * kG);
  EXPECT_EQ(joined(whole, 5 * kG), slice(0, 5 * kG));
  const std::vector<iovec> past_end = {{a.data(), kG}, {b.data(), kG}};
  EXPECT_EQ(readv(4 * kG, past_end), kG + 1000);
  EXPECT_EQ(joined(past_end, kG + 1000), slice(4 * kG, kG + 1000));
  std::vector<uint8_t> odd1(1000), odd2(7000);
  const std::vector<iovec> odd = {{odd1.data(), odd1.size()}, {odd2.data(), odd2.size()}};
  EXPECT_EQ(readv(100, odd), 8000u);
  EXPECT_EQ(joined(odd, 8000), slice(100, 8000));

  auto writev_stable = [&](uint64_t off, const std::vector<iovec>& iov) {
    uint64_t n = 0;
    for (const iovec& v : iov) n += v.iov_len;
    EXPECT_EQ(wait([&](Done<uint64_t> d) {
                ds->writev_stable(f->ino, off, iov.data(), static_cast<int>(iov.size()),
                                  std::move(d));
              }),
              n);
  };
  auto p1 = pattern(kG, 21), p2 = pattern(2 * kG, 22);
  std::memcpy(a.data(), p1.data(), kG);
  std::memcpy(c.data(), p2.data(), 2 * kG);
  writev_stable(kG, {{a.data(), kG}, {c.data(), 2 * kG}});  // over data and the hole
  std::copy(p1.begin(), p1.end(), want.begin() + kG);
  std::copy(p2.begin(), p2.end(), want.begin() + 2 * kG);
  writev_stable(50, {{odd1.data(), 10}, {b.data(), 20}});  // not whole grains: copied
  std::copy(odd1.begin(), odd1.begin() + 10, want.begin() + 50);
  std::copy(b.data(), b.data() + 20, want.begin() + 60);
  std::vector<uint8_t> back(size);
  ASSERT_TRUE(ds->read_sync(f->ino, 0, size, back.data()).ok());
  EXPECT_EQ(back, want);
  ASSERT_TRUE(ds->close().ok());
}

// Health counters: a data write and a data read the device fails are counted (a write
// failed with ENOSPC also as no_space); a failed metadata write marks the datastore.
TEST(Datastore, DeviceErrorsAreCountedInStats) {
  auto dev = fresh_device();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev), manual_commits());
  ASSERT_TRUE(ds);
  auto f = ds->create(kRootIno, "d.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  auto data = pattern(64 << 10, 3);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  DatastoreStats s = ds->stats();
  EXPECT_EQ(s.device_write_errors, 0u);
  EXPECT_EQ(s.device_read_errors, 0u);
  EXPECT_FALSE(s.metadata_failed);

  raw->fail_nth(device::OpKind::kWrite, 1, /*persistent=*/false);
  EXPECT_FALSE(ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  // Each failure is logged (an administrator reads it in syslog), naming the disk.
  const std::string disk = "disk inode " + std::to_string(f->ino);
  EXPECT_NE(last_logged_error().text.find("writing " + disk + " to the device failed"),
            std::string::npos)
      << last_logged_error().text;
  raw->fail_nth(device::OpKind::kRead, 1, /*persistent=*/false);
  std::vector<uint8_t> back(data.size());
  EXPECT_FALSE(ds->read_sync(f->ino, 0, back.size(), back.data()).ok());
  EXPECT_NE(last_logged_error().text.find("reading " + disk + " from the device failed"),
            std::string::npos)
      << last_logged_error().text;
  s = ds->stats();
  EXPECT_EQ(s.device_write_errors, 1u);
  EXPECT_EQ(s.device_read_errors, 1u);
  EXPECT_EQ(s.device_no_space, 0u);
  EXPECT_FALSE(s.metadata_failed);

  raw->fail_nth(device::OpKind::kFlush, 1, /*persistent=*/true);
  EXPECT_FALSE(ds->fsync_sync(f->ino).ok());
  EXPECT_TRUE(ds->stats().metadata_failed);
  EXPECT_NE(ds->stats().mount_count, 0u);
  (void)ds->close();
}

}  // namespace
}  // namespace vsfs
