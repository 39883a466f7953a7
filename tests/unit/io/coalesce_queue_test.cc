// CoalesceQueue: holding and merging rules on a scripted disk (FakeDisk: the test decides
// when each IO completes), and the promises on a real Datastore over a SimDevice that
// reorders and delays completions: reads and flushes see exactly what the queue order
// says, a failed combined IO fails exactly its members, every request completes once,
// and an idle disk is never held.
#include "io/coalesce_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "device/sim_device.h"
#include "io/coalesce_timer.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs::io {
namespace {

using device::OpKind;
using device::SimDevice;
using device::SimOptions;

// ---- a scripted disk ----

// Applies reads and writes to its memory when they are passed down (so the call order
// is the order of effect, as the RangeLock below a real queue makes it), and completes
// them only when the test says.
class FakeDisk final : public DiskTarget {
 public:
  struct Call {
    char kind = 'r';  // 'r', 'w', 'f'
    uint64_t offset = 0, length = 0;
    const void* data = nullptr;        // the first buffer passed down
    std::vector<const void*> buffers;  // all of them
    bool stable = false;               // writes: writev_stable (the buffers are kept)
    Done<uint64_t> done;
    Done<void> fsync_done;
  };

  void readv(uint64_t offset, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    std::lock_guard l(mu_);
    Call c = record('r', offset, iov, iovcnt, false, std::move(done));
    uint64_t at = offset;
    for (int i = 0; i < iovcnt; ++i) {
      std::memcpy(iov[i].iov_base, mem_.data() + at, iov[i].iov_len);
      at += iov[i].iov_len;
    }
    calls_.push_back(std::move(c));
  }
  void writev(uint64_t offset, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    write_any(offset, iov, iovcnt, false, std::move(done));
  }
  void writev_stable(uint64_t offset, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) override {
    write_any(offset, iov, iovcnt, true, std::move(done));
  }
  void fsync(Done<void> done) override {
    std::lock_guard l(mu_);
    Call c;
    c.kind = 'f';
    c.fsync_done = std::move(done);
    calls_.push_back(std::move(c));
  }

  size_t calls() {
    std::lock_guard l(mu_);
    return calls_.size();
  }
  Call call(size_t i) {
    std::lock_guard l(mu_);
    Call c;
    c.kind = calls_.at(i).kind;
    c.offset = calls_.at(i).offset;
    c.length = calls_.at(i).length;
    c.data = calls_.at(i).data;
    c.buffers = calls_.at(i).buffers;
    c.stable = calls_.at(i).stable;
    return c;
  }
  // Completes call i with its full length (or `error`), outside the lock.
  void complete(size_t i, int error = 0) {
    Done<uint64_t> d;
    Done<void> f;
    uint64_t len;
    {
      std::lock_guard l(mu_);
      d = std::move(calls_.at(i).done);
      f = std::move(calls_.at(i).fsync_done);
      len = calls_.at(i).length;
    }
    ASSERT_TRUE(d || f) << "call " << i << " completed twice";
    Error e{error, ErrorKind::kIo, "injected"};
    if (d) {
      if (error != 0) {
        d(e);
      } else {
        d(len);
      }
    } else {
      f(error != 0 ? Result<void>(e) : ok_result());
    }
  }
  std::vector<uint8_t> bytes(uint64_t offset, uint64_t length) {
    std::lock_guard l(mu_);
    return {mem_.begin() + static_cast<ptrdiff_t>(offset),
            mem_.begin() + static_cast<ptrdiff_t>(offset + length)};
  }

 private:
  Call record(char kind, uint64_t offset, const iovec* iov, int iovcnt, bool stable,
              Done<uint64_t> done) {
    Call c;
    c.kind = kind;
    c.offset = offset;
    for (int i = 0; i < iovcnt; ++i) {
      c.length += iov[i].iov_len;
      c.buffers.push_back(iov[i].iov_base);
    }
    c.data = iovcnt > 0 ? iov[0].iov_base : nullptr;
    c.stable = stable;
    c.done = std::move(done);
    return c;
  }
  void write_any(uint64_t offset, const iovec* iov, int iovcnt, bool stable,
                 Done<uint64_t> done) {
    std::lock_guard l(mu_);
    Call c = record('w', offset, iov, iovcnt, stable, std::move(done));
    uint64_t at = offset;
    for (int i = 0; i < iovcnt; ++i) {
      std::memcpy(mem_.data() + at, iov[i].iov_base, iov[i].iov_len);
      at += iov[i].iov_len;
    }
    calls_.push_back(std::move(c));
  }

