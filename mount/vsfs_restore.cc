// vsfs-restore: restores the disks of one point of a vsfs-backup chain (vsfs-restore(8)).
//
// Each disk is rebuilt from its chain (the last full copy and the incrementals after
// it) so every byte is copied once, from the point that last wrote it; only data is
// written, so holes stay holes. Every extent read is checked against the crc32c its
// point recorded. A disk is written to PATH.restoring, sized, fsynced and then renamed
// over PATH. Exit status: 0 done, 1 failed, 2 usage.
// Threading: main thread only.
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mount/backup_chain.h"
#include "util/crc32c.h"

#ifndef VSFS_VERSION
#define VSFS_VERSION "0.1.0"
#endif

namespace {

using namespace vsfs::backup;
using vsfs::ErrorKind;
using vsfs::Result;

constexpr const char* kProg = "vsfs-restore";
constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;

struct Options {
  std::string point;  // number or snapshot name; empty: the latest
  std::vector<std::string> disks;  // empty: every disk of the point
  bool list = false;
  std::string backup_dir, dest;
};

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [-p POINT] [-d PATH]... BACKUP_DIR DEST\n"
               "       %s --list BACKUP_DIR\n"
               "       %s --help | --version\n"
               "Restores the disks of one backup point made by vsfs-backup into the directory\n"
               "DEST, thin (holes stay holes), each checked against its recorded checksums.\n"
               "\n"
               "  -p, --point POINT  the point's number or snapshot name (default: the latest)\n"
               "  -d, --disk PATH    restore only this disk (its path in the backed-up\n"
               "                     directory); may be repeated\n"
               "  -l, --list         print the catalogue: every point and its disks\n"
               "  -h, --help         this text\n"
               "  -V, --version\n"
               "Exit status: 0 done, 1 failed, 2 usage. See vsfs-restore(8).\n",
               kProg, kProg, kProg);
}

int failed(const std::string& line) {
  std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
  return kExitFailed;
}

int usage_error(const std::string& line) {
  std::fprintf(stderr, "%s: %s; see --help\n", kProg, line.c_str());
  return kExitUsage;
}

// Returns kExitOk, -1 after --help or --version, or the exit status to stop with.
int parse_args(int argc, char** argv, Options* o) {
  static const option kLong[] = {{"point", required_argument, nullptr, 'p'},
                                 {"disk", required_argument, nullptr, 'd'},
                                 {"list", no_argument, nullptr, 'l'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {nullptr, 0, nullptr, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "p:d:lhV", kLong, nullptr)) != -1) {
    switch (c) {
      case 'p': o->point = optarg; break;
      case 'd': o->disks.emplace_back(optarg); break;
      case 'l': o->list = true; break;
      case 'h': print_usage(stdout); return -1;
      case 'V': std::printf("%s %s\n", kProg, VSFS_VERSION); return -1;
      default: return usage_error(fmt::format("unknown option or missing argument: {}", argv[optind - 1]));
    }
  }
  const int want = o->list ? 1 : 2;
  if (argc - optind != want) return usage_error(o->list ? "expected BACKUP_DIR" : "expected BACKUP_DIR DEST");
  o->backup_dir = argv[optind];
  if (!o->list) o->dest = argv[optind + 1];
  return kExitOk;
}

void print_catalog(const Catalog& c) {
  std::printf("datastore %s, directory %s, %zu point%s\n", c.datastore_uuid.c_str(),
              c.vmdir.empty() ? "." : c.vmdir.c_str(), c.points.size(), c.points.size() == 1 ? "" : "s");
  for (const auto& p : c.points) {
    uint64_t copied = 0;
    for (const auto& d : p.disks) copied += d.copied_bytes;
    std::printf("point %llu %s snapshot=%s changeid=%llu disks=%zu copied=%llu\n",
                static_cast<unsigned long long>(p.number), format_time(p.time_s).c_str(),
                escape(p.snapshot).c_str(), static_cast<unsigned long long>(p.change_id),
                p.disks.size(), static_cast<unsigned long long>(copied));
    for (const auto& d : p.disks) {
      std::printf("  disk path=%s kind=%s size=%llu copied=%llu\n", escape(d.path).c_str(),
                  disk_kind_name(d.kind), static_cast<unsigned long long>(d.size_bytes),
                  static_cast<unsigned long long>(d.copied_bytes));
    }
  }
}

// Copies the data files' pieces into one open file and checks every source extent's
// crc32c: while copying when a piece is a whole extent, by reading the extent again
// otherwise (a later point overwrote part of it).
class PieceCopier {
 public:
  PieceCopier(const std::string& disk, Progress& progress) : disk_(disk), progress_(progress), buf_(kCopyBytes) {}

  Result<void> copy(uint64_t start, const Piece& piece, int out, const std::string& out_path) {
    VSFS_ASSIGN_OR_RETURN(int in, file(piece.data_file));
    const Extent& e = piece.source;
    const bool whole = start == e.offset_bytes && piece.end_bytes == e.offset_bytes + e.length_bytes;
    uint32_t crc = 0;
    for (uint64_t off = start; off < piece.end_bytes;) {
      const uint64_t n = std::min<uint64_t>(buf_.size(), piece.end_bytes - off);
      VSFS_TRY(read_exact(in, piece.data_file, buf_.data(), n, off));
      VSFS_TRY(write_exact(out, out_path, buf_.data(), n, off));
      crc = vsfs::crc32c(crc, buf_.data(), n);
      off += n;
      progress_.add(n);
    }
    if (!whole) return check_whole(in, piece);
    return crc == e.crc ? vsfs::ok_result() : mismatch(piece);
  }

