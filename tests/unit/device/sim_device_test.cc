// Tests of SimDevice: data path, durability model, power loss, fault injection,
// alignment checks, reordering and queue depth.
// Threading: each test drives one device from the test thread; callbacks run on the
// device's completion thread and only touch atomics or mutex-guarded state.
#include "device/sim_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "device_test_util.h"
#include "util/aligned_buffer.h"

namespace vsfs::device {
namespace {

constexpr uint64_t kBlock = 4096;

AlignedBuffer pattern(uint64_t length, uint8_t seed) {
  AlignedBuffer b(length, false);
  for (uint64_t i = 0; i < length; ++i) b.data()[i] = static_cast<uint8_t>(seed + i * 7 + i / 512);
  return b;
}

TEST(SimDevice, WriteThenReadBack) {
  SimDevice dev(SimOptions{});
  AlignedBuffer data = pattern(2 * kBlock, 3);
  ASSERT_TRUE(write_sync(dev, 5 * kBlock, data.data(), data.size()).ok());
  AlignedBuffer back(3 * kBlock);
  std::memset(back.data(), 0xee, back.size());
  ASSERT_TRUE(read_sync(dev, 4 * kBlock, back.data(), back.size()).ok());
  EXPECT_TRUE(all_zero(back.data(), kBlock));  // never written
  EXPECT_EQ(0, std::memcmp(back.data() + kBlock, data.data(), data.size()));

  DeviceCounters c = dev.counters();
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kWrite)]);
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kRead)]);
  EXPECT_EQ(2 * kBlock, c.bytes[static_cast<int>(OpKind::kWrite)]);
  EXPECT_EQ(0u, c.errors);
  EXPECT_EQ(2u, dev.io_count());
}

TEST(SimDevice, ScatterGatherIovecs) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 1), b = pattern(2 * kBlock, 2);
  iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  std::promise<int64_t> p;
  IoRequest r{OpKind::kWrite, 0, 3 * kBlock, iov, 2, [&p](int64_t res) { p.set_value(res); }};
  dev.submit_one(std::move(r));
  ASSERT_EQ(static_cast<int64_t>(3 * kBlock), p.get_future().get());
  AlignedBuffer back(3 * kBlock);
  dev.peek(0, back.data(), back.size());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + kBlock, b.data(), 2 * kBlock));
}

TEST(SimDevice, CallbacksRunOnCompletionThreadNotInSubmit) {
  SimDevice dev(SimOptions{});
  std::promise<std::thread::id> p;
  IoRequest r;
  r.kind = OpKind::kFlush;
  r.done = [&p](int64_t) { p.set_value(std::this_thread::get_id()); };
  dev.submit_one(std::move(r));
  EXPECT_NE(std::this_thread::get_id(), p.get_future().get());
}

TEST(SimDevice, FlushMakesDurableAndPowerLossDropsTheRest) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 10), b = pattern(kBlock, 20);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), kBlock).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  ASSERT_TRUE(write_sync(dev, kBlock, b.data(), kBlock).ok());

  AlignedBuffer back(2 * kBlock);
  auto dropped = dev.power_loss(PowerLossMode::kDropAll, 1);
  ASSERT_TRUE(read_sync(*dropped, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
  EXPECT_TRUE(all_zero(back.data() + kBlock, kBlock));

  auto kept = dev.power_loss(PowerLossMode::kKeepAll, 1);
  ASSERT_TRUE(read_sync(*kept, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + kBlock, b.data(), kBlock));

  // The survivor has no volatile writes left: cutting its power again changes nothing.
  auto again = kept->power_loss(PowerLossMode::kDropAll, 7);
  again->peek(0, back.data(), back.size());
  EXPECT_EQ(0, std::memcmp(back.data() + kBlock, b.data(), kBlock));
}

TEST(SimDevice, OverwriteOfDurableDataRevertsOnPowerLoss) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 10), b = pattern(kBlock, 20);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), kBlock).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  ASSERT_TRUE(write_sync(dev, 0, b.data(), kBlock).ok());
  AlignedBuffer back(kBlock);
  dev.peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), b.data(), kBlock));
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
}

