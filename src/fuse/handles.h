// HandleTable: the one owner of the handles vsfs-mount hands the kernel as fi->fh for
// what is not a disk: open directories (DirHandle, op_readdir.cc) and `.vsfs/stats`
// snapshots (StatsHandle, stats_file.h). A handle is freed by its release (releasedir,
// release), or, for one still open when the session ends (the daemon stopped by a
// signal unmounts under its open files, or the kernel dropped the connection), with
// the FuseFs that holds the table: the kernel never releases those.
// Thread-safety: add and remove may run on any worker thread at once (one mutex);
// using a handle needs no lock (the kernel sends nothing for a handle after its
// release, and serialises readdir on one open directory). The table is destroyed after
// the session, when no handler runs any more.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "vsfs/datastore.h"

namespace vsfs::fuse {

// An open directory: a snapshot of its entries taken at opendir (op_readdir.cc).
struct DirHandle {
  std::vector<DirEntryInfo> entries;
};

template <typename T>
class HandleTable {
 public:
  HandleTable() = default;
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;

  // Takes the handle; the value returned is its fi->fh until remove().
  uint64_t add(std::unique_ptr<T> handle) {
    const uint64_t fh = reinterpret_cast<uint64_t>(handle.get());
    std::lock_guard l(mu_);
    owned_.emplace(fh, std::move(handle));
    return fh;
  }
  // The handle an fh from add() names (not yet removed).
  static T* get(uint64_t fh) { return reinterpret_cast<T*>(fh); }
  // Frees it (outside the lock); an fh the table does not hold is ignored.
  void remove(uint64_t fh) {
    std::unique_ptr<T> gone;
    std::lock_guard l(mu_);
    auto it = owned_.find(fh);
    if (it == owned_.end()) return;
    gone = std::move(it->second);
    owned_.erase(it);
  }
  size_t size() const {
    std::lock_guard l(mu_);
    return owned_.size();
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, std::unique_ptr<T>> owned_;  // guarded by mu_
};

}  // namespace vsfs::fuse
