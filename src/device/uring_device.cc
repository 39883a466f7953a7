// UringDevice: the io_uring backend on a regular file or a block device.
//
// Threading: one completion thread owns the ring. It is the only thread that ever
// enters io_uring (to submit and to wait), which is what IORING_SETUP_SINGLE_ISSUER and
// DEFER_TASKRUN/COOP_TASKRUN require, and it keeps io-wq work (fsync, fallocate,
// buffered IO) tied to a thread that lives as long as the device. submit() may run on
// any thread: under mu_ it appends the batch to the FIFO and, when the completion
// thread is asleep in the kernel, wakes it with one eventfd write (a read of that
// eventfd is always armed in the ring). The completion thread then prepares one SQE per
// request while fewer than queue_depth are in flight, enters the kernel once for the
// whole batch and waits; it reaps every ready CQE, resubmits the remainder of short
// reads/writes, and runs the callbacks with mu_ released (callbacks may submit).
// Discard and write-zeroes on a block device are ioctls, run on a helper thread whose
// results go back to the completion thread, so callbacks still run on one thread.
// A watched file descriptor (watch_readable) has a multishot poll armed in the ring;
// its readiness calls the watcher on the completion thread after the pass's callbacks,
// and what the watcher submits goes into the kernel with the loop's next submit.
// Driver commands (submit_command) take the FIFO's path without its depth bound: the
// ring has 128-byte entries for their argument blocks when the kernel allows it.
#include "device/uring_device.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "device/validate.h"
#include "util/assert.h"
#include "util/log.h"

namespace vsfs::device {

namespace {

constexpr uint32_t kAlignBytes = 4096;
constexpr uint32_t kMaxQueueDepth = 4096;
constexpr uint64_t kWakeTag = ~0ull;     // user_data of the armed eventfd read
constexpr uint64_t kWatchTag = ~1ull;    // user_data of the watched fd's poll
constexpr uint64_t kUnwatchTag = ~2ull;  // user_data of the poll's removal
constexpr uint64_t kCommandTag = 1ull << 62;  // user_data of a driver command: | its slot
constexpr unsigned kExtraSqes = 3;       // wake read, watch poll, poll removal
constexpr int kMaxRetries = 64;       // -EAGAIN/-EINTR resubmissions of one request
constexpr unsigned kReapBatch = 64;

// The one owner of a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// The one owner of an io_uring instance.
class Ring {
 public:
  Ring() = default;
  ~Ring() {
    if (live_) io_uring_queue_exit(&ring_);
  }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Creates the ring with the best flags the kernel accepts; -errno on failure. The
  // calling thread becomes the ring's single issuer. 128-byte entries (for driver
  // commands) are tried first with each set.
  int init(unsigned entries) {
    static constexpr unsigned kFlagSets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int r = -EINVAL;
    for (unsigned flags : kFlagSets) {
      for (unsigned wide : {IORING_SETUP_SQE128, 0u}) {
        io_uring_params params{};
        params.flags = flags | wide;
        r = io_uring_queue_init_params(entries, &ring_, &params);
        if (r == 0) {
          live_ = true;
          flags_ = flags | wide;
          return 0;
        }
        if (r != -EINVAL) return r;
      }
    }
    return r;
  }

  io_uring* get() { return &ring_; }
  unsigned flags() const { return flags_; }

 private:
  io_uring ring_{};
  bool live_ = false;
  unsigned flags_ = 0;
};

struct OpenedFile {
  std::string path;
  UniqueFd fd;
  UniqueFd wake_fd;  // eventfd that wakes the completion thread
  bool direct = false;
  bool block = false;
  bool read_only = false;
  uint64_t size_bytes = 0;
  uint32_t alignment_bytes = kAlignBytes;
  bool discard_zeroes = false;
  uint32_t queue_depth = 128;
};

// A request whose callback is due, gathered to run outside the lock.
struct Finished {
  Completion done;
  OpKind kind = OpKind::kRead;
  int64_t result = 0;  // bytes moved, or -errno
  bool counted_in_flight = false;
  bool command = false;  // a driver command: not an IO of the device
};

class UringDevice final : public Device {
 public:
  explicit UringDevice(OpenedFile file)
      : file_(std::move(file)), size_bytes_(file_.size_bytes), slots_(file_.queue_depth) {
    free_slots_.reserve(slots_.size());
    for (uint32_t i = static_cast<uint32_t>(slots_.size()); i > 0; --i) {
      free_slots_.push_back(i - 1);
    }
  }

