// vsfs::fsck: the independent checker of a datastore.
//
// fsck reads the raw on-disk structures through the format decoders and never uses
// MetaStore, so a bug in the runtime engine cannot hide itself. It works in passes:
//
//   1. superblock: the primary, else its copy (grain 255); with repair the damaged one is
//      rewritten from the good one;
//   2. journal: replayed first. With repair the images go to their homes and the
//      superblock's tail moves to the end of the log; without, they go to an in-memory
//      overlay of the device (OverlayDevice below) so the check sees the replayed image
//      while the device is never written;
//   3. a walk of everything reachable (inode table, every inode's map, directory blocks,
//      the release list and the trees it holds) counting references per grain and
//      recording what each grain is used as;
//   4. the block table, where the space summary says it describes space in use and
//      where the walk found references, and the summary against it;
//   5. the reference count table of those blocks, and the block table, against the
//      counts found;
//   6. formatted free blocks read as zeros: a bounded sample, the allocation window
//      after a crash, or every one;
//   7. the namespace (entries, link counts, parents, reachability, sizes);
//   8. with repair, what can be repaired safely is rewritten at its home and flushed.
//
// Reference counting: a tree node, directory block, inode leaf or release-list block
// gets one reference per parent slot (or root pointer, or release entry) that names it;
// a node reached twice is walked once, so a shared node's children are counted once for
// it. A data grain gets one reference per map leaf slot naming it. Reference counts are
// only repaired when the walk was complete: an unreadable node hides references, and
// lowering counts to what was seen would free grains still in use.
//
// Memory and time follow the metadata in use, not the size of the device. Per storage
// block the walk reached: two bits per grain (referenced once, more than once) and,
// where a grain of the block is metadata, a byte per grain for its role; an exact count
// per grain referenced more than once. Per block-table grain describing anything but
// fresh space: its 504 entries. Per block-table grain of the device: four bits. Besides
// those, the tree nodes, live inodes and directory entries, and the children of the
// nodes on the path the walk is on, read ahead together. What is read: the summary,
// the block-table and refcount-table grains of the space in use, and of a sample of the
// free space capped at kZeroSampleMax blocks (see pass 4); the whole tables only
// without a summary or with full_zero_check. Threading: fsck runs on the calling thread
// and does blocking IO; the device must not be in use by anyone else.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <bitset>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "device/device.h"
#include "format/format.h"
#include "meta/journal.h"
#include "util/aligned_buffer.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace vsfs {

namespace {

using format::BlockState;
using format::BlockType;
using format::ConstGrain;
using format::kGrainsPerRefcountGrain;
using format::kInodesPerLeaf;
using format::kTreeFanout;
using format::Slot;
using format::SlotState;
using format::TreeKind;

// ---- OverlayDevice -------------------------------------------------------------------

// A device that keeps writes in memory, grain by grain, and reads through to `base`
// for grains it has not been given. fsck -n replays the journal onto it so the check
// sees the replayed datastore while the real device stays untouched.
// Completions run inside submit(), on the caller's thread: the overlay is private to
// fsck, which only uses the blocking *_sync helpers on it. Not thread-safe.
class OverlayDevice final : public device::Device {
 public:
  explicit OverlayDevice(device::Device& base) : base_(base) {}

  uint64_t size_bytes() const override { return base_.size_bytes(); }
  uint32_t alignment_bytes() const override { return kGrainBytes; }
  bool discard_zeroes() const override { return true; }
  device::DeviceCounters counters() const override { return counters_; }
  std::string describe() const override { return "overlay on " + base_.describe(); }
  // Everything runs inline on the caller's thread already.
  bool in_completion_context() const override { return false; }
  int64_t execute_inline(const device::IoRequest& r) override { return run(r); }

  // Whether grain `g` was written here (else a read of it reads the base device).
  bool holds(uint64_t g) const { return grains_.count(g) != 0; }

  void submit(std::span<device::IoRequest> requests) override {
    for (auto& r : requests) {
      const int64_t res = run(r);
      if (res >= 0) {
        ++counters_.ops[static_cast<int>(r.kind)];
        counters_.bytes[static_cast<int>(r.kind)] += r.length_bytes;
      } else {
        ++counters_.errors;
      }
      if (r.done) r.done(res);
    }
  }

 private:
  int64_t run(const device::IoRequest& r) {
    if (r.kind == device::OpKind::kFlush) return 0;
    if (r.offset_bytes % kGrainBytes != 0 || r.length_bytes % kGrainBytes != 0 ||
        r.offset_bytes + r.length_bytes > size_bytes()) {
      return -EINVAL;
    }
    const uint64_t first = r.offset_bytes / kGrainBytes;
    const uint64_t count = r.length_bytes / kGrainBytes;
    switch (r.kind) {
      case device::OpKind::kRead: {
        AlignedBuffer buf(r.length_bytes, false);
        auto base_read = device::read_sync(base_, r.offset_bytes, buf.data(), r.length_bytes);
        if (!base_read.ok()) return -base_read.error().errno_value;
        for (uint64_t i = 0; i < count; ++i) {
          auto it = grains_.find(first + i);
          if (it != grains_.end()) {
            std::memcpy(buf.data() + i * kGrainBytes, it->second.data(), kGrainBytes);
          }
        }
        scatter(r, buf.data());
        return static_cast<int64_t>(r.length_bytes);
      }
      case device::OpKind::kWrite: {
        AlignedBuffer buf(r.length_bytes, false);
        gather(r, buf.data());
        for (uint64_t i = 0; i < count; ++i) {
          auto& g = grains_[first + i];
          g.assign(buf.data() + i * kGrainBytes, buf.data() + (i + 1) * kGrainBytes);
        }
        return static_cast<int64_t>(r.length_bytes);
      }
      case device::OpKind::kDiscard:
      case device::OpKind::kWriteZeroes:
        for (uint64_t i = 0; i < count; ++i) grains_[first + i].assign(kGrainBytes, 0);
        return static_cast<int64_t>(r.length_bytes);
      case device::OpKind::kFlush:
        return 0;
      case device::OpKind::kAllocate:  // the overlay is memory
        return static_cast<int64_t>(r.length_bytes);
    }
    return -EINVAL;
  }

  static void scatter(const device::IoRequest& r, const uint8_t* from) {
    uint64_t off = 0;
    for (int i = 0; i < r.iovcnt; ++i) {
      std::memcpy(r.iov[i].iov_base, from + off, r.iov[i].iov_len);
      off += r.iov[i].iov_len;
    }
  }
  static void gather(const device::IoRequest& r, uint8_t* to) {
    uint64_t off = 0;
    for (int i = 0; i < r.iovcnt; ++i) {
      std::memcpy(to + off, r.iov[i].iov_base, r.iov[i].iov_len);
      off += r.iov[i].iov_len;
    }
  }

