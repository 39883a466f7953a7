#include "disk/namespace_ops.h"

#include <dirent.h>
#include <sys/stat.h>

#include <sys/xattr.h>

#include <algorithm>
#include <optional>

#include "util/clock.h"

namespace vsfs::disk {

Result<Attr> NamespaceOps::lookup(Ino parent, const std::string& name) {
  std::lock_guard lock(ms_.mu());
  const uint16_t view = view_of(parent);
  const Ino dir = base_of(parent);
  if (view == kSnapshotsDirView) {
    const format::SnapshotRecord* r = ms_.snapshot_by_name_locked(dir, name);
    if (r == nullptr) {
      return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
    }
    return getattr_locked(make_ino(r->id, dir));
  }
  if (view == 0 && name == kSnapshotsDirName) return getattr_locked(make_ino(kSnapshotsDirView, dir));
  if (view == 0 && name == kCbtDirName) return cbt_.root_locked(dir);
  if (view == kCbtView) return cbt_.lookup_locked(parent, name);
  VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(dir, view));
  auto it = idx->find(name);
  if (it == idx->end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
  return getattr_locked(make_ino(view, it->second.ino));
}

Result<Attr> NamespaceOps::getattr(Ino ino) {
  std::lock_guard lock(ms_.mu());
  return getattr_locked(ino);
}

Result<Attr> NamespaceOps::getattr_locked(Ino ino) {
  const uint16_t view = view_of(ino);
  if (view == kCbtView) return cbt_.getattr_locked(ino);
  if (view == kSnapshotsDirView) {
    // The ".snapshots" directory: read-only listing, mkdir/rmdir make and drop snapshots.
    // Its owner is the directory's; its bits let through to the policy (Snapshots) every
    // caller it may allow: the owner, or with kWriters whoever may write the directory.
    VSFS_ASSIGN_OR_RETURN(auto dir, ms_.inode_locked(base_of(ino)));
    if (!S_ISDIR(dir->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
    Attr a = to_attr(*dir);
    a.ino = ino;
    a.mode = S_IFDIR | (takers_ == SnapshotTakers::kWriters ? (dir->mode & 0777) : 0755);
    a.nlink = 2;
    a.size_bytes = 0;
    a.allocated_bytes = 0;
    return a;
  }
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_locked(base_of(ino), view));
  Attr a = view == 0 ? inodes_.attr_locked(*rec) : to_attr(*rec);
  a.ino = ino;
  if (view != 0 && !S_ISLNK(a.mode)) a.mode &= ~0222u;  // snapshots are read-only
  return a;
}

Result<Attr> NamespaceOps::make_node(Ino parent, const std::string& name, uint32_t mode,
                                     uint32_t uid, uint32_t gid, uint64_t rdev,
                                     const std::string* target) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(writable(parent));
  VSFS_ASSERT(S_ISLNK(mode) == (target != nullptr));
  if (target != nullptr) {
    if (target->empty() || target->find('\0') != std::string::npos) {
      return make_error(ENOENT, ErrorKind::kInvalidArgument, "empty symlink target");
    }
    if (target->size() > format::kMaxSymlinkBytes) {
      return make_error(ENAMETOOLONG, ErrorKind::kInvalidArgument,
                        "symlink target of {} bytes (at most {})", target->size(),
                        format::kMaxSymlinkBytes);
    }
  }
  if (name == kSnapshotsDirName || name == kCbtDirName) {
    return make_error(EEXIST, ErrorKind::kExists, "reserved name");
  }
  if (!format::valid_name(name)) {
    return make_error(name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                      ErrorKind::kInvalidArgument, "invalid name");
  }
  VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(parent));
  if (idx->count(name)) return make_error(EEXIST, ErrorKind::kExists, "'{}' exists", name);
  const uint64_t now = realtime_ns();
  VSFS_ASSIGN_OR_RETURN(uint64_t ino, ms_.alloc_inode_locked(mode, uid, gid, parent, now));
  const bool dir = S_ISDIR(mode);
  if (!dir && !S_ISREG(mode)) {
    // Fields of the other types, set before anything can fail so that the record is
    // whole in every state the transaction can be committed in.
    ms_.use_posix_inodes_locked();
    VSFS_ASSIGN_OR_RETURN(auto nrec, ms_.inode_for_update_locked(ino));
    nrec->rdev = rdev;
    if (target != nullptr) {
      nrec->size_bytes = target->size();
      format::InodeExtra extra;
      extra.target = *target;
      if (Result<void> r = ms_.set_extra_locked(ino, extra); !r.ok()) {
        (void)ms_.free_inode_locked(ino);  // no symlink without its target
        return r.take_error();
      }
    }
  }
  VSFS_TRY(ms_.dir_add_locked(parent, name, ino, format::dirent_type(mode)));
  VSFS_ASSIGN_OR_RETURN(auto prec, ms_.inode_for_update_locked(parent));
  prec->mtime_ns = prec->ctime_ns = now;
  if (dir) ++prec->nlink;
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_locked(ino));
  Attr a = to_attr(*rec);
  services_.wake_if_commit_wanted_locked();
  return a;
}

