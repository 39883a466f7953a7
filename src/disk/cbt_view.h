// CbtView: the `.cbt` tree of every live directory, made from snapshot records and maps.
// DIR/.cbt/B/A/<path> is the changed extents of a disk of snapshot B since backup point
// A (or "full"), as text lines "offset length data|zero". Nodes are interned: the same
// path always has the same inode number (kCbtView, node id). Ids are never reused, so an
// id the kernel still holds after its node went finds nothing (ENOENT). Deleting
// snapshot B drops the nodes of its queries (as a backup point A it stays on record, and
// so do those of later snapshots' queries since it). Texts are made on first use and
// kept while they fit in the text budget, least recently read dropped first (the most
// recent always stays, so that one reader of a larger text does not make it again for
// every read): B is frozen and A's changeId fixed, so a text made again is the same.
// Each node has the owner, group and read/search bits of what it describes (the live
// directory for .cbt, B and A; the directory or disk in B below), so that the kernel's
// permission checks allow in .cbt what they allow in the snapshot's tree.
// Thread-safety: *_locked methods are called with MetaStore's mutex held; read() takes
// it itself.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {

class CbtView {
 public:
  CbtView(meta::MetaStore& ms, uint64_t text_budget_bytes)
      : ms_(ms), text_budget_bytes_(text_budget_bytes) {}
  CbtView(const CbtView&) = delete;
  CbtView& operator=(const CbtView&) = delete;

  // DIR/.cbt itself. Errors: ENOTDIR when `dir` is not a directory.
  Result<Attr> root_locked(Ino dir);
  Result<Attr> getattr_locked(Ino ino);
  Result<Attr> lookup_locked(Ino parent, const std::string& name);
  Result<std::vector<DirEntryInfo>> readdir_locked(Ino ino);
  // A map's text (made now, or kept). Errors: EISDIR for a directory node.
  Result<std::shared_ptr<const std::string>> text_locked(Ino ino);
  // Reads a map's text into the buffers; `done` runs on the caller's thread.
  void read(Ino ino, uint64_t offset, const iovec* iov, int iovcnt, Done<uint64_t> done);

  // A live directory was removed: its .cbt root goes.
  void drop_dir_locked(Ino dir);
  // Snapshot B is being deleted: the nodes (and texts) of its queries go.
  void drop_snapshot_locked(uint16_t b);

  void fill_stats_locked(DatastoreStats& s) const;

 private:
  struct Node {
    enum Kind : uint8_t { kRoot, kB, kA, kDir, kFile } kind = kRoot;
    Ino dir = 0;                      // the live directory whose .cbt this is
    uint16_t b = 0;                   // snapshot id of B
    std::optional<uint64_t> since;    // A's changeId; none for "full"
    uint64_t since_next_ino = 0;      // A's next_ino
    Ino base = 0;                     // inode in B's view (kA: B's base directory)
    std::string a_name;
    std::shared_ptr<const std::string> text;  // kFile, once made (and until dropped)
    std::list<uint64_t>::iterator text_lru;   // its id in texts_, with a text
    using Key = std::tuple<uint8_t, Ino, uint16_t, std::string, Ino>;
    Key key() const { return Key{kind, dir, b, a_name, base}; }
  };

  Ino intern_locked(Node n);
  Result<Node*> get_locked(Ino ino);
  std::vector<const format::SnapshotRecord*> points_locked(const format::SnapshotRecord& b);
  void drop_text_locked(uint64_t id);

  meta::MetaStore& ms_;
  const uint64_t text_budget_bytes_;
  std::unordered_map<uint64_t, Node> nodes_;  // by id
  std::map<Node::Key, uint64_t> index_;       // ids by path
  uint64_t next_id_ = 1;
  std::list<uint64_t> texts_;  // nodes with a text, most recent first
  uint64_t text_bytes_ = 0;    // their texts' sizes
};

}  // namespace vsfs::disk
