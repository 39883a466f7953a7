// The namespace: the inode table (a copy-on-write radix tree of inode leaves) and
// directories (each a grain map whose leaves point at directory blocks).
#include <sys/stat.h>

#include <algorithm>
#include <dirent.h>

#include "meta/meta_store.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

// One name in a directory index: the hash node (link, cached hash, the key string and
// the entry), its bucket, the allocation's overhead, and a long name's own allocation.
constexpr uint64_t kMallocOverheadBytes = 16;
uint64_t dir_name_bytes(const std::string& name) {
  constexpr uint64_t kNodeBytes = sizeof(void*) + sizeof(size_t) +
                                  sizeof(std::pair<const std::string, DirIndexEntry>) +
                                  sizeof(void*) + kMallocOverheadBytes;
  constexpr size_t kInlineChars = 15;  // libstdc++'s short-string buffer
  return kNodeBytes + (name.size() > kInlineChars ? name.size() + 1 + kMallocOverheadBytes : 0);
}

}  // namespace

using format::BlockType;
using format::kInodesPerLeaf;
using format::kTreeFanout;

MetaStore::TreeRoot MetaStore::inode_tree_locked() {
  return TreeRoot{&sb_.inode_root, &sb_.inode_height, BlockType::kInodeLeaf,
                  BlockType::kInodeInterior, 0};
}

Result<const InodeRecord*> MetaStore::inode_locked(uint64_t ino, uint16_t view) {
  uint64_t root = sb_.inode_root, next = sb_.next_ino;
  uint8_t height = sb_.inode_height;
  if (view != 0) {
    const format::SnapshotRecord* r = snapshot_by_id_locked(view);
    if (auto held = held_views_.find(view); r == nullptr && held != held_views_.end()) {
      r = &held->second;
    }
    if (r == nullptr) return make_error(ENOENT, ErrorKind::kNotFound, "snapshot {} does not exist", view);
    root = r->inode_root;
    height = r->inode_height;
    next = r->next_ino;
  }
  if (ino == 0 || ino >= next) {
    return make_error(ENOENT, ErrorKind::kNotFound, "inode {} does not exist", ino);
  }
  const uint64_t leaf_no = ino / kInodesPerLeaf;
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf, tree_find_leaf_locked(root, height, leaf_no, true, nullptr,
                                                             nullptr));
  if (leaf == 0) return make_error(ENOENT, ErrorKind::kNotFound, "inode {} does not exist", ino);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                        get_locked(leaf, BlockType::kInodeLeaf, leaf_no * kInodesPerLeaf));
  const InodeRecord& r = b->inodes().inodes[ino % kInodesPerLeaf];
  if (r.ino != ino) return make_error(ENOENT, ErrorKind::kNotFound, "inode {} does not exist", ino);
  return &r;
}

Result<InodeRecord*> MetaStore::inode_for_update_locked(uint64_t ino) {
  VSFS_TRY(inode_locked(ino));  // exists
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf, tree_leaf_for_update_locked(inode_tree_locked(),
                                                                   ino / kInodesPerLeaf,
                                                                   sb_.generation));
  mark_sb_dirty_locked();
  return &cache_.peek(leaf)->inodes().inodes[ino % kInodesPerLeaf];
}

Result<uint64_t> MetaStore::alloc_inode_locked(uint32_t mode, uint32_t uid, uint32_t gid,
                                               uint64_t parent, uint64_t now_ns) {
  const uint64_t ino = sb_.next_ino;
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf, tree_leaf_for_update_locked(inode_tree_locked(),
                                                                   ino / kInodesPerLeaf,
                                                                   sb_.generation));
  ++sb_.next_ino;
  mark_sb_dirty_locked();
  InodeRecord& r = cache_.peek(leaf)->inodes().inodes[ino % kInodesPerLeaf];
  r = InodeRecord{};
  r.ino = ino;
  r.mode = mode;
  r.uid = uid;
  r.gid = gid;
  r.nlink = S_ISDIR(mode) ? 2 : 1;
  r.atime_ns = r.mtime_ns = r.ctime_ns = r.btime_ns = now_ns;
  r.parent = S_ISDIR(mode) ? parent : 0;
  r.replaced_gen = sb_.generation;
  ++live_inodes_;
  return ino;
}