// One disk, two names: the inode is shared (its map, its .cbt maps, its space), and it
// is freed when the last name is gone and the last open file closed.
Result<Attr> NamespaceOps::link(Ino ino, Ino new_parent, const std::string& new_name) {
  constexpr uint32_t kMaxLinks = 65000;  // as ext4
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(writable(new_parent));
  if (view_of(ino) != 0) {
    return make_error(EXDEV, ErrorKind::kInvalidArgument,
                      "a snapshot's file is not linked into the live tree (clone it)");
  }
  if (new_name == kSnapshotsDirName || new_name == kCbtDirName) {
    return make_error(EEXIST, ErrorKind::kExists, "reserved name");
  }
  if (!format::valid_name(new_name)) {
    return make_error(new_name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                      ErrorKind::kInvalidArgument, "invalid name");
  }
  VSFS_ASSIGN_OR_RETURN(const meta::InodeRecord* rec, ms_.inode_locked(ino));
  if (S_ISDIR(rec->mode)) return make_error(EPERM, ErrorKind::kInvalidArgument, "a directory");
  if (rec->nlink == 0) return make_error(ENOENT, ErrorKind::kNotFound, "the file was unlinked");
  if (rec->nlink >= kMaxLinks) return make_error(EMLINK, ErrorKind::kInvalidArgument, "too many links");
  VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(new_parent));
  if (idx->count(new_name)) return make_error(EEXIST, ErrorKind::kExists, "'{}' exists", new_name);
  VSFS_TRY(ms_.dir_add_locked(new_parent, new_name, ino, format::dirent_type(rec->mode)));
  VSFS_TRY(touch_dir_locked(new_parent));
  VSFS_ASSIGN_OR_RETURN(auto urec, ms_.inode_for_update_locked(ino));
  ++urec->nlink;
  urec->ctime_ns = realtime_ns();
  services_.wake_if_commit_wanted_locked();
  return getattr_locked(ino);
}

Result<void> NamespaceOps::unlink(Ino parent, const std::string& name) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(writable(parent));
  VSFS_ASSIGN_OR_RETURN(auto entry, find_entry_locked(parent, name));
  if (entry.type == DT_DIR) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  VSFS_TRY(ms_.dir_remove_locked(parent, name));
  VSFS_TRY(touch_dir_locked(parent));
  VSFS_TRY(drop_link_locked(entry.ino));
  services_.wake_if_commit_wanted_locked();
  return ok_result();
}

Result<void> NamespaceOps::rmdir(Ino parent, const std::string& name) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(writable(parent));
  VSFS_ASSIGN_OR_RETURN(auto entry, find_entry_locked(parent, name));
  if (entry.type != DT_DIR) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
  VSFS_TRY(check_removable_dir_locked(entry.ino));
  VSFS_TRY(ms_.dir_remove_locked(parent, name));
  VSFS_TRY(touch_dir_locked(parent));
  VSFS_ASSIGN_OR_RETURN(auto prec, ms_.inode_for_update_locked(parent));
  --prec->nlink;
  VSFS_TRY(free_dir_locked(entry.ino));
  services_.wake_if_commit_wanted_locked();
  return ok_result();
}

// A directory may go when it has no entries and no snapshot: its snapshots would be
// left with no path to them (no way to delete them), holding their space.
Result<void> NamespaceOps::check_removable_dir_locked(Ino dir) {
  VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(dir));
  if (!idx->empty()) return make_error(ENOTEMPTY, ErrorKind::kInvalidArgument, "directory not empty");
  for (const auto& r : ms_.snapshots_locked()) {
    if (r.base_ino == dir && (r.flags & format::kSnapDeleted) == 0) {
      return make_error(ENOTEMPTY, ErrorKind::kInvalidArgument,
                        "directory has snapshots ('{}'): delete them first", r.name);
    }
  }
  return ok_result();
}