  std::mutex mu_;
  std::vector<Call> calls_;
  std::vector<uint8_t> mem_ = std::vector<uint8_t>(4 << 20);
};

// One completion's outcome, counted.
struct Outcome {
  std::atomic<int> calls{0};
  int64_t value = -1;  // bytes, or -errno
  Done<uint64_t> done() {
    return [this](Result<uint64_t> r) {
      value = r.ok() ? static_cast<int64_t>(*r) : -r.error().errno_value;
      calls.fetch_add(1);
    };
  }
  Done<void> done_void() {
    return [this](Result<void> r) {
      value = r.ok() ? 0 : -r.error().errno_value;
      calls.fetch_add(1);
    };
  }
};

// Options whose deadline (60 s) never fires within a test step, however loaded the host
// (NoMergeAcrossABarrier... failed once in a CPU-starved run, its output lost; the 1 s
// deadline was the only timing in it): what is held is
// decided by arrivals and completions alone. Deadline tests set their own.
CoalesceOptions without_deadline() {
  CoalesceOptions o;
  o.hold_us_max = 60'000'000;
  return o;
}

struct FakeQueue {
  explicit FakeQueue(CoalesceOptions o = without_deadline()) {
    auto d = std::make_unique<FakeDisk>();
    disk = d.get();
    q = CoalesceQueue::create(std::move(d), o, &stats, &timer);
  }
  ~FakeQueue() {
    q->kick();
  }
  CoalesceStats stats;
  CoalesceTimer timer;
  FakeDisk* disk = nullptr;
  std::shared_ptr<CoalesceQueue> q;
};

std::vector<uint8_t> filled(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }

TEST(CoalesceQueue, IdleQueueSendsAtOnce) {
  FakeQueue f;
  auto data = filled(4096, 1);
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < 20; ++i) {
    Outcome o;
    if (i % 2 == 0) {
      f.q->write(uint64_t(i) * 4096, data.data(), data.size(), o.done());
    } else {
      f.q->read(uint64_t(i - 1) * 4096, buf.size(), buf.data(), o.done());
    }
    // Passed down before the call returned: nothing was in flight.
    ASSERT_EQ(f.disk->calls(), size_t(i + 1));
    f.disk->complete(i);
    EXPECT_EQ(o.calls.load(), 1);
    EXPECT_EQ(o.value, 4096);
  }
  auto s = f.stats.snapshot();
  EXPECT_EQ(s.held, 0u);
  EXPECT_EQ(s.requests_in, 20u);
  EXPECT_EQ(s.ios_out, 20u);
  EXPECT_EQ(s.merged, 0u);
}

// A disk that completes every call before returning from it, as the layer below does for
// a read of a hole or a .cbt map.
class InlineDisk final : public DiskTarget {
 public:
  void readv(uint64_t, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; ++i) {
      std::memset(iov[i].iov_base, 0, iov[i].iov_len);
      n += iov[i].iov_len;
    }
    done(n);
  }
  void writev(uint64_t, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; ++i) n += iov[i].iov_len;
    done(n);
  }
  void writev_stable(uint64_t o, const iovec* iov, int iovcnt, Done<uint64_t> done) override {
    writev(o, iov, iovcnt, std::move(done));
  }
  void fsync(Done<void> done) override { done(ok_result()); }
};

// The reply to the last request of the last handle lets the kernel send RELEASE, and
// another thread then drops the owner's reference, all before read() has returned. The
// queue must outlive its own call (the mount_uring_stress run under AddressSanitizer
// caught a read of the freed queue in arrive(), after an inline completion). Here the
// reply itself drops the last reference; AddressSanitizer sees any touch after it.
TEST(CoalesceQueue, AnInlineCompletionMayDropTheLastReference) {
  CoalesceStats stats;
  CoalesceTimer timer;
  std::vector<uint8_t> buf(8192, 7);
  for (int kind = 0; kind < 4; ++kind) {
    std::shared_ptr<CoalesceQueue> q =
        CoalesceQueue::create(std::make_unique<InlineDisk>(), without_deadline(), &stats, &timer);
    std::weak_ptr<CoalesceQueue> weak = q;
    int answered = 0;
    auto last = [&](auto) {
      ++answered;
      q.reset();
    };
    CoalesceQueue* raw = q.get();
    switch (kind) {
      case 0:
        raw->read(0, 4096, buf.data(), last);
        break;
      case 1:
        raw->write(4096, buf.data(), 4096, last);
        break;
      case 2:
        raw->write(0, buf.data(), 8192, last, /*stable=*/true);
        break;
      default:
        raw->flush(last);
        break;
    }
    EXPECT_EQ(answered, 1) << "kind " << kind;
    EXPECT_TRUE(weak.expired()) << "kind " << kind;
  }
}

