// ioctl: the control requests of include/vsfs/control.h, on the root directory only and
// from root only. A switch to read-only waits for the changes under way and a checkpoint.
// Threading: any worker thread (never the IO thread: the switch waits for writes whose
// completions that thread runs).
#include <cstring>

#include "fuse/ops.h"
#include "util/log.h"
#include "vsfs/control.h"

namespace vsfs::fuse {

void op_ioctl(fuse_req_t req, fuse_ino_t ino, int cmd, void* /*arg*/, fuse_file_info* /*fi*/,
              unsigned /*flags*/, const void* in_buf, size_t in_bufsz, size_t /*out_bufsz*/) {
  guarded(req, [&] {
    if (ino != FUSE_ROOT_ID || static_cast<unsigned>(cmd) != VSFS_IOC_SET_READ_ONLY) {
      fuse_reply_err(req, ENOTTY);
      return;
    }
    if (fuse_req_ctx(req)->uid != 0) {
      fuse_reply_err(req, EPERM);
      return;
    }
    uint32_t value = 0;
    if (in_bufsz != sizeof(value)) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    std::memcpy(&value, in_buf, sizeof(value));
    if (value > 1) {
      fuse_reply_err(req, EINVAL);
      return;
    }
    auto r = fs_of(req).ds().set_read_only(value == 1);
    if (!r.ok()) {
      VSFS_LOG_WARN("remount {}: {}", value == 1 ? "read-only" : "read-write",
                    r.error().message);
      reply_error(req, r.error());
      return;
    }
    VSFS_LOG_INFO("{} by remount", value == 1 ? "read-only" : "read-write");
    fuse_reply_ioctl(req, 0, nullptr, 0);
  });
}

}  // namespace vsfs::fuse
