// RbdDevice against a real Ceph cluster (tests/ceph/cluster.sh; rbd_device_test.sh
// starts one and passes its ceph.conf in VSFS_CEPH_CONF). Each test makes its own image
// in pool rbd with librbd and removes it afterwards.
// Threading: the test thread submits; callbacks touch only mutex-guarded state.
#include "device/rbd_device.h"

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "../unit/device/device_test_util.h"
#include "device/open.h"
#include "util/aligned_buffer.h"

namespace vsfs::device {
namespace {

constexpr uint64_t kImageBytes = 64ull << 20;
constexpr uint64_t kMiB = 1ull << 20;

std::string conf() {
  const char* c = std::getenv("VSFS_CEPH_CONF");
  return c != nullptr ? c : "";
}

// A client of the test cluster of its own (a second host, as far as Ceph can tell).
struct Client {
  rados_t cluster = nullptr;
  rados_ioctx_t io = nullptr;
  Client() {
    EXPECT_EQ(0, rados_create(&cluster, nullptr));
    EXPECT_EQ(0, rados_conf_read_file(cluster, conf().c_str()));
    EXPECT_EQ(0, rados_conf_set(cluster, "rbd_cache", "false"));
    EXPECT_EQ(0, rados_connect(cluster));
    EXPECT_EQ(0, rados_ioctx_create(cluster, "rbd", &io));
  }
  ~Client() {
    if (io != nullptr) rados_ioctx_destroy(io);
    rados_shutdown(cluster);
  }
};

AlignedBuffer pattern(uint64_t length, uint32_t seed) {
  AlignedBuffer b(length, false);
  std::mt19937 rng(seed);
  for (uint64_t i = 0; i < length; ++i) b.data()[i] = static_cast<uint8_t>(rng());
  return b;
}

class RbdDeviceTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(conf().empty()) << "VSFS_CEPH_CONF must name the test cluster's ceph.conf "
                                    "(run this through tests/ceph/rbd_device_test.sh)";
    image_ = std::string("dev-") + testing::UnitTest::GetInstance()->current_test_info()->name();
    rbd_remove(admin_.io, image_.c_str());  // left by an interrupted run
    int order = 22;
    ASSERT_EQ(0, rbd_create(admin_.io, image_.c_str(), kImageBytes, &order));
    name_ = "rbd:rbd/" + image_ + ":conf=" + conf();
  }
  void TearDown() override {
    dev_.reset();
    rbd_remove(admin_.io, image_.c_str());
  }

  Device& open_dev(uint32_t queue_depth = 32) {
    UringOptions o;
    o.queue_depth = queue_depth;
    auto d = open_device(name_, o);
    EXPECT_TRUE(d.ok()) << d.error().message;
    dev_ = std::move(d).value();
    return *dev_;
  }

  Client admin_;
  std::string image_;
  std::string name_;
  std::unique_ptr<Device> dev_;
};

