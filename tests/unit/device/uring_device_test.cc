// Tests of UringDevice on temporary files: a disk-backed directory (/var/tmp) with
// O_DIRECT, and tmpfs (/dev/shm) both direct and buffered, plus an optional loop
// device (skipped when losetup is not available).
// Threading: the test thread submits; callbacks touch only mutex-guarded state.
#include "device/uring_device.h"

#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "device_test_util.h"
#include "util/aligned_buffer.h"

namespace vsfs::device {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kFileBytes = 64ull << 20;

AlignedBuffer pattern(uint64_t length, uint32_t seed) {
  AlignedBuffer b(length, false);
  for (uint64_t i = 0; i < length; ++i) {
    b.data()[i] = static_cast<uint8_t>(seed * 131 + i * 7 + i / 4096);
  }
  return b;
}

struct Backing {
  const char* dir;
  bool direct;
};

std::string backing_name(const testing::TestParamInfo<Backing>& info) {
  std::string name = info.param.dir;
  std::replace(name.begin(), name.end(), '/', '_');
  return name.substr(1) + (info.param.direct ? "_direct" : "_buffered");
}

// A sparse temporary file of kFileBytes, removed at the end of the test.
class UringFileTest : public testing::TestWithParam<Backing> {
 protected:
  void SetUp() override {
    std::string tmpl = std::string(GetParam().dir) + "/vsfs-device-test-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    ASSERT_GE(fd, 0) << std::strerror(errno);
    path_ = tmpl;
    ASSERT_EQ(0, ::ftruncate(fd, kFileBytes));
    ::close(fd);
  }
  void TearDown() override {
    dev_.reset();
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  Device& open_dev(uint32_t queue_depth = 32) {
    UringOptions o;
    o.queue_depth = queue_depth;
    o.try_direct = GetParam().direct;
    auto r = open_uring_device(path_, o);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().to_string());
    if (!r.ok()) std::abort();
    dev_ = std::move(r).value();
    return *dev_;
  }

  uint64_t allocated_bytes() {
    struct stat st {};
    EXPECT_EQ(0, ::stat(path_.c_str(), &st));
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  // Reads the file through the page cache, bypassing the device.
  std::vector<uint8_t> pread_file(uint64_t offset, uint64_t length) {
    std::vector<uint8_t> out(length);
    int fd = ::open(path_.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(static_cast<ssize_t>(length), ::pread(fd, out.data(), length, offset));
    ::close(fd);
    return out;
  }

  std::string path_;
  std::unique_ptr<Device> dev_;
};

TEST_P(UringFileTest, Geometry) {
  Device& dev = open_dev();
  EXPECT_EQ(kFileBytes, dev.size_bytes());
  EXPECT_EQ(4096u, dev.alignment_bytes());
  EXPECT_TRUE(dev.discard_zeroes());
  EXPECT_NE(std::string::npos, dev.describe().find(path_));
  EXPECT_NE(std::string::npos,
            dev.describe().find(GetParam().direct ? "direct" : "buffered"));
}

TEST_P(UringFileTest, WriteReadFlush) {
  Device& dev = open_dev();
  AlignedBuffer data = pattern(64 * 1024, 1);
  ASSERT_TRUE(write_sync(dev, 1 << 20, data.data(), data.size()).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  AlignedBuffer back(data.size() + kBlock);
  std::memset(back.data(), 0xaa, back.size());
  ASSERT_TRUE(read_sync(dev, (1 << 20) - kBlock, back.data(), back.size()).ok());
  EXPECT_TRUE(all_zero(back.data(), kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + kBlock, data.data(), data.size()));
  std::vector<uint8_t> on_file = pread_file(1 << 20, data.size());
  EXPECT_EQ(0, std::memcmp(on_file.data(), data.data(), data.size()));

  DeviceCounters c = dev.counters();
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kWrite)]);
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kFlush)]);
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kRead)]);
  EXPECT_EQ(data.size(), c.bytes[static_cast<int>(OpKind::kWrite)]);
  EXPECT_EQ(0u, c.errors);
  EXPECT_EQ(0u, c.in_flight);
}

