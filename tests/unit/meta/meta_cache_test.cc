// The bounded metadata cache: LRU order, what is never evicted, byte accounting, trim at
// the release of MetaStore's mutex; and the metadata store and the datastore running
// with a budget far below their metadata (every read right, fsck clean), including
// blocks evicted while their newest image is only in the journal.
#include <dirent.h>
#include <sys/stat.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <random>
#include <thread>

#include "device/sim_device.h"
#include "fsck_test_util.h"
#include "meta/meta_cache.h"
#include "meta/meta_mutex.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::meta {
namespace {

using device::SimDevice;
using device::SimOptions;
using format::BlockType;
using format::SlotState;

constexpr uint64_t kKeep = MetaCache::kKeepRecentBlocks;

CachedBlock tree_node() {
  CachedBlock b;
  b.type = BlockType::kMapLeaf;
  b.v = format::TreeNode{};
  return b;
}

const uint64_t kNodeBytes = MetaCache::block_bytes(tree_node());

// ---- MetaCache ----

TEST(MetaCache, EstimateCoversTheObjectAndItsHeap) {
  EXPECT_GE(kNodeBytes, sizeof(CachedBlock));
  EXPECT_GE(kNodeBytes, sizeof(format::TreeNode) + 16);
  CachedBlock dir;
  dir.type = BlockType::kDirBlock;
  format::DirBlock d;
  for (int i = 0; i < 100; ++i) {
    d.entries.push_back(format::DirEntry{uint64_t(i + 2), 8, std::string(40, 'a' + i % 26)});
  }
  dir.v = d;
  // The vector of 100 entries and 100 names of 40 bytes, each on the heap.
  EXPECT_GE(MetaCache::block_bytes(dir), kNodeBytes + 100 * (sizeof(format::DirEntry) + 41));
  CachedBlock rel;
  rel.type = BlockType::kReleaseList;
  rel.v = format::ReleaseList{0, std::vector<format::ReleaseEntry>(100)};
  EXPECT_GE(MetaCache::block_bytes(rel), kNodeBytes + 100 * sizeof(format::ReleaseEntry));
}

TEST(MetaCache, TrimEvictsLeastRecentlyUsedFirst) {
  // Room for 40.5 blocks: the 41st goes over, and trim goes down to 7/8 of the budget
  // (35.4 blocks), so 6 blocks go.
  MetaCache c(40 * kNodeBytes + kNodeBytes / 2);
  for (uint64_t g = 1; g <= 40; ++g) c.insert(g, tree_node());
  EXPECT_FALSE(c.over_budget());
  ASSERT_NE(c.find(1), nullptr);  // 1 becomes the most recently used
  c.insert(41, tree_node());
  ASSERT_TRUE(c.over_budget());
  c.trim();
  EXPECT_FALSE(c.over_budget());
  EXPECT_EQ(c.stats().evictions, 6u);
  EXPECT_EQ(c.size(), 35u);
  EXPECT_NE(c.peek(1), nullptr);
  for (uint64_t g = 2; g <= 7; ++g) EXPECT_EQ(c.peek(g), nullptr) << g;
  for (uint64_t g = 8; g <= 41; ++g) EXPECT_NE(c.peek(g), nullptr) << g;
  // peek does not reorder: 8 is now the coldest and goes first.
  ASSERT_NE(c.peek(8), nullptr);
  for (uint64_t g = 42; g <= 47; ++g) c.insert(g, tree_node());
  c.trim();
  EXPECT_EQ(c.peek(8), nullptr);
  EXPECT_NE(c.peek(1), nullptr);
}

// Memory held outside the cache under the same budget (the journal's pending images)
// leaves that much less to cached blocks, and gives it back when it goes.
TEST(MetaCache, OutsideBytesShareTheBudget) {
  MetaCache c(100 * kNodeBytes + kNodeBytes / 2);
  for (uint64_t g = 1; g <= 100; ++g) c.insert(g, tree_node());
  EXPECT_FALSE(c.over_budget());
  c.set_outside_bytes(50 * kNodeBytes);
  ASSERT_TRUE(c.over_budget());
  c.trim();
  EXPECT_FALSE(c.over_budget());
  // Trim goes down to 7/8 of the budget (87.9 blocks), of which the outside bytes take
  // 50: 37 blocks stay.
  EXPECT_EQ(c.size(), 37u);
  const size_t kept = c.size();
  c.set_outside_bytes(0);
  for (uint64_t g = 1000; g < 1000 + 100 - kept; ++g) c.insert(g, tree_node());
  EXPECT_FALSE(c.over_budget()) << "the room came back";
}

TEST(MetaCache, FindCountsHitsAndMisses) {
  MetaCache c(1 << 20);
  c.insert(5, tree_node());
  EXPECT_NE(c.find(5), nullptr);
  EXPECT_EQ(c.find(6), nullptr);
  EXPECT_NE(c.peek(5), nullptr);  // not counted
  EXPECT_EQ(c.peek(6), nullptr);
  const auto s = c.stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.blocks, 1u);
}

