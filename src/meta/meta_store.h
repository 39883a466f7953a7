// MetaStore: the grain mapper ("file-system layer") of vsfs. It owns all metadata of an
// open datastore: the superblock, the metadata cache, the journal, the space
// accounting (block table and reference counts), the inode table, directories and the
// grain maps of disks, and the release list of trees waiting to be freed.
//
// Every metadata change is made to cached blocks and marked dirty; dirty blocks form the
// open transaction, which commit() writes to the journal (group commit: all changes
// since the last commit, one transaction). Home locations are written only by
// checkpoints. Copy-on-write: a tree node, directory block or grain whose reference
// count is above 1 is shared and is copied before it is changed; the copy takes a
// reference on each of the original's children.
//
// Space freed in the open transaction is quarantined until that transaction commits
// (grains) or until the checkpoint after it (whole storage blocks, which may change
// kind between data and metadata: journal replay must never write an old metadata image
// over a block that was reused for data).
//
// Threading: one mutex, mu(), guards all state. Methods named *_locked require the
// caller to hold it; the others take it. Device IO for commit and checkpoint happens
// with mu() released; commits are serialised by commit_mu_ (lock order: commit_mu_
// before mu_). Cache misses read the device synchronously while holding mu(). The
// cache is trimmed to its budget when mu() is released (meta_mutex.h), so pointers into
// cached blocks that *_locked methods return are valid until the caller releases it,
// and no longer: copy what must outlive the lock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "device/device.h"
#include "format/format.h"
#include "meta/free_blocks.h"
#include "meta/journal.h"
#include "meta/meta_cache.h"
#include "meta/meta_mutex.h"
#include "util/aligned_buffer.h"
#include "util/result.h"

namespace vsfs::meta {

using format::InodeRecord;
using format::Slot;
using format::SlotState;

struct MetaOptions {
  bool read_only = false;
  bool mark_mounted = true;
  bool force = false;
  // Budget of the metadata cache (meta_cache.h): clean blocks beyond it are evicted,
  // least recently used first, when mu() is released.
  uint64_t cache_budget_bytes = 128ull << 20;
  // The allocation window covers at least this many formatted free blocks (and twice
  // what the allocator took between the last two commits).
  uint64_t alloc_window_blocks = 64;
};

// What a lookup of one disk grain found.
struct GrainLookup {
  SlotState state = SlotState::kUnmapped;
  uint64_t grain = 0;     // physical grain when kMapped
  uint64_t stamp = 0;
  bool exclusive = false; // grain and every node above it have reference count 1
};

struct DirIndexEntry {
  uint64_t ino = 0;
  uint8_t type = 0;
  uint64_t block = 0;  // directory block index holding it
};

struct MetaCounters {
  uint64_t commits = 0, journal_bytes = 0, checkpoints = 0;
  uint64_t full_checkpoints = 0;  // of checkpoints: run because a transaction did not fit
  uint64_t tree_copies = 0;
};

// The datastore's lifetime counters (format::LifetimeCounters) as one mount sees them.
// `this_mount` is what this mount counted so far; `total` is what the superblock held
// when it was opened plus this_mount: what the next superblock write stores; `stored` is
// what the last superblock write of this mount stored (in the journal or at home), which
// is what a crash now would keep. A read-only mount never writes them.
struct LifetimeView {
  format::LifetimeCounters total, this_mount, stored;
};

// Reads the superblock, falling back to its copy when the primary is damaged.
Result<format::Superblock> read_superblock(device::Device& dev);

class MetaStore {
 public:
  ~MetaStore();
  MetaStore(const MetaStore&) = delete;
  MetaStore& operator=(const MetaStore&) = delete;

  // Reads the superblock (falling back to its copy), replays the journal, loads the
  // block table (the grains of space in use, with the space summary). Refuses unknown incompat features and, unless force, a datastore
  // marked mounted.
  static Result<std::unique_ptr<MetaStore>> open(device::Device& dev, const MetaOptions& options);

  MetaMutex& mu() { return mu_; }
  device::Device& dev() { return dev_; }
  bool read_only() const { return options_.read_only; }
  uint64_t generation_locked() const { return sb_.generation; }
  const format::Superblock& superblock_locked() const { return sb_; }

  // ---- transactions ----
  // Commits the open transaction (if it has changes) and flushes the device; returns
  // when durable. Serialised with other commits; takes mu() itself.
  Result<void> commit();
  // Commits, writes every home location, advances the journal tail, marks clean when
  // `clean` (unmount). Takes mu() itself.
  Result<void> checkpoint(bool clean);
  // True when the open transaction is large enough that the caller should commit soon.
  bool wants_commit_locked() const;
  // Blocks the open transaction may still take before it must be committed: half the
  // journal's capacity, so that it always fits (a transaction larger than the journal
  // cannot commit, and fails the datastore). Changes are admitted against it.
  uint64_t transaction_room_locked() const;
  // True when a checkpoint would free something: blocks freed by committed transactions
  // wait for one before they are handed out again, or the journal is half full.
  bool wants_checkpoint_locked() const;
  bool has_changes_locked() const;
  // Set after an IO error in commit: the datastore refuses further changes (EIO).
  bool failed() const { return failed_.load(); }

