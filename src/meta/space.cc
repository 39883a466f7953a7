// Space accounting: the block table, reference counts, the free lists and allocation.
//
// A storage block is formatted-free, to-be-formatted-free, in use for data, in use for
// metadata, or reserved (fixed regions). Grain reference counts live in the refcount
// table; a block's used_grains counts its grains with a nonzero count. A block whose
// last grain is freed goes to the to-be-formatted list in the same transaction and is
// handed out again only after the checkpoint that follows its commit.
//
// A formatted free block reads as zeros, except after a crash: a write into a block
// whose allocation had not committed yet leaves data there while the block table still
// says formatted. So a datastore opened after a crash moves every formatted free block
// to the to-be-formatted list (unformat_after_crash) and the formatter zeroes them again
// in the background; allocation takes them meanwhile like any to-be-formatted block
// (with the allocation window, only those the allocator may have handed out).
//
// The free lists are a FreeBlocks (free_blocks.h): the block-table grains loaded (and
// pinned) are those the space summary marks at open and those the allocator has taken
// blocks from since; every other grain describes formatted free blocks only. The
// summary's bits follow the table at each commit (update_space_summary_locked).
#include <algorithm>

#include "device/device.h"
#include "meta/meta_store.h"
#include "util/log.h"

namespace vsfs::meta {

using format::BlockState;
using format::BlockType;

Result<void> MetaStore::load_block_table() {
  free_ = FreeBlocks(sb_.first_data_block, sb_.total_blocks);
  summary_on_ = (sb_.ro_compat & format::kRoCompatSpaceSummary) != 0;
  if (summary_on_) {
    for (uint64_t i = 0; i < format::space_summary_grains(sb_.block_table_grains); ++i) {
      const uint64_t sg = format::table_grain(sb_, format::Table::kSpaceSummary, i);
      VSFS_TRY(get_locked(sg, BlockType::kSpaceSummary));
      cache_.pin(sg);
    }
  }
  for (uint64_t g = 0; g < free_.groups(); ++g) {
    if (summary_on_) {
      const CachedBlock* s = cache_.peek(summary_grain_of(g));
      if (!std::get<format::SpaceSummaryGrain>(s->v).test(g % format::kGroupsPerSummaryGrain)) {
        continue;  // all formatted free: read when the allocator gets there
      }
    }
    VSFS_TRY(load_group_locked(g));
  }
  return ok_result();
}

Result<void> MetaStore::load_group_locked(uint64_t g) {
  const uint64_t tg = block_table_grain_of(g * format::kBlocksPerTableGrain);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * t, get_locked(tg, BlockType::kBlockTable));
  cache_.pin(tg);  // block_entry_locked reads it without IO
  free_.make_explicit_empty(g);
  for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
    const uint64_t b = g * format::kBlocksPerTableGrain + j;
    if (b >= sb_.total_blocks) break;
    const auto& e = t->blocks().entries[j];
    const bool fixed = format::reserved_block(sb_, b);
    if (fixed != (e.state == BlockState::kReserved)) {
      return corruption(fmt::format("block table: storage block {} is {} but should {}be reserved",
                                    b, static_cast<int>(e.state), fixed ? "" : "not "));
    }
    switch (e.state) {
      case BlockState::kFormattedFree: free_.insert(FreeBlocks::kFormatted, b); break;
      case BlockState::kToFormatFree: free_.insert(FreeBlocks::kToFormat, b); break;
      case BlockState::kData:
        used_grains_ += e.used_grains;
        break;
      case BlockState::kMeta:
        used_grains_ += e.used_grains;
        meta_slack_grains_ += kGrainsPerBlock - e.used_grains;
        break;
      case BlockState::kReserved: break;
    }
  }
  return ok_result();
}

Result<void> MetaStore::ensure_group_locked(uint64_t block) {
  const uint64_t g = FreeBlocks::group_of(block);
  if (free_.is_explicit(g)) return ok_result();
  const uint64_t tg = block_table_grain_of(block);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * t, get_locked(tg, BlockType::kBlockTable));
  for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
    const uint64_t b = g * format::kBlocksPerTableGrain + j;
    if (b >= sb_.total_blocks) break;
    const auto& e = t->blocks().entries[j];
    if (b >= sb_.first_data_block && e.state == BlockState::kFormattedFree) continue;
    cache_.unpin(tg);
    return corruption(fmt::format("space summary: block-table grain {} is marked as "
                                  "describing formatted free blocks only, but storage block "
                                  "{} is {}",
                                  g, b, format::block_state_name(e.state)));
  }
  cache_.pin(tg);  // also when it was cached already (written, not yet evicted)
  free_.make_explicit(g);
  return ok_result();
}

