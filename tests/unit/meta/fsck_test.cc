// vsfs::fsck on the simulated device: a fresh datastore is clean; each kind of damage is
// reported naming the structure, repaired where fsck can, and never crashes the checker.
// Datastores are made with vsfs::mkfs and filled through the public Datastore API; damage
// is made by re-encoding structures with the format encoders and poking them in place.
#include <dirent.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "device/sim_device.h"
#include "fsck_test_util.h"
#include "format/format.h"
#include "meta/journal.h"
#include "unit/format/format_test_util.h"
#include "meta/meta_store.h"
#include "util/aligned_buffer.h"
#include "util/endian.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;
using device::SimOptions;
using format::BlockState;

std::unique_ptr<SimDevice> fresh_device(uint64_t size = 256ull << 20) {
  SimOptions o;
  o.size_bytes = size;
  auto dev = std::make_unique<SimDevice>(o);
  auto r = mkfs(*dev, {});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return dev;
}

FsckReport check(device::Device& dev, bool repair, bool full_zero = false) {
  FsckOptions o;
  o.repair = repair;
  o.full_zero_check = full_zero;
  return run_fsck(dev, o);
}

bool has_line(const std::vector<std::string>& lines, const std::string& needle) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(needle) != std::string::npos; });
}

#define EXPECT_CLEAN(report)                                                   \
  do {                                                                         \
    EXPECT_TRUE((report).problems.empty()) << joined((report).problems);       \
    EXPECT_TRUE((report).repairs.empty()) << joined((report).repairs);         \
  } while (0)

format::Superblock superblock(SimDevice& dev) {
  auto sb = meta::read_superblock(dev);
  EXPECT_TRUE(sb.ok()) << sb.error().to_string();
  return sb.ok() ? *sb : format::Superblock{};
}

std::vector<uint8_t> peek_grain(SimDevice& dev, uint64_t grain) {
  std::vector<uint8_t> v(kGrainBytes);
  dev.peek(grain * kGrainBytes, v.data(), kGrainBytes);
  return v;
}

std::vector<uint8_t> image(SimDevice& dev) {
  std::vector<uint8_t> v(dev.size_bytes());
  dev.peek(0, v.data(), v.size());
  return v;
}

format::ConstGrain cg(const std::vector<uint8_t>& v) {
  return format::ConstGrain(v.data(), kGrainBytes);
}
format::Grain mg(std::vector<uint8_t>& v) { return format::Grain(v.data(), kGrainBytes); }

// Re-encodes the refcount table entry of `grain` with `count`.
void poke_refcount(SimDevice& dev, uint64_t grain, uint16_t count) {
  const auto sb = superblock(dev);
  const uint64_t self = sb.refcount_start_grain + grain / format::kGrainsPerRefcountGrain;
  auto raw = peek_grain(dev, self);
  format::RefcountGrain t;
  if (std::any_of(raw.begin(), raw.end(), [](uint8_t b) { return b != 0; })) {
    auto d = format::decode_refcounts(cg(raw), self);
    ASSERT_TRUE(d.ok()) << d.error().to_string();
    t = *d;
  }
  t.counts[grain % format::kGrainsPerRefcountGrain] = count;
  format::encode_refcounts(t, self, sb.generation, mg(raw));
  dev.poke(self * kGrainBytes, raw.data(), kGrainBytes);
}

void poke_block_entry(SimDevice& dev, uint64_t block, format::BlockEntry entry) {
  const auto sb = superblock(dev);
  const uint64_t self = sb.block_table_start_grain + block / format::kBlocksPerTableGrain;
  auto raw = peek_grain(dev, self);
  auto t = format::decode_block_table(cg(raw), self);
  ASSERT_TRUE(t.ok()) << t.error().to_string();
  t->entries[block % format::kBlocksPerTableGrain] = entry;
  format::encode_block_table(*t, self, sb.generation, mg(raw));
  dev.poke(self * kGrainBytes, raw.data(), kGrainBytes);
}

format::BlockEntry block_entry(SimDevice& dev, uint64_t block) {
  const auto sb = superblock(dev);
  const uint64_t self = sb.block_table_start_grain + block / format::kBlocksPerTableGrain;
  auto raw = peek_grain(dev, self);
  auto t = format::decode_block_table(cg(raw), self);
  EXPECT_TRUE(t.ok()) << t.error().to_string();
  return t.ok() ? t->entries[block % format::kBlocksPerTableGrain] : format::BlockEntry{};
}

// The inode leaf of a height-1 inode table (every test datastore here is that small).
format::InodeLeaf root_leaf(SimDevice& dev) {
  const auto sb = superblock(dev);
  EXPECT_EQ(sb.inode_height, 1);
  auto raw = peek_grain(dev, sb.inode_root);
  auto leaf = format::decode_inode_leaf(cg(raw), sb.inode_root, 0);
  EXPECT_TRUE(leaf.ok()) << leaf.error().to_string();
  return leaf.ok() ? *leaf : format::InodeLeaf{};
}

void poke_root_leaf(SimDevice& dev, const format::InodeLeaf& leaf) {
  const auto sb = superblock(dev);
  std::vector<uint8_t> raw(kGrainBytes);
  format::encode_inode_leaf(leaf, sb.inode_root, sb.generation, mg(raw));
  dev.poke(sb.inode_root * kGrainBytes, raw.data(), kGrainBytes);
}

// ---- on a fresh datastore ----

TEST(Fsck, FreshDatastoreIsClean) {
  auto dev = fresh_device();
  auto before = image(*dev);
  auto r = check(*dev, false);
  EXPECT_CLEAN(r);
  EXPECT_EQ(r.inodes, 1u);
  EXPECT_EQ(r.dirs, 1u);
  EXPECT_EQ(r.files, 0u);
  EXPECT_EQ(r.data_grains, 0u);
  EXPECT_EQ(r.tree_nodes, 1u);  // the inode leaf
  EXPECT_FALSE(r.replayed_journal);
  EXPECT_TRUE(image(*dev) == before) << "fsck -n wrote to the device";
  auto y = check(*dev, true, true);
  EXPECT_CLEAN(y);
}

TEST(Fsck, NotADatastoreCannotRun) {
  SimOptions o;
  o.size_bytes = 128ull << 20;
  SimDevice dev(o);
  auto r = fsck(dev, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorruption);
}

TEST(Fsck, SmashedPrimarySuperblockIsRebuiltFromTheCopy) {
  auto dev = fresh_device();
  std::vector<uint8_t> junk(kGrainBytes, 0x5a);
  dev->poke(0, junk.data(), junk.size());
  auto before = image(*dev);

  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, "primary superblock:")) << joined(n.problems);
  EXPECT_EQ(n.problems.size(), 1u) << joined(n.problems);
  EXPECT_TRUE(image(*dev) == before) << "fsck -n wrote to the device";

  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_TRUE(has_line(y.repairs, "primary superblock rewritten")) << joined(y.repairs);
  EXPECT_EQ(peek_grain(*dev, 0), peek_grain(*dev, format::kSuperblockCopyGrain));

  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, DamagedSuperblockCopyIsRewritten) {
  auto dev = fresh_device();
  auto copy = peek_grain(*dev, format::kSuperblockCopyGrain);
  copy[100] ^= 0x01;  // inside the uuid: a crc failure
  dev->poke(format::kSuperblockCopyGrain * kGrainBytes, copy.data(), copy.size());
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, "superblock copy (grain 255)")) << joined(n.problems);
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, BothSuperblocksDamagedCannotRun) {
  auto dev = fresh_device();
  std::vector<uint8_t> zeros(kGrainBytes, 0);
  dev->poke(0, zeros.data(), zeros.size());
  dev->poke(format::kSuperblockCopyGrain * kGrainBytes, zeros.data(), zeros.size());
  auto r = fsck(*dev, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorruption);
  EXPECT_NE(r.error().message.find("superblock"), std::string::npos) << r.error().message;
}

