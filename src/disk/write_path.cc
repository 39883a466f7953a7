// DataPath's writes: planning (in place, redirected, restamped, or into an allocated
// grain), the ENOSPC wait for reclaimed space, partial-grain fills, completion; the
// changes built on writes and unmapping: zero_range, punch_hole, truncate; and
// allocate (fallocate mode 0) (data_path.h).
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "disk/data_path.h"
#include "util/clock.h"
#include "util/log.h"

namespace vsfs::disk {

using device::OpKind;
using format::SlotState;
using meta::GrainLookup;

void DataPath::writev(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                      Done<uint64_t> done) {
  auto op = new_op(ino);
  op->done_len = std::move(done);
  uint64_t length = 0;
  for (int i = 0; i < iovcnt; ++i) length += iov[i].iov_len;
  // The payload goes into the grain-aligned buffer before the lock is taken: copying up
  // to 1 MiB must not hold up every other request.
  if (length > 0 && offset < kMaxFileBytes && length <= kMaxFileBytes - offset) {
    const uint64_t first = offset / kGrainBytes;
    take_buffer(op, (div_round_up(offset + length, kGrainBytes) - first) * kGrainBytes);
    uint8_t* p = op->buf.data() + (offset - first * kGrainBytes);
    for (int i = 0; i < iovcnt; ++i) {
      std::memcpy(p, iov[i].iov_base, iov[i].iov_len);
      p += iov[i].iov_len;
    }
  }
  {
    std::lock_guard lock(ms_.mu());
    write_locked(op, offset, length);
  }
  run_deferred();
}

// Whole grains from aligned buffers the caller keeps: no partial grain to merge, so the
// payload goes to the device from where it is (write_data_phase).
void DataPath::writev_stable(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                             Done<uint64_t> done) {
  uint64_t length = 0;
  for (int i = 0; i < iovcnt; ++i) length += iov[i].iov_len;
  if (!grain_direct(offset, length, iov, iovcnt) || offset >= kMaxFileBytes ||
      length > kMaxFileBytes - offset) {
    return writev(ino, offset, iov, iovcnt, std::move(done));
  }
  auto op = new_op(ino);
  op->done_len = std::move(done);
  op->user.assign(iov, iov + iovcnt);
  {
    std::lock_guard lock(ms_.mu());
    write_locked(op, offset, length);
  }
  run_deferred();
}

// `op->buf` (writev) or `op->user` (writev_stable) holds the payload.
void DataPath::write_locked(const std::shared_ptr<DataOp>& op, uint64_t offset,
                            uint64_t length) {
  if (auto w = writable(op->ino); !w.ok()) return finish_now(op, w.take_error());
  auto rec = ms_.inode_locked(op->ino);
  if (!rec.ok()) return finish_now(op, rec.take_error());
  if (auto regular = check_regular((*rec)->mode); !regular.ok()) return finish_now(op, regular.take_error());
  if (offset >= kMaxFileBytes || length > kMaxFileBytes - offset) {
    return finish_now(op, make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk (64 TiB)"));
  }
  if (length == 0) return finish_now(op, uint64_t{0});
  op->offset = offset;
  op->length = length;
  op->first = offset / kGrainBytes;
  op->end = div_round_up(offset + length, kGrainBytes);
  ++counters_.write_requests;
  counters_.write_bytes += length;
  ms_.lifetime_counts_locked().write_bytes += length;
  acquire_locked(op, true, [this, op] { start_write_locked(op); });
}

void DataPath::start_write_locked(const std::shared_ptr<DataOp>& op) {
  const uint64_t n = op->end - op->first;
  const uint64_t gen = ms_.generation_locked();
  op->target.assign(n, 0);
  op->redirected.assign(n, 0);
  op->claimed.assign(n, 0);
  op->fills.clear();
  op->plan.runs.clear();
  const uint64_t head_pad = op->offset - op->first * kGrainBytes;
  const uint64_t tail_end = op->offset + op->length - op->first * kGrainBytes;
  std::vector<GrainLookup> map;
  Result<void> failed = lookup_locked(
      op, [&] { return ms_.map_lookup_range_locked(op->ino, op->first, n, 0, true, map); });
  if (!failed.ok() && failed.error().kind == ErrorKind::kWouldBlock) {
    return wait_for_metadata_locked(op, [this, op] { start_write_locked(op); });
  }
  if (failed.ok()) failed = check_mapped_locked(op, map);
  if (failed.ok()) failed = choose_targets_locked(op, map, gen, nullptr);
  if (!failed.ok() && failed.error().kind == ErrorKind::kNoSpace && !op->retried &&
      ms_.space_reclaimable_locked()) {
    return wait_for_space_locked(op);
  }
  std::vector<uint64_t> restamped;
  if (!failed.ok() && failed.error().kind == ErrorKind::kNoSpace) {
    // No free grain. A grain this disk alone holds needs none, only a new change stamp
    // (redirecting is how a write normally changes the stamp and the map in one
    // transaction): the stamp is committed first, then the grain is written in place.
    // A crash in between lists a grain as changed that did not change, which is safe.
    failed = choose_targets_locked(op, map, gen, &restamped);
    for (uint64_t i : restamped) {
      if (!failed.ok()) break;
      auto alone = ms_.map_restamp_locked(op->ino, op->first + i);
      if (!alone.ok()) {
        failed = alone.take_error();
      } else if (!*alone) {
        // A snapshot still shares it: it needs a new grain after all.
        failed = make_error(ENOSPC, ErrorKind::kNoSpace, "no free grain");
      }
    }
  }
  if (!failed.ok()) return fail_write_locked(op, failed.take_error());
  // Counted, and the partial edge grains prepared: their old contents are read before
  // the write, or they are zeros.
  for (uint64_t i = 0; i < n; ++i) {
    ++(op->redirected[i] ? counters_.redirected_grain_writes : counters_.in_place_grain_writes);
    const GrainLookup* l = &map[i];
    const bool partial = (i == 0 && head_pad != 0) || (i == n - 1 && tail_end < n * kGrainBytes);
    if (partial) {
      if (l->state == SlotState::kMapped) {
        op->fills.emplace_back(i, l->grain);
      } else {
        // Unmapped or zero: the rest of the grain is zeros.
        uint8_t* g = op->buf.data() + i * kGrainBytes;
        if (i == 0) std::memset(g, 0, head_pad);
        if (i == n - 1 && tail_end < n * kGrainBytes) {
          std::memset(op->buf.data() + tail_end, 0, n * kGrainBytes - tail_end);
        }
      }
    }
  }
  counters_.restamped_grain_writes += restamped.size();
  // A grain in a block taken past the allocation window is written once a commit covers
  // the block (MetaStore::beyond_window_locked).
  bool beyond_window = false;
  for (uint64_t i = 0; i < n && !beyond_window; ++i) {
    beyond_window = ms_.beyond_window_locked(op->target[i]);
  }
  if (beyond_window) ++counters_.writes_waiting_for_window;
  if (restamped.empty() && !beyond_window) {
    defer([this, op] { write_fill_phase(op); });
    return;
  }
  // After the commit (the committer's lock comes before the metadata mutex: queue the
  // wait once this one is released).
  const bool window_only = restamped.empty();
  defer([this, op, window_only] { after_commit_write(op, window_only); });
}

// Freed space is waiting for the releaser or a checkpoint: the committer reclaims it
// and starts this write again (a write that fits never fails for that). Once only.
void DataPath::wait_for_space_locked(const std::shared_ptr<DataOp>& op) {
  op->retried = true;
  release_locked(op);
  services_.wait_for_space_locked([this, op](Result<void> r) {
    if (r.ok()) r = writable(op->ino);  // the datastore may have turned read-only since
    if (!r.ok()) {
      defer([op, err = r.take_error()]() mutable { op->done_len(std::move(err)); });
      return;
    }
    acquire_locked(op, true, [this, op] { start_write_locked(op); });
  });
}

// Writes the grains once their new stamps, or the allocation window covering their
// block, are committed. A restamp waits for the committer's next round (without
// background threads, the owner's next commit step); a block past the window asks for
// a commit as an fsync does (without background threads, on this thread at once), so
// that a writer never waits for a step nobody takes.
void DataPath::after_commit_write(const std::shared_ptr<DataOp>& op, bool window_only) {
  Done<void> after = [this, op](Result<void> r) {
    if (r.ok()) return write_fill_phase(op);
    {
      std::lock_guard lock(ms_.mu());
      fail_write_locked(op, Error(r.error()));
    }
    run_deferred();
  };
  if (window_only) return services_.fsync(std::move(after));
  if (services_.after_next_commit(after)) return;
  // No committer (closing): nothing will commit the stamp.
  after(make_error(EIO, ErrorKind::kIo, "the datastore is closing"));
}

// Chooses where each grain of `op` is written: in place when the disk alone holds it and
// its stamp is current; with `restamped`, also when only its stamp is stale (the index is
// added there); else a newly reserved grain. On failure (kNoSpace: no free grain) nothing
// stays reserved.
Result<void> DataPath::choose_targets_locked(const std::shared_ptr<DataOp>& op,
                                             const std::vector<GrainLookup>& map, uint64_t gen,
                                             std::vector<uint64_t>* restamped) {
  unreserve_all_locked(op);
  op->claimed.assign(map.size(), 0);
  uint64_t& hint = inodes_.hint_locked(op->ino);
  for (uint64_t i = 0; i < map.size(); ++i) {
    const GrainLookup& l = map[i];
    if (l.state == SlotState::kAllocated && l.exclusive) {
      // Set aside for this grain and held by no snapshot or clone: written in place,
      // whole (it reads zeros until then, so a partial write is padded with zeros, and
      // what the grain held before is never seen), no new grain needed. Its stamp is
      // set with the slot's change on completion.
      op->target[i] = l.grain;
      op->claimed[i] = 1;
      continue;
    }
    const bool alone = l.state == SlotState::kMapped && l.exclusive;
    if (alone && (l.stamp == gen || restamped != nullptr)) {
      op->target[i] = l.grain;
      if (l.stamp != gen) restamped->push_back(i);
      continue;
    }
    auto g = ms_.reserve_data_grain_locked(hint);
    if (!g.ok()) {
      unreserve_all_locked(op);
      if (restamped != nullptr) restamped->clear();
      return g.take_error();
    }
    op->target[i] = *g;
    op->redirected[i] = 1;
  }
  return ok_result();
}

// Ends a write that never reached the device: its reservations and range go, and it is
// answered with `err` once the mutex is released (run_deferred).
void DataPath::fail_write_locked(const std::shared_ptr<DataOp>& op, Error err) {
  unreserve_all_locked(op);
  release_locked(op);
  defer([op, err = std::move(err)]() mutable { op->done_len(std::move(err)); });
}

void DataPath::unreserve_all_locked(const std::shared_ptr<DataOp>& op) {
  for (size_t i = 0; i < op->redirected.size(); ++i) {
    if (op->redirected[i] && op->target[i] != 0) ms_.unreserve_locked(op->target[i]);
    op->redirected[i] = 0;
  }
}

// Reads the old contents of partial edge grains, then merges and writes.
void DataPath::write_fill_phase(const std::shared_ptr<DataOp>& op) {
  if (op->fills.empty()) return write_data_phase(op);
  auto old = std::make_shared<AlignedBuffer>(op->fills.size() * kGrainBytes, false);
  for (size_t k = 0; k < op->fills.size(); ++k) {
    op->plan.add(OpKind::kRead, op->fills[k].second, old->data() + k * kGrainBytes);
  }
  submit_plan(dev_, op, [this, op, old] {
    op->plan.runs.clear();
    if (op->error != 0) return write_complete(op);
    const uint64_t n = op->end - op->first;
    const uint64_t head_pad = op->offset - op->first * kGrainBytes;
    const uint64_t tail_end = op->offset + op->length - op->first * kGrainBytes;
    for (size_t k = 0; k < op->fills.size(); ++k) {
      const uint64_t i = op->fills[k].first;
      const uint8_t* src = old->data() + k * kGrainBytes;
      uint8_t* dst = op->buf.data() + i * kGrainBytes;
      if (i == 0 && head_pad != 0) std::memcpy(dst, src, head_pad);
      if (i == n - 1 && tail_end < n * kGrainBytes) {
        const uint64_t in_grain = tail_end - i * kGrainBytes;
        std::memcpy(dst + in_grain, src + in_grain, kGrainBytes - in_grain);
      }
    }
    write_data_phase(op);
  });
}

void DataPath::write_data_phase(const std::shared_ptr<DataOp>& op) {
  const uint64_t n = op->end - op->first;
  // The device only reads a write's buffer.
  for_each_grain(*op, n,
                 [&](uint64_t i, uint8_t* g) { op->plan.add(OpKind::kWrite, op->target[i], g); });
  submit_plan(dev_, op, [this, op] { write_complete(op); });
}

void DataPath::write_complete(const std::shared_ptr<DataOp>& op) {
  Result<uint64_t> result = op->length;
  {
    std::lock_guard lock(ms_.mu());
    if (op->error != 0) {
      ++counters_.write_errors;
      ++ms_.lifetime_counts_locked().write_errors;
      if (op->error == -ENOSPC) {
        ++counters_.no_space;
        ++ms_.lifetime_counts_locked().no_space_errors;
      }
      VSFS_LOG_ERROR("writing disk inode {} to the device failed: {}", op->ino,
                     std::strerror(-op->error));
      unreserve_all_locked(op);
      result = err_from_device(op->error, "write");
    } else {
      Result<void> r = ok_result();
      bool mapped_new = false;
      for (uint64_t i = 0; i < op->target.size() && r.ok(); ++i) {
        if (op->redirected[i]) {
          r = ms_.map_install_locked(op->ino, op->first + i, op->target[i]);
          op->redirected[i] = 0;
          mapped_new = true;
        } else if (op->claimed[i]) {
          // The allocated grain now holds its data, written in full: it reads as data
          // from this change on (the same ordering as a new grain's install).
          r = ms_.map_claim_allocated_locked(op->ino, op->first + i, op->target[i]);
          op->claimed[i] = 0;
          mapped_new = true;
        }
      }
      const uint64_t end = op->offset + op->length;
      auto cur = ms_.inode_locked(op->ino);
      const bool grows = cur.ok() && !op->zero_write && end > (*cur)->size_bytes;
      if (r.ok() && !mapped_new && !grows) {
        // A pure in-place overwrite changes no metadata: its times are kept in memory
        // and written with the inode's next change or its last close (lazytime).
        inodes_.touch_data_locked(op->ino, realtime_ns());
      } else if (r.ok()) {
        auto rec = ms_.inode_for_update_locked(op->ino);
        if (rec.ok()) {
          if (grows) (*rec)->size_bytes = end;
          (*rec)->mtime_ns = (*rec)->ctime_ns = realtime_ns();
          inodes_.clear_times_locked(op->ino);
        } else {
          r = rec.take_error();
        }
      }
      if (!r.ok()) {
        unreserve_all_locked(op);
        result = r.take_error();
      }
      services_.wake_if_commit_wanted_locked();
    }
    release_locked(op);
  }
  run_deferred();
  op->done_len(std::move(result));
}

void DataPath::punch_hole(Ino ino, uint64_t offset, uint64_t length, Done<void> done) {
  // Partial grains at the edges are written with zeros; whole grains are unmapped.
  if (view_of(ino) != 0) return done(make_error(EROFS, ErrorKind::kState, "snapshots are read-only"));
  auto rec = ns_.getattr(ino);
  if (!rec.ok()) return done(rec.take_error());
  const uint64_t size = rec->size_bytes;
  if (offset >= size || length == 0) return done(ok_result());
  const uint64_t end = std::min(size, offset + std::min(length, kMaxFileBytes));
  const GrainSplit g = split_at_grains(offset, end);
  auto join = std::make_shared<Join>(g.edges.size() + 1, std::move(done));
  auto part = [join](Result<void> r) { join->part(std::move(r)); };
  for (const auto& [off, len] : g.edges) zero_range(ino, off, len, part);
  if (g.whole_first < g.whole_end) {
    unmap_range(ino, g.whole_first, g.whole_end, std::nullopt, part);
  } else {
    part(ok_result());
  }
}

void DataPath::truncate(Ino ino, uint64_t size, Done<void> done) {
  if (size > kMaxFileBytes) return done(make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk (64 TiB)"));
  if (view_of(ino) != 0) return done(make_error(EROFS, ErrorKind::kState, "snapshots are read-only"));
  auto rec = ns_.getattr(ino);
  if (!rec.ok()) return done(rec.take_error());
  if (auto regular = check_regular(rec->mode); !regular.ok()) return done(regular.take_error());
  const uint64_t old = rec->size_bytes;
  auto finish = [this, ino, size, old, done = std::move(done)](Result<void> r) mutable {
    if (!r.ok()) return done(std::move(r));
    // A truncate that does not grow the file unmaps everything past the new end, up to
    // the largest disk: grains allocated past the old end (fallocate with KEEP_SIZE, or
    // one a crash cut short before it set the size) go too, also when the size stays
    // (as on ext4). Unmapping costs only what is there. Growing keeps what lies past the
    // new end.
    const uint64_t first = div_round_up(size, kGrainBytes);
    const uint64_t end = size <= old ? kMaxFileBytes / kGrainBytes : first;
    unmap_range(ino, first, std::max(first, end), size, std::move(done));
  };
  if (size < old && size % kGrainBytes != 0) {
    // The tail of the last grain must read zeros if the disk grows again.
    const uint64_t grain_end = round_up(size, kGrainBytes);
    zero_range(ino, size, std::min(grain_end, old) - size, std::move(finish));
  } else {
    finish(ok_result());
  }
}

struct DataPath::Allocation {
  Ino ino = 0;
  uint64_t next = 0, end = 0;         // grains still to do: [next, end)
  uint64_t end_bytes = 0;             // the range's end
  bool keep_size = false;
  std::optional<uint64_t> new_size;   // set with the last piece when it grows the file
  bool retried = false;               // this step waited once for reclaimed space
  Done<void> done;
};

// Checks the room for every grain the range needs before it changes anything, then
// allocates piece by piece, each under its grain range and the gates like any change
// (bounded: it fits the room the journal gate admits). The size is extended with the
// last piece, so that a crash part way leaves the size as it was and the grains
// allocated so far past it (truncate and unlink release those).
void DataPath::allocate(Ino ino, uint64_t offset, uint64_t length, bool keep_size,
                        Done<void> done) {
  if (view_of(ino) != 0) return done(make_error(EROFS, ErrorKind::kState, "snapshots are read-only"));
  if (length == 0) return done(ok_result());
  if (offset >= kMaxFileBytes || length > kMaxFileBytes - offset) {
    return done(make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk (64 TiB)"));
  }
  auto a = std::make_shared<Allocation>();
  a->ino = ino;
  a->next = offset / kGrainBytes;
  a->end = div_round_up(offset + length, kGrainBytes);
  a->end_bytes = offset + length;
  a->keep_size = keep_size;
  a->done = std::move(done);
  {
    std::lock_guard lock(ms_.mu());
    allocate_start_locked(a);
  }
  run_deferred();
}

void DataPath::allocate_start_locked(const std::shared_ptr<Allocation>& a) {
  Result<void> r = writable(a->ino);
  if (r.ok()) {
    auto rec = ms_.inode_locked(a->ino);
    if (!rec.ok()) {
      r = rec.take_error();
    } else if (auto regular = check_regular((*rec)->mode); !regular.ok()) {
      r = regular.take_error();
    } else if (!a->keep_size && a->end_bytes > (*rec)->size_bytes) {
      a->new_size = a->end_bytes;
    }
  }
  if (r.ok()) {
    auto held = ms_.map_count_held_locked(a->ino, a->next, a->end - a->next);
    if (!held.ok()) {
      r = held.take_error();
    } else {
      r = ms_.check_room_for_allocation_locked(a->end - a->next - *held);
    }
  }
  if (!r.ok() && r.error().kind == ErrorKind::kNoSpace && !a->retried &&
      ms_.space_reclaimable_locked()) {
    // Space freed by a delete or punch waits for the releaser or a checkpoint: reclaim
    // it, then check again (once).
    a->retried = true;
    services_.wait_for_space_locked([this, a](Result<void> w) {
      if (!w.ok()) {
        defer([a, e = w.take_error()]() mutable { a->done(std::move(e)); });
        return;
      }
      allocate_start_locked(a);
    });
    return;
  }
  if (!r.ok()) {
    defer([a, r]() mutable { a->done(std::move(r)); });
    return;
  }
  a->retried = false;
  allocate_piece_locked(a);
}

void DataPath::allocate_piece_locked(const std::shared_ptr<Allocation>& a) {
  if (auto w = writable(a->ino); !w.ok()) {
    defer([a, e = w.take_error()]() mutable { a->done(std::move(e)); });
    return;
  }
  auto op = new_op(a->ino);
  op->first = a->next;
  op->end = std::min(a->end, (a->next / kAllocatePieceGrains + 1) * kAllocatePieceGrains);
  acquire_locked(op, true, [this, op, a] {
    auto n = ms_.map_allocate_range_locked(op->ino, op->first, op->end - op->first,
                                           inodes_.hint_locked(op->ino));
    if (!n.ok() && n.error().kind == ErrorKind::kNoSpace && !a->retried &&
        ms_.space_reclaimable_locked()) {
      // Freed space waits for the releaser or a checkpoint: reclaim it, then this piece
      // again (once). Grains this piece took stay; it skips them.
      a->retried = true;
      release_locked(op);
      services_.wait_for_space_locked([this, a](Result<void> w) {
        if (!w.ok()) {
          defer([a, e = w.take_error()]() mutable { a->done(std::move(e)); });
          return;
        }
        allocate_piece_locked(a);
      });
      return;
    }
    Result<void> r = n.ok() ? ok_result() : Result<void>(n.take_error());
    const bool last = op->end >= a->end;
    if (r.ok() && (*n > 0 || (last && a->new_size))) {
      auto rec = ms_.inode_for_update_locked(op->ino);
      if (!rec.ok()) {
        r = rec.take_error();
      } else {
        const uint64_t now = realtime_ns();
        (*rec)->ctime_ns = now;
        if (last && a->new_size && *a->new_size > (*rec)->size_bytes) {
          (*rec)->size_bytes = *a->new_size;
          (*rec)->mtime_ns = now;
          inodes_.clear_times_locked(op->ino);
        }
      }
    }
    services_.wake_if_commit_wanted_locked();
    release_locked(op);
    if (!r.ok() || last) {
      defer([a, r]() mutable { a->done(std::move(r)); });
      return;
    }
    a->next = op->end;
    a->retried = false;
    // Queued, not called: run_deferred runs it once this piece's lock is released, so
    // a long range is a loop, not a recursion.
    defer([this, a] {
      std::lock_guard lock(ms_.mu());
      allocate_piece_locked(a);
    });
  });
}

// Writes zeros over [offset, offset+length) of one grain (or a few), never growing the
// file. Grains that already read zeros are left alone.
void DataPath::zero_range(Ino ino, uint64_t offset, uint64_t length, Done<void> done) {
  Result<void> check = ok_result();
  bool any = false;
  {
    std::lock_guard lock(ms_.mu());
    const uint64_t first = offset / kGrainBytes;
    std::vector<GrainLookup> map;
    check = ms_.map_lookup_range_locked(ino, first, div_round_up(offset + length, kGrainBytes) - first,
                                        0, false, map);
    for (const auto& l : map) any = any || l.state == SlotState::kMapped;
  }
  if (!check.ok() || !any) return done(std::move(check));
  auto op = new_op(ino);
  op->zero_write = true;
  op->done_len = [done = std::move(done)](Result<uint64_t> r) {
    done(r.ok() ? ok_result() : Result<void>(r.take_error()));
  };
  op->offset = offset;
  op->length = length;
  op->first = offset / kGrainBytes;
  op->end = div_round_up(offset + length, kGrainBytes);
  take_buffer(op, (op->end - op->first) * kGrainBytes);
  std::memset(op->buf.data(), 0, (op->end - op->first) * kGrainBytes);
  {
    std::lock_guard lock(ms_.mu());
    acquire_locked(op, true, [this, op] { start_write_locked(op); });
  }
  run_deferred();
}

// Unmaps grains [first, end) under the range lock; with new_size, sets the size too.
void DataPath::unmap_range(Ino ino, uint64_t first, uint64_t end,
                           std::optional<uint64_t> new_size, Done<void> done) {
  auto op = new_op(ino);
  op->first = first;
  op->end = std::max(first + 1, end);
  op->unmap_end = std::max(first, end);
  op->new_size = new_size;
  op->done_void = std::move(done);
  {
    std::lock_guard lock(ms_.mu());
    unmap_range_locked(op);
  }
  run_deferred();
}

void DataPath::unmap_range_locked(const std::shared_ptr<DataOp>& op) {
  if (auto w = writable(op->ino); !w.ok()) {
    auto e = w.take_error();
    defer([op, e]() mutable { op->done_void(std::move(e)); });
    return;
  }
  acquire_locked(op, true, [this, op] {
    Result<void> r = ok_result();
    // Not op->end: a growing truncate unmaps nothing, not the grain at the new end (a
    // reservation past the old end may be there).
    if (op->unmap_end > op->first) {
      r = ms_.map_unmap_range_locked(op->ino, op->first, op->unmap_end - op->first);
    }
    if (r.ok()) {
      auto rec = ms_.inode_for_update_locked(op->ino);
      if (rec.ok()) {
        if (op->new_size) (*rec)->size_bytes = *op->new_size;
        (*rec)->mtime_ns = (*rec)->ctime_ns = realtime_ns();
      } else {
        r = rec.take_error();
      }
    }
    services_.wake_if_commit_wanted_locked();
    release_locked(op);
    defer([op, r]() mutable { op->done_void(std::move(r)); });
  });
}

}  // namespace vsfs::disk
