#include "mount/leased.h"

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

}  // namespace vsfs::mount
