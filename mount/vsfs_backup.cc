// vsfs-backup: backs up the disks of one directory of a mounted datastore from one
// snapshot, as a forever-incremental chain of points (vsfs-backup(8)).
//
// Works only through the mount: the snapshot (mkdir .snapshots/NAME or an existing
// one), its changeId (xattr user.vsfs.changeid), the .cbt maps that say what changed
// since the previous point, and the snapshot's files to copy from. A point is written
// into points/N.partial, fsynced, renamed to points/N, checked (--verify), and only then
// named in the catalogue (written to a temporary file, fsynced, renamed): an
// interrupted run leaves the earlier points as they were, and the next run removes
// what it left. Exit status: 0 done, 1 failed, 2 usage.
// Threading: main thread only.
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "mount/backup_chain.h"
#include "util/crc32c.h"
#include "util/human.h"

#ifndef VSFS_VERSION
#define VSFS_VERSION "0.1.0"
#endif

namespace {

using namespace vsfs::backup;
namespace fs = std::filesystem;
using vsfs::ErrorKind;
using vsfs::Result;

constexpr const char* kProg = "vsfs-backup";
constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2;
constexpr const char* kChangeIdXattr = "user.vsfs.changeid";

// Set by SIGINT, SIGTERM and SIGHUP: the copy stops at the next buffer and the run ends
// as a failed one would (the snapshot it took deleted, the catalogue unchanged).
volatile sig_atomic_t g_interrupted = 0;

void on_signal(int) { g_interrupted = 1; }

void catch_interruptions() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

Result<void> check_interrupted() {
  if (g_interrupted == 0) return vsfs::ok_result();
  return vsfs::make_error(EINTR, ErrorKind::kState, "interrupted");
}

struct Options {
  std::string snapshot;  // --snapshot: an existing snapshot; empty: take one
  std::string pre, post;
  bool keep_snapshot = false;
  bool verify = false;
  std::string mount, vmdir, backup_dir;
};

// The snapshot a point is taken from. `base` is the directory it belongs to (the mount
// for a datastore-wide snapshot, VMDIR or an ancestor for a per-directory one);
// `prefix` is VMDIR below base. Disks are at base/.snapshots/NAME/prefix/PATH and their
// maps at base/.cbt/NAME/SINCE/prefix/PATH.
struct Source {
  std::string name;
  std::string base;
  std::string prefix;
  uint64_t change_id = 0;
  bool taken = false;  // made by this run (deleted at the end unless --keep-snapshot)

  std::string dir() const { return base + "/.snapshots/" + name; }
  std::string disk(const std::string& path) const { return join(dir(), path); }
  std::string cbt(const std::string& since) const { return base + "/.cbt/" + name + "/" + since; }
  std::string cbt(const std::string& since, const std::string& path) const {
    return join(cbt(since), path);
  }
  std::string join(const std::string& top, const std::string& path) const {
    return top + (prefix.empty() ? "" : "/" + prefix) + "/" + path;
  }
};

// What one disk of the new point copies, and from which map.
struct DiskPlan {
  DiskRecord rec;
  std::vector<Extent> extents;
  std::string map_path;
};

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [OPTIONS] MOUNT VMDIR BACKUP_DIR\n"
               "       %s --help | --version\n"
               "Backs up every disk under MOUNT/VMDIR from one snapshot into BACKUP_DIR: the\n"
               "first run copies everything, later runs what changed since the last point.\n"
               "\n"
               "  -s, --snapshot NAME  use the existing snapshot NAME (of VMDIR, an ancestor\n"
               "                       or the datastore); default: take one of VMDIR\n"
               "  -k, --keep-snapshot  keep the snapshot this run took\n"
               "      --pre CMD        run CMD (/bin/sh -c) before taking the snapshot; its\n"
               "                       failure aborts the backup\n"
               "      --post CMD       run CMD after taking the snapshot (whenever --pre ran)\n"
               "  -v, --verify         compare the new point with the snapshot, byte for byte\n"
               "  -h, --help           this text\n"
               "  -V, --version\n"
               "Exit status: 0 done, 1 failed, 2 usage. See vsfs-backup(8).\n",
               kProg, kProg);
}

void say(const std::string& line) { std::fprintf(stderr, "%s: %s\n", kProg, line.c_str()); }

