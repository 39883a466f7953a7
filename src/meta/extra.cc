// Inode extra chains: a symlink's target and an inode's xattrs (format.h, "Inode extra
// chain"). A chain is written whole and never changed in place, so sharing it with a
// snapshot needs nothing but the reference count of its first block, which the inode
// records that name it hold (incref_children_locked counts it when an inode leaf is
// copied). Letting a chain go drops that count and, when it reaches zero, the next
// block's, and so on.
#include <sys/stat.h>

#include "meta/meta_store.h"

namespace vsfs::meta {

using format::BlockType;

void MetaStore::use_posix_inodes_locked() {
  if ((sb_.incompat & format::kIncompatPosixInodes) != 0) return;
  sb_.incompat |= format::kIncompatPosixInodes;  // never cleared: see vsfs-format(5)
  mark_sb_dirty_locked();
}

Result<format::InodeExtra> MetaStore::extra_locked(uint64_t ino, uint16_t view) {
  VSFS_ASSIGN_OR_RETURN(const InodeRecord* rec, inode_locked(ino, view));
  std::string content;
  uint64_t g = rec->extra;
  for (size_t n = 0; g != 0; ++n) {
    if (n == format::kMaxExtraBlocks) {
      return corruption(fmt::format("inode {}: extra chain longer than {} blocks", ino,
                                    format::kMaxExtraBlocks));
    }
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(g, BlockType::kInodeExtra));
    if (b->extra().owner != ino) {
      return corruption(fmt::format("inode {}: extra block at grain {} belongs to inode {}", ino,
                                    g, b->extra().owner));
    }
    content += b->extra().piece;
    g = b->extra().next;
  }
  if (content.empty()) return format::InodeExtra{};
  return format::decode_inode_extra(content, fmt::format("inode {}: extra chain", ino));
}

Result<void> MetaStore::set_extra_locked(uint64_t ino, const format::InodeExtra& e) {
  VSFS_ASSERT(!options_.read_only);
  const bool empty = e.target.empty() && e.xattrs.empty();
  const std::string content = empty ? std::string() : format::encode_inode_extra(e);
  // The new chain, built from its last block so that each knows the next.
  std::vector<uint64_t> taken;
  auto give_back = [&] {
    for (uint64_t g : taken) (void)decref_locked(g);
  };
  uint64_t next = 0;
  const size_t pieces =
      (content.size() + format::kExtraPieceBytes - 1) / format::kExtraPieceBytes;
  for (size_t i = pieces; i-- > 0;) {
    auto g = alloc_meta_grain_locked();
    if (!g.ok()) {
      give_back();
      return g.error();
    }
    taken.push_back(*g);
    CachedBlock b;
    b.type = BlockType::kInodeExtra;
    b.owner = ino;
    b.v = format::ExtraBlock{ino, next,
                             content.substr(i * format::kExtraPieceBytes, format::kExtraPieceBytes)};
    cache_.insert(*g, std::move(b));
    mark_dirty_locked(*g);
    next = *g;
  }
  auto rec = inode_for_update_locked(ino);
  if (!rec.ok()) {
    give_back();
    return rec.error();
  }
  const uint64_t old = (*rec)->extra;
  (*rec)->extra = next;
  if (!empty) use_posix_inodes_locked();
  return drop_extra_locked(old);
}

Result<void> MetaStore::drop_extra_locked(uint64_t g) {
  for (size_t n = 0; g != 0; ++n) {
    if (n == format::kMaxExtraBlocks) {
      return corruption(fmt::format("extra chain longer than {} blocks", format::kMaxExtraBlocks));
    }
    VSFS_ASSIGN_OR_RETURN(CachedBlock * b, get_locked(g, BlockType::kInodeExtra));
    const uint64_t next = b->extra().next;
    VSFS_ASSIGN_OR_RETURN(uint16_t left, decref_locked(g));
    if (left > 0) return ok_result();  // still named by another record (a snapshot's)
    g = next;
  }
  return ok_result();
}

}  // namespace vsfs::meta
