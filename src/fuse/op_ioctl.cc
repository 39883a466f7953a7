// ioctl: the control requests of include/vsfs/control.h, on the root directory only and
// from root only. A switch to read-only waits for the changes under way and a checkpoint;
// a growth for the zeroing of the added space and a commit.
// Threading: any worker thread (never the IO thread: both wait for writes whose
// completions that thread runs).
#include <algorithm>
#include <cstring>

#include "fuse/ops.h"
#include "util/log.h"
#include "vsfs/control.h"
#include "vsfs/datastore.h"

namespace vsfs::fuse {
namespace {

void set_read_only(fuse_req_t req, const void* in_buf, size_t in_bufsz) {
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
    VSFS_LOG_WARN("remount {}: {}", value == 1 ? "read-only" : "read-write", r.error().message);
    reply_error(req, r.error());
    return;
  }
  VSFS_LOG_INFO("{} by remount", value == 1 ? "read-only" : "read-write");
  fuse_reply_ioctl(req, 0, nullptr, 0);
}

void grow(fuse_req_t req, const void* in_buf, size_t in_bufsz) {
  vsfs_grow_arg arg{};
  if (in_bufsz != sizeof(arg)) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  std::memcpy(&arg, in_buf, sizeof(arg));
  const uint64_t asked = arg.size_bytes;
  arg = vsfs_grow_arg{};
  auto r = fs_of(req).ds().grow(asked, {});
  if (r.ok()) {
    arg.size_bytes = r->new_bytes;
    arg.old_bytes = r->old_bytes;
    arg.table_bytes = r->table_bytes;
    arg.formatted = r->formatted ? 1 : 0;
  } else {
    VSFS_LOG_WARN("grow: {}", r.error().message);
    arg.error = r.error().errno_value != 0 ? r.error().errno_value : EIO;
    const std::string& m = r.error().message;
    std::memcpy(arg.message, m.data(), std::min(m.size(), sizeof(arg.message) - 1));
  }
  fuse_reply_ioctl(req, 0, &arg, sizeof(arg));
}

}  // namespace

void op_ioctl(fuse_req_t req, fuse_ino_t ino, int cmd, void* /*arg*/, fuse_file_info* /*fi*/,
              unsigned /*flags*/, const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  guarded(req, [&] {
    const auto request = static_cast<unsigned>(cmd);
    if (ino != FUSE_ROOT_ID || (request != VSFS_IOC_SET_READ_ONLY && request != VSFS_IOC_GROW)) {
      fuse_reply_err(req, ENOTTY);
      return;
    }
    if (fuse_req_ctx(req)->uid != 0) {
      fuse_reply_err(req, EPERM);
      return;
    }
    if (request == VSFS_IOC_SET_READ_ONLY) {
      set_read_only(req, in_buf, in_bufsz);
    } else if (out_bufsz < sizeof(vsfs_grow_arg)) {
      fuse_reply_err(req, EINVAL);
    } else {
      grow(req, in_buf, in_bufsz);
    }
  });
}

}  // namespace vsfs::fuse
