// UringDevice: the production backend. Opens a regular file or block device with
// O_DIRECT and drives it through one io_uring with a completion thread.
//
// Where O_DIRECT is refused (tmpfs), it logs that once and falls back to buffered IO
// with fdatasync for flush. Regular files: discard punches a hole (reads back zeros),
// write-zeroes uses fallocate(ZERO_RANGE). Block devices: BLKDISCARD/BLKZEROOUT ioctls
// issued from the completion path, discard_zeroes() from the queue's sysfs attributes.
// Thread-safety: see Device.
#pragma once

#include <memory>
#include <string>

#include "device/device.h"

namespace vsfs::device {

struct UringOptions {
  uint32_t queue_depth = 128;   // bound on IOs in flight in the ring
  bool exclusive = true;        // O_EXCL on block devices, flock(LOCK_EX|LOCK_NB) on files
  bool read_only = false;
  bool try_direct = true;       // use O_DIRECT when the filesystem allows it
};

// Opens `path`. Fails with kBusy when another process holds it (exclusive), kNotFound
// when it is missing, kInvalidArgument when it is not a regular file or block device.
Result<std::unique_ptr<Device>> open_uring_device(const std::string& path,
                                                  const UringOptions& options);

}  // namespace vsfs::device
