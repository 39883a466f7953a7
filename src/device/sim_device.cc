// SimDevice: the in-memory test device (see sim_device.h for the model).
//
// State lives in SimDevice::Impl under one mutex (mu_). A completion thread owned by
// Impl moves requests from the FIFO into the in-flight set (bounded by queue_depth),
// picks the next one to complete (issue order, or random order when reordering), waits
// for its latency deadline, applies it to the medium under mu_, and then runs its
// callback with mu_ released, so callbacks may submit. Faults are decided when a request
// is submitted, so "the nth IO" means the nth submitted.
//
// Durability model: `current_` is what reads see; `durable_` is what survives a power
// cut; `volatile_` lists the writes completed since they were last covered by a flush,
// in completion order, each with its data. A flush records the completion sequence
// number at submit time and, when it completes successfully, moves every volatile write
// up to that number into `durable_`.
#include "device/sim_device.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "device/validate.h"
#include "util/assert.h"
#include "util/units.h"

namespace vsfs::device {

namespace {

constexpr uint64_t kPageBytes = 4096;
using Page = std::array<uint8_t, kPageBytes>;
using Pages = std::unordered_map<uint64_t, std::unique_ptr<Page>>;
using Clock = std::chrono::steady_clock;

void copy_out(const Pages& pages, uint64_t offset, uint8_t* dst, uint64_t length) {
  while (length > 0) {
    uint64_t in = offset % kPageBytes;
    uint64_t n = std::min(length, kPageBytes - in);
    auto it = pages.find(offset / kPageBytes);
    if (it == pages.end()) {
      std::memset(dst, 0, n);
    } else {
      std::memcpy(dst, it->second->data() + in, n);
    }
    offset += n;
    dst += n;
    length -= n;
  }
}

void copy_in(Pages& pages, uint64_t offset, const uint8_t* src, uint64_t length) {
  while (length > 0) {
    uint64_t in = offset % kPageBytes;
    uint64_t n = std::min(length, kPageBytes - in);
    std::unique_ptr<Page>& page = pages[offset / kPageBytes];
    if (!page) {
      page = std::make_unique<Page>();
      page->fill(0);
    }
    std::memcpy(page->data() + in, src, n);
    offset += n;
    src += n;
    length -= n;
  }
}

void zero_range(Pages& pages, uint64_t offset, uint64_t length) {
  while (length > 0) {
    uint64_t in = offset % kPageBytes;
    uint64_t n = std::min(length, kPageBytes - in);
    auto it = pages.find(offset / kPageBytes);
    if (it != pages.end()) {
      if (n == kPageBytes) {
        pages.erase(it);  // keep the image sparse
      } else {
        std::memset(it->second->data() + in, 0, n);
      }
    }
    offset += n;
    length -= n;
  }
}

Pages copy_pages(const Pages& from) {
  Pages to;
  to.reserve(from.size());
  for (const auto& [index, page] : from) to.emplace(index, std::make_unique<Page>(*page));
  return to;
}

}  // namespace

class SimDevice::Impl {
 public:
  explicit Impl(const SimOptions& options)
      : options_(options), rng_(options.seed) {
    VSFS_ASSERT(options_.alignment_bytes > 0);
    VSFS_ASSERT(options_.queue_depth > 0);
    if (!options_.manual_completions) thread_ = std::thread([this] { run(); });
  }

  ~Impl() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  const SimOptions& options() const { return options_; }

  void submit(std::span<IoRequest> requests) {
    {
      std::lock_guard lk(mu_);
      for (IoRequest& request : requests) enqueue_locked(std::move(request));
    }
    work_cv_.notify_one();
  }

  DeviceCounters counters() const {
    std::lock_guard lk(mu_);
    DeviceCounters c = counters_;
    c.in_flight = in_flight_.size();
    c.queued = fifo_.size();
    return c;
  }

