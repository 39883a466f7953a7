// UringChannel: FUSE over io_uring, the kernel's second way of passing requests to a
// server (Linux 6.14 and later, with the fuse module's `enable_uring` parameter on).
//
// Instead of read(2) and writev(2) on /dev/fuse, the server lends the kernel ring
// entries: a header buffer and a payload buffer each, per CPU queue. A driver command
// (Device::submit_command) on the /dev/fuse descriptor registers an entry and completes
// when the kernel has written a request into it; the reply goes into the same buffers
// and one more command hands it back and waits for the next request. No system call per
// request: the commands ride in the device ring's submissions, and a request wakes the
// device's completion thread like an IO completion does.
//
// The kernel offers the transport in FUSE_INIT's flags; vsfs asks for it in the reply
// (libfuse 3.14 does not know the flag: InitExtensions adds it), and lends the entries
// once that reply is written. Until every CPU's queue has an entry,
// and for FORGET and INTERRUPT always, requests still come through /dev/fuse.
//
// A request from an entry is laid out as if read from /dev/fuse (in header, the
// operation's header, then the payload, contiguous: each entry's payload buffer is
// preceded by a page where the headers are copied), so libfuse's request processing
// and every handler serve both transports alike. The request stays valid until its
// reply: no copy is made, also when it is handed to a worker.
//
// Lifetime: create() before the loop, stop() when it ends. Commands still lent to the
// kernel hold the channel (shared ownership) until they complete or the device's ring
// goes away; after stop() their completions are dropped. reply() keeps working after
// stop() (late replies of requests in flight).
// Thread-safety: reply(), start(), stop() and counters() from any
// thread; the dispatch function runs on the device's completion thread.
#pragma once

#include <linux/fuse.h>
#include <sys/uio.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "device/device.h"

namespace vsfs::fuse {

struct UringChannelOptions {
  uint32_t queues = 1;              // the kernel's: one per possible CPU
  uint32_t depth = 32;              // entries per queue: requests in flight per CPU
  size_t payload_bytes = 1u << 20;  // the largest request or reply payload (max_write)
};

struct UringChannelCounters {
  bool active = false;        // entries were accepted: requests come through the ring
  uint64_t entries = 0;       // entries lent to the kernel now
  uint64_t requests = 0;      // requests received through the ring
};

class UringChannel : public std::enable_shared_from_this<UringChannel> {
 public:
  // Called with a request laid out as read from /dev/fuse; valid until its reply.
  using Dispatch = std::function<void(char* request, size_t size)>;

  // Allocates the entries' buffers (mapped lazily: untouched pages cost no memory).
  // Requires dev.supports_commands(). Errors: kNoSpace when the mapping fails.
  static Result<std::shared_ptr<UringChannel>> create(device::Device& dev, int fuse_fd,
                                                      const UringChannelOptions& options,
                                                      Dispatch dispatch);
  ~UringChannel();
  UringChannel(const UringChannel&) = delete;
  UringChannel& operator=(const UringChannel&) = delete;

  // Lends every entry to the kernel (once the INIT reply that asked for the transport
  // is written).
  void start();
  // Sends the reply (libfuse's iovec: out header, then payload) when its request came
  // through the ring, and returns true; false when it did not.
  bool reply(const iovec* iov, int count);
  // No request is dispatched after this returns. Not from the completion thread.
  void stop();

  UringChannelCounters counters() const;

  // The payload buffer of the ring entry whose request is being dispatched on this
  // thread right now (empty otherwise, and for requests from /dev/fuse): page-aligned,
  // and the entry's until the reply. A READ handled inline may read into it (reply()
  // then copies nothing); a WRITE's payload is already there and stays until the reply.
  static std::span<uint8_t> current_payload();

 private:
  enum class EntryState : uint8_t { kIdle, kWaiting, kServing, kGone };
  struct Entry {
    uint16_t qid = 0;
    uint8_t* mem = nullptr;  // a header page, then the payload buffer
    iovec iov[2]{};          // what the kernel writes: the ring header, the payload
    EntryState state = EntryState::kIdle;
    uint64_t commit_id = 0;  // the request being served
  };

  UringChannel(device::Device& dev, int fuse_fd, const UringChannelOptions& options,
               Dispatch dispatch);
  void submit(uint32_t index, uint32_t op, int retries = 0);
  void on_command_done(uint32_t index, int64_t result);
  // The request now in `e` (in header `in`), laid out as read from /dev/fuse: its start
  // (in.len bytes follow), or null when malformed.
  char* lay_out_request(Entry& e, const fuse_in_header& in);
  void answer_error(uint32_t index, uint64_t unique, int error);

  device::Device& dev_;
  const int fd_;
  const UringChannelOptions options_;
  const size_t entry_bytes_;  // header page + payload
  uint8_t* map_ = nullptr;    // all entries' buffers, one mapping

  mutable std::mutex mu_;
  std::vector<Entry> entries_;                       // guarded by mu_
  std::unordered_map<uint64_t, uint32_t> serving_;   // guarded by mu_: unique -> entry
  Dispatch dispatch_;                                // guarded by mu_; empty after stop()
  bool dispatching_ = false;                         // guarded by mu_
  std::condition_variable dispatch_cv_;              // signals !dispatching_
  bool refused_logged_ = false;                      // guarded by mu_
  uint64_t requests_ = 0;                            // guarded by mu_
};

}  // namespace vsfs::fuse