TEST_F(RbdDeviceTest, WritesReadBackThroughManyBuffers) {
  Device& dev = open_dev();
  EXPECT_EQ(kImageBytes, dev.size_bytes());
  EXPECT_EQ(4096u, dev.alignment_bytes());
  EXPECT_TRUE(dev.discard_zeroes());
  EXPECT_EQ("rbd:rbd/" + image_, dev.describe());
  AlignedBuffer data = pattern(3 * kMiB, 1);
  // Three buffers of one write, spanning an object boundary (objects are 4 MiB).
  iovec iov[3] = {{data.data(), kMiB}, {data.data() + kMiB, 4096}, {data.data() + kMiB + 4096, 2 * kMiB - 4096}};
  Waiter w(1);
  dev.submit_one(IoRequest{OpKind::kWrite, 3 * kMiB, 3 * kMiB, iov, 3, w.done(0)});
  w.wait();  // a flush covers writes completed before it was submitted
  EXPECT_EQ(int64_t(3 * kMiB), w.results_[0]);
  Waiter f(1);
  dev.submit_one(IoRequest{OpKind::kFlush, 0, 0, nullptr, 0, f.done(0)});
  f.wait();
  EXPECT_EQ(0, f.results_[0]);

  AlignedBuffer back(3 * kMiB);
  iovec riov[2] = {{back.data(), 8192}, {back.data() + 8192, 3 * kMiB - 8192}};
  Waiter r(1);
  dev.submit_one(IoRequest{OpKind::kRead, 3 * kMiB, 3 * kMiB, riov, 2, r.done(0)});
  r.wait();
  EXPECT_EQ(int64_t(3 * kMiB), r.results_[0]);
  EXPECT_EQ(0, std::memcmp(data.data(), back.data(), 3 * kMiB));
  // And through another client: the bytes are in the cluster, not in a cache.
  rbd_image_t img;
  ASSERT_EQ(0, rbd_open_read_only(admin_.io, image_.c_str(), &img, nullptr));
  std::vector<char> other(3 * kMiB);
  EXPECT_EQ(ssize_t(3 * kMiB), rbd_read(img, 3 * kMiB, 3 * kMiB, other.data()));
  rbd_close(img);
  EXPECT_EQ(0, std::memcmp(data.data(), other.data(), 3 * kMiB));
  DeviceCounters c = dev.counters();
  EXPECT_EQ(1u, c.ops[int(OpKind::kWrite)]);
  EXPECT_EQ(3 * kMiB, c.bytes[int(OpKind::kRead)]);
  EXPECT_EQ(0u, c.errors);
}

// Many more requests than the queue depth: all complete once, on the completion thread,
// never inside submit(), with no more than queue_depth in librbd at once.
TEST_F(RbdDeviceTest, QueueDepthBoundsWhatIsInFlight) {
  Device& dev = open_dev(/*queue_depth=*/8);
  constexpr size_t kN = 400;
  AlignedBuffer data = pattern(kN * 4096, 2);
  std::vector<iovec> iov(kN);
  std::vector<IoRequest> batch;
  Waiter w(kN);
  std::atomic<int> off_thread{0};
  for (size_t i = 0; i < kN; ++i) {
    iov[i] = {data.data() + i * 4096, 4096};
    auto done = w.done(i);
    batch.push_back(IoRequest{OpKind::kWrite, ((i * 37) % 16000) * 4096 % kImageBytes, 4096,
                              &iov[i], 1, [&, done](int64_t res) {
                                if (!dev.in_completion_context()) ++off_thread;
                                done(res);
                              }});
  }
  // Offsets repeat: only completion counts and results matter here.
  dev.submit(batch);
  w.wait();
  for (size_t i = 0; i < kN; ++i) {
    EXPECT_EQ(4096, w.results_[i]) << i;
    EXPECT_EQ(1, w.calls_[i]) << i;
  }
  EXPECT_EQ(0, off_thread.load());
  DeviceCounters c = dev.counters();
  EXPECT_LE(c.in_flight_peak, 8u);
  EXPECT_EQ(0u, c.in_flight);
  EXPECT_EQ(0u, c.queued);
  EXPECT_EQ(kN, c.ops[int(OpKind::kWrite)]);
}

// A formatted block is a discarded one: it must read back as zeros, also where it is
// part of an object; write-zeroes too.
TEST_F(RbdDeviceTest, DiscardAndWriteZeroesReadBackAsZeros) {
  Device& dev = open_dev();
  AlignedBuffer data = pattern(8 * kMiB, 3);
  ASSERT_TRUE(write_sync(dev, 0, data.data(), 8 * kMiB).ok());
  ASSERT_TRUE(discard_sync(dev, 1 * kMiB, kMiB).ok());          // inside object 0
  ASSERT_TRUE(write_zeroes_sync(dev, 5 * kMiB, kMiB + 8192).ok());  // inside object 1
  AlignedBuffer back(8 * kMiB);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), 8 * kMiB).ok());
  EXPECT_EQ(0, std::memcmp(data.data(), back.data(), kMiB));
  EXPECT_TRUE(all_zero(back.data() + kMiB, kMiB));
  EXPECT_EQ(0, std::memcmp(data.data() + 2 * kMiB, back.data() + 2 * kMiB, 3 * kMiB));
  EXPECT_TRUE(all_zero(back.data() + 5 * kMiB, kMiB + 8192));
  EXPECT_EQ(0, std::memcmp(data.data() + 6 * kMiB + 8192, back.data() + 6 * kMiB + 8192,
                           2 * kMiB - 8192));
  EXPECT_TRUE(allocate_now(dev, 0, kMiB).ok());
}

