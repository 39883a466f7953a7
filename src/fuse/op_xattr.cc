// getxattr and listxattr: a snapshot's root directory carries user.vsfs.changeid (the
// generation it froze, for changed-block queries) and user.vsfs.created (Unix seconds).
// Nothing else has extended attributes; setxattr and removexattr are not supported.
// Threading: any worker thread; in memory.
#include <cstring>

#include "fuse/ops.h"

namespace vsfs::fuse {

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, [&] {
    if (is_synthetic(ino)) {
      fuse_reply_err(req, ENODATA);
      return;
    }
    auto attrs = fs_of(req).ds().xattrs(ino);
    if (!attrs.ok()) {
      reply_error(req, attrs.error());
      return;
    }
    for (const auto& [key, value] : *attrs) {
      if (key != name) continue;
      if (size == 0) {
        fuse_reply_xattr(req, value.size());
      } else if (size < value.size()) {
        fuse_reply_err(req, ERANGE);
      } else {
        fuse_reply_buf(req, value.data(), value.size());
      }
      return;
    }
    fuse_reply_err(req, ENODATA);
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, [&] {
    std::string names;
    if (!is_synthetic(ino)) {
      auto attrs = fs_of(req).ds().xattrs(ino);
      if (!attrs.ok()) {
        reply_error(req, attrs.error());
        return;
      }
      for (const auto& kv : *attrs) {
        names += kv.first;
        names.push_back('\0');
      }
    }
    if (size == 0) {
      fuse_reply_xattr(req, names.size());
    } else if (size < names.size()) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, names.data(), names.size());
    }
  });
}

}  // namespace vsfs::fuse