int failed(const std::string& line) {
  say(line);
  return kExitFailed;
}

int usage_error(const std::string& line) {
  say(line + "; see --help");
  return kExitUsage;
}

// Returns kExitOk, -1 after --help or --version, or the exit status to stop with.
int parse_args(int argc, char** argv, Options* o) {
  enum { kPre = 1000, kPost };
  static const option kLong[] = {{"snapshot", required_argument, nullptr, 's'},
                                 {"keep-snapshot", no_argument, nullptr, 'k'},
                                 {"pre", required_argument, nullptr, kPre},
                                 {"post", required_argument, nullptr, kPost},
                                 {"verify", no_argument, nullptr, 'v'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {nullptr, 0, nullptr, 0}};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "s:kvhV", kLong, nullptr)) != -1) {
    switch (c) {
      case 's': o->snapshot = optarg; break;
      case 'k': o->keep_snapshot = true; break;
      case kPre: o->pre = optarg; break;
      case kPost: o->post = optarg; break;
      case 'v': o->verify = true; break;
      case 'h': print_usage(stdout); return -1;
      case 'V': std::printf("%s %s\n", kProg, VSFS_VERSION); return -1;
      default: return usage_error(fmt::format("unknown option or missing argument: {}", argv[optind - 1]));
    }
  }
  if (optind + 3 != argc) return usage_error("expected MOUNT VMDIR BACKUP_DIR");
  if (!o->snapshot.empty() && (!o->pre.empty() || !o->post.empty())) {
    return usage_error("--pre and --post go with a snapshot this run takes, not with --snapshot");
  }
  if (!o->snapshot.empty() && o->keep_snapshot) return usage_error("--keep-snapshot goes without --snapshot");
  o->mount = argv[optind];
  o->vmdir = argv[optind + 1];
  o->backup_dir = argv[optind + 2];
  while (o->mount.size() > 1 && o->mount.back() == '/') o->mount.pop_back();
  while (o->backup_dir.size() > 1 && o->backup_dir.back() == '/') o->backup_dir.pop_back();
  return kExitOk;
}

// VMDIR relative to the mount, without "." or empty components; ".." is refused.
Result<std::string> normalize_vmdir(const std::string& vmdir) {
  std::string out;
  size_t start = 0;
  while (start <= vmdir.size()) {
    size_t slash = vmdir.find('/', start);
    if (slash == std::string::npos) slash = vmdir.size();
    const std::string part = vmdir.substr(start, slash - start);
    if (part == "..") return vsfs::make_error(EINVAL, ErrorKind::kInvalidArgument, "VMDIR {} may not contain '..'", vmdir);
    if (part == ".snapshots" || part == ".cbt" || part == ".vsfs") {
      return vsfs::make_error(EINVAL, ErrorKind::kInvalidArgument, "VMDIR {} is inside {}", vmdir, part);
    }
    if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
    start = slash + 1;
  }
  return out;
}

// The datastore's UUID from MOUNT/.vsfs/stats (section "datastore", key "uuid"); a
// missing stats file means MOUNT is not the top of a vsfs mount.
Result<std::string> datastore_uuid(const std::string& mount) {
  struct stat st;
  if (::stat(mount.c_str(), &st) != 0) {
    return vsfs::make_error(errno, ErrorKind::kNotFound, "{}: {}", mount, std::strerror(errno));
  }
  const std::string path = mount + "/.vsfs/stats";
  auto text = read_text(path);
  if (!text.ok()) {
    return vsfs::make_error(EINVAL, ErrorKind::kInvalidArgument,
                            "{} is not a vsfs mount (no {})", mount, path);
  }
  const size_t section = text->find("\"datastore\"");
  const size_t key = section == std::string::npos ? section : text->find("\"uuid\"", section);
  const size_t open = key == std::string::npos ? key : text->find('"', text->find(':', key));
  const size_t close = open == std::string::npos ? open : text->find('"', open + 1);
  if (close == std::string::npos) {
    return vsfs::corruption(fmt::format("{} names no datastore uuid", path));
  }
  return text->substr(open + 1, close - open - 1);
}