Result<void> MetaStore::free_inode_locked(uint64_t ino) {
  VSFS_ASSIGN_OR_RETURN(InodeRecord * r, inode_for_update_locked(ino));
  const auto kind = S_ISDIR(r->mode) ? format::TreeKind::kDirMap : format::TreeKind::kFileMap;
  const uint64_t root = r->map_root;
  const uint8_t height = r->map_height;
  const uint64_t extra = r->extra;
  *r = InodeRecord{};
  drop_dir_locked(dir_key(ino, 0));
  --live_inodes_;
  VSFS_TRY(drop_extra_locked(extra));
  return push_release_locked(root, height, kind, ino);
}

Result<void> MetaStore::scan_inodes_locked() {
  // Counts live inodes and frees files that were unlinked while open when the datastore
  // stopped (nlink 0): their last close never came. The walk follows the table's mapped
  // slots, never the superblock's next_ino: a damaged next_ino must not make the open
  // visit (or spin over) leaves that do not exist. An inode at or above next_ino would
  // be handed out again, so it is corruption.
  // Read-only nothing is handed out, so a wrong next_ino is only a warning there.
  auto next_ino_wrong = [&](std::string message) -> Result<void> {
    if (!options_.read_only) return corruption(std::move(message));
    VSFS_LOG_WARN("{}", message);
    return ok_result();
  };
  if (sb_.next_ino <= kRootIno || sb_.next_ino > format::kMaxInodeNumber) {
    VSFS_TRY(next_ino_wrong(fmt::format("superblock: next_ino {} is outside [{}, {}]",
                                        sb_.next_ino, kRootIno + 1, format::kMaxInodeNumber)));
  }
  std::vector<uint64_t> orphans;
  uint64_t max_ino = 0;
  auto walk = [&](auto& self, uint64_t grain, int level, uint64_t first_leaf) -> Result<void> {
    if (level == 0) {
      VSFS_ASSIGN_OR_RETURN(CachedBlock * b,
                            get_locked(grain, BlockType::kInodeLeaf, first_leaf * kInodesPerLeaf));
      for (const auto& r : b->inodes().inodes) {
        if (r.ino == 0) continue;
        ++live_inodes_;
        max_ino = std::max(max_ino, r.ino);
        if (r.nlink == 0) orphans.push_back(r.ino);
      }
      return ok_result();
    }
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(grain, BlockType::kInodeInterior));
    if (b->node().level != level) {
      return corruption(fmt::format("inode table node at grain {}: level {} where {} was expected",
                                    grain, b->node().level, level));
    }
    // Copy the slots: the recursion may load blocks into the cache.
    const auto slots = b->node().slots;
    const uint64_t span = tree_leaf_capacity(static_cast<uint8_t>(level));  // leaves per slot
    for (uint64_t i = 0; i < kTreeFanout; ++i) {
      if (slots[i].state != SlotState::kMapped) continue;
      auto below = self(self, slots[i].grain, level - 1, first_leaf + i * span);
      if (below.ok()) continue;
      // Read-only, a damaged part of the table is skipped so the rest can be read: its
      // inodes answer with the error when they are looked up. Read-write, inodes in it
      // could be handed out again, so the open fails.
      if (!options_.read_only || below.error().kind != ErrorKind::kCorruption) return below;
      VSFS_LOG_WARN("inode table: {}; inodes {}..{} cannot be read",
                    below.error().message, (first_leaf + i * span) * kInodesPerLeaf,
                    (first_leaf + (i + 1) * span) * kInodesPerLeaf - 1);
    }
    return ok_result();
  };
  if (sb_.inode_root != 0 && sb_.inode_height > 0) {
    if (sb_.inode_height > format::kMaxTreeLevel + 1) {
      return corruption(fmt::format("superblock: inode table height {} is above {}",
                                    sb_.inode_height, format::kMaxTreeLevel + 1));
    }
    VSFS_TRY(walk(walk, sb_.inode_root, sb_.inode_height - 1, 0));
  }
  if (max_ino >= sb_.next_ino) {
    VSFS_TRY(next_ino_wrong(fmt::format("superblock: next_ino is {} but inode {} exists",
                                        sb_.next_ino, max_ino)));
  }
  if (!options_.read_only) {
    for (uint64_t ino : orphans) {
      VSFS_LOG_INFO("freeing inode {}: unlinked while open before the last unmount", ino);
      VSFS_TRY(free_inode_locked(ino));
    }
  }
  return ok_result();
}