  // ---- inodes ----
  // `view` 0 is the live tree; a snapshot id reads that snapshot's frozen inode table.
  Result<const InodeRecord*> inode_locked(uint64_t ino, uint16_t view = 0);
  Result<InodeRecord*> inode_for_update_locked(uint64_t ino);  // COW + dirty
  Result<uint64_t> alloc_inode_locked(uint32_t mode, uint32_t uid, uint32_t gid,
                                      uint64_t parent, uint64_t now_ns);
  // Removes the inode record, lets its extra chain go and queues its map for release
  // (background).
  Result<void> free_inode_locked(uint64_t ino);

  // ---- inode extras: a symlink's target, xattrs (extra.cc) ----
  // Empty when the inode has none.
  Result<format::InodeExtra> extra_locked(uint64_t ino, uint16_t view = 0);
  // Replaces the inode's extra chain with one holding `e` (none when `e` is empty); the
  // caller checked the limits (inode_extra_bytes <= kMaxExtraBytes). Sets incompat bit
  // kIncompatPosixInodes with the first chain.
  Result<void> set_extra_locked(uint64_t ino, const format::InodeExtra& e);
  // Sets incompat bit kIncompatPosixInodes (the first symlink, fifo, socket or device).
  void use_posix_inodes_locked();
  uint64_t live_inodes_locked() const { return live_inodes_; }

  // ---- directories ----
  Result<const std::unordered_map<std::string, DirIndexEntry>*> dir_index_locked(
      uint64_t dir, uint16_t view = 0);
  Result<void> dir_add_locked(uint64_t dir, const std::string& name, uint64_t ino, uint8_t type);
  Result<void> dir_remove_locked(uint64_t dir, const std::string& name);
  // Entries in directory-block order (stable while the directory is unchanged).
  Result<std::vector<format::DirEntry>> dir_list_locked(uint64_t dir, uint16_t view = 0);

  // ---- grain maps of disks ----
  Result<GrainLookup> map_lookup_locked(uint64_t ino, uint64_t file_grain, uint16_t view = 0);
  // The same for `count` grains from `first`, walking the tree once per leaf. Without
  // want_exclusive, `exclusive` is left false (reads do not need it).
  Result<void> map_lookup_range_locked(uint64_t ino, uint64_t first, uint64_t count,
                                       uint16_t view, bool want_exclusive,
                                       std::vector<GrainLookup>& out);
  // Sets the slot of file_grain to `grain` (a reserved data grain that now holds the
  // data; it gets reference count 1) with stamp = current generation, releasing what the
  // slot held before. Updates allocated_grains.
  Result<void> map_install_locked(uint64_t ino, uint64_t file_grain, uint64_t grain);
  // When the grain mapped at file_grain belongs to `ino` alone, stamps its slot with the
  // current generation, keeping the grain, and returns true: the grain is about to be
  // written in place, once this change is committed. Returns false when a snapshot (or
  // a clone) still shares it. A lookup's `exclusive` does not tell: a snapshot shares a
  // disk's map through the inode table until the inode is first changed, so the inode's
  // path is made this generation's own before the map's is checked.
  Result<bool> map_restamp_locked(uint64_t ino, uint64_t file_grain);
  // True when `grain` has one reference now and had one at the last commit: only then
  // may its data be written in place. A count that dropped to 1 in a transaction not yet
  // durable does not count: after a crash the other holder is back, and would read what
  // was written in place.
  Result<bool> alone_locked(uint64_t grain);
  // Unmaps [first, first+count) (state kUnmapped), releasing grains; whole subtrees are
  // released through the release list when large.
  Result<void> map_unmap_range_locked(uint64_t ino, uint64_t first_grain, uint64_t count);
  // Allocation (fallocate mode 0): every grain of [first, first+count) that is unmapped
  // or zero gets a data grain of its own (reference count 1) in slot state kAllocated,
  // stamped now: it reads zeros until written. Mapped and allocated grains stay. Sets
  // incompat bit kIncompatAllocated with the first such slot. Returns how many grains it
  // allocated. On failure (kNoSpace) what was allocated before stays; the caller bounds
  // count so that the change fits one transaction, and checks the room first
  // (check_room_for_allocation_locked).
  Result<uint64_t> map_allocate_range_locked(uint64_t ino, uint64_t first, uint64_t count,
                                             uint64_t& hint_block);
  // Grains of [first, first+count) holding a physical grain (mapped or allocated).
  Result<uint64_t> map_count_held_locked(uint64_t ino, uint64_t first, uint64_t count);
  // The allocated grain `grain` at file_grain was written in full in place: the slot
  // becomes mapped (same grain, same reference), stamped now.
  Result<void> map_claim_allocated_locked(uint64_t ino, uint64_t file_grain, uint64_t grain);
  // Whether `grains` new data grains, and the map nodes to hold them, can be allocated
  // now; else ENOSPC (kNoSpace) saying how much is free.
  Result<void> check_room_for_allocation_locked(uint64_t grains) const;
  // Makes `dst` share `src`'s whole map (a clone): dst's old map is released, the root
  // gains a reference, size and allocated grains are copied. Later writes to either side
  // copy only the nodes and grains they touch. O(1) in the size of the map.
  Result<void> map_clone_locked(uint64_t src, uint16_t view, uint64_t dst);
  // Next mapped grain index >= from (data) or next unmapped/zero index >= from (hole),
  // below `limit`; returns limit when none.
  Result<uint64_t> map_seek_locked(uint64_t ino, uint64_t from, uint64_t limit, bool data,
                                   uint16_t view = 0);
  // Makes grains [first, first+count) of `dst` share those of `src` (in `view`), at the
  // same offsets: metadata only. Grains src does not map become zero in dst.
  Result<void> map_share_range_locked(uint64_t src, uint16_t view, uint64_t dst,
                                      uint64_t first, uint64_t count);

