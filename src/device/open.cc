#include "device/open.h"

namespace vsfs::device {

Result<std::unique_ptr<Device>> open_device(const std::string& name, const UringOptions& options) {
  if (!is_rbd_name(name)) return open_uring_device(name, options);
  RbdOptions o;
  o.queue_depth = options.queue_depth;
  o.exclusive = options.exclusive;
  o.read_only = options.read_only;
  return open_rbd_device(name, o);
}

}  // namespace vsfs::device