  ~UringDevice() override {
    if (thread_.joinable()) {
      {
        std::lock_guard lk(mu_);
        stopping_ = true;
        awake_ = true;
      }
      signal_wake();
      thread_.join();
    }
    VSFS_ASSERT(!watch_fn_);  // unwatch() before the device goes
    if (helper_.joinable()) {
      {
        std::lock_guard lk(mu_);
        helper_stop_ = true;
      }
      helper_cv_.notify_all();
      helper_.join();
    }
  }

  // Starts the completion thread, which creates the ring, and the helper thread for
  // block devices.
  Result<void> start() {
    std::promise<int> ready;
    std::future<int> ready_result = ready.get_future();
    thread_ = std::thread([this, p = std::move(ready)]() mutable { run(p); });
    int r = ready_result.get();
    if (r < 0) {
      thread_.join();
      if (r == -EPERM || r == -ENOSYS) {
        return make_error(-r, ErrorKind::kUnsupported, "{}: io_uring is not available: {}",
                          file_.path, std::strerror(-r));
      }
      return make_error(-r, ErrorKind::kIo, "{}: cannot set up io_uring: {}", file_.path,
                        std::strerror(-r));
    }
    if (file_.block) helper_ = std::thread([this] { helper_run(); });
    VSFS_LOG_DEBUG("{}: ring flags {:#x}, queue depth {}", describe(), ring_.flags(),
                   file_.queue_depth);
    return ok_result();
  }

  uint64_t size_bytes() const override { return size_bytes_.load(std::memory_order_acquire); }
  Result<uint64_t> refresh_size() override {
    uint64_t size = 0;
    if (file_.block) {
      if (::ioctl(file_.fd.get(), BLKGETSIZE64, &size) != 0) {
        return make_error(errno, ErrorKind::kIo, "{}: cannot read its size: {}", file_.path,
                          std::strerror(errno));
      }
    } else {
      struct stat st {};
      if (::fstat(file_.fd.get(), &st) != 0) {
        return make_error(errno, ErrorKind::kIo, "{}: cannot read its size: {}", file_.path,
                          std::strerror(errno));
      }
      size = static_cast<uint64_t>(st.st_size);
    }
    // A device only grows under a datastore: a shrunk one keeps the old bound, and the
    // IO past its end fails as it would anyway.
    uint64_t old = size_bytes_.load(std::memory_order_acquire);
    while (size > old && !size_bytes_.compare_exchange_weak(old, size)) {
    }
    return size_bytes_.load(std::memory_order_acquire);
  }
  uint32_t alignment_bytes() const override { return file_.alignment_bytes; }
  bool discard_zeroes() const override { return file_.discard_zeroes; }

  void submit(std::span<IoRequest> requests) override {
    if (requests.empty()) return;
    bool wake = false;
    {
      std::lock_guard lk(mu_);
      for (IoRequest& r : requests) fifo_.push_back(std::move(r));
      counters_.queued = fifo_.size();
      wake = !awake_;
      awake_ = true;
    }
    if (wake) signal_wake();
  }

  DeviceCounters counters() const override {
    std::lock_guard lk(mu_);
    return counters_;
  }

  std::string describe() const override {
    return fmt::format("uring:{} ({}{})", file_.path, file_.direct ? "direct" : "buffered",
                       file_.block ? ", block device" : "");
  }