TEST_F(RbdDeviceTest, BadRequestsFailThroughTheCallback) {
  Device& dev = open_dev();
  AlignedBuffer b(8192);
  iovec iov{b.data() + 1, 4096};
  Waiter w(2);
  dev.submit_one(IoRequest{OpKind::kRead, 0, 4096, &iov, 1, w.done(0)});  // misaligned
  iovec ok{b.data(), 4096};
  dev.submit_one(IoRequest{OpKind::kRead, kImageBytes, 4096, &ok, 1, w.done(1)});  // past the end
  w.wait();
  EXPECT_EQ(-EINVAL, w.results_[0]);
  EXPECT_EQ(-EINVAL, w.results_[1]);
}

// The completion thread's own blocking IO runs inline (a metadata miss in a callback).
TEST_F(RbdDeviceTest, BlockingIoOnTheCompletionThreadRunsInline) {
  Device& dev = open_dev();
  AlignedBuffer data = pattern(4096, 4);
  ASSERT_TRUE(write_sync(dev, 8192, data.data(), 4096).ok());
  AlignedBuffer back(4096);
  std::promise<bool> same;
  AlignedBuffer first(4096);
  iovec iov{first.data(), 4096};
  dev.submit_one(IoRequest{OpKind::kRead, 0, 4096, &iov, 1, [&](int64_t) {
                             same.set_value(read_sync(dev, 8192, back.data(), 4096).ok());
                           }});
  EXPECT_TRUE(same.get_future().get());
  EXPECT_EQ(0, std::memcmp(data.data(), back.data(), 4096));
}

// One writer: a second writable open refuses at once, naming the lock's owner; a
// read-only open works beside it and refuses writes.
TEST_F(RbdDeviceTest, ALiveOwnerKeepsTheImage) {
  Device& dev = open_dev();
  AlignedBuffer data = pattern(4096, 5);
  ASSERT_TRUE(write_sync(dev, 0, data.data(), 4096).ok());
  const auto start = std::chrono::steady_clock::now();
  auto second = open_device(name_, UringOptions{});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ErrorKind::kBusy, second.error().kind);
  EXPECT_NE(std::string::npos, second.error().message.find("exclusive lock (127.0.0.1"))
      << second.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));

  UringOptions ro;
  ro.read_only = true;
  auto reader = open_device(name_, ro);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  AlignedBuffer back(4096);
  ASSERT_TRUE(read_sync(**reader, 0, back.data(), 4096).ok());
  EXPECT_EQ(0, std::memcmp(data.data(), back.data(), 4096));
  auto w = write_sync(**reader, 0, data.data(), 4096);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(EROFS, w.error().errno_value);
  // The owner still writes.
  EXPECT_TRUE(write_sync(dev, 4096, data.data(), 4096).ok());
}

