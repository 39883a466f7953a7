// Taking a datastore's lease before writing it (meta/lease.h): vsfs-mount read-write,
// vsfs-fsck -y and vsfs-grow on a device that is not mounted. A device that holds no
// vsfs datastore has no lease: it is returned as it is (opening it as a datastore then
// says what is wrong).
// Threading: the program's main thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "device/device.h"
#include "util/result.h"

namespace vsfs::mount {

// The lease time the programs other than vsfs-mount use: the default of vsfs.toml(5).
inline constexpr uint32_t kDefaultLeaseMs = 8000;

// Takes the lease of the datastore on `dev` and returns the device wrapped so that every
// IO fails once the lease is lost (meta::FencedDevice; destroying it releases the lease).
// `say` hears the waits. Errors: kBusy naming a live holder; IO errors.
Result<std::unique_ptr<device::Device>> take_lease(std::unique_ptr<device::Device> dev,
                                                   uint32_t lease_ms,
                                                   const std::function<void(const std::string&)>& say);

// Why the device `name` is in use, for a refusal: for an image on Ceph RBD whose
// exclusive lock another client holds (`busy`, kBusy), the holder its lease names and
// the age of its last heartbeat, read without taking anything; `busy`'s own message
// otherwise.
std::string in_use_text(const std::string& name, const Error& busy);

}  // namespace vsfs::mount