  // ---- metadata the data path does not wait for ----
  // While a NoWaitScope is open (under mu()), a cache miss that would read the device
  // fails with ErrorKind::kWouldBlock instead, and the missed block is remembered.
  // fetch_missed_locked() then reads it asynchronously: the request waits in that
  // block's own queue (one device read however many wait), and `done` runs without mu()
  // once the block is cached (or with the error). Lookups change nothing, so the caller
  // simply runs its lookup again. Other requests, whose metadata is cached, go on
  // meanwhile instead of waiting behind a synchronous read under the lock.
  class NoWaitScope {
   public:
    explicit NoWaitScope(MetaStore& ms) : ms_(ms) { ms_.no_wait_ = true; }
    ~NoWaitScope() { ms_.no_wait_ = false; }
    NoWaitScope(const NoWaitScope&) = delete;
    NoWaitScope& operator=(const NoWaitScope&) = delete;

   private:
    MetaStore& ms_;
  };
  void fetch_missed_locked(std::function<void(Result<void>)> done);
  // Blocks being fetched and requests waiting for them (the metadata read queue).
  uint64_t fetching_blocks_locked() const { return fetching_.size(); }
  uint64_t fetch_waiters_locked() const { return fetch_waiters_; }

  // ---- data grain allocation ----
  // Reserves a free data grain, preferring `hint` block's neighbours (updated). The
  // reservation keeps it from everyone else until map_install or unreserve.
  Result<uint64_t> reserve_data_grain_locked(uint64_t& hint_block);
  void unreserve_locked(uint64_t grain);
  // Whether data may not be written to `grain` before the next commit: its block was
  // taken from the formatted list past the durable allocation window, so a crash before
  // a commit covers it would leave data in a block recovery trusts to read zeros. The
  // write waits for the next commit (Services::after_next_commit).
  bool beyond_window_locked(uint64_t grain) const;
  // Whether a disk's map may lead a read or a write to `grain`: it must be a data grain
  // in use, inside the data area, in a storage block whose role is data (not metadata,
  // the fixed region, or a free block on either list), and not free inside that block.
  // Else a Corruption error (EUCLEAN) naming the grain. Costs no IO (see space.cc).
  Result<void> check_data_grain_locked(uint64_t grain) const;

  // ---- changed-block tracking ----
  struct Extent {
    uint64_t offset_bytes = 0, length_bytes = 0;
    bool data = true;  // false: the range reads zeros (unmapped or zeroed)
  };
  // What changed in disk `ino` of snapshot `view` since the backup point whose changeId
  // is *since (its next_ino: since_next_ino), clipped to the file size, sorted, merged.
  // A disk created or replaced wholesale after that point lists all of it; without
  // `since`, every allocated extent. Skips subtrees whose newest stamp is old, so the
  // cost follows what changed, not the disk's size.
  Result<std::vector<Extent>> changed_extents_locked(uint64_t ino, uint16_t view,
                                                     std::optional<uint64_t> since,
                                                     uint64_t since_next_ino);

