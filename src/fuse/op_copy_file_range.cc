// copy_file_range within the datastore: a clone. Whole grains are shared with the source
// (metadata only), partial edge grains copied; `cp` of a disk is instant and takes no
// space. Offsets that differ within a grain answer EOPNOTSUPP, and the kernel falls back
// to copying the data.
// Threading: the handler returns at once; the reply comes from the clone's completion.
#include "fuse/ops.h"

namespace vsfs::fuse {

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* /*fi_in*/,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* /*fi_out*/, size_t len,
                        int flags) {
  guarded(req, [&] {
    if (flags != 0) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    if (is_synthetic(ino_in) || is_synthetic(ino_out)) {
      fuse_reply_err(req, EOPNOTSUPP);
      return;
    }
    FuseFs& fs = fs_of(req);
    FuseFs* fsp = &fs;
    fs.requests().begin();
    fs.ds().clone_range(ino_in, static_cast<uint64_t>(off_in), ino_out,
                        static_cast<uint64_t>(off_out), len, [req, fsp](Result<uint64_t> r) {
                          if (r.ok()) {
                            fuse_reply_write(req, static_cast<size_t>(*r));
                          } else {
                            reply_error(req, r.error());
                          }
                          fsp->requests().end();
                        });
  });
}

}  // namespace vsfs::fuse
