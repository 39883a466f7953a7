// vsfs::Datastore: the public API of a vsfs datastore (a device holding the SE-grain
// format), used by vsfs-mount, vsfs-fsck, the examples and the tests.
//
// Namespace operations (lookup, create, rename, ...) work on in-memory metadata and
// return when the change is in the open journal transaction; they are durable after the
// next commit (fsync of any file, the commit interval, or close). Data operations
// (read, write, punch, truncate, fsync) are asynchronous: they return at once and call
// `done` exactly once, on a device completion thread, when the result is known. The
// *_sync helpers wait for that; never call them from inside a `done` callback.
//
// Thread-safety: every method may be called from any thread at any time between
// open() and close(). Inode numbers are stable for the life of a file and never reused.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "util/result.h"

namespace vsfs {
namespace device { class Device; }

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;

// An inode number carries a view in its top 16 bits: 0 is the live tree, 1..0xfffc a
// snapshot (read-only), kSnapshotsDirView the ".snapshots" directory of the live
// directory whose inode number is in the low 48 bits, kCbtView a node of a ".cbt" tree
// (the low bits number the node).
inline constexpr int kViewShift = 48;
inline constexpr uint16_t kSnapshotsDirView = 0xfffe;
inline constexpr uint16_t kCbtView = 0xfffd;
inline constexpr const char* kSnapshotsDirName = ".snapshots";
inline constexpr const char* kCbtDirName = ".cbt";
constexpr uint16_t view_of(Ino ino) { return static_cast<uint16_t>(ino >> kViewShift); }
constexpr Ino base_of(Ino ino) { return ino & ((Ino{1} << kViewShift) - 1); }
constexpr Ino make_ino(uint16_t view, Ino base) { return (Ino{view} << kViewShift) | base; }

struct SnapshotInfo {
  std::string name;
  uint64_t change_id = 0;   // the generation it froze
  uint64_t created_ns = 0;
  Ino base_ino = 0;         // the snapshotted directory
  uint16_t id = 0;          // its view
  bool deleted = false;     // kept on record for changed-block queries
  uint32_t taker_uid = 0;   // who took it
};

// The space a live snapshot holds (Datastore::snapshot_space), as of the query.
struct SnapshotSpaceInfo {
  uint64_t exclusive_bytes = 0;   // only it references them: what deleting it frees
  uint64_t referenced_bytes = 0;  // data its disks map
  uint64_t shared_bytes = 0;      // of referenced_bytes, what others (the live tree,
                                  // other snapshots, clones) reference too
};

// Who may take a snapshot of a directory other than the root (vsfs(7)). Snapshots of
// the root, of the whole datastore, are root's alone.
enum class SnapshotTakers : uint8_t {
  kOwner,    // the directory's owner and root
  kWriters,  // whoever may write the directory (the kernel checks; .snapshots has the
             // directory's permission bits, with the sticky bit)
  kRoot,     // root only
};
struct SnapshotPolicy {
  SnapshotTakers takers = SnapshotTakers::kOwner;
  // Limits on users other than root (0 = none): live snapshots of one directory, live
  // snapshots one user took, and the bytes that user's snapshots hold alone (checked
  // when the user takes one: EDQUOT once the sum reached it).
  uint32_t max_per_directory = 32;
  uint32_t max_per_user = 256;
  uint64_t max_held_bytes_per_user = 0;
};

struct Attr {
  Ino ino = 0;
  uint32_t mode = 0;  // file type (S_IFREG, S_IFDIR, S_IFLNK, ...) | permission bits
  uint32_t uid = 0, gid = 0, nlink = 0;
  uint64_t rdev = 0;  // character and block devices
  uint64_t size_bytes = 0;
  uint64_t allocated_bytes = 0;  // grains mapped * 4096 (st_blocks = this / 512)
  uint64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0, btime_ns = 0;
};

struct DirEntryInfo {
  std::string name;
  Ino ino = 0;
  uint32_t mode = 0;  // the file type (type bits only)
};

struct SetAttr {
  std::optional<uint32_t> mode;  // permission bits only
  std::optional<uint32_t> uid, gid;
  std::optional<uint64_t> size_bytes;
  std::optional<uint64_t> atime_ns, mtime_ns;
};

struct SpaceInfo {
  uint64_t total_bytes = 0;      // data area (storage blocks the allocator may use)
  uint64_t used_bytes = 0;       // grains in use (data and metadata)
  uint64_t free_bytes = 0;       // free grains, both free lists included
  // What writes can still take: free_bytes, or less on a sparse file whose filesystem
  // has less room left (Device::backing_free_bytes).
  uint64_t available_bytes = 0;
  uint64_t formatted_blocks = 0;   // free and reading zeros
  // The allocation window (vsfs-format(5), ro_compat bit 0): its durable end, a block
  // number (0 without the feature), and how many formatted blocks the last recovery
  // moved back to be formatted.
  bool alloc_window = false;
  uint64_t alloc_window_end = 0, crash_reformat_blocks = 0;
  uint64_t to_format_blocks = 0;   // free, to be formatted before reuse
  // The space summary (vsfs-format(5), ro_compat bit 1) is kept: only the block-table
  // grains of space in use are held in memory (table_grains_loaded of table_grains);
  // without it, all of them.
  bool space_summary = false;
  uint64_t table_grains = 0, table_grains_loaded = 0;
  uint64_t formatted_bytes_total = 0;  // formatted by the background formatter
  // Storage blocks listed as free whose block-table entry or reference counts say they
  // are in use (damaged metadata): never handed out; vsfs-fsck -y repairs them.
  uint64_t damaged_free_blocks = 0;
  uint64_t inodes = 0;           // live inodes
};

// One kind of resource queue: requests that waited for a busy resource.
struct QueueStats {
  uint64_t waits = 0;      // requests that had to wait
  uint64_t waiting_now = 0;
  uint64_t wait_us_p50 = 0, wait_us_p99 = 0, wait_us_max = 0;  // over all waits
};

// The metadata cache (OpenOptions::meta_cache_bytes).
struct MetaCacheInfo {
  uint64_t bytes = 0;              // estimated memory of the cached blocks
  uint64_t budget_bytes = 0;
  uint64_t unevictable_bytes = 0;  // of bytes: blocks changed and not yet committed,
                                   // and the block-table grains of space in use
  uint64_t blocks = 0;
  uint64_t hits = 0, misses = 0;   // lookups of a block; a miss reads it from the device
  uint64_t evictions = 0;
  // Directory indexes (name lookups) held beside the blocks, sharing their budget.
  uint64_t dir_indexes = 0;
  uint64_t dir_index_bytes = 0;
};

// Counters over the datastore's whole life, kept in its superblock across mounts (see
// vsfs-format(5)): bytes clients read and wrote, data IOs the device failed (of the
// writes, ENOSPC), read-write mounts that found it not unmounted cleanly, snapshots taken
// and deleted, bytes the background formatter formatted, and seconds mounted read-write.
struct LifetimeCounts {
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t read_errors = 0, write_errors = 0, no_space_errors = 0;
  uint64_t unclean_mounts = 0;
  uint64_t snapshots_taken = 0, snapshots_deleted = 0;
  uint64_t formatted_bytes = 0;
  uint64_t mounted_seconds = 0;
};

// The lifetime counters as this mount sees them. total: what the superblock held at
// mount plus this_mount, what the next superblock write stores. stored: what the last
// superblock write stored (a crash now keeps that). A read-only mount never writes them.
struct LifetimeStats {
  LifetimeCounts total, this_mount, stored;
};

struct DatastoreStats {
  SpaceInfo space;
  uint64_t read_requests = 0, write_requests = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t in_place_grain_writes = 0, redirected_grain_writes = 0;
  // In place only because no grain was free: the disk alone held it, its stamp was stale.
  uint64_t restamped_grain_writes = 0;
  // Writes that waited for a commit because their block was taken past the allocation
  // window.
  uint64_t window_waits = 0;
  uint64_t device_ops[6] = {};  // by device::OpKind
  uint64_t device_in_flight = 0, device_in_flight_peak = 0;
  uint64_t journal_commits = 0, journal_bytes = 0, checkpoints = 0;
  uint64_t full_journal_checkpoints = 0;  // of checkpoints: the journal was full
  uint64_t release_pending = 0;  // trees waiting in the release list
  uint64_t generation = 0;
  uint32_t format_rate_mib_s = 0;
  bool formatter_running = false;
  // Resource queues: grains of a disk busy with another request (allocation, copy,
  // overlapping IO), changes held back while a snapshot is cut, map nodes (and other
  // metadata blocks) being read into the cache, and IOs beyond the device's queue depth.
  // Changes held back while the open transaction is as large as the journal allows
  // (they go on after the next commit, or when a change in progress ends).
  QueueStats grain_queue, snapshot_queue, metadata_queue, journal_queue;
  uint64_t device_queued_now = 0;
  // Nodes of the .cbt trees (paths looked up, of live snapshots), the texts of .cbt
  // files held in memory, their bytes and the bound on them.
  uint64_t cbt_nodes = 0, cbt_texts = 0, cbt_text_bytes = 0, cbt_text_budget_bytes = 0;
  MetaCacheInfo meta_cache;
  // Which datastore: its UUID (from vsfs-mkfs) and how often it was opened read-write.
  std::array<uint8_t, 16> uuid{};
  uint64_t mount_count = 0;
  // Health: data IOs the device failed (no_space: of the writes, ENOSPC: the host
  // filesystem under a datastore file is full), and whether a metadata write failed
  // (the datastore then refuses changes until it is mounted again).
  uint64_t device_read_errors = 0, device_write_errors = 0, device_no_space = 0;
  bool metadata_failed = false;
  bool read_only = false;  // opened read-only, or turned read-only (set_read_only)
  LifetimeStats lifetime;
};

struct OpenOptions {
  bool read_only = false;
  uint32_t commit_interval_ms = 1000;  // background commit of namespace changes
  // Bound on the metadata cache: clean blocks beyond it are evicted, least recently used
  // first; blocks changed in the open transaction stay until it commits.
  uint64_t meta_cache_bytes = 128ull << 20;
  // The allocation window's least size in storage blocks (vsfs-format(5)): after a crash
  // at most this many formatted blocks, or twice what one commit interval took, are
  // formatted again. A smaller one makes more first writes into a new block wait for a
  // commit.
  uint64_t alloc_window_blocks = 64;
  // Mark the superblock "mounted" while open; refuse a datastore marked mounted unless
  // force (the mark survives a crash; vsfs-mount's exclusive lock tells a live owner).
  bool mark_mounted = true;
  bool force = false;
  // Commit timer, releaser and formatter threads. Without them the owner runs the same
  // work with run_background_step(), and an fsync commits on the caller's thread.
  bool start_background = true;
  // Background formatting of freed storage blocks, MiB/s (0 = off). It yields to
  // foreground IO.
  uint32_t format_rate_mib_s = 256;
  // Deleted snapshots kept on record (name and changeId) for changed-block queries, per
  // user who took them.
  uint32_t cbt_history = 1024;
  SnapshotPolicy snapshot_policy;
  // Memory for the texts of .cbt files: the least recently read are dropped beyond it
  // (the most recent one always stays) and made again when read.
  uint64_t cbt_text_cache_bytes = 32ull << 20;
};

enum class RenameFlags : uint32_t { kNone = 0, kNoReplace = 1, kExchange = 2 };

// The datastore's background work, one step at a time (Datastore::run_background_step).
enum class BackgroundStep {
  kCommit,          // the committer's round: retry writes waiting for space, commit,
                    // answer waiting fsyncs, checkpoint when one would free something
  kCommitIfWanted,  // the same, only when something waits or the transaction is large
  kRelease,         // one bounded step of releasing deleted files' and snapshots' trees
  kFormat,          // format one storage block of the to-be-formatted list
};

template <typename T>
using Done = std::function<void(Result<T>)>;

struct Progress;
struct GrowReport;

class Datastore {
 public:
  virtual ~Datastore() = default;

