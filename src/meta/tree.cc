// Copy-on-write radix trees: grain maps of disks and directories, and the inode table.
//
// A tree of height h has its root at level h-1 and leaves at level 0; the leaf number
// n of a tree is reached by taking, at level L >= 1, the slot (n / 252^(L-1)) % 252.
// A shared node (reference count > 1) is copied before it is changed; the copy takes a
// reference on each child. An interior slot in state kZero stands for a whole subtree
// that reads as zeros and was unmapped at the slot's stamp.
#include <sys/stat.h>

#include <algorithm>

#include "meta/meta_store.h"

namespace vsfs::meta {

using format::BlockType;
using format::kTreeFanout;
using format::TreeNode;

namespace {

uint64_t pow_fanout(unsigned e) {
  uint64_t v = 1;
  for (unsigned i = 0; i < e; ++i) v *= kTreeFanout;
  return v;
}

uint64_t max_stamp_of(const TreeNode& n) {
  uint64_t m = 0;
  for (const auto& s : n.slots) m = std::max(m, s.stamp);
  return m;
}

}  // namespace

uint64_t MetaStore::tree_leaf_capacity(uint8_t height) const {
  return height == 0 ? 0 : pow_fanout(height - 1);
}

Result<uint64_t> MetaStore::tree_find_leaf_locked(uint64_t root, uint8_t height, uint64_t leaf_no,
                                                  bool inode_tree, bool* exclusive,
                                                  Slot* covering) {
  if (covering) *covering = Slot{};
  if (root == 0 || height == 0 || leaf_no >= tree_leaf_capacity(height)) return uint64_t{0};
  const BlockType interior = inode_tree ? BlockType::kInodeInterior : BlockType::kMapInterior;
  uint64_t g = root;
  bool excl = true;
  if (exclusive) {
    VSFS_ASSIGN_OR_RETURN(excl, alone_locked(g));
  }
  for (int level = height - 1; level >= 1; --level) {
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(g, interior));
    TreeNode& node = b->node();
    if (node.level != level) {
      return corruption(fmt::format("map node at grain {}: level {} where {} was expected", g,
                                    node.level, level));
    }
    const Slot& s = node.slots[(leaf_no / pow_fanout(level - 1)) % kTreeFanout];
    if (s.state != SlotState::kMapped) {
      if (covering) *covering = s;
      return uint64_t{0};
    }
    g = s.grain;
    if (exclusive && excl) {
      VSFS_ASSIGN_OR_RETURN(excl, alone_locked(g));
    }
  }
  if (exclusive) *exclusive = excl;
  return g;
}

Result<uint64_t> MetaStore::new_node_locked(BlockType type, uint8_t level, uint64_t owner,
                                            uint64_t leaf_no, const Slot& fill) {
  VSFS_ASSIGN_OR_RETURN(uint64_t g, alloc_meta_grain_locked());
  CachedBlock b;
  b.type = type;
  b.owner = owner;
  if (type == BlockType::kInodeLeaf) {
    format::InodeLeaf leaf;
    leaf.first_ino = leaf_no * format::kInodesPerLeaf;
    b.v = leaf;
  } else {
    TreeNode n;
    n.type = type;
    n.level = level;
    n.owner = owner;
    // A subtree that was unmapped as a whole keeps its stamp in every new slot.
    if (fill.state == SlotState::kZero) {
      for (auto& s : n.slots) s = Slot{0, SlotState::kZero, fill.stamp};
    }
    b.v = n;
  }
  cache_.insert(g, std::move(b));
  mark_dirty_locked(g);
  return g;
}

