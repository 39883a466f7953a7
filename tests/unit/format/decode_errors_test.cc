// One test per decode error path. Each starts from a valid sealed block, breaks one
// thing (re-sealing unless the crc is what is under test), and asserts the error kind
// and that the message names the structure and the failing field.
#include <dirent.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "format/format.h"
#include "format_test_util.h"
#include "util/endian.h"

namespace vsfs::format {
namespace {

using testing::Buf;
using testing::corrupt;
using testing::fails_with;
using testing::poke;
using testing::sample_superblock;

constexpr uint64_t kSelf = 1234;

Buf superblock_buf(const Superblock& sb = sample_superblock()) {
  Buf b{};
  encode_superblock(sb, 1, b);
  return b;
}

Buf map_leaf_buf() {
  TreeNode n;
  n.type = BlockType::kMapLeaf;
  n.slots[0] = Slot{9000, SlotState::kMapped, 5};
  n.slots[1] = Slot{0, SlotState::kZero, 6};
  Buf b{};
  encode_tree_node(n, kSelf, 1, b);
  return b;
}

Buf map_interior_buf() {
  TreeNode n;
  n.type = BlockType::kMapInterior;
  n.level = 2;
  n.slots[0] = Slot{9000, SlotState::kMapped, 5};
  Buf b{};
  encode_tree_node(n, kSelf, 1, b);
  return b;
}

constexpr uint64_t kFirstIno = 62;
Buf inode_leaf_buf() {
  InodeLeaf l;
  l.first_ino = kFirstIno;
  l.inodes[0] = InodeRecord{.ino = kFirstIno, .mode = S_IFDIR | 0755, .nlink = 2,
                            .map_root = 5000, .map_height = 1, .parent = 1};
  l.inodes[3] = InodeRecord{.ino = kFirstIno + 3, .mode = S_IFREG | 0644, .nlink = 1};
  Buf b{};
  encode_inode_leaf(l, kSelf, 1, b);
  return b;
}

// Entry 0 "abc" at payload offset 0 (13 bytes), entry 1 "de" at payload offset 13.
Buf dir_buf() {
  DirBlock d;
  d.owner = 7;
  d.entries = {{10, DT_REG, "abc"}, {11, DT_DIR, "de"}};
  Buf b{};
  encode_dir_block(d, kSelf, 1, b);
  return b;
}
constexpr size_t kDirEntry0Name = kHeaderBytes + kDirEntryFixedBytes;
constexpr size_t kDirEntry1 = kHeaderBytes + 13;

Buf block_table_buf() {
  BlockTableGrain t;
  t.entries[0] = {BlockState::kReserved, 256};
  t.entries[1] = {BlockState::kData, 10};
  Buf b{};
  encode_block_table(t, kSelf, 1, b);
  return b;
}

Buf desc_buf() {
  Buf b{};
  encode_journal_desc(JournalDesc{3, true, {500, 501}}, kSelf, b);
  return b;
}

Buf commit_buf() {
  Buf b{};
  encode_journal_commit(JournalCommit{3, 3, 0x1234, 5}, kSelf, b);
  return b;
}

Buf release_buf() {
  ReleaseList l;
  l.next = 77;
  l.entries = {{600, 2, TreeKind::kFileMap, 9}, {601, 1, TreeKind::kDirMap, 10}};
  Buf b{};
  encode_release_list(l, kSelf, 1, b);
  return b;
}
constexpr size_t kRelEntry1 = kHeaderBytes + 16 + kReleaseEntryBytes;

// ---- Header ----

TEST(DecodeHeader, BadMagic) {
  Buf b = map_leaf_buf();
  poke<uint32_t>(b, kOffMagic, 0x12345678);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"tree node at grain 1234", "magic"}));
  Buf s = superblock_buf();
  poke<uint32_t>(s, kOffMagic, 0);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "magic"}));
}

TEST(DecodeHeader, BadVersion) {
  Buf b = block_table_buf();
  poke<uint16_t>(b, kOffVersion, 2);
  EXPECT_TRUE(corrupt(decode_block_table(b, kSelf), {"block table at grain 1234", "version 2"}));
}