TEST(CoalesceQueue, HoldsWhileBusyAndMergesContiguousWrites) {
  FakeQueue f;
  Outcome o[4];
  std::vector<uint8_t> d[4];
  for (int i = 0; i < 4; ++i) d[i] = filled(4096, uint8_t(10 + i));
  f.q->write(0, d[0].data(), 4096, o[0].done());
  ASSERT_EQ(f.disk->calls(), 1u);  // idle: at once
  EXPECT_FALSE(f.disk->call(0).stable) << "the caller's buffer went down uncopied";
  for (int i = 1; i < 4; ++i) f.q->write(uint64_t(i) * 4096, d[i].data(), 4096, o[i].done());
  EXPECT_EQ(f.disk->calls(), 1u);  // held behind the one in flight
  EXPECT_EQ(f.q->held(), 3u);
  f.disk->complete(0);
  ASSERT_EQ(f.disk->calls(), 2u);
  auto c = f.disk->call(1);
  EXPECT_EQ(c.kind, 'w');
  EXPECT_TRUE(c.stable);  // the queue's own copies, kept until done
  EXPECT_EQ(c.buffers.size(), 3u);
  EXPECT_NE(c.buffers[0], d[1].data());
  EXPECT_EQ(c.offset, 4096u);
  EXPECT_EQ(c.length, 3u * 4096);
  f.disk->complete(1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(o[i].calls.load(), 1);
    EXPECT_EQ(o[i].value, 4096);
    EXPECT_EQ(f.disk->bytes(uint64_t(i) * 4096, 4096), d[i]);
  }
  auto s = f.stats.snapshot();
  EXPECT_EQ(s.requests_in, 4u);
  EXPECT_EQ(s.ios_out, 2u);
  EXPECT_EQ(s.merged, 2u);
  EXPECT_EQ(s.held, 3u);
  EXPECT_EQ(s.held_now, 0u);
}

// A stable write (a FUSE ring entry's payload, kept until the reply) is never copied:
// passed down alone it goes as writev_stable with the caller's own pointer, also after
// it was held; merged with others the combined write carries the callers' buffers.
TEST(CoalesceQueue, StableWritesGoDownInPlace) {
  FakeQueue f;
  Outcome o[4];
  std::vector<uint8_t> d[4];
  for (int i = 0; i < 4; ++i) d[i] = filled(4096, uint8_t(30 + i));
  f.q->write(0, d[0].data(), 4096, o[0].done(), true);
  ASSERT_EQ(f.disk->calls(), 1u);
  EXPECT_TRUE(f.disk->call(0).stable);
  EXPECT_EQ(f.disk->call(0).data, d[0].data());
  f.q->write(4096, d[1].data(), 4096, o[1].done(), true);
  EXPECT_EQ(f.q->held(), 1u);  // behind the one in flight
  f.disk->complete(0);
  ASSERT_EQ(f.disk->calls(), 2u);
  EXPECT_TRUE(f.disk->call(1).stable);
  EXPECT_EQ(f.disk->call(1).data, d[1].data()) << "a held stable write was copied";
  f.q->write(2 * 4096, d[2].data(), 4096, o[2].done(), true);
  f.q->write(3 * 4096, d[3].data(), 4096, o[3].done(), true);
  f.disk->complete(1);
  ASSERT_EQ(f.disk->calls(), 3u);
  EXPECT_TRUE(f.disk->call(2).stable);
  EXPECT_EQ(f.disk->call(2).buffers, (std::vector<const void*>{d[2].data(), d[3].data()}))
      << "a combined write of stable writes was copied";
  EXPECT_EQ(f.disk->call(2).length, 2u * 4096);
  f.disk->complete(2);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(o[i].calls.load(), 1);
    EXPECT_EQ(o[i].value, 4096);
    EXPECT_EQ(f.disk->bytes(uint64_t(i) * 4096, 4096), d[i]);
  }
}

TEST(CoalesceQueue, ContiguousReadsShareOneIoAndGetTheirOwnBytes) {
  FakeQueue f;
  std::vector<uint8_t> pat(5 * 4096);
  for (size_t i = 0; i < pat.size(); ++i) pat[i] = uint8_t(i * 7 + 3);
  Outcome w;
  f.q->write(0, pat.data(), pat.size(), w.done());
  f.disk->complete(0);
  f.q->plug();
  std::vector<uint8_t> b[5];
  Outcome o[5];
  // Out of order arrivals, and one of 1000 bytes.
  const int order[5] = {3, 0, 4, 1, 2};
  for (int k : order) {
    b[k].assign(4096, 0);
    f.q->read(uint64_t(k) * 4096, k == 4 ? 1000 : 4096, b[k].data(), o[k].done());
  }
  EXPECT_EQ(f.disk->calls(), 1u);
  f.q->unplug();
  ASSERT_EQ(f.disk->calls(), 2u);
  EXPECT_EQ(f.disk->call(1).offset, 0u);
  EXPECT_EQ(f.disk->call(1).length, 4u * 4096 + 1000);
  // Scatter-gather: the combined read lands in the callers' own buffers, in order.
  EXPECT_EQ(f.disk->call(1).buffers,
            (std::vector<const void*>{b[0].data(), b[1].data(), b[2].data(), b[3].data(),
                                      b[4].data()}));
  f.disk->complete(1);
  for (int k = 0; k < 5; ++k) {
    ASSERT_EQ(o[k].calls.load(), 1);
    const size_t n = k == 4 ? 1000 : 4096;
    EXPECT_EQ(o[k].value, int64_t(n));
    EXPECT_TRUE(std::equal(b[k].begin(), b[k].begin() + n, pat.begin() + k * 4096)) << k;
  }
}