TEST(Fsck, WrongReferenceCountIsReportedAndRepaired) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  const uint64_t leaf = sb.inode_root;
  poke_refcount(*dev, leaf, 2);
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("refcount of grain {} is 2 but 1 reference was found", leaf)))
      << joined(n.problems);
  EXPECT_EQ(n.problems.size(), 1u) << joined(n.problems);

  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_FALSE(y.repairs.empty());
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, LeakedGrainCountsAreRepairedWithTheirBlock) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  const uint64_t stray = sb.inode_root + 7;
  poke_refcount(*dev, stray, 1);  // counted by nobody; its block's used_grains stays 1
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("refcount of grain {} is 1 but 0 references were found", stray)))
      << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems, fmt::format("block {} has used_grains 1 but 2 of its grains",
                                               sb.first_data_block)))
      << joined(n.problems);
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, WrongUsedGrainsInTheBlockTable) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  poke_block_entry(*dev, sb.first_data_block, format::BlockEntry{BlockState::kMeta, 5});
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("block table: block {} has used_grains 5 but 1 of its grains",
                                   sb.first_data_block)))
      << joined(n.problems);
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_EQ(block_entry(*dev, sb.first_data_block).used_grains, 1);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, FreeBlockHoldingMetadata) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  poke_block_entry(*dev, sb.first_data_block, format::BlockEntry{BlockState::kToFormatFree, 0});
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("block table: block {} is to-be-formatted but has "
                                               "1 grain in use",
                                               sb.first_data_block)))
      << joined(n.problems);
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  const auto e = block_entry(*dev, sb.first_data_block);
  EXPECT_EQ(e.state, BlockState::kMeta);
  EXPECT_EQ(e.used_grains, 1);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, LeakedEmptyBlockIsNotAProblemButIsReclaimed) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  const uint64_t b = sb.first_data_block + 3;
  poke_block_entry(*dev, b, format::BlockEntry{BlockState::kData, 0});
  EXPECT_CLEAN(check(*dev, false));  // an allocation a crash interrupted
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_TRUE(has_line(y.repairs, fmt::format("block {} set to to-be-formatted", b)))
      << joined(y.repairs);
  EXPECT_EQ(block_entry(*dev, b).state, BlockState::kToFormatFree);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, ReservedRegionMustStayReserved) {
  auto dev = fresh_device();
  poke_block_entry(*dev, 1, format::BlockEntry{BlockState::kFormattedFree, 0});
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, "block table: block 1 is formatted-free but should be reserved"))
      << joined(n.problems);
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, FormattedBlockHoldingData) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  const uint64_t b = sb.first_data_block + 5;
  std::vector<uint8_t> junk(kGrainBytes, 0xab);
  dev->poke(b * kBlockBytes + 17 * kGrainBytes, junk.data(), junk.size());
  auto n = check(*dev, false, /*full_zero=*/true);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("block {} is on the formatted list but holds data", b)))
      << joined(n.problems);
  auto y = check(*dev, true, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_EQ(block_entry(*dev, b).state, BlockState::kToFormatFree);
  EXPECT_CLEAN(check(*dev, false, true));
}

// A block taken for data whose allocation never committed: after a crash it is still
// on the formatted list but holds the uncommitted writes. Inside the allocation window
// that is expected (never readable; recovery formats the window again); past it, the
// allocator broke the window rule. A datastore without the window (made before it) may
// have such a block anywhere; -y moves all its formatted blocks and turns the window on.
TEST(Fsck, FormattedBlockHoldingDataAfterACrash) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant == 0 ? "inside the window" : variant == 1 ? "past it" : "no window");
    auto dev = fresh_device();
    auto sb = superblock(*dev);
    // vsfs-mkfs turns both on.
    ASSERT_EQ(sb.ro_compat, format::kRoCompatAllocWindow | format::kRoCompatSpaceSummary);
    const uint64_t b = sb.first_data_block + 1;
    sb.state = format::kStateMounted;  // not cleanly unmounted
    sb.alloc_window_end = variant == 0 ? static_cast<uint32_t>(b + 1) : 0;
    if (variant == 2) sb.ro_compat = 0;
    std::vector<uint8_t> raw(kGrainBytes);
    format::encode_superblock(sb, sb.generation, mg(raw));
    dev->poke(0, raw.data(), kGrainBytes);
    dev->poke(format::kSuperblockCopyGrain * kGrainBytes, raw.data(), kGrainBytes);
    std::vector<uint8_t> junk(kGrainBytes, 0xcd);
    dev->poke(b * kBlockBytes, junk.data(), junk.size());
    ASSERT_EQ(block_entry(*dev, b + 1).state, BlockState::kFormattedFree);
    auto n = check(*dev, false, true);
    if (variant == 1) {
      EXPECT_TRUE(has_line(n.problems,
                           fmt::format("block {} is on the formatted list but holds data (past "
                                       "the allocation window, which ended at block 0)",
                                       b)))
          << joined(n.problems);
    } else {
      EXPECT_CLEAN(n);
    }
    auto y = check(*dev, true, true);
    EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
    EXPECT_EQ(block_entry(*dev, b).state, BlockState::kToFormatFree);
    // Past the window a formatted block stays formatted; without one, all go.
    EXPECT_EQ(block_entry(*dev, b + 1).state,
              variant == 2 ? BlockState::kToFormatFree : BlockState::kFormattedFree);
    const auto after = superblock(*dev);
    EXPECT_TRUE(after.state & format::kStateClean);
    // -y turned them on.
    EXPECT_EQ(after.ro_compat, format::kRoCompatAllocWindow | format::kRoCompatSpaceSummary);
    EXPECT_EQ(has_line(y.repairs, "the allocation window is kept from now on"), variant == 2)
        << joined(y.repairs);
    EXPECT_EQ(has_line(y.repairs, "the space summary is kept from now on"), variant == 2)
        << joined(y.repairs);
    EXPECT_CLEAN(check(*dev, false, true));
  }
}

TEST(Fsck, BadCrcInTheInodeLeafIsReportedNotFatal) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  auto raw = peek_grain(*dev, sb.inode_root);
  raw[format::kHeaderBytes + format::kInodeBytes + format::kInoOffMtime] ^= 0xff;
  dev->poke(sb.inode_root * kGrainBytes, raw.data(), raw.size());
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("inode leaf at grain {}", sb.inode_root)))
      << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems, "crc")) << joined(n.problems);
  // The root directory lives in the unreadable leaf: no cascade of "missing" reports.
  EXPECT_EQ(n.problems.size(), 1u) << joined(n.problems);
  auto y = check(*dev, true);
  EXPECT_FALSE(y.problems.empty());
  // Nothing was "repaired" from an incomplete walk: the leaf keeps its reference.
  EXPECT_TRUE(y.repairs.empty()) << joined(y.repairs);
}

