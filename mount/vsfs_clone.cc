// vsfs-clone: makes one file of a mounted vsfs datastore a clone of another
// (vsfs-clone(1)).
//
// The clone is copy_file_range(2) at equal offsets: a first call over the whole source,
// then one per window of the source that holds data (SEEK_DATA), so vsfs shares whole
// grains or whole maps (metadata only) and holes stay holes. Both files must be on the same vsfs mount: anywhere
// else the kernel or the filesystem would copy the data, and this program never copies
// silently. A source written during the clone is detected (its size or change time moved
// across the clone) and reported, since the extents were then taken at different moments.
// Exit status: 0 cloned, 1 failed, 2 usage, 3 refused (nothing changed), 4 the source
// changed during the clone.
// Threading: main thread only.
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>

#include "util/human.h"

#ifndef VSFS_VERSION
#define VSFS_VERSION "0.1.0"
#endif

namespace {

constexpr const char* kProg = "vsfs-clone";
constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitRefused = 3, kExitChanged = 4;

// The clone starts with one copy_file_range call over the whole source from offset 0:
// into an empty DST, vsfs shares the source's whole map in O(1), whatever its size. The
// kernel cuts that call at 4 GiB (a FUSE reply counts 32 bits), and vsfs shares the rest
// grain by grain (metadata only) under its metadata lock, so the rest goes a window at a
// time, which bounds how long each call holds other requests back and paces progress.
// A window without data (SEEK_DATA) is skipped: DST is a hole there already. Each call
// is consistent on its own (vsfs(7) "Clones"), not across calls. A multiple of the grain
// (4 KiB), so every call starts on a grain boundary, the same on both sides.
constexpr uint64_t kWindowBytes = uint64_t{256} << 20;
constexpr uint64_t kGrainBytes = 4096;

struct Options {
  bool force = false;
  bool progress = false;
  std::string src, dst;
};

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [-f] [--progress] SRC DST\n"
               "       %s --help | --version\n"
               "Makes DST a clone of SRC on a mounted vsfs datastore: the grains of SRC are\n"
               "shared (metadata only, no data written), holes stay holes. SRC may be in a\n"
               "snapshot (.snapshots/NAME/...); both must be on the same vsfs mount.\n"
               "\n"
               "  -f, --force     replace DST if it exists (in place: it keeps its inode,\n"
               "                  owner and mode)\n"
               "  -p, --progress  bytes cloned so far on stderr\n"
               "  -h, --help      this text\n"
               "  -V, --version\n"
               "Exit status: 0 cloned, 1 failed, 2 usage, 3 refused (nothing changed),\n"
               "4 SRC changed during the clone. See vsfs-clone(1).\n",
               kProg, kProg);
}

int say(int status, const std::string& line) {
  std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
  return status;
}

// "PATH: errno text", the form of every system error this program reports.
std::string sys_error(const std::string& what, const std::string& path, int err) {
  return what + (what.empty() ? "" : " ") + path + ": " + std::strerror(err);
}

// An open file descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Returns kExitOk, -1 after --help or --version, or the exit status to stop with.
int parse_args(int argc, char** argv, Options* o) {
  static const option kLong[] = {{"force", no_argument, nullptr, 'f'},
                                 {"progress", no_argument, nullptr, 'p'},
                                 {"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {nullptr, 0, nullptr, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "fphV", kLong, nullptr)) != -1) {
    switch (c) {
      case 'f': o->force = true; break;
      case 'p': o->progress = true; break;
      case 'h': print_usage(stdout); return -1;
      case 'V': std::printf("%s %s\n", kProg, VSFS_VERSION); return -1;
      default:
        std::fprintf(stderr, "%s: see --help\n", kProg);
        return kExitUsage;
    }
  }
  if (argc - optind != 2) return say(kExitUsage, "expected SRC DST; see --help");
  o->src = argv[optind];
  o->dst = argv[optind + 1];
  return kExitOk;
}

// The filesystem type of the mount whose device is `dev` ("fuse.vsfs" for a datastore),
// from /proc/self/mountinfo; empty when not found.
std::string fs_type_of(dev_t dev) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  const std::string want = std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    std::istringstream fields(line);
    std::string id, parent, majmin;
    fields >> id >> parent >> majmin;
    if (majmin != want) continue;
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream tail(line.substr(dash + 3));
    std::string type;
    tail >> type;
    return type;
  }
  return {};
}