Result<uint64_t> MetaStore::tree_leaf_for_update_locked(TreeRoot tr, uint64_t leaf_no,
                                                        uint64_t stamp) {
  const bool inode_tree = tr.leaf_type == BlockType::kInodeLeaf;
  if (*tr.root == 0 || *tr.height == 0) {
    if (leaf_no == 0) {
      VSFS_ASSIGN_OR_RETURN(*tr.root, new_node_locked(tr.leaf_type, 0, tr.owner, 0, Slot{}));
      *tr.height = 1;
      return *tr.root;
    }
    *tr.height = 0;
  }
  // Grow until the tree covers leaf_no.
  while (*tr.height == 0 || leaf_no >= tree_leaf_capacity(*tr.height)) {
    if (*tr.height > format::kMaxTreeLevel) {
      return make_error(EFBIG, ErrorKind::kInvalidArgument, "offset beyond the largest disk");
    }
    const uint8_t level = *tr.height == 0 ? 1 : *tr.height;
    VSFS_ASSIGN_OR_RETURN(uint64_t g, new_node_locked(tr.interior_type, level, tr.owner, 0, Slot{}));
    if (*tr.root != 0) {
      uint64_t old_stamp = 0;
      CachedBlock* old = nullptr;
      if (*tr.height == 1) {
        VSFS_ASSIGN_OR_RETURN(old, get_locked(*tr.root, tr.leaf_type));
      } else {
        VSFS_ASSIGN_OR_RETURN(old, get_locked(*tr.root, tr.interior_type));
      }
      if (!inode_tree || *tr.height > 1) old_stamp = max_stamp_of(old->node());
      cache_.peek(g)->node().slots[0] = Slot{*tr.root, SlotState::kMapped, old_stamp};
    }
    *tr.root = g;
    *tr.height = level + 1;
  }
  // Descend, copying shared nodes and creating missing ones.
  {
    VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(*tr.root));
    if (rc > 1) {
      VSFS_ASSIGN_OR_RETURN(*tr.root,
                            cow_node_locked(*tr.root, *tr.height == 1 ? tr.leaf_type : tr.interior_type));
    }
  }
  uint64_t g = *tr.root;
  for (int level = *tr.height - 1; level >= 1; --level) {
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(g, tr.interior_type));
    mark_dirty_locked(g);
    Slot& s = b->node().slots[(leaf_no / pow_fanout(level - 1)) % kTreeFanout];
    if (s.state != SlotState::kMapped) {
      const BlockType child_type = level == 1 ? tr.leaf_type : tr.interior_type;
      VSFS_ASSIGN_OR_RETURN(uint64_t child,
                            new_node_locked(child_type, static_cast<uint8_t>(level - 1),
                                            tr.owner, leaf_no, s));
      s = Slot{child, SlotState::kMapped, std::max(s.stamp, stamp)};
    } else {
      VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(s.grain));
      if (rc > 1) {
        VSFS_ASSIGN_OR_RETURN(s.grain,
                              cow_node_locked(s.grain, level == 1 ? tr.leaf_type : tr.interior_type,
                                              leaf_no * format::kInodesPerLeaf));
      }
      s.stamp = std::max(s.stamp, stamp);
    }
    g = s.grain;
  }
  // Nothing on the way may have read the leaf itself: it may not be cached.
  VSFS_TRY(get_locked(g, tr.leaf_type, leaf_no * format::kInodesPerLeaf));
  mark_dirty_locked(g);
  return g;
}

Result<uint64_t> MetaStore::cow_node_locked(uint64_t grain, BlockType type, uint64_t first_ino) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * old, get_locked(grain, type, first_ino));
  CachedBlock copy = *old;
  VSFS_ASSIGN_OR_RETURN(uint64_t g, alloc_meta_grain_locked());
  cache_.insert(g, std::move(copy));
  mark_dirty_locked(g);
  VSFS_TRY(incref_children_locked(g));
  VSFS_ASSIGN_OR_RETURN(uint16_t left, decref_locked(grain));
  VSFS_ASSERT(left > 0);
  ++counters_.tree_copies;
  return g;
}

Result<void> MetaStore::incref_children_locked(uint64_t grain) {
  CachedBlock* b = cache_.peek(grain);
  VSFS_ASSERT(b != nullptr);
  switch (b->type) {
    case BlockType::kMapLeaf:
    case BlockType::kMapInterior:
    case BlockType::kInodeInterior:
      for (const auto& s : b->node().slots) {
        if (format::holds_grain(s.state)) VSFS_TRY(incref_locked(s.grain));
      }
      return ok_result();
    case BlockType::kInodeLeaf:
      for (const auto& r : b->inodes().inodes) {
        if (r.ino == 0) continue;
        if (r.map_root != 0) VSFS_TRY(incref_locked(r.map_root));
        if (r.extra != 0) VSFS_TRY(incref_locked(r.extra));
      }
      return ok_result();
    default:
      return ok_result();  // directory blocks have no children
  }
}

Result<void> MetaStore::push_release_locked(uint64_t root, uint8_t height, format::TreeKind kind,
                                            uint64_t owner) {
  if (root == 0) return ok_result();
  format::ReleaseEntry e{root, height, kind, owner};
  if (sb_.release_list != 0) {
    VSFS_ASSIGN_OR_RETURN(CachedBlock * l, get_locked(sb_.release_list, BlockType::kReleaseList));
    if (l->releases().entries.size() < format::kReleaseEntriesMax) {
      l->releases().entries.push_back(e);
      mark_dirty_locked(sb_.release_list);
      return ok_result();
    }
  }
  VSFS_ASSIGN_OR_RETURN(uint64_t g, alloc_meta_grain_locked());
  CachedBlock b;
  b.type = BlockType::kReleaseList;
  format::ReleaseList list;
  list.next = sb_.release_list;
  list.entries.push_back(e);
  b.v = std::move(list);
  cache_.insert(g, std::move(b));
  mark_dirty_locked(g);
  sb_.release_list = g;
  mark_sb_dirty_locked();
  return ok_result();
}

