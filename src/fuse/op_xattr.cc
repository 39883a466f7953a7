// getxattr, listxattr, setxattr and removexattr. Every inode of the live tree keeps
// xattrs in the user., trusted. and security. namespaces (Datastore::setxattr has the
// limits); a snapshot keeps them read-only. The kernel checks who may read and write
// which namespace before asking. A snapshot's root directory also carries
// user.vsfs.changeid (the generation it froze, for changed-block queries),
// user.vsfs.created (Unix seconds), user.vsfs.taker (uid) and the space it holds:
// user.vsfs.exclusive_bytes, user.vsfs.shared_bytes and user.vsfs.referenced_bytes
// (Datastore::snapshot_space, a metadata walk done only when one of these is read).
// Threading: any worker thread; the space attributes read metadata.
#include <cstring>

#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

constexpr const char* kSpaceNames[] = {"user.vsfs.exclusive_bytes", "user.vsfs.shared_bytes",
                                       "user.vsfs.referenced_bytes"};

using Xattrs = std::vector<std::pair<std::string, std::string>>;

bool is_snapshot_root(const Xattrs& attrs) {
  for (const auto& kv : attrs) {
    if (kv.first == "user.vsfs.changeid") return true;
  }
  return false;
}

// The value of space attribute `name` of snapshot root `ino`.
Result<std::string> space_value(FuseFs& fs, Ino ino, const std::string& name) {
  VSFS_ASSIGN_OR_RETURN(SnapshotSpaceInfo s, fs.ds().snapshot_space(view_of(ino)));
  if (name == kSpaceNames[0]) return std::to_string(s.exclusive_bytes);
  if (name == kSpaceNames[1]) return std::to_string(s.shared_bytes);
  return std::to_string(s.referenced_bytes);
}

}  // namespace

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
    if (is_snapshot_root(*attrs)) {
      for (const char* space : kSpaceNames) {
        if (std::strcmp(space, name) != 0) continue;
        auto value = space_value(fs_of(req), ino, space);
        if (!value.ok()) {
          reply_error(req, value.error());
          return;
        }
        attrs->emplace_back(space, *value);
      }
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
      if (is_snapshot_root(*attrs)) {
        for (const char* space : kSpaceNames) {
          names += space;
          names.push_back('\0');
        }
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

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                 size_t size, int flags) {
  guarded(req, [&] {
    if (is_synthetic(ino)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    Result<void> r = fs_of(req).ds().setxattr(ino, name, std::string(value, size), flags);
    fuse_reply_err(req, r.ok() ? 0 : (r.error().errno_value > 0 ? r.error().errno_value : EIO));
  });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  guarded(req, [&] {
    if (is_synthetic(ino)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    Result<void> r = fs_of(req).ds().removexattr(ino, name);
    fuse_reply_err(req, r.ok() ? 0 : (r.error().errno_value > 0 ? r.error().errno_value : EIO));
  });
}

}  // namespace vsfs::fuse