// ---- directories ----

Result<MetaStore::DirIndex*> MetaStore::load_dir_locked(uint64_t dir, uint16_t view) {
  if (auto it = dirs_.find(dir_key(dir, view)); it != dirs_.end()) {
    dir_lru_.splice(dir_lru_.begin(), dir_lru_, it->second.lru);
    return &it->second;
  }
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* r, inode_locked(dir, view));
  if (!S_ISDIR(r->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
  // The directory's blocks, found by walking its map's mapped slots. The recorded size
  // is checked against them before anything is sized from it: a damaged size must not
  // make the daemon allocate or loop per block it claims.
  const uint64_t root = r->map_root;
  const uint8_t height = r->map_height;
  const uint64_t size_bytes = r->size_bytes;
  if (height > format::kMaxTreeLevel + 1) {
    return corruption(fmt::format("directory {}: map height {} is above {}", dir, height,
                                  format::kMaxTreeLevel + 1));
  }
  std::vector<std::pair<uint64_t, uint64_t>> found;  // (block index, grain), in index order
  auto walk = [&](auto& self, uint64_t grain, int level, uint64_t first) -> Result<void> {
    VSFS_ASSIGN_OR_RETURN(
        CachedBlock * b,
        get_locked(grain, level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior));
    if (b->node().level != level) {
      return corruption(fmt::format("directory {}: map node at grain {} has level {} where {} "
                                    "was expected",
                                    dir, grain, b->node().level, level));
    }
    const auto slots = b->node().slots;  // the recursion may load blocks into the cache
    const uint64_t span = level == 0 ? 1 : tree_leaf_capacity(static_cast<uint8_t>(level)) *
                                               kTreeFanout;  // blocks per slot
    for (uint64_t i = 0; i < kTreeFanout; ++i) {
      if (slots[i].state != SlotState::kMapped) continue;
      if (level == 0) {
        found.emplace_back(first + i, slots[i].grain);
      } else {
        VSFS_TRY(self(self, slots[i].grain, level - 1, first + i * span));
      }
    }
    return ok_result();
  };
  if (root != 0 && height > 0) VSFS_TRY(walk(walk, root, height - 1, 0));
  const uint64_t extent = found.empty() ? 0 : found.back().first + 1;
  if (size_bytes % kGrainBytes != 0 || size_bytes / kGrainBytes < extent ||
      size_bytes / kGrainBytes - extent > format::kDirSlackBlocks) {
    return corruption(fmt::format("directory {}: size {} bytes does not fit its {} directory "
                                  "block{} (the last is block {})",
                                  dir, size_bytes, found.size(), found.size() == 1 ? "" : "s",
                                  extent == 0 ? std::string("none") : std::to_string(extent - 1)));
  }
  DirIndex idx;
  idx.used_bytes.assign(size_bytes / kGrainBytes, 0);
  for (const auto& [i, grain] : found) {
    VSFS_ASSIGN_OR_RETURN(CachedBlock * db, get_locked(grain, BlockType::kDirBlock));
    if (db->dir().owner != dir) {
      return corruption(fmt::format("directory block at grain {} belongs to inode {}, not {}",
                                    grain, db->dir().owner, dir));
    }
    for (const auto& e : db->dir().entries) {
      idx.used_bytes[i] += static_cast<uint32_t>(format::dir_entry_bytes(e));
      if (!idx.names.emplace(e.name, DirIndexEntry{e.ino, e.type, i}).second) {
        return corruption(fmt::format("directory {}: name '{}' appears twice", dir, e.name));
      }
      idx.bytes += dir_name_bytes(e.name);
    }
  }
  const uint64_t key = dir_key(dir, view);
  idx.bytes += kDirIndexBytes + idx.used_bytes.capacity() * sizeof(uint32_t);
  dir_lru_.push_front(key);
  idx.lru = dir_lru_.begin();
  dir_bytes_ += idx.bytes;
  account_outside_locked();
  return &dirs_.emplace(key, std::move(idx)).first->second;
}

void MetaStore::dir_account_locked(DirIndex& idx, int64_t delta) {
  idx.bytes += static_cast<uint64_t>(delta);
  dir_bytes_ += static_cast<uint64_t>(delta);
  account_outside_locked();
}

void MetaStore::drop_dir_locked(uint64_t key) {
  auto it = dirs_.find(key);
  if (it == dirs_.end()) return;
  dir_bytes_ -= it->second.bytes;
  dir_lru_.erase(it->second.lru);
  dirs_.erase(it);
  account_outside_locked();
}

Result<const std::unordered_map<std::string, DirIndexEntry>*> MetaStore::dir_index_locked(
    uint64_t dir, uint16_t view) {
  VSFS_ASSIGN_OR_RETURN(DirIndex * idx, load_dir_locked(dir, view));
  return &idx->names;
}

Result<CachedBlock*> MetaStore::dir_block_for_update_locked(uint64_t dir, uint64_t index) {
  VSFS_ASSIGN_OR_RETURN(InodeRecord * r, inode_for_update_locked(dir));
  const uint64_t gen = sb_.generation;
  VSFS_ASSIGN_OR_RETURN(uint64_t leaf,
                        tree_leaf_for_update_locked(map_root_of(r, dir), index / kTreeFanout, gen));
  Slot& s = cache_.peek(leaf)->node().slots[index % kTreeFanout];
  if (s.state != SlotState::kMapped) {
    VSFS_ASSIGN_OR_RETURN(uint64_t g, alloc_meta_grain_locked());
    CachedBlock b;
    b.type = BlockType::kDirBlock;
    b.owner = dir;
    b.v = format::DirBlock{dir, {}};
    cache_.insert(g, std::move(b));
    s = Slot{g, SlotState::kMapped, gen};
    ++r->allocated_grains;
  } else {
    VSFS_TRY(get_locked(s.grain, BlockType::kDirBlock));
    VSFS_ASSIGN_OR_RETURN(uint16_t rc, refcount_locked(s.grain));
    if (rc > 1) {
      VSFS_ASSIGN_OR_RETURN(s.grain, cow_node_locked(s.grain, BlockType::kDirBlock));
    }
    s.stamp = gen;
  }
  mark_dirty_locked(s.grain);
  return cache_.peek(s.grain);
}

Result<void> MetaStore::dir_add_locked(uint64_t dir, const std::string& name, uint64_t ino,
                                       uint8_t type) {
  if (!format::valid_name(name)) {
    return make_error(name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                      ErrorKind::kInvalidArgument, "invalid name");
  }
  VSFS_ASSIGN_OR_RETURN(DirIndex * idx, load_dir_locked(dir));
  if (idx->names.count(name)) return make_error(EEXIST, ErrorKind::kExists, "'{}' exists", name);
  format::DirEntry e{ino, type, name};
  const uint32_t need = static_cast<uint32_t>(format::dir_entry_bytes(e));
  uint64_t index = idx->used_bytes.size();
  for (uint64_t i = 0; i < idx->used_bytes.size(); ++i) {
    if (idx->used_bytes[i] + need <= format::kPayloadBytes) {
      index = i;
      break;
    }
  }
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b, dir_block_for_update_locked(dir, index));
  if (index == idx->used_bytes.size()) {
    // Only once the block is mapped: a failed allocation must not leave the size counting
    // a block that does not exist (load_dir_locked bounds how far it may reach).
    VSFS_ASSIGN_OR_RETURN(InodeRecord * r, inode_for_update_locked(dir));
    r->size_bytes += kGrainBytes;  // b stays cached: it is dirty
  }
  b->dir().entries.push_back(std::move(e));
  idx = &dirs_.at(dir_key(dir, 0));
  int64_t grown = static_cast<int64_t>(dir_name_bytes(name));
  if (index == idx->used_bytes.size()) {
    idx->used_bytes.push_back(0);
    grown += static_cast<int64_t>(sizeof(uint32_t));
  }
  idx->used_bytes[index] += need;
  idx->names.emplace(name, DirIndexEntry{ino, type, index});
  dir_account_locked(*idx, grown);
  return ok_result();
}

