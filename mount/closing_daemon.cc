#include "mount/closing_daemon.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace vsfs::mount {
namespace {

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) != nullptr ? std::string(buf) : p;
}

// /proc/self/mountinfo escapes spaces, tabs, newlines and backslashes as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && oct.find_first_not_of("01234567") == std::string::npos) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// Whether a mount in this namespace has `real` as its source (any filesystem type: a
// vsfs mount names its device, a kernel filesystem its block device).
bool is_mount_source(const std::string& real) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype, source;
    rest >> fstype >> source;
    if (unescape(source) == real) return true;
  }
  return false;
}

}  // namespace

std::vector<pid_t> closing_daemons(const std::string& path) {
  const std::string real = real_path(path);
  std::vector<pid_t> out;
  if (is_mount_source(real)) return out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || pid == ::getpid()) continue;
    std::string comm;
    std::ifstream(fmt::format("/proc/{}/comm", pid)) >> comm;
    if (comm != "vsfs-mount") continue;
    const std::string fd_dir = fmt::format("/proc/{}/fd", pid);
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    bool holds = false;
    while (dirent* f = ::readdir(fds)) {
      char target[PATH_MAX];
      const std::string link = fd_dir + "/" + f->d_name;
      const ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      if (std::string(target, static_cast<size_t>(n)) == real) {
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

Result<std::unique_ptr<device::Device>> open_after_closing_daemons(
    const std::string& path, const device::UringOptions& options, std::chrono::seconds wait,
    const std::function<void(const std::string&)>& say) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  bool told = false;
  bool last_try = false;
  for (;;) {
    auto dev = device::open_uring_device(path, options);
    if (dev.ok() || dev.error().kind != ErrorKind::kBusy || last_try) return dev;
    const std::vector<pid_t> daemons = closing_daemons(path);
    if (std::chrono::steady_clock::now() >= deadline) return dev;
    if (daemons.empty()) {
      // Nothing closing holds it now: either something else does, or the daemon exited
      // since the open failed. One more open tells which.
      last_try = true;
      continue;
    }
    if (!told) {
      say(fmt::format("waiting (up to {} s) for vsfs-mount (pid {}) to finish closing the "
                      "datastore on {}",
                      wait.count(), daemons.front(), path));
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace vsfs::mount