  // ---- snapshots ----
  // Snapshot records, live and deleted (history), in creation order.
  const std::vector<format::SnapshotRecord>& snapshots_locked() const { return snaps_; }
  const format::SnapshotRecord* snapshot_by_id_locked(uint16_t id) const;
  // Names are scoped by directory: the live snapshot `name` of directory base_ino.
  const format::SnapshotRecord* snapshot_by_name_locked(uint64_t base_ino,
                                                        const std::string& name) const;
  // Freezes the tree (O(1): one more reference on the inode table root) as `name` with
  // view base_ino, taken by `taker_uid`, and bumps the generation. The caller makes sure
  // no write is in flight and has applied the snapshot policy. Errors: EEXIST (a live
  // snapshot of base_ino has the name), EINVAL (bad name), ENOSPC (too many snapshots).
  Result<format::SnapshotRecord> create_snapshot_locked(uint64_t base_ino, const std::string& name,
                                                        uint64_t now_ns, uint32_t taker_uid = 0);
  // Drops the snapshot's tree (released in the background) and keeps its name and
  // changeId on record: at most history_max deleted records per taker, so that one
  // user's deletions never push another's backup points out. With `keep_readable` (its
  // files are open) the deleted snapshot's view stays readable, and the releaser leaves
  // its tree alone, until unhold_snapshot_view_locked: in memory only, so after a crash
  // (nothing is open then) the release goes on.
  Result<void> delete_snapshot_locked(uint64_t base_ino, const std::string& name,
                                      bool keep_readable = false);
  void unhold_snapshot_view_locked(uint16_t id);
  bool snapshot_view_held_locked(uint16_t id) const { return held_views_.count(id) != 0; }
  void set_snapshot_history_max(uint32_t n) { history_max_ = n; }

  // ---- space a snapshot holds (snapshot_space.cc) ----
  // A walk over live snapshot `id`'s trees in bounded steps, with mu() released between
  // them. It lists the disks of the snapshot's view (its directory's subtree as it was),
  // adding up the data grains they map; then it follows, from the frozen inode table's
  // root, every grain all of whose references come from grains it already counted (a
  // count of 1, or a grain a clone inside the snapshot shares) down to the data grains:
  // exactly what the releaser would free if the snapshot were deleted now. Changes between steps may
  // move a grain from shared to the snapshot's alone after the walk passed it: the result
  // is as of the walk, never more than what the snapshot references.
  struct SpaceWalk {
    explicit SpaceWalk(uint16_t snapshot_id) : id(snapshot_id) {}
    uint16_t id;
    // Results, in grains.
    uint64_t exclusive_grains = 0;           // data and metadata only it references
    uint64_t referenced_data_grains = 0;     // data its view's disks map
    uint64_t exclusive_view_data_grains = 0; // of those, the ones only it references
    // Progress.
    struct Node {
      uint64_t grain;
      int level;  // tree level; -1 for a data grain or directory block; kExtraChain
      format::TreeKind kind;
      uint64_t ino;  // the inode whose map it belongs to (0 in the inode table)
    };
    static constexpr int kExtraChain = -2;  // the first block of an inode's extra chain
    uint64_t change_id = 0;          // of the snapshot when the walk began
    bool started = false;
    std::vector<uint64_t> dirs;      // directories of the view still to list
    std::unordered_set<uint64_t> files;  // the view's disks
    std::vector<Node> nodes;         // exclusive nodes still to visit
    bool root_reached = false;
    // Shared grains reached from exclusive nodes: how many of their references that is.
    std::unordered_map<uint64_t, uint32_t> reached;
    // Roots of trees in the release list when the walk began, and how many entries each.
    std::unordered_map<uint64_t, uint32_t> releasing;
  };
  // Runs up to `budget` visits; true when the walk is complete. ENOENT once the snapshot
  // is deleted.
  Result<bool> space_walk_step_locked(SpaceWalk& w, uint32_t budget);

  // ---- background release ----
  // Releases up to `budget` nodes' worth of the release list; returns true while work
  // remains. Takes mu() itself, per step.
  Result<bool> release_step(uint32_t budget);
  uint64_t release_pending_locked();

  // ---- delayed formatting ----
  // Takes a to-be-formatted block off its list for the formatter (so no allocation can
  // take it meanwhile); 0 when there is none.
  uint64_t take_block_to_format_locked();
  // The block now reads zeros: it goes to the formatted list (state in the open
  // transaction; a crash before the commit leaves it to be formatted again).
  Result<void> block_formatted_locked(uint64_t block);
  // Formatting failed: the block goes back to the to-be-formatted list.
  void block_format_failed_locked(uint64_t block);
  // True when freed space is waiting for a commit, a checkpoint or the releaser: a
  // write that failed with ENOSPC may succeed after reclaim_space().
  bool space_reclaimable_locked();
  // Releases everything on the release list and checkpoints, so that all freed space is
  // allocatable again. Takes the locks itself; never call it on a completion thread.
  Result<void> reclaim_space();