// A durable write (RWF_DSYNC) through the ring and inline on the completion thread: the
// kernel takes the flag on every backing (direct and buffered), and the bytes are there.
TEST_P(UringFileTest, DurableWrite) {
  Device& dev = open_dev();
  AlignedBuffer data = pattern(8192, 4), more = pattern(4096, 5);
  ASSERT_TRUE(write_durable_sync(dev, 3 * kBlock, data.data(), data.size()).ok());
  std::promise<bool> inline_ok;
  AlignedBuffer scratch(kBlock);
  iovec iov{scratch.data(), kBlock};
  dev.submit_one(IoRequest{OpKind::kRead, 0, kBlock, &iov, 1, [&](int64_t) {
                             inline_ok.set_value(
                                 write_durable_sync(dev, 9 * kBlock, more.data(), kBlock).ok());
                           }});
  EXPECT_TRUE(inline_ok.get_future().get());
  EXPECT_EQ(0, std::memcmp(pread_file(3 * kBlock, data.size()).data(), data.data(), data.size()));
  EXPECT_EQ(0, std::memcmp(pread_file(9 * kBlock, kBlock).data(), more.data(), kBlock));
  EXPECT_EQ(0u, dev.counters().errors);
}

TEST_P(UringFileTest, ScatterGather) {
  Device& dev = open_dev();
  AlignedBuffer a = pattern(kBlock, 2), b = pattern(3 * kBlock, 3);
  iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
  std::promise<int64_t> p;
  dev.submit_one(IoRequest{OpKind::kWrite, 8 * kBlock, 4 * kBlock, iov, 2,
                           [&p](int64_t r) { p.set_value(r); }});
  ASSERT_EQ(static_cast<int64_t>(4 * kBlock), p.get_future().get());
  std::vector<uint8_t> on_file = pread_file(8 * kBlock, 4 * kBlock);
  EXPECT_EQ(0, std::memcmp(on_file.data(), a.data(), kBlock));
  EXPECT_EQ(0, std::memcmp(on_file.data() + kBlock, b.data(), 3 * kBlock));
}

TEST_P(UringFileTest, DiscardPunchesHole) {
  Device& dev = open_dev();
  constexpr uint64_t kLen = 4 << 20;
  AlignedBuffer data = pattern(kLen, 4);
  ASSERT_TRUE(write_sync(dev, 0, data.data(), kLen).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  uint64_t before = allocated_bytes();
  ASSERT_GE(before, kLen);
  ASSERT_TRUE(discard_sync(dev, kBlock, kLen - 2 * kBlock).ok());
  uint64_t after = allocated_bytes();
  EXPECT_LE(after + kLen - 4 * kBlock, before) << before << " -> " << after;
  AlignedBuffer back(kLen);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), kLen).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), kBlock));
  EXPECT_TRUE(all_zero(back.data() + kBlock, kLen - 2 * kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + kLen - kBlock, data.data() + kLen - kBlock, kBlock));
  EXPECT_EQ(kFileBytes, dev.size_bytes());
  struct stat st {};
  ASSERT_EQ(0, ::stat(path_.c_str(), &st));
  EXPECT_EQ(static_cast<off_t>(kFileBytes), st.st_size);  // KEEP_SIZE
}

// kAllocate gives a hole of the file backing storage without changing what it reads,
// inline (allocate_now) and through the ring; the host's room is reported.
TEST_P(UringFileTest, AllocateBacksAHoleAndKeepsItsZeros) {
  Device& dev = open_dev();
  ASSERT_TRUE(discard_sync(dev, 0, kFileBytes).ok());
  const uint64_t before = allocated_bytes();
  ASSERT_TRUE(allocate_now(dev, 0, 2 << 20).ok());
  EXPECT_GE(allocated_bytes(), before + (2 << 20));
  EXPECT_EQ(static_cast<int64_t>(1 << 20), run_io(dev, OpKind::kAllocate, 2 << 20, nullptr, 1 << 20));
  EXPECT_GE(allocated_bytes(), before + (3 << 20));
  AlignedBuffer back(3 << 20);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), back.size()).ok());
  EXPECT_TRUE(all_zero(back.data(), back.size()));
  struct stat st {};
  ASSERT_EQ(0, ::stat(path_.c_str(), &st));
  EXPECT_EQ(static_cast<off_t>(kFileBytes), st.st_size);  // KEEP_SIZE
  ASSERT_TRUE(dev.backing_free_bytes().has_value());
  EXPECT_GT(*dev.backing_free_bytes(), 0u);
  EXPECT_EQ(2u, dev.counters().ops[static_cast<int>(OpKind::kAllocate)]);
}

