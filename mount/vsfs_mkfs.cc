// vsfs-mkfs: makes a new, empty vsfs datastore on a block device or a file (vsfs-mkfs(8)).
//
// Every refusal happens before the first byte is written: a device that is missing
// (without -s), in use (the io_uring backend opens it exclusively: flock on a file,
// O_EXCL on a block device), too small, or holding a vsfs datastore or anything libblkid
// recognises (a filesystem, a RAID or LVM member, an encrypted volume, swap, a partition
// table, also signatures at the end of the device) unless -f. Only then is a file created or grown (-s) and the datastore
// written. Errors are one line on stderr prefixed with the program name.
// Threading: main thread only; the device's completion thread belongs to the library.
#include <blkid/blkid.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "device/open.h"
#include "mount/closing_daemon.h"
#include "meta/lease.h"
#include "mount/leased.h"
#include "mount/progress.h"
#include "mount/size_arg.h"
#include "format/format.h"
#include "meta/meta_store.h"
#include "util/aligned_buffer.h"
#include "util/human.h"
#include "util/units.h"
#include "vsfs/datastore.h"

#ifndef VSFS_VERSION
#define VSFS_VERSION "0.1.0"
#endif

namespace {

constexpr const char* kProg = "vsfs-mkfs";

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: %s [-s SIZE] [-f] [-J JOURNAL_SIZE] [-C FD] DEVICE\n"
               "       %s --help | --version\n"
               "Makes a new, empty vsfs datastore on DEVICE (a block device or a file).\n"
               "\n"
               "  -s SIZE          size of the datastore (K, M, G, T suffixes, 1024-based);\n"
               "                   creates DEVICE as a sparse file when it is missing and\n"
               "                   grows a smaller file\n"
               "  -f               overwrite a datastore or filesystem already on DEVICE\n"
               "  -J JOURNAL_SIZE  journal size (default: 1/256 of the device, 8 MiB..1 GiB)\n"
               "  -C FD            progress: lines \"STEP DONE TOTAL DEVICE\" (bytes) on\n"
               "                   descriptor FD, or with FD 0 a progress bar on standard\n"
               "                   error (a terminal)\n"
               "  -h, --help       this text\n"
               "  -V, --version\n"
               "See vsfs-mkfs(8).\n",
               kProg, kProg);
}

int fail(const std::string& line) {
  std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
  return 1;
}

struct Args {
  std::optional<uint64_t> size_bytes;
  uint64_t journal_bytes = 0;
  bool force = false;
  int progress_fd = -1;
  std::string device;
};

// 0 to go on, else the exit status.
int parse_args(int argc, char** argv, Args& args, bool& done) {
  static const option kLong[] = {{"help", no_argument, nullptr, 'h'},
                                 {"version", no_argument, nullptr, 'V'},
                                 {"size", required_argument, nullptr, 's'},
                                 {"force", no_argument, nullptr, 'f'},
                                 {"journal-size", required_argument, nullptr, 'J'},
                                 {"progress", required_argument, nullptr, 'C'},
                                 {nullptr, 0, nullptr, 0}};
  done = false;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":s:fJ:C:hV", kLong, nullptr)) != -1) {
    switch (c) {
      case 's': {
        auto v = vsfs::programs::parse_size(optarg);
        if (!v) return fail(fmt::format("invalid size '{}' (examples: 1G, 512M, 2T)", optarg)) + 1;
        args.size_bytes = *v;
        break;
      }
      case 'J': {
        auto v = vsfs::programs::parse_size(optarg);
        if (!v || *v == 0) {
          return fail(fmt::format("invalid journal size '{}' (examples: 16M, 1G)", optarg)) + 1;
        }
        args.journal_bytes = *v;
        break;
      }
      case 'f': args.force = true; break;
      case 'C': {
        char* end = nullptr;
        errno = 0;
        const long fd = std::strtol(optarg, &end, 10);
        if (errno != 0 || end == optarg || *end != '\0' || fd < 0 || fd > INT32_MAX) {
          return fail(fmt::format("-C {}: expected a file descriptor number", optarg)) + 1;
        }
        args.progress_fd = static_cast<int>(fd);
        break;
      }
      case 'h':
        print_usage(stdout);
        done = true;
        return 0;
      case 'V':
        std::printf("%s %s\n", kProg, VSFS_VERSION);
        done = true;
        return 0;
      case ':':
        return fail(fmt::format("option -{} needs a value; see --help", static_cast<char>(optopt))) + 1;
      default:
        if (optopt != 0) {
          return fail(fmt::format("unknown option -{}; see --help", static_cast<char>(optopt))) + 1;
        }
        return fail(fmt::format("unknown option {}; see --help", argv[optind - 1])) + 1;
    }
  }
  if (optind + 1 != argc) {
    return fail(optind == argc ? "no DEVICE given; see --help" : "too many arguments; see --help") + 1;
  }
  args.device = argv[optind];
  return 0;
}

