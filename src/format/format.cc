// Encode and decode of the vsfs on-disk format, version 1 (format.h is the authority on
// offsets; man/vsfs-format.5 describes the format in prose).
//
// Decoders trust nothing: each one checks the 64-byte header (magic, version, type,
// length, reserved bytes, crc32c, self address, level) and then every field of the
// payload, including that reserved bytes and the unused tail of the payload are zero, so
// a block has exactly one valid encoding. Errors are kCorruption (kUnsupported for
// features this version does not know) with a message naming the structure, where it
// lives and the field that failed. Encoders zero the whole grain, write the fields, and
// seal the block last; they assert the invariants the decoder would check, because
// writing a block we could not read back is a bug.
// Thread-safety: pure functions on caller-owned buffers; g_skip_crc_check is set once
// before any thread starts.
#include "format/format.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <string_view>
#include <unordered_set>

#include <fmt/format.h>

#include "util/assert.h"
#include "util/crc32c.h"
#include "util/endian.h"

namespace vsfs::format {

bool g_skip_crc_check = false;

namespace {

constexpr uint64_t kGrainLimit = 1ull << 62;  // physical grain numbers are < 2^62
constexpr uint64_t kGrainMask = kGrainLimit - 1;
constexpr uint8_t kMaxTreeHeight = kMaxTreeLevel + 1;

constexpr size_t kHeaderReservedStart = kOffLevel + 1;  // 41

// Payload lengths of the fixed-size blocks.
constexpr uint32_t kSbLength = kSbPayloadEnd - kHeaderBytes;                      // 288
constexpr uint32_t kSbShortLength = kSbPayloadEndShort - kHeaderBytes;            // 208
constexpr uint32_t kTreeNodeLength = kTreeFanout * kSlotBytes;                    // 4032
constexpr uint32_t kInodeLeafLength = kInodesPerLeaf * kInodeBytes;               // 3968
constexpr uint32_t kBlockTableLength = kBlocksPerTableGrain * kBlockEntryBytes;   // 4032
constexpr uint32_t kRefcountLength = kGrainsPerRefcountGrain * 2;                 // 4032
constexpr uint32_t kJournalDescFixed = 16;
constexpr uint32_t kJournalCommitLength = 24;
constexpr uint32_t kReleaseListFixed = 16;

static_assert(kHeaderBytes == 64 && kPayloadBytes == 4032);
static_assert(kTreeFanout == 252 && kInodesPerLeaf == 31 && kBlocksPerTableGrain == 504);
static_assert(kGrainsPerRefcountGrain == 2016 && kJournalDescMax == 502);
static_assert(kReleaseEntriesMax == 167);
static_assert(kOffLevel == 40 && kSbPayloadEndShort == 272 && kSbPayloadEnd == 352);
static_assert(kSbOffLifeReadBytes == kSbPayloadEndShort &&
              kSbOffLifeMountedSeconds + 8 == kSbPayloadEnd);
static_assert(sizeof(LifetimeCounters) == kSbPayloadEnd - kSbPayloadEndShort);
static_assert(kInoOffReplacedGen + 8 <= kInodeBytes);
static_assert(kJournalDescFixed + kJournalDescMax * 8 <= kPayloadBytes);
static_assert(kReleaseListFixed + kReleaseEntriesMax * kReleaseEntryBytes <= kPayloadBytes);

// Release-list entry offsets (inside an entry).
constexpr size_t kRelOffRoot = 0, kRelOffHeight = 8, kRelOffKind = 9, kRelOffOwner = 16;

bool is_interior(BlockType t) {
  return t == BlockType::kMapInterior || t == BlockType::kInodeInterior;
}

bool is_known_type(uint16_t raw) {
  return raw >= static_cast<uint16_t>(BlockType::kSuperblock) &&
         raw <= static_cast<uint16_t>(BlockType::kReleaseList);
}

std::string type_text(uint16_t raw) {
  if (!is_known_type(raw)) return fmt::format("{} (unknown)", raw);
  return fmt::format("{} ({})", raw, block_type_name(static_cast<BlockType>(raw)));
}

// The structure and where it lives, as error messages name it.
std::string where(BlockType type, uint64_t self) {
  if (type == BlockType::kSuperblock) return "superblock";
  return fmt::format("{} at grain {}", block_type_name(type), self);
}

template <typename... Args>
Error bad(const std::string& at, fmt::format_string<Args...> f, Args&&... args) {
  return corruption(at + ": " + fmt::format(f, std::forward<Args>(args)...));
}

template <typename T>
T load(ConstGrain buf, size_t off) {
  return load_le<T>(buf.data() + off);
}
template <typename T>
void store(Grain buf, size_t off, T v) {
  store_le<T>(buf.data() + off, v);
}

// Returns the offset of the first nonzero byte in [from, to), or `to` when all are zero.
size_t first_nonzero(ConstGrain buf, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    if (buf[i] != 0) return i;
  }
  return to;
}

Result<void> check_zero(ConstGrain buf, size_t from, size_t to, const std::string& at,
                        std::string_view what) {
  size_t i = first_nonzero(buf, from, to);
  if (i != to) {
    return bad(at, "{} byte {} is 0x{:02x}, must be zero", what, i, buf[i]);
  }
  return ok_result();
}

// The unused tail of the payload, after length_bytes, must be zero.
Result<void> check_tail(ConstGrain buf, const MetaHeader& h, const std::string& at) {
  return check_zero(buf, kHeaderBytes + h.length_bytes, kGrainBytes, at,
                    "unused payload");
}

Result<void> check_length(const MetaHeader& h, uint32_t expected, const std::string& at) {
  if (h.length_bytes != expected) {
    return bad(at, "length {} bytes, expected {} (truncated or overlong)", h.length_bytes,
               expected);
  }
  return ok_result();
}

Result<void> check_no_owner(const MetaHeader& h, const std::string& at) {
  if (h.owner != 0) return bad(at, "owner {} must be 0 for a datastore block", h.owner);
  return ok_result();
}

uint32_t grain_crc(ConstGrain buf) {
  static constexpr uint8_t kZeros[4] = {};
  uint32_t c = crc32c(0, buf.data(), kOffCrc);
  c = crc32c(c, kZeros, sizeof kZeros);
  return crc32c(c, buf.data() + kOffCrc + 4, kGrainBytes - kOffCrc - 4);
}

// Checks the header in the order magic, version, type, length, reserved bytes, crc,
// self, level. `allowed` lists the types accepted; `at` names the structure for errors.
Result<MetaHeader> check_header(ConstGrain buf, std::initializer_list<BlockType> allowed,
                                uint64_t expected_self, const std::string& at) {
  uint32_t magic = load<uint32_t>(buf, kOffMagic);
  if (magic != kMetaMagic) {
    return bad(at, "bad magic 0x{:08x}, expected 0x{:08x}", magic, kMetaMagic);
  }
  uint16_t version = load<uint16_t>(buf, kOffVersion);
  if (version != kBlockVersion) {
    return bad(at, "unsupported block version {}, expected {}", version, kBlockVersion);
  }
  uint16_t raw_type = load<uint16_t>(buf, kOffType);
  bool type_ok = std::any_of(allowed.begin(), allowed.end(), [&](BlockType t) {
    return static_cast<uint16_t>(t) == raw_type;
  });
  if (!type_ok) return bad(at, "wrong block type {}", type_text(raw_type));
  MetaHeader h;
  h.type = static_cast<BlockType>(raw_type);
  h.length_bytes = load<uint32_t>(buf, kOffLength);
  if (h.length_bytes > kPayloadBytes) {
    return bad(at, "length {} bytes exceeds the {}-byte payload (truncated)", h.length_bytes,
               kPayloadBytes);
  }
  VSFS_TRY(check_zero(buf, kHeaderReservedStart, kHeaderBytes, at, "reserved header"));
  uint32_t stored_crc = load<uint32_t>(buf, kOffCrc);
  if (!g_skip_crc_check) {
    uint32_t actual = grain_crc(buf);
    if (stored_crc != actual) {
      return bad(at, "bad crc32c 0x{:08x}, computed 0x{:08x}", stored_crc, actual);
    }
  }
  h.owner = load<uint64_t>(buf, kOffOwner);
  h.generation = load<uint64_t>(buf, kOffGeneration);
  h.self = load<uint64_t>(buf, kOffSelf);
  if (h.self != expected_self) {
    return bad(at, "self address {} does not match its location {}", h.self, expected_self);
  }
  // The type is trusted by now, so name the structure exactly.
  h.level = load<uint8_t>(buf, kOffLevel);
  if (is_interior(h.type)) {
    if (h.level < 1 || h.level > kMaxTreeLevel) {
      return bad(where(h.type, expected_self), "level {} is outside 1..{}", h.level,
                 kMaxTreeLevel);
    }
  } else if (h.level != 0) {
    return bad(where(h.type, expected_self), "level {} must be 0", h.level);
  }
  return h;
}

void begin_block(Grain buf, BlockType type, uint32_t length, uint64_t owner,
                 uint64_t generation, uint64_t self, uint8_t level) {
  std::memset(buf.data(), 0, kGrainBytes);
  VSFS_ASSERT(length <= kPayloadBytes);
  encode_header(buf, MetaHeader{type, length, owner, generation, self, level});
}

}  // namespace

const char* block_state_name(BlockState state) {
  switch (state) {
    case BlockState::kFormattedFree: return "formatted-free";
    case BlockState::kToFormatFree: return "to-be-formatted";
    case BlockState::kData: return "data";
    case BlockState::kMeta: return "metadata";
    case BlockState::kReserved: return "reserved";
  }
  return "unknown";
}

const char* block_type_name(BlockType type) {
  switch (type) {
    case BlockType::kSuperblock: return "superblock";
    case BlockType::kMapInterior: return "map interior";
    case BlockType::kMapLeaf: return "map leaf";
    case BlockType::kInodeInterior: return "inode interior";
    case BlockType::kInodeLeaf: return "inode leaf";
    case BlockType::kDirBlock: return "dir block";
    case BlockType::kBlockTable: return "block table";
    case BlockType::kRefcountTable: return "refcount table";
    case BlockType::kJournalDesc: return "journal desc";
    case BlockType::kJournalCommit: return "journal commit";
    case BlockType::kReleaseList: return "release list";
    case BlockType::kSnapshotList: return "snapshot list";
    case BlockType::kInodeExtra: return "inode extra";
    case BlockType::kSpaceSummary: return "space summary";
    case BlockType::kLease: return "lease";
  }
  return "unknown block";
}