TEST_P(UringFileTest, WriteZeroes) {
  Device& dev = open_dev();
  AlignedBuffer data = pattern(16 * kBlock, 5);
  ASSERT_TRUE(write_sync(dev, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(write_zeroes_sync(dev, 4 * kBlock, 8 * kBlock).ok());
  // A second one, after a possible fallback from ZERO_RANGE to a punched hole.
  ASSERT_TRUE(write_zeroes_sync(dev, 14 * kBlock, kBlock).ok());
  AlignedBuffer back(16 * kBlock);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), 4 * kBlock));
  EXPECT_TRUE(all_zero(back.data() + 4 * kBlock, 8 * kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + 12 * kBlock, data.data() + 12 * kBlock, 2 * kBlock));
  EXPECT_TRUE(all_zero(back.data() + 14 * kBlock, kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + 15 * kBlock, data.data() + 15 * kBlock, kBlock));
  EXPECT_EQ(9 * kBlock, dev.counters().bytes[static_cast<int>(OpKind::kWriteZeroes)]);
}

TEST_P(UringFileTest, ManyConcurrentRandomWrites) {
  Device& dev = open_dev(/*queue_depth=*/8);
  constexpr size_t kIos = 1000;
  std::vector<uint64_t> blocks(kFileBytes / kBlock);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = i;
  std::mt19937_64 rng(7);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  blocks.resize(kIos);  // distinct blocks: no two writes in flight overlap

  AlignedBuffer data = pattern(kIos * kBlock, 6);
  std::vector<iovec> iov(kIos);
  std::vector<IoRequest> reqs(kIos);
  Waiter w(kIos);
  for (size_t i = 0; i < kIos; ++i) {
    iov[i] = {data.data() + i * kBlock, kBlock};
    reqs[i] = IoRequest{OpKind::kWrite, blocks[i] * kBlock, kBlock, &iov[i], 1, w.done(i)};
  }
  // One big batch from this thread and smaller ones from three others.
  std::vector<std::thread> threads;
  for (int t = 1; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t * 250; i < (t + 1) * 250u; i += 10) {
        dev.submit(std::span(reqs).subspan(i, 10));
      }
    });
  }
  dev.submit(std::span(reqs).first(250));
  for (auto& t : threads) t.join();
  w.wait();
  for (size_t i = 0; i < kIos; ++i) {
    ASSERT_EQ(1, w.calls_[i]) << i;
    ASSERT_EQ(static_cast<int64_t>(kBlock), w.results_[i]) << i;
  }
  DeviceCounters c = dev.counters();
  EXPECT_LE(c.in_flight_peak, 8u);
  EXPECT_GE(c.in_flight_peak, 2u);
  EXPECT_EQ(kIos, c.ops[static_cast<int>(OpKind::kWrite)]);

  // Read everything back concurrently.
  AlignedBuffer back(kIos * kBlock);
  Waiter r(kIos);
  for (size_t i = 0; i < kIos; ++i) {
    iov[i] = {back.data() + i * kBlock, kBlock};
    reqs[i] = IoRequest{OpKind::kRead, blocks[i] * kBlock, kBlock, &iov[i], 1, r.done(i)};
  }
  dev.submit(reqs);
  r.wait();
  for (size_t i = 0; i < kIos; ++i) ASSERT_EQ(static_cast<int64_t>(kBlock), r.results_[i]);
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), back.size()));
  EXPECT_EQ(0u, dev.counters().in_flight);
  EXPECT_EQ(0u, dev.counters().queued);
}

TEST_P(UringFileTest, CallbackMaySubmitAndRunsOffTheSubmitter) {
  Device& dev = open_dev(4);
  AlignedBuffer a = pattern(kBlock, 8);
  iovec iov{a.data(), kBlock};
  std::promise<int64_t> p;
  std::atomic<int> left{50};
  std::atomic<bool> on_submitter{false};
  const std::thread::id me = std::this_thread::get_id();
  std::function<void(int64_t)> next;
  next = [&](int64_t res) {
    if (std::this_thread::get_id() == me) on_submitter = true;
    if (res < 0 || --left == 0) {
      p.set_value(res);
      return;
    }
    dev.submit_one(IoRequest{OpKind::kWrite, left * kBlock, kBlock, &iov, 1, next});
  };
  dev.submit_one(IoRequest{OpKind::kWrite, 0, kBlock, &iov, 1, next});
  EXPECT_EQ(static_cast<int64_t>(kBlock), p.get_future().get());
  EXPECT_FALSE(on_submitter);
}