TEST(CoalesceQueue, RandomIoIsNotHeld) {
  FakeQueue f;
  auto d = filled(4096, 5);
  Outcome a, b;
  f.q->write(0, d.data(), 4096, a.done());
  // Far from anything in flight or held: nothing to merge with, so not held.
  f.q->write(3u << 20, d.data(), 4096, b.done());
  EXPECT_EQ(f.disk->calls(), 2u);
  EXPECT_EQ(f.stats.snapshot().held, 0u);
  f.disk->complete(0);
  f.disk->complete(1);
  EXPECT_EQ(a.calls.load() + b.calls.load(), 2);
}

TEST(CoalesceQueue, OverlappingWritesKeepTheirOrder) {
  FakeQueue f;
  f.q->plug();
  auto a = filled(8192, 'a'), b = filled(8192, 'b'), c = filled(8192, 'c'), z = filled(4096, 'z');
  Outcome o[6];
  std::vector<uint8_t> r1(16384), r2(4096);
  f.q->write(0, a.data(), 8192, o[0].done());       // [0, 8k)
  f.q->write(4096, b.data(), 8192, o[1].done());    // [4k, 12k): over a
  f.q->read(0, 16384, r1.data(), o[2].done());      // sees a, b
  f.q->write(8192, c.data(), 8192, o[3].done());    // [8k, 16k): over b
  f.q->write(12288, z.data(), 4096, o[4].done());   // [12k, 16k): over c
  f.q->read(12288, 4096, r2.data(), o[5].done());   // sees z
  f.q->unplug();
  for (size_t i = 0; i < f.disk->calls(); ++i) f.disk->complete(i);
  for (auto& x : o) EXPECT_EQ(x.calls.load(), 1);
  std::vector<uint8_t> want1(16384);
  std::fill(want1.begin(), want1.begin() + 4096, 'a');
  std::fill(want1.begin() + 4096, want1.begin() + 12288, 'b');
  std::fill(want1.begin() + 12288, want1.end(), 0);
  EXPECT_EQ(r1, want1);
  EXPECT_EQ(r2, z);
  std::vector<uint8_t> want(16384);
  std::fill(want.begin(), want.begin() + 4096, 'a');
  std::fill(want.begin() + 4096, want.begin() + 8192, 'b');
  std::fill(want.begin() + 8192, want.begin() + 12288, 'c');
  std::fill(want.begin() + 12288, want.end(), 'z');
  EXPECT_EQ(f.disk->bytes(0, 16384), want);
}

TEST(CoalesceQueue, NoMergeAcrossABarrierAndTheBarrierWaitsForEarlierIo) {
  FakeQueue f;
  auto a = filled(4096, 'a'), b = filled(4096, 'b');
  Outcome w0, w1, fs, w2;
  f.q->write(0, a.data(), 4096, w0.done());  // in flight
  f.q->write(4096, a.data(), 4096, w1.done());
  f.q->flush(fs.done_void());
  f.q->write(8192, b.data(), 4096, w2.done());  // adjacent to w1, but after the barrier
  EXPECT_EQ(f.disk->calls(), 1u);
  f.disk->complete(0);
  // w1 went down; the barrier waits for it; w2 waits behind the barrier.
  ASSERT_EQ(f.disk->calls(), 2u);
  EXPECT_EQ(f.disk->call(1).offset, 4096u);
  EXPECT_EQ(f.disk->call(1).length, 4096u);
  f.disk->complete(1);
  ASSERT_EQ(f.disk->calls(), 4u);
  EXPECT_EQ(f.disk->call(2).kind, 'f');
  EXPECT_EQ(f.disk->call(3).kind, 'w');
  EXPECT_EQ(f.disk->call(3).offset, 8192u);
  EXPECT_EQ(f.disk->call(3).length, 4096u);
  EXPECT_EQ(fs.calls.load(), 0);
  f.disk->complete(2);
  f.disk->complete(3);
  for (auto* x : {&w0, &w1, &fs, &w2}) EXPECT_EQ(x->calls.load(), 1);
  EXPECT_EQ(f.stats.snapshot().barriers, 1u);
}

