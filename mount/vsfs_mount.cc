// vsfs-mount: mounts a vsfs datastore through FUSE (vsfs-mount(8)).
//
// Checks everything it can before mounting and, when something is wrong, prints one
// line on stderr and exits 1 without mounting and without changing the device: bad
// configuration, device missing, mount point missing or not a directory, device in use
// (the io_uring backend takes an exclusive lock: flock on files, O_EXCL on block
// devices), not a datastore or damaged, unsupported feature.
//
// Without -f the process forks first (before any thread or ring exists); the child opens
// the device and the datastore, mounts, and tells the parent "ok" or its error line
// through a pipe; the parent prints the error or returns 0 once the mount is in place.
// The child then detaches (setsid, stdio to /dev/null) and serves until unmount
// (fusermount3 -u, umount) or SIGINT/SIGTERM/SIGHUP, then unmounts and closes the
// datastore (commit, checkpoint, clean mark) and exits 0. Once mounted it records
// helper=vsfs in utab, so that umount(8) runs umount.vsfs, which waits for that close.
//
// With remount among the -o options (mount -o remount,ro|rw DIR runs mount.fuse.vsfs,
// which runs this) nothing is mounted: the daemon serving DIR turns read-only or
// read-write (mounted.h).
//
// Threading: main thread only; the FUSE workers and the device completion thread are
// started by libfuse and the library and stopped before close().
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <systemd/sd-daemon.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "device/open.h"
#include "fuse/fuse_fs.h"
#include "fuse/session.h"
#include "mount/closing_daemon.h"
#include "mount/config.h"
#include "mount/leased.h"
#include "mount/mounted.h"
#include "util/clock.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace {

constexpr const char* kProg = "vsfs-mount";
constexpr const char* kVersion = "0.1.0";

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [-f] [-o OPTIONS] [-c CONFIG] DEVICE DIR\n"
               "       %s -o remount,ro|rw DEVICE DIR\n"
               "       %s --help | --version\n"
               "Mounts the vsfs datastore on DEVICE (a block device or a file made by\n"
               "vsfs-mkfs) at the directory DIR through FUSE.\n"
               "\n"
               "  -f          stay in the foreground; log to standard error\n"
               "  -o OPTIONS  comma-separated: ro, rw, configuration keys (threads=8,\n"
               "              journal.commit_interval_ms=500, coalesce=off, ...),\n"
               "              FUSE options (allow_other, ...)\n"
               "  -c CONFIG   configuration file (default %s when present)\n"
               "  -h, --help  this text\n"
               "  -V, --version\n"
               "See vsfs-mount(8) and vsfs.toml(5).\n",
               kProg, kProg, kProg, vsfs::mount::kDefaultConfigPath);
}

struct Args {
  bool foreground = false;
  std::vector<std::string> options;
  std::optional<std::string> config_path;
  std::string device;
  std::string dir;
};

// Tells a service manager (systemd, Type=notify) how the mount goes: READY=1 once a
// request through the mount has been answered (not merely once the kernel mount exists),
// STOPPING=1 when the serving loop ends (unmount or signal). Without NOTIFY_SOCKET in the
// environment it does nothing.
class ServiceNotifier {
 public:
  ServiceNotifier(std::string device, std::string dir)
      : device_(std::move(device)), dir_(std::move(dir)) {}
  ~ServiceNotifier() { join(); }
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // Starts a thread that stats the mount (answered by the serving loop) and then
  // reports ready. Call before the loop starts.
  void start() {
    if (std::getenv("NOTIFY_SOCKET") == nullptr) return;
    thread_ = std::thread([this] {
      struct stat st {};
      if (::stat((dir_ + "/.vsfs/stats").c_str(), &st) != 0) return;  // ended before
      sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=serving %s at %s", static_cast<int>(::getpid()),
                 device_.c_str(), dir_.c_str());
    });
  }
  void stopping() {
    sd_notifyf(0, "STOPPING=1\nSTATUS=unmounting %s from %s", device_.c_str(), dir_.c_str());
  }
  // After the unmount: the thread's stat has been answered or has failed by then.
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::string device_, dir_;
  std::thread thread_;
};

