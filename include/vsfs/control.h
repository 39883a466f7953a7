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
