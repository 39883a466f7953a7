// The datastore's lease: one writer, whatever the path to its bytes (vsfs-format(5),
// "Lease"). A delta lease in the manner of sanlock's: the holder's record in grain 1
// carries a nonce per mount and a counter it raises every lease_ms / 4 with a write that
// reaches stable storage.
//
// Taking it: a free lease (released by a clean unmount, or never used) is claimed,
// settled for settle_ms and read back. A held one is watched for its lease time: a
// counter that moves means a live holder, and the taker refuses, naming it. One that
// stays still is stale: the taker writes its own record, renews it while it waits longer
// than the lease time (a holder that was merely frozen has stopped writing by then, see
// below), reads it back and holds the lease. On the holder's own host, a holder whose
// process is gone is stale at once (the same machine, boot and pid namespace).
//
// Self-fencing: the holder may write only while its last successful renewal, counted
// from when it was issued, is younger than three quarters of the lease time. A renewal that fails or
// comes late, or finds another holder's record, ends the lease for good: FencedDevice
// fails every IO with EIO from then on, and says why once. A taker waits at least the
// lease time and a quarter after its claim, so a holder that was frozen (SIGSTOP, a VM
// pause) finds its lease expired when it wakes, before it can write. A write it issued
// before it froze may still land late (an IO stuck in a device queue, or a freeze between
// the check and the system call): a late lease record of the previous holder is written
// over; a late data write cannot be undone, which is why the lease time must exceed the
// device's IO timeout, and why on Ceph RBD the taker also blocklists the old client.
// Clocks are CLOCK_BOOTTIME: time a suspended host spent asleep counts too.
//
// Thread-safety: Lease::valid() from any thread; the rest from the owner's thread; the
// renewals run on a thread of their own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "device/device.h"
#include "format/format.h"
#include "util/result.h"

namespace vsfs::meta {

struct LeaseOptions {
  uint32_t lease_ms = 8000;  // renewed every lease_ms / 4; writes stop past 3/4 of it
  uint32_t settle_ms = 250;  // after claiming a free lease, before reading it back
  // One line when taking the lease makes the caller wait (watching a holder, waiting
  // out a stale one). May be empty.
  std::function<void(const std::string&)> say;
};

// The holder a record names, for messages: "host (pid N)", with "this host" when it is.
std::string lease_holder_text(const format::LeaseRecord& r);

// " (last heartbeat N s ago by its clock)" for a record that says when it was renewed,
// "" otherwise: for messages.
std::string heartbeat_age(const format::LeaseRecord& r);

// The lease as the device holds it now.
Result<format::LeaseRecord> read_lease(device::Device& dev);

// Whether someone holds the lease and renews it: watches a held lease for its lease time
// (at least `lease_ms`) and returns its record when the counter moves, nullopt when it is
// free or stale. For the programs that must not write beside a live holder (vsfs-mkfs -f,
// vsfs-fsck -y). Errors: IO, or a record that does not decode.
Result<std::optional<format::LeaseRecord>> live_lease_holder(
    device::Device& dev, uint32_t lease_ms, const std::function<void(const std::string&)>& say);

class Lease {
 public:
  // Takes the lease on `dev` (which must outlive it), as described above. Errors:
  // kBusy naming a live holder, or one that took it while this one waited; IO errors.
  static Result<std::unique_ptr<Lease>> acquire(device::Device& dev, const LeaseOptions& options);
  ~Lease();  // stops renewing; the record stays held (a crash leaves it so too)
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // Whether this holder may write now. Once false, false for good.
  bool valid() const;
  // Why the lease ended ("" while valid).
  std::string lost_reason() const;
  uint64_t renewals() const { return renewals_.load(); }
  const format::LeaseRecord& record() const { return mine_; }
  // Stops renewing and writes the lease free, so that the next mount need not wait:
  // a clean unmount, once nothing more is written. Nothing is written if the lease was
  // lost.
  Result<void> release();

 private:
  Lease(device::Device& dev, const LeaseOptions& options, const format::LeaseRecord& mine,
        uint64_t previous_nonce, int64_t valid_until_ms);
  void run();
  void fence(const std::string& why);

  device::Device& dev_;
  const LeaseOptions options_;
  format::LeaseRecord mine_;  // the renewal thread's, then release()'s
  // The holder this one took over from (0: none): its record coming back is a late write
  // of an expired holder, written over rather than given up to.
  const uint64_t previous_nonce_;
  std::atomic<int64_t> valid_until_ms_;  // CLOCK_BOOTTIME; 0 once lost
  std::atomic<uint64_t> renewals_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;          // under mu_
  std::string lost_reason_;    // under mu_
  std::thread thread_;
};

// A device that fails every IO with EIO once its lease is no longer valid (self-fencing),
// and releases the lease when it is destroyed (after the datastore above it closed).
// Everything else is forwarded to the device it owns.
// set_writer(false) releases the lease (reads go on, writes fail with EROFS) and
// set_writer(true) takes it again with the same options.
class FencedDevice final : public device::Device {
 public:
  FencedDevice(std::unique_ptr<device::Device> base, std::unique_ptr<Lease> lease,
               const LeaseOptions& options);
  ~FencedDevice() override;

  Result<void> set_writer(bool writer) override;

  uint64_t size_bytes() const override { return base_->size_bytes(); }
  Result<uint64_t> refresh_size() override { return base_->refresh_size(); }
  uint32_t alignment_bytes() const override { return base_->alignment_bytes(); }
  bool discard_zeroes() const override { return base_->discard_zeroes(); }
  void submit(std::span<device::IoRequest> requests) override;
  device::DeviceCounters counters() const override;
  std::string describe() const override { return base_->describe(); }
  std::optional<uint64_t> backing_free_bytes() const override {
    return base_->backing_free_bytes();
  }
  bool in_completion_context() const override { return base_->in_completion_context(); }
  int64_t execute_inline(const device::IoRequest& r) override;
  bool watch_readable(int fd, std::function<bool()> on_ready) override {
    return base_->watch_readable(fd, std::move(on_ready));
  }
  void unwatch() override { base_->unwatch(); }
  bool supports_commands() const override { return base_->supports_commands(); }
  void submit_command(device::DriverCommand command) override {
    base_->submit_command(std::move(command));
  }

  // 0, or the error every request of `kind` gets now (logs a loss once).
  int refusal(device::OpKind kind);

 private:
  std::unique_ptr<device::Device> base_;
  const LeaseOptions options_;
  // The lease held now, null while released (set_writer(false)); read on every IO
  // without a lock. Every lease taken stays in leases_ until the device goes, so that a
  // request checking an older one never reads freed memory.
  std::atomic<Lease*> lease_{nullptr};
  std::mutex leases_mu_;  // set_writer and the destructor
  std::vector<std::unique_ptr<Lease>> leases_;
  std::atomic<bool> told_{false};
  std::atomic<uint64_t> fenced_{0};  // IOs failed for want of the lease
};

}  // namespace vsfs::meta