Result<void> MetaStore::dir_remove_locked(uint64_t dir, const std::string& name) {
  VSFS_ASSIGN_OR_RETURN(DirIndex * idx, load_dir_locked(dir));
  auto it = idx->names.find(name);
  if (it == idx->names.end()) return make_error(ENOENT, ErrorKind::kNotFound, "no '{}'", name);
  const uint64_t index = it->second.block;
  VSFS_ASSIGN_OR_RETURN(CachedBlock * b, dir_block_for_update_locked(dir, index));
  auto& entries = b->dir().entries;
  auto e = std::find_if(entries.begin(), entries.end(),
                        [&](const format::DirEntry& d) { return d.name == name; });
  if (e == entries.end()) {
    return corruption(fmt::format("directory {}: '{}' missing from block {}", dir, name, index));
  }
  idx = &dirs_.at(dir_key(dir, 0));
  idx->used_bytes[index] -= static_cast<uint32_t>(format::dir_entry_bytes(*e));
  entries.erase(e);
  idx->names.erase(name);
  dir_account_locked(*idx, -static_cast<int64_t>(dir_name_bytes(name)));
  return ok_result();
}

Result<std::vector<format::DirEntry>> MetaStore::dir_list_locked(uint64_t dir, uint16_t view) {
  VSFS_ASSIGN_OR_RETURN(DirIndex * idx, load_dir_locked(dir, view));
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* r, inode_locked(dir, view));
  std::vector<format::DirEntry> out;
  out.reserve(idx->names.size());
  for (uint64_t i = 0; i < idx->used_bytes.size(); ++i) {
    if (idx->used_bytes[i] == 0) continue;
    VSFS_ASSIGN_OR_RETURN(uint64_t leaf, tree_find_leaf_locked(r->map_root, r->map_height,
                                                               i / kTreeFanout, false, nullptr,
                                                               nullptr));
    if (leaf == 0) continue;
    VSFS_ASSIGN_OR_RETURN(CachedBlock * lb, get_locked(leaf, BlockType::kMapLeaf));
    const Slot s = lb->node().slots[i % kTreeFanout];
    if (s.state != SlotState::kMapped) continue;
    VSFS_ASSIGN_OR_RETURN(CachedBlock * db, get_locked(s.grain, BlockType::kDirBlock));
    for (const auto& e : db->dir().entries) out.push_back(e);
    VSFS_ASSIGN_OR_RETURN(r, inode_locked(dir, view));
  }
  return out;
}

