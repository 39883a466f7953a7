// The space a snapshot holds: what deleting it frees, and what it shares.
//
// Reference counts count parents: a node shared by the snapshot's tree and another tree
// has a count above 1, and everything below it is reachable from both. So the grains
// only the snapshot references are those whose every reference comes from a node only
// it references, starting at its inode table root; the releaser frees exactly these.
// The walk reads metadata only, in steps of bounded visits with the lock released in
// between.
#include <sys/stat.h>

#include <dirent.h>

#include <algorithm>

#include "meta/meta_store.h"

namespace vsfs::meta {

using format::BlockType;
using format::SlotState;
using format::TreeKind;

Result<bool> MetaStore::space_walk_step_locked(SpaceWalk& w, uint32_t budget) {
  const format::SnapshotRecord* r = snapshot_by_id_locked(w.id);
  if (r == nullptr || (w.started && r->change_id != w.change_id)) {
    return make_error(ENOENT, ErrorKind::kNotFound, "snapshot {} does not exist", w.id);
  }
  if (!w.started) {
    w.started = true;
    w.change_id = r->change_id;
    w.dirs.push_back(r->base_ino);
    // A tree waiting in the release list (a deleted file's map, a deleted snapshot's
    // inode table) holds a reference on its root until the releaser drops it: not a
    // holder that outlives the snapshot, so it does not count as one.
    uint64_t blocks_left = sb_.total_blocks * kGrainsPerBlock;  // a looping chain ends
    for (uint64_t g = sb_.release_list; g != 0 && blocks_left-- > 0;) {
      VSFS_ASSIGN_OR_RETURN(CachedBlock * l, get_locked(g, BlockType::kReleaseList));
      for (const auto& e : l->releases().entries) ++w.releasing[e.root];
      g = l->releases().next;
    }
  }
  // First the view's listing: its disks and the data they map.
  while (!w.dirs.empty()) {
    if (budget == 0) return false;
    --budget;
    const uint64_t dir = w.dirs.back();
    w.dirs.pop_back();
    VSFS_ASSIGN_OR_RETURN(auto idx, dir_index_locked(dir, w.id));
    std::vector<uint64_t> found;
    for (const auto& [name, e] : *idx) {
      if (e.type == DT_DIR) {
        w.dirs.push_back(e.ino);
      } else {
        found.push_back(e.ino);
      }
    }
    for (uint64_t ino : found) {  // inode_locked may evict the index
      if (!w.files.insert(ino).second) continue;
      VSFS_ASSIGN_OR_RETURN(const InodeRecord* rec, inode_locked(ino, w.id));
      w.referenced_data_grains += rec->allocated_grains;
    }
  }
  // Then the nodes only the snapshot references. A grain counts once every reference
  // to it comes from a node that counts (a clone inside the snapshot references a grain
  // twice from its own nodes): `reached` holds how many of those a shared grain has.
  auto reach = [&](const SpaceWalk::Node& child) -> Result<void> {
    VSFS_ASSIGN_OR_RETURN(uint16_t count, refcount_locked(child.grain));
    if (count == 0) {
      return corruption(fmt::format("snapshot {}: its tree references grain {}, whose "
                                    "reference count is 0",
                                    w.id, child.grain));
    }
    uint32_t rc = count;
    if (auto it = w.releasing.find(child.grain); it != w.releasing.end()) {
      rc -= std::min<uint32_t>(rc - 1, it->second);
    }
    if (rc != 1) {
      auto [it, fresh] = w.reached.try_emplace(child.grain, 0);
      if (++it->second < rc) return ok_result();
      w.reached.erase(it);
    }
    ++w.exclusive_grains;
    if (child.level == SpaceWalk::kExtraChain) {
      // The rest of an inode's extra chain is referenced by the blocks before it alone.
      VSFS_ASSIGN_OR_RETURN(CachedBlock * e, get_locked(child.grain, BlockType::kInodeExtra));
      for (uint64_t g = e->extra().next, n = 1; g != 0 && n < format::kMaxExtraBlocks; ++n) {
        ++w.exclusive_grains;
        VSFS_ASSIGN_OR_RETURN(e, get_locked(g, BlockType::kInodeExtra));
        g = e->extra().next;
      }
    } else if (child.level >= 0) {
      w.nodes.push_back(child);
    } else if (child.kind == TreeKind::kFileMap && w.files.count(child.ino) != 0) {
      ++w.exclusive_view_data_grains;
    }
    return ok_result();
  };
  if (w.nodes.empty() && !w.root_reached) {
    w.root_reached = true;
    VSFS_TRY(reach({r->inode_root, r->inode_height - 1, TreeKind::kInodeTable, 0}));
  }
  while (!w.nodes.empty()) {
    if (budget == 0) return false;
    --budget;
    const SpaceWalk::Node n = w.nodes.back();
    w.nodes.pop_back();
    const bool inodes = n.kind == TreeKind::kInodeTable;
    const BlockType type = n.level == 0 ? (inodes ? BlockType::kInodeLeaf : BlockType::kMapLeaf)
                                        : (inodes ? BlockType::kInodeInterior
                                                  : BlockType::kMapInterior);
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(n.grain, type));
    std::vector<SpaceWalk::Node> children;  // reach() may evict b
    if (type == BlockType::kInodeLeaf) {
      for (const auto& rec : b->inodes().inodes) {
        if (rec.ino == 0) continue;
        if (rec.extra != 0) {
          children.push_back({rec.extra, SpaceWalk::kExtraChain, TreeKind::kFileMap, rec.ino});
        }
        if (rec.map_root == 0) continue;
        children.push_back({rec.map_root, rec.map_height - 1,
                            S_ISDIR(rec.mode) ? TreeKind::kDirMap : TreeKind::kFileMap, rec.ino});
      }
    } else {
      for (const auto& slot : b->node().slots) {
        if (!format::holds_grain(slot.state)) continue;  // mapped, or allocated (reserved)
        children.push_back({slot.grain, n.level - 1, n.kind, n.ino});
      }
    }
    for (const auto& c : children) VSFS_TRY(reach(c));
  }
  return true;
}

}  // namespace vsfs::meta