  // A regular file takes space from its filesystem as it is written: what that has left
  // (for root, the blocks reserved for root too, as the daemon writes as root).
  std::optional<uint64_t> backing_free_bytes() const override {
    if (file_.block) return std::nullopt;
    struct statvfs st {};
    if (::fstatvfs(file_.fd.get(), &st) != 0) return std::nullopt;
    const uint64_t blocks = ::geteuid() == 0 ? st.f_bfree : st.f_bavail;
    return blocks * st.f_frsize;
  }

  bool watch_readable(int fd, std::function<bool()> on_ready) override {
    {
      std::lock_guard lk(mu_);
      VSFS_ASSERT(!watch_fn_ && on_ready);
      watch_fd_ = fd;
      watch_fn_ = std::move(on_ready);
      awake_ = true;
    }
    signal_wake();
    return true;
  }

  void unwatch() override {
    VSFS_ASSERT(!in_completion_context());
    {
      std::unique_lock lk(mu_);
      watch_cv_.wait(lk, [this] { return !watch_calling_; });
      if (!watch_fn_) return;
      watch_fn_ = nullptr;  // call_watcher() checks it under mu_ before each call
      watch_fd_ = -1;
      awake_ = true;
    }
    signal_wake();  // the completion thread removes the poll
  }

  bool supports_commands() const override {
    // The flags are set before start() returns (the future orders them before any
    // caller) and never change.
    return (ring_.flags() & IORING_SETUP_SQE128) != 0;
  }

  void submit_command(DriverCommand command) override {
    VSFS_ASSERT(supports_commands());
    bool wake = false;
    {
      std::lock_guard lk(mu_);
      command_fifo_.push_back(std::move(command));
      wake = !awake_;
      awake_ = true;
    }
    if (wake) signal_wake();
  }

  bool in_completion_context() const override {
    return std::this_thread::get_id() == thread_.get_id();
  }

  // The completion thread itself needs a block (a metadata cache miss while handling a
  // completion): plain system calls on the same fd, outside the ring.
  int64_t execute_inline(const IoRequest& r) override {
    int invalid = detail::validate_request(r, size_bytes(), file_.alignment_bytes);
    if (invalid == 0 && file_.read_only && detail::is_write_kind(r.kind)) invalid = -EROFS;
    int64_t result = invalid;
    const int fd = file_.fd.get();
    if (invalid == 0) {
      switch (r.kind) {
        case OpKind::kRead:
        case OpKind::kWrite: {
          uint64_t done = 0;
          std::vector<iovec> iov(r.iov, r.iov + r.iovcnt);
          size_t first = 0;
          result = 0;
          while (done < r.length_bytes) {
            const off_t at = static_cast<off_t>(r.offset_bytes + done);
            ssize_t n = r.kind == OpKind::kRead
                            ? ::preadv(fd, iov.data() + first, static_cast<int>(iov.size() - first), at)
                            : ::pwritev2(fd, iov.data() + first, static_cast<int>(iov.size() - first), at,
                                         r.durable ? RWF_DSYNC : 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
              result = n < 0 ? -errno : -EIO;
              break;
            }
            done += static_cast<uint64_t>(n);
            size_t left = static_cast<size_t>(n);
            while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
            if (left > 0) {
              iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
              iov[first].iov_len -= left;
            }
          }
          if (result == 0) result = static_cast<int64_t>(done);
          break;
        }
        case OpKind::kFlush:
          result = ::fdatasync(fd) == 0 ? 0 : -errno;
          break;
        case OpKind::kDiscard:
        case OpKind::kWriteZeroes: {
          if (file_.block) {
            uint64_t range[2] = {r.offset_bytes, r.length_bytes};
            unsigned long op = r.kind == OpKind::kDiscard ? BLKDISCARD : BLKZEROOUT;
            result = ::ioctl(fd, op, range) == 0 ? static_cast<int64_t>(r.length_bytes) : -errno;
          } else {
            result = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 static_cast<off_t>(r.offset_bytes),
                                 static_cast<off_t>(r.length_bytes)) == 0
                         ? static_cast<int64_t>(r.length_bytes)
                         : -errno;
          }
          break;
        }
        case OpKind::kAllocate:
          if (file_.block) {
            result = static_cast<int64_t>(r.length_bytes);  // a block device is all backed
          } else {
            int rc;
            do {
              rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(r.offset_bytes),
                               static_cast<off_t>(r.length_bytes));
            } while (rc != 0 && errno == EINTR);
            result = rc == 0 ? static_cast<int64_t>(r.length_bytes) : -errno;
          }
          break;
      }
    }
    std::lock_guard lk(mu_);
    counters_.count(r.kind, result);
    return result;
  }

