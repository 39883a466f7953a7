#include "mount/mounted.h"

#include <dirent.h>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "device/rbd_device.h"
#include "vsfs/control.h"

namespace vsfs::mount {
namespace {

// /proc/self/mountinfo escapes spaces, tabs, newlines and backslashes as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<MountEntry> mount_table() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, devno, root, target;
    head >> id >> parent >> devno >> root >> target;
    std::istringstream rest(line.substr(dash + 3));
    MountEntry e;
    rest >> e.fstype >> e.source;
    e.source = unescape(e.source);
    e.target = unescape(target);
    out.push_back(std::move(e));
  }
  return out;
}

// mount(2) flags of the kernel options a remount keeps or changes, on top of the
// mount's current ones.
unsigned long remount_flags(const std::string& dir, const std::vector<std::string>& options) {
  struct statvfs st {};
  unsigned long flags = 0;
  if (::statvfs(dir.c_str(), &st) == 0) {
    if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (st.f_flag & ST_SYNCHRONOUS) flags |= MS_SYNCHRONOUS;
    if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  }
  struct Flag {
    const char* set;
    const char* clear;
    unsigned long bit;
  };
  static const Flag kFlags[] = {{"nosuid", "suid", MS_NOSUID},
                                {"nodev", "dev", MS_NODEV},
                                {"noexec", "exec", MS_NOEXEC},
                                {"sync", "async", MS_SYNCHRONOUS},
                                {"dirsync", nullptr, MS_DIRSYNC},
                                {"noatime", "atime", MS_NOATIME},
                                {"nodiratime", "diratime", MS_NODIRATIME},
                                {"relatime", "norelatime", MS_RELATIME},
                                {"strictatime", nullptr, MS_STRICTATIME},
                                {"lazytime", "nolazytime", MS_LAZYTIME}};
  for (const std::string& o : options) {
    for (const Flag& f : kFlags) {
      if (o == f.set) flags |= f.bit;
      if (f.clear != nullptr && o == f.clear) flags &= ~f.bit;
    }
    if (o == "strictatime") flags &= ~(MS_NOATIME | MS_RELATIME);
  }
  return flags;
}

// libmount's update of utab: `fs` for a new entry, or `target` to remove one.
void update_utab(libmnt_fs* fs, const char* target) {
  libmnt_update* upd = mnt_new_update();
  if (upd == nullptr) return;
  if (mnt_update_set_fs(upd, 0, target, fs) == 0) (void)mnt_update_table(upd, nullptr);
  mnt_free_update(upd);
}

}  // namespace

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) != nullptr ? std::string(buf) : path;
}

std::optional<MountEntry> mount_at(const std::string& dir) {
  const std::string real = real_path(dir);
  std::optional<MountEntry> found;
  for (MountEntry& e : mount_table()) {
    if (e.target == real) found = std::move(e);
  }
  return found;
}

std::optional<MountEntry> mount_from(const std::string& path) {
  const std::string real = real_path(path);
  std::optional<MountEntry> found;
  for (MountEntry& e : mount_table()) {
    if (e.source == real) found = std::move(e);
  }
  return found;
}

bool is_mount_source(const std::string& path) { return mount_from(path).has_value(); }

std::vector<pid_t> daemons_holding(const std::string& path) {
  const bool rbd = device::is_rbd_name(path);
  const std::string real = rbd ? path : real_path(path);
  std::vector<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid == ::getpid()) continue;
    std::string comm;
    std::ifstream(fmt::format("/proc/{}/comm", pid)) >> comm;
    if (comm != "vsfs-mount") continue;
    if (rbd) {
      std::ifstream cmdline(fmt::format("/proc/{}/cmdline", pid));
      std::string arg;
      while (std::getline(cmdline, arg, '\0') && arg != path) {
      }
      if (arg == path) out.push_back(static_cast<pid_t>(pid));
      continue;
    }
    const std::string fd_dir = fmt::format("/proc/{}/fd", pid);
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    bool holds = false;
    while (dirent* f = ::readdir(fds)) {
      char target[PATH_MAX];
      const std::string link = fd_dir + "/" + f->d_name;
      const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
      if (n > 0 && std::string(target, static_cast<size_t>(n)) == real) {
        holds = true;
        break;
      }
    }
    ::closedir(fds);
    if (holds) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(proc);
  return out;
}

void record_umount_helper(const std::string& source, const std::string& target) {
  if (::access("/run/mount", W_OK) != 0 && ::mkdir("/run/mount", 0755) != 0) return;
  forget_umount_helper(target);  // one a daemon killed before its exit left there
  libmnt_fs* fs = mnt_new_fs();
  if (fs == nullptr) return;
  if (mnt_fs_set_source(fs, source.c_str()) == 0 && mnt_fs_set_target(fs, target.c_str()) == 0 &&
      mnt_fs_set_options(fs, "helper=vsfs") == 0) {
    update_utab(fs, nullptr);
  }
  mnt_free_fs(fs);
}

void forget_umount_helper(const std::string& target) {
  if (::access("/run/mount/utab", W_OK) != 0) return;
  update_utab(nullptr, target.c_str());
}

Result<void> remount(const std::string& dir, bool read_only,
                     const std::vector<std::string>& kernel_options,
                     const std::function<void(const std::string&)>& say) {
  const std::optional<MountEntry> m = mount_at(dir);
  if (!m || m->fstype != "fuse.vsfs") {
    return make_error(EINVAL, ErrorKind::kInvalidArgument, "{}: not a vsfs mount point", dir);
  }
  const int fd = ::open(m->target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error(errno, ErrorKind::kIo, "{}: {}", dir, std::strerror(errno));
  const uint32_t value = read_only ? 1 : 0;
  const int rc = ::ioctl(fd, VSFS_IOC_SET_READ_ONLY, &value);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    if (err == EROFS) {
      return make_error(EROFS, ErrorKind::kState,
                        "{}: mounted read-only (-o ro), its device open for reading only; "
                        "unmount it and mount it read-write",
                        dir);
    }
    return make_error(err, ErrorKind::kIo, "{}: the daemon refused the remount: {}", dir,
                      std::strerror(err));
  }
  const unsigned long flags =
      MS_REMOUNT | remount_flags(m->target, kernel_options) | (read_only ? MS_RDONLY : 0);
  if (::mount(m->source.c_str(), m->target.c_str(), nullptr, flags, nullptr) == 0) {
    return ok_result();
  }
  if (errno == EBUSY && read_only) {
    say(fmt::format("{}: files are open for writing, so the kernel keeps the mount marked "
                    "read-write; the datastore refuses every change (EROFS) until it is "
                    "remounted read-write",
                    dir));
    return ok_result();
  }
  return make_error(errno, ErrorKind::kIo, "{}: the daemon is {}, but the kernel's remount "
                    "failed: {}", dir, read_only ? "read-only" : "read-write",
                    std::strerror(errno));
}

}  // namespace vsfs::mount
