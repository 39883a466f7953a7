// symlink and link. Hard links of regular files are made by Datastore::link (one disk,
// several names). Symbolic links do not exist in vsfs: symlink is refused with EPERM,
// as a local filesystem without them refuses it (vsfs.7, Limits); answered here rather
// than left out of the table, since libfuse would answer ENOSYS, which the kernel
// passes on for symlink(2).
// Threading: any worker thread; link is synchronous and in memory.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_symlink(fuse_req_t req, const char* /*target*/, fuse_ino_t /*parent*/,
                const char* /*name*/) {
  fuse_reply_err(req, EPERM);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  guarded(req, [&] {
    Result<Attr> attr = [&]() -> Result<Attr> {
      VSFS_TRY(check_name(new_name));
      if (is_synthetic(ino) || is_synthetic(new_parent) || is_vsfs_dir_name(new_parent, new_name)) {
        return errno_error(EPERM, ".vsfs is read-only");
      }
      return fs_of(req).ds().link(ino, new_parent, new_name);
    }();
    if (!attr.ok()) {
      reply_error(req, attr.error());
      return;
    }
    fuse_entry_param e = make_entry(fs_of(req), *attr);
    fuse_reply_entry(req, &e);
  });
}

}  // namespace vsfs::fuse
