// Growing a datastore onto the space its device gained (vsfs-grow).
//
// The block table, the space summary and the refcount table are arrays of grains; the
// grains a growth appends live in a region of its own at the start of the added space
// (format::Growth), reserved in the block table. The growth is made in two steps:
//
//   1. with no lock held, the added space is prepared: the region's refcount grains are
//      zeroed (an all-zero grain counts nothing), the new blocks are zeroed by discard
//      where the device reads discarded space as zeros, and the region's block-table and
//      summary grains are written and flushed. Nothing points there yet, so a crash
//      leaves the datastore as it was;
//   2. under mu_, the superblock takes the new geometry, the block-table grain that
//      held the old end (when the end fell inside one) and the summary bits of groups in
//      the old summary grains are changed in the open transaction, and one commit makes
//      all of it durable: after a crash the datastore is either the old one or the grown
//      one.
//
// The free lists follow: groups past the old end start implicit (all formatted) where
// the new blocks read zeros; a group holding region blocks, or blocks still to format,
// is loaded from the grain step 1 wrote.
#include <algorithm>

#include "device/device.h"
#include "meta/meta_store.h"
#include "util/log.h"

namespace vsfs::meta {

using format::BlockState;
using format::BlockType;

Result<MetaStore::Grown> MetaStore::grow(
    uint64_t new_bytes, const std::function<void(uint64_t done, uint64_t total)>& progress) {
  std::lock_guard growing(grow_mu_);
  if (options_.read_only) {
    return make_error(EROFS, ErrorKind::kState, "the datastore is open read-only");
  }
  format::Superblock sb;
  {
    std::lock_guard lock(mu_);
    sb = sb_;
  }
  VSFS_ASSIGN_OR_RETURN(const uint64_t device_bytes, dev_.refresh_size());
  VSFS_ASSIGN_OR_RETURN(const std::optional<format::Superblock> planned,
                        format::plan_growth(sb, device_bytes, new_bytes));
  if (!planned) return Grown{sb.device_bytes, sb.device_bytes, 0, false};
  // The grains each table needs for the new size, past what it has, in a region at
  // the old end.
  const format::Superblock& grown = *planned;
  const format::Growth& growth = grown.growths.back();
  const uint64_t region_blocks = format::growth_region_blocks(growth);
  const uint64_t old_total = sb.total_blocks;
  const uint64_t new_total = grown.total_blocks;
  const uint64_t region_end = old_total + region_blocks;
  const uint64_t new_table = grown.block_table_grains;
  const bool formatted = dev_.discard_zeroes();

  // Step 1: the added space, prepared where nothing points yet.
  const uint64_t zero_bytes =
      region_blocks * kBlockBytes + (formatted ? (new_total - region_end) * kBlockBytes : 0);
  uint64_t zeroed = 0;  // by the ranges before
  auto zero = [&](uint64_t offset, uint64_t length, bool discard) -> Result<void> {
    VSFS_TRY(device::zero_range(dev_, offset, length, discard, [&](uint64_t done) {
      if (progress) progress(zeroed + done, zero_bytes);
    }));
    zeroed += length;
    return ok_result();
  };
  if (progress) progress(0, zero_bytes);
  VSFS_TRY(zero(old_total * kBlockBytes, region_blocks * kBlockBytes, formatted));
  if (formatted) VSFS_TRY(zero(region_end * kBlockBytes, (new_total - region_end) * kBlockBytes, true));
  // The region holds metadata: backed now, so that no later write there fails for want
  // of room on the filesystem under a sparse file.
  VSFS_TRY(device::allocate_now(dev_, old_total * kBlockBytes, region_blocks * kBlockBytes));

  const BlockState new_free = formatted ? BlockState::kFormattedFree : BlockState::kToFormatFree;
  auto state_of = [&](uint64_t b) {
    return b >= new_total ? BlockState::kFormattedFree
           : b < region_end ? BlockState::kReserved
                            : new_free;
  };
  // Whether group g (a block-table grain past the old ones) describes blocks in use.
  auto group_in_use = [&](uint64_t g) {
    const uint64_t first = g * format::kBlocksPerTableGrain;
    return first < region_end || (!formatted && first < new_total);
  };
  // The growth's block-table grains and then its summary grains lie one after the other
  // at the start of its region: encoded a storage block's worth at a time, one write each.
  const uint64_t old_summary = format::space_summary_grains(sb.block_table_grains);
  const uint64_t region_grains = growth.table_grains + growth.summary_grains;
  AlignedBuffer batch(kGrainsPerBlock * kGrainBytes);
  for (uint64_t first = 0; first < region_grains; first += kGrainsPerBlock) {
    const uint64_t n = std::min<uint64_t>(kGrainsPerBlock, region_grains - first);
    for (uint64_t k = first; k < first + n; ++k) {
      const uint64_t self = old_total * kGrainsPerBlock + k;
      format::Grain out(batch.data() + (k - first) * kGrainBytes, kGrainBytes);
      if (k < growth.table_grains) {
        const uint64_t i = sb.block_table_grains + k;
        VSFS_ASSERT(self == format::table_grain(grown, format::Table::kBlockTable, i));
        format::BlockTableGrain t;
        for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
          t.entries[j] = format::BlockEntry{state_of(i * format::kBlocksPerTableGrain + j), 0};
        }
        format::encode_block_table(t, self, grown.generation, out);
      } else {
        const uint64_t i = old_summary + (k - growth.table_grains);
        VSFS_ASSERT(self == format::table_grain(grown, format::Table::kSpaceSummary, i));
        format::SpaceSummaryGrain sg;
        for (uint64_t j = 0; j < format::kGroupsPerSummaryGrain; ++j) {
          const uint64_t g = i * format::kGroupsPerSummaryGrain + j;
          if (g < new_table && group_in_use(g)) sg.set(j, true);
        }
        format::encode_space_summary(sg, self, grown.generation, out);
      }
    }
    VSFS_TRY(device::write_sync(dev_, (old_total * kGrainsPerBlock + first) * kGrainBytes,
                                batch.data(), n * kGrainBytes));
  }
  VSFS_TRY(device::flush_sync(dev_));

