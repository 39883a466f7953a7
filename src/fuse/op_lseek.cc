// lseek: SEEK_DATA and SEEK_HOLE through Datastore::seek (ENXIO past the last data /
// at or past end of file). The kernel resolves SEEK_SET/CUR/END itself and never sends
// them. The stats file is all data up to its snapshot's end.
// Threading: any worker thread; seek() reads the in-memory grain map.
#include <unistd.h>

#include "fuse/ops.h"
#include "fuse/stats_file.h"

namespace vsfs::fuse {
namespace {

Result<uint64_t> do_lseek(FuseFs& fs, Ino ino, off_t off, int whence, fuse_file_info* fi) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return errno_error(EINVAL, "bad whence");
  if (off < 0) return errno_error(ENXIO, "negative offset");
  auto offset = static_cast<uint64_t>(off);
  if (is_text_file(ino)) {
    uint64_t size = HandleTable<StatsHandle>::get(fi->fh)->json.size();
    if (offset >= size) return errno_error(ENXIO, "past end of file");
    return whence == SEEK_DATA ? offset : size;
  }
  if (is_synthetic(ino)) return errno_error(EINVAL, "not a regular file");
  return fs.ds().seek(ino, offset, whence == SEEK_DATA);
}

}  // namespace

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  guarded(req, [&] {
    Result<uint64_t> r = do_lseek(fs_of(req), ino, off, whence, fi);
    if (!r.ok()) {
      reply_error(req, r.error());
      return;
    }
    fuse_reply_lseek(req, static_cast<off_t>(*r));
  });
}

}  // namespace vsfs::fuse
