// VSFS_ASSERT: a broken invariant is a bug and stops the process, also in release
// builds. Use for cheap checks of internal state, never for input validation. The line
// that says where goes through the log's sinks (stderr, syslog, the log file), so that a
// detached daemon's abort is seen.
#pragma once

namespace vsfs {
[[noreturn]] void assert_failed(const char* file, int line, const char* condition);
}  // namespace vsfs

#define VSFS_ASSERT(cond)                                       \
  do {                                                          \
    if (!(cond)) [[unlikely]] {                                 \
      ::vsfs::assert_failed(__FILE__, __LINE__, #cond);         \
    }                                                           \
  } while (0)