bool MetaStore::release_held_locked(const format::ReleaseEntry& e) const {
  if (e.kind != format::TreeKind::kInodeTable) return false;
  for (const auto& [id, r] : held_views_) {
    if (r.inode_root == e.root) return true;
  }
  return false;
}

uint64_t MetaStore::release_pending_locked() {
  uint64_t n = 0;
  // A damaged `next` may make the chain loop: it cannot be longer than the datastore.
  uint64_t blocks_left = sb_.total_blocks * kGrainsPerBlock;
  for (uint64_t g = sb_.release_list; g != 0 && blocks_left-- > 0;) {
    auto l = get_locked(g, BlockType::kReleaseList);
    if (!l.ok()) break;
    n += (*l)->releases().entries.size();
    g = (*l)->releases().next;
  }
  return n;
}

// Releases the subtree rooted at `grain` (a node at `level`, or a data grain / dir block
// when level < 0), spending at most `budget` node visits. Modifies nodes in place (they
// are private: reference count 1) so progress survives a crash. Returns true when the
// subtree is gone.
Result<bool> MetaStore::release_partial_locked(uint64_t grain, int level, format::TreeKind kind,
                                               uint32_t& budget) {
  VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(grain));
  if (rc > 1 || level < 0) {
    VSFS_TRY(decref_locked(grain));
    return true;
  }
  const BlockType type = level == 0 ? (kind == format::TreeKind::kInodeTable
                                           ? BlockType::kInodeLeaf
                                           : BlockType::kMapLeaf)
                                    : (kind == format::TreeKind::kInodeTable
                                           ? BlockType::kInodeInterior
                                           : BlockType::kMapInterior);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(grain, type));
  if (budget == 0) return false;
  --budget;
  if (type == BlockType::kInodeLeaf) {
    for (auto& r : b->inodes().inodes) {
      if (r.ino == 0) continue;
      const auto k = S_ISDIR(r.mode) ? format::TreeKind::kDirMap : format::TreeKind::kFileMap;
      if (r.map_root != 0) VSFS_TRY(push_release_locked(r.map_root, r.map_height, k, r.ino));
      VSFS_TRY(drop_extra_locked(r.extra));
      r = InodeRecord{};
      mark_dirty_locked(grain);
    }
  } else {
    for (auto& s : b->node().slots) {
      if (!format::holds_grain(s.state)) continue;
      VSFS_ASSIGN_OR_RETURN(bool done, release_partial_locked(s.grain, level - 1, kind, budget));
      if (!done) return false;
      b = cache_.peek(grain);  // still cached: it is dirty and private
      s = Slot{};
      mark_dirty_locked(grain);
      if (budget == 0) return false;
    }
  }
  VSFS_TRY(decref_locked(grain));
  return true;
}

Result<bool> MetaStore::release_step(uint32_t budget) {
  std::lock_guard lock(mu_);
  if (options_.read_only || failed_) return false;
  while (budget > 0 && sb_.release_list != 0) {
    const uint64_t head = sb_.release_list;
    VSFS_ASSIGN_OR_RETURN(CachedBlock * l, get_locked(head, BlockType::kReleaseList));
    auto& list = l->releases();
    if (list.entries.empty()) {
      sb_.release_list = list.next;
      mark_sb_dirty_locked();
      VSFS_TRY(decref_locked(head));
      continue;
    }
    // The newest entry that no open file still reads (a deleted snapshot's tree stays
    // until its last reader closes: held_views_).
    std::optional<format::ReleaseEntry> pick;
    uint64_t chain_left = sb_.total_blocks * kGrainsPerBlock;  // a looping chain ends
    for (uint64_t g = head; g != 0 && !pick && chain_left-- > 0;) {
      VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(g, BlockType::kReleaseList));
      for (auto it = b->releases().entries.rbegin(); it != b->releases().entries.rend(); ++it) {
        if (!release_held_locked(*it)) {
          pick = *it;
          break;
        }
      }
      g = b->releases().next;
    }
    if (!pick) return false;  // only held trees are left
    const format::ReleaseEntry e = *pick;
    VSFS_ASSIGN_OR_RETURN(bool done, release_partial_locked(e.root, e.height - 1, e.kind, budget));
    if (!done) break;
    // Releasing an inode table queues the maps it held, possibly in a new head block:
    // remove exactly this entry, wherever it now is.
    bool removed = false;
    uint64_t blocks_left = sb_.total_blocks * kGrainsPerBlock;  // a looping chain ends
    for (uint64_t g = sb_.release_list; g != 0 && !removed && blocks_left-- > 0;) {
      VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(g, BlockType::kReleaseList));
      auto& entries = b->releases().entries;
      for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        if (it->root == e.root && it->kind == e.kind) {
          entries.erase(std::next(it).base());
          mark_dirty_locked(g);
          removed = true;
          break;
        }
      }
      g = b->releases().next;
    }
    if (!removed) {
      return corruption(fmt::format("release list: the entry for the tree at grain {} "
                                    "vanished while it was released (the chain is damaged)",
                                    e.root));
    }
  }
  return sb_.release_list != 0;
}

