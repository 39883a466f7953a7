// InodeTable: what the disk layer keeps in memory for each inode in use, and its grain
// queue. An entry holds the disk's RangeLock (requests waiting for grains that other
// requests use: the per-disk resource queue), its open references, where its next new
// grain should go (the allocation hint) and the time of in-place writes not yet in its
// record (lazytime). An entry lives while the inode is open, has requests, or holds such
// a time; an unlinked inode is freed when the last of those ends. Disks whose entry went
// keep their allocation hint in a bounded side table, so that a caller that never opens
// them still fills its storage blocks.
// Thread-safety: every method is called with MetaStore's mutex held.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "disk/range_lock.h"
#include "disk/wait_histogram.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

class InodeTable {
 public:
  explicit InodeTable(meta::MetaStore& ms) : ms_(ms) {}
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  // ---- references ----
  void open_ref_locked(Ino ino) { ++rt_[ino].open_refs; }
  // Drops one open reference; at the last, writes the kept times and frees the inode if
  // it was unlinked and has no request.
  void release_ref_locked(Ino ino);
  // True while the inode is open or has requests: an unlinked inode is freed later.
  bool in_use_locked(Ino ino) const;
  // True while a file of snapshot `view` is open or has requests. When the last of a
  // deleted snapshot's (MetaStore keeps its view readable meanwhile) ends, the hold
  // ends and the releaser frees its tree.
  bool view_in_use_locked(uint16_t view) const;
  // Forgets an inode being freed.
  void forget_locked(Ino ino) { rt_.erase(ino); }
  // While the datastore is read-only (set_read_only) freeing an unlinked inode would
  // change the device: those whose last reference or request ends are held instead,
  // and freed when hold_frees_locked(false) ends the hold (read-write again, or close).
  Result<void> hold_frees_locked(bool hold);

  // ---- times ----
  // The record's attributes with an in-place write's time applied.
  Attr attr_locked(const format::InodeRecord& rec) const;
  // A pure in-place overwrite changed no metadata: its time is kept here.
  void touch_data_locked(Ino ino, uint64_t now_ns) { rt_[ino].pending_mtime_ns = now_ns; }
  // The record was written with the time: nothing kept any more.
  void clear_times_locked(Ino ino) { rt_[ino].pending_mtime_ns = 0; }
  // Writes a kept time into the inode record.
  Result<void> persist_times_locked(Ino ino);
  Result<void> persist_all_times_locked();

  // ---- the grain queue ----
  // Takes `range` of the inode's grains; `start` runs once it is held (now, or from the
  // release that frees it).
  void acquire_locked(Ino ino, const GrainRange& range, RangeLock::Start start,
                      RangeLock::Handle* handle);
  // Releases a held range and starts the requests that now hold theirs. When the inode
  // has no request and is not open, an unlinked one is freed and the entry goes.
  void release_locked(Ino ino, RangeLock::Handle handle);
  // The disk's allocation hint (a block number, 0 when none), carried over from the
  // side table when its entry is new.
  uint64_t& hint_locked(Ino ino);

  void fill_stats_locked(QueueStats& grain_queue) const;

 private:
  struct Entry {
    RangeLock locks;
    uint32_t open_refs = 0;
    uint64_t hint_block = 0;
    uint64_t pending_mtime_ns = 0;  // in-place writes' time, not yet in the record
  };
  void keep_hint_locked(Ino ino, uint64_t hint_block);
  // Frees an unlinked inode whose entry goes, or holds it (hold_frees_locked).
  void free_unlinked_locked(Ino ino);
  // After a reference or request of `ino` ended: a deleted snapshot's view no file
  // uses any more is let go.
  void end_view_hold_locked(Ino ino);

  meta::MetaStore& ms_;
  std::unordered_map<Ino, Entry> rt_;
  bool hold_frees_ = false;
  std::vector<Ino> held_frees_;
  // Allocation hints of disks whose entry went with their last request. Without them
  // each write of a disk that is never opened (a caller of the API that never calls
  // open_ref) would take a new storage block and leave it almost empty. Bounded: beyond
  // kIdleHintsMax disks the oldest entry goes (that disk starts a new block next time).
  // A hint is only a preference: reserve_data_grain_locked checks the block it names.
  static constexpr size_t kIdleHintsMax = 4096;
  std::unordered_map<Ino, uint64_t> idle_hints_;
  std::deque<Ino> idle_hint_order_;  // its keys, oldest first
  WaitHistogram grain_waits_;
};

}  // namespace vsfs::disk