// Where start-up errors go: straight to stderr (-f), or through the pipe to the parent.
class Reporter {
 public:
  explicit Reporter(int fd) : fd_(fd) {}
  // One line, without the program name.
  void fail(const std::string& line) {
    std::string msg = std::string(kProg) + ": " + line + "\n";
    if (fd_ < 0) {
      std::fputs(msg.c_str(), stderr);
      return;
    }
    write_all(msg);
    close_pipe();
  }
  void ready() {
    if (fd_ < 0) return;
    write_all("ok\n");
    close_pipe();
  }

 private:
  void write_all(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(fd_, s.data() + done, s.size() - done);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }
  void close_pipe() {
    ::close(fd_);
    fd_ = -1;
  }
  int fd_;
};

// The checks that need no device open: nothing is changed by them.
std::optional<std::string> preflight(const Args& a) {
  struct stat st;
  if (vsfs::device::is_rbd_name(a.device)) {
    if (auto name = vsfs::device::parse_rbd_name(a.device); !name.ok()) return name.error().message;
  } else if (::stat(a.device.c_str(), &st) != 0) {
    return a.device + ": " + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return a.device + ": not a regular file or block device";
  }
  if (::stat(a.dir.c_str(), &st) != 0) {
    return a.dir + ": mount point: " + std::strerror(errno);
  }
  if (!S_ISDIR(st.st_mode)) return a.dir + ": mount point is not a directory";
  return std::nullopt;
}

vsfs::Result<std::unique_ptr<vsfs::device::Device>> open_device(const std::string& path,
                                                                 const vsfs::mount::Config& c) {
  vsfs::device::UringOptions uo;  // for an RBD image too (device/open.h)
  uo.queue_depth = c.device.queue_depth;
  uo.exclusive = true;
  uo.read_only = c.read_only;
  uo.try_direct = c.device.direct;
  // A daemon that is still closing this datastore (just unmounted) is waited for.
  auto dev = vsfs::mount::open_after_closing_daemons(
      path, uo, std::chrono::seconds(60),
      [](const std::string& line) { std::fprintf(stderr, "%s: %s\n", kProg, line.c_str()); });
  if (!dev.ok()) {
    const vsfs::Error& e = dev.error();
    if (vsfs::device::is_rbd_name(path) && e.kind == vsfs::ErrorKind::kBusy) {
      return vsfs::make_error(EBUSY, vsfs::ErrorKind::kBusy,
                              "datastore is already mounted ({})",
                              vsfs::mount::in_use_text(path, e));
    }
    if (e.kind == vsfs::ErrorKind::kBusy || e.errno_value == EBUSY ||
        e.errno_value == EWOULDBLOCK) {
      return vsfs::make_error(EBUSY, vsfs::ErrorKind::kBusy,
                              "{}: datastore is already mounted (the device is in use)", path);
    }
    if (e.errno_value == EROFS && !c.read_only) {
      return vsfs::make_error(EROFS, e.kind, "{}; mount it read-only (-o ro)", e.message);
    }
    return vsfs::make_error(e.errno_value, e.kind, "{}: {}", path, e.message);
  }
  if (c.read_only) return dev;
  // One writer, whatever the path to the bytes (another name, a loop device, another
  // host on a shared LUN): the datastore's lease.
  auto leased = vsfs::mount::take_lease(std::move(dev).value(), c.lease.time_ms,
                                        [](const std::string& line) {
                                          std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
                                        });
  if (!leased.ok()) {
    const vsfs::Error& e = leased.error();
    return vsfs::make_error(e.errno_value, e.kind, "{}: {}", path, e.message);
  }
  return leased;
}

std::string datastore_error_line(const std::string& path, const vsfs::Error& e) {
  switch (e.kind) {
    case vsfs::ErrorKind::kCorruption:
      return path + ": not a vsfs datastore, or damaged (" + e.message +
             "); see vsfs-fsck(8)";
    case vsfs::ErrorKind::kUnsupported:
      return path + ": unsupported datastore feature (" + e.message + ")";
    case vsfs::ErrorKind::kBusy:
      return path + ": datastore is already mounted (" + e.message + ")";
    default:
      return path + ": cannot open datastore: " + e.message;
  }
}