TEST(MetaCache, DirtyWritingAndPinnedBlocksAreNeverEvicted) {
  MetaCache c(0);  // everything evictable goes, but the kKeep most recent
  for (uint64_t g = 1; g <= 100; ++g) c.insert(g, tree_node());
  for (uint64_t g = 1; g <= 10; ++g) EXPECT_TRUE(c.mark_dirty(g));
  EXPECT_FALSE(c.mark_dirty(1));  // already dirty
  c.pin(11);
  ASSERT_TRUE(c.mark_dirty(12));
  ASSERT_NE(c.start_write(12), nullptr);  // its image is being committed
  EXPECT_EQ(c.start_write(13), nullptr);  // clean: nothing to write
  c.trim();
  auto s = c.stats();
  EXPECT_EQ(s.blocks, 12 + kKeep);
  EXPECT_EQ(s.evictable_blocks, kKeep);
  EXPECT_EQ(s.unevictable_bytes, 12 * kNodeBytes);
  EXPECT_EQ(s.dirty_bytes, 10 * kNodeBytes);
  for (uint64_t g = 1; g <= 12; ++g) EXPECT_NE(c.peek(g), nullptr) << g;
  for (uint64_t g = 13; g <= 100 - kKeep; ++g) EXPECT_EQ(c.peek(g), nullptr) << g;

  // Dirtied again while its image is written: stays after the write finishes.
  ASSERT_NE(c.start_write(1), nullptr);
  EXPECT_FALSE(c.dirty(1));
  EXPECT_TRUE(c.mark_dirty(1));
  c.finish_write(1);
  EXPECT_TRUE(c.dirty(1));
  // Written and done: clean, most recently used, and evictable like any other.
  c.finish_write(12);
  for (uint64_t g = 200; g < 200 + kKeep; ++g) c.insert(g, tree_node());
  c.trim();
  EXPECT_EQ(c.peek(12), nullptr);
  EXPECT_NE(c.peek(1), nullptr);
  EXPECT_NE(c.peek(11), nullptr);  // pinned
  for (uint64_t g = 2; g <= 10; ++g) {
    ASSERT_NE(c.start_write(g), nullptr);
    c.finish_write(g);
  }
  c.trim();
  s = c.stats();
  EXPECT_EQ(s.evictable_blocks, kKeep);
  EXPECT_EQ(s.unevictable_bytes, 2 * kNodeBytes);  // 1 (dirty) and 11 (pinned)
  EXPECT_EQ(s.dirty_bytes, kNodeBytes);
}