// ---- grain maps ----

Result<GrainLookup> MetaStore::map_lookup_locked(uint64_t ino, uint64_t file_grain,
                                                 uint16_t view) {
  std::vector<GrainLookup> out;
  VSFS_TRY(map_lookup_range_locked(ino, file_grain, 1, view, true, out));
  return out[0];
}

Result<void> MetaStore::map_lookup_range_locked(uint64_t ino, uint64_t first, uint64_t count,
                                                uint16_t view, bool want_exclusive,
                                                std::vector<GrainLookup>& out) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* rec, inode_locked(ino, view));
  const uint64_t root = rec->map_root;
  const uint8_t height = rec->map_height;
  out.assign(count, GrainLookup{});
  // One walk from the root per leaf, not per grain.
  for (uint64_t fg = first; fg < first + count;) {
    const uint64_t leaf_end = std::min(first + count, (fg / kTreeFanout + 1) * kTreeFanout);
    bool excl = false;
    Slot covering;
    VSFS_ASSIGN_OR_RETURN(uint64_t leaf,
                          tree_find_leaf_locked(root, height, fg / kTreeFanout, false,
                                                want_exclusive ? &excl : nullptr, &covering));
    if (leaf == 0) {
      for (; fg < leaf_end; ++fg) {
        GrainLookup& l = out[fg - first];
        l.state = covering.state == SlotState::kZero ? SlotState::kZero : SlotState::kUnmapped;
        l.stamp = covering.stamp;
      }
      continue;
    }
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(leaf, BlockType::kMapLeaf));
    for (; fg < leaf_end; ++fg) {
      const Slot& s = b->node().slots[fg % kTreeFanout];
      GrainLookup& l = out[fg - first];
      l.state = s.state;
      l.grain = s.grain;
      l.stamp = s.stamp;
      if (format::holds_grain(s.state) && excl) {
        VSFS_ASSIGN_OR_RETURN(l.exclusive, alone_locked(s.grain));
        b = cache_.peek(leaf);  // a refcount miss may have grown the cache; the leaf stays
      }
    }
  }
  return ok_result();
}

Result<void> MetaStore::map_install_locked(uint64_t ino, uint64_t file_grain, uint64_t grain) {
  VSFS_ASSIGN_OR_RETURN(InodeRecord * rec, inode_for_update_locked(ino));
  const uint64_t gen = sb_.generation;
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf,
                        tree_leaf_for_update_locked(map_root_of(rec, ino), file_grain / kTreeFanout,
                                                    gen));
  CachedBlock* b = cache_.peek(leaf);
  Slot& s = b->node().slots[file_grain % kTreeFanout];
  const Slot old = s;
  s = Slot{grain, SlotState::kMapped, gen};
  VSFS_TRY(take_reservation_locked(grain));
  if (format::holds_grain(old.state)) {
    VSFS_TRY(decref_locked(old.grain));
  } else {
    ++rec->allocated_grains;
  }
  return ok_result();
}

Result<bool> MetaStore::map_restamp_locked(uint64_t ino, uint64_t file_grain) {
  // Copying the inode's path (if a snapshot shares it) takes a reference on the map's
  // root, so the walk below sees the sharing.
  VSFS_ASSIGN_OR_RETURN(InodeRecord * rec, inode_for_update_locked(ino));
  bool alone = false;
  Slot covering;
  VSFS_ASSIGN_OR_RETURN(uint64_t found,
                        tree_find_leaf_locked(rec->map_root, rec->map_height,
                                              file_grain / kTreeFanout, false, &alone, &covering));
  if (found == 0 || !alone) return false;
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(found, BlockType::kMapLeaf));
  const Slot seen = b->node().slots[file_grain % kTreeFanout];
  if (seen.state != SlotState::kMapped) return false;
  VSFS_ASSIGN_OR_RETURN(bool grain_alone, alone_locked(seen.grain));
  if (!grain_alone) return false;
  const uint64_t gen = sb_.generation;
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf,
                        tree_leaf_for_update_locked(map_root_of(rec, ino), file_grain / kTreeFanout,
                                                    gen));
  cache_.peek(leaf)->node().slots[file_grain % kTreeFanout].stamp = gen;
  return true;
}