// Makes `pr` look for every signature libblkid knows (filesystems, RAID and LVM members,
// encrypted volumes, swap, partition tables), with what a refusal names and a wipe needs.
void look_for_everything(blkid_probe pr) {
  blkid_probe_enable_superblocks(pr, 1);
  blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE | BLKID_SUBLKS_MAGIC);
  blkid_probe_enable_partitions(pr, 1);
  blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
}

// What libblkid finds on `path` (blkid_do_safeprobe: every signature it knows, at the
// start or at the end of the device), in words for the refusal; empty when nothing.
// Errors: libblkid could not read the device.
vsfs::Result<std::string> probe_signatures(blkid_probe pr) {
  std::unique_ptr<blkid_struct_probe, decltype(&blkid_free_probe)> owner(pr, blkid_free_probe);
  look_for_everything(pr);
  const int rc = blkid_do_safeprobe(pr);
  if (rc == 1) return std::string();
  if (rc == -2) return std::string("several signatures (libblkid cannot tell which is in use)");
  if (rc != 0) return vsfs::make_error(EIO, vsfs::ErrorKind::kIo, "libblkid could not probe it");
  const char* type = nullptr;
  const char* usage = nullptr;
  if (blkid_probe_lookup_value(pr, "TYPE", &type, nullptr) == 0) {
    std::string what = "data";
    if (blkid_probe_lookup_value(pr, "USAGE", &usage, nullptr) == 0) {
      const std::string u = usage;
      if (u == "filesystem") what = "a filesystem";
      if (u == "raid") what = "a RAID or LVM member";
      if (u == "crypto") what = "an encrypted volume";
      if (u == "other") what = "data in use";
    }
    return fmt::format("{} ({})", type, what);
  }
  if (blkid_probe_lookup_value(pr, "PTTYPE", &type, nullptr) == 0) {
    return fmt::format("a {} partition table", type);
  }
  return std::string("a signature libblkid recognises");
}

vsfs::Result<std::string> probe_signatures(const std::string& path) {
  blkid_probe pr = blkid_new_probe_from_filename(path.c_str());
  if (pr == nullptr) {
    return vsfs::make_error(errno, vsfs::ErrorKind::kIo, "libblkid cannot open it: {}",
                            std::strerror(errno));
  }
  return probe_signatures(pr);
}