TEST(CoalesceQueue, DeadlineSendsHeldRequests) {
  CoalesceOptions o;
  o.hold_us_max = 2000;
  FakeQueue f(o);
  auto d = filled(4096, 1);
  Outcome a, b;
  f.q->write(0, d.data(), 4096, a.done());
  f.q->write(4096, d.data(), 4096, b.done());
  EXPECT_EQ(f.disk->calls(), 1u);
  // No completion comes: the timer must send it.
  for (int i = 0; i < 2000 && f.disk->calls() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(f.disk->calls(), 2u);
  auto s = f.stats.snapshot();
  EXPECT_GE(s.deadline_flushes, 1u);
  EXPECT_GE(s.hold_us_max, 2000u);
  f.disk->complete(0);
  f.disk->complete(1);
  EXPECT_EQ(a.calls.load() + b.calls.load(), 2);
}

TEST(CoalesceQueue, FullQueueFlushesAndCombinedSizeIsBounded) {
  CoalesceOptions o = without_deadline();
  o.max_held = 6;
  o.max_combined_kib = 8;
  FakeQueue f(o);
  auto d = filled(4096, 1);
  Outcome x[7];
  f.q->write(0, d.data(), 4096, x[0].done());
  for (int i = 1; i < 7; ++i) f.q->write(uint64_t(i) * 4096, d.data(), 4096, x[i].done());
  // The sixth held request filled the queue: three IOs of at most 8 KiB.
  ASSERT_EQ(f.disk->calls(), 4u);
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(f.disk->call(i).length, 8192u);
  EXPECT_GE(f.stats.snapshot().full_flushes, 1u);
  for (size_t i = 0; i < 4; ++i) f.disk->complete(i);
  for (auto& y : x) EXPECT_EQ(y.calls.load(), 1);
}

TEST(CoalesceQueue, FailedCombinedIoFailsItsMembersOnly) {
  FakeQueue f;
  f.q->plug();
  auto d = filled(4096, 1);
  Outcome x[5];
  for (int i = 0; i < 3; ++i) f.q->write(uint64_t(i) * 4096, d.data(), 4096, x[i].done());
  f.q->write(1u << 20, d.data(), 4096, x[3].done());
  f.q->write((1u << 20) + 4096, d.data(), 4096, x[4].done());
  f.q->unplug();
  ASSERT_EQ(f.disk->calls(), 2u);
  f.disk->complete(0, EIO);
  f.disk->complete(1);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(x[i].calls.load(), 1);
    EXPECT_EQ(x[i].value, i < 3 ? -EIO : 4096) << i;
  }
}

// ---- on a real datastore ----

struct RealDisk {
  explicit RealDisk(SimOptions so, uint64_t file_bytes) {
    auto dev = std::make_unique<SimDevice>(so);
    EXPECT_TRUE(mkfs(*dev, {}).ok());
    sim = dev.get();
    OpenOptions oo;
    oo.commit_interval_ms = 60000;
    auto r = Datastore::open(std::move(dev), oo);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    ds = std::move(r).value();
    auto f = ds->create(kRootIno, "disk.img", 0644, 0, 0);
    EXPECT_TRUE(f.ok());
    ino = f->ino;
    EXPECT_TRUE(ds->truncate_sync(ino, file_bytes).ok());
  }
  std::shared_ptr<CoalesceQueue> queue(const CoalesceOptions& o) {
    return CoalesceQueue::create(std::make_unique<DatastoreDisk>(*ds, ino), o, &stats, &timer);
  }
  // What a power cut now leaves, read back through a fresh datastore.
  std::vector<uint8_t> durable_contents(uint64_t length) {
    auto image = sim->power_loss(device::PowerLossMode::kDropAll, 1);
    OpenOptions oo;
    oo.force = true;
    oo.start_background = false;
    oo.mark_mounted = false;
    auto r = Datastore::open(std::move(image), oo);
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    std::vector<uint8_t> out(length);
    if (!r.ok()) return out;
    auto got = (*r)->read_sync(ino, 0, length, out.data());
    EXPECT_TRUE(got.ok());
    EXPECT_TRUE((*r)->close().ok());
    return out;
  }

  CoalesceStats stats;
  CoalesceTimer timer;
  SimDevice* sim = nullptr;
  std::unique_ptr<Datastore> ds;
  Ino ino = 0;
};

SimOptions busy_device(uint64_t seed) {
  SimOptions so;
  so.size_bytes = 256ull << 20;
  so.seed = seed;
  so.reorder_completions = true;
  so.max_latency_us = 300;
  return so;
}

