// The metadata cache: its accounting, LRU list and trim, and the encoding and decoding
// of cached blocks, dispatching on the block type.
#include "meta/meta_cache.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "util/assert.h"

namespace vsfs::meta {

using format::BlockType;

namespace {

// What the allocator adds to each allocation (glibc: a 16-byte header and rounding).
constexpr uint64_t kMallocOverheadBytes = 16;

uint64_t string_heap_bytes(const std::string& s) {
  static const size_t inline_capacity = std::string().capacity();
  return s.capacity() > inline_capacity ? s.capacity() + 1 + kMallocOverheadBytes : 0;
}

template <typename T>
uint64_t vector_heap_bytes(const std::vector<T>& v) {
  return v.capacity() == 0 ? 0 : v.capacity() * sizeof(T) + kMallocOverheadBytes;
}

// Heap memory a decoded block owns beyond the object itself. Tree nodes, inode leaves
// and the tables are fixed arrays inside the object.
uint64_t heap_bytes(const CachedBlock& b) {
  if (const auto* d = std::get_if<format::DirBlock>(&b.v)) {
    uint64_t n = vector_heap_bytes(d->entries);
    for (const auto& e : d->entries) n += string_heap_bytes(e.name);
    return n;
  }
  if (const auto* l = std::get_if<format::ReleaseList>(&b.v)) return vector_heap_bytes(l->entries);
  if (const auto* e = std::get_if<format::ExtraBlock>(&b.v)) return string_heap_bytes(e->piece);
  if (const auto* l = std::get_if<format::SnapshotList>(&b.v)) {
    uint64_t n = vector_heap_bytes(l->records);
    for (const auto& r : l->records) n += string_heap_bytes(r.name);
    return n;
  }
  return 0;
}

}  // namespace

uint64_t MetaCache::block_bytes(const CachedBlock& b) {
  // The hash map's node (its link and the entry, block included), the bucket that
  // points at it (one per entry at the default load factor) and the node's allocation.
  constexpr uint64_t kNodeBytes =
      sizeof(void*) + sizeof(std::pair<const uint64_t, Entry>) + sizeof(void*) +
      kMallocOverheadBytes;
  return kNodeBytes + heap_bytes(b);
}

MetaCache::Entry* MetaCache::entry(uint64_t grain) {
  auto it = entries_.find(grain);
  return it == entries_.end() ? nullptr : &it->second;
}

const MetaCache::Entry* MetaCache::entry(uint64_t grain) const {
  auto it = entries_.find(grain);
  return it == entries_.end() ? nullptr : &it->second;
}

void MetaCache::unlink(Hook& h) {
  h.prev->next = h.next;
  h.next->prev = h.prev;
  h.prev = h.next = nullptr;
}

void MetaCache::push_front(Hook& h) {
  h.prev = &lru_;
  h.next = lru_.next;
  lru_.next->prev = &h;
  lru_.next = &h;
}

void MetaCache::settle(Entry& e, bool was_evictable, bool was_dirty) {
  const bool evictable = e.evictable();
  if (evictable && !was_evictable) {
    push_front(e);
    evictable_bytes_ += e.bytes;
    ++evictable_blocks_;
  } else if (!evictable && was_evictable) {
    unlink(e);
    evictable_bytes_ -= e.bytes;
    --evictable_blocks_;
  }
  if (e.dirty && !was_dirty) dirty_bytes_ += e.bytes;
  if (!e.dirty && was_dirty) dirty_bytes_ -= e.bytes;
}

void MetaCache::remove(Entry& e) {
  if (e.evictable()) {
    unlink(e);
    evictable_bytes_ -= e.bytes;
    --evictable_blocks_;
  }
  if (e.dirty) dirty_bytes_ -= e.bytes;
  bytes_ -= e.bytes;
  const uint64_t grain = e.grain;  // erase() destroys e
  entries_.erase(grain);
}

CachedBlock* MetaCache::find(uint64_t grain) {
  Entry* e = entry(grain);
  if (e == nullptr) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  if (e->evictable() && lru_.next != e) {
    unlink(*e);
    push_front(*e);
  }
  return &e->block;
}

CachedBlock* MetaCache::peek(uint64_t grain) {
  Entry* e = entry(grain);
  return e == nullptr ? nullptr : &e->block;
}

const CachedBlock* MetaCache::peek(uint64_t grain) const {
  const Entry* e = entry(grain);
  return e == nullptr ? nullptr : &e->block;
}

CachedBlock* MetaCache::insert(uint64_t grain, CachedBlock block) {
  if (Entry* old = entry(grain)) remove(*old);
  Entry& e = entries_.try_emplace(grain).first->second;
  e.grain = grain;
  e.block = std::move(block);
  e.bytes = block_bytes(e.block);
  bytes_ += e.bytes;
  settle(e, false, false);
  return &e.block;
}

void MetaCache::erase(uint64_t grain) {
  if (Entry* e = entry(grain)) remove(*e);
}

bool MetaCache::mark_dirty(uint64_t grain) {
  Entry* e = entry(grain);
  VSFS_ASSERT(e != nullptr);
  if (e->dirty) return false;
  const bool was_evictable = e->evictable();
  e->dirty = true;
  settle(*e, was_evictable, false);
  return true;
}

bool MetaCache::dirty(uint64_t grain) const {
  const Entry* e = entry(grain);
  return e != nullptr && e->dirty;
}

CachedBlock* MetaCache::start_write(uint64_t grain) {
  Entry* e = entry(grain);
  if (e == nullptr || !e->dirty) return nullptr;
  // A dirty block may have grown or shrunk (directory entries): account it as it is
  // written, which is how it stays until it is dirtied again.
  const uint64_t now = block_bytes(e->block);
  bytes_ = bytes_ - e->bytes + now;
  dirty_bytes_ = dirty_bytes_ - e->bytes + now;
  e->bytes = now;
  e->dirty = false;
  e->writing = true;
  settle(*e, false, true);
  return &e->block;
}

void MetaCache::finish_write(uint64_t grain) {
  Entry* e = entry(grain);
  if (e == nullptr || !e->writing) return;
  e->writing = false;
  settle(*e, false, e->dirty);
}

void MetaCache::pin(uint64_t grain) {
  Entry* e = entry(grain);
  VSFS_ASSERT(e != nullptr);
  const bool was_evictable = e->evictable();
  e->pinned = true;
  settle(*e, was_evictable, e->dirty);
}

void MetaCache::unpin(uint64_t grain) {
  Entry* e = entry(grain);
  if (e == nullptr || !e->pinned) return;
  const bool was_evictable = e->evictable();
  e->pinned = false;
  settle(*e, was_evictable, e->dirty);
}

void MetaCache::trim() {
  const uint64_t low_water = budget_ - std::min(budget_ / 8, kTrimSlackBytesMax);
  while (bytes_ + outside_bytes_ > low_water && evictable_blocks_ > kKeepRecentBlocks) {
    remove(*static_cast<Entry*>(lru_.prev));
    ++evictions_;
  }
}

MetaCacheStats MetaCache::stats() const {
  MetaCacheStats s;
  s.bytes = bytes_;
  s.budget_bytes = budget_;
  s.unevictable_bytes = bytes_ - evictable_bytes_;
  s.dirty_bytes = dirty_bytes_;
  s.blocks = entries_.size();
  s.evictable_blocks = evictable_blocks_;
  s.hits = hits_;
  s.misses = misses_;
  s.evictions = evictions_;
  return s;
}

void encode_cached(const CachedBlock& b, uint64_t self, uint64_t generation, format::Grain out) {
  switch (b.type) {
    case BlockType::kMapLeaf:
    case BlockType::kMapInterior:
    case BlockType::kInodeInterior:
      format::encode_tree_node(std::get<format::TreeNode>(b.v), self, generation, out);
      return;
    case BlockType::kInodeLeaf:
      format::encode_inode_leaf(std::get<format::InodeLeaf>(b.v), self, generation, out);
      return;
    case BlockType::kDirBlock:
      format::encode_dir_block(std::get<format::DirBlock>(b.v), self, generation, out);
      return;
    case BlockType::kBlockTable:
      format::encode_block_table(std::get<format::BlockTableGrain>(b.v), self, generation, out);
      return;
    case BlockType::kRefcountTable:
      format::encode_refcounts(std::get<format::RefcountGrain>(b.v), self, generation, out);
      return;
    case BlockType::kReleaseList:
      format::encode_release_list(std::get<format::ReleaseList>(b.v), self, generation, out);
      return;
    case BlockType::kSnapshotList:
      format::encode_snapshot_list(std::get<format::SnapshotList>(b.v), self, generation, out);
      return;
    case BlockType::kInodeExtra:
      format::encode_extra_block(std::get<format::ExtraBlock>(b.v), self, generation, out);
      return;
    case BlockType::kSpaceSummary:
      format::encode_space_summary(std::get<format::SpaceSummaryGrain>(b.v), self, generation,
                                   out);
      return;
    default:
      VSFS_ASSERT(false && "not a cacheable block type");
  }
}

Result<CachedBlock> decode_cached(format::ConstGrain in, uint64_t self, BlockType type,
                                  uint64_t first_ino) {
  CachedBlock b;
  b.type = type;
  // Reference count grains are created by mkfs as zeros (a hole on a file-backed
  // datastore): an all-zero grain is an empty table grain.
  if (type == BlockType::kRefcountTable &&
      std::all_of(in.begin(), in.end(), [](uint8_t c) { return c == 0; })) {
    b.v = format::RefcountGrain{};
    return b;
  }
  switch (type) {
    case BlockType::kMapLeaf:
    case BlockType::kMapInterior:
    case BlockType::kInodeInterior: {
      VSFS_ASSIGN_OR_RETURN(auto node, format::decode_tree_node(in, self));
      if (node.type != type) {
        return corruption(fmt::format("grain {}: expected a {}, found a {}", self,
                                      format::block_type_name(type),
                                      format::block_type_name(node.type)));
      }
      b.owner = node.owner;
      b.v = std::move(node);
      return b;
    }
    case BlockType::kInodeLeaf: {
      VSFS_ASSIGN_OR_RETURN(auto leaf, format::decode_inode_leaf(in, self, first_ino));
      b.v = std::move(leaf);
      return b;
    }
    case BlockType::kDirBlock: {
      VSFS_ASSIGN_OR_RETURN(auto d, format::decode_dir_block(in, self));
      b.owner = d.owner;
      b.v = std::move(d);
      return b;
    }
    case BlockType::kBlockTable: {
      VSFS_ASSIGN_OR_RETURN(auto t, format::decode_block_table(in, self));
      b.v = std::move(t);
      return b;
    }
    case BlockType::kRefcountTable: {
      VSFS_ASSIGN_OR_RETURN(auto t, format::decode_refcounts(in, self));
      b.v = std::move(t);
      return b;
    }
    case BlockType::kReleaseList: {
      VSFS_ASSIGN_OR_RETURN(auto l, format::decode_release_list(in, self));
      b.v = std::move(l);
      return b;
    }
    case BlockType::kSnapshotList: {
      VSFS_ASSIGN_OR_RETURN(auto l, format::decode_snapshot_list(in, self));
      b.v = std::move(l);
      return b;
    }
    case BlockType::kInodeExtra: {
      VSFS_ASSIGN_OR_RETURN(auto e, format::decode_extra_block(in, self));
      b.owner = e.owner;
      b.v = std::move(e);
      return b;
    }
    case BlockType::kSpaceSummary: {
      VSFS_ASSIGN_OR_RETURN(auto s, format::decode_space_summary(in, self));
      b.v = std::move(s);
      return b;
    }
    default:
      return corruption(fmt::format("grain {}: {} is not a cacheable block", self,
                                    format::block_type_name(type)));
  }
}

}  // namespace vsfs::meta
