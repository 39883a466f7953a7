// The vsfs on-disk format, version 1 (SE-grain). man/vsfs-format.5 describes it in
// prose; this header is the authority on field offsets.
//
// Geometry: 4 KiB grains inside 1 MiB storage blocks. Every metadata block is one grain
// that starts with a 64-byte header (magic, type, version, length, crc32c, owner,
// generation, self address, level) followed by a 4032-byte payload. All integers are
// little-endian. Decoding validates the header and every field before returning, so a
// decoded struct can be trusted; encoding always produces a sealed block (crc set).
//
// The structs here are the decoded, in-memory forms; they are separate from how the
// meta layer uses them. Thread-safety: pure functions on caller-owned buffers.
#pragma once

#include <array>
#include <optional>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/result.h"
#include "util/units.h"

namespace vsfs::format {

using Grain = std::span<uint8_t, kGrainBytes>;
using ConstGrain = std::span<const uint8_t, kGrainBytes>;

inline constexpr uint32_t kMetaMagic = 0x424d5356;  // "VSMB" as little-endian bytes
inline constexpr uint16_t kBlockVersion = 1;
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kHeaderBytes = 64;
inline constexpr size_t kPayloadBytes = kGrainBytes - kHeaderBytes;  // 4032

// Values once written are never renumbered.
enum class BlockType : uint16_t {
  kSuperblock = 1,
  kMapInterior = 2,     // interior node of a disk's (or directory's) grain map
  kMapLeaf = 3,         // leaf of a grain map: one slot per 4 KiB grain of the disk
  kInodeInterior = 4,   // interior node of the inode table
  kInodeLeaf = 5,       // leaf of the inode table: kInodesPerLeaf inode records
  kDirBlock = 6,        // directory entries (a directory's map points at these)
  kBlockTable = 7,      // one state entry per storage block
  kRefcountTable = 8,   // one 16-bit reference count per grain
  kJournalDesc = 9,     // journal: lists the home grains of the images that follow
  kJournalCommit = 10,  // journal: seals a transaction
  kReleaseList = 11,    // trees waiting to be released in the background
  kSnapshotList = 12,   // snapshot records (superblock.snapshot_root heads the chain)
  kInodeExtra = 13,     // an inode's symlink target and xattrs (a chain of these)
  kSpaceSummary = 14,   // one bit per block-table grain: describes a block in use
  kLease = 15,          // who writes the datastore, and its heartbeat (grain kLeaseGrain)
};
const char* block_type_name(BlockType type);

// Header field offsets (bytes from the start of the grain).
inline constexpr size_t kOffMagic = 0;        // u32
inline constexpr size_t kOffType = 4;         // u16
inline constexpr size_t kOffVersion = 6;      // u16
inline constexpr size_t kOffLength = 8;       // u32, payload bytes in use
inline constexpr size_t kOffCrc = 12;         // u32, crc32c of the grain with this field 0
inline constexpr size_t kOffOwner = 16;       // u64, inode number owning it, 0 = datastore
inline constexpr size_t kOffGeneration = 24;  // u64, datastore generation when written
inline constexpr size_t kOffSelf = 32;        // u64, physical grain this block lives at
inline constexpr size_t kOffLevel = 40;       // u8, tree level (0 = leaf); 0 otherwise
// bytes 41..63 reserved, zero

struct MetaHeader {
  BlockType type = BlockType::kSuperblock;
  uint32_t length_bytes = 0;
  uint64_t owner = 0;
  uint64_t generation = 0;
  uint64_t self = 0;   // physical grain number (the superblock uses 0 for both copies)
  uint8_t level = 0;
};

// Validates magic, version, type == expected, length <= payload, reserved bytes zero,
// crc, and self == expected_self. Errors are kCorruption naming what failed.
Result<MetaHeader> decode_header(ConstGrain buf, BlockType expected, uint64_t expected_self);
// Writes the header fields (crc left 0); seal() computes the crc last.
void encode_header(Grain buf, const MetaHeader& header);
void seal(Grain buf);

// When set, decoders skip the crc32c check (for tests only; the fuzzers in tests/fuzz
// seal their blocks instead, so they exercise the library as it ships).
extern bool g_skip_crc_check;

// ---- Superblock (type 1): at grain 0 and, as a copy, at grain kSuperblockCopyGrain. ----
inline constexpr uint64_t kSuperblockCopyGrain = 255;  // last grain of storage block 0

// Feature words. incompat: refuse to mount; ro_compat: mount read-only; compat: ignore.
// Bit 0: grain maps may hold allocated slots (SlotState::kAllocated). Set when the first
// map holding one is written; a datastore without it reads as before.
inline constexpr uint64_t kIncompatAllocated = 1u << 0;
// Bit 1: snapshot records may carry the uid of the user who took the snapshot
// (kSnapTaker): set once a record with a taker other than root is stored.
inline constexpr uint64_t kIncompatSnapshotTakers = 1ull << 1;
// Bit 2: inodes of every POSIX kind (symlinks, fifos, sockets, character and block
// devices), a device number (rdev) and an extra-block chain (a symlink's target, xattrs)
// in inode records. Set when the first such inode or xattr is stored.
inline constexpr uint64_t kIncompatPosixInodes = 1ull << 2;
// Bit 3: the datastore grew after mkfs (vsfs-grow): the tables describing the storage
// blocks it gained live in growth regions (Superblock::growths) instead of all in the
// fixed regions. Set by the first growth.
inline constexpr uint64_t kIncompatGrown = 1ull << 3;
inline constexpr uint64_t kIncompatKnown =
    kIncompatAllocated | kIncompatSnapshotTakers | kIncompatPosixInodes | kIncompatGrown;
// ro_compat bit 0: the superblock's alloc_window_end is kept. Each commit records the end
// of the window of formatted free blocks the allocator may hand out before the next
// commit; after a crash only formatted free blocks below it go back to the to-be-
// formatted list. A vsfs that does not know the bit may read the datastore but must not
// write it (it would leave a stale window behind).
inline constexpr uint64_t kRoCompatAllocWindow = 1ull << 0;
// ro_compat bit 1: the space summary is kept (grains right after the block table, in the
// block table's region; see SpaceSummaryGrain). A vsfs that does not know the bit may
// read the datastore but must not write it (it would leave the summary stale).
inline constexpr uint64_t kRoCompatSpaceSummary = 1ull << 1;
// ro_compat bit 2: the lease (LeaseRecord, grain kLeaseGrain) is kept: a vsfs that writes
// the datastore holds it and renews it, and stops writing when it cannot. A vsfs that does
// not know the bit may read the datastore but must not write it (it would write without
// the lease, beside its holder).
inline constexpr uint64_t kRoCompatLease = 1ull << 2;
inline constexpr uint64_t kRoCompatKnown =
    kRoCompatAllocWindow | kRoCompatSpaceSummary | kRoCompatLease;
inline constexpr uint64_t kCompatKnown = 0;

inline constexpr uint32_t kStateClean = 1u << 0;    // unmounted cleanly: journal empty
inline constexpr uint32_t kStateMounted = 1u << 1;  // a vsfs-mount holds it read-write

// Totals over the datastore's life, carried in the superblock after snapshot_root. Each
// is what every read-write mount counted up to its last superblock write, added up;
// .vsfs/stats shows them under "lifetime". A superblock written before they existed has
// the shorter payload (kSbPayloadEndShort) and reads as all zero.
struct LifetimeCounters {
  uint64_t read_bytes = 0;         // bytes clients read from disks (.vsfs/stats read_bytes)
  uint64_t write_bytes = 0;        // bytes clients wrote to disks
  uint64_t read_errors = 0;        // data reads the device failed
  uint64_t write_errors = 0;       // data writes the device failed
  uint64_t no_space_errors = 0;    // of write_errors: the device said ENOSPC
  uint64_t unclean_mounts = 0;     // read-write mounts that found it not unmounted cleanly
  uint64_t snapshots_taken = 0;
  uint64_t snapshots_deleted = 0;
  uint64_t formatted_bytes = 0;    // bytes the background formatter formatted
  uint64_t mounted_seconds = 0;    // time mounted read-write, whole seconds per mount