void MetaStore::update_space_summary_locked() {
  for (uint64_t g : groups_changed_) {
    const uint64_t tg = block_table_grain_of(g * format::kBlocksPerTableGrain);
    const CachedBlock* t = cache_.peek(tg);
    VSFS_ASSERT(t != nullptr);  // changed: dirty or being written
    bool in_use = false;
    for (const auto& e : std::get<format::BlockTableGrain>(t->v).entries) {
      in_use = in_use || e.state != BlockState::kFormattedFree;
    }
    if (summary_on_) {
      const uint64_t sg = summary_grain_of(g);
      CachedBlock* s = cache_.peek(sg);
      VSFS_ASSERT(s != nullptr);  // pinned at open
      if (s->summary().test(g % format::kGroupsPerSummaryGrain) != in_use) {
        s->summary().set(g % format::kGroupsPerSummaryGrain, in_use);
        mark_dirty_locked(sg);
      }
    }
    // Every block formatted free, and on the formatted list (none held back): the
    // group's grain may leave memory once written.
    if (!in_use && free_.is_explicit(g) && free_.try_make_implicit(g)) {
      cache_.unpin(tg);
    }
  }
  groups_changed_.clear();
}

// After a crash, the formatted free blocks the allocator may have handed out since the
// last durable commit go back to the to-be-formatted list: with the allocation window,
// those below its end (it takes the lowest first and never passes the window without a
// commit covering the block first); without it, all of them.
Result<void> MetaStore::unformat_after_crash() {
  uint64_t count, end;
  {
    std::lock_guard lock(mu_);
    end = window_on_ ? sb_.alloc_window_end : UINT64_MAX;
    count = free_.count_below(FreeBlocks::kFormatted, end);
    crash_reformat_blocks_ = count;
  }
  if (count == 0) return ok_result();
  VSFS_LOG_INFO("the datastore was not closed cleanly: {} formatted free block{} may "
                "hold data from writes the stop cut short{}; formatted again in the "
                "background",
                count, count == 1 ? "" : "s",
                window_on_ ? fmt::format(" (the allocation window ended at block {})", end) : "");
  for (;;) {
    bool big;
    {
      std::lock_guard lock(mu_);
      const auto first = free_.first(FreeBlocks::kFormatted);
      if (!first || *first >= end) break;
      const uint64_t block = *first;
      VSFS_ASSIGN_OR_RETURN(format::BlockEntry * e, block_entry_for_update_locked(block));
      VSFS_ASSERT(e->state == BlockState::kFormattedFree && e->used_grains == 0);
      e->state = BlockState::kToFormatFree;
      free_.erase(FreeBlocks::kFormatted, block);
      free_.insert(FreeBlocks::kToFormat, block);
      big = wants_commit_locked();
    }
    if (big) VSFS_TRY(commit());
  }
  return commit();
}

format::BlockEntry MetaStore::block_entry_locked(uint64_t block) const {
  if (!free_.is_explicit(FreeBlocks::group_of(block))) return format::BlockEntry{};
  const CachedBlock* t = cache_.peek(block_table_grain_of(block));
  VSFS_ASSERT(t != nullptr);  // an explicit group's grain is pinned
  return std::get<format::BlockTableGrain>(t->v).entries[block % format::kBlocksPerTableGrain];
}

Result<format::BlockEntry*> MetaStore::block_entry_for_update_locked(uint64_t block) {
  VSFS_ASSERT(block < sb_.total_blocks);
  VSFS_TRY(ensure_group_locked(block));
  const uint64_t tg = block_table_grain_of(block);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * t, get_locked(tg, BlockType::kBlockTable));
  mark_dirty_locked(tg);
  groups_changed_.insert(FreeBlocks::group_of(block));
  return &t->blocks().entries[block % format::kBlocksPerTableGrain];
}

Result<uint16_t> MetaStore::refcount_locked(uint64_t grain) {
  VSFS_ASSIGN_OR_RETURN(CachedBlock * r, get_locked(refcount_grain_of(grain),
                                                     BlockType::kRefcountTable));
  return r->refs().counts[grain % format::kGrainsPerRefcountGrain];
}