  void fail_nth(OpKind kind, uint64_t nth, bool persistent) {
    VSFS_ASSERT(nth > 0);
    std::lock_guard lk(mu_);
    KindFault& f = faults_[static_cast<int>(kind)];
    f.countdown = nth;
    f.persistent = persistent;
    f.failing = false;
  }

  void die_at_io(uint64_t nth) {
    VSFS_ASSERT(nth > 0);
    std::lock_guard lk(mu_);
    die_countdown_ = nth;
  }

  bool dead() const {
    std::lock_guard lk(mu_);
    return dead_;
  }

  std::optional<DeadIo> dead_io() const {
    std::lock_guard lk(mu_);
    return dead_io_;
  }

  uint64_t run_pending() {
    VSFS_ASSERT(options_.manual_completions);
    uint64_t completed = 0;
    std::unique_lock lk(mu_);
    for (;;) {
      issue_locked();
      if (in_flight_.empty()) break;
      const size_t index =
          options_.reorder_completions ? static_cast<size_t>(rng_() % in_flight_.size()) : 0;
      complete_locked(index, lk);
      ++completed;
    }
    return completed;
  }

  uint64_t io_count() const {
    std::lock_guard lk(mu_);
    return io_count_;
  }

  uint64_t io_digest() const {
    std::lock_guard lk(mu_);
    return io_digest_;
  }

  std::unique_ptr<SimDevice> power_loss(PowerLossMode mode, uint64_t seed) const {
    std::unique_lock lk(mu_);
    // With manual completions nothing else would ever drain them: run_pending() first.
    VSFS_ASSERT(!options_.manual_completions || (fifo_.empty() && in_flight_.empty()));
    idle_cv_.wait(lk, [this] { return fifo_.empty() && in_flight_.empty(); });
    Pages image = copy_pages(durable_);
    std::mt19937_64 rng(seed);
    for (const VolatileWrite& w : volatile_) {
      int choice = 1;  // 0 drop, 1 keep, 2 tear
      if (mode == PowerLossMode::kDropAll) choice = 0;
      if (mode == PowerLossMode::kRandom) choice = static_cast<int>(rng() % 3);
      if (choice == 1) {
        apply(image, w, 0, w.length);
      } else if (choice == 2) {
        for (uint64_t s = 0; s < w.length; s += kSectorBytes) {
          if (rng() & 1) apply(image, w, s, std::min<uint64_t>(kSectorBytes, w.length - s));
        }
      }
    }
    auto dev = std::make_unique<SimDevice>(options_);
    Impl& other = *dev->impl_;
    std::lock_guard other_lk(other.mu_);
    other.current_ = copy_pages(image);
    other.durable_ = std::move(image);
    other.backed_ = backed_;
    other.backed_count_ = backed_count_;
    return dev;
  }

  std::unique_ptr<SimDevice> clone() const {
    auto dev = std::make_unique<SimDevice>(options_);
    std::scoped_lock lk(mu_, dev->impl_->mu_);
    dev->impl_->current_ = copy_pages(current_);
    dev->impl_->durable_ = copy_pages(current_);
    dev->impl_->backed_ = backed_;
    dev->impl_->backed_count_ = backed_count_;
    return dev;
  }

  void peek(uint64_t offset_bytes, void* buf, uint64_t length_bytes) const {
    VSFS_ASSERT(offset_bytes <= options_.size_bytes &&
                length_bytes <= options_.size_bytes - offset_bytes);
    std::lock_guard lk(mu_);
    copy_out(current_, offset_bytes, static_cast<uint8_t*>(buf), length_bytes);
  }

  void poke(uint64_t offset_bytes, const void* buf, uint64_t length_bytes) {
    VSFS_ASSERT(offset_bytes <= options_.size_bytes &&
                length_bytes <= options_.size_bytes - offset_bytes);
    std::lock_guard lk(mu_);
    copy_in(current_, offset_bytes, static_cast<const uint8_t*>(buf), length_bytes);
    copy_in(durable_, offset_bytes, static_cast<const uint8_t*>(buf), length_bytes);
  }

