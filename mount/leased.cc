#include "mount/leased.h"

#include <fmt/format.h>

#include "device/open.h"
#include "meta/lease.h"
#include "vsfs/datastore.h"

namespace vsfs::mount {

Result<std::unique_ptr<device::Device>> take_lease(
    std::unique_ptr<device::Device> dev, uint32_t lease_ms,
    const std::function<void(const std::string&)>& say) {
  VSFS_ASSIGN_OR_RETURN(std::string found, probe_device_contents(*dev));
  if (found.empty()) return dev;
  meta::LeaseOptions o;
  o.lease_ms = lease_ms;
  o.say = say;
  VSFS_ASSIGN_OR_RETURN(auto lease, meta::Lease::acquire(*dev, o));
  return std::unique_ptr<device::Device>(
      std::make_unique<meta::FencedDevice>(std::move(dev), std::move(lease), o));
}

std::string in_use_text(const std::string& name, const Error& busy) {
  if (!device::is_rbd_name(name)) return busy.message;
  device::UringOptions o;
  o.read_only = true;
  o.exclusive = false;
  auto dev = device::open_device(name, o);
  if (!dev.ok()) return busy.message;
  auto record = meta::read_lease(**dev);
  if (!record.ok() || record->state == format::LeaseState::kFree) return busy.message;
  return fmt::format("{}: in use by {}{}", name, meta::lease_holder_text(*record),
                     meta::heartbeat_age(*record));
}

}  // namespace vsfs::mount