  LifetimeCounters& operator+=(const LifetimeCounters& o);
  bool operator==(const LifetimeCounters&) const = default;
};
LifetimeCounters operator+(LifetimeCounters a, const LifetimeCounters& b);

// One growth of the datastore (vsfs-grow). The block table, the space summary and the
// refcount table are arrays of grains indexed as if they were contiguous (grain i of the
// block table describes blocks [504 i, 504 i + 504)); mkfs places the first part of each
// in the fixed regions, and each growth appends the grains it needs for the blocks it
// adds in a region of its own: the first storage blocks of the space it added, reserved,
// holding its block-table grains, then its summary grains, then its refcount grains.
struct Growth {
  uint64_t region_block = 0;     // first storage block of the region (the old end)
  uint64_t table_grains = 0;     // block-table grains it appends
  uint64_t summary_grains = 0;   // space-summary grains it appends
  uint64_t refcount_grains = 0;  // refcount-table grains it appends
  bool operator==(const Growth&) const = default;
};
inline constexpr size_t kMaxGrowths = 64;

struct Superblock {
  uint32_t format_version = kFormatVersion;
  uint64_t compat = 0, ro_compat = 0, incompat = 0;
  std::array<uint8_t, 16> uuid{};
  uint64_t device_bytes = 0;            // bytes of the device covered by the datastore
  uint64_t total_blocks = 0;            // storage blocks, = device_bytes / 1 MiB
  uint64_t journal_start_grain = 0;     // first grain of the journal ring
  uint64_t journal_grains = 0;          // length of the ring
  uint64_t block_table_start_grain = 0;
  uint64_t block_table_grains = 0;
  uint64_t refcount_start_grain = 0;
  uint64_t refcount_grains = 0;
  uint64_t first_data_block = 0;        // first storage block the allocator may hand out
  uint64_t inode_root = 0;              // physical grain of the inode table's root
  uint8_t inode_height = 0;             // levels of the inode table (1 = root is a leaf)
  uint64_t next_ino = 0;                // next inode number to hand out
  uint64_t generation = 0;              // current epoch; bumped by every snapshot
  uint64_t journal_tail_grain = 0;      // ring offset (grains) of the oldest live record
  uint64_t journal_tail_seq = 0;        // sequence number expected at the tail
  uint64_t release_list = 0;            // physical grain of the first release-list block
  uint32_t state = 0;                   // kState* bits
  uint32_t alloc_window_end = 0;        // with kRoCompatAllocWindow: formatted free blocks
                                        // below this may have been handed out since the
                                        // commit that wrote it; 0 otherwise
  uint64_t mount_count = 0;
  uint64_t mkfs_time_ns = 0;            // CLOCK_REALTIME
  uint64_t snapshot_root = 0;           // first snapshot-list block, 0 = none
  LifetimeCounters lifetime;            // zero when read from a short superblock
  // With kIncompatGrown: the growths, oldest first. block_table_grains and
  // refcount_grains above count every grain of the table, in the fixed region or not.
  std::vector<Growth> growths;
};

// The storage blocks a growth's region takes.
uint64_t growth_region_blocks(const Growth& g);
// Whether storage block `b` belongs to a fixed region or a growth region: never handed
// out, reserved in the block table.
bool reserved_block(const Superblock& sb, uint64_t b);
// Storage blocks in growth regions (reserved past first_data_block).
uint64_t growth_reserved_blocks(const Superblock& sb);

// Where the grains of a table live. table_run returns the physical grain of logical
// grain `index` and how many logical grains from it lie contiguously there.
enum class Table : uint8_t { kBlockTable, kSpaceSummary, kRefcount };
struct TableRun {
  uint64_t grain = 0;
  uint64_t count = 0;
};
TableRun table_run(const Superblock& sb, Table table, uint64_t index);
inline uint64_t table_grain(const Superblock& sb, Table table, uint64_t index) {
  return table_run(sb, table, index).grain;
}
// Grains of the table in all (the space summary's whether or not it is kept).
uint64_t table_grains(const Superblock& sb, Table table);
// The superblock of `sb` grown to `new_blocks` storage blocks (more than it has): the
// growth's region at the old end, the tables' sizes, device_bytes and the incompat bit.
Superblock grown_superblock(const Superblock& sb, uint64_t new_blocks);
// A growth of `sb` to `new_bytes` (0: all of a device of `device_bytes`), checked: the
// grown superblock, or nullopt when the datastore has that size already. Errors
// (kInvalidArgument unless said): a size smaller than the datastore's (shrinking is not
// supported) or larger than the device, a growth too small for its region and 16 MiB of
// data; kUnsupported without the space summary; kNoSpace past kMaxGrowths.
Result<std::optional<Superblock>> plan_growth(const Superblock& sb, uint64_t device_bytes,
                                              uint64_t new_bytes);

// Whether a device of `device_bytes` can hold a datastore at all (an empty image
// cannot). Errors: kCorruption naming its size (read_superblock and fsck say the same).
Result<void> check_device_size(uint64_t device_bytes);

// A UUID as text, in the usual 8-4-4-4-12 hexadecimal groups (vsfs-mkfs prints it,
// .vsfs/stats shows it).
std::string uuid_text(const std::array<uint8_t, 16>& uuid);
// Payload field offsets, bytes from the start of the grain.
inline constexpr size_t kSbOffFormatVersion = 64;  // u32 (+4 reserved)
inline constexpr size_t kSbOffCompat = 72;
inline constexpr size_t kSbOffRoCompat = 80;
inline constexpr size_t kSbOffIncompat = 88;
inline constexpr size_t kSbOffUuid = 96;           // 16 bytes
inline constexpr size_t kSbOffDeviceBytes = 112;
inline constexpr size_t kSbOffTotalBlocks = 120;
inline constexpr size_t kSbOffJournalStart = 128;
inline constexpr size_t kSbOffJournalGrains = 136;
inline constexpr size_t kSbOffBlockTableStart = 144;
inline constexpr size_t kSbOffBlockTableGrains = 152;
inline constexpr size_t kSbOffRefcountStart = 160;
inline constexpr size_t kSbOffRefcountGrains = 168;
inline constexpr size_t kSbOffFirstDataBlock = 176;
inline constexpr size_t kSbOffInodeRoot = 184;
inline constexpr size_t kSbOffInodeHeight = 192;   // u8 (+7 reserved)
inline constexpr size_t kSbOffNextIno = 200;
inline constexpr size_t kSbOffGeneration = 208;
inline constexpr size_t kSbOffJournalTailGrain = 216;
inline constexpr size_t kSbOffJournalTailSeq = 224;
inline constexpr size_t kSbOffReleaseList = 232;
inline constexpr size_t kSbOffState = 240;         // u32
inline constexpr size_t kSbOffAllocWindow = 244;   // u32 (a block number)
inline constexpr size_t kSbOffMountCount = 248;
inline constexpr size_t kSbOffMkfsTime = 256;
inline constexpr size_t kSbOffSnapshotRoot = 264;
// Superblocks written before the lifetime counters end here (length_bytes 208); decode
// accepts them, encode always writes the full payload.
inline constexpr size_t kSbPayloadEndShort = 272;
// Lifetime counters (LifetimeCounters), u64 each, in that struct's order.
inline constexpr size_t kSbOffLifeReadBytes = 272;       // bytes
inline constexpr size_t kSbOffLifeWriteBytes = 280;      // bytes
inline constexpr size_t kSbOffLifeReadErrors = 288;      // data reads failed
inline constexpr size_t kSbOffLifeWriteErrors = 296;     // data writes failed
inline constexpr size_t kSbOffLifeNoSpaceErrors = 304;   // of those, ENOSPC
inline constexpr size_t kSbOffLifeUncleanMounts = 312;   // mounts
inline constexpr size_t kSbOffLifeSnapshotsTaken = 320;  // snapshots
inline constexpr size_t kSbOffLifeSnapshotsDeleted = 328;// snapshots
inline constexpr size_t kSbOffLifeFormattedBytes = 336;  // bytes
inline constexpr size_t kSbOffLifeMountedSeconds = 344;  // seconds
inline constexpr size_t kSbPayloadEnd = 352;       // length_bytes = 352 - 64 = 288
// With kIncompatGrown the payload goes on: u32 growth count (1..kMaxGrowths), u32
// reserved, then per growth four u64 (region_block, table_grains, summary_grains,
// refcount_grains); length_bytes = 288 + 8 + 32 * count.
inline constexpr size_t kSbOffGrowthCount = 352;
inline constexpr size_t kSbOffGrowths = 360;
inline constexpr size_t kSbGrowthBytes = 32;

// Checks, beyond the header: format version == 1, known incompat bits only (else
// kUnsupported naming the bits), a payload length of 288 (or 208: written before the
// lifetime counters, which then read as zero; 296 + 32 per growth with kIncompatGrown),
// geometry consistent (regions inside the device, in order, not overlapping, sizes
// matching total_blocks, growth regions each at the end of the datastore it grew),
// pointers inside the device.
Result<Superblock> decode_superblock(ConstGrain buf);
void encode_superblock(const Superblock& sb, uint64_t generation, Grain buf);
// The space summary's first grain in the fixed region (after the block table's grains
// there), and whether the block table's region has room for its grains (a datastore made
// before it existed may not: then it cannot be turned on).
uint64_t space_summary_start(const Superblock& sb);
bool space_summary_fits(const Superblock& sb);

// ---- Lease (type 15): grain 1, in storage block 0 beside the superblocks ----
// The delta lease of the one writer (vsfs-format(5)): its holder's identity, a nonce
// per mount and a counter it raises at every renewal. An all-zero grain is a free lease
// (a datastore made before the lease). Written directly, never through the journal.
inline constexpr uint64_t kLeaseGrain = 1;
enum class LeaseState : uint32_t { kFree = 0, kHeld = 1 };
struct LeaseRecord {
  LeaseState state = LeaseState::kFree;
  uint32_t lease_ms = 0;        // the holder's lease time
  uint64_t nonce = 0;           // random, per mount
  uint64_t counter = 0;         // raised by every renewal
  uint64_t renewed_ns = 0;      // CLOCK_REALTIME of the last renewal, by the holder's clock
  std::array<uint8_t, 16> machine_id{};  // /etc/machine-id
  std::array<uint8_t, 16> boot_id{};     // /proc/sys/kernel/random/boot_id
  uint64_t pid_ns = 0;          // inode of the holder's pid namespace
  uint32_t pid = 0;
  std::string hostname;         // up to 64 bytes
  bool operator==(const LeaseRecord&) const = default;
};
inline constexpr size_t kLeaseHostnameBytes = 64;
// Payload: u32 state, u32 lease_ms, u64 nonce, u64 counter, u64 renewed_ns, 16 bytes
// machine_id, 16 bytes boot_id, u64 pid_ns, u32 pid, u32 reserved, 64 bytes hostname
// (NUL-padded): 144 bytes. Decoding accepts an all-zero grain as a free lease.
Result<LeaseRecord> decode_lease(ConstGrain buf);
void encode_lease(const LeaseRecord& r, Grain buf);

// ---- Radix tree nodes (grain maps and the inode table's interior) ----
inline constexpr size_t kSlotBytes = 16;
inline constexpr size_t kTreeFanout = kPayloadBytes / kSlotBytes;  // 252
inline constexpr uint8_t kMaxTreeLevel = 7;  // 252^8 grains > 64 TiB / 4 KiB

enum class SlotState : uint8_t {
  kUnmapped = 0,  // nothing there: reads zeros, no stamp beyond what is recorded
  kZero = 1,      // reads zeros (written zeros or punched), counts as a change
  kMapped = 2,    // `grain` points at a physical grain (data, dir block or child node)
  kAllocated = 3, // disk map leaves only: `grain` is a data grain set aside for this disk
                  // grain (fallocate); reads zeros whatever the grain holds. Needs
                  // incompat bit kIncompatAllocated.
};
// Whether a leaf slot holds a reference to a physical grain (mapped or allocated).
inline bool holds_grain(SlotState s) { return s == SlotState::kMapped || s == SlotState::kAllocated; }

// One 16-byte slot. Leaf of a grain map: the disk grain's state, its physical grain and
// its change stamp (generation of the last write or unmap). Interior node: the child
// node's physical grain (state kMapped), kUnmapped, or kZero for a whole subtree that
// reads as zeros (unmapped as a whole at the slot's stamp); and the newest stamp below.
// Encoding: u64 word = grain | state << 62; u64 stamp.
struct Slot {
  uint64_t grain = 0;  // physical grain number, < 2^62
  SlotState state = SlotState::kUnmapped;
  uint64_t stamp = 0;
};

struct TreeNode {
  BlockType type = BlockType::kMapLeaf;  // kMapLeaf, kMapInterior or kInodeInterior
  uint8_t level = 0;                     // 0 for leaves
  uint64_t owner = 0;
  std::array<Slot, kTreeFanout> slots{};
};
// Checks type/level agreement (leaf types have level 0, interior types 1..kMaxTreeLevel),
// grain < 2^62, mapped and allocated grains nonzero, unmapped slots all zero, and that
// allocated slots appear only in map leaves.
Result<TreeNode> decode_tree_node(ConstGrain buf, uint64_t self);
void encode_tree_node(const TreeNode& node, uint64_t self, uint64_t generation, Grain buf);

// ---- Inode table leaf ----
inline constexpr size_t kInodeBytes = 128;
inline constexpr size_t kInodesPerLeaf = kPayloadBytes / kInodeBytes;  // 31

struct InodeRecord {
  uint64_t ino = 0;              // 0 = free slot
  uint32_t mode = 0;             // S_IFREG/S_IFDIR | permission bits
  uint32_t uid = 0, gid = 0;
  uint32_t nlink = 0;
  uint64_t size_bytes = 0;       // directories: bytes of entries in use
  uint64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;  // CLOCK_REALTIME
  uint64_t map_root = 0;         // physical grain of the map's root node, 0 = empty
  uint8_t map_height = 0;        // levels of the map (0 = empty, 1 = root is a leaf)
  uint8_t flags = 0;             // reserved, 0
  uint64_t allocated_grains = 0; // mapped grains (st_blocks)
  uint64_t btime_ns = 0;         // creation time
  uint64_t parent = 0;           // directories: the parent's inode number
  uint64_t replaced_gen = 0;     // generation of the last wholesale change of the map
                                 // (creation, a clone over it): changed-block queries
                                 // from before it list the whole disk
  uint64_t rdev = 0;             // character and block devices: the device number
  uint64_t extra = 0;            // physical grain of the first block of the inode's
                                 // extra chain (symlink target, xattrs), 0 = none
};
// Offsets inside a record.
inline constexpr size_t kInoOffIno = 0, kInoOffMode = 8, kInoOffUid = 12, kInoOffGid = 16,
                        kInoOffNlink = 20, kInoOffSize = 24, kInoOffAtime = 32,
                        kInoOffMtime = 40, kInoOffCtime = 48, kInoOffMapRoot = 56,
                        kInoOffMapHeight = 64, kInoOffFlags = 65, kInoOffAllocated = 72,
                        kInoOffBtime = 80, kInoOffParent = 88,
                        kInoOffReplacedGen = 96, kInoOffRdev = 104,
                        kInoOffExtra = 112;  // 120..127 reserved

// Inode numbers stay below what an inode table of the greatest height can index; a
// superblock's (or snapshot's) next_ino above this is damage.
inline constexpr uint64_t kMaxInodeNumber =
    kInodesPerLeaf * kTreeFanout * kTreeFanout * kTreeFanout * kTreeFanout * kTreeFanout *
    kTreeFanout * kTreeFanout;  // 31 * 252^7
// A directory's size_bytes is whole grains (one per directory block) and reaches at most
// this many blocks past its last mapped directory block (blocks an interrupted insertion
// counted but never filled); a larger size is damage.
inline constexpr uint64_t kDirSlackBlocks = kTreeFanout;

struct InodeLeaf {
  uint64_t first_ino = 0;  // slot i holds inode first_ino + i (or is free)
  std::array<InodeRecord, kInodesPerLeaf> inodes{};
};
// Payload: kInodesPerLeaf records of kInodeBytes from payload offset 0. The leaf's
// position in the inode table gives first_ino (the caller passes it); a used record's
// ino must equal first_ino + its index, its mode must be one file type with only
// permission bits besides, map_height must agree with map_root, and flags and reserved
// bytes must be zero. Only regular files and directories have a map; a symlink has an
// extra chain and a size of 1..kMaxSymlinkBytes (its target's length); fifos, sockets
// and devices have size 0; only devices have an rdev. A free record (ino 0) is all zero.
Result<InodeLeaf> decode_inode_leaf(ConstGrain buf, uint64_t self, uint64_t first_ino);
void encode_inode_leaf(const InodeLeaf& leaf, uint64_t self, uint64_t generation, Grain buf);

// ---- Inode extra chain: a symlink's target and an inode's xattrs ----
// The content is one byte string (encode_inode_extra) cut into pieces of at most
// kExtraPieceBytes, one per block, each block naming the next. Blocks are written whole
// and never changed: a change writes a new chain and lets the old one go, so a chain is
// shared by the inode records that name its first block (a snapshot's and the live one)
// and each further block is referenced once, by the block before it.
inline constexpr size_t kExtraPieceBytes = kPayloadBytes - 8;  // 4024
inline constexpr size_t kMaxExtraBlocks = 16;
inline constexpr size_t kMaxExtraBytes = kMaxExtraBlocks * kExtraPieceBytes;  // 64384
inline constexpr size_t kMaxSymlinkBytes = 4095;      // as ext4 (PATH_MAX - 1)
inline constexpr size_t kMaxXattrNameBytes = 255;     // the whole name, prefix included
inline constexpr size_t kMaxXattrValueBytes = 4096;   // one grain
struct ExtraBlock {
  uint64_t owner = 0;  // the inode's number
  uint64_t next = 0;   // physical grain of the next block, 0 = last
  std::string piece;   // 1..kExtraPieceBytes bytes of the content
};
// Payload: u64 next, then the piece (length = 8 + its size).
Result<ExtraBlock> decode_extra_block(ConstGrain buf, uint64_t self);
void encode_extra_block(const ExtraBlock& b, uint64_t self, uint64_t generation, Grain buf);

struct InodeExtra {
  std::string target;  // symlinks: the target (no NUL); otherwise empty
  std::vector<std::pair<std::string, std::string>> xattrs;  // sorted by name, unique
};
// Content: u32 target_len, u32 xattr_count, the target, then per xattr: u8 name_len,
// u8 reserved, u16 value_len, name, value. Names carry their namespace: "user.",
// "trusted." or "security.", 1..255 bytes in all, no NUL; values 0..4096 bytes.
bool valid_xattr_name(std::string_view name);
size_t inode_extra_bytes(const InodeExtra& e);
std::string encode_inode_extra(const InodeExtra& e);  // inode_extra_bytes <= kMaxExtraBytes
Result<InodeExtra> decode_inode_extra(std::string_view content, const std::string& at);

// ---- Directory block ----
inline constexpr size_t kMaxNameBytes = 255;
struct DirEntry {
  uint64_t ino = 0;
  uint8_t type = 0;  // DT_REG, DT_DIR, DT_LNK, DT_FIFO, DT_SOCK, DT_CHR, DT_BLK
  std::string name;  // 1..255 bytes, no '/', no NUL, not "." or ".."
};
// Encoding: entries packed from payload offset 0: u64 ino, u8 type, u8 name_len, name.
inline constexpr size_t kDirEntryFixedBytes = 10;
struct DirBlock {
  uint64_t owner = 0;  // the directory's inode number
  std::vector<DirEntry> entries;
};
size_t dir_entry_bytes(const DirEntry& e);
Result<DirBlock> decode_dir_block(ConstGrain buf, uint64_t self);
// The entries must fit (sum of dir_entry_bytes <= kPayloadBytes): asserted.
void encode_dir_block(const DirBlock& block, uint64_t self, uint64_t generation, Grain buf);
bool valid_name(std::string_view name);
// The directory entry type of a file type (mode & S_IFMT), 0 for none.
uint8_t dirent_type(uint32_t mode);

// ---- Block table: one 8-byte entry per storage block ----
enum class BlockState : uint8_t {
  kFormattedFree = 0,  // free, reads zeros
  kToFormatFree = 1,   // free, may hold old data: format before anyone reads it
  kData = 2,           // in use, holds data grains
  kMeta = 3,           // in use, holds metadata grains (never data: journal safety)
  kReserved = 4,       // superblocks, journal, tables
};
// The state's name as messages use it: "formatted-free", "to-be-formatted", "data",
// "metadata", "reserved".
const char* block_state_name(BlockState state);
inline constexpr size_t kBlockEntryBytes = 8;
inline constexpr size_t kBlocksPerTableGrain = kPayloadBytes / kBlockEntryBytes;  // 504
struct BlockEntry {
  BlockState state = BlockState::kFormattedFree;
  uint16_t used_grains = 0;  // grains with a nonzero reference count, 0..256
};
// Encoding: u8 state, u8 reserved, u16 used_grains, u32 reserved.
struct BlockTableGrain {
  std::array<BlockEntry, kBlocksPerTableGrain> entries{};
};
Result<BlockTableGrain> decode_block_table(ConstGrain buf, uint64_t self);
void encode_block_table(const BlockTableGrain& t, uint64_t self, uint64_t generation, Grain buf);

// ---- Space summary (type 14, ro_compat kRoCompatSpaceSummary) ----
// Bit i of the summary (bit i % 64 of word i / 64 of grain i / kGroupsPerSummaryGrain) is
// set when block-table grain i describes a storage block that is not formatted free
// (in use, to be formatted, or reserved). A mount reads the summary and only the
// block-table grains it marks: the rest of the device is formatted free space, whose
// grains are read when the allocator first takes a block there. Journaled with the
// block table, in the same transactions. The summary of a device of N storage blocks
// takes space_summary_grains(ceil(N / 504)) grains (one grain covers 15.5 TiB).
inline constexpr size_t kGroupsPerSummaryGrain = kPayloadBytes * 8;  // 32256
struct SpaceSummaryGrain {
  std::array<uint64_t, kPayloadBytes / 8> words{};
  bool test(size_t i) const { return (words[i / 64] >> (i % 64)) & 1; }
  void set(size_t i, bool on) {
    if (on) {
      words[i / 64] |= 1ull << (i % 64);
    } else {
      words[i / 64] &= ~(1ull << (i % 64));
    }
  }
};
Result<SpaceSummaryGrain> decode_space_summary(ConstGrain buf, uint64_t self);
void encode_space_summary(const SpaceSummaryGrain& s, uint64_t self, uint64_t generation,
                          Grain buf);
inline uint64_t space_summary_grains(uint64_t block_table_grains) {
  return (block_table_grains + kGroupsPerSummaryGrain - 1) / kGroupsPerSummaryGrain;
}

// ---- Reference count table: u16 per grain ----
inline constexpr size_t kGrainsPerRefcountGrain = kPayloadBytes / 2;  // 2016
struct RefcountGrain {
  std::array<uint16_t, kGrainsPerRefcountGrain> counts{};
};
Result<RefcountGrain> decode_refcounts(ConstGrain buf, uint64_t self);
void encode_refcounts(const RefcountGrain& t, uint64_t self, uint64_t generation, Grain buf);

// ---- Journal ----
// A transaction is one or more groups [desc][image]*, then one commit record. Each desc
// lists the home grains of the images that follow it. The commit carries the crc32c of
// every desc and image grain of the transaction, in order.
inline constexpr size_t kJournalDescMax = (kPayloadBytes - 16) / 8;  // 502 homes per desc
struct JournalDesc {
  uint64_t seq = 0;
  bool last = false;               // the commit record follows this group's images
  std::vector<uint64_t> homes;     // 1..kJournalDescMax home grains; 0 = the superblock
};
// Desc payload: u64 seq, u32 count, u32 flags (bit 0 = last), then count u64 homes.
Result<JournalDesc> decode_journal_desc(ConstGrain buf, uint64_t self);
void encode_journal_desc(const JournalDesc& d, uint64_t self, Grain buf);

struct JournalCommit {
  uint64_t seq = 0;
  uint32_t grains = 0;        // desc + image grains before this record
  uint32_t payload_crc = 0;   // crc32c over those grains
  uint64_t time_ns = 0;
};
// Commit payload: u64 seq, u32 grains, u32 payload_crc, u64 time_ns.
Result<JournalCommit> decode_journal_commit(ConstGrain buf, uint64_t self);
void encode_journal_commit(const JournalCommit& c, uint64_t self, Grain buf);

// ---- Release list: trees waiting to be released by the background releaser ----
enum class TreeKind : uint8_t { kFileMap = 1, kDirMap = 2, kInodeTable = 3 };
struct ReleaseEntry {
  uint64_t root = 0;   // physical grain of the tree's root node (nonzero)
  uint8_t height = 0;  // 1..kMaxTreeLevel+1
  TreeKind kind = TreeKind::kFileMap;
  uint64_t owner = 0;  // inode number the tree belonged to
};
inline constexpr size_t kReleaseEntryBytes = 24;
inline constexpr size_t kReleaseEntriesMax = (kPayloadBytes - 16) / kReleaseEntryBytes;  // 167
struct ReleaseList {
  uint64_t next = 0;   // physical grain of the next list block, 0 = end
  std::vector<ReleaseEntry> entries;
};
// Payload: u64 next, u32 count, u32 reserved, then entries: u64 root, u8 height,
// u8 kind, u16+u32 reserved, u64 owner.
Result<ReleaseList> decode_release_list(ConstGrain buf, uint64_t self);
void encode_release_list(const ReleaseList& l, uint64_t self, uint64_t generation, Grain buf);

// ---- Snapshot list: one record per snapshot, and the history of deleted ones ----
// A snapshot shares the inode table root as it was when it was taken; its view is the
// subtree of inode base_ino. Deleted snapshots stay as records (flag kSnapDeleted, no
// tree) so that changed-block queries "since NAME" keep working.
inline constexpr uint8_t kSnapDeleted = 1u << 0;
// The record carries the taker's uid: 8 more bytes (u32 uid, u32 reserved) before the
// name. A record taken by root (uid 0) has no taker field, as before the flag existed.
inline constexpr uint8_t kSnapTaker = 1u << 1;
inline constexpr size_t kSnapshotFixedBytes = 48;
inline constexpr size_t kSnapshotTakerBytes = 8;
struct SnapshotRecord {
  uint64_t change_id = 0;    // datastore generation the snapshot froze
  uint64_t created_ns = 0;   // CLOCK_REALTIME
  uint64_t inode_root = 0;   // physical grain of the frozen inode table root (0 if deleted)
  uint64_t base_ino = 0;     // inode number of the snapshotted directory (1 = datastore)
  uint64_t next_ino = 0;     // next_ino when taken: every inode in it is below this
  uint16_t id = 0;           // 1..0xfffc, unique among records
  uint8_t inode_height = 0;
  uint8_t flags = 0;         // kSnapDeleted (kSnapTaker is set by the encoder)
  uint32_t taker_uid = 0;    // who took it (0 = root)
  std::string name;          // 1..255 bytes, a valid name, not "full"; unique among the
                             // live snapshots of base_ino
};
// Record encoding: u64 change_id, u64 created_ns, u64 inode_root, u64 base_ino,
// u64 next_ino, u16 id, u8 inode_height, u8 flags, u8 name_len, 3 reserved bytes, then
// with kSnapTaker u32 taker_uid and u32 reserved, then the name. The encoder sets
// kSnapTaker exactly when taker_uid != 0; the decoder reads a kSnapTaker record with uid
// 0 as damage.
struct SnapshotList {
  uint64_t next = 0;  // physical grain of the next list block, 0 = end
  std::vector<SnapshotRecord> records;
};
size_t snapshot_record_bytes(const SnapshotRecord& r);
// Payload: u64 next, u32 count, u32 reserved, then the records packed.
Result<SnapshotList> decode_snapshot_list(ConstGrain buf, uint64_t self);
void encode_snapshot_list(const SnapshotList& l, uint64_t self, uint64_t generation, Grain buf);

// ---- Geometry of a new datastore ----
struct Layout {
  uint64_t total_blocks = 0;
  uint64_t journal_start_grain = 0, journal_grains = 0;
  uint64_t block_table_start_grain = 0, block_table_grains = 0;
  uint64_t space_summary_grains = 0;  // right after the block table, in its region
  uint64_t refcount_start_grain = 0, refcount_grains = 0;
  uint64_t first_data_block = 0;
};
inline constexpr uint64_t kMinDeviceBytes = 64ull << 20;  // smallest datastore: 64 MiB
// Computes the fixed regions for a device: block 0 superblocks, then the journal
// (device/256 clamped to [8 MiB, 1 GiB], whole blocks), then the block table followed by
// the space summary, then the refcount table, each rounded up to whole storage blocks. A nonzero
// journal_bytes_override replaces the journal size (rounded up to whole blocks, at least
// 4 MiB). Fails with kInvalidArgument when the device is smaller than kMinDeviceBytes or
// fewer than 16 storage blocks would remain for data.
Result<Layout> compute_layout(uint64_t device_bytes, uint64_t journal_bytes_override = 0);

}  // namespace vsfs::format