TEST(DecodeHeader, WrongType) {
  Buf b = map_leaf_buf();
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block at grain 1234", "type 3 (map leaf)"}));
  EXPECT_TRUE(corrupt(decode_header(b, BlockType::kRefcountTable, kSelf),
                      {"refcount table", "wrong block type"}));
  Buf d = dir_buf();
  EXPECT_TRUE(corrupt(decode_tree_node(d, kSelf), {"tree node", "type 6 (dir block)"}));
  poke<uint16_t>(d, kOffType, 0);
  EXPECT_TRUE(corrupt(decode_dir_block(d, kSelf), {"dir block", "type 0 (unknown)"}));
}

TEST(DecodeHeader, BadCrc) {
  Buf b = release_buf();
  b[kHeaderBytes + 100] ^= 1;  // not re-sealed
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list at grain 1234", "crc32c"}));
  Buf s = superblock_buf();
  s[kSbOffDeviceBytes] ^= 0x80;
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "crc32c"}));
}

TEST(DecodeHeader, SkipCrcCheckReachesFields) {
  Buf b = map_leaf_buf();
  store_le<uint64_t>(b.data() + kHeaderBytes, 2ull << 62);  // not re-sealed
  g_skip_crc_check = true;
  auto r = decode_tree_node(b, kSelf);
  g_skip_crc_check = false;
  EXPECT_TRUE(corrupt(r, {"map leaf", "slot 0 is mapped to grain 0"}));
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"crc32c"}));
}

TEST(DecodeHeader, LengthTooBigIsTruncated) {
  Buf b = dir_buf();
  poke<uint32_t>(b, kOffLength, kPayloadBytes + 1);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block at grain 1234", "length 4033", "truncated"}));
}

TEST(DecodeHeader, FixedLengthMismatch) {
  Buf s = superblock_buf();
  poke<uint32_t>(s, kOffLength, 100);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "length 100", "expected 288"}));
  // Between the short (208, before the lifetime counters) and the full payload: neither.
  for (uint32_t len : {207u, 209u, 280u, 287u, 289u}) {
    Buf t = superblock_buf();
    poke<uint32_t>(t, kOffLength, len);
    EXPECT_TRUE(corrupt(decode_superblock(t), {"superblock", "expected 288"})) << len;
  }
  Buf b = map_leaf_buf();
  poke<uint32_t>(b, kOffLength, 4000);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map leaf", "length 4000"}));
}

TEST(DecodeHeader, NonzeroReservedHeaderByte) {
  Buf b = inode_leaf_buf();
  poke<uint8_t>(b, 63, 1);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno),
                      {"inode leaf at grain 1234", "reserved header byte 63"}));
  Buf s = superblock_buf();
  poke<uint8_t>(s, 41, 0xff);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "reserved header byte 41"}));
}

TEST(DecodeHeader, WrongSelf) {
  Buf b = commit_buf();
  EXPECT_TRUE(corrupt(decode_journal_commit(b, kSelf + 1),
                      {"journal commit at grain 1235", "self address 1234"}));
  Buf s = superblock_buf();
  poke<uint64_t>(s, kOffSelf, kSuperblockCopyGrain);  // both copies say 0
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "self address 255"}));
}

TEST(DecodeHeader, LevelOnNonTreeBlock) {
  Buf b = desc_buf();
  poke<uint8_t>(b, kOffLevel, 1);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc", "level 1"}));
}

// ---- Superblock ----

TEST(DecodeSuperblock, UnknownIncompatFeatureIsUnsupported) {
  Superblock sb = sample_superblock();
  sb.incompat = 0x10;
  Buf s = superblock_buf(sb);
  EXPECT_TRUE(fails_with(decode_superblock(s), ErrorKind::kUnsupported,
                         {"superblock", "unsupported incompatible features 0x10"}));
}

TEST(DecodeSuperblock, NewerFormatVersionIsUnsupported) {
  Buf s = superblock_buf();
  poke<uint32_t>(s, kSbOffFormatVersion, 2);
  poke<uint32_t>(s, kOffLength, 500);  // a newer payload may be longer; still "unsupported"
  EXPECT_TRUE(fails_with(decode_superblock(s), ErrorKind::kUnsupported,
                         {"superblock", "unsupported format version 2"}));
}

TEST(DecodeSuperblock, FormatVersionZeroIsCorrupt) {
  Buf s = superblock_buf();
  poke<uint32_t>(s, kSbOffFormatVersion, 0);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "format version 0"}));
}