Result<uint16_t> MetaStore::incref_locked(uint64_t grain) {
  const uint64_t rg = refcount_grain_of(grain);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * r, get_locked(rg, BlockType::kRefcountTable));
  uint16_t& c = r->refs().counts[grain % format::kGrainsPerRefcountGrain];
  if (c == UINT16_MAX) {
    return make_error(EMLINK, ErrorKind::kNoSpace, "grain {} has too many references", grain);
  }
  if (c == 0) {
    // A first reference is taken only on a grain just allocated in a data or metadata
    // block. Sharing (a clone, the copy of a shared node) finds its grains referenced
    // already: a free grain there, or one outside the data area, comes from a damaged
    // map, and is an error to report, not a reason to stop the daemon.
    const uint64_t block = block_of(PhysGrain{grain}).v;
    const BlockState state = block >= sb_.first_data_block && block < sb_.total_blocks
                                 ? block_entry_locked(block).state
                                 : BlockState::kReserved;
    if (state != BlockState::kData && state != BlockState::kMeta) {
      return corruption(fmt::format("a reference to grain {} in storage block {}, which is {}: "
                                    "a map points at it",
                                    grain, block, format::block_state_name(state)));
    }
  }
  mark_dirty_locked(rg);
  if (++c == 1) {
    VSFS_ASSIGN_OR_RETURN(format::BlockEntry * e, block_entry_for_update_locked(block_of(PhysGrain{grain}).v));
    VSFS_ASSERT(e->state == BlockState::kData || e->state == BlockState::kMeta);
    VSFS_ASSERT(e->used_grains < kGrainsPerBlock);
    ++e->used_grains;
    ++used_grains_;
    if (e->state == BlockState::kMeta) --meta_slack_grains_;
  }
  return c;
}

Result<uint16_t> MetaStore::decref_locked(uint64_t grain) {
  const uint64_t rg = refcount_grain_of(grain);
  VSFS_ASSIGN_OR_RETURN(CachedBlock * r, get_locked(rg, BlockType::kRefcountTable));
  uint16_t& c = r->refs().counts[grain % format::kGrainsPerRefcountGrain];
  if (c == 0) {
    return corruption(fmt::format("refcount table: grain {} released but its count is 0", grain));
  }
  mark_dirty_locked(rg);
  if (--c == 0) {
    on_grain_freed_locked(grain);
  } else {
    unshared_open_.insert(grain);
  }
  return c;
}

void MetaStore::on_grain_freed_locked(uint64_t grain) {
  const uint64_t block = block_of(PhysGrain{grain}).v;
  auto e = block_entry_for_update_locked(block);
  VSFS_ASSERT(e.ok());
  format::BlockEntry* entry = *e;
  VSFS_ASSERT(entry->used_grains > 0);
  --entry->used_grains;
  --used_grains_;
  freed_open_.insert(grain);
  if (entry->state == BlockState::kMeta) {
    cache_.erase(grain);
    ++meta_slack_grains_;
  }
  if (entry->used_grains == 0 && block_reserved_[block] == 0) {
    if (entry->state == BlockState::kMeta) meta_slack_grains_ -= kGrainsPerBlock;
    entry->state = BlockState::kToFormatFree;
    blocks_freed_open_.push_back(block);
    block_reserved_.erase(block);
    if (meta_block_ == block) meta_block_ = 0;
  }
}

Result<bool> MetaStore::alone_locked(uint64_t grain) {
  VSFS_ASSIGN_OR_RETURN(uint16_t c, refcount_locked(grain));
  return c == 1 && !unshared_open_.count(grain) && !unshared_committing_.count(grain);
}

bool MetaStore::grain_available_locked(uint64_t grain) {
  if (reserved_.count(grain) || freed_open_.count(grain) || freed_committing_.count(grain)) {
    return false;
  }
  auto rc = refcount_locked(grain);
  return rc.ok() && *rc == 0;
}

uint64_t MetaStore::window_allowed_locked() const {
  return window_inflight_ ? std::min(window_durable_, *window_inflight_) : window_durable_;
}