// Waits for `n` completions counted in `count`.
class Waiter {
 public:
  void one() {
    std::lock_guard l(mu_);
    ++n_;
    cv_.notify_all();
  }
  void wait(uint64_t n) {
    std::unique_lock l(mu_);
    ASSERT_TRUE(cv_.wait_for(l, std::chrono::seconds(60), [&] { return n_ >= n; }))
        << "only " << n_ << " of " << n << " completions";
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t n_ = 0;
};

TEST(CoalesceQueueOnDatastore, IdleDiskIsNeverHeld) {
  RealDisk d(busy_device(3), 1 << 20);
  auto q = d.queue({});
  std::vector<uint8_t> w(4096, 7), r(4096);
  for (int i = 0; i < 50; ++i) {
    Waiter wt;
    Outcome o;
    q->write(uint64_t(i % 16) * 4096, w.data(), w.size(), [&](Result<uint64_t> x) {
      o.done()(std::move(x));
      wt.one();
    });
    wt.wait(1);
    Outcome o2;
    Waiter wt2;
    q->read(uint64_t(i % 16) * 4096, r.size(), r.data(), [&](Result<uint64_t> x) {
      o2.done()(std::move(x));
      wt2.one();
    });
    wt2.wait(1);
    ASSERT_EQ(o.value, 4096);
    ASSERT_EQ(o2.value, 4096);
    ASSERT_EQ(r, w);
  }
  auto s = d.stats.snapshot();
  EXPECT_EQ(s.held, 0u);
  EXPECT_EQ(s.ios_out, s.requests_in);
  EXPECT_EQ(s.requests_in, 100u);
}

TEST(CoalesceQueueOnDatastore, ShortReadIsSplitAmongMembers) {
  RealDisk d(busy_device(4), 10000);
  std::vector<uint8_t> pat(10000);
  for (size_t i = 0; i < pat.size(); ++i) pat[i] = uint8_t(i * 13 + 1);
  ASSERT_TRUE(d.ds->write_sync(d.ino, 0, pat.data(), pat.size()).ok());
  auto q = d.queue({});
  q->plug();
  Waiter wt;
  int64_t got[4];
  std::vector<uint8_t> b[4];
  for (int i = 0; i < 4; ++i) {
    b[i].assign(4096, 0xee);
    q->read(uint64_t(i) * 4096, 4096, b[i].data(), [&, i](Result<uint64_t> r) {
      got[i] = r.ok() ? int64_t(*r) : -1;
      wt.one();
    });
  }
  q->unplug();
  wt.wait(4);
  EXPECT_EQ(got[0], 4096);
  EXPECT_EQ(got[1], 4096);
  EXPECT_EQ(got[2], 10000 - 8192);
  EXPECT_EQ(got[3], 0);
  for (int i = 0; i < 3; ++i) {
    const auto n = static_cast<size_t>(got[i]);
    EXPECT_TRUE(std::equal(b[i].begin(), b[i].begin() + static_cast<ptrdiff_t>(n),
                           pat.begin() + i * 4096));
  }
  EXPECT_EQ(d.stats.snapshot().ios_out, 1u);
}

TEST(CoalesceQueueOnDatastore, DeviceErrorFailsExactlyTheMembersOfTheCombinedIo) {
  for (int which = 1; which <= 2; ++which) {
    RealDisk d(busy_device(5), 4 << 20);
    // Map the grains first (whole grains, so the test writes below need no fill reads).
    std::vector<uint8_t> base(4 << 20, 1);
    ASSERT_TRUE(d.ds->write_sync(d.ino, 0, base.data(), base.size()).ok());
    ASSERT_TRUE(d.ds->fsync_sync(d.ino).ok());  // no journal write may come later
    auto q = d.queue({});
    q->plug();
    Waiter wt;
    int64_t res[6];
    std::vector<uint8_t> data(4096, 9);
    // IO 1: three contiguous writes at 0; IO 2: two at 2 MiB; the writes pass down in
    // offset order, so device write `which` belongs to IO `which`.
    const uint64_t offs[5] = {0, 4096, 8192, 2 << 20, (2 << 20) + 4096};
    for (int i = 0; i < 5; ++i) {
      q->write(offs[i], data.data(), 4096, [&, i](Result<uint64_t> r) {
        res[i] = r.ok() ? int64_t(*r) : -r.error().errno_value;
        wt.one();
      });
    }
    d.sim->fail_nth(OpKind::kWrite, static_cast<uint64_t>(which));
    q->unplug();
    wt.wait(5);
    EXPECT_EQ(d.stats.snapshot().ios_out, 2u);
    for (int i = 0; i < 5; ++i) {
      const bool member = which == 1 ? i < 3 : i >= 3;
      EXPECT_EQ(res[i], member ? -EIO : 4096) << "which " << which << " request " << i;
    }
  }
}

TEST(CoalesceQueueOnDatastore, ReadErrorFailsExactlyTheMembers) {
  RealDisk d(busy_device(6), 4 << 20);
  std::vector<uint8_t> base(4 << 20, 1);
  ASSERT_TRUE(d.ds->write_sync(d.ino, 0, base.data(), base.size()).ok());
  ASSERT_TRUE(d.ds->fsync_sync(d.ino).ok());
  auto q = d.queue({});
  q->plug();
  Waiter wt;
  int64_t res[4];
  std::vector<uint8_t> b[4];
  const uint64_t offs[4] = {0, 4096, 3 << 20, (3 << 20) + 4096};
  for (int i = 0; i < 4; ++i) {
    b[i].resize(4096);
    q->read(offs[i], 4096, b[i].data(), [&, i](Result<uint64_t> r) {
      res[i] = r.ok() ? int64_t(*r) : -r.error().errno_value;
      wt.one();
    });
  }
  d.sim->fail_nth(OpKind::kRead, 2);
  q->unplug();
  wt.wait(4);
  EXPECT_EQ(res[0], 4096);
  EXPECT_EQ(res[1], 4096);
  EXPECT_EQ(res[2], -EIO);
  EXPECT_EQ(res[3], -EIO);
  EXPECT_EQ(b[0], std::vector<uint8_t>(4096, 1));
}

// ---- randomised bursts against a model ----

struct Op {
  char kind = 'w';  // 'w', 'r', 'f'
  uint64_t offset = 0, length = 0;
  std::vector<uint8_t> data;  // writes: what was written; reads: what came back
  uint64_t seq = 0;
  std::atomic<int> completions{0};
  int64_t result = -1;
  uint64_t stamp = 0;  // global completion order
};

class BurstTest : public ::testing::TestWithParam<int> {};

TEST_P(BurstTest, ReadsAndFlushesMatchTheQueueOrder) {
  constexpr uint64_t kRegion = 1 << 20;
  constexpr int kThreads = 4;
  constexpr uint64_t kShared = kThreads * kRegion;  // one more region all threads share
  constexpr uint64_t kFileBytes = kShared + kRegion;
  constexpr int kRounds = 4;
  constexpr int kOpsPerBurst = 150;
  const int seed = GetParam();

  RealDisk d(busy_device(uint64_t(seed)), kFileBytes);
  CoalesceOptions co;
  co.max_inflight = 4;
  co.max_held = 32;
  co.hold_us_max = 3000;
  co.max_combined_kib = 64;
  auto q = d.queue(co);
  std::vector<uint8_t> model(kFileBytes, 0);
  std::atomic<uint64_t> stamps{0};

  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::vector<std::unique_ptr<Op>>> per_thread(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(uint64_t(seed) * 1000003 + uint64_t(round) * 101 + uint64_t(t));
        auto& ops = per_thread[size_t(t)];
        Waiter wt;
        uint64_t last_end = uint64_t(t) * kRegion;
        const uint64_t sizes[] = {512, 4096, 4096, 4096, 8192, 12288, 16384, 65536};
        for (int i = 0; i < kOpsPerBurst; ++i) {
          auto op = std::make_unique<Op>();
          const unsigned k = unsigned(rng() % 100);
          op->kind = k < 60 ? 'w' : k < 96 ? 'r' : 'f';
          const bool shared = rng() % 100 < 30;
          const uint64_t base = shared ? kShared : uint64_t(t) * kRegion;
          uint64_t len = rng() % 8 == 0 ? 1 + rng() % 20000 : sizes[rng() % 8];
          uint64_t off;
          if (rng() % 100 < 45 && last_end >= base && last_end < base + kRegion) {
            off = last_end;  // adjacent: the next piece of a stream
          } else {
            off = base + (rng() % 2 ? rng() % kRegion / 512 * 512 : rng() % kRegion);
          }
          len = std::min(len, base + kRegion - off);
          if (len == 0) {
            off = base;
            len = 1;
          }
          op->offset = off;
          op->length = len;
          last_end = off + len;
          Op* p = op.get();
          auto finish = [p, &wt, &stamps](int64_t v) {
            p->result = v;
            p->stamp = stamps.fetch_add(1) + 1;
            p->completions.fetch_add(1);
            wt.one();
          };
          if (op->kind == 'w') {
            op->data.resize(len);
            const uint8_t salt = uint8_t(rng());
            for (uint64_t b = 0; b < len; ++b) op->data[b] = uint8_t(salt + b * 31 + (b >> 9));
            op->seq = q->write(off, op->data.data(), len, [finish](Result<uint64_t> r) {
              finish(r.ok() ? int64_t(*r) : -r.error().errno_value);
            });
          } else if (op->kind == 'r') {
            op->data.assign(len, 0xcd);
            op->seq = q->read(off, len, op->data.data(), [finish](Result<uint64_t> r) {
              finish(r.ok() ? int64_t(*r) : -r.error().errno_value);
            });
          } else {
            op->seq = q->flush([finish](Result<void> r) {
              finish(r.ok() ? 0 : -r.error().errno_value);
            });
          }
          ops.push_back(std::move(op));
          if (rng() % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        }
        wt.wait(ops.size());
      });
    }
    for (auto& th : threads) th.join();