  // ---- growing (grow.cc) ----
  struct Grown {
    uint64_t old_bytes = 0, new_bytes = 0;
    uint64_t region_blocks = 0;  // storage blocks the new tables took
    bool formatted = false;      // the new blocks read zeros already (else: to format)
  };
  // Grows the datastore to `new_bytes` (0: the device's size, read again), which the
  // device must hold: the new blocks get their tables in a region of their own
  // (format::Growth), are zeroed by discard where the device reads discarded space as
  // zeros and otherwise go on the to-be-formatted list, and one commit makes them part
  // of the datastore. Refused for a smaller size (kInvalidArgument: shrinking is not
  // supported), for one below a minimal growth, read-only, and without the space
  // summary. `progress` (may be empty) hears the zeroing, as mkfs's steps. Takes the
  // locks itself; any thread but a completion thread.
  Result<Grown> grow(uint64_t new_bytes, const std::function<void(uint64_t done, uint64_t total)>& progress);

  // ---- space ----
  struct Space {
    uint64_t data_blocks = 0, used_grains = 0;
    uint64_t free_grains = 0;  // what writes can have: not the metadata blocks' room
    uint64_t formatted_blocks = 0, to_format_blocks = 0;
    uint64_t formatted_bytes_total = 0;  // formatted by the formatter since open
    bool window = false;                 // the allocation window is kept
    uint64_t window_end = 0;             // ... its durable end (a block number)
    uint64_t crash_reformat_blocks = 0;  // blocks the last recovery moved back to format
    bool summary = false;                // the space summary is kept
    uint64_t table_grains = 0;           // of the block table
    uint64_t table_grains_loaded = 0;    // ... held in memory (describing space in use)
    uint64_t damaged_free_blocks = 0;    // listed free, found in use: left alone
  };
  Space space_locked() const;
  MetaCounters counters_locked() const { return counters_; }

  // ---- lifetime counters (superblock, see LifetimeView) ----
  // This mount's counts that other layers make: the data path adds bytes read and
  // written and failed data IOs here, under mu(), where it counts its own. Snapshots,
  // formatting, the mount's time and an unclean start the meta layer counts itself. They
  // cost no IO: every superblock this store writes (each commit's journaled image, each
  // checkpoint, the open) carries the totals as they are when it is encoded.
  format::LifetimeCounters& lifetime_counts_locked() { return lifetime_mount_; }
  LifetimeView lifetime_locked() const;
  // mounted_seconds counts time read-write: the owner stops the clock while it refuses
  // changes (Datastore::set_read_only) and starts it again after. A store opened
  // read-only never counts.
  void count_read_write_time_locked(bool read_write);
  MetaCacheStats cache_stats_locked() const { return cache_.stats(); }
  // Directory indexes held, and their estimated memory (which shares the cache's budget).
  uint64_t dir_indexes_locked() const { return dirs_.size(); }
  uint64_t dir_index_bytes_locked() const { return dir_bytes_; }

  // Reference count of a grain (for tests and fsck).
  Result<uint16_t> refcount_locked(uint64_t grain);

 private:
  MetaStore(device::Device& dev, const MetaOptions& options);
  friend class TreeOps;

  // The journal's images awaiting a checkpoint count against the cache's budget.

