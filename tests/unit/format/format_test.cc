// Round trips of every on-disk structure, the header's byte layout and checksum, name
// rules, and the layout of new datastores. Decode error paths are in
// decode_errors_test.cc.
#include "format/format.h"

#include <dirent.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "format_test_util.h"
#include "util/crc32c.h"
#include "util/endian.h"

namespace vsfs::format {
namespace {

using testing::Buf;
using testing::sample_lifetime;
using testing::sample_superblock;

// Fills the buffer with garbage first: encode must zero the whole grain itself.
Buf dirty_buf() {
  Buf b;
  b.fill(0xAA);
  return b;
}

TEST(Header, ByteLayoutAndCrc) {
  Buf buf = dirty_buf();
  RefcountGrain t;
  encode_refcounts(t, 4242, 99, buf);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), 4), "VSMB");
  EXPECT_EQ(load_le<uint16_t>(buf.data() + kOffType), 8);
  EXPECT_EQ(load_le<uint16_t>(buf.data() + kOffVersion), 1);
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kOffLength), 4032u);
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kOffOwner), 0u);
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kOffGeneration), 99u);
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kOffSelf), 4242u);
  for (size_t i = kOffLevel; i < kHeaderBytes; ++i) EXPECT_EQ(buf[i], 0) << i;
  // The crc is crc32c of the whole grain with the crc field zero.
  Buf copy = buf;
  store_le<uint32_t>(copy.data() + kOffCrc, 0);
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kOffCrc), crc32c(0, copy.data(), copy.size()));

  auto h = decode_header(buf, BlockType::kRefcountTable, 4242);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->type, BlockType::kRefcountTable);
  EXPECT_EQ(h->length_bytes, 4032u);
  EXPECT_EQ(h->generation, 99u);
  EXPECT_EQ(h->self, 4242u);
  EXPECT_EQ(h->level, 0);
}

TEST(Header, EncodeAndSealRoundTrip) {
  Buf buf{};
  MetaHeader in{BlockType::kMapInterior, 4032, 17, 5, 300, 3};
  encode_header(buf, in);
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kOffCrc), 0u);
  seal(buf);
  auto h = decode_header(buf, BlockType::kMapInterior, 300);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->owner, 17u);
  EXPECT_EQ(h->level, 3);
}

TEST(Header, BlockTypeNames) {
  EXPECT_STREQ(block_type_name(BlockType::kSuperblock), "superblock");
  EXPECT_STREQ(block_type_name(BlockType::kMapLeaf), "map leaf");
  EXPECT_STREQ(block_type_name(BlockType::kDirBlock), "dir block");
  EXPECT_STREQ(block_type_name(BlockType::kReleaseList), "release list");
  EXPECT_STRNE(block_type_name(static_cast<BlockType>(99)), "");
}

TEST(Superblock, RoundTrip) {
  Superblock in = sample_superblock();
  in.compat = 0x8000'0000'0000'0001ull;     // unknown compat bits are ignored
  in.ro_compat = 0x4;                        // unknown ro_compat bits decode; mount decides
  in.state = kStateClean | kStateMounted;
  in.snapshot_root = in.first_data_block * kGrainsPerBlock + 20;
  in.lifetime = sample_lifetime();
  Buf buf = dirty_buf();
  encode_superblock(in, 555, buf);
  auto h = decode_header(buf, BlockType::kSuperblock, 0);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->generation, 555u);
  EXPECT_EQ(h->length_bytes, kSbPayloadEnd - kHeaderBytes);
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kSbOffDeviceBytes), in.device_bytes);
  EXPECT_EQ(buf[kSbOffInodeHeight], in.inode_height);

  auto out = decode_superblock(buf);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->format_version, 1u);
  EXPECT_EQ(out->compat, in.compat);
  EXPECT_EQ(out->ro_compat, in.ro_compat);
  EXPECT_EQ(out->incompat, in.incompat);
  EXPECT_EQ(out->uuid, in.uuid);
  EXPECT_EQ(out->device_bytes, in.device_bytes);
  EXPECT_EQ(out->total_blocks, in.total_blocks);
  EXPECT_EQ(out->journal_start_grain, in.journal_start_grain);
  EXPECT_EQ(out->journal_grains, in.journal_grains);
  EXPECT_EQ(out->block_table_start_grain, in.block_table_start_grain);
  EXPECT_EQ(out->block_table_grains, in.block_table_grains);
  EXPECT_EQ(out->refcount_start_grain, in.refcount_start_grain);
  EXPECT_EQ(out->refcount_grains, in.refcount_grains);
  EXPECT_EQ(out->first_data_block, in.first_data_block);
  EXPECT_EQ(out->inode_root, in.inode_root);
  EXPECT_EQ(out->inode_height, in.inode_height);
  EXPECT_EQ(out->next_ino, in.next_ino);
  EXPECT_EQ(out->generation, in.generation);
  EXPECT_EQ(out->journal_tail_grain, in.journal_tail_grain);
  EXPECT_EQ(out->journal_tail_seq, in.journal_tail_seq);
  EXPECT_EQ(out->release_list, in.release_list);
  EXPECT_EQ(out->state, in.state);
  EXPECT_EQ(out->mount_count, in.mount_count);
  EXPECT_EQ(out->mkfs_time_ns, in.mkfs_time_ns);
  EXPECT_EQ(out->snapshot_root, in.snapshot_root);
  EXPECT_EQ(out->lifetime, in.lifetime);

  // Re-encoding what was decoded gives the same bytes: one encoding per value.
  Buf again = dirty_buf();
  encode_superblock(*out, 555, again);
  EXPECT_EQ(again, buf);
}

