// vsfs_fuzz_corpus DIR: writes the fuzzers' seed corpora, DIR/format, DIR/meta_cache
// and DIR/journal_replay, one file per seed. Every block seed is a valid block made by
// the encoders (once as it is, once with the harness's seal flag); the journal seeds
// are the ring of a datastore made by mkfs on an in-memory device after the journal
// wrote real transactions to it (from the tail, across the end of the ring, and with a
// torn last commit). Existing files of the same name are replaced.
#include <dirent.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "device/sim_device.h"
#include "format/format.h"
#include "fuzz_util.h"
#include "meta/journal.h"
#include "meta/meta_cache.h"
#include "util/aligned_buffer.h"
#include "vsfs/datastore.h"

namespace vsfs::fuzz {
namespace {

namespace fs = std::filesystem;
using namespace format;

constexpr uint64_t kSelf = 70000;  // a grain in the data area of a 1 GiB datastore
constexpr uint64_t kGeneration = 5;

void write_file(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  VSFS_FUZZ_CHECK(f.good(), "cannot write %s", path.c_str());
}

// A block seed, without the grain's trailing zeros.
std::vector<uint8_t> block_seed(uint8_t selector, uint8_t flags, const Buf& g) {
  size_t len = g.size();
  while (len > 0 && g[len - 1] == 0) --len;
  std::vector<uint8_t> out{selector, flags};
  out.insert(out.end(), g.begin(), g.begin() + len);
  return out;
}

struct NamedBlock {
  std::string name;
  FormatTarget target;
  Buf grain;
};

std::vector<NamedBlock> sample_blocks() {
  std::vector<NamedBlock> out;
  auto add = [&](std::string name, FormatTarget target, auto&& encode) {
    NamedBlock b{std::move(name), target, {}};
    encode(b.grain);
    out.push_back(std::move(b));
  };

  const uint64_t device_bytes = 1ull << 30;
  auto layout = compute_layout(device_bytes);
  VSFS_FUZZ_CHECK(layout.ok(), "layout: %s", layout.error().message.c_str());
  Superblock sb;
  sb.uuid = {1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16};
  sb.device_bytes = device_bytes;
  sb.total_blocks = layout->total_blocks;
  sb.journal_start_grain = layout->journal_start_grain;
  sb.journal_grains = layout->journal_grains;
  sb.block_table_start_grain = layout->block_table_start_grain;
  sb.block_table_grains = layout->block_table_grains;
  sb.refcount_start_grain = layout->refcount_start_grain;
  sb.refcount_grains = layout->refcount_grains;
  sb.first_data_block = layout->first_data_block;
  sb.inode_root = layout->first_data_block * kGrainsPerBlock;
  sb.inode_height = 1;
  sb.next_ino = 40;
  sb.generation = kGeneration;
  sb.journal_tail_grain = 12;
  sb.journal_tail_seq = 300;
  sb.release_list = sb.inode_root + 7;
  sb.snapshot_root = sb.inode_root + 8;
  sb.state = kStateMounted;
  sb.mount_count = 3;
  sb.mkfs_time_ns = 1'700'000'000'000'000'000ull;
  sb.lifetime.read_bytes = 5ull << 30;
  sb.lifetime.write_bytes = 3ull << 30;
  sb.lifetime.write_errors = 2;
  sb.lifetime.unclean_mounts = 1;
  sb.lifetime.snapshots_taken = 9;
  sb.lifetime.mounted_seconds = 3600;
  add("superblock", FormatTarget::kSuperblock,
      [&](Buf& g) { encode_superblock(sb, kGeneration, g); });
  // As vsfs wrote it before the lifetime counters: the short payload.
  add("superblock_short", FormatTarget::kSuperblock, [&](Buf& g) {
    Superblock old = sb;
    old.lifetime = LifetimeCounters{};
    encode_superblock(old, kGeneration, g);
    store_le<uint32_t>(g.data() + kOffLength, kSbPayloadEndShort - kHeaderBytes);
    seal(g);
  });

  // A datastore that grew twice (incompat bit 3): the payload lists the growths.
  add("superblock_grown", FormatTarget::kSuperblock, [&](Buf& g) {
    Superblock grown = grown_superblock(grown_superblock(sb, 3000), 70000);
    encode_superblock(grown, kGeneration, g);
  });

  TreeNode leaf;
  leaf.type = BlockType::kMapLeaf;
  leaf.owner = 17;
  leaf.slots[0] = Slot{kSelf + 1, SlotState::kMapped, 4};
  leaf.slots[1] = Slot{0, SlotState::kZero, 5};
  leaf.slots[251] = Slot{kSelf + 2, SlotState::kMapped, 1};
  add("map_leaf", FormatTarget::kTreeNode,
      [&](Buf& g) { encode_tree_node(leaf, kSelf, kGeneration, g); });
  TreeNode interior = leaf;
  interior.type = BlockType::kMapInterior;
  interior.level = 2;
  add("map_interior", FormatTarget::kTreeNode,
      [&](Buf& g) { encode_tree_node(interior, kSelf, kGeneration, g); });
  TreeNode inode_interior;
  inode_interior.type = BlockType::kInodeInterior;
  inode_interior.level = 1;
  inode_interior.slots[3] = Slot{kSelf + 9, SlotState::kMapped, 2};
  add("inode_interior", FormatTarget::kTreeNode,
      [&](Buf& g) { encode_tree_node(inode_interior, kSelf, kGeneration, g); });

  InodeLeaf inodes;
  inodes.first_ino = 31;
  inodes.inodes[0] = InodeRecord{.ino = 31, .mode = S_IFDIR | 0755, .uid = 1, .gid = 2,
                                 .nlink = 2, .size_bytes = 40, .atime_ns = 10,
                                 .mtime_ns = 11, .ctime_ns = 12, .map_root = kSelf + 3,
                                 .map_height = 1, .allocated_grains = 1, .btime_ns = 9,
                                 .parent = 1, .replaced_gen = 2};
  inodes.inodes[5] = InodeRecord{.ino = 36, .mode = S_IFREG | 0600, .nlink = 1,
                                 .size_bytes = 1ull << 40, .map_root = kSelf + 4,
                                 .map_height = 3, .allocated_grains = 100, .parent = 0};
  add("inode_leaf", FormatTarget::kInodeLeaf,
      [&](Buf& g) { encode_inode_leaf(inodes, kSelf, kGeneration, g); });

  DirBlock dir;
  dir.owner = 31;
  dir.entries = {{32, DT_DIR, "vm1"}, {36, DT_REG, "disk.img"}, {37, DT_REG, std::string(255, 'x')}};
  add("dir_block", FormatTarget::kDirBlock,
      [&](Buf& g) { encode_dir_block(dir, kSelf, kGeneration, g); });

  BlockTableGrain table;
  table.entries[0].state = BlockState::kReserved;
  table.entries[1] = BlockEntry{BlockState::kMeta, 3};
  table.entries[2] = BlockEntry{BlockState::kData, 256};
  table.entries[3].state = BlockState::kToFormatFree;
  add("block_table", FormatTarget::kBlockTable,
      [&](Buf& g) { encode_block_table(table, kSelf, kGeneration, g); });

  RefcountGrain refs;
  refs.counts[0] = 1;
  refs.counts[7] = 65535;
  refs.counts[2015] = 2;
  add("refcounts", FormatTarget::kRefcounts,
      [&](Buf& g) { encode_refcounts(refs, kSelf, kGeneration, g); });

  JournalDesc desc;
  desc.seq = 300;
  desc.last = true;
  desc.homes = {0, kSelf, kSelf + 1};
  add("journal_desc", FormatTarget::kJournalDesc,
      [&](Buf& g) { encode_journal_desc(desc, kSelf, g); });
  JournalCommit commit{.seq = 300, .grains = 4, .payload_crc = 0x12345678, .time_ns = 99};
  add("journal_commit", FormatTarget::kJournalCommit,
      [&](Buf& g) { encode_journal_commit(commit, kSelf, g); });

  ReleaseList rel;
  rel.next = kSelf + 20;
  rel.entries = {{kSelf + 5, 2, TreeKind::kFileMap, 36}, {kSelf + 6, 1, TreeKind::kInodeTable, 0}};
  add("release_list", FormatTarget::kReleaseList,
      [&](Buf& g) { encode_release_list(rel, kSelf, kGeneration, g); });

  SnapshotList snaps;
  snaps.records.push_back(SnapshotRecord{.change_id = 4, .created_ns = 5, .inode_root = kSelf + 30,
                                         .base_ino = 1, .next_ino = 40, .id = 1,
                                         .inode_height = 1, .flags = 0, .name = "nightly"});
  snaps.records.push_back(SnapshotRecord{.change_id = 2, .created_ns = 3, .base_ino = 31,
                                         .id = 2, .flags = kSnapDeleted, .name = "old"});
  add("snapshot_list", FormatTarget::kSnapshotList,
      [&](Buf& g) { encode_snapshot_list(snaps, kSelf, kGeneration, g); });

  InodeExtra extra;
  extra.target = "../images/base.img";
  extra.xattrs = {{"security.selinux", "system_u:object_r:svirt_image_t:s0"},
                  {"user.note", "golden"}};
  ExtraBlock eb{.owner = 36, .next = 0, .piece = encode_inode_extra(extra)};
  add("inode_extra", FormatTarget::kInodeExtra,
      [&](Buf& g) { encode_extra_block(eb, kSelf, kGeneration, g); });

  SpaceSummaryGrain summary;
  summary.set(0, true);
  summary.set(130, true);
  add("space_summary", FormatTarget::kSpaceSummary,
      [&](Buf& g) { encode_space_summary(summary, kSelf, kGeneration, g); });

  // The header decoder, on one block of each kind of header (owner, level).
  for (const char* from : {"map_interior", "dir_block"}) {
    for (const NamedBlock& b : std::vector<NamedBlock>(out)) {
      if (b.name == from) out.push_back(NamedBlock{"header_" + b.name, FormatTarget::kHeader, b.grain});
    }
  }
  return out;
}

// The meta cache harness's selector for a block's own type.
uint8_t cache_selector(const Buf& g) {
  return static_cast<uint8_t>(load_le<uint16_t>(g.data() + kOffType) - 1);
}

void write_block_corpora(const fs::path& dir) {
  fs::create_directories(dir / "format");
  fs::create_directories(dir / "meta_cache");
  for (const NamedBlock& b : sample_blocks()) {
    for (uint8_t flags : {uint8_t{0}, kFlagSeal}) {
      const std::string suffix = flags ? "_seal" : "";
      write_file(dir / "format" / (b.name + suffix),
                 block_seed(static_cast<uint8_t>(b.target), flags, b.grain));
      if (b.target != FormatTarget::kHeader) {
        write_file(dir / "meta_cache" / (b.name + suffix),
                   block_seed(cache_selector(b.grain), flags, b.grain));
      }
    }
  }
  // The empty reference count grain mkfs leaves.
  write_file(dir / "meta_cache" / "refcounts_zero",
             block_seed(static_cast<uint8_t>(BlockType::kRefcountTable) - 1, 0, Buf{}));
}

// ---- Journal ----

struct Made {
  std::unique_ptr<device::SimDevice> dev;
  Superblock sb;
};

Made make_datastore() {
  Made m;
  device::SimOptions o;
  o.size_bytes = kMinDeviceBytes;
  m.dev = std::make_unique<device::SimDevice>(o);
  auto made = mkfs(*m.dev, MkfsOptions{.journal_bytes = 4ull << 20, .force = true, .progress = {}});
  VSFS_FUZZ_CHECK(made.ok(), "mkfs: %s", made.error().message.c_str());
  alignas(8) Buf g{};
  m.dev->peek(0, g.data(), kGrainBytes);
  auto sb = decode_superblock(g);
  VSFS_FUZZ_CHECK(sb.ok(), "superblock: %s", sb.error().message.c_str());
  m.sb = *sb;
  return m;
}

meta::JournalImage image(uint64_t home, const Buf& g) {
  meta::JournalImage img;
  img.home = home;
  img.data = AlignedBuffer(kGrainBytes, false);
  std::memcpy(img.data.data(), g.data(), kGrainBytes);
  return img;
}

// Images of the datastore's own blocks as a transaction would change them.
std::vector<meta::JournalImage> images_of(const Made& m, uint64_t step, size_t count) {
  std::vector<meta::JournalImage> out;
  alignas(8) Buf g{};
  const uint64_t data_grain = m.sb.first_data_block * kGrainsPerBlock;
  for (size_t i = 0; i < count; ++i) {
    switch ((step + i) % 4) {
      case 0: {
        Superblock sb = m.sb;
        sb.next_ino += step + i;
        sb.state = kStateMounted;
        encode_superblock(sb, sb.generation, g);
        out.push_back(image(0, g));
        break;
      }
      case 1: {
        BlockTableGrain t;
        for (uint64_t b = 0; b < m.sb.first_data_block; ++b) t.entries[b].state = BlockState::kReserved;
        t.entries[m.sb.first_data_block] = BlockEntry{BlockState::kMeta, static_cast<uint16_t>(2 + i)};
        encode_block_table(t, m.sb.block_table_start_grain, 1, g);
        out.push_back(image(m.sb.block_table_start_grain, g));
        break;
      }
      case 2: {
        TreeNode n;
        n.owner = 1;
        n.slots[i] = Slot{data_grain + 10 + i, SlotState::kMapped, step};
        encode_tree_node(n, data_grain + 1 + i, 1, g);
        out.push_back(image(data_grain + 1 + i, g));
        break;
      }
      default: {
        DirBlock d;
        d.owner = 1;
        d.entries = {{2 + step, DT_REG, "disk" + std::to_string(step)}};
        encode_dir_block(d, data_grain + 2 + i, 1, g);
        out.push_back(image(data_grain + 2 + i, g));
        break;
      }
    }
  }
  return out;
}

// The input that replays the ring of `m` from (tail, seq): its non-zero grains as
// segments.
std::vector<uint8_t> replay_seed(const Made& m, uint8_t flags, uint8_t cut, uint64_t tail,
                                 uint32_t seq) {
  std::vector<uint8_t> out{flags, cut, static_cast<uint8_t>(tail), static_cast<uint8_t>(tail >> 8)};
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(seq >> (8 * i)));
  std::vector<Buf> run;
  uint64_t run_start = 0;
  alignas(8) Buf g{};
  auto flush_run = [&] {
    if (!run.empty()) append_replay_segment(out, static_cast<uint16_t>(run_start), run);
    run.clear();
  };
  for (uint64_t i = 0; i < m.sb.journal_grains; ++i) {
    m.dev->peek((m.sb.journal_start_grain + i) * kGrainBytes, g.data(), kGrainBytes);
    const bool zero = std::all_of(g.begin(), g.end(), [](uint8_t c) { return c == 0; });
    if (zero || run.size() == 255) flush_run();
    if (zero) continue;
    if (run.empty()) run_start = i;
    run.push_back(g);
  }
  flush_run();
  return out;
}

// The IOs one replay of `m` from (tail, seq) does: a seed's cut byte picks one of them.
uint8_t replay_ios(const Made& m, uint64_t tail, uint64_t seq) {
  auto dev = m.dev->clone();
  const uint64_t before = dev->io_count();
  auto r = meta::Journal::replay(*dev, m.sb.journal_start_grain, m.sb.journal_grains, tail, seq,
                                 true);
  VSFS_FUZZ_CHECK(r.ok(), "replay: %s", r.error().message.c_str());
  const uint64_t ios = dev->io_count() - before;
  VSFS_FUZZ_CHECK(ios >= 1 && ios <= 256, "replay did %llu IOs", static_cast<unsigned long long>(ios));
  return static_cast<uint8_t>(ios);
}

void write_journal_corpus(const fs::path& dir) {
  fs::create_directories(dir / "journal_replay");
  auto write_txns = [](Made& m, uint64_t tail, uint64_t seq, std::initializer_list<size_t> sizes) {
    meta::Journal j(*m.dev, m.sb.journal_start_grain, m.sb.journal_grains, tail, seq);
    uint64_t step = 0;
    for (size_t n : sizes) {
      auto imgs = images_of(m, step++, n);
      auto w = j.write_transaction(imgs);
      VSFS_FUZZ_CHECK(w.ok(), "journal write: %s", w.error().message.c_str());
    }
  };
  {
    Made m = make_datastore();
    write_txns(m, 0, 1, {3, 1, 4, 2});
    write_file(dir / "journal_replay" / "from_tail", replay_seed(m, 0, 3, 0, 1));
    write_file(dir / "journal_replay" / "from_tail_fix", replay_seed(m, kReplayFixRecords | 2, 9, 0, 1));
    write_file(dir / "journal_replay" / "from_tail_drop", replay_seed(m, 1, 20, 0, 1));
    // Cut at replay's last IO, its flush.
    write_file(dir / "journal_replay" / "from_tail_cut_flush",
               replay_seed(m, 0, static_cast<uint8_t>(replay_ios(m, 0, 1) - 1), 0, 1));
    // The same ring replayed from its second transaction.
    write_file(dir / "journal_replay" / "from_second", replay_seed(m, 0, 5, 5, 2));
    // A torn last commit: the log ends before it.
    alignas(8) Buf g{};
    const uint64_t last_commit = m.sb.journal_start_grain + 5 + 3 + 6 + 4 - 1;
    m.dev->peek(last_commit * kGrainBytes, g.data(), kGrainBytes);
    g[kHeaderBytes + 3] ^= 0x40;
    m.dev->poke(last_commit * kGrainBytes, g.data(), kGrainBytes);
    write_file(dir / "journal_replay" / "torn_commit", replay_seed(m, 2, 1, 0, 1));
  }
  {
    // A transaction that does not fit before the end of the ring starts at offset 0.
    Made m = make_datastore();
    const uint64_t tail = m.sb.journal_grains - 4;
    write_txns(m, tail, 1000, {1, 2, 1});
    write_file(dir / "journal_replay" / "wrap", replay_seed(m, 0, 7, tail, 1000));
    write_file(dir / "journal_replay" / "wrap_fix", replay_seed(m, kReplayFixRecords, 2, tail, 1000));
  }
}

}  // namespace
}  // namespace vsfs::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  vsfs::fuzz::write_block_corpora(argv[1]);
  vsfs::fuzz::write_journal_corpus(argv[1]);
  return 0;
}
