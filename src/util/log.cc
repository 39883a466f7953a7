// The process-wide log level, its sinks and the repeat limiter.
#include "util/log.h"

#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace vsfs {
namespace {

constexpr const char* kNames[] = {"error", "warning", "info", "debug"};
constexpr int kSyslogPriority[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
// Distinct lines remembered for the repeat limit; beyond it the memory starts again.
constexpr size_t kRepeatKeysMax = 256;

std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};

struct Repeat {
  std::chrono::steady_clock::time_point window_start;
  int seen = 0;         // in this window
  uint64_t dropped = 0;  // not written, to be said at the next written one
};

struct Sinks {
  std::mutex mu;
  bool to_stderr = true;
  bool to_syslog = false;
  std::string ident;  // openlog keeps the pointer
  int fd = -1;
  std::string subject;
  std::unordered_map<std::string, Repeat> repeats;
  LoggedError last_error;
};

Sinks& sinks() {
  static Sinks s;
  return s;
}

void write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace

LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

std::optional<LogLevel> log_level_from_name(std::string_view name) {
  for (int i = 0; i < 4; ++i) {
    if (name == kNames[i]) return static_cast<LogLevel>(i);
  }
  return std::nullopt;
}

void log_to_stderr(bool on) {
  std::lock_guard l(sinks().mu);
  sinks().to_stderr = on;
}

void log_to_syslog(const char* ident) {
  Sinks& s = sinks();
  std::lock_guard l(s.mu);
  s.ident = ident;
  ::openlog(s.ident.c_str(), LOG_PID, LOG_DAEMON);
  s.to_syslog = true;
}

void set_log_ident(const char* ident) {
  std::lock_guard l(sinks().mu);
  sinks().ident = ident;
}

Result<void> log_to_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return make_error(errno, ErrorKind::kIo, "{}: cannot open for logging: {}", path,
                      std::strerror(errno));
  }
  Sinks& s = sinks();
  std::lock_guard l(s.mu);
  if (s.fd >= 0) ::close(s.fd);
  s.fd = fd;
  return ok_result();
}

void set_log_subject(const std::string& subject) {
  std::lock_guard l(sinks().mu);
  sinks().subject = subject;
}

LoggedError last_logged_error() {
  std::lock_guard l(sinks().mu);
  return sinks().last_error;
}

void log_line(LogLevel level, const std::string& line) {
  Sinks& s = sinks();
  const int lv = static_cast<int>(level);
  std::lock_guard l(s.mu);
  std::string text = line;
  if (!s.subject.empty() && text.rfind(s.subject, 0) != 0) text = s.subject + ": " + text;

  if (level == LogLevel::kError) {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    s.last_error = LoggedError{text, static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
                                         static_cast<uint64_t>(ts.tv_nsec)};
  }
  // The repeat limit.
  const auto now = std::chrono::steady_clock::now();
  if (s.repeats.size() > kRepeatKeysMax) s.repeats.clear();
  Repeat& r = s.repeats[std::string(kNames[lv]) + '\0' + text];
  if (r.seen == 0 || now - r.window_start >= kRepeatWindow) {
    r.window_start = now;
    r.seen = 0;
  }
  if (++r.seen > kRepeatBurst) {
    ++r.dropped;
    return;
  }
  if (r.dropped > 0) {
    text += fmt::format(" (and {} more like it not logged)", r.dropped);
    r.dropped = 0;
  }

  if (s.to_stderr) {
    const std::string out = fmt::format("vsfs: {}: {}\n", kNames[lv], text);
    std::fwrite(out.data(), 1, out.size(), stderr);
  }
  if (s.to_syslog) ::syslog(kSyslogPriority[lv], "%s: %s", kNames[lv], text.c_str());
  if (s.fd >= 0) {
    char stamp[64];
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S%z", &tm);
    write_all(s.fd, fmt::format("{} {}[{}]: {}: {}\n", stamp, s.ident.empty() ? "vsfs" : s.ident,
                                ::getpid(), kNames[lv], text));
  }
}

[[noreturn]] void assert_failed(const char* file, int line, const char* condition) {
  log_line(LogLevel::kError,
           fmt::format("invariant broken at {}:{}: {}; stopping", file, line, condition));
  std::abort();
}

}  // namespace vsfs