  // Opens the datastore on `dev`, replaying the journal. Errors: kCorruption (not a
  // datastore, damaged), kUnsupported (unknown incompat feature), kBusy (marked mounted).
  static Result<std::unique_ptr<Datastore>> open(std::unique_ptr<device::Device> dev,
                                                 const OpenOptions& options);
  // Commits, checkpoints, marks the datastore clean. After close() only the destructor.
  virtual Result<void> close() = 0;

  // ---- namespace ----
  virtual Result<Attr> lookup(Ino parent, const std::string& name) = 0;
  virtual Result<Attr> getattr(Ino ino) = 0;
  virtual Result<Attr> create(Ino parent, const std::string& name, uint32_t mode,
                              uint32_t uid, uint32_t gid) = 0;
  virtual Result<Attr> mkdir(Ino parent, const std::string& name, uint32_t mode,
                             uint32_t uid, uint32_t gid) = 0;
  virtual Result<void> unlink(Ino parent, const std::string& name) = 0;
  // A symlink to `target` (1..4095 bytes, no NUL; ENAMETOOLONG beyond), mode 0777.
  virtual Result<Attr> symlink(Ino parent, const std::string& name, const std::string& target,
                               uint32_t uid, uint32_t gid) = 0;
  // An inode without data: `mode`'s type is S_IFIFO, S_IFSOCK, S_IFCHR or S_IFBLK (rdev
  // kept for the last two); S_IFREG makes an empty regular file as create() does.
  // Other types: EINVAL.
  virtual Result<Attr> mknod(Ino parent, const std::string& name, uint32_t mode, uint64_t rdev,
                             uint32_t uid, uint32_t gid) = 0;
  // A symlink's target (EINVAL for other files), live or in a snapshot.
  virtual Result<std::string> readlink(Ino ino) = 0;
  // A hard link: `ino` (a live file of any type but a directory) gets the name new_name
  // in new_parent too. Errors: EPERM (a directory), EXDEV (a snapshot's file), EEXIST,
  // EMLINK, ENOENT (a file already unlinked).
  virtual Result<Attr> link(Ino ino, Ino new_parent, const std::string& new_name) = 0;
  // `uid` is the caller's: in a ".snapshots" directory it must be root, the snapshot's
  // taker or the directory's owner (EPERM otherwise).
  virtual Result<void> rmdir(Ino parent, const std::string& name, uint32_t uid) = 0;
  Result<void> rmdir(Ino parent, const std::string& name) { return rmdir(parent, name, 0); }
  virtual Result<void> rename(Ino parent, const std::string& name, Ino new_parent,
                              const std::string& new_name, RenameFlags flags) = 0;
  virtual Result<std::vector<DirEntryInfo>> readdir(Ino dir) = 0;
  // Attributes other than size; a size change goes through truncate().
  virtual Result<Attr> setattr(Ino ino, const SetAttr& attr) = 0;