// Frees a removed directory's inode, and its .cbt node.
Result<void> NamespaceOps::free_dir_locked(Ino dir) {
  VSFS_TRY(ms_.free_inode_locked(dir));
  cbt_.drop_dir_locked(dir);
  return ok_result();
}

Result<void> NamespaceOps::rename(Ino parent, const std::string& name, Ino new_parent,
                                  const std::string& new_name, RenameFlags flags) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(writable(parent));
  VSFS_TRY(writable(new_parent));
  if (name == kSnapshotsDirName || new_name == kSnapshotsDirName || name == kCbtDirName ||
      new_name == kCbtDirName) {
    return make_error(EBUSY, ErrorKind::kInvalidArgument, "reserved name");
  }
  if (!format::valid_name(new_name)) {
    return make_error(new_name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                      ErrorKind::kInvalidArgument, "invalid name");
  }
  VSFS_ASSIGN_OR_RETURN(auto src, find_entry_locked(parent, name));
  VSFS_ASSIGN_OR_RETURN(auto nidx, ms_.dir_index_locked(new_parent));
  std::optional<meta::DirIndexEntry> dst;
  if (auto it = nidx->find(new_name); it != nidx->end()) dst = it->second;
  if (parent == new_parent && name == new_name) {
    return flags == RenameFlags::kNoReplace
               ? Result<void>(make_error(EEXIST, ErrorKind::kExists, "target exists"))
               : ok_result();
  }
  // A directory may not move into its own subtree.
  if (src.type == DT_DIR) VSFS_TRY(check_not_ancestor_locked(src.ino, new_parent));
  if (flags == RenameFlags::kExchange) {
    if (!dst) return make_error(ENOENT, ErrorKind::kNotFound, "target does not exist");
    if (dst->type == DT_DIR) VSFS_TRY(check_not_ancestor_locked(dst->ino, parent));
    VSFS_TRY(ms_.dir_remove_locked(parent, name));
    VSFS_TRY(ms_.dir_remove_locked(new_parent, new_name));
    VSFS_TRY(ms_.dir_add_locked(parent, name, dst->ino, dst->type));
    VSFS_TRY(ms_.dir_add_locked(new_parent, new_name, src.ino, src.type));
    if (parent != new_parent) {
      VSFS_TRY(move_dir_links_locked(src, parent, new_parent));
      VSFS_TRY(move_dir_links_locked(*dst, new_parent, parent));
    }
  } else {
    if (dst) {
      if (flags == RenameFlags::kNoReplace) return make_error(EEXIST, ErrorKind::kExists, "target exists");
      if (dst->ino == src.ino) return ok_result();
      if (src.type == DT_DIR && dst->type != DT_DIR) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
      if (src.type != DT_DIR && dst->type == DT_DIR) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
      if (dst->type == DT_DIR) {
        VSFS_TRY(check_removable_dir_locked(dst->ino));
        VSFS_TRY(ms_.dir_remove_locked(new_parent, new_name));
        VSFS_ASSIGN_OR_RETURN(auto np, ms_.inode_for_update_locked(new_parent));
        --np->nlink;
        VSFS_TRY(free_dir_locked(dst->ino));
      } else {
        VSFS_TRY(ms_.dir_remove_locked(new_parent, new_name));
        VSFS_TRY(drop_link_locked(dst->ino));
      }
    }
    VSFS_TRY(ms_.dir_remove_locked(parent, name));
    VSFS_TRY(ms_.dir_add_locked(new_parent, new_name, src.ino, src.type));
    if (parent != new_parent) VSFS_TRY(move_dir_links_locked(src, parent, new_parent));
  }
  VSFS_TRY(touch_dir_locked(parent));
  if (new_parent != parent) VSFS_TRY(touch_dir_locked(new_parent));
  VSFS_ASSIGN_OR_RETURN(auto srec, ms_.inode_for_update_locked(src.ino));
  srec->ctime_ns = realtime_ns();
  services_.wake_if_commit_wanted_locked();
  return ok_result();
}

