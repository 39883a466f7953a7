// Tests of the mount configuration: defaults, the TOML file with every error path (each
// message checked for file, line and key), examples/vsfs.toml, and -o parsing.

#include "mount/config.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace vsfs::mount {
namespace {

namespace fs = std::filesystem;

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "vsfs_config_test.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `text` to NAME in the directory and returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    std::ofstream out(p, std::ios::binary);
    out << text;
    out.close();
    if (!out) std::abort();
    return p.string();
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void expect_option_error_fn(const std::string& options, const std::string& message);

void expect_same(const Config& a, const Config& b) {
  EXPECT_EQ(a.fuse.threads, b.fuse.threads);
  EXPECT_EQ(a.fuse.max_background, b.fuse.max_background);
  EXPECT_EQ(a.fuse.io_uring, b.fuse.io_uring);
  EXPECT_EQ(a.fuse.uring_depth, b.fuse.uring_depth);
  EXPECT_EQ(a.fuse.uring_buffer_mib, b.fuse.uring_buffer_mib);
  EXPECT_EQ(a.fuse.max_write_kib, b.fuse.max_write_kib);
  EXPECT_EQ(a.fuse.attr_timeout_s, b.fuse.attr_timeout_s);
  EXPECT_EQ(a.fuse.entry_timeout_s, b.fuse.entry_timeout_s);
  EXPECT_EQ(a.device.queue_depth, b.device.queue_depth);
  EXPECT_EQ(a.device.direct, b.device.direct);
  EXPECT_EQ(a.journal.commit_interval_ms, b.journal.commit_interval_ms);
  EXPECT_EQ(a.journal.meta_cache_mib, b.journal.meta_cache_mib);
  EXPECT_EQ(a.coalesce.enabled, b.coalesce.enabled);
  EXPECT_EQ(a.coalesce.max_inflight, b.coalesce.max_inflight);
  EXPECT_EQ(a.coalesce.max_held, b.coalesce.max_held);
  EXPECT_EQ(a.coalesce.max_held_bytes, b.coalesce.max_held_bytes);
  EXPECT_EQ(a.coalesce.hold_us_max, b.coalesce.hold_us_max);
  EXPECT_EQ(a.coalesce.max_combined_kib, b.coalesce.max_combined_kib);
  EXPECT_EQ(a.format.rate_mib_s, b.format.rate_mib_s);
  EXPECT_EQ(a.lease.time_ms, b.lease.time_ms);
  EXPECT_EQ(a.cbt.history, b.cbt.history);
  EXPECT_EQ(a.cbt.text_cache_mib, b.cbt.text_cache_mib);
  EXPECT_EQ(a.snapshots.takers, b.snapshots.takers);
  EXPECT_EQ(a.snapshots.max_per_directory, b.snapshots.max_per_directory);
  EXPECT_EQ(a.snapshots.max_per_user, b.snapshots.max_per_user);
  EXPECT_EQ(a.snapshots.max_held_mib_per_user, b.snapshots.max_held_mib_per_user);
  EXPECT_EQ(a.log.level, b.log.level);
  EXPECT_EQ(a.log.file, b.log.file);
  EXPECT_EQ(a.fuse_options, b.fuse_options);
  EXPECT_EQ(a.read_only, b.read_only);
}

class ConfigFileTest : public ::testing::Test {
 protected:
  // Loads `text` as a config file and returns the error message, or "" on success.
  // path_ is fixed beforehand, since the tests compare against it in the same expression.
  std::string load_error(const std::string& text) {
    dir_.write("vsfs.toml", text);
    auto r = load_config_file(path_);
    if (r.ok()) return "";
    EXPECT_EQ(r.error().errno_value, EINVAL);
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    return r.error().message;
  }