  device::Device& base_;
  std::map<uint64_t, std::vector<uint8_t>> grains_;
  device::DeviceCounters counters_;
};

// ---- helpers -------------------------------------------------------------------------

uint64_t pow_fanout(unsigned e) {
  uint64_t v = 1;
  for (unsigned i = 0; i < e; ++i) v *= kTreeFanout;
  return v;
}

bool all_zero(const uint8_t* p, size_t n) {
  // Each byte equal to the next and the first zero: memcmp's wide loads do the work.
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

// What a grain was found to be used as. Metadata roles are the BlockType values.
constexpr uint8_t kRoleNone = 0;
constexpr uint8_t kRoleData = 0xff;

const char* role_name(uint8_t role) {
  if (role == kRoleNone) return "nothing";
  if (role == kRoleData) return "data grain";
  return format::block_type_name(static_cast<BlockType>(role));
}

// Problems are recorded with what would repair them, so a repair can retire them.
enum class Fix : uint8_t {
  kNone,        // not repairable by fsck
  kSuperblock,  // key 0: primary from copy; key 1: copy from primary; key 2: fields
  kRefcount,    // key: grain
  kBlock,       // key: storage block
  kBlockZero,   // key: storage block on the formatted list that is not zero
  kBlockGrain,  // key: index of a block-table grain that did not decode
  kInode,       // key: inode number
  kSummary,     // key: 0 (the space summary disagrees with the block table)
};

struct Problem {
  std::string text;
  Fix fix = Fix::kNone;
  uint64_t key = 0;
  bool repaired = false;
};

// Everything fsck learns about a tree node (or inode leaf) on its one visit.
struct NodeMemo {
  uint8_t level = 0;
  uint64_t key = 0;        // inode leaves: first_ino
  uint64_t max_stamp = 0;  // newest stamp in or below the node
  uint64_t mapped = 0;     // mapped leaf slots below (map trees)
  uint64_t extent = 0;     // highest mapped index + 1, relative to the node's first index
  bool complete = true;    // everything below decoded
  bool in_progress = true;
};

struct DirBlockSeen {
  uint64_t index = 0;  // directory block number inside the directory
  uint64_t grain = 0;
};

struct LiveInode {
  format::InodeRecord rec;
  uint64_t leaf_grain = 0;
  uint64_t mapped = 0;
  uint64_t extent = 0;
  bool map_complete = true;
  std::vector<DirBlockSeen> dir_blocks;  // directories only
};

enum class RefResult { kFirst, kSeen, kConflict, kBad };

class Checker {
 public:
  Checker(device::Device& real, const FsckOptions& options)
      : real_(real), options_(options), overlay_(real) {}

  Result<FsckReport> run();

 private:
  // The device every read goes through: the overlay without repair, else the device.
  device::Device& io() { return options_.repair ? real_ : overlay_; }

  // Progress (FsckOptions::progress): a pass begins, goes on, ends.
  void begin_pass(const char* name, uint64_t total) {
    progress_.pass += 1;
    progress_.passes = options_.repair ? 8 : 7;
    progress_.name = name;
    progress_.done = 0;
    progress_.total = total;
    if (options_.progress) options_.progress(progress_);
  }
  void tick(uint64_t done) {
    constexpr uint64_t kEvery = 4096;
    const bool report = done / kEvery != progress_.done / kEvery;
    progress_.done = done;
    if (report && options_.progress) options_.progress(progress_);
  }
  void end_pass() {
    if (progress_.total != 0) progress_.done = progress_.total;
    if (progress_.total == 0) progress_.total = progress_.done;
    if (options_.progress) options_.progress(progress_);
  }

  void problem(Fix fix, uint64_t key, std::string text) {
    problems_.push_back(Problem{std::move(text), fix, key, false});
  }
  // Marks the problems a repair fixed; repaired() also records the repair.
  void retire(Fix fix, uint64_t key) {
    for (auto& p : problems_) {
      if (p.fix == fix && p.key == key) p.repaired = true;
    }
  }
  void repaired(Fix fix, uint64_t key, std::string text) {
    retire(fix, key);
    report_.repairs.push_back(std::move(text));
  }

  Result<void> read_grain(uint64_t grain, AlignedBuffer& buf) {
    if (auto it = prefetched_.find(grain); it != prefetched_.end()) {
      std::memcpy(buf.data(), it->second.data(), kGrainBytes);
      prefetched_.erase(it);
      return ok_result();
    }
    return device::read_sync(io(), grain * kGrainBytes, buf.data(), kGrainBytes);
  }
  // Reads these grains of the data area all at once, for read_grain to take: the walk
  // fetches a node's children together rather than waiting for each in turn. A read
  // that fails is left for read_grain to do again and report.
  void prefetch(const std::vector<uint64_t>& wanted);
  void drop_prefetched(const std::vector<uint64_t>& grains) {
    for (uint64_t g : grains) prefetched_.erase(g);
  }
  Result<void> write_grain(uint64_t grain, const AlignedBuffer& buf) {
    return device::write_sync(real_, grain * kGrainBytes, buf.data(), kGrainBytes);
  }
  static ConstGrain cg(const AlignedBuffer& b) { return ConstGrain(b.data(), kGrainBytes); }

  // passes
  Result<void> load_superblock();
  Result<void> replay_journal();
  Result<void> walk();
  Result<void> read_space_summary();
  Result<void> read_block_table();
  // Reads the block-table grains of these groups (sorted, distinct), keeping what
  // is not fresh.
  Result<void> read_groups(const std::vector<uint64_t>& groups);
  Result<void> check_refcounts();
  void check_blocks();
  Result<void> check_namespace();
  Result<void> zero_check();
  void check_space_summary();
  Result<void> repair_block_table();
  Result<void> repair_inodes();
  // Writes the space summary from grain_in_use_ (every grain of it).
  Result<void> write_space_summary();
  Result<void> write_superblocks(const format::Superblock& sb);

  // the walk
  RefResult add_ref(uint64_t grain, uint8_t role, const std::string& from);
  Result<NodeMemo> map_node(uint64_t grain, int level, TreeKind kind, uint64_t owner,
                            uint64_t base, LiveInode* live, bool count, const std::string& who);
  Result<NodeMemo> inode_node(uint64_t grain, int level, uint64_t base_leaf, bool live,
                              bool count, const std::string& who);
  Result<void> inode_leaf(uint64_t grain, uint64_t leaf_no, bool live, bool count,
                          NodeMemo& memo, const std::string& table);
  Result<void> walk_map_root(uint64_t root, uint8_t height, TreeKind kind, uint64_t owner,
                             LiveInode* live, const std::string& who);
  Result<void> walk_inode_root(uint64_t root, uint8_t height, bool live, const std::string& who);
  Result<void> walk_extra(const format::InodeRecord& r, const std::string& who);
  Result<void> walk_release_list();
  Result<void> walk_snapshot_list();
  template <typename Decode, typename Visit>
  Result<void> walk_chain(uint64_t first, BlockType type, const char* what, std::string from,
                          Decode decode, Visit visit);

  // Grains a map or list may point at: in the data area, outside growth regions.
  bool in_data_area(uint64_t grain) const {
    return grain >= data_start_grain_ && grain < total_grains_ &&
           !format::reserved_block(sb_, grain / kGrainsPerBlock);
  }

  // Where the tables live. Every address of a block-table, refcount-table or summary
  // grain is computed here, and every multi-grain read of them goes through
  // read_indexed(): the grains a growth appended live in its region (format::Growth).
  uint64_t table_grain(uint64_t i) const {
    return format::table_grain(sb_, format::Table::kBlockTable, i);
  }
  uint64_t refcount_grain(uint64_t i) const {
    return format::table_grain(sb_, format::Table::kRefcount, i);
  }
  uint64_t summary_grain(uint64_t k) const {
    return format::table_grain(sb_, format::Table::kSpaceSummary, k);
  }
  uint64_t table_grains() const { return sb_.block_table_grains; }
  uint64_t refcount_grains() const { return sb_.refcount_grains; }
  // In a fixed region or a growth region: reserved in the block table.
  bool fixed_block(uint64_t b) const { return format::reserved_block(sb_, b); }
  static uint64_t group_of(uint64_t b) { return b / format::kBlocksPerTableGrain; }
  // After a crash, the groups of the allocation window's blocks (those that may hold
  // data from writes the crash cut short) go to `groups` too.
  void add_window_groups(std::vector<uint64_t>& groups) const {
    const uint64_t window_end = std::min<uint64_t>(sb_.alloc_window_end, sb_.total_blocks);
    if (!crashed_ || window_end <= sb_.first_data_block) return;
    for (uint64_t g = group_of(sb_.first_data_block); g <= group_of(window_end - 1); ++g) {
      groups.push_back(g);
    }
  }
  // The refcount-table grains holding the counts of block b's grains.
  static std::pair<uint64_t, uint64_t> refcount_grains_of(uint64_t b) {
    return {b * kGrainsPerBlock / kGrainsPerRefcountGrain,
            ((b + 1) * kGrainsPerBlock - 1) / kGrainsPerRefcountGrain};
  }
  // Reads the grains where(i) for the sorted, distinct indexes, as few large reads as
  // their adjacency allows, and hands each to visit(i, bytes).
  template <typename Where, typename Visit>
  Result<void> read_indexed(const std::vector<uint64_t>& indexes, Where where, Visit visit);

  device::Device& real_;
  FsckOptions options_;
  OverlayDevice overlay_;
  // Grains read ahead by prefetch(): at most a node's children for each level of the
  // path the walk is on.
  std::unordered_map<uint64_t, AlignedBuffer> prefetched_;
  FsckReport report_;
  FsckProgress progress_;
  std::vector<Problem> problems_;

  format::Superblock sb_;
  bool allocated_without_bit_ = false;  // reported once
  AlignedBuffer sb_raw_{kGrainBytes};  // the superblock grain in use (primary or copy)
  uint64_t total_grains_ = 0;
  uint64_t data_start_grain_ = 0;

  // References found by the walk, only for the storage blocks it reached: which grains
  // are referenced once, which more (their counts in multi_), and, once a grain of the
  // block is referenced as metadata, the role of each (data grains need none).
  struct BlockRefs {
    std::bitset<kGrainsPerBlock> once;
    std::bitset<kGrainsPerBlock> more;
    std::unique_ptr<std::array<uint8_t, kGrainsPerBlock>> roles;  // kRole* or BlockType
  };
  std::unordered_map<uint64_t, BlockRefs> refs_;   // by storage block
  std::unordered_map<uint64_t, uint32_t> multi_;   // grain -> references, when 2 or more
  uint64_t role_arrays_ = 0;
  const BlockRefs* refs_of(uint64_t b) const {
    auto it = refs_.find(b);
    return it == refs_.end() ? nullptr : &it->second;
  }
  uint32_t refs(uint64_t grain) const {
    const BlockRefs* r = refs_of(grain / kGrainsPerBlock);
    if (r == nullptr) return 0;
    const size_t i = grain % kGrainsPerBlock;
    if (r->once[i]) return 1;
    if (!r->more[i]) return 0;
    return multi_.at(grain);
  }
  static uint8_t role_in(const BlockRefs& r, size_t i) {
    if (!r.once[i] && !r.more[i]) return kRoleNone;
    return r.roles ? (*r.roles)[i] : kRoleData;
  }
  // Referenced grains of block b: all, as data, as metadata.
  struct BlockUse {
    uint64_t referenced = 0, data = 0, meta = 0;
  };
  BlockUse use_of(uint64_t b) const {
    BlockUse u;
    const BlockRefs* r = refs_of(b);
    if (r == nullptr) return u;
    for (size_t i = 0; i < kGrainsPerBlock; ++i) {
      const uint8_t role = role_in(*r, i);
      if (role == kRoleNone) continue;
      ++u.referenced;
      ++(role == kRoleData ? u.data : u.meta);
    }
    return u;
  }

  std::unordered_map<uint64_t, NodeMemo> memo_;
  std::map<uint64_t, LiveInode> live_;            // the live inode table, by inode number
  std::unordered_map<uint64_t, format::DirBlock> dir_blocks_;  // live directories' blocks
  bool walk_complete_ = true;
  // Ranges of live inode-table leaf numbers (first, count) that could not be read.
  std::vector<std::pair<uint64_t, uint64_t>> unreadable_;
  bool inode_unknown(uint64_t ino) const {
    const uint64_t leaf = ino / kInodesPerLeaf;
    for (const auto& [first, n] : unreadable_) {
      if (leaf >= first && leaf - first < n) return true;
    }
    return false;
  }

  // The block table as found. A group is the blocks one table grain describes. Only the
  // groups that hold an entry other than a fresh datastore's (reserved in the fixed
  // regions, formatted free with no grain in use elsewhere) are kept; a group read and
  // not kept, or not read at all (its summary bit clear), reads as that.
  using GroupEntries = std::array<format::BlockEntry, format::kBlocksPerTableGrain>;
  std::unordered_map<uint64_t, GroupEntries> groups_;
  format::BlockEntry pristine(uint64_t b) const {
    return b < sb_.total_blocks && fixed_block(b) ? format::BlockEntry{BlockState::kReserved, 0}
                                                  : format::BlockEntry{};
  }
  format::BlockEntry entry(uint64_t b) const {
    auto it = groups_.find(group_of(b));
    return it == groups_.end() ? pristine(b) : it->second[b % format::kBlocksPerTableGrain];
  }
  std::vector<bool> summary_bit_;          // per block-table grain, as the summary says
  std::vector<bool> summary_ok_;           // per summary grain: decoded
  uint64_t summary_wrong_ = 0;             // bits set past the last block-table grain
  uint64_t summary_first_wrong_ = 0;
  std::vector<bool> table_read_;           // per block-table grain: read
  std::vector<bool> block_grain_ok_;       // per block-table grain: decoded (or not read)
  std::vector<uint64_t> bad_groups_;       // block-table grains that did not decode
  // Per block-table grain: describes a block not formatted free (what its bit in the
  // space summary must say); for a grain not read, what the summary says; after
  // repairs, as repaired.
  std::vector<bool> grain_in_use_;
  // Formatted free blocks read for the zero check and whose refcounts are read though
  // nothing else asks for them: a sample spread over the device, and the first ones
  // the allocator will take.
  std::vector<uint64_t> sample_;
  uint64_t ahead_end_ = 0;                 // the block after the last of the latter

  // The refcount table, where read: per refcount-table grain read, whether it decoded
  // (or was all zero); per block, its grains with a nonzero count (blocks with none
  // are left out).
  std::unordered_map<uint64_t, bool> refcount_read_;
  std::unordered_map<uint64_t, uint16_t> table_used_;
  bool refcounts_known(uint64_t b) const {
    const auto [lo, hi] = refcount_grains_of(b);
    auto a = refcount_read_.find(lo), z = refcount_read_.find(hi);
    return a != refcount_read_.end() && a->second && z != refcount_read_.end() && z->second;
  }
  std::set<uint64_t> not_zero_;            // formatted-free blocks found holding data
  // The datastore was not cleanly unmounted (or its journal held transactions).
  bool crashed_ = false;
  bool window_on() const { return (sb_.ro_compat & format::kRoCompatAllocWindow) != 0; }
  // Whether formatted free block `b` may hold data from writes a crash cut short: after
  // a crash, one below the allocation window's end (all of them without the window).
  bool in_crash_window(uint64_t b) const {
    return crashed_ && (!window_on() || b < sb_.alloc_window_end);
  }
  uint64_t crash_residue_ = 0;  // formatted blocks holding data from unfinished allocations
  uint64_t orphans_ = 0;
  // The memory the structures above hold per block and per grain, for FsckReport.
  uint64_t tracked_bytes() const;
};

void Checker::prefetch(const std::vector<uint64_t>& wanted) {
  // The overlay reads one grain at a time: the grains it does not hold come from the
  // device underneath, which takes them all at once.
  device::Device& dev = real_;
  std::vector<uint64_t> grains;
  for (uint64_t g : wanted) {
    if (options_.repair || !overlay_.holds(g)) grains.push_back(g);
  }
  // A device whose completions run only when its caller drives them reads one by one.
  if (grains.size() < 2 || dev.in_completion_context()) return;
  struct Read {
    AlignedBuffer buf{kGrainBytes, false};
    iovec iov{};
    int64_t result = -EIO;
  };
  std::vector<Read> reads(grains.size());
  std::vector<device::IoRequest> requests(grains.size());
  std::mutex mu;
  std::condition_variable all_done;
  size_t left = grains.size();
  for (size_t i = 0; i < grains.size(); ++i) {
    reads[i].iov = iovec{reads[i].buf.data(), kGrainBytes};
    device::IoRequest& r = requests[i];
    r.kind = device::OpKind::kRead;
    r.offset_bytes = grains[i] * kGrainBytes;
    r.length_bytes = kGrainBytes;
    r.iov = &reads[i].iov;
    r.iovcnt = 1;
    r.done = [&, i](int64_t result) {
      std::lock_guard lock(mu);
      reads[i].result = result;
      if (--left == 0) all_done.notify_all();
    };
  }
  dev.submit(requests);
  {
    std::unique_lock lock(mu);
    all_done.wait(lock, [&] { return left == 0; });
  }
  for (size_t i = 0; i < grains.size(); ++i) {
    if (reads[i].result == static_cast<int64_t>(kGrainBytes)) {
      prefetched_.insert_or_assign(grains[i], std::move(reads[i].buf));
    }
  }
}

// ---- pass 1: superblock --------------------------------------------------------------

Result<void> Checker::write_superblocks(const format::Superblock& sb) {
  AlignedBuffer buf(kGrainBytes);
  format::encode_superblock(sb, sb.generation, format::Grain(buf.data(), kGrainBytes));
  VSFS_TRY(write_grain(0, buf));
  VSFS_TRY(write_grain(format::kSuperblockCopyGrain, buf));
  VSFS_TRY(device::flush_sync(real_));
  std::memcpy(sb_raw_.data(), buf.data(), kGrainBytes);
  return ok_result();
}

Result<void> Checker::load_superblock() {
  VSFS_TRY(format::check_device_size(real_.size_bytes()));
  AlignedBuffer primary(kGrainBytes, false), copy(kGrainBytes, false);
  VSFS_TRY(read_grain(0, primary));
  VSFS_TRY(read_grain(format::kSuperblockCopyGrain, copy));
  auto p = format::decode_superblock(cg(primary));
  auto c = format::decode_superblock(cg(copy));
  if (!p.ok() && p.error().kind == ErrorKind::kUnsupported) return p.take_error();
  if (!p.ok() && !c.ok()) {
    if (c.error().kind == ErrorKind::kUnsupported) return c.take_error();
    return make_error(EUCLEAN, ErrorKind::kCorruption,
                      "no valid superblock (primary: {}; copy: {})", p.error().message,
                      c.error().message);
  }
  if (p.ok()) {
    sb_ = *p;
    std::memcpy(sb_raw_.data(), primary.data(), kGrainBytes);
    bool copy_bad = false;
    if (!c.ok()) {
      copy_bad = true;
      problem(Fix::kSuperblock, 1, fmt::format("superblock copy (grain {}): {}",
                                               format::kSuperblockCopyGrain, c.error().message));
    } else if (std::memcmp(primary.data(), copy.data(), kGrainBytes) != 0) {
      // Every update writes the copy, flushes, then writes the primary: a power cut in
      // between leaves a valid copy one update ahead of a valid primary, and the primary
      // is the state to use. A copy of another datastore or geometry is damage.
      const format::Superblock& o = *c;
      if (o.uuid != sb_.uuid || o.device_bytes != sb_.device_bytes ||
          o.total_blocks != sb_.total_blocks || o.journal_start_grain != sb_.journal_start_grain ||
          o.journal_grains != sb_.journal_grains || o.first_data_block != sb_.first_data_block) {
        copy_bad = true;
        problem(Fix::kSuperblock, 1,
                fmt::format("superblock copy (grain {}) describes another datastore or "
                            "geometry than the primary",
                            format::kSuperblockCopyGrain));
      } else {
        VSFS_LOG_INFO("superblock copy is one update ahead of the primary (a power cut "
                      "during an update); the primary is used{}",
                      options_.repair ? " and copied over it" : "");
        copy_bad = options_.repair;
        if (copy_bad) {
          VSFS_TRY(write_grain(format::kSuperblockCopyGrain, primary));
          VSFS_TRY(device::flush_sync(real_));
          copy_bad = false;
        }
      }
    }
    if (copy_bad && options_.repair) {
      VSFS_TRY(write_grain(format::kSuperblockCopyGrain, primary));
      VSFS_TRY(device::flush_sync(real_));
      repaired(Fix::kSuperblock, 1, "superblock copy rewritten from the primary");
    }
  } else {
    sb_ = *c;
    std::memcpy(sb_raw_.data(), copy.data(), kGrainBytes);
    problem(Fix::kSuperblock, 0, fmt::format("primary superblock: {}", p.error().message));
    if (options_.repair) {
      VSFS_TRY(write_grain(0, copy));
      VSFS_TRY(device::flush_sync(real_));
      repaired(Fix::kSuperblock, 0, "primary superblock rewritten from its copy");
    }
  }
  if (sb_.device_bytes > real_.size_bytes()) {
    return make_error(EINVAL, ErrorKind::kCorruption,
                      "the datastore is {} bytes but the device only {}", sb_.device_bytes,
                      real_.size_bytes());
  }
  total_grains_ = sb_.total_blocks * kGrainsPerBlock;
  data_start_grain_ = sb_.first_data_block * kGrainsPerBlock;
  crashed_ = (sb_.state & format::kStateClean) == 0;
  return ok_result();
}

// ---- pass 2: journal -----------------------------------------------------------------

Result<void> Checker::replay_journal() {
  VSFS_ASSIGN_OR_RETURN(meta::ReplayResult r,
                        meta::Journal::replay(io(), sb_.journal_start_grain, sb_.journal_grains,
                                              sb_.journal_tail_grain, sb_.journal_tail_seq,
                                              true));
  if (r.transactions == 0) return ok_result();
  report_.replayed_journal = true;
  crashed_ = true;
  if (!options_.repair) {
    VSFS_LOG_INFO("journal holds {} committed transaction{} not yet applied; checking the "
                  "datastore as replayed, in memory (the device is not written)",
                  r.transactions, r.transactions == 1 ? "" : "s");
  }
  // The log may have carried a newer superblock (home 0, also written to its copy).
  AlignedBuffer buf(kGrainBytes, false);
  VSFS_TRY(read_grain(0, buf));
  auto replayed = format::decode_superblock(cg(buf));
  if (!replayed.ok()) {
    return make_error(EUCLEAN, ErrorKind::kCorruption,
                      "superblock after journal replay: {}", replayed.error().message);
  }
  // The log may also carry a growth (vsfs-grow): more blocks, one more growth, nothing
  // else of the geometry changed.
  const format::Superblock before = sb_;
  sb_ = *replayed;
  const bool grown_only =
      sb_.total_blocks >= before.total_blocks && sb_.growths.size() >= before.growths.size() &&
      std::equal(before.growths.begin(), before.growths.end(), sb_.growths.begin()) &&
      sb_.journal_start_grain == before.journal_start_grain &&
      sb_.journal_grains == before.journal_grains &&
      sb_.block_table_start_grain == before.block_table_start_grain &&
      sb_.refcount_start_grain == before.refcount_start_grain &&
      (sb_.total_blocks != before.total_blocks || sb_.growths.size() == before.growths.size());
  if (sb_.device_bytes > real_.size_bytes() || !grown_only ||
      sb_.first_data_block * kGrainsPerBlock != data_start_grain_) {
    return make_error(EUCLEAN, ErrorKind::kCorruption,
                      "the journal's superblock image changes the datastore's geometry");
  }
  total_grains_ = sb_.total_blocks * kGrainsPerBlock;
  sb_.journal_tail_grain = r.end_grain;
  sb_.journal_tail_seq = r.end_seq;
  if (options_.repair) {
    VSFS_TRY(write_superblocks(sb_));
  } else {
    format::encode_superblock(sb_, sb_.generation, format::Grain(sb_raw_.data(), kGrainBytes));
  }
  return ok_result();
}

// ---- pass 3: the walk ----------------------------------------------------------------

RefResult Checker::add_ref(uint64_t grain, uint8_t role, const std::string& from) {
  if (!in_data_area(grain)) {
    problem(Fix::kNone, 0,
            fmt::format("{} points at grain {}, outside the allocatable grains [{}, {})", from,
                        grain, data_start_grain_, total_grains_));
    walk_complete_ = false;
    return RefResult::kBad;
  }
  BlockRefs& r = refs_[grain / kGrainsPerBlock];
  const size_t i = grain % kGrainsPerBlock;
  if (!r.once[i] && !r.more[i]) {
    r.once.set(i);
    if (role != kRoleData && !r.roles) {
      // The block's first metadata grain: from now on each grain's role is kept.
      r.roles = std::make_unique<std::array<uint8_t, kGrainsPerBlock>>();
      for (size_t k = 0; k < kGrainsPerBlock; ++k) {
        (*r.roles)[k] = r.once[k] || r.more[k] ? kRoleData : kRoleNone;
      }
      ++role_arrays_;
    }
    if (r.roles) (*r.roles)[i] = role;
    return RefResult::kFirst;
  }
  if (r.once[i]) {
    r.once.reset(i);
    r.more.set(i);
    multi_[grain] = 2;
  } else {
    uint32_t& n = multi_[grain];
    if (n < UINT32_MAX) ++n;
  }
  const uint8_t seen = role_in(r, i);
  if (seen != role) {
    problem(Fix::kNone, 0,
            fmt::format("grain {} is referenced as a {} (by {}) but also as a {}", grain,
                        role_name(role), from, role_name(seen)));
    return RefResult::kConflict;
  }
  return RefResult::kSeen;
}

// Walks the map node at `grain` (already referenced by the caller). `base` is the first
// map index (leaf slot number) it covers. With `count`, children get their references
// (the node's first visit); without, the walk only collects a live directory's blocks.
Result<NodeMemo> Checker::map_node(uint64_t grain, int level, TreeKind kind, uint64_t owner,
                                   uint64_t base, LiveInode* live, bool count,
                                   const std::string& who) {
  NodeMemo memo;
  memo.level = static_cast<uint8_t>(level);
  AlignedBuffer buf(kGrainBytes, false);
  VSFS_TRY(read_grain(grain, buf));
  auto decoded = format::decode_tree_node(cg(buf), grain);
  const BlockType want = level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior;
  if (!decoded.ok()) {
    problem(Fix::kNone, 0, fmt::format("{}: {}", who, decoded.error().message));
    memo.complete = false;
    walk_complete_ = false;
    return memo;
  }
  const format::TreeNode& node = *decoded;
  if (node.type != want || node.level != level) {
    problem(Fix::kNone, 0,
            fmt::format("{}: grain {} is a {} at level {} where a {} at level {} belongs", who,
                        grain, format::block_type_name(node.type), node.level,
                        format::block_type_name(want), level));
    memo.complete = false;
    walk_complete_ = false;
    return memo;
  }
  if (count) tick(++report_.tree_nodes);
  const uint64_t span = pow_fanout(static_cast<unsigned>(level));  // map indexes per slot
  std::vector<uint64_t> ahead;  // the children this visit will read
  if (level > 0) {
    for (const Slot& s : node.slots) {
      if (s.state != SlotState::kMapped || !in_data_area(s.grain)) continue;
      if (memo_.count(s.grain) == 0 || (live != nullptr && kind == TreeKind::kDirMap)) {
        ahead.push_back(s.grain);
      }
    }
    prefetch(ahead);
  }
  for (size_t i = 0; i < kTreeFanout; ++i) {
    const Slot& s = node.slots[i];
    memo.max_stamp = std::max(memo.max_stamp, s.stamp);
    if (s.state == SlotState::kAllocated) {
      // A grain set aside by fallocate (reads zeros): referenced and counted like a
      // mapped one, in disk maps only, and only with its incompat bit.
      if (kind != TreeKind::kFileMap) {
        problem(Fix::kNone, 0,
                fmt::format("{}: slot {} of map leaf at grain {} is allocated, which only a "
                            "disk's map may hold",
                            who, i, grain));
        memo.complete = false;
        continue;
      }
      if ((sb_.incompat & format::kIncompatAllocated) == 0 && !allocated_without_bit_) {
        allocated_without_bit_ = true;
        problem(Fix::kNone, 0,
                fmt::format("{}: slot {} of map leaf at grain {} is allocated but the "
                            "superblock lacks incompat feature 0x{:x} (allocated grains)",
                            who, i, grain, format::kIncompatAllocated));
      }
    } else if (s.state != SlotState::kMapped) {
      continue;
    }
    const std::string from =
        fmt::format("{} slot {} of {} at grain {}", who, i, format::block_type_name(node.type),
                    grain);
    if (level == 0) {
      ++memo.mapped;
      memo.extent = i + 1;
      if (kind == TreeKind::kFileMap) {
        if (count && add_ref(s.grain, kRoleData, from) == RefResult::kFirst) {
          ++report_.data_grains;
        }
        continue;
      }
      // A directory map's leaves point at directory blocks.
      RefResult rr = count ? add_ref(s.grain, static_cast<uint8_t>(BlockType::kDirBlock), from)
                           : (in_data_area(s.grain) ? RefResult::kSeen : RefResult::kBad);
      if (rr == RefResult::kBad || rr == RefResult::kConflict) continue;
      if (rr == RefResult::kFirst || live != nullptr) {
        AlignedBuffer db(kGrainBytes, false);
        VSFS_TRY(read_grain(s.grain, db));
        auto dir = format::decode_dir_block(cg(db), s.grain);
        if (!dir.ok()) {
          if (rr == RefResult::kFirst) {
            problem(Fix::kNone, 0, fmt::format("{}: {}", who, dir.error().message));
            walk_complete_ = false;
          }
          if (live) live->map_complete = false;
          continue;
        }
        if (dir->owner != owner && rr == RefResult::kFirst) {
          problem(Fix::kNone, 0,
                  fmt::format("{}: directory block at grain {} belongs to inode {}", who,
                              s.grain, dir->owner));
        }
        if (live) {
          live->dir_blocks.push_back(DirBlockSeen{base + i, s.grain});
          dir_blocks_.emplace(s.grain, std::move(*dir));
        }
      }
      continue;
    }
    // Interior: the child is a node one level down.
    const BlockType child_type = level == 1 ? BlockType::kMapLeaf : BlockType::kMapInterior;
    RefResult rr = count ? add_ref(s.grain, static_cast<uint8_t>(child_type), from)
                         : (in_data_area(s.grain) ? RefResult::kSeen : RefResult::kBad);
    if (rr == RefResult::kBad || rr == RefResult::kConflict) {
      memo.complete = false;
      continue;
    }
    std::optional<NodeMemo> prior;
    if (auto it = memo_.find(s.grain); it != memo_.end() && rr != RefResult::kFirst) {
      prior = it->second;
    }
    if (prior && (prior->in_progress || prior->level != level - 1)) {
      problem(Fix::kNone, 0,
              fmt::format("{}: node at grain {} is reached at level {} and at level {}{}", who,
                          s.grain, level - 1, prior->level,
                          prior->in_progress ? " (a cycle)" : ""));
      memo.complete = false;
      walk_complete_ = false;
      continue;
    }
    NodeMemo child;
    if (rr == RefResult::kFirst || !prior || (live != nullptr && kind == TreeKind::kDirMap)) {
      if (rr == RefResult::kFirst) memo_[s.grain] = NodeMemo{};
      VSFS_ASSIGN_OR_RETURN(child, map_node(s.grain, level - 1, kind, owner, base + i * span,
                                            live, rr == RefResult::kFirst, who));
      if (rr == RefResult::kFirst) {
        child.in_progress = false;
        memo_[s.grain] = child;
      }
    } else {
      child = *prior;
    }
    if (s.stamp < child.max_stamp) {
      problem(Fix::kNone, 0,
              fmt::format("{}: slot {} of map interior at grain {} has stamp {} but the node "
                          "below holds stamp {}",
                          who, i, grain, s.stamp, child.max_stamp));
    }
    memo.mapped += child.mapped;
    if (child.mapped > 0) memo.extent = i * span + child.extent;
    memo.complete = memo.complete && child.complete;
  }
  drop_prefetched(ahead);
  return memo;
}

Result<void> Checker::walk_map_root(uint64_t root, uint8_t height, TreeKind kind,
                                    uint64_t owner, LiveInode* live, const std::string& who) {
  if (root == 0) return ok_result();
  const int level = height - 1;
  const BlockType type = level == 0 ? BlockType::kMapLeaf : BlockType::kMapInterior;
  RefResult rr = add_ref(root, static_cast<uint8_t>(type), who + " map root");
  if (rr == RefResult::kBad || rr == RefResult::kConflict) {
    if (live) live->map_complete = false;
    return ok_result();
  }
  std::optional<NodeMemo> prior;
  if (auto it = memo_.find(root); it != memo_.end() && rr != RefResult::kFirst) {
    prior = it->second;
  }
  if (prior && (prior->in_progress || prior->level != level)) {
    problem(Fix::kNone, 0,
            fmt::format("{}: map root at grain {} is also reached as a node at level {}", who,
                        root, prior->level));
    walk_complete_ = false;
    if (live) live->map_complete = false;
    return ok_result();
  }
  NodeMemo memo;
  if (rr == RefResult::kFirst || !prior || (live != nullptr && kind == TreeKind::kDirMap)) {
    if (rr == RefResult::kFirst) memo_[root] = NodeMemo{};
    VSFS_ASSIGN_OR_RETURN(memo, map_node(root, level, kind, owner, 0, live,
                                         rr == RefResult::kFirst, who));
    if (rr == RefResult::kFirst) {
      memo.in_progress = false;
      memo_[root] = memo;
    }
  } else {
    memo = *prior;
  }
  if (live) {
    live->mapped = memo.mapped;
    live->extent = memo.extent;
    live->map_complete = live->map_complete && memo.complete;
  }
  return ok_result();
}

Result<void> Checker::inode_leaf(uint64_t grain, uint64_t leaf_no, bool live, bool count,
                                 NodeMemo& memo, const std::string& table) {
  const uint64_t first_ino = leaf_no * kInodesPerLeaf;
  AlignedBuffer buf(kGrainBytes, false);
  VSFS_TRY(read_grain(grain, buf));
  auto leaf = format::decode_inode_leaf(cg(buf), grain, first_ino);
  if (!leaf.ok()) {
    problem(Fix::kNone, 0, fmt::format("inode table: {}", leaf.error().message));
    memo.complete = false;
    walk_complete_ = false;
    if (live) unreadable_.emplace_back(leaf_no, 1);
    return ok_result();
  }
  if (count) tick(++report_.tree_nodes);
  for (const auto& r : leaf->inodes) {
    if (r.ino == 0) continue;
    const bool dir = S_ISDIR(r.mode);
    const TreeKind kind = dir ? TreeKind::kDirMap : TreeKind::kFileMap;
    const std::string who = fmt::format("inode {}", r.ino);
    if (live) {
      LiveInode& li = live_[r.ino];
      li.rec = r;
      li.leaf_grain = grain;
      if (r.map_root != 0 && (count || dir)) {
        if (count) {
          VSFS_TRY(walk_map_root(r.map_root, r.map_height, kind, r.ino, &li, who));
        } else {
          // Already counted: collect the directory's blocks without counting again.
          auto it = memo_.find(r.map_root);
          if (it != memo_.end()) {
            li.mapped = it->second.mapped;
            li.extent = it->second.extent;
            li.map_complete = it->second.complete;
          }
          if (dir && in_data_area(r.map_root)) {
            VSFS_ASSIGN_OR_RETURN(NodeMemo m, map_node(r.map_root, r.map_height - 1, kind,
                                                       r.ino, 0, &li, false, who));
            (void)m;
          }
        }
      }
    } else if (count && r.map_root != 0) {
      VSFS_TRY(walk_map_root(r.map_root, r.map_height, kind, r.ino, nullptr,
                             fmt::format("{} (in the inode table of {})", who, table)));
    }
    if (count && r.extra != 0) {
      VSFS_TRY(walk_extra(r, live ? who : fmt::format("{} (in the inode table of {})", who, table)));
    }
  }
  return ok_result();
}

// An inode's extra chain: the records naming its first block reference it (a snapshot's
// and the live one may share it); each further block is referenced by the one before.
// On the first visit the blocks are read, their owner checked and the content decoded:
// a symlink's target must have the record's size, other inodes have none.
Result<void> Checker::walk_extra(const format::InodeRecord& r, const std::string& who) {
  if ((sb_.incompat & format::kIncompatPosixInodes) == 0) {
    problem(Fix::kNone, 0,
            fmt::format("{} has an extra chain but incompat bit 0x{:x} is not set", who,
                        format::kIncompatPosixInodes));
  }
  std::string from = who + " extra";
  std::string content;
  for (uint64_t g = r.extra, n = 0; g != 0; ++n) {
    const RefResult rr = add_ref(g, static_cast<uint8_t>(BlockType::kInodeExtra), from);
    if (rr != RefResult::kFirst) {
      if (rr == RefResult::kSeen && n > 0) {
        problem(Fix::kNone, 0, fmt::format("{}: extra block at grain {} is reached twice", who, g));
        walk_complete_ = false;
      }
      return ok_result();  // n == 0: a shared chain, checked on its first visit
    }
    ++report_.tree_nodes;
    if (n == format::kMaxExtraBlocks) {
      problem(Fix::kNone, 0, fmt::format("{}: extra chain longer than {} blocks", who,
                                         format::kMaxExtraBlocks));
      walk_complete_ = false;
      return ok_result();
    }
    AlignedBuffer buf(kGrainBytes, false);
    VSFS_TRY(read_grain(g, buf));
    auto b = format::decode_extra_block(cg(buf), g);
    if (!b.ok()) {
      problem(Fix::kNone, 0, fmt::format("{}: {}", who, b.error().message));
      walk_complete_ = false;
      return ok_result();
    }
    if (b->owner != r.ino) {
      problem(Fix::kNone, 0, fmt::format("{}: extra block at grain {} belongs to inode {}", who,
                                         g, b->owner));
    }
    content += b->piece;
    from = fmt::format("{} extra block at grain {}", who, g);
    g = b->next;
  }
  auto e = format::decode_inode_extra(content, who + ": extra chain");
  if (!e.ok()) {
    problem(Fix::kNone, 0, e.error().message);
    return ok_result();
  }
  if (S_ISLNK(r.mode) ? e->target.size() != r.size_bytes : !e->target.empty()) {
    problem(Fix::kNone, 0, fmt::format("{}: symlink target of {} bytes, record size {} (mode 0{:o})",
                                       who, e->target.size(), r.size_bytes, r.mode));
  }
  return ok_result();
}

Result<NodeMemo> Checker::inode_node(uint64_t grain, int level, uint64_t base_leaf, bool live,
                                     bool count, const std::string& who) {
  NodeMemo memo;
  memo.level = static_cast<uint8_t>(level);
  if (level == 0) {
    memo.key = base_leaf * kInodesPerLeaf;
    VSFS_TRY(inode_leaf(grain, base_leaf, live, count, memo, who));
    return memo;
  }
  AlignedBuffer buf(kGrainBytes, false);
  VSFS_TRY(read_grain(grain, buf));
  auto decoded = format::decode_tree_node(cg(buf), grain);
  if (!decoded.ok()) {
    problem(Fix::kNone, 0, fmt::format("{}: {}", who, decoded.error().message));
    memo.complete = false;
    walk_complete_ = false;
    if (live) unreadable_.emplace_back(base_leaf, pow_fanout(static_cast<unsigned>(level)));
    return memo;
  }
  const format::TreeNode& node = *decoded;
  if (node.type != BlockType::kInodeInterior || node.level != level) {
    problem(Fix::kNone, 0,
            fmt::format("{}: grain {} is a {} at level {} where an inode interior at level {} "
                        "belongs",
                        who, grain, format::block_type_name(node.type), node.level, level));
    memo.complete = false;
    walk_complete_ = false;
    return memo;
  }
  if (count) tick(++report_.tree_nodes);
  const uint64_t span = pow_fanout(static_cast<unsigned>(level - 1));  // leaves per slot
  std::vector<uint64_t> ahead;  // the children this visit will read
  for (const Slot& s : node.slots) {
    if (s.state != SlotState::kMapped || !in_data_area(s.grain)) continue;
    if (memo_.count(s.grain) == 0 || live) ahead.push_back(s.grain);
  }
  prefetch(ahead);
  for (size_t i = 0; i < kTreeFanout; ++i) {
    const Slot& s = node.slots[i];
    memo.max_stamp = std::max(memo.max_stamp, s.stamp);
    if (s.state != SlotState::kMapped) continue;
    const uint64_t child_base = base_leaf + i * span;
    const BlockType child_type = level == 1 ? BlockType::kInodeLeaf : BlockType::kInodeInterior;
    const std::string from =
        fmt::format("{} slot {} of inode interior at grain {}", who, i, grain);
    RefResult rr = count ? add_ref(s.grain, static_cast<uint8_t>(child_type), from)
                         : (in_data_area(s.grain) ? RefResult::kSeen : RefResult::kBad);
    if (rr == RefResult::kBad || rr == RefResult::kConflict) {
      memo.complete = false;
      continue;
    }
    std::optional<NodeMemo> prior;
    if (auto it = memo_.find(s.grain); it != memo_.end() && rr != RefResult::kFirst) {
      prior = it->second;
    }
    if (prior && (prior->in_progress || prior->level != level - 1 ||
                  (level == 1 && prior->key != child_base * kInodesPerLeaf))) {
      problem(Fix::kNone, 0,
              fmt::format("{}: node at grain {} is reached at two different places in the "
                          "inode table",
                          who, s.grain));
      memo.complete = false;
      walk_complete_ = false;
      continue;
    }
    NodeMemo child;
    if (rr == RefResult::kFirst || !prior || live) {
      if (rr == RefResult::kFirst) memo_[s.grain] = NodeMemo{};
      VSFS_ASSIGN_OR_RETURN(child, inode_node(s.grain, level - 1, child_base, live,
                                              rr == RefResult::kFirst, who));
      if (rr == RefResult::kFirst) {
        child.in_progress = false;
        memo_[s.grain] = child;
      }
    } else {
      child = *prior;
    }
    if (level > 1 && s.stamp < child.max_stamp) {
      problem(Fix::kNone, 0,
              fmt::format("{}: slot {} of inode interior at grain {} has stamp {} but the node "
                          "below holds stamp {}",
                          who, i, grain, s.stamp, child.max_stamp));
    }
    memo.complete = memo.complete && child.complete;
  }
  drop_prefetched(ahead);
  return memo;
}

Result<void> Checker::walk_inode_root(uint64_t root, uint8_t height, bool live,
                                      const std::string& who) {
  if (root == 0) return ok_result();
  const int level = height - 1;
  const BlockType type = level == 0 ? BlockType::kInodeLeaf : BlockType::kInodeInterior;
  RefResult rr = add_ref(root, static_cast<uint8_t>(type), who + " root");
  if (rr == RefResult::kBad || rr == RefResult::kConflict) {
    if (live) unreadable_.emplace_back(0, UINT64_MAX);
    return ok_result();
  }
  if (rr == RefResult::kSeen && !live) {
    auto it = memo_.find(root);
    if (it != memo_.end() && (it->second.in_progress || it->second.level != level)) {
      problem(Fix::kNone, 0,
              fmt::format("{}: inode table root at grain {} is also reached as a node at "
                          "level {}",
                          who, root, it->second.level));
      walk_complete_ = false;
    }
    return ok_result();
  }
  if (rr == RefResult::kFirst) memo_[root] = NodeMemo{};
  VSFS_ASSIGN_OR_RETURN(NodeMemo memo,
                        inode_node(root, level, 0, live, rr == RefResult::kFirst, who));
  if (rr == RefResult::kFirst) {
    memo.in_progress = false;
    memo_[root] = memo;
  }
  return ok_result();
}

// Walks a chain of list blocks from `first`: takes the reference each block holds,
// decodes it, hands it to `visit` and follows its `next`. A cycle or a block that does
// not decode is reported naming `what`, and ends the walk.
template <typename Decode, typename Visit>
Result<void> Checker::walk_chain(uint64_t first, BlockType type, const char* what,
                                 std::string from, Decode decode, Visit visit) {
  for (uint64_t g = first; g != 0;) {
    RefResult rr = add_ref(g, static_cast<uint8_t>(type), from);
    if (rr != RefResult::kFirst) {
      if (rr == RefResult::kSeen) {
        problem(Fix::kNone, 0, fmt::format("{}: block at grain {} is reached twice (a cycle)",
                                           what, g));
        walk_complete_ = false;
      }
      return ok_result();
    }
    ++report_.tree_nodes;
    AlignedBuffer buf(kGrainBytes, false);
    VSFS_TRY(read_grain(g, buf));
    auto list = decode(cg(buf), g);
    if (!list.ok()) {
      problem(Fix::kNone, 0, fmt::format("{}: {}", what, list.error().message));
      walk_complete_ = false;
      return ok_result();
    }
    VSFS_TRY(visit(*list, g));
    from = fmt::format("{} block at grain {}", what, g);
    g = list->next;
  }
  return ok_result();
}

Result<void> Checker::walk_release_list() {
  return walk_chain(
      sb_.release_list, BlockType::kReleaseList, "release list", "superblock release_list",
      format::decode_release_list, [&](const format::ReleaseList& list, uint64_t g) -> Result<void> {
        for (size_t i = 0; i < list.entries.size(); ++i) {
          const format::ReleaseEntry& e = list.entries[i];
          const std::string who =
              fmt::format("release list entry {} at grain {} (inode {})", i, g, e.owner);
          if (e.kind == TreeKind::kInodeTable) {
            VSFS_TRY(walk_inode_root(e.root, e.height, false, who));
          } else {
            VSFS_TRY(walk_map_root(e.root, e.height, e.kind, e.owner, nullptr, who));
          }
        }
        return ok_result();
      });
}

Result<void> Checker::walk() {
  if (sb_.inode_root == 0) {
    problem(Fix::kNone, 0, "superblock: the inode table is empty (inode_root is 0)");
    walk_complete_ = false;
  } else {
    // The live table first, so its leaves and maps are read for the namespace check.
    VSFS_TRY(walk_inode_root(sb_.inode_root, sb_.inode_height, true, "inode table"));
  }
  VSFS_TRY(walk_release_list());
  VSFS_TRY(walk_snapshot_list());
  return ok_result();
}

// Snapshot records: each live one holds a reference on the inode table root it froze.
Result<void> Checker::walk_snapshot_list() {
  // A live name is unique in its directory; a deleted record is superseded by a new one
  // of the same directory, name and taker.
  std::set<std::pair<uint64_t, std::string>> live_names;
  std::set<std::tuple<uint64_t, std::string, uint32_t>> names;
  std::set<uint16_t> ids;
  return walk_chain(
      sb_.snapshot_root, BlockType::kSnapshotList, "snapshot list", "superblock snapshot_root",
      format::decode_snapshot_list,
      [&](const format::SnapshotList& list, uint64_t) -> Result<void> {
        for (const auto& r : list.records) {
          if (!names.insert({r.base_ino, r.name, r.taker_uid}).second ||
              (!(r.flags & format::kSnapDeleted) && !live_names.insert({r.base_ino, r.name}).second)) {
            problem(Fix::kNone, 0,
                    fmt::format("snapshot list: name '{}' of directory {} appears twice", r.name,
                                r.base_ino));
          }
          if (r.taker_uid != 0 && !(sb_.incompat & format::kIncompatSnapshotTakers)) {
            problem(Fix::kNone, 0,
                    fmt::format("snapshot '{}' records a taker but the superblock lacks the "
                                "snapshot-takers feature",
                                r.name));
          }
          if (r.flags & format::kSnapDeleted) continue;
          if (!ids.insert(r.id).second) {
            problem(Fix::kNone, 0, fmt::format("snapshot list: id {} appears twice", r.id));
          }
          if (r.change_id >= sb_.generation) {
            problem(Fix::kNone, 0,
                    fmt::format("snapshot '{}': changeId {} is not below the generation {}",
                                r.name, r.change_id, sb_.generation));
          }
          VSFS_TRY(walk_inode_root(r.inode_root, r.inode_height, false,
                                   fmt::format("snapshot '{}'", r.name)));
        }
        return ok_result();
      });
}

// ---- pass 4: the block table and the space summary -----------------------------------
//
// What is read, so that time and memory follow the metadata in use, not the device:
// the summary; the block-table grains it marks, those of blocks the walk referenced,
// those of the zero check's sample and of the crash window, and those of the blocks the
// allocator takes next (every grain without a summary, after a crash without the
// window, or with full_zero_check). A grain not read is taken to describe formatted
// free blocks only, as a mount takes it.

// The zero check reads a sample of the formatted free blocks: one block in
// kZeroSampleStride of the data area, at most kZeroSampleMax of them, evenly spread.
constexpr uint64_t kZeroSampleStride = 16;
constexpr uint64_t kZeroSampleMax = 1024;
// After a crash every formatted free block of the allocation window is read, up to this
// many (the window is alloc_window_blocks long, 64 by default).
constexpr uint64_t kWindowReadMax = 4096;
// The refcounts of the first formatted free blocks the allocator will take are read.
constexpr uint64_t kAheadBlocks = 1024;
// Reads of the tables go in runs of at most this many grains (1 MiB).
constexpr uint64_t kReadChunkGrains = 256;

template <typename Where, typename Visit>
Result<void> Checker::read_indexed(const std::vector<uint64_t>& indexes, Where where,
                                   Visit visit) {
  AlignedBuffer buf(kReadChunkGrains * kGrainBytes, false);
  for (size_t k = 0; k < indexes.size();) {
    const uint64_t first = where(indexes[k]);
    size_t n = 1;
    while (k + n < indexes.size() && n < kReadChunkGrains && where(indexes[k + n]) == first + n) {
      ++n;
    }
    VSFS_TRY(device::read_sync(io(), first * kGrainBytes, buf.data(), n * kGrainBytes));
    for (size_t j = 0; j < n; ++j) VSFS_TRY(visit(indexes[k + j], buf.data() + j * kGrainBytes));
    k += n;
  }
  return ok_result();
}

Result<void> Checker::read_space_summary() {
  summary_bit_.assign(table_grains(), true);  // without a summary every grain is read
  if ((sb_.ro_compat & format::kRoCompatSpaceSummary) == 0) return ok_result();
  const uint64_t grains = format::space_summary_grains(table_grains());
  summary_ok_.assign(grains, true);
  AlignedBuffer buf(kGrainBytes, false);
  for (uint64_t k = 0; k < grains; ++k) {
    VSFS_TRY(read_grain(summary_grain(k), buf));
    auto s = format::decode_space_summary(cg(buf), summary_grain(k));
    if (!s.ok()) {
      summary_ok_[k] = false;  // its grains stay marked: all are read
      problem(Fix::kSummary, 0, fmt::format("space summary: {}", s.error().message));
      continue;
    }
    for (uint64_t j = 0; j < format::kGroupsPerSummaryGrain; ++j) {
      const uint64_t i = k * format::kGroupsPerSummaryGrain + j;
      if (i < table_grains()) {
        summary_bit_[i] = s->test(j);
      } else if (s->test(j)) {
        if (summary_wrong_++ == 0) summary_first_wrong_ = i;
      }
    }
  }
  return ok_result();
}

Result<void> Checker::read_groups(const std::vector<uint64_t>& groups) {
  progress_.total += groups.size();
  return read_indexed(
      groups, [&](uint64_t i) { return table_grain(i); },
      [&](uint64_t i, const uint8_t* p) -> Result<void> {
        tick(++report_.table_grains_read);
        table_read_[i] = true;
        auto t = format::decode_block_table(ConstGrain(p, kGrainBytes), table_grain(i));
        if (!t.ok()) {
          block_grain_ok_[i] = false;
          grain_in_use_[i] = true;  // unknown: as a mount would read it
          bad_groups_.push_back(i);
          problem(Fix::kBlockGrain, i, fmt::format("block table: {}", t.error().message));
          return ok_result();
        }
        bool keep = false, in_use = false;
        for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
          const uint64_t b = i * format::kBlocksPerTableGrain + j;
          const format::BlockEntry& e = t->entries[j];
          const format::BlockEntry want = pristine(b);
          in_use = in_use || e.state != BlockState::kFormattedFree;
          if (e.state == want.state && e.used_grains == want.used_grains) continue;
          keep = true;
          if (b >= sb_.total_blocks) {
            problem(Fix::kBlock, b,
                    fmt::format("block table: entry for block {} past the end of the datastore "
                                "is {}",
                                b, format::block_state_name(e.state)));
          }
        }
        grain_in_use_[i] = in_use;
        if (keep) groups_[i] = t->entries;
        return ok_result();
      });
}

Result<void> Checker::read_block_table() {
  const uint64_t n = table_grains();
  table_read_.assign(n, false);
  block_grain_ok_.assign(n, true);
  grain_in_use_ = summary_bit_;  // a grain not read is what the summary says
  const bool summary_on = (sb_.ro_compat & format::kRoCompatSpaceSummary) != 0;
  // Without the window a crash puts every formatted free block in question.
  const bool all = !summary_on || options_.full_zero_check || (crashed_ && !window_on());
  if (!options_.full_zero_check && sb_.first_data_block < sb_.total_blocks) {
    const uint64_t data_blocks = sb_.total_blocks - sb_.first_data_block;
    const uint64_t stride =
        std::max(kZeroSampleStride, (data_blocks + kZeroSampleMax - 1) / kZeroSampleMax);
    for (uint64_t b = sb_.first_data_block; b < sb_.total_blocks; b += stride) {
      sample_.push_back(b);
    }
  }
  std::vector<uint64_t> want;
  if (all) {
    want.resize(n);
    for (uint64_t i = 0; i < n; ++i) want[i] = i;
  } else {
    for (uint64_t i = 0; i < n; ++i) {
      if (summary_bit_[i]) want.push_back(i);
    }
    for (const auto& [b, r] : refs_) want.push_back(group_of(b));
    for (uint64_t b : sample_) want.push_back(group_of(b));
    add_window_groups(want);
    std::sort(want.begin(), want.end());
    want.erase(std::unique(want.begin(), want.end()), want.end());
  }
  VSFS_TRY(read_groups(want));

  // The allocator takes the lowest formatted free block first: the next kAheadBlocks
  // it will take get their refcounts read (check_refcounts), and the table grains that
  // describe them, when not read yet, are read to see they are formatted free.
  std::vector<uint64_t> more;
  uint64_t found = 0;
  for (uint64_t g = group_of(sb_.first_data_block); g < n && found < kAheadBlocks; ++g) {
    if (!table_read_[g]) more.push_back(g);
    const uint64_t begin = std::max(g * format::kBlocksPerTableGrain, sb_.first_data_block);
    const uint64_t end = std::min((g + 1) * format::kBlocksPerTableGrain, sb_.total_blocks);
    for (uint64_t b = begin; b < end && found < kAheadBlocks; ++b) {
      if (entry(b).state != BlockState::kFormattedFree) continue;
      ++found;
      ahead_end_ = b + 1;
    }
  }
  return read_groups(more);
}

// A mount reads only the block-table grains whose summary bit is set: a clear bit over
// a grain that describes blocks in use would hide them (the mount finds it out when it
// first allocates there, and fails). A set bit over free space only costs memory, but
// the daemon never leaves one, so it is reported too. Only the grains read are
// compared: the others are what the summary says.
void Checker::check_space_summary() {
  if ((sb_.ro_compat & format::kRoCompatSpaceSummary) == 0) return;
  uint64_t wrong = summary_wrong_, first_wrong = summary_first_wrong_;
  for (uint64_t i = 0; i < table_grains(); ++i) {
    if (!table_read_[i] || !summary_ok_[i / format::kGroupsPerSummaryGrain]) continue;
    if (summary_bit_[i] == grain_in_use_[i]) continue;
    if (wrong++ == 0 || i < first_wrong) first_wrong = i;
    if (!grain_in_use_[i]) continue;
    problem(Fix::kSummary, 0,
            fmt::format("space summary: block-table grain {} describes blocks in use, but its "
                        "bit is clear (a mount would take them for formatted free space)",
                        i));
  }
  if (wrong > 0) {
    problem(Fix::kSummary, 0,
            fmt::format("space summary: {} bit{} disagree{} with the block table (the first "
                        "for block-table grain {})",
                        wrong, wrong == 1 ? "" : "s", wrong == 1 ? "s" : "", first_wrong));
  }
}

// ---- pass 5: reference counts, and the block table against them ----------------------
//
// The refcount-table grains read are those of the blocks the block table says are not
// fresh (in use, to be formatted, or with a wrong count), of the blocks the walk
// referenced, of the zero check's sample and of the blocks the allocator takes next
// (every grain with full_zero_check). A stale count in a grain not read is not seen:
// see vsfs-fsck(8) for what it costs.

Result<void> Checker::check_refcounts() {
  std::vector<uint64_t> want;
  auto add_block = [&](uint64_t b) {
    const auto [lo, hi] = refcount_grains_of(b);
    for (uint64_t x = lo; x <= hi && x < refcount_grains(); ++x) want.push_back(x);
  };
  if (options_.full_zero_check) {
    want.resize(refcount_grains());
    for (uint64_t x = 0; x < refcount_grains(); ++x) want[x] = x;
  } else {
    for (const auto& [g, entries] : groups_) {
      for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
        const uint64_t b = g * format::kBlocksPerTableGrain + j;
        if (b >= sb_.total_blocks || fixed_block(b)) continue;
        if (entries[j].state != BlockState::kFormattedFree || entries[j].used_grains != 0) {
          add_block(b);
        }
      }
    }
    for (const auto& [b, r] : refs_) add_block(b);
    for (uint64_t b : sample_) add_block(b);
    // The blocks the allocator takes next: the formatted free ones below ahead_end_.
    for (uint64_t g = group_of(sb_.first_data_block);
         ahead_end_ > 0 && g <= group_of(ahead_end_ - 1); ++g) {
      const uint64_t begin = std::max(g * format::kBlocksPerTableGrain, sb_.first_data_block);
      const uint64_t end = std::min((g + 1) * format::kBlocksPerTableGrain, ahead_end_);
      auto kept = groups_.find(g);
      for (uint64_t b = begin; b < end; ++b) {
        if (kept == groups_.end() ||
            kept->second[b % format::kBlocksPerTableGrain].state == BlockState::kFormattedFree) {
          add_block(b);
        }
      }
    }
    std::sort(want.begin(), want.end());
    want.erase(std::unique(want.begin(), want.end()), want.end());
  }
  progress_.total = want.size();
  uint64_t fixed_grains = 0;
  VSFS_TRY(read_indexed(
      want, [&](uint64_t x) { return refcount_grain(x); },
      [&](uint64_t index, const uint8_t* p) -> Result<void> {
        tick(++report_.refcount_grains_read);
        const uint64_t self = refcount_grain(index);
        format::RefcountGrain table;  // all zero: how mkfs leaves an unused refcount grain
        bool decoded = true;
        if (!all_zero(p, kGrainBytes)) {
          auto r = format::decode_refcounts(ConstGrain(p, kGrainBytes), self);
          if (r.ok()) {
            table = *r;
          } else {
            decoded = false;
            problem(Fix::kRefcount, self, fmt::format("refcount table: {}", r.error().message));
          }
        }
        refcount_read_[index] = decoded;
        // References counted, per grain of this refcount grain (read block by block).
        std::array<uint32_t, kGrainsPerRefcountGrain> counted{};
        const BlockRefs* br = nullptr;
        uint64_t br_block = UINT64_MAX;
        for (uint64_t k = 0; k < kGrainsPerRefcountGrain; ++k) {
          const uint64_t grain = index * kGrainsPerRefcountGrain + k;
          if (grain >= total_grains_) break;
          if (grain / kGrainsPerBlock != br_block) {
            br_block = grain / kGrainsPerBlock;
            br = refs_of(br_block);
          }
          if (br == nullptr) continue;
          const size_t i = grain % kGrainsPerBlock;
          counted[k] = br->once[i] ? 1 : br->more[i] ? multi_.at(grain) : 0;
        }
        bool grain_wrong = !decoded;
        for (uint64_t k = 0; decoded && k < kGrainsPerRefcountGrain; ++k) {
          const uint64_t grain = index * kGrainsPerRefcountGrain + k;
          const uint32_t want_count = counted[k];
          const uint16_t have = table.counts[k];
          if (have != 0 && grain < total_grains_) ++table_used_[grain / kGrainsPerBlock];
          if (want_count > UINT16_MAX) {
            problem(Fix::kNone, 0,
                    fmt::format("grain {} has more than {} references", grain, UINT16_MAX));
            continue;
          }
          if (have == want_count) continue;
          // With parts of the walk unreadable, fewer references may have been seen than
          // exist: only a count below what was found is then certainly wrong.
          if (!walk_complete_ && have > want_count) continue;
          grain_wrong = true;
          if (grain >= total_grains_) {
            problem(Fix::kRefcount, self,
                    fmt::format("refcount table: grain {} is past the end of the datastore "
                                "but has count {}",
                                grain, have));
          } else {
            problem(Fix::kRefcount, self,
                    fmt::format("refcount of grain {} is {} but {} reference{} found", grain,
                                have, want_count, want_count == 1 ? " was" : "s were"));
          }
        }
        if (grain_wrong && options_.repair && walk_complete_) {
          format::RefcountGrain fixed;
          for (uint64_t k = 0; k < kGrainsPerRefcountGrain; ++k) {
            fixed.counts[k] = static_cast<uint16_t>(std::min<uint32_t>(counted[k], UINT16_MAX));
          }
          AlignedBuffer out(kGrainBytes);
          format::encode_refcounts(fixed, self, sb_.generation,
                                   format::Grain(out.data(), kGrainBytes));
          VSFS_TRY(write_grain(self, out));
          repaired(Fix::kRefcount, self,
                   fmt::format("refcount table grain {} rewritten with the counted references "
                               "(grains {}..{})",
                               self, index * kGrainsPerRefcountGrain,
                               (index + 1) * kGrainsPerRefcountGrain - 1));
          ++fixed_grains;
        }
        return ok_result();
      }));
  if (fixed_grains > 0) VSFS_TRY(device::flush_sync(real_));
  return ok_result();
}

