// InitExtensions: FUSE_INIT flags that libfuse 3.14 does not know. libfuse builds the
// INIT reply from fuse_conn_info, which has no field for them (nor has the installed
// linux/fuse.h):
//   kDirectIoAllowMmap (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6): shared maps of files
//     opened for direct IO (O_DIRECT opens are, op_open.cc); without it the kernel
//     refuses mmap(MAP_SHARED) of them with ENODEV.
//   kOverIoUring (FUSE_OVER_IO_URING, Linux 6.14): the ring transport (UringChannel),
//     wanted only when a ring is set up.
// The device loop shows it the FUSE_INIT request (read from /dev/fuse: INIT never comes
// through a ring) and every reply; the successful reply to that request gets each
// wanted flag the kernel offered.
// Thread-safety: any thread.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <mutex>

namespace vsfs::fuse {

class InitExtensions {
 public:
  static constexpr uint64_t kDirectIoAllowMmap = 1ull << 36;
  static constexpr uint64_t kOverIoUring = 1ull << 41;

  void want(uint64_t flags);
  // The FUSE_INIT request as read from /dev/fuse: what the kernel offers, and its id.
  void on_request(const char* request, size_t size);
  // For every reply (libfuse's iovec): when it is the successful reply to the INIT
  // request, adds the wanted flags the kernel offered and returns them; else 0.
  uint64_t on_reply(iovec* iov, int count);
  // What the last INIT reply was given.
  uint64_t granted() const;

 private:
  mutable std::mutex mu_;
  uint64_t wanted_ = 0;
  uint64_t offered_ = 0;
  uint64_t unique_ = 0;
  bool pending_ = false;  // an INIT request seen, its reply not yet
  uint64_t granted_ = 0;
};

}  // namespace vsfs::fuse
