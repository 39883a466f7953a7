// Configuration of vsfs-mount: defaults, the TOML file (toml++) and -o overrides.
//
// One table per layer. Every key has a default; unknown keys, wrong types and
// out-of-range values are errors naming the file, line and key (for -o: the option).
// Thread-safety: plain values; load once at start-up.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/result.h"

namespace vsfs::mount {

struct FuseConfig {
  uint32_t threads = 4;             // [fuse] threads: workers for namespace requests (1..64)
  uint32_t max_background = 128;    // [fuse] max_background (1..65535)
  bool io_uring = true;             // [fuse] io_uring: FUSE over io_uring when offered
  uint32_t uring_depth = 32;        // [fuse] uring_depth: ring entries per CPU (1..1024)
  uint32_t uring_buffer_mib = 64;   // [fuse] uring_buffer_mib: entries' payloads (1..65536)
  uint32_t max_write_kib = 1024;    // [fuse] max_write_kib: largest write request (4..1024)
  double attr_timeout_s = 1.0;      // [fuse] attr_timeout_s (0..3600)
  double entry_timeout_s = 1.0;     // [fuse] entry_timeout_s (0..3600)
};

struct DeviceConfig {
  uint32_t queue_depth = 128;       // [device] queue_depth: IOs in flight (1..4096)
  bool direct = true;               // [device] direct: O_DIRECT when the host allows it
};

struct JournalConfig {
  uint32_t commit_interval_ms = 1000;  // [journal] commit_interval_ms (10..60000)
  uint64_t meta_cache_mib = 128;       // [journal] meta_cache_mib (16..65536)
};

// The coalescing queue of each open disk (src/io/coalesce_queue.h, vsfs(7)).
struct CoalesceConfig {
  bool enabled = true;              // [coalesce] enabled: false = the direct path
  uint32_t max_inflight = 8;        // [coalesce] max_inflight: top of the threshold (1..1024)
  uint32_t max_held = 64;           // [coalesce] max_held: held requests (1..4096)
  uint64_t max_held_bytes = 8ull << 20;  // [coalesce] max_held_bytes (4096..1073741824)
  uint32_t hold_us_max = 500;       // [coalesce] hold_us_max: deadline (10..1000000)
  uint32_t max_combined_kib = 1024; // [coalesce] max_combined_kib: (4..16384)
};

struct FormatConfig {
  uint32_t rate_mib_s = 256;        // [format] rate_mib_s: background formatting, 0 = off (0..100000)
};

// The datastore's lease (meta/lease.h, vsfs(7) "One writer").
struct LeaseConfig {
  uint32_t time_ms = 8000;          // [lease] time_ms: renewed every time_ms / 4 (1000..600000)
};

struct CbtConfig {
  uint32_t history = 1024;          // [cbt] history: deleted snapshots kept on record (16..65536)
  uint32_t text_cache_mib = 32;     // [cbt] text_cache_mib: .cbt texts kept in memory (1..65536)
};

// Who may take snapshots, and the limits on users other than root (vsfs(7)).
struct SnapshotsConfig {
  std::string takers = "owner";     // [snapshots] takers: owner, writers or root
  uint32_t max_per_directory = 32;  // [snapshots] max_per_directory: 0 = no limit (0..65532)
  uint32_t max_per_user = 256;      // [snapshots] max_per_user: 0 = no limit (0..65532)
  uint64_t max_held_mib_per_user = 0;  // [snapshots] max_held_mib_per_user: 0 = no limit
};

struct LogConfig {
  std::string level = "info";       // [log] level: error, warning, info or debug
  std::string file;                 // [log] file: also append to this file (absolute path)
};

struct Config {
  FuseConfig fuse;
  DeviceConfig device;
  JournalConfig journal;
  CoalesceConfig coalesce;
  FormatConfig format;
  LeaseConfig lease;
  CbtConfig cbt;
  SnapshotsConfig snapshots;
  LogConfig log;
  // Options for the FUSE session that are not vsfs keys (allow_other, default_permissions,
  // ro, ...), in the order given; vsfs-mount passes them to libfuse.
  std::vector<std::string> fuse_options;
  bool read_only = false;           // -o ro
  std::string source;               // where the values came from, for messages
};

// Reads `path` (must exist) over the defaults. Errors name "path:line: key: problem".
Result<Config> load_config_file(const std::string& path);
// Applies "-o a,b=c,..." to `config`: known keys (fuse.threads=8 or threads=8 when the
// name is unique across tables; ro/rw; coalesce=on|off for coalesce.enabled) set
// values, everything else is kept for FUSE.
// Errors name the option: "-o queue_depth=x: expected an integer".
Result<void> apply_mount_options(Config& config, const std::string& options);
// The default config path, used when -c is not given and the file exists.
inline constexpr const char* kDefaultConfigPath = "/etc/vsfs/vsfs.toml";

}  // namespace vsfs::mount