  // -- space (space.cc) --
  Result<void> load_block_table();
  // After a crash: every formatted free block to the to-be-formatted list (space.cc),
  // committed in transactions the journal can hold. From open(), before other threads.
  Result<void> unformat_after_crash();
  // The block's entry, to change: its block-table grain is loaded first (the free lists'
  // group made explicit), and the space summary follows at the next commit.
  Result<format::BlockEntry*> block_entry_for_update_locked(uint64_t block);
  // Costs no IO: a block whose grain is not loaded is formatted free.
  format::BlockEntry block_entry_locked(uint64_t block) const;
  // Loads block-table grain `group` into the free lists (open, and fsck's view).
  Result<void> load_group_locked(uint64_t group);
  // Makes the block's group explicit, reading its block-table grain (which must say
  // every block there is formatted free) when it is not loaded yet. Changes nothing on
  // failure.
  Result<void> ensure_group_locked(uint64_t block);
  // Before a commit takes the dirty blocks: the space summary's bit of every changed
  // block-table grain, and groups that are all formatted free again go back to implicit.
  void update_space_summary_locked();
  // The block after `block`, skipping groups not loaded (formatted free: nothing in use
  // there); total_blocks at the end. For walks over the blocks in use.
  uint64_t next_loaded_block_locked(uint64_t block) const;
  Result<uint16_t> incref_locked(uint64_t grain);
  Result<uint16_t> decref_locked(uint64_t grain);  // frees at 0 (quarantined)
  Result<uint64_t> alloc_meta_grain_locked();      // refcount 1, not yet written
  // A metadata block gets its backing storage first (device kAllocate: a sparse file's
  // filesystem may be full), so that no metadata write ever fails for want of space;
  // when there is no room for one, the spare (below) is used, and ENOSPC when it is gone.
  Result<uint64_t> take_free_block_locked(format::BlockState kind);
  // The window's end the allocator may use now: the smaller of the durable one and the
  // one being committed (a crash may leave either as the last).
  uint64_t window_allowed_locked() const;
  // The end of the window the next commit records: past the lowest formatted free blocks
  // (at least options_.alloc_window_blocks, twice what was taken since the last commit) and past
  // every block taken beyond the last window.
  uint64_t next_window_locked() const;
  // Backing storage for [first_block, +count) storage blocks: kNoSpace when the
  // filesystem holding the datastore is full.
  Result<void> back_blocks_locked(uint64_t first_block, uint64_t count);
  // Keeps one free block backed and set aside for metadata (meta_spare_), so that the
  // metadata of a change that frees space (an unlink on a full host filesystem) always
  // has room. Best effort: none when nothing can be backed.
  void keep_meta_spare_locked();
  // At a read-write open, after the fixed regions (before the replay): backs every
  // metadata block (a datastore made before they were backed at allocation).
  Result<void> back_metadata_locked();
  // Turns a reservation into reference count 1.
  Result<void> take_reservation_locked(uint64_t grain);
  // Whether `block`, on a free list, is free by its block-table entry and its grains'
  // reference counts too; logs the damage when not (and counts it).
  Result<bool> free_in_fact_locked(uint64_t block);
  bool grain_available_locked(uint64_t grain);
  void on_grain_freed_locked(uint64_t grain);

  // -- trees (tree.cc) --
  struct TreeRoot {
    uint64_t* root;
    uint8_t* height;
    format::BlockType leaf_type;      // kMapLeaf or kInodeLeaf
    format::BlockType interior_type;  // kMapInterior or kInodeInterior
    uint64_t owner;
  };
  uint64_t tree_leaf_capacity(uint8_t height) const;
  // The leaf covering leaf number `leaf_no`, or 0 when not present (then `covering`, if
  // given, is the interior slot that stands for the missing subtree). exclusive, if
  // given, is set when the leaf and all nodes above it have reference count 1.
  Result<uint64_t> tree_find_leaf_locked(uint64_t root, uint8_t height, uint64_t leaf_no,
                                         bool inode_tree, bool* exclusive, Slot* covering);
  Result<uint64_t> new_node_locked(format::BlockType type, uint8_t level, uint64_t owner,
                                   uint64_t leaf_no, const Slot& fill);
  TreeRoot map_root_of(InodeRecord* rec, uint64_t ino);
  TreeRoot inode_tree_locked();
  Result<uint64_t> count_mapped_locked(uint64_t grain, int level);
  Result<uint64_t> count_held_in_node_locked(uint64_t grain, int level, uint64_t base,
                                             uint64_t first, uint64_t end);
  Result<uint64_t> unmap_in_node_locked(uint64_t grain, int level, uint64_t base, uint64_t first,
                                        uint64_t end, uint64_t stamp, uint64_t owner);
  Result<uint64_t> seek_in_node_locked(uint64_t grain, int level, uint64_t base, uint64_t from,
                                       uint64_t limit, bool data);
  Result<void> walk_changes_locked(uint64_t grain, int level, uint64_t base, uint64_t limit,
                                   std::optional<uint64_t> since, bool zeros_too,
                                   std::vector<Extent>& out);
  // Whether a release-list entry is a held snapshot's tree (delete_snapshot_locked).
  bool release_held_locked(const format::ReleaseEntry& e) const;
  // Drops the cached directory indexes of a snapshot's view.
  void drop_view_dirs_locked(uint16_t view);
  Result<bool> release_partial_locked(uint64_t grain, int level, format::TreeKind kind,
                                      uint32_t& budget);
  Result<void> scan_inodes_locked();
  // The leaf covering leaf_no made private (copied where shared) and present (created
  // where missing), every node on the path dirty; raises interior stamps to `stamp`.
  Result<uint64_t> tree_leaf_for_update_locked(TreeRoot tr, uint64_t leaf_no, uint64_t stamp);
  // Copies a shared node: a new grain with the same content, children increfed,
  // the old node decrefed. Returns the new grain.
  Result<uint64_t> cow_node_locked(uint64_t grain, format::BlockType type, uint64_t first_ino = 0);
  Result<void> incref_children_locked(uint64_t grain);
  // Drops the reference on the chain's first block; a block whose count reaches zero
  // drops the next one's.
  Result<void> drop_extra_locked(uint64_t first);
  Result<void> push_release_locked(uint64_t root, uint8_t height, format::TreeKind kind,
                                   uint64_t owner);

