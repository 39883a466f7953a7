// RbdDevice: see rbd_device.h.
//
// Threading: submit() runs on any thread. Under mu_ it admits requests while fewer than
// queue_depth are in flight and queues the rest in a FIFO; it starts the admitted ones
// with mu_ released (rbd_aio_* are thread-safe and may wait briefly). librbd completes
// them on its own threads and, because the image has an eventfd for notifications,
// queues them for rbd_poll_io_events and writes the eventfd. The completion thread
// polls that eventfd (and the watched descriptor, /dev/fuse, which it serves too), collects completions, admits queued requests into the
// freed slots and runs the callbacks with mu_ released. Requests done without librbd
// (invalid, fenced, an allocation, refused by rbd_aio_*) go through the same thread: they
// are put on a list and the eventfd is written, so no callback runs inside submit().
#include "device/rbd_device.h"

#include <rados/librados.h>
#include <rbd/librbd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "device/validate.h"
#include "util/assert.h"
#include "util/log.h"

namespace vsfs::device {

namespace {

constexpr uint32_t kAlignBytes = 4096;
constexpr uint32_t kMaxQueueDepth = 4096;
constexpr int kPollBatch = 64;

std::string strerror_text(int err) { return std::strerror(err < 0 ? -err : err); }

// The cluster connection, the pool and the image, released in reverse order.
struct Handles {
  rados_t cluster = nullptr;
  rados_ioctx_t io = nullptr;
  rbd_image_t image = nullptr;
  bool connected = false;

  Handles() = default;
  Handles(const Handles&) = delete;
  Handles& operator=(const Handles&) = delete;
  ~Handles() {
    if (image != nullptr) rbd_close(image);  // releases the exclusive lock if held
    if (io != nullptr) rados_ioctx_destroy(io);
    if (cluster != nullptr) rados_shutdown(cluster);
  }
};

// The owners of the image's lock, for a message: "127.0.0.1:0/12345" or "unknown".
std::string lock_owners(rbd_image_t image) {
  rbd_lock_mode_t mode{};
  std::vector<char*> owners(8);
  size_t count = owners.size();
  if (rbd_lock_get_owners(image, &mode, owners.data(), &count) < 0 || count == 0) {
    return "unknown";
  }
  std::string text;
  for (size_t i = 0; i < count; ++i) text += (i ? ", " : "") + std::string(owners[i]);
  rbd_lock_get_owners_cleanup(owners.data(), count);
  return text;
}

class RbdDevice final : public Device {
 public:
  RbdDevice(std::string name, std::unique_ptr<Handles> h, uint64_t size, int event_fd,
            const RbdOptions& o)
      : name_(std::move(name)),
        h_(std::move(h)),
        size_bytes_(size),
        event_fd_(event_fd),
        queue_depth_(std::clamp<uint32_t>(o.queue_depth, 1, kMaxQueueDepth)),
        read_only_(o.read_only) {
    thread_ = std::thread([this] { run(); });
  }

  ~RbdDevice() override {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    wake();
    thread_.join();
    h_.reset();  // closes the image before its eventfd goes
    ::close(event_fd_);
  }

  uint64_t size_bytes() const override { return size_bytes_.load(std::memory_order_acquire); }
  Result<uint64_t> refresh_size() override {
    uint64_t size = 0;
    if (int r = rbd_get_size(h_->image, &size); r < 0) {
      return make_error(-r, ErrorKind::kIo, "{}: cannot read its size: {}", name_,
                        strerror_text(r));
    }
    uint64_t old = size_bytes_.load(std::memory_order_acquire);
    while (size > old && !size_bytes_.compare_exchange_weak(old, size)) {
    }
    return size_bytes_.load(std::memory_order_acquire);
  }
  uint32_t alignment_bytes() const override { return kAlignBytes; }
  bool discard_zeroes() const override { return true; }

  void submit(std::span<IoRequest> requests) override {
    if (requests.empty()) return;
    std::vector<Op*> start;
    bool local = false;
    {
      std::lock_guard lk(mu_);
      for (IoRequest& r : requests) {
        if (auto result = local_result(r)) {
          local_.emplace_back(new Op(std::move(r)), *result);
          local = true;
        } else if (in_flight_ < queue_depth_) {
          ++in_flight_;
          start.push_back(new Op(std::move(r)));
        } else {
          fifo_.push_back(std::move(r));
        }
      }
      note_depths();
    }
    if (local) wake();
    for (Op* op : start) issue(op);
  }