// ---- Header ----

Result<MetaHeader> decode_header(ConstGrain buf, BlockType expected, uint64_t expected_self) {
  return check_header(buf, {expected}, expected_self, where(expected, expected_self));
}

void encode_header(Grain buf, const MetaHeader& h) {
  store<uint32_t>(buf, kOffMagic, kMetaMagic);
  store<uint16_t>(buf, kOffType, static_cast<uint16_t>(h.type));
  store<uint16_t>(buf, kOffVersion, kBlockVersion);
  store<uint32_t>(buf, kOffLength, h.length_bytes);
  store<uint32_t>(buf, kOffCrc, 0);
  store<uint64_t>(buf, kOffOwner, h.owner);
  store<uint64_t>(buf, kOffGeneration, h.generation);
  store<uint64_t>(buf, kOffSelf, h.self);
  store<uint8_t>(buf, kOffLevel, h.level);
  std::memset(buf.data() + kHeaderReservedStart, 0, kHeaderBytes - kHeaderReservedStart);
}

void seal(Grain buf) { store<uint32_t>(buf, kOffCrc, grain_crc(buf)); }

// ---- Superblock ----

LifetimeCounters& LifetimeCounters::operator+=(const LifetimeCounters& o) {
  read_bytes += o.read_bytes;
  write_bytes += o.write_bytes;
  read_errors += o.read_errors;
  write_errors += o.write_errors;
  no_space_errors += o.no_space_errors;
  unclean_mounts += o.unclean_mounts;
  snapshots_taken += o.snapshots_taken;
  snapshots_deleted += o.snapshots_deleted;
  formatted_bytes += o.formatted_bytes;
  mounted_seconds += o.mounted_seconds;
  return *this;
}

LifetimeCounters operator+(LifetimeCounters a, const LifetimeCounters& b) { return a += b; }

namespace {

// Geometry and pointer checks; `sb` is fully loaded. Arithmetic is arranged so that
// hostile values cannot overflow.
Result<void> check_geometry(const Superblock& sb) {
  const std::string at = "superblock";
  if (sb.alloc_window_end > sb.total_blocks) {
    return bad(at, "alloc_window_end {} is past the last block {}", sb.alloc_window_end,
               sb.total_blocks);
  }
  if (sb.device_bytes < kMinDeviceBytes) {
    return bad(at, "device_bytes {} is below the minimum {}", sb.device_bytes,
               kMinDeviceBytes);
  }
  if (sb.device_bytes / kBlockBytes >= kGrainLimit / kGrainsPerBlock) {
    return bad(at, "device_bytes {} is too large", sb.device_bytes);
  }
  if (sb.total_blocks != sb.device_bytes / kBlockBytes) {
    return bad(at, "total_blocks {} does not match device_bytes {} ({} blocks)",
               sb.total_blocks, sb.device_bytes, sb.device_bytes / kBlockBytes);
  }
  const uint64_t total_grains = sb.total_blocks * kGrainsPerBlock;
  if (sb.growths.empty() != ((sb.incompat & kIncompatGrown) == 0)) {
    return bad(at, "{} growths with incompat bit 0x{:x} {}", sb.growths.size(), kIncompatGrown,
               (sb.incompat & kIncompatGrown) ? "set" : "clear");
  }
  if (sb.growths.size() > kMaxGrowths) {
    return bad(at, "{} growths, more than {}", sb.growths.size(), kMaxGrowths);
  }
  // The fixed regions hold what the growths do not.
  uint64_t grown_table = 0, grown_summary = 0, grown_refcount = 0;
  for (const Growth& g : sb.growths) {
    grown_table += g.table_grains;
    grown_summary += g.summary_grains;
    grown_refcount += g.refcount_grains;
  }
  if (grown_table >= sb.block_table_grains || grown_refcount >= sb.refcount_grains ||
      grown_summary > space_summary_grains(sb.block_table_grains)) {
    return bad(at, "growths hold {} block-table, {} summary and {} refcount grains, not "
               "fewer than the tables' {}, {} and {}",
               grown_table, grown_summary, grown_refcount, sb.block_table_grains,
               space_summary_grains(sb.block_table_grains), sb.refcount_grains);
  }
  struct Region {
    const char* name;
    uint64_t start, grains;
  };
  const Region regions[] = {
      {"journal", sb.journal_start_grain, sb.journal_grains},
      {"block table", sb.block_table_start_grain, sb.block_table_grains - grown_table},
      {"refcount table", sb.refcount_start_grain, sb.refcount_grains - grown_refcount},
  };
  uint64_t prev_end = kGrainsPerBlock;  // block 0 holds the superblocks
  const char* prev_name = "storage block 0";
  for (const Region& r : regions) {
    if (r.grains == 0) return bad(at, "{} region is empty", r.name);
    if (r.start % kGrainsPerBlock != 0) {
      return bad(at, "{} starts at grain {}, not on a storage block boundary", r.name,
                 r.start);
    }
    if (r.start < prev_end) {
      return bad(at, "{} region at grain {} overlaps or precedes the {} (ends at grain {})",
                 r.name, r.start, prev_name, prev_end);
    }
    if (r.start >= total_grains || r.grains > total_grains - r.start) {
      return bad(at, "{} region [{}, +{}) runs past the device's {} grains", r.name, r.start,
                 r.grains, total_grains);
    }
    prev_end = r.start + r.grains;
    prev_name = r.name;
  }
  if (sb.first_data_block >= sb.total_blocks ||
      sb.first_data_block * kGrainsPerBlock < prev_end) {
    return bad(at, "first_data_block {} is not after the refcount table (ends at grain {}) "
               "and inside the device ({} blocks)",
               sb.first_data_block, prev_end, sb.total_blocks);
  }
  // Each growth's region starts where the datastore ended before it, after the one
  // before, and holds what it says.
  uint64_t end = sb.first_data_block + 1;
  for (const Growth& g : sb.growths) {
    const uint64_t blocks = growth_region_blocks(g);
    if (g.region_block < end || blocks == 0 ||
        g.region_block >= sb.total_blocks || blocks > sb.total_blocks - g.region_block) {
      return bad(at, "growth region at block {} ({} blocks) is not after block {} and inside "
                 "the device ({} blocks)",
                 g.region_block, blocks, end, sb.total_blocks);
    }
    end = g.region_block + blocks;
  }
  if (sb.block_table_grains * kBlocksPerTableGrain < sb.total_blocks) {
    return bad(at, "block table of {} grains cannot describe {} storage blocks",
               sb.block_table_grains, sb.total_blocks);
  }
  if ((sb.ro_compat & kRoCompatSpaceSummary) != 0 && !space_summary_fits(sb)) {
    return bad(at, "the space summary ({} grains after the block table) does not fit "
               "before the refcount table",
               space_summary_grains(sb.block_table_grains));
  }
  if (sb.refcount_grains * kGrainsPerRefcountGrain < total_grains) {
    return bad(at, "refcount table of {} grains cannot count {} grains", sb.refcount_grains,
               total_grains);
  }
  // journal_tail_grain == journal_grains (the end of the ring) means offset 0: earlier
  // versions recorded it so, and their datastores must open.
  if (sb.journal_tail_grain > sb.journal_grains) {
    return bad(at, "journal_tail_grain {} is outside the {}-grain journal",
               sb.journal_tail_grain, sb.journal_grains);
  }
  // Metadata lives in storage blocks the allocator hands out, never in the fixed regions.
  const uint64_t data_start = sb.first_data_block * kGrainsPerBlock;
  struct Pointer {
    const char* name;
    uint64_t grain;
  };
  const Pointer pointers[] = {{"inode_root", sb.inode_root},
                              {"release_list", sb.release_list},
                              {"snapshot_root", sb.snapshot_root}};
  for (const Pointer& p : pointers) {
    if (p.grain != 0 && (p.grain < data_start || p.grain >= total_grains ||
                         reserved_block(sb, p.grain / kGrainsPerBlock))) {
      return bad(at, "{} {} is outside the allocatable grains [{}, {})", p.name, p.grain,
                 data_start, total_grains);
    }
  }
  if (sb.inode_root == 0 ? sb.inode_height != 0
                         : (sb.inode_height < 1 || sb.inode_height > kMaxTreeHeight)) {
    return bad(at, "inode_height {} is invalid for inode_root {} (must be 1..{}, or 0 "
               "without a root)",
               sb.inode_height, sb.inode_root, kMaxTreeHeight);
  }
  return ok_result();
}

}  // namespace