 private:
  struct Slot {
    IoRequest request;
    std::vector<iovec> iov;     // working copy, advanced past bytes already done
    size_t iov_first = 0;
    uint64_t done_bytes = 0;
    int fallocate_mode = 0;
    int retries = 0;
  };

  void signal_wake() {
    uint64_t one = 1;
    ssize_t n;
    do {
      n = ::write(file_.wake_fd.get(), &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    VSFS_ASSERT(n == sizeof(one));
  }

  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    if (sqe == nullptr) {
      // Full: the ring has an entry per slot and for the wake read, the watch poll and
      // its removal, but driver commands are not bounded. Hand the kernel what is
      // there (it consumes the whole queue) and take the freed entry.
      io_uring_submit(ring_.get());
      sqe = io_uring_get_sqe(ring_.get());
    }
    VSFS_ASSERT(sqe != nullptr);
    return sqe;
  }

  // Completion thread, under mu_: a driver command from the FIFO into the ring.
  void prep_command(DriverCommand command) {
    uint32_t index;
    if (free_commands_.empty()) {
      index = static_cast<uint32_t>(commands_.size());
      commands_.emplace_back();
    } else {
      index = free_commands_.back();
      free_commands_.pop_back();
    }
    commands_[index] = std::move(command);
    const DriverCommand& c = commands_[index];
    io_uring_sqe* sqe = get_sqe();
    std::memset(sqe, 0, 2 * sizeof(*sqe));  // 128-byte entry
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = c.fd;
    sqe->cmd_op = c.op;
    sqe->addr = reinterpret_cast<uintptr_t>(c.iov);
    sqe->len = c.iovcnt;
    std::memcpy(sqe->cmd, c.arg.data(), c.arg.size());
    io_uring_sqe_set_data64(sqe, kCommandTag | index);
  }

  void arm_wake() {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, file_.wake_fd.get(), &wake_value_, sizeof(wake_value_), 0);
    io_uring_sqe_set_data64(sqe, kWakeTag);
  }

  void prep_slot(uint32_t index) {
    Slot& s = slots_[index];
    const IoRequest& r = s.request;
    io_uring_sqe* sqe = get_sqe();
    const int fd = file_.fd.get();
    const uint64_t offset = r.offset_bytes + s.done_bytes;
    switch (r.kind) {
      case OpKind::kRead:
        io_uring_prep_readv(sqe, fd, s.iov.data() + s.iov_first,
                            static_cast<unsigned>(s.iov.size() - s.iov_first), offset);
        break;
      case OpKind::kWrite:
        io_uring_prep_writev(sqe, fd, s.iov.data() + s.iov_first,
                             static_cast<unsigned>(s.iov.size() - s.iov_first), offset);
        if (r.durable) sqe->rw_flags = RWF_DSYNC;  // FUA on a block device
        break;
      case OpKind::kFlush:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
      case OpKind::kDiscard:
      case OpKind::kWriteZeroes:
      case OpKind::kAllocate:
        io_uring_prep_fallocate(sqe, fd, s.fallocate_mode, static_cast<off_t>(r.offset_bytes),
                                static_cast<off_t>(r.length_bytes));
        break;
    }
    io_uring_sqe_set_data64(sqe, index);
  }