// A durable write survives any power cut without a flush, and flushes nothing else; an
// older cached write of the same bytes cannot bring them back.
TEST(SimDevice, DurableWriteSurvivesPowerLossAlone) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(2 * kBlock, 10), b = pattern(kBlock, 20), c = pattern(kBlock, 30);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), 2 * kBlock).ok());  // volatile, under b's
  ASSERT_TRUE(write_durable_sync(dev, kBlock, b.data(), kBlock).ok());
  ASSERT_TRUE(write_sync(dev, 2 * kBlock, c.data(), kBlock).ok());  // volatile
  AlignedBuffer back(3 * kBlock);
  for (PowerLossMode mode : {PowerLossMode::kDropAll, PowerLossMode::kKeepAll,
                             PowerLossMode::kRandom}) {
    for (uint64_t seed = 1; seed <= 8; ++seed) {
      dev.power_loss(mode, seed)->peek(0, back.data(), back.size());
      EXPECT_EQ(0, std::memcmp(back.data() + kBlock, b.data(), kBlock)) << int(mode) << " " << seed;
      if (mode == PowerLossMode::kDropAll) {
        EXPECT_TRUE(all_zero(back.data(), kBlock));
        EXPECT_TRUE(all_zero(back.data() + 2 * kBlock, kBlock));
      }
      if (mode == PowerLossMode::kKeepAll) {
        EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
        EXPECT_EQ(0, std::memcmp(back.data() + 2 * kBlock, c.data(), kBlock));
      }
    }
  }
}

TEST(SimDevice, FlushCoversOnlyWritesCompletedBeforeItWasSubmitted) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 30);
  iovec iov{a.data(), kBlock};
  Waiter w(2);
  IoRequest batch[2];
  batch[0] = IoRequest{OpKind::kWrite, 0, kBlock, &iov, 1, w.done(0)};
  batch[1] = IoRequest{OpKind::kFlush, 0, 0, nullptr, 0, w.done(1)};
  dev.submit(batch);
  w.wait();
  EXPECT_EQ(static_cast<int64_t>(kBlock), w.results_[0]);
  EXPECT_EQ(0, w.results_[1]);
  // The write completed before the flush did, but after the flush was submitted.
  AlignedBuffer back(kBlock);
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), kBlock);
  EXPECT_TRUE(all_zero(back.data(), kBlock));
  ASSERT_TRUE(flush_sync(dev).ok());
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
}

