// Services: the datastore's background work, in three kinds of step.
// - The committer: commits the open transaction (group commit) when an fsync or a
//   restamp waits, on the commit interval, and when the transaction grows large; answers
//   the waiters; lets changes held back for room in the transaction go on; retries the
//   writes that waited for freed space to be reclaimed; checkpoints when that frees
//   something.
// - The releaser: frees the trees of deleted disks and snapshots, a bounded step at a
//   time.
// - The formatter: formats freed blocks from the to-be-formatted list, at most
//   format_rate_mib_s, after foreground IO in flight has drained.
// Each runs on its own thread (start), or, when the datastore was opened without
// background threads, when its owner calls run_step (so that a test decides when each
// runs). stop() ends the threads in order and answers what still waits with a last
// commit.
// Threading: any thread may call wake, fsync, after_next_commit and run_step; *_locked
// methods need MetaStore's mutex. Lock order: mu_ before MetaStore's mutex (the
// committer's wait looks at the transaction under both), so fsync and after_next_commit
// are never called with MetaStore's mutex held; wake takes no lock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "device/device.h"
#include "disk/change_gates.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

class Services {
 public:
  // A write waiting for freed space: called with MetaStore's mutex held, with ok once
  // space was reclaimed (it starts again), or with an error at close.
  using SpaceWaiter = std::function<void(Result<void>)>;

  Services(device::Device& dev, meta::MetaStore& ms, ChangeGates& gates,
           const OpenOptions& options)
      : dev_(dev), ms_(ms), gates_(gates), options_(options) {}
  ~Services() { stop(); }
  Services(const Services&) = delete;
  Services& operator=(const Services&) = delete;

  // Starts the threads, unless the datastore is read-only or opened without them.
  void start();
  // Stops the threads (committer, releaser, formatter) and answers fsyncs and changes
  // still waiting with a last commit. Idempotent.
  void stop();

  void wake() { cv_.notify_all(); }
  // Wakes the committer when the open transaction is large enough to commit.
  void wake_if_commit_wanted_locked() {
    if (ms_.wants_commit_locked()) wake();
  }

  // Answers `done` after the next commit: the committer's (or, without threads, the
  // caller's own round); at once with the commit's result when nothing commits later.
  void fsync(Done<void> done);
  // Queues `done` for the next commit; false (and `done` untouched) when the committer
  // has stopped. Does not take MetaStore's mutex.
  bool after_next_commit(Done<void>& done);
  void wait_for_space_locked(SpaceWaiter waiter);
  // Writes still waiting for space when nothing will reclaim it any more fail: with
  // ENOSPC at close, with `error` when the datastore turns read-only.
  void fail_space_waiters();
  void fail_space_waiters(const Error& error);

  // The releaser and the formatter stop taking steps (a remount read-only: the device
  // must not change); pause returns once a step in progress has ended. The committer
  // goes on (it has nothing to commit once no change runs). Without background threads
  // run_step refuses kRelease and kFormat while paused.
  void pause();
  void resume();

  Result<bool> run_step(BackgroundStep step);
  bool formatter_running() const { return formatter_running_.load(); }

 private:
  Result<bool> commit_round(bool only_if_wanted);
  Result<void> commit_and_answer();
  void answer_late_fsyncs();
  Result<bool> format_one_block();
  void committer_loop();
  void formatter_loop();
  void releaser_loop();
  // A background step (release or format) begins unless stopping; it waits while
  // paused. `l` holds mu_. False: stop.
  bool begin_step(std::unique_lock<std::mutex>& l);
  void end_step(std::unique_lock<std::mutex>& l);

  device::Device& dev_;
  meta::MetaStore& ms_;
  ChangeGates& gates_;
  const OpenOptions options_;
  std::mutex mu_;  // guards stop_, paused_, steps_running_ and fsync_waiters_
  std::condition_variable_any cv_;
  bool stop_ = false;
  bool paused_ = false;
  uint32_t steps_running_ = 0;  // release and format steps under way
  std::vector<Done<void>> fsync_waiters_;
  std::vector<SpaceWaiter> space_waiters_;  // guarded by MetaStore's mutex
  std::thread committer_, releaser_, formatter_;
  std::atomic<bool> formatter_running_{false};
};

}  // namespace vsfs::disk
