// Waiting for a vsfs-mount daemon that is still closing a datastore. umount(8) and
// fusermount3 -u return as soon as the kernel has detached the mount; the daemon then
// commits, checkpoints and closes the datastore, holding the device until it exits.
// vsfs-mkfs, vsfs-fsck and vsfs-mount that find the device busy for that reason wait for
// the daemon (bounded, saying so once) instead of failing with "in use"; a device held by
// anything else (a live mount, another program) is refused at once as before.
// Threading: main thread of the program.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "device/open.h"
#include "util/result.h"

namespace vsfs::mount {

// vsfs-mount processes that hold `path` (the same file or device) open while no mount
// has it as its source: daemons closing it.
std::vector<pid_t> closing_daemons(const std::string& path);

// device::open_device, waiting up to `wait` while the device is busy because closing
// daemons hold it; `say` gets one line when the wait begins.
Result<std::unique_ptr<device::Device>> open_after_closing_daemons(
    const std::string& path, const device::UringOptions& options, std::chrono::seconds wait,
    const std::function<void(const std::string&)>& say);

}  // namespace vsfs::mount
