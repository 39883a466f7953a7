// SimDevice: an in-memory device for tests that models a disk with a volatile write
// cache, so tests can cut the power at any IO and check what survives.
//
// Writes land in memory at completion and are "volatile" until a flush submitted after
// their completion completes. power_loss() returns the image a real disk could hold
// after a power cut: durable data, plus each volatile write either dropped, applied, or
// torn (a random subset of its 512-byte sectors applied), chosen by a seed. A durable
// write (IoRequest::durable) is durable at completion, and an older volatile write of the
// same bytes can no longer bring their old contents back.
// A backing limit models a sparse file on a filesystem that fills up (SimOptions).
// Faults: fail the Nth IO of a kind (once or from then on), "die" at the Nth IO overall
// (that IO and every later one fails with EIO and changes nothing: the power is off),
// add latency, and deliver completions in a random order. It checks alignment and that
// no two in-flight writes overlap (an assertion: that is a bug in the caller).
// Memory is sparse (4 KiB pages allocated on first write), so large sizes are cheap.
// Thread-safety: see Device; the fault and image methods may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "device/device.h"

namespace vsfs::device {

struct SimOptions {
  uint64_t size_bytes = 256ull << 20;
  uint32_t alignment_bytes = 4096;
  bool discard_zeroes = true;
  uint64_t seed = 1;                // drives reordering and latency choices
  bool reorder_completions = false; // complete in-flight IOs in random order
  uint32_t max_latency_us = 0;      // random completion delay in [0, max]
  uint32_t queue_depth = 64;
  // No completion thread: IOs complete only inside run_pending(), on the thread that
  // calls it, and every synchronous IO (in_completion_context() is then always true)
  // runs inline. With one thread driving the datastore, the IO sequence is a function
  // of the seed alone, reordering included.
  bool manual_completions = false;
  // Models a sparse file on a filesystem with this much room (0: unlimited): a write or
  // allocate that needs more 4 KiB pages than are left fails with ENOSPC and changes
  // nothing; a discard gives its pages back. The backing survives power_loss and clone.
  uint64_t backing_bytes = 0;
};

// The IO at which the power went off (die_at_io).
struct DeadIo {
  OpKind kind = OpKind::kRead;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
};

enum class PowerLossMode { kDropAll, kKeepAll, kRandom };

class SimDevice final : public Device {
 public:
  explicit SimDevice(const SimOptions& options);
  ~SimDevice() override;

  std::optional<uint64_t> backing_free_bytes() const override;
  uint64_t size_bytes() const override;
  uint32_t alignment_bytes() const override;
  bool discard_zeroes() const override;
  void submit(std::span<IoRequest> requests) override;
  DeviceCounters counters() const override;
  std::string describe() const override;
  bool in_completion_context() const override;
  int64_t execute_inline(const IoRequest& request) override;

  // Fail the nth (1-based, counted from now) IO of `kind` with -EIO; when `persistent`,
  // that one and every later IO of the kind fail.
  void fail_nth(OpKind kind, uint64_t nth, bool persistent = false);
  // The power goes off at the nth IO (1-based, any kind, counted from now): that IO and
  // all later ones fail with -EIO without changing the medium.
  void die_at_io(uint64_t nth);
  bool dead() const;
  // The IO that met the power cut, once the device is dead.
  std::optional<DeadIo> dead_io() const;
  // Manual completions: completes queued IOs (in issue order, or in a seeded random
  // order when reordering) and runs their callbacks here, including IOs those callbacks
  // submit, until none is left. Returns how many completed.
  uint64_t run_pending();
  // IOs submitted so far (all kinds), and a digest of their kinds, offsets and lengths
  // in submission order (two runs that issue the same IOs have the same digest).
  uint64_t io_count() const;
  uint64_t io_digest() const;

  // Waits for every in-flight IO to complete, then builds a new device holding what
  // survives a power cut now. The new device is healthy and has no volatile writes.
  std::unique_ptr<SimDevice> power_loss(PowerLossMode mode, uint64_t seed) const;
  // A healthy copy holding exactly the current contents (volatile writes included).
  std::unique_ptr<SimDevice> clone() const;

  // Direct access to the current contents, bypassing IO accounting (for tests that
  // poke bytes or compare images).
  void peek(uint64_t offset_bytes, void* buf, uint64_t length_bytes) const;
  void poke(uint64_t offset_bytes, const void* buf, uint64_t length_bytes);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsfs::device