TEST(SimDevice, RandomPowerLossKeepsDropsOrTearsBySector) {
  SimDevice dev(SimOptions{});
  constexpr int kWrites = 8;
  AlignedBuffer old_data = pattern(kWrites * kBlock, 40);
  AlignedBuffer new_data = pattern(kWrites * kBlock, 90);
  ASSERT_TRUE(write_sync(dev, 0, old_data.data(), old_data.size()).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  for (int i = 0; i < kWrites; ++i) {
    ASSERT_TRUE(write_sync(dev, i * kBlock, new_data.data() + i * kBlock, kBlock).ok());
  }
  int kept = 0, dropped = 0, torn = 0;
  AlignedBuffer back(kWrites * kBlock);
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    auto image = dev.power_loss(PowerLossMode::kRandom, seed);
    image->peek(0, back.data(), back.size());
    for (int i = 0; i < kWrites; ++i) {
      int new_sectors = 0;
      for (uint64_t s = 0; s < kBlock; s += 512) {
        uint64_t at = i * kBlock + s;
        bool is_old = std::memcmp(back.data() + at, old_data.data() + at, 512) == 0;
        bool is_new = std::memcmp(back.data() + at, new_data.data() + at, 512) == 0;
        ASSERT_TRUE(is_old || is_new) << "seed " << seed << " offset " << at;
        new_sectors += is_new;
      }
      if (new_sectors == 8) {
        ++kept;
      } else if (new_sectors == 0) {
        ++dropped;
      } else {
        ++torn;
      }
    }
    // The same seed gives the same image.
    AlignedBuffer again(back.size());
    dev.power_loss(PowerLossMode::kRandom, seed)->peek(0, again.data(), again.size());
    ASSERT_EQ(0, std::memcmp(back.data(), again.data(), back.size()));
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(dropped, 0);
  EXPECT_GT(torn, 0);
}

// backing_bytes models a sparse file on a filesystem with that much room: a write or
// allocate past it fails with ENOSPC and changes nothing, a discard gives room back, and
// the backing survives a power cut.
TEST(SimDevice, BackingLimitFailsWritesWithEnospcUntilADiscard) {
  SimOptions o;
  o.size_bytes = 64 * kBlock;
  o.backing_bytes = 8 * kBlock;
  SimDevice dev(o);
  AlignedBuffer data = pattern(6 * kBlock, 1);
  ASSERT_TRUE(write_sync(dev, 0, data.data(), data.size()).ok());
  EXPECT_EQ(2 * kBlock, dev.backing_free_bytes().value());
  EXPECT_EQ(-ENOSPC, run_io(dev, OpKind::kWrite, 10 * kBlock, data.data(), 3 * kBlock));
  EXPECT_EQ(static_cast<int64_t>(3 * kBlock), run_io(dev, OpKind::kWrite, 0, data.data(), 3 * kBlock));
  EXPECT_EQ(-ENOSPC, run_io(dev, OpKind::kAllocate, 20 * kBlock, nullptr, 3 * kBlock));
  AlignedBuffer back(3 * kBlock);
  ASSERT_TRUE(read_sync(dev, 10 * kBlock, back.data(), back.size()).ok());
  EXPECT_TRUE(all_zero(back.data(), back.size()));  // the refused write changed nothing
  ASSERT_TRUE(allocate_now(dev, 20 * kBlock, 2 * kBlock).ok());
  EXPECT_EQ(0u, dev.backing_free_bytes().value());
  ASSERT_TRUE(discard_sync(dev, 0, 4 * kBlock).ok());
  EXPECT_EQ(4 * kBlock, dev.backing_free_bytes().value());
  ASSERT_TRUE(flush_sync(dev).ok());
  auto cut = dev.power_loss(PowerLossMode::kDropAll, 1);
  EXPECT_EQ(4 * kBlock, cut->backing_free_bytes().value());
  EXPECT_FALSE(SimDevice(SimOptions{}).backing_free_bytes().has_value());
}

TEST(SimDevice, DiscardAndWriteZeroesAreVolatileZeroWrites) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(4 * kBlock, 50);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), a.size()).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  ASSERT_TRUE(discard_sync(dev, 0, kBlock).ok());
  ASSERT_TRUE(write_zeroes_sync(dev, 2 * kBlock, kBlock).ok());
  AlignedBuffer back(4 * kBlock);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), back.size()).ok());
  EXPECT_TRUE(all_zero(back.data(), kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + kBlock, a.data() + kBlock, kBlock));
  EXPECT_TRUE(all_zero(back.data() + 2 * kBlock, kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + 3 * kBlock, a.data() + 3 * kBlock, kBlock));
  // Not flushed: a power cut brings the old data back.
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), back.size());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), a.size()));
}

TEST(SimDevice, DiscardWithoutZeroesLeavesData) {
  SimOptions o;
  o.discard_zeroes = false;
  SimDevice dev(o);
  EXPECT_FALSE(dev.discard_zeroes());
  AlignedBuffer a = pattern(kBlock, 60);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), kBlock).ok());
  ASSERT_TRUE(discard_sync(dev, 0, kBlock).ok());
  AlignedBuffer back(kBlock);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), kBlock).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
  ASSERT_TRUE(write_zeroes_sync(dev, 0, kBlock).ok());
  ASSERT_TRUE(read_sync(dev, 0, back.data(), kBlock).ok());
  EXPECT_TRUE(all_zero(back.data(), kBlock));
}

