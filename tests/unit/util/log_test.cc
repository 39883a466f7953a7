// The log's sinks: a file gets every line with a timestamp and the program's name, each
// line names the subject once, the level filters, a line repeated in a burst is written
// kRepeatBurst times, not more, the last error is kept for .vsfs/stats, and a broken
// invariant (VSFS_ASSERT) is logged before the process stops.
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "util/assert.h"
#include "util/log.h"

namespace vsfs {
namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vsfs-log-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/vsfs.log";
    log_to_stderr(false);
    set_log_ident("vsfs-test");
    set_log_level(LogLevel::kInfo);
    ASSERT_TRUE(log_to_file(path_).ok());
  }
  void TearDown() override {
    set_log_subject("");
    log_to_stderr(true);
    set_log_level(LogLevel::kWarn);
    std::remove(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_, path_;
};

TEST_F(LogTest, FileLinesNameTheSubjectOnce) {
  set_log_subject("/srv/ds.img");
  VSFS_LOG_WARN("journal commit failed: {}", "EIO");
  VSFS_LOG_INFO("/srv/ds.img mounted at {}", "/mnt");
  VSFS_LOG_DEBUG("not written at level info");
  const auto l = lines_of(path_);
  ASSERT_EQ(l.size(), 2u);
  const std::string pid = std::to_string(::getpid());
  EXPECT_NE(l[0].find(" vsfs-test[" + pid + "]: warning: /srv/ds.img: journal commit failed: EIO"),
            std::string::npos)
      << l[0];
  EXPECT_NE(l[1].find(" vsfs-test[" + pid + "]: info: /srv/ds.img mounted at /mnt"),
            std::string::npos)
      << l[1];
  // An ISO 8601 time first: 2026-12-05T00:44:41+0000.
  EXPECT_EQ(l[0][4], '-');
  EXPECT_EQ(l[0][10], 'T');
}

TEST_F(LogTest, LevelFilters) {
  set_log_level(LogLevel::kError);
  VSFS_LOG_WARN("dropped");
  VSFS_LOG_ERROR("kept");
  const auto l = lines_of(path_);
  ASSERT_EQ(l.size(), 1u);
  EXPECT_NE(l[0].find("error: kept"), std::string::npos);
  EXPECT_EQ(log_level_from_name("warning"), LogLevel::kWarn);
  EXPECT_EQ(log_level_from_name("debug"), LogLevel::kDebug);
  EXPECT_FALSE(log_level_from_name("loud").has_value());
}

TEST_F(LogTest, RepeatsAreLimited) {
  for (int i = 0; i < 50; ++i) VSFS_LOG_WARN("device does not answer");
  VSFS_LOG_WARN("something else");
  for (int i = 0; i < 3; ++i) VSFS_LOG_ERROR("device does not answer");  // another level
  const auto l = lines_of(path_);
  int same = 0, other = 0, as_error = 0;
  for (const auto& line : l) {
    if (line.find("warning: device does not answer") != std::string::npos) ++same;
    if (line.find("something else") != std::string::npos) ++other;
    if (line.find("error: device does not answer") != std::string::npos) ++as_error;
  }
  EXPECT_EQ(same, kRepeatBurst);
  EXPECT_EQ(other, 1);
  EXPECT_EQ(as_error, 3);
}

TEST_F(LogTest, TheLastErrorIsKeptWithItsTime) {
  set_log_subject("/srv/ds.img");
  VSFS_LOG_WARN("not an error");
  VSFS_LOG_ERROR("journal commit failed: {}", "EIO");
  VSFS_LOG_WARN("after it");
  const LoggedError e = last_logged_error();
  EXPECT_EQ(e.text, "/srv/ds.img: journal commit failed: EIO");
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull;
  EXPECT_LE(e.realtime_ns, now + 1000000000ull);
  EXPECT_GE(e.realtime_ns + 60 * 1000000000ull, now);
}

TEST_F(LogTest, AFileThatCannotBeOpenedIsAnError) {
  auto r = log_to_file(dir_ + "/missing/dir/vsfs.log");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("cannot open for logging"), std::string::npos);
}

// A detached daemon has no stderr: the abort of a broken invariant must reach the
// log's other sinks (here the file), with where it broke.
TEST_F(LogTest, BrokenInvariantIsLoggedBeforeTheAbort) {
  set_log_subject("/srv/ds.img");
  const int answer = 41;
  EXPECT_DEATH(VSFS_ASSERT(answer == 42), "");
  bool found = false;
  for (const std::string& l : lines_of(path_)) {
    found |= l.find("error: /srv/ds.img: invariant broken at ") != std::string::npos &&
             l.find("log_test.cc:") != std::string::npos &&
             l.find(": answer == 42; stopping") != std::string::npos;
  }
  EXPECT_TRUE(found) << "no line in the log file";
}

}  // namespace
}  // namespace vsfs