  TempDir dir_;
  std::string path_ = (dir_.path() / "vsfs.toml").string();
};

TEST(ConfigDefaults, MatchHeader) {
  Config c;
  EXPECT_EQ(c.fuse.threads, 4u);
  EXPECT_EQ(c.fuse.max_background, 128u);
  EXPECT_TRUE(c.fuse.io_uring);
  EXPECT_EQ(c.fuse.uring_depth, 32u);
  EXPECT_EQ(c.fuse.uring_buffer_mib, 64u);
  EXPECT_EQ(c.fuse.max_write_kib, 1024u);
  EXPECT_EQ(c.fuse.attr_timeout_s, 1.0);
  EXPECT_EQ(c.fuse.entry_timeout_s, 1.0);
  EXPECT_EQ(c.device.queue_depth, 128u);
  EXPECT_TRUE(c.device.direct);
  EXPECT_EQ(c.journal.commit_interval_ms, 1000u);
  EXPECT_EQ(c.journal.meta_cache_mib, 128u);
  EXPECT_TRUE(c.coalesce.enabled);
  EXPECT_EQ(c.coalesce.max_inflight, 8u);
  EXPECT_EQ(c.coalesce.max_held, 64u);
  EXPECT_EQ(c.coalesce.max_held_bytes, 8u << 20);
  EXPECT_EQ(c.coalesce.hold_us_max, 500u);
  EXPECT_EQ(c.coalesce.max_combined_kib, 1024u);
  EXPECT_EQ(c.cbt.history, 1024u);
  EXPECT_EQ(c.cbt.text_cache_mib, 32u);
  EXPECT_EQ(c.snapshots.takers, "owner");
  EXPECT_EQ(c.snapshots.max_per_directory, 32u);
  EXPECT_EQ(c.snapshots.max_per_user, 256u);
  EXPECT_EQ(c.snapshots.max_held_mib_per_user, 0u);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.file, "");
  EXPECT_TRUE(c.fuse_options.empty());
  EXPECT_FALSE(c.read_only);
  EXPECT_STREQ(kDefaultConfigPath, "/etc/vsfs/vsfs.toml");
}

TEST_F(ConfigFileTest, EmptyFileIsDefaults) {
  path_ = dir_.write("empty.toml", "");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_same(*r, Config{});
  EXPECT_EQ(r->source, path_);
}

TEST_F(ConfigFileTest, CommentsAndEmptyTablesAreDefaults) {
  path_ = dir_.write("c.toml", "# nothing set\n[fuse]\n[device]\n[journal]\n");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_same(*r, Config{});
}

TEST_F(ConfigFileTest, ExampleFileHoldsTheDefaults) {
  auto r = load_config_file(VSFS_EXAMPLE_CONFIG);
  ASSERT_TRUE(r.ok()) << r.error().message;
  expect_same(*r, Config{});
}

TEST_F(ConfigFileTest, FullValidFile) {
  path_ = dir_.write("full.toml",
                     "[fuse]\n"
                     "threads = 16\n"
                     "max_background = 65535\n"
                     "max_write_kib = 128\n"
                     "attr_timeout_s = 0.5\n"
                     "entry_timeout_s = 30   # an integer is a number too\n"
                     "\n"
                     "[device]\n"
                     "queue_depth = 4096\n"
                     "direct = false\n"
                     "\n"
                     "[journal]\n"
                     "commit_interval_ms = 10\n"
                     "meta_cache_mib = 65536\n"
                     "\n"
                     "[coalesce]\n"
                     "enabled = false\n"
                     "max_inflight = 1024\n"
                     "max_held = 1\n"
                     "max_held_bytes = 4096\n"
                     "hold_us_max = 1000000\n"
                     "max_combined_kib = 4\n");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const Config& c = *r;
  EXPECT_EQ(c.fuse.threads, 16u);
  EXPECT_EQ(c.fuse.max_background, 65535u);
  EXPECT_EQ(c.fuse.max_write_kib, 128u);
  EXPECT_EQ(c.fuse.attr_timeout_s, 0.5);
  EXPECT_EQ(c.fuse.entry_timeout_s, 30.0);
  EXPECT_EQ(c.device.queue_depth, 4096u);
  EXPECT_FALSE(c.device.direct);
  EXPECT_EQ(c.journal.commit_interval_ms, 10u);
  EXPECT_EQ(c.journal.meta_cache_mib, 65536u);
  EXPECT_FALSE(c.coalesce.enabled);
  EXPECT_EQ(c.coalesce.max_inflight, 1024u);
  EXPECT_EQ(c.coalesce.max_held, 1u);
  EXPECT_EQ(c.coalesce.max_held_bytes, 4096u);
  EXPECT_EQ(c.coalesce.hold_us_max, 1000000u);
  EXPECT_EQ(c.coalesce.max_combined_kib, 4u);
  EXPECT_FALSE(c.read_only);
  EXPECT_EQ(c.source, path_);
}

TEST_F(ConfigFileTest, PartialFileKeepsOtherDefaults) {
  path_ = dir_.write("p.toml", "[device]\nqueue_depth = 32\n");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  Config want;
  want.device.queue_depth = 32;
  expect_same(*r, want);
}