TEST(SimDevice, FailNthOnce) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 1), b = pattern(kBlock, 2), c = pattern(kBlock, 3);
  dev.fail_nth(OpKind::kWrite, 2);
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kWrite, 0, a.data(), kBlock));
  AlignedBuffer back(kBlock);
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kRead, 0, back.data(), kBlock));
  EXPECT_EQ(-EIO, run_io(dev, OpKind::kWrite, kBlock, b.data(), kBlock));
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kWrite, 2 * kBlock, c.data(), kBlock));
  dev.peek(kBlock, back.data(), kBlock);
  EXPECT_TRUE(all_zero(back.data(), kBlock));  // the failed write changed nothing
  dev.peek(2 * kBlock, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), c.data(), kBlock));
  EXPECT_EQ(1u, dev.counters().errors);
  auto r = write_sync(dev, 0, a.data(), kBlock);
  EXPECT_TRUE(r.ok());
}

TEST(SimDevice, FailNthPersistent) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 1);
  dev.fail_nth(OpKind::kRead, 2, /*persistent=*/true);
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kRead, 0, a.data(), kBlock));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(-EIO, run_io(dev, OpKind::kRead, 0, a.data(), kBlock));
  }
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kWrite, 0, a.data(), kBlock));
  auto r = read_sync(dev, 0, a.data(), kBlock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(EIO, r.error().errno_value);
  EXPECT_EQ(ErrorKind::kIo, r.error().kind);
}

TEST(SimDevice, FailedFlushMakesNothingDurable) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 70);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), kBlock).ok());
  dev.fail_nth(OpKind::kFlush, 1);
  EXPECT_FALSE(flush_sync(dev).ok());
  AlignedBuffer back(kBlock);
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), kBlock);
  EXPECT_TRUE(all_zero(back.data(), kBlock));
  ASSERT_TRUE(flush_sync(dev).ok());
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
}

TEST(SimDevice, DieAtIo) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 1), b = pattern(kBlock, 2);
  dev.die_at_io(3);
  EXPECT_FALSE(dev.dead());
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kWrite, 0, a.data(), kBlock));
  EXPECT_EQ(0, run_io(dev, OpKind::kFlush, 0, nullptr, 0));
  EXPECT_EQ(-EIO, run_io(dev, OpKind::kWrite, 0, b.data(), kBlock));
  EXPECT_TRUE(dev.dead());
  AlignedBuffer back(kBlock);
  EXPECT_EQ(-EIO, run_io(dev, OpKind::kRead, 0, back.data(), kBlock));
  EXPECT_EQ(-EIO, run_io(dev, OpKind::kFlush, 0, nullptr, 0));
  EXPECT_EQ(-EIO, run_io(dev, OpKind::kWriteZeroes, 0, nullptr, kBlock));
  EXPECT_EQ(6u, dev.io_count());
  dev.peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
  auto after = dev.power_loss(PowerLossMode::kDropAll, 1);
  EXPECT_FALSE(after->dead());
  ASSERT_TRUE(read_sync(*after, 0, back.data(), kBlock).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
}

TEST(SimDevice, MisalignedOrOutOfRangeIsInvalid) {
  SimOptions o;
  o.size_bytes = 1 << 20;
  SimDevice dev(o);
  AlignedBuffer a(2 * kBlock);
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kWrite, 512, a.data(), kBlock));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kWrite, 0, a.data(), 100));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kRead, 0, a.data() + 512, kBlock));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kRead, o.size_bytes, a.data(), kBlock));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kDiscard, o.size_bytes - kBlock, nullptr, 2 * kBlock));
  // An iovec sum that differs from length_bytes.
  iovec iov{a.data(), kBlock};
  std::promise<int64_t> p;
  dev.submit_one(IoRequest{OpKind::kWrite, 0, 2 * kBlock, &iov, 1,
                           [&p](int64_t r) { p.set_value(r); }});
  EXPECT_EQ(-EINVAL, p.get_future().get());
  auto r = write_sync(dev, 100, a.data(), kBlock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind::kInvalidArgument, r.error().kind);
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kWrite, 0, a.data(), kBlock));
}