Result<void> MetaStore::map_share_range_locked(uint64_t src, uint16_t view, uint64_t dst,
                                               uint64_t first, uint64_t count) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* s, inode_locked(src, view));
  if (S_ISDIR(s->mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  const uint64_t src_root = s->map_root;
  const uint8_t src_height = s->map_height;
  {
    VSFS_ASSIGN_OR_RETURN(const InodeRecord* d, inode_locked(dst));
    if (view == 0 && src == dst) return make_error(EINVAL, ErrorKind::kInvalidArgument, "same file");
    // The whole map into an empty disk: share the root (O(1)), then cut what lies past
    // the range.
    if (d->map_root == 0 && first == 0 && src_root != 0) {
      const uint64_t size = d->size_bytes;
      VSFS_TRY(map_clone_locked(src, view, dst));
      VSFS_ASSIGN_OR_RETURN(InodeRecord * w, inode_for_update_locked(dst));
      w->size_bytes = size;  // the caller sets the size the range gives
      const uint64_t cap = tree_leaf_capacity(src_height) * kTreeFanout;
      if (count < cap) VSFS_TRY(map_unmap_range_locked(dst, count, cap - count));
      return ok_result();
    }
  }
  // Grain by grain (metadata only).
  for (uint64_t fg = first; fg < first + count; ++fg) {
    bool excl = false;
    Slot covering;
    uint64_t leaf = 0;
    Slot src_slot;
    if (src_root != 0) {
      VSFS_ASSIGN_OR_RETURN(leaf, tree_find_leaf_locked(src_root, src_height, fg / kTreeFanout,
                                                         false, &excl, &covering));
    }
    if (leaf != 0) {
      VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(leaf, BlockType::kMapLeaf));
      src_slot = b->node().slots[fg % kTreeFanout];
    } else {
      // Skip a missing source leaf quickly.
      const uint64_t leaf_end = std::min(first + count, (fg / kTreeFanout + 1) * kTreeFanout);
      VSFS_TRY(map_unmap_range_locked(dst, fg, leaf_end - fg));
      fg = leaf_end - 1;
      continue;
    }
    if (src_slot.state != SlotState::kMapped) {
      VSFS_TRY(map_unmap_range_locked(dst, fg, 1));
      continue;
    }
    VSFS_ASSIGN_OR_RETURN(InodeRecord * rec, inode_for_update_locked(dst));
    VSFS_ASSIGN_OR_RETURN(uint64_t dleaf, tree_leaf_for_update_locked(map_root_of(rec, dst),
                                                                      fg / kTreeFanout,
                                                                      sb_.generation));
    Slot& ds = cache_.peek(dleaf)->node().slots[fg % kTreeFanout];
    const Slot old = ds;
    VSFS_TRY(incref_locked(src_slot.grain));
    ds = Slot{src_slot.grain, SlotState::kMapped, sb_.generation};
    if (format::holds_grain(old.state)) {
      VSFS_TRY(decref_locked(old.grain));
    } else {
      ++rec->allocated_grains;
    }
  }
  return ok_result();
}