  // -- journal and cache plumbing (meta_store.cc) --
  Result<void> commit_inner();
  Result<void> checkpoint_inner(bool clean);
  // Flushes the device's volatile cache; commit_mu_ held. With `only_if_written`, not
  // when no write has completed since the last flush was issued (an fsync with nothing
  // new to make durable costs nothing).
  Result<void> flush_device_inner(bool only_if_written);
  // The cached block at `grain`, read and decoded on a miss. first_ino: for inode leaves.
  Result<CachedBlock*> get_locked(uint64_t grain, format::BlockType type, uint64_t first_ino = 0);
  void mark_dirty_locked(uint64_t grain);
  void mark_sb_dirty_locked() { sb_dirty_ = true; }
  uint64_t refcount_grain_of(uint64_t grain) const;
  uint64_t block_table_grain_of(uint64_t block) const;
  // The space-summary grain holding group (block-table grain) `group`'s bit.
  uint64_t summary_grain_of(uint64_t group) const;

  device::Device& dev_;
  MetaOptions options_;

  std::mutex commit_mu_;  // serialises commit/checkpoint; taken before mu_
  std::mutex grow_mu_;    // one grow() at a time; taken before commit_mu_ and mu_
  // Device writes, discards and write-zeroes that had completed when the last successful
  // flush was issued (flush_device_inner). Guarded by commit_mu_.
  uint64_t flushed_writes_ = 0;
  MetaCache cache_;       // guarded by mu_, which trims it
  // What mu_ trims when it is released: directory indexes beyond their share of the
  // budget, then the cache.
  struct Trimmer final : Trimmable {
    explicit Trimmer(MetaStore& ms) : ms(ms) {}
    bool over_budget() const override { return ms.cache_.over_budget(); }
    void trim() override { ms.trim_locked(); }
    MetaStore& ms;
  };
  Trimmer trimmer_{*this};
  MetaMutex mu_{trimmer_};
  format::Superblock sb_;          // guarded by mu_; the open transaction's view
  format::Superblock committed_sb_;  // as of the last commit: what a checkpoint writes
  bool sb_dirty_ = false;
  std::unique_ptr<Journal> journal_;
  std::vector<uint64_t> dirty_;    // grains dirtied in the open transaction
  AlignedBuffer miss_buf_{kGrainBytes, false};  // guarded by mu_: get_locked reads misses here
  // Quarantine: grains freed in the open transaction, and storage blocks freed since the
  // last checkpoint, are not handed out again yet.
  std::unordered_set<uint64_t> freed_open_;         // grains freed in the open txn
  std::unordered_set<uint64_t> freed_committing_;   // grains freed in the txn being written
  // Grains (data or tree nodes) whose reference count dropped, to 1 or more, in the open
  // txn or the one being written: shared as far as a crash now would know, so nothing
  // may write them in place (see alone_locked).
  std::unordered_set<uint64_t> unshared_open_;
  std::unordered_set<uint64_t> unshared_committing_;
  std::vector<uint64_t> blocks_freed_open_;         // blocks freed in the open txn
  std::vector<uint64_t> blocks_freed_committing_;   // ... in the txn being written
  std::vector<uint64_t> blocks_freed_committed_;    // ... committed, awaiting a checkpoint
  std::unordered_set<uint64_t> reserved_;           // data grains reserved for in-flight writes
  std::unordered_map<uint64_t, uint32_t> block_reserved_;  // reservations per block

  // Space: the free lists (free_blocks.h). Their explicit groups are the block-table
  // grains loaded (and pinned): at open, those the space summary marks (all of them
  // without it); later, a grain as the allocator first takes a block it describes.
  FreeBlocks free_;
  bool summary_on_ = false;             // ro_compat kRoCompatSpaceSummary
  std::set<uint64_t> groups_changed_;   // block-table grains changed since the last commit
  // The allocation window (ro_compat kRoCompatAllocWindow, space.cc): the allocator takes
  // formatted free blocks below window_allowed_locked() first; a data block it takes at
  // or past it waits in beyond_window_ until a durable window covers it.
  bool window_on_ = false;
  uint64_t window_durable_ = 0;                 // of the last durable superblock
  std::optional<uint64_t> window_inflight_;     // of the commit being written
  std::set<uint64_t> beyond_window_;
  uint64_t damaged_free_blocks_ = 0;  // free_in_fact_locked found them in use
  uint64_t taken_since_commit_ = 0;             // blocks taken since the last window
  uint64_t crash_reformat_blocks_ = 0;
  uint64_t used_grains_ = 0;
  uint64_t meta_slack_grains_ = 0;       // unused grains of metadata blocks
  uint64_t formatting_ = 0;              // blocks taken by the formatter, in flight
  uint64_t formatted_bytes_total_ = 0;
  uint64_t meta_block_ = 0;       // current metadata block (0 = none)
  // A backed free block held back from both free lists for metadata (0 = none); its
  // grains count as metadata slack, so no write is promised them.
  uint64_t meta_spare_ = 0;
  uint64_t meta_cursor_ = 0;
  uint64_t live_inodes_ = 0;

