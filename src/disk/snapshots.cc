#include "disk/snapshots.h"

#include <sys/stat.h>

#include <algorithm>
#include <memory>

#include "disk/common.h"
#include "util/clock.h"

namespace vsfs::disk {

// Cuts a snapshot of `dir`: waits for changes in flight, freezes the tree (O(1)), lets
// the held-back changes go, then commits so the snapshot is durable on return.
Result<Attr> Snapshots::create(Ino dir, const std::string& name) {
  Result<Attr> out = make_error(EIO, ErrorKind::kIo, "unset");
  {
    std::unique_lock lock(ms_.mu());
    VSFS_TRY(check_writable(ms_, read_only_));
    gates_.cut_locked(lock, [&] {
      auto rec = ms_.create_snapshot_locked(dir, name, realtime_ns());
      if (rec.ok()) {
        out = ns_.getattr_locked(make_ino(rec->id, dir));
      } else {
        out = rec.take_error();
      }
    });
  }
  run_deferred();
  if (!out.ok()) return out;
  VSFS_TRY(ms_.commit());
  return out;
}

// Drops a snapshot's references (released in the background) and commits, so the
// deletion is durable on return; the release itself resumes after a crash.
Result<void> Snapshots::remove(Ino dir, const std::string& name) {
  {
    std::lock_guard lock(ms_.mu());
    VSFS_TRY(check_writable(ms_, read_only_));
    const format::SnapshotRecord* r = ms_.snapshot_by_name_locked(name);
    if (r == nullptr || r->base_ino != dir) {
      return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
    }
    const uint16_t id = r->id;
    VSFS_TRY(ms_.delete_snapshot_locked(name, inodes_.view_in_use_locked(id)));
    cbt_.drop_snapshot_locked(id);
  }
  services_.wake();  // the releaser has work
  return ms_.commit();
}

std::vector<SnapshotInfo> Snapshots::list() {
  std::lock_guard lock(ms_.mu());
  std::vector<SnapshotInfo> out;
  for (const auto& r : ms_.snapshots_locked()) {
    out.push_back(SnapshotInfo{r.name, r.change_id, r.created_ns, r.base_ino, r.id,
                               (r.flags & format::kSnapDeleted) != 0});
  }
  return out;
}

void Snapshots::clone_range(Ino src, uint64_t src_offset, Ino dst, uint64_t dst_offset,
                            uint64_t length, Done<uint64_t> done) {
  Result<void> check = ok_result();
  uint64_t src_size = 0;
  {
    std::lock_guard lock(ms_.mu());
    auto sa = ns_.getattr_locked(src);
    auto da = ns_.getattr_locked(dst);
    if (!sa.ok()) check = sa.take_error();
    else if (!da.ok()) check = da.take_error();
    else if (auto w = check_writable(ms_, read_only_, dst); !w.ok()) check = w.take_error();
    else if (S_ISDIR(sa->mode) || S_ISDIR(da->mode)) check = make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
    else if (src_offset % kGrainBytes != dst_offset % kGrainBytes) {
      check = make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "offsets differ within a grain");
    } else if (base_of(src) == base_of(dst) && view_of(src) == view_of(dst)) {
      check = make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "clone within one file");
    }
    if (check.ok()) src_size = sa->size_bytes;
  }
  if (!check.ok()) return done(check.take_error());
  if (src_offset >= src_size || length == 0) return done(uint64_t{0});
  length = std::min(length, src_size - src_offset);
  if (dst_offset >= kMaxFileBytes || length > kMaxFileBytes - dst_offset) {
    return done(make_error(EFBIG, ErrorKind::kInvalidArgument, "beyond the largest disk"));
  }
  // Whole grains are shared; partial grains at the edges are copied (read + write).
  const GrainSplit g = split_at_grains(dst_offset, dst_offset + length);
  const uint64_t delta = dst_offset - src_offset;  // a multiple of the grain size
  auto join = std::make_shared<Join>(
      g.edges.size() + 1, [length, done = std::move(done)](Result<void> r) {
        done(r.ok() ? Result<uint64_t>(length) : Result<uint64_t>(r.take_error()));
      });
  auto part = [join](Result<void> r) { join->part(std::move(r)); };
  for (const auto& edge : g.edges) {
    const uint64_t off = edge.first, len = edge.second;
    auto buf = std::make_shared<std::vector<uint8_t>>(len);
    const iovec in{buf->data(), len};
    data_.readv(src, off - delta, &in, 1, [this, part, dst, off, len, buf](Result<uint64_t> r) {
      if (!r.ok()) return part(r.take_error());
      std::fill(buf->begin() + static_cast<ptrdiff_t>(*r), buf->end(), 0);
      const iovec out{buf->data(), len};
      data_.writev(dst, off, &out, 1, [part, buf](Result<uint64_t> w) {
        part(w.ok() ? ok_result() : Result<void>(w.take_error()));
      });
    });
  }
  if (g.whole_first >= g.whole_end) return part(ok_result());
  auto op = data_.new_op(dst);  // the destination's range, exclusive
  op->first = g.whole_first;
  op->end = g.whole_end;
  op->done_void = part;
  // The source's range, shared: a write in flight there (which may be landing in place)
  // finishes first, and none starts until the grains are shared; otherwise a write
  // planned in place could land in a grain the clone already shares, and the new file
  // would change after the clone returned.
  auto src_op = data_.new_op(src);
  src_op->first = g.whole_first - delta / kGrainBytes;
  src_op->end = src_op->first + (g.whole_end - g.whole_first);
  const uint64_t end_bytes = dst_offset + length;
  auto share = [this, op, src_op, end_bytes] {
    Result<void> r = ok_result();
    if (src_op->first != op->first) {
      r = make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "clone to another offset");
    } else {
      r = ms_.map_share_range_locked(base_of(src_op->ino), view_of(src_op->ino), op->ino,
                                     op->first, op->end - op->first);
    }
    if (r.ok()) {
      auto rec = ms_.inode_for_update_locked(op->ino);
      if (rec.ok()) {
        (*rec)->size_bytes = std::max((*rec)->size_bytes, end_bytes);
        (*rec)->mtime_ns = (*rec)->ctime_ns = realtime_ns();
      } else {
        r = rec.take_error();
      }
    }
    services_.wake_if_commit_wanted_locked();
    data_.release_locked(src_op);
    data_.release_locked(op);
    defer([op, r]() mutable { op->done_void(std::move(r)); });
  };
  {
    std::lock_guard lock(ms_.mu());
    // Counted as a change before either range is taken, so a snapshot cut never waits
    // for a clone that waits for it; the two ranges in inode order, so that clones in
    // opposite directions never each hold one and wait for the other.
    gates_.begin_change_locked(op->counted, [this, op, src_op, share = std::move(share)]() mutable {
      const bool source_first = src_op->ino < op->ino;
      const auto& a = source_first ? src_op : op;
      const auto& b = source_first ? op : src_op;
      data_.lock_range_locked(a, a == op, [this, b, op, share = std::move(share)]() mutable {
        data_.lock_range_locked(b, b == op, std::move(share));
      });
    });
  }
  run_deferred();
}

}  // namespace vsfs::disk
