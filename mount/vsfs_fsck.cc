// vsfs-fsck: checks, and with -y repairs, a vsfs datastore (vsfs-fsck(8)).
//
// Opens the device exclusively (a mounted datastore is refused as in use), read-only
// unless -y, runs vsfs::fsck() and prints every problem and repair on standard output,
// then a summary line. Exit status: 0 clean, 1 problems found and all repaired, 4
// problems left, 8 could not run (usage, device missing or in use, not a datastore,
// both superblocks damaged, IO error).
// Threading: main thread only; the device's completion thread belongs to the library.
#include <getopt.h>
#include <unistd.h>

#include <chrono>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "device/open.h"
#include "meta/lease.h"
#include "mount/closing_daemon.h"
#include "mount/leased.h"
#include "mount/progress.h"
#include "util/log.h"
#include "vsfs/datastore.h"

#ifndef VSFS_VERSION
#define VSFS_VERSION "0.1.0"
#endif

namespace {

constexpr const char* kProg = "vsfs-fsck";
// How long to wait for a daemon that is still closing the datastore (closing_daemon.h).
constexpr std::chrono::seconds kCloseWait{60};
constexpr int kExitClean = 0, kExitRepaired = 1, kExitProblems = 4, kExitCannotRun = 8;

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [-n|-y|-a|-p] [-f] [-q] [-C FD] DEVICE\n"
               "       %s --help | --version\n"
               "Checks the vsfs datastore on DEVICE, which must not be mounted.\n"
               "\n"
               "  -n           check only; never write to DEVICE (the default)\n"
               "  -y           repair what can be repaired safely\n"
               "  -a, -p       the same as -y (what fsck(8) passes to fsck.vsfs at boot)\n"
               "  -f           read every formatted free block (they must read as zeros),\n"
               "               the whole block table and refcount table (default: a sample\n"
               "               of at most 1024 free blocks and the tables' parts in use)\n"
               "  -q           print problems and repairs only, no notes or summary\n"
               "  -C FD        progress: lines \"PASS DONE TOTAL DEVICE\" on descriptor FD,\n"
               "               or with FD 0 a progress bar on standard error (a terminal)\n"
               "  -h, --help   this text\n"
               "  -V, --version\n"
               "Exit status: 0 clean, 1 repaired, 4 problems left, 8 could not run.\n"
               "See vsfs-fsck(8).\n",
               kProg, kProg);
}

void say(const std::string& line) { std::fprintf(stderr, "%s: %s\n", kProg, line.c_str()); }

int cannot_run(const std::string& line) {
  std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
  return kExitCannotRun;
}

}  // namespace