TEST(Fsck, DirectoryEntryNamingAMissingInode) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  // Hand-build a directory block for the root in the metadata block mkfs made:
  // grain +1 holds the directory block, grain +2 the root's one-leaf map.
  const uint64_t dir_grain = sb.inode_root + 1, map_grain = sb.inode_root + 2;
  std::vector<uint8_t> raw(kGrainBytes);
  format::DirBlock db;
  db.owner = kRootIno;
  db.entries.push_back(format::DirEntry{77, DT_REG, "ghost"});
  format::encode_dir_block(db, dir_grain, sb.generation, mg(raw));
  dev->poke(dir_grain * kGrainBytes, raw.data(), kGrainBytes);
  format::TreeNode leaf;
  leaf.type = format::BlockType::kMapLeaf;
  leaf.owner = kRootIno;
  leaf.slots[0] = format::Slot{dir_grain, format::SlotState::kMapped, sb.generation};
  format::encode_tree_node(leaf, map_grain, sb.generation, mg(raw));
  dev->poke(map_grain * kGrainBytes, raw.data(), kGrainBytes);
  auto il = root_leaf(*dev);
  il.inodes[kRootIno].map_root = map_grain;
  il.inodes[kRootIno].map_height = 1;
  il.inodes[kRootIno].allocated_grains = 1;
  il.inodes[kRootIno].size_bytes = kGrainBytes;
  poke_root_leaf(*dev, il);
  poke_refcount(*dev, dir_grain, 1);
  poke_refcount(*dev, map_grain, 1);
  poke_block_entry(*dev, sb.first_data_block, format::BlockEntry{BlockState::kMeta, 3});

  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, "directory 1: entry 'ghost' names inode 77, which does not exist"))
      << joined(n.problems);
  EXPECT_EQ(n.problems.size(), 1u) << joined(n.problems);
  EXPECT_EQ(n.tree_nodes, 2u);
}

TEST(Fsck, JournalTransactionsAreReplayed) {
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  auto il = root_leaf(*dev);
  il.inodes[kRootIno].mtime_ns = 123456789;
  std::vector<meta::JournalImage> images;
  {
    meta::JournalImage img;
    img.home = sb.inode_root;
    img.data = AlignedBuffer(kGrainBytes);
    format::encode_inode_leaf(il, sb.inode_root, sb.generation,
                              format::Grain(img.data.data(), kGrainBytes));
    images.push_back(std::move(img));
    meta::JournalImage sbi;
    sbi.home = 0;
    sbi.data = AlignedBuffer(kGrainBytes);
    auto s2 = sb;
    s2.state = 0;  // as a mounted engine would have it
    format::encode_superblock(s2, s2.generation, format::Grain(sbi.data.data(), kGrainBytes));
    images.push_back(std::move(sbi));
  }
  meta::Journal journal(*dev, sb.journal_start_grain, sb.journal_grains, sb.journal_tail_grain,
                        sb.journal_tail_seq);
  auto w = journal.write_transaction(images);
  ASSERT_TRUE(w.ok()) << w.error().to_string();
  const auto before = image(*dev);

  auto n = check(*dev, false);
  EXPECT_TRUE(n.replayed_journal);
  EXPECT_CLEAN(n);
  EXPECT_TRUE(image(*dev) == before) << "fsck -n wrote to the device";

  auto y = check(*dev, true);
  EXPECT_TRUE(y.replayed_journal);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  // Not closed cleanly, but the allocation window (empty: nothing was handed out) covers
  // no formatted block: nothing to repair.
  EXPECT_TRUE(y.repairs.empty()) << joined(y.repairs);
  EXPECT_EQ(root_leaf(*dev).inodes[kRootIno].mtime_ns, 123456789u);
  const auto after = superblock(*dev);
  EXPECT_NE(after.journal_tail_grain, sb.journal_tail_grain);
  EXPECT_EQ(after.journal_tail_seq, sb.journal_tail_seq + 1);
  EXPECT_TRUE(after.state & format::kStateClean);

  auto again = check(*dev, false);
  EXPECT_FALSE(again.replayed_journal);
  EXPECT_CLEAN(again);
}

TEST(Fsck, NoRepairChecksTheReplayedImage) {
  // The journal carries a damaged root (nlink 5): -n must see it though the device
  // itself still holds the good leaf.
  auto dev = fresh_device();
  const auto sb = superblock(*dev);
  auto il = root_leaf(*dev);
  il.inodes[kRootIno].nlink = 5;
  std::vector<meta::JournalImage> images(1);
  images[0].home = sb.inode_root;
  images[0].data = AlignedBuffer(kGrainBytes);
  format::encode_inode_leaf(il, sb.inode_root, sb.generation,
                            format::Grain(images[0].data.data(), kGrainBytes));
  meta::Journal journal(*dev, sb.journal_start_grain, sb.journal_grains, sb.journal_tail_grain,
                        sb.journal_tail_seq);
  ASSERT_TRUE(journal.write_transaction(images).ok());
  auto n = check(*dev, false);
  EXPECT_TRUE(n.replayed_journal);
  EXPECT_TRUE(has_line(n.problems, "inode 1: directory nlink is 5 but it has 0 subdirectories"))
      << joined(n.problems);
  EXPECT_EQ(root_leaf(*dev).inodes[kRootIno].nlink, 2u);
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_TRUE(has_line(y.repairs, "inode 1: nlink set to 2 (was 5)")) << joined(y.repairs);
  EXPECT_CLEAN(check(*dev, false));
}

TEST(Fsck, CorruptDecodesNeverCrash) {
  // Random bit flips over every metadata grain mkfs wrote: fsck answers, never aborts.
  auto base = fresh_device();
  const auto sb = superblock(*base);
  std::vector<uint64_t> grains = {0, format::kSuperblockCopyGrain, sb.inode_root,
                                  sb.block_table_start_grain,
                                  sb.refcount_start_grain +
                                      sb.inode_root / format::kGrainsPerRefcountGrain};
  std::mt19937 rng(42);
  for (uint64_t g : grains) {
    for (int i = 0; i < 20; ++i) {
      auto dev = base->clone();
      auto raw = peek_grain(*dev, g);
      raw[rng() % kGrainBytes] ^= static_cast<uint8_t>(1u << (rng() % 8));
      dev->poke(g * kGrainBytes, raw.data(), raw.size());
      FsckOptions o;
      o.repair = (i % 2) == 1;
      auto r = fsck(*dev, o);
      if (r.ok() && r->problems.empty() && !r->repairs.empty()) {
        EXPECT_CLEAN(check(*dev, false));  // what was repaired stays repaired
      }
    }
  }
}

// ---- datastores filled through the engine ----

OpenOptions engine_options(bool background = false) {
  OpenOptions o;
  o.start_background = background;
  return o;
}

struct Engine {
  std::unique_ptr<Datastore> ds;
  SimDevice* dev = nullptr;
};

