// Services without background threads, on a MetaStore + SimDevice + ChangeGates: the
// commit step answers queued fsyncs and write-for-space waiters, stop() answers what is
// still queued with a last commit and refuses later queueing, run_step is refused when
// the threads run it, and the format step reports when nothing is left to format.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "device/sim_device.h"
#include "disk/change_gates.h"
#include "disk/services.h"
#include "meta/meta_store.h"
#include "unit/disk/meta_store_test_util.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs::disk {
namespace {

struct Fixture {
  std::unique_ptr<device::SimDevice> dev;
  std::unique_ptr<meta::MetaStore> ms;
  std::unique_ptr<ChangeGates> gates;
  std::unique_ptr<Services> services;
  ~Fixture() {
    if (services) services->stop();
  }
};

std::unique_ptr<Fixture> open_services(bool background = false) {
  auto f = std::make_unique<Fixture>();
  auto m = test::open_sim_meta_store();
  f->dev = std::move(m.dev);
  f->ms = std::move(m.ms);
  f->gates = std::make_unique<ChangeGates>(*f->ms, [] {});
  OpenOptions opts;
  opts.start_background = background;
  f->services = std::make_unique<Services>(*f->dev, *f->ms, *f->gates, opts);
  return f;
}

uint64_t commits(meta::MetaStore& ms) {
  std::lock_guard lock(ms.mu());
  return ms.counters_locked().commits;
}

// A metadata change, so that the next commit has something to write.
void change(meta::MetaStore& ms) {
  std::lock_guard lock(ms.mu());
  auto ino = ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, kRootIno, 1);
  ASSERT_TRUE(ino.ok()) << ino.error().to_string();
  EXPECT_TRUE(ms.has_changes_locked());
}

bool has_changes(meta::MetaStore& ms) {
  std::lock_guard lock(ms.mu());
  return ms.has_changes_locked();
}

// Records the answers given to a Done<void>.
struct Answers {
  int calls = 0;
  std::optional<int> err;  // errno of the last answer, nullopt when ok
  Done<void> done() {
    return [this](Result<void> r) {
      ++calls;
      err = r.ok() ? std::nullopt : std::optional<int>(r.error().errno_value);
    };
  }
};

TEST(ServicesCommit, CommitStepAnswersAQueuedFsync) {
  auto f = open_services();
  change(*f->ms);
  const uint64_t before = commits(*f->ms);
  Answers a;
  Done<void> d = a.done();
  ASSERT_TRUE(f->services->after_next_commit(d));
  EXPECT_EQ(a.calls, 0);  // nothing runs it without a step
  auto r = f->services->run_step(BackgroundStep::kCommit);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(*r);
  EXPECT_EQ(a.calls, 1);
  EXPECT_FALSE(a.err.has_value());
  EXPECT_EQ(commits(*f->ms), before + 1);
  EXPECT_FALSE(has_changes(*f->ms));
  // Answered once: another step does not call it again.
  ASSERT_TRUE(f->services->run_step(BackgroundStep::kCommit).ok());
  EXPECT_EQ(a.calls, 1);
}

TEST(ServicesCommit, FsyncWithoutThreadsCommitsOnTheCallersThread) {
  auto f = open_services();
  change(*f->ms);
  const uint64_t before = commits(*f->ms);
  Answers a;
  f->services->fsync(a.done());
  EXPECT_EQ(a.calls, 1);
  EXPECT_FALSE(a.err.has_value());
  EXPECT_EQ(commits(*f->ms), before + 1);
  EXPECT_FALSE(has_changes(*f->ms));
}

TEST(ServicesCommit, CommitIfWantedDoesNothingWhenNothingWaits) {
  auto f = open_services();
  change(*f->ms);  // a small transaction: not wanted yet
  const uint64_t before = commits(*f->ms);
  auto r = f->services->run_step(BackgroundStep::kCommitIfWanted);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  EXPECT_EQ(commits(*f->ms), before);
  EXPECT_TRUE(has_changes(*f->ms));
}

TEST(ServicesSteps, RefusedWhenTheThreadsRunThem) {
  auto f = open_services(/*background=*/true);  // not started: no thread runs
  auto r = f->services->run_step(BackgroundStep::kCommit);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, EINVAL);
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  auto fmt = f->services->run_step(BackgroundStep::kFormat);
  ASSERT_FALSE(fmt.ok());
  EXPECT_EQ(fmt.error().errno_value, EINVAL);
}

TEST(ServicesStop, AnswersAQueuedFsyncWithALastCommitThenRefusesMore) {
  auto f = open_services();
  change(*f->ms);
  const uint64_t before = commits(*f->ms);
  Answers a;
  Done<void> d = a.done();
  ASSERT_TRUE(f->services->after_next_commit(d));
  f->services->stop();
  EXPECT_EQ(a.calls, 1);
  EXPECT_FALSE(a.err.has_value());
  EXPECT_EQ(commits(*f->ms), before + 1);
  EXPECT_FALSE(has_changes(*f->ms));

  Answers late;
  Done<void> d2 = late.done();
  EXPECT_FALSE(f->services->after_next_commit(d2));
  ASSERT_TRUE(d2);  // untouched: the caller still owns it
  d2(ok_result());
  EXPECT_EQ(late.calls, 1);
  f->services->stop();  // idempotent
  EXPECT_EQ(a.calls, 1);
}