// The allocation window's end is kept only with ro_compat bit 0, and lies inside the
// device; the bit and the end round-trip.
TEST(DecodeSuperblock, AllocationWindow) {
  Superblock sb = sample_superblock();
  sb.ro_compat = kRoCompatAllocWindow;
  sb.alloc_window_end = static_cast<uint32_t>(sb.total_blocks);
  Buf b{};
  encode_superblock(sb, 1, b);
  auto back = decode_superblock(b);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->alloc_window_end, sb.total_blocks);
  EXPECT_EQ(back->ro_compat, kRoCompatAllocWindow);
  poke<uint32_t>(b, kSbOffAllocWindow, static_cast<uint32_t>(sb.total_blocks + 1));
  EXPECT_TRUE(corrupt(decode_superblock(b), {"superblock", "alloc_window_end", "past the last block"}));
  Buf s = superblock_buf();  // without the bit
  poke<uint32_t>(s, kSbOffAllocWindow, 3);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "alloc_window_end 3 without ro_compat"}));
}

TEST(DecodeSuperblock, NonzeroReservedBytes) {
  for (size_t off : {kSbOffFormatVersion + 4, kSbOffInodeHeight + 1}) {
    Buf s = superblock_buf();
    poke<uint8_t>(s, off, 1);
    EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "reserved byte"})) << off;
  }
  Buf s = superblock_buf();
  poke<uint8_t>(s, kSbPayloadEnd, 1);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "unused payload byte 352"}));
  // A short superblock (before the lifetime counters) has nothing after snapshot_root:
  // counters left behind its length are damage, not zeros.
  Superblock with_counters = sample_superblock();
  with_counters.lifetime.mounted_seconds = 1;
  Buf t = superblock_buf(with_counters);
  poke<uint32_t>(t, kOffLength, kSbPayloadEndShort - kHeaderBytes);
  EXPECT_TRUE(corrupt(decode_superblock(t), {"superblock", "unused payload byte 344"}));
  poke<uint64_t>(t, kSbOffLifeMountedSeconds, 0);
  EXPECT_TRUE(decode_superblock(t).ok());
}

TEST(DecodeSuperblock, UnknownStateBits) {
  Buf s = superblock_buf();
  poke<uint32_t>(s, kSbOffState, 4);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "state bits 0x4"}));
}

TEST(DecodeSuperblock, BadGeometry) {
  struct Case {
    const char* what;
    void (*mutate)(Superblock&);
    const char* needle;
  };
  const Case cases[] = {
      {"total_blocks", [](Superblock& s) { s.total_blocks += 1; }, "total_blocks 1025"},
      {"device too small", [](Superblock& s) { s.device_bytes = 1 << 20; s.total_blocks = 1; },
       "device_bytes"},
      {"journal in block 0", [](Superblock& s) { s.journal_start_grain = 0; }, "journal region"},
      {"journal unaligned", [](Superblock& s) { s.journal_start_grain = 300; }, "boundary"},
      {"journal empty", [](Superblock& s) { s.journal_grains = 0; }, "journal region is empty"},
      {"journal overlaps table", [](Superblock& s) { s.journal_grains += 1; },
       "block table region"},
      {"tables out of order",
       [](Superblock& s) { std::swap(s.block_table_start_grain, s.refcount_start_grain); },
       "refcount table region"},
      {"refcount past device",
       [](Superblock& s) { s.refcount_start_grain = s.total_blocks * kGrainsPerBlock; },
       "runs past the device"},
      {"data inside refcounts", [](Superblock& s) { s.first_data_block -= 1; },
       "first_data_block"},
      {"data past device", [](Superblock& s) { s.first_data_block = s.total_blocks; },
       "first_data_block"},
      {"block table too small", [](Superblock& s) { s.block_table_grains = 2; },
       "cannot describe 1024 storage blocks"},
      {"refcounts too small", [](Superblock& s) { s.refcount_grains = 130; },
       "cannot count 262144 grains"},
      {"tail outside journal", [](Superblock& s) { s.journal_tail_grain = s.journal_grains + 1; },
       "journal_tail_grain"},
      {"inode root past device",
       [](Superblock& s) { s.inode_root = s.total_blocks * kGrainsPerBlock; }, "inode_root"},
      {"inode root in the journal", [](Superblock& s) { s.inode_root = 300; }, "inode_root"},
      {"release list past device",
       [](Superblock& s) { s.release_list = s.total_blocks * kGrainsPerBlock + 5; },
       "release_list"},
      {"inode height 0 with a root", [](Superblock& s) { s.inode_height = 0; }, "inode_height"},
      {"inode height 9", [](Superblock& s) { s.inode_height = 9; }, "inode_height"},
      {"huge region no overflow",
       [](Superblock& s) { s.refcount_grains = ~0ull - 100; }, "runs past the device"},
  };
  for (const Case& c : cases) {
    Superblock sb = sample_superblock();
    c.mutate(sb);
    Buf s = superblock_buf(sb);
    EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", c.needle})) << c.what;
  }
}