  bool watch_readable(int fd, std::function<bool()> on_ready) override {
    {
      std::lock_guard lk(mu_);
      VSFS_ASSERT(!watch_fn_ && on_ready);
      watch_fd_ = fd;
      watch_fn_ = std::move(on_ready);
    }
    wake();  // the completion thread polls the new descriptor from its next pass
    return true;
  }

  void unwatch() override {
    VSFS_ASSERT(!in_completion_context());
    {
      std::unique_lock lk(mu_);
      watch_cv_.wait(lk, [this] { return !watch_calling_; });
      watch_fn_ = nullptr;
      watch_fd_ = -1;
    }
    wake();
  }

  DeviceCounters counters() const override {
    std::lock_guard lk(mu_);
    return counters_;
  }

  std::string describe() const override { return name_; }

  bool in_completion_context() const override {
    return std::this_thread::get_id() == thread_.get_id();
  }

  // Synchronous librbd calls on the calling thread; they do not go through the eventfd.
  int64_t execute_inline(const IoRequest& r) override {
    std::optional<int64_t> local;
    {
      std::lock_guard lk(mu_);
      local = local_result(r);
    }
    int64_t result = local.value_or(0);
    if (!local) {
      switch (r.kind) {
        case OpKind::kRead:
        case OpKind::kWrite: {
          uint64_t at = r.offset_bytes;
          for (int i = 0; i < r.iovcnt && result >= 0; ++i) {
            const iovec& v = r.iov[i];
            const ssize_t n =
                r.kind == OpKind::kRead
                    ? rbd_read(h_->image, at, v.iov_len, static_cast<char*>(v.iov_base))
                    : rbd_write(h_->image, at, v.iov_len, static_cast<const char*>(v.iov_base));
            if (n < 0) result = n;
            else if (static_cast<size_t>(n) != v.iov_len) result = -EIO;
            at += v.iov_len;
          }
          if (result == 0) result = static_cast<int64_t>(r.length_bytes);
          break;
        }
        case OpKind::kFlush:
          result = rbd_flush(h_->image);
          break;
        case OpKind::kDiscard:
          result = rbd_discard(h_->image, r.offset_bytes, r.length_bytes);
          break;
        case OpKind::kWriteZeroes:
          result = rbd_write_zeroes(h_->image, r.offset_bytes, r.length_bytes, 0, 0);
          break;
        case OpKind::kAllocate:  // local_result answered it
          break;
      }
      result = settle(r, result);
    }
    std::lock_guard lk(mu_);
    counters_.count(r.kind, result);
    return result;
  }

 private:
  // A request on its way: held on the heap, librbd's completion argument.
  using Op = IoRequest;

  // The result `r` gets without librbd, nullopt when librbd must do it: an invalid,
  // fenced or read-only refusal, or an allocation (RBD allocates as it writes: done).
  // Under mu_.
  std::optional<int64_t> local_result(const IoRequest& r) const {
    if (int invalid = detail::validate_request(r, size_bytes(), kAlignBytes); invalid != 0) {
      return invalid;
    }
    if (fenced_) return -EIO;
    if (read_only_ && detail::is_write_kind(r.kind)) return -EROFS;
    if (r.kind == OpKind::kAllocate) return static_cast<int64_t>(r.length_bytes);
    return std::nullopt;
  }

  void note_depths() {
    counters_.in_flight = in_flight_;
    counters_.queued = fifo_.size();
    counters_.in_flight_peak = std::max<uint64_t>(counters_.in_flight_peak, in_flight_);
  }

