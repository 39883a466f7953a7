#include "disk/change_gates.h"

namespace vsfs::disk {

void ChangeGates::pass_snapshot_gate_locked(bool& counted, Start start, uint64_t since_ns) {
  if (barrier_) {
    if (since_ns == 0) since_ns = monotonic_ns();
    parked_.push_back([this, &counted, since_ns, start = std::move(start)]() mutable {
      pass_snapshot_gate_locked(counted, std::move(start), since_ns);
    });
    return;
  }
  if (since_ns != 0) snapshot_waits_.add((monotonic_ns() - since_ns) / 1000);
  ++changes_active_;
  counted = true;
  start();
}

void ChangeGates::end_change_locked() {
  if (--changes_active_ == 0 && (barrier_ || drain_waiters_ > 0)) barrier_cv_.notify_all();
}

void ChangeGates::pass_journal_gate_locked(bool& admitted, Start start, uint64_t since_ns) {
  if ((changes_admitted_ + 1) * kChangeBlocksMax > ms_.transaction_room_locked()) {
    if (since_ns == 0) since_ns = monotonic_ns();
    journal_parked_.push_back([this, &admitted, since_ns, start = std::move(start)]() mutable {
      pass_journal_gate_locked(admitted, std::move(start), since_ns);
    });
    wake_committer_();
    return;
  }
  if (since_ns != 0) journal_waits_.add((monotonic_ns() - since_ns) / 1000);
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