  // Moves requests from the FIFO into the ring (or to the helper) while slots are free.
  // Malformed requests go straight to `finished`.
  void issue_locked(std::vector<Finished>& finished) {
    while (!command_fifo_.empty()) {
      prep_command(std::move(command_fifo_.front()));
      command_fifo_.pop_front();
    }
    while (!fifo_.empty() && counters_.in_flight < file_.queue_depth) {
      IoRequest r = std::move(fifo_.front());
      fifo_.pop_front();
      int invalid = detail::validate_request(r, size_bytes(), file_.alignment_bytes);
      if (invalid == 0 && file_.read_only && detail::is_write_kind(r.kind)) invalid = -EROFS;
      if (invalid != 0 || (r.kind != OpKind::kFlush && r.length_bytes == 0)) {
        finished.push_back({std::move(r.done), r.kind, invalid, false});
        continue;
      }
      if (file_.block && r.kind == OpKind::kAllocate) {  // a block device is all backed
        finished.push_back({std::move(r.done), r.kind, static_cast<int64_t>(r.length_bytes), false});
        continue;
      }
      ++counters_.in_flight;
      counters_.in_flight_peak = std::max(counters_.in_flight_peak, counters_.in_flight);
      if (file_.block && (r.kind == OpKind::kDiscard || r.kind == OpKind::kWriteZeroes)) {
        helper_queue_.push_back(std::move(r));
        helper_cv_.notify_one();
        continue;
      }
      VSFS_ASSERT(!free_slots_.empty());
      uint32_t index = free_slots_.back();
      free_slots_.pop_back();
      Slot& s = slots_[index];
      s.request = std::move(r);
      s.iov.assign(s.request.iov, s.request.iov + s.request.iovcnt);
      s.iov_first = 0;
      s.done_bytes = 0;
      s.retries = 0;
      s.fallocate_mode = FALLOC_FL_KEEP_SIZE;  // alone: kAllocate
      if (s.request.kind == OpKind::kDiscard) {
        s.fallocate_mode |= FALLOC_FL_PUNCH_HOLE;
      } else if (s.request.kind == OpKind::kWriteZeroes) {
        s.fallocate_mode |= zero_range_ok_ ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE;
      }
      prep_slot(index);
    }
    counters_.queued = fifo_.size();
  }

  // Arms the watched fd's poll, or removes it after unwatch(). Under mu_.
  void update_watch_locked() {
    if (watch_fn_ && !watch_armed_) {
      io_uring_sqe* sqe = get_sqe();
      if (watch_multishot_) {
        io_uring_prep_poll_multishot(sqe, watch_fd_, POLLIN);
      } else {
        io_uring_prep_poll_add(sqe, watch_fd_, POLLIN);
      }
      io_uring_sqe_set_data64(sqe, kWatchTag);
      watch_armed_ = true;
      watch_removing_ = false;
    } else if (!watch_fn_ && watch_armed_ && !watch_removing_) {
      io_uring_sqe* sqe = get_sqe();
      io_uring_prep_poll_remove(sqe, kWatchTag);
      io_uring_sqe_set_data64(sqe, kUnwatchTag);
      watch_removing_ = true;
    }
  }

  // Runs the watcher when its fd was ready (or it asked to go on), outside mu_.
  void call_watcher() {
    if (!watch_ready_) return;
    watch_ready_ = false;
    std::function<bool()>* fn;
    {
      std::lock_guard lk(mu_);
      if (!watch_fn_) return;
      watch_calling_ = true;
      awake_ = true;    // what the watcher submits needs no eventfd write
      fn = &watch_fn_;  // unwatch() waits for !watch_calling_ before it resets it
    }
    const bool more = (*fn)();
    {
      std::lock_guard lk(mu_);
      watch_calling_ = false;
    }
    watch_cv_.notify_all();
    watch_ready_ = more;
  }

