// The backup chain of vsfs-backup(8) and vsfs-restore(8): the catalogue, the extent
// lists of each point, the map that rebuilds a disk from a chain of points, and the
// file helpers both programs copy with.
//
// A backup directory holds `catalog` (every backup point and its disks) and
// `points/N/K.data` + `points/N/K.extents` for disk K of point N: the extents that point
// applied, their data at their own offsets in a sparse file. A point's first record of
// a disk is a full copy; later ones hold what changed since the point before. The
// format is described in vsfs-backup(8).
// Threading: single-threaded programs; nothing here is shared between threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/result.h"

namespace vsfs::backup {

// One line of a .cbt map or a .extents file: OFFSET LENGTH data|zero (bytes).
struct Extent {
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  bool data = false;
  uint32_t crc = 0;  // crc32c of the data (data extents of .extents files only)
};

enum class DiskKind { kFull, kIncremental, kAbsent };
const char* disk_kind_name(DiskKind kind);

// What one point holds of one disk. `index` names its files: points/N/INDEX.data.
struct DiskRecord {
  std::string path;  // relative to the backed-up directory
  DiskKind kind = DiskKind::kAbsent;
  uint64_t size_bytes = 0;
  uint64_t copied_bytes = 0;
  uint64_t extents = 0;
  uint64_t data_bytes = 0;  // data extents of the .cbt map (what changed)
  uint64_t zero_bytes = 0;  // zero extents of the .cbt map (unmapped or zeroed)
};

struct Point {
  uint64_t number = 0;
  std::string snapshot;
  uint64_t change_id = 0;
  int64_t time_s = 0;  // Unix seconds, when the backup was taken
  std::vector<DiskRecord> disks;

  const DiskRecord* find(const std::string& path) const;
  size_t index_of(const DiskRecord& d) const { return static_cast<size_t>(&d - disks.data()); }
};

struct Catalog {
  std::string datastore_uuid;
  std::string vmdir;
  std::vector<Point> points;

  // A point by number or by snapshot name.
  const Point* find(const std::string& number_or_name) const;
};

// Percent-encodes every byte that is not a letter, digit or one of "._-+,=@:/" so a
// name is one whitespace-free word of the catalogue; unescape reverses it.
std::string escape(const std::string& s);
Result<std::string> unescape(const std::string& s);

// BACKUP_DIR/catalog; a missing file is an empty catalogue (`exists` false).
Result<Catalog> read_catalog(const std::string& backup_dir, bool* exists);
// Writes the catalogue durably: temporary file, fsync, rename, fsync of the directory.
Result<void> write_catalog(const std::string& backup_dir, const Catalog& c);

// A .cbt map (OFFSET LENGTH data|zero per line) or a point's .extents file.
Result<std::vector<Extent>> read_cbt_map(const std::string& path);
Result<std::vector<Extent>> read_extents(const std::string& path);
Result<void> write_extents(const std::string& path, const DiskRecord& d,
                           const std::vector<Extent>& extents);

std::string point_dir(const std::string& backup_dir, uint64_t number);
std::string disk_file(const std::string& backup_dir, uint64_t number, size_t index,
                      const char* suffix);

// Where each byte of a disk at one point comes from: ranges of .data files of the
// points of its chain (the last full copy and the incrementals after it); bytes in no
// range are zero.
struct Piece {
  uint64_t end_bytes = 0;
  std::string data_file;   // the .data file holding this range at the same offset
  Extent source;           // the whole extent of that point this piece is part of
};
struct DiskMap {
  std::string path;
  uint64_t size_bytes = 0;
  std::map<uint64_t, Piece> pieces;  // by start offset; disjoint
  uint64_t data_bytes() const;
};

// Rebuilds the map of `path` at `point` from its chain in backup_dir.
Result<DiskMap> build_disk_map(const std::string& backup_dir, const Catalog& c,
                               const Point& point, const std::string& path);

// An open file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

// Thin wrappers around the system calls, errors naming the path.
Result<Fd> open_file(const std::string& path, int flags, mode_t mode = 0644);
Result<void> read_exact(int fd, const std::string& path, void* buf, uint64_t length,
                        uint64_t offset);
Result<void> write_exact(int fd, const std::string& path, const void* buf, uint64_t length,
                         uint64_t offset);
Result<void> fsync_path(const std::string& path);
Result<void> make_dirs(const std::string& path);
Result<std::string> read_text(const std::string& path);

// The copy buffer size: large enough that FUSE sees big requests.
constexpr uint64_t kCopyBytes = 1 << 20;

// One updating line on a terminal (stderr), nothing otherwise.
class Progress {
 public:
  Progress(const char* prog, uint64_t total_bytes);
  void add(uint64_t bytes);
  void finish();

 private:
  void draw(bool last);
  const char* prog_;
  uint64_t total_bytes_;
  uint64_t done_bytes_ = 0;
  bool tty_;
  double start_s_;
  double drawn_s_ = 0;
};

double now_s();
std::string format_time(int64_t unix_s);

}  // namespace vsfs::backup
