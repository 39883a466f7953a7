#include "disk/change_gates.h"

namespace vsfs::disk {

void ChangeGates::begin_change_locked(bool& counted, Start start) {
  if (barrier_) {
    const uint64_t since = monotonic_ns();
    parked_.push_back([this, &counted, since, start = std::move(start)]() mutable {
      snapshot_waits_.add((monotonic_ns() - since) / 1000);
      begin_change_locked(counted, std::move(start));
    });
    return;
  }
  ++changes_active_;
  counted = true;
  start();
}

void ChangeGates::end_change_locked() {
  if (--changes_active_ == 0 && barrier_) barrier_cv_.notify_all();
}

void ChangeGates::admit_locked(bool& admitted, Start start) {
  if ((changes_admitted_ + 1) * kChangeBlocksMax > ms_.transaction_room_locked()) {
    const uint64_t since = monotonic_ns();
    journal_parked_.push_back([this, &admitted, since, start = std::move(start)]() mutable {
      journal_waits_.add((monotonic_ns() - since) / 1000);
      admit_locked(admitted, std::move(start));
    });
    wake_committer_();
    return;
  }
  ++changes_admitted_;
  admitted = true;
  start();
}

void ChangeGates::unadmit_locked() {
  --changes_admitted_;
  resume_admissions_locked();
}

void ChangeGates::resume_admissions_locked() {
  if (journal_parked_.empty()) return;
  auto parked = std::move(journal_parked_);
  journal_parked_.clear();
  for (auto& p : parked) p();
}

void ChangeGates::fill_stats_locked(DatastoreStats& s) const {
  snapshot_waits_.fill(s.snapshot_queue);
  s.snapshot_queue.waiting_now = parked_.size();
  journal_waits_.fill(s.journal_queue);
  s.journal_queue.waiting_now = journal_parked_.size();
}

}  // namespace vsfs::disk