TEST_F(ConfigFileTest, DottedAndInlineTablesWork) {
  path_ = dir_.write("d.toml", "fuse.threads = 8\ndevice = { direct = false }\n");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->fuse.threads, 8u);
  EXPECT_FALSE(r->device.direct);
}

TEST_F(ConfigFileTest, MissingFile) {
  const std::string path = (dir_.path() / "nope.toml").string();
  auto r = load_config_file(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, ENOENT);
  EXPECT_EQ(r.error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(r.error().message, path + ": cannot read: No such file or directory");
}

TEST_F(ConfigFileTest, DirectoryIsNotAFile) {
  const std::string path = dir_.path().string();
  auto r = load_config_file(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, EISDIR);
  EXPECT_EQ(r.error().message, path + ": cannot read: Is a directory");
}

TEST_F(ConfigFileTest, SyntaxErrorNamesLineAndColumn) {
  const std::string msg = load_error("[fuse]\nthreads = 4\nmax_background = = 2\n");
  EXPECT_EQ(msg.rfind(path_ + ":3:", 0), 0u) << msg;
  // path:line:col: message
  const std::string rest = msg.substr(path_.size() + 3);
  ASSERT_FALSE(rest.empty());
  EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(rest[0]))) << msg;
  EXPECT_NE(rest.find(": "), std::string::npos) << msg;
}

TEST_F(ConfigFileTest, DuplicateKeyIsASyntaxError) {
  const std::string msg = load_error("[device]\nqueue_depth = 4\nqueue_depth = 8\n");
  EXPECT_EQ(msg.rfind(path_ + ":3:", 0), 0u) << msg;
}

TEST_F(ConfigFileTest, UnknownKey) {
  EXPECT_EQ(load_error("[fuse]\nthreads = 4\n\nthread = 4\n"),
            path_ + ":4: [fuse] thread: unknown key");
}

TEST_F(ConfigFileTest, KeyInTheWrongTable) {
  EXPECT_EQ(load_error("[device]\nthreads = 4\n"), path_ + ":2: [device] threads: unknown key");
}

TEST_F(ConfigFileTest, UnknownTable) {
  EXPECT_EQ(load_error("[fuse]\nthreads = 2\n[bogus]\nwindow_us = 5\n"),
            path_ + ":3: [bogus]: unknown table");
}

// A table or key with an empty name: refused, no crash.
TEST_F(ConfigFileTest, EmptyNamesAreUnknown) {
  EXPECT_EQ(load_error("[\"\"]\n\"\" = 1\n"), path_ + ":1: [\"\"]: unknown table");
  EXPECT_EQ(load_error("[fuse]\n\"\" = 1\n"), path_ + ":2: [fuse] : unknown key");
  EXPECT_EQ(load_error("\"\" = 1\n"),
            path_ + ":1: : unknown key (keys belong in a table such as [fuse])");
}

TEST_F(ConfigFileTest, LogKeys) {
  dir_.write("vsfs.toml", "[log]\nlevel = \"debug\"\nfile = \"/var/log/vsfs.log\"\n");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->log.level, "debug");
  EXPECT_EQ(r->log.file, "/var/log/vsfs.log");
  EXPECT_EQ(load_error("[log]\nlevel = \"loud\"\n"),
            path_ + ":2: [log] level: expected one of error, warning, info, debug");
  EXPECT_EQ(load_error("[log]\nlevel = 3\n"),
            path_ + ":2: [log] level: expected one of error, warning, info, debug");
  EXPECT_EQ(load_error("[log]\nfile = \"vsfs.log\"\n"),
            path_ + ":2: [log] file: expected an absolute path");
}

TEST_F(ConfigFileTest, SnapshotsKeys) {
  dir_.write("vsfs.toml",
             "[snapshots]\ntakers = \"writers\"\nmax_per_directory = 0\nmax_per_user = 65532\n"
             "max_held_mib_per_user = 1024\n");
  auto r = load_config_file(path_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->snapshots.takers, "writers");
  EXPECT_EQ(r->snapshots.max_per_directory, 0u);
  EXPECT_EQ(r->snapshots.max_per_user, 65532u);
  EXPECT_EQ(r->snapshots.max_held_mib_per_user, 1024u);
  EXPECT_NE(load_error("[snapshots]\ntakers = \"anyone\"\n").find("expected one of owner, writers, root"),
            std::string::npos);
  EXPECT_NE(load_error("[snapshots]\nmax_per_user = 65533\n").find("must be between 0 and 65532"),
            std::string::npos);
  Config c;
  ASSERT_TRUE(apply_mount_options(c, "takers=root,max_per_directory=4").ok());
  EXPECT_EQ(c.snapshots.takers, "root");
  EXPECT_EQ(c.snapshots.max_per_directory, 4u);
}