Result<Fd> lock_backup_dir(const std::string& backup_dir) {
  VSFS_TRY(make_dirs(backup_dir + "/points"));
  const std::string path = backup_dir + "/lock";
  VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(path, O_RDWR | O_CREAT));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return vsfs::make_error(EBUSY, ErrorKind::kBusy, "{} is in use by another vsfs-backup ({})",
                            backup_dir, path);
  }
  return fd;
}

Result<Catalog> open_catalog(const std::string& backup_dir, const std::string& uuid,
                             const std::string& vmdir) {
  bool exists = false;
  VSFS_ASSIGN_OR_RETURN(Catalog c, read_catalog(backup_dir, &exists));
  if (!exists) {
    c.datastore_uuid = uuid;
    c.vmdir = vmdir;
    return c;
  }
  if (c.datastore_uuid != uuid || c.vmdir != vmdir) {
    return vsfs::make_error(EINVAL, ErrorKind::kInvalidArgument,
                            "{}/catalog holds backups of directory '{}' of datastore {}, not of "
                            "'{}' of datastore {}: use another BACKUP_DIR",
                            backup_dir, c.vmdir, c.datastore_uuid, vmdir, uuid);
  }
  return c;
}

bool is_point_number(const std::string& name, size_t points) {
  if (name.empty() || name.size() > 18 ||
      !std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return false;
  }
  return std::stoull(name) < points;
}

// Point directories the catalogue does not name: what an interrupted run left.
Result<void> remove_unpublished_points(const std::string& backup_dir, const Catalog& c) {
  const std::string points = backup_dir + "/points";
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(points, ec), end; !ec && it != end; it.increment(ec)) {
    if (!is_point_number(it->path().filename(), c.points.size())) stale.push_back(it->path());
  }
  if (ec) return vsfs::make_error(ec.value(), ErrorKind::kIo, "cannot list {}: {}", points, ec.message());
  for (const auto& dir : stale) {
    say(fmt::format("removing {}, left by an interrupted run", dir.string()));
    fs::remove_all(dir, ec);
    if (ec) return vsfs::make_error(ec.value(), ErrorKind::kIo, "cannot remove {}: {}", dir.string(), ec.message());
  }
  return vsfs::ok_result();
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Looks for NAME among the snapshots of VMDIR, then of each directory above it up to the
// datastore's own (.snapshots at the mount).
Result<Source> find_snapshot(const Options& o, const std::string& vmdir) {
  Source s;
  s.name = o.snapshot;
  std::string base_rel = vmdir;
  std::vector<std::string> looked;
  for (;;) {
    s.base = o.mount + (base_rel.empty() ? "" : "/" + base_rel);
    s.prefix = base_rel.empty() ? vmdir : vmdir.substr(std::min(vmdir.size(), base_rel.size() + 1));
    if (is_dir(s.dir())) return s;
    looked.push_back(s.base + "/.snapshots");
    if (base_rel.empty()) break;
    const size_t slash = base_rel.rfind('/');
    base_rel = slash == std::string::npos ? "" : base_rel.substr(0, slash);
  }
  std::string where;
  for (const auto& l : looked) where += (where.empty() ? "" : ", ") + l;
  return vsfs::make_error(ENOENT, ErrorKind::kNotFound, "snapshot '{}' not found (looked in {})",
                          o.snapshot, where);
}

// Runs a hook through /bin/sh -c; false (and a message) when it does not exit 0.
bool run_hook(const char* which, const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) return true;
  if (st == -1) {
    say(fmt::format("{} command could not run: {}", which, std::strerror(errno)));
  } else if (WIFEXITED(st)) {
    say(fmt::format("{} command '{}' exited with status {}", which, cmd, WEXITSTATUS(st)));
  } else {
    say(fmt::format("{} command '{}' was killed by signal {}", which, cmd, WTERMSIG(st)));
  }
  return false;
}

std::string snapshot_name() {
  const time_t t = ::time(nullptr);
  tm utc;
  ::gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  return fmt::format("vsfs-backup-{}-{}", stamp, ::getpid());
}