  // Handles one CQE: either the request is finished, or it was resubmitted.
  void handle_cqe(uint64_t tag, int res, unsigned flags, std::vector<Finished>& finished) {
    if (tag == kWatchTag || tag == kUnwatchTag) {
      if (tag == kWatchTag) {
        if (!(flags & IORING_CQE_F_MORE)) {
          std::lock_guard lk(mu_);
          watch_armed_ = false;  // re-armed by the next pass while still watched
        }
        if (res == -EINVAL && watch_multishot_) {
          watch_multishot_ = false;  // a kernel before 5.13: one-shot polls, re-armed
          return;
        }
        // An error (other than the removal) also calls the watcher: its own read
        // reports what happened.
        if (res != -ECANCELED) watch_ready_ = true;
      }
      return;
    }
    if ((tag & kCommandTag) != 0 && tag < kCommandTag * 2) {
      const auto index = static_cast<uint32_t>(tag & ~kCommandTag);
      VSFS_ASSERT(index < commands_.size());
      finished.push_back({std::move(commands_[index].done), OpKind::kRead, res, false, true});
      commands_[index] = DriverCommand{};
      free_commands_.push_back(index);
      return;
    }
    if (tag == kWakeTag) {
      if (res < 0 && res != -EINTR && res != -EAGAIN) {
        VSFS_LOG_ERROR("{}: wake eventfd read failed: {}", describe(), std::strerror(-res));
      }
      arm_wake();
      return;
    }
    VSFS_ASSERT(tag < slots_.size());
    const auto index = static_cast<uint32_t>(tag);
    Slot& s = slots_[index];
    const IoRequest& r = s.request;
    if ((res == -EAGAIN || res == -EINTR) && ++s.retries <= kMaxRetries) {
      prep_slot(index);
      return;
    }
    int64_t result = res;
    switch (r.kind) {
      case OpKind::kRead:
      case OpKind::kWrite:
        if (res > 0) {
          s.done_bytes += static_cast<uint64_t>(res);
          if (s.done_bytes < r.length_bytes) {
            advance_iov(s, static_cast<uint64_t>(res));
            prep_slot(index);  // a short transfer: issue the remainder
            return;
          }
          result = static_cast<int64_t>(r.length_bytes);
        } else if (res == 0) {
          result = -EIO;  // no progress (end of file): never report a short success
        }
        break;
      case OpKind::kWriteZeroes:
        if (res == -EOPNOTSUPP && (s.fallocate_mode & FALLOC_FL_ZERO_RANGE)) {
          // tmpfs and some others lack ZERO_RANGE; a punched hole reads back as zeros.
          zero_range_ok_ = false;
          s.fallocate_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
          prep_slot(index);
          return;
        }
        [[fallthrough]];
      case OpKind::kDiscard:
      case OpKind::kAllocate:
        if (res == 0) result = static_cast<int64_t>(r.length_bytes);
        break;
      case OpKind::kFlush:
        break;
    }
    finished.push_back({std::move(s.request.done), r.kind, result, true});
    s.request = IoRequest{};
    free_slots_.push_back(index);
  }

  static void advance_iov(Slot& s, uint64_t bytes) {
    while (bytes > 0) {
      iovec& v = s.iov[s.iov_first];
      if (bytes >= v.iov_len) {
        bytes -= v.iov_len;
        ++s.iov_first;
      } else {
        v.iov_base = static_cast<uint8_t*>(v.iov_base) + bytes;
        v.iov_len -= bytes;
        bytes = 0;
      }
    }
  }

  void reap(std::vector<Finished>& finished) {
    io_uring_cqe* cqes[kReapBatch];
    for (;;) {
      unsigned n = io_uring_peek_batch_cqe(ring_.get(), cqes, kReapBatch);
      if (n == 0) return;
      for (unsigned i = 0; i < n; ++i) {
        handle_cqe(io_uring_cqe_get_data64(cqes[i]), cqes[i]->res, cqes[i]->flags, finished);
      }
      io_uring_cq_advance(ring_.get(), n);
    }
  }

  void deliver(std::vector<Finished>& finished) {
    {
      std::lock_guard lk(mu_);
      awake_ = true;  // callbacks that submit need no eventfd write
      for (const Finished& f : finished) {
        if (f.counted_in_flight) --counters_.in_flight;
        if (!f.command) counters_.count(f.kind, f.result);
      }
    }
    for (Finished& f : finished) {
      if (f.done) f.done(f.result);
    }
    finished.clear();
  }