  // Open references keep an unlinked file alive until the last release().
  virtual Result<void> open_ref(Ino ino) = 0;
  virtual void release_ref(Ino ino) = 0;

  // ---- data (asynchronous) ----
  // Reads [offset, offset+length) into the buffers, one after the other (length: their
  // sum); they must live until `done`. Past the end of file the read is short. A read of
  // whole grains into 4 KiB-aligned buffers that are each whole grains goes from the
  // device into them directly (a combined read lands in its members' buffers); any
  // other goes through an aligned buffer and is copied.
  virtual void readv(Ino ino, uint64_t offset_bytes, const iovec* iov, int iovcnt,
                     Done<uint64_t> done) = 0;
  void read(Ino ino, uint64_t offset_bytes, uint64_t length_bytes, void* buf,
            Done<uint64_t> done) {
    const iovec v{buf, length_bytes};
    readv(ino, offset_bytes, &v, 1, std::move(done));
  }
  // Writes the buffers, one after the other, from offset_bytes; extends the file size
  // when writing past it. The data is copied before return.
  virtual void writev(Ino ino, uint64_t offset_bytes, const iovec* iov, int iovcnt,
                      Done<uint64_t> done) = 0;
  void write(Ino ino, uint64_t offset_bytes, const void* data, uint64_t length_bytes,
             Done<uint64_t> done) {
    const iovec v{const_cast<void*>(data), length_bytes};
    writev(ino, offset_bytes, &v, 1, std::move(done));
  }
  // As writev(), for a caller that keeps the buffers unchanged until `done` runs: a
  // write of whole grains from 4 KiB-aligned buffers that are each whole grains goes to
  // the device from them, with no copy; any other is copied as by writev().
  virtual void writev_stable(Ino ino, uint64_t offset_bytes, const iovec* iov, int iovcnt,
                             Done<uint64_t> done) {
    writev(ino, offset_bytes, iov, iovcnt, std::move(done));
  }
  void write_stable(Ino ino, uint64_t offset_bytes, const void* data, uint64_t length_bytes,
                    Done<uint64_t> done) {
    const iovec v{const_cast<void*>(data), length_bytes};
    writev_stable(ino, offset_bytes, &v, 1, std::move(done));
  }
  // Frees the grains of the range (zeroing partial grains at its edges). File size kept.
  virtual void punch_hole(Ino ino, uint64_t offset_bytes, uint64_t length_bytes,
                          Done<void> done) = 0;
  // fallocate mode 0: reserves a grain of its own for every grain of the range that
  // has none (it reads zeros until written; a write into it needs no new space while no
  // snapshot or clone shares it), then, unless keep_size, extends the size to the
  // range's end. When the grains needed exceed the free space: ENOSPC, nothing changed.
  // Large ranges go in pieces of bounded transactions: a crash (or a racing writer
  // taking the space) may leave part of the range allocated.
  virtual void allocate(Ino ino, uint64_t offset_bytes, uint64_t length_bytes, bool keep_size,
                        Done<void> done) = 0;
  // Sets the file size; shrinking frees the grains past it (allocated ones too, also
  // those past the old size).
  virtual void truncate(Ino ino, uint64_t size_bytes, Done<void> done) = 0;
  // Makes every completed write and namespace change durable (journal commit + device
  // flush). `ino` is informational: a commit covers the whole datastore.
  virtual void fsync(Ino ino, Done<void> done) = 0;

