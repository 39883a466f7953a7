// NamespaceOps: the directory tree as callers see it: lookup, attributes, create, mkdir,
// unlink, rmdir, rename, readdir, setattr, open references and xattrs, with their checks
// (reserved names, name validity, read-only views, empty directories, moves into a
// subtree). It owns the views' rules: the live tree (view 0), the frozen trees of
// snapshots (read-only), each directory's ".snapshots" listing and its ".cbt" tree
// (CbtView). It is the one place that answers an inode's attributes (getattr_locked),
// which the data path asks for sizes and types.
// Thread-safety: public methods take MetaStore's mutex; *_locked methods need it held.
#pragma once

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "disk/cbt_view.h"
#include "disk/common.h"
#include "disk/inode_table.h"
#include "disk/services.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

class NamespaceOps {
 public:
  // `takers` sets the permission bits of ".snapshots" (see getattr_locked).
  NamespaceOps(meta::MetaStore& ms, InodeTable& inodes, CbtView& cbt, Services& services,
               const std::atomic<bool>& read_only, SnapshotTakers takers)
      : ms_(ms), inodes_(inodes), cbt_(cbt), services_(services), read_only_(read_only),
        takers_(takers) {}
  NamespaceOps(const NamespaceOps&) = delete;
  NamespaceOps& operator=(const NamespaceOps&) = delete;

  Result<Attr> lookup(Ino parent, const std::string& name);
  Result<Attr> getattr(Ino ino);
  Result<Attr> getattr_locked(Ino ino);
  // mode holds the type and the permission bits; rdev is a device's number, `target` a
  // symlink's target (null for other types).
  Result<Attr> make_node(Ino parent, const std::string& name, uint32_t mode, uint32_t uid,
                         uint32_t gid, uint64_t rdev = 0, const std::string* target = nullptr);
  Result<std::string> readlink(Ino ino);
  Result<Attr> link(Ino ino, Ino new_parent, const std::string& new_name);
  Result<void> unlink(Ino parent, const std::string& name);
  Result<void> rmdir(Ino parent, const std::string& name);
  Result<void> rename(Ino parent, const std::string& name, Ino new_parent,
                      const std::string& new_name, RenameFlags flags);
  Result<std::vector<DirEntryInfo>> readdir(Ino dir);
  Result<Attr> setattr(Ino ino, const SetAttr& a);
  Result<void> open_ref(Ino ino);
  void release_ref(Ino ino);
  Result<std::vector<std::pair<std::string, std::string>>> xattrs(Ino ino);
  // Sets xattr `name` to *value, or removes it when value is null (Datastore::setxattr,
  // removexattr).
  Result<void> setxattr(Ino ino, const std::string& name, const std::string* value, int flags);
  Result<std::string> dir_path(Ino dir);

 private:
  Result<void> check_removable_dir_locked(Ino dir);
  Result<void> free_dir_locked(Ino dir);
  Result<meta::DirIndexEntry> find_entry_locked(Ino parent, const std::string& name);
  Result<void> touch_dir_locked(Ino dir);
  Result<void> drop_link_locked(Ino ino);
  Result<void> check_not_ancestor_locked(Ino dir, Ino target);
  Result<void> move_dir_links_locked(const meta::DirIndexEntry& e, Ino from, Ino to);
  Result<void> writable(Ino ino) const { return check_writable(ms_, read_only_, ino); }

  meta::MetaStore& ms_;
  InodeTable& inodes_;
  CbtView& cbt_;
  Services& services_;
  const std::atomic<bool>& read_only_;  // DatastoreImpl's: set by set_read_only
  const SnapshotTakers takers_;
};

}  // namespace vsfs::disk
