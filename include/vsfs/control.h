// Control of a mounted datastore: ioctls on the root directory of a vsfs mount (open it
// with O_RDONLY | O_DIRECTORY). Only root may issue them (EPERM otherwise); any other
// request, or one on another inode, gets ENOTTY. vsfs-mount's remount (vsfs-mount(8))
// uses them.
#pragma once

#include <linux/ioctl.h>
#include <stdint.h>

// Turns the datastore read-only (1) or read-write (0). Read-only: every change fails with
// EROFS; the ioctl returns once the changes already under way have ended and the journal
// is checkpointed and flushed (the device no longer changes). EROFS for read-write on a
// datastore mounted read-only (its device is open for reading only).
#define VSFS_IOC_SET_READ_ONLY _IOW(0xbd, 1, uint32_t)

// Grows the datastore onto space its device gained (vsfs-grow(8)). In: size_bytes, the
// new size (0: the device's whole size, read again). Out: the result; the ioctl itself
// succeeds whenever the request was well formed, and `error` says whether the growth
// did (0) or was refused (an errno value, with `message` saying why: a smaller size,
// one larger than the device, a growth too small for its tables, a read-only mount).
struct vsfs_grow_arg {
  uint64_t size_bytes;   // in: the new size; out: the datastore's size now
  uint64_t old_bytes;    // out: its size before
  uint64_t table_bytes;  // out: of the added space, taken by its tables
  int32_t error;         // out: 0 or an errno value
  uint32_t formatted;    // out: 1 when the added space read zeros at once
  char message[224];     // out: NUL-terminated, empty when error is 0
};
#define VSFS_IOC_GROW _IOWR(0xbd, 2, struct vsfs_grow_arg)