TEST(MetaCache, ByteAccountingReturnsToZero) {
  MetaCache c(0);
  uint64_t sum = 0;
  auto add = [&](uint64_t g, CachedBlock b) { sum += MetaCache::block_bytes(*c.insert(g, std::move(b))); };
  add(1, tree_node());
  CachedBlock dir;
  dir.type = BlockType::kDirBlock;
  dir.v = format::DirBlock{7, {format::DirEntry{9, 8, std::string(100, 'x')}}};
  add(2, std::move(dir));
  CachedBlock snaps;
  snaps.type = BlockType::kSnapshotList;
  format::SnapshotList sl;
  sl.records.resize(3);
  for (auto& r : sl.records) r.name = std::string(60, 's');
  snaps.v = sl;
  add(3, std::move(snaps));
  CachedBlock refs;
  refs.type = BlockType::kRefcountTable;
  refs.v = format::RefcountGrain{};
  add(4, std::move(refs));
  CachedBlock table;
  table.type = BlockType::kBlockTable;
  table.v = format::BlockTableGrain{};
  add(5, std::move(table));
  for (uint64_t g = 10; g < 100; ++g) add(g, tree_node());
  EXPECT_EQ(c.stats().bytes, sum);

  // A dirty directory block that grows is accounted at its new size once written.
  ASSERT_TRUE(c.mark_dirty(2));
  c.pin(5);
  for (int i = 0; i < 50; ++i) {
    c.peek(2)->dir().entries.push_back(format::DirEntry{uint64_t(i + 10), 8, std::string(200, 'y')});
  }
  const uint64_t grown = MetaCache::block_bytes(*c.peek(2));
  ASSERT_NE(c.start_write(2), nullptr);
  EXPECT_EQ(c.stats().unevictable_bytes, grown + MetaCache::block_bytes(*c.peek(5)));
  c.finish_write(2);

  c.trim();  // budget 0: down to the kKeep most recent
  EXPECT_EQ(c.stats().blocks, kKeep + 1);  // and the pinned one
  EXPECT_GT(c.stats().evictions, 0u);
  for (uint64_t g = 1; g < 100; ++g) c.erase(g);
  const auto s = c.stats();
  EXPECT_EQ(s.bytes, 0u);
  EXPECT_EQ(s.unevictable_bytes, 0u);
  EXPECT_EQ(s.dirty_bytes, 0u);
  EXPECT_EQ(s.blocks, 0u);
  EXPECT_EQ(s.evictable_blocks, 0u);
}

TEST(MetaCache, MutexTrimsWhenReleased) {
  MetaCache c(4 * kNodeBytes);
  MetaMutex mu(c);
  {
    std::lock_guard lock(mu);
    for (uint64_t g = 1; g <= 100; ++g) c.insert(g, tree_node());
    EXPECT_EQ(c.size(), 100u);  // nothing goes while the mutex is held
  }
  EXPECT_EQ(c.size(), kKeep);
  // A condition_variable_any wait releases it too.
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  for (uint64_t g = 101; g <= 200; ++g) c.insert(g, tree_node());
  cv.wait_for(lock, std::chrono::milliseconds(1));
  EXPECT_EQ(c.size(), kKeep);
  EXPECT_NE(c.peek(200), nullptr);
}

// ---- MetaStore with a small budget ----

constexpr uint64_t kSmallBudget = 64 << 10;

std::unique_ptr<SimDevice> fresh(uint64_t size = 1ull << 30, uint32_t latency_us = 0) {
  SimOptions o;
  o.size_bytes = size;
  o.max_latency_us = latency_us;
  auto dev = std::make_unique<SimDevice>(o);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  return dev;
}

