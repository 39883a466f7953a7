#include "disk/services.h"

#include <chrono>

#include "disk/common.h"
#include "util/log.h"

namespace vsfs::disk {
namespace {
constexpr uint32_t kReleaseBudget = 32;  // nodes released per step
}  // namespace

void Services::start() {
  if (options_.read_only || !options_.start_background) return;
  committer_ = std::thread([this] { committer_loop(); });
  releaser_ = std::thread([this] { releaser_loop(); });
  if (options_.format_rate_mib_s > 0) formatter_ = std::thread([this] { formatter_loop(); });
}

void Services::stop() {
  {
    std::lock_guard l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  if (releaser_.joinable()) releaser_.join();
  if (formatter_.joinable()) formatter_.join();
  answer_late_fsyncs();  // without background threads, restamps may still wait
}

void Services::fsync(Done<void> done) {
  bool queued = false;
  {
    std::lock_guard l(mu_);
    if (!options_.read_only && !stop_) {
      fsync_waiters_.push_back(std::move(done));
      queued = true;
      if (options_.start_background) {
        cv_.notify_all();
        return;
      }
    }
  }
  // Without background threads the caller's thread runs the committer's round.
  if (queued) {
    (void)commit_round(false);  // answers `done`
    return;
  }
  done(ms_.commit());
}

bool Services::after_next_commit(Done<void>& done) {
  {
    // Without background threads, the owner's next commit step answers it (run_step).
    std::lock_guard l(mu_);
    if (stop_) return false;
    fsync_waiters_.push_back(std::move(done));
  }
  cv_.notify_all();
  return true;
}

void Services::wait_for_space_locked(SpaceWaiter waiter) {
  space_waiters_.push_back(std::move(waiter));
  wake();
}

void Services::fail_space_waiters() {
  fail_space_waiters(make_error(ENOSPC, ErrorKind::kNoSpace, "no space left on the datastore"));
}

void Services::fail_space_waiters(const Error& error) {
  {
    std::lock_guard lock(ms_.mu());
    auto waiters = std::move(space_waiters_);
    space_waiters_.clear();
    for (auto& w : waiters) w(Result<void>(Error(error)));
  }
  run_deferred();
}

void Services::pause() {
  std::unique_lock l(mu_);
  paused_ = true;
  cv_.wait(l, [&] { return steps_running_ == 0; });
  formatter_running_ = false;
}

void Services::resume() {
  {
    std::lock_guard l(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

bool Services::begin_step(std::unique_lock<std::mutex>& l) {
  cv_.wait(l, [&] { return stop_ || !paused_; });
  if (stop_) return false;
  ++steps_running_;
  return true;
}

void Services::end_step(std::unique_lock<std::mutex>& l) {
  (void)l;
  if (--steps_running_ == 0 && paused_) cv_.notify_all();
}

Result<bool> Services::run_step(BackgroundStep step) {
  if (options_.start_background || options_.read_only) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "background steps are run by the datastore's own threads");
  }
  const bool changes_device = step == BackgroundStep::kRelease || step == BackgroundStep::kFormat;
  if (changes_device) {
    std::lock_guard l(mu_);
    if (paused_) return false;
  }
  switch (step) {
    case BackgroundStep::kCommit: return commit_round(false);
    case BackgroundStep::kCommitIfWanted: return commit_round(true);
    case BackgroundStep::kRelease: return ms_.release_step(kReleaseBudget);
    case BackgroundStep::kFormat: {
      // Running only while a step runs (the formatter thread clears it when idle).
      auto r = format_one_block();
      formatter_running_ = false;
      return r;
    }
  }
  return false;
}

// One round of the committer: writes that waited for space are retried once space is
// reclaimed, the open transaction is committed, the fsyncs (and restamps) that waited
// for it are answered, and a checkpoint follows when one would free something. With
// only_if_wanted, nothing happens unless someone waits or the transaction is large.
// Returns whether it ran, or the commit's (or checkpoint's) error.
Result<bool> Services::commit_round(bool only_if_wanted) {
  bool waiting;
  {
    std::lock_guard l(mu_);
    waiting = !fsync_waiters_.empty();
  }
  std::vector<SpaceWaiter> retry;
  {
    std::lock_guard m(ms_.mu());
    if (only_if_wanted && !waiting && space_waiters_.empty() && !ms_.wants_commit_locked()) {
      return false;
    }
    retry.swap(space_waiters_);
  }
  if (!retry.empty()) {
    auto reclaimed = ms_.reclaim_space();
    if (!reclaimed.ok()) VSFS_LOG_ERROR("reclaiming space: {}", reclaimed.error().to_string());
    {
      std::lock_guard m(ms_.mu());
      for (auto& w : retry) w(ok_result());
    }
    run_deferred();
  }
  VSFS_TRY(commit_and_answer());
  bool checkpoint;
  {
    std::lock_guard m(ms_.mu());
    checkpoint = ms_.wants_checkpoint_locked();
  }
  if (checkpoint) {
    // Freed blocks become allocatable (and formattable) only after a checkpoint.
    auto c = ms_.checkpoint(false);
    if (!c.ok()) {
      VSFS_LOG_ERROR("checkpoint failed: {}", c.error().to_string());
      return c.take_error();
    }
  }
  return true;
}

void Services::committer_loop() {
  std::unique_lock l(mu_);
  while (!stop_) {
    cv_.wait_for(l, std::chrono::milliseconds(options_.commit_interval_ms), [&] {
      if (stop_ || !fsync_waiters_.empty()) return true;
      std::lock_guard m(ms_.mu());
      return ms_.wants_commit_locked() || !space_waiters_.empty();
    });
    l.unlock();
    (void)commit_round(false);  // a failure is logged, and answered to the waiters
    l.lock();
  }
  l.unlock();
  answer_late_fsyncs();
}

// Commits, answers the fsyncs (and restamps) that waited for this commit, and lets the
// changes held back for room in the transaction go on (after a failed commit too: they
// fail then).
Result<void> Services::commit_and_answer() {
  std::vector<Done<void>> waiters;
  {
    std::lock_guard l(mu_);
    waiters = std::move(fsync_waiters_);
    fsync_waiters_.clear();
  }
  auto r = ms_.commit();
  if (!r.ok()) VSFS_LOG_ERROR("journal commit failed: {}", r.error().to_string());
  for (auto& w : waiters) w(r.ok() ? ok_result() : Result<void>(Error(r.error())));
  {
    std::lock_guard m(ms_.mu());
    gates_.resume_admissions_locked();
  }
  run_deferred();
  return r;
}

// fsyncs (and restamps) queued, or changes held back, when the committer has stopped
// (close): the final commit answers them.
void Services::answer_late_fsyncs() {
  bool waiting;
  {
    std::lock_guard l(mu_);
    waiting = !fsync_waiters_.empty();
  }
  {
    std::lock_guard m(ms_.mu());
    waiting |= gates_.admissions_waiting_locked();
  }
  if (waiting) (void)commit_and_answer();
}

// Moves freed blocks from the to-be-formatted list to the formatted one: a hole punched
// in a file (the space returns to the host filesystem) or a discard where the device
// reads discarded space as zeros, else write-zeroes. At most format_rate_mib_s, and it
// waits (a while) for foreground IO in flight to drain before each block.
void Services::formatter_loop() {
  const auto per_block = std::chrono::microseconds(1000000 / options_.format_rate_mib_s);
  std::unique_lock l(mu_);
  while (begin_step(l)) {
    l.unlock();
    for (int i = 0; i < 25 && dev_.counters().in_flight > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    auto r = format_one_block();
    l.lock();
    end_step(l);
    if (r.ok() && !*r) {
      formatter_running_ = false;
      cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_; });
      continue;
    }
    cv_.wait_for(l, r.ok() ? per_block : std::chrono::microseconds(1000000),
                 [&] { return stop_; });
  }
  formatter_running_ = false;
}

// Formats one block from the to-be-formatted list; false when there is none.
Result<bool> Services::format_one_block() {
  uint64_t block = 0;
  {
    std::lock_guard m(ms_.mu());
    if (!ms_.failed()) block = ms_.take_block_to_format_locked();
  }
  if (block == 0) return false;
  formatter_running_ = true;
  const uint64_t offset = block * kBlockBytes;
  auto r = dev_.discard_zeroes() ? device::discard_sync(dev_, offset, kBlockBytes)
                                 : device::write_zeroes_sync(dev_, offset, kBlockBytes);
  std::lock_guard m(ms_.mu());
  if (r.ok()) r = ms_.block_formatted_locked(block);
  if (!r.ok()) {
    ms_.block_format_failed_locked(block);
    VSFS_LOG_ERROR("formatting storage block {}: {}", block, r.error().to_string());
    return r.take_error();
  }
  return true;
}

void Services::releaser_loop() {
  std::unique_lock l(mu_);
  while (begin_step(l)) {
    l.unlock();
    auto more = ms_.release_step(kReleaseBudget);
    l.lock();
    end_step(l);
    if (!more.ok()) {
      VSFS_LOG_ERROR("background release: {}", more.error().to_string());
      cv_.wait_for(l, std::chrono::seconds(5), [&] { return stop_; });
    } else if (*more) {
      cv_.notify_all();  // let the committer see a growing transaction
      cv_.wait_for(l, std::chrono::milliseconds(1), [&] { return stop_; });
    } else {
      cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_; });
    }
  }
}

}  // namespace vsfs::disk