    // Replay in queue order on the model: every read must see exactly the model.
    std::vector<Op*> all;
    for (auto& v : per_thread) {
      for (auto& op : v) all.push_back(op.get());
    }
    std::sort(all.begin(), all.end(), [](Op* a, Op* b) { return a->seq < b->seq; });
    for (size_t i = 1; i < all.size(); ++i) ASSERT_LT(all[i - 1]->seq, all[i]->seq);
    for (Op* op : all) {
      ASSERT_EQ(op->completions.load(), 1) << "seq " << op->seq;
      if (op->kind == 'f') {
        ASSERT_EQ(op->result, 0);
        continue;
      }
      ASSERT_EQ(op->result, int64_t(op->length)) << op->kind << " seq " << op->seq;
      if (op->kind == 'w') {
        std::copy(op->data.begin(), op->data.end(), model.begin() + ptrdiff_t(op->offset));
      } else {
        ASSERT_TRUE(std::equal(op->data.begin(), op->data.end(),
                               model.begin() + ptrdiff_t(op->offset)))
            << "read seq " << op->seq << " at " << op->offset << "+" << op->length
            << " differs from the model (round " << round << ")";
      }
    }
    // A flush completes after every request before it in queue order.
    for (Op* f : all) {
      if (f->kind != 'f') continue;
      for (Op* op : all) {
        if (op->seq >= f->seq) break;
        ASSERT_LT(op->stamp, f->stamp) << "seq " << op->seq << " completed after flush "
                                       << f->seq;
      }
    }