// Each block the table says is not fresh, each the walk referenced and each with a
// nonzero count, against the references found and the refcount table.
void Checker::check_blocks() {
  std::vector<uint64_t> blocks;
  for (const auto& [g, entries] : groups_) {
    for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
      const uint64_t b = g * format::kBlocksPerTableGrain + j;
      if (b < sb_.total_blocks) blocks.push_back(b);
    }
  }
  for (const auto& [b, r] : refs_) blocks.push_back(b);
  for (const auto& [b, n] : table_used_) blocks.push_back(b);
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  report_.blocks_tracked = refs_.size();

  // A data block holding metadata grains, or the other way round.
  auto holds_other = [&](uint64_t b, const char* kind, const char* other, uint64_t n) {
    problem(Fix::kBlock, b,
            fmt::format("block table: block {} is a {} block but holds {} {} grain{}", b, kind,
                        n, other, n == 1 ? "" : "s"));
  };
  for (uint64_t b : blocks) {
    if (b >= sb_.total_blocks || !block_grain_ok_[group_of(b)]) continue;
    const format::BlockEntry e = entry(b);
    const bool fixed = fixed_block(b);
    if (fixed != (e.state == BlockState::kReserved)) {
      problem(Fix::kBlock, b,
              fmt::format("block table: block {} is {} but should {}be reserved", b,
                          format::block_state_name(e.state), fixed ? "" : "not "));
    }
    if (fixed) continue;
    const BlockUse u = use_of(b);
    auto used = table_used_.find(b);
    const uint64_t table_used = used == table_used_.end() ? 0 : used->second;
    if (refcounts_known(b) && e.used_grains != table_used) {
      problem(Fix::kBlock, b,
              fmt::format("block table: block {} has used_grains {} but {} of its grains have "
                          "a nonzero refcount",
                          b, e.used_grains, table_used));
    }
    switch (e.state) {
      case BlockState::kFormattedFree:
      case BlockState::kToFormatFree:
        if (u.referenced > 0) {
          problem(Fix::kBlock, b,
                  fmt::format("block table: block {} is {} but has {} grain{} in use", b,
                              format::block_state_name(e.state), u.referenced,
                              u.referenced == 1 ? "" : "s"));
        }
        break;
      case BlockState::kData:
        if (u.meta > 0) holds_other(b, "data", "metadata", u.meta);
        break;
      case BlockState::kMeta:
        if (u.data > 0) holds_other(b, "metadata", "data", u.data);
        break;
      case BlockState::kReserved:
        break;
    }
  }
}

