// Encoding and decoding of cached metadata blocks, dispatching on the block type.
#include "meta/meta_cache.h"

#include <algorithm>

namespace vsfs::meta {

using format::BlockType;

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
    default:
      return corruption(fmt::format("grain {}: {} is not a cacheable block", self,
                                    format::block_type_name(type)));
  }
}

}  // namespace vsfs::meta