Result<Superblock> decode_superblock(ConstGrain buf) {
  const std::string at = "superblock";
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kSuperblock}, 0, at));
  // Version and incompatible features come before the layout checks: a newer format
  // may lay the payload out differently, and deserves "unsupported", not "corrupt".
  Superblock sb;
  sb.format_version = load<uint32_t>(buf, kSbOffFormatVersion);
  if (sb.format_version > kFormatVersion) {
    return make_error(EOPNOTSUPP, ErrorKind::kUnsupported,
                      "superblock: unsupported format version {} (this vsfs reads {})",
                      sb.format_version, kFormatVersion);
  }
  if (sb.format_version != kFormatVersion) {
    return bad(at, "invalid format version {}", sb.format_version);
  }
  sb.compat = load<uint64_t>(buf, kSbOffCompat);
  sb.ro_compat = load<uint64_t>(buf, kSbOffRoCompat);
  sb.incompat = load<uint64_t>(buf, kSbOffIncompat);
  if ((sb.incompat & ~kIncompatKnown) != 0) {
    return make_error(EOPNOTSUPP, ErrorKind::kUnsupported,
                      "superblock: unsupported incompatible features 0x{:x}",
                      sb.incompat & ~kIncompatKnown);
  }
  // The short payload is a superblock written before the lifetime counters: they were
  // never counted, so they read as zero.
  if ((sb.incompat & kIncompatGrown) != 0) {
    const uint32_t count = load<uint32_t>(buf, kSbOffGrowthCount);
    if (count == 0 || count > kMaxGrowths) {
      return bad(at, "growth count {} is not 1..{}", count, kMaxGrowths);
    }
    VSFS_TRY(check_length(h, static_cast<uint32_t>(kSbLength + 8 + kSbGrowthBytes * count), at));
    VSFS_TRY(check_zero(buf, kSbOffGrowthCount + 4, kSbOffGrowths, at, "reserved"));
    for (uint32_t i = 0; i < count; ++i) {
      const size_t off = kSbOffGrowths + i * kSbGrowthBytes;
      sb.growths.push_back(Growth{load<uint64_t>(buf, off), load<uint64_t>(buf, off + 8),
                                  load<uint64_t>(buf, off + 16), load<uint64_t>(buf, off + 24)});
    }
  } else if (h.length_bytes != kSbShortLength) {
    VSFS_TRY(check_length(h, kSbLength, at));
  }
  VSFS_TRY(check_no_owner(h, at));
  VSFS_TRY(check_tail(buf, h, at));
  std::memcpy(sb.uuid.data(), buf.data() + kSbOffUuid, sb.uuid.size());
  sb.device_bytes = load<uint64_t>(buf, kSbOffDeviceBytes);
  sb.total_blocks = load<uint64_t>(buf, kSbOffTotalBlocks);
  sb.journal_start_grain = load<uint64_t>(buf, kSbOffJournalStart);
  sb.journal_grains = load<uint64_t>(buf, kSbOffJournalGrains);
  sb.block_table_start_grain = load<uint64_t>(buf, kSbOffBlockTableStart);
  sb.block_table_grains = load<uint64_t>(buf, kSbOffBlockTableGrains);
  sb.refcount_start_grain = load<uint64_t>(buf, kSbOffRefcountStart);
  sb.refcount_grains = load<uint64_t>(buf, kSbOffRefcountGrains);
  sb.first_data_block = load<uint64_t>(buf, kSbOffFirstDataBlock);
  sb.inode_root = load<uint64_t>(buf, kSbOffInodeRoot);
  sb.inode_height = load<uint8_t>(buf, kSbOffInodeHeight);
  sb.next_ino = load<uint64_t>(buf, kSbOffNextIno);
  sb.generation = load<uint64_t>(buf, kSbOffGeneration);
  sb.journal_tail_grain = load<uint64_t>(buf, kSbOffJournalTailGrain);
  sb.journal_tail_seq = load<uint64_t>(buf, kSbOffJournalTailSeq);
  sb.release_list = load<uint64_t>(buf, kSbOffReleaseList);
  sb.state = load<uint32_t>(buf, kSbOffState);
  sb.alloc_window_end = load<uint32_t>(buf, kSbOffAllocWindow);
  sb.mount_count = load<uint64_t>(buf, kSbOffMountCount);
  sb.mkfs_time_ns = load<uint64_t>(buf, kSbOffMkfsTime);
  sb.snapshot_root = load<uint64_t>(buf, kSbOffSnapshotRoot);
  if (h.length_bytes != kSbShortLength) {
    LifetimeCounters& l = sb.lifetime;
    l.read_bytes = load<uint64_t>(buf, kSbOffLifeReadBytes);
    l.write_bytes = load<uint64_t>(buf, kSbOffLifeWriteBytes);
    l.read_errors = load<uint64_t>(buf, kSbOffLifeReadErrors);
    l.write_errors = load<uint64_t>(buf, kSbOffLifeWriteErrors);
    l.no_space_errors = load<uint64_t>(buf, kSbOffLifeNoSpaceErrors);
    l.unclean_mounts = load<uint64_t>(buf, kSbOffLifeUncleanMounts);
    l.snapshots_taken = load<uint64_t>(buf, kSbOffLifeSnapshotsTaken);
    l.snapshots_deleted = load<uint64_t>(buf, kSbOffLifeSnapshotsDeleted);
    l.formatted_bytes = load<uint64_t>(buf, kSbOffLifeFormattedBytes);
    l.mounted_seconds = load<uint64_t>(buf, kSbOffLifeMountedSeconds);
  }

  VSFS_TRY(check_zero(buf, kSbOffFormatVersion + 4, kSbOffCompat, at, "reserved"));
  VSFS_TRY(check_zero(buf, kSbOffInodeHeight + 1, kSbOffNextIno, at, "reserved"));
  if ((sb.ro_compat & kRoCompatAllocWindow) == 0 && sb.alloc_window_end != 0) {
    return bad(at, "alloc_window_end {} without ro_compat bit 0x{:x}", sb.alloc_window_end,
               kRoCompatAllocWindow);
  }
  if ((sb.state & ~(kStateClean | kStateMounted)) != 0) {
    return bad(at, "unknown state bits 0x{:x}", sb.state & ~(kStateClean | kStateMounted));
  }
  VSFS_TRY(check_geometry(sb));
  return sb;
}

void encode_superblock(const Superblock& sb, uint64_t generation, Grain buf) {
  VSFS_ASSERT(sb.format_version == kFormatVersion);
  VSFS_ASSERT((sb.state & ~(kStateClean | kStateMounted)) == 0);
  VSFS_ASSERT(sb.growths.size() <= kMaxGrowths);
  const uint32_t length =
      sb.growths.empty() ? kSbLength
                         : static_cast<uint32_t>(kSbLength + 8 + kSbGrowthBytes * sb.growths.size());
  begin_block(buf, BlockType::kSuperblock, length, 0, generation, 0, 0);
  store<uint32_t>(buf, kSbOffFormatVersion, sb.format_version);
  store<uint64_t>(buf, kSbOffCompat, sb.compat);
  store<uint64_t>(buf, kSbOffRoCompat, sb.ro_compat);
  store<uint64_t>(buf, kSbOffIncompat, sb.incompat);
  std::memcpy(buf.data() + kSbOffUuid, sb.uuid.data(), sb.uuid.size());
  store<uint64_t>(buf, kSbOffDeviceBytes, sb.device_bytes);
  store<uint64_t>(buf, kSbOffTotalBlocks, sb.total_blocks);
  store<uint64_t>(buf, kSbOffJournalStart, sb.journal_start_grain);
  store<uint64_t>(buf, kSbOffJournalGrains, sb.journal_grains);
  store<uint64_t>(buf, kSbOffBlockTableStart, sb.block_table_start_grain);
  store<uint64_t>(buf, kSbOffBlockTableGrains, sb.block_table_grains);
  store<uint64_t>(buf, kSbOffRefcountStart, sb.refcount_start_grain);
  store<uint64_t>(buf, kSbOffRefcountGrains, sb.refcount_grains);
  store<uint64_t>(buf, kSbOffFirstDataBlock, sb.first_data_block);
  store<uint64_t>(buf, kSbOffInodeRoot, sb.inode_root);
  store<uint8_t>(buf, kSbOffInodeHeight, sb.inode_height);
  store<uint64_t>(buf, kSbOffNextIno, sb.next_ino);
  store<uint64_t>(buf, kSbOffGeneration, sb.generation);
  store<uint64_t>(buf, kSbOffJournalTailGrain, sb.journal_tail_grain);
  store<uint64_t>(buf, kSbOffJournalTailSeq, sb.journal_tail_seq);
  store<uint64_t>(buf, kSbOffReleaseList, sb.release_list);
  store<uint32_t>(buf, kSbOffState, sb.state);
  store<uint32_t>(buf, kSbOffAllocWindow, sb.alloc_window_end);
  store<uint64_t>(buf, kSbOffMountCount, sb.mount_count);
  store<uint64_t>(buf, kSbOffMkfsTime, sb.mkfs_time_ns);
  store<uint64_t>(buf, kSbOffSnapshotRoot, sb.snapshot_root);
  const LifetimeCounters& l = sb.lifetime;
  store<uint64_t>(buf, kSbOffLifeReadBytes, l.read_bytes);
  store<uint64_t>(buf, kSbOffLifeWriteBytes, l.write_bytes);
  store<uint64_t>(buf, kSbOffLifeReadErrors, l.read_errors);
  store<uint64_t>(buf, kSbOffLifeWriteErrors, l.write_errors);
  store<uint64_t>(buf, kSbOffLifeNoSpaceErrors, l.no_space_errors);
  store<uint64_t>(buf, kSbOffLifeUncleanMounts, l.unclean_mounts);
  store<uint64_t>(buf, kSbOffLifeSnapshotsTaken, l.snapshots_taken);
  store<uint64_t>(buf, kSbOffLifeSnapshotsDeleted, l.snapshots_deleted);
  store<uint64_t>(buf, kSbOffLifeFormattedBytes, l.formatted_bytes);
  store<uint64_t>(buf, kSbOffLifeMountedSeconds, l.mounted_seconds);
  if (!sb.growths.empty()) {
    store<uint32_t>(buf, kSbOffGrowthCount, static_cast<uint32_t>(sb.growths.size()));
    for (size_t i = 0; i < sb.growths.size(); ++i) {
      const size_t off = kSbOffGrowths + i * kSbGrowthBytes;
      const Growth& g = sb.growths[i];
      store<uint64_t>(buf, off, g.region_block);
      store<uint64_t>(buf, off + 8, g.table_grains);
      store<uint64_t>(buf, off + 16, g.summary_grains);
      store<uint64_t>(buf, off + 24, g.refcount_grains);
    }
  }
  seal(buf);
}

// ---- Lease ----

namespace {
constexpr size_t kLeaseOffState = kHeaderBytes, kLeaseOffTime = kHeaderBytes + 4,
                 kLeaseOffNonce = kHeaderBytes + 8, kLeaseOffCounter = kHeaderBytes + 16,
                 kLeaseOffRenewed = kHeaderBytes + 24, kLeaseOffMachine = kHeaderBytes + 32,
                 kLeaseOffBoot = kHeaderBytes + 48, kLeaseOffPidNs = kHeaderBytes + 64,
                 kLeaseOffPid = kHeaderBytes + 72, kLeaseOffHost = kHeaderBytes + 80;
constexpr uint32_t kLeaseLength = 144;
}  // namespace