// ---- pass 6: formatted free blocks read as zeros -------------------------------------

Result<void> Checker::zero_check() {
  auto formatted = [&](uint64_t b) {
    return block_grain_ok_[group_of(b)] && entry(b).state == BlockState::kFormattedFree;
  };
  AlignedBuffer buf(kBlockBytes, false);
  auto check = [&](uint64_t b) -> Result<void> {
    tick(++report_.blocks_zero_checked);
    VSFS_TRY(device::read_sync(io(), b * kBlockBytes, buf.data(), kBlockBytes));
    if (all_zero(buf.data(), kBlockBytes)) return ok_result();
    not_zero_.insert(b);
    if (in_crash_window(b)) {
      // Data written into a block whose allocation had not committed when the
      // datastore stopped: expected after a crash, and never readable (a grain is
      // written in full before a map points at it). Repair still moves the block.
      ++crash_residue_;
      return ok_result();
    }
    problem(Fix::kBlockZero, b,
            fmt::format("block table: block {} is on the formatted list but holds data{}", b,
                        crashed_ ? fmt::format(" (past the allocation window, which ended "
                                               "at block {})",
                                               sb_.alloc_window_end)
                                 : ""));
    return ok_result();
  };
  if (options_.full_zero_check) {
    progress_.total = sb_.total_blocks - std::min(sb_.first_data_block, sb_.total_blocks);
    for (uint64_t b = sb_.first_data_block; b < sb_.total_blocks; ++b) {
      if (formatted(b)) VSFS_TRY(check(b));
    }
  } else {
    std::vector<uint64_t> blocks;
    if (crashed_ && window_on()) {
      const uint64_t end = std::min<uint64_t>(sb_.alloc_window_end, sb_.total_blocks);
      for (uint64_t b = sb_.first_data_block; b < end && blocks.size() < kWindowReadMax; ++b) {
        if (formatted(b)) blocks.push_back(b);
      }
    }
    for (uint64_t b : sample_) {
      if (formatted(b)) blocks.push_back(b);
    }
    std::sort(blocks.begin(), blocks.end());
    blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
    progress_.total = blocks.size();
    for (uint64_t b : blocks) VSFS_TRY(check(b));
  }
  if (crash_residue_ > 0) {
    VSFS_LOG_INFO("{} formatted free block{} hold{} data from writes the last crash cut "
                  "short{}",
                  crash_residue_, crash_residue_ == 1 ? "" : "s", crash_residue_ == 1 ? "s" : "",
                  options_.repair ? "; moved to the to-be-formatted list" : "");
  }
  return ok_result();
}

