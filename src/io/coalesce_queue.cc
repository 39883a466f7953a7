// The coalescing queue of one open disk: see coalesce_queue.h for the rules (when to
// hold, when to flush, how requests are merged, the adaptive threshold).
#include "io/coalesce_queue.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "io/coalesce_timer.h"
#include "util/aligned_buffer.h"
#include "util/assert.h"
#include "util/clock.h"

namespace vsfs::io {
namespace {

constexpr double kEwmaWeight = 1.0 / 8;
// How close a request must be to a held or recent IO of its direction to be held for it:
// a stream's requests arrive a little out of order across FUSE worker threads, never
// far apart; random IO almost never falls this close.
constexpr uint64_t kNearBytes = 128 << 10;

}  // namespace

// ---- stats ----

void CoalesceStats::record_hold(uint64_t hold_us) {
  const int bucket = hold_us == 0 ? 0 : std::min<int>(kHoldBuckets - 1, std::bit_width(hold_us));
  hold_hist_[bucket].fetch_add(1, std::memory_order_relaxed);
  uint64_t m = hold_max_us_.load(std::memory_order_relaxed);
  while (hold_us > m && !hold_max_us_.compare_exchange_weak(m, hold_us, std::memory_order_relaxed)) {
  }
}

CoalesceStats::Snapshot CoalesceStats::snapshot() const {
  Snapshot s;
  s.requests_in = requests_in.load(std::memory_order_relaxed);
  s.ios_out = ios_out.load(std::memory_order_relaxed);
  s.merged = merged.load(std::memory_order_relaxed);
  s.held = held.load(std::memory_order_relaxed);
  s.held_now = static_cast<uint64_t>(std::max<int64_t>(0, held_now.load(std::memory_order_relaxed)));
  s.in_flight_now =
      static_cast<uint64_t>(std::max<int64_t>(0, in_flight_now.load(std::memory_order_relaxed)));
  s.barriers = barriers.load(std::memory_order_relaxed);
  s.deadline_flushes = deadline_flushes.load(std::memory_order_relaxed);
  s.full_flushes = full_flushes.load(std::memory_order_relaxed);
  s.hold_us_max = hold_max_us_.load(std::memory_order_relaxed);
  uint64_t hist[kHoldBuckets];
  uint64_t total = 0;
  for (int b = 0; b < kHoldBuckets; ++b) {
    hist[b] = hold_hist_[b].load(std::memory_order_relaxed);
    total += hist[b];
  }
  // A percentile is reported as the upper bound of its bucket, never above the maximum.
  auto percentile = [&](uint64_t per_mille) -> uint64_t {
    if (total == 0) return 0;
    const uint64_t rank = std::max<uint64_t>(1, (total * per_mille + 999) / 1000);
    uint64_t cum = 0;
    for (int b = 0; b < kHoldBuckets; ++b) {
      cum += hist[b];
      if (cum >= rank) return std::min<uint64_t>(s.hold_us_max, (uint64_t{1} << b));
    }
    return s.hold_us_max;
  };
  s.hold_us_p50 = percentile(500);
  s.hold_us_p99 = percentile(990);
  return s;
}

// ---- requests and IOs ----

struct CoalesceQueue::Request {
  Kind kind = Kind::kRead;
  uint64_t seq = 0;
  uint64_t offset = 0, length = 0;
  uint8_t* read_buf = nullptr;          // reads: the caller's buffer
  const uint8_t* write_data = nullptr;  // writes: the caller's data, or `copy`
  bool stable = false;                  // writes: the caller keeps write_data until done
  AlignedBuffer copy;                   // writes that are held: the queue's own copy
  BufferPool* pool = nullptr;           // where `copy` goes back
  ~Request() {
    if (pool != nullptr) pool->give(std::move(copy));
  }
  uint64_t arrival_ns = 0;              // held requests: when they arrived
  bool lone = false;  // held with nothing to merge with (only behind a busy dispatcher)
  Done<uint64_t> done;
  Done<void> flush_done;