// A watched pipe: each readiness runs the watcher on the completion thread, where it
// reads the pipe and submits an IO; the IO completes (the loop submits what the watcher
// queued) and a watcher that says "more" is called again without new readiness.
TEST_P(UringFileTest, WatcherRunsOnCompletionThreadAndSubmits) {
  Device& dev = open_dev(4);
  int pipefd[2];
  ASSERT_EQ(0, ::pipe2(pipefd, O_NONBLOCK | O_CLOEXEC));
  AlignedBuffer a = pattern(kBlock, 21);
  iovec iov{a.data(), kBlock};
  std::mutex mu;
  std::condition_variable cv;
  int bytes_seen = 0, writes_done = 0, calls = 0, extra_calls = 0;
  bool off_thread = false;
  bool ask_more = false;
  ASSERT_TRUE(dev.watch_readable(pipefd[0], [&] {
    if (!dev.in_completion_context()) off_thread = true;
    char buf[16];
    ssize_t n = ::read(pipefd[0], buf, sizeof(buf));
    std::lock_guard lk(mu);
    ++calls;
    if (n <= 0) {  // nothing new: only a call asked for by "more"
      ++extra_calls;
      bool more = ask_more;
      ask_more = false;
      cv.notify_all();
      return more;
    }
    bytes_seen += static_cast<int>(n);
    for (ssize_t i = 0; i < n; ++i) {
      dev.submit_one(IoRequest{OpKind::kWrite, static_cast<uint64_t>(bytes_seen - 1 - i) * kBlock,
                               kBlock, &iov, 1, [&](int64_t res) {
                                 std::lock_guard l2(mu);
                                 if (res == static_cast<int64_t>(kBlock)) ++writes_done;
                                 cv.notify_all();
                               }});
    }
    ask_more = true;  // the next call finds the pipe empty and says "no more"
    return true;
  }));
  for (int round = 1; round <= 3; ++round) {
    ASSERT_EQ(2, ::write(pipefd[1], "xy", 2));
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(10), [&] {
      return writes_done == 2 * round && extra_calls >= 2 * round;
    })) << "round " << round << ": writes " << writes_done << ", calls " << calls;
  }
  dev.unwatch();
  const int calls_at_unwatch = calls;
  ASSERT_EQ(1, ::write(pipefd[1], "z", 1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  {
    std::lock_guard lk(mu);
    EXPECT_EQ(calls_at_unwatch, calls) << "called after unwatch()";
    EXPECT_EQ(6, bytes_seen);
  }
  EXPECT_FALSE(off_thread);
  // The device serves again after a new watch.
  char drain[8];
  (void)::read(pipefd[0], drain, sizeof(drain));
  std::atomic<int> second{0};
  ASSERT_TRUE(dev.watch_readable(pipefd[0], [&] {
    char b[8];
    if (::read(pipefd[0], b, sizeof(b)) > 0) ++second;
    return false;
  }));
  ASSERT_EQ(1, ::write(pipefd[1], "w", 1));
  for (int i = 0; i < 1000 && second == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  dev.unwatch();
  EXPECT_EQ(1, second.load());
  ::close(pipefd[0]);
  ::close(pipefd[1]);
}

// Driver commands: a UDP socket's "bytes of the next datagram" command (the kernel's
// SOCKET_URING_OP_SIOCINQ, 6.7 and later) as a driver that answers at once. More
// commands than the ring has entries all complete, each once, on the completion thread.
TEST_P(UringFileTest, DriverCommandsCompleteOnCompletionThread) {
  Device& dev = open_dev(4);
  if (!dev.supports_commands()) GTEST_SKIP() << "no 128-byte io_uring entries here";
  const int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0) << std::strerror(errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(0, ::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  ASSERT_EQ(0, ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len));
  ASSERT_EQ(5, ::sendto(sock, "hello", 5, 0, reinterpret_cast<sockaddr*>(&addr), len));
  constexpr uint32_t kSiocinq = 0;
  constexpr size_t kCommands = 100;  // the ring has 4 + 3 entries
  Waiter waiter(kCommands);
  std::atomic<int> off_thread{0};
  for (size_t i = 0; i < kCommands; ++i) {
    DriverCommand c;
    c.fd = sock;
    c.op = kSiocinq;
    c.done = [&, inner = waiter.done(i)](int64_t res) {
      if (!dev.in_completion_context()) ++off_thread;
      inner(res);
    };
    dev.submit_command(std::move(c));
  }
  waiter.wait();
  ::close(sock);
  if (waiter.results_[0] == -EOPNOTSUPP || waiter.results_[0] == -EINVAL) {
    GTEST_SKIP() << "sockets have no io_uring commands on this kernel: "
                 << std::strerror(static_cast<int>(-waiter.results_[0]));
  }
  for (size_t i = 0; i < kCommands; ++i) {
    EXPECT_EQ(5, waiter.results_[i]) << "command " << i;
    EXPECT_EQ(1, waiter.calls_[i]) << "command " << i;
  }
  EXPECT_EQ(0, off_thread.load());
  EXPECT_EQ(0u, dev.counters().in_flight);
  EXPECT_EQ(0u, dev.counters().ops[static_cast<int>(OpKind::kRead)]) << "commands are not IOs";
}

// unwatch() returns only after a watcher that is running has returned.
TEST_P(UringFileTest, UnwatchWaitsForRunningWatcher) {
  Device& dev = open_dev(4);
  int pipefd[2];
  ASSERT_EQ(0, ::pipe2(pipefd, O_NONBLOCK | O_CLOEXEC));
  std::atomic<bool> entered{false}, finished{false};
  ASSERT_TRUE(dev.watch_readable(pipefd[0], [&] {
    entered = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    finished = true;
    return false;
  }));
  ASSERT_EQ(1, ::write(pipefd[1], "x", 1));
  for (int i = 0; i < 2000 && !entered; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(entered.load());
  dev.unwatch();
  EXPECT_TRUE(finished.load());
  ::close(pipefd[0]);
  ::close(pipefd[1]);
}

TEST_P(UringFileTest, MisalignedOrOutOfRangeIsInvalid) {
  Device& dev = open_dev();
  AlignedBuffer a(2 * kBlock);
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kWrite, 512, a.data(), kBlock));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kRead, 0, a.data(), 1000));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kRead, 0, a.data() + 512, kBlock));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kRead, kFileBytes, a.data(), kBlock));
  EXPECT_EQ(-EINVAL, run_io(dev, OpKind::kWriteZeroes, kFileBytes - kBlock, nullptr, 2 * kBlock));
  EXPECT_EQ(5u, dev.counters().errors);
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(dev, OpKind::kRead, 0, a.data(), kBlock));
  auto r = read_sync(dev, 100, a.data(), kBlock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind::kInvalidArgument, r.error().kind);
}