Result<void> MetaStore::map_clone_locked(uint64_t src, uint16_t view, uint64_t dst) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* s, inode_locked(src, view));
  const InodeRecord from = *s;
  if (S_ISDIR(from.mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  VSFS_ASSIGN_OR_RETURN(InodeRecord * d, inode_for_update_locked(dst));
  if (S_ISDIR(d->mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  if (d->map_root == from.map_root && from.map_root != 0) return ok_result();
  const uint64_t old_root = d->map_root;
  const uint8_t old_height = d->map_height;
  if (from.map_root != 0) VSFS_TRY(incref_locked(from.map_root));
  d->map_root = from.map_root;
  d->map_height = from.map_height;
  d->replaced_gen = sb_.generation;
  d->allocated_grains = from.allocated_grains;
  d->size_bytes = from.size_bytes;
  return push_release_locked(old_root, old_height, format::TreeKind::kFileMap, dst);
}

MetaStore::TreeRoot MetaStore::map_root_of(InodeRecord* rec, uint64_t ino) {
  return TreeRoot{&rec->map_root, &rec->map_height, BlockType::kMapLeaf, BlockType::kMapInterior,
                  ino};
}

Result<uint64_t> MetaStore::count_mapped_locked(uint64_t grain, int level) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                        get_locked(grain, level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior));
  uint64_t n = 0;
  // Copy the slots: recursion may load blocks into the cache.
  const auto slots = b->node().slots;
  for (const auto& s : slots) {
    if (!format::holds_grain(s.state)) continue;
    if (level == 0) {
      ++n;
    } else {
      VSFS_ASSIGN_OR_RETURN(uint64_t c, count_mapped_locked(s.grain, level - 1));
      n += c;
    }
  }
  return n;
}

// Unmaps the grains of [first, end) below the private node `grain` (covering grains from
// `base`), leaving kZero slots stamped `stamp`. Fully covered subtrees are detached and
// queued for background release. Returns the number of mapped grains released.
Result<uint64_t> MetaStore::unmap_in_node_locked(uint64_t grain, int level, uint64_t base,
                                                 uint64_t first, uint64_t end, uint64_t stamp,
                                                 uint64_t owner) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                        get_locked(grain, level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior));
  mark_dirty_locked(grain);
  const uint64_t span = pow_fanout(level);  // grains under one slot
  uint64_t released = 0;
  for (uint64_t i = 0; i < kTreeFanout; ++i) {
    const uint64_t lo = base + i * span, hi = lo + span;
    if (hi <= first || lo >= end) continue;
    Slot& s = b->node().slots[i];
    // Unmapped or zero: already reads zeros, no change. Allocated grains are released
    // like mapped ones.
    if (!format::holds_grain(s.state)) continue;
    if (level == 0) {
      VSFS_TRY(decref_locked(s.grain));
      ++released;
      s = Slot{0, SlotState::kZero, stamp};
    } else if (lo >= first && hi <= end && level >= 2) {
      // A whole interior child goes (at least 252 x 252 grains): shared, this map drops
      // its reference; private, it is detached and the background releaser frees it
      // (bounded transactions). Its slot becomes a zero subtree stamped now. Leaves are
      // never dropped whole: their per-grain stamps keep change tracking exact.
      const uint64_t child = s.grain;
      VSFS_ASSIGN_OR_RETURN(uint64_t n, count_mapped_locked(child, level - 1));
      VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(child));
      if (rc > 1) {
        VSFS_TRY(decref_locked(child));
      } else {
        VSFS_TRY(push_release_locked(child, static_cast<uint8_t>(level), format::TreeKind::kFileMap,
                                     owner));
      }
      released += n;
      b = cache_.peek(grain);
      b->node().slots[i] = Slot{0, SlotState::kZero, stamp};
    } else {
      uint64_t child = s.grain;
      VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(child));
      if (rc > 1) {
        VSFS_ASSIGN_OR_RETURN(child, cow_node_locked(child, level == 1 ? BlockType::kMapLeaf
                                                                       : BlockType::kMapInterior));
      }
      b = cache_.peek(grain);
      b->node().slots[i].grain = child;
      b->node().slots[i].stamp = std::max(b->node().slots[i].stamp, stamp);
      VSFS_ASSIGN_OR_RETURN(uint64_t n,
                            unmap_in_node_locked(child, level - 1, lo, first, end, stamp, owner));
      released += n;
      b = cache_.peek(grain);
    }
  }
  return released;
}

Result<void> MetaStore::map_unmap_range_locked(uint64_t ino, uint64_t first, uint64_t count) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* ro, inode_locked(ino));
  if (ro->map_root == 0 || count == 0) return ok_result();
  const uint64_t cap = tree_leaf_capacity(ro->map_height) * kTreeFanout;
  if (first >= cap) return ok_result();
  const uint64_t end = std::min(cap, first + std::min(count, cap));
  VSFS_ASSIGN_OR_RETURN(InodeRecord * rec, inode_for_update_locked(ino));
  VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(rec->map_root));
  if (rc > 1) {
    VSFS_ASSIGN_OR_RETURN(rec->map_root,
                          cow_node_locked(rec->map_root, rec->map_height == 1 ? BlockType::kMapLeaf
                                                                              : BlockType::kMapInterior));
  }
  const uint64_t root = rec->map_root;
  const int level = rec->map_height - 1;
  VSFS_ASSIGN_OR_RETURN(uint64_t n, unmap_in_node_locked(root, level, 0, first, end,
                                                         sb_.generation, ino));
  VSFS_ASSIGN_OR_RETURN(rec, inode_for_update_locked(ino));
  rec->allocated_grains -= std::min(rec->allocated_grains, n);
  return ok_result();
}

// Counts the slots of [first, end) below the node `grain` (covering grains from `base`)
// that hold a grain (mapped or allocated). Missing subtrees cost nothing.
Result<uint64_t> MetaStore::count_held_in_node_locked(uint64_t grain, int level, uint64_t base,
                                                      uint64_t first, uint64_t end) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                        get_locked(grain, level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior));
  const auto slots = b->node().slots;  // recursion may load blocks
  const uint64_t span = pow_fanout(level);
  uint64_t n = 0;
  for (uint64_t i = 0; i < kTreeFanout; ++i) {
    const uint64_t lo = base + i * span, hi = lo + span;
    if (hi <= first) continue;
    if (lo >= end) break;
    if (!format::holds_grain(slots[i].state)) continue;
    if (level == 0) {
      ++n;
    } else if (lo >= first && hi <= end) {
      VSFS_ASSIGN_OR_RETURN(uint64_t c, count_mapped_locked(slots[i].grain, level - 1));
      n += c;
    } else {
      VSFS_ASSIGN_OR_RETURN(uint64_t c,
                            count_held_in_node_locked(slots[i].grain, level - 1, lo, first, end));
      n += c;
    }
  }
  return n;
}

