// InodeTable on a MetaStore over a SimDevice: the per-inode grain queue (FIFO starts,
// shared ranges together, its stats), freeing an unlinked inode at its last range or
// last open reference, lazily kept times, and allocation hints that outlive the entry.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device/sim_device.h"
#include "disk/inode_table.h"
#include "meta/meta_store.h"
#include "unit/disk/meta_store_test_util.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {
namespace {

struct Fixture {
  std::unique_ptr<device::SimDevice> dev;
  std::unique_ptr<meta::MetaStore> ms;
  std::unique_ptr<InodeTable> table;
};

Fixture open_table() {
  Fixture f;
  auto m = test::open_sim_meta_store();
  f.dev = std::move(m.dev);
  f.ms = std::move(m.ms);
  f.table = std::make_unique<InodeTable>(*f.ms);
  return f;
}

Ino new_file(meta::MetaStore& ms) {
  auto ino = ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, kRootIno, 1000);
  EXPECT_TRUE(ino.ok()) << ino.error().to_string();
  return *ino;
}

void unlink(meta::MetaStore& ms, Ino ino) {
  auto rec = ms.inode_for_update_locked(ino);
  ASSERT_TRUE(rec.ok()) << rec.error().to_string();
  (*rec)->nlink = 0;
}

bool exists(meta::MetaStore& ms, Ino ino) { return ms.inode_locked(ino).ok(); }

GrainRange excl(uint64_t first, uint64_t end) { return GrainRange{first, end, true}; }
GrainRange shared(uint64_t first, uint64_t end) { return GrainRange{first, end, false}; }

TEST(InodeTableQueue, ExclusiveWaitsAndStartsInFifoOrderOnRelease) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  std::vector<std::string> started;
  RangeLock::Handle ha, hb, hc, hd;
  f.table->acquire_locked(ino, excl(0, 8), [&] { started.push_back("a"); }, &ha);
  f.table->acquire_locked(ino, excl(4, 6), [&] { started.push_back("b"); }, &hb);
  f.table->acquire_locked(ino, excl(0, 2), [&] { started.push_back("c"); }, &hc);
  f.table->acquire_locked(ino, excl(100, 101), [&] { started.push_back("d"); }, &hd);
  // d does not overlap anything: it runs at once; b and c wait behind a.
  EXPECT_EQ(started, (std::vector<std::string>{"a", "d"}));
  EXPECT_TRUE(f.table->in_use_locked(ino));

  QueueStats before;
  f.table->fill_stats_locked(before);
  EXPECT_EQ(before.waits, 0u);
  EXPECT_EQ(before.waiting_now, 2u);

  f.table->release_locked(ino, ha);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "d", "b", "c"}));
  QueueStats after;
  f.table->fill_stats_locked(after);
  EXPECT_EQ(after.waits, 2u);
  EXPECT_EQ(after.waiting_now, 0u);

  f.table->release_locked(ino, hb);
  f.table->release_locked(ino, hc);
  EXPECT_TRUE(f.table->in_use_locked(ino));  // d still held
  f.table->release_locked(ino, hd);
  EXPECT_FALSE(f.table->in_use_locked(ino));
  EXPECT_TRUE(exists(*f.ms, ino));  // linked: not freed
}

TEST(InodeTableQueue, WaiterBlocksLaterOverlappingRequests) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  std::vector<std::string> started;
  RangeLock::Handle ha, hb, hc;
  f.table->acquire_locked(ino, shared(0, 4), [&] { started.push_back("a"); }, &ha);
  f.table->acquire_locked(ino, excl(2, 3), [&] { started.push_back("b"); }, &hb);
  // c is shared like a, but overlaps the waiting b: it must not overtake it.
  f.table->acquire_locked(ino, shared(2, 6), [&] { started.push_back("c"); }, &hc);
  EXPECT_EQ(started, (std::vector<std::string>{"a"}));
  f.table->release_locked(ino, ha);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "b"}));
  f.table->release_locked(ino, hb);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "b", "c"}));
  f.table->release_locked(ino, hc);
  QueueStats s;
  f.table->fill_stats_locked(s);
  EXPECT_EQ(s.waits, 2u);
  EXPECT_EQ(s.waiting_now, 0u);
}

TEST(InodeTableQueue, FreedWaiterStaysBehindAnEarlierStillWaitingOne) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  std::vector<std::string> started;
  RangeLock::Handle ha, hb, h1, h2;
  f.table->acquire_locked(ino, excl(0, 2), [&] { started.push_back("a"); }, &ha);
  f.table->acquire_locked(ino, excl(4, 6), [&] { started.push_back("b"); }, &hb);
  f.table->acquire_locked(ino, excl(1, 5), [&] { started.push_back("w1"); }, &h1);
  f.table->acquire_locked(ino, excl(2, 3), [&] { started.push_back("w2"); }, &h2);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "b"}));
  // a goes: w2's grain is free of held ranges, but w1 (still behind b) came first.
  f.table->release_locked(ino, ha);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "b"}));
  f.table->release_locked(ino, hb);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "b", "w1"}));
  f.table->release_locked(ino, h1);
  EXPECT_EQ(started, (std::vector<std::string>{"a", "b", "w1", "w2"}));
  f.table->release_locked(ino, h2);
  EXPECT_FALSE(f.table->in_use_locked(ino));
}