Result<LeaseRecord> decode_lease(ConstGrain buf) {
  if (first_nonzero(buf, 0, kGrainBytes) == kGrainBytes) return LeaseRecord{};
  const std::string at = where(BlockType::kLease, kLeaseGrain);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kLease}, kLeaseGrain, at));
  VSFS_TRY(check_length(h, kLeaseLength, at));
  VSFS_TRY(check_no_owner(h, at));
  VSFS_TRY(check_tail(buf, h, at));
  LeaseRecord r;
  const uint32_t state = load<uint32_t>(buf, kLeaseOffState);
  if (state > static_cast<uint32_t>(LeaseState::kHeld)) return bad(at, "state {} is unknown", state);
  r.state = static_cast<LeaseState>(state);
  r.lease_ms = load<uint32_t>(buf, kLeaseOffTime);
  r.nonce = load<uint64_t>(buf, kLeaseOffNonce);
  r.counter = load<uint64_t>(buf, kLeaseOffCounter);
  r.renewed_ns = load<uint64_t>(buf, kLeaseOffRenewed);
  std::memcpy(r.machine_id.data(), buf.data() + kLeaseOffMachine, 16);
  std::memcpy(r.boot_id.data(), buf.data() + kLeaseOffBoot, 16);
  r.pid_ns = load<uint64_t>(buf, kLeaseOffPidNs);
  r.pid = load<uint32_t>(buf, kLeaseOffPid);
  VSFS_TRY(check_zero(buf, kLeaseOffPid + 4, kLeaseOffHost, at, "reserved"));
  const char* host = reinterpret_cast<const char*>(buf.data() + kLeaseOffHost);
  r.hostname.assign(host, strnlen(host, kLeaseHostnameBytes));
  VSFS_TRY(check_zero(buf, kLeaseOffHost + r.hostname.size(), kLeaseOffHost + kLeaseHostnameBytes,
                      at, "hostname padding"));
  return r;
}

void encode_lease(const LeaseRecord& r, Grain buf) {
  begin_block(buf, BlockType::kLease, kLeaseLength, 0, 0, kLeaseGrain, 0);
  store<uint32_t>(buf, kLeaseOffState, static_cast<uint32_t>(r.state));
  store<uint32_t>(buf, kLeaseOffTime, r.lease_ms);
  store<uint64_t>(buf, kLeaseOffNonce, r.nonce);
  store<uint64_t>(buf, kLeaseOffCounter, r.counter);
  store<uint64_t>(buf, kLeaseOffRenewed, r.renewed_ns);
  std::memcpy(buf.data() + kLeaseOffMachine, r.machine_id.data(), 16);
  std::memcpy(buf.data() + kLeaseOffBoot, r.boot_id.data(), 16);
  store<uint64_t>(buf, kLeaseOffPidNs, r.pid_ns);
  store<uint32_t>(buf, kLeaseOffPid, r.pid);
  std::memcpy(buf.data() + kLeaseOffHost, r.hostname.data(),
              std::min(r.hostname.size(), kLeaseHostnameBytes));
  seal(buf);
}

// ---- Growths and where the tables live ----

uint64_t growth_region_blocks(const Growth& g) {
  return div_round_up(g.table_grains + g.summary_grains + g.refcount_grains, kGrainsPerBlock);
}

bool reserved_block(const Superblock& sb, uint64_t b) {
  if (b < sb.first_data_block) return true;
  for (const Growth& g : sb.growths) {
    if (b >= g.region_block && b - g.region_block < growth_region_blocks(g)) return true;
  }
  return false;
}

uint64_t growth_reserved_blocks(const Superblock& sb) {
  uint64_t n = 0;
  for (const Growth& g : sb.growths) n += growth_region_blocks(g);
  return n;
}

Superblock grown_superblock(const Superblock& sb, uint64_t new_blocks) {
  VSFS_ASSERT(new_blocks > sb.total_blocks);
  const uint64_t table = div_round_up(new_blocks, kBlocksPerTableGrain);
  const uint64_t refcount = div_round_up(new_blocks * kGrainsPerBlock, kGrainsPerRefcountGrain);
  Growth g;
  g.region_block = sb.total_blocks;
  g.table_grains = table - sb.block_table_grains;
  g.summary_grains = space_summary_grains(table) - space_summary_grains(sb.block_table_grains);
  g.refcount_grains = refcount - sb.refcount_grains;
  Superblock out = sb;
  out.incompat |= kIncompatGrown;
  out.growths.push_back(g);
  out.total_blocks = new_blocks;
  out.device_bytes = new_blocks * kBlockBytes;
  out.block_table_grains = table;
  out.refcount_grains = refcount;
  return out;
}

Result<std::optional<Superblock>> plan_growth(const Superblock& sb, uint64_t device_bytes,
                                              uint64_t new_bytes) {
  constexpr uint64_t kMinGrowthDataBlocks = 16;
  if ((sb.ro_compat & kRoCompatSpaceSummary) == 0) {
    return make_error(EOPNOTSUPP, ErrorKind::kUnsupported,
                      "the datastore has no space summary (made by an older vsfs); run "
                      "vsfs-fsck -y on it first, which adds one where the block table's "
                      "region has room");
  }
  if (new_bytes == 0) new_bytes = device_bytes;
  const uint64_t new_total = new_bytes / kBlockBytes;
  if (new_bytes > device_bytes) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "the device is {} bytes, less than the {} asked for: grow the device "
                      "(the file, LV or LUN) first",
                      device_bytes, new_bytes);
  }
  if (new_total < sb.total_blocks) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "the datastore is {} bytes; shrinking it to {} is not supported",
                      sb.device_bytes, new_total * kBlockBytes);
  }
  if (new_total == sb.total_blocks) return std::optional<Superblock>();
  if (sb.growths.size() >= kMaxGrowths) {
    return make_error(ENOSPC, ErrorKind::kNoSpace,
                      "the datastore grew {} times already, the most its superblock records",
                      sb.growths.size());
  }
  Superblock grown = grown_superblock(sb, new_total);
  const uint64_t region_blocks = growth_region_blocks(grown.growths.back());
  if (new_total - sb.total_blocks < region_blocks + kMinGrowthDataBlocks) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "growing by {} MiB is too little: a growth takes at least {} MiB ({} "
                      "for its tables, {} for data)",
                      new_total - sb.total_blocks, region_blocks + kMinGrowthDataBlocks,
                      region_blocks, kMinGrowthDataBlocks);
  }
  return std::optional<Superblock>(std::move(grown));
}

uint64_t table_grains(const Superblock& sb, Table table) {
  switch (table) {
    case Table::kBlockTable: return sb.block_table_grains;
    case Table::kSpaceSummary: return space_summary_grains(sb.block_table_grains);
    case Table::kRefcount: return sb.refcount_grains;
  }
  return 0;
}

TableRun table_run(const Superblock& sb, Table table, uint64_t index) {
  VSFS_ASSERT(index < table_grains(sb, table));
  auto grown = [&](const Growth& g) {
    switch (table) {
      case Table::kBlockTable: return g.table_grains;
      case Table::kSpaceSummary: return g.summary_grains;
      case Table::kRefcount: return g.refcount_grains;
    }
    return uint64_t{0};
  };
  // Logical grains [fixed, total) are in the growths, in order.
  uint64_t fixed = table_grains(sb, table);
  for (const Growth& g : sb.growths) fixed -= grown(g);
  if (index < fixed) {
    const uint64_t start = table == Table::kBlockTable   ? sb.block_table_start_grain
                           : table == Table::kRefcount ? sb.refcount_start_grain
                                                       : space_summary_start(sb);
    return TableRun{start + index, fixed - index};
  }
  uint64_t first = fixed;
  for (const Growth& g : sb.growths) {
    const uint64_t n = grown(g);
    if (index - first < n) {
      uint64_t at = g.region_block * kGrainsPerBlock;
      if (table != Table::kBlockTable) at += g.table_grains;
      if (table == Table::kRefcount) at += g.summary_grains;
      return TableRun{at + (index - first), n - (index - first)};
    }
    first += n;
  }
  VSFS_ASSERT(false);
  return TableRun{};
}

// ---- Radix tree nodes ----

Result<TreeNode> decode_tree_node(ConstGrain buf, uint64_t self) {
  // Until the type is known the node is named generically.
  const std::string generic = fmt::format("tree node at grain {}", self);
  VSFS_ASSIGN_OR_RETURN(
      MetaHeader h,
      check_header(buf, {BlockType::kMapLeaf, BlockType::kMapInterior,
                         BlockType::kInodeInterior},
                   self, generic));
  const std::string at = where(h.type, self);
  VSFS_TRY(check_length(h, kTreeNodeLength, at));
  TreeNode node;
  node.type = h.type;
  node.level = h.level;
  node.owner = h.owner;
  for (size_t i = 0; i < kTreeFanout; ++i) {
    const size_t off = kHeaderBytes + i * kSlotBytes;
    const uint64_t word = load<uint64_t>(buf, off);
    const uint64_t stamp = load<uint64_t>(buf, off + 8);
    const uint8_t state = static_cast<uint8_t>(word >> 62);
    const uint64_t grain = word & kGrainMask;
    Slot& s = node.slots[i];
    switch (state) {
      case static_cast<uint8_t>(SlotState::kUnmapped):
        if (word != 0 || stamp != 0) {
          return bad(at, "slot {} is unmapped but not all zero (grain {}, stamp {})", i,
                     grain, stamp);
        }
        break;
      case static_cast<uint8_t>(SlotState::kZero):
        // In an interior node: the whole subtree under the slot reads as zeros.
        if (grain != 0) return bad(at, "slot {} has state zero but grain {}", i, grain);
        break;
      case static_cast<uint8_t>(SlotState::kMapped):
        if (grain == 0) return bad(at, "slot {} is mapped to grain 0", i);
        break;
      case static_cast<uint8_t>(SlotState::kAllocated):
        if (h.type != BlockType::kMapLeaf) {
          return bad(at, "slot {} has state allocated outside a map leaf", i);
        }
        if (grain == 0) return bad(at, "slot {} is allocated with grain 0", i);
        break;
      default:
        return bad(at, "slot {} has unknown state {}", i, state);
    }
    s.grain = grain;
    s.state = static_cast<SlotState>(state);
    s.stamp = stamp;
  }
  return node;
}

