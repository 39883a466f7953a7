// ChangeGates on a MetaStore: the snapshot gate (changes start at once, a cut waits for
// every change counted before it, changes arriving during the cut are parked and run in
// order after it) and the journal gate (admission up to the transaction's room, parking
// with a wake of the committer, the first parked one let in when room returns), and stats.
#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "device/sim_device.h"
#include "disk/change_gates.h"
#include "meta/meta_store.h"
#include "unit/disk/meta_store_test_util.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {
namespace {

struct Fixture {
  std::unique_ptr<device::SimDevice> dev;
  std::unique_ptr<meta::MetaStore> ms;
  int wakes = 0;  // guarded by ms->mu()
  std::unique_ptr<ChangeGates> gates;
};

std::unique_ptr<Fixture> open_gates() {
  auto f = std::make_unique<Fixture>();
  auto m = test::open_sim_meta_store();
  f->dev = std::move(m.dev);
  f->ms = std::move(m.ms);
  f->gates = std::make_unique<ChangeGates>(*f->ms, [p = f.get()] { ++p->wakes; });
  return f;
}

TEST(ChangeGatesSnapshot, ChangesStartAtOnceWithoutACut) {
  auto f = open_gates();
  std::lock_guard lock(f->ms->mu());
  bool c1 = false, c2 = false;
  int ran = 0;
  f->gates->begin_change_locked(c1, [&] { ++ran; });
  f->gates->begin_change_locked(c2, [&] { ++ran; });
  EXPECT_EQ(ran, 2);
  EXPECT_TRUE(c1);
  EXPECT_TRUE(c2);
  DatastoreStats s;
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.snapshot_queue.waits, 0u);
  EXPECT_EQ(s.snapshot_queue.waiting_now, 0u);
  f->gates->end_change_locked();
  f->gates->end_change_locked();
}

TEST(ChangeGatesSnapshot, CutWaitsForChangesInProgressAndParksNewOnes) {
  auto f = open_gates();
  auto& ms = *f->ms;
  std::vector<std::string> order;  // guarded by ms.mu()
  bool a1 = false, a2 = false;
  {
    std::lock_guard lock(ms.mu());
    f->gates->begin_change_locked(a1, [&] { order.push_back("a1"); });
    f->gates->begin_change_locked(a2, [&] { order.push_back("a2"); });
  }

  std::promise<void> cutting;
  std::thread cutter([&] {
    std::unique_lock lock(ms.mu());
    // Set while the mutex is held: cut_locked raises its barrier before it first
    // releases the mutex, so whoever takes the mutex next finds the cut in progress.
    cutting.set_value();
    f->gates->cut_locked(lock, [&] { order.push_back("cut"); });
  });
  cutting.get_future().wait();

  bool b = false, c = false;
  {
    std::lock_guard lock(ms.mu());
    f->gates->begin_change_locked(b, [&] { order.push_back("b"); });
    f->gates->begin_change_locked(c, [&] { order.push_back("c"); });
    EXPECT_FALSE(b);  // parked, not counted
    EXPECT_FALSE(c);
    EXPECT_EQ(order, (std::vector<std::string>{"a1", "a2"}));
    DatastoreStats s;
    f->gates->fill_stats_locked(s);
    EXPECT_EQ(s.snapshot_queue.waiting_now, 2u);
    EXPECT_EQ(s.snapshot_queue.waits, 0u);
    f->gates->end_change_locked();  // a1 ends; a2 is still in progress
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  {
    std::lock_guard lock(ms.mu());
    EXPECT_EQ(order, (std::vector<std::string>{"a1", "a2"}));  // the cut still waits
    f->gates->end_change_locked();  // a2 ends: the cut may run
  }
  cutter.join();
  std::lock_guard lock(ms.mu());
  EXPECT_EQ(order, (std::vector<std::string>{"a1", "a2", "cut", "b", "c"}));
  EXPECT_TRUE(b);
  EXPECT_TRUE(c);
  DatastoreStats s;
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.snapshot_queue.waits, 2u);
  EXPECT_EQ(s.snapshot_queue.waiting_now, 0u);
  // After the cut, changes start at once again.
  bool d = false;
  f->gates->begin_change_locked(d, [&] { order.push_back("d"); });
  EXPECT_TRUE(d);
  EXPECT_EQ(order.back(), "d");
  for (int i = 0; i < 3; ++i) f->gates->end_change_locked();  // b, c, d
}