Engine open_engine(std::unique_ptr<SimDevice> dev, bool background = false) {
  Engine e;
  e.dev = dev.get();
  auto r = Datastore::open(std::move(dev), engine_options(background));
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  if (r.ok()) e.ds = std::move(r).value();
  return e;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(FsckEngine, PopulatedDatastoreIsClean) {
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto& ds = *e.ds;
  auto vm1 = ds.mkdir(kRootIno, "vm1", 0755, 0, 0);
  ASSERT_TRUE(vm1.ok()) << vm1.error().to_string();
  auto vm2 = ds.mkdir(kRootIno, "vm2", 0755, 0, 0);
  ASSERT_TRUE(vm2.ok());
  auto sub = ds.mkdir(vm1->ino, "snapdir", 0700, 0, 0);
  ASSERT_TRUE(sub.ok());
  auto img = ds.create(vm1->ino, "vm1.img", 0644, 0, 0);
  ASSERT_TRUE(img.ok());
  auto data = pattern(3 * 1024 * 1024 + 777, 3);
  ASSERT_TRUE(ds.write_sync(img->ino, 4096 * 300, data.data(), data.size()).ok());
  // A write far out makes the map two levels deep.
  ASSERT_TRUE(ds.write_sync(img->ino, 5ull << 30, data.data(), 8192).ok());
  ASSERT_TRUE(ds.punch_hole_sync(img->ino, 4096 * 310, 4096 * 20).ok());
  for (int i = 0; i < 300; ++i) {  // several directory blocks
    auto f = ds.create(vm2->ino, fmt::format("file-with-a-long-name-{:04}", i), 0644, 0, 0);
    ASSERT_TRUE(f.ok()) << f.error().to_string();
    if (i % 50 == 0) {
      ASSERT_TRUE(ds.write_sync(f->ino, 0, data.data(), 4096 * 3).ok());
    }
  }
  for (int i = 0; i < 300; i += 3) {
    ASSERT_TRUE(ds.unlink(vm2->ino, fmt::format("file-with-a-long-name-{:04}", i)).ok());
  }
  ASSERT_TRUE(ds.rename(vm1->ino, "vm1.img", vm2->ino, "moved.img", RenameFlags::kNone).ok());
  ASSERT_TRUE(ds.fsync_sync(img->ino).ok());

  // Mid-life, after a commit but before a checkpoint: a crash image.
  auto crashed = e.dev->power_loss(device::PowerLossMode::kDropAll, 1);
  auto c = check(*crashed, false);
  EXPECT_TRUE(c.problems.empty()) << joined(c.problems);

  ASSERT_TRUE(ds.close().ok());
  auto r = check(*e.dev, false, true);
  EXPECT_CLEAN(r);
  EXPECT_EQ(r.dirs, 4u);
  EXPECT_EQ(r.files, 201u);
  EXPECT_GT(r.data_grains, 700u);

  // -y on a crash image replays the journal and leaves it clean.
  auto y = check(*crashed, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*crashed, false));
}

TEST(FsckEngine, ReleaseListAndOrphansAreLegal) {
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto& ds = *e.ds;
  auto data = pattern(2 * 1024 * 1024, 9);
  auto a = ds.create(kRootIno, "a.img", 0644, 0, 0);
  auto b = ds.create(kRootIno, "b.img", 0644, 0, 0);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(ds.write_sync(a->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(ds.write_sync(b->ino, 0, data.data(), data.size()).ok());
  // Unlinked and released: its map waits on the release list (no background releaser).
  ASSERT_TRUE(ds.unlink(kRootIno, "a.img").ok());
  // Unlinked while open: an orphan with nlink 0 when the datastore closes.
  ASSERT_TRUE(ds.open_ref(b->ino).ok());
  ASSERT_TRUE(ds.unlink(kRootIno, "b.img").ok());
  ASSERT_TRUE(ds.close().ok());
  auto sb = superblock(*e.dev);
  EXPECT_NE(sb.release_list, 0u);
  auto r = check(*e.dev, false);
  EXPECT_CLEAN(r);
  EXPECT_EQ(r.files, 1u);  // the orphan
}

TEST(FsckEngine, WrongNlinkIsRepaired) {
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto f = e.ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto il = root_leaf(*e.dev);
  ASSERT_EQ(il.inodes[f->ino].ino, f->ino);
  il.inodes[f->ino].nlink = 2;
  poke_root_leaf(*e.dev, il);
  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("inode {}: nlink is 2 but 1 directory entry names it",
                                               f->ino)))
      << joined(n.problems);
  auto y = check(*e.dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*e.dev, false));
  EXPECT_EQ(root_leaf(*e.dev).inodes[f->ino].nlink, 1u);
}

TEST(FsckEngine, DeletedInodeRecordLeavesADanglingEntry) {
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto f = e.ds->create(kRootIno, "gone.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto il = root_leaf(*e.dev);
  il.inodes[f->ino] = format::InodeRecord{};
  poke_root_leaf(*e.dev, il);
  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("directory 1: entry 'gone.img' names inode {}, which does not "
                                   "exist",
                                   f->ino)))
      << joined(n.problems);
  auto y = check(*e.dev, true);
  EXPECT_FALSE(y.problems.empty());  // fsck does not delete entries
}

TEST(FsckEngine, WrongAllocatedGrains) {
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto f = e.ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  auto data = pattern(5 * 4096, 1);
  ASSERT_TRUE(e.ds->write_sync(f->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto il = root_leaf(*e.dev);
  EXPECT_EQ(il.inodes[f->ino].allocated_grains, 5u);
  il.inodes[f->ino].allocated_grains = 9;
  poke_root_leaf(*e.dev, il);
  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("inode {}: allocated_grains is 9 but its map holds "
                                               "5 grains",
                                               f->ino)))
      << joined(n.problems);
  auto y = check(*e.dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*e.dev, false));
}

TEST(FsckEngine, DataGrainCountedTwiceIsReported) {
  // Point a second file's map at the first file's grain without raising its count.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto data = pattern(4096, 5);
  auto a = e.ds->create(kRootIno, "a", 0644, 0, 0);
  auto b = e.ds->create(kRootIno, "b", 0644, 0, 0);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(e.ds->write_sync(a->ino, 0, data.data(), 4096).ok());
  ASSERT_TRUE(e.ds->write_sync(b->ino, 0, data.data(), 4096).ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto il = root_leaf(*e.dev);
  const auto sb = superblock(*e.dev);
  auto read_leaf = [&](uint64_t g) {
    auto raw = peek_grain(*e.dev, g);
    auto n = format::decode_tree_node(cg(raw), g);
    EXPECT_TRUE(n.ok());
    return *n;
  };
  const uint64_t la = il.inodes[a->ino].map_root, lb = il.inodes[b->ino].map_root;
  auto na = read_leaf(la);
  auto nb = read_leaf(lb);
  const uint64_t grain_a = na.slots[0].grain;
  const uint64_t grain_b = nb.slots[0].grain;
  nb.slots[0].grain = grain_a;
  std::vector<uint8_t> raw(kGrainBytes);
  format::encode_tree_node(nb, lb, sb.generation, mg(raw));
  e.dev->poke(lb * kGrainBytes, raw.data(), kGrainBytes);
  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("refcount of grain {} is 1 but 2 references were found",
                                   grain_a)))
      << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems,
                       fmt::format("refcount of grain {} is 1 but 0 references were found",
                                   grain_b)))
      << joined(n.problems);
  auto y = check(*e.dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*e.dev, false));
}

}  // namespace
}  // namespace vsfs