// ---- snapshots ----

const format::SnapshotRecord* MetaStore::snapshot_by_id_locked(uint16_t id) const {
  for (const auto& r : snaps_) {
    if (r.id == id && !(r.flags & format::kSnapDeleted)) return &r;
  }
  return nullptr;
}

const format::SnapshotRecord* MetaStore::snapshot_by_name_locked(uint64_t base_ino,
                                                                 const std::string& name) const {
  for (const auto& r : snaps_) {
    if (r.base_ino == base_ino && r.name == name && !(r.flags & format::kSnapDeleted)) return &r;
  }
  return nullptr;
}

Result<void> MetaStore::load_snapshots_locked() {
  snaps_.clear();
  snap_blocks_.clear();
  for (uint64_t g = sb_.snapshot_root; g != 0;) {
    if (snap_blocks_.size() > sb_.total_blocks) return corruption("snapshot list: the chain loops");
    auto got = get_locked(g, BlockType::kSnapshotList);
    if (!got.ok()) {
      // Read-only, the live tree stays readable without the snapshots past the damage;
      // read-write, a rewrite of the list would lose them, so the open fails.
      if (!options_.read_only || got.error().kind != ErrorKind::kCorruption) return got.take_error();
      VSFS_LOG_WARN("snapshot list: {}; the snapshots recorded from there on are not shown",
                    got.error().message);
      break;
    }
    CachedBlock* b = *got;
    auto& list = std::get<format::SnapshotList>(b->v);
    snap_blocks_.push_back(g);
    snaps_.insert(snaps_.end(), list.records.begin(), list.records.end());
    g = list.next;
  }
  return ok_result();
}

