// run_device_loop: the device's completion thread reads /dev/fuse (see session.h).
//
// Why: with libfuse's own loop a 4 KiB read costs four thread wake-ups: the kernel
// wakes a worker, the worker wakes the device thread to submit, the IO completion wakes
// the device thread again, and the reply wakes the client. Read here, the request is
// parsed, its IO prepared and its reply sent by the one thread that owns the ring, and
// every request one readiness brings enters the kernel in a single submission.
//
// With FUSE over io_uring (uring_channel.h) requests arrive in ring entries instead, on
// the same thread, and the reply goes back in the entry: no read or write system call
// per request at all. libfuse writes every reply through the session's custom writev
// (transport_writev), which sends it to the ring entry its request came from, or to
// /dev/fuse; the same hook asks for the ring in the FUSE_INIT reply.
//
// Threading: on_ready() and serve() run on the device's completion thread only; READ
// and WRITE of disks are handled there (their handlers never block: they hand IO to the
// datastore and return) and every other request goes to a worker, since those may wait
// for a journal commit, which needs the completion thread. Workers call libfuse the
// same way its own loop would. The main thread waits for the end (unmount or signal)
// and stops the rest in order: the watch, the ring's dispatch, then the workers.
#define FUSE_USE_VERSION 34
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "device/device.h"
#include "fuse/fuse_fs.h"
#include "fuse/session.h"
#include "fuse/uring_channel.h"
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
  DeviceLoop(fuse_session* se, UringChannel* ring, InitExtensions& init, uint32_t threads)
      : se_(se), fd_(fuse_session_fd(se)), ring_(ring), init_(init) {
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
      if (opcode_of(buffer_.data()) == FUSE_INIT) {
        init_.on_request(buffer_.data(), static_cast<size_t>(n));
      }
      serve(buffer_.data(), static_cast<size_t>(n), /*stable=*/false);
    }
    return true;
  }

  // Completion thread: one request, as read from /dev/fuse. `stable`: the request stays
  // valid until its reply (a ring entry), so a worker needs no copy.
  void serve(char* request, size_t size, bool stable) {
    if (runs_here(request)) {
      fuse_buf buf{};
      buf.size = size;
      buf.mem = request;
      fuse_session_process_buf(se_, &buf);
      return;
    }
    Work w;
    if (stable) {
      w.data = request;
    } else {
      w.copy.assign(request, request + size);
      w.data = w.copy.data();
    }
    w.size = size;
    {
      std::lock_guard lk(mu_);
      work_.push_back(std::move(w));
    }
    work_cv_.notify_one();
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
  static bool runs_here(const char* request) {
    fuse_in_header in;
    std::memcpy(&in, request, sizeof(in));
    return (in.opcode == FUSE_READ || in.opcode == FUSE_WRITE) &&
           view_of(in.nodeid) < kCbtView;
  }

  static uint32_t opcode_of(const char* request) {
    fuse_in_header in;
    std::memcpy(&in, request, sizeof(in));
    return in.opcode;
  }

  // A request for a worker: a copy, or (ring entries) the request itself.
  struct Work {
    std::vector<char> copy;
    char* data = nullptr;
    size_t size = 0;
  };

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
      Work request = std::move(work_.front());
      work_.pop_front();
      lk.unlock();
      fuse_buf buf{};
      buf.size = request.size;
      buf.mem = request.data;
      fuse_session_process_buf(se_, &buf);
      lk.lock();
    }
  }

  fuse_session* const se_;
  const int fd_;
  UringChannel* const ring_;  // null without FUSE over io_uring
  InitExtensions& init_;
  std::vector<char> buffer_;  // completion thread only

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable end_cv_;
  std::deque<Work> work_;               // guarded by mu_
  bool stop_workers_ = false;           // guarded by mu_
  bool ended_ = false;                  // guarded by mu_
  int error_ = 0;                       // guarded by mu_
  std::vector<std::thread> workers_;
};