TEST(DecodeSuperblock, NonzeroOwner) {
  Buf s = superblock_buf();
  poke<uint64_t>(s, kOffOwner, 5);
  EXPECT_TRUE(corrupt(decode_superblock(s), {"superblock", "owner 5"}));
}

// ---- Tree nodes ----

TEST(DecodeTreeNode, AllocatedSlotOnlyInMapLeaves) {
  // State 3 (allocated) is valid in a map leaf with a grain...
  Buf b = map_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes + 17 * kSlotBytes, 3ull << 62 | 42);
  auto ok = decode_tree_node(b, kSelf);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->slots[17].state, SlotState::kAllocated);
  EXPECT_EQ(ok->slots[17].grain, 42u);
  // ...but not without one...
  poke<uint64_t>(b, kHeaderBytes + 17 * kSlotBytes, 3ull << 62);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf),
                      {"map leaf at grain 1234: slot 17 is allocated with grain 0"}));
  // ...nor in an interior node.
  b = map_interior_buf();
  poke<uint64_t>(b, kHeaderBytes + 17 * kSlotBytes, 3ull << 62 | 42);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf),
                      {"slot 17 has state allocated outside a map leaf"}));
}

TEST(DecodeTreeNode, UnmappedSlotNotZero) {
  Buf b = map_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes + 5 * kSlotBytes + 8, 99);  // stamp on an unmapped slot
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map leaf", "slot 5 is unmapped"}));
  b = map_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes + 5 * kSlotBytes, 1234);  // grain with state 0
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map leaf", "slot 5 is unmapped"}));
}

TEST(DecodeTreeNode, MappedToGrainZero) {
  Buf b = map_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes, 2ull << 62);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map leaf", "slot 0 is mapped to grain 0"}));
}

TEST(DecodeTreeNode, ZeroSlotWithGrain) {
  Buf b = map_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes + kSlotBytes, 1ull << 62 | 8);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map leaf", "slot 1 has state zero but grain 8"}));
}

TEST(DecodeTreeNode, ZeroSlotInInteriorWithGrain) {
  // A zero slot in an interior node (a subtree unmapped as a whole) is valid...
  Buf b = map_interior_buf();
  poke<uint64_t>(b, kHeaderBytes + 3 * kSlotBytes, 1ull << 62);
  poke<uint64_t>(b, kHeaderBytes + 3 * kSlotBytes + 8, 40);
  auto ok = decode_tree_node(b, kSelf);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->slots[3].state, SlotState::kZero);
  EXPECT_EQ(ok->slots[3].stamp, 40u);
  // ...but it points at nothing.
  poke<uint64_t>(b, kHeaderBytes + 3 * kSlotBytes, 1ull << 62 | 77);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf),
                      {"map interior at grain 1234", "slot 3 has state zero but grain 77"}));
}

TEST(DecodeTreeNode, LevelInconsistentWithType) {
  Buf b = map_leaf_buf();
  poke<uint8_t>(b, kOffLevel, 1);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map leaf", "level 1"}));
  b = map_interior_buf();
  poke<uint8_t>(b, kOffLevel, 0);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map interior", "level 0"}));
  poke<uint8_t>(b, kOffLevel, kMaxTreeLevel + 1);
  EXPECT_TRUE(corrupt(decode_tree_node(b, kSelf), {"map interior", "level 8"}));
}

// ---- Inode leaf ----

TEST(DecodeInodeLeaf, RecordHoldsWrongInode) {
  Buf b = inode_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes + 3 * kInodeBytes, kFirstIno + 4);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno),
                      {"inode leaf at grain 1234", "record 3 holds inode 66, expected 65"}));
  // The same bytes are fine at the leaf's right position, but not at another.
  EXPECT_TRUE(corrupt(decode_inode_leaf(inode_leaf_buf(), kSelf, kFirstIno + 31), {"record 0"}));
}

TEST(DecodeInodeLeaf, FreeRecordNotZero) {
  Buf b = inode_leaf_buf();
  poke<uint32_t>(b, kHeaderBytes + 1 * kInodeBytes + kInoOffMode, S_IFREG);  // 0x8000
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno),
                      {"inode leaf", "record 1 is free", "byte 9"}));
}