TEST(SimDevice, SmallerAlignmentIsHonoured) {
  SimOptions o;
  o.alignment_bytes = 512;
  SimDevice dev(o);
  EXPECT_EQ(512u, dev.alignment_bytes());
  AlignedBuffer a = pattern(1024, 5);
  ASSERT_TRUE(write_sync(dev, 512 * 3, a.data(), 1024).ok());
  AlignedBuffer back(1024);
  ASSERT_TRUE(read_sync(dev, 512 * 3, back.data(), 1024).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), 1024));
}

TEST(SimDevice, ReorderAndLatencyCompleteEverythingOnce) {
  SimOptions o;
  o.reorder_completions = true;
  o.max_latency_us = 300;
  o.queue_depth = 16;
  o.seed = 42;
  SimDevice dev(o);
  constexpr size_t kIos = 400;
  AlignedBuffer data = pattern(kIos * kBlock, 9);
  std::vector<iovec> iov(kIos);
  std::vector<IoRequest> reqs(kIos);
  Waiter w(kIos);
  for (size_t i = 0; i < kIos; ++i) {
    iov[i] = {data.data() + i * kBlock, kBlock};
    reqs[i] = IoRequest{OpKind::kWrite, i * kBlock, kBlock, &iov[i], 1, w.done(i)};
  }
  // Submit in several batches, from two threads.
  std::thread other([&] { dev.submit(std::span(reqs).subspan(kIos / 2)); });
  dev.submit(std::span(reqs).first(kIos / 2));
  other.join();
  w.wait();
  bool out_of_order = false;
  for (size_t i = 0; i < kIos; ++i) {
    EXPECT_EQ(1, w.calls_[i]) << i;
    EXPECT_EQ(static_cast<int64_t>(kBlock), w.results_[i]) << i;
  }
  for (size_t i = 1; i < w.order_.size(); ++i) {
    if (w.order_[i] < w.order_[i - 1] && w.order_[i] / (kIos / 2) == w.order_[i - 1] / (kIos / 2)) {
      out_of_order = true;
    }
  }
  EXPECT_TRUE(out_of_order);
  AlignedBuffer back(kIos * kBlock);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), back.size()));
  DeviceCounters c = dev.counters();
  EXPECT_LE(c.in_flight_peak, 16u);
  EXPECT_EQ(kIos, c.ops[static_cast<int>(OpKind::kWrite)]);
  EXPECT_EQ(0u, c.in_flight);
  EXPECT_EQ(0u, c.queued);
}

TEST(SimDevice, FifoOrderByDefault) {
  SimOptions o;
  o.max_latency_us = 100;
  SimDevice dev(o);
  constexpr size_t kIos = 50;
  AlignedBuffer data(kIos * kBlock);
  std::vector<iovec> iov(kIos);
  std::vector<IoRequest> reqs(kIos);
  Waiter w(kIos);
  for (size_t i = 0; i < kIos; ++i) {
    iov[i] = {data.data() + i * kBlock, kBlock};
    reqs[i] = IoRequest{OpKind::kRead, i * kBlock, kBlock, &iov[i], 1, w.done(i)};
  }
  dev.submit(reqs);
  w.wait();
  for (size_t i = 0; i < kIos; ++i) EXPECT_EQ(i, w.order_[i]);
}