// libfuse's custom IO: every reply and notification it writes passes here.
ssize_t transport_writev(int fd, iovec* iov, int count, void* userdata) {
  FuseFs& fs = *static_cast<FuseFs*>(userdata);
  UringChannel* ring = fs.uring();
  if (ring != nullptr && ring->reply(iov, count)) {
    ssize_t total = 0;
    for (int i = 0; i < count; ++i) total += static_cast<ssize_t>(iov[i].iov_len);
    return total;
  }
  const uint64_t granted = fs.init_extensions().on_reply(iov, count);
  const ssize_t n = ::writev(fd, iov, count);
  // The kernel has taken INIT with the ring asked for: it accepts entries now.
  if ((granted & InitExtensions::kOverIoUring) && ring != nullptr && n >= 0) ring->start();
  return n;
}

ssize_t transport_read(int fd, void* buf, size_t size, void* /*userdata*/) {
  return ::read(fd, buf, size);
}

// The ring's entries carry the largest request (a write of max_write) or reply (a read
// of as many pages, libfuse's max_pages), and at least the kernel's minimum buffer.
// Each queue gets uring_depth entries, or fewer when their payload buffers would pass
// uring_buffer_bytes. Depth 0: not even one entry per queue fits.
UringChannelOptions ring_options(const FuseFs& fs, const LoopOptions& options) {
  constexpr size_t kMinBuffer = 8192;  // FUSE_MIN_READ_BUFFER
  constexpr size_t kPage = 4096;
  UringChannelOptions o;
  o.queues = static_cast<uint32_t>(std::max(1, get_nprocs_conf()));
  o.payload_bytes =
      std::max(kMinBuffer, (size_t{fs.options().max_write_bytes} + kPage - 1) / kPage * kPage);
  const uint64_t fits = options.uring_buffer_bytes / (uint64_t{o.queues} * o.payload_bytes);
  o.depth = static_cast<uint32_t>(std::min<uint64_t>(options.uring_depth, fits));
  return o;
}

}  // namespace

Result<void> run_device_loop(Session& session, FuseFs& fs, device::Device& dev,
                             const LoopOptions& options) {
  fuse_session* se = session.get();
  const int fd = fuse_session_fd(se);
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return make_error(errno, ErrorKind::kIo, "/dev/fuse: cannot make it non-blocking: {}",
                      std::strerror(errno));
  }
  const fuse_custom_io io{transport_writev, transport_read, nullptr, nullptr};
  if (fuse_session_custom_io(se, &io, fd) != 0) {
    return make_error(EIO, ErrorKind::kIo, "cannot install the FUSE reply path");
  }
  Result<void> result = ok_result();
  {
    DeviceLoop* loop_ptr = nullptr;
    std::shared_ptr<UringChannel> ring;
    const UringChannelOptions ro = ring_options(fs, options);
    if (options.io_uring && dev.supports_commands() && ro.depth == 0) {
      VSFS_LOG_WARN("uring_buffer_mib {} is below one {} KiB entry per CPU queue ({}); "
                    "requests stay on /dev/fuse",
                    options.uring_buffer_bytes >> 20, ro.payload_bytes >> 10, ro.queues);
    } else if (options.io_uring && dev.supports_commands()) {
      auto created = UringChannel::create(
          dev, fd, ro,
          [&loop_ptr](char* request, size_t size) { loop_ptr->serve(request, size, true); });
      if (created.ok()) {
        ring = std::move(*created);
        fs.set_uring(ring);
        fs.init_extensions().want(InitExtensions::kOverIoUring);
      } else {
        VSFS_LOG_WARN("{}; requests stay on /dev/fuse", created.error().message);
      }
    }
    DeviceLoop loop(se, ring.get(), fs.init_extensions(), options.threads);
    loop_ptr = &loop;
    if (dev.watch_readable(fd, [&loop] { return loop.on_ready(); })) {
      result = loop.wait_for_end();
      dev.unwatch();
    } else {
      result = make_error(ENOTSUP, ErrorKind::kUnsupported,
                          "{} cannot serve /dev/fuse from its IO thread", dev.describe());
    }
    if (ring) ring->stop();
  }  // the workers answer what was handed to them, then stop
  (void)::fcntl(fd, F_SETFL, flags);
  return result;
}

}  // namespace vsfs::fuse