TEST(DecodeInodeLeaf, BadMode) {
  Buf b = inode_leaf_buf();
  poke<uint32_t>(b, kHeaderBytes + 3 * kInodeBytes + kInoOffMode, 0030000 | 0777);  // no type
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode leaf", "inode 65", "mode"}));
  poke<uint32_t>(b, kHeaderBytes + 3 * kInodeBytes + kInoOffMode, S_IFREG | 010000);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode leaf", "mode"}));
}

TEST(DecodeInodeLeaf, MapHeightInconsistent) {
  Buf b = inode_leaf_buf();
  poke<uint8_t>(b, kHeaderBytes + 3 * kInodeBytes + kInoOffMapHeight, 1);  // no root
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode 65", "map_height 1"}));
  b = inode_leaf_buf();
  poke<uint8_t>(b, kHeaderBytes + kInoOffMapHeight, 9);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode 62", "map_height 9"}));
  b = inode_leaf_buf();
  poke<uint64_t>(b, kHeaderBytes + 3 * kInodeBytes + kInoOffAllocated, 4);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode 65", "allocated"}));
}

// Each file type allows only its own fields: a map for files and directories, a target
// (extra chain, size 1..4095) for symlinks, rdev for devices, size 0 for the rest.
TEST(DecodeInodeLeaf, FieldsOfAnotherFileType) {
  const size_t rec = kHeaderBytes + 3 * kInodeBytes;  // inode 65, a regular file with a map
  auto with = [&](uint32_t mode, auto&& change) {
    Buf b = inode_leaf_buf();
    poke<uint32_t>(b, rec + kInoOffMode, mode);
    poke<uint64_t>(b, rec + kInoOffMapRoot, 0);
    poke<uint8_t>(b, rec + kInoOffMapHeight, 0);
    poke<uint64_t>(b, rec + kInoOffAllocated, 0);
    poke<uint64_t>(b, rec + kInoOffSize, 0);
    change(b);
    return decode_inode_leaf(b, kSelf, kFirstIno);
  };
  auto none = [](Buf&) {};
  EXPECT_TRUE(with(S_IFIFO | 0644, none).ok());
  EXPECT_TRUE(with(S_IFSOCK | 0755, none).ok());
  EXPECT_TRUE(with(S_IFCHR | 0600, [&](Buf& b) { poke<uint64_t>(b, rec + kInoOffRdev, 0x0103); }).ok());
  auto link = [&](Buf& b) {
    poke<uint64_t>(b, rec + kInoOffExtra, 99);
    poke<uint64_t>(b, rec + kInoOffSize, 12);
  };
  auto ok = with(S_IFLNK | 0777, link);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->inodes[3].extra, 99u);
  EXPECT_TRUE(corrupt(with(S_IFLNK | 0777, none), {"inode 65", "symlink without a target"}));
  EXPECT_TRUE(corrupt(with(S_IFLNK | 0777, [&](Buf& b) {
                        link(b);
                        poke<uint64_t>(b, rec + kInoOffSize, 4096);
                      }),
                      {"inode 65", "symlink of size 4096"}));
  EXPECT_TRUE(corrupt(with(S_IFIFO | 0644, [&](Buf& b) { poke<uint64_t>(b, rec + kInoOffRdev, 1); }),
                      {"inode 65", "rdev 1 but is not a device"}));
  EXPECT_TRUE(corrupt(with(S_IFSOCK | 0644, [&](Buf& b) { poke<uint64_t>(b, rec + kInoOffSize, 8); }),
                      {"inode 65", "size 8 but holds no data"}));
  EXPECT_TRUE(corrupt(with(S_IFBLK | 0644, [&](Buf& b) {
                        poke<uint64_t>(b, rec + kInoOffMapRoot, 5);
                        poke<uint8_t>(b, rec + kInoOffMapHeight, 1);
                      }),
                      {"inode 65", "has a map"}));
  EXPECT_TRUE(corrupt(with(S_IFREG | 0644, [&](Buf& b) { poke<uint64_t>(b, rec + kInoOffExtra, 1ull << 62); }),
                      {"inode 65", "extra", "2^62"}));
}