// Opens the datastore. The device lock proves that no live process on this host owns
// it; a mounted mark without a lock holder is the trace of a daemon that stopped
// without unmounting (crash, power loss): the journal replay recovers, so reopen with
// force and say so.
// `*device` is set to the device the datastore owns (it lives as long as the datastore).
vsfs::Result<std::unique_ptr<vsfs::Datastore>> open_datastore(const std::string& path,
                                                             const vsfs::mount::Config& c,
                                                             vsfs::device::Device** device) {
  vsfs::OpenOptions oo;
  oo.read_only = c.read_only;
  oo.commit_interval_ms = c.journal.commit_interval_ms;
  oo.meta_cache_bytes = c.journal.meta_cache_mib << 20;
  oo.format_rate_mib_s = c.format.rate_mib_s;
  oo.cbt_history = c.cbt.history;
  oo.cbt_text_cache_bytes = uint64_t{c.cbt.text_cache_mib} << 20;
  oo.snapshot_policy.takers = c.snapshots.takers == "root"      ? vsfs::SnapshotTakers::kRoot
                              : c.snapshots.takers == "writers" ? vsfs::SnapshotTakers::kWriters
                                                                : vsfs::SnapshotTakers::kOwner;
  oo.snapshot_policy.max_per_directory = c.snapshots.max_per_directory;
  oo.snapshot_policy.max_per_user = c.snapshots.max_per_user;
  oo.snapshot_policy.max_held_bytes_per_user = c.snapshots.max_held_mib_per_user << 20;
  oo.mark_mounted = !c.read_only;
  oo.force = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    VSFS_ASSIGN_OR_RETURN(auto dev, open_device(path, c));
    *device = dev.get();
    auto ds = vsfs::Datastore::open(std::move(dev), oo);
    if (ds.ok()) return ds;
    if (ds.error().kind == vsfs::ErrorKind::kBusy && !oo.force) {
      VSFS_LOG_WARN("{}: datastore was not unmounted cleanly (mounted mark set, no live "
                    "owner); recovering",
                    path);
      oo.force = true;
      continue;
    }
    return vsfs::Error{ds.error().errno_value, ds.error().kind,
                       datastore_error_line(path, ds.error())};
  }
  return vsfs::make_error(EBUSY, vsfs::ErrorKind::kBusy, "{}: datastore is already mounted",
                          path);
}

void detach_stdio() {
  vsfs::log_to_stderr(false);  // syslog (and the log file) from here on
  int fd = ::open("/dev/null", O_RDWR);
  if (fd < 0) return;
  ::dup2(fd, 0);
  ::dup2(fd, 1);
  ::dup2(fd, 2);
  if (fd > 2) ::close(fd);
}

vsfs::fuse::SessionOptions session_options(const Args& a, const vsfs::mount::Config& c) {
  vsfs::fuse::SessionOptions so;
  so.fsname = a.device;
  so.fuse_options = c.fuse_options;
  so.read_only = c.read_only;
  return so;
}

// The utab entry goes with the mount, unless another vsfs mount took the directory
// since (its own entry).
void drop_umount_record(const std::string& dir) {
  const auto now = vsfs::mount::mount_at(dir);
  if (now && now->fstype == "fuse.vsfs") return;
  vsfs::mount::forget_umount_helper(dir);
}

