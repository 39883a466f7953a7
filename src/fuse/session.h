// The FUSE session of vsfs-mount and its RAII owners.
//
// Session owns the fuse_session (fuse_session_new / fuse_session_destroy), MountPoint
// owns the kernel mount (fuse_session_mount / fuse_session_unmount), SignalHandlers the
// SIGINT/SIGTERM/SIGHUP handlers that end the loop. Destroy them in reverse order of
// creation: signal handlers, mount, session (declare them in that order, reversed).
// run_device_loop() serves requests until the file system is unmounted (fusermount3 -u,
// umount) or a signal arrives.
// libfuse's own messages are captured (last_fuse_message) so that a refusal is one line.
// Thread-safety: create, run and destroy from the main thread; FuseFs is shared with the
// worker threads the loop starts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "util/result.h"

struct fuse_session;

namespace vsfs::device {
class Device;
}

namespace vsfs::fuse {

class FuseFs;

struct SessionOptions {
  std::string fsname;                     // shown by mount(8) and df: the device path
  std::vector<std::string> fuse_options;  // -o options for libfuse (allow_other, ...)
  bool read_only = false;
};

struct LoopOptions {
  uint32_t threads = 4;      // workers for the requests the IO thread does not take
  bool io_uring = true;      // FUSE over io_uring when the kernel offers it
  uint32_t uring_depth = 32; // its entries per CPU queue, at most
  // Bound on the entries' payload buffers together (max_write each): fewer entries per
  // queue when it is smaller than CPUs x uring_depth x max_write; below one entry per
  // queue, requests stay on /dev/fuse.
  uint64_t uring_buffer_bytes = 64ull << 20;
};

class Session {
 public:
  // Errors: kInvalidArgument naming the option libfuse refused.
  static Result<std::unique_ptr<Session>> create(FuseFs& fs, const SessionOptions& options);
  // Checks the options by creating and destroying a session that is never mounted, so
  // a bad option is refused before the datastore is opened (and changed).
  static Result<void> validate(const SessionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  fuse_session* get() const { return se_; }

 private:
  explicit Session(fuse_session* se) : se_(se) {}
  fuse_session* se_;
};

class MountPoint {
 public:
  // `dir` should be absolute. Errors: kIo with libfuse's reason.
  static Result<std::unique_ptr<MountPoint>> create(Session& session, const std::string& dir);
  ~MountPoint();  // fuse_session_unmount
  MountPoint(const MountPoint&) = delete;
  MountPoint& operator=(const MountPoint&) = delete;

 private:
  explicit MountPoint(Session& session) : session_(session) {}
  Session& session_;
};

class SignalHandlers {
 public:
  static Result<std::unique_ptr<SignalHandlers>> create(Session& session);
  ~SignalHandlers();
  SignalHandlers(const SignalHandlers&) = delete;
  SignalHandlers& operator=(const SignalHandlers&) = delete;

 private:
  explicit SignalHandlers(Session& session) : session_(session) {}
  Session& session_;
};

// Serves until unmount or signal with `dev`'s completion thread reading /dev/fuse
// (Device::watch_readable): reads and writes of disks are handled on that thread, from
// request to IO to reply with no thread hop, and what one pass reads is submitted at
// once; every other request goes to one of `options.threads` workers. With
// `options.io_uring`, a kernel that offers FUSE over io_uring and a device that takes
// driver commands, requests come through ring entries (uring_channel.h) instead.
// Replies of requests still in flight when it returns may come later: `fs` keeps what
// they need. Returns the error when the loop failed. Errors: kUnsupported when `dev`
// cannot watch a descriptor.
Result<void> run_device_loop(Session& session, FuseFs& fs, device::Device& dev,
                             const LoopOptions& options);

// Installs the libfuse log function that keeps the last message (and logs it).
void capture_fuse_messages();
std::string last_fuse_message();

}  // namespace vsfs::fuse
