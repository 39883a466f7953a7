// setattr: chmod, chown, utimens (synchronous, in memory) and truncate/ftruncate (a size
// change goes through the asynchronous Datastore::truncate, which frees grains past the
// new end). The attribute changes are applied first; when the size changes too, the
// reply (the new attributes) is sent from truncate's completion.
// The synthetic `.vsfs` tree is read-only: EPERM, as for a file the caller may not
// change. Timestamps before 1970 cannot be stored: EINVAL.
// Threading: any worker thread; the reply may come from the device completion thread.
#include <ctime>

#include "fuse/ops.h"
#include "util/clock.h"

namespace vsfs::fuse {
namespace {

Result<uint64_t> to_ns(const timespec& ts) {
  if (ts.tv_sec < 0) return errno_error(EINVAL, "timestamp before 1970");
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Applies everything but the size. Returns the attributes after the change.
Result<Attr> apply_attrs(FuseFs& fs, Ino ino, const struct stat& st, int to_set) {
  SetAttr sa;
  bool any = false;
  if (to_set & FUSE_SET_ATTR_MODE) { sa.mode = st.st_mode & 07777; any = true; }
  if (to_set & FUSE_SET_ATTR_UID) { sa.uid = st.st_uid; any = true; }
  if (to_set & FUSE_SET_ATTR_GID) { sa.gid = st.st_gid; any = true; }
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    sa.atime_ns = realtime_ns(); any = true;
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    VSFS_ASSIGN_OR_RETURN(sa.atime_ns, to_ns(st.st_atim)); any = true;
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    sa.mtime_ns = realtime_ns(); any = true;
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    VSFS_ASSIGN_OR_RETURN(sa.mtime_ns, to_ns(st.st_mtim)); any = true;
  }
  if (!any) return fs.ds().getattr(ino);
  return fs.ds().setattr(ino, sa);
}

}  // namespace

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                fuse_file_info* /*fi*/) {
  guarded(req, [&] {
    FuseFs& fs = fs_of(req);
    if (is_synthetic(ino)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    Result<Attr> after = apply_attrs(fs, ino, *attr, to_set);
    if (!after.ok() || !(to_set & FUSE_SET_ATTR_SIZE)) {
      reply_attr(req, after);
      return;
    }
    if (attr->st_size < 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    if ((after->mode & S_IFMT) == S_IFDIR) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    FuseFs* fsp = &fs;
    Done<void> done = [req, fsp, ino](Result<void> r) {
      if (!r.ok()) {
        reply_error(req, r.error());
      } else {
        reply_attr(req, fsp->ds().getattr(ino));
      }
      fsp->requests().end();
    };
    // Nothing allocates from here on: `done` sends the one reply.
    fs.requests().begin();
    fs.ds().truncate(ino, static_cast<uint64_t>(attr->st_size), std::move(done));
  });
}

}  // namespace vsfs::fuse