// --pre, mkdir VMDIR/.snapshots/NAME, --post. A failed --pre takes no snapshot; --post
// runs whenever --pre succeeded, and its failure is noted in *post_failed.
Result<Source> take_snapshot(const Options& o, const std::string& vmdir_path, bool* post_failed) {
  Source s;
  s.name = snapshot_name();
  s.base = vmdir_path;
  s.taken = true;
  ::setenv("VSFS_BACKUP_MOUNT", o.mount.c_str(), 1);
  ::setenv("VSFS_BACKUP_VMDIR", o.vmdir.c_str(), 1);
  ::setenv("VSFS_BACKUP_SNAPSHOT", s.name.c_str(), 1);
  if (!o.pre.empty() && !run_hook("--pre", o.pre)) {
    return vsfs::make_error(ECANCELED, ErrorKind::kState,
                            "--pre failed: no snapshot taken, nothing backed up");
  }
  const int rc = ::mkdir(s.dir().c_str(), 0755);
  const int err = errno;
  if (!o.post.empty() && !run_hook("--post", o.post)) *post_failed = true;
  if (rc != 0) {
    return vsfs::make_error(err, ErrorKind::kIo, "cannot take a snapshot: mkdir {}: {}", s.dir(),
                            std::strerror(err));
  }
  return s;
}

Result<uint64_t> read_change_id(const std::string& dir) {
  char buf[32];
  const ssize_t n = ::getxattr(dir.c_str(), kChangeIdXattr, buf, sizeof buf - 1);
  if (n < 0) {
    return vsfs::make_error(errno, ErrorKind::kIo, "cannot read {} of {}: {}", kChangeIdXattr, dir,
                            std::strerror(errno));
  }
  buf[n] = '\0';
  char* end = nullptr;
  errno = 0;
  const unsigned long long id = std::strtoull(buf, &end, 10);
  if (n == 0 || errno != 0 || *end != '\0') {
    return vsfs::corruption(fmt::format("{} of {} is not a number: '{}'", kChangeIdXattr, dir, buf));
  }
  return static_cast<uint64_t>(id);
}

// Every regular file below `top`, relative to it, sorted; symbolic links and vsfs's own
// directories are skipped.
Result<std::vector<std::string>> list_disks(const std::string& top) {
  std::vector<std::string> out;
  std::error_code ec;
  fs::recursive_directory_iterator it(top, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename();
    if (name == ".snapshots" || name == ".cbt" || name == ".vsfs") {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) {
      out.push_back(it->path().lexically_relative(top).string());
    }
  }
  if (ec) return vsfs::make_error(ec.value(), ErrorKind::kIo, "cannot list {}: {}", top, ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

Result<uint64_t> file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return vsfs::make_error(errno, ErrorKind::kIo, "cannot stat {}: {}", path, std::strerror(errno));
  }
  return static_cast<uint64_t>(st.st_size);
}

// Whether .cbt/NEW/PREV answers for the previous point: the datastore must still have
// PREV's record, for the snapshot's directory. A snapshot made later under PREV's name
// replaces that record; while it exists its changeId tells it apart.
bool previous_on_record(const Source& src, const Point& prev) {
  if (!is_dir(src.cbt(prev.snapshot))) {
    say(fmt::format("the datastore has no record of point {}'s snapshot '{}' for snapshot '{}' "
                    "({} is missing: deleted from its history, or taken of another directory): "
                    "copying every disk in full",
                    prev.number, prev.snapshot, src.name, src.cbt(prev.snapshot)));
    return false;
  }
  const std::string live = src.base + "/.snapshots/" + prev.snapshot;
  if (!is_dir(live)) return true;
  auto id = read_change_id(live);
  if (id.ok() && *id == prev.change_id) return true;
  say(fmt::format("snapshot {} is not point {}'s (changeId {}, not {}): copying every disk in full",
                  live, prev.number, id.ok() ? std::to_string(*id) : id.error().message, prev.change_id));
  return false;
}

