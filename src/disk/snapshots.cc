#include "disk/snapshots.h"

#include <sys/stat.h>

#include <algorithm>
#include <memory>

#include "disk/common.h"
#include "util/clock.h"
#include "util/log.h"

namespace vsfs::disk {

namespace {

// A refusal: logged (who, what, why) and answered with `err`.
template <typename... Args>
Error refuse(int err, uint32_t uid, const char* what, const std::string& name, Ino dir,
             fmt::format_string<Args...> why, Args&&... args) {
  const std::string reason = fmt::format(why, std::forward<Args>(args)...);
  VSFS_LOG_WARN("snapshot '{}' of directory inode {}: {} refused for uid {}: {}", name, dir,
                what, uid, reason);
  return Error{err, err == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kState, reason};
}

}  // namespace

Result<void> Snapshots::may_take_locked(Ino dir, const std::string& name, uint32_t uid) {
  if (uid == 0) return ok_result();
  if (dir == kRootIno) {
    return refuse(EPERM, uid, "taking", name, dir, "snapshots of the whole datastore are root's");
  }
  VSFS_ASSIGN_OR_RETURN(const meta::InodeRecord* d, ms_.inode_locked(dir));
  switch (policy_.takers) {
    case SnapshotTakers::kRoot:
      return refuse(EPERM, uid, "taking", name, dir, "only root takes snapshots (takers = root)");
    case SnapshotTakers::kOwner:
      if (d->uid != uid) {
        return refuse(EPERM, uid, "taking", name, dir,
                      "only the directory's owner (uid {}) and root take its snapshots", d->uid);
      }
      break;
    case SnapshotTakers::kWriters:
      break;  // the kernel checked the write permission (.snapshots has the directory's bits)
  }
  uint32_t of_dir = 0, of_user = 0;
  for (const auto& r : ms_.snapshots_locked()) {
    if (r.flags & format::kSnapDeleted) continue;
    of_dir += r.base_ino == dir ? 1 : 0;
    of_user += r.taker_uid == uid ? 1 : 0;
  }
  if (policy_.max_per_directory != 0 && of_dir >= policy_.max_per_directory) {
    return refuse(EDQUOT, uid, "taking", name, dir, "the directory has {} snapshots, the most allowed",
                  of_dir);
  }
  if (policy_.max_per_user != 0 && of_user >= policy_.max_per_user) {
    return refuse(EDQUOT, uid, "taking", name, dir, "uid {} has taken {} snapshots, the most allowed",
                  uid, of_user);
  }
  return ok_result();
}

Result<uint64_t> Snapshots::held_by(uint32_t uid, uint64_t stop_at) {
  std::vector<uint16_t> ids;
  {
    std::lock_guard lock(ms_.mu());
    for (const auto& r : ms_.snapshots_locked()) {
      if (!(r.flags & format::kSnapDeleted) && r.taker_uid == uid) ids.push_back(r.id);
    }
  }
  uint64_t held = 0;
  for (uint16_t id : ids) {
    auto s = space(id);
    if (!s.ok()) {
      if (s.error().errno_value == ENOENT) continue;  // deleted meanwhile
      return s.take_error();
    }
    held += s->exclusive_bytes;
    if (held >= stop_at) break;
  }
  return held;
}

// Cuts a snapshot of `dir`: waits for changes in flight, freezes the tree (O(1)), lets
// the held-back changes go, then commits so the snapshot is durable on return.
Result<Attr> Snapshots::create(Ino dir, const std::string& name, uint32_t uid) {
  if (uid != 0 && policy_.max_held_bytes_per_user != 0) {
    VSFS_ASSIGN_OR_RETURN(uint64_t held, held_by(uid, policy_.max_held_bytes_per_user));
    if (held >= policy_.max_held_bytes_per_user) {
      return refuse(EDQUOT, uid, "taking", name, dir,
                    "the snapshots uid {} took hold {} bytes alone, the most allowed is {}", uid,
                    held, policy_.max_held_bytes_per_user);
    }
  }
  Result<Attr> out = make_error(EIO, ErrorKind::kIo, "unset");
  {
    std::unique_lock lock(ms_.mu());
    VSFS_TRY(check_writable(ms_, read_only_));
    VSFS_TRY(may_take_locked(dir, name, uid));
    gates_.cut_locked(lock, [&] {
      auto rec = ms_.create_snapshot_locked(dir, name, realtime_ns(), uid);
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
Result<void> Snapshots::remove(Ino dir, const std::string& name, uint32_t uid) {
  {
    std::lock_guard lock(ms_.mu());
    VSFS_TRY(check_writable(ms_, read_only_));
    const format::SnapshotRecord* r = ms_.snapshot_by_name_locked(dir, name);
    if (r == nullptr) {
      return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
    }
    if (uid != 0 && dir == kRootIno) {
      return refuse(EPERM, uid, "deleting", name, dir, "snapshots of the whole datastore are root's");
    }
    if (uid != 0 && uid != r->taker_uid) {
      VSFS_ASSIGN_OR_RETURN(const meta::InodeRecord* d, ms_.inode_locked(dir));
      if (d->uid != uid) {
        return refuse(EPERM, uid, "deleting", name, dir,
                      "only its taker (uid {}), the directory's owner (uid {}) and root delete it",
                      r->taker_uid, d->uid);
      }
    }
    const uint16_t id = r->id;
    VSFS_TRY(ms_.delete_snapshot_locked(dir, name, inodes_.view_in_use_locked(id)));
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
                               (r.flags & format::kSnapDeleted) != 0, r.taker_uid});
  }
  return out;
}

Result<SnapshotSpaceInfo> Snapshots::space(uint16_t id) {
  constexpr uint32_t kVisitsPerStep = 256;  // the lock is released between steps
  meta::MetaStore::SpaceWalk walk(id);
  for (;;) {
    bool done;
    {
      std::lock_guard lock(ms_.mu());
      VSFS_ASSIGN_OR_RETURN(done, ms_.space_walk_step_locked(walk, kVisitsPerStep));
    }
    if (done) break;
  }
  SnapshotSpaceInfo s;
  s.exclusive_bytes = walk.exclusive_grains * kGrainBytes;
  s.referenced_bytes = walk.referenced_data_grains * kGrainBytes;
  const uint64_t alone = std::min(walk.exclusive_view_data_grains, walk.referenced_data_grains);
  s.shared_bytes = (walk.referenced_data_grains - alone) * kGrainBytes;
  return s;
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
    else if (auto rs = check_regular(sa->mode); !rs.ok()) check = rs.take_error();
    else if (auto rd = check_regular(da->mode); !rd.ok()) check = rd.take_error();
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
