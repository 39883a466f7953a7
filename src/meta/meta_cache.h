// MetaCache: decoded metadata blocks of an open datastore, keyed by physical grain.
//
// A block is decoded (and so validated) once when first read and encoded again only
// when a transaction that changed it commits. Blocks are not evicted in this version:
// metadata is about 1/250 of the data written (16 KiB of map per 4 MiB of disk), so a
// datastore with 8 GiB written keeps ~40 MiB here.
// Thread-safety: none; MetaStore guards it with its mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <variant>

#include "format/format.h"

namespace vsfs::meta {

struct CachedBlock {
  format::BlockType type = format::BlockType::kMapLeaf;
  uint64_t owner = 0;
  bool dirty = false;  // changed in the open transaction
  std::variant<format::TreeNode, format::InodeLeaf, format::DirBlock,
               format::BlockTableGrain, format::RefcountGrain, format::ReleaseList,
               format::SnapshotList>
      v;

  format::TreeNode& node() { return std::get<format::TreeNode>(v); }
  format::InodeLeaf& inodes() { return std::get<format::InodeLeaf>(v); }
  format::DirBlock& dir() { return std::get<format::DirBlock>(v); }
  format::BlockTableGrain& blocks() { return std::get<format::BlockTableGrain>(v); }
  format::RefcountGrain& refs() { return std::get<format::RefcountGrain>(v); }
  format::ReleaseList& releases() { return std::get<format::ReleaseList>(v); }
};

// Encodes a cached block into its on-disk grain.
void encode_cached(const CachedBlock& b, uint64_t self, uint64_t generation, format::Grain out);
// Decodes a grain read from `self` as `type`. first_ino is used for inode leaves.
Result<CachedBlock> decode_cached(format::ConstGrain in, uint64_t self, format::BlockType type,
                                  uint64_t first_ino);

class MetaCache {
 public:
  CachedBlock* find(uint64_t grain) {
    auto it = blocks_.find(grain);
    return it == blocks_.end() ? nullptr : it->second.get();
  }
  CachedBlock* insert(uint64_t grain, CachedBlock block) {
    auto& slot = blocks_[grain];
    slot = std::make_unique<CachedBlock>(std::move(block));
    return slot.get();
  }
  void erase(uint64_t grain) { blocks_.erase(grain); }
  size_t size() const { return blocks_.size(); }

 private:
  std::unordered_map<uint64_t, std::unique_ptr<CachedBlock>> blocks_;
};

}  // namespace vsfs::meta