  void run(std::promise<int>& ready) {
    int r = ring_.init(file_.queue_depth + kExtraSqes);
    ready.set_value(r);
    if (r < 0) return;
    arm_wake();
    std::vector<Finished> finished;
    for (;;) {
      bool wait = false;
      {
        std::lock_guard lk(mu_);
        awake_ = true;
        issue_locked(finished);
        update_watch_locked();
        while (!helper_done_.empty()) {
          finished.push_back(std::move(helper_done_.front()));
          helper_done_.pop_front();
        }
        if (finished.empty() && !watch_ready_) {
          if (stopping_ && counters_.in_flight == 0 && fifo_.empty()) break;
          awake_ = false;  // from here a submitter must write the eventfd
          wait = true;
        }
      }
      int rc = wait ? io_uring_submit_and_wait(ring_.get(), 1) : io_uring_submit(ring_.get());
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
        VSFS_LOG_ERROR("{}: io_uring_enter failed: {}", describe(), std::strerror(-rc));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      reap(finished);
      deliver(finished);
      call_watcher();
    }
  }

  void helper_run() {
    std::unique_lock lk(mu_);
    for (;;) {
      helper_cv_.wait(lk, [this] { return helper_stop_ || !helper_queue_.empty(); });
      if (helper_queue_.empty()) return;
      IoRequest r = std::move(helper_queue_.front());
      helper_queue_.pop_front();
      lk.unlock();
      uint64_t range[2] = {r.offset_bytes, r.length_bytes};
      unsigned long op = r.kind == OpKind::kDiscard ? BLKDISCARD : BLKZEROOUT;
      int64_t result = ::ioctl(file_.fd.get(), op, range) == 0
                           ? static_cast<int64_t>(r.length_bytes)
                           : -static_cast<int64_t>(errno);
      lk.lock();
      helper_done_.push_back({std::move(r.done), r.kind, result, true});
      bool wake = !awake_;
      awake_ = true;
      if (wake) {
        lk.unlock();
        signal_wake();
        lk.lock();
      }
    }
  }

  const OpenedFile file_;
  std::atomic<uint64_t> size_bytes_;  // file_.size_bytes, raised by refresh_size()

  // Completion thread only. Commands are declared before the ring so that their
  // callbacks (which may own buffers the kernel writes into) outlive it.
  std::vector<DriverCommand> commands_;  // by slot; empty `done`: free
  std::vector<uint32_t> free_commands_;
  Ring ring_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  bool zero_range_ok_ = true;
  uint64_t wake_value_ = 0;   // target of the armed eventfd read
  bool watch_ready_ = false;  // call the watcher after this pass
  bool watch_multishot_ = true;

  // Lock order: mu_ is a leaf (callbacks and eventfd writes happen outside it).
  mutable std::mutex mu_;
  std::deque<IoRequest> fifo_;           // guarded by mu_: not yet issued
  std::deque<DriverCommand> command_fifo_;  // guarded by mu_: not yet in the ring
  DeviceCounters counters_;              // guarded by mu_
  bool awake_ = true;                    // guarded by mu_: completion thread will look
  bool stopping_ = false;                // guarded by mu_
  std::deque<IoRequest> helper_queue_;   // guarded by mu_: block ioctls to run
  std::deque<Finished> helper_done_;     // guarded by mu_: ioctl results to deliver
  bool helper_stop_ = false;             // guarded by mu_
  std::condition_variable helper_cv_;
  int watch_fd_ = -1;                    // guarded by mu_
  std::function<bool()> watch_fn_;       // guarded by mu_; empty: nothing watched
  bool watch_armed_ = false;             // guarded by mu_: the poll is in the ring
  bool watch_removing_ = false;          // guarded by mu_: its removal is in the ring
  bool watch_calling_ = false;           // guarded by mu_: watch_fn_ is running
  std::condition_variable watch_cv_;     // signals !watch_calling_

  std::thread thread_;
  std::thread helper_;
};