// Which map each disk copies: what changed since the last point for a disk the last
// point holds, everything for a new disk, for the first point, and when the datastore no
// longer has the last point's changeId on record for this snapshot.
Result<std::vector<DiskPlan>> plan_disks(const Source& src, const Point* prev,
                                         const std::vector<std::string>& paths) {
  const bool since_ok = prev != nullptr && previous_on_record(src, *prev);
  std::vector<DiskPlan> plans;
  for (const auto& path : paths) {
    DiskPlan p;
    p.rec.path = path;
    const DiskRecord* before = prev != nullptr ? prev->find(path) : nullptr;
    const bool incremental = since_ok && before != nullptr && before->kind != DiskKind::kAbsent;
    p.map_path = incremental ? src.cbt(prev->snapshot, path) : src.cbt("full", path);
    p.rec.kind = incremental ? DiskKind::kIncremental : DiskKind::kFull;
    auto extents = read_cbt_map(p.map_path);
    if (!extents.ok() && incremental && extents.error().errno_value == ENOENT) {
      say(fmt::format("{} is missing: copying {} in full", p.map_path, path));
      p.map_path = src.cbt("full", path);
      p.rec.kind = DiskKind::kFull;
      extents = read_cbt_map(p.map_path);
    }
    if (!extents.ok()) return extents.take_error();
    p.extents = std::move(*extents);
    VSFS_ASSIGN_OR_RETURN(p.rec.size_bytes, file_size(src.disk(path)));
    p.rec.extents = p.extents.size();
    for (const auto& e : p.extents) (e.data ? p.rec.data_bytes : p.rec.zero_bytes) += e.length_bytes;
    plans.push_back(std::move(p));
  }
  if (prev != nullptr) {
    for (const auto& d : prev->disks) {
      if (d.kind == DiskKind::kAbsent || std::binary_search(paths.begin(), paths.end(), d.path)) continue;
      DiskPlan gone;
      gone.rec.path = d.path;
      plans.push_back(std::move(gone));
    }
  }
  return plans;
}

// Copies a disk's data extents from the snapshot into DIR/INDEX.data at their offsets
// (a sparse file of the disk's size) and lists them in DIR/INDEX.extents, both fsynced.
Result<void> copy_disk(const Source& src, DiskPlan& p, const std::string& dir, size_t index,
                       std::vector<uint8_t>& buf, Progress& progress) {
  const std::string from = src.disk(p.rec.path);
  const std::string to = fmt::format("{}/{}.data", dir, index);
  VSFS_ASSIGN_OR_RETURN(Fd in, open_file(from, O_RDONLY));
  VSFS_ASSIGN_OR_RETURN(Fd out, open_file(to, O_WRONLY | O_CREAT | O_TRUNC));
  if (::ftruncate(out.get(), static_cast<off_t>(p.rec.size_bytes)) != 0) {
    return vsfs::make_error(errno, ErrorKind::kIo, "cannot size {}: {}", to, std::strerror(errno));
  }
  for (auto& e : p.extents) {
    if (!e.data) continue;
    e.crc = 0;
    for (uint64_t done = 0; done < e.length_bytes;) {
      VSFS_TRY(check_interrupted());
      const uint64_t n = std::min<uint64_t>(buf.size(), e.length_bytes - done);
      VSFS_TRY(read_exact(in.get(), from, buf.data(), n, e.offset_bytes + done));
      VSFS_TRY(write_exact(out.get(), to, buf.data(), n, e.offset_bytes + done));
      e.crc = vsfs::crc32c(e.crc, buf.data(), n);
      done += n;
      p.rec.copied_bytes += n;
      progress.add(n);
    }
  }
  if (::fsync(out.get()) != 0) {
    return vsfs::make_error(errno, ErrorKind::kIo, "fsync {}: {}", to, std::strerror(errno));
  }
  return write_extents(fmt::format("{}/{}.extents", dir, index), p.rec, p.extents);
}

// Writes the point's files into points/N.partial, then makes it points/N durably.
Result<void> write_point(const std::string& backup_dir, const Source& src,
                         std::vector<DiskPlan>& plans, uint64_t number) {
  const std::string final_dir = point_dir(backup_dir, number);
  const std::string partial = final_dir + ".partial";
  VSFS_TRY(make_dirs(partial));
  uint64_t total = 0;
  for (const auto& p : plans) total += p.rec.data_bytes;
  Progress progress(kProg, total);
  std::vector<uint8_t> buf(kCopyBytes);
  for (size_t i = 0; i < plans.size(); ++i) {
    if (plans[i].rec.kind != DiskKind::kAbsent) VSFS_TRY(copy_disk(src, plans[i], partial, i, buf, progress));
  }
  progress.finish();
  VSFS_TRY(fsync_path(partial));
  if (::rename(partial.c_str(), final_dir.c_str()) != 0) {
    return vsfs::make_error(errno, ErrorKind::kIo, "rename {} to {}: {}", partial, final_dir, std::strerror(errno));
  }
  return fsync_path(backup_dir + "/points");
}

