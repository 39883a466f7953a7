// lookup: a name in a directory -> entry. `.vsfs` in the root and everything under it
// are synthetic (fuse_fs.h); names over 255 bytes are ENAMETOOLONG as on a local
// filesystem; a missing name is answered with a negative entry the kernel may cache.
// Threading: any worker thread; the library's lookup is synchronous and in memory.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

Result<Attr> do_lookup(FuseFs& fs, Ino parent, const char* name) {
  VSFS_TRY(check_name(name));
  if (is_vsfs_dir_name(parent, name) || is_synthetic(parent)) {
    return synthetic_lookup(fs, parent, name);
  }
  return fs.ds().lookup(parent, name);
}

}  // namespace

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { reply_entry(req, do_lookup(fs_of(req), parent, name)); });
}

}  // namespace vsfs::fuse
