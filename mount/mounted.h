// What the programs know about mounted datastores: the mount table, the vsfs-mount
// daemons that hold a device, the utab entry that makes umount(8) call umount.vsfs, and
// a remount read-only or read-write of a running daemon.
// Threading: main thread of the program.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "util/result.h"

namespace vsfs::mount {

struct MountEntry {
  std::string source;  // the device (a vsfs mount's fsname)
  std::string target;  // the mount point
  std::string fstype;  // "fuse.vsfs" for vsfs
};

// `path` with symlinks and dots resolved (realpath), or as given when it does not
// exist: how the mount table names sources and mount points.
std::string real_path(const std::string& path);

// The mount whose mount point is `dir` (the last one mounted there), if any.
std::optional<MountEntry> mount_at(const std::string& dir);
// The mount whose source is `path` (the last one mounted from it, any filesystem type).
std::optional<MountEntry> mount_from(const std::string& path);
// Whether a mount in this namespace has `path` as its source.
bool is_mount_source(const std::string& path);

// vsfs-mount processes that hold `path` (the same file or device) open; for an RBD image
// (an rbd: name, which holds no descriptor), those with that name among their arguments.
std::vector<pid_t> daemons_holding(const std::string& path);

// The utab entry (util-linux's record of options the kernel does not keep) that makes
// umount(8) run umount.vsfs for the mount at `target`. Without a writable utab
// (/run/mount, as root) nothing is recorded and umount(8) unmounts without waiting.
// An entry left for `target` by a daemon that was killed is replaced. Errors: none
// reported; the mount works either way.
void record_umount_helper(const std::string& source, const std::string& target);
void forget_umount_helper(const std::string& target);

// Turns the datastore mounted at `dir` read-only or read-write: first the daemon (its
// ioctl returns once the device no longer changes, for read-only), then the kernel's
// flag on the mount, with `kernel_options` (nosuid, noatime, ...; the mount's current
// flags when empty). While files are open for writing the kernel refuses to mark the
// mount read-only (EBUSY); the datastore then refuses every change itself, and `say`
// tells so. Errors: not a vsfs mount, not root, the daemon's refusal.
Result<void> remount(const std::string& dir, bool read_only,
                     const std::vector<std::string>& kernel_options,
                     const std::function<void(const std::string&)>& say);

}  // namespace vsfs::mount
