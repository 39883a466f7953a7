// MetaStore core: opening a datastore, the cache, transactions, commit and checkpoint.
#include "meta/meta_store.h"

#include <sys/stat.h>

#include <algorithm>

#include "util/clock.h"
#include "util/log.h"

namespace vsfs::meta {

using format::BlockType;

MetaStore::MetaStore(device::Device& dev, const MetaOptions& options)
    : dev_(dev), options_(options), cache_(options.cache_budget_bytes) {}

MetaStore::~MetaStore() = default;

namespace {

Result<format::Superblock> read_superblock_at(device::Device& dev, uint64_t grain) {
  AlignedBuffer buf(kGrainBytes, false);
  VSFS_TRY(device::read_sync(dev, grain * kGrainBytes, buf.data(), kGrainBytes));
  return format::decode_superblock(format::ConstGrain(buf.data(), kGrainBytes));
}

Result<void> write_superblock(device::Device& dev, const format::Superblock& sb,
                              uint64_t generation) {
  AlignedBuffer buf(kGrainBytes);
  format::encode_superblock(sb, generation, format::Grain(buf.data(), kGrainBytes));
  // The copy first, made durable, then the primary: a primary that says "clean" always
  // has an identical copy, and a crash in between leaves the primary as it was.
  VSFS_TRY(device::write_sync(dev, format::kSuperblockCopyGrain * kGrainBytes, buf.data(),
                              kGrainBytes));
  VSFS_TRY(device::flush_sync(dev));
  VSFS_TRY(device::write_sync(dev, 0, buf.data(), kGrainBytes));
  return device::flush_sync(dev);
}

// Whether every lifetime counter of `now` is at least that of `before`: what a
// superblock write stores must never be less than what the one before it stored.
bool never_less(const format::LifetimeCounters& now, const format::LifetimeCounters& before) {
  return now.read_bytes >= before.read_bytes && now.write_bytes >= before.write_bytes &&
         now.read_errors >= before.read_errors && now.write_errors >= before.write_errors &&
         now.no_space_errors >= before.no_space_errors &&
         now.unclean_mounts >= before.unclean_mounts &&
         now.snapshots_taken >= before.snapshots_taken &&
         now.snapshots_deleted >= before.snapshots_deleted &&
         now.formatted_bytes >= before.formatted_bytes &&
         now.mounted_seconds >= before.mounted_seconds;
}

}  // namespace

Result<format::Superblock> read_superblock(device::Device& dev) {
  VSFS_TRY(format::check_device_size(dev.size_bytes()));
  auto primary = read_superblock_at(dev, 0);
  if (primary.ok()) return primary;
  if (primary.error().kind == ErrorKind::kUnsupported) return primary.take_error();
  auto copy = read_superblock_at(dev, format::kSuperblockCopyGrain);
  if (copy.ok()) {
    VSFS_LOG_WARN("primary superblock is damaged ({}); using its copy",
                  primary.error().to_string());
    return copy;
  }
  return primary.take_error();
}

Result<std::unique_ptr<MetaStore>> MetaStore::open(device::Device& dev,
                                                   const MetaOptions& options) {
  VSFS_ASSIGN_OR_RETURN(auto sb, read_superblock(dev));
  if (sb.device_bytes > dev.size_bytes()) {
    return make_error(EINVAL, ErrorKind::kCorruption,
                      "datastore is {} bytes but the device only {}", sb.device_bytes,
                      dev.size_bytes());
  }
  // Refused before anything is written (not even the journal's replay): the mark is set
  // in the home superblock at every read-write open and cleared only by a clean close.
  if (!options.read_only && (sb.state & format::kStateMounted) && options.mark_mounted &&
      !options.force) {
    return make_error(EBUSY, ErrorKind::kBusy,
                      "datastore is marked mounted (in use elsewhere, or not unmounted "
                      "cleanly)");
  }
  if (!options.read_only) {
    // The fixed regions (superblocks, journal, tables) have their backing storage before
    // anything is written: on a sparse file whose filesystem filled up, no metadata
    // write may fail for want of space (back_metadata_locked does the rest).
    auto backed = device::allocate_now(dev, 0, sb.first_data_block * kBlockBytes);
    if (!backed.ok()) {
      return make_error(backed.error().errno_value, backed.error().kind,
                        "the datastore's fixed regions have no room on the filesystem holding "
                        "it ({}); free {} MiB there",
                        backed.error().message, sb.first_data_block * kBlockBytes >> 20);
    }
    for (const format::Growth& g : sb.growths) {
      VSFS_TRY(device::allocate_now(dev, g.region_block * kBlockBytes,
                                    format::growth_region_blocks(g) * kBlockBytes));
    }
  }
  VSFS_ASSIGN_OR_RETURN(auto replay,
                        Journal::replay(dev, sb.journal_start_grain, sb.journal_grains,
                                        sb.journal_tail_grain, sb.journal_tail_seq,
                                        !options.read_only));
  if (replay.transactions > 0) {
    if (options.read_only) {
      return make_error(EROFS, ErrorKind::kState,
                        "the journal holds {} uncommitted transactions; mount read-write "
                        "once or run vsfs-fsck to replay it",
                        replay.transactions);
    }
    VSFS_ASSIGN_OR_RETURN(sb, read_superblock(dev));
  }
  if (!options.read_only && (sb.ro_compat & ~format::kRoCompatKnown) != 0) {
    return make_error(EROFS, ErrorKind::kUnsupported,
                      "superblock: features 0x{:x} this vsfs does not know allow reading only "
                      "(mount read-only)",
                      sb.ro_compat & ~format::kRoCompatKnown);
  }
  sb.journal_tail_grain = replay.end_grain;
  sb.journal_tail_seq = replay.end_seq;
  const bool crashed = (sb.state & format::kStateClean) == 0;
  const format::LifetimeCounters lifetime_at_open = sb.lifetime;
  format::LifetimeCounters lifetime_mount;
  if (!options.read_only) {
    sb.state &= ~format::kStateClean;
    if (options.mark_mounted) sb.state |= format::kStateMounted;
    // Every vsfs that writes a datastore holds its lease from now on (vsfs-format(5)):
    // an older vsfs, which would write without it, may only read.
    sb.ro_compat |= format::kRoCompatLease;
    ++sb.mount_count;
    lifetime_mount.unclean_mounts = crashed ? 1 : 0;
    sb.lifetime = lifetime_at_open + lifetime_mount;
    VSFS_TRY(write_superblock(dev, sb, sb.generation));
  }

  std::unique_ptr<MetaStore> ms(new MetaStore(dev, options));
  ms->sb_ = sb;
  ms->committed_sb_ = sb;
  ms->lifetime_at_open_ = lifetime_at_open;
  ms->lifetime_mount_ = lifetime_mount;
  ms->lifetime_stored_ = sb.lifetime;
  ms->window_on_ = (sb.ro_compat & format::kRoCompatAllocWindow) != 0;
  ms->window_durable_ = sb.alloc_window_end;
  if (!options.read_only) ms->read_write_since_ns_ = monotonic_ns();
  ms->journal_ = std::make_unique<Journal>(dev, sb.journal_start_grain, sb.journal_grains,
                                           sb.journal_tail_grain, sb.journal_tail_seq);
  {
    std::lock_guard lock(ms->mu_);
    VSFS_TRY(ms->load_block_table());
    VSFS_TRY(ms->load_snapshots_locked());
    VSFS_TRY(ms->scan_inodes_locked());
  }
  if (crashed && !options.read_only) VSFS_TRY(ms->unformat_after_crash());
  if (!options.read_only) {
    std::lock_guard lock(ms->mu_);
    VSFS_TRY(ms->back_metadata_locked());
  }
  if (!options.read_only && ms->window_on_) {
    // A window for the first writes, durable before any of them (else each would wait
    // for the first commit). After a crash it comes after the recovery, which used the
    // crashed mount's window.
    {
      std::lock_guard lock(ms->mu_);
      ms->mark_sb_dirty_locked();
    }
    VSFS_TRY(ms->commit());
  }
  return ms;
}

uint64_t MetaStore::refcount_grain_of(uint64_t grain) const {
  return format::table_grain(sb_, format::Table::kRefcount,
                             grain / format::kGrainsPerRefcountGrain);
}

uint64_t MetaStore::block_table_grain_of(uint64_t block) const {
  return format::table_grain(sb_, format::Table::kBlockTable,
                             block / format::kBlocksPerTableGrain);
}

uint64_t MetaStore::summary_grain_of(uint64_t group) const {
  return format::table_grain(sb_, format::Table::kSpaceSummary,
                             group / format::kGroupsPerSummaryGrain);
}

Result<CachedBlock*> MetaStore::get_locked(uint64_t grain, BlockType type, uint64_t first_ino) {
  if (CachedBlock* b = cache_.find(grain)) {
    if (b->type != type) {
      return corruption(fmt::format("grain {}: expected a {}, but it holds a {}", grain,
                                    format::block_type_name(type),
                                    format::block_type_name(b->type)));
    }
    return b;
  }
  const uint64_t total_grains = sb_.total_blocks * kGrainsPerBlock;
  if (grain == 0 || grain >= total_grains) {
    return corruption(fmt::format("{} pointer {} is outside the datastore ({} grains)",
                                  format::block_type_name(type), grain, total_grains));
  }
  AlignedBuffer& buf = miss_buf_;  // not one allocation per miss: they fragment the heap
  if (const uint8_t* newest = journal_image_locked(grain)) {
    std::memcpy(buf.data(), newest, kGrainBytes);
  } else {
    if (no_wait_) {
      missed_ = Missed{grain, type, first_ino};
      return make_error(EAGAIN, ErrorKind::kWouldBlock, "grain {} is not cached", grain);
    }
    VSFS_TRY(device::read_now(dev_, grain * kGrainBytes, buf.data(), kGrainBytes));
  }
  VSFS_ASSIGN_OR_RETURN(auto block,
                        decode_cached(format::ConstGrain(buf.data(), kGrainBytes), grain, type,
                                      first_ino));
  return cache_.insert(grain, std::move(block));
}

void MetaStore::mark_dirty_locked(uint64_t grain) {
  VSFS_ASSERT(!options_.read_only);
  if (cache_.mark_dirty(grain)) dirty_.push_back(grain);
}

LifetimeView MetaStore::lifetime_locked() const {
  LifetimeView v;
  v.this_mount = lifetime_mount_;
  v.this_mount.formatted_bytes = formatted_bytes_total_;
  // Whole seconds of this mount: each superblock write stores the mount's read-write
  // time afresh, so rounding never accumulates across writes.
  uint64_t read_write_ns = read_write_ns_ended_;
  if (read_write_since_ns_ != 0) read_write_ns += monotonic_ns() - read_write_since_ns_;
  v.this_mount.mounted_seconds = read_write_ns / 1000000000ull;
  v.total = lifetime_at_open_ + v.this_mount;
  v.stored = lifetime_stored_;
  return v;
}

void MetaStore::count_read_write_time_locked(bool read_write) {
  if (options_.read_only) return;
  const uint64_t now = monotonic_ns();
  if (!read_write && read_write_since_ns_ != 0) {
    read_write_ns_ended_ += now - read_write_since_ns_;
    read_write_since_ns_ = 0;
  } else if (read_write && read_write_since_ns_ == 0) {
    read_write_since_ns_ = now;
  }
}

bool MetaStore::has_changes_locked() const { return sb_dirty_ || !dirty_.empty(); }

bool MetaStore::wants_commit_locked() const {
  // Dirty blocks cannot be evicted: past half the cache budget they are committed
  // early, so that they leave room for clean ones.
  return dirty_.size() >= journal_->capacity_images() / 4 ||
         cache_.dirty_bytes() > cache_.budget_bytes() / 2;
}

uint64_t MetaStore::transaction_room_locked() const {
  const uint64_t limit = journal_->capacity_images() / 2;
  return dirty_.size() >= limit ? 0 : limit - dirty_.size();
}

void MetaStore::account_outside_locked() {
  // A pending image: its grain, the map node and the allocations' headers.
  constexpr uint64_t kImageBytes = kGrainBytes + 128;
  const uint64_t pending = journal_ ? journal_->pending().size() : 0;
  cache_.set_outside_bytes(pending * kImageBytes + dir_bytes_);
}

void MetaStore::trim_locked() {
  // The most recently used index stays: the request that just built it may come back
  // for it at once.
  const uint64_t share = cache_.budget_bytes() / kDirShare;
  while (dir_bytes_ > share && dir_lru_.size() > 1) drop_dir_locked(dir_lru_.back());
  cache_.trim();
}

bool MetaStore::wants_checkpoint_locked() const {
  // The journal's pending images are metadata in memory too: past a quarter of the
  // cache budget a checkpoint writes them home (a 64 GiB datastore's journal could
  // otherwise keep 128 MiB of them).
  return !blocks_freed_committed_.empty() || journal_->used_grains() * 2 > journal_->ring_grains() ||
         journal_->pending().size() * kGrainBytes > cache_.budget_bytes() / 4;
}

Result<void> MetaStore::commit() {
  std::lock_guard commit_lock(commit_mu_);
  return commit_inner();
}

Result<void> MetaStore::flush_device_inner(bool only_if_written) {
  const device::DeviceCounters c = dev_.counters();
  const uint64_t written = c.ops[static_cast<int>(device::OpKind::kWrite)] +
                           c.ops[static_cast<int>(device::OpKind::kDiscard)] +
                           c.ops[static_cast<int>(device::OpKind::kWriteZeroes)];
  if (only_if_written && written == flushed_writes_) return ok_result();
  VSFS_TRY(device::flush_sync(dev_));
  flushed_writes_ = written;  // what had completed before the flush was issued
  return ok_result();
}

const uint8_t* MetaStore::journal_image_locked(uint64_t grain) const {
  const auto& pending = journal_->pending();
  if (auto p = pending.find(grain); p != pending.end()) return p->second.data.data();
  return nullptr;
}

void MetaStore::fetch_missed_locked(std::function<void(Result<void>)> done) {
  const Missed m = missed_;
  ++fetch_waiters_;
  auto [it, first] = fetching_.try_emplace(m.grain);
  it->second.waiters.push_back(std::move(done));
  if (!first) return;  // already being read: wait in its queue
  // The map's node holds the read's buffer and stays put until fetch_done erases it.
  Fetch& f = it->second;
  f.missed = m;
  f.checkpoints_at_issue = checkpoint_starts_;  // see fetch_done
  f.buf = AlignedBuffer(kGrainBytes, false);
  f.vec = iovec{f.buf.data(), kGrainBytes};
  device::IoRequest r;
  r.kind = device::OpKind::kRead;
  r.offset_bytes = m.grain * kGrainBytes;
  r.length_bytes = kGrainBytes;
  r.iov = &f.vec;
  r.iovcnt = 1;
  r.done = [this, grain = m.grain](int64_t result) { fetch_done(grain, result); };
  dev_.submit_one(std::move(r));
}

// Completes a fetch: caches the block unless what was read may be older than the truth,
// then answers every request waiting for it (they look it up again).
void MetaStore::fetch_done(uint64_t grain, int64_t result) {
  std::vector<std::function<void(Result<void>)>> waiters;
  Result<void> outcome = ok_result();
  {
    std::lock_guard lock(mu_);
    auto it = fetching_.find(grain);
    VSFS_ASSERT(it != fetching_.end());
    Fetch f = std::move(it->second);
    fetching_.erase(it);
    const Missed& m = f.missed;
    waiters = std::move(f.waiters);
    fetch_waiters_ -= waiters.size();
    if (cache_.peek(m.grain) == nullptr) {
      // Newer images than the home location: a committed one in the journal wins; and
      // a checkpoint during the read may have rewritten the home under it (then the
      // waiters look up again and fetch anew if it is still missing).
      const uint8_t* src = journal_image_locked(m.grain);
      if (src == nullptr && result == static_cast<int64_t>(kGrainBytes) &&
          checkpoint_starts_ == f.checkpoints_at_issue) {
        src = f.buf.data();
      }
      if (src != nullptr) {
        auto block = decode_cached(format::ConstGrain(src, kGrainBytes), m.grain, m.type,
                                   m.first_ino);
        if (block.ok()) {
          cache_.insert(m.grain, std::move(block).value());
        } else {
          outcome = block.take_error();
        }
      } else if (result < 0) {
        outcome = make_error(static_cast<int>(-result), ErrorKind::kIo,
                             "reading metadata grain {} failed", m.grain);
      }
    }
  }
  for (auto& w : waiters) w(outcome);
}

Result<void> MetaStore::commit_inner() {
  if (failed_) return make_error(EIO, ErrorKind::kIo, "datastore failed an earlier commit");
  std::vector<JournalImage> images;
  uint64_t generation = 0;
  // The superblock this transaction carries. It becomes committed_sb_ only once the
  // transaction is durable: a checkpoint that runs first (the ring is full) must write
  // home the superblock of the last committed transaction, never this one.
  format::Superblock sb_image;
  {
    std::lock_guard lock(mu_);
    if (!has_changes_locked()) {
      images.clear();
    } else {
      generation = sb_.generation;
      update_space_summary_locked();  // may dirty a summary grain
      images.reserve(dirty_.size() + 1);
      for (uint64_t g : dirty_) {
        // The block stays in the cache until its image is in pending() (below).
        CachedBlock* b = cache_.start_write(g);
        if (b == nullptr) continue;  // freed after it was dirtied
        JournalImage img;
        img.home = g;
        img.data = AlignedBuffer(kGrainBytes, false);
        encode_cached(*b, g, generation, format::Grain(img.data.data(), kGrainBytes));
        images.push_back(std::move(img));
      }
      dirty_.clear();
      // The superblock goes last so that replay writes it after what it points at.
      // (Encoded below, once a checkpoint that must run first has moved the tail.)
      JournalImage sbi;
      sbi.home = 0;
      sbi.data = AlignedBuffer(kGrainBytes);
      images.push_back(std::move(sbi));
      sb_dirty_ = false;
      if (window_on_) {
        sb_.alloc_window_end = next_window_locked();
        window_inflight_ = sb_.alloc_window_end;
        taken_since_commit_ = 0;
      }
      sb_image = sb_;
      sb_image.lifetime = lifetime_total_locked();
      VSFS_ASSERT(freed_committing_.empty());
      freed_committing_.swap(freed_open_);
      unshared_committing_.swap(unshared_open_);
      blocks_freed_committing_.swap(blocks_freed_open_);
    }
  }
  // Data that the transaction points at must be durable before its commit record; with
  // no transaction, the flush is what makes completed data writes durable (fsync).
  auto flushed = flush_device_inner(/*only_if_written=*/images.empty());
  if (!flushed.ok()) {
    failed_ = true;
    return flushed;
  }
  if (images.empty()) return ok_result();
  if (!journal_->fits(images.size())) {
    auto cp = checkpoint_inner(false);
    if (!cp.ok()) {
      failed_ = true;
      return cp;
    }
    {
      std::lock_guard lock(mu_);
      ++counters_.full_checkpoints;
    }
    if (!journal_->fits(images.size())) {
      failed_ = true;
      return make_error(ENOSPC, ErrorKind::kNoSpace,
                        "transaction of {} blocks is larger than the journal", images.size());
    }
    // The checkpoint moved the tail: the superblock this transaction carries says so.
    // It also stored newer lifetime totals at home, and replay of this transaction must
    // not write smaller ones over them.
    std::lock_guard lock(mu_);
    sb_image.journal_tail_grain = sb_.journal_tail_grain;
    sb_image.journal_tail_seq = sb_.journal_tail_seq;
    sb_image.lifetime = lifetime_total_locked();
  }
  VSFS_ASSERT(images.back().home == 0);
  {
    std::lock_guard lock(mu_);
    VSFS_ASSERT(never_less(sb_image.lifetime, lifetime_stored_));
  }
  format::encode_superblock(sb_image, generation,
                            format::Grain(images.back().data.data(), kGrainBytes));
  // After a failure above or here the written blocks stay in the cache for good: their
  // images never reach the journal, and reads keep seeing what they saw.
  auto written = journal_->write_transaction(images);
  if (!written.ok()) {
    failed_ = true;
    return written.take_error();
  }
  std::lock_guard lock(mu_);
  committed_sb_ = sb_image;
  lifetime_stored_ = sb_image.lifetime;
  if (window_on_) {
    // Durable: blocks below it that the allocator takes are reformatted after a crash.
    window_durable_ = sb_image.alloc_window_end;
    window_inflight_.reset();
    beyond_window_.erase(beyond_window_.begin(), beyond_window_.lower_bound(window_durable_));
  }
  // The images are findable now: their blocks may be evicted.
  for (const JournalImage& img : images) {
    if (img.home != 0) cache_.finish_write(img.home);
  }
  journal_->add_pending(images);  // under mu_: cache misses read the pending map
  account_outside_locked();
  freed_committing_.clear();
  unshared_committing_.clear();
  blocks_freed_committed_.insert(blocks_freed_committed_.end(), blocks_freed_committing_.begin(),
                                 blocks_freed_committing_.end());
  blocks_freed_committing_.clear();
  ++counters_.commits;
  counters_.journal_bytes += *written;
  return ok_result();
}

Result<void> MetaStore::checkpoint(bool clean) {
  std::lock_guard commit_lock(commit_mu_);
  VSFS_TRY(commit_inner());
  return checkpoint_inner(clean);
}

Result<void> MetaStore::checkpoint_inner(bool clean) {
  if (options_.read_only) return ok_result();
  {
    std::lock_guard lock(mu_);
    ++checkpoint_starts_;  // a fetch in flight from here on may read a home being rewritten
  }
  // Commits are serialised with this (commit_mu_): pending does not change until
  // checkpointed(), and readers under mu_ only read it.
  auto& pending = journal_->pending();
  // Write every home location in one batch, then flush, then move the tail.
  std::vector<device::IoRequest> reqs;
  std::vector<iovec> iovs;
  reqs.reserve(pending.size());
  iovs.reserve(pending.size());
  std::mutex m;
  std::condition_variable cv;
  size_t outstanding = 0;
  int64_t first_error = 0;
  for (auto& [home, img] : pending) {
    if (home == 0) continue;
    iovs.push_back(iovec{img.data.data(), kGrainBytes});
    device::IoRequest r;
    r.kind = device::OpKind::kWrite;
    r.offset_bytes = home * kGrainBytes;
    r.length_bytes = kGrainBytes;
    r.iov = &iovs.back();
    r.iovcnt = 1;
    r.done = [&](int64_t res) {
      std::lock_guard l(m);
      if (res < 0 && first_error == 0) first_error = res;
      if (--outstanding == 0) cv.notify_all();
    };
    reqs.push_back(std::move(r));
  }
  outstanding = reqs.size();
  if (dev_.in_completion_context()) {
    // No completion could reach this thread: write them one by one, inline.
    for (auto& r : reqs) {
      const int64_t res = dev_.execute_inline(r);
      if (res < 0 && first_error == 0) first_error = res;
    }
  } else if (!reqs.empty()) {
    dev_.submit(reqs);
    std::unique_lock l(m);
    cv.wait(l, [&] { return outstanding == 0; });
  }
  if (first_error != 0) {
    failed_ = true;
    return make_error(static_cast<int>(-first_error), ErrorKind::kIo,
                      "checkpoint: writing metadata home failed");
  }
  auto flushed = flush_device_inner(/*only_if_written=*/false);
  if (!flushed.ok()) {
    failed_ = true;
    return flushed;
  }
  format::Superblock sb;
  {
    std::lock_guard lock(mu_);
    sb = committed_sb_;
    // The counters describe no structure: the newest totals go home, not the commit's.
    sb.lifetime = lifetime_total_locked();
    VSFS_ASSERT(never_less(sb.lifetime, lifetime_stored_));
  }
  // committed_sb_ is the superblock as of the last commit: what the homes now hold.
  sb.journal_tail_grain = journal_->head_grain();
  sb.journal_tail_seq = journal_->head_seq();
  if (clean) {
    sb.state |= format::kStateClean;
    sb.state &= ~format::kStateMounted;
  }
  auto wrote = write_superblock(dev_, sb, sb.generation);
  if (!wrote.ok()) {
    failed_ = true;
    return wrote;
  }
  std::lock_guard lock(mu_);
  lifetime_stored_ = sb.lifetime;
  // Every superblock image journaled from now on carries the new tail: replay writes
  // those images home, and a second crash during that replay must find the log where
  // this checkpoint left it, not where it was at mount.
  sb_.journal_tail_grain = committed_sb_.journal_tail_grain = sb.journal_tail_grain;
  sb_.journal_tail_seq = committed_sb_.journal_tail_seq = sb.journal_tail_seq;
  journal_->checkpointed();
  account_outside_locked();
  for (uint64_t b : blocks_freed_committed_) {
    if (block_entry_locked(b).state == format::BlockState::kToFormatFree) {
      free_.insert(FreeBlocks::kToFormat, b);
    }
  }
  blocks_freed_committed_.clear();
  ++counters_.checkpoints;
  return ok_result();
}

}  // namespace vsfs::meta
