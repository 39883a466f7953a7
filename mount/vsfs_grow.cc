// vsfs-grow: grows a datastore onto space its device gained (vsfs-grow(8)).
//
// On a mount point: asks the daemon (VSFS_IOC_GROW on the mount's root), which grows
// the datastore while it serves; df shows the new size once this returns. On a device
// that is not mounted: opens the datastore (replaying its journal), grows it and closes
// it cleanly. Exit status: 0 grown (or nothing to do), 1 refused or failed.
// Threading: main thread only.
#include <fcntl.h>
#include <getopt.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "device/open.h"
#include "meta/meta_store.h"
#include "mount/leased.h"
#include "mount/mounted.h"
#include "mount/progress.h"
#include "mount/size_arg.h"
#include "util/human.h"
#include "util/log.h"
#include "vsfs/control.h"
#include "vsfs/datastore.h"

#ifndef VSFS_VERSION
#define VSFS_VERSION "0.1.0"
#endif

namespace {

constexpr const char* kProg = "vsfs-grow";

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [-q] [-C FD] DEVICE|MOUNTPOINT [SIZE]\n"
               "       %s --help | --version\n"
               "Grows the vsfs datastore on DEVICE, or mounted at MOUNTPOINT, to SIZE\n"
               "(default: all of the device) after the file, LV or LUN under it grew.\n"
               "SIZE takes the units K, M, G, T (powers of 1024). Shrinking is refused.\n"
               "\n"
               "  -q           no summary line\n"
               "  -C FD        progress of an offline growth: lines \"1 DONE TOTAL DEVICE\"\n"
               "               on descriptor FD, or with FD 0 a bar on standard error\n"
               "  -h, --help   this text\n"
               "  -V, --version\n"
               "Exit status: 0 grown (or already the device's size), 1 refused or failed.\n"
               "See vsfs-grow(8).\n",
               kProg, kProg);
}

int fail(const std::string& line) {
  std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
  return 1;
}

int report(bool quiet, const std::string& what, uint64_t old_bytes, uint64_t new_bytes,
           uint64_t table_bytes, bool formatted) {
  if (quiet) return 0;
  if (old_bytes == new_bytes) {
    std::printf("%s: %s is %s already, all of its device: nothing to do\n", kProg,
                what.c_str(), vsfs::human_bytes(new_bytes).c_str());
    return 0;
  }
  std::printf("%s: %s grown from %s to %s (%s of it for its tables)%s\n", kProg, what.c_str(),
              vsfs::human_bytes(old_bytes).c_str(), vsfs::human_bytes(new_bytes).c_str(),
              vsfs::human_bytes(table_bytes).c_str(),
              formatted ? "" : "; the new space is formatted in the background");
  return 0;
}

int grow_mounted(const std::string& dir, uint64_t size, bool quiet) {
  const auto m = vsfs::mount::mount_at(dir);
  if (!m || m->fstype != "fuse.vsfs") return fail(dir + ": not a vsfs mount point");
  const int fd = ::open(m->target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("{}: {}", dir, std::strerror(errno)));
  vsfs_grow_arg arg{};
  arg.size_bytes = size;
  const int rc = ::ioctl(fd, VSFS_IOC_GROW, &arg);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    if (err == EPERM) return fail("only root may grow a datastore");
    if (err == ENOTTY) return fail(dir + ": its daemon cannot grow a datastore (an older vsfs-mount?)");
    return fail(fmt::format("{}: {}", dir, std::strerror(err)));
  }
  if (arg.error != 0) {
    arg.message[sizeof(arg.message) - 1] = '\0';
    return fail(fmt::format("{}: {}", dir, arg.message[0] ? arg.message : std::strerror(arg.error)));
  }
  return report(quiet, fmt::format("the datastore mounted at {}", m->target), arg.old_bytes,
                arg.size_bytes, arg.table_bytes, arg.formatted != 0);
}

