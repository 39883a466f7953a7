#include "mount/closing_daemon.h"

#include <thread>

#include <fmt/format.h>

#include "mount/mounted.h"

namespace vsfs::mount {

std::vector<pid_t> closing_daemons(const std::string& path) {
  if (is_mount_source(path)) return {};
  return daemons_holding(path);
}

Result<std::unique_ptr<device::Device>> open_after_closing_daemons(
    const std::string& path, const device::UringOptions& options, std::chrono::seconds wait,
    const std::function<void(const std::string&)>& say) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  bool told = false;
  bool last_try = false;
  for (;;) {
    auto dev = device::open_device(path, options);
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