// Each lifetime counter at its own offset, u64 little-endian, in the struct's order.
TEST(Superblock, LifetimeCountersLayout) {
  Superblock in = sample_superblock();
  in.lifetime = sample_lifetime();
  Buf buf = dirty_buf();
  encode_superblock(in, 1, buf);
  const LifetimeCounters& l = in.lifetime;
  const std::pair<size_t, uint64_t> fields[] = {
      {kSbOffLifeReadBytes, l.read_bytes},
      {kSbOffLifeWriteBytes, l.write_bytes},
      {kSbOffLifeReadErrors, l.read_errors},
      {kSbOffLifeWriteErrors, l.write_errors},
      {kSbOffLifeNoSpaceErrors, l.no_space_errors},
      {kSbOffLifeUncleanMounts, l.unclean_mounts},
      {kSbOffLifeSnapshotsTaken, l.snapshots_taken},
      {kSbOffLifeSnapshotsDeleted, l.snapshots_deleted},
      {kSbOffLifeFormattedBytes, l.formatted_bytes},
      {kSbOffLifeMountedSeconds, l.mounted_seconds},
  };
  for (const auto& [off, value] : fields) {
    EXPECT_EQ(load_le<uint64_t>(buf.data() + off), value) << "offset " << off;
  }
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kOffLength), 288u);
  for (size_t i = kSbPayloadEnd; i < kGrainBytes; ++i) ASSERT_EQ(buf[i], 0) << i;
}

// A superblock as vsfs wrote it before the lifetime counters: payload length 208, the
// bytes after snapshot_root zero. It decodes with every counter zero, and is written back
// with the full payload.
TEST(Superblock, ShortPayloadDecodesWithZeroCounters) {
  Superblock in = sample_superblock();
  in.lifetime = sample_lifetime();
  Buf buf = dirty_buf();
  encode_superblock(in, 9, buf);
  std::memset(buf.data() + kSbPayloadEndShort, 0, kSbPayloadEnd - kSbPayloadEndShort);
  store_le<uint32_t>(buf.data() + kOffLength, kSbPayloadEndShort - kHeaderBytes);
  seal(buf);

  auto out = decode_superblock(buf);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->lifetime, LifetimeCounters{});
  EXPECT_EQ(out->mount_count, in.mount_count);
  EXPECT_EQ(out->snapshot_root, in.snapshot_root);
  EXPECT_EQ(out->uuid, in.uuid);

  Buf again = dirty_buf();
  encode_superblock(*out, 9, again);
  EXPECT_EQ(load_le<uint32_t>(again.data() + kOffLength), kSbPayloadEnd - kHeaderBytes);
  auto back = decode_superblock(again);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->lifetime, LifetimeCounters{});
}

TEST(Superblock, LifetimeCountersAddUp) {
  const LifetimeCounters a = sample_lifetime();
  LifetimeCounters b;
  b.read_bytes = 1;
  b.write_bytes = 2;
  b.read_errors = 3;
  b.write_errors = 4;
  b.no_space_errors = 5;
  b.unclean_mounts = 6;
  b.snapshots_taken = 7;
  b.snapshots_deleted = 8;
  b.formatted_bytes = 9;
  b.mounted_seconds = 10;
  const LifetimeCounters sum = a + b;
  EXPECT_EQ(sum.read_bytes, a.read_bytes + 1);
  EXPECT_EQ(sum.write_bytes, a.write_bytes + 2);
  EXPECT_EQ(sum.read_errors, a.read_errors + 3);
  EXPECT_EQ(sum.write_errors, a.write_errors + 4);
  EXPECT_EQ(sum.no_space_errors, a.no_space_errors + 5);
  EXPECT_EQ(sum.unclean_mounts, a.unclean_mounts + 6);
  EXPECT_EQ(sum.snapshots_taken, a.snapshots_taken + 7);
  EXPECT_EQ(sum.snapshots_deleted, a.snapshots_deleted + 8);
  EXPECT_EQ(sum.formatted_bytes, a.formatted_bytes + 9);
  EXPECT_EQ(sum.mounted_seconds, a.mounted_seconds + 10);
}