// ---- pass 7: the namespace -----------------------------------------------------------

Result<void> Checker::check_namespace() {
  // Inode number -> how many entries name it; directories -> who names them.
  std::unordered_map<uint64_t, uint32_t> names;
  std::unordered_map<uint64_t, uint64_t> named_in;
  std::unordered_map<uint64_t, uint32_t> subdirs;
  std::unordered_map<uint64_t, std::vector<uint64_t>> children;  // directory -> subdirs
  bool complete = unreadable_.empty();

  uint64_t max_ino = 0;
  uint64_t visited = 0;
  for (auto& [ino, li] : live_) {
    tick(++visited);
    const format::InodeRecord& r = li.rec;
    max_ino = std::max(max_ino, ino);
    ++report_.inodes;
    const bool dir = S_ISDIR(r.mode);
    if (dir) {
      ++report_.dirs;
      if (!li.map_complete) complete = false;
    } else {
      ++report_.files;
    }
    if (li.map_complete && r.allocated_grains != li.mapped) {
      problem(Fix::kInode, ino * 4 + 1,
              fmt::format("inode {}: allocated_grains is {} but its map holds {} grains", ino,
                          r.allocated_grains, li.mapped));
    }
    if (!dir) continue;
    if (r.size_bytes % kGrainBytes != 0 || r.size_bytes / kGrainBytes < li.extent) {
      problem(Fix::kInode, ino * 4 + 2,
              fmt::format("inode {}: directory size is {} bytes but it has directory block {}",
                          ino, r.size_bytes, li.extent == 0 ? 0 : li.extent - 1));
    } else if (li.map_complete &&
               r.size_bytes / kGrainBytes - li.extent > format::kDirSlackBlocks) {
      // The daemon refuses to load such a directory rather than size its bookkeeping
      // from the recorded size.
      problem(Fix::kInode, ino * 4 + 2,
              fmt::format("inode {}: directory size is {} bytes, more than {} blocks past its "
                          "last directory block ({})",
                          ino, r.size_bytes, format::kDirSlackBlocks,
                          li.extent == 0 ? std::string("none") : std::to_string(li.extent - 1)));
    }
    std::sort(li.dir_blocks.begin(), li.dir_blocks.end(),
              [](const DirBlockSeen& a, const DirBlockSeen& b) { return a.index < b.index; });
    std::unordered_set<std::string> seen;
    for (const DirBlockSeen& db : li.dir_blocks) {
      auto it = dir_blocks_.find(db.grain);
      if (it == dir_blocks_.end()) continue;
      const format::DirBlock& block = it->second;
      for (const format::DirEntry& e : block.entries) {
        if (!seen.insert(e.name).second) {
          problem(Fix::kNone, 0,
                  fmt::format("directory {}: the name '{}' appears twice", ino, e.name));
          continue;
        }
        auto target = live_.find(e.ino);
        if (target == live_.end()) {
          if (!inode_unknown(e.ino)) {
            problem(Fix::kNone, 0,
                    fmt::format("directory {}: entry '{}' names inode {}, which does not exist",
                                ino, e.name, e.ino));
          }
          continue;
        }
        const bool target_dir = S_ISDIR(target->second.rec.mode);
        if (e.type != format::dirent_type(target->second.rec.mode)) {
          problem(Fix::kNone, 0,
                  fmt::format("directory {}: entry '{}' says inode {} is of type {}, but its "
                              "mode is 0{:o}",
                              ino, e.name, e.ino, e.type, target->second.rec.mode));
        }
        ++names[e.ino];
        if (target_dir) {
          ++subdirs[ino];
          named_in.emplace(e.ino, ino);
          children[ino].push_back(e.ino);
        }
      }
    }
  }
  if (sb_.inode_root != 0 && !inode_unknown(kRootIno)) {
    auto root = live_.find(kRootIno);
    if (root == live_.end()) {
      problem(Fix::kNone, 0, "inode 1 (the root directory) does not exist");
    } else if (!S_ISDIR(root->second.rec.mode)) {
      problem(Fix::kNone, 0, "inode 1 (the root directory) is not a directory");
    }
  }
  if (max_ino >= sb_.next_ino) {
    problem(Fix::kSuperblock, 2,
            fmt::format("superblock: next_ino is {} but inode {} exists", sb_.next_ino, max_ino));
  } else if (sb_.next_ino > format::kMaxInodeNumber) {
    // The daemon refuses it: no inode table can index inodes that far.
    problem(Fix::kSuperblock, 2,
            fmt::format("superblock: next_ino {} is above the largest inode number {}",
                        sb_.next_ino, format::kMaxInodeNumber));
  }

  // Link counts, parents and reachability need every directory and inode read.
  std::unordered_set<uint64_t> reached;
  if (live_.count(kRootIno)) {
    std::deque<uint64_t> queue{kRootIno};
    reached.insert(kRootIno);
    while (!queue.empty()) {
      const uint64_t d = queue.front();
      queue.pop_front();
      auto li = live_.find(d);
      for (const DirBlockSeen& db : li->second.dir_blocks) {
        auto it = dir_blocks_.find(db.grain);
        if (it == dir_blocks_.end()) continue;
        for (const auto& e : it->second.entries) {
          auto t = live_.find(e.ino);
          if (t == live_.end() || !reached.insert(e.ino).second) continue;
          if (S_ISDIR(t->second.rec.mode)) queue.push_back(e.ino);
        }
      }
    }
  }
  for (auto& [ino, li] : live_) {
    const format::InodeRecord& r = li.rec;
    const uint32_t n = names.count(ino) ? names[ino] : 0;
    if (r.nlink == 0 && n == 0) {
      ++orphans_;  // unlinked while open: freed by the next read-write open
      continue;
    }
    if (!S_ISDIR(r.mode)) {
      if (complete && r.nlink != n) {
        problem(Fix::kInode, ino * 4,
                fmt::format("inode {}: nlink is {} but {} directory entr{} name{} it", ino,
                            r.nlink, n, n == 1 ? "y" : "ies", n == 1 ? "s" : ""));
      }
    } else {
      if (ino == kRootIno) {
        if (n != 0) {
          problem(Fix::kNone, 0,
                  fmt::format("the root directory is named by {} directory entr{}", n,
                              n == 1 ? "y" : "ies"));
        }
        if (r.parent != kRootIno) {
          problem(Fix::kNone, 0,
                  fmt::format("inode 1: the root directory's parent is {}, not 1", r.parent));
        }
      } else if (complete && n == 0) {
        problem(Fix::kNone, 0,
                fmt::format("inode {}: directory with nlink {} is named by no directory entry",
                            ino, r.nlink));
      } else if (n > 1) {
        problem(Fix::kNone, 0,
                fmt::format("inode {}: directory is named by {} directory entries (a directory "
                            "has one name)",
                            ino, n));
      } else if (n == 1 && r.parent != named_in[ino]) {
        problem(Fix::kNone, 0,
                fmt::format("inode {}: directory's parent is {} but it is named in directory {}",
                            ino, r.parent, named_in[ino]));
      }
      const uint32_t want = 2 + (subdirs.count(ino) ? subdirs[ino] : 0);
      if (complete && r.nlink != want) {
        problem(Fix::kInode, ino * 4,
                fmt::format("inode {}: directory nlink is {} but it has {} subdirector{} "
                            "(expected nlink {})",
                            ino, r.nlink, want - 2, want - 2 == 1 ? "y" : "ies", want));
      }
    }
    if (complete && r.nlink > 0 && !reached.count(ino) && n > 0) {
      problem(Fix::kNone, 0,
              fmt::format("inode {}: it is named, but not reachable from the root directory "
                          "(a directory cycle)",
                          ino));
    }
  }
  if (orphans_ > 0) {
    VSFS_LOG_INFO("{} inode{} unlinked while open (nlink 0): freed when the datastore is "
                  "next opened read-write",
                  orphans_, orphans_ == 1 ? " was" : "s were");
  }
  return ok_result();
}