TEST(ChangeGatesSnapshot, CutWithNothingInProgressRunsAtOnce) {
  auto f = open_gates();
  std::unique_lock lock(f->ms->mu());
  bool ran = false;
  f->gates->cut_locked(lock, [&] { ran = true; });
  EXPECT_TRUE(ran);
  EXPECT_TRUE(lock.owns_lock());
  bool c = false;
  f->gates->begin_change_locked(c, [] {});
  EXPECT_TRUE(c);
  f->gates->end_change_locked();
}

TEST(ChangeGatesJournal, AdmitsUpToTheRoomThenParksAndWakesTheCommitter) {
  auto f = open_gates();
  std::lock_guard lock(f->ms->mu());
  const uint64_t room = f->ms->transaction_room_locked();
  const uint64_t fit = room / kChangeBlocksMax;
  ASSERT_GE(fit, 2u);
  auto admitted = std::make_unique<bool[]>(fit + 2);
  std::vector<uint64_t> started;
  for (uint64_t i = 0; i < fit; ++i) {
    f->gates->admit_locked(admitted[i], [&, i] { started.push_back(i); });
  }
  EXPECT_EQ(started.size(), fit);
  EXPECT_EQ(f->wakes, 0);
  EXPECT_FALSE(f->gates->admissions_waiting_locked());

  f->gates->admit_locked(admitted[fit], [&] { started.push_back(fit); });
  f->gates->admit_locked(admitted[fit + 1], [&] { started.push_back(fit + 1); });
  EXPECT_EQ(started.size(), fit);
  EXPECT_FALSE(admitted[fit]);
  EXPECT_FALSE(admitted[fit + 1]);
  EXPECT_EQ(f->wakes, 2);
  EXPECT_TRUE(f->gates->admissions_waiting_locked());
  DatastoreStats s;
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.journal_queue.waiting_now, 2u);
  EXPECT_EQ(s.journal_queue.waits, 0u);

  // One change ends: room for one, the first parked gets it; the other parks again.
  f->gates->unadmit_locked();
  ASSERT_EQ(started.size(), fit + 1);
  EXPECT_EQ(started.back(), fit);
  EXPECT_TRUE(admitted[fit]);
  EXPECT_FALSE(admitted[fit + 1]);
  EXPECT_TRUE(f->gates->admissions_waiting_locked());
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.journal_queue.waiting_now, 1u);
  EXPECT_GE(s.journal_queue.waits, 1u);

  f->gates->unadmit_locked();
  ASSERT_EQ(started.size(), fit + 2);
  EXPECT_EQ(started.back(), fit + 1);
  EXPECT_TRUE(admitted[fit + 1]);
  EXPECT_FALSE(f->gates->admissions_waiting_locked());
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.journal_queue.waiting_now, 0u);
}

TEST(ChangeGatesJournal, ResumeWithoutRoomKeepsOrder) {
  auto f = open_gates();
  std::lock_guard lock(f->ms->mu());
  const uint64_t fit = f->ms->transaction_room_locked() / kChangeBlocksMax;
  auto admitted = std::make_unique<bool[]>(fit + 3);
  std::vector<uint64_t> started;
  for (uint64_t i = 0; i < fit + 3; ++i) {
    f->gates->admit_locked(admitted[i], [&, i] { started.push_back(i); });
  }
  ASSERT_EQ(started.size(), fit);
  // A commit made no room (nothing was committed): all stay parked, in order.
  f->gates->resume_admissions_locked();
  EXPECT_EQ(started.size(), fit);
  DatastoreStats s;
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.journal_queue.waiting_now, 3u);
  // Room for two: the first two in arrival order.
  f->gates->unadmit_locked();
  f->gates->unadmit_locked();
  ASSERT_EQ(started.size(), fit + 2);
  EXPECT_EQ(started[fit], fit);
  EXPECT_EQ(started[fit + 1], fit + 1);
  EXPECT_FALSE(admitted[fit + 2]);
}

// QueueStats::waits counts requests that had to wait: a change parked again by a resume
// (no room yet) still counts once (every retry counted one before).
TEST(ChangeGatesJournal, EachParkedChangeCountsAsOneWait) {
  auto f = open_gates();
  std::lock_guard lock(f->ms->mu());
  const uint64_t fit = f->ms->transaction_room_locked() / kChangeBlocksMax;
  auto admitted = std::make_unique<bool[]>(fit + 2);
  for (uint64_t i = 0; i < fit + 2; ++i) f->gates->admit_locked(admitted[i], [] {});
  f->gates->unadmit_locked();  // the first parked goes in, the second parks again
  f->gates->unadmit_locked();  // the second goes in
  ASSERT_TRUE(admitted[fit + 1]);
  DatastoreStats s;
  f->gates->fill_stats_locked(s);
  EXPECT_EQ(s.journal_queue.waits, 2u);  // two changes waited
}

}  // namespace
}  // namespace vsfs::disk