TEST(Superblock, EmptyPointersDecode) {
  Superblock in = sample_superblock();
  in.inode_root = 0;
  in.inode_height = 0;
  in.release_list = 0;
  in.state = 0;
  Buf buf{};
  encode_superblock(in, 1, buf);
  auto out = decode_superblock(buf);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->inode_root, 0u);
}

TEST(TreeNode, MapLeafRoundTrip) {
  TreeNode in;
  in.type = BlockType::kMapLeaf;
  in.level = 0;
  in.owner = 42;
  for (size_t i = 0; i < kTreeFanout; ++i) {
    Slot& s = in.slots[i];
    switch (i % 3) {
      case 0: break;  // unmapped, all zero
      case 1: s.state = SlotState::kZero; s.stamp = 1000 + i; break;
      case 2: s.state = SlotState::kMapped; s.grain = (1ull << 62) - 1 - i; s.stamp = i; break;
    }
  }
  Buf buf = dirty_buf();
  encode_tree_node(in, 8000, 7, buf);
  // Slot 2 at payload offset 32: grain | kMapped << 62, then the stamp.
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kHeaderBytes + 2 * kSlotBytes),
            ((1ull << 62) - 3) | (2ull << 62));
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kHeaderBytes + 2 * kSlotBytes + 8), 2u);
  auto out = decode_tree_node(buf, 8000);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->type, BlockType::kMapLeaf);
  EXPECT_EQ(out->level, 0);
  EXPECT_EQ(out->owner, 42u);
  for (size_t i = 0; i < kTreeFanout; ++i) {
    EXPECT_EQ(out->slots[i].state, in.slots[i].state) << i;
    EXPECT_EQ(out->slots[i].grain, in.slots[i].grain) << i;
    EXPECT_EQ(out->slots[i].stamp, in.slots[i].stamp) << i;
  }
}

TEST(TreeNode, InteriorRoundTrip) {
  for (BlockType type : {BlockType::kMapInterior, BlockType::kInodeInterior}) {
    for (uint8_t level : {uint8_t{1}, kMaxTreeLevel}) {
      TreeNode in;
      in.type = type;
      in.level = level;
      in.slots[0] = Slot{5000, SlotState::kMapped, 3};
      in.slots[251] = Slot{5001, SlotState::kMapped, 0};
      Buf buf = dirty_buf();
      encode_tree_node(in, 6000, 1, buf);
      auto out = decode_tree_node(buf, 6000);
      ASSERT_TRUE(out.ok()) << out.error().message;
      EXPECT_EQ(out->type, type);
      EXPECT_EQ(out->level, level);
      EXPECT_EQ(out->slots[0].grain, 5000u);
      EXPECT_EQ(out->slots[0].stamp, 3u);
      EXPECT_EQ(out->slots[251].grain, 5001u);
      EXPECT_EQ(out->slots[1].state, SlotState::kUnmapped);
    }
  }
}

InodeRecord sample_inode(uint64_t ino, bool dir) {
  InodeRecord r;
  r.ino = ino;
  r.mode = (dir ? S_IFDIR : S_IFREG) | 07755;
  r.uid = 1000;
  r.gid = 0xffffffffu;
  r.nlink = dir ? 2 : 1;
  r.size_bytes = dir ? 130 : (1ull << 44);
  r.atime_ns = 11;
  r.mtime_ns = 22;
  r.ctime_ns = 33;
  r.map_root = 123456;
  r.map_height = kMaxTreeLevel + 1;
  r.allocated_grains = 1ull << 32;
  r.btime_ns = 44;
  r.parent = dir ? 1 : 0;
  return r;
}