void encode_tree_node(const TreeNode& node, uint64_t self, uint64_t generation, Grain buf) {
  VSFS_ASSERT(node.type == BlockType::kMapLeaf || node.type == BlockType::kMapInterior ||
              node.type == BlockType::kInodeInterior);
  VSFS_ASSERT(is_interior(node.type) ? node.level >= 1 && node.level <= kMaxTreeLevel
                                     : node.level == 0);
  begin_block(buf, node.type, kTreeNodeLength, node.owner, generation, self, node.level);
  for (size_t i = 0; i < kTreeFanout; ++i) {
    const Slot& s = node.slots[i];
    VSFS_ASSERT(s.grain < kGrainLimit);
    switch (s.state) {
      case SlotState::kUnmapped: VSFS_ASSERT(s.grain == 0 && s.stamp == 0); break;
      case SlotState::kZero: VSFS_ASSERT(s.grain == 0); break;
      case SlotState::kMapped: VSFS_ASSERT(s.grain != 0); break;
      case SlotState::kAllocated:
        VSFS_ASSERT(s.grain != 0 && node.type == BlockType::kMapLeaf);
        break;
      default: VSFS_ASSERT(false && "unknown slot state");
    }
    const size_t off = kHeaderBytes + i * kSlotBytes;
    store<uint64_t>(buf, off, s.grain | static_cast<uint64_t>(s.state) << 62);
    store<uint64_t>(buf, off + 8, s.stamp);
  }
  seal(buf);
}

// ---- Inode table leaf ----

namespace {

bool valid_mode(uint32_t mode) {
  return dirent_type(mode) != 0 && (mode & ~(S_IFMT | 07777u)) == 0;
}

// What the record's type allows of its other fields; empty when it holds.
std::string kind_mismatch(const InodeRecord& r) {
  const uint32_t type = r.mode & S_IFMT;
  const bool has_map = type == S_IFREG || type == S_IFDIR;
  const bool device = type == S_IFCHR || type == S_IFBLK;
  if (!has_map && r.map_root != 0) return "has a map but is neither a file nor a directory";
  if (!device && r.rdev != 0) return fmt::format("has rdev {} but is not a device", r.rdev);
  if (type == S_IFLNK) {
    if (r.extra == 0) return "is a symlink without a target (extra 0)";
    if (r.size_bytes == 0 || r.size_bytes > kMaxSymlinkBytes) {
      return fmt::format("is a symlink of size {} (must be 1..{})", r.size_bytes,
                         kMaxSymlinkBytes);
    }
  } else if (!has_map && r.size_bytes != 0) {
    return fmt::format("has size {} but holds no data", r.size_bytes);
  }
  if (type != S_IFDIR && r.parent != 0) return fmt::format("has parent {} but is not a directory", r.parent);
  return {};
}

}  // namespace

Result<InodeLeaf> decode_inode_leaf(ConstGrain buf, uint64_t self, uint64_t first_ino) {
  const std::string at = where(BlockType::kInodeLeaf, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kInodeLeaf}, self, at));
  VSFS_TRY(check_length(h, kInodeLeafLength, at));
  VSFS_TRY(check_no_owner(h, at));
  VSFS_TRY(check_tail(buf, h, at));
  InodeLeaf leaf;
  leaf.first_ino = first_ino;
  for (size_t i = 0; i < kInodesPerLeaf; ++i) {
    const size_t base = kHeaderBytes + i * kInodeBytes;
    InodeRecord& r = leaf.inodes[i];
    r.ino = load<uint64_t>(buf, base + kInoOffIno);
    if (r.ino == 0) {
      size_t nz = first_nonzero(buf, base, base + kInodeBytes);
      if (nz != base + kInodeBytes) {
        return bad(at, "record {} is free (ino 0) but byte {} is nonzero", i, nz - base);
      }
      continue;
    }
    if (r.ino != first_ino + i) {
      return bad(at, "record {} holds inode {}, expected {}", i, r.ino, first_ino + i);
    }
    r.mode = load<uint32_t>(buf, base + kInoOffMode);
    r.uid = load<uint32_t>(buf, base + kInoOffUid);
    r.gid = load<uint32_t>(buf, base + kInoOffGid);
    r.nlink = load<uint32_t>(buf, base + kInoOffNlink);
    r.size_bytes = load<uint64_t>(buf, base + kInoOffSize);
    r.atime_ns = load<uint64_t>(buf, base + kInoOffAtime);
    r.mtime_ns = load<uint64_t>(buf, base + kInoOffMtime);
    r.ctime_ns = load<uint64_t>(buf, base + kInoOffCtime);
    r.map_root = load<uint64_t>(buf, base + kInoOffMapRoot);
    r.map_height = load<uint8_t>(buf, base + kInoOffMapHeight);
    r.flags = load<uint8_t>(buf, base + kInoOffFlags);
    r.allocated_grains = load<uint64_t>(buf, base + kInoOffAllocated);
    r.btime_ns = load<uint64_t>(buf, base + kInoOffBtime);
    r.parent = load<uint64_t>(buf, base + kInoOffParent);
    r.replaced_gen = load<uint64_t>(buf, base + kInoOffReplacedGen);
    r.rdev = load<uint64_t>(buf, base + kInoOffRdev);
    r.extra = load<uint64_t>(buf, base + kInoOffExtra);
    if (!valid_mode(r.mode)) {
      return bad(at, "inode {} has invalid mode 0{:o} (must be one file type and permission "
                 "bits)",
                 r.ino, r.mode);
    }
    if (std::string why = kind_mismatch(r); !why.empty()) {
      return bad(at, "inode {} (mode 0{:o}) {}", r.ino, r.mode, why);
    }
    if (r.extra >= kGrainLimit) {
      return bad(at, "inode {} has extra {} beyond 2^62", r.ino, r.extra);
    }
    if (r.flags != 0) return bad(at, "inode {} has unknown flags 0x{:x}", r.ino, r.flags);
    if (r.map_root >= kGrainLimit) {
      return bad(at, "inode {} has map_root {} beyond 2^62", r.ino, r.map_root);
    }
    if (r.map_root == 0 ? r.map_height != 0
                        : (r.map_height < 1 || r.map_height > kMaxTreeHeight)) {
      return bad(at, "inode {} has map_height {} for map_root {} (must be 1..{}, or 0 "
                 "without a root)",
                 r.ino, r.map_height, r.map_root, kMaxTreeHeight);
    }
    if (r.map_root == 0 && r.allocated_grains != 0) {
      return bad(at, "inode {} has {} allocated grains but no map", r.ino,
                 r.allocated_grains);
    }
    size_t nz = first_nonzero(buf, base + kInoOffFlags + 1, base + kInoOffAllocated);
    if (nz == base + kInoOffAllocated) {
      nz = first_nonzero(buf, base + kInoOffExtra + 8, base + kInodeBytes);
      if (nz == base + kInodeBytes) continue;
    }
    return bad(at, "inode {} has nonzero reserved byte {} of its record", r.ino, nz - base);
  }
  return leaf;
}

void encode_inode_leaf(const InodeLeaf& leaf, uint64_t self, uint64_t generation, Grain buf) {
  begin_block(buf, BlockType::kInodeLeaf, kInodeLeafLength, 0, generation, self, 0);
  for (size_t i = 0; i < kInodesPerLeaf; ++i) {
    const InodeRecord& r = leaf.inodes[i];
    if (r.ino == 0) continue;  // a free record is all zero
    VSFS_ASSERT(r.ino == leaf.first_ino + i);
    VSFS_ASSERT(valid_mode(r.mode));
    VSFS_ASSERT(r.flags == 0);
    VSFS_ASSERT(kind_mismatch(r).empty());
    VSFS_ASSERT(r.extra < kGrainLimit);
    VSFS_ASSERT(r.map_root == 0 ? r.map_height == 0 && r.allocated_grains == 0
                                : r.map_height >= 1 && r.map_height <= kMaxTreeHeight);
    const size_t base = kHeaderBytes + i * kInodeBytes;
    store<uint64_t>(buf, base + kInoOffIno, r.ino);
    store<uint32_t>(buf, base + kInoOffMode, r.mode);
    store<uint32_t>(buf, base + kInoOffUid, r.uid);
    store<uint32_t>(buf, base + kInoOffGid, r.gid);
    store<uint32_t>(buf, base + kInoOffNlink, r.nlink);
    store<uint64_t>(buf, base + kInoOffSize, r.size_bytes);
    store<uint64_t>(buf, base + kInoOffAtime, r.atime_ns);
    store<uint64_t>(buf, base + kInoOffMtime, r.mtime_ns);
    store<uint64_t>(buf, base + kInoOffCtime, r.ctime_ns);
    store<uint64_t>(buf, base + kInoOffMapRoot, r.map_root);
    store<uint8_t>(buf, base + kInoOffMapHeight, r.map_height);
    store<uint8_t>(buf, base + kInoOffFlags, r.flags);
    store<uint64_t>(buf, base + kInoOffAllocated, r.allocated_grains);
    store<uint64_t>(buf, base + kInoOffBtime, r.btime_ns);
    store<uint64_t>(buf, base + kInoOffParent, r.parent);
    store<uint64_t>(buf, base + kInoOffReplacedGen, r.replaced_gen);
    store<uint64_t>(buf, base + kInoOffRdev, r.rdev);
    store<uint64_t>(buf, base + kInoOffExtra, r.extra);
  }
  seal(buf);
}

// ---- Inode extra chain ----

Result<ExtraBlock> decode_extra_block(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kInodeExtra, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kInodeExtra}, self, at));
  if (h.owner == 0) return bad(at, "owner is 0, expected the inode's number");
  if (h.length_bytes <= 8) return bad(at, "length {} holds no content", h.length_bytes);
  VSFS_TRY(check_tail(buf, h, at));
  ExtraBlock b;
  b.owner = h.owner;
  b.next = load<uint64_t>(buf, kHeaderBytes);
  if (b.next >= kGrainLimit || b.next == self) {
    return bad(at, "next {} is not another grain below 2^62", b.next);
  }
  b.piece.assign(reinterpret_cast<const char*>(buf.data() + kHeaderBytes + 8),
                 h.length_bytes - 8);
  return b;
}