// ---- pass 8: repairs -----------------------------------------------------------------

Result<void> Checker::repair_block_table() {
  bool changed_any = false;
  uint64_t unformatted_after_crash = 0;  // formatted blocks moved after a crash
  AlignedBuffer buf(kGrainBytes, false);
  // The groups a repair may change: those kept, those holding referenced grains or
  // nonzero counts, those that did not decode, those with a formatted block found
  // holding data, and after a crash those of the allocation window (every group,
  // without one: all of them were read).
  std::vector<uint64_t> todo;
  if (crashed_ && !window_on()) {
    todo.resize(table_grains());
    for (uint64_t i = 0; i < table_grains(); ++i) todo[i] = i;
  } else {
    for (const auto& [g, entries] : groups_) todo.push_back(g);
    for (const auto& [b, r] : refs_) todo.push_back(group_of(b));
    for (const auto& [b, n] : table_used_) todo.push_back(group_of(b));
    for (uint64_t b : not_zero_) todo.push_back(group_of(b));
    todo.insert(todo.end(), bad_groups_.begin(), bad_groups_.end());
    add_window_groups(todo);
    std::sort(todo.begin(), todo.end());
    todo.erase(std::unique(todo.begin(), todo.end()), todo.end());
  }
  for (uint64_t i : todo) {
    const uint64_t self = table_grain(i);
    // A table grain that did not decode is rebuilt only from a complete walk.
    if (!block_grain_ok_[i] && !walk_complete_) continue;
    format::BlockTableGrain t;
    std::vector<std::string> lines;
    std::vector<uint64_t> fixed_blocks, fixed_zero;
    bool unformatted = false;  // formatted blocks moved to to-be-formatted after a crash
    for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
      const uint64_t b = i * format::kBlocksPerTableGrain + j;
      if (b >= sb_.total_blocks) break;
      const format::BlockEntry cur = block_grain_ok_[i] ? entry(b) : format::BlockEntry{};
      format::BlockEntry want = cur;
      if (fixed_block(b)) {
        want = format::BlockEntry{BlockState::kReserved, 0};
      } else if (walk_complete_) {
        const BlockUse u = use_of(b);
        const uint64_t used = u.referenced, data = u.data, meta = u.meta;
        want.used_grains = static_cast<uint16_t>(used);
        if (used == 0) {
          // Leaked (an allocation a crash interrupted) or free: it may hold old data.
          // After a crash a formatted one may too (see unformat_after_crash in
          // meta/space.cc): the sampled zero check cannot clear them all.
          if (cur.state != BlockState::kFormattedFree || !block_grain_ok_[i] ||
              not_zero_.count(b) || in_crash_window(b)) {
            want.state = BlockState::kToFormatFree;
          }
        } else if (data == 0 || meta == 0) {
          want.state = data > 0 ? BlockState::kData : BlockState::kMeta;
        } else if (cur.state != BlockState::kData && cur.state != BlockState::kMeta) {
          want.state = BlockState::kData;  // mixed: reported, not resolved; keep it in use
        }
      } else if (not_zero_.count(b) ||
                 (in_crash_window(b) && cur.state == BlockState::kFormattedFree)) {
        want.state = BlockState::kToFormatFree;
      }
      t.entries[j] = want;
      if (!block_grain_ok_[i]) continue;
      if (want.state == cur.state && want.used_grains == cur.used_grains) {
        // The entry agrees with the references found, and after check_refcounts() so
        // does the refcount table: a used_grains mismatch was the table's, now fixed.
        if (walk_complete_) retire(Fix::kBlock, b);
        continue;
      }
      if (not_zero_.count(b)) fixed_zero.push_back(b);
      if (walk_complete_) fixed_blocks.push_back(b);
      if (in_crash_window(b) && !not_zero_.count(b) && cur.state == BlockState::kFormattedFree &&
          want.state == BlockState::kToFormatFree && want.used_grains == cur.used_grains) {
        ++unformatted_after_crash;  // one summary line, not one per free block
        unformatted = true;
        continue;
      }
      lines.push_back(fmt::format("block table: block {} set to {} with {} used grains (was {} "
                                  "with {})",
                                  b, format::block_state_name(want.state), want.used_grains,
                                  format::block_state_name(cur.state), cur.used_grains));
    }
    if (block_grain_ok_[i] && lines.empty() && !unformatted) continue;
    grain_in_use_[i] = std::any_of(t.entries.begin(), t.entries.end(), [](const auto& e) {
      return e.state != BlockState::kFormattedFree;
    });
    format::encode_block_table(t, self, sb_.generation, format::Grain(buf.data(), kGrainBytes));
    VSFS_TRY(write_grain(self, buf));
    changed_any = true;
    if (!block_grain_ok_[i]) {
      repaired(Fix::kBlockGrain, i,
               fmt::format("block table grain {} rebuilt from the references found", self));
      for (uint64_t j = 0; j < format::kBlocksPerTableGrain; ++j) {
        retire(Fix::kBlock, i * format::kBlocksPerTableGrain + j);
        retire(Fix::kBlockZero, i * format::kBlocksPerTableGrain + j);
      }
      continue;
    }
    for (auto& line : lines) report_.repairs.push_back(std::move(line));
    for (uint64_t b : fixed_blocks) retire(Fix::kBlock, b);
    for (uint64_t b : fixed_zero) retire(Fix::kBlockZero, b);
  }
  if (unformatted_after_crash > 0) {
    report_.repairs.push_back(fmt::format(
        "block table: {} formatted free block{} moved to the to-be-formatted list (the "
        "datastore was not closed cleanly: they may hold data from writes the stop cut short)",
        unformatted_after_crash, unformatted_after_crash == 1 ? "" : "s"));
  }
  if (changed_any) VSFS_TRY(device::flush_sync(real_));
  return ok_result();
}

