// MetaCache: decoded metadata blocks of an open datastore, keyed by physical grain and
// bounded by a budget in bytes (OpenOptions::meta_cache_bytes, [journal] meta_cache_mib).
//
// A block is decoded (and so validated) once when read and encoded again only when a
// transaction that changed it commits. Each block is accounted at an estimate of the
// memory it holds: the decoded object (about 6 KiB whatever its type, as the variant is
// as large as a tree node), what its vectors and strings hold on the heap, and the
// cache's own bookkeeping. Clean blocks sit on a least-recently-used list, and trim()
// evicts from its cold end until the cache is a little under the budget. A block that
// could not be read back as it is now is never evicted:
//   - dirty: changed in the open transaction;
//   - writing: its image is in the transaction a commit is writing, so it is neither at
//     its home nor among the journal's pending images until that commit is done (after
//     a failed commit it stays, so reads keep seeing what they saw);
//   - pinned: the space summary, and the block-table grains that describe space in use
//     (one grain per 504 MiB), which the allocator and the data path read where they
//     cannot fail or wait.
// An evicted block is read again on its next use, from the journal's pending images
// when its newest image is committed but not yet checkpointed, else from its home: one
// 4 KiB read, synchronous under the metadata lock (MetaStore::get_locked), or for the
// data path's map lookups asynchronous with the request waiting for it
// (MetaStore::fetch_missed_locked). So the cache holds more than the budget only by
// what it may not evict, plus the few most recently used blocks trim always leaves
// (kKeepRecentBlocks).
//
// Pointers returned by find/peek/insert stay valid until the block is erased or evicted.
// MetaStore trims only when its mutex is released (MetaMutex, meta_mutex.h), never
// inside a method, so a pointer is good for as long as its holder keeps the mutex.
// Thread-safety: none; MetaStore guards it with its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <variant>

#include "format/format.h"
#include "meta/meta_mutex.h"

namespace vsfs::meta {

struct CachedBlock {
  format::BlockType type = format::BlockType::kMapLeaf;
  uint64_t owner = 0;
  std::variant<format::TreeNode, format::InodeLeaf, format::DirBlock,
               format::BlockTableGrain, format::RefcountGrain, format::ReleaseList,
               format::SnapshotList, format::ExtraBlock, format::SpaceSummaryGrain>
      v;

  format::TreeNode& node() { return std::get<format::TreeNode>(v); }
  format::InodeLeaf& inodes() { return std::get<format::InodeLeaf>(v); }
  format::DirBlock& dir() { return std::get<format::DirBlock>(v); }
  format::BlockTableGrain& blocks() { return std::get<format::BlockTableGrain>(v); }
  format::RefcountGrain& refs() { return std::get<format::RefcountGrain>(v); }
  format::ReleaseList& releases() { return std::get<format::ReleaseList>(v); }
  format::ExtraBlock& extra() { return std::get<format::ExtraBlock>(v); }
  format::SpaceSummaryGrain& summary() { return std::get<format::SpaceSummaryGrain>(v); }
};

// Encodes a cached block into its on-disk grain.
void encode_cached(const CachedBlock& b, uint64_t self, uint64_t generation, format::Grain out);
// Decodes a grain read from `self` as `type`. first_ino is used for inode leaves.
Result<CachedBlock> decode_cached(format::ConstGrain in, uint64_t self, format::BlockType type,
                                  uint64_t first_ino);

struct MetaCacheStats {
  uint64_t bytes = 0;              // estimated memory of all cached blocks
  uint64_t budget_bytes = 0;
  uint64_t unevictable_bytes = 0;  // of bytes: dirty, writing and pinned blocks
  uint64_t dirty_bytes = 0;        // of bytes: dirty blocks
  uint64_t blocks = 0;
  uint64_t evictable_blocks = 0;   // clean blocks on the LRU list
  uint64_t hits = 0, misses = 0;   // find()
  uint64_t evictions = 0;
};

class MetaCache final : public Trimmable {
 public:
  // trim() leaves this many most recently used clean blocks even over the budget, so
  // that a request which reads its blocks one at a time without the lock (the data
  // path's metadata queue, MetaStore::fetch_missed_locked) finds the ones it read when
  // it looks again, also while dirty blocks fill the budget.
  static constexpr uint64_t kKeepRecentBlocks = 32;
  // The most trim() leaves under the budget, so that it does not run at every release
  // of the lock; capped so that one trim stays short (~170 evictions).
  static constexpr uint64_t kTrimSlackBytesMax = 1ull << 20;