TEST(InodeTableQueue, SharedRangesRunTogether) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  int running = 0;
  bool writer = false;
  RangeLock::Handle h1, h2, hw;
  f.table->acquire_locked(ino, shared(0, 10), [&] { ++running; }, &h1);
  f.table->acquire_locked(ino, shared(5, 15), [&] { ++running; }, &h2);
  EXPECT_EQ(running, 2);
  f.table->acquire_locked(ino, excl(9, 10), [&] { writer = true; }, &hw);
  EXPECT_FALSE(writer);
  f.table->release_locked(ino, h1);
  EXPECT_FALSE(writer);  // h2 still covers grain 9
  f.table->release_locked(ino, h2);
  EXPECT_TRUE(writer);
  f.table->release_locked(ino, hw);
  QueueStats s;
  f.table->fill_stats_locked(s);
  EXPECT_EQ(s.waits, 1u);
}

TEST(InodeTableFree, UnlinkedInodeFreedAtItsLastRangeWhenNotOpen) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  const uint64_t live = f.ms->live_inodes_locked();
  RangeLock::Handle h1, h2;
  f.table->acquire_locked(ino, excl(0, 1), [] {}, &h1);
  f.table->acquire_locked(ino, excl(1, 2), [] {}, &h2);
  unlink(*f.ms, ino);
  f.table->release_locked(ino, h1);
  EXPECT_TRUE(exists(*f.ms, ino));  // a range still held
  EXPECT_TRUE(f.table->in_use_locked(ino));
  f.table->release_locked(ino, h2);
  EXPECT_FALSE(exists(*f.ms, ino));
  EXPECT_EQ(f.ms->live_inodes_locked(), live - 1);
  EXPECT_FALSE(f.table->in_use_locked(ino));
}

TEST(InodeTableFree, OpenReferenceKeepsUnlinkedInodeUntilTheLastRelease) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  f.table->open_ref_locked(ino);
  f.table->open_ref_locked(ino);
  EXPECT_TRUE(f.table->in_use_locked(ino));
  RangeLock::Handle h;
  f.table->acquire_locked(ino, excl(0, 4), [] {}, &h);
  unlink(*f.ms, ino);
  f.table->release_locked(ino, h);
  EXPECT_TRUE(exists(*f.ms, ino));  // still open
  f.table->release_ref_locked(ino);
  EXPECT_TRUE(exists(*f.ms, ino));  // one reference left
  EXPECT_TRUE(f.table->in_use_locked(ino));
  f.table->release_ref_locked(ino);
  EXPECT_FALSE(exists(*f.ms, ino));
  EXPECT_FALSE(f.table->in_use_locked(ino));
}

TEST(InodeTableFree, LastReferenceWithARangeHeldDoesNotFree) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  f.table->open_ref_locked(ino);
  RangeLock::Handle h;
  f.table->acquire_locked(ino, excl(0, 4), [] {}, &h);
  unlink(*f.ms, ino);
  f.table->release_ref_locked(ino);
  EXPECT_TRUE(exists(*f.ms, ino));  // a request still runs
  EXPECT_TRUE(f.table->in_use_locked(ino));
  f.table->release_locked(ino, h);
  EXPECT_FALSE(exists(*f.ms, ino));
}

TEST(InodeTableFree, LinkedInodeIsNeverFreed) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  f.table->open_ref_locked(ino);
  RangeLock::Handle h;
  f.table->acquire_locked(ino, excl(0, 4), [] {}, &h);
  f.table->release_locked(ino, h);
  f.table->release_ref_locked(ino);
  EXPECT_TRUE(exists(*f.ms, ino));
  EXPECT_FALSE(f.table->in_use_locked(ino));
  EXPECT_FALSE(f.table->in_use_locked(ino + 1000));  // never seen
}

TEST(InodeTableTimes, TouchedTimeShowsUntilPersistedIntoTheRecord) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  {
    auto rec = f.ms->inode_locked(ino);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ((*rec)->mtime_ns, 1000u);
    EXPECT_EQ(f.table->attr_locked(**rec).mtime_ns, 1000u);
  }
  f.table->touch_data_locked(ino, 5000);
  {
    auto rec = f.ms->inode_locked(ino);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ((*rec)->mtime_ns, 1000u);  // not in the record yet
    const Attr a = f.table->attr_locked(**rec);
    EXPECT_EQ(a.mtime_ns, 5000u);
    EXPECT_EQ(a.ctime_ns, 5000u);
    EXPECT_EQ(a.ino, ino);
  }
  // A range taken and released does not drop the kept time.
  RangeLock::Handle h;
  f.table->acquire_locked(ino, excl(0, 1), [] {}, &h);
  f.table->release_locked(ino, h);
  {
    auto rec = f.ms->inode_locked(ino);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(f.table->attr_locked(**rec).mtime_ns, 5000u);
  }
  auto p = f.table->persist_times_locked(ino);
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  {
    auto rec = f.ms->inode_locked(ino);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ((*rec)->mtime_ns, 5000u);
    EXPECT_EQ((*rec)->ctime_ns, 5000u);
    EXPECT_EQ(f.table->attr_locked(**rec).mtime_ns, 5000u);
  }
  // Nothing kept any more: a later record time is not overridden.
  {
    auto rec = f.ms->inode_for_update_locked(ino);
    ASSERT_TRUE(rec.ok());
    (*rec)->mtime_ns = 6000;
  }
  ASSERT_TRUE(f.table->persist_times_locked(ino).ok());
  auto rec = f.ms->inode_locked(ino);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ((*rec)->mtime_ns, 6000u);
  EXPECT_EQ(f.table->attr_locked(**rec).mtime_ns, 6000u);
}