TEST(DecodeInodeLeaf, NonzeroReservedBytes) {
  Buf b = inode_leaf_buf();
  poke<uint8_t>(b, kHeaderBytes + 3 * kInodeBytes + 122, 1);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode 65", "reserved byte 122"}));
  b = inode_leaf_buf();
  poke<uint8_t>(b, kHeaderBytes + kInoOffFlags, 1);
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode 62", "flags"}));
  b = inode_leaf_buf();
  poke<uint8_t>(b, kHeaderBytes + kInodesPerLeaf * kInodeBytes, 1);  // past the records
  EXPECT_TRUE(corrupt(decode_inode_leaf(b, kSelf, kFirstIno), {"inode leaf", "unused payload"}));
}

// ---- Directory block ----

TEST(DecodeDirBlock, NameWithSlash) {
  Buf b = dir_buf();
  poke<uint8_t>(b, kDirEntry0Name + 1, '/');
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block at grain 1234", "entry 0", "invalid name"}));
}

TEST(DecodeDirBlock, NameWithNulOrDots) {
  Buf b = dir_buf();
  poke<uint8_t>(b, kDirEntry0Name + 2, 0);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 0", "invalid name"}));
  b = dir_buf();
  poke<uint8_t>(b, kDirEntry1 + kDirEntryFixedBytes, '.');
  poke<uint8_t>(b, kDirEntry1 + kDirEntryFixedBytes + 1, '.');
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1", "invalid name"}));
}

TEST(DecodeDirBlock, ZeroLengthName) {
  Buf b = dir_buf();
  poke<uint8_t>(b, kDirEntry1 + 9, 0);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1", "empty name"}));
}

TEST(DecodeDirBlock, EntryRunsPastLength) {
  Buf b = dir_buf();
  poke<uint8_t>(b, kDirEntry1 + 9, 3);  // "de" claims 3 bytes; the block has 25
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1", "runs past length 25"}));
  b = dir_buf();
  poke<uint32_t>(b, kOffLength, 13 + 5);  // entry 1's fixed part is cut short
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1", "runs past length 18"}));
}

TEST(DecodeDirBlock, BadInodeOrType) {
  Buf b = dir_buf();
  poke<uint64_t>(b, kDirEntry1, 0);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1 (de) has inode 0"}));
  b = dir_buf();
  poke<uint8_t>(b, kDirEntry1 + 8, DT_WHT);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1", "file type"}));
  for (uint8_t t : {DT_LNK, DT_FIFO, DT_SOCK, DT_CHR, DT_BLK}) {
    poke<uint8_t>(b, kDirEntry1 + 8, t);
    EXPECT_TRUE(decode_dir_block(b, kSelf).ok()) << int(t);
  }
}

TEST(DecodeDirBlock, DuplicateName) {
  DirBlock d;
  d.owner = 7;
  d.entries = {{10, DT_REG, "ab"}, {11, DT_REG, "ac"}};
  Buf b{};
  encode_dir_block(d, kSelf, 1, b);
  poke<uint8_t>(b, kHeaderBytes + 12 + kDirEntryFixedBytes + 1, 'b');
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "entry 1 repeats the name ab"}));
}

TEST(DecodeDirBlock, BytesAfterLength) {
  Buf b = dir_buf();
  poke<uint8_t>(b, kHeaderBytes + 30, 1);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "unused payload byte 94"}));
}

TEST(DecodeDirBlock, OwnerZero) {
  Buf b = dir_buf();
  poke<uint64_t>(b, kOffOwner, 0);
  EXPECT_TRUE(corrupt(decode_dir_block(b, kSelf), {"dir block", "owner"}));
}

// ---- Block table and refcounts ----

TEST(DecodeBlockTable, UnknownState) {
  Buf b = block_table_buf();
  poke<uint8_t>(b, kHeaderBytes + 9 * kBlockEntryBytes, 5);
  EXPECT_TRUE(corrupt(decode_block_table(b, kSelf), {"block table at grain 1234", "entry 9 has unknown state 5"}));
}

TEST(DecodeBlockTable, TooManyUsedGrains) {
  Buf b = block_table_buf();
  poke<uint16_t>(b, kHeaderBytes + kBlockEntryBytes + 2, 257);
  EXPECT_TRUE(corrupt(decode_block_table(b, kSelf), {"block table", "entry 1 has 257 used grains"}));
}

TEST(DecodeBlockTable, FreeBlockWithUsedGrains) {
  Buf b = block_table_buf();
  poke<uint16_t>(b, kHeaderBytes + 2 * kBlockEntryBytes + 2, 1);
  EXPECT_TRUE(corrupt(decode_block_table(b, kSelf), {"block table", "entry 2 is free"}));
}