void encode_extra_block(const ExtraBlock& b, uint64_t self, uint64_t generation, Grain buf) {
  VSFS_ASSERT(b.owner != 0 && !b.piece.empty() && b.piece.size() <= kExtraPieceBytes);
  VSFS_ASSERT(b.next < kGrainLimit && b.next != self);
  begin_block(buf, BlockType::kInodeExtra, static_cast<uint32_t>(8 + b.piece.size()), b.owner,
              generation, self, 0);
  store<uint64_t>(buf, kHeaderBytes, b.next);
  std::memcpy(buf.data() + kHeaderBytes + 8, b.piece.data(), b.piece.size());
  seal(buf);
}

bool valid_xattr_name(std::string_view name) {
  if (name.size() > kMaxXattrNameBytes || name.find('\0') != std::string_view::npos) return false;
  for (std::string_view prefix : {"user.", "trusted.", "security."}) {
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

namespace {
constexpr size_t kExtraFixedBytes = 8;   // u32 target_len, u32 xattr_count
constexpr size_t kXattrFixedBytes = 4;   // u8 name_len, u8 reserved, u16 value_len
}  // namespace

size_t inode_extra_bytes(const InodeExtra& e) {
  size_t n = kExtraFixedBytes + e.target.size();
  for (const auto& [name, value] : e.xattrs) n += kXattrFixedBytes + name.size() + value.size();
  return n;
}

std::string encode_inode_extra(const InodeExtra& e) {
  VSFS_ASSERT(inode_extra_bytes(e) <= kMaxExtraBytes);
  std::string out;
  out.reserve(inode_extra_bytes(e));
  auto put = [&out](auto v) {
    uint8_t bytes[sizeof(v)];
    store_le(bytes, v);
    out.append(reinterpret_cast<const char*>(bytes), sizeof(v));
  };
  put(static_cast<uint32_t>(e.target.size()));
  put(static_cast<uint32_t>(e.xattrs.size()));
  out += e.target;
  for (const auto& [name, value] : e.xattrs) {
    VSFS_ASSERT(valid_xattr_name(name) && value.size() <= kMaxXattrValueBytes);
    put(static_cast<uint8_t>(name.size()));
    put(uint8_t{0});
    put(static_cast<uint16_t>(value.size()));
    out += name;
    out += value;
  }
  return out;
}

Result<InodeExtra> decode_inode_extra(std::string_view c, const std::string& at) {
  if (c.size() < kExtraFixedBytes) return bad(at, "extra content of {} bytes is truncated", c.size());
  auto u32 = [&](size_t off) { return load_le<uint32_t>(reinterpret_cast<const uint8_t*>(c.data() + off)); };
  const uint32_t target_len = u32(0);
  const uint32_t count = u32(4);
  size_t off = kExtraFixedBytes;
  if (target_len > kMaxSymlinkBytes || c.size() - off < target_len) {
    return bad(at, "symlink target of {} bytes does not fit", target_len);
  }
  InodeExtra e;
  e.target.assign(c.substr(off, target_len));
  if (e.target.find('\0') != std::string::npos) return bad(at, "symlink target holds a NUL");
  off += target_len;
  for (uint32_t i = 0; i < count; ++i) {
    if (c.size() - off < kXattrFixedBytes) return bad(at, "xattr {} of {} is truncated", i, count);
    const auto* p = reinterpret_cast<const uint8_t*>(c.data() + off);
    const size_t name_len = p[0];
    const size_t value_len = load_le<uint16_t>(p + 2);
    if (p[1] != 0) return bad(at, "xattr {} has a nonzero reserved byte", i);
    off += kXattrFixedBytes;
    if (c.size() - off < name_len + value_len) return bad(at, "xattr {} runs past the content", i);
    std::string name(c.substr(off, name_len));
    if (!valid_xattr_name(name)) return bad(at, "xattr {} has an invalid name", i);
    if (value_len > kMaxXattrValueBytes) {
      return bad(at, "xattr {} has a value of {} bytes (at most {})", name, value_len,
                 kMaxXattrValueBytes);
    }
    if (!e.xattrs.empty() && e.xattrs.back().first >= name) {
      return bad(at, "xattr {} is out of order or repeated", name);
    }
    e.xattrs.emplace_back(std::move(name), std::string(c.substr(off + name_len, value_len)));
    off += name_len + value_len;
  }
  if (off != c.size()) return bad(at, "{} bytes after the last xattr", c.size() - off);
  return e;
}

// ---- Directory block ----

uint8_t dirent_type(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return DT_REG;
    case S_IFDIR: return DT_DIR;
    case S_IFLNK: return DT_LNK;
    case S_IFIFO: return DT_FIFO;
    case S_IFSOCK: return DT_SOCK;
    case S_IFCHR: return DT_CHR;
    case S_IFBLK: return DT_BLK;
    default: return 0;
  }
}

namespace {
bool valid_dirent_type(uint8_t t) {
  return t == DT_REG || t == DT_DIR || t == DT_LNK || t == DT_FIFO || t == DT_SOCK ||
         t == DT_CHR || t == DT_BLK;
}
}  // namespace

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  if (name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

size_t dir_entry_bytes(const DirEntry& e) { return kDirEntryFixedBytes + e.name.size(); }

Result<DirBlock> decode_dir_block(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kDirBlock, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kDirBlock}, self, at));
  if (h.owner == 0) return bad(at, "owner is 0, expected the directory's inode number");
  DirBlock block;
  block.owner = h.owner;
  std::unordered_set<std::string_view> seen;
  const size_t end = kHeaderBytes + h.length_bytes;
  size_t off = kHeaderBytes;
  while (off < end) {
    const size_t index = block.entries.size();
    const size_t pos = off - kHeaderBytes;
    if (end - off < kDirEntryFixedBytes) {
      return bad(at, "entry {} at payload offset {} runs past length {}", index, pos,
                 h.length_bytes);
    }
    DirEntry e;
    e.ino = load<uint64_t>(buf, off);
    e.type = load<uint8_t>(buf, off + 8);
    const uint8_t name_len = load<uint8_t>(buf, off + 9);
    if (name_len == 0) return bad(at, "entry {} at payload offset {} has an empty name", index, pos);
    if (end - off - kDirEntryFixedBytes < name_len) {
      return bad(at, "entry {} at payload offset {} (name of {} bytes) runs past length {}",
                 index, pos, name_len, h.length_bytes);
    }
    const char* name_ptr = reinterpret_cast<const char*>(buf.data() + off + kDirEntryFixedBytes);
    std::string_view name(name_ptr, name_len);
    if (!valid_name(name)) {
      return bad(at, "entry {} at payload offset {} has an invalid name (contains '/' or "
                 "NUL, or is . or ..)",
                 index, pos);
    }
    if (e.ino == 0) return bad(at, "entry {} ({}) has inode 0", index, name);
    if (!valid_dirent_type(e.type)) {
      return bad(at, "entry {} ({}) has unknown file type {}", index, name, e.type);
    }
    if (!seen.insert(name).second) return bad(at, "entry {} repeats the name {}", index, name);
    e.name.assign(name);
    block.entries.push_back(std::move(e));
    off += kDirEntryFixedBytes + name_len;
  }
  // After the entries, so that an entry running past `length` is reported as such.
  VSFS_TRY(check_tail(buf, h, at));
  return block;
}

void encode_dir_block(const DirBlock& block, uint64_t self, uint64_t generation, Grain buf) {
  size_t length = 0;
  for (const DirEntry& e : block.entries) length += dir_entry_bytes(e);
  VSFS_ASSERT(length <= kPayloadBytes);
  VSFS_ASSERT(block.owner != 0);
  begin_block(buf, BlockType::kDirBlock, static_cast<uint32_t>(length), block.owner,
              generation, self, 0);
  size_t off = kHeaderBytes;
  for (const DirEntry& e : block.entries) {
    VSFS_ASSERT(valid_name(e.name));
    VSFS_ASSERT(e.ino != 0 && valid_dirent_type(e.type));
    store<uint64_t>(buf, off, e.ino);
    store<uint8_t>(buf, off + 8, e.type);
    store<uint8_t>(buf, off + 9, static_cast<uint8_t>(e.name.size()));
    std::memcpy(buf.data() + off + kDirEntryFixedBytes, e.name.data(), e.name.size());
    off += dir_entry_bytes(e);
  }
  seal(buf);
}

// ---- Block table ----

Result<BlockTableGrain> decode_block_table(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kBlockTable, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kBlockTable}, self, at));
  VSFS_TRY(check_length(h, kBlockTableLength, at));
  VSFS_TRY(check_no_owner(h, at));
  BlockTableGrain t;
  for (size_t i = 0; i < kBlocksPerTableGrain; ++i) {
    const size_t off = kHeaderBytes + i * kBlockEntryBytes;
    const uint8_t state = load<uint8_t>(buf, off);
    const uint16_t used = load<uint16_t>(buf, off + 2);
    if (state > static_cast<uint8_t>(BlockState::kReserved)) {
      return bad(at, "entry {} has unknown state {}", i, state);
    }
    if (load<uint8_t>(buf, off + 1) != 0 || load<uint32_t>(buf, off + 4) != 0) {
      return bad(at, "entry {} has nonzero reserved bytes", i);
    }
    if (used > kGrainsPerBlock) {
      return bad(at, "entry {} has {} used grains, more than {}", i, used, kGrainsPerBlock);
    }
    const auto s = static_cast<BlockState>(state);
    if ((s == BlockState::kFormattedFree || s == BlockState::kToFormatFree) && used != 0) {
      return bad(at, "entry {} is free but has {} used grains", i, used);
    }
    t.entries[i] = BlockEntry{s, used};
  }
  return t;
}

void encode_block_table(const BlockTableGrain& t, uint64_t self, uint64_t generation,
                        Grain buf) {
  begin_block(buf, BlockType::kBlockTable, kBlockTableLength, 0, generation, self, 0);
  for (size_t i = 0; i < kBlocksPerTableGrain; ++i) {
    const BlockEntry& e = t.entries[i];
    VSFS_ASSERT(e.state <= BlockState::kReserved && e.used_grains <= kGrainsPerBlock);
    VSFS_ASSERT(e.state >= BlockState::kData || e.used_grains == 0);
    const size_t off = kHeaderBytes + i * kBlockEntryBytes;
    store<uint8_t>(buf, off, static_cast<uint8_t>(e.state));
    store<uint16_t>(buf, off + 2, e.used_grains);
  }
  seal(buf);
}