 private:
  struct Pending {
    IoRequest request;
    int64_t forced_result = 0;   // < 0: complete with this, touching nothing
    uint64_t flush_barrier = 0;  // flush: last write sequence completed at submit
    bool tracked_write = false;  // holds a range in write_ranges_
    Clock::time_point deadline;
  };

  // A completed write not yet covered by a completed flush. Empty data: zeros.
  struct VolatileWrite {
    uint64_t seq = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
    std::vector<uint8_t> data;
  };

  struct KindFault {
    uint64_t countdown = 0;  // 0: disarmed
    bool persistent = false;
    bool failing = false;    // persistent fault reached: every IO of the kind fails
  };

  static void apply(Pages& pages, const VolatileWrite& w, uint64_t from, uint64_t length) {
    if (w.data.empty()) {
      zero_range(pages, w.offset + from, length);
    } else {
      copy_in(pages, w.offset + from, w.data.data() + from, length);
    }
  }


 public:
  // Runs one request now, on the calling thread (see Device::execute_inline).
  int64_t execute_inline(const IoRequest& request) {
    std::lock_guard lk(mu_);
    IoRequest copy;
    copy.kind = request.kind;
    copy.offset_bytes = request.offset_bytes;
    copy.length_bytes = request.length_bytes;
    copy.iov = request.iov;
    copy.iovcnt = request.iovcnt;
    Pending p = decide_locked(std::move(copy), /*track=*/false);
    int64_t result = execute_locked(p);
    counters_.count(request.kind, result);
    return result;
  }

  bool in_completion_context() const {
    return options_.manual_completions || std::this_thread::get_id() == thread_.get_id();
  }

 private:
  // Decides the request's fate now (faults count submitted IOs) and queues it.
  void enqueue_locked(IoRequest&& request) {
    fifo_.push_back(decide_locked(std::move(request), /*track=*/true));
  }

  Pending decide_locked(IoRequest&& request, bool track) {
    ++io_count_;
    for (uint64_t v : {static_cast<uint64_t>(request.kind), request.offset_bytes,
                       request.length_bytes}) {
      io_digest_ = (io_digest_ ^ v) * 0x100000001b3ull;  // FNV-1a over the fields
    }
    const int kind_index = static_cast<int>(request.kind);
    bool died_now = false;
    if (!dead_ && die_countdown_ > 0 && --die_countdown_ == 0) {
      dead_ = true;
      died_now = true;
      dead_io_ = DeadIo{request.kind, request.offset_bytes, request.length_bytes};
    }
    bool injected = false;
    if (kind_index >= 0 && kind_index < kOpKinds) {
      KindFault& f = faults_[kind_index];
      if (f.failing) {
        injected = true;
      } else if (f.countdown > 0 && --f.countdown == 0) {
        injected = true;
        f.failing = f.persistent;
      }
    }
    Pending p;
    int invalid = detail::validate_request(request, options_.size_bytes,
                                           options_.alignment_bytes);
    if (dead_ || died_now) {
      p.forced_result = -EIO;
    } else if (invalid != 0) {
      p.forced_result = invalid;
    } else if (injected) {
      p.forced_result = -EIO;
    }
    if (track && invalid == 0 && detail::is_write_kind(request.kind) && request.length_bytes > 0) {
      track_write_locked(request.offset_bytes, request.length_bytes);
      p.tracked_write = true;
    }
    if (request.kind == OpKind::kFlush) p.flush_barrier = completion_seq_;
    p.request = std::move(request);
    return p;
  }

