// Resource queues: requests racing for one grain wait for it in the disk's queue and end
// with the right data and one allocation each, on a fresh grain and on a grain shared
// with a snapshot; writes into space the formatter is working on stay correct.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "device/sim_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

std::unique_ptr<Datastore> open_slow_device() {
  device::SimOptions o;
  o.size_bytes = 128ull << 20;
  o.max_latency_us = 300;  // completions take a while: requests overlap
  o.reorder_completions = true;
  auto dev = std::make_unique<device::SimDevice>(o);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  return std::move(Datastore::open(std::move(dev), {})).value();
}

// Writes `n` different 4 KiB patterns to grain 0 from several threads at once and waits.
std::vector<std::vector<uint8_t>> race(Datastore& ds, Ino ino, int n) {
  std::vector<std::vector<uint8_t>> patterns(n, std::vector<uint8_t>(kGrainBytes));
  for (int i = 0; i < n; ++i) std::memset(patterns[i].data(), 0x10 + i, kGrainBytes);
  std::mutex m;
  std::condition_variable cv;
  int done = 0, failed = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < n; i += 4) {
        ds.write(ino, 0, patterns[i].data(), kGrainBytes, [&](Result<uint64_t> r) {
          std::lock_guard l(m);
          failed += r.ok() ? 0 : 1;
          ++done;
          cv.notify_all();
        });
      }
    });
  }
  for (auto& t : threads) t.join();
  std::unique_lock l(m);
  cv.wait(l, [&] { return done == n; });
  EXPECT_EQ(failed, 0);
  return patterns;
}

bool is_one_of(const std::vector<uint8_t>& got, const std::vector<std::vector<uint8_t>>& ps) {
  for (const auto& p : ps) {
    if (got == p) return true;
  }
  return false;
}

TEST(ResourceQueue, RacingWritesOnOneFreshGrainAllocateOnce) {
  auto ds = open_slow_device();
  auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
  const auto s0 = ds->stats();
  auto patterns = race(*ds, f->ino, 24);
  const auto s1 = ds->stats();
  EXPECT_EQ(s1.redirected_grain_writes - s0.redirected_grain_writes, 1u) << "one allocation";
  EXPECT_EQ(s1.in_place_grain_writes - s0.in_place_grain_writes, 23u);
  EXPECT_GT(s1.grain_queue.waits, s0.grain_queue.waits) << "requests waited for the grain";
  EXPECT_EQ(s1.grain_queue.waiting_now, 0u);
  std::vector<uint8_t> got(kGrainBytes);
  ASSERT_TRUE(ds->read_sync(f->ino, 0, kGrainBytes, got.data()).ok());
  EXPECT_TRUE(is_one_of(got, patterns)) << "a whole write, never a mix";
  EXPECT_EQ(ds->getattr(f->ino)->allocated_bytes, kGrainBytes);
  ASSERT_TRUE(ds->close().ok());
}

TEST(ResourceQueue, RacingWritesOnASharedGrainCopyOnce) {
  auto ds = open_slow_device();
  auto f = ds->create(kRootIno, "disk", 0644, 0, 0);
  std::vector<uint8_t> old(kGrainBytes, 0xee);
  ASSERT_TRUE(ds->write_sync(f->ino, 0, old.data(), old.size()).ok());
  auto snap = ds->mkdir(make_ino(kSnapshotsDirView, kRootIno), "s", 0755, 0, 0);
  ASSERT_TRUE(snap.ok());
  const auto s0 = ds->stats();
  auto patterns = race(*ds, f->ino, 16);
  const auto s1 = ds->stats();
  EXPECT_EQ(s1.redirected_grain_writes - s0.redirected_grain_writes, 1u) << "one copy";
  std::vector<uint8_t> got(kGrainBytes);
  ASSERT_TRUE(ds->read_sync(f->ino, 0, kGrainBytes, got.data()).ok());
  EXPECT_TRUE(is_one_of(got, patterns));
  auto sf = ds->lookup(snap->ino, "disk");
  ASSERT_TRUE(ds->read_sync(sf->ino, 0, kGrainBytes, got.data()).ok());
  EXPECT_EQ(got, old) << "the snapshot keeps the old grain";
  ASSERT_TRUE(ds->close().ok());
}

