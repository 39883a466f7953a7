// Logging through fmt: one line per event, to the sinks the program chose: stderr (the
// default), syslog(3) (a detached daemon: ident and facility set by log_to_syslog), and
// a file (appended, one write per line, with a timestamp). A subject (vsfs-mount: the
// datastore's device) starts every line that does not already start with it, so each
// line names the datastore. Repeats are rate-limited: the same line (level and text)
// more than kRepeatBurst times within kRepeatWindow is counted instead of written, and
// its next appearance after the window says how many were left out.
// Thread-safety: every function may be called from any thread; lines never interleave.
#pragma once

#include <chrono>
#include <cstdio>
#include <optional>
#include <string_view>
#include <string>

#include <fmt/format.h>

#include "util/result.h"

namespace vsfs {

enum class LogLevel { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

LogLevel log_level();
void set_log_level(LogLevel level);
// "error", "warning", "info", "debug"; nullopt for anything else.
std::optional<LogLevel> log_level_from_name(std::string_view name);
void log_line(LogLevel level, const std::string& line);

// Sinks. stderr is on until switched off; syslog and the file are off until set.
void log_to_stderr(bool on);
void log_to_syslog(const char* ident);  // openlog(ident, LOG_PID, LOG_DAEMON); ident kept
void set_log_ident(const char* ident);  // the program's name in file lines (default vsfs)
// Appends to `path` (created 0640). Errors: the file cannot be opened for appending.
Result<void> log_to_file(const std::string& path);
void set_log_subject(const std::string& subject);

// The last line logged at level error (as written, with the subject), and when
// (CLOCK_REALTIME, ns); none yet: an empty text. Held back repeats count as logged.
struct LoggedError {
  std::string text;
  uint64_t realtime_ns = 0;
};
LoggedError last_logged_error();

inline constexpr int kRepeatBurst = 5;
inline constexpr std::chrono::seconds kRepeatWindow{10};

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