  // Two writes in flight at once over the same bytes have no defined result: a bug in
  // the layer above, so it stops the test.
  void track_write_locked(uint64_t offset, uint64_t length) {
    uint64_t end = offset + length;
    auto next = write_ranges_.lower_bound(offset);
    VSFS_ASSERT(next == write_ranges_.end() || next->first >= end);
    if (next != write_ranges_.begin()) {
      auto prev = std::prev(next);
      VSFS_ASSERT(prev->second <= offset);
    }
    write_ranges_.emplace(offset, end);
  }

  void issue_locked() {
    while (!fifo_.empty() && in_flight_.size() < options_.queue_depth) {
      Pending p = std::move(fifo_.front());
      fifo_.pop_front();
      p.deadline = Clock::now();
      if (options_.max_latency_us > 0) {
        p.deadline += std::chrono::microseconds(rng_() % (options_.max_latency_us + 1ull));
      }
      in_flight_.push_back(std::move(p));
    }
    counters_.in_flight_peak =
        std::max<uint64_t>(counters_.in_flight_peak, in_flight_.size());
  }

  // Index of the in-flight request to complete now, or none: then `wake` is when to look
  // again.
  std::optional<size_t> pick_locked(Clock::time_point* wake) {
    Clock::time_point now = Clock::now();
    if (!options_.reorder_completions) {
      if (in_flight_.front().deadline <= now) return 0;
      *wake = in_flight_.front().deadline;
      return std::nullopt;
    }
    std::vector<size_t>& ready = ready_scratch_;
    ready.clear();
    *wake = Clock::time_point::max();
    for (size_t i = 0; i < in_flight_.size(); ++i) {
      if (in_flight_[i].deadline <= now) {
        ready.push_back(i);
      } else {
        *wake = std::min(*wake, in_flight_[i].deadline);
      }
    }
    if (ready.empty()) return std::nullopt;
    return ready[rng_() % ready.size()];
  }

  // The backing pages of [offset, +length): true when they are (now) backed, false when
  // the limit leaves too few (nothing changes then).
  bool back_locked(uint64_t offset, uint64_t length) {
    if (options_.backing_bytes == 0 || length == 0) return true;
    const uint64_t first = offset / kPageBytes, end = (offset + length + kPageBytes - 1) / kPageBytes;
    if (backed_.empty()) backed_.assign(options_.size_bytes / kPageBytes + 1, false);
    uint64_t need = 0;
    for (uint64_t i = first; i < end; ++i) need += backed_[i] ? 0 : 1;
    if ((backed_count_ + need) * kPageBytes > options_.backing_bytes) return false;
    for (uint64_t i = first; i < end; ++i) backed_[i] = true;
    backed_count_ += need;
    return true;
  }
  void unback_locked(uint64_t offset, uint64_t length) {
    if (backed_.empty()) return;
    // Only whole pages go back, as a punched hole frees whole filesystem blocks.
    const uint64_t first = (offset + kPageBytes - 1) / kPageBytes, end = (offset + length) / kPageBytes;
    for (uint64_t i = first; i < end; ++i) {
      if (backed_[i]) --backed_count_;
      backed_[i] = false;
    }
  }

 public:
  std::optional<uint64_t> backing_free_bytes() const {
    std::lock_guard lk(mu_);
    if (options_.backing_bytes == 0) return std::nullopt;
    return options_.backing_bytes - backed_count_ * kPageBytes;
  }