// The same for a device libblkid cannot open (an RBD image): its first 8 MiB and last
// 1 MiB, where signatures live, copied into a sparse memory file of the device's size.
vsfs::Result<std::string> probe_signatures(vsfs::device::Device& dev) {
  constexpr uint64_t kHead = 8 << 20, kTail = 1 << 20;
  const uint64_t size = dev.size_bytes();
  const int fd = ::memfd_create("vsfs-mkfs-probe", MFD_CLOEXEC);
  if (fd < 0) return vsfs::make_error(errno, vsfs::ErrorKind::kIo, "memfd: {}", std::strerror(errno));
  std::unique_ptr<int, void (*)(int*)> fd_owner(new int(fd), [](int* f) {
    ::close(*f);
    delete f;
  });
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return vsfs::make_error(errno, vsfs::ErrorKind::kIo, "memfd: {}", std::strerror(errno));
  }
  vsfs::AlignedBuffer buf(kHead);
  for (auto [at, len] : {std::pair{uint64_t{0}, std::min(kHead, size)},
                         std::pair{size - std::min(kTail, size), std::min(kTail, size)}}) {
    VSFS_TRY(vsfs::device::read_sync(dev, at, buf.data(), len));
    if (::pwrite(fd, buf.data(), len, static_cast<off_t>(at)) != static_cast<ssize_t>(len)) {
      return vsfs::make_error(EIO, vsfs::ErrorKind::kIo, "memfd: short write");
    }
  }
  blkid_probe pr = blkid_new_probe();
  if (pr == nullptr) return vsfs::make_error(ENOMEM, vsfs::ErrorKind::kIo, "libblkid: no probe");
  if (blkid_probe_set_device(pr, fd, 0, 0) != 0) {
    blkid_free_probe(pr);
    return vsfs::make_error(EIO, vsfs::ErrorKind::kIo, "libblkid cannot probe it");
  }
  return probe_signatures(pr);
}

// Erases every signature libblkid finds on `path`, as wipefs -a does (mkfs -f on a
// former RAID member or LVM volume: a signature left at the end of the device would let
// udev, mdadm or LVM take the datastore for what the device held before). Returns what
// was erased, "TYPE at byte N" each.
vsfs::Result<std::vector<std::string>> erase_signatures(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return vsfs::make_error(errno, vsfs::ErrorKind::kIo, "cannot open it to erase old signatures: {}",
                            std::strerror(errno));
  }
  std::unique_ptr<int, void (*)(int*)> fd_owner(new int(fd), [](int* f) {
    ::close(*f);
    delete f;
  });
  blkid_probe pr = blkid_new_probe();
  if (pr == nullptr) return vsfs::make_error(ENOMEM, vsfs::ErrorKind::kIo, "libblkid: no probe");
  std::unique_ptr<blkid_struct_probe, decltype(&blkid_free_probe)> owner(pr, blkid_free_probe);
  if (blkid_probe_set_device(pr, fd, 0, 0) != 0) {
    return vsfs::make_error(EIO, vsfs::ErrorKind::kIo, "libblkid cannot read it");
  }
  look_for_everything(pr);
  std::vector<std::string> erased;
  // Each wipe steps the probe back, so the next probe finds the next signature; bounded
  // in case a device keeps answering with the same one.
  for (int i = 0; i < 64 && blkid_do_probe(pr) == 0; ++i) {
    const char* type = nullptr;
    const char* offset = nullptr;
    if (blkid_probe_lookup_value(pr, "TYPE", &type, nullptr) == 0) {
      blkid_probe_lookup_value(pr, "SBMAGIC_OFFSET", &offset, nullptr);
    } else if (blkid_probe_lookup_value(pr, "PTTYPE", &type, nullptr) == 0) {
      blkid_probe_lookup_value(pr, "PTMAGIC_OFFSET", &offset, nullptr);
    }
    const std::string what = fmt::format("{} at byte {}", type != nullptr ? type : "signature",
                                         offset != nullptr ? offset : "?");
    if (blkid_do_wipe(pr, 0) != 0) {
      return vsfs::make_error(EIO, vsfs::ErrorKind::kIo, "erasing the {} failed", what);
    }
    erased.push_back(what);
  }
  if (::fsync(fd) != 0) {
    return vsfs::make_error(errno, vsfs::ErrorKind::kIo, "erasing old signatures: {}",
                            std::strerror(errno));
  }
  return erased;
}