TEST(InodeLeaf, RoundTrip) {
  InodeLeaf in;
  in.first_ino = 31 * 5;
  for (size_t i = 0; i < kInodesPerLeaf; i += 2) in.inodes[i] = sample_inode(in.first_ino + i, i % 4 == 0);
  in.inodes[30].map_root = 0;  // an empty file
  in.inodes[30].map_height = 0;
  in.inodes[30].allocated_grains = 0;
  Buf buf = dirty_buf();
  encode_inode_leaf(in, 700, 3, buf);
  // Record 2 starts at payload offset 256; its mode at +8.
  EXPECT_EQ(load_le<uint64_t>(buf.data() + kHeaderBytes + 2 * kInodeBytes), in.first_ino + 2);
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kHeaderBytes + 2 * kInodeBytes + kInoOffMode),
            in.inodes[2].mode);
  auto out = decode_inode_leaf(buf, 700, in.first_ino);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->first_ino, in.first_ino);
  for (size_t i = 0; i < kInodesPerLeaf; ++i) {
    const InodeRecord& a = in.inodes[i];
    const InodeRecord& b = out->inodes[i];
    EXPECT_EQ(a.ino, b.ino) << i;
    EXPECT_EQ(a.mode, b.mode) << i;
    EXPECT_EQ(a.uid, b.uid) << i;
    EXPECT_EQ(a.gid, b.gid) << i;
    EXPECT_EQ(a.nlink, b.nlink) << i;
    EXPECT_EQ(a.size_bytes, b.size_bytes) << i;
    EXPECT_EQ(a.atime_ns, b.atime_ns) << i;
    EXPECT_EQ(a.mtime_ns, b.mtime_ns) << i;
    EXPECT_EQ(a.ctime_ns, b.ctime_ns) << i;
    EXPECT_EQ(a.map_root, b.map_root) << i;
    EXPECT_EQ(a.map_height, b.map_height) << i;
    EXPECT_EQ(a.flags, b.flags) << i;
    EXPECT_EQ(a.allocated_grains, b.allocated_grains) << i;
    EXPECT_EQ(a.btime_ns, b.btime_ns) << i;
    EXPECT_EQ(a.parent, b.parent) << i;
  }
}

TEST(DirBlock, NameRules) {
  EXPECT_TRUE(valid_name("a"));
  EXPECT_TRUE(valid_name("..."));
  EXPECT_TRUE(valid_name(".hidden"));
  EXPECT_TRUE(valid_name(std::string(255, 'x')));
  EXPECT_FALSE(valid_name(std::string(256, 'x')));
  EXPECT_FALSE(valid_name(""));
  EXPECT_FALSE(valid_name("."));
  EXPECT_FALSE(valid_name(".."));
  EXPECT_FALSE(valid_name("a/b"));
  EXPECT_FALSE(valid_name(std::string("a\0b", 3)));
  EXPECT_EQ(dir_entry_bytes(DirEntry{1, DT_REG, "abc"}), 13u);
}

TEST(DirBlock, RoundTripMaxLengthNames) {
  DirBlock in;
  in.owner = 9;
  for (char c : {'a', 'b', 'c'}) in.entries.push_back({100u + c, DT_REG, std::string(255, c)});
  in.entries.push_back({5, DT_DIR, "d"});
  Buf buf = dirty_buf();
  encode_dir_block(in, 321, 4, buf);
  auto out = decode_dir_block(buf, 321);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->owner, 9u);
  ASSERT_EQ(out->entries.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(out->entries[i].ino, in.entries[i].ino);
    EXPECT_EQ(out->entries[i].type, in.entries[i].type);
    EXPECT_EQ(out->entries[i].name, in.entries[i].name);
  }
}

TEST(DirBlock, RoundTripFullBlock) {
  // 15 entries of 265 bytes and one of 57 fill the 4032-byte payload exactly.
  DirBlock in;
  in.owner = 1;
  for (int i = 0; i < 15; ++i) {
    std::string name(255, 'n');
    name[0] = static_cast<char>('A' + i);
    in.entries.push_back({static_cast<uint64_t>(1000 + i), DT_REG, name});
  }
  in.entries.push_back({2000, DT_DIR, std::string(47, 'z')});
  size_t total = 0;
  for (const auto& e : in.entries) total += dir_entry_bytes(e);
  ASSERT_EQ(total, kPayloadBytes);
  Buf buf = dirty_buf();
  encode_dir_block(in, 322, 4, buf);
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kOffLength), kPayloadBytes);
  auto out = decode_dir_block(buf, 322);
  ASSERT_TRUE(out.ok()) << out.error().message;
  ASSERT_EQ(out->entries.size(), in.entries.size());
  EXPECT_EQ(out->entries.back().name, std::string(47, 'z'));
  EXPECT_EQ(out->entries[14].name, in.entries[14].name);
}

TEST(DirBlock, RoundTripEmpty) {
  DirBlock in;
  in.owner = 3;
  Buf buf = dirty_buf();
  encode_dir_block(in, 323, 4, buf);
  auto out = decode_dir_block(buf, 323);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_TRUE(out->entries.empty());
}

