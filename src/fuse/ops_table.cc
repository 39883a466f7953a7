// The fuse_lowlevel_ops table: which handler answers which FUSE operation.
// Operations left out (locks, ...) get ENOSYS from libfuse; the kernel
// then remembers that and answers EOPNOTSUPP itself.
// Thread-safety: the table is built once, on first use, and never changes.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

fuse_lowlevel_ops build_table() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.destroy = op_destroy;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.mknod = op_mknod;
  ops.create = op_create;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.readlink = op_readlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  ops.copy_file_range = op_copy_file_range;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.setxattr = op_setxattr;
  ops.removexattr = op_removexattr;
  ops.ioctl = op_ioctl;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& ops_table() {
  static const fuse_lowlevel_ops table = build_table();
  return table;
}

}  // namespace vsfs::fuse