std::unique_ptr<MetaStore> open_store(SimDevice& dev, uint64_t budget = kSmallBudget) {
  MetaOptions o;
  o.cache_budget_bytes = budget;
  auto r = MetaStore::open(dev, o);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// What a release of the mutex guarantees: the cache is within its budget, or all it
// holds beyond the blocks it may not evict is the kKeep most recently used.
void expect_trimmed(MetaStore& ms) {
  std::lock_guard lock(ms.mu());
  const auto s = ms.cache_stats_locked();
  EXPECT_TRUE(s.bytes <= s.budget_bytes || s.evictable_blocks <= kKeep)
      << s.bytes << " bytes, " << s.unevictable_bytes << " unevictable, "
      << s.evictable_blocks << " evictable blocks";
}

// File grain of the k-th mapping of a test file: every one in its own map leaf, the
// leaves spread over a tree of three levels.
uint64_t spread(uint64_t k) { return k * format::kTreeFanout * 3 + k % 7; }

// Maps each file grain to a new data grain; returns them.
std::map<uint64_t, uint64_t> install(MetaStore& ms, uint64_t ino, uint64_t n, uint64_t& hint,
                                     const std::function<void(uint64_t)>& each = nullptr) {
  std::map<uint64_t, uint64_t> m;
  for (uint64_t k = 0; k < n; ++k) {
    {
      std::lock_guard lock(ms.mu());
      auto g = ms.reserve_data_grain_locked(hint);
      EXPECT_TRUE(g.ok()) << g.error().to_string();
      auto r = ms.map_install_locked(ino, spread(k), *g);
      EXPECT_TRUE(r.ok()) << r.error().to_string();
      m[spread(k)] = *g;
    }
    expect_trimmed(ms);
    if (each) each(k);
  }
  return m;
}

void expect_maps(MetaStore& ms, uint64_t ino, const std::map<uint64_t, uint64_t>& m) {
  for (const auto& [fg, g] : m) {
    std::lock_guard lock(ms.mu());
    auto l = ms.map_lookup_locked(ino, fg);
    ASSERT_TRUE(l.ok()) << l.error().to_string();
    EXPECT_EQ(l->state, SlotState::kMapped) << fg;
    EXPECT_EQ(l->grain, g) << fg;
  }
  expect_trimmed(ms);
}

// A file in the root directory.
uint64_t new_file(MetaStore& ms) {
  std::lock_guard lock(ms.mu());
  auto ino = ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
  EXPECT_TRUE(ino.ok());
  EXPECT_TRUE(ms.dir_add_locked(kRootIno, "f" + std::to_string(*ino), *ino, DT_REG).ok());
  return *ino;
}

MetaCacheStats cache_stats(MetaStore& ms) {
  std::lock_guard lock(ms.mu());
  return ms.cache_stats_locked();
}

TEST(MetaStoreCache, ManyMapsInASmallBudget) {
  auto dev = fresh();
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  std::vector<uint64_t> files;
  std::vector<std::map<uint64_t, uint64_t>> maps;
  uint64_t hint = 0;
  for (int f = 0; f < 4; ++f) {
    files.push_back(new_file(*ms));
    // 300 leaves per file (and their interior nodes and refcount blocks): about 30 times
    // the budget in all. Commits and checkpoints along the way.
    maps.push_back(install(*ms, files.back(), 300, hint, [&](uint64_t k) {
      if (k % 50 == 49) {
        ASSERT_TRUE(ms->commit().ok());
      }
      if (k % 120 == 119) {
        ASSERT_TRUE(ms->checkpoint(false).ok());
      }
    }));
  }
  for (int f = 0; f < 4; ++f) expect_maps(*ms, files[f], maps[f]);
  auto s = cache_stats(*ms);
  EXPECT_GT(s.evictions, 1000u);
  EXPECT_GT(s.misses, 1000u);
  EXPECT_EQ(s.budget_bytes, kSmallBudget);

  ASSERT_TRUE(ms->checkpoint(true).ok());
  ms.reset();
  auto report = run_fsck(*dev);
  EXPECT_TRUE(report.problems.empty()) << joined(report.problems);
  EXPECT_EQ(report.files, 4u);

  // Reopened with the same small budget, every map reads back.
  ms = open_store(*dev);
  ASSERT_TRUE(ms);
  for (int f = 0; f < 4; ++f) expect_maps(*ms, files[f], maps[f]);
  ASSERT_TRUE(ms->checkpoint(true).ok());
  ms.reset();
  report = run_fsck(*dev);
  EXPECT_TRUE(report.problems.empty()) << joined(report.problems);
}

// A directory in the root directory.
uint64_t new_dir(MetaStore& ms, const std::string& name) {
  std::lock_guard lock(ms.mu());
  auto ino = ms.alloc_inode_locked(S_IFDIR | 0755, 0, 0, kRootIno, 1);
  EXPECT_TRUE(ino.ok());
  EXPECT_TRUE(ms.dir_add_locked(kRootIno, name, *ino, DT_DIR).ok());
  auto root = ms.inode_for_update_locked(kRootIno);
  EXPECT_TRUE(root.ok());
  ++(*root)->nlink;  // the subdirectory's ".."
  return *ino;
}

std::string long_name(uint64_t dir, int i) {
  return fmt::format("disk-of-directory-{}-number-{:03}.vmdk", dir, i);
}

// Directory indexes count against the budget and only keep their share of it: the least
// recently used go when the mutex is released, and come back, the same, when used.
TEST(MetaStoreCache, DirectoryIndexesKeepTheirShareOfTheBudget) {
  auto dev = fresh();
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  constexpr int kDirs = 12, kNames = 60;  // about 12 KiB of index per directory
  std::vector<uint64_t> dirs;
  for (int d = 0; d < kDirs; ++d) dirs.push_back(new_dir(*ms, fmt::format("vm{}", d)));
  auto check_share = [&] {
    std::lock_guard lock(ms->mu());
    EXPECT_TRUE(ms->dir_index_bytes_locked() <= kSmallBudget / 8 || ms->dir_indexes_locked() <= 1)
        << ms->dir_indexes_locked() << " indexes of " << ms->dir_index_bytes_locked() << " bytes";
  };
  std::map<std::string, uint64_t> inos;
  // Files go into the directories in turn, so each index is dropped and built again
  // many times.
  for (int i = 0; i < kNames; ++i) {
    for (uint64_t dir : dirs) {
      {
        std::lock_guard lock(ms->mu());
        auto ino = ms->alloc_inode_locked(S_IFREG | 0644, 0, 0, 0, 1);
        ASSERT_TRUE(ino.ok());
        inos[long_name(dir, i)] = *ino;
        ASSERT_TRUE(ms->dir_add_locked(dir, long_name(dir, i), *ino, DT_REG).ok());
      }
      check_share();
    }
  }
  auto remove = [&](MetaStore& store, uint64_t dir, int i) {
    ASSERT_TRUE(store.dir_remove_locked(dir, long_name(dir, i)).ok());
    ASSERT_TRUE(store.free_inode_locked(inos[long_name(dir, i)]).ok());
  };
  // Every third file goes again.
  for (uint64_t dir : dirs) {
    for (int i = 0; i < kNames; i += 3) {
      std::lock_guard lock(ms->mu());
      remove(*ms, dir, i);
    }
    check_share();
  }
  auto expect_names = [&](MetaStore& store) {
    for (uint64_t dir : dirs) {
      std::lock_guard lock(store.mu());
      auto idx = store.dir_index_locked(dir);
      ASSERT_TRUE(idx.ok()) << idx.error().to_string();
      EXPECT_EQ((*idx)->size(), static_cast<size_t>(kNames - kNames / 3));
      for (int i = 0; i < kNames; ++i) {
        auto it = (*idx)->find(long_name(dir, i));
        if (i % 3 == 0) {
          EXPECT_EQ(it, (*idx)->end()) << long_name(dir, i);
        } else {
          ASSERT_NE(it, (*idx)->end()) << long_name(dir, i);
          EXPECT_EQ(it->second.ino, inos[long_name(dir, i)]);
        }
      }
    }
  };
  expect_names(*ms);
  check_share();
  expect_trimmed(*ms);

  // What an index is accounted at after its changes is what it is accounted at when
  // built from its blocks.
  auto big = [&] {
    EXPECT_TRUE(ms->checkpoint(true).ok());
    ms.reset();
    ms = open_store(*dev, 64ull << 20);
  };
  big();
  ASSERT_TRUE(ms);
  uint64_t changed_bytes = 0;
  {
    std::lock_guard lock(ms->mu());
    ASSERT_TRUE(ms->dir_index_locked(dirs[0]).ok());
    const uint64_t built = ms->dir_index_bytes_locked();
    // A rename to a name of the same length, and back.
    const uint64_t ino = inos[long_name(dirs[0], 1)];
    ASSERT_TRUE(ms->dir_add_locked(dirs[0], long_name(dirs[0], 0), ino, DT_REG).ok());
    ASSERT_TRUE(ms->dir_remove_locked(dirs[0], long_name(dirs[0], 1)).ok());
    changed_bytes = ms->dir_index_bytes_locked();
    EXPECT_EQ(changed_bytes, built) << "one name in, one of the same length out";
    ASSERT_TRUE(ms->dir_add_locked(dirs[0], long_name(dirs[0], 1), ino, DT_REG).ok());
    ASSERT_TRUE(ms->dir_remove_locked(dirs[0], long_name(dirs[0], 0)).ok());
    changed_bytes = ms->dir_index_bytes_locked();
  }
  big();
  ASSERT_TRUE(ms);
  {
    std::lock_guard lock(ms->mu());
    ASSERT_TRUE(ms->dir_index_locked(dirs[0]).ok());
    EXPECT_EQ(ms->dir_index_bytes_locked(), changed_bytes);
    EXPECT_EQ(ms->dir_indexes_locked(), 1u);
  }
  expect_names(*ms);
  {
    std::lock_guard lock(ms->mu());
    EXPECT_EQ(ms->dir_indexes_locked(), static_cast<uint64_t>(kDirs)) << "all fit now";
    // Freeing a directory drops its index.
    for (int i = 0; i < kNames; ++i) {
      if (i % 3 != 0) remove(*ms, dirs[1], i);
    }
    ASSERT_TRUE(ms->dir_remove_locked(kRootIno, "vm1").ok());
    ASSERT_TRUE(ms->free_inode_locked(dirs[1]).ok());
    auto root = ms->inode_for_update_locked(kRootIno);
    ASSERT_TRUE(root.ok());
    --(*root)->nlink;
    EXPECT_EQ(ms->dir_indexes_locked(), static_cast<uint64_t>(kDirs));  // the root's came in
  }
  ASSERT_TRUE(ms->checkpoint(true).ok());
  ms.reset();
  auto report = run_fsck(*dev);
  EXPECT_TRUE(report.problems.empty()) << joined(report.problems);
}

// Pushes every block of `ino`'s map out of the cache by reading another file's map.
void churn(MetaStore& ms, uint64_t other, const std::map<uint64_t, uint64_t>& other_map) {
  expect_maps(ms, other, other_map);
}

TEST(MetaStoreCache, BlockEvictedWithItsImageOnlyInTheJournalReadsBack) {
  auto dev = fresh();
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  uint64_t hint = 0;
  const uint64_t a = new_file(*ms), b = new_file(*ms);
  auto first = install(*ms, a, 100, hint);
  const auto bmap = install(*ms, b, 100, hint);
  ASSERT_TRUE(ms->checkpoint(false).ok());  // the homes hold `first`

  // New grains for every mapping of a, committed: their newest images are in the
  // journal only (homes are written by checkpoints).
  const auto second = install(*ms, a, 100, hint);
  ASSERT_TRUE(ms->commit().ok());
  uint64_t checkpoints;
  {
    std::lock_guard lock(ms->mu());
    checkpoints = ms->counters_locked().checkpoints;
  }
  churn(*ms, b, bmap);
  const uint64_t misses = cache_stats(*ms).misses;
  expect_maps(*ms, a, second);
  EXPECT_GE(cache_stats(*ms).misses, misses + 100) << "a's leaves were not evicted";
  {
    std::lock_guard lock(ms->mu());
    EXPECT_EQ(ms->counters_locked().checkpoints, checkpoints);  // still only in the journal
  }

  // Once checkpointed, from the homes.
  ASSERT_TRUE(ms->checkpoint(false).ok());
  churn(*ms, b, bmap);
  expect_maps(*ms, a, second);

  // And across a reopen that replays the journal (no clean unmount).
  const auto third = install(*ms, a, 100, hint);
  ASSERT_TRUE(ms->commit().ok());
  churn(*ms, b, bmap);
  expect_maps(*ms, a, third);
  auto image = dev->clone();
  ms.reset();  // never checkpointed: replay on open
  MetaOptions o;
  o.cache_budget_bytes = kSmallBudget;
  o.force = true;
  auto re = MetaStore::open(*image, o);
  ASSERT_TRUE(re.ok()) << re.error().to_string();
  expect_maps(**re, a, third);
  expect_maps(**re, b, bmap);
}

// Commits run while another thread changes maps and reads them back, with a budget that
// evicts at every release of the mutex: a block whose image is being written to the
// journal (neither at home nor among the pending images yet) must stay cached.
TEST(MetaStoreCache, CommitsRacingWithEvictionNeverLoseAChange) {
  auto dev = fresh(1ull << 30, 300);  // IO completes after up to 300 us: long commits
  auto ms = open_store(*dev);
  ASSERT_TRUE(ms);
  uint64_t hint = 0;
  const uint64_t a = new_file(*ms), b = new_file(*ms);
  std::map<uint64_t, uint64_t> amap = install(*ms, a, 60, hint);
  const auto bmap = install(*ms, b, 60, hint);
  ASSERT_TRUE(ms->commit().ok());  // b's map is clean from here on: churn evicts it
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> commits{0};
  std::thread committer([&] {
    while (!stop) {
      auto r = ms->commit();
      EXPECT_TRUE(r.ok()) << r.error().to_string();
      if (++commits % 10 == 0) {
        EXPECT_TRUE(ms->checkpoint(false).ok());
      }
    }
  });
  auto changes = [&] {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 1500; ++i) {
      const uint64_t fg = spread(rng() % 60);
      {
        std::lock_guard lock(ms->mu());
        auto g = ms->reserve_data_grain_locked(hint);
        ASSERT_TRUE(g.ok());
        ASSERT_TRUE(ms->map_install_locked(a, fg, *g).ok());
        amap[fg] = *g;
      }
      if (i % 3 == 0) churn(*ms, b, bmap);
      for (int k = 0; k < 5; ++k) {
        const uint64_t probe = spread(rng() % 60);
        std::lock_guard lock(ms->mu());
        auto l = ms->map_lookup_locked(a, probe);
        ASSERT_TRUE(l.ok()) << l.error().to_string();
        ASSERT_EQ(l->grain, amap[probe]) << "file grain " << probe << " after " << i << " changes";
      }
      // The mutex is not fair: let commits in (on a busy machine this loop could
      // otherwise take it back every time).
      if (i % 50 == 49) {
        for (const uint64_t c = commits; commits < c + 2;) std::this_thread::yield();
      }
    }
  };
  changes();
  stop = true;
  committer.join();
  ASSERT_FALSE(HasFailure());
  EXPECT_GT(commits.load(), 50u);
  EXPECT_GT(cache_stats(*ms).evictions, 1000u);
  expect_maps(*ms, a, amap);
  ASSERT_TRUE(ms->checkpoint(true).ok());
  ms.reset();
  auto report = run_fsck(*dev);
  EXPECT_TRUE(report.problems.empty()) << joined(report.problems);
}