TEST(BlockTable, RoundTrip) {
  BlockTableGrain in;
  for (size_t i = 0; i < kBlocksPerTableGrain; ++i) {
    auto state = static_cast<BlockState>(i % 5);
    uint16_t used = 0;
    if (state == BlockState::kData || state == BlockState::kMeta) used = i % 257;
    if (state == BlockState::kReserved) used = 256;
    in.entries[i] = BlockEntry{state, used};
  }
  Buf buf = dirty_buf();
  encode_block_table(in, 2304, 8, buf);
  EXPECT_EQ(buf[kHeaderBytes + 3 * kBlockEntryBytes], 3);  // entry 3: kMeta
  auto out = decode_block_table(buf, 2304);
  ASSERT_TRUE(out.ok()) << out.error().message;
  for (size_t i = 0; i < kBlocksPerTableGrain; ++i) {
    EXPECT_EQ(out->entries[i].state, in.entries[i].state) << i;
    EXPECT_EQ(out->entries[i].used_grains, in.entries[i].used_grains) << i;
  }
}

TEST(Refcounts, RoundTrip) {
  RefcountGrain in;
  for (size_t i = 0; i < kGrainsPerRefcountGrain; ++i) in.counts[i] = static_cast<uint16_t>(i * 37);
  in.counts[2015] = 0xffff;
  Buf buf = dirty_buf();
  encode_refcounts(in, 2560, 8, buf);
  auto out = decode_refcounts(buf, 2560);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->counts, in.counts);
}

TEST(Journal, DescRoundTripFull) {
  JournalDesc in;
  in.seq = 1ull << 40;
  in.last = true;
  for (size_t i = 0; i < kJournalDescMax; ++i) in.homes.push_back(3000 + i * 7);
  Buf buf = dirty_buf();
  encode_journal_desc(in, 300, buf);
  EXPECT_EQ(load_le<uint32_t>(buf.data() + kOffLength), 16u + 502u * 8u);
  auto out = decode_journal_desc(buf, 300);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->seq, in.seq);
  EXPECT_TRUE(out->last);
  EXPECT_EQ(out->homes, in.homes);
}

TEST(Journal, DescRoundTripOneHome) {
  JournalDesc in{5, false, {77}};
  Buf buf = dirty_buf();
  encode_journal_desc(in, 257, buf);
  auto out = decode_journal_desc(buf, 257);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_FALSE(out->last);
  EXPECT_EQ(out->homes, std::vector<uint64_t>{77});
}

TEST(Journal, CommitRoundTrip) {
  JournalCommit in{99, 503, 0xdeadbeef, 123456789};
  Buf buf = dirty_buf();
  encode_journal_commit(in, 900, buf);
  auto out = decode_journal_commit(buf, 900);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->seq, 99u);
  EXPECT_EQ(out->grains, 503u);
  EXPECT_EQ(out->payload_crc, 0xdeadbeefu);
  EXPECT_EQ(out->time_ns, 123456789u);
}

TEST(ReleaseList, RoundTripFull) {
  ReleaseList in;
  in.next = 4444;
  for (size_t i = 0; i < kReleaseEntriesMax; ++i) {
    in.entries.push_back({1000 + i, static_cast<uint8_t>(1 + i % (kMaxTreeLevel + 1)),
                          static_cast<TreeKind>(1 + i % 3), 50 + i});
  }
  Buf buf = dirty_buf();
  encode_release_list(in, 4443, 2, buf);
  auto out = decode_release_list(buf, 4443);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->next, 4444u);
  ASSERT_EQ(out->entries.size(), kReleaseEntriesMax);
  for (size_t i = 0; i < kReleaseEntriesMax; ++i) {
    EXPECT_EQ(out->entries[i].root, in.entries[i].root);
    EXPECT_EQ(out->entries[i].height, in.entries[i].height);
    EXPECT_EQ(out->entries[i].kind, in.entries[i].kind);
    EXPECT_EQ(out->entries[i].owner, in.entries[i].owner);
  }
}

TEST(ReleaseList, RoundTripEmpty) {
  ReleaseList in;
  Buf buf = dirty_buf();
  encode_release_list(in, 4443, 2, buf);
  auto out = decode_release_list(buf, 4443);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->next, 0u);
  EXPECT_TRUE(out->entries.empty());
}

// ---- Layout ----

void expect_layout(uint64_t device_bytes, const Layout& want) {
  auto l = compute_layout(device_bytes);
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->total_blocks, want.total_blocks);
  EXPECT_EQ(l->journal_start_grain, want.journal_start_grain);
  EXPECT_EQ(l->journal_grains, want.journal_grains);
  EXPECT_EQ(l->block_table_start_grain, want.block_table_start_grain);
  EXPECT_EQ(l->block_table_grains, want.block_table_grains);
  EXPECT_EQ(l->space_summary_grains, want.space_summary_grains);
  EXPECT_EQ(l->refcount_start_grain, want.refcount_start_grain);
  EXPECT_EQ(l->refcount_grains, want.refcount_grains);
  EXPECT_EQ(l->first_data_block, want.first_data_block);
}

