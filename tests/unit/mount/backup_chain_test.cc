// Tests of the backup chain (mount/backup_chain.h): names escaped and back, the
// catalogue written and read, each way a catalogue or a map can be malformed, and the
// map that rebuilds a disk across a shrink, a growth, zeroed and overwritten extents.

#include "mount/backup_chain.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vsfs::backup {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "vsfs_backup_chain_test.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

DiskRecord disk(const std::string& path, DiskKind kind, uint64_t size) {
  DiskRecord d;
  d.path = path;
  d.kind = kind;
  d.size_bytes = size;
  return d;
}

Point point(uint64_t number, std::vector<DiskRecord> disks) {
  Point p;
  p.number = number;
  p.snapshot = "s" + std::to_string(number);
  p.change_id = number + 1;
  p.time_s = 1700000000;
  p.disks = std::move(disks);
  return p;
}

TEST(BackupEscape, RoundTripsEveryByte) {
  for (const std::string& s : {std::string("vm1/a.img"), std::string("a b%c\nd"), std::string(),
                              std::string("\x01\xff", 2)}) {
    const std::string e = escape(s);
    EXPECT_EQ(e.find_first_of(" \n\t"), std::string::npos) << e;
    auto back = unescape(e);
    ASSERT_TRUE(back.ok()) << e;
    EXPECT_EQ(*back, s);
  }
  EXPECT_FALSE(unescape("a%4").ok());
  EXPECT_FALSE(unescape("a%zz").ok());
}

TEST(BackupCatalog, WrittenAndReadBack) {
  TempDir dir;
  Catalog c;
  c.datastore_uuid = "6ee4040e-ca45-481e-ac45-a46e0bcb4708";
  c.vmdir = "vm 1";
  c.points.push_back(point(0, {disk("a.img", DiskKind::kFull, 1 << 20)}));
  c.points.push_back(point(1, {disk("a.img", DiskKind::kIncremental, 4096),
                               disk("sub/b c.img", DiskKind::kFull, 8192)}));
  c.points.push_back(point(2, {disk("a.img", DiskKind::kAbsent, 0)}));
  c.points[1].disks[0].copied_bytes = 4096;
  c.points[1].disks[0].zero_bytes = 8192;
  ASSERT_TRUE(write_catalog(dir.path(), c).ok());
  EXPECT_FALSE(fs::exists(dir.path() + "/catalog.tmp"));
  bool exists = false;
  auto r = read_catalog(dir.path(), &exists);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(exists);
  EXPECT_EQ(r->datastore_uuid, c.datastore_uuid);
  EXPECT_EQ(r->vmdir, "vm 1");
  ASSERT_EQ(r->points.size(), 3u);
  EXPECT_EQ(r->points[1].disks[1].path, "sub/b c.img");
  EXPECT_EQ(r->points[1].disks[0].copied_bytes, 4096u);
  EXPECT_EQ(r->points[1].disks[0].zero_bytes, 8192u);
  EXPECT_EQ(r->points[2].disks[0].kind, DiskKind::kAbsent);
  EXPECT_EQ(r->find("s1"), &r->points[1]);
  EXPECT_EQ(r->find("2"), &r->points[2]);
  EXPECT_EQ(r->find("3"), nullptr);
}

TEST(BackupCatalog, MissingIsEmpty) {
  TempDir dir;
  bool exists = true;
  auto r = read_catalog(dir.path(), &exists);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(exists);
  EXPECT_TRUE(r->points.empty());
}

TEST(BackupCatalog, EachMalformationNamesItsLine) {
  const std::string head = "vsfs-backup-catalog 1\ndatastore u\nvmdir vm1\n";
  const std::string p0 = "point 0 s0 1 100 1\ndisk full 4096 4096 1 4096 0 a.img\n";
  const struct {
    std::string text;
    std::string message;
  } cases[] = {
      {"vsfs-backup-catalog 2\n", "catalog:1: not a vsfs-backup catalogue"},
      {"vsfs-backup-catalog 1\nvmdir vm1\n", "catalog:2: expected 'datastore UUID'"},
      {head + p0, "point without its end line"},
      {head + p0 + "end 0\n" + "point 5 s5 2 100 0\nend 5\n", "catalog:7: points out of order"},
      {head + "point 0 s0 1 100 1\ndisk sideways 1 1 1 1 0 a.img\nend 0\n", "catalog:5: unknown disk kind"},
      {head + "point 0 s0 x 100 0\nend 0\n", "catalog:4: a point line's numbers"},
      {head + "point 0 s0 1 100 2\ndisk full 4096 4096 1 4096 0 a.img\n", "truncated point"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    write_file(dir.path() + "/catalog", c.text);
    bool exists = false;
    auto r = read_catalog(dir.path(), &exists);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message.find(c.message), std::string::npos) << r.error().message;
  }
}