// Rewrites the whole chain (snapshot counts are small; O(records)).
Result<void> MetaStore::store_snapshots_locked() {
  for (uint64_t g : snap_blocks_) VSFS_TRY(decref_locked(g));
  snap_blocks_.clear();
  std::vector<format::SnapshotList> blocks;
  size_t used = format::kPayloadBytes;  // forces a first block
  for (const auto& r : snaps_) {
    const size_t need = format::snapshot_record_bytes(r);
    if (used + need > format::kPayloadBytes) {
      blocks.emplace_back();
      used = 16;
    }
    blocks.back().records.push_back(r);
    used += need;
  }
  uint64_t next = 0;
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    VSFS_ASSIGN_OR_RETURN(uint64_t g, alloc_meta_grain_locked());
    it->next = next;
    CachedBlock b;
    b.type = BlockType::kSnapshotList;
    b.v = std::move(*it);
    cache_.insert(g, std::move(b));
    mark_dirty_locked(g);
    snap_blocks_.insert(snap_blocks_.begin(), g);
    next = g;
  }
  sb_.snapshot_root = next;
  if (std::any_of(snaps_.begin(), snaps_.end(),
                  [](const format::SnapshotRecord& r) { return r.taker_uid != 0; })) {
    sb_.incompat |= format::kIncompatSnapshotTakers;  // never cleared: see vsfs-format(5)
  }
  mark_sb_dirty_locked();
  return ok_result();
}