TEST(ResourceQueue, WritesWhileTheFormatterWorks) {
  auto ds = open_slow_device();
  auto a = ds->create(kRootIno, "a", 0644, 0, 0);
  std::vector<uint8_t> big(32 << 20, 0xab);
  ASSERT_TRUE(ds->write_sync(a->ino, 0, big.data(), big.size()).ok());
  ASSERT_TRUE(ds->unlink(kRootIno, "a").ok());
  ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());
  // New disks are written while freed blocks are released and formatted.
  for (int d = 0; d < 4; ++d) {
    auto f = ds->create(kRootIno, "n" + std::to_string(d), 0644, 0, 0);
    std::vector<uint8_t> data(3 << 20, static_cast<uint8_t>(d + 1));
    ASSERT_TRUE(ds->write_sync(f->ino, 1000, data.data(), data.size()).ok());
    ASSERT_TRUE(ds->fsync_sync(f->ino).ok());
    std::vector<uint8_t> got(data.size() + 1000);
    ASSERT_TRUE(ds->read_sync(f->ino, 0, got.size(), got.data()).ok());
    for (size_t i = 0; i < 1000; ++i) ASSERT_EQ(got[i], 0);
    ASSERT_EQ(std::memcmp(got.data() + 1000, data.data(), data.size()), 0);
  }
  ASSERT_TRUE(ds->close().ok());
}

// A clone waits for the writes in flight on its source range (they may be landing in
// place) and holds new ones back until the grains are shared: when the clone returns,
// the copy holds the write issued before it and never changes afterwards; the write
// issued after it completes after it and is not seen by the copy.
TEST(ResourceQueue, CloneWaitsForWritesInFlightOnItsSource) {
  auto ds = open_slow_device();
  auto src = ds->create(kRootIno, "src", 0644, 0, 0);
  auto dst = ds->create(kRootIno, "dst", 0644, 0, 0);
  ASSERT_TRUE(src.ok() && dst.ok());
  constexpr uint64_t kLen = 16 * kGrainBytes;
  std::vector<uint8_t> old_data(kLen, 0x11), before(kLen, 0x22), after(kLen, 0x33);
  ASSERT_TRUE(ds->write_sync(src->ino, 0, old_data.data(), kLen).ok());  // exclusive grains
  std::mutex m;
  std::condition_variable cv;
  std::vector<char> order;
  auto note = [&](char what) {
    std::lock_guard l(m);
    order.push_back(what);
    cv.notify_all();
  };
  for (int round = 0; round < 20; ++round) {
    order.clear();
    ds->write(src->ino, 0, before.data(), kLen, [&](Result<uint64_t> r) {
      EXPECT_TRUE(r.ok());
      note('w');
    });
    ds->clone_range(src->ino, 0, dst->ino, 0, kLen, [&](Result<uint64_t> r) {
      EXPECT_TRUE(r.ok()) << r.error().to_string();
      note('c');
    });
    ds->write(src->ino, 0, after.data(), kLen, [&](Result<uint64_t> r) {
      EXPECT_TRUE(r.ok());
      note('a');
    });
    std::unique_lock l(m);
    cv.wait(l, [&] { return std::find(order.begin(), order.end(), 'c') != order.end(); });
    l.unlock();
    // As soon as the clone has returned, the copy holds the write issued before it,
    // also if that write's own reply is not out yet.
    std::vector<uint8_t> got(kLen);
    ASSERT_TRUE(ds->read_sync(dst->ino, 0, kLen, got.data()).ok());
    EXPECT_EQ(got, before) << "round " << round << ": the copy changed after the clone";
    l.lock();
    cv.wait(l, [&] { return order.size() == 3; });
    EXPECT_EQ(order.back(), 'a') << "round " << round << ": the later write waited for the clone";
    l.unlock();
    ASSERT_TRUE(ds->read_sync(dst->ino, 0, kLen, got.data()).ok());
    EXPECT_EQ(got, before) << "round " << round;
    ASSERT_TRUE(ds->read_sync(src->ino, 0, kLen, got.data()).ok());
    EXPECT_EQ(got, after) << "round " << round;
  }
  ASSERT_TRUE(ds->close().ok());
}

}  // namespace
}  // namespace vsfs