TEST(Layout, Min64MiB) {
  // Journal clamped up to 8 MiB; one block each for the tables.
  expect_layout(64ull << 20, {64, 256, 2048, 2304, 1, 1, 2560, 9, 11});
}

TEST(Layout, OneGiB) { expect_layout(1ull << 30, {1024, 256, 2048, 2304, 3, 1, 2560, 131, 11}); }

TEST(Layout, SixtyFourGiB) {
  // Journal device/256 = 256 MiB; refcounts 8323 grains = 33 blocks.
  expect_layout(64ull << 30, {65536, 256, 65536, 65792, 131, 1, 66048, 8323, 291});
}

TEST(Layout, SixtyFourTiB) {
  // Journal clamped down to 1 GiB; block table 133153 grains and a space summary of 5
  // grains = 521 blocks.
  expect_layout(64ull << 40,
                {67108864, 256, 262144, 262400, 133153, 5, 395776, 8521761, 34835});
}

TEST(Layout, TooSmall) {
  auto l = compute_layout((64ull << 20) - 1);
  EXPECT_TRUE(testing::fails_with(l, ErrorKind::kInvalidArgument,
                                  {"device is 67108863 bytes",
                                   "a datastore needs at least 64 MiB"}));
  EXPECT_FALSE(compute_layout(0).ok());
}

TEST(Layout, JournalOverride) {
  auto l = compute_layout(1ull << 30, 1);  // rounded up to the 1 MiB minimum
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->journal_grains, 256u);
  l = compute_layout(1ull << 30, (5ull << 20) + 1);  // rounded up to whole blocks
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->journal_grains, 6u * 256);
  EXPECT_EQ(l->block_table_start_grain, 7u * 256);
}

TEST(Layout, TooFewDataBlocks) {
  // 64 MiB with a 50 MiB journal leaves 64 - 1 - 50 - 2 = 11 data blocks.
  auto l = compute_layout(64ull << 20, 50ull << 20);
  EXPECT_TRUE(testing::fails_with(l, ErrorKind::kInvalidArgument, {"at least 16"}));
  EXPECT_TRUE(compute_layout(64ull << 20, 45ull << 20).ok());  // leaves exactly 16
  EXPECT_FALSE(compute_layout(64ull << 20, 1ull << 40).ok());
}

// The superblock mkfs writes for a device of `bytes` (the space summary on).
Superblock laid_out(uint64_t bytes) {
  auto l = compute_layout(bytes);
  EXPECT_TRUE(l.ok());
  Superblock sb;
  sb.device_bytes = l->total_blocks * kBlockBytes;
  sb.total_blocks = l->total_blocks;
  sb.journal_start_grain = l->journal_start_grain;
  sb.journal_grains = l->journal_grains;
  sb.block_table_start_grain = l->block_table_start_grain;
  sb.block_table_grains = l->block_table_grains;
  sb.refcount_start_grain = l->refcount_start_grain;
  sb.refcount_grains = l->refcount_grains;
  sb.first_data_block = l->first_data_block;
  sb.ro_compat = kRoCompatSpaceSummary;
  return sb;
}

TEST(Layout, EveryLayoutMakesADecodableSuperblock) {
  for (uint64_t bytes : {64ull << 20, (64ull << 20) + 12345, 100ull << 20, 1ull << 30,
                         (3ull << 30) + 4096, 64ull << 30, 1ull << 40, 64ull << 40,
                         // a block table that fills its storage blocks exactly
                         (504ull * 256) << 20}) {
    auto l = compute_layout(bytes);
    ASSERT_TRUE(l.ok()) << l.error().message;
    Superblock sb = laid_out(bytes);
    EXPECT_TRUE(space_summary_fits(sb));
    EXPECT_EQ(space_summary_start(sb) + l->space_summary_grains, sb.block_table_start_grain +
                                                                    sb.block_table_grains +
                                                                    l->space_summary_grains);
    Buf buf{};
    encode_superblock(sb, 1, buf);
    auto out = decode_superblock(buf);
    EXPECT_TRUE(out.ok()) << bytes << ": " << out.error().message;
  }
}

