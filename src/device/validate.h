// Request validation shared by the device backends (internal to src/device).
//
// A malformed request is the caller's bug, but the device answers it with -EINVAL
// through its callback rather than crashing, so a test can see it.
// Thread-safety: pure functions.
#pragma once

#include <climits>
#include <cstdint>

#include "device/device.h"

namespace vsfs::device::detail {

inline bool is_write_kind(OpKind kind) {
  return kind == OpKind::kWrite || kind == OpKind::kDiscard || kind == OpKind::kWriteZeroes ||
         kind == OpKind::kAllocate;
}

// Returns 0 when `r` is well formed for a device of `size_bytes` with `align` bytes
// alignment, or -EINVAL: an unknown kind, an offset, length or iovec not aligned, an
// iovec sum that differs from length_bytes, or a range past the end of the device.
inline int validate_request(const IoRequest& r, uint64_t size_bytes, uint32_t align) {
  if (r.kind == OpKind::kFlush) return 0;
  if (static_cast<int>(r.kind) >= kOpKinds) return -EINVAL;
  if (r.offset_bytes % align != 0 || r.length_bytes % align != 0) return -EINVAL;
  if (r.offset_bytes > size_bytes || r.length_bytes > size_bytes - r.offset_bytes) {
    return -EINVAL;
  }
  if (r.kind == OpKind::kRead || r.kind == OpKind::kWrite) {
    if (r.iovcnt < 0 || r.iovcnt > IOV_MAX) return -EINVAL;
    if (r.iovcnt > 0 && r.iov == nullptr) return -EINVAL;
    uint64_t sum = 0;
    for (int i = 0; i < r.iovcnt; ++i) {
      auto base = reinterpret_cast<uintptr_t>(r.iov[i].iov_base);
      if (base % align != 0 || r.iov[i].iov_len % align != 0) return -EINVAL;
      sum += r.iov[i].iov_len;
    }
    if (sum != r.length_bytes) return -EINVAL;
  }
  return 0;
}

}  // namespace vsfs::device::detail