TEST_P(UringFileTest, ExclusiveOpenTwiceIsBusy) {
  open_dev();
  UringOptions o;
  o.try_direct = GetParam().direct;
  auto second = open_uring_device(path_, o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ErrorKind::kBusy, second.error().kind);
  EXPECT_NE(std::string::npos, second.error().message.find("is in use by another process"))
      << second.error().message;
  // Closing the first frees it.
  dev_.reset();
  auto third = open_uring_device(path_, o);
  EXPECT_TRUE(third.ok());
}

TEST_P(UringFileTest, ReadOnlyRefusesWrites) {
  UringOptions o;
  o.read_only = true;
  o.try_direct = GetParam().direct;
  auto r = open_uring_device(path_, o);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  AlignedBuffer a(kBlock);
  EXPECT_EQ(-EROFS, run_io(**r, OpKind::kWrite, 0, a.data(), kBlock));
  EXPECT_EQ(-EROFS, run_io(**r, OpKind::kDiscard, 0, nullptr, kBlock));
  EXPECT_EQ(static_cast<int64_t>(kBlock), run_io(**r, OpKind::kRead, 0, a.data(), kBlock));
}

TEST_P(UringFileTest, DestructorWaitsForInFlight) {
  constexpr size_t kIos = 200;
  AlignedBuffer data = pattern(kIos * kBlock, 9);
  std::vector<iovec> iov(kIos);
  std::vector<IoRequest> reqs(kIos);
  std::atomic<size_t> completed{0};
  {
    Device& dev = open_dev(4);
    for (size_t i = 0; i < kIos; ++i) {
      iov[i] = {data.data() + i * kBlock, kBlock};
      reqs[i] = IoRequest{OpKind::kWrite, i * kBlock, kBlock, &iov[i], 1,
                          [&completed](int64_t r) {
                            if (r == static_cast<int64_t>(kBlock)) ++completed;
                          }};
    }
    dev.submit(reqs);
    dev_.reset();
  }
  EXPECT_EQ(kIos, completed.load());
  std::vector<uint8_t> on_file = pread_file(0, kIos * kBlock);
  EXPECT_EQ(0, std::memcmp(on_file.data(), data.data(), on_file.size()));
}

