// umount.vsfs: the umount(8) helper for vsfs. vsfs-mount records "helper=vsfs" for its
// mount in util-linux's utab, so umount(8) runs
//     umount.vsfs DIR [-nlfvr] [-t TYPE]
// which unmounts DIR and then waits until the vsfs-mount daemon serving it has
// committed and closed the datastore and released its device (at most 60 s), so that
// vsfs-fsck, vsfs-mkfs or a new mount right after umount find the datastore clean and
// free. -l (lazy) does not wait: the daemon ends when the last user of the mount goes.
// -f forces the unmount; -r remounts read-only when the unmount fails because the mount
// is busy; -n leaves utab alone; -v says what it does.
// Exit status: 0 done; 1 usage; 32 the unmount failed, or the daemon did not release
// the device in time (the mount is gone then).
#include <getopt.h>
#include <sys/mount.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mount/mounted.h"

namespace {

constexpr const char* kProg = "umount.vsfs";
constexpr auto kWait = std::chrono::seconds(60);

void usage(FILE* out) {
  std::fprintf(out,
               "usage: %s DIR [-nlfvr] [-t TYPE]\n"
               "Unmounts the vsfs datastore at DIR for umount(8) and waits until its daemon\n"
               "has closed the datastore; see vsfs-mount(8).\n",
               kProg);
}

struct Args {
  std::string dir;
  bool no_utab = false, lazy = false, force = false, verbose = false, read_only = false;
};

// Waits until none of `pids` still holds `device`; false after kWait.
bool wait_for_release(const std::string& device, const std::vector<pid_t>& pids, bool verbose) {
  const auto start = std::chrono::steady_clock::now();
  bool told = false;
  for (;;) {
    const std::vector<pid_t> now = vsfs::mount::daemons_holding(device);
    pid_t still = 0;
    for (pid_t p : pids) {
      if (std::find(now.begin(), now.end(), p) != now.end()) still = p;
    }
    if (still == 0) return true;
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= kWait) {
      std::fprintf(stderr,
                   "%s: unmounted, but vsfs-mount (pid %d) still holds %s after %lld s; "
                   "see its log\n",
                   kProg, static_cast<int>(still), device.c_str(),
                   static_cast<long long>(kWait.count()));
      return false;
    }
    if (!told && (verbose || waited >= std::chrono::seconds(2))) {
      std::fprintf(stderr, "%s: waiting for vsfs-mount (pid %d) to commit and close %s\n",
                   kProg, static_cast<int>(still), device.c_str());
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int run(const Args& a) {
  const auto m = vsfs::mount::mount_at(a.dir);
  if (!m) {
    std::fprintf(stderr, "%s: %s: not mounted\n", kProg, a.dir.c_str());
    return 32;
  }
  // Another filesystem mounted where a killed vsfs-mount left its utab entry: unmounted
  // as umount(8) would, without waiting for anyone.
  const bool vsfs = m->fstype == "fuse.vsfs";
  const std::vector<pid_t> daemons =
      vsfs ? vsfs::mount::daemons_holding(m->source) : std::vector<pid_t>{};
  const int flags = (a.lazy ? MNT_DETACH : 0) | (a.force ? MNT_FORCE : 0);
  if (::umount2(m->target.c_str(), flags) != 0) {
    const int err = errno;
    if (err == EBUSY && a.read_only && vsfs) {
      auto r = vsfs::mount::remount(m->target, true, {}, [](const std::string& line) {
        std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
      });
      if (r.ok()) {
        std::fprintf(stderr, "%s: %s is busy; remounted read-only\n", kProg, a.dir.c_str());
        return 0;
      }
      std::fprintf(stderr, "%s: %s\n", kProg, r.error().message.c_str());
      return 32;
    }
    std::fprintf(stderr, "%s: %s: %s\n", kProg, a.dir.c_str(),
                 err == EBUSY ? "target is busy" : std::strerror(err));
    return 32;
  }
  if (a.verbose) std::fprintf(stderr, "%s: %s unmounted\n", kProg, m->target.c_str());
  if (!a.no_utab) vsfs::mount::forget_umount_helper(m->target);
  if (a.lazy || !vsfs) return 0;
  return wait_for_release(m->source, daemons, a.verbose) ? 0 : 32;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0)) {
    usage(stdout);
    return 0;
  }
  Args a;
  std::vector<std::string> pos;
  opterr = 0;
  int ch;
  while ((ch = getopt(argc, argv, "-nlfvrt:N:")) != -1) {
    switch (ch) {
      case 1: pos.emplace_back(optarg); break;
      case 'n': a.no_utab = true; break;
      case 'l': a.lazy = true; break;
      case 'f': a.force = true; break;
      case 'v': a.verbose = true; break;
      case 'r': a.read_only = true; break;
      case 't': break;  // the type: vsfs's, or umount(8) would not have run this
      case 'N':
        std::fprintf(stderr, "%s: -N (mount namespaces) is not supported\n", kProg);
        return 1;
      default:
        std::fprintf(stderr, "%s: unknown option -%c\n", kProg, optopt);
        usage(stderr);
        return 1;
    }
  }
  if (pos.size() != 1) {
    usage(stderr);
    return 1;
  }
  a.dir = pos[0];
  return run(a);
}