TEST(InodeTableTimes, LastOpenReferenceWritesTheKeptTime) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  f.table->open_ref_locked(ino);
  f.table->touch_data_locked(ino, 7000);
  f.table->release_ref_locked(ino);
  auto rec = f.ms->inode_locked(ino);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ((*rec)->mtime_ns, 7000u);
}

TEST(InodeTableHint, HintOutlivesTheEntryOfItsInode) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino a = new_file(*f.ms);
  const Ino b = new_file(*f.ms);
  RangeLock::Handle ha, hb;
  f.table->acquire_locked(a, excl(0, 1), [] {}, &ha);
  f.table->acquire_locked(b, excl(0, 1), [] {}, &hb);
  EXPECT_EQ(f.table->hint_locked(a), 0u);
  f.table->hint_locked(a) = 77;
  f.table->hint_locked(b) = 99;
  EXPECT_EQ(f.table->hint_locked(a), 77u);
  f.table->release_locked(a, ha);  // last range, not open: a's entry goes
  f.table->release_locked(b, hb);
  EXPECT_FALSE(f.table->in_use_locked(a));
  EXPECT_EQ(f.table->hint_locked(a), 77u);
  EXPECT_EQ(f.table->hint_locked(b), 99u);
  const Ino c = new_file(*f.ms);
  EXPECT_EQ(f.table->hint_locked(c), 0u);  // hints belong to their inode
  // The hint moves on; after the entry goes again the new value is kept.
  RangeLock::Handle h2;
  f.table->acquire_locked(a, excl(0, 1), [] {}, &h2);
  f.table->hint_locked(a) = 78;
  f.table->release_locked(a, h2);
  EXPECT_EQ(f.table->hint_locked(a), 78u);
}

}  // namespace
}  // namespace vsfs::disk

namespace vsfs::disk {
namespace {

// A start that fails at once releases its range from inside the release that started it
// (DataPath does when a lookup fails or a write finds no space). When that nested
// release is the inode's last, the entry goes while the outer release still held an
// iterator to it: the outer release then used and erased a dangling entry (a crash).
TEST(InodeTableQueue, StartThatReleasesAtOnceInsideTheRelease) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  RangeLock::Handle hw, hr;
  f.table->acquire_locked(ino, excl(0, 4), [] {}, &hw);
  bool ran = false;
  f.table->acquire_locked(ino, shared(0, 4), [&] {
    ran = true;
    f.table->release_locked(ino, hr);  // fails at once: gives its range back
  }, &hr);
  unlink(*f.ms, ino);
  f.table->release_locked(ino, hw);
  EXPECT_TRUE(ran);
  EXPECT_FALSE(exists(*f.ms, ino));
  EXPECT_FALSE(f.table->in_use_locked(ino));
}

// A start may take another disk's range (a clone takes its source's range, then its
// destination's): new entries can rehash the table under the release that ran the start.
// The outer release must still find its own entry, free the unlinked inode, and leave
// the others alone.
TEST(InodeTableQueue, StartThatAddsEntriesInsideTheRelease) {
  auto f = open_table();
  std::lock_guard lock(f.ms->mu());
  const Ino ino = new_file(*f.ms);
  RangeLock::Handle hw, hr;
  f.table->acquire_locked(ino, excl(0, 4), [] {}, &hw);
  std::vector<Ino> others;
  std::vector<RangeLock::Handle> handles(2000);
  f.table->acquire_locked(ino, shared(0, 4), [&] {
    for (size_t i = 0; i < handles.size(); ++i) {
      others.push_back(ino + 1000 + i);  // ranges of other disks: new entries
      f.table->acquire_locked(others.back(), excl(0, 1), [] {}, &handles[i]);
    }
    f.table->release_locked(ino, hr);
  }, &hr);
  unlink(*f.ms, ino);
  f.table->release_locked(ino, hw);
  EXPECT_FALSE(exists(*f.ms, ino));
  EXPECT_FALSE(f.table->in_use_locked(ino));
  ASSERT_EQ(others.size(), handles.size());
  for (Ino o : others) EXPECT_TRUE(f.table->in_use_locked(o));
}

}  // namespace
}  // namespace vsfs::disk