 private:
  Result<int> file(const std::string& path) {
    auto it = files_.find(path);
    if (it == files_.end()) {
      VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(path, O_RDONLY));
      it = files_.emplace(path, std::move(fd)).first;
    }
    return it->second.get();
  }

  Result<void> check_whole(int in, const Piece& piece) {
    const Extent& e = piece.source;
    if (!checked_.insert({piece.data_file, e.offset_bytes}).second) return vsfs::ok_result();
    uint32_t crc = 0;
    for (uint64_t off = e.offset_bytes; off < e.offset_bytes + e.length_bytes;) {
      const uint64_t n = std::min<uint64_t>(buf_.size(), e.offset_bytes + e.length_bytes - off);
      VSFS_TRY(read_exact(in, piece.data_file, buf_.data(), n, off));
      crc = vsfs::crc32c(crc, buf_.data(), n);
      off += n;
    }
    return crc == e.crc ? vsfs::ok_result() : mismatch(piece);
  }

  vsfs::Error mismatch(const Piece& piece) const {
    return vsfs::corruption(fmt::format("{}: the extent at offset {} ({} bytes) of {} fails its checksum: "
                                        "the backup is damaged",
                                        piece.data_file, piece.source.offset_bytes,
                                        piece.source.length_bytes, disk_));
  }

  std::string disk_;
  Progress& progress_;
  std::vector<uint8_t> buf_;
  std::map<std::string, Fd> files_;
  std::set<std::pair<std::string, uint64_t>> checked_;
};

Result<void> fill_file(const DiskMap& map, const std::string& path, Progress& progress) {
  VSFS_ASSIGN_OR_RETURN(Fd out, open_file(path, O_WRONLY | O_CREAT | O_TRUNC));
  if (::ftruncate(out.get(), static_cast<off_t>(map.size_bytes)) != 0) {
    return vsfs::make_error(errno, ErrorKind::kIo, "cannot size {}: {}", path, std::strerror(errno));
  }
  PieceCopier copier(map.path, progress);
  for (const auto& [start, piece] : map.pieces) VSFS_TRY(copier.copy(start, piece, out.get(), path));
  if (::fsync(out.get()) != 0) return vsfs::make_error(errno, ErrorKind::kIo, "fsync {}: {}", path, std::strerror(errno));
  return vsfs::ok_result();
}

// DEST/PATH.restoring, filled and fsynced, then renamed to DEST/PATH; removed on failure.
Result<void> restore_disk(const DiskMap& map, const std::string& dest, Progress& progress) {
  const std::string target = dest + "/" + map.path;
  const std::string parent = target.substr(0, target.rfind('/'));
  VSFS_TRY(make_dirs(parent));
  const std::string tmp = target + ".restoring";
  if (auto r = fill_file(map, tmp, progress); !r.ok()) {
    ::unlink(tmp.c_str());
    return r;
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return vsfs::make_error(err, ErrorKind::kIo, "rename {} to {}: {}", tmp, target, std::strerror(err));
  }
  return fsync_path(parent);
}

// The disks to restore: those named by --disk, or every disk the point holds.
Result<std::vector<std::string>> disks_to_restore(const Options& o, const Point& p) {
  std::vector<std::string> out;
  for (const auto& d : p.disks) {
    if (d.kind != DiskKind::kAbsent && o.disks.empty()) out.push_back(d.path);
  }
  for (const auto& path : o.disks) {
    const DiskRecord* d = p.find(path);
    if (d == nullptr || d->kind == DiskKind::kAbsent) {
      return vsfs::make_error(ENOENT, ErrorKind::kNotFound, "disk {} is not in point {} (see --list)", path, p.number);
    }
    out.push_back(path);
  }
  return out;
}

int run(const Options& o) {
  const double start_s = now_s();
  bool exists = false;
  auto cat = read_catalog(o.backup_dir, &exists);
  if (!cat.ok()) return failed(cat.error().message);
  if (!exists) return failed(fmt::format("{} holds no backup ({}/catalog is missing)", o.backup_dir, o.backup_dir));
  if (o.list) {
    print_catalog(*cat);
    return kExitOk;
  }
  if (cat->points.empty()) return failed(fmt::format("{}/catalog names no point", o.backup_dir));
  const Point* point = o.point.empty() ? &cat->points.back() : cat->find(o.point);
  if (point == nullptr) return failed(fmt::format("no point '{}' in {}/catalog (see --list)", o.point, o.backup_dir));
  auto paths = disks_to_restore(o, *point);
  if (!paths.ok()) return failed(paths.error().message);
  std::vector<DiskMap> maps;
  uint64_t total = 0;
  for (const auto& path : *paths) {
    auto map = build_disk_map(o.backup_dir, *cat, *point, path);
    if (!map.ok()) return failed(map.error().message);
    total += map->data_bytes();
    maps.push_back(std::move(*map));
  }
  if (auto r = make_dirs(o.dest); !r.ok()) return failed(r.error().message);
  Progress progress(kProg, total);
  for (const auto& map : maps) {
    if (auto r = restore_disk(map, o.dest, progress); !r.ok()) return failed(r.error().message);
  }
  progress.finish();
  for (const auto& map : maps) {
    std::printf("disk path=%s size=%llu restored=%llu\n", escape(map.path).c_str(),
                static_cast<unsigned long long>(map.size_bytes),
                static_cast<unsigned long long>(map.data_bytes()));
  }
  std::printf("total point=%llu snapshot=%s disks=%zu restored=%llu elapsed=%.2fs\n",
              static_cast<unsigned long long>(point->number), escape(point->snapshot).c_str(),
              maps.size(), static_cast<unsigned long long>(total), now_s() - start_s);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const int parsed = parse_args(argc, argv, &o);
  if (parsed < 0) return kExitOk;  // --help, --version
  if (parsed != kExitOk) return parsed;
  return run(o);
}