uint64_t MetaStore::next_window_locked() const {
  const uint64_t want = std::max(options_.alloc_window_blocks, 2 * taken_since_commit_);
  uint64_t end = 0, n = 0;
  for (auto b = free_.first(FreeBlocks::kFormatted); b && n < want;
       b = free_.first(FreeBlocks::kFormatted, *b + 1), ++n) {
    end = *b + 1;
  }
  if (!beyond_window_.empty()) end = std::max(end, *beyond_window_.rbegin() + 1);
  return std::min<uint64_t>(end, UINT32_MAX);  // a block number in 32 bits (4 PiB)
}

bool MetaStore::beyond_window_locked(uint64_t grain) const {
  return !beyond_window_.empty() && beyond_window_.count(block_of(PhysGrain{grain}).v) != 0;
}

Result<bool> MetaStore::free_in_fact_locked(uint64_t block) {
  VSFS_TRY(ensure_group_locked(block));
  const format::BlockEntry e = block_entry_locked(block);
  std::string why;
  if (e.used_grains != 0) {
    why = fmt::format("its block-table entry counts {} grains in use", e.used_grains);
  } else {
    // The block's counts lie in one or two refcount grains: each looked up once.
    const uint64_t first = first_grain_of(BlockIndex{block}).v;
    for (uint64_t g = first; g < first + kGrainsPerBlock && why.empty();) {
      VSFS_ASSIGN_OR_RETURN(CachedBlock * r,
                            get_locked(refcount_grain_of(g), BlockType::kRefcountTable));
      const uint64_t end = std::min(first + kGrainsPerBlock,
                                    (g / format::kGrainsPerRefcountGrain + 1) *
                                        format::kGrainsPerRefcountGrain);
      for (; g < end; ++g) {
        const uint16_t c = r->refs().counts[g % format::kGrainsPerRefcountGrain];
        if (c != 0) {
          why = fmt::format("grain {} has reference count {}", g, c);
          break;
        }
      }
    }
  }
  if (why.empty()) return true;
  ++damaged_free_blocks_;
  VSFS_LOG_ERROR("storage block {} is listed as free but {}: the datastore's metadata is "
                 "damaged; vsfs leaves the block alone (run vsfs-fsck -y after unmounting)",
                 block, why);
  return false;
}

Result<uint64_t> MetaStore::take_free_block_locked(BlockState kind) {
  FreeBlocks::Kind list = FreeBlocks::kFormatted;
  bool beyond = false;
  auto choose = [&]() -> std::optional<uint64_t> {
    list = FreeBlocks::kFormatted;
    beyond = false;
    const auto formatted = free_.first(FreeBlocks::kFormatted);
    if (formatted && (!window_on_ || *formatted < window_allowed_locked())) return formatted;
    if (auto to_format = free_.first(FreeBlocks::kToFormat)) {
      // Every grain handed out from it is written in full before a map points at it, so
      // the old contents can never be read: formatting on reallocation costs no IO here.
      list = FreeBlocks::kToFormat;
      return to_format;
    }
    // Past the window: its data waits for a commit that covers it
    // (beyond_window_locked). Metadata needs no wait: it reaches its home only after the
    // commit that took it.
    beyond = formatted && kind == BlockState::kData;
    return formatted;
  };
  std::optional<uint64_t> pick = choose();
  // A free block whose counts say otherwise (damaged metadata) is never handed out:
  // taken off the list, it stays as it is for fsck.
  while (pick) {
    VSFS_ASSIGN_OR_RETURN(bool free, free_in_fact_locked(*pick));
    if (free) break;
    free_.erase(list, *pick);
    pick = choose();
  }
  Result<void> backed = ok_result();
  if (pick && kind == BlockState::kMeta) backed = back_blocks_locked(*pick, 1);
  uint64_t block;
  if (pick && backed.ok()) {
    VSFS_TRY(ensure_group_locked(*pick));  // before anything changes
    block = *pick;
    free_.erase(list, block);
  } else if (kind == BlockState::kMeta && meta_spare_ != 0) {
    // The filesystem holding the datastore is full (or the free lists are empty): the
    // spare, backed already, takes this metadata.
    block = meta_spare_;
    meta_spare_ = 0;
    meta_slack_grains_ -= kGrainsPerBlock;  // counted again below
    VSFS_LOG_WARN("metadata takes the spare storage block {}: {}", block,
                  backed.ok() ? "the datastore is full" : backed.error().message);
  } else if (!backed.ok()) {
    return backed.take_error();
  } else {
    return make_error(ENOSPC, ErrorKind::kNoSpace, "datastore is full");
  }
  VSFS_ASSIGN_OR_RETURN(format::BlockEntry * e, block_entry_for_update_locked(block));
  VSFS_ASSERT(e->used_grains == 0);
  e->state = kind;
  ++taken_since_commit_;
  if (beyond) beyond_window_.insert(block);
  if (kind == BlockState::kMeta) {
    meta_slack_grains_ += kGrainsPerBlock;
    keep_meta_spare_locked();  // after the spare went: another, if there is room
  }
  return block;
}

