#include "disk/cbt_view.h"

#include <dirent.h>
#include <sys/stat.h>

#include "disk/common.h"

namespace vsfs::disk {

Ino CbtView::intern_locked(Node n) {
  auto [it, fresh] = index_.try_emplace(n.key(), next_id_);
  if (fresh) nodes_.emplace(next_id_++, std::move(n));
  return make_ino(kCbtView, it->second);
}

Result<CbtView::Node*> CbtView::get_locked(Ino ino) {
  auto it = nodes_.find(base_of(ino));
  if (it == nodes_.end()) return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
  return &it->second;
}

Result<Attr> CbtView::root_locked(Ino dir) {
  VSFS_ASSIGN_OR_RETURN(auto d, ms_.inode_locked(dir));
  if (!S_ISDIR(d->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
  Node root;
  root.dir = dir;
  return getattr_locked(intern_locked(std::move(root)));
}

// A node carries the owner, group and permission bits (less the write bits: the tree is
// read-only) of what it describes: .cbt, B and A those of the live directory; a
// directory or map below them those of the directory or disk in snapshot B. With
// default_permissions the kernel then allows exactly what it allows in the live tree.
Result<Attr> CbtView::getattr_locked(Ino ino) {
  VSFS_ASSIGN_OR_RETURN(Node * n, get_locked(ino));
  const bool in_b = n->kind == Node::kDir || n->kind == Node::kFile;
  VSFS_ASSIGN_OR_RETURN(auto rec, in_b ? ms_.inode_locked(n->base, n->b) : ms_.inode_locked(n->dir));
  Attr a = to_attr(*rec);
  a.ino = ino;
  a.nlink = 2;
  a.allocated_bytes = 0;
  a.size_bytes = 0;
  a.mode = S_IFDIR | (rec->mode & 0555);
  if (n->kind == Node::kFile) {
    VSFS_ASSIGN_OR_RETURN(auto text, text_locked(ino));
    a.mode = S_IFREG | (rec->mode & 0444);
    a.nlink = 1;
    a.size_bytes = text->size();  // the real length: tools read until EOF
  }
  return a;
}

// Older backup points of B: every record (live or deleted) of the same directory with a
// smaller changeId.
std::vector<const format::SnapshotRecord*> CbtView::points_locked(const format::SnapshotRecord& b) {
  std::vector<const format::SnapshotRecord*> out;
  for (const auto& r : ms_.snapshots_locked()) {
    if (r.base_ino == b.base_ino && r.change_id < b.change_id) out.push_back(&r);
  }
  return out;
}

Result<Attr> CbtView::lookup_locked(Ino parent, const std::string& name) {
  VSFS_ASSIGN_OR_RETURN(Node * p, get_locked(parent));
  Node n = *p;
  n.text.reset();
  switch (p->kind) {
    case Node::kRoot: {
      const format::SnapshotRecord* b = ms_.snapshot_by_name_locked(p->dir, name);
      if (b == nullptr) {
        return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}' here", name);
      }
      n.kind = Node::kB;
      n.b = b->id;
      return getattr_locked(intern_locked(std::move(n)));
    }
    case Node::kB: {
      const format::SnapshotRecord* b = ms_.snapshot_by_id_locked(p->b);
      n.kind = Node::kA;
      n.base = b->base_ino;
      n.a_name = name;
      if (name != "full") {
        const format::SnapshotRecord* a = nullptr;
        for (const auto* r : points_locked(*b)) {
          if (r->name == name) a = r;
        }
        if (a == nullptr) return make_error(ENOENT, ErrorKind::kNotFound, "no backup point '{}'", name);
        n.since = a->change_id;
        n.since_next_ino = a->next_ino;
      }
      return getattr_locked(intern_locked(std::move(n)));
    }
    case Node::kA:
    case Node::kDir: {
      VSFS_ASSIGN_OR_RETURN(auto idx, ms_.dir_index_locked(p->base, p->b));
      auto it = idx->find(name);
      // Disks have change maps; symlinks, fifos, sockets and devices have no data.
      if (it == idx->end() || (it->second.type != DT_DIR && it->second.type != DT_REG)) {
        return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
      }
      n.kind = it->second.type == DT_DIR ? Node::kDir : Node::kFile;
      n.base = it->second.ino;
      return getattr_locked(intern_locked(std::move(n)));
    }
    case Node::kFile:
      return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
  }
  return make_error(ENOENT, ErrorKind::kNotFound, "no such entry");
}

Result<std::vector<DirEntryInfo>> CbtView::readdir_locked(Ino ino) {
  VSFS_ASSIGN_OR_RETURN(Node * p, get_locked(ino));
  const Node parent = *p;
  std::vector<DirEntryInfo> out;
  auto child = [&](Node n, const std::string& name, uint32_t mode) {
    n.text.reset();
    out.push_back(DirEntryInfo{name, intern_locked(std::move(n)), mode});
  };
  switch (parent.kind) {
    case Node::kRoot:
      for (const auto& r : ms_.snapshots_locked()) {
        if ((r.flags & format::kSnapDeleted) || r.base_ino != parent.dir) continue;
        Node n = parent;
        n.kind = Node::kB;
        n.b = r.id;
        child(n, r.name, S_IFDIR);
      }
      return out;
    case Node::kB: {
      const format::SnapshotRecord* b = ms_.snapshot_by_id_locked(parent.b);
      Node full = parent;
      full.kind = Node::kA;
      full.base = b->base_ino;
      full.a_name = "full";
      child(full, "full", S_IFDIR);
      for (const auto* r : points_locked(*b)) {
        Node n = full;
        n.a_name = r->name;
        n.since = r->change_id;
        n.since_next_ino = r->next_ino;
        child(n, r->name, S_IFDIR);
      }
      return out;
    }
    case Node::kA:
    case Node::kDir: {
      VSFS_ASSIGN_OR_RETURN(auto list, ms_.dir_list_locked(parent.base, parent.b));
      for (auto& e : list) {
        if (e.type != DT_DIR && e.type != DT_REG) continue;  // no data, no map
        Node n = parent;
        n.kind = e.type == DT_DIR ? Node::kDir : Node::kFile;
        n.base = e.ino;
        child(n, e.name, e.type == DT_DIR ? S_IFDIR : S_IFREG);
      }
      return out;
    }
    case Node::kFile:
      return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
  }
  return out;
}

Result<std::shared_ptr<const std::string>> CbtView::text_locked(Ino ino) {
  VSFS_ASSIGN_OR_RETURN(Node * n, get_locked(ino));
  if (n->kind != Node::kFile) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  if (n->text) {
    texts_.splice(texts_.begin(), texts_, n->text_lru);
    return n->text;
  }
  VSFS_ASSIGN_OR_RETURN(auto extents,
                        ms_.changed_extents_locked(n->base, n->b, n->since, n->since_next_ino));
  std::string text;
  for (const auto& e : extents) {
    text += fmt::format("{} {} {}\n", e.offset_bytes, e.length_bytes, e.data ? "data" : "zero");
  }
  const uint64_t id = base_of(ino);
  n = &nodes_.at(id);
  n->text = std::make_shared<const std::string>(std::move(text));
  texts_.push_front(id);
  n->text_lru = texts_.begin();
  text_bytes_ += n->text->size();
  auto text_ptr = n->text;  // the drops below may take n's own reference
  while (text_bytes_ > text_budget_bytes_ && texts_.size() > 1) {
    drop_text_locked(texts_.back());
  }
  return text_ptr;
}

void CbtView::read(Ino ino, uint64_t offset, const iovec* iov, int iovcnt,
                   Done<uint64_t> done) {
  const std::vector<iovec> user(iov, iov + iovcnt);
  uint64_t length = 0;
  for (const iovec& v : user) length += v.iov_len;
  Result<uint64_t> r = uint64_t{0};
  {
    std::lock_guard lock(ms_.mu());
    auto text = text_locked(ino);
    if (!text.ok()) {
      r = text.take_error();
    } else if (const std::string& t = **text; offset < t.size()) {
      const uint64_t n = std::min<uint64_t>(length, t.size() - offset);
      scatter(reinterpret_cast<const uint8_t*>(t.data()) + offset, n, user);
      r = n;
    }
  }
  done(std::move(r));
}

void CbtView::drop_text_locked(uint64_t id) {
  Node& n = nodes_.at(id);
  text_bytes_ -= n.text->size();
  texts_.erase(n.text_lru);
  n.text.reset();
}

void CbtView::drop_dir_locked(Ino dir) {
  Node root;
  root.dir = dir;
  if (auto it = index_.find(root.key()); it != index_.end()) {
    nodes_.erase(it->second);
    index_.erase(it);
  }
}

void CbtView::drop_snapshot_locked(uint16_t b) {
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    Node& n = it->second;
    if (n.kind == Node::kRoot || n.b != b) {
      ++it;
      continue;
    }
    if (n.text) drop_text_locked(it->first);
    index_.erase(n.key());
    it = nodes_.erase(it);
  }
}

void CbtView::fill_stats_locked(DatastoreStats& s) const {
  s.cbt_nodes = nodes_.size();
  s.cbt_texts = texts_.size();
  s.cbt_text_bytes = text_bytes_;
  s.cbt_text_budget_bytes = text_budget_bytes_;
}

}  // namespace vsfs::disk