Result<void> Checker::write_space_summary() {
  AlignedBuffer buf(kGrainBytes, false);
  const uint64_t grains = format::space_summary_grains(table_grains());
  for (uint64_t k = 0; k < grains; ++k) {
    format::SpaceSummaryGrain s;
    for (uint64_t j = 0; j < format::kGroupsPerSummaryGrain; ++j) {
      const uint64_t i = k * format::kGroupsPerSummaryGrain + j;
      if (i < table_grains() && grain_in_use_[i]) s.set(j, true);
    }
    format::encode_space_summary(s, summary_grain(k), sb_.generation,
                                 format::Grain(buf.data(), kGrainBytes));
    VSFS_TRY(write_grain(summary_grain(k), buf));
  }
  return device::flush_sync(real_);
}

Result<void> Checker::repair_inodes() {
  // Changes per inode leaf grain: inode -> field fixes decided from the problems found.
  std::map<uint64_t, std::vector<uint64_t>> by_leaf;  // leaf grain -> problem keys
  for (const Problem& p : problems_) {
    if (p.fix != Fix::kInode || p.repaired) continue;
    const uint64_t ino = p.key / 4;
    auto it = live_.find(ino);
    if (it == live_.end()) continue;
    by_leaf[it->second.leaf_grain].push_back(p.key);
  }
  bool wrote = false;
  for (auto& [leaf_grain, keys] : by_leaf) {
    // A leaf shared with a snapshot would change the snapshot too: leave it.
    if (refs(leaf_grain) != 1) continue;
    const uint64_t first_ino = live_.at(keys.front() / 4).rec.ino / kInodesPerLeaf * kInodesPerLeaf;
    AlignedBuffer buf(kGrainBytes, false);
    VSFS_TRY(read_grain(leaf_grain, buf));
    auto leaf = format::decode_inode_leaf(cg(buf), leaf_grain, first_ino);
    if (!leaf.ok()) continue;
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::vector<std::pair<uint64_t, std::string>> done;
    for (uint64_t key : keys) {
      const uint64_t ino = key / 4;
      LiveInode& li = live_.at(ino);
      format::InodeRecord& r = leaf->inodes[ino - first_ino];
      if (r.ino != ino) continue;
      switch (key % 4) {
        case 0: {  // nlink
          uint32_t want = 0;
          if (S_ISDIR(r.mode)) {
            want = 2;
            for (const DirBlockSeen& db : li.dir_blocks) {
              auto it = dir_blocks_.find(db.grain);
              if (it == dir_blocks_.end()) continue;
              for (const auto& e : it->second.entries) {
                auto t = live_.find(e.ino);
                if (t != live_.end() && S_ISDIR(t->second.rec.mode)) ++want;
              }
            }
          } else {
            for (const auto& [dino, dli] : live_) {
              if (!S_ISDIR(dli.rec.mode)) continue;
              for (const DirBlockSeen& db : dli.dir_blocks) {
                auto it = dir_blocks_.find(db.grain);
                if (it == dir_blocks_.end()) continue;
                for (const auto& e : it->second.entries) want += e.ino == ino ? 1 : 0;
              }
            }
            if (want == 0) continue;  // not named anywhere: no safe choice
          }
          done.emplace_back(key, fmt::format("inode {}: nlink set to {} (was {})", ino, want,
                                             r.nlink));
          r.nlink = want;
          break;
        }
        case 1:  // allocated_grains
          if (!li.map_complete) continue;
          done.emplace_back(key, fmt::format("inode {}: allocated_grains set to {} (was {})",
                                             ino, li.mapped, r.allocated_grains));
          r.allocated_grains = li.mapped;
          break;
        case 2: {  // directory size: covering its blocks, and not far past the last
          if (!li.map_complete) continue;
          uint64_t want = std::max(round_up(r.size_bytes, kGrainBytes), li.extent * kGrainBytes);
          if (want / kGrainBytes - li.extent > format::kDirSlackBlocks) {
            want = li.extent * kGrainBytes;
          }
          done.emplace_back(key, fmt::format("inode {}: directory size set to {} bytes (was {})",
                                             ino, want, r.size_bytes));
          r.size_bytes = want;
          break;
        }
        default:
          break;
      }
    }
    if (done.empty()) continue;
    format::encode_inode_leaf(*leaf, leaf_grain, sb_.generation,
                              format::Grain(buf.data(), kGrainBytes));
    VSFS_TRY(write_grain(leaf_grain, buf));
    wrote = true;
    for (auto& [key, line] : done) repaired(Fix::kInode, key, std::move(line));
  }
  if (wrote) VSFS_TRY(device::flush_sync(real_));
  return ok_result();
}

