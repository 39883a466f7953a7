// RbdDevice: a datastore on a Ceph RBD image, through librbd's asynchronous API.
//
// Names have QEMU's form: rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE, then options
// ":KEY=VALUE": id (the client's user, without "client."), conf (the ceph.conf to read;
// librbd's default search otherwise), and any other Ceph option, set as given. A
// backslash escapes the next character (a ':' in a path). librbd's writeback cache is
// always off (rbd_cache=false): with it on, a client the cluster has fenced would still
// see its writes succeed (into the cache) and only its flushes fail.
//
// A writable open takes the image's exclusive lock (rbd_lock_acquire, exclusive mode:
// never handed to a peer that asks). A live owner makes the open fail at once with
// kBusy, naming the owner; a dead or frozen one is broken by librbd after the cluster's
// watch timeout, which blocklists it: from then on the cluster answers every IO of the
// old client with ESHUTDOWN. This device, on its first ESHUTDOWN (or EROFS: the lock is
// gone), logs that it lost the datastore and fails every IO with EIO from then on.
//
// IO: each request is one rbd_aio_* call. librbd signals completions on an eventfd
// (rbd_set_image_notification); the device's completion thread reads it, collects them
// with rbd_poll_io_events and runs the callbacks, so callbacks run on one thread as
// Device requires. Discard is rbd_aio_discard (RBD reads discarded ranges as zeros),
// write-zeroes rbd_aio_write_zeroes, flush rbd_aio_flush. A watched descriptor
// (watch_readable: /dev/fuse) is polled by the same thread beside the eventfd. There are
// no driver commands, so FUSE over io_uring is not offered on RBD.
// Thread-safety: see Device.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "device/device.h"

namespace vsfs::device {

struct RbdName {
  std::string pool;
  std::string name_space;  // empty: the pool's default namespace
  std::string image;
  std::string id;    // empty: librbd's default user (admin)
  std::string conf;  // empty: librbd's default search
  std::map<std::string, std::string> options;  // other KEY=VALUE, in order of keys
};

// True when `name` is meant for this backend (starts with "rbd:").
bool is_rbd_name(std::string_view name);
// Parses an rbd: name. kInvalidArgument saying what is wrong.
Result<RbdName> parse_rbd_name(std::string_view name);

struct RbdOptions {
  uint32_t queue_depth = 128;  // bound on IOs in flight in librbd
  bool exclusive = true;       // take the image's exclusive lock (writable opens)
  bool read_only = false;      // open read-only: no lock, writes fail with EROFS
};

// Connects to the cluster and opens the image. Errors: kNotFound (no such pool or
// image), kBusy (a live client holds the lock; the message names it), kUnsupported (the
// image lacks the exclusive-lock feature), kInvalidArgument (a bad name or option),
// kIo (the cluster cannot be reached, or refused).
Result<std::unique_ptr<Device>> open_rbd_device(const std::string& name,
                                                const RbdOptions& options);

}  // namespace vsfs::device