Result<std::vector<DirEntryInfo>> NamespaceOps::readdir(Ino dir) {
  std::lock_guard lock(ms_.mu());
  const uint16_t view = view_of(dir);
  std::vector<DirEntryInfo> out;
  if (view == kCbtView) return cbt_.readdir_locked(dir);
  if (view == kSnapshotsDirView) {
    VSFS_TRY(getattr_locked(dir));
    for (const auto& r : ms_.snapshots_locked()) {
      if ((r.flags & format::kSnapDeleted) || r.base_ino != base_of(dir)) continue;
      out.push_back(DirEntryInfo{r.name, make_ino(r.id, r.base_ino), S_IFDIR});
    }
    return out;
  }
  // ".snapshots" and ".cbt" are never listed: tree walks (backups, du, find) do not
  // descend into them.
  VSFS_ASSIGN_OR_RETURN(auto list, ms_.dir_list_locked(base_of(dir), view));
  out.reserve(list.size());
  for (auto& e : list) {
    out.push_back(DirEntryInfo{std::move(e.name), make_ino(view, e.ino), DTTOIF(e.type)});
  }
  return out;
}

Result<Attr> NamespaceOps::setattr(Ino ino, const SetAttr& a) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(writable(ino));
  VSFS_TRY(inodes_.persist_times_locked(ino));
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_for_update_locked(ino));
  if (a.mode) rec->mode = (rec->mode & S_IFMT) | (*a.mode & 07777);
  if (a.uid) rec->uid = *a.uid;
  if (a.gid) rec->gid = *a.gid;
  if (a.atime_ns) rec->atime_ns = *a.atime_ns;
  if (a.mtime_ns) rec->mtime_ns = *a.mtime_ns;
  rec->ctime_ns = realtime_ns();
  Attr out = to_attr(*rec);
  services_.wake_if_commit_wanted_locked();
  return out;
}

Result<void> NamespaceOps::open_ref(Ino ino) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(getattr_locked(ino));
  inodes_.open_ref_locked(ino);
  return ok_result();
}

void NamespaceOps::release_ref(Ino ino) {
  std::lock_guard lock(ms_.mu());
  inodes_.release_ref_locked(ino);
}

Result<std::vector<std::pair<std::string, std::string>>> NamespaceOps::xattrs(Ino ino) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(getattr_locked(ino));
  std::vector<std::pair<std::string, std::string>> out;
  const uint16_t view = view_of(ino);
  if (view != 0 && view != kSnapshotsDirView) {
    const format::SnapshotRecord* r = ms_.snapshot_by_id_locked(view);
    if (r != nullptr && r->base_ino == base_of(ino)) {
      out.emplace_back("user.vsfs.changeid", std::to_string(r->change_id));
      out.emplace_back("user.vsfs.created", std::to_string(r->created_ns / 1000000000ull));
      out.emplace_back("user.vsfs.taker", std::to_string(r->taker_uid));
    }
  }
  if (view != kCbtView && view != kSnapshotsDirView) {
    VSFS_ASSIGN_OR_RETURN(format::InodeExtra extra, ms_.extra_locked(base_of(ino), view));
    for (auto& kv : extra.xattrs) out.push_back(std::move(kv));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> NamespaceOps::setxattr(Ino ino, const std::string& name, const std::string* value,
                                    int flags) {
  std::lock_guard lock(ms_.mu());
  VSFS_TRY(getattr_locked(ino));
  VSFS_TRY(writable(ino));
  if (view_of(ino) != 0) return make_error(EROFS, ErrorKind::kState, "snapshots are read-only");
  if (!format::valid_xattr_name(name)) {
    if (name.size() > format::kMaxXattrNameBytes) {
      return make_error(ERANGE, ErrorKind::kInvalidArgument, "xattr name of {} bytes", name.size());
    }
    return make_error(EOPNOTSUPP, ErrorKind::kUnsupported, "xattr namespace of '{}'", name);
  }
  if (name.starts_with("user.vsfs.")) {
    return make_error(EPERM, ErrorKind::kInvalidArgument, "user.vsfs. attributes are vsfs's own");
  }
  if (value != nullptr && value->size() > format::kMaxXattrValueBytes) {
    return make_error(E2BIG, ErrorKind::kInvalidArgument, "xattr value of {} bytes (at most {})",
                      value->size(), format::kMaxXattrValueBytes);
  }
  VSFS_ASSIGN_OR_RETURN(format::InodeExtra extra, ms_.extra_locked(ino));
  auto& xs = extra.xattrs;
  auto it = std::lower_bound(xs.begin(), xs.end(), name,
                             [](const auto& kv, const std::string& n) { return kv.first < n; });
  const bool present = it != xs.end() && it->first == name;
  if (value == nullptr) {
    if (!present) return make_error(ENODATA, ErrorKind::kNotFound, "no xattr '{}'", name);
    xs.erase(it);
  } else {
    if ((flags & XATTR_CREATE) && present) {
      return make_error(EEXIST, ErrorKind::kExists, "xattr '{}' exists", name);
    }
    if ((flags & XATTR_REPLACE) && !present) {
      return make_error(ENODATA, ErrorKind::kNotFound, "no xattr '{}'", name);
    }
    if (present) {
      it->second = *value;
    } else {
      xs.emplace(it, name, *value);
    }
    if (format::inode_extra_bytes(extra) > format::kMaxExtraBytes) {
      return make_error(ENOSPC, ErrorKind::kNoSpace, "the inode's xattrs would pass {} bytes",
                        format::kMaxExtraBytes);
    }
  }
  VSFS_TRY(ms_.set_extra_locked(ino, extra));
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_for_update_locked(ino));
  rec->ctime_ns = realtime_ns();
  services_.wake_if_commit_wanted_locked();
  return ok_result();
}