// Opens, mounts, serves. Returns the exit status.
int serve(const Args& a, const vsfs::mount::Config& c, Reporter& rep) {
  vsfs::device::Device* device = nullptr;
  auto ds = open_datastore(a.device, c, &device);
  if (!ds.ok()) {
    rep.fail(ds.error().message);
    return 1;
  }
  vsfs::fuse::FsOptions fo;
  fo.attr_timeout_s = c.fuse.attr_timeout_s;
  fo.entry_timeout_s = c.fuse.entry_timeout_s;
  fo.max_background = c.fuse.max_background;
  fo.max_write_bytes = c.fuse.max_write_kib * 1024;
  fo.read_only = c.read_only;
  const char* no_parallel = std::getenv("VSFS_NO_PARALLEL_DIRECT_WRITES");
  fo.parallel_direct_writes = !(no_parallel != nullptr && std::strcmp(no_parallel, "1") == 0);
  fo.coalesce.enabled = c.coalesce.enabled;
  fo.coalesce.max_inflight = c.coalesce.max_inflight;
  fo.coalesce.max_held = c.coalesce.max_held;
  fo.coalesce.max_held_bytes = c.coalesce.max_held_bytes;
  fo.coalesce.hold_us_max = c.coalesce.hold_us_max;
  fo.coalesce.max_combined_kib = c.coalesce.max_combined_kib;
  fo.version = VSFS_VERSION;
  fo.device = a.device;
  fo.mounted_at_ns = vsfs::realtime_ns();

  int status = 0;
  {
    vsfs::fuse::FuseFs fs(**ds, fo);
    auto session = vsfs::fuse::Session::create(fs, session_options(a, c));
    if (!session.ok()) {
      rep.fail(session.error().message);
      (void)(*ds)->close();
      return 1;
    }
    auto mount = vsfs::fuse::MountPoint::create(**session, a.dir);
    if (!mount.ok()) {
      rep.fail(a.dir + ": " + mount.error().message);
      session->reset();
      (void)(*ds)->close();
      return 1;
    }
    auto signals = vsfs::fuse::SignalHandlers::create(**session);
    if (!signals.ok()) {
      rep.fail(signals.error().message);
      mount->reset();
      session->reset();
      (void)(*ds)->close();
      return 1;
    }
    // umount(8) then runs umount.vsfs, which waits until this process has closed the
    // datastore.
    vsfs::mount::record_umount_helper(a.device, a.dir);
    VSFS_LOG_INFO("{} mounted at {}", a.device, a.dir);
    rep.ready();
    if (!a.foreground) detach_stdio();

    vsfs::fuse::LoopOptions lo;
    lo.threads = c.fuse.threads;
    lo.io_uring = c.fuse.io_uring;
    lo.uring_depth = c.fuse.uring_depth;
    lo.uring_buffer_bytes = uint64_t{c.fuse.uring_buffer_mib} << 20;
    ServiceNotifier notifier(a.device, a.dir);
    notifier.start();
    auto run = vsfs::fuse::run_device_loop(**session, fs, *device, lo);
    notifier.stopping();
    if (!run.ok()) {
      VSFS_LOG_ERROR("{}", run.error().message);
      status = 1;
    }
    // A signal can end the loop with IO in flight: its replies need the session, so it
    // stays until the last one is sent (a reply after it is gone would use freed
    // memory). Each ends unless the device never answers: the datastore answers every
    // request, if need be with an error.
    for (int i = 1; fs.requests().in_flight() > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (i % 500 == 0) {
        VSFS_LOG_WARN("{}: waiting for {} requests in flight before unmounting", a.device,
                      fs.requests().in_flight());
      }
    }
    // Reverse order: signal handlers, the mount, the session.
    signals->reset();
    mount->reset();
    drop_umount_record(a.dir);
    notifier.join();
    session->reset();
  }
  auto closed = (*ds)->close();
  if (!closed.ok()) {
    VSFS_LOG_ERROR("{}: closing the datastore failed: {}", a.device, closed.error().message);
    status = 1;
  } else {
    VSFS_LOG_INFO("{} unmounted cleanly", a.device);
  }
  return status;
}

// -o remount: applies ro or rw to the daemon serving DIR (mount(8) runs
// "mount.vsfs DEVICE DIR -o remount,ro,..." for "mount -o remount,ro DIR"). Of the
// other options only the kernel's mount flags (nosuid, noatime, ...) apply; the
// configuration of a running daemon does not change. Returns the exit status.
int remount_main(const Args& a) {
  std::vector<std::string> tokens;
  for (const std::string& o : a.options) {
    size_t start = 0;
    while (start <= o.size()) {
      const size_t comma = std::min(o.find(',', start), o.size());
      if (comma > start) tokens.push_back(o.substr(start, comma - start));
      start = comma + 1;
    }
  }
  std::optional<bool> read_only;
  for (const std::string& t : tokens) {
    if (t == "ro") read_only = true;
    if (t == "rw") read_only = false;
  }
  if (!read_only) {
    std::fprintf(stderr, "%s: -o remount needs ro or rw\n", kProg);
    return 2;
  }
  const auto m = vsfs::mount::mount_at(a.dir);
  if (m && m->fstype == "fuse.vsfs" && vsfs::mount::real_path(a.device) != m->source) {
    std::fprintf(stderr, "%s: %s is mounted from %s, not %s\n", kProg, a.dir.c_str(),
                 m->source.c_str(), a.device.c_str());
    return 1;
  }
  auto r = vsfs::mount::remount(a.dir, *read_only, tokens, [](const std::string& line) {
    std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
  });
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", kProg, r.error().message.c_str());
    return 1;
  }
  return 0;
}

