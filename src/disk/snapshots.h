// Snapshots: the operations that share grains instead of copying them. Creating a
// snapshot of a directory cuts it: new changes are held back at the snapshot gate
// (ChangeGates::cut_locked), the changes in progress end, the tree is frozen in O(1),
// the held-back changes go on, and a commit makes the snapshot durable before mkdir
// returns. Deleting one drops its references (the releaser frees its tree in the
// background, resumable after a crash) and its .cbt nodes, and commits. clone_range
// shares the whole grains of a range between two disks (copy_file_range) and copies the
// partial grains at its edges.
// The snapshot policy (SnapshotPolicy, vsfs(7)) is applied here: who may take and
// delete a snapshot, and the limits on users other than root. Every refusal is logged.
// Threading: callers on any thread; each call takes MetaStore's mutex itself and never
// holds it across a commit or between the steps of a space walk.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "disk/cbt_view.h"
#include "disk/change_gates.h"
#include "disk/data_path.h"
#include "disk/inode_table.h"
#include "disk/namespace_ops.h"
#include "disk/services.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

class Snapshots {
 public:
  Snapshots(meta::MetaStore& ms, InodeTable& inodes, ChangeGates& gates, NamespaceOps& ns,
            CbtView& cbt, Services& services, DataPath& data,
            const std::atomic<bool>& read_only, const SnapshotPolicy& policy)
      : ms_(ms), inodes_(inodes), gates_(gates), ns_(ns), cbt_(cbt), services_(services),
        data_(data), read_only_(read_only), policy_(policy) {}
  Snapshots(const Snapshots&) = delete;
  Snapshots& operator=(const Snapshots&) = delete;

  // mkdir and rmdir in DIR/.snapshots. A snapshot removed while its files are open
  // leaves the namespace at once; its tree stays readable through them and is released
  // after the last closes (InodeTable ends the hold).
  // `uid` is the caller: the taker, or who deletes.
  Result<Attr> create(Ino dir, const std::string& name, uint32_t uid);
  Result<void> remove(Ino dir, const std::string& name, uint32_t uid);
  std::vector<SnapshotInfo> list();
  Result<SnapshotSpaceInfo> space(uint16_t id);
  void clone_range(Ino src, uint64_t src_offset, Ino dst, uint64_t dst_offset,
                   uint64_t length, Done<uint64_t> done);

 private:
  meta::MetaStore& ms_;
  InodeTable& inodes_;
  ChangeGates& gates_;
  NamespaceOps& ns_;
  CbtView& cbt_;
  Services& services_;
  DataPath& data_;
  // The policy's checks on `uid` taking a snapshot of `dir` (mutex held).
  Result<void> may_take_locked(Ino dir, const std::string& name, uint32_t uid);
  // Bytes the live snapshots `uid` took hold alone, counted until the sum reaches
  // `stop_at` (takes the mutex per step).
  Result<uint64_t> held_by(uint32_t uid, uint64_t stop_at);

  const std::atomic<bool>& read_only_;  // DatastoreImpl's: set by set_read_only
  const SnapshotPolicy policy_;
};

}  // namespace vsfs::disk