 private:
  int64_t execute_locked(Pending& p) {
    if (p.forced_result < 0) return p.forced_result;
    const IoRequest& r = p.request;
    if ((r.kind == OpKind::kWrite || r.kind == OpKind::kWriteZeroes || r.kind == OpKind::kAllocate) &&
        !back_locked(r.offset_bytes, r.length_bytes)) {
      return -ENOSPC;
    }
    if (r.kind == OpKind::kDiscard) unback_locked(r.offset_bytes, r.length_bytes);
    switch (r.kind) {
      case OpKind::kAllocate:
        return static_cast<int64_t>(r.length_bytes);
      case OpKind::kRead: {
        uint64_t offset = r.offset_bytes;
        for (int i = 0; i < r.iovcnt; ++i) {
          copy_out(current_, offset, static_cast<uint8_t*>(r.iov[i].iov_base),
                   r.iov[i].iov_len);
          offset += r.iov[i].iov_len;
        }
        return static_cast<int64_t>(r.length_bytes);
      }
      case OpKind::kWrite: {
        if (r.length_bytes == 0) return 0;
        VolatileWrite w{++completion_seq_, r.offset_bytes, r.length_bytes, {}};
        w.data.resize(r.length_bytes);
        uint64_t at = 0;
        for (int i = 0; i < r.iovcnt; ++i) {
          std::memcpy(w.data.data() + at, r.iov[i].iov_base, r.iov[i].iov_len);
          at += r.iov[i].iov_len;
        }
        copy_in(current_, w.offset, w.data.data(), w.length);
        if (r.durable) {
          apply(durable_, w, 0, w.length);
          // An older cached write of the same bytes can no longer land over them later:
          // it carries the new bytes from now on.
          for (VolatileWrite& v : volatile_) {
            const uint64_t lo = std::max(v.offset, w.offset);
            const uint64_t hi = std::min(v.offset + v.length, w.offset + w.length);
            if (lo >= hi) continue;
            if (v.data.empty()) v.data.assign(v.length, 0);
            std::memcpy(v.data.data() + (lo - v.offset), w.data.data() + (lo - w.offset), hi - lo);
          }
          return static_cast<int64_t>(r.length_bytes);
        }
        volatile_.push_back(std::move(w));
        return static_cast<int64_t>(r.length_bytes);
      }
      case OpKind::kDiscard:
      case OpKind::kWriteZeroes: {
        // A discard on a device that does not promise zeros leaves the old data: the
        // least helpful "anything", so a caller that relies on zeros is caught.
        bool zeroes = r.kind == OpKind::kWriteZeroes || options_.discard_zeroes;
        if (r.length_bytes == 0 || !zeroes) return static_cast<int64_t>(r.length_bytes);
        VolatileWrite w{++completion_seq_, r.offset_bytes, r.length_bytes, {}};
        zero_range(current_, w.offset, w.length);
        volatile_.push_back(std::move(w));
        return static_cast<int64_t>(r.length_bytes);
      }
      case OpKind::kFlush:
        while (!volatile_.empty() && volatile_.front().seq <= p.flush_barrier) {
          const VolatileWrite& w = volatile_.front();
          apply(durable_, w, 0, w.length);
          volatile_.pop_front();
        }
        return 0;
    }
    return -EINVAL;
  }

  void run() {
    std::unique_lock lk(mu_);
    for (;;) {
      issue_locked();
      if (in_flight_.empty()) {
        if (stopping_) return;
        work_cv_.wait(lk);
        continue;
      }
      Clock::time_point wake;
      std::optional<size_t> index = pick_locked(&wake);
      if (!index) {
        work_cv_.wait_until(lk, wake);
        continue;
      }
      complete_locked(*index, lk);
    }
  }

  // Completes in-flight request `index`: applies it, refills the in-flight set, and runs
  // its callback with mu_ released (the callback may submit).
  void complete_locked(size_t index, std::unique_lock<std::mutex>& lk) {
    Pending p = std::move(in_flight_[index]);
    in_flight_.erase(in_flight_.begin() + static_cast<ptrdiff_t>(index));
    int64_t result = execute_locked(p);
    const IoRequest& r = p.request;
    if (p.tracked_write) write_ranges_.erase(r.offset_bytes);
    counters_.count(r.kind, result);
    Completion done = std::move(p.request.done);
    issue_locked();  // refill before the callback so the queue stays busy
    bool idle = fifo_.empty() && in_flight_.empty();
    lk.unlock();
    if (idle) idle_cv_.notify_all();
    if (done) done(result);
    lk.lock();
  }

  const SimOptions options_;