  // Directory indexes (name -> entry), built from a directory's blocks on first use and
  // kept in step with its changes. They share the metadata cache's budget: their
  // estimated memory counts as held outside the cache, and a trim drops the least
  // recently used ones beyond an eighth of the budget (kDirShare); a dropped index is
  // built again on next use. Like cached blocks, one is only dropped when the mutex is
  // released, so a DirIndex pointer is good while its holder keeps the mutex.
  static constexpr uint64_t kDirShare = 8;
  struct DirIndex {
    std::unordered_map<std::string, DirIndexEntry> names;
    std::vector<uint32_t> used_bytes;  // per directory block
    uint64_t bytes = 0;                // estimated memory
    std::list<uint64_t>::iterator lru; // its key in dir_lru_
  };
  std::unordered_map<uint64_t, DirIndex> dirs_;
  std::list<uint64_t> dir_lru_;  // keys of dirs_, most recently used first
  uint64_t dir_bytes_ = 0;       // sum of their bytes
  Result<DirIndex*> load_dir_locked(uint64_t dir, uint16_t view = 0);
  // An index's own memory besides its names: the map node holding it, its LRU node,
  // the allocations' overhead.
  static constexpr uint64_t kDirIndexBytes = 256;
  void dir_account_locked(DirIndex& idx, int64_t delta);  // its names changed
  void drop_dir_locked(uint64_t key);
  // Drops directory indexes beyond their share, then trims the cache.
  void trim_locked();
  // Tells the cache what metadata memory outside it shares its budget: the journal's
  // pending images and the directory indexes.
  void account_outside_locked();
  Result<CachedBlock*> dir_block_for_update_locked(uint64_t dir, uint64_t index);

  MetaCounters counters_;
  // Lifetime counters, guarded by mu_: as the superblock held them at open (before this
  // mount), this mount's counts (formatted bytes and seconds are filled in when read),
  // and what the last superblock write stored. Every superblock write samples the total
  // under mu_ and commit_mu_, so successive writes never store less than earlier ones.
  format::LifetimeCounters lifetime_at_open_;
  format::LifetimeCounters lifetime_mount_;
  format::LifetimeCounters lifetime_stored_;
  // Read-write time of this mount: the stretches that ended, and the start (monotonic)
  // of the one going on, 0 while not read-write.
  uint64_t read_write_ns_ended_ = 0;
  uint64_t read_write_since_ns_ = 0;
  format::LifetimeCounters lifetime_total_locked() const { return lifetime_locked().total; }
  std::vector<format::SnapshotRecord> snaps_;  // the snapshot list, in creation order
  std::vector<uint64_t> snap_blocks_;          // grains of the on-disk chain
  uint32_t history_max_ = 1024;
  uint16_t last_snap_id_ = 0;
  // Deleted snapshots still read through open files: their records as they were.
  std::unordered_map<uint16_t, format::SnapshotRecord> held_views_;
  Result<void> load_snapshots_locked();
  Result<void> store_snapshots_locked();
  static uint64_t dir_key(uint64_t dir, uint16_t view) { return (uint64_t{view} << 48) | dir; }
  std::atomic<bool> failed_{false};

  // No-wait lookups and the fetch queue (see NoWaitScope).
  struct Missed {
    uint64_t grain = 0;
    format::BlockType type = format::BlockType::kMapLeaf;
    uint64_t first_ino = 0;
  };
  // One block being read: its waiters and the read's own buffer.
  struct Fetch {
    std::vector<std::function<void(Result<void>)>> waiters;
    Missed missed;
    uint64_t checkpoints_at_issue = 0;  // checkpoint_starts_ when the read was issued
    AlignedBuffer buf;
    iovec vec{};
  };
  void fetch_done(uint64_t grain, int64_t result);
  // The newest image of a metadata grain when it is committed but not yet at its home
  // (the journal's pending images), else null.
  const uint8_t* journal_image_locked(uint64_t grain) const;
  uint64_t checkpoint_starts_ = 0;  // guarded by mu_
  bool no_wait_ = false;                         // guarded by mu_
  Missed missed_;                                // guarded by mu_: the last no-wait miss
  std::unordered_map<uint64_t, Fetch> fetching_;  // guarded by mu_: by grain
  uint64_t fetch_waiters_ = 0;                   // guarded by mu_
};

}  // namespace vsfs::meta