namespace vsfs {
namespace {

// Seeded random namespace and data operations through the engine; at random points a
// power-loss image is taken. Every image, and the closed datastore, must check clean
// (fsck replays the journal, as a mount would).
// Rewrites both superblocks with `sb`.
void poke_superblocks(SimDevice& dev, const format::Superblock& sb) {
  std::vector<uint8_t> raw(kGrainBytes);
  format::encode_superblock(sb, sb.generation, mg(raw));
  dev.poke(0, raw.data(), kGrainBytes);
  dev.poke(format::kSuperblockCopyGrain * kGrainBytes, raw.data(), kGrainBytes);
}

std::unique_ptr<Datastore> reopen(SimDevice& dev) {
  auto r = Datastore::open(dev.clone(), engine_options());
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

TEST(FsckEngine, NextInoBeyondTheInodeTableIsRefusedAndRepaired) {
  // Opening used to visit every inode leaf number below next_ino (2^62 / 31 of them),
  // and fsck called the datastore clean.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto f = e.ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto sb = superblock(*e.dev);
  sb.next_ino = 1ull << 62;
  poke_superblocks(*e.dev, sb);

  auto refused = Datastore::open(e.dev->clone(), engine_options());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind, ErrorKind::kCorruption);
  EXPECT_NE(refused.error().message.find("next_ino 4611686018427387904"), std::string::npos)
      << refused.error().to_string();
  {
    OpenOptions ro = engine_options();  // nothing is handed out: a warning, and it opens
    ro.read_only = true;
    ro.mark_mounted = false;
    auto opened = Datastore::open(e.dev->clone(), ro);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    EXPECT_TRUE((*opened)->lookup(kRootIno, "disk.img").ok());
  }

  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems, "superblock: next_ino 4611686018427387904 is above the "
                                   "largest inode number"))
      << joined(n.problems);
  auto y = check(*e.dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*e.dev, false));
  EXPECT_EQ(superblock(*e.dev).next_ino, f->ino + 1);
  auto ds = reopen(*e.dev);
  ASSERT_TRUE(ds);
  EXPECT_TRUE(ds->lookup(kRootIno, "disk.img").ok());
}

TEST(FsckEngine, LargeNextInoOpensWithoutVisitingEveryLeaf) {
  // A large next_ino is legal (numbers are never reused); the open walks the leaves that
  // exist, not every number below it.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  ASSERT_TRUE(e.ds->create(kRootIno, "disk.img", 0644, 0, 0).ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto sb = superblock(*e.dev);
  sb.next_ino = 1ull << 40;
  poke_superblocks(*e.dev, sb);
  EXPECT_CLEAN(check(*e.dev, false));
  auto ds = reopen(*e.dev);
  ASSERT_TRUE(ds);
  auto g = ds->create(kRootIno, "next.img", 0644, 0, 0);
  ASSERT_TRUE(g.ok()) << g.error().to_string();
  EXPECT_EQ(g->ino, 1ull << 40);
  ASSERT_TRUE(ds->close().ok());
}

TEST(FsckEngine, InodeAboveNextInoIsRefused) {
  // An inode at or above next_ino would be handed out a second time.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto f = e.ds->create(kRootIno, "disk.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto sb = superblock(*e.dev);
  sb.next_ino = f->ino;
  poke_superblocks(*e.dev, sb);
  auto refused = Datastore::open(e.dev->clone(), engine_options());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("next_ino"), std::string::npos)
      << refused.error().to_string();
  EXPECT_TRUE(check(*e.dev, true).problems.empty());
  EXPECT_CLEAN(check(*e.dev, false));
  EXPECT_TRUE(reopen(*e.dev));
}

TEST(FsckEngine, DirectorySizeFarPastItsBlocks) {
  // The daemon used to size a directory's per-block bookkeeping from its recorded size
  // (here 2^38 blocks: an abort under ASan), and fsck accepted any size above its blocks.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto vm1 = e.ds->mkdir(kRootIno, "vm1", 0755, 0, 0);
  ASSERT_TRUE(vm1.ok());
  ASSERT_TRUE(e.ds->create(vm1->ino, "a.img", 0644, 0, 0).ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto il = root_leaf(*e.dev);
  ASSERT_EQ(il.inodes[vm1->ino].size_bytes, kGrainBytes);
  il.inodes[vm1->ino].size_bytes = 1ull << 50;
  poke_root_leaf(*e.dev, il);

  {
    auto ds = reopen(*e.dev);
    ASSERT_TRUE(ds);
    auto l = ds->lookup(vm1->ino, "a.img");
    ASSERT_FALSE(l.ok());
    EXPECT_EQ(l.error().kind, ErrorKind::kCorruption);
    EXPECT_NE(l.error().message.find(fmt::format("directory {}: size 1125899906842624 bytes",
                                                 vm1->ino)),
              std::string::npos)
        << l.error().to_string();
    EXPECT_TRUE(ds->lookup(kRootIno, "vm1").ok());  // the rest stays usable
  }
  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("inode {}: directory size is 1125899906842624 "
                                               "bytes, more than 252 blocks past its last "
                                               "directory block (0)",
                                               vm1->ino)))
      << joined(n.problems);
  auto y = check(*e.dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*e.dev, false));
  EXPECT_EQ(root_leaf(*e.dev).inodes[vm1->ino].size_bytes, kGrainBytes);
  auto ds = reopen(*e.dev);
  ASSERT_TRUE(ds);
  EXPECT_TRUE(ds->lookup(vm1->ino, "a.img").ok());
}

TEST(FsckEngine, DirectorySizeBelowItsBlocksIsRefusedByTheDaemon) {
  // Entries in blocks past the recorded size were silently invisible to the daemon.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto vm1 = e.ds->mkdir(kRootIno, "vm1", 0755, 0, 0);
  ASSERT_TRUE(vm1.ok());
  ASSERT_TRUE(e.ds->create(vm1->ino, "a.img", 0644, 0, 0).ok());
  ASSERT_TRUE(e.ds->close().ok());
  auto il = root_leaf(*e.dev);
  il.inodes[vm1->ino].size_bytes = 0;
  poke_root_leaf(*e.dev, il);
  {
    auto ds = reopen(*e.dev);
    ASSERT_TRUE(ds);
    auto l = ds->lookup(vm1->ino, "a.img");
    ASSERT_FALSE(l.ok());
    EXPECT_EQ(l.error().kind, ErrorKind::kCorruption) << l.error().to_string();
  }
  EXPECT_TRUE(check(*e.dev, true).problems.empty());
  EXPECT_CLEAN(check(*e.dev, false));
  auto ds = reopen(*e.dev);
  ASSERT_TRUE(ds);
  EXPECT_TRUE(ds->lookup(vm1->ino, "a.img").ok());
}

