// DataPath: the reads, and what reads and writes share: ops, grain ranges, the metadata
// queue, the mapped-grain check and buffers (data_path.h). Writes: write_path.cc.
#include "disk/data_path.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "util/clock.h"
#include "util/log.h"

namespace vsfs::disk {

using device::OpKind;
using format::SlotState;
using meta::GrainLookup;

std::shared_ptr<DataOp> DataPath::new_op(Ino ino) {
  auto op = std::make_shared<DataOp>(live_ops_);
  op->ino = ino;
  return op;
}

void DataPath::wait_idle() const {
  while (live_ops_.load(std::memory_order_acquire) != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void DataPath::fill_stats_locked(DatastoreStats& s) const {
  s.read_requests = counters_.read_requests;
  s.write_requests = counters_.write_requests;
  s.read_bytes = counters_.read_bytes;
  s.write_bytes = counters_.write_bytes;
  s.in_place_grain_writes = counters_.in_place_grain_writes;
  s.redirected_grain_writes = counters_.redirected_grain_writes;
  s.restamped_grain_writes = counters_.restamped_grain_writes;
  s.window_waits = counters_.writes_waiting_for_window;
  s.device_read_errors = counters_.read_errors;
  s.device_write_errors = counters_.write_errors;
  s.device_no_space = counters_.no_space;
  meta_waits_.fill(s.metadata_queue);
  s.metadata_queue.waiting_now = ms_.fetch_waiters_locked();
}

void DataPath::readv(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) {
  if (view_of(ino) == kCbtView) return cbt_.read(ino, offset, iov, iovcnt, std::move(done));
  auto op = new_op(ino);
  op->done_len = std::move(done);
  op->user.assign(iov, iov + iovcnt);
  {
    std::lock_guard lock(ms_.mu());
    read_locked(op, offset);
  }
  run_deferred();
}

// op->user: where the read goes.
void DataPath::read_locked(const std::shared_ptr<DataOp>& op, uint64_t offset) {
  uint64_t length = 0;
  for (const iovec& v : op->user) length += v.iov_len;
  auto rec = ns_.getattr_locked(op->ino);
  if (!rec.ok()) return finish_now(op, rec.take_error());
  if (auto regular = check_regular(rec->mode); !regular.ok()) return finish_now(op, regular.take_error());
  const uint64_t size = rec->size_bytes;
  if (offset >= size || length == 0) return finish_now(op, uint64_t{0});
  length = std::min(length, size - offset);
  op->offset = offset;
  op->length = length;
  op->first = offset / kGrainBytes;
  op->end = div_round_up(offset + length, kGrainBytes);
  ++counters_.read_requests;
  counters_.read_bytes += length;
  ms_.lifetime_counts_locked().read_bytes += length;
  acquire_locked(op, false, [this, op] { start_read_locked(op); });
}

void DataPath::start_read_locked(const std::shared_ptr<DataOp>& op) {
  // Runs with the mutex held (from acquire or a release): plan, then submit after the
  // lock is dropped by deferring to the pending list.
  const uint64_t n = op->end - op->first;
  const bool direct = grain_direct(op->offset, op->length, op->user.data(),
                                   static_cast<int>(op->user.size()));
  if (!direct) take_buffer(op, n * kGrainBytes);
  std::vector<GrainLookup> map;
  auto looked = lookup_locked(op, [&] {
    return ms_.map_lookup_range_locked(base_of(op->ino), op->first, n, view_of(op->ino),
                                       false, map);
  });
  if (!looked.ok() && looked.error().kind == ErrorKind::kWouldBlock) {
    return wait_for_metadata_locked(op, [this, op] { start_read_locked(op); });
  }
  if (looked.ok()) looked = check_mapped_locked(op, map);
  if (!looked.ok()) {
    // Nothing is read: the answer is the lookup's own error (EUCLEAN for a damaged map).
    release_locked(op);
    defer([op, err = looked.take_error()]() mutable { op->done_len(std::move(err)); });
    return;
  }
  for_each_grain(*op, n, [&](uint64_t i, uint8_t* g) {
    if (map[i].state == SlotState::kMapped) {
      op->plan.add(OpKind::kRead, map[i].grain, g);
    } else {
      std::memset(g, 0, kGrainBytes);
    }
  });
  defer([this, op, direct] {
    submit_plan(dev_, op, [this, op, direct] {
      if (op->error == 0 && !direct) {
        scatter(op->buf.data() + (op->offset - op->first * kGrainBytes), op->length, op->user);
      }
      {
        std::lock_guard lock(ms_.mu());
        if (op->error != 0) {
          ++counters_.read_errors;
          ++ms_.lifetime_counts_locked().read_errors;
        }
        release_locked(op);
      }
      run_deferred();
      if (op->error != 0) {
        VSFS_LOG_ERROR("reading disk inode {} from the device failed: {}", op->ino,
                       std::strerror(-op->error));
        op->done_len(err_from_device(op->error, "read"));
      } else {
        op->done_len(op->length);
      }
    });
  });
}

Result<uint64_t> DataPath::seek(Ino ino, uint64_t offset, bool data) {
  std::lock_guard lock(ms_.mu());
  VSFS_ASSIGN_OR_RETURN(auto attr, ns_.getattr_locked(ino));
  VSFS_TRY(check_regular(attr.mode));
  const uint64_t size = attr.size_bytes;
  if (offset >= size) return make_error(ENXIO, ErrorKind::kInvalidArgument, "offset past the end");
  if (view_of(ino) == kCbtView) return data ? offset : size;
  const uint64_t limit = div_round_up(size, kGrainBytes);
  VSFS_ASSIGN_OR_RETURN(uint64_t g, ms_.map_seek_locked(base_of(ino), offset / kGrainBytes,
                                                        limit, data, view_of(ino)));
  if (data) {
    if (g >= limit) return make_error(ENXIO, ErrorKind::kInvalidArgument, "no data past the offset");
    return std::max(offset, g * kGrainBytes);
  }
  return std::max(offset, std::min(size, g * kGrainBytes));
}

// A read takes its range shared; a change passes the snapshot gate, takes its range
// exclusively, then passes the journal gate (holding the range meanwhile, so that
// nothing overtakes it).
void DataPath::acquire_locked(const std::shared_ptr<DataOp>& op, bool exclusive,
                              RangeLock::Start start) {
  if (!exclusive) return lock_range_locked(op, false, std::move(start));
  gates_.begin_change_locked(op->counted, [this, op, start = std::move(start)]() mutable {
    lock_range_locked(op, true, [this, op, start = std::move(start)]() mutable {
      gates_.admit_locked(op->admitted, std::move(start));
    });
  });
}

void DataPath::lock_range_locked(const std::shared_ptr<DataOp>& op, bool exclusive,
                                 RangeLock::Start start) {
  inodes_.acquire_locked(op->ino, GrainRange{op->first, op->end, exclusive}, std::move(start),
                         &op->handle);
}

void DataPath::release_locked(const std::shared_ptr<DataOp>& op) {
  if (op->counted) {
    op->counted = false;
    gates_.end_change_locked();
  }
  if (op->admitted) {
    op->admitted = false;
    gates_.unadmit_locked();
  }
  inodes_.release_locked(op->ino, op->handle);
}

void DataPath::wait_for_metadata_locked(const std::shared_ptr<DataOp>& op,
                                        std::function<void()> restart) {
  const uint64_t since = monotonic_ns();
  ms_.fetch_missed_locked([this, op, since, restart = std::move(restart)](Result<void> r) {
    {
      std::lock_guard lock(ms_.mu());
      meta_waits_.add((monotonic_ns() - since) / 1000);
      if (!r.ok() || ++op->meta_fetches >= kMetaFetchesMax) op->meta_sync = true;
      restart();
    }
    run_deferred();
  });
}

// A map entry is followed only to a data grain in use (MetaStore::check_data_grain_locked):
// a damaged but checksum-valid map that points at a metadata grain or into a free block
// answers EUCLEAN, instead of handing out what is there (a read, or the fill of a partial
// write) or overwriting it (a write in place).
Result<void> DataPath::check_mapped_locked(const std::shared_ptr<DataOp>& op,
                                           const std::vector<GrainLookup>& map) {
  for (uint64_t i = 0; i < map.size(); ++i) {
    // Allocated grains too: a write goes to them in place.
    if (!format::holds_grain(map[i].state)) continue;
    if (auto c = ms_.check_data_grain_locked(map[i].grain); !c.ok()) {
      return corruption(fmt::format("disk {}, grain {} of the disk: {}", op->ino,
                                    op->first + i, c.error().message));
    }
  }
  return ok_result();
}

// Gives `op` a data buffer of at least `bytes` from the pool (old contents), returned
// when the op goes.
void DataPath::take_buffer(const std::shared_ptr<DataOp>& op, uint64_t bytes) {
  if (op->pool != nullptr) op->pool->give(std::move(op->buf));
  op->buf = buffers_.take(bytes);
  op->pool = &buffers_;
}

// Answers a request that needs no IO; the callback runs once the mutex is dropped.
void DataPath::finish_now(const std::shared_ptr<DataOp>& op, Result<uint64_t> r) {
  defer([op, r = std::move(r)]() mutable { op->done_len(std::move(r)); });
}

}  // namespace vsfs::disk