std::unique_ptr<vsfs::device::Device> open_or_report(const std::string& path, int& status) {
  auto dev = vsfs::mount::open_after_closing_daemons(
      path, {}, std::chrono::seconds(60), [](const std::string& line) {
        std::fprintf(stderr, "%s: %s\n", kProg, line.c_str());
      });
  if (dev.ok()) return std::move(dev).value();
  const auto& e = dev.error();
  if (e.kind == vsfs::ErrorKind::kBusy) {
    status = fail(vsfs::device::is_rbd_name(path) ? vsfs::mount::in_use_text(path, e)
                                                  : fmt::format("{} is in use", path));
  } else if (e.kind == vsfs::ErrorKind::kNotFound) {
    status = fail(fmt::format("{}: no such file or device (use -s SIZE to create a file)", path));
  } else if (e.errno_value == EROFS) {
    status = fail(fmt::format("{}: nothing was written", e.message));
  } else {
    status = fail(fmt::format("{}: {}", path, e.message));
  }
  return nullptr;
}

int run(const Args& args) {
  const std::string& path = args.device;
  if (args.size_bytes && *args.size_bytes < vsfs::format::kMinDeviceBytes) {
    return fail(fmt::format("{} is {}; a datastore needs at least 64 MiB", path,
                            vsfs::human_bytes(*args.size_bytes)));
  }
  struct stat st {};
  bool created = false;
  const bool rbd = vsfs::device::is_rbd_name(path);
  if (rbd) {
    // An RBD image is made with rbd create; vsfs-mkfs only formats it.
  } else if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return fail(fmt::format("{}: {}", path, std::strerror(errno)));
    if (!args.size_bytes) {
      return fail(fmt::format("{}: no such file or device (use -s SIZE to create a file)", path));
    }
    // Validate the layout before creating anything.
    auto layout = vsfs::format::compute_layout(*args.size_bytes, args.journal_bytes);
    if (!layout.ok()) return fail(fmt::format("{}: {}", path, layout.error().message));
    // 0600: the image holds every disk's data; no other user may read it.
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return fail(fmt::format("cannot create {}: {}", path, std::strerror(errno)));
    const int rc = ::ftruncate(fd, static_cast<off_t>(*args.size_bytes));
    const int err = errno;
    ::close(fd);
    if (rc != 0) {
      ::unlink(path.c_str());
      return fail(fmt::format("cannot size {} to {}: {}", path, vsfs::human_bytes(*args.size_bytes),
                              std::strerror(err)));
    }
    created = true;
    if (::stat(path.c_str(), &st) != 0) return fail(fmt::format("{}: {}", path, std::strerror(errno)));
  } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return fail(fmt::format("{} is not a regular file or block device", path));
  }
  auto remove_created = [&] {
    if (created) ::unlink(path.c_str());
  };

  int status = 0;
  auto dev = open_or_report(path, status);
  if (!dev) {
    remove_created();
    return status;
  }
  // Refusals first: nothing has been written to an existing device yet. Not even with
  // -f over a datastore that someone writes now, whatever path they reach it by: its
  // lease is renewed.
  if (args.force && !created) {
    auto found = vsfs::probe_device_contents(*dev);
    if (!found.ok()) return fail(fmt::format("{}: {}", path, found.error().message));
    if (!found->empty()) {
      auto live = vsfs::meta::live_lease_holder(
          *dev, vsfs::mount::kDefaultLeaseMs,
          [](const std::string& line) { std::fprintf(stderr, "%s: %s\n", kProg, line.c_str()); });
      if (!live.ok()) return fail(fmt::format("{}: {}", path, live.error().message));
      if (live->has_value()) {
        return fail(fmt::format("{}: the datastore is in use by {}, which renews its lease; "
                                "nothing was written",
                                path, vsfs::meta::lease_holder_text(**live)));
      }
    }
  }
  if (!args.force && !created) {
    auto found = vsfs::probe_device_contents(*dev);
    if (!found.ok()) return fail(fmt::format("{}: {}", path, found.error().message));
    if (!found->empty()) {
      return fail(fmt::format("{} holds a {}; use -f to overwrite it", path, *found));
    }
    auto sig = rbd ? probe_signatures(*dev) : probe_signatures(path);
    if (!sig.ok()) return fail(fmt::format("{}: {}", path, sig.error().message));
    if (!sig->empty()) {
      return fail(fmt::format("{} holds {}, found by libblkid; use -f to overwrite it", path,
                              *sig));
    }
  }
  uint64_t size = dev->size_bytes();
  bool grow = false;
  if (args.size_bytes) {
    if (*args.size_bytes > size) {
      if (!S_ISREG(st.st_mode)) {
        return fail(fmt::format("{} is only {}; cannot make a {} datastore on it", path,
                                vsfs::human_bytes(size), vsfs::human_bytes(*args.size_bytes)));
      }
      grow = true;
    }
    size = *args.size_bytes;
  }
  if (size < vsfs::format::kMinDeviceBytes) {
    return fail(fmt::format("{} is {}; a datastore needs at least 64 MiB", path, vsfs::human_bytes(size)));
  }
  auto layout = vsfs::format::compute_layout(size, args.journal_bytes);
  if (!layout.ok()) return fail(fmt::format("{}: {}", path, layout.error().message));

  if (grow) {
    // Close and grow the file, then open it again (exclusively) for the datastore.
    dev.reset();
    const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return fail(fmt::format("{}: {}", path, std::strerror(errno)));
    const int rc = ::ftruncate(fd, static_cast<off_t>(size));
    const int err = errno;
    ::close(fd);
    if (rc != 0) {
      return fail(fmt::format("cannot grow {} to {}: {}", path, vsfs::human_bytes(size), std::strerror(err)));
    }
    dev = open_or_report(path, status);
    if (!dev) return status;
  }
  std::unique_ptr<vsfs::device::Device> target = std::move(dev);

  // What a forced mkfs overwrites leaves no signature behind (nothing was found
  // without -f).
  auto erased = rbd ? vsfs::Result<std::vector<std::string>>(std::vector<std::string>())
                    : erase_signatures(path);
  if (!erased.ok()) return fail(fmt::format("{}: {}", path, erased.error().message));
  for (const std::string& e : *erased) {
    std::printf("%s: erased the old %s\n", kProg, e.c_str());
  }

  vsfs::MkfsOptions mo;
  mo.journal_bytes = args.journal_bytes;
  mo.size_bytes = size;  // less than the device with -s: vsfs-grow takes the rest later
  mo.force = true;  // the contents were checked above
  if (args.progress_fd >= 0) {
    mo.progress = vsfs::programs::ProgressOut(args.progress_fd, args.device, kProg, "step");
  }
  auto made = vsfs::mkfs(*target, mo);
  if (!made.ok()) {
    auto r = fail(fmt::format("{}: {}", path, made.error().message));
    target.reset();
    remove_created();
    return r;
  }
  auto sb = vsfs::meta::read_superblock(*target);
  if (!sb.ok()) return fail(fmt::format("{}: reading back the superblock: {}", path,
                                        sb.error().message));
  const uint64_t data_blocks = sb->total_blocks - sb->first_data_block;
  std::printf("%s: made a vsfs datastore on %s\n", kProg, path.c_str());
  std::printf("  size:        %s (%" PRIu64 " storage blocks of 1 MiB)\n",
              vsfs::human_bytes(sb->device_bytes).c_str(), sb->total_blocks);
  std::printf("  data space:  %s (%" PRIu64 " storage blocks)\n",
              vsfs::human_bytes(data_blocks * vsfs::kBlockBytes).c_str(), data_blocks);
  std::printf("  journal:     %s\n", vsfs::human_bytes(sb->journal_grains * vsfs::kGrainBytes).c_str());
  std::printf("  uuid:        %s\n", vsfs::format::uuid_text(sb->uuid).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  bool done = false;
  if (int status = parse_args(argc, argv, args, done); status != 0 || done) return status;
  return run(args);
}