// Fills buf with bytes [offset, offset + length) of the disk as the map rebuilds it.
Result<void> rebuild_range(const DiskMap& map, uint64_t offset, uint64_t length, uint8_t* buf,
                           std::map<std::string, Fd>& files) {
  std::memset(buf, 0, length);
  const uint64_t end = offset + length;
  auto it = map.pieces.upper_bound(offset);
  if (it != map.pieces.begin()) --it;
  for (; it != map.pieces.end() && it->first < end; ++it) {
    const uint64_t from = std::max(it->first, offset);
    const uint64_t to = std::min(it->second.end_bytes, end);
    if (from >= to) continue;
    const std::string& path = it->second.data_file;
    if (!files.contains(path)) {
      VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(path, O_RDONLY));
      files.emplace(path, std::move(fd));
    }
    VSFS_TRY(read_exact(files.at(path).get(), path, buf + (from - offset), to - from, from));
  }
  return vsfs::ok_result();
}

// Rebuilds `path` at `point` from the chain and compares it with the snapshot's disk.
Result<void> verify_disk(const std::string& backup_dir, const Catalog& c, const Point& point,
                         const Source& src, const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(DiskMap map, build_disk_map(backup_dir, c, point, path));
  const std::string disk = src.disk(path);
  VSFS_ASSIGN_OR_RETURN(uint64_t size, file_size(disk));
  if (size != map.size_bytes) {
    return vsfs::make_error(EIO, ErrorKind::kCorruption, "verify: {}: the backup's size {} differs from the snapshot's {}",
                            path, map.size_bytes, size);
  }
  VSFS_ASSIGN_OR_RETURN(Fd in, open_file(disk, O_RDONLY));
  std::vector<uint8_t> want(kCopyBytes), got(kCopyBytes);
  std::map<std::string, Fd> files;
  for (uint64_t off = 0; off < size; off += kCopyBytes) {
    VSFS_TRY(check_interrupted());
    const uint64_t n = std::min<uint64_t>(kCopyBytes, size - off);
    VSFS_TRY(read_exact(in.get(), disk, got.data(), n, off));
    VSFS_TRY(rebuild_range(map, off, n, want.data(), files));
    if (std::memcmp(got.data(), want.data(), n) == 0) continue;
    uint64_t i = 0;
    while (got[i] == want[i]) ++i;
    return vsfs::make_error(EIO, ErrorKind::kCorruption,
                            "verify: {}: the backup differs from the snapshot at offset {}", path, off + i);
  }
  return vsfs::ok_result();
}

Result<void> verify_point(const std::string& backup_dir, const Catalog& c, const Point& point,
                          const Source& src) {
  for (const auto& d : point.disks) {
    if (d.kind != DiskKind::kAbsent) VSFS_TRY(verify_disk(backup_dir, c, point, src, d.path));
  }
  return vsfs::ok_result();
}

// The summary on standard output: a line per disk and a total, as KEY=VALUE words.
void print_summary(const Point& point, double elapsed_s, bool verified) {
  uint64_t copied = 0, changed = 0, zeroed = 0;
  for (const auto& d : point.disks) {
    std::printf("disk path=%s kind=%s size=%llu extents=%llu copied=%llu changed=%llu zeroed=%llu\n",
                escape(d.path).c_str(), disk_kind_name(d.kind),
                static_cast<unsigned long long>(d.size_bytes), static_cast<unsigned long long>(d.extents),
                static_cast<unsigned long long>(d.copied_bytes), static_cast<unsigned long long>(d.data_bytes),
                static_cast<unsigned long long>(d.zero_bytes));
    copied += d.copied_bytes;
    changed += d.data_bytes;
    zeroed += d.zero_bytes;
  }
  std::printf("total point=%llu snapshot=%s changeid=%llu disks=%zu copied=%llu changed=%llu "
              "zeroed=%llu verified=%s elapsed=%.2fs\n",
              static_cast<unsigned long long>(point.number), escape(point.snapshot).c_str(),
              static_cast<unsigned long long>(point.change_id), point.disks.size(),
              static_cast<unsigned long long>(copied), static_cast<unsigned long long>(changed),
              static_cast<unsigned long long>(zeroed), verified ? "yes" : "no", elapsed_s);
  std::printf("%s: point %llu from snapshot %s: copied %s (%s changed, %s zeroed) in %.1f s\n", kProg,
              static_cast<unsigned long long>(point.number), point.snapshot.c_str(), vsfs::human_bytes(copied).c_str(),
              vsfs::human_bytes(changed).c_str(), vsfs::human_bytes(zeroed).c_str(), elapsed_s);
}

