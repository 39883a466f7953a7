// ChangeGates: the two gates a change to a disk passes before it runs, and the resource
// queues in front of them.
// - The snapshot gate: a change in progress is counted from before it takes its grain
//   range until it releases it; while a snapshot is being cut (cut_locked), new changes
//   wait in the snapshot queue, and the cut waits until none is in progress, so that the
//   frozen tree holds every change that returned and none that is half done.
// - The journal gate: a change admitted may still dirty up to kChangeBlocksMax metadata
//   blocks, and all admitted changes together must fit in the open transaction's room
//   (MetaStore::transaction_room_locked, half the journal), so that no transaction
//   outgrows the journal. A change that does not fit waits in the journal queue, holding
//   its grain range so that requests behind it in its disk's queue stay behind it. When
//   there is no room even for one, the transaction is at least a quarter of the journal:
//   the committer is woken (its commit makes room); otherwise a change in progress ends
//   and makes room.
// Thread-safety: every method is called with MetaStore's mutex held; cut_locked waits
// on it. `wake_committer` is called with it held.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "disk/wait_histogram.h"
#include "meta/meta_store.h"
#include "util/clock.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

// Metadata blocks one data change may dirty, at most, for a write of up to 1 MiB: two
// map leaves and the nodes above them copied, reference-count and block-table grains,
// the inode leaf. (A larger change may take more: room is half the journal.)
inline constexpr uint64_t kChangeBlocksMax = 16;

class ChangeGates {
 public:
  using Start = std::function<void()>;
  ChangeGates(meta::MetaStore& ms, std::function<void()> wake_committer)
      : ms_(ms), wake_committer_(std::move(wake_committer)) {}
  ChangeGates(const ChangeGates&) = delete;
  ChangeGates& operator=(const ChangeGates&) = delete;

  // Counts a change in progress (sets `counted`; end_change_locked ends it), then runs
  // `start`, once no snapshot is being cut. `counted` must live until `start` ran.
  void begin_change_locked(bool& counted, Start start) {
    pass_snapshot_gate_locked(counted, std::move(start), 0);
  }
  void end_change_locked();

  // Admits a change against the room in the open transaction (sets `admitted`;
  // unadmit_locked gives the room back), then runs `start`.
  void admit_locked(bool& admitted, Start start) {
    pass_journal_gate_locked(admitted, std::move(start), 0);
  }
  void unadmit_locked();
  // Changes waiting for room try again: a commit made room.
  void resume_admissions_locked();
  bool admissions_waiting_locked() const { return !journal_parked_.empty(); }

  // Holds new changes back, waits until none is in progress, runs `cut`, and lets the
  // held-back changes go (they run on this thread; their deferred work too, once the
  // caller runs it). One cut at a time. `lock` holds MetaStore's mutex.
  template <typename Cut>
  void cut_locked(std::unique_lock<meta::MetaMutex>& lock, Cut&& cut) {
    barrier_cv_.wait(lock, [&] { return !barrier_; });
    barrier_ = true;
    barrier_cv_.wait(lock, [&] { return changes_active_ == 0; });
    cut();
    barrier_ = false;
    barrier_cv_.notify_all();
    auto parked = std::move(parked_);
    parked_.clear();
    for (auto& p : parked) p();
  }

  // Waits until no change is in progress and none is held back by a cut (a remount
  // read-only: changes that passed their writability check before it finish first).
  // Changes waiting for room in the transaction are in progress. `lock` holds
  // MetaStore's mutex.
  void wait_until_no_change_locked(std::unique_lock<meta::MetaMutex>& lock) {
    ++drain_waiters_;
    barrier_cv_.wait(lock, [&] { return changes_active_ == 0 && !barrier_; });
    --drain_waiters_;
  }

  void fill_stats_locked(DatastoreStats& s) const;

 private:
  // `since_ns`: when a parked change first waited (0: it has not), so that it counts as
  // one wait however often it is parked again.
  void pass_snapshot_gate_locked(bool& counted, Start start, uint64_t since_ns);
  void pass_journal_gate_locked(bool& admitted, Start start, uint64_t since_ns);

  meta::MetaStore& ms_;
  std::function<void()> wake_committer_;
  // The snapshot gate.
  bool barrier_ = false;
  uint64_t changes_active_ = 0;
  std::vector<Start> parked_;
  std::condition_variable_any barrier_cv_;
  uint32_t drain_waiters_ = 0;  // in wait_until_no_change_locked
  WaitHistogram snapshot_waits_;
  // The journal gate: changes admitted and not yet ended, and those waiting, in order.
  uint64_t changes_admitted_ = 0;
  std::vector<Start> journal_parked_;
  WaitHistogram journal_waits_;
};

}  // namespace vsfs::disk