  // Step 2: the datastore takes the new geometry in one transaction.
  {
    std::lock_guard lock(mu_);
    if (failed_) return make_error(EIO, ErrorKind::kState, "the datastore's metadata failed");
    VSFS_ASSERT(sb_.total_blocks == old_total);  // grow_mu_ held throughout
    // The group holding the old end changes: explicit before the end moves.
    if (old_total % format::kBlocksPerTableGrain != 0) VSFS_TRY(ensure_group_locked(old_total - 1));
    sb_.incompat = grown.incompat;
    sb_.growths = grown.growths;
    sb_.total_blocks = grown.total_blocks;
    sb_.device_bytes = grown.device_bytes;
    sb_.block_table_grains = grown.block_table_grains;
    sb_.refcount_grains = grown.refcount_grains;
    mark_sb_dirty_locked();
    free_.grow(new_total);
    const uint64_t old_groups = div_round_up(old_total, format::kBlocksPerTableGrain);
    const uint64_t partial_end =
        std::min(new_total, old_groups * format::kBlocksPerTableGrain);
    for (uint64_t b = old_total; b < partial_end; ++b) {
      VSFS_ASSIGN_OR_RETURN(format::BlockEntry * e, block_entry_for_update_locked(b));
      *e = format::BlockEntry{state_of(b), 0};
      if (e->state == BlockState::kFormattedFree) free_.insert(FreeBlocks::kFormatted, b);
      if (e->state == BlockState::kToFormatFree) free_.insert(FreeBlocks::kToFormat, b);
    }
    for (uint64_t k = old_summary; k < old_summary + growth.summary_grains; ++k) {
      const uint64_t sg = format::table_grain(sb_, format::Table::kSpaceSummary, k);
      VSFS_TRY(get_locked(sg, BlockType::kSpaceSummary));
      cache_.pin(sg);
    }
    for (uint64_t g = old_groups; g < new_table; ++g) {
      if (!group_in_use(g)) continue;
      VSFS_TRY(load_group_locked(g));
      // A bit in a summary grain the datastore had: set in this transaction (those in
      // the new grains were written so in step 1).
      if (g / format::kGroupsPerSummaryGrain < old_summary) {
        const uint64_t sg = summary_grain_of(g);
        CachedBlock* s = cache_.peek(sg);
        VSFS_ASSERT(s != nullptr);  // pinned at open
        s->summary().set(g % format::kGroupsPerSummaryGrain, true);
        mark_dirty_locked(sg);
      }
    }
  }
  VSFS_TRY(commit());
  VSFS_LOG_INFO("datastore grown from {} to {} bytes: {} MiB of tables in blocks {} to {}, "
                "{} MiB for data{}",
                sb.device_bytes, new_total * kBlockBytes, region_blocks, old_total,
                region_end - 1, new_total - region_end,
                formatted ? "" : " (to be formatted in the background)");
  return Grown{sb.device_bytes, new_total * kBlockBytes, region_blocks, formatted};
}

}  // namespace vsfs::meta