TEST(ServicesStop, NothingQueuedMeansNoLastCommit) {
  auto f = open_services();
  change(*f->ms);
  const uint64_t before = commits(*f->ms);
  f->services->stop();
  EXPECT_EQ(commits(*f->ms), before);
  EXPECT_TRUE(has_changes(*f->ms));  // the owner's close commits it, not stop()
}

TEST(ServicesSpace, WaitersGetOkFromTheCommitStep) {
  auto f = open_services();
  change(*f->ms);
  const uint64_t before = commits(*f->ms);
  Answers w1, w2;
  {
    std::lock_guard lock(f->ms->mu());
    f->services->wait_for_space_locked(w1.done());
    f->services->wait_for_space_locked(w2.done());
  }
  EXPECT_EQ(w1.calls, 0);
  auto r = f->services->run_step(BackgroundStep::kCommitIfWanted);  // waiters want it
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(*r);
  EXPECT_EQ(w1.calls, 1);
  EXPECT_EQ(w2.calls, 1);
  EXPECT_FALSE(w1.err.has_value());
  EXPECT_FALSE(w2.err.has_value());
  EXPECT_GT(commits(*f->ms), before);
  // Answered and gone: failing the waiters now reaches nobody.
  f->services->fail_space_waiters();
  EXPECT_EQ(w1.calls, 1);
  EXPECT_FALSE(w1.err.has_value());
}

TEST(ServicesSpace, FailSpaceWaitersAnswersEnospc) {
  auto f = open_services();
  Answers w;
  {
    std::lock_guard lock(f->ms->mu());
    f->services->wait_for_space_locked(w.done());
  }
  f->services->fail_space_waiters();
  EXPECT_EQ(w.calls, 1);
  ASSERT_TRUE(w.err.has_value());
  EXPECT_EQ(*w.err, ENOSPC);
  // Gone: a commit step does not answer it again.
  ASSERT_TRUE(f->services->run_step(BackgroundStep::kCommit).ok());
  EXPECT_EQ(w.calls, 1);
}

TEST(ServicesFormat, FormatStepFalseWhenNothingToFormat) {
  auto f = open_services();
  EXPECT_FALSE(f->services->formatter_running());
  uint64_t to_format;
  {
    std::lock_guard lock(f->ms->mu());
    to_format = f->ms->space_locked().to_format_blocks;
  }
  // Whatever mkfs left to format is formatted one block per step, then nothing is left.
  for (uint64_t i = 0; i < to_format; ++i) {
    auto r = f->services->run_step(BackgroundStep::kFormat);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_TRUE(*r);
  }
  auto r = f->services->run_step(BackgroundStep::kFormat);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_FALSE(*r);
  std::lock_guard lock(f->ms->mu());
  EXPECT_EQ(f->ms->space_locked().to_format_blocks, 0u);
}

// Fills a whole storage block of a new disk, deletes the disk and lets the space go
// back to the free lists: that block is then waiting to be formatted.
void free_a_block(Services& services, meta::MetaStore& ms) {
  {
    std::lock_guard lock(ms.mu());
    auto ino = ms.alloc_inode_locked(S_IFREG | 0644, 0, 0, kRootIno, 1);
    ASSERT_TRUE(ino.ok());
    uint64_t hint = 0;
    for (uint64_t i = 0; i < kBlockBytes / kGrainBytes; ++i) {
      auto g = ms.reserve_data_grain_locked(hint);
      ASSERT_TRUE(g.ok()) << g.error().to_string();
      ASSERT_TRUE(ms.map_install_locked(*ino, i, *g).ok());
    }
    ASSERT_TRUE(ms.free_inode_locked(*ino).ok());
  }
  for (int i = 0; i < 100; ++i) {
    auto more = services.run_step(BackgroundStep::kRelease);
    ASSERT_TRUE(more.ok()) << more.error().to_string();
    if (!*more) break;
  }
  ASSERT_TRUE(ms.commit().ok());
  ASSERT_TRUE(ms.checkpoint(false).ok());
}

TEST(ServicesFormat, FormatStepFormatsAFreedBlock) {
  auto f = open_services();
  free_a_block(*f->services, *f->ms);
  uint64_t to_format;
  {
    std::lock_guard lock(f->ms->mu());
    to_format = f->ms->space_locked().to_format_blocks;
  }
  ASSERT_GT(to_format, 0u);
  for (uint64_t i = 0; i < to_format; ++i) {
    auto r = f->services->run_step(BackgroundStep::kFormat);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_TRUE(*r);
  }
  auto r = f->services->run_step(BackgroundStep::kFormat);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  {
    std::lock_guard lock(f->ms->mu());
    EXPECT_EQ(f->ms->space_locked().to_format_blocks, 0u);
    EXPECT_GE(f->ms->space_locked().formatted_bytes_total, to_format * kBlockBytes);
  }
}

// Without threads the formatter runs only during a step: after stepped formats the flag
// (shown in .vsfs/stats) is false again; it stayed true when only formatter_loop cleared
// it.
TEST(ServicesFormat, FormatterNotRunningAfterASteppedFormat) {
  auto f = open_services();
  free_a_block(*f->services, *f->ms);
  for (int i = 0; i < 100; ++i) {
    auto r = f->services->run_step(BackgroundStep::kFormat);
    ASSERT_TRUE(r.ok());
    if (!*r) break;
  }
  EXPECT_FALSE(f->services->formatter_running());
}

}  // namespace
}  // namespace vsfs::disk