TEST(FsckEngine, LoopingReleaseListEndsInTheDaemonAndIsReported) {
  // Two release-list blocks naming each other: counting the pending trees (the stats
  // file) used to follow the chain forever.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  auto data = pattern(4096, 4);
  auto a = e.ds->create(kRootIno, "a.img", 0644, 0, 0);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(e.ds->write_sync(a->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(e.ds->unlink(kRootIno, "a.img").ok());  // no releaser: it waits on the list
  ASSERT_TRUE(e.ds->close().ok());
  const auto sb = superblock(*e.dev);
  ASSERT_NE(sb.release_list, 0u);
  auto raw = peek_grain(*e.dev, sb.release_list);
  auto list = format::decode_release_list(cg(raw), sb.release_list);
  ASSERT_TRUE(list.ok()) << list.error().to_string();
  // The second block sits in the last grain of the datastore, which nothing uses.
  const uint64_t other = sb.total_blocks * kGrainsPerBlock - 1;
  format::ReleaseList second = *list;
  second.next = sb.release_list;
  std::vector<uint8_t> out(kGrainBytes);
  format::encode_release_list(second, other, sb.generation, mg(out));
  e.dev->poke(other * kGrainBytes, out.data(), kGrainBytes);
  list->next = other;
  format::encode_release_list(*list, sb.release_list, sb.generation, mg(out));
  e.dev->poke(sb.release_list * kGrainBytes, out.data(), kGrainBytes);

  auto ds = reopen(*e.dev);
  ASSERT_TRUE(ds);
  EXPECT_GE(ds->stats().release_pending, 2u);
  auto n = check(*e.dev, false);
  EXPECT_TRUE(has_line(n.problems, "reached twice (a cycle)")) << joined(n.problems);
}

TEST(FsckEngine, ReadOnlyOpenSkipsADamagedInodeLeaf) {
  // One unreadable leaf of the inode table made every open fail, read-only too, so
  // nothing in the datastore could be read back.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  std::vector<Ino> inos;
  for (int i = 0; i < 40; ++i) {  // two inode leaves: 31 inodes each
    auto f = e.ds->create(kRootIno, fmt::format("f{}", i), 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    inos.push_back(f->ino);
  }
  ASSERT_TRUE(e.ds->close().ok());
  const auto sb = superblock(*e.dev);
  ASSERT_EQ(sb.inode_height, 2);
  auto root = format::decode_tree_node(cg(peek_grain(*e.dev, sb.inode_root)), sb.inode_root);
  ASSERT_TRUE(root.ok()) << root.error().to_string();
  ASSERT_EQ(root->slots[1].state, format::SlotState::kMapped);
  const uint64_t leaf = root->slots[1].grain;
  auto raw = peek_grain(*e.dev, leaf);
  raw[format::kHeaderBytes + 5] ^= 0x10;  // breaks the crc
  e.dev->poke(leaf * kGrainBytes, raw.data(), kGrainBytes);

  auto rw = Datastore::open(e.dev->clone(), engine_options());
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.error().kind, ErrorKind::kCorruption) << rw.error().to_string();
  OpenOptions ro = engine_options();
  ro.read_only = true;
  ro.mark_mounted = false;
  auto opened = Datastore::open(e.dev->clone(), ro);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& ds = **opened;
  EXPECT_TRUE(ds.lookup(kRootIno, "f0").ok());
  auto lost = ds.lookup(kRootIno, "f39");
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error().kind, ErrorKind::kCorruption) << lost.error().to_string();
  ASSERT_GE(inos.back(), 31u);
}

TEST(FsckEngine, ReadOnlyOpenWithADamagedSnapshotList) {
  // A snapshot list that fails its checksum made every open fail, read-only too.
  auto e = open_engine(fresh_device());
  ASSERT_TRUE(e.ds);
  ASSERT_TRUE(e.ds->create(kRootIno, "disk.img", 0644, 0, 0).ok());
  const Ino snapdir = (Ino{kSnapshotsDirView} << kViewShift) | kRootIno;
  ASSERT_TRUE(e.ds->mkdir(snapdir, "s1", 0755, 0, 0).ok());
  ASSERT_TRUE(e.ds->close().ok());
  const auto sb = superblock(*e.dev);
  ASSERT_NE(sb.snapshot_root, 0u);
  auto raw = peek_grain(*e.dev, sb.snapshot_root);
  raw[format::kHeaderBytes + 3] ^= 0x01;  // breaks the crc
  e.dev->poke(sb.snapshot_root * kGrainBytes, raw.data(), kGrainBytes);

  auto rw = Datastore::open(e.dev->clone(), engine_options());
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.error().kind, ErrorKind::kCorruption) << rw.error().to_string();
  OpenOptions ro = engine_options();
  ro.read_only = true;
  ro.mark_mounted = false;
  auto opened = Datastore::open(e.dev->clone(), ro);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  EXPECT_TRUE((*opened)->lookup(kRootIno, "disk.img").ok());
  EXPECT_TRUE((*opened)->snapshots().empty());
}

TEST(FsckEngine, RandomWorkloadCrashImagesAreClean) {
  // Two seeds by default: later seeds currently hang in the engine (a cache miss that
  // reads the device synchronously from the device's completion thread). More seeds:
  // VSFS_FSCK_SEEDS=N.
  const int seeds = std::getenv("VSFS_FSCK_SEEDS") ? std::atoi(std::getenv("VSFS_FSCK_SEEDS")) : 2;
  for (int seed = 1; seed <= seeds; ++seed) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    std::mt19937 rng(static_cast<uint32_t>(seed));
    auto e = open_engine(fresh_device(), /*background=*/true);
    ASSERT_TRUE(e.ds);
    auto& ds = *e.ds;
    std::vector<Ino> dirs{kRootIno};
    std::vector<std::pair<Ino, std::string>> files;  // (parent, name)
    std::vector<Ino> file_inos;
    auto data = pattern(256 * 1024, static_cast<uint32_t>(seed));
    for (int step = 0; step < 200; ++step) {
      const int op = static_cast<int>(rng() % 10);
      if (op == 0) {
        const Ino parent = dirs[rng() % dirs.size()];
        auto d = ds.mkdir(parent, fmt::format("d{}", step), 0755, 0, 0);
        ASSERT_TRUE(d.ok()) << d.error().to_string();
        dirs.push_back(d->ino);
      } else if (op <= 2 || files.empty()) {
        const Ino parent = dirs[rng() % dirs.size()];
        auto f = ds.create(parent, fmt::format("f{}", step), 0644, 0, 0);
        ASSERT_TRUE(f.ok()) << f.error().to_string();
        files.emplace_back(parent, fmt::format("f{}", step));
        file_inos.push_back(f->ino);
      } else if (op <= 6) {
        const size_t i = rng() % files.size();
        const uint64_t off = (rng() % 4096) * 4096 + (rng() % 2 ? rng() % 4096 : 0);
        const uint64_t len = 1 + rng() % data.size();
        auto w = ds.write_sync(file_inos[i], off, data.data(), len);
        ASSERT_TRUE(w.ok()) << w.error().to_string();
      } else if (op == 7) {
        const size_t i = rng() % files.size();
        auto p = ds.punch_hole_sync(file_inos[i], (rng() % 4096) * 4096, (1 + rng() % 600) * 4096);
        ASSERT_TRUE(p.ok()) << p.error().to_string();
      } else if (op == 8) {
        const size_t i = rng() % files.size();
        ASSERT_TRUE(ds.unlink(files[i].first, files[i].second).ok());
        files.erase(files.begin() + static_cast<long>(i));
        file_inos.erase(file_inos.begin() + static_cast<long>(i));
      } else {
        const size_t i = rng() % files.size();
        // Grain-aligned: truncating to a partial grain currently deadlocks in the engine
        // (zero_range calls its completion with the metadata mutex held).
        ASSERT_TRUE(ds.truncate_sync(file_inos[i], (rng() % 2048) * 4096).ok());
      }
      if (rng() % 16 == 0) {
        ASSERT_TRUE(ds.fsync_sync(kRootIno).ok());
      }
      if (rng() % 40 == 0) {
        auto img = e.dev->power_loss(device::PowerLossMode::kRandom, rng());
        auto r = check(*img, false);
        ASSERT_TRUE(r.problems.empty()) << "step " << step << "\n" << joined(r.problems);
      }
    }
    ASSERT_TRUE(ds.close().ok());
    auto r = check(*e.dev, false, true);
    EXPECT_CLEAN(r);
  }
}

// ---- lifetime counters in the superblock ----

// Both superblocks as vsfs wrote them before the lifetime counters: 208-byte payload.
void make_superblocks_short(SimDevice& dev) {
  for (uint64_t grain : {uint64_t{0}, format::kSuperblockCopyGrain}) {
    auto raw = peek_grain(dev, grain);
    ASSERT_EQ(load_le<uint32_t>(raw.data() + format::kOffLength), 288u);
    std::fill(raw.begin() + format::kSbPayloadEndShort, raw.begin() + format::kSbPayloadEnd, 0);
    store_le<uint32_t>(raw.data() + format::kOffLength,
                       format::kSbPayloadEndShort - format::kHeaderBytes);
    format::seal(mg(raw));
    dev.poke(grain * kGrainBytes, raw.data(), kGrainBytes);
  }
}