// Returns the exit status of the parent: 0 when the child said "ok".
int wait_for_child(int fd) {
  std::string got;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (got == "ok\n") return 0;
  if (got.empty()) {
    std::fprintf(stderr, "%s: the daemon stopped during start-up\n", kProg);
  } else {
    std::fputs(got.c_str(), stderr);
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Data buffers of 1 MiB come and go with the load, beyond what the pools keep.
  // glibc raises its mmap threshold once the first such buffer is freed, and from then
  // on they come from the heap and stay there as fragments: a 1 MiB write stream at
  // depth 32 on a 64 GiB datastore peaked at 443-448 MB RSS, and at 291-293 MB with
  // this fixed threshold (same throughput). Buffers this large are then mapped, and
  // returned to the system when freed.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {nullptr, 0, nullptr, 0}};
  Args a;
  int ch;
  opterr = 0;
  // GNU getopt permutes: options may also follow DEVICE DIR (mount(8) style); "--" ends
  // the options.
  while ((ch = getopt_long(argc, argv, "fo:c:hV", kLong, nullptr)) != -1) {
    switch (ch) {
      case 'f': a.foreground = true; break;
      case 'o': a.options.emplace_back(optarg); break;
      case 'c': a.config_path = optarg; break;
      case 'h': print_usage(stdout); return 0;
      case 'V': std::printf("%s %s\n", kProg, kVersion); return 0;
      default:
        if (optopt != 0 && std::strchr("oc", optopt) != nullptr) {
          std::fprintf(stderr, "%s: -%c needs a value\n", kProg, optopt);
        } else {
          std::fprintf(stderr, "%s: %s: unknown option\n", kProg, argv[optind - 1]);
        }
        print_usage(stderr);
        return 2;
    }
  }
  std::vector<std::string> pos(argv + optind, argv + argc);
  if (pos.size() != 2) {
    print_usage(stderr);
    return 2;
  }
  a.device = pos[0];
  a.dir = pos[1];
  for (const std::string& o : a.options) {
    if (("," + o + ",").find(",remount,") != std::string::npos) return remount_main(a);
  }

  vsfs::fuse::capture_fuse_messages();

  // Configuration: file (given, or the default when present), then -o in order.
  vsfs::mount::Config config;
  std::string path = a.config_path.value_or(vsfs::mount::kDefaultConfigPath);
  if (a.config_path || ::access(path.c_str(), F_OK) == 0) {
    auto loaded = vsfs::mount::load_config_file(path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s: %s\n", kProg, loaded.error().message.c_str());
      return 1;
    }
    config = std::move(*loaded);
  }
  for (const std::string& o : a.options) {
    auto r = vsfs::mount::apply_mount_options(config, o);
    if (!r.ok()) {
      std::fprintf(stderr, "%s: %s\n", kProg, r.error().message.c_str());
      return 1;
    }
  }

  if (auto bad = preflight(a)) {
    std::fprintf(stderr, "%s: %s\n", kProg, bad->c_str());
    return 1;
  }
  a.device = vsfs::mount::real_path(a.device);
  a.dir = vsfs::mount::real_path(a.dir);
  if (auto r = vsfs::fuse::Session::validate(session_options(a, config)); !r.ok()) {
    std::fprintf(stderr, "%s: %s\n", kProg, r.error().message.c_str());
    return 1;
  }
  // The log: every line names the datastore; to a file as well when asked; detached, to
  // syslog (below, in the child) instead of the terminal.
  vsfs::set_log_level(*vsfs::log_level_from_name(config.log.level));
  vsfs::set_log_ident(kProg);
  vsfs::set_log_subject(a.device);
  if (!config.log.file.empty()) {
    if (auto r = vsfs::log_to_file(config.log.file); !r.ok()) {
      std::fprintf(stderr, "%s: %s\n", kProg, r.error().message.c_str());
      return 1;
    }
  }

  if (a.foreground) {
    Reporter rep(-1);
    return serve(a, config, rep);
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "%s: pipe: %s\n", kProg, std::strerror(errno));
    return 1;
  }
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "%s: fork: %s\n", kProg, std::strerror(errno));
    return 1;
  }
  if (pid > 0) {
    ::close(fds[1]);
    return wait_for_child(fds[0]);
  }
  ::close(fds[0]);
  // Until it detaches, what it logs also reaches the terminal.
  vsfs::log_to_syslog(kProg);
  ::setsid();
  if (::chdir("/") != 0) {
    // Paths are absolute already; staying in the old directory only pins it.
  }
  Reporter rep(fds[1]);
  return serve(a, config, rep);
}