Result<uint64_t> MetaStore::map_count_held_locked(uint64_t ino, uint64_t first, uint64_t count) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* rec, inode_locked(ino));
  if (rec->map_root == 0 || count == 0) return uint64_t{0};
  const uint64_t cap = tree_leaf_capacity(rec->map_height) * kTreeFanout;
  if (first >= cap) return uint64_t{0};
  const uint64_t end = std::min(cap, first + std::min(count, cap));
  return count_held_in_node_locked(rec->map_root, rec->map_height - 1, 0, first, end);
}

Result<uint64_t> MetaStore::map_allocate_range_locked(uint64_t ino, uint64_t first, uint64_t count,
                                                      uint64_t& hint_block) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* ro, inode_locked(ino));
  if (S_ISDIR(ro->mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  const uint64_t gen = sb_.generation;
  const uint64_t end = first + count;
  uint64_t allocated = 0;
  uint64_t backed_block = UINT64_MAX;
  std::vector<GrainLookup> map;
  for (uint64_t fg = first; fg < end;) {
    const uint64_t leaf_end = std::min(end, (fg / kTreeFanout + 1) * kTreeFanout);
    // Leaves with nothing to allocate are left as they are (not copied, not dirtied).
    VSFS_TRY(map_lookup_range_locked(ino, fg, leaf_end - fg, 0, false, map));
    if (std::all_of(map.begin(), map.end(),
                    [](const GrainLookup& l) { return format::holds_grain(l.state); })) {
      fg = leaf_end;
      continue;
    }
    // The first map holding an allocated slot marks the datastore, in the same
    // transaction, so that a vsfs that does not know the state refuses it.
    if ((sb_.incompat & format::kIncompatAllocated) == 0) {
      sb_.incompat |= format::kIncompatAllocated;
      mark_sb_dirty_locked();
    }
    VSFS_ASSIGN_OR_RETURN(InodeRecord * rec, inode_for_update_locked(ino));
    VSFS_ASSIGN_OR_RETURN(uint64_t leaf, tree_leaf_for_update_locked(map_root_of(rec, ino),
                                                                     fg / kTreeFanout, gen));
    for (; fg < leaf_end; ++fg) {
      if (format::holds_grain(cache_.peek(leaf)->node().slots[fg % kTreeFanout].state)) continue;
      VSFS_ASSIGN_OR_RETURN(uint64_t g, reserve_data_grain_locked(hint_block));
      // A reserved grain has its storage on the host too (a sparse image's filesystem
      // may fill up later): the write into it never needs room anywhere.
      if (const uint64_t block = block_of(PhysGrain{g}).v; block != backed_block) {
        if (auto backed = back_blocks_locked(block, 1); !backed.ok()) {
          unreserve_locked(g);
          return backed.take_error();
        }
        backed_block = block;
      }
      // On failure (the refcount table unreadable) the reservation is already gone.
      VSFS_TRY(take_reservation_locked(g));
      cache_.peek(leaf)->node().slots[fg % kTreeFanout] = Slot{g, SlotState::kAllocated, gen};
      ++rec->allocated_grains;
      ++allocated;
    }
  }
  return allocated;
}

Result<void> MetaStore::map_claim_allocated_locked(uint64_t ino, uint64_t file_grain,
                                                   uint64_t grain) {
  VSFS_ASSIGN_OR_RETURN(InodeRecord * rec, inode_for_update_locked(ino));
  const uint64_t gen = sb_.generation;
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf,
                        tree_leaf_for_update_locked(map_root_of(rec, ino), file_grain / kTreeFanout,
                                                    gen));
  Slot& s = cache_.peek(leaf)->node().slots[file_grain % kTreeFanout];
  if (s.state != SlotState::kAllocated || s.grain != grain) {
    return corruption(fmt::format("disk {}, grain {} of the disk: the allocated grain {} was "
                                  "written in place but the map no longer holds it",
                                  ino, file_grain, grain));
  }
  // The reference stays: the slot keeps the same grain, now holding data.
  s = Slot{grain, SlotState::kMapped, gen};
  return ok_result();
}

Result<uint64_t> MetaStore::seek_in_node_locked(uint64_t grain, int level, uint64_t base,
                                                uint64_t from, uint64_t limit, bool data) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                        get_locked(grain, level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior));
  const auto slots = b->node().slots;
  const uint64_t span = pow_fanout(level);
  for (uint64_t i = 0; i < kTreeFanout; ++i) {
    const uint64_t lo = base + i * span, hi = lo + span;
    if (hi <= from) continue;
    if (lo >= limit) break;
    const Slot& s = slots[i];
    const uint64_t start = std::max(lo, from);
    if (s.state != SlotState::kMapped) {
      if (!data) return start;
      continue;
    }
    if (level == 0) {
      if (data) return start;
      continue;
    }
    VSFS_ASSIGN_OR_RETURN(uint64_t r, seek_in_node_locked(s.grain, level - 1, lo, from, limit, data));
    if (r < std::min(hi, limit)) return r;
  }
  return limit;
}