// Fencing: another client breaks the lock (blocklisting this one). From then on every
// IO of this device fails with EIO, queued or new, and none of its writes lands.
TEST_F(RbdDeviceTest, ABrokenLockFencesTheOldOwner) {
  Device& dev = open_dev();
  AlignedBuffer mine = pattern(kMiB, 6);
  ASSERT_TRUE(write_sync(dev, 0, mine.data(), kMiB).ok());

  Client taker;
  rbd_image_t img;
  ASSERT_EQ(0, rbd_open(taker.io, image_.c_str(), &img, nullptr));
  rbd_lock_mode_t mode;
  char* owners[4];
  size_t count = 4;
  ASSERT_EQ(0, rbd_lock_get_owners(img, &mode, owners, &count));
  ASSERT_EQ(1u, count);
  ASSERT_EQ(0, rbd_lock_break(img, RBD_LOCK_MODE_EXCLUSIVE, owners[0]));
  rbd_lock_get_owners_cleanup(owners, count);
  ASSERT_EQ(0, rbd_lock_acquire(img, RBD_LOCK_MODE_EXCLUSIVE));
  std::vector<char> theirs(kMiB, 't');
  ASSERT_EQ(ssize_t(kMiB), rbd_write(img, 0, kMiB, theirs.data()));

  // The old owner's writes, a batch deeper than its queue, a flush and a read.
  AlignedBuffer late = pattern(kMiB, 7);
  constexpr size_t kN = 64;
  std::vector<iovec> iov(kN);
  std::vector<IoRequest> batch;
  Waiter w(kN + 2);
  for (size_t i = 0; i < kN; ++i) {
    iov[i] = {late.data() + (i % 256) * 4096, 4096};
    batch.push_back(IoRequest{OpKind::kWrite, (i % 256) * 4096, 4096, &iov[i], 1, w.done(i)});
  }
  batch.push_back(IoRequest{OpKind::kFlush, 0, 0, nullptr, 0, w.done(kN)});
  AlignedBuffer back(4096);
  iovec riov{back.data(), 4096};
  batch.push_back(IoRequest{OpKind::kRead, 0, 4096, &riov, 1, w.done(kN + 1)});
  dev.submit(batch);
  w.wait();
  for (size_t i = 0; i < kN + 2; ++i) EXPECT_EQ(-EIO, w.results_[i]) << i;
  // Later ones fail at once, inline ones too.
  EXPECT_EQ(-EIO, run_io(dev, OpKind::kWrite, 0, late.data(), 4096));

  std::vector<char> now(kMiB);
  ASSERT_EQ(ssize_t(kMiB), rbd_read(img, 0, kMiB, now.data()));
  EXPECT_EQ(theirs, now);
  rbd_close(img);
}

// rbd resize while the datastore is mounted: librbd hands the request to the lock's
// owner, which resizes; the device then reads the new size (vsfs-grow on the mount).
TEST_F(RbdDeviceTest, SizeFollowsAGrownImage) {
  Device& dev = open_dev();
  rbd_image_t img;
  ASSERT_EQ(0, rbd_open(admin_.io, image_.c_str(), &img, nullptr));
  ASSERT_EQ(0, rbd_resize(img, 2 * kImageBytes));
  rbd_close(img);
  EXPECT_EQ(kImageBytes, dev.size_bytes());
  auto size = dev.refresh_size();
  ASSERT_TRUE(size.ok()) << size.error().message;
  EXPECT_EQ(2 * kImageBytes, *size);
  AlignedBuffer data = pattern(4096, 8);
  EXPECT_TRUE(write_sync(dev, 2 * kImageBytes - 4096, data.data(), 4096).ok());
}

TEST_F(RbdDeviceTest, MissingImageOrPoolIsNotFound) {
  auto d = open_device("rbd:rbd/no-such-image:conf=" + conf(), UringOptions{});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(ErrorKind::kNotFound, d.error().kind) << d.error().message;
  auto p = open_device("rbd:no-such-pool/x:conf=" + conf(), UringOptions{});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(ErrorKind::kNotFound, p.error().kind) << p.error().message;
  auto bad = open_device("rbd:rbd/x:conf=" + conf() + ":no_such_option=1", UringOptions{});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ErrorKind::kInvalidArgument, bad.error().kind) << bad.error().message;
}

}  // namespace
}  // namespace vsfs::device
