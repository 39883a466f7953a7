// run_device_loop: the device's completion thread reads /dev/fuse (see session.h).
//
// Why: with libfuse's own loop a 4 KiB read costs four thread wake-ups: the kernel
// wakes a worker, the worker wakes the device thread to submit, the IO completion wakes
// the device thread again, and the reply wakes the client. Read here, the request is
// parsed, its IO prepared and its reply sent by the one thread that owns the ring, and
// every request one readiness brings enters the kernel in a single submission.
//
// Threading: on_ready() runs on the device's completion thread only; it handles READ
// and WRITE of disks (their handlers never block: they hand IO to the datastore and
// return) and copies every other request to a worker, since those may wait for a
// journal commit, which needs the completion thread. Workers call libfuse the same way
// its own loop would. The main thread waits for the end (unmount or signal) and stops
// the rest in order: the watch first, then the workers.
#define FUSE_USE_VERSION 34
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "device/device.h"
#include "fuse/session.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace vsfs::fuse {
namespace {

// libfuse's own receive buffer: the largest request (1 MiB write) and its headers.
constexpr size_t kRequestBufferBytes = (1u << 20) + 4096;
// Requests read in one pass before the completion thread submits them and reaps what
// completed meanwhile. Small: at a client depth of 32, 4 per pass gave 20 % more 4 KiB
// random reads than 64 (IO waits less to be submitted and to be reaped), and depth 1
// reads one per pass anyway.
constexpr int kReadsPerPass = 4;

class DeviceLoop {
 public:
  DeviceLoop(fuse_session* se, uint32_t threads) : se_(se), fd_(fuse_session_fd(se)) {
    buffer_.resize(kRequestBufferBytes);
    workers_.reserve(threads);
    for (uint32_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  ~DeviceLoop() {
    {
      std::lock_guard lk(mu_);
      stop_workers_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  DeviceLoop(const DeviceLoop&) = delete;
  DeviceLoop& operator=(const DeviceLoop&) = delete;

  // Completion thread: reads what the kernel has queued. True when it stopped with
  // more possibly waiting.
  bool on_ready() {
    for (int i = 0; i < kReadsPerPass; ++i) {
      const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
      if (n < 0) {
        const int e = errno;
        if (e == EAGAIN) return false;
        // ENOENT: the request was interrupted before it could be read.
        if (e == EINTR || e == ENOENT) continue;
        end(e == ENODEV ? 0 : e);  // ENODEV: unmounted
        return false;
      }
      if (static_cast<size_t>(n) < sizeof(fuse_in_header)) {
        VSFS_LOG_ERROR("/dev/fuse: short request of {} bytes", n);
        continue;
      }
      fuse_in_header in;
      std::memcpy(&in, buffer_.data(), sizeof(in));
      if (runs_here(in)) {
        fuse_buf buf{};
        buf.size = static_cast<size_t>(n);
        buf.mem = buffer_.data();
        fuse_session_process_buf(se_, &buf);
      } else {
        std::vector<char> copy(buffer_.data(), buffer_.data() + n);
        {
          std::lock_guard lk(mu_);
          work_.push_back(std::move(copy));
        }
        work_cv_.notify_one();
      }
    }
    return true;
  }

  // Main thread: until unmount, a loop error or a signal (fuse_session_exit from the
  // handler; checked every 100 ms).
  Result<void> wait_for_end() {
    std::unique_lock lk(mu_);
    while (!ended_ && !fuse_session_exited(se_)) {
      end_cv_.wait_for(lk, std::chrono::milliseconds(100));
    }
    if (error_ != 0) {
      return make_error(error_, ErrorKind::kIo, "reading /dev/fuse failed: {}",
                        std::strerror(error_));
    }
    return ok_result();
  }

 private:
  // Reads and writes of disk data (live or snapshot): their handlers only submit.
  // The `.cbt`, `.snapshots` and `.vsfs` files may compute their text: workers.
  static bool runs_here(const fuse_in_header& in) {
    return (in.opcode == FUSE_READ || in.opcode == FUSE_WRITE) &&
           view_of(in.nodeid) < kCbtView;
  }

  void end(int error) {
    {
      std::lock_guard lk(mu_);
      ended_ = true;
      error_ = error;
    }
    fuse_session_exit(se_);
    end_cv_.notify_all();
  }

  void work() {
    std::unique_lock lk(mu_);
    for (;;) {
      work_cv_.wait(lk, [this] { return stop_workers_ || !work_.empty(); });
      if (work_.empty()) return;  // stopping, and nothing left to answer
      std::vector<char> request = std::move(work_.front());
      work_.pop_front();
      lk.unlock();
      fuse_buf buf{};
      buf.size = request.size();
      buf.mem = request.data();
      fuse_session_process_buf(se_, &buf);
      lk.lock();
    }
  }

  fuse_session* const se_;
  const int fd_;
  std::vector<char> buffer_;  // completion thread only

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable end_cv_;
  std::deque<std::vector<char>> work_;  // guarded by mu_
  bool stop_workers_ = false;           // guarded by mu_
  bool ended_ = false;                  // guarded by mu_
  int error_ = 0;                       // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace

Result<void> run_device_loop(Session& session, device::Device& dev, const LoopOptions& options) {
  fuse_session* se = session.get();
  const int fd = fuse_session_fd(se);
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return make_error(errno, ErrorKind::kIo, "/dev/fuse: cannot make it non-blocking: {}",
                      std::strerror(errno));
  }
  Result<void> result = ok_result();
  {
    DeviceLoop loop(se, options.threads);
    if (dev.watch_readable(fd, [&loop] { return loop.on_ready(); })) {
      result = loop.wait_for_end();
      dev.unwatch();
    } else {
      result = make_error(ENOTSUP, ErrorKind::kUnsupported,
                          "{} cannot serve /dev/fuse from its IO thread", dev.describe());
    }
  }  // the workers answer what was handed to them, then stop
  (void)::fcntl(fd, F_SETFL, flags);
  return result;
}

}  // namespace vsfs::fuse