Result<uint64_t> MetaStore::map_seek_locked(uint64_t ino, uint64_t from, uint64_t limit, bool data,
                                            uint16_t view) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* rec, inode_locked(ino, view));
  if (from >= limit) return limit;
  if (rec->map_root == 0) return data ? limit : from;
  const uint64_t cap = tree_leaf_capacity(rec->map_height) * kTreeFanout;
  if (from >= cap) return data ? limit : from;
  VSFS_ASSIGN_OR_RETURN(uint64_t r, seek_in_node_locked(rec->map_root, rec->map_height - 1, 0, from,
                                                        std::min(limit, cap), data));
  if (r >= std::min(limit, cap)) {
    // Nothing found inside the tree: beyond it there is only hole.
    return data ? limit : std::min(limit, std::max(from, cap));
  }
  return r;
}

// ---- changed-block tracking ----

namespace {
void add_extent(std::vector<MetaStore::Extent>& out, uint64_t first_grain, uint64_t grains,
                bool data) {
  const uint64_t off = first_grain * kGrainBytes, len = grains * kGrainBytes;
  if (!out.empty() && out.back().data == data &&
      out.back().offset_bytes + out.back().length_bytes == off) {
    out.back().length_bytes += len;
  } else {
    out.push_back(MetaStore::Extent{off, len, data});
  }
}
}  // namespace

// Appends the extents of the subtree at `grain` (covering grains from `base`) below
// `limit`. With `since`, only slots stamped after it; zeros_too also reports unmapped
// ranges as zero extents (a disk listed whole).
Result<void> MetaStore::walk_changes_locked(uint64_t grain, int level, uint64_t base,
                                            uint64_t limit, std::optional<uint64_t> since,
                                            bool zeros_too, std::vector<Extent>& out) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                        get_locked(grain, level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior));
  const auto slots = b->node().slots;
  const uint64_t span = pow_fanout(level);
  for (uint64_t i = 0; i < kTreeFanout; ++i) {
    const uint64_t lo = base + i * span;
    if (lo >= limit) break;
    const uint64_t n = std::min(span, limit - lo);
    const Slot& s = slots[i];
    const bool changed = !since || s.stamp > *since;
    if (s.state == SlotState::kMapped) {
      if (!changed) continue;  // nothing below is newer
      if (level == 0) {
        add_extent(out, lo, 1, true);
      } else {
        VSFS_TRY(walk_changes_locked(s.grain, level - 1, lo, limit, since, zeros_too, out));
      }
    } else if (zeros_too ||
               (since && changed &&
                (s.state == SlotState::kZero || s.state == SlotState::kAllocated))) {
      // An allocation (fallocate) is a change that reads as zeros.
      add_extent(out, lo, n, false);
    }
  }
  return ok_result();
}

Result<std::vector<MetaStore::Extent>> MetaStore::changed_extents_locked(
    uint64_t ino, uint16_t view, std::optional<uint64_t> since, uint64_t since_next_ino) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* rec, inode_locked(ino, view));
  if (S_ISDIR(rec->mode)) return make_error(EISDIR, ErrorKind::kInvalidArgument, "is a directory");
  const InodeRecord r = *rec;
  const uint64_t size = r.size_bytes;
  const uint64_t grains = div_round_up(size, kGrainBytes);
  // Created or replaced wholesale after the backup point: list the whole disk.
  const bool whole = since && (r.replaced_gen > *since || ino >= since_next_ino);
  const std::optional<uint64_t> cut = whole ? std::nullopt : since;
  std::vector<Extent> out;
  if (r.map_root != 0) {
    const uint64_t cap = tree_leaf_capacity(r.map_height) * kTreeFanout;
    VSFS_TRY(walk_changes_locked(r.map_root, r.map_height - 1, 0, std::min(grains, cap), cut,
                                 whole, out));
    if (whole && cap < grains) add_extent(out, cap, grains - cap, false);
  } else if (whole && grains > 0) {
    add_extent(out, 0, grains, false);
  }
  // Clip the last extent to the file size.
  while (!out.empty() && out.back().offset_bytes >= size) out.pop_back();
  if (!out.empty() && out.back().offset_bytes + out.back().length_bytes > size) {
    out.back().length_bytes = size - out.back().offset_bytes;
  }
  return out;
}

}  // namespace vsfs::meta