int grow_device(const std::string& path, uint64_t size, bool quiet, int progress_fd) {
  if (auto m = vsfs::mount::mount_from(path); m && m->fstype == "fuse.vsfs") {
    return fail(fmt::format("{} is mounted at {}: run {} {}", path, m->target, kProg, m->target));
  }
  auto dev = vsfs::device::open_device(path, vsfs::device::UringOptions{});
  if (!dev.ok()) {
    const auto& e = dev.error();
    if (e.kind == vsfs::ErrorKind::kBusy) {
      if (vsfs::device::is_rbd_name(path)) {
        return fail(vsfs::mount::in_use_text(path, e) + " (mounted? then run vsfs-grow on its mount point)");
      }
      return fail(path + " is in use (mounted? then run vsfs-grow on its mount point)");
    }
    return fail(fmt::format("{}: {}", path, e.message));
  }
  // What can be refused is refused before anything is written (opening the datastore
  // writes its superblock).
  auto sb = vsfs::meta::read_superblock(**dev);
  if (!sb.ok()) return fail(fmt::format("{}: not a vsfs datastore, or damaged ({})", path, sb.error().message));
  auto planned = vsfs::format::plan_growth(*sb, (*dev)->size_bytes(), size);
  if (!planned.ok()) return fail(fmt::format("{}: {}", path, planned.error().message));
  if (!*planned) return report(quiet, path, sb->device_bytes, sb->device_bytes, 0, true);
  // It writes: the lease first, as a mount takes it.
  auto leased = vsfs::mount::take_lease(std::move(dev).value(), vsfs::mount::kDefaultLeaseMs,
                                        [](const std::string& line) {
                                          std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
                                        });
  if (!leased.ok()) return fail(fmt::format("{}: {}", path, leased.error().message));
  vsfs::OpenOptions o;
  o.start_background = false;  // nothing to serve: open, grow, close
  auto ds = vsfs::Datastore::open(std::move(leased).value(), o);
  if (!ds.ok()) return fail(fmt::format("{}: {}", path, ds.error().message));
  std::function<void(const vsfs::Progress&)> progress;
  if (progress_fd >= 0) progress = vsfs::programs::ProgressOut(progress_fd, path, kProg, "step");
  auto grown = (*ds)->grow(size, progress);
  auto closed = (*ds)->close();
  if (!grown.ok()) return fail(fmt::format("{}: {}", path, grown.error().message));
  if (!closed.ok()) return fail(fmt::format("{}: {}", path, closed.error().message));
  return report(quiet, path, grown->old_bytes, grown->new_bytes, grown->table_bytes,
                grown->formatted);
}

}  // namespace

int main(int argc, char** argv) {
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {nullptr, 0, nullptr, 0}};
  bool quiet = false;
  int progress_fd = -1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "qhVC:", kLong, nullptr)) != -1) {
    switch (c) {
      case 'q': quiet = true; break;
      case 'C': {
        char* end = nullptr;
        const long fd = std::strtol(optarg, &end, 10);
        if (*optarg == '\0' || *end != '\0' || fd < 0 || fd > 1 << 20) {
          return fail(fmt::format("-C {}: expected a file descriptor number", optarg));
        }
        progress_fd = static_cast<int>(fd);
        break;
      }
      case 'h': print_usage(stdout); return 0;
      case 'V': std::printf("%s %s\n", kProg, VSFS_VERSION); return 0;
      default:
        if (optopt == 'C') return fail("-C needs a file descriptor number");
        if (optopt != 0) return fail(fmt::format("unknown option -{}; see --help", static_cast<char>(optopt)));
        return fail(fmt::format("unknown option {}; see --help", argv[optind - 1]));
    }
  }
  if (optind == argc) return fail("no DEVICE or MOUNTPOINT given; see --help");
  if (argc - optind > 2) return fail("too many arguments; see --help");
  const std::string target = argv[optind];
  uint64_t size = 0;
  if (optind + 1 < argc) {
    auto v = vsfs::programs::parse_size(argv[optind + 1]);
    if (!v || *v == 0) return fail(fmt::format("{}: not a size (examples: 200G, 2T)", argv[optind + 1]));
    size = *v;
  }
  vsfs::set_log_level(vsfs::LogLevel::kWarn);
  if (vsfs::device::is_rbd_name(target)) return grow_device(target, size, quiet, progress_fd);
  struct stat st {};
  if (::stat(target.c_str(), &st) != 0) return fail(fmt::format("{}: {}", target, std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) return grow_mounted(target, size, quiet);
  return grow_device(target, size, quiet, progress_fd);
}