uint64_t Checker::tracked_bytes() const {
  constexpr uint64_t kNode = 32;  // a hash-table node's link and hash, and its bucket
  return refs_.size() * (sizeof(uint64_t) + sizeof(BlockRefs) + kNode) +
         role_arrays_ * kGrainsPerBlock + multi_.size() * (16 + kNode) +
         groups_.size() * (sizeof(uint64_t) + sizeof(GroupEntries) + kNode) +
         refcount_read_.size() * (16 + kNode) + table_used_.size() * (16 + kNode) +
         (summary_bit_.size() + table_read_.size() + block_grain_ok_.size() +
          grain_in_use_.size()) / 8 +
         (sample_.size() + bad_groups_.size()) * sizeof(uint64_t) + not_zero_.size() * 48;
}

// ---- the driver ----------------------------------------------------------------------

Result<FsckReport> Checker::run() {
  begin_pass("superblock", 1);
  VSFS_TRY(load_superblock());
  end_pass();
  begin_pass("journal", 1);
  VSFS_TRY(replay_journal());
  end_pass();
  begin_pass("trees", 0);
  VSFS_TRY(walk());
  end_pass();
  begin_pass("block table", 0);
  VSFS_TRY(read_space_summary());
  VSFS_TRY(read_block_table());
  check_space_summary();
  end_pass();
  begin_pass("reference counts", 0);
  VSFS_TRY(check_refcounts());
  check_blocks();
  end_pass();
  begin_pass("free blocks", 0);
  VSFS_TRY(zero_check());
  end_pass();
  begin_pass("namespace", live_.size());
  VSFS_TRY(check_namespace());
  end_pass();
  if (options_.repair) {
    begin_pass("repairs", 1);
    VSFS_TRY(repair_block_table());
    VSFS_TRY(repair_inodes());
    // The summary follows the block table as repaired.
    if ((sb_.ro_compat & format::kRoCompatSpaceSummary) != 0 &&
        std::any_of(problems_.begin(), problems_.end(), [](const Problem& p) {
          return p.fix == Fix::kSummary || p.fix == Fix::kBlock || p.fix == Fix::kBlockGrain;
        })) {
      VSFS_TRY(write_space_summary());
      bool had = false;
      for (const Problem& p : problems_) had = had || (p.fix == Fix::kSummary && !p.repaired);
      if (had) repaired(Fix::kSummary, 0, "space summary rewritten from the block table");
    }
    bool sb_changed = false;
    for (const Problem& p : problems_) {
      if (p.fix == Fix::kSuperblock && p.key == 2 && !p.repaired) {
        const uint64_t max_ino = live_.empty() ? 0 : live_.rbegin()->first;
        const uint64_t was = sb_.next_ino;
        sb_.next_ino = std::max<uint64_t>(max_ino, kRootIno) + 1;
        sb_changed = true;
        repaired(Fix::kSuperblock, 2,
                 fmt::format("superblock: next_ino set to {} (was {})", sb_.next_ino, was));
        break;
      }
    }
    const bool clean = std::none_of(problems_.begin(), problems_.end(),
                                    [](const Problem& p) { return !p.repaired; });
    // An older datastore keeps the allocation window from now on (vsfs-format(5)): its
    // formatted blocks were just settled, so the window starts empty.
    if (clean && (sb_.ro_compat & format::kRoCompatAllocWindow) == 0) {
      sb_.ro_compat |= format::kRoCompatAllocWindow;
      sb_.alloc_window_end = 0;
      sb_changed = true;
      report_.repairs.push_back(
          "superblock: the allocation window is kept from now on (ro_compat bit 0x1): after "
          "a crash only the blocks it covers are formatted again");
    }
    // And the space summary, where the block table's region has room for it (a
    // datastore made before it, whose table filled its storage blocks, has none).
    if (clean && (sb_.ro_compat & format::kRoCompatSpaceSummary) == 0 &&
        format::space_summary_fits(sb_)) {
      VSFS_TRY(write_space_summary());
      sb_.ro_compat |= format::kRoCompatSpaceSummary;
      sb_changed = true;
      report_.repairs.push_back(
          "superblock: the space summary is kept from now on (ro_compat bit 0x2): a mount "
          "reads only the block-table grains of space in use");
    }
    // A datastore checked clean, with its journal replayed, is cleanly unmounted.
    if (clean && ((sb_.state & format::kStateClean) == 0 ||
                  (sb_.state & format::kStateMounted) != 0)) {
      sb_.state = (sb_.state | format::kStateClean) & ~format::kStateMounted;
      sb_changed = true;
    }
    if (sb_changed) VSFS_TRY(write_superblocks(sb_));
    end_pass();
  }
  for (auto& p : problems_) {
    if (!p.repaired) report_.problems.push_back(std::move(p.text));
  }
  report_.tracked_bytes = tracked_bytes();
  return std::move(report_);
}

}  // namespace

Result<FsckReport> fsck(device::Device& dev, const FsckOptions& options) {
  Checker checker(dev, options);
  return checker.run();
}

}  // namespace vsfs