TEST_F(ConfigFileTest, SubTableIsAnUnknownKey) {
  EXPECT_EQ(load_error("[fuse]\nthreads = 2\n[fuse.extra]\nx = 1\n"),
            path_ + ":3: [fuse] extra: unknown key");
}

TEST_F(ConfigFileTest, KeyOutsideAnyTable) {
  EXPECT_EQ(load_error("# top\nthreads = 4\n"),
            path_ + ":2: threads: unknown key (keys belong in a table such as [fuse])");
}

TEST_F(ConfigFileTest, TableNameUsedAsAValue) {
  EXPECT_EQ(load_error("journal = 5\n"), path_ + ":1: journal: expected a table");
}

TEST_F(ConfigFileTest, WrongTypes) {
  EXPECT_EQ(load_error("[fuse]\nthreads = \"4\"\n"),
            path_ + ":2: [fuse] threads: expected an integer");
  EXPECT_EQ(load_error("[journal]\n\ncommit_interval_ms = 1.5\n"),
            path_ + ":3: [journal] commit_interval_ms: expected an integer");
  EXPECT_EQ(load_error("[coalesce]\nenabled = 1\n"),
            path_ + ":2: [coalesce] enabled: expected a boolean");
  EXPECT_EQ(load_error("[device]\ndirect = \"on\"\n"),
            path_ + ":2: [device] direct: expected a boolean");
  EXPECT_EQ(load_error("[fuse]\nattr_timeout_s = true\n"),
            path_ + ":2: [fuse] attr_timeout_s: expected a number");
  EXPECT_EQ(load_error("[fuse]\nentry_timeout_s = [1]\n"),
            path_ + ":2: [fuse] entry_timeout_s: expected a number");
}

TEST_F(ConfigFileTest, OutOfRange) {
  EXPECT_EQ(load_error("[fuse]\nthreads = 0\n"),
            path_ + ":2: [fuse] threads: must be between 1 and 64");
  EXPECT_EQ(load_error("[fuse]\nthreads = 65\n"),
            path_ + ":2: [fuse] threads: must be between 1 and 64");
  EXPECT_EQ(load_error("[fuse]\nmax_background = 65536\n"),
            path_ + ":2: [fuse] max_background: must be between 1 and 65535");
  EXPECT_EQ(load_error("[fuse]\nmax_write_kib = 2048\n"),
            path_ + ":2: [fuse] max_write_kib: must be between 4 and 1024");
  EXPECT_EQ(load_error("[fuse]\nattr_timeout_s = -0.5\n"),
            path_ + ":2: [fuse] attr_timeout_s: must be between 0 and 3600");
  EXPECT_EQ(load_error("[fuse]\nentry_timeout_s = nan\n"),
            path_ + ":2: [fuse] entry_timeout_s: must be between 0 and 3600");
  EXPECT_EQ(load_error("[device]\nqueue_depth = -1\n"),
            path_ + ":2: [device] queue_depth: must be between 1 and 4096");
  EXPECT_EQ(load_error("[journal]\ncommit_interval_ms = 9\n"),
            path_ + ":2: [journal] commit_interval_ms: must be between 10 and 60000");
  EXPECT_EQ(load_error("[journal]\nmeta_cache_mib = 9223372036854775807\n"),
            path_ + ":2: [journal] meta_cache_mib: must be between 16 and 65536");
}

// -o ----------------------------------------------------------------------------------

TEST(MountOptions, EmptyChangesNothing) {
  Config c;
  ASSERT_TRUE(apply_mount_options(c, "").ok());
  ASSERT_TRUE(apply_mount_options(c, ",,").ok());
  expect_same(c, Config{});
}