Result<format::SnapshotRecord> MetaStore::create_snapshot_locked(uint64_t base_ino,
                                                                 const std::string& name,
                                                                 uint64_t now_ns,
                                                                 uint32_t taker_uid) {
  if (!format::valid_name(name) || name == "full") {
    return make_error(name.size() > format::kMaxNameBytes ? ENAMETOOLONG : EINVAL,
                      ErrorKind::kInvalidArgument, "'{}' is not a valid snapshot name", name);
  }
  if (snapshot_by_name_locked(base_ino, name)) {
    return make_error(EEXIST, ErrorKind::kExists, "snapshot '{}' exists", name);
  }
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* base, inode_locked(base_ino));
  if (!S_ISDIR(base->mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "not a directory");
  std::vector<bool> used(0x10000, false);
  size_t live = 0;
  for (const auto& r : snaps_) {
    if (!(r.flags & format::kSnapDeleted)) {
      used[r.id] = true;
      ++live;
    }
  }
  for (const auto& [held, r] : held_views_) used[held] = true;  // open files read them
  if (live >= 0xfffc) return make_error(ENOSPC, ErrorKind::kNoSpace, "too many snapshots");
  // Ids rotate so a recently deleted snapshot's id is not reused at once.
  uint16_t id = 0;
  for (uint32_t k = 0; k < 0xfffc && id == 0; ++k) {
    const uint16_t cand = static_cast<uint16_t>(1 + (last_snap_id_ + k) % 0xfffc);
    if (!used[cand]) id = cand;
  }
  last_snap_id_ = id;
  // The taker's deleted record of the same directory and name is superseded; another
  // taker's stays (a backup point of theirs).
  std::erase_if(snaps_, [&](const format::SnapshotRecord& r) {
    return r.base_ino == base_ino && r.name == name && r.taker_uid == taker_uid;
  });
  format::SnapshotRecord rec;
  rec.change_id = sb_.generation;
  rec.created_ns = now_ns;
  rec.inode_root = sb_.inode_root;
  rec.inode_height = sb_.inode_height;
  rec.base_ino = base_ino;
  rec.next_ino = sb_.next_ino;
  rec.id = id;
  rec.taker_uid = taker_uid;
  rec.name = name;
  VSFS_TRY(incref_locked(sb_.inode_root));
  snaps_.push_back(rec);
  ++sb_.generation;
  ++lifetime_mount_.snapshots_taken;
  mark_sb_dirty_locked();
  VSFS_TRY(store_snapshots_locked());
  return rec;
}

void MetaStore::drop_view_dirs_locked(uint16_t view) {
  for (auto k = dir_lru_.begin(); k != dir_lru_.end();) {
    const uint64_t key = *k++;  // drop_dir_locked erases k's node
    if ((key >> 48) == view) drop_dir_locked(key);
  }
}

void MetaStore::unhold_snapshot_view_locked(uint16_t id) {
  if (held_views_.erase(id) != 0) drop_view_dirs_locked(id);  // the id may be reused now
}

Result<void> MetaStore::delete_snapshot_locked(uint64_t base_ino, const std::string& name,
                                               bool keep_readable) {
  auto it = std::find_if(snaps_.begin(), snaps_.end(), [&](const format::SnapshotRecord& r) {
    return r.base_ino == base_ino && r.name == name && !(r.flags & format::kSnapDeleted);
  });
  if (it == snaps_.end()) return make_error(ENOENT, ErrorKind::kNotFound, "no snapshot '{}'", name);
  VSFS_TRY(push_release_locked(it->inode_root, it->inode_height, format::TreeKind::kInodeTable, 0));
  const uint16_t view = it->id;
  if (keep_readable) {
    held_views_[view] = *it;
  } else {
    drop_view_dirs_locked(view);
  }
  it->flags |= format::kSnapDeleted;
  it->inode_root = 0;
  it->inode_height = 0;
  // Bounded history per taker: drop the taker's oldest deleted records beyond
  // history_max_.
  const uint32_t taker = it->taker_uid;
  auto taker_deleted = [taker](const format::SnapshotRecord& r) {
    return (r.flags & format::kSnapDeleted) != 0 && r.taker_uid == taker;
  };
  size_t deleted = std::count_if(snaps_.begin(), snaps_.end(), taker_deleted);
  for (auto d = snaps_.begin(); deleted > history_max_ && d != snaps_.end();) {
    if (taker_deleted(*d)) {
      d = snaps_.erase(d);
      --deleted;
    } else {
      ++d;
    }
  }
  ++lifetime_mount_.snapshots_deleted;
  return store_snapshots_locked();
}

}  // namespace vsfs::meta