// A datastore made before the space summary whose block table filled its storage blocks
// has no room for it: the bit is refused there.
TEST(DecodeSuperblock, SpaceSummaryWithoutRoom) {
  auto l = compute_layout((504ull * 256) << 20);
  ASSERT_TRUE(l.ok());
  Superblock sb;
  sb.device_bytes = (504ull * 256) << 20;
  sb.total_blocks = l->total_blocks;
  sb.journal_start_grain = l->journal_start_grain;
  sb.journal_grains = l->journal_grains;
  sb.block_table_start_grain = l->block_table_start_grain;
  sb.block_table_grains = l->block_table_grains;
  ASSERT_EQ(sb.block_table_grains % kGrainsPerBlock, 0u);
  // The old layout: the refcount table right after the block table's last block.
  sb.refcount_start_grain = sb.block_table_start_grain + sb.block_table_grains;
  sb.refcount_grains = l->refcount_grains;
  sb.first_data_block = sb.refcount_start_grain / kGrainsPerBlock +
                        div_round_up(sb.refcount_grains, kGrainsPerBlock);
  Buf buf{};
  encode_superblock(sb, 1, buf);
  EXPECT_TRUE(decode_superblock(buf).ok());
  EXPECT_FALSE(space_summary_fits(sb));
  sb.ro_compat = kRoCompatSpaceSummary;
  encode_superblock(sb, 1, buf);
  EXPECT_TRUE(testing::fails_with(decode_superblock(buf), ErrorKind::kCorruption,
                                  {"space summary", "does not fit"}));
}


// Growths (incompat bit 3): the payload grows by 32 bytes each, the tables' later grains
// are found in the growth regions, and the blocks of those regions are reserved.
TEST(Superblock, GrowthsRoundTripAndPlaceTheTables) {
  Superblock sb = laid_out(1ull << 30);  // 1024 blocks: 3 table grains, the last partial
  const uint64_t table0 = sb.block_table_grains, refcount0 = sb.refcount_grains;
  Superblock g1 = grown_superblock(sb, 5000);
  Superblock g2 = grown_superblock(g1, 40ull << 20);  // 40 Ti blocks: a 2nd summary grain
  ASSERT_EQ(g2.growths.size(), 2u);
  EXPECT_EQ(g2.incompat, kIncompatGrown);
  EXPECT_EQ(g2.growths[0].region_block, 1024u);
  EXPECT_EQ(g2.growths[0].table_grains, div_round_up(5000, 504) - table0);
  EXPECT_EQ(g2.growths[0].summary_grains, 0u);
  EXPECT_EQ(g2.growths[1].region_block, 5000u);
  EXPECT_EQ(g2.growths[1].summary_grains, 2u);
  Buf buf = dirty_buf();
  encode_superblock(g2, 9, buf);
  auto h = decode_header(buf, BlockType::kSuperblock, 0);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->length_bytes, kSbPayloadEnd - kHeaderBytes + 8 + 2 * kSbGrowthBytes);
  auto out = decode_superblock(buf);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->growths, g2.growths);
  EXPECT_EQ(out->total_blocks, 40ull << 20);
  Buf again = dirty_buf();
  encode_superblock(*out, 9, again);
  EXPECT_EQ(again, buf);

  // Where each table's grains are: the fixed region first, then each growth's region.
  EXPECT_EQ(table_grain(g2, Table::kBlockTable, 0), sb.block_table_start_grain);
  EXPECT_EQ(table_run(g2, Table::kBlockTable, table0 - 1).count, 1u);
  EXPECT_EQ(table_grain(g2, Table::kBlockTable, table0), 1024 * kGrainsPerBlock);
  const uint64_t g1_table = g2.growths[0].table_grains;
  EXPECT_EQ(table_grain(g2, Table::kRefcount, refcount0 - 1), sb.refcount_start_grain + refcount0 - 1);
  EXPECT_EQ(table_grain(g2, Table::kRefcount, refcount0), 1024 * kGrainsPerBlock + g1_table);
  EXPECT_EQ(table_grain(g2, Table::kBlockTable, table0 + g1_table), 5000 * kGrainsPerBlock);
  EXPECT_EQ(table_grain(g2, Table::kSpaceSummary, 0), space_summary_start(g2));
  EXPECT_EQ(space_summary_start(g2), sb.block_table_start_grain + table0);
  EXPECT_EQ(table_grain(g2, Table::kSpaceSummary, 1),
            5000 * kGrainsPerBlock + g2.growths[1].table_grains);
  EXPECT_EQ(table_run(g2, Table::kSpaceSummary, 1).count, 2u);
  EXPECT_EQ(table_grain(g2, Table::kRefcount, refcount0 + g2.growths[0].refcount_grains),
            5000 * kGrainsPerBlock + g2.growths[1].table_grains + 2);
  // Every grain of every table is somewhere, none in two places, none in the data area.
  std::set<uint64_t> seen;
  for (Table t : {Table::kBlockTable, Table::kSpaceSummary, Table::kRefcount}) {
    for (uint64_t i = 0; i < table_grains(g2, t); ++i) {
      const uint64_t at = table_grain(g2, t, i);
      ASSERT_TRUE(seen.insert(at).second) << at;
      ASSERT_TRUE(reserved_block(g2, at / kGrainsPerBlock)) << at;
    }
  }
  EXPECT_TRUE(reserved_block(g2, 1024));
  EXPECT_FALSE(reserved_block(g2, 1024 + growth_region_blocks(g2.growths[0])));
  EXPECT_EQ(growth_reserved_blocks(g2),
            growth_region_blocks(g2.growths[0]) + growth_region_blocks(g2.growths[1]));
}