  uint64_t end() const { return offset + length; }
};

// One IO passed down: one request, or several byte-contiguous ones of one direction.
struct CoalesceQueue::Io {
  std::shared_ptr<CoalesceQueue> queue;  // keeps the queue alive while in flight
  Kind kind = Kind::kRead;
  uint64_t offset = 0, length = 0;
  std::vector<std::unique_ptr<Request>> members;  // by offset
  uint64_t submit_ns = 0;
};

// Two requests conflict when their bytes overlap and at least one writes: only then
// does their order matter.
bool CoalesceQueue::conflicts(const Request& a, const Request& b) {
  return a.offset < b.end() && b.offset < a.end() &&
         (a.kind == Kind::kWrite || b.kind == Kind::kWrite);
}

// ---- construction ----

std::shared_ptr<CoalesceQueue> CoalesceQueue::create(std::unique_ptr<DiskTarget> target,
                                                     const CoalesceOptions& options,
                                                     CoalesceStats* stats,
                                                     CoalesceTimer* timer,
                                                     BufferPool* buffers) {
  return std::shared_ptr<CoalesceQueue>(
      new CoalesceQueue(std::move(target), options, stats, timer, buffers));
}

CoalesceQueue::CoalesceQueue(std::unique_ptr<DiskTarget> target, const CoalesceOptions& options,
                             CoalesceStats* stats, CoalesceTimer* timer, BufferPool* buffers)
    : target_(std::move(target)),
      options_(options),
      max_combined_bytes_(uint64_t{std::max<uint32_t>(4, options.max_combined_kib)} * 1024),
      stats_(stats),
      timer_(timer),
      buffers_(buffers) {
  VSFS_ASSERT(target_ != nullptr && stats_ != nullptr);
}

CoalesceQueue::~CoalesceQueue() {
  // Every held request holds a caller's completion: dropping one would lose a reply.
  // The owner kicks before letting go, and IOs in flight keep the queue alive.
  VSFS_ASSERT(held_.empty());
}

size_t CoalesceQueue::held() const {
  std::lock_guard l(mu_);
  return held_.size();
}

uint64_t CoalesceQueue::in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

// ---- arrival ----

uint64_t CoalesceQueue::read(uint64_t offset_bytes, uint64_t length_bytes, void* buf,
                             Done<uint64_t> done) {
  auto r = std::make_unique<Request>();
  r->kind = Kind::kRead;
  r->offset = offset_bytes;
  r->length = length_bytes;
  r->read_buf = static_cast<uint8_t*>(buf);
  r->done = std::move(done);
  return arrive(std::move(r), nullptr);
}

uint64_t CoalesceQueue::write(uint64_t offset_bytes, const void* data, uint64_t length_bytes,
                              Done<uint64_t> done, bool stable) {
  auto r = std::make_unique<Request>();
  r->kind = Kind::kWrite;
  r->offset = offset_bytes;
  r->length = length_bytes;
  r->done = std::move(done);
  r->stable = stable;
  if (likely_held() && !stable) {
    // Copy outside the mutex when the request will probably wait; a wrong guess only
    // costs one copy (or one copy under the mutex below).
    copy_write(*r, data);
  } else {
    r->write_data = static_cast<const uint8_t*>(data);
  }
  return arrive(std::move(r), data);
}

uint64_t CoalesceQueue::flush(Done<void> done) {
  auto r = std::make_unique<Request>();
  r->kind = Kind::kBarrier;
  r->flush_done = std::move(done);
  return arrive(std::move(r), nullptr);
}

bool CoalesceQueue::likely_held() const {
  return held_count_.load(std::memory_order_relaxed) > 0 ||
         in_flight_.load(std::memory_order_relaxed) >= threshold_.load(std::memory_order_relaxed);
}

uint64_t CoalesceQueue::arrive(std::unique_ptr<Request> r, const void* write_src) {
  // A completion may run inside this call (the layer below answers some reads at once)
  // and its reply may let the owner drop the last reference on another thread (the
  // kernel sends RELEASE once the last request of a handle is answered): the queue
  // stays alive until this call is over.
  const std::shared_ptr<CoalesceQueue> self = shared_from_this();
  std::unique_lock l(mu_);
  const bool now = r->kind != Kind::kBarrier && can_send_now_locked(*r);
  if (!now && r->kind == Kind::kWrite && r->copy.data() == nullptr && !r->stable) {
    // Held after all: the caller's buffer is only valid until we return. This is the
    // only allocation under the mutex; it happens before anything changes, so a
    // bad_alloc leaves the queue as it was.
    copy_write(*r, write_src);
  }
  const uint64_t seq = next_seq_++;
  r->seq = seq;
  if (r->kind != Kind::kBarrier) stats_->requests_in.fetch_add(1, std::memory_order_relaxed);

  if (now) {
    // Straight down from this thread. It conflicts with nothing held or on its way
    // down, so it commutes with all of them; while it is on its way down it is in
    // transit_, so that a later conflicting request waits for it.
    std::vector<std::unique_ptr<Request>> one;
    one.push_back(std::move(r));
    Io* io = new_io_locked(std::move(one));
    const Range range{io->offset, io->offset + io->length, io->kind, seq};
    transit_.push_back(range);
    l.unlock();
    submit_io(io);
    l.lock();
    end_transit_locked(seq);
    if (!held_.empty() && !dispatching_) {
      dispatching_ = true;
      dispatch_locked(l);
    }
    return seq;
  }

  // Held.
  r->arrival_ns = monotonic_ns();
  r->lone = r->kind != Kind::kBarrier && !is_candidate_locked(*r);
  const Kind kind = r->kind;
  const uint64_t length = r->length;
  held_.push_back(std::move(r));
  held_count_.store(held_.size(), std::memory_order_relaxed);
  stats_->held_now.fetch_add(1, std::memory_order_relaxed);
  if (kind == Kind::kBarrier) {
    ++barriers_held_;
    stats_->barriers.fetch_add(1, std::memory_order_relaxed);
  } else {
    stats_->held.fetch_add(1, std::memory_order_relaxed);
    if (kind == Kind::kWrite) held_bytes_ += length;
  }
  if (!dispatching_) {
    dispatching_ = true;
    dispatch_locked(l);
  } else {
    arm_timer_locked();
  }
  return seq;
}

bool CoalesceQueue::can_send_now_locked(const Request& r) const {
  if (plugged_ || barriers_held_ > 0 || conflicts_transit_locked(r)) return false;
  const uint64_t in_flight = in_flight_.load(std::memory_order_relaxed);
  if (held_.empty() && in_flight < threshold_.load(std::memory_order_relaxed)) return true;
  if (is_candidate_locked(r)) return false;
  for (const auto& h : held_) {
    if (conflicts(*h, r)) return false;
  }
  return true;
}

bool CoalesceQueue::conflicts_transit_locked(const Request& r) const {
  for (const Range& t : transit_) {
    if (r.offset < t.end && t.offset < r.end() &&
        (r.kind == Kind::kWrite || t.kind == Kind::kWrite)) {
      return true;
    }
  }
  return false;
}

void CoalesceQueue::end_transit_locked(uint64_t key) {
  for (size_t i = 0; i < transit_.size(); ++i) {
    if (transit_[i].key == key) {
      transit_[i] = transit_.back();
      transit_.pop_back();
      return;
    }
  }
  VSFS_ASSERT(false);
}

// A request is worth holding only when something it could be merged with is near:
// a held request or a recently passed-down IO of its direction, within kNearBytes.
bool CoalesceQueue::is_candidate_locked(const Request& r) const {
  const uint64_t w = std::min<uint64_t>(max_combined_bytes_, kNearBytes);
  auto near = [&](uint64_t off, uint64_t end) {
    return r.offset <= end + w && off <= r.end() + w;
  };
  for (const auto& h : held_) {
    if (h->kind == r.kind && near(h->offset, h->end())) return true;
  }
  for (const Range& s : recent_) {
    if (s.end != 0 && s.kind == r.kind && near(s.offset, s.end)) return true;
  }
  return false;
}

// ---- flushing ----

bool CoalesceQueue::should_flush_locked(uint64_t now_ns) {
  if (held_.empty()) return false;
  const Request& oldest = *held_.front();
  if (oldest.seq < force_seq_) return true;
  if (held_.size() - barriers_held_ >= options_.max_held ||
      held_bytes_ >= options_.max_held_bytes) {
    stats_->full_flushes.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  if (plugged_) return false;
  if (in_flight_.load(std::memory_order_relaxed) < threshold_.load(std::memory_order_relaxed)) {
    return true;
  }
  if (now_ns - oldest.arrival_ns >= uint64_t{options_.hold_us_max} * 1000) {
    stats_->deadline_flushes.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void CoalesceQueue::dispatch_locked(std::unique_lock<std::mutex>& l) {
  VSFS_ASSERT(dispatching_);
  for (;;) {
    std::vector<Io*> ios;
    std::unique_ptr<Request> barrier;
    take_locked(monotonic_ns(), &ios, &barrier);
    if (ios.empty() && !barrier) break;
    const uint64_t key = next_seq_++;  // names this batch in transit_
    for (Io* io : ios) transit_.push_back(Range{io->offset, io->offset + io->length, io->kind, key});
    l.unlock();
    for (Io* io : ios) submit_io(io);
    if (barrier) submit_barrier(std::move(barrier));
    l.lock();
    transit_.erase(std::remove_if(transit_.begin(), transit_.end(),
                                  [key](const Range& t) { return t.key == key; }),
                   transit_.end());
  }
  dispatching_ = false;
  arm_timer_locked();
}

void CoalesceQueue::take_locked(uint64_t now_ns, std::vector<Io*>* ios,
                                std::unique_ptr<Request>* barrier) {
  if (held_.empty()) return;
  if (held_.front()->kind == Kind::kBarrier) {
    // Everything before the barrier has been passed down; it goes once all of it has
    // completed and been answered.
    if (unanswered_ != 0) return;
    *barrier = std::move(held_.front());
    held_.pop_front();
    --barriers_held_;
    held_count_.store(held_.size(), std::memory_order_relaxed);
    stats_->held_now.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  if (!should_flush_locked(now_ns)) {
    take_lone_locked(now_ns, ios);
    return;
  }
  // A held request that conflicts with one on its way down (sent directly by another
  // thread) must follow it: wait for that call to return; its thread runs the
  // dispatcher again.
  for (const auto& h : held_) {
    if (h->kind == Kind::kBarrier) break;
    if (conflicts_transit_locked(*h)) return;
  }
  std::vector<std::unique_ptr<Request>> segment;
  while (!held_.empty() && held_.front()->kind != Kind::kBarrier) {
    std::unique_ptr<Request> r = std::move(held_.front());
    held_.pop_front();
    if (r->kind == Kind::kWrite) held_bytes_ -= r->length;
    stats_->record_hold((now_ns - std::min(now_ns, r->arrival_ns)) / 1000);
    segment.push_back(std::move(r));
  }
  held_count_.store(held_.size(), std::memory_order_relaxed);
  stats_->held_now.fetch_sub(static_cast<int64_t>(segment.size()), std::memory_order_relaxed);
  build_ios_locked(std::move(segment), ios);
}

// Requests held only because another thread was passing IOs down, with nothing to merge
// with, go on their own as soon as the dispatcher gets to them, ahead of the held
// requests that wait for partners, unless they conflict with one of those or a barrier
// comes before them.
void CoalesceQueue::take_lone_locked(uint64_t now_ns, std::vector<Io*>* ios) {
  if (plugged_) return;
  size_t taken = 0;
  for (size_t i = 0; i < held_.size(); ++i) {
    Request& r = *held_[i];
    if (r.kind == Kind::kBarrier) break;
    if (!r.lone) continue;
    bool clash = false;
    for (size_t k = 0; k < i && !clash; ++k) {
      if (held_[k] != nullptr) clash = conflicts(*held_[k], r);
    }
    if (clash || conflicts_transit_locked(r)) continue;
    std::unique_ptr<Request> own = std::move(held_[i]);
    if (own->kind == Kind::kWrite) held_bytes_ -= own->length;
    stats_->record_hold((now_ns - std::min(now_ns, own->arrival_ns)) / 1000);
    std::vector<std::unique_ptr<Request>> one;
    one.push_back(std::move(own));
    ios->push_back(new_io_locked(std::move(one)));
    ++taken;
  }
  if (taken == 0) return;
  std::erase_if(held_, [](const std::unique_ptr<Request>& p) { return p == nullptr; });
  held_count_.store(held_.size(), std::memory_order_relaxed);
  stats_->held_now.fetch_sub(static_cast<int64_t>(taken), std::memory_order_relaxed);
}

// Cuts the segment (queue order) into epochs of mutually non-conflicting requests, and
// merges byte-contiguous requests of one direction inside each epoch.
void CoalesceQueue::build_ios_locked(std::vector<std::unique_ptr<Request>> segment,
                                     std::vector<Io*>* ios) {
  size_t begin = 0;
  while (begin < segment.size()) {
    size_t end = begin + 1;
    for (; end < segment.size(); ++end) {
      bool clash = false;
      for (size_t k = begin; k < end && !clash; ++k) clash = conflicts(*segment[k], *segment[end]);
      if (clash) break;
    }
    // [begin, end) is one epoch: any order inside it gives the same result.
    std::stable_sort(segment.begin() + static_cast<ptrdiff_t>(begin),
                     segment.begin() + static_cast<ptrdiff_t>(end),
                     [](const std::unique_ptr<Request>& a, const std::unique_ptr<Request>& b) {
                       if (a->kind != b->kind) return a->kind < b->kind;
                       return a->offset < b->offset;
                     });
    size_t i = begin;
    while (i < end) {
      std::vector<std::unique_ptr<Request>> members;
      uint64_t run_end = segment[i]->end();
      uint64_t run_bytes = segment[i]->length;
      const Kind kind = segment[i]->kind;
      members.push_back(std::move(segment[i]));
      ++i;
      while (i < end && segment[i]->kind == kind && segment[i]->offset == run_end &&
             segment[i]->length > 0 && run_bytes + segment[i]->length <= max_combined_bytes_) {
        run_end = segment[i]->end();
        run_bytes += segment[i]->length;
        members.push_back(std::move(segment[i]));
        ++i;
      }
      ios->push_back(new_io_locked(std::move(members)));
    }
    begin = end;
  }
}

CoalesceQueue::Io* CoalesceQueue::new_io_locked(std::vector<std::unique_ptr<Request>> members) {
  auto io = std::make_unique<Io>();
  io->queue = shared_from_this();
  io->kind = members.front()->kind;
  io->offset = members.front()->offset;
  io->length = members.back()->end() - io->offset;
  stats_->merged.fetch_add(members.size() - 1, std::memory_order_relaxed);
  io->members = std::move(members);
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  ++unanswered_;
  stats_->in_flight_now.fetch_add(1, std::memory_order_relaxed);
  stats_->ios_out.fetch_add(1, std::memory_order_relaxed);
  remember_sent_locked(*io);
  return io.release();
}

void CoalesceQueue::remember_sent_locked(const Io& io) {
  recent_[recent_next_] = Range{io.offset, io.offset + io.length, io.kind};
  recent_next_ = (recent_next_ + 1) % kRecent;
}

void CoalesceQueue::copy_write(Request& r, const void* data) {
  if (buffers_ != nullptr) {
    r.copy = buffers_->take(std::max<uint64_t>(1, r.length));
    r.pool = buffers_;
  } else {
    r.copy = AlignedBuffer(std::max<uint64_t>(1, r.length), false);
  }
  std::memcpy(r.copy.data(), data, r.length);
  r.write_data = r.copy.data();
}

void CoalesceQueue::submit_io(Io* io) {
  io->submit_ns = monotonic_ns();
  auto done = [io](Result<uint64_t> r) { io->queue->on_complete(io, std::move(r)); };
  try {
    // The members are contiguous and sorted: one buffer each, one after the other.
    // Reads land in the callers' buffers; writes go from the callers' data, or from
    // the queue's copy of it (a held write), which both stay until `done`, except a
    // lone write that was neither stable nor held: the layer below copies that one.
    std::vector<iovec> iov;
    iov.reserve(io->members.size());
    uint64_t at = io->offset;
    for (const auto& m : io->members) {
      VSFS_ASSERT(m->offset == at);
      at += m->length;
      iov.push_back(io->kind == Kind::kRead
                        ? iovec{m->read_buf, m->length}
                        : iovec{const_cast<uint8_t*>(m->write_data), m->length});
    }
    VSFS_ASSERT(at == io->offset + io->length);
    const int n = static_cast<int>(iov.size());
    const Request& first = *io->members.front();
    if (io->kind == Kind::kRead) {
      target_->readv(io->offset, iov.data(), n, std::move(done));
    } else if (n == 1 && !first.stable && first.copy.data() == nullptr) {
      target_->writev(io->offset, iov.data(), n, std::move(done));
    } else {
      target_->writev_stable(io->offset, iov.data(), n, std::move(done));
    }
  } catch (const std::bad_alloc&) {
    on_complete(io, Error{ENOMEM, ErrorKind::kIo, "no memory for a combined IO"});
  }
}

void CoalesceQueue::submit_barrier(std::unique_ptr<Request> barrier) {
  Request* b = barrier.release();
  target_->fsync([b](Result<void> r) {
    std::unique_ptr<Request> owned(b);
    owned->flush_done(std::move(r));
  });
}

// ---- completion ----

void CoalesceQueue::on_complete(Io* io_raw, Result<uint64_t> result) {
  std::unique_ptr<Io> io(io_raw);
  std::shared_ptr<CoalesceQueue> self = std::move(io->queue);
  const uint64_t service_ns = monotonic_ns() - io->submit_ns;
  {
    // The IO leaves the in-flight count before its members are answered: a caller that
    // sends its next request as soon as it has the reply (queue depth 1) must find the
    // disk idle, not be held behind an IO that is already over.
    std::lock_guard l(mu_);
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    stats_->in_flight_now.fetch_sub(1, std::memory_order_relaxed);
    const double us = static_cast<double>(service_ns) / 1000.0;
    service_ewma_us_ =
        service_ewma_us_ == 0 ? us : service_ewma_us_ + kEwmaWeight * (us - service_ewma_us_);
    const double target_us = std::max(1.0, static_cast<double>(options_.hold_us_max));
    const double t = std::ceil(service_ewma_us_ / target_us);
    const double top = static_cast<double>(std::max<uint32_t>(1, options_.max_inflight));
    threshold_.store(static_cast<uint32_t>(std::clamp(t, 1.0, top)), std::memory_order_relaxed);
  }
  // Each member gets its share: the bytes of the combined result inside its range.
  for (auto& m : io->members) {
    if (!result.ok()) {
      m->done(Error(result.error()));
      continue;
    }
    const uint64_t into = m->offset - io->offset;
    const uint64_t got = *result > into ? std::min(m->length, *result - into) : 0;
    m->done(got);
  }
  io.reset();
  // Then what was held behind it goes (unless an arrival has sent it meanwhile).
  std::unique_lock l(mu_);
  --unanswered_;
  if (!dispatching_) {
    dispatching_ = true;
    dispatch_locked(l);
  }
}

// ---- kicks, plugs, deadlines ----

void CoalesceQueue::kick() {
  const std::shared_ptr<CoalesceQueue> self = shared_from_this();  // as in arrive()
  std::unique_lock l(mu_);
  force_seq_ = next_seq_;
  if (!dispatching_) {
    dispatching_ = true;
    dispatch_locked(l);
  }
}

void CoalesceQueue::plug() {
  std::lock_guard l(mu_);
  plugged_ = true;
}

void CoalesceQueue::unplug() {
  const std::shared_ptr<CoalesceQueue> self = shared_from_this();  // as in arrive()
  std::unique_lock l(mu_);
  plugged_ = false;
  force_seq_ = next_seq_;
  if (!dispatching_) {
    dispatching_ = true;
    dispatch_locked(l);
  } else {
    arm_timer_locked();
  }
}

void CoalesceQueue::on_deadline() {
  std::unique_lock l(mu_);
  timer_armed_ = false;
  if (!dispatching_) {
    dispatching_ = true;
    dispatch_locked(l);
  } else {
    arm_timer_locked();
  }
}

void CoalesceQueue::arm_timer_locked() {
  // A barrier at the front waits for completions, which always come: no deadline.
  if (timer_ == nullptr || timer_armed_ || plugged_ || held_.empty() ||
      held_.front()->kind == Kind::kBarrier) {
    return;
  }
  timer_armed_ = true;
  const uint64_t due_ns = held_.front()->arrival_ns + uint64_t{options_.hold_us_max} * 1000;
  const uint64_t now = monotonic_ns();
  const auto wait = std::chrono::nanoseconds(due_ns > now ? due_ns - now : 0);
  timer_->arm(weak_from_this(), CoalesceTimer::Clock::now() + wait);
}

}  // namespace vsfs::io