  // SEEK_DATA / SEEK_HOLE: the next offset >= offset_bytes that is data (mapped, not
  // zero) or hole. ENXIO when there is none before the end of file.
  virtual Result<uint64_t> seek(Ino ino, uint64_t offset_bytes, bool data) = 0;

  // ---- snapshots and clones ----
  // mkdir/rmdir in a ".snapshots" directory create/delete snapshots. Creating waits for
  // writes in flight, freezes the tree in O(1), bumps the generation and commits. mkdir's
  // uid is the taker, checked against the SnapshotPolicy (EPERM: not allowed; EDQUOT: a
  // limit reached); names are scoped by directory.
  // Every record, live and deleted, in creation order.
  virtual std::vector<SnapshotInfo> snapshots() = 0;
  // The space live snapshot `id` holds. Reads the metadata of what only it references
  // (and lists its view); changes go on meanwhile. ENOENT when it does not exist.
  virtual Result<SnapshotSpaceInfo> snapshot_space(uint16_t id) = 0;
  // The path of live directory `dir` from the datastore's root ("/" for the root).
  virtual Result<std::string> dir_path(Ino dir) = 0;
  // Extended attributes (name, value), sorted by name: those stored with the inode (live
  // or as a snapshot froze them), and on a snapshot's root directory user.vsfs.changeid,
  // user.vsfs.created and user.vsfs.taker.
  virtual Result<std::vector<std::pair<std::string, std::string>>> xattrs(Ino ino) = 0;
  // Stores xattr `name` ("user.", "trusted." or "security." and 1..255 bytes in all; other
  // namespaces EOPNOTSUPP; "user.vsfs." is vsfs's own, EPERM) with `value` (at most 4096
  // bytes, E2BIG). `flags`: XATTR_CREATE (EEXIST when present), XATTR_REPLACE (ENODATA
  // when absent). ENOSPC when the inode's xattrs would pass 64 KiB in all (with a
  // symlink's target). Changes ctime. EROFS in snapshots.
  virtual Result<void> setxattr(Ino ino, const std::string& name, const std::string& value,
                                int flags) = 0;
  // ENODATA when absent.
  virtual Result<void> removexattr(Ino ino, const std::string& name) = 0;
  // Makes [dst_offset, +length) of `dst` share the grains of [src_offset, +length) of `src`
  // (live or in a snapshot): metadata only for whole grains, partial edge grains copied.
  // Needs src_offset % 4096 == dst_offset % 4096 (else kUnsupported). Returns the bytes
  // cloned (short at the source's end).
  virtual void clone_range(Ino src, uint64_t src_offset, Ino dst, uint64_t dst_offset,
                           uint64_t length, Done<uint64_t> done) = 0;

