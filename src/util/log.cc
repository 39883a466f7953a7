// The process-wide log level and the line writer.
#include "util/log.h"

#include <atomic>

namespace vsfs {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};
}

LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

void log_line(LogLevel level, const std::string& line) {
  static const char* kNames[] = {"error", "warning", "info", "debug"};
  std::string out = fmt::format("vsfs: {}: {}\n", kNames[static_cast<int>(level)], line);
  std::fwrite(out.data(), 1, out.size(), stderr);
}

}  // namespace vsfs