Error open_error(const std::string& path, int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return make_error(err, ErrorKind::kNotFound, "{}: no such file or device", path);
    case EBUSY:
    case EWOULDBLOCK:
      return make_error(EBUSY, ErrorKind::kBusy, "{} is in use by another process", path);
    case EISDIR:
      return make_error(err, ErrorKind::kInvalidArgument,
                        "{} is not a regular file or block device", path);
    default:
      return make_error(err, ErrorKind::kIo, "{}: cannot open: {}", path, std::strerror(err));
  }
}

// A device that can be read but not written (an immutable image, a read-only loop
// device or LUN): a read-write open is refused with this, so that programs can say how
// to open it instead of failing at the first write.
Error read_only_error(const std::string& path, int err) {
  return make_error(EROFS, ErrorKind::kState, "{} is read-only ({})", path, std::strerror(err));
}

bool sysfs_discard_zeroes(dev_t rdev) {
  std::ifstream in(fmt::format("/sys/dev/block/{}:{}/queue/discard_zeroes_data",
                               major(rdev), minor(rdev)));
  int value = 0;
  return in && (in >> value) && value == 1;
}

}  // namespace

Result<std::unique_ptr<Device>> open_uring_device(const std::string& path,
                                                  const UringOptions& options) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return open_error(path, errno);
  const bool block = S_ISBLK(st.st_mode);
  if (!block && !S_ISREG(st.st_mode)) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "{} is not a regular file or block device", path);
  }

  OpenedFile file;
  file.path = path;
  file.block = block;
  file.read_only = options.read_only;
  file.queue_depth = std::clamp<uint32_t>(options.queue_depth, 1, kMaxQueueDepth);
  int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (block && options.exclusive) flags |= O_EXCL;
  file.direct = options.try_direct;
  int fd = ::open(path.c_str(), flags | (file.direct ? O_DIRECT : 0));
  if (fd < 0 && errno == EINVAL && file.direct) {
    VSFS_LOG_WARN("{}: O_DIRECT is not supported here; using buffered IO with fdatasync",
                  path);
    file.direct = false;
    fd = ::open(path.c_str(), flags);
  }
  if (fd < 0) {
    const int err = errno;
    if (!options.read_only && (err == EROFS || err == EACCES || err == EPERM)) {
      const int probe = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (probe >= 0) {
        ::close(probe);
        return read_only_error(path, err);
      }
    }
    return open_error(path, err);
  }
  file.fd = UniqueFd(fd);

  // Check the type again on what was opened: the path may have changed in between.
  if (::fstat(fd, &st) != 0) return open_error(path, errno);
  if (S_ISBLK(st.st_mode) != block || (!block && !S_ISREG(st.st_mode))) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "{} is not a regular file or block device", path);
  }
  if (!block && options.exclusive && ::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    return open_error(path, errno);
  }

  if (block) {
    uint64_t size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) return open_error(path, errno);
    file.size_bytes = size;
    // A read-only block device may still open for writing; its writes fail (EPERM).
    int ro = 0;
    if (!options.read_only && ::ioctl(fd, BLKROGET, &ro) == 0 && ro != 0) {
      return read_only_error(path, EROFS);
    }
    int logical = 0;
    if (::ioctl(fd, BLKSSZGET, &logical) == 0 && logical > 0) {
      file.alignment_bytes = std::max<uint32_t>(kAlignBytes, static_cast<uint32_t>(logical));
    }
    file.discard_zeroes = sysfs_discard_zeroes(st.st_rdev);
  } else {
    file.size_bytes = static_cast<uint64_t>(st.st_size);
    file.discard_zeroes = true;  // a punched hole reads back as zeros
  }

  int efd = ::eventfd(0, EFD_CLOEXEC);
  if (efd < 0) return open_error(path, errno);
  file.wake_fd = UniqueFd(efd);

  auto dev = std::make_unique<UringDevice>(std::move(file));
  VSFS_TRY(dev->start());
  return std::unique_ptr<Device>(std::move(dev));
}

}  // namespace vsfs::device