Result<void> MetaStore::back_blocks_locked(uint64_t first_block, uint64_t count) {
  if (options_.read_only || count == 0) return ok_result();
  auto r = device::allocate_now(dev_, first_block * kBlockBytes, count * kBlockBytes);
  if (r.ok()) return r;
  if (r.error().errno_value == ENOSPC) {
    return make_error(ENOSPC, ErrorKind::kNoSpace,
                      "the filesystem holding the datastore is full: no room for metadata "
                      "(storage block {})",
                      first_block);
  }
  return r.take_error();
}

void MetaStore::keep_meta_spare_locked() {
  if (meta_spare_ != 0 || options_.read_only) return;
  for (FreeBlocks::Kind list : {FreeBlocks::kFormatted, FreeBlocks::kToFormat}) {
    const auto last = free_.last(list);
    if (!last) continue;
    const uint64_t block = *last;  // the end of the device: data fills from the start
    if (!ensure_group_locked(block).ok() || !back_blocks_locked(block, 1).ok()) return;
    free_.erase(list, block);
    meta_spare_ = block;
    meta_slack_grains_ += kGrainsPerBlock;
    return;
  }
}

Result<void> MetaStore::back_metadata_locked() {
  // The fixed regions were backed before the replay (MetaStore::open).
  for (uint64_t b = sb_.first_data_block; b < sb_.total_blocks;) {
    if (block_entry_locked(b).state != BlockState::kMeta) {
      b = next_loaded_block_locked(b);
      continue;
    }
    uint64_t end = b + 1;
    while (end < sb_.total_blocks && block_entry_locked(end).state == BlockState::kMeta) ++end;
    VSFS_TRY(back_blocks_locked(b, end - b));
    b = end;
  }
  keep_meta_spare_locked();
  return ok_result();
}

uint64_t MetaStore::next_loaded_block_locked(uint64_t block) const {
  const uint64_t next = block + 1;
  const uint64_t g = FreeBlocks::group_of(next);
  if (free_.is_explicit(g)) return next;
  for (uint64_t h = g + 1; h < free_.groups(); ++h) {
    if (free_.is_explicit(h)) return h * FreeBlocks::kGroupBlocks;
  }
  return sb_.total_blocks;
}

// Looks for a free grain inside `block` (a block of `kind` already in use).
static constexpr uint64_t kNone = UINT64_MAX;

Result<uint64_t> MetaStore::reserve_data_grain_locked(uint64_t& hint_block) {
  auto try_block = [&](uint64_t block) -> uint64_t {
    if (block == 0 || block >= sb_.total_blocks) return kNone;
    auto e = block_entry_locked(block);
    if (e.state != BlockState::kData) return kNone;
    if (e.used_grains + block_reserved_[block] >= kGrainsPerBlock) return kNone;
    const uint64_t first = first_grain_of(BlockIndex{block}).v;
    for (uint64_t g = first; g < first + kGrainsPerBlock; ++g) {
      if (grain_available_locked(g)) return g;
    }
    return kNone;
  };
  uint64_t g = try_block(hint_block);
  if (g == kNone) {
    auto taken = take_free_block_locked(BlockState::kData);
    if (taken.ok()) {
      hint_block = *taken;
      g = first_grain_of(BlockIndex{hint_block}).v;
    } else {
      // No free block: reuse free grains inside blocks in use (a nearly full datastore).
      for (uint64_t b = sb_.first_data_block; b < sb_.total_blocks && g == kNone;
           b = next_loaded_block_locked(b)) {
        g = try_block(b);
        if (g != kNone) hint_block = b;
      }
      if (g == kNone) return taken.take_error();
    }
  }
  reserved_.insert(g);
  ++block_reserved_[block_of(PhysGrain{g}).v];
  return g;
}


