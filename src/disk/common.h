// What every part of the disk layer shares: the attributes of an inode record, the
// error of a failed device IO, the largest disk, the writability check, and the list of
// work deferred until MetaStore's mutex is released.
// Thread-safety: the functions are free of state except the deferred list, which is per
// thread (each thread runs what it queued).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "format/format.h"
#include "meta/meta_store.h"
#include "util/result.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

inline constexpr uint64_t kMaxFileBytes = 64ull << 40;  // 64 TiB

Attr to_attr(const format::InodeRecord& r);

// Data operations need a regular file: EISDIR for a directory, EINVAL for other types.
Result<void> check_regular(uint32_t mode);

// The error of a device IO that completed with `res` < 0.
Error err_from_device(int64_t res, const char* what);

// Copies `length` bytes from `src` into the buffers, one after the other.
void scatter(const uint8_t* src, uint64_t length, const std::vector<iovec>& iov);

// Changes are refused on a read-only datastore and after an IO error stopped it; with an
// inode, also in snapshots and in ".snapshots" directories (EROFS).
Result<void> check_writable(const meta::MetaStore& ms, bool read_only);
Result<void> check_writable(const meta::MetaStore& ms, bool read_only, Ino ino);

// Work that must run without MetaStore's mutex (IO submission, callbacks), queued while
// it is held; run_deferred() runs it, and what it queues in turn, once the mutex is
// released.
void defer(std::function<void()> fn);
void run_deferred();

}  // namespace vsfs::disk
