#include "disk/common.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace vsfs::disk {

Attr to_attr(const format::InodeRecord& r) {
  Attr a;
  a.ino = r.ino;
  a.mode = r.mode;
  a.uid = r.uid;
  a.gid = r.gid;
  a.nlink = r.nlink;
  a.rdev = r.rdev;
  a.size_bytes = r.size_bytes;
  a.allocated_bytes = r.allocated_grains * kGrainBytes;
  a.atime_ns = r.atime_ns;
  a.mtime_ns = r.mtime_ns;
  a.ctime_ns = r.ctime_ns;
  a.btime_ns = r.btime_ns;
  return a;
}

Result<void> check_regular(uint32_t mode) {
  if (S_ISREG(mode)) return ok_result();
  if (S_ISDIR(mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  return make_error(EINVAL, ErrorKind::kInvalidArgument, "not a regular file (type 0{:o})",
                    mode & S_IFMT);
}

Error err_from_device(int64_t res, const char* what) {
  return make_error(static_cast<int>(-res), ErrorKind::kIo, "device {} failed: {}", what,
                    std::strerror(static_cast<int>(-res)));
}

void scatter(const uint8_t* src, uint64_t length, const std::vector<iovec>& iov) {
  for (const iovec& v : iov) {
    if (length == 0) return;
    const uint64_t n = std::min<uint64_t>(length, v.iov_len);
    std::memcpy(v.iov_base, src, n);
    src += n;
    length -= n;
  }
}

Result<void> check_writable(const meta::MetaStore& ms, bool read_only) {
  if (read_only) return make_error(EROFS, ErrorKind::kState, "datastore is read-only");
  if (ms.failed()) return make_error(EIO, ErrorKind::kIo, "datastore stopped after an IO error");
  return ok_result();
}

Result<void> check_writable(const meta::MetaStore& ms, bool read_only, Ino ino) {
  if (view_of(ino) != 0) return make_error(EROFS, ErrorKind::kState, "snapshots are read-only");
  return check_writable(ms, read_only);
}

namespace {
thread_local std::vector<std::function<void()>> deferred;
}  // namespace

void defer(std::function<void()> fn) { deferred.push_back(std::move(fn)); }

void run_deferred() {
  while (!deferred.empty()) {
    auto batch = std::move(deferred);
    deferred.clear();
    for (auto& fn : batch) fn();
  }
}

}  // namespace vsfs::disk
