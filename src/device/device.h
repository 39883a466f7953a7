// Device: the one interface between vsfs and the storage under a datastore.
//
// Every IO is asynchronous: submit() queues requests and returns at once; each
// request's `done` callback runs exactly once, later, on the device's completion thread
// (never inside submit()), with the byte count on success or -errno on failure.
// Submitting a batch enters the kernel once. A device bounds its in-flight IOs
// (queue depth); requests beyond it wait in the device's own FIFO and are issued as
// completions free slots.
//
// Offsets, lengths and buffer addresses must be multiples of alignment_bytes().
// Buffers stay owned by the caller and must live until `done` runs.
// A flush makes durable every write that completed before the flush was submitted.
//
// Thread-safety: submit() may be called from any thread, including from a `done`
// callback. Callbacks of one device run on one thread, one at a time.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <optional>
#include <string>

#include "util/result.h"

namespace vsfs::device {

enum class OpKind : uint8_t {
  kRead = 0,
  kWrite = 1,
  kFlush = 2,
  kDiscard = 3,      // the range may read back as anything unless discard_zeroes()
  kWriteZeroes = 4,  // the range reads back as zeros afterwards
  kAllocate = 5,     // the range gets backing storage where the device may lack it (a
                     // sparse file: ENOSPC when its filesystem is full); contents unchanged
};
inline constexpr int kOpKinds = 6;
const char* op_kind_name(OpKind kind);

using Completion = std::function<void(int64_t result)>;

struct IoRequest {
  OpKind kind = OpKind::kRead;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;   // for read/write: the sum of the iovec lengths
  const iovec* iov = nullptr;  // read/write only; caller-owned until done
  int iovcnt = 0;
  Completion done;
  // Write only: durable once done, as if a flush had followed it alone (FUA: RWF_DSYNC
  // on a file or block device), without flushing what other writes left in a cache.
  bool durable = false;
};

struct DeviceCounters {
  uint64_t ops[kOpKinds] = {};    // completed IOs by kind
  uint64_t bytes[kOpKinds] = {};  // bytes of completed reads/writes/discards/zeroes
  uint64_t errors = 0;
  uint64_t in_flight = 0;         // submitted to the backend, not yet completed
  uint64_t queued = 0;            // waiting for a queue-depth slot
  uint64_t in_flight_peak = 0;

  // Counts one finished IO: an error, or an op of `kind` that moved `result` bytes (a
  // flush moves none).
  void count(OpKind kind, int64_t result) {
    if (result < 0) {
      ++errors;
      return;
    }
    const int k = static_cast<int>(kind);
    ++ops[k];
    if (kind != OpKind::kFlush) bytes[k] += static_cast<uint64_t>(result);
  }
};

// A driver's own command on another descriptor (io_uring's IORING_OP_URING_CMD), issued
// from the device's ring so that its completion runs on the completion thread like an
// IO's. FUSE over io_uring serves requests this way: each command lends the kernel a
// buffer and completes when a request has been written into it.
struct DriverCommand {
  int fd = -1;
  uint32_t op = 0;                  // the driver's command number
  std::array<uint8_t, 80> arg{};    // the command's argument block
  const iovec* iov = nullptr;       // buffers the driver may use; caller-owned until done
  uint32_t iovcnt = 0;
  Completion done;                  // the driver's result, or -errno
};

class Device {
 public:
  virtual ~Device() = default;
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  virtual uint64_t size_bytes() const = 0;
  // For a device that guards writes with the datastore's lease (meta::FencedDevice):
  // false gives the lease up (a datastore turned read-only: reads go on, writes fail with
  // EROFS), true takes it again, which may wait or fail (kBusy: someone else holds it
  // now). Other devices have nothing to do.
  virtual Result<void> set_writer(bool writer) {
    (void)writer;
    return ok_result();
  }
  // Reads the size again (a file, LV or LUN may have grown since open) and returns it;
  // size_bytes() follows a growth, never a shrink. Any thread.
  virtual Result<uint64_t> refresh_size() { return size_bytes(); }
  virtual uint32_t alignment_bytes() const = 0;
  // True when a discarded range reads back as zeros (a hole punched in a file).
  virtual bool discard_zeroes() const = 0;
  virtual void submit(std::span<IoRequest> requests) = 0;
  virtual DeviceCounters counters() const = 0;
  // A short description for logs and stats: backend and path.
  virtual std::string describe() const = 0;
  // For a device whose storage is allocated as it is written (a sparse file): the bytes
  // its backing store can still allocate; nullopt when every byte is backed already.
  virtual std::optional<uint64_t> backing_free_bytes() const { return std::nullopt; }