TEST(MountOptions, QualifiedAndBareKeys) {
  Config c;
  auto r = apply_mount_options(
      c, "fuse.threads=8,max_background=256,max_write_kib=512,"
         "attr_timeout_s=2.5,fuse.entry_timeout_s=0,device.queue_depth=64,direct=0,"
         "journal.commit_interval_ms=5000,meta_cache_mib=16");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(c.fuse.threads, 8u);
  EXPECT_EQ(c.fuse.max_background, 256u);
  EXPECT_EQ(c.fuse.max_write_kib, 512u);
  EXPECT_EQ(c.fuse.attr_timeout_s, 2.5);
  EXPECT_EQ(c.fuse.entry_timeout_s, 0.0);
  EXPECT_EQ(c.device.queue_depth, 64u);
  EXPECT_FALSE(c.device.direct);
  EXPECT_EQ(c.journal.commit_interval_ms, 5000u);
  EXPECT_EQ(c.journal.meta_cache_mib, 16u);
  EXPECT_TRUE(c.fuse_options.empty());
}

TEST(MountOptions, CoalesceKeysAndTheShortSwitch) {
  Config c;
  auto r = apply_mount_options(c, "coalesce=off,max_inflight=2,coalesce.max_held=16,"
                                  "max_held_bytes=65536,hold_us_max=100,max_combined_kib=256");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(c.coalesce.enabled);
  EXPECT_EQ(c.coalesce.max_inflight, 2u);
  EXPECT_EQ(c.coalesce.max_held, 16u);
  EXPECT_EQ(c.coalesce.max_held_bytes, 65536u);
  EXPECT_EQ(c.coalesce.hold_us_max, 100u);
  EXPECT_EQ(c.coalesce.max_combined_kib, 256u);
  EXPECT_TRUE(c.fuse_options.empty());
  ASSERT_TRUE(apply_mount_options(c, "coalesce=on").ok());
  EXPECT_TRUE(c.coalesce.enabled);
  ASSERT_TRUE(apply_mount_options(c, "coalesce.enabled=false").ok());
  EXPECT_FALSE(c.coalesce.enabled);
  expect_option_error_fn("coalesce=maybe", "-o coalesce=maybe: expected a boolean");
  expect_option_error_fn("coalesce", "-o coalesce: expected coalesce=VALUE");
  expect_option_error_fn("hold_us_max=5", "-o hold_us_max=5: must be between 10 and 1000000");
  expect_option_error_fn("max_combined_kib=32768",
                         "-o max_combined_kib=32768: must be between 4 and 16384");
}

TEST_F(ConfigFileTest, CoalesceTable) {
  const std::string co = dir_.write("co.toml", "[coalesce]\nenabled = false\nhold_us_max = 2000\n");
  auto r = load_config_file(co);
  ASSERT_TRUE(r.ok()) << r.error().message;
  Config want;
  want.coalesce.enabled = false;
  want.coalesce.hold_us_max = 2000;
  expect_same(*r, want);
  EXPECT_EQ(load_error("[coalesce]\nmax_held = 0\n"),
            path_ + ":2: [coalesce] max_held: must be between 1 and 4096");
  EXPECT_EQ(load_error("[coalesce]\nenabled = \"off\"\n"),
            path_ + ":2: [coalesce] enabled: expected a boolean");
  EXPECT_EQ(load_error("[coalesce]\nmax_held_kib = 4\n"),
            path_ + ":2: [coalesce] max_held_kib: unknown key");
}

TEST(MountOptions, LogOptions) {
  Config c;
  ASSERT_TRUE(apply_mount_options(c, "log_level=debug,log_file=/tmp/v.log").ok());
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.file, "/tmp/v.log");
  ASSERT_TRUE(apply_mount_options(c, "log.level=error").ok());
  EXPECT_EQ(c.log.level, "error");
  EXPECT_TRUE(c.fuse_options.empty());
}

TEST(MountOptions, BooleanSpellings) {
  const struct {
    const char* text;
    bool value;
  } cases[] = {{"true", true}, {"1", true}, {"on", true},
               {"false", false}, {"0", false}, {"off", false}};
  for (const auto& tc : cases) {
    Config c;
    c.device.direct = !tc.value;
    auto r = apply_mount_options(c, std::string("direct=") + tc.text);
    ASSERT_TRUE(r.ok()) << tc.text << ": " << r.error().message;
    EXPECT_EQ(c.device.direct, tc.value) << tc.text;
  }
}

TEST(MountOptions, OverridesTheFile) {
  TempDir dir;
  const std::string path = dir.write("f.toml", "[fuse]\nthreads = 2\n[device]\ndirect = false\n");
  auto r = load_config_file(path);
  ASSERT_TRUE(r.ok()) << r.error().message;
  Config c = std::move(r).value();
  ASSERT_TRUE(apply_mount_options(c, "threads=12").ok());
  EXPECT_EQ(c.fuse.threads, 12u);
  EXPECT_FALSE(c.device.direct);  // from the file, untouched
}