// Runs for every mapped grain a request reads or writes, so it must cost no IO: the
// block table is pinned in the cache (load_block_table), so the block's role and its
// count of grains in use are always checked. A block is all data or all metadata, so
// a data block holds no grain that a map may not point at, except free ones. The
// grain's own reference count is checked only when its part of the refcount table is
// cached (always so for blocks written since open): fetching it would add a metadata
// read, and a cache entry, to every cold read, which the block's role does not need.
// A count of 0 is never legitimate here: a grain reserved for a write in flight is not
// mapped before its count is 1 (map_install_locked), and the grain range lock keeps
// readers off it until then; a grain freed in the open transaction is no longer mapped
// by the map that freed it.
Result<void> MetaStore::check_data_grain_locked(uint64_t grain) const {
  const uint64_t block = block_of(PhysGrain{grain}).v;
  if (block < sb_.first_data_block || block >= sb_.total_blocks) {
    return corruption(fmt::format("grain map points at grain {}, outside the data area "
                                  "(storage blocks {} to {})",
                                  grain, sb_.first_data_block, sb_.total_blocks - 1));
  }
  const format::BlockEntry e = block_entry_locked(block);
  if (e.state != BlockState::kData || e.used_grains == 0) {
    return corruption(fmt::format("grain map points at grain {} in storage block {}, which "
                                  "is {}{}, not data in use",
                                  grain, block, format::block_state_name(e.state),
                                  e.state == BlockState::kData ? " with no grain in use" : ""));
  }
  if (const CachedBlock* r = cache_.peek(refcount_grain_of(grain)); r != nullptr) {
    const auto* refs = std::get_if<format::RefcountGrain>(&r->v);
    if (refs != nullptr && refs->counts[grain % format::kGrainsPerRefcountGrain] == 0) {
      return corruption(fmt::format("grain map points at grain {}, which is free (reference "
                                    "count 0) in data block {}",
                                    grain, block));
    }
  }
  return ok_result();
}

void MetaStore::unreserve_locked(uint64_t grain) {
  VSFS_ASSERT(reserved_.erase(grain) == 1);
  const uint64_t block = block_of(PhysGrain{grain}).v;
  VSFS_ASSERT(block_reserved_[block] > 0);
  if (--block_reserved_[block] == 0) {
    block_reserved_.erase(block);
    auto e = block_entry_for_update_locked(block);
    VSFS_ASSERT(e.ok());
    if ((*e)->used_grains == 0) {
      // Taken for a write that failed: it may hold part of that write, so it needs
      // formatting like any freed block.
      (*e)->state = BlockState::kToFormatFree;
      blocks_freed_open_.push_back(block);
    }
  }
}

Result<void> MetaStore::take_reservation_locked(uint64_t grain) {
  VSFS_ASSERT(reserved_.erase(grain) == 1);
  const uint64_t block = block_of(PhysGrain{grain}).v;
  VSFS_ASSERT(block_reserved_[block] > 0);
  --block_reserved_[block];
  VSFS_ASSIGN_OR_RETURN(uint16_t c, incref_locked(grain));
  VSFS_ASSERT(c == 1);
  if (block_reserved_[block] == 0) block_reserved_.erase(block);
  return ok_result();
}

Result<uint64_t> MetaStore::alloc_meta_grain_locked() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (meta_block_ != 0) {
      auto e = block_entry_locked(meta_block_);
      if (e.state == BlockState::kMeta && e.used_grains < kGrainsPerBlock) {
        const uint64_t first = first_grain_of(BlockIndex{meta_block_}).v;
        for (uint64_t i = 0; i < kGrainsPerBlock; ++i) {
          uint64_t g = first + (meta_cursor_ + i) % kGrainsPerBlock;
          if (grain_available_locked(g)) {
            meta_cursor_ = (g - first + 1) % kGrainsPerBlock;
            VSFS_TRY(incref_locked(g));
            return g;
          }
        }
      }
    }
    auto taken = take_free_block_locked(BlockState::kMeta);
    if (!taken.ok()) break;
    meta_block_ = *taken;
    meta_cursor_ = 0;
  }
  // No free block: look for a free grain in any metadata block.
  for (uint64_t b = sb_.first_data_block; b < sb_.total_blocks; b = next_loaded_block_locked(b)) {
    auto e = block_entry_locked(b);
    if (e.state != BlockState::kMeta || e.used_grains >= kGrainsPerBlock) continue;
    const uint64_t first = first_grain_of(BlockIndex{b}).v;
    for (uint64_t g = first; g < first + kGrainsPerBlock; ++g) {
      if (grain_available_locked(g)) {
        VSFS_TRY(incref_locked(g));
        meta_block_ = b;
        return g;
      }
    }
  }
  return make_error(ENOSPC, ErrorKind::kNoSpace, "datastore is full (no room for metadata)");
}

