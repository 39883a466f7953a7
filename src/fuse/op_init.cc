// init and destroy: negotiate the connection with the kernel (PERFORMANCE.md).
//
// - max_background (config, default 128) and congestion_threshold = 3/4 of it: the
//   kernel caps async O_DIRECT requests in flight at max_background (12 by default).
// - max_write from the config (requests arrive as <= 1 MiB anyway: max_pages 256).
// - Capabilities are probed, not assumed: each `want` bit is set only when `capable`.
//   Async reads and async direct IO on; parallel directory operations on (the library's
//   namespace calls are thread-safe); readdirplus on. Writeback cache and splice stay
//   off (measured as no gain or a loss). ATOMIC_O_TRUNC off, so the kernel truncates
//   through setattr (one path for all size changes); HANDLE_KILLPRIV off, so the kernel
//   clears suid/sgid itself.
// Threading: init runs once, before any other handler; destroy once, after the last.
#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

void want_if_capable(fuse_conn_info* conn, unsigned cap) {
  if (conn->capable & cap) conn->want |= cap;
}

}  // namespace

void op_init(void* userdata, fuse_conn_info* conn) {
  auto& fs = *static_cast<FuseFs*>(userdata);
  const FsOptions& o = fs.options();
  conn->max_background = o.max_background;
  conn->congestion_threshold = o.max_background * 3 / 4 > 0 ? o.max_background * 3 / 4 : 1;
  conn->max_write = o.max_write_bytes;
  conn->time_gran = 1;  // nanosecond timestamps

  want_if_capable(conn, FUSE_CAP_ASYNC_READ);
  want_if_capable(conn, FUSE_CAP_ASYNC_DIO);
  want_if_capable(conn, FUSE_CAP_PARALLEL_DIROPS);
  want_if_capable(conn, FUSE_CAP_READDIRPLUS);
  want_if_capable(conn, FUSE_CAP_AUTO_INVAL_DATA);
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                  FUSE_CAP_SPLICE_MOVE | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_HANDLE_KILLPRIV |
                  FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
}

void op_destroy(void* /*userdata*/) {
  // Nothing to do: vsfs-mount closes the datastore after the session loop returns.
}

}  // namespace vsfs::fuse