TEST(DecodeBlockTable, NonzeroReservedBytes) {
  Buf b = block_table_buf();
  poke<uint8_t>(b, kHeaderBytes + 4 * kBlockEntryBytes + 1, 1);
  EXPECT_TRUE(corrupt(decode_block_table(b, kSelf), {"block table", "entry 4", "reserved"}));
  b = block_table_buf();
  poke<uint8_t>(b, kHeaderBytes + 4 * kBlockEntryBytes + 7, 1);
  EXPECT_TRUE(corrupt(decode_block_table(b, kSelf), {"block table", "entry 4", "reserved"}));
}

TEST(DecodeRefcounts, OwnerMustBeZero) {
  Buf b{};
  encode_refcounts(RefcountGrain{}, kSelf, 1, b);
  poke<uint64_t>(b, kOffOwner, 3);
  EXPECT_TRUE(corrupt(decode_refcounts(b, kSelf), {"refcount table at grain 1234", "owner 3"}));
}

// ---- Journal ----

TEST(DecodeJournalDesc, CountZero) {
  Buf b = desc_buf();
  poke<uint32_t>(b, kHeaderBytes + 8, 0);
  poke<uint32_t>(b, kOffLength, 16);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc at grain 1234", "count 0"}));
}

TEST(DecodeJournalDesc, CountTooBig) {
  Buf b = desc_buf();
  poke<uint32_t>(b, kHeaderBytes + 8, kJournalDescMax + 1);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc", "count 503"}));
}

TEST(DecodeJournalDesc, CountDisagreesWithLength) {
  Buf b = desc_buf();
  poke<uint32_t>(b, kHeaderBytes + 8, 3);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc", "length 32", "expected 40"}));
  b = desc_buf();
  poke<uint32_t>(b, kOffLength, 8);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc", "truncated"}));
}

TEST(DecodeJournalDesc, HomeOutOfRange) {
  Buf b = desc_buf();
  poke<uint64_t>(b, kHeaderBytes + 16 + 8, 1ull << 62);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf),
                      {"journal desc", "home 1 is grain 4611686018427387904"}));
}

TEST(DecodeJournalDesc, UnknownFlags) {
  Buf b = desc_buf();
  poke<uint32_t>(b, kHeaderBytes + 12, 3);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc", "flags 0x2"}));
}

TEST(DecodeJournalDesc, NonzeroGeneration) {
  Buf b = desc_buf();
  poke<uint64_t>(b, kOffGeneration, 4);
  EXPECT_TRUE(corrupt(decode_journal_desc(b, kSelf), {"journal desc", "generation 4"}));
}

TEST(DecodeJournalCommit, TooFewGrains) {
  Buf b = commit_buf();
  poke<uint32_t>(b, kHeaderBytes + 8, 1);
  EXPECT_TRUE(corrupt(decode_journal_commit(b, kSelf), {"journal commit at grain 1234", "covers 1 grains"}));
}

TEST(DecodeJournalCommit, WrongLength) {
  Buf b = commit_buf();
  poke<uint32_t>(b, kOffLength, 16);
  EXPECT_TRUE(corrupt(decode_journal_commit(b, kSelf), {"journal commit", "length 16"}));
}

// ---- Release list ----

TEST(DecodeReleaseList, CountTooBig) {
  Buf b = release_buf();
  poke<uint32_t>(b, kHeaderBytes + 8, kReleaseEntriesMax + 1);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list at grain 1234", "count 168"}));
}

TEST(DecodeReleaseList, BadHeight) {
  Buf b = release_buf();
  poke<uint8_t>(b, kRelEntry1 + 8, 0);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "entry 1 has height 0"}));
  poke<uint8_t>(b, kRelEntry1 + 8, kMaxTreeLevel + 2);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "entry 1 has height 9"}));
}

TEST(DecodeReleaseList, BadKind) {
  Buf b = release_buf();
  poke<uint8_t>(b, kRelEntry1 + 9, 4);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "entry 1 has unknown tree kind 4"}));
  poke<uint8_t>(b, kRelEntry1 + 9, 0);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "tree kind 0"}));
}

TEST(DecodeReleaseList, RootZero) {
  Buf b = release_buf();
  poke<uint64_t>(b, kRelEntry1, 0);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "entry 1 has root grain 0"}));
}