TEST(MountOptions, ReadOnlyAndPassThrough) {
  Config c;
  auto r = apply_mount_options(
      c, "allow_other,ro,default_permissions,fsname=vsfs:/srv/ds.img,threads=2,noatime");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(c.read_only);
  EXPECT_EQ(c.fuse.threads, 2u);
  const std::vector<std::string> want{"allow_other", "ro", "default_permissions",
                                      "fsname=vsfs:/srv/ds.img", "noatime"};
  EXPECT_EQ(c.fuse_options, want);
}

TEST(MountOptions, OptionsAccumulateAcrossCalls) {
  Config c;
  ASSERT_TRUE(apply_mount_options(c, "allow_other").ok());
  ASSERT_TRUE(apply_mount_options(c, "subtype=vsfs").ok());
  const std::vector<std::string> want{"allow_other", "subtype=vsfs"};
  EXPECT_EQ(c.fuse_options, want);
}

TEST(MountOptions, RwUndoesRo) {
  Config c;
  ASSERT_TRUE(apply_mount_options(c, "ro,allow_other,rw").ok());
  EXPECT_FALSE(c.read_only);
  EXPECT_EQ(c.fuse_options, std::vector<std::string>{"allow_other"});
  ASSERT_TRUE(apply_mount_options(c, "rw,ro").ok());
  EXPECT_TRUE(c.read_only);
  const std::vector<std::string> want{"allow_other", "ro"};
  EXPECT_EQ(c.fuse_options, want);
}

TEST(MountOptions, UnknownDottedNameOutsideVsfsTablesPassesThrough) {
  Config c;
  ASSERT_TRUE(apply_mount_options(c, "x-systemd.automount").ok());
  EXPECT_EQ(c.fuse_options, std::vector<std::string>{"x-systemd.automount"});
}

// Each -o error names the option as written and leaves the config unchanged.
void expect_option_error(const std::string& options, const std::string& message) {
  Config c;
  c.fuse.threads = 7;
  auto r = apply_mount_options(c, options);
  ASSERT_FALSE(r.ok()) << options;
  EXPECT_EQ(r.error().errno_value, EINVAL);
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(r.error().message, message);
  Config want;
  want.fuse.threads = 7;
  expect_same(c, want);
}

void expect_option_error_fn(const std::string& options, const std::string& message) {
  expect_option_error(options, message);
}

TEST(MountOptions, Errors) {
  expect_option_error("queue_depth=x", "-o queue_depth=x: expected an integer");
  expect_option_error("threads=", "-o threads=: expected an integer");
  expect_option_error("threads=4k", "-o threads=4k: expected an integer");
  expect_option_error("threads=1.5", "-o threads=1.5: expected an integer");
  expect_option_error("direct=yes", "-o direct=yes: expected a boolean");
  expect_option_error("attr_timeout_s=soon", "-o attr_timeout_s=soon: expected a number");
  expect_option_error("threads=0", "-o threads=0: must be between 1 and 64");
  expect_option_error("fuse.threads=100", "-o fuse.threads=100: must be between 1 and 64");
  expect_option_error("queue_depth=-3", "-o queue_depth=-3: must be between 1 and 4096");
  expect_option_error("entry_timeout_s=3600.5",
                      "-o entry_timeout_s=3600.5: must be between 0 and 3600");
  expect_option_error("meta_cache_mib=65537",
                      "-o meta_cache_mib=65537: must be between 16 and 65536");
  expect_option_error("device.threads=4", "-o device.threads=4: unknown key");
  expect_option_error("journal.bogus", "-o journal.bogus: unknown key");
  expect_option_error("direct", "-o direct: expected direct=VALUE");
  expect_option_error("log_level=loud", "-o log_level=loud: expected one of error, warning, info, debug");
  expect_option_error("log_file=", "-o log_file=: expected an absolute path");
  expect_option_error("log.file=rel/x", "-o log.file=rel/x: expected an absolute path");
  // An empty name matched an empty entry of the key table and crashed (SIGSEGV).
  expect_option_error("=0", "-o =0: option without a name");
  expect_option_error("threads=2,=", "-o =: option without a name");
  // Everything before the bad option is undone too.
  expect_option_error("ro,allow_other,threads=9,threads=99",
                      "-o threads=99: must be between 1 and 64");
}

}  // namespace
}  // namespace vsfs::mount
