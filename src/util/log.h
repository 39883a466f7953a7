// Logging through fmt to stderr (the daemon's stderr goes to syslog or the terminal).
// Thread-safety: each call writes one line with one fwrite; safe from any thread.
#pragma once

#include <cstdio>
#include <string>

#include <fmt/format.h>

namespace vsfs {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_line(LogLevel level, const std::string& line);

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) {
  if (level > log_level()) return;
  log_line(level, fmt::format(f, std::forward<Args>(args)...));
}

#define VSFS_LOG_ERROR(...) ::vsfs::log(::vsfs::LogLevel::kError, __VA_ARGS__)
#define VSFS_LOG_WARN(...) ::vsfs::log(::vsfs::LogLevel::kWarn, __VA_ARGS__)
#define VSFS_LOG_INFO(...) ::vsfs::log(::vsfs::LogLevel::kInfo, __VA_ARGS__)
#define VSFS_LOG_DEBUG(...) ::vsfs::log(::vsfs::LogLevel::kDebug, __VA_ARGS__)

}  // namespace vsfs