TEST(DecodeReleaseList, NonzeroReservedBytes) {
  Buf b = release_buf();
  poke<uint8_t>(b, kRelEntry1 + 12, 1);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "entry 1", "reserved byte 12"}));
  b = release_buf();
  poke<uint32_t>(b, kHeaderBytes + 12, 1);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "reserved"}));
}

TEST(DecodeReleaseList, NextPointsAtItself) {
  Buf b = release_buf();
  poke<uint64_t>(b, kHeaderBytes, kSelf);
  EXPECT_TRUE(corrupt(decode_release_list(b, kSelf), {"release list", "next 1234"}));
}

}  // namespace
}  // namespace vsfs::format

namespace vsfs::format {
namespace {

using testing::Buf;
using testing::corrupt;
using testing::poke;

// ---- Inode extra chain ----

TEST(DecodeExtraBlock, RoundTripAndDamage) {
  ExtraBlock e;
  e.owner = 42;
  e.next = 77;
  e.piece = std::string(kExtraPieceBytes, 'x');
  Buf b{};
  encode_extra_block(e, kSelf, 3, b);
  auto back = decode_extra_block(b, kSelf);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->owner, 42u);
  EXPECT_EQ(back->next, 77u);
  EXPECT_EQ(back->piece, e.piece);
  Buf c = b;
  poke<uint64_t>(c, kHeaderBytes, kSelf);  // a chain that names itself
  EXPECT_TRUE(corrupt(decode_extra_block(c, kSelf), {"inode extra at grain 1234", "next 1234"}));
  c = b;
  poke<uint64_t>(c, kOffOwner, 0);
  EXPECT_TRUE(corrupt(decode_extra_block(c, kSelf), {"inode extra", "owner is 0"}));
  c = b;
  poke<uint32_t>(c, kOffLength, 8);
  EXPECT_TRUE(corrupt(decode_extra_block(c, kSelf), {"inode extra", "no content"}));
}

TEST(InodeExtraContent, RoundTripAndDamage) {
  InodeExtra e;
  e.target = std::string(kMaxSymlinkBytes, 'p');
  e.xattrs = {{"security.selinux", "system_u:object_r:svirt_image_t:s0"},
              {"trusted.libvirt.security.dac", std::string(kMaxXattrValueBytes, 'v')},
              {"user.empty", ""}};
  const std::string c = encode_inode_extra(e);
  EXPECT_EQ(c.size(), inode_extra_bytes(e));
  auto back = decode_inode_extra(c, "here");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->target, e.target);
  EXPECT_EQ(back->xattrs, e.xattrs);

  EXPECT_TRUE(corrupt(decode_inode_extra(c.substr(0, c.size() - 1), "here"), {"here", "runs past"}));
  EXPECT_TRUE(corrupt(decode_inode_extra(c + "z", "here"), {"here", "1 bytes after"}));
  std::string d = c;
  d[8 + 10] = '\0';  // a NUL in the target
  EXPECT_TRUE(corrupt(decode_inode_extra(d, "here"), {"here", "NUL"}));
  InodeExtra unsorted;
  unsorted.xattrs = {{"user.b", "1"}, {"user.a", "2"}};
  // encode_inode_extra does not sort: the caller keeps the order, the decoder checks it.
  EXPECT_TRUE(corrupt(decode_inode_extra(encode_inode_extra(unsorted), "here"),
                      {"user.a", "out of order"}));
  InodeExtra other_ns;
  other_ns.xattrs = {{"user.x", "1"}};
  d = encode_inode_extra(other_ns);
  d.replace(12, 5, "syst.");
  EXPECT_TRUE(corrupt(decode_inode_extra(d, "here"), {"xattr 0 has an invalid name"}));
}

TEST(InodeExtraContent, XattrNames) {
  EXPECT_TRUE(valid_xattr_name("user.a"));
  EXPECT_TRUE(valid_xattr_name("trusted.libvirt.security.selinux"));
  EXPECT_TRUE(valid_xattr_name("security.selinux"));
  EXPECT_FALSE(valid_xattr_name("user."));
  EXPECT_FALSE(valid_xattr_name("system.posix_acl_access"));
  EXPECT_FALSE(valid_xattr_name("other.x"));
  EXPECT_FALSE(valid_xattr_name(std::string("user.a\0b", 8)));
  EXPECT_TRUE(valid_xattr_name("user." + std::string(250, 'n')));
  EXPECT_FALSE(valid_xattr_name("user." + std::string(251, 'n')));
}

}  // namespace
}  // namespace vsfs::format