int main(int argc, char** argv) {
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {nullptr, 0, nullptr, 0}};
  bool check_only = false, repair = false, quiet = false;
  vsfs::FsckOptions options;
  opterr = 0;
  int c;
  int progress_fd = -1;
  while ((c = getopt_long(argc, argv, "nyapfqhVC:", kLong, nullptr)) != -1) {
    switch (c) {
      case 'n': check_only = true; break;
      case 'y':
      case 'a':  // fsck(8): automatic repair; vsfs-fsck -y never asks
      case 'p': repair = true; break;
      case 'f': options.full_zero_check = true; break;
      case 'q': quiet = true; break;
      case 'C': {
        char* end = nullptr;
        const long fd = std::strtol(optarg, &end, 10);
        if (*optarg == '\0' || *end != '\0' || fd < 0 || fd > 1 << 20) {
          return cannot_run(fmt::format("-C {}: expected a file descriptor number", optarg));
        }
        progress_fd = static_cast<int>(fd);
        break;
      }
      case 'h': print_usage(stdout); return 0;
      case 'V': std::printf("%s %s\n", kProg, VSFS_VERSION); return 0;
      default:
        if (optopt == 'C') return cannot_run("-C needs a file descriptor number");
        if (optopt != 0) {
          return cannot_run(fmt::format("unknown option -{}; see --help", static_cast<char>(optopt)));
        }
        return cannot_run(fmt::format("unknown option {}; see --help", argv[optind - 1]));
    }
  }
  if (check_only && repair) return cannot_run("-n and -y exclude each other");
  if (optind + 1 != argc) {
    return cannot_run(optind == argc ? "no DEVICE given; see --help" : "too many arguments; see --help");
  }
  const std::string path = argv[optind];
  options.repair = repair;
  if (progress_fd >= 0) options.progress = vsfs::programs::ProgressOut(progress_fd, path, kProg, "pass");
  // Notes from the checker (journal, orphans) come through the log at info level.
  vsfs::set_log_level(quiet ? vsfs::LogLevel::kWarn : vsfs::LogLevel::kInfo);

  vsfs::device::UringOptions uo;
  uo.read_only = !repair;
  auto dev = vsfs::mount::open_after_closing_daemons(
      path, uo, kCloseWait, [](const std::string& line) { say(line); });
  if (!dev.ok()) {
    const auto& e = dev.error();
    if (e.kind == vsfs::ErrorKind::kBusy) {
      if (vsfs::device::is_rbd_name(path)) return cannot_run(vsfs::mount::in_use_text(path, e));
      return cannot_run(path + " is in use (mounted?)");
    }
    if (e.kind == vsfs::ErrorKind::kNotFound) return cannot_run(path + ": no such file or device");
    if (e.errno_value == EROFS && repair) return cannot_run(e.message + "; check it without repairs (-n)");
    return cannot_run(path + ": " + e.message);
  }
  // A repair writes: it takes the datastore's lease, and refuses while anyone renews it
  // (through another path, or another host). A check only reads: it says who holds it.
  std::unique_ptr<vsfs::device::Device> device = std::move(dev).value();
  if (repair) {
    auto leased = vsfs::mount::take_lease(std::move(device), vsfs::mount::kDefaultLeaseMs,
                                          [](const std::string& line) { say(line); });
    if (!leased.ok()) return cannot_run(path + ": " + leased.error().message + "; nothing was written");
    device = std::move(leased).value();
  } else if (auto lease = vsfs::meta::read_lease(*device); !lease.ok()) {
    say("the datastore's lease record does not decode (" + lease.error().message + ")");
  } else if (lease->state == vsfs::format::LeaseState::kHeld) {
    say("the datastore's lease is held by " + vsfs::meta::lease_holder_text(*lease) +
        " (not released: mounted there, or stopped without unmounting); if it still writes "
        "the datastore, this check sees it changing");
  }
  auto result = vsfs::fsck(*device, options);
  if (!result.ok()) return cannot_run(path + ": " + result.error().message);
  const vsfs::FsckReport& r = *result;

  for (const auto& line : r.problems) std::printf("problem: %s\n", line.c_str());
  for (const auto& line : r.repairs) std::printf("repaired: %s\n", line.c_str());
  const int status = !r.problems.empty()  ? kExitProblems
                     : !r.repairs.empty() ? kExitRepaired
                                          : kExitClean;
  if (!quiet) {
    std::string verdict;
    if (status == kExitClean) {
      verdict = "clean";
    } else if (status == kExitRepaired) {
      verdict = fmt::format("{} repair{} made, now clean", r.repairs.size(),
                            r.repairs.size() == 1 ? "" : "s");
    } else {
      verdict = fmt::format("{} problem{} left{}", r.problems.size(),
                            r.problems.size() == 1 ? "" : "s",
                            repair ? "" : " (run with -y to repair what can be repaired)");
    }
    std::printf("%s: %llu inodes (%llu files, %llu directories), %llu tree nodes, %llu data "
                "grains%s: %s\n",
                path.c_str(), static_cast<unsigned long long>(r.inodes),
                static_cast<unsigned long long>(r.files), static_cast<unsigned long long>(r.dirs),
                static_cast<unsigned long long>(r.tree_nodes),
                static_cast<unsigned long long>(r.data_grains),
                r.replayed_journal ? (repair ? ", journal replayed" : ", journal checked as replayed")
                                   : "",
                verdict.c_str());
  }
  return status;
}
