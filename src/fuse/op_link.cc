// symlink, readlink and link. A symlink keeps its target with the inode (up to 4095
// bytes, as ext4); the kernel resolves it, so lookups through it never reach vsfs as
// such. A hard link gives a file of any type but a directory one more name (for a disk:
// one disk, several names).
// Threading: any worker thread; all three are synchronous and in memory (readlink may
// read one metadata block).
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  guarded(req, [&] {
    reply_entry(req, [&]() -> Result<Attr> {
      VSFS_TRY(check_name(name));
      if (is_vsfs_dir_name(parent, name)) return errno_error(EEXIST, ".vsfs exists");
      if (is_synthetic(parent)) return errno_error(EPERM, ".vsfs is read-only");
      const fuse_ctx* ctx = fuse_req_ctx(req);
      return fs_of(req).ds().symlink(parent, name, target, ctx->uid, ctx->gid);
    }());
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, [&] {
    if (is_synthetic(ino)) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    Result<std::string> target = fs_of(req).ds().readlink(ino);
    if (!target.ok()) {
      reply_error(req, target.error());
      return;
    }
    fuse_reply_readlink(req, target->c_str());
  });
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