Result<std::string> NamespaceOps::readlink(Ino ino) {
  std::lock_guard lock(ms_.mu());
  VSFS_ASSIGN_OR_RETURN(Attr a, getattr_locked(ino));
  if (!S_ISLNK(a.mode)) return make_error(EINVAL, ErrorKind::kInvalidArgument, "not a symlink");
  VSFS_ASSIGN_OR_RETURN(format::InodeExtra extra, ms_.extra_locked(base_of(ino), view_of(ino)));
  return std::move(extra.target);
}

// Up the parent links, finding each directory's name in its parent's index.
Result<std::string> NamespaceOps::dir_path(Ino dir) {
  std::lock_guard lock(ms_.mu());
  std::vector<std::string> names;
  for (Ino cur = dir; cur != kRootIno;) {
    if (names.size() > (1u << 16)) return corruption("directory parent links loop");
    VSFS_ASSIGN_OR_RETURN(const meta::InodeRecord* rec, ms_.inode_locked(cur));
    if (!S_ISDIR(rec->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
    const Ino parent = rec->parent;
    VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(parent));
    const std::string* found = nullptr;
    for (const auto& [name, e] : *idx) {
      if (e.ino == cur) found = &name;
    }
    if (found == nullptr) {
      return corruption(fmt::format("directory {} is not listed in its parent {}", cur, parent));
    }
    names.push_back(*found);
    cur = parent;
  }
  std::string path;
  for (auto it = names.rbegin(); it != names.rend(); ++it) path += "/" + *it;
  return path.empty() ? std::string("/") : path;
}

Result<meta::DirIndexEntry> NamespaceOps::find_entry_locked(Ino parent, const std::string& name) {
  VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(parent));
  auto it = idx->find(name);
  if (it == idx->end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
  return it->second;
}

Result<void> NamespaceOps::touch_dir_locked(Ino dir) {
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_for_update_locked(dir));
  rec->mtime_ns = rec->ctime_ns = realtime_ns();
  return ok_result();
}

// An inode whose last name went is freed now, or at its last release_ref or request
// when it is still in use.
Result<void> NamespaceOps::drop_link_locked(Ino ino) {
  VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_for_update_locked(ino));
  rec->ctime_ns = realtime_ns();
  if (rec->nlink > 0) --rec->nlink;
  if (rec->nlink > 0) return ok_result();
  if (inodes_.in_use_locked(ino)) return ok_result();
  inodes_.forget_locked(ino);
  return ms_.free_inode_locked(ino);
}

Result<void> NamespaceOps::check_not_ancestor_locked(Ino dir, Ino target) {
  for (Ino cur = target;;) {
    if (cur == dir) return make_error(EINVAL, ErrorKind::kInvalidArgument, "cannot move a directory into itself");
    if (cur == kRootIno) return ok_result();
    VSFS_ASSIGN_OR_RETURN(auto rec, ms_.inode_locked(cur));
    cur = rec->parent;
  }
}

Result<void> NamespaceOps::move_dir_links_locked(const meta::DirIndexEntry& e, Ino from, Ino to) {
  if (e.type != DT_DIR) return ok_result();
  VSFS_ASSIGN_OR_RETURN(auto f, ms_.inode_for_update_locked(from));
  --f->nlink;
  VSFS_ASSIGN_OR_RETURN(auto t, ms_.inode_for_update_locked(to));
  ++t->nlink;
  VSFS_ASSIGN_OR_RETURN(auto d, ms_.inode_for_update_locked(e.ino));
  d->parent = to;
  return ok_result();
}

}  // namespace vsfs::disk