// ---- Space summary ----

uint64_t space_summary_start(const Superblock& sb) {
  uint64_t grown = 0;
  for (const Growth& g : sb.growths) grown += g.table_grains;
  return sb.block_table_start_grain + sb.block_table_grains - grown;
}

bool space_summary_fits(const Superblock& sb) {
  uint64_t grown = 0;
  for (const Growth& g : sb.growths) grown += g.summary_grains;
  return space_summary_start(sb) + space_summary_grains(sb.block_table_grains) - grown <=
         sb.refcount_start_grain;
}

Result<SpaceSummaryGrain> decode_space_summary(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kSpaceSummary, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kSpaceSummary}, self, at));
  VSFS_TRY(check_length(h, static_cast<uint32_t>(kPayloadBytes), at));
  VSFS_TRY(check_no_owner(h, at));
  SpaceSummaryGrain s;
  for (size_t i = 0; i < s.words.size(); ++i) s.words[i] = load<uint64_t>(buf, kHeaderBytes + i * 8);
  return s;
}

void encode_space_summary(const SpaceSummaryGrain& s, uint64_t self, uint64_t generation,
                          Grain buf) {
  begin_block(buf, BlockType::kSpaceSummary, static_cast<uint32_t>(kPayloadBytes), 0, generation, self, 0);
  for (size_t i = 0; i < s.words.size(); ++i) store<uint64_t>(buf, kHeaderBytes + i * 8, s.words[i]);
  seal(buf);
}

// ---- Reference counts ----

Result<RefcountGrain> decode_refcounts(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kRefcountTable, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h,
                        check_header(buf, {BlockType::kRefcountTable}, self, at));
  VSFS_TRY(check_length(h, kRefcountLength, at));
  VSFS_TRY(check_no_owner(h, at));
  RefcountGrain t;
  for (size_t i = 0; i < kGrainsPerRefcountGrain; ++i) {
    t.counts[i] = load<uint16_t>(buf, kHeaderBytes + i * 2);
  }
  return t;
}

void encode_refcounts(const RefcountGrain& t, uint64_t self, uint64_t generation, Grain buf) {
  begin_block(buf, BlockType::kRefcountTable, kRefcountLength, 0, generation, self, 0);
  for (size_t i = 0; i < kGrainsPerRefcountGrain; ++i) {
    store<uint16_t>(buf, kHeaderBytes + i * 2, t.counts[i]);
  }
  seal(buf);
}

// ---- Journal ----
// Journal records are not owned and carry no generation: the sequence number orders
// them. Their `self` is the physical grain they were written at, so a stale record left
// in the ring from an earlier lap, or a misdirected write, does not validate.

Result<JournalDesc> decode_journal_desc(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kJournalDesc, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kJournalDesc}, self, at));
  VSFS_TRY(check_no_owner(h, at));
  if (h.generation != 0) return bad(at, "generation {} must be 0", h.generation);
  if (h.length_bytes < kJournalDescFixed) {
    return bad(at, "length {} bytes is shorter than the {}-byte fixed part (truncated)",
               h.length_bytes, kJournalDescFixed);
  }
  JournalDesc d;
  d.seq = load<uint64_t>(buf, kHeaderBytes);
  const uint32_t count = load<uint32_t>(buf, kHeaderBytes + 8);
  const uint32_t flags = load<uint32_t>(buf, kHeaderBytes + 12);
  if (count < 1 || count > kJournalDescMax) {
    return bad(at, "count {} is outside 1..{}", count, kJournalDescMax);
  }
  VSFS_TRY(check_length(h, kJournalDescFixed + count * 8, at));
  VSFS_TRY(check_tail(buf, h, at));
  if ((flags & ~1u) != 0) return bad(at, "unknown flags 0x{:x}", flags & ~1u);
  d.last = (flags & 1u) != 0;
  d.homes.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t home = load<uint64_t>(buf, kHeaderBytes + kJournalDescFixed + i * 8);
    // Home 0 is the superblock (written to both copies on replay).
    if (home >= kGrainLimit) {
      return bad(at, "home {} is grain {}, must be below 2^62", i, home);
    }
    d.homes[i] = home;
  }
  return d;
}

void encode_journal_desc(const JournalDesc& d, uint64_t self, Grain buf) {
  VSFS_ASSERT(!d.homes.empty() && d.homes.size() <= kJournalDescMax);
  const auto length = static_cast<uint32_t>(kJournalDescFixed + d.homes.size() * 8);
  begin_block(buf, BlockType::kJournalDesc, length, 0, 0, self, 0);
  store<uint64_t>(buf, kHeaderBytes, d.seq);
  store<uint32_t>(buf, kHeaderBytes + 8, static_cast<uint32_t>(d.homes.size()));
  store<uint32_t>(buf, kHeaderBytes + 12, d.last ? 1u : 0u);
  for (size_t i = 0; i < d.homes.size(); ++i) {
    VSFS_ASSERT(d.homes[i] < kGrainLimit);
    store<uint64_t>(buf, kHeaderBytes + kJournalDescFixed + i * 8, d.homes[i]);
  }
  seal(buf);
}

Result<JournalCommit> decode_journal_commit(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kJournalCommit, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h,
                        check_header(buf, {BlockType::kJournalCommit}, self, at));
  VSFS_TRY(check_length(h, kJournalCommitLength, at));
  VSFS_TRY(check_no_owner(h, at));
  if (h.generation != 0) return bad(at, "generation {} must be 0", h.generation);
  VSFS_TRY(check_tail(buf, h, at));
  JournalCommit c;
  c.seq = load<uint64_t>(buf, kHeaderBytes);
  c.grains = load<uint32_t>(buf, kHeaderBytes + 8);
  c.payload_crc = load<uint32_t>(buf, kHeaderBytes + 12);
  c.time_ns = load<uint64_t>(buf, kHeaderBytes + 16);
  if (c.grains < 2) {
    return bad(at, "covers {} grains; a transaction has at least a desc and an image",
               c.grains);
  }
  return c;
}

void encode_journal_commit(const JournalCommit& c, uint64_t self, Grain buf) {
  VSFS_ASSERT(c.grains >= 2);
  begin_block(buf, BlockType::kJournalCommit, kJournalCommitLength, 0, 0, self, 0);
  store<uint64_t>(buf, kHeaderBytes, c.seq);
  store<uint32_t>(buf, kHeaderBytes + 8, c.grains);
  store<uint32_t>(buf, kHeaderBytes + 12, c.payload_crc);
  store<uint64_t>(buf, kHeaderBytes + 16, c.time_ns);
  seal(buf);
}

// ---- Release list ----

Result<ReleaseList> decode_release_list(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kReleaseList, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kReleaseList}, self, at));
  VSFS_TRY(check_no_owner(h, at));
  if (h.length_bytes < kReleaseListFixed) {
    return bad(at, "length {} bytes is shorter than the {}-byte fixed part (truncated)",
               h.length_bytes, kReleaseListFixed);
  }
  ReleaseList l;
  l.next = load<uint64_t>(buf, kHeaderBytes);
  const uint32_t count = load<uint32_t>(buf, kHeaderBytes + 8);
  if (count > kReleaseEntriesMax) {
    return bad(at, "count {} exceeds {}", count, kReleaseEntriesMax);
  }
  VSFS_TRY(check_length(h, kReleaseListFixed + count * kReleaseEntryBytes, at));
  VSFS_TRY(check_tail(buf, h, at));
  if (load<uint32_t>(buf, kHeaderBytes + 12) != 0) {
    return bad(at, "reserved word after count is nonzero");
  }
  if (l.next >= kGrainLimit || (l.next != 0 && l.next == self)) {
    return bad(at, "next {} is invalid", l.next);
  }
  l.entries.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const size_t off = kHeaderBytes + kReleaseListFixed + i * kReleaseEntryBytes;
    ReleaseEntry& e = l.entries[i];
    e.root = load<uint64_t>(buf, off + kRelOffRoot);
    e.height = load<uint8_t>(buf, off + kRelOffHeight);
    const uint8_t kind = load<uint8_t>(buf, off + kRelOffKind);
    e.owner = load<uint64_t>(buf, off + kRelOffOwner);
    if (e.root == 0 || e.root >= kGrainLimit) {
      return bad(at, "entry {} has root grain {}, must be nonzero and below 2^62", i, e.root);
    }
    if (e.height < 1 || e.height > kMaxTreeHeight) {
      return bad(at, "entry {} has height {}, must be 1..{}", i, e.height, kMaxTreeHeight);
    }
    if (kind < static_cast<uint8_t>(TreeKind::kFileMap) ||
        kind > static_cast<uint8_t>(TreeKind::kInodeTable)) {
      return bad(at, "entry {} has unknown tree kind {}", i, kind);
    }
    e.kind = static_cast<TreeKind>(kind);
    size_t nz = first_nonzero(buf, off + kRelOffKind + 1, off + kRelOffOwner);
    if (nz != off + kRelOffOwner) {
      return bad(at, "entry {} has nonzero reserved byte {}", i, nz - off);
    }
  }
  return l;
}