INSTANTIATE_TEST_SUITE_P(Backings, UringFileTest,
                         testing::Values(Backing{"/var/tmp", true}, Backing{"/dev/shm", true},
                                         Backing{"/dev/shm", false}),
                         backing_name);

TEST(UringDevice, MissingPathIsNotFound) {
  auto r = open_uring_device("/var/tmp/vsfs-device-test-does-not-exist", UringOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind::kNotFound, r.error().kind);
  EXPECT_EQ(ENOENT, r.error().errno_value);
}

TEST(UringDevice, DirectoryIsInvalid) {
  auto r = open_uring_device("/var/tmp", UringOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ErrorKind::kInvalidArgument, r.error().kind);
  auto c = open_uring_device("/dev/null", UringOptions{});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(ErrorKind::kInvalidArgument, c.error().kind);
}

// A loop device over a sparse file: block-device paths (BLKGETSIZE64, O_EXCL,
// BLKDISCARD/BLKZEROOUT on the helper thread). Skipped where losetup does not work.
class UringLoopTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/var/tmp/vsfs-device-loop-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    ASSERT_GE(fd, 0);
    backing_ = tmpl;
    ASSERT_EQ(0, ::ftruncate(fd, kFileBytes));
    ::close(fd);
    std::string cmd = "losetup -f --show " + backing_ + " 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) GTEST_SKIP() << "popen failed";
    char line[256] = {};
    bool got = std::fgets(line, sizeof(line), p) != nullptr;
    int status = ::pclose(p);
    if (!got || status != 0) GTEST_SKIP() << "losetup is not available here";
    loop_ = line;
    while (!loop_.empty() && (loop_.back() == '\n' || loop_.back() == ' ')) loop_.pop_back();
  }
  void TearDown() override {
    if (!loop_.empty()) {
      std::string cmd = "losetup -d " + loop_;
      EXPECT_EQ(0, std::system(cmd.c_str()));
    }
    if (!backing_.empty()) ::unlink(backing_.c_str());
  }
  std::string backing_;
  std::string loop_;
};

TEST_F(UringLoopTest, BlockDevice) {
  auto opened = open_uring_device(loop_, UringOptions{});
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  Device& dev = **opened;
  EXPECT_EQ(kFileBytes, dev.size_bytes());
  EXPECT_EQ(4096u, dev.alignment_bytes());
  EXPECT_NE(std::string::npos, dev.describe().find("block device"));

  auto second = open_uring_device(loop_, UringOptions{});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ErrorKind::kBusy, second.error().kind);

  AlignedBuffer data = pattern(16 * kBlock, 10);
  ASSERT_TRUE(write_sync(dev, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(flush_sync(dev).ok());
  ASSERT_TRUE(write_zeroes_sync(dev, 2 * kBlock, 4 * kBlock).ok());
  auto discarded = discard_sync(dev, 8 * kBlock, 4 * kBlock);
  ASSERT_TRUE(discarded.ok()) << discarded.error().to_string();
  AlignedBuffer back(16 * kBlock);
  ASSERT_TRUE(read_sync(dev, 0, back.data(), back.size()).ok());
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), 2 * kBlock));
  EXPECT_TRUE(all_zero(back.data() + 2 * kBlock, 4 * kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + 6 * kBlock, data.data() + 6 * kBlock, 2 * kBlock));
  EXPECT_EQ(0, std::memcmp(back.data() + 12 * kBlock, data.data() + 12 * kBlock, 4 * kBlock));
  DeviceCounters c = dev.counters();
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kDiscard)]);
  EXPECT_EQ(1u, c.ops[static_cast<int>(OpKind::kWriteZeroes)]);
  EXPECT_EQ(0u, c.errors);
}

}  // namespace
}  // namespace vsfs::device