    // What a flush persists: the model, byte for byte, after a power cut.
    Waiter wt;
    int64_t fr = -1;
    q->flush([&](Result<void> r) {
      fr = r.ok() ? 0 : -1;
      wt.one();
    });
    wt.wait(1);
    ASSERT_EQ(fr, 0);
    auto durable = d.durable_contents(kFileBytes);
    ASSERT_TRUE(durable == model) << "durable contents differ from the model after round "
                                  << round;
  }
  auto s = d.stats.snapshot();
  EXPECT_GT(s.held, 0u);
  EXPECT_GT(s.merged, 0u) << "the bursts never merged: the test lost its point";
  EXPECT_LT(s.ios_out, s.requests_in);
  EXPECT_EQ(s.held_now, 0u);
  EXPECT_EQ(s.in_flight_now, 0u);
}

INSTANTIATE_TEST_SUITE_P(Seeds, BurstTest, ::testing::Values(1, 2, 3));

// Errors in the middle of bursts: every request still completes exactly once, and only
// requests of failed IOs fail.
TEST(CoalesceQueueOnDatastore, ExactlyOnceUnderErrorsInBursts) {
  RealDisk d(busy_device(9), 2 << 20);
  std::vector<uint8_t> base(2 << 20, 3);
  ASSERT_TRUE(d.ds->write_sync(d.ino, 0, base.data(), base.size()).ok());
  ASSERT_TRUE(d.ds->fsync_sync(d.ino).ok());
  CoalesceOptions co;
  co.max_inflight = 2;
  auto q = d.queue(co);
  constexpr int kThreads = 3, kOps = 200;
  std::vector<std::vector<std::unique_ptr<Op>>> per_thread(kThreads);
  d.sim->fail_nth(OpKind::kRead, 7);
  d.sim->fail_nth(OpKind::kWrite, 11);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(uint64_t(t) + 77);
      Waiter wt;
      uint64_t off = uint64_t(t) * (512 << 10);
      for (int i = 0; i < kOps; ++i) {
        auto op = std::make_unique<Op>();
        op->kind = rng() % 2 ? 'w' : 'r';
        op->offset = off;
        op->length = 4096;
        off = (off + 4096) % (2 << 20);
        op->data.assign(4096, uint8_t(i));
        Op* p = op.get();
        auto cb = [p, &wt](Result<uint64_t> r) {
          p->result = r.ok() ? int64_t(*r) : -r.error().errno_value;
          p->completions.fetch_add(1);
          wt.one();
        };
        if (op->kind == 'w') {
          q->write(op->offset, op->data.data(), 4096, cb);
        } else {
          q->read(op->offset, 4096, op->data.data(), cb);
        }
        per_thread[size_t(t)].push_back(std::move(op));
      }
      wt.wait(kOps);
    });
  }
  for (auto& th : threads) th.join();
  uint64_t failed = 0;
  for (auto& v : per_thread) {
    for (auto& op : v) {
      ASSERT_EQ(op->completions.load(), 1);
      ASSERT_TRUE(op->result == 4096 || op->result == -EIO) << op->result;
      failed += op->result < 0;
    }
  }
  // Two device IOs failed; each failed at least one request, and no more requests than
  // two combined IOs can hold.
  EXPECT_GE(failed, 2u);
  EXPECT_LE(failed, 2u * (co.max_combined_kib * 1024 / 4096));
}

}  // namespace
}  // namespace vsfs::io