TEST(SimDevice, BatchBeyondQueueDepthWaitsInFifo) {
  SimOptions o;
  o.queue_depth = 4;
  o.max_latency_us = 200;
  SimDevice dev(o);
  constexpr size_t kIos = 100;
  AlignedBuffer data = pattern(kIos * kBlock, 4);
  std::vector<iovec> iov(kIos);
  std::vector<IoRequest> reqs(kIos);
  Waiter w(kIos);
  for (size_t i = 0; i < kIos; ++i) {
    iov[i] = {data.data() + i * kBlock, kBlock};
    reqs[i] = IoRequest{OpKind::kWrite, i * kBlock, kBlock, &iov[i], 1, w.done(i)};
  }
  dev.submit(reqs);
  DeviceCounters during = dev.counters();
  EXPECT_LE(during.in_flight, 4u);
  EXPECT_GT(during.queued, 0u);
  w.wait();
  for (size_t i = 0; i < kIos; ++i) EXPECT_EQ(static_cast<int64_t>(kBlock), w.results_[i]);
  DeviceCounters c = dev.counters();
  EXPECT_EQ(4u, c.in_flight_peak);
  EXPECT_EQ(kIos, c.ops[static_cast<int>(OpKind::kWrite)]);
  AlignedBuffer back(kIos * kBlock);
  dev.peek(0, back.data(), back.size());
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), back.size()));
}

TEST(SimDevice, CallbackMaySubmit) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 8);
  iovec iov{a.data(), kBlock};
  std::promise<int64_t> p;
  std::atomic<int> left{20};
  std::function<void(int64_t)> next;
  next = [&](int64_t res) {
    if (res < 0 || --left == 0) {
      p.set_value(res);
      return;
    }
    dev.submit_one(IoRequest{OpKind::kWrite, left * kBlock, kBlock, &iov, 1, next});
  };
  dev.submit_one(IoRequest{OpKind::kWrite, 0, kBlock, &iov, 1, next});
  EXPECT_EQ(static_cast<int64_t>(kBlock), p.get_future().get());
  EXPECT_EQ(20u, dev.counters().ops[static_cast<int>(OpKind::kWrite)]);
}

TEST(SimDevice, CloneAndPoke) {
  SimDevice dev(SimOptions{});
  AlignedBuffer a = pattern(kBlock, 11), b = pattern(kBlock, 12);
  ASSERT_TRUE(write_sync(dev, 0, a.data(), kBlock).ok());
  auto copy = dev.clone();
  AlignedBuffer back(kBlock);
  ASSERT_TRUE(read_sync(*copy, 0, back.data(), kBlock).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
  // The clone holds the contents as durable data.
  copy->power_loss(PowerLossMode::kDropAll, 1)->peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));

  dev.poke(8 * kBlock + 100, b.data(), 10);
  dev.power_loss(PowerLossMode::kDropAll, 1)->peek(8 * kBlock + 100, back.data(), 10);
  EXPECT_EQ(0, std::memcmp(back.data(), b.data(), 10));
  // Writes to the clone do not touch the original.
  ASSERT_TRUE(write_sync(*copy, 0, b.data(), kBlock).ok());
  dev.peek(0, back.data(), kBlock);
  EXPECT_EQ(0, std::memcmp(back.data(), a.data(), kBlock));
}

void submit_overlapping_writes() {
  SimOptions o;
  o.max_latency_us = 100000;
  SimDevice dev(o);
  AlignedBuffer a(2 * kBlock);
  iovec v1{a.data(), 2 * kBlock};
  iovec v2{a.data(), kBlock};
  IoRequest reqs[2];
  reqs[0] = IoRequest{OpKind::kWrite, 0, 2 * kBlock, &v1, 1, [](int64_t) {}};
  reqs[1] = IoRequest{OpKind::kWrite, kBlock, kBlock, &v2, 1, [](int64_t) {}};
  dev.submit(reqs);
}

TEST(SimDeviceDeathTest, OverlappingInFlightWritesAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(submit_overlapping_writes(), "invariant broken");
}

}  // namespace
}  // namespace vsfs::device