  explicit MetaCache(uint64_t budget_bytes) : budget_(budget_bytes) {
    lru_.prev = lru_.next = &lru_;
  }
  MetaCache(const MetaCache&) = delete;
  MetaCache& operator=(const MetaCache&) = delete;

  // The block at `grain`, or nullptr (counted as a miss). A hit makes a clean block the
  // most recently used.
  CachedBlock* find(uint64_t grain);
  // The same without counting or reordering: for finding again a block already in use.
  CachedBlock* peek(uint64_t grain);
  const CachedBlock* peek(uint64_t grain) const;
  // Adds (or replaces) the block at `grain`, clean and most recently used.
  CachedBlock* insert(uint64_t grain, CachedBlock block);
  void erase(uint64_t grain);

  // The block is changed in the open transaction: kept until a commit writes it.
  // Returns false when it was dirty already. The block must be cached.
  bool mark_dirty(uint64_t grain);
  bool dirty(uint64_t grain) const;
  // A commit takes the block's image: returns the block if it was dirty (now "writing":
  // still kept), else nullptr (not cached, or not dirty).
  CachedBlock* start_write(uint64_t grain);
  // The commit is durable and the image can be found in the journal's pending images:
  // the block may go (unless it was dirtied again meanwhile). No-op when not writing.
  void finish_write(uint64_t grain);
  // The block is never evicted, or may be again.
  void pin(uint64_t grain);
  void unpin(uint64_t grain);

  bool over_budget() const override { return bytes_ + outside_bytes_ > budget_; }
  // Metadata memory held outside the cache that shares its budget (the journal's
  // images awaiting a checkpoint, MetaStore's directory indexes): trim() leaves that
  // much less to cached blocks.
  void set_outside_bytes(uint64_t bytes) { outside_bytes_ = bytes; }
  uint64_t dirty_bytes() const { return dirty_bytes_; }
  // Evicts least recently used clean blocks until the cache is under the low-water mark
  // (budget less min(budget / 8, kTrimSlackBytesMax)) or only kKeepRecentBlocks clean
  // blocks are left.
  void trim() override;

  MetaCacheStats stats() const;
  size_t size() const { return entries_.size(); }
  uint64_t budget_bytes() const { return budget_; }

  // The estimate a block is accounted at.
  static uint64_t block_bytes(const CachedBlock& b);

 private:
  struct Hook {
    Hook* prev = nullptr;
    Hook* next = nullptr;
  };
  struct Entry : Hook {
    uint64_t grain = 0;
    uint64_t bytes = 0;
    bool dirty = false, writing = false, pinned = false;
    CachedBlock block;
    bool evictable() const { return !dirty && !writing && !pinned; }
  };

  Entry* entry(uint64_t grain);
  const Entry* entry(uint64_t grain) const;
  // Puts the entry on the LRU list (most recent) or takes it off, as its flags say, and
  // keeps the byte counters in step. `was_evictable`/`was_dirty`: the flags before.
  void settle(Entry& e, bool was_evictable, bool was_dirty);
  static void unlink(Hook& h);
  void push_front(Hook& h);
  void remove(Entry& e);  // accounting, off the list, out of the map

  uint64_t budget_;
  // Entries live in the map's nodes, which never move: pointers to them are stable.
  std::unordered_map<uint64_t, Entry> entries_;
  Hook lru_;  // sentinel: lru_.next is the most recently used clean block, lru_.prev the least
  uint64_t bytes_ = 0, evictable_bytes_ = 0, dirty_bytes_ = 0;
  uint64_t outside_bytes_ = 0;
  uint64_t evictable_blocks_ = 0;
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace vsfs::meta