  void wake() {
    const uint64_t one = 1;
    ssize_t n;
    do {
      n = ::write(event_fd_, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    VSFS_ASSERT(n == sizeof(one));
  }

  // Hands `op` to librbd. A call librbd refuses completes on the completion thread.
  void issue(Op* op) {
    const IoRequest& r = *op;
    rbd_completion_t c = nullptr;
    int rc = rbd_aio_create_completion(op, nullptr, &c);
    if (rc == 0) {
      switch (r.kind) {
        case OpKind::kRead:
          rc = rbd_aio_readv(h_->image, r.iov, r.iovcnt, r.offset_bytes, c);
          break;
        case OpKind::kWrite:  // durable or not: with librbd's cache off, a write is on
                              // the OSDs' stable storage when it completes
          rc = rbd_aio_writev(h_->image, r.iov, r.iovcnt, r.offset_bytes, c);
          break;
        case OpKind::kFlush:
          rc = rbd_aio_flush(h_->image, c);
          break;
        case OpKind::kDiscard:
          rc = rbd_aio_discard(h_->image, r.offset_bytes, r.length_bytes, c);
          break;
        case OpKind::kWriteZeroes:
          rc = rbd_aio_write_zeroes(h_->image, r.offset_bytes, r.length_bytes, c, 0, 0);
          break;
        case OpKind::kAllocate:  // answered by local_result
          rc = -EINVAL;
          break;
      }
    }
    if (rc == 0) return;
    if (c != nullptr) rbd_aio_release(c);
    const int64_t result = settle(r, rc);  // may fence, which takes mu_
    {
      std::lock_guard lk(mu_);
      --in_flight_;
      local_.emplace_back(op, result);
      note_depths();
    }
    wake();
  }

  // The result a caller sees for `r` from librbd's `rc`: the bytes moved, 0 for a flush,
  // or -errno. The first sign that the cluster fenced this client ends all IO.
  int64_t settle(const IoRequest& r, int64_t rc) {
    if (rc == -ESHUTDOWN || (rc == -EROFS && !read_only_)) {
      fence(static_cast<int>(-rc));
      return -EIO;
    }
    if (rc < 0) return rc;
    if (r.kind == OpKind::kFlush) return 0;
    if (r.kind == OpKind::kRead && static_cast<uint64_t>(rc) != r.length_bytes) return -EIO;
    return static_cast<int64_t>(r.length_bytes);
  }

  void fence(int err) {
    bool first = false;
    {
      std::lock_guard lk(mu_);
      first = !fenced_;
      fenced_ = true;
    }
    if (!first) return;
    VSFS_LOG_ERROR(
        "{}: lost the datastore: the Ceph cluster {} ({}); another client has taken the "
        "image over. Every IO fails with EIO from now on",
        name_,
        err == ESHUTDOWN ? "blocklisted this client" : "no longer lets this client write",
        strerror_text(err));
  }

  void run() {
    std::vector<rbd_completion_t> polled(kPollBatch);
    std::vector<std::pair<Op*, int64_t>> finished;
    std::vector<Op*> start;
    bool more = false;  // the watcher stopped early with more to read
    for (;;) {
      int watch_fd;
      {
        std::lock_guard lk(mu_);
        watch_fd = watch_fn_ ? watch_fd_ : -1;
      }
      pollfd fds[2] = {{event_fd_, POLLIN, 0}, {watch_fd, POLLIN, 0}};
      const int ready = ::poll(fds, watch_fd >= 0 ? 2 : 1, more && watch_fd >= 0 ? 0 : -1);
      if (ready < 0 && errno != EINTR) {
        VSFS_LOG_ERROR("{}: poll failed: {}", name_, std::strerror(errno));
      }
      if (ready > 0 && (fds[0].revents & POLLIN) != 0) {
        uint64_t count = 0;
        (void)::read(event_fd_, &count, sizeof(count));  // non-blocking; only resets it
      }
      uint32_t polled_count = 0;
      for (;;) {
        const int got = rbd_poll_io_events(h_->image, polled.data(), kPollBatch);
        for (int i = 0; i < got; ++i) {
          Op* op = static_cast<Op*>(rbd_aio_get_arg(polled[i]));
          const int64_t rc = rbd_aio_get_return_value(polled[i]);
          rbd_aio_release(polled[i]);
          finished.emplace_back(op, settle(*op, rc));
        }
        polled_count += static_cast<uint32_t>(std::max(got, 0));
        if (got < kPollBatch) break;
      }
      bool stop = false;
      {
        std::lock_guard lk(mu_);
        in_flight_ -= polled_count;
        finished.insert(finished.end(), local_.begin(), local_.end());
        local_.clear();
        while (in_flight_ < queue_depth_ && !fifo_.empty()) {
          IoRequest r = std::move(fifo_.front());
          fifo_.pop_front();
          if (auto result = local_result(r)) {
            finished.emplace_back(new Op(std::move(r)), *result);
          } else {
            ++in_flight_;
            start.push_back(new Op(std::move(r)));
          }
        }
        for (const auto& [op, result] : finished) counters_.count(op->kind, result);
        note_depths();
        stop = stop_ && in_flight_ == 0 && fifo_.empty() && local_.empty();
      }
      for (Op* op : start) issue(op);
      start.clear();
      for (auto& [op, result] : finished) {
        if (op->done) op->done(result);
        delete op;
      }
      finished.clear();
      if (stop) return;
      if (watch_fd >= 0 && (more || (ready > 0 && fds[1].revents != 0))) more = call_watcher();
    }
  }

  // Runs the watcher unless unwatch() came first; its answer (more to read).
  bool call_watcher() {
    std::function<bool()>* fn;
    {
      std::lock_guard lk(mu_);
      if (!watch_fn_) return false;
      watch_calling_ = true;
      fn = &watch_fn_;
    }
    const bool more = (*fn)();
    {
      std::lock_guard lk(mu_);
      watch_calling_ = false;
    }
    watch_cv_.notify_all();
    return more;
  }

  const std::string name_;
  std::unique_ptr<Handles> h_;
  std::atomic<uint64_t> size_bytes_;
  const int event_fd_;
  const uint32_t queue_depth_;
  const bool read_only_;
  std::thread thread_;

  mutable std::mutex mu_;
  std::deque<IoRequest> fifo_;                      // waiting for a slot
  std::vector<std::pair<Op*, int64_t>> local_;      // done without librbd: their results
  uint32_t in_flight_ = 0;                          // handed to librbd, not polled yet
  DeviceCounters counters_;
  bool fenced_ = false;
  bool stop_ = false;
  // The watched descriptor (watch_readable) and its watcher; the watcher runs on the
  // completion thread with mu_ released, watch_calling_ set meanwhile.
  int watch_fd_ = -1;
  std::function<bool()> watch_fn_;
  bool watch_calling_ = false;
  std::condition_variable watch_cv_;
};

// Splits `text` at unescaped ':' and removes the escapes.
std::vector<std::string> split_fields(std::string_view text) {
  std::vector<std::string> fields(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      fields.back() += text[++i];
    } else if (text[i] == ':') {
      fields.emplace_back();
    } else {
      fields.back() += text[i];
    }
  }
  return fields;
}

}  // namespace

bool is_rbd_name(std::string_view name) { return name.starts_with("rbd:"); }

Result<RbdName> parse_rbd_name(std::string_view name) {
  auto bad = [&](std::string_view why) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "{}: not an RBD image name ({}); expected "
                      "rbd:POOL/IMAGE[:id=USER][:conf=FILE]",
                      name, why);
  };
  if (!is_rbd_name(name)) return bad("it does not start with rbd:");
  std::vector<std::string> fields = split_fields(name.substr(4));
  RbdName out;
  std::vector<std::string> path;
  for (size_t start = 0;;) {
    const size_t slash = fields[0].find('/', start);
    path.push_back(fields[0].substr(start, slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (path.size() < 2 || path.size() > 3) return bad("give a pool and an image");
  for (const std::string& part : path) {
    if (part.empty()) return bad("an empty pool, namespace or image");
  }
  if (path.back().find('@') != std::string::npos) {
    return bad("a snapshot cannot hold a datastore");
  }
  out.pool = path.front();
  out.image = path.back();
  if (path.size() == 3) out.name_space = path[1];
  for (size_t i = 1; i < fields.size(); ++i) {
    const size_t eq = fields[i].find('=');
    if (eq == std::string::npos || eq == 0) return bad(fmt::format("option '{}'", fields[i]));
    std::string key = fields[i].substr(0, eq);
    std::string value = fields[i].substr(eq + 1);
    if (key == "id") {
      out.id = value;
    } else if (key == "conf") {
      out.conf = value;
    } else {
      if (key == "rbd_cache" && value != "false") {
        return bad("vsfs runs with librbd's cache off (rbd_cache=false)");
      }
      out.options[key] = value;
    }
  }
  return out;
}

Result<std::unique_ptr<Device>> open_rbd_device(const std::string& name,
                                                const RbdOptions& options) {
  VSFS_ASSIGN_OR_RETURN(RbdName n, parse_rbd_name(name));
  auto fail = [&](int rc, ErrorKind kind, std::string_view what) {
    return make_error(-rc, kind, "{}: {}: {}", name, what, strerror_text(rc));
  };
  auto h = std::make_unique<Handles>();
  if (int r = rados_create(&h->cluster, n.id.empty() ? nullptr : n.id.c_str()); r < 0) {
    h->cluster = nullptr;
    return fail(r, ErrorKind::kIo, "cannot create a Ceph client");
  }
  if (int r = rados_conf_read_file(h->cluster, n.conf.empty() ? nullptr : n.conf.c_str());
      r < 0) {
    return fail(r, r == -ENOENT ? ErrorKind::kNotFound : ErrorKind::kInvalidArgument,
                n.conf.empty() ? "cannot read a ceph.conf" : "cannot read " + n.conf);
  }
  rados_conf_parse_env(h->cluster, nullptr);  // CEPH_ARGS, as the ceph tools do
  for (const auto& [key, value] : n.options) {
    if (int r = rados_conf_set(h->cluster, key.c_str(), value.c_str()); r < 0) {
      return fail(r, ErrorKind::kInvalidArgument, fmt::format("option {}={}", key, value));
    }
  }
  // A fenced client must see its writes fail, not land in a cache; and a discarded
  // range must read back as zeros even where it covers part of an object.
  for (const char* key : {"rbd_cache", "rbd_skip_partial_discard"}) {
    if (int r = rados_conf_set(h->cluster, key, "false"); r < 0) {
      return fail(r, ErrorKind::kIo, fmt::format("cannot set {}", key));
    }
  }
  if (int r = rados_connect(h->cluster); r < 0) {
    return fail(r, ErrorKind::kIo, "cannot connect to the Ceph cluster");
  }
  if (int r = rados_ioctx_create(h->cluster, n.pool.c_str(), &h->io); r < 0) {
    h->io = nullptr;
    return fail(r, r == -ENOENT ? ErrorKind::kNotFound : ErrorKind::kIo,
                fmt::format("pool {}", n.pool));
  }
  rados_ioctx_set_namespace(h->io, n.name_space.c_str());
  const int opened = options.read_only
                         ? rbd_open_read_only(h->io, n.image.c_str(), &h->image, nullptr)
                         : rbd_open(h->io, n.image.c_str(), &h->image, nullptr);
  if (opened < 0) {
    h->image = nullptr;
    return fail(opened, opened == -ENOENT ? ErrorKind::kNotFound : ErrorKind::kIo,
                fmt::format("image {}", n.image));
  }
  if (!options.read_only && options.exclusive) {
    const int r = rbd_lock_acquire(h->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (r == -EROFS || r == -EBUSY) {
      return make_error(EBUSY, ErrorKind::kBusy,
                        "{}: another client holds the image's exclusive lock ({})", name,
                        lock_owners(h->image));
    }
    if (r == -EINVAL || r == -EOPNOTSUPP) {
      return make_error(EOPNOTSUPP, ErrorKind::kUnsupported,
                        "{}: the image has no exclusive-lock feature (rbd feature enable "
                        "{}/{} exclusive-lock)",
                        name, n.pool, n.image);
    }
    if (r < 0) return fail(r, ErrorKind::kIo, "cannot take the image's exclusive lock");
  }
  uint64_t size = 0;
  if (int r = rbd_get_size(h->image, &size); r < 0) {
    return fail(r, ErrorKind::kIo, "cannot read the image's size");
  }
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return fail(-errno, ErrorKind::kIo, "eventfd");
  if (int r = rbd_set_image_notification(h->image, efd, EVENT_TYPE_EVENTFD); r < 0) {
    ::close(efd);
    return fail(r, ErrorKind::kIo, "cannot have completions signalled");
  }
  std::string text = fmt::format("rbd:{}/{}{}", n.pool,
                                 n.name_space.empty() ? "" : n.name_space + "/", n.image);
  return std::unique_ptr<Device>(
      std::make_unique<RbdDevice>(std::move(text), std::move(h), size, efd, options));
}

}  // namespace vsfs::device
