// The metadata queue: a request whose map is not cached waits for the missing block's
// asynchronous read (one read however many wait) instead of reading it synchronously
// under the metadata lock; it is then planned again from its lookup. Checked on a
// reopened datastore (nothing cached), with completions reordered and delayed by the
// simulated device: every read returns what was written, writes racing with reads on
// cold leaves land in order, the queue shows its waits, and a failed fetch falls back
// to a waiting lookup.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "device/sim_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::OpKind;
using device::SimDevice;
using device::SimOptions;

constexpr uint64_t kDiskBytes = 48ull << 20;  // ~48 map leaves of 252 grains
constexpr uint64_t kGrain = 4096;

class MetadataQueueTest : public testing::Test {
 protected:
  void SetUp() override {
    SimOptions o;
    o.size_bytes = 256ull << 20;
    o.reorder_completions = true;
    o.max_latency_us = 200;
    o.seed = 11;
    auto dev = std::make_unique<SimDevice>(o);
    ASSERT_TRUE(mkfs(*dev, {}).ok());
    raw_ = dev.get();
    auto ds = Datastore::open(std::move(dev), OpenOptions{});
    ASSERT_TRUE(ds.ok()) << ds.error().to_string();
    ds_ = std::move(ds).value();
    auto f = ds_->create(kRootIno, "disk.img", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    ino_ = f->ino;
    model_.resize(kDiskBytes);
    std::mt19937 rng(5);
    for (auto& b : model_) b = static_cast<uint8_t>(rng());
    for (uint64_t off = 0; off < kDiskBytes; off += 1u << 20) {
      ASSERT_TRUE(ds_->write_sync(ino_, off, model_.data() + off, 1u << 20).ok());
    }
    Reopen();
  }

  // Closes cleanly and opens the same medium again: nothing is cached.
  void Reopen() {
    ASSERT_TRUE(ds_->close().ok());
    auto image = raw_->clone();
    ds_.reset();
    raw_ = image.get();
    auto ds = Datastore::open(std::move(image), OpenOptions{});
    ASSERT_TRUE(ds.ok()) << ds.error().to_string();
    ds_ = std::move(ds).value();
  }

  std::unique_ptr<Datastore> ds_;
  SimDevice* raw_ = nullptr;
  Ino ino_ = 0;
  std::vector<uint8_t> model_;
};

// Counts outstanding callbacks.
class Pending {
 public:
  void add() {
    std::lock_guard lk(mu_);
    ++n_;
  }
  void done() {
    std::lock_guard lk(mu_);
    if (--n_ == 0) cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, std::chrono::seconds(60), [&] { return n_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_ = 0;
};

TEST_F(MetadataQueueTest, ColdReadsWaitForTheirBlockAndReturnTheData) {
  constexpr int kReads = 600;
  std::mt19937_64 rng(3);
  std::vector<std::vector<uint8_t>> bufs(kReads, std::vector<uint8_t>(kGrain));
  std::vector<uint64_t> offs(kReads);
  std::vector<int> errors(kReads, 0);
  Pending pending;
  for (int i = 0; i < kReads; ++i) {
    offs[i] = (rng() % (kDiskBytes / kGrain)) * kGrain;
    pending.add();
    ds_->read(ino_, offs[i], kGrain, bufs[i].data(), [&, i](Result<uint64_t> r) {
      if (!r.ok() || *r != kGrain) errors[i] = 1;
      pending.done();
    });
  }
  ASSERT_TRUE(pending.wait());
  for (int i = 0; i < kReads; ++i) {
    ASSERT_EQ(errors[i], 0) << "read " << i;
    ASSERT_EQ(0, std::memcmp(bufs[i].data(), model_.data() + offs[i], kGrain)) << "read " << i;
  }
  const DatastoreStats s = ds_->stats();
  EXPECT_GT(s.metadata_queue.waits, 0u) << "no request waited for a cold map block";
  EXPECT_EQ(s.metadata_queue.waiting_now, 0u);
  ASSERT_TRUE(ds_->close().ok());
}

// Writes and reads of the same cold grains, submitted together: each read sees either
// the old or the new content of its grain as the range order says, and afterwards (and
// after a reopen) the disk holds exactly the writes.
TEST_F(MetadataQueueTest, ColdWritesAndReadsKeepTheirOrder) {
  constexpr int kOps = 400;
  std::mt19937_64 rng(9);
  struct Op {
    bool write;
    uint64_t off;
    std::vector<uint8_t> buf;
    int error = 0;
  };
  std::vector<Op> ops(kOps);
  std::vector<uint8_t> expect = model_;
  // Per grain, the writes in submission order; a read must match the state after the
  // writes submitted before it (the range lock keeps submission order per grain).
  std::vector<std::vector<uint8_t>> read_expect(kOps);
  Pending pending;
  for (int i = 0; i < kOps; ++i) {
    Op& op = ops[i];
    op.write = rng() % 2 == 0;
    op.off = (rng() % (kDiskBytes / kGrain)) * kGrain;
    op.buf.resize(kGrain);
    if (op.write) {
      for (auto& b : op.buf) b = static_cast<uint8_t>(rng());
      std::memcpy(expect.data() + op.off, op.buf.data(), kGrain);
    } else {
      read_expect[i].assign(expect.begin() + static_cast<long>(op.off),
                            expect.begin() + static_cast<long>(op.off + kGrain));
    }
  }
  for (int i = 0; i < kOps; ++i) {
    Op& op = ops[i];
    pending.add();
    auto done = [&, i](Result<uint64_t> r) {
      if (!r.ok() || *r != kGrain) ops[i].error = 1;
      pending.done();
    };
    if (op.write) {
      ds_->write(ino_, op.off, op.buf.data(), kGrain, done);
    } else {
      ds_->read(ino_, op.off, kGrain, op.buf.data(), done);
    }
  }
  ASSERT_TRUE(pending.wait());
  for (int i = 0; i < kOps; ++i) {
    ASSERT_EQ(ops[i].error, 0) << "op " << i;
    if (!ops[i].write) {
      ASSERT_EQ(ops[i].buf, read_expect[i]) << "read " << i << " at " << ops[i].off;
    }
  }
  EXPECT_GT(ds_->stats().metadata_queue.waits, 0u);
  std::vector<uint8_t> back(kDiskBytes);
  ASSERT_TRUE(ds_->read_sync(ino_, 0, kDiskBytes, back.data()).ok());
  ASSERT_TRUE(back == expect);
  Reopen();
  std::fill(back.begin(), back.end(), 0);
  ASSERT_TRUE(ds_->read_sync(ino_, 0, kDiskBytes, back.data()).ok());
  ASSERT_TRUE(back == expect) << "after reopen";
  ASSERT_TRUE(ds_->close().ok());
}

// The block's fetch fails once: the request looks up again, waiting, and succeeds.
// When every read fails, the request reports the error.
TEST_F(MetadataQueueTest, FailedFetchFallsBackToAWaitingLookup) {
  std::vector<uint8_t> buf(kGrain);
  raw_->fail_nth(OpKind::kRead, 1);
  auto r = ds_->read_sync(ino_, 20 * kGrain, kGrain, buf.data());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(0, std::memcmp(buf.data(), model_.data() + 20 * kGrain, kGrain));

  // A leaf far from the first one is still cold; now the medium fails every read.
  raw_->fail_nth(OpKind::kRead, 1, /*persistent=*/true);
  auto bad = ds_->read_sync(ino_, kDiskBytes - kGrain, kGrain, buf.data());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().errno_value, EIO);
}

}  // namespace
}  // namespace vsfs