  virtual SpaceInfo space() = 0;
  virtual DatastoreStats stats() = 0;

  // Runs one step of background work on the caller's thread and says whether there was
  // work to do. Only for a datastore opened with start_background = false (EINVAL
  // otherwise): its owner decides when each step runs, so that a run can be repeated
  // exactly. A write that must wait for a commit (restamps, space being reclaimed) waits
  // for the owner's next kCommit or kCommitIfWanted.
  virtual Result<bool> run_background_step(BackgroundStep step) = 0;

  // Turns a datastore opened read-write read-only (every change then fails with EROFS,
  // and once this returns the device no longer changes: changes in progress ended, the
  // journal is checkpointed, background release and formatting pause, the device's lease
  // is given up: Device::set_writer) or read-write again (the lease taken back first:
  // kBusy when another writer holds it now). A datastore opened read-only stays so
  // (EROFS when asked for read-write).
  virtual Result<void> set_read_only(bool read_only) = 0;

  // Grows the datastore onto space its device gained (a file, LV or LUN made larger):
  // to `new_bytes`, or with 0 to the device's size, read again. The new storage blocks
  // take their tables from their own first blocks, and are free once this returns (df
  // shows them); data, snapshots and changed-block maps are unchanged. Where the device
  // reads discarded space as zeros they are discarded and formatted at once, else the
  // background formatter formats them. Errors: kInvalidArgument for a size below the
  // datastore's (shrinking is not supported), above the device's, or a growth too small
  // to hold its tables; EROFS read-only; kUnsupported without the space summary; kNoSpace
  // after format::kMaxGrowths growths.
  // `progress` (may be empty) hears the zeroing in bytes. Not on a completion thread.
  virtual Result<GrowReport> grow(uint64_t new_bytes,
                                  std::function<void(const Progress&)> progress) = 0;

