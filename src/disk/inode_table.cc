#include "disk/inode_table.h"

#include <algorithm>
#include <vector>

#include "disk/common.h"
#include "util/log.h"

namespace vsfs::disk {

void InodeTable::release_ref_locked(Ino ino) {
  auto it = rt_.find(ino);
  if (it == rt_.end() || it->second.open_refs == 0) return;
  if (--it->second.open_refs > 0) return;
  if (auto t = persist_times_locked(ino); !t.ok()) {
    VSFS_LOG_ERROR("inode {}: {}", ino, t.error().to_string());
  }
  auto rec = ms_.inode_locked(ino);
  if (rec.ok() && (*rec)->nlink == 0 && it->second.locks.idle()) {
    rt_.erase(it);
    free_unlinked_locked(ino);
  }
  end_view_hold_locked(ino);
}

void InodeTable::free_unlinked_locked(Ino ino) {
  if (hold_frees_) {
    held_frees_.push_back(ino);
    return;
  }
  auto freed = ms_.free_inode_locked(ino);
  if (!freed.ok()) VSFS_LOG_ERROR("freeing inode {}: {}", ino, freed.error().to_string());
}

Result<void> InodeTable::hold_frees_locked(bool hold) {
  hold_frees_ = hold;
  if (hold) return ok_result();
  auto held = std::move(held_frees_);
  held_frees_.clear();
  for (Ino ino : held) VSFS_TRY(ms_.free_inode_locked(ino));
  return ok_result();
}

bool InodeTable::view_in_use_locked(uint16_t view) const {
  for (const auto& [ino, e] : rt_) {
    if (view_of(ino) == view && (e.open_refs > 0 || !e.locks.idle())) return true;
  }
  return false;
}

void InodeTable::end_view_hold_locked(Ino ino) {
  const uint16_t view = view_of(ino);
  if (view == 0 || !ms_.snapshot_view_held_locked(view) || view_in_use_locked(view)) return;
  ms_.unhold_snapshot_view_locked(view);
}

bool InodeTable::in_use_locked(Ino ino) const {
  auto it = rt_.find(ino);
  return it != rt_.end() && (it->second.open_refs > 0 || !it->second.locks.idle());
}

Attr InodeTable::attr_locked(const format::InodeRecord& rec) const {
  Attr a = to_attr(rec);
  if (auto it = rt_.find(rec.ino); it != rt_.end() && it->second.pending_mtime_ns > a.mtime_ns) {
    a.mtime_ns = a.ctime_ns = it->second.pending_mtime_ns;
  }
  return a;
}

Result<void> InodeTable::persist_times_locked(Ino ino) {
  auto it = rt_.find(ino);
  if (it == rt_.end() || it->second.pending_mtime_ns == 0) return ok_result();
  const uint64_t t = it->second.pending_mtime_ns;
  it->second.pending_mtime_ns = 0;
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_for_update_locked(ino));
  rec->mtime_ns = std::max(rec->mtime_ns, t);
  rec->ctime_ns = std::max(rec->ctime_ns, t);
  return ok_result();
}

Result<void> InodeTable::persist_all_times_locked() {
  std::vector<Ino> inos;
  for (auto& [ino, rt] : rt_) inos.push_back(ino);
  for (Ino ino : inos) VSFS_TRY(persist_times_locked(ino));
  return ok_result();
}

void InodeTable::acquire_locked(Ino ino, const GrainRange& range, RangeLock::Start start,
                                RangeLock::Handle* handle) {
  rt_[ino].locks.acquire(range, std::move(start), handle);
}

void InodeTable::release_locked(Ino ino, RangeLock::Handle handle) {
  auto it = rt_.find(ino);
  VSFS_ASSERT(it != rt_.end());
  auto granted = it->second.locks.release(handle);
  if (!granted.empty()) {
    for (auto& g : granted) {
      grain_waits_.add(g.waited_us);
      g.start();
    }
    // The starts may have changed the table: a request that fails at once releases its
    // range from inside this release (and may remove the entry), one that takes another
    // disk's range adds an entry (and a rehash moves them all). Look again.
    it = rt_.find(ino);
    if (it == rt_.end()) {
      end_view_hold_locked(ino);
      return;
    }
  }
  if (it->second.locks.idle() && it->second.open_refs == 0) {
    auto rec = ms_.inode_locked(ino);
    if (rec.ok() && (*rec)->nlink == 0) {
      rt_.erase(it);
      free_unlinked_locked(ino);
    } else if (it->second.pending_mtime_ns == 0) {
      keep_hint_locked(ino, it->second.hint_block);
      rt_.erase(it);  // keep entries that hold lazily kept times
    }
  }
  end_view_hold_locked(ino);
}

uint64_t& InodeTable::hint_locked(Ino ino) {
  Entry& e = rt_[ino];
  if (e.hint_block == 0) {
    // A disk without an entry since its last request goes on where it stopped.
    if (auto it = idle_hints_.find(ino); it != idle_hints_.end()) e.hint_block = it->second;
  }
  return e.hint_block;
}

void InodeTable::keep_hint_locked(Ino ino, uint64_t hint_block) {
  if (hint_block == 0) return;
  auto [it, added] = idle_hints_.try_emplace(ino, hint_block);
  it->second = hint_block;
  if (!added) return;
  idle_hint_order_.push_back(ino);
  if (idle_hints_.size() > kIdleHintsMax) {
    idle_hints_.erase(idle_hint_order_.front());
    idle_hint_order_.pop_front();
  }
}

void InodeTable::fill_stats_locked(QueueStats& grain_queue) const {
  grain_waits_.fill(grain_queue);
  for (const auto& [ino, rt] : rt_) grain_queue.waiting_now += rt.locks.waiting();
}

}  // namespace vsfs::disk