// fsck takes a superblock of either length as it is: neither is a problem, and fsck -n
// does not write. A read-write mount then stores the full payload, counting from zero.
TEST(FsckLifetime, ShortSuperblockIsClean) {
  auto dev = fresh_device();
  make_superblocks_short(*dev);
  auto before = image(*dev);
  EXPECT_CLEAN(check(*dev, false));
  EXPECT_TRUE(image(*dev) == before) << "fsck -n wrote to the device";
  EXPECT_CLEAN(check(*dev, true));
  EXPECT_EQ(superblock(*dev).lifetime, format::LifetimeCounters{});
  {
    auto ms = meta::MetaStore::open(*dev, meta::MetaOptions{});
    ASSERT_TRUE(ms.ok()) << ms.error().to_string();
    ASSERT_TRUE((*ms)->checkpoint(true).ok());
  }
  auto raw = peek_grain(*dev, 0);
  EXPECT_EQ(load_le<uint32_t>(raw.data() + format::kOffLength), 288u);
  EXPECT_EQ(superblock(*dev).lifetime.unclean_mounts, 0u);
  EXPECT_CLEAN(check(*dev, false));
}

// Repairs that rewrite the superblock keep the counters: the primary rebuilt from its
// copy, and a field repair (next_ino) that encodes the superblock afresh.
TEST(FsckLifetime, RepairsKeepTheCounters) {
  auto dev = fresh_device();
  auto sb = superblock(*dev);
  sb.lifetime = format::testing::sample_lifetime();
  std::vector<uint8_t> raw(kGrainBytes);
  format::encode_superblock(sb, sb.generation, mg(raw));
  dev->poke(format::kSuperblockCopyGrain * kGrainBytes, raw.data(), kGrainBytes);
  std::vector<uint8_t> junk(kGrainBytes, 0x5a);
  dev->poke(0, junk.data(), junk.size());
  auto y = check(*dev, true);
  EXPECT_TRUE(has_line(y.repairs, "primary superblock rewritten")) << joined(y.repairs);
  EXPECT_EQ(superblock(*dev).lifetime, format::testing::sample_lifetime());

  sb.next_ino = 1;  // inode 1 (the root) exists
  format::encode_superblock(sb, sb.generation, mg(raw));
  dev->poke(0, raw.data(), kGrainBytes);
  dev->poke(format::kSuperblockCopyGrain * kGrainBytes, raw.data(), kGrainBytes);
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, "next_ino")) << joined(n.problems);
  y = check(*dev, true);
  EXPECT_TRUE(has_line(y.repairs, "next_ino set to")) << joined(y.repairs);
  EXPECT_CLEAN(check(*dev, false));
  const auto fixed = superblock(*dev);
  EXPECT_EQ(fixed.next_ino, 2u);
  EXPECT_EQ(fixed.lifetime, format::testing::sample_lifetime());
  EXPECT_EQ(peek_grain(*dev, 0), peek_grain(*dev, format::kSuperblockCopyGrain));
}

// ---- what fsck reads and holds ----

// The summary grain's bit for block-table grain `i`, set or cleared and resealed.
void poke_summary_bit(SimDevice& dev, uint64_t i, bool on) {
  const auto sb = superblock(dev);
  const uint64_t self = format::space_summary_start(sb) + i / format::kGroupsPerSummaryGrain;
  auto raw = peek_grain(dev, self);
  auto s = format::decode_space_summary(cg(raw), self);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  s->set(i % format::kGroupsPerSummaryGrain, on);
  format::encode_space_summary(*s, self, sb.generation, mg(raw));
  dev.poke(self * kGrainBytes, raw.data(), kGrainBytes);
}

bool summary_bit(SimDevice& dev, uint64_t i) {
  const auto sb = superblock(dev);
  const uint64_t self = format::space_summary_start(sb) + i / format::kGroupsPerSummaryGrain;
  auto raw = peek_grain(dev, self);
  auto s = format::decode_space_summary(cg(raw), self);
  EXPECT_TRUE(s.ok()) << s.error().to_string();
  return s.ok() && s->test(i % format::kGroupsPerSummaryGrain);
}

// The same files on a datastore of 64 GiB and of 4 TiB (a sparse simulated device):
// fsck reads and holds what the metadata in use needs, plus a sample of the free space
// whose size is capped, not a share of the device. A 4 TiB device has 8 323 block-table
// grains, 520 000 refcount-table grains and 4 million storage blocks.
TEST(FsckScale, WhatFsckReadsAndHoldsFollowsTheDataNotTheDevice) {
  auto fill = [](uint64_t size_bytes) -> std::pair<FsckReport, format::Superblock> {
    auto e = open_engine(fresh_device(size_bytes));
    EXPECT_TRUE(e.ds);
    if (!e.ds) return {};
    auto& ds = *e.ds;
    auto dir = ds.mkdir(kRootIno, "vm", 0755, 0, 0);
    EXPECT_TRUE(dir.ok());
    auto img = ds.create(dir->ino, "disk.img", 0644, 0, 0);
    EXPECT_TRUE(img.ok());
    auto data = pattern(8ull << 20, 5);
    EXPECT_TRUE(ds.write_sync(img->ino, 0, data.data(), data.size()).ok());
    EXPECT_TRUE(ds.allocate_sync(img->ino, 1ull << 30, 64ull << 20).ok());
    for (int i = 0; i < 40; ++i) {
      auto f = ds.create(dir->ino, fmt::format("f{}", i), 0644, 0, 0);
      EXPECT_TRUE(f.ok());
      EXPECT_TRUE(ds.write_sync(f->ino, 0, data.data(), 3 * kGrainBytes).ok());
    }
    EXPECT_TRUE(ds.close().ok());
    auto r = check(*e.dev, false);
    EXPECT_CLEAN(r);
    return {r, superblock(*e.dev)};
  };
  const auto [small, small_sb] = fill(64ull << 30);
  const auto [big, big_sb] = fill(4ull << 40);
  ASSERT_EQ(big_sb.block_table_grains, 8323u);
  EXPECT_EQ(big.files, small.files);
  EXPECT_EQ(big.data_grains, small.data_grains);
  EXPECT_EQ(big.tree_nodes, small.tree_nodes);
  // The blocks the walk reached are the same, and nothing else is held per block.
  EXPECT_GT(small.blocks_tracked, 72u);
  EXPECT_EQ(big.blocks_tracked, small.blocks_tracked);
  EXPECT_LE(big.tracked_bytes, small.tracked_bytes + (32u << 10))
      << small.tracked_bytes << " bytes at 64 GiB";
  EXPECT_LT(big.tracked_bytes, 1u << 20);
  // Reads: the table grains of space in use and of the sample, at most 1024 of those;
  // refcount grains of the blocks in use, of the sample and of the next 1024 blocks to
  // be allocated; at most 1024 free blocks read for zeros.
  EXPECT_LE(big.table_grains_read, 1024u + 64u);
  EXPECT_LE(big.refcount_grains_read, small.refcount_grains_read + 256u)
      << small.refcount_grains_read << " at 64 GiB";
  EXPECT_LE(big.refcount_grains_read, 4096u);
  EXPECT_GT(big.blocks_zero_checked, 900u);
  EXPECT_LE(big.blocks_zero_checked, 1024u);
  EXPECT_LE(small.blocks_zero_checked, 1024u);
}