std::string parent_dir(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Whether path lies under .vsfs/ or .cbt/: files vsfs makes up (counters, changed-block
// maps) that hold no grains. vsfs refuses to clone them and the kernel would copy them.
bool made_up(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (real == nullptr) return false;
  const std::string r = std::string(real) + "/";
  std::free(real);
  return r.find("/.vsfs/") != std::string::npos || r.find("/.cbt/") != std::string::npos;
}

// What a writer changes: size and change time (a write moves ctime and mtime). Asked of
// the daemon (AT_STATX_FORCE_SYNC), not of the kernel's attribute cache.
struct Version {
  uint64_t size_bytes;
  statx_timestamp ctime, mtime;
  bool operator==(const Version& o) const {
    return size_bytes == o.size_bytes && ctime.tv_sec == o.ctime.tv_sec &&
           ctime.tv_nsec == o.ctime.tv_nsec && mtime.tv_sec == o.mtime.tv_sec &&
           mtime.tv_nsec == o.mtime.tv_nsec;
  }
};

bool version_of(int fd, Version* v) {
  struct statx sx;
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_SIZE | STATX_CTIME | STATX_MTIME,
              &sx) != 0) {
    return false;
  }
  *v = Version{sx.stx_size, sx.stx_ctime, sx.stx_mtime};
  return true;
}

// Where the first data at or after offset_bytes is (SEEK_DATA); UINT64_MAX when there
// is none. Returns 0 or an errno.
int data_at(int fd, uint64_t offset_bytes, uint64_t* out) {
  const off_t data = ::lseek(fd, static_cast<off_t>(offset_bytes), SEEK_DATA);
  if (data < 0) {
    if (errno != ENXIO) return errno;
    *out = UINT64_MAX;
    return 0;
  }
  *out = static_cast<uint64_t>(data);
  return 0;
}

// Bytes done of total on stderr: on a terminal one line redrawn at most 5 times a second,
// otherwise a line at most every second and a last one.
class Progress {
 public:
  Progress(bool on, const std::string& dst, uint64_t total_bytes)
      : on_(on), tty_(::isatty(STDERR_FILENO) == 1), dst_(dst), total_bytes_(total_bytes) {}

  void add(uint64_t bytes) {
    done_bytes_ += bytes;
    if (!on_) return;
    const double now = now_s();
    if (now - drawn_s_ >= (tty_ ? 0.2 : 1.0)) draw(false);
  }

  void finish() {
    if (on_) draw(true);
  }

 private:
  static double now_s() {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }

  void draw(bool last) {
    drawn_s_ = now_s();
    const unsigned pct =
        total_bytes_ == 0 ? 100 : static_cast<unsigned>(done_bytes_ * 100 / total_bytes_);
    std::fprintf(stderr, "%s%s: %s: %" PRIu64 "/%" PRIu64 " bytes (%s of %s, %u%%)%s",
                 tty_ ? "\r" : "", kProg, dst_.c_str(), done_bytes_, total_bytes_,
                 vsfs::human_bytes(done_bytes_).c_str(), vsfs::human_bytes(total_bytes_).c_str(),
                 pct, tty_ && !last ? "   " : "\n");
    std::fflush(stderr);
  }

  bool on_, tty_;
  std::string dst_;
  uint64_t total_bytes_, done_bytes_ = 0;
  double drawn_s_ = 0;
};