TEST(DecodeSuperblock, GrowthsThatDoNotAddUp) {
  const Superblock good = grown_superblock(laid_out(1ull << 30), 3000);
  auto refused = [&](Superblock sb, std::initializer_list<std::string_view> says) {
    Buf buf{};
    encode_superblock(sb, 1, buf);
    EXPECT_TRUE(testing::fails_with(decode_superblock(buf), ErrorKind::kCorruption, says));
  };
  Superblock sb = good;
  sb.incompat = 0;  // growths without the bit: written as a plain superblock, too long
  {
    Buf buf{};
    encode_superblock(good, 1, buf);
    store_le<uint64_t>(buf.data() + kSbOffIncompat, 0);
    seal(buf);
    EXPECT_TRUE(testing::fails_with(decode_superblock(buf), ErrorKind::kCorruption, {"length"}));
  }
  sb = good;
  sb.growths[0].region_block = 500;  // not at the old end: inside the data area
  sb.growths.push_back(sb.growths[0]);
  sb.growths[0].region_block = 1100;
  sb.growths[0].table_grains = 0;
  sb.growths[0].refcount_grains = 1;
  refused(sb, {"growth region at block 500"});
  sb = good;
  sb.growths[0].region_block = 3000;  // past the end
  refused(sb, {"growth region"});
  sb = good;
  sb.growths[0].table_grains = sb.block_table_grains;  // the fixed region would hold none
  refused(sb, {"growths hold"});
  // A bit without growths: a count of 0.
  Buf buf{};
  encode_superblock(laid_out(1ull << 30), 1, buf);
  store_le<uint64_t>(buf.data() + kSbOffIncompat, kIncompatGrown);
  seal(buf);
  EXPECT_TRUE(testing::fails_with(decode_superblock(buf), ErrorKind::kCorruption, {"growth count 0"}));
}

TEST(Lease, RoundTripAndAZeroGrainIsFree) {
  Buf buf{};
  auto free = decode_lease(buf);
  ASSERT_TRUE(free.ok());
  EXPECT_EQ(free->state, LeaseState::kFree);
  LeaseRecord r;
  r.state = LeaseState::kHeld;
  r.lease_ms = 8000;
  r.nonce = 0x1234'5678'9abc'def0ull;
  r.counter = 99;
  r.renewed_ns = 1'700'000'000'000'000'000ull;
  r.machine_id[0] = 1;
  r.machine_id[15] = 0xff;
  r.boot_id[3] = 7;
  r.pid_ns = 4026531836ull;
  r.pid = 31337;
  r.hostname = std::string(kLeaseHostnameBytes, 'h');  // a name that fills its field
  buf = dirty_buf();
  encode_lease(r, buf);
  auto out = decode_lease(buf);
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(*out, r);
  r.hostname = "host-a";
  encode_lease(r, buf);
  EXPECT_EQ(decode_lease(buf).value(), r);
  store_le<uint32_t>(buf.data() + kHeaderBytes, 2);  // an unknown state
  seal(buf);
  EXPECT_TRUE(testing::fails_with(decode_lease(buf), ErrorKind::kCorruption, {"state 2"}));
  encode_lease(r, buf);
  buf[kHeaderBytes + 80 + 10] = 'x';  // past the name's NUL
  seal(buf);
  EXPECT_TRUE(testing::fails_with(decode_lease(buf), ErrorKind::kCorruption, {"hostname padding"}));
}

TEST(SpaceSummary, RoundTrip) {
  SpaceSummaryGrain in;
  in.set(0, true);
  in.set(777, true);
  in.set(kGroupsPerSummaryGrain - 1, true);
  Buf buf = dirty_buf();
  encode_space_summary(in, 2304, 3, buf);
  auto out = decode_space_summary(buf, 2304);
  ASSERT_TRUE(out.ok()) << out.error().message;
  for (size_t i = 0; i < kGroupsPerSummaryGrain; ++i) {
    EXPECT_EQ(out->test(i), i == 0 || i == 777 || i == kGroupsPerSummaryGrain - 1) << i;
  }
  EXPECT_FALSE(decode_space_summary(buf, 2305).ok());  // self
  buf[kHeaderBytes + 5] ^= 1;
  EXPECT_FALSE(decode_space_summary(buf, 2304).ok());  // crc
}

}  // namespace
}  // namespace vsfs::format
