// Making a new datastore, and recognising what a device already holds.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <random>

#include "meta/meta_store.h"
#include "util/clock.h"
#include "util/endian.h"
#include "vsfs/datastore.h"

namespace vsfs {

using format::BlockState;
using format::BlockType;

// A vsfs datastore is recognised here (libblkid does not know the format); vsfs-mkfs
// asks libblkid about everything else.
Result<std::string> probe_device_contents(device::Device& dev) {
  if (dev.size_bytes() < kGrainBytes) return std::string();
  AlignedBuffer buf(kGrainBytes, false);
  VSFS_TRY(device::read_sync(dev, 0, buf.data(), kGrainBytes));
  if (load_le<uint32_t>(buf.data()) == format::kMetaMagic) return std::string("vsfs datastore");
  return std::string();
}

Result<void> mkfs(device::Device& dev, const MkfsOptions& options) {
  if (options.size_bytes > dev.size_bytes()) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "a datastore of {} bytes does not fit the {}-byte device",
                      options.size_bytes, dev.size_bytes());
  }
  const uint64_t size = options.size_bytes != 0 ? options.size_bytes : dev.size_bytes();
  VSFS_ASSIGN_OR_RETURN(format::Layout layout,
                        format::compute_layout(size, options.journal_bytes));
  if (!options.force) {
    VSFS_ASSIGN_OR_RETURN(std::string found, probe_device_contents(dev));
    if (!found.empty()) {
      return make_error(EEXIST, ErrorKind::kExists, "device holds a {}; use -f to overwrite it",
                        found);
    }
  }
  const uint64_t now = realtime_ns();
  const uint64_t generation = 1;
  const bool data_zeroed = dev.discard_zeroes();

  // The steps, each reported in bytes as it goes (a large device takes long to zero or
  // discard: the refcount table of a 64 TiB device is 32 GiB).
  enum Step { kOldSuperblocks = 1, kJournal, kRefcounts, kDataArea, kBlockTable, kRoot, kSteps = kRoot };
  static constexpr const char* kStepNames[] = {"", "superblocks", "journal", "refcount table",
                                               "data area", "block table", "root"};
  auto report = [&](int step, uint64_t done, uint64_t total) {
    if (options.progress) options.progress(Progress{step, kSteps, kStepNames[step], done, total});
  };
  // Zeros: a discard where the device reads discarded space as zeros (a hole punched
  // in a file costs no space), else write-zeroes.
  auto zero = [&](int step, uint64_t offset, uint64_t length, bool discard) -> Result<void> {
    report(step, 0, length);
    return device::zero_range(dev, offset, length, discard,
                              [&](uint64_t done) { report(step, done, length); });
  };
  // Old superblocks go first, so an interrupted mkfs never leaves a valid-looking mix.
  VSFS_TRY(zero(kOldSuperblocks, 0, kBlockBytes, data_zeroed));
  // The journal and the refcount table start as zeros (an all-zero refcount grain is an
  // empty one).
  VSFS_TRY(zero(kJournal, layout.journal_start_grain * kGrainBytes,
                layout.journal_grains * kGrainBytes, data_zeroed));
  VSFS_TRY(zero(kRefcounts, layout.refcount_start_grain * kGrainBytes,
                round_up(layout.refcount_grains * kGrainBytes, kBlockBytes), data_zeroed));

  // Free blocks start on the formatted list only where they really read zeros: the
  // data area is discarded where the device reads discarded space as zeros (a hole in a
  // file costs nothing); elsewhere they start to be formatted, and the background
  // formatter catches up.
  VSFS_TRY(zero(kDataArea, layout.first_data_block * kBlockBytes,
                data_zeroed ? (layout.total_blocks - layout.first_data_block) * kBlockBytes : 0,
                true));
  // The fixed regions and the first metadata block get their backing storage now (a
  // hole punched above reads as zeros still): no metadata write of a datastore in a
  // sparse file may fail because the filesystem holding it filled up.
  if (auto backed = device::allocate_now(dev, 0, (layout.first_data_block + 1) * kBlockBytes);
      !backed.ok()) {
    return make_error(backed.error().errno_value, backed.error().kind,
                      "no room for the datastore's metadata ({} MiB): {}",
                      (layout.first_data_block + 1) * kBlockBytes >> 20, backed.error().message);
  }
  // The first data block holds the root's inode leaf.
  const uint64_t meta_block = layout.first_data_block;
  const uint64_t leaf_grain = first_grain_of(BlockIndex{meta_block}).v;

  // The block table, written a storage block's worth of grains at a time, and the space
  // summary after it: a bit for each table grain that describes a block not formatted
  // free.
  std::vector<format::SpaceSummaryGrain> summary(layout.space_summary_grains);
  {
    constexpr uint64_t kBatch = kGrainsPerBlock;
    AlignedBuffer batch(kBatch * kGrainBytes);
    const uint64_t total = layout.block_table_grains * kGrainBytes;
    report(kBlockTable, 0, total);
    for (uint64_t first = 0; first < layout.block_table_grains; first += kBatch) {
      const uint64_t n = std::min(kBatch, layout.block_table_grains - first);
      for (uint64_t i = first; i < first + n; ++i) {
        format::BlockTableGrain t;
        for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
          const uint64_t b = i * format::kBlocksPerTableGrain + j;
          if (b >= layout.total_blocks) break;
          if (b < layout.first_data_block) {
            t.entries[j].state = BlockState::kReserved;
          } else if (b == meta_block) {
            t.entries[j] = format::BlockEntry{BlockState::kMeta, 1};
          } else if (!data_zeroed) {
            t.entries[j].state = BlockState::kToFormatFree;
          }
          if (t.entries[j].state != BlockState::kFormattedFree) {
            summary[i / format::kGroupsPerSummaryGrain].set(i % format::kGroupsPerSummaryGrain,
                                                            true);
          }
        }
        const uint64_t self = layout.block_table_start_grain + i;
        format::encode_block_table(
            t, self, generation,
            format::Grain(batch.data() + (i - first) * kGrainBytes, kGrainBytes));
      }
      VSFS_TRY(device::write_sync(dev, (layout.block_table_start_grain + first) * kGrainBytes,
                                  batch.data(), n * kGrainBytes));
      report(kBlockTable, (first + n) * kGrainBytes, total);
    }
  }
  report(kRoot, 0, 1);
  AlignedBuffer g(kGrainBytes);
  auto grain = [&] { return format::Grain(g.data(), kGrainBytes); };
  for (uint64_t i = 0; i < summary.size(); ++i) {
    const uint64_t self = layout.block_table_start_grain + layout.block_table_grains + i;
    format::encode_space_summary(summary[i], self, generation, grain());
    VSFS_TRY(device::write_sync(dev, self * kGrainBytes, g.data(), kGrainBytes));
  }
  {
    format::RefcountGrain r;
    r.counts[leaf_grain % format::kGrainsPerRefcountGrain] = 1;
    const uint64_t self = layout.refcount_start_grain + leaf_grain / format::kGrainsPerRefcountGrain;
    format::encode_refcounts(r, self, generation, grain());
    VSFS_TRY(device::write_sync(dev, self * kGrainBytes, g.data(), kGrainBytes));
  }
  {
    format::InodeLeaf leaf;
    leaf.first_ino = 0;
    auto& root = leaf.inodes[kRootIno];
    root.ino = kRootIno;
    root.mode = S_IFDIR | 0755;
    root.nlink = 2;
    root.atime_ns = root.mtime_ns = root.ctime_ns = root.btime_ns = now;
    root.parent = kRootIno;
    format::encode_inode_leaf(leaf, leaf_grain, generation, grain());
    VSFS_TRY(device::write_sync(dev, leaf_grain * kGrainBytes, g.data(), kGrainBytes));
  }
  VSFS_TRY(device::flush_sync(dev));

  format::Superblock sb;
  std::random_device rd;
  for (auto& b : sb.uuid) b = static_cast<uint8_t>(rd());
  sb.uuid[6] = (sb.uuid[6] & 0x0f) | 0x40;  // version 4
  sb.uuid[8] = (sb.uuid[8] & 0x3f) | 0x80;
  sb.device_bytes = layout.total_blocks * kBlockBytes;
  sb.total_blocks = layout.total_blocks;
  sb.journal_start_grain = layout.journal_start_grain;
  sb.journal_grains = layout.journal_grains;
  sb.block_table_start_grain = layout.block_table_start_grain;
  sb.block_table_grains = layout.block_table_grains;
  sb.refcount_start_grain = layout.refcount_start_grain;
  sb.refcount_grains = layout.refcount_grains;
  sb.first_data_block = layout.first_data_block;
  sb.inode_root = leaf_grain;
  sb.inode_height = 1;
  sb.next_ino = kRootIno + 1;
  sb.generation = generation;
  sb.journal_tail_grain = 0;
  sb.journal_tail_seq = 1;
  sb.state = format::kStateClean;
  // Window 0: nothing handed out yet.
  sb.ro_compat = format::kRoCompatAllocWindow | format::kRoCompatSpaceSummary;
  sb.mkfs_time_ns = now;
  format::encode_superblock(sb, generation, grain());
  VSFS_TRY(device::write_sync(dev, format::kSuperblockCopyGrain * kGrainBytes, g.data(), kGrainBytes));
  VSFS_TRY(device::write_sync(dev, 0, g.data(), kGrainBytes));
  VSFS_TRY(device::flush_sync(dev));
  report(kRoot, 1, 1);
  return ok_result();
}

}  // namespace vsfs