// ---- the datastore with a small budget ----

std::vector<uint8_t> pattern(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

std::unique_ptr<Datastore> open_ds(std::unique_ptr<SimDevice> dev) {
  OpenOptions o;
  o.meta_cache_bytes = kSmallBudget;
  auto r = Datastore::open(std::move(dev), o);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// The datastore's view of the same guarantee (its stats are taken under the mutex,
// before anything is loaded): clean blocks within the budget, or only the few kept. The
// blocks here are tree nodes and tables, and directory blocks of a few entries (well
// under 1 KiB of heap).
void expect_bounded(Datastore& ds) {
  const MetaCacheInfo c = ds.stats().meta_cache;
  EXPECT_LE(c.bytes - c.unevictable_bytes,
            std::max(c.budget_bytes, kKeep * (kNodeBytes + 1024)))
      << c.bytes << " bytes, " << c.unevictable_bytes << " unevictable";
}

constexpr int kDisks = 4, kWrites = 80;
constexpr uint64_t kWriteBytes = 8192;
uint64_t write_offset(int k) { return uint64_t(k) * (3 << 20) + uint64_t(k % 5) * 4096; }

void expect_disks(Datastore& ds, const std::vector<Ino>& disks) {
  std::vector<uint8_t> back(kWriteBytes);
  for (int d = 0; d < kDisks; ++d) {
    for (int k = 0; k < kWrites; ++k) {
      ASSERT_TRUE(ds.read_sync(disks[d], write_offset(k), back.size(), back.data()).ok());
      ASSERT_EQ(back, pattern(kWriteBytes, d * 1000 + k)) << "disk " << d << " write " << k;
      if (k % 16 == 0) expect_bounded(ds);
    }
  }
}

// One request over many map leaves: more blocks than the cache keeps at once.
void expect_one_big_read(Datastore& ds, Ino disk, int d) {
  constexpr int kCovered = 32;  // writes, each in its own leaf
  const uint64_t span = write_offset(kCovered);
  std::vector<uint8_t> all(span, 0xee);
  auto r = ds.read_sync(disk, 0, span, all.data());
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  ASSERT_EQ(*r, span);
  std::vector<uint8_t> want(span, 0);
  for (int k = 0; k < kCovered; ++k) {
    const auto p = pattern(kWriteBytes, d * 1000 + k);
    std::copy(p.begin(), p.end(), want.begin() + static_cast<ptrdiff_t>(write_offset(k)));
  }
  EXPECT_TRUE(all == want);
}

TEST(DatastoreCache, DisksReadBackAndFsckIsCleanWithASmallBudget) {
  auto dev = fresh();
  SimDevice* raw = dev.get();
  auto ds = open_ds(std::move(dev));
  ASSERT_TRUE(ds);
  auto vm = ds->mkdir(kRootIno, "vm", 0755, 0, 0);
  ASSERT_TRUE(vm.ok());
  std::vector<Ino> disks;
  for (int d = 0; d < kDisks; ++d) {
    auto f = ds->create(vm->ino, "disk" + std::to_string(d), 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    disks.push_back(f->ino);
  }
  // Interleaved over the disks, every write in a map leaf of its own.
  for (int k = 0; k < kWrites; ++k) {
    for (int d = 0; d < kDisks; ++d) {
      const auto data = pattern(kWriteBytes, d * 1000 + k);
      ASSERT_TRUE(ds->write_sync(disks[d], write_offset(k), data.data(), data.size()).ok());
      expect_bounded(*ds);
    }
    if (k % 20 == 19) {
      ASSERT_TRUE(ds->fsync_sync(disks[0]).ok());
    }
  }
  expect_disks(*ds, disks);
  expect_one_big_read(*ds, disks[1], 1);
  const MetaCacheInfo c = ds->stats().meta_cache;
  EXPECT_EQ(c.budget_bytes, kSmallBudget);
  // Reading back alone needs a leaf per write: far more than the cache holds.
  EXPECT_GT(c.evictions, uint64_t(kDisks * kWrites / 2));
  EXPECT_GT(c.misses, uint64_t(kDisks * kWrites / 2));
  EXPECT_GT(c.hits, c.misses);
  ASSERT_TRUE(ds->close().ok());
  auto image = raw->clone();
  ds.reset();
  auto report = run_fsck(*image);
  EXPECT_TRUE(report.problems.empty()) << joined(report.problems);
  EXPECT_EQ(report.files, uint64_t(kDisks));

  SimDevice* raw2 = image.get();
  ds = open_ds(std::move(image));
  ASSERT_TRUE(ds);
  expect_one_big_read(*ds, disks[2], 2);  // cold
  expect_disks(*ds, disks);
  EXPECT_GT(ds->stats().meta_cache.evictions, uint64_t(kDisks * kWrites / 2));
  ASSERT_TRUE(ds->close().ok());
  auto image2 = raw2->clone();
  ds.reset();
  report = run_fsck(*image2);
  EXPECT_TRUE(report.problems.empty()) << joined(report.problems);
}

}  // namespace
}  // namespace vsfs::meta
