// The progress of vsfs-fsck's passes and vsfs-mkfs's steps, as e2fsck's -C FD shows it:
// one line "PASS DONE TOTAL DEVICE" per report on descriptor FD (TOTAL 0: not known in
// advance), for a front end; with FD 0, a bar on standard error when it is a terminal.
// At most ten reports a second, besides the first and last of each pass.
// Thread-safety: none; the library calls it on the program's thread.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "vsfs/datastore.h"

namespace vsfs::programs {

class ProgressOut {
 public:
  // `prog` prefixes the bar; `word` names a pass in it ("pass", "step").
  ProgressOut(int fd, std::string device, const char* prog, const char* word)
      : fd_(fd), device_(std::move(device)), prog_(prog), word_(word) {}

  void operator()(const Progress& p) {
    const auto now = std::chrono::steady_clock::now();
    const bool edge = p.pass != last_pass_ || p.done == p.total;
    if (!edge && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    last_pass_ = p.pass;
    if (fd_ > 0) {
      const std::string line = fmt::format("{} {} {} {}\n", p.pass, p.done, p.total, device_);
      (void)!::write(fd_, line.data(), line.size());
      return;
    }
    if (!::isatty(STDERR_FILENO)) return;
    constexpr int kWidth = 30;
    const int filled = p.total == 0 ? 0 : static_cast<int>(kWidth * p.done / p.total);
    const std::string bar = std::string(filled, '=') + std::string(kWidth - filled, ' ');
    const std::string amount =
        p.total == 0 ? fmt::format("{}", p.done) : fmt::format("{}%", p.done * 100 / p.total);
    std::fprintf(stderr, "\r%s: %s %d/%d %-18s [%s] %s", prog_, word_, p.pass, p.passes, p.name,
                 bar.c_str(), amount.c_str());
    if (p.pass == p.passes && p.done == p.total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  int fd_;
  std::string device_;
  const char* prog_;
  const char* word_;
  int last_pass_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace vsfs::programs