// A nonzero count on a grain of a formatted free block: the daemon, taking that block,
// would find the grain referenced already. fsck reads the refcounts of the blocks the
// allocator takes next, those of the sample (one block in 16 of the data area, from
// the first, on a device this small), and with -f every one.
TEST(Fsck, StaleCountsOverFreeSpaceAreFound) {
  auto dev = fresh_device(2ull << 30);  // 5 block-table grains, one marked
  const auto sb = superblock(*dev);
  ASSERT_TRUE(summary_bit(*dev, 0));
  ASSERT_FALSE(summary_bit(*dev, 2));
  const uint64_t next = sb.first_data_block + 1;    // after the first metadata block
  const uint64_t sampled = sb.first_data_block + 16 * 70;  // block-table grain 2
  const uint64_t elsewhere = sampled + 8;  // neither: its counts are in another grain
  ASSERT_EQ(sampled / format::kBlocksPerTableGrain, 2u);
  ASSERT_EQ(block_entry(*dev, next).state, BlockState::kFormattedFree);
  poke_refcount(*dev, next * kGrainsPerBlock, 1);
  poke_refcount(*dev, sampled * kGrainsPerBlock + 100, 3);
  poke_refcount(*dev, elsewhere * kGrainsPerBlock + 200, 2);
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("refcount of grain {} is 1 but 0 references",
                                               next * kGrainsPerBlock)))
      << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems, fmt::format("refcount of grain {} is 3 but 0 references",
                                               sampled * kGrainsPerBlock + 100)))
      << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems, fmt::format("block table: block {} has used_grains 0 but 1",
                                               sampled)))
      << joined(n.problems);
  auto f = check(*dev, false, /*full_zero=*/true);
  EXPECT_TRUE(has_line(f.problems, fmt::format("refcount of grain {} is 2 but 0 references",
                                               elsewhere * kGrainsPerBlock + 200)))
      << joined(f.problems);
  EXPECT_EQ(f.refcount_grains_read, sb.refcount_grains);
  auto y = check(*dev, true, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_CLEAN(check(*dev, false, true));
  // The daemon takes the block whose count was stale and writes there.
  auto e = open_engine(std::move(dev));
  ASSERT_TRUE(e.ds);
  auto file = e.ds->create(kRootIno, "a", 0644, 0, 0);
  ASSERT_TRUE(file.ok());
  auto data = pattern(2 * kBlockBytes, 1);
  ASSERT_TRUE(e.ds->write_sync(file->ino, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(e.ds->close().ok());
  EXPECT_CLEAN(check(*e.dev, false, true));
}

// The daemon never hands out a free block whose counts say it is in use (a stale count
// fsck has not repaired yet): it logs the damage, counts the block in the stats and takes
// another, where it used to stop on an assertion. Nothing is lost; fsck -y repairs.
TEST(Fsck, TheDaemonLeavesADamagedFreeBlockAlone) {
  auto dev = fresh_device(2ull << 30);
  const auto sb = superblock(*dev);
  const uint64_t next = sb.first_data_block + 1;  // the first block data is written to
  ASSERT_EQ(block_entry(*dev, next).state, BlockState::kFormattedFree);
  poke_refcount(*dev, next * kGrainsPerBlock + 7, 2);
  auto e = open_engine(std::move(dev));
  ASSERT_TRUE(e.ds);
  auto file = e.ds->create(kRootIno, "a", 0644, 0, 0);
  ASSERT_TRUE(file.ok());
  auto data = pattern(3 * kBlockBytes, 2);
  ASSERT_TRUE(e.ds->write_sync(file->ino, 0, data.data(), data.size()).ok());
  EXPECT_EQ(1u, e.ds->space().damaged_free_blocks);
  std::vector<uint8_t> back(data.size());
  ASSERT_TRUE(e.ds->read_sync(file->ino, 0, back.size(), back.data()).ok());
  EXPECT_EQ(data, back);
  ASSERT_TRUE(e.ds->close().ok());
  // The block was not used: its entry is as it was, and only the stale count is found.
  EXPECT_EQ(block_entry(*e.dev, next).state, BlockState::kFormattedFree);
  auto n = check(*e.dev, false, true);
  ASSERT_EQ(2u, n.problems.size()) << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems, fmt::format("refcount of grain {} is 2 but 0 references",
                                               next * kGrainsPerBlock + 7)))
      << joined(n.problems);
  EXPECT_TRUE(has_line(n.problems, fmt::format("block table: block {} has used_grains 0 but 1",
                                               next)))
      << joined(n.problems);
  check(*e.dev, true, true);
  EXPECT_CLEAN(check(*e.dev, false, true));
}

// A block that is not formatted free in a block-table grain whose summary bit is clear:
// a mount would take it for formatted free space. Found where fsck reads the grain (the
// sample reaches every grain of a device this small), and -y sets the bit.
TEST(Fsck, BlockInUseUnderAClearSummaryBit) {
  auto dev = fresh_device(2ull << 30);
  const auto sb = superblock(*dev);
  const uint64_t b = sb.first_data_block + 16 * 70 + 3;  // block-table grain 2, not sampled
  const uint64_t g = b / format::kBlocksPerTableGrain;
  ASSERT_EQ(g, 2u);
  poke_block_entry(*dev, b, format::BlockEntry{BlockState::kToFormatFree, 0});
  auto n = check(*dev, false);
  EXPECT_TRUE(has_line(n.problems, fmt::format("space summary: block-table grain {} describes "
                                               "blocks in use, but its bit is clear",
                                               g)))
      << joined(n.problems);
  EXPECT_FALSE(summary_bit(*dev, g));
  auto y = check(*dev, true);
  EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
  EXPECT_TRUE(has_line(y.repairs, "space summary rewritten")) << joined(y.repairs);
  EXPECT_TRUE(summary_bit(*dev, g));
  EXPECT_EQ(block_entry(*dev, b).state, BlockState::kToFormatFree);
  EXPECT_CLEAN(check(*dev, false));
}

// A clear bit over a block-table grain whose blocks hold metadata and data the walk
// reaches: reported by -n, the bit set again by -y.
TEST(Fsck, ClearSummaryBitOverBlocksInUseIsRepaired) {
  for (uint64_t g : {0u, 2u}) {
    SCOPED_TRACE(fmt::format("block-table grain {}", g));
    auto e = open_engine(fresh_device(8ull << 30));
    ASSERT_TRUE(e.ds);
    auto f = e.ds->create(kRootIno, "big", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(e.ds->allocate_sync(f->ino, 0, 1536ull << 20).ok());  // grains 0 to 3
    ASSERT_TRUE(e.ds->close().ok());
    EXPECT_CLEAN(check(*e.dev, false));
    ASSERT_TRUE(summary_bit(*e.dev, g));
    poke_summary_bit(*e.dev, g, false);
    auto n = check(*e.dev, false);
    EXPECT_TRUE(has_line(n.problems, fmt::format("space summary: block-table grain {} describes "
                                                 "blocks in use, but its bit is clear",
                                                 g)))
        << joined(n.problems);
    EXPECT_TRUE(has_line(n.problems, "space summary: 1 bit disagrees")) << joined(n.problems);
    auto y = check(*e.dev, true);
    EXPECT_TRUE(y.problems.empty()) << joined(y.problems);
    EXPECT_TRUE(has_line(y.repairs, "space summary rewritten from the block table"))
        << joined(y.repairs);
    EXPECT_TRUE(summary_bit(*e.dev, g));
    EXPECT_CLEAN(check(*e.dev, false));
  }
}

}  // namespace
}  // namespace vsfs