  // ---- blocking helpers ----
  Result<uint64_t> read_sync(Ino ino, uint64_t offset_bytes, uint64_t length_bytes, void* buf);
  Result<uint64_t> write_sync(Ino ino, uint64_t offset_bytes, const void* data,
                              uint64_t length_bytes);
  Result<void> punch_hole_sync(Ino ino, uint64_t offset_bytes, uint64_t length_bytes);
  Result<void> truncate_sync(Ino ino, uint64_t size_bytes);
  Result<void> allocate_sync(Ino ino, uint64_t offset_bytes, uint64_t length_bytes,
                             bool keep_size = false);
  Result<void> fsync_sync(Ino ino);
  Result<uint64_t> clone_range_sync(Ino src, uint64_t src_offset, Ino dst, uint64_t dst_offset,
                                    uint64_t length);
};

// Opens a device path with the io_uring backend (exclusively) and the datastore on it.
Result<std::unique_ptr<Datastore>> open_datastore_path(const std::string& path,
                                                       const OpenOptions& options);

// Where a long program is: pass `pass` of `passes` (1-based), `done` of `total` units of
// it (total 0: not known in advance, as for fsck's walk of the trees). mkfs's passes are
// its steps, in bytes.
struct Progress {
  int pass = 0, passes = 0;
  const char* name = "";
  uint64_t done = 0, total = 0;
};

struct GrowReport {
  uint64_t old_bytes = 0, new_bytes = 0;  // equal: the datastore filled the device already
  uint64_t table_bytes = 0;               // of the added space, taken by its tables
  bool formatted = false;                 // the added space read zeros at once
};

struct MkfsOptions {
  uint64_t journal_bytes = 0;  // 0 = sized from the device
  uint64_t size_bytes = 0;     // the datastore's size: 0 = the whole device (vsfs-grow
                               // can take in the rest later)
  bool force = false;          // overwrite an existing datastore or filesystem
  // Called at the start and end of every step and after every chunk (1 GiB zeroed or
  // discarded, 1 MiB of block table written), on the caller's thread.
  std::function<void(const Progress&)> progress;
};
// Writes a new, empty datastore on `dev` (root directory inode 1).
Result<void> mkfs(device::Device& dev, const MkfsOptions& options);

// Whether a device holds a vsfs datastore: "vsfs datastore", or "" (mkfs refuses to
// overwrite one without force; vsfs-mkfs asks libblkid about other contents).
Result<std::string> probe_device_contents(device::Device& dev);

using FsckProgress = Progress;
struct FsckOptions {
  bool repair = false;        // -y
  bool full_zero_check = false;
  // Called at the start and end of every pass and every few thousand units within one,
  // on the caller's thread.
  std::function<void(const FsckProgress&)> progress;
};
struct FsckReport {
  std::vector<std::string> problems;   // one line each, naming the structure
  std::vector<std::string> repairs;    // what was repaired
  uint64_t inodes = 0, files = 0, dirs = 0, tree_nodes = 0, data_grains = 0;
  bool replayed_journal = false;
  // What the check cost, which follows the metadata in use, not the device's size:
  // block-table and refcount-table grains read, formatted free blocks read for the zero
  // check, storage blocks whose grains the walk referenced, and the bytes of fsck's
  // per-block and per-grain bookkeeping (an estimate; the trees, inodes and directory
  // entries it also holds are not counted).
  uint64_t table_grains_read = 0, refcount_grains_read = 0, blocks_zero_checked = 0;
  uint64_t blocks_tracked = 0, tracked_bytes = 0;
};
// Checks (and with repair, repairs) the datastore on `dev`, which must not be open.
Result<FsckReport> fsck(device::Device& dev, const FsckOptions& options);

}  // namespace vsfs