TEST(BackupCbtMap, ParsedAndRefusedWhenMalformed) {
  TempDir dir;
  const std::string path = dir.path() + "/map";
  write_file(path, "0 4096 data\n8192 8192 zero\n");
  auto ok = read_cbt_map(path);
  ASSERT_TRUE(ok.ok());
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_TRUE((*ok)[0].data);
  EXPECT_EQ((*ok)[1].offset_bytes, 8192u);
  EXPECT_FALSE((*ok)[1].data);
  for (const char* bad : {"0 4096 maybe\n", "0 4096\n", "4096 4096 data\n0 4096 data\n",
                                "0 0 data\n", "x 4096 data\n"}) {
    write_file(path, bad);
    auto r = read_cbt_map(path);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find(path + ":"), std::string::npos) << r.error().message;
  }
}

// Writes point N's extent list for disk index 0.
void write_point_extents(const std::string& backup_dir, uint64_t n, const DiskRecord& d,
                         const std::vector<Extent>& extents) {
  fs::create_directories(point_dir(backup_dir, n));
  ASSERT_TRUE(write_extents(disk_file(backup_dir, n, 0, "extents"), d, extents).ok());
}

TEST(BackupDiskMap, ShrinkGrowZeroAndOverwrite) {
  TempDir dir;
  Catalog c;
  c.points.push_back(point(0, {disk("a.img", DiskKind::kFull, 32768)}));
  c.points.push_back(point(1, {disk("a.img", DiskKind::kIncremental, 12288)}));
  c.points.push_back(point(2, {disk("a.img", DiskKind::kIncremental, 32768)}));
  write_point_extents(dir.path(), 0, c.points[0].disks[0],
                      {{0, 8192, true, 1}, {16384, 4096, true, 2}});
  write_point_extents(dir.path(), 1, c.points[1].disks[0], {{4096, 4096, false, 0}});
  write_point_extents(dir.path(), 2, c.points[2].disks[0],
                      {{2048, 1024, true, 3}, {20480, 4096, true, 4}});
  auto map = build_disk_map(dir.path(), c, c.points[2], "a.img");
  ASSERT_TRUE(map.ok()) << map.error().message;
  EXPECT_EQ(map->size_bytes, 32768u);
  // [0,2048) and [3072,4096) from point 0, [2048,3072) and [20480,24576) from point 2;
  // [4096,8192) zeroed at point 1, [16384,20480) cut off by its shrink.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [start, piece] : map->pieces) ranges.emplace_back(start, piece.end_bytes);
  const std::vector<std::pair<uint64_t, uint64_t>> want = {
      {0, 2048}, {2048, 3072}, {3072, 4096}, {20480, 24576}};
  EXPECT_EQ(ranges, want);
  EXPECT_EQ(map->pieces.at(0).data_file, disk_file(dir.path(), 0, 0, "data"));
  EXPECT_EQ(map->pieces.at(3072).source.length_bytes, 8192u);  // the whole extent, for its crc
  EXPECT_EQ(map->pieces.at(2048).data_file, disk_file(dir.path(), 2, 0, "data"));
  EXPECT_EQ(map->data_bytes(), 8192u);

  auto at1 = build_disk_map(dir.path(), c, c.points[1], "a.img");
  ASSERT_TRUE(at1.ok());
  EXPECT_EQ(at1->size_bytes, 12288u);
  EXPECT_EQ(at1->data_bytes(), 4096u);
}

TEST(BackupDiskMap, BrokenChainsAreRefused) {
  TempDir dir;
  Catalog c;
  c.points.push_back(point(0, {disk("a.img", DiskKind::kIncremental, 4096)}));
  c.points.push_back(point(1, {disk("a.img", DiskKind::kAbsent, 0)}));
  c.points.push_back(point(2, {disk("a.img", DiskKind::kIncremental, 4096)}));
  auto absent = build_disk_map(dir.path(), c, c.points[1], "a.img");
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().errno_value, ENOENT);
  auto gap = build_disk_map(dir.path(), c, c.points[2], "a.img");
  ASSERT_FALSE(gap.ok());
  EXPECT_NE(gap.error().message.find("before its incremental"), std::string::npos) << gap.error().message;
  auto no_full = build_disk_map(dir.path(), c, c.points[0], "a.img");
  ASSERT_FALSE(no_full.ok());
  EXPECT_NE(no_full.error().message.find("no full copy"), std::string::npos);
}

}  // namespace
}  // namespace vsfs::backup
