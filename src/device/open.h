// Opening a datastore's device by its name, whatever the backend: an rbd: name is an
// image on Ceph RBD (rbd_device.h), anything else a regular file or block device
// driven through io_uring (uring_device.h). The options mean the same on both:
// `exclusive` is the image's exclusive lock on RBD, flock or O_EXCL locally, and
// `try_direct` has no meaning on RBD (librbd has no page cache; its own is always off).
#pragma once

#include <memory>
#include <string>

#include "device/rbd_device.h"
#include "device/uring_device.h"

namespace vsfs::device {

Result<std::unique_ptr<Device>> open_device(const std::string& name, const UringOptions& options);

}  // namespace vsfs::device