  // Lock order: a device's mu_ before a newer device's mu_ (power_loss, clone).
  mutable std::mutex mu_;
  std::condition_variable work_cv_;          // completion thread: new work or stop
  mutable std::condition_variable idle_cv_;  // power_loss: nothing queued or in flight

  std::deque<Pending> fifo_;                   // guarded by mu_: waiting for a slot
  std::vector<Pending> in_flight_;             // guarded by mu_: in issue order
  std::map<uint64_t, uint64_t> write_ranges_;  // guarded by mu_: outstanding writes
  Pages current_;                              // guarded by mu_
  Pages durable_;                              // guarded by mu_
  std::deque<VolatileWrite> volatile_;         // guarded by mu_: completion order
  uint64_t completion_seq_ = 0;                // guarded by mu_
  std::mt19937_64 rng_;                        // guarded by mu_
  std::vector<size_t> ready_scratch_;          // completion thread only, under mu_
  KindFault faults_[kOpKinds];                 // guarded by mu_
  uint64_t die_countdown_ = 0;                 // guarded by mu_
  bool dead_ = false;                          // guarded by mu_
  std::optional<DeadIo> dead_io_;              // guarded by mu_
  uint64_t io_count_ = 0;                      // guarded by mu_
  uint64_t io_digest_ = 0xcbf29ce484222325ull; // guarded by mu_
  DeviceCounters counters_;                    // guarded by mu_
  std::vector<bool> backed_;                   // guarded by mu_: pages with backing
  uint64_t backed_count_ = 0;                  // guarded by mu_
  bool stopping_ = false;                      // guarded by mu_
  std::thread thread_;
};

SimDevice::SimDevice(const SimOptions& options) : impl_(std::make_unique<Impl>(options)) {}
SimDevice::~SimDevice() = default;

uint64_t SimDevice::size_bytes() const { return impl_->options().size_bytes; }
std::optional<uint64_t> SimDevice::backing_free_bytes() const { return impl_->backing_free_bytes(); }
uint32_t SimDevice::alignment_bytes() const { return impl_->options().alignment_bytes; }
bool SimDevice::discard_zeroes() const { return impl_->options().discard_zeroes; }
void SimDevice::submit(std::span<IoRequest> requests) { impl_->submit(requests); }
DeviceCounters SimDevice::counters() const { return impl_->counters(); }
bool SimDevice::in_completion_context() const { return impl_->in_completion_context(); }
int64_t SimDevice::execute_inline(const IoRequest& request) { return impl_->execute_inline(request); }

std::string SimDevice::describe() const {
  return fmt::format("sim({} bytes)", impl_->options().size_bytes);
}

void SimDevice::fail_nth(OpKind kind, uint64_t nth, bool persistent) {
  impl_->fail_nth(kind, nth, persistent);
}
void SimDevice::die_at_io(uint64_t nth) { impl_->die_at_io(nth); }
bool SimDevice::dead() const { return impl_->dead(); }
std::optional<DeadIo> SimDevice::dead_io() const { return impl_->dead_io(); }
uint64_t SimDevice::run_pending() { return impl_->run_pending(); }
uint64_t SimDevice::io_count() const { return impl_->io_count(); }
uint64_t SimDevice::io_digest() const { return impl_->io_digest(); }

std::unique_ptr<SimDevice> SimDevice::power_loss(PowerLossMode mode, uint64_t seed) const {
  return impl_->power_loss(mode, seed);
}
std::unique_ptr<SimDevice> SimDevice::clone() const { return impl_->clone(); }

void SimDevice::peek(uint64_t offset_bytes, void* buf, uint64_t length_bytes) const {
  impl_->peek(offset_bytes, buf, length_bytes);
}
void SimDevice::poke(uint64_t offset_bytes, const void* buf, uint64_t length_bytes) {
  impl_->poke(offset_bytes, buf, length_bytes);
}

}  // namespace vsfs::device