// Clones [offset, offset + length) of src to the same range of dst. Returns 0, or an
// errno (ENODATA when the source ended early: it shrank meanwhile).
int clone_range(int src, int dst, uint64_t offset_bytes, uint64_t length_bytes) {
  uint64_t done = 0;
  while (done < length_bytes) {
    loff_t in = static_cast<loff_t>(offset_bytes + done);
    loff_t out = in;
    const ssize_t n = ::copy_file_range(src, &in, dst, &out, static_cast<size_t>(length_bytes - done), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return ENODATA;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

int run(const Options& o) {
  const Fd src(::open(o.src.c_str(), O_RDONLY | O_CLOEXEC));
  if (src.get() < 0) return say(errno == ENOENT ? kExitRefused : kExitFailed, sys_error("cannot open", o.src, errno));
  struct stat src_st;
  if (::fstat(src.get(), &src_st) != 0) return say(kExitFailed, sys_error("cannot stat", o.src, errno));
  if (S_ISDIR(src_st.st_mode)) return say(kExitRefused, sys_error("", o.src, EISDIR) + " (clone the disks in it one by one)");
  if (!S_ISREG(src_st.st_mode)) return say(kExitRefused, o.src + ": not a regular file");
  const std::string src_type = fs_type_of(src_st.st_dev);
  if (src_type != "fuse.vsfs") {
    return say(kExitRefused, o.src + ": not on a vsfs datastore (" +
                                 (src_type.empty() ? std::string("unknown filesystem") : src_type) +
                                 "); vsfs-clone only shares grains within one datastore, use cp(1) to copy");
  }
  if (made_up(o.src)) return say(kExitRefused, o.src + ": not a disk (.vsfs/ and .cbt/ hold no grains to share)");

  // DST: its directory must be on the same mount, and an existing DST is replaced only
  // with -f, and never when it is SRC itself (O_TRUNC would empty the source).
  const std::string dir = parent_dir(o.dst);
  struct stat dir_st;
  if (::stat(dir.c_str(), &dir_st) != 0) return say(kExitRefused, sys_error("cannot stat directory", dir, errno));
  if (dir_st.st_dev != src_st.st_dev) {
    const std::string t = fs_type_of(dir_st.st_dev);
    return say(kExitRefused, o.dst + ": not on the vsfs mount that holds " + o.src + " (" +
                                 (t.empty() ? std::string("unknown filesystem") : t) +
                                 "); a clone shares grains within one datastore only, use cp(1) to copy");
  }
  struct stat dst_st;
  const bool exists = ::stat(o.dst.c_str(), &dst_st) == 0;
  if (exists) {
    if (S_ISDIR(dst_st.st_mode)) return say(kExitRefused, sys_error("", o.dst, EISDIR) + " (name the new file)");
    if (dst_st.st_dev == src_st.st_dev && dst_st.st_ino == src_st.st_ino) {
      return say(kExitRefused, o.dst + ": is " + o.src + " itself");
    }
    if (!o.force) return say(kExitRefused, sys_error("", o.dst, EEXIST) + " (-f replaces it)");
    if (!S_ISREG(dst_st.st_mode)) return say(kExitRefused, o.dst + ": not a regular file");
  }
  const int flags = O_WRONLY | O_CLOEXEC | O_CREAT | (exists ? O_TRUNC : O_EXCL);
  const Fd dst(::open(o.dst.c_str(), flags, src_st.st_mode & 0777));
  if (dst.get() < 0) {
    return say(errno == EEXIST ? kExitRefused : kExitFailed, sys_error("cannot create", o.dst, errno));
  }
  // A new DST that did not become a clone is removed; a replaced one cannot be restored.
  auto fail = [&](int status, const std::string& line) {
    if (!exists) ::unlink(o.dst.c_str());
    return say(status, line + (exists ? "; " + o.dst + " is incomplete" : ""));
  };

  Version before;
  if (!version_of(src.get(), &before)) return fail(kExitFailed, sys_error("cannot stat", o.src, errno));
  // The size first: a trailing hole is then already there.
  if (::ftruncate(dst.get(), static_cast<off_t>(before.size_bytes)) != 0) {
    return fail(kExitFailed, sys_error("cannot set the size of", o.dst, errno));
  }
  Progress progress(o.progress, o.dst, before.size_bytes);
  auto clone_failed = [&](int err) {
    if (err == ENODATA) return fail(kExitChanged, o.src + ": became shorter during the clone; clone from a snapshot");
    if (err == EXDEV || err == EOPNOTSUPP || err == ENOSYS) {
      return fail(kExitFailed, sys_error("cannot clone", o.src, err) + " (vsfs-clone does not copy data)");
    }
    return fail(kExitFailed, sys_error("cannot clone", o.src, err) + " to " + o.dst);
  };
  uint64_t at = 0;
  if (before.size_bytes > 0) {
    loff_t in = 0, out = 0;
    ssize_t n;
    do {
      n = ::copy_file_range(src.get(), &in, dst.get(), &out, static_cast<size_t>(before.size_bytes), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return clone_failed(errno);
    if (n == 0) return clone_failed(ENODATA);
    at = static_cast<uint64_t>(n);
    progress.add(at);
  }
  while (at < before.size_bytes) {
    const uint64_t len = std::min(kWindowBytes, before.size_bytes - at);
    uint64_t data_bytes = 0;
    if (const int err = data_at(src.get(), at, &data_bytes); err != 0) {
      return fail(kExitFailed, sys_error("cannot find the data (SEEK_DATA) of", o.src, err));
    }
    if (data_bytes < at + len) {
      // From the grain that holds the first data on: the hole before it is DST's already.
      const uint64_t from = std::max(at, data_bytes / kGrainBytes * kGrainBytes);
      if (const int err = clone_range(src.get(), dst.get(), from, at + len - from); err != 0) {
        return clone_failed(err);
      }
    }
    at += len;
    progress.add(len);
  }
  progress.finish();
  if (::fsync(dst.get()) != 0) return fail(kExitFailed, sys_error("cannot fsync", o.dst, errno));
  Version after;
  if (!version_of(src.get(), &after)) return fail(kExitFailed, sys_error("cannot stat", o.src, errno));
  if (!(after == before)) {
    return fail(kExitChanged, o.src +
                                  ": was written during the clone, so its extents were cloned at "
                                  "different moments; take a snapshot and clone from "
                                  ".snapshots/NAME/...");
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const int r = parse_args(argc, argv, &o);
  if (r == -1) return kExitOk;
  if (r != kExitOk) return r;
  return run(o);
}