uint64_t MetaStore::take_block_to_format_locked() {
  const auto first = free_.first(FreeBlocks::kToFormat);
  if (!first) return 0;
  const uint64_t block = *first;
  free_.erase(FreeBlocks::kToFormat, block);
  ++formatting_;
  return block;
}

Result<void> MetaStore::block_formatted_locked(uint64_t block) {
  VSFS_ASSERT(formatting_ > 0);
  --formatting_;
  VSFS_ASSIGN_OR_RETURN(format::BlockEntry * e, block_entry_for_update_locked(block));
  VSFS_ASSERT(e->state == BlockState::kToFormatFree && e->used_grains == 0);
  e->state = BlockState::kFormattedFree;
  free_.insert(FreeBlocks::kFormatted, block);
  formatted_bytes_total_ += kBlockBytes;
  return ok_result();
}

void MetaStore::block_format_failed_locked(uint64_t block) {
  VSFS_ASSERT(formatting_ > 0);
  --formatting_;
  free_.insert(FreeBlocks::kToFormat, block);
}

bool MetaStore::space_reclaimable_locked() {
  return sb_.release_list != 0 || !blocks_freed_open_.empty() ||
         !blocks_freed_committing_.empty() || !blocks_freed_committed_.empty() ||
         !freed_open_.empty() || !freed_committing_.empty();
}

Result<void> MetaStore::reclaim_space() {
  for (;;) {
    VSFS_ASSIGN_OR_RETURN(bool more, release_step(1024));
    if (!more) break;
    bool big;
    {
      std::lock_guard lock(mu_);
      big = wants_commit_locked();
    }
    if (big) VSFS_TRY(commit());
  }
  return checkpoint(false);
}

Result<void> MetaStore::check_room_for_allocation_locked(uint64_t grains) const {
  const Space s = space_locked();
  const uint64_t free = s.free_grains - std::min<uint64_t>(s.free_grains, reserved_.size());
  // The map leaves that will hold them (one per 252 grains), the nodes above, and a
  // margin: what the metadata blocks' free room cannot hold takes whole free blocks.
  const uint64_t meta = grains / format::kTreeFanout +
                        grains / (format::kTreeFanout * format::kTreeFanout) + 16;
  const uint64_t meta_from_free =
      meta > meta_slack_grains_ ? round_up(meta - meta_slack_grains_, kGrainsPerBlock) : 0;
  if (grains > free || grains + meta_from_free > free) {
    return make_error(ENOSPC, ErrorKind::kNoSpace,
                      "allocating {} grains ({} MiB) needs {} with its map nodes; {} are free",
                      grains, grains * kGrainBytes >> 20, grains + meta_from_free, free);
  }
  return ok_result();
}

MetaStore::Space MetaStore::space_locked() const {
  Space s;
  s.data_blocks = sb_.total_blocks - sb_.first_data_block - format::growth_reserved_blocks(sb_);
  s.used_grains = used_grains_;
  // The unused grains of metadata blocks are metadata's room: a write cannot have them.
  s.free_grains = s.data_blocks * kGrainsPerBlock - used_grains_ - meta_slack_grains_ -
                  damaged_free_blocks_ * kGrainsPerBlock;
  s.formatted_blocks = free_.count(FreeBlocks::kFormatted);
  s.to_format_blocks = free_.count(FreeBlocks::kToFormat) + blocks_freed_committed_.size() +
                       blocks_freed_committing_.size() + blocks_freed_open_.size() + formatting_;
  s.formatted_bytes_total = formatted_bytes_total_;
  s.window = window_on_;
  s.window_end = window_durable_;
  s.crash_reformat_blocks = crash_reformat_blocks_;
  s.summary = summary_on_;
  s.table_grains = sb_.block_table_grains;
  s.table_grains_loaded = free_.explicit_groups();
  s.damaged_free_blocks = damaged_free_blocks_;
  return s;
}

}  // namespace vsfs::meta