void encode_release_list(const ReleaseList& l, uint64_t self, uint64_t generation,
                         Grain buf) {
  VSFS_ASSERT(l.entries.size() <= kReleaseEntriesMax);
  VSFS_ASSERT(l.next < kGrainLimit && (l.next == 0 || l.next != self));
  const auto length =
      static_cast<uint32_t>(kReleaseListFixed + l.entries.size() * kReleaseEntryBytes);
  begin_block(buf, BlockType::kReleaseList, length, 0, generation, self, 0);
  store<uint64_t>(buf, kHeaderBytes, l.next);
  store<uint32_t>(buf, kHeaderBytes + 8, static_cast<uint32_t>(l.entries.size()));
  for (size_t i = 0; i < l.entries.size(); ++i) {
    const ReleaseEntry& e = l.entries[i];
    VSFS_ASSERT(e.root != 0 && e.root < kGrainLimit);
    VSFS_ASSERT(e.height >= 1 && e.height <= kMaxTreeHeight);
    VSFS_ASSERT(e.kind >= TreeKind::kFileMap && e.kind <= TreeKind::kInodeTable);
    const size_t off = kHeaderBytes + kReleaseListFixed + i * kReleaseEntryBytes;
    store<uint64_t>(buf, off + kRelOffRoot, e.root);
    store<uint8_t>(buf, off + kRelOffHeight, e.height);
    store<uint8_t>(buf, off + kRelOffKind, static_cast<uint8_t>(e.kind));
    store<uint64_t>(buf, off + kRelOffOwner, e.owner);
  }
  seal(buf);
}

// ---- Geometry of a new datastore ----

Result<Layout> compute_layout(uint64_t device_bytes, uint64_t journal_bytes_override) {
  constexpr uint64_t kMinJournalBytes = 8ull << 20;
  constexpr uint64_t kMaxJournalBytes = 1ull << 30;
  constexpr uint64_t kMinOverrideJournalBytes = kBlockBytes;  // one storage block
  constexpr uint64_t kMinDataBlocks = 16;
  if (device_bytes < kMinDeviceBytes) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "device is {} bytes; a datastore needs at least 64 MiB", device_bytes);
  }
  if (device_bytes / kBlockBytes >= kGrainLimit / kGrainsPerBlock) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "device is {} bytes; too large for vsfs", device_bytes);
  }
  Layout l;
  l.total_blocks = device_bytes / kBlockBytes;

  uint64_t journal_blocks;
  if (journal_bytes_override != 0) {
    if (journal_bytes_override > device_bytes) {
      return make_error(EINVAL, ErrorKind::kInvalidArgument,
                        "journal of {} bytes does not fit a {}-byte device",
                        journal_bytes_override, device_bytes);
    }
    journal_blocks = std::max(div_round_up(journal_bytes_override, kBlockBytes),
                              kMinOverrideJournalBytes / kBlockBytes);
  } else {
    const uint64_t bytes = std::clamp(device_bytes / 256, kMinJournalBytes, kMaxJournalBytes);
    journal_blocks = div_round_up(bytes, kBlockBytes);
  }
  l.journal_start_grain = kGrainsPerBlock;  // after block 0, the superblocks
  l.journal_grains = journal_blocks * kGrainsPerBlock;

  l.block_table_start_grain = l.journal_start_grain + l.journal_grains;
  l.block_table_grains = div_round_up(l.total_blocks, kBlocksPerTableGrain);
  l.space_summary_grains = space_summary_grains(l.block_table_grains);
  const uint64_t table_blocks =
      div_round_up(l.block_table_grains + l.space_summary_grains, kGrainsPerBlock);

  l.refcount_start_grain = l.block_table_start_grain + table_blocks * kGrainsPerBlock;
  l.refcount_grains =
      div_round_up(l.total_blocks * kGrainsPerBlock, kGrainsPerRefcountGrain);
  const uint64_t refcount_blocks = div_round_up(l.refcount_grains, kGrainsPerBlock);

  l.first_data_block = l.refcount_start_grain / kGrainsPerBlock + refcount_blocks;
  if (l.first_data_block > l.total_blocks ||
      l.total_blocks - l.first_data_block < kMinDataBlocks) {
    return make_error(EINVAL, ErrorKind::kInvalidArgument,
                      "device of {} bytes leaves {} storage blocks for data after the "
                      "journal and tables; a datastore needs at least {}",
                      device_bytes,
                      l.first_data_block > l.total_blocks
                          ? 0
                          : l.total_blocks - l.first_data_block,
                      kMinDataBlocks);
  }
  return l;
}

// ---- Snapshot list ----

size_t snapshot_record_bytes(const SnapshotRecord& r) {
  return kSnapshotFixedBytes + (r.taker_uid != 0 ? kSnapshotTakerBytes : 0) + r.name.size();
}

Result<SnapshotList> decode_snapshot_list(ConstGrain buf, uint64_t self) {
  const std::string at = where(BlockType::kSnapshotList, self);
  VSFS_ASSIGN_OR_RETURN(MetaHeader h, check_header(buf, {BlockType::kSnapshotList}, self, at));
  VSFS_TRY(check_no_owner(h, at));
  if (h.length_bytes < 16) return bad(at, "length {} bytes is shorter than 16 (truncated)", h.length_bytes);
  VSFS_TRY(check_tail(buf, h, at));
  SnapshotList l;
  l.next = load<uint64_t>(buf, kHeaderBytes);
  const uint32_t count = load<uint32_t>(buf, kHeaderBytes + 8);
  if (load<uint32_t>(buf, kHeaderBytes + 12) != 0) return bad(at, "reserved word after count is nonzero");
  if (l.next >= kGrainLimit || (l.next != 0 && l.next == self)) return bad(at, "next {} is invalid", l.next);
  size_t off = kHeaderBytes + 16;
  const size_t end = kHeaderBytes + h.length_bytes;
  for (uint32_t i = 0; i < count; ++i) {
    if (off + kSnapshotFixedBytes > end) return bad(at, "record {} runs past the length", i);
    SnapshotRecord r;
    r.change_id = load<uint64_t>(buf, off);
    r.created_ns = load<uint64_t>(buf, off + 8);
    r.inode_root = load<uint64_t>(buf, off + 16);
    r.base_ino = load<uint64_t>(buf, off + 24);
    r.next_ino = load<uint64_t>(buf, off + 32);
    r.id = load<uint16_t>(buf, off + 40);
    r.inode_height = load<uint8_t>(buf, off + 42);
    r.flags = load<uint8_t>(buf, off + 43);
    const uint8_t len = load<uint8_t>(buf, off + 44);
    if (first_nonzero(buf, off + 45, off + 48) != off + 48) return bad(at, "record {} has nonzero reserved bytes", i);
    size_t name_at = off + kSnapshotFixedBytes;
    if ((r.flags & kSnapTaker) != 0) {
      if (name_at + kSnapshotTakerBytes > end) return bad(at, "record {} runs past the length", i);
      r.taker_uid = load<uint32_t>(buf, name_at);
      if (r.taker_uid == 0) return bad(at, "record {} has a taker field with uid 0", i);
      if (load<uint32_t>(buf, name_at + 4) != 0) return bad(at, "record {} has nonzero reserved bytes", i);
      name_at += kSnapshotTakerBytes;
      r.flags &= static_cast<uint8_t>(~kSnapTaker);
    }
    if (name_at + len > end) return bad(at, "record {} name runs past the length", i);
    r.name.assign(reinterpret_cast<const char*>(buf.data() + name_at), len);
    if (!valid_name(r.name) || r.name == "full") return bad(at, "record {} has an invalid name", i);
    if (r.id == 0 || r.id > 0xfffc) return bad(at, "record {} has id {}, must be 1..65532", i, r.id);
    if ((r.flags & ~kSnapDeleted) != 0) {
      return bad(at, "record {} has unknown flags {:#x}", i, r.flags);
    }
    const bool deleted = (r.flags & kSnapDeleted) != 0;
    if (deleted != (r.inode_root == 0) || r.inode_root >= kGrainLimit ||
        (!deleted && (r.inode_height < 1 || r.inode_height > kMaxTreeHeight))) {
      return bad(at, "record {} ('{}') has inode root {} height {}", i, r.name, r.inode_root,
                 r.inode_height);
    }
    if (r.base_ino == 0 || (!deleted && r.base_ino >= r.next_ino)) {
      return bad(at, "record {} has base inode {}", i, r.base_ino);
    }
    off += snapshot_record_bytes(r);
    l.records.push_back(std::move(r));
  }
  if (off != end) return bad(at, "length {} does not match its records", h.length_bytes);
  return l;
}

void encode_snapshot_list(const SnapshotList& l, uint64_t self, uint64_t generation, Grain buf) {
  size_t length = 16;
  for (const auto& r : l.records) length += snapshot_record_bytes(r);
  VSFS_ASSERT(length <= kPayloadBytes);
  begin_block(buf, BlockType::kSnapshotList, static_cast<uint32_t>(length), 0, generation, self, 0);
  store<uint64_t>(buf, kHeaderBytes, l.next);
  store<uint32_t>(buf, kHeaderBytes + 8, static_cast<uint32_t>(l.records.size()));
  size_t off = kHeaderBytes + 16;
  for (const auto& r : l.records) {
    VSFS_ASSERT(r.name.size() <= kMaxNameBytes);
    store<uint64_t>(buf, off, r.change_id);
    store<uint64_t>(buf, off + 8, r.created_ns);
    store<uint64_t>(buf, off + 16, r.inode_root);
    store<uint64_t>(buf, off + 24, r.base_ino);
    store<uint64_t>(buf, off + 32, r.next_ino);
    store<uint16_t>(buf, off + 40, r.id);
    store<uint8_t>(buf, off + 42, r.inode_height);
    store<uint8_t>(buf, off + 43, static_cast<uint8_t>(r.flags | (r.taker_uid != 0 ? kSnapTaker : 0)));
    store<uint8_t>(buf, off + 44, static_cast<uint8_t>(r.name.size()));
    size_t name_at = off + kSnapshotFixedBytes;
    if (r.taker_uid != 0) {
      store<uint32_t>(buf, name_at, r.taker_uid);
      store<uint32_t>(buf, name_at + 4, 0);
      name_at += kSnapshotTakerBytes;
    }
    std::memcpy(buf.data() + name_at, r.name.data(), r.name.size());
    off += snapshot_record_bytes(r);
  }
  seal(buf);
}

Result<void> check_device_size(uint64_t device_bytes) {
  if (device_bytes < kMinDeviceBytes) {
    return make_error(EINVAL, ErrorKind::kCorruption,
                      "device is {} bytes, too small to hold a datastore", device_bytes);
  }
  return ok_result();
}

std::string uuid_text(const std::array<uint8_t, 16>& uuid) {
  std::string s;
  for (size_t i = 0; i < uuid.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", uuid[i]);
  }
  return s;
}

}  // namespace vsfs::format