// Backs up the snapshot as the catalogue's next point.
int back_up(const Options& o, Catalog& cat, Source& src, double start_s) {
  if (auto i = check_interrupted(); !i.ok()) return failed(i.error().message);
  auto change_id = read_change_id(src.dir());
  if (!change_id.ok()) return failed(change_id.error().message);
  src.change_id = *change_id;
  const Point* prev = cat.points.empty() ? nullptr : &cat.points.back();
  if (prev != nullptr && src.change_id <= prev->change_id) {
    return failed(fmt::format("snapshot '{}' (changeId {}) is not newer than point {} (snapshot '{}', "
                              "changeId {})", src.name, src.change_id, prev->number, prev->snapshot,
                              prev->change_id));
  }
  const std::string top = src.dir() + (src.prefix.empty() ? "" : "/" + src.prefix);
  if (!is_dir(top)) return failed(fmt::format("{} is not in snapshot '{}' ({} is missing)", o.vmdir, src.name, top));
  auto paths = list_disks(top);
  if (!paths.ok()) return failed(paths.error().message);
  auto plans = plan_disks(src, prev, *paths);
  if (!plans.ok()) return failed(plans.error().message);
  if (auto r = remove_unpublished_points(o.backup_dir, cat); !r.ok()) return failed(r.error().message);
  Point point;
  point.number = cat.points.size();
  point.snapshot = src.name;
  point.change_id = src.change_id;
  point.time_s = ::time(nullptr);
  if (auto w = write_point(o.backup_dir, src, *plans, point.number); !w.ok()) return failed(w.error().message);
  for (const auto& p : *plans) point.disks.push_back(p.rec);
  cat.points.push_back(point);
  if (o.verify) {
    if (auto v = verify_point(o.backup_dir, cat, cat.points.back(), src); !v.ok()) {
      std::error_code ec;
      fs::remove_all(point_dir(o.backup_dir, point.number), ec);
      return failed(v.error().message + "; the point is not kept");
    }
  }
  if (auto w = write_catalog(o.backup_dir, cat); !w.ok()) return failed(w.error().message);
  print_summary(point, now_s() - start_s, o.verify);
  return kExitOk;
}

int run(const Options& o) {
  const double start_s = now_s();
  auto vmdir = normalize_vmdir(o.vmdir);
  if (!vmdir.ok()) return failed(vmdir.error().message);
  auto uuid = datastore_uuid(o.mount);
  if (!uuid.ok()) return failed(uuid.error().message);
  const std::string vmdir_path = o.mount + (vmdir->empty() ? "" : "/" + *vmdir);
  if (!is_dir(vmdir_path)) return failed(fmt::format("{} is not a directory", vmdir_path));
  auto lock = lock_backup_dir(o.backup_dir);
  if (!lock.ok()) return failed(lock.error().message);
  auto cat = open_catalog(o.backup_dir, *uuid, *vmdir);
  if (!cat.ok()) return failed(cat.error().message);
  bool post_failed = false;
  auto src = o.snapshot.empty() ? take_snapshot(o, vmdir_path, &post_failed) : find_snapshot(o, *vmdir);
  if (!src.ok()) return failed(src.error().message);
  int status = back_up(o, *cat, *src, start_s);
  if (src->taken && !o.keep_snapshot && ::rmdir(src->dir().c_str()) != 0) {
    status = failed(fmt::format("cannot delete snapshot {}: {}", src->dir(), std::strerror(errno)));
  }
  if (post_failed) {
    say("--post failed (see above); the snapshot and backup were taken");
    status = kExitFailed;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const int parsed = parse_args(argc, argv, &o);
  if (parsed < 0) return kExitOk;  // --help, --version
  if (parsed != kExitOk) return parsed;
  catch_interruptions();
  return run(o);
}