  void submit_one(IoRequest request) { submit(std::span<IoRequest>(&request, 1)); }

  // True on the thread that runs this device's completions. The blocking helpers then
  // run the IO inline (execute_inline) instead of waiting for a completion that this
  // very thread would have to deliver: a metadata cache miss while handling a
  // completion must not deadlock. execute_inline ignores `done` and returns the result.
  virtual bool in_completion_context() const = 0;
  virtual int64_t execute_inline(const IoRequest& request) = 0;

  // Runs `on_ready` on the completion thread whenever `fd` (non-blocking) may be
  // readable, until unwatch(): a source of requests (the FUSE device) is then served by
  // the thread that submits and completes the IO, with no thread hop and with what one
  // pass gathers entering the kernel in one submission. `on_ready` returns true when it
  // stopped early with more to read (it is called again after the next pass of
  // completions). One watch per device. Returns false when this device cannot watch;
  // the caller then reads the source on its own threads.
  virtual bool watch_readable(int fd, std::function<bool()> on_ready) {
    (void)fd;
    (void)on_ready;
    return false;
  }
  // Ends the watch. On return `on_ready` is not running and will not run again.
  // Not from the completion thread.
  virtual void unwatch() {}

  // True when submit_command() works (an io_uring device with 128-byte entries).
  virtual bool supports_commands() const { return false; }
  // Issues `command` (any thread); its `done` runs once on the completion thread. A
  // command may wait as long as its driver likes, so it neither counts against the
  // queue depth nor holds up the device's destruction: a command still waiting then is
  // cancelled with the ring and its `done` is destroyed without running. Only when
  // supports_commands().
  virtual void submit_command(DriverCommand command) { (void)command; }
};

// Blocking helpers built on submit(): for programs (mkfs, fsck), recovery, metadata
// cache misses and tests. On the completion thread they execute inline.
// One IO (`buf` only for reads and writes), waited for: its raw result, the bytes moved
// or -errno.
int64_t run_io(Device& dev, OpKind kind, uint64_t offset_bytes, void* buf,
               uint64_t length_bytes);
Result<void> read_sync(Device& dev, uint64_t offset_bytes, void* buf, uint64_t length_bytes);
Result<void> write_sync(Device& dev, uint64_t offset_bytes, const void* buf,
                        uint64_t length_bytes);
// A durable write (IoRequest::durable): on stable storage when it returns.
Result<void> write_durable_sync(Device& dev, uint64_t offset_bytes, const void* buf,
                                uint64_t length_bytes);
// Reads on the calling thread without going through the completion thread. For callers
// that hold a lock a completion callback may wait for (metadata cache misses): waiting
// for the completion thread there could deadlock.
Result<void> read_now(Device& dev, uint64_t offset_bytes, void* buf, uint64_t length_bytes);
Result<void> flush_sync(Device& dev);
Result<void> discard_sync(Device& dev, uint64_t offset_bytes, uint64_t length_bytes);
Result<void> write_zeroes_sync(Device& dev, uint64_t offset_bytes, uint64_t length_bytes);
// Zeros [offset, +length) in chunks of 1 GiB: discards when `discard` (a device that reads
// discarded space as zeros), else write-zeroes. `progress` (may be empty) hears the bytes
// done so far after each chunk. For large ranges (mkfs, a growth).
Result<void> zero_range(Device& dev, uint64_t offset_bytes, uint64_t length_bytes, bool discard,
                        const std::function<void(uint64_t done)>& progress);
// kAllocate, run now on the calling thread (execute_inline): for callers that hold a
// lock no completion may need.
Result<void> allocate_now(Device& dev, uint64_t offset_bytes, uint64_t length_bytes);

}  // namespace vsfs::device
