// `.vsfs/stats` rendering: see stats_file.h. The section and key names are an interface
// (scripts parse them): add keys, never rename or remove one.
#include "fuse/stats_file.h"

#include <array>
#include <ctime>
#include <iterator>
#include <map>

#include <fmt/format.h>

#include "format/format.h"
#include "fuse/fuse_fs.h"
#include "fuse/uring_channel.h"
#include "util/log.h"

namespace vsfs::fuse {
namespace {

// `text` as a JSON string, quoted.
std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// One set of lifetime counters as a JSON object at the given indentation.
std::string json_lifetime(const LifetimeCounts& l, const char* indent) {
  return fmt::format(
      "{{\n"
      "{0}  \"read_bytes\": {1},\n"
      "{0}  \"write_bytes\": {2},\n"
      "{0}  \"read_errors\": {3},\n"
      "{0}  \"write_errors\": {4},\n"
      "{0}  \"no_space_errors\": {5},\n"
      "{0}  \"unclean_mounts\": {6},\n"
      "{0}  \"snapshots_taken\": {7},\n"
      "{0}  \"snapshots_deleted\": {8},\n"
      "{0}  \"formatted_bytes\": {9},\n"
      "{0}  \"mounted_seconds\": {10}\n"
      "{0}}}",
      indent, l.read_bytes, l.write_bytes, l.read_errors, l.write_errors, l.no_space_errors,
      l.unclean_mounts, l.snapshots_taken, l.snapshots_deleted, l.formatted_bytes,
      l.mounted_seconds);
}

// CLOCK_REALTIME ns as UTC ISO 8601 ("2026-12-05T00:56:06Z"); null for 0.
std::string json_time(uint64_t realtime_ns) {
  if (realtime_ns == 0) return "null";
  const std::time_t t = static_cast<std::time_t>(realtime_ns / 1000000000ull);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_string(buf);
}

}  // namespace

std::string render_stats_json(FuseFs& fs) {
  DatastoreStats s = fs.ds().stats();
  const SpaceInfo& sp = s.space;
  std::string out;
  out.reserve(2048);
  auto it = std::back_inserter(out);
  fmt::format_to(it, "{{\n");
  const FsOptions& o = fs.options();
  fmt::format_to(it,
                 "  \"datastore\": {{\n"
                 "    \"version\": {},\n"
                 "    \"uuid\": \"{}\",\n"
                 "    \"device\": {},\n"
                 "    \"mounted_at\": {},\n"
                 "    \"mount_count\": {},\n"
                 "    \"read_only\": {}\n"
                 "  }},\n",
                 json_string(o.version), format::uuid_text(s.uuid), json_string(o.device),
                 json_time(o.mounted_at_ns), s.mount_count, s.read_only);
  const LoggedError last = last_logged_error();
  const bool healthy = !s.metadata_failed && s.device_read_errors == 0 &&
                       s.device_write_errors == 0;
  fmt::format_to(it,
                 "  \"health\": {{\n"
                 "    \"state\": \"{}\",\n"
                 "    \"device_read_errors\": {},\n"
                 "    \"device_write_errors\": {},\n"
                 "    \"device_no_space\": {},\n"
                 "    \"metadata_failed\": {},\n"
                 "    \"last_error\": {},\n"
                 "    \"last_error_at\": {}\n"
                 "  }},\n",
                 s.metadata_failed ? "failed" : healthy ? "ok" : "errors",
                 s.device_read_errors, s.device_write_errors, s.device_no_space,
                 s.metadata_failed, last.text.empty() ? "null" : json_string(last.text),
                 json_time(last.realtime_ns));
  // Totals over the datastore's life, kept in the superblock across mounts; every other
  // section counts since this mount.
  fmt::format_to(it,
                 "  \"lifetime\": {{\n"
                 "    \"mount_count\": {},\n"
                 "    \"total\": {},\n"
                 "    \"this_mount\": {},\n"
                 "    \"stored\": {}\n"
                 "  }},\n",
                 s.mount_count, json_lifetime(s.lifetime.total, "    "),
                 json_lifetime(s.lifetime.this_mount, "    "),
                 json_lifetime(s.lifetime.stored, "    "));
  fmt::format_to(it,
                 "  \"space\": {{\n"
                 "    \"total_bytes\": {},\n"
                 "    \"used_bytes\": {},\n"
                 "    \"free_bytes\": {},\n"
                 "    \"available_bytes\": {},\n"
                 "    \"formatted_blocks\": {},\n"
                 "    \"to_format_blocks\": {},\n"
                 "    \"alloc_window\": {},\n"
                 "    \"alloc_window_end\": {},\n"
                 "    \"crash_reformat_blocks\": {},\n"
                 "    \"space_summary\": {},\n"
                 "    \"block_table_grains\": {},\n"
                 "    \"block_table_grains_loaded\": {},\n"
                 "    \"damaged_free_blocks\": {},\n"
                 "    \"inodes\": {}\n"
                 "  }},\n",
                 sp.total_bytes, sp.used_bytes, sp.free_bytes, sp.available_bytes, sp.formatted_blocks,
                 sp.to_format_blocks, sp.alloc_window, sp.alloc_window_end,
                 sp.crash_reformat_blocks, sp.space_summary, sp.table_grains,
                 sp.table_grains_loaded, sp.damaged_free_blocks, sp.inodes);
  fmt::format_to(it,
                 "  \"io\": {{\n"
                 "    \"read_requests\": {},\n"
                 "    \"write_requests\": {},\n"
                 "    \"read_bytes\": {},\n"
                 "    \"write_bytes\": {},\n"
                 "    \"in_place_grain_writes\": {},\n"
                 "    \"redirected_grain_writes\": {},\n"
                 "    \"restamped_grain_writes\": {},\n"
                 "    \"window_waits\": {},\n"
                 "    \"device_ops\": {{\n"
                 "      \"read\": {},\n"
                 "      \"write\": {},\n"
                 "      \"flush\": {},\n"
                 "      \"discard\": {},\n"
                 "      \"write_zeroes\": {},\n"
                 "      \"allocate\": {}\n"
                 "    }},\n"
                 "    \"device_in_flight\": {},\n"
                 "    \"device_in_flight_peak\": {},\n"
                 "    \"fuse_in_flight\": {},\n"
                 "    \"fuse_in_flight_peak\": {}\n"
                 "  }},\n",
                 s.read_requests, s.write_requests, s.read_bytes, s.write_bytes,
                 s.in_place_grain_writes, s.redirected_grain_writes,
                 s.restamped_grain_writes, s.window_waits, s.device_ops[0],
                 s.device_ops[1], s.device_ops[2], s.device_ops[3], s.device_ops[4],
                 s.device_ops[5],
                 s.device_in_flight, s.device_in_flight_peak, fs.requests().in_flight(),
                 fs.requests().peak());
  fmt::format_to(it,
                 "  \"journal\": {{\n"
                 "    \"commits\": {},\n"
                 "    \"bytes\": {},\n"
                 "    \"checkpoints\": {},\n"
                 "    \"full_checkpoints\": {}\n"
                 "  }},\n",
                 s.journal_commits, s.journal_bytes, s.checkpoints, s.full_journal_checkpoints);
  fmt::format_to(it,
                 "  \"meta_cache\": {{\n"
                 "    \"bytes\": {},\n"
                 "    \"budget_bytes\": {},\n"
                 "    \"unevictable_bytes\": {},\n"
                 "    \"blocks\": {},\n"
                 "    \"hits\": {},\n"
                 "    \"misses\": {},\n"
                 "    \"evictions\": {},\n"
                 "    \"dir_indexes\": {},\n"
                 "    \"dir_index_bytes\": {}\n"
                 "  }},\n",
                 s.meta_cache.bytes, s.meta_cache.budget_bytes, s.meta_cache.unevictable_bytes,
                 s.meta_cache.blocks, s.meta_cache.hits, s.meta_cache.misses,
                 s.meta_cache.evictions, s.meta_cache.dir_indexes, s.meta_cache.dir_index_bytes);
  fmt::format_to(it,
                 "  \"format\": {{\n"
                 "    \"formatted_blocks\": {},\n"
                 "    \"to_format_blocks\": {},\n"
                 "    \"formatted_bytes_total\": {},\n"
                 "    \"rate_mib_s\": {},\n"
                 "    \"running\": {}\n"
                 "  }},\n",
                 s.space.formatted_blocks, s.space.to_format_blocks,
                 s.space.formatted_bytes_total, s.format_rate_mib_s, s.formatter_running);
  fmt::format_to(it,
                 "  \"cbt\": {{\n"
                 "    \"nodes\": {},\n"
                 "    \"texts\": {},\n"
                 "    \"text_bytes\": {},\n"
                 "    \"text_budget_bytes\": {}\n"
                 "  }},\n",
                 s.cbt_nodes, s.cbt_texts, s.cbt_text_bytes, s.cbt_text_budget_bytes);
  // The coalescing queues of all open disks together (src/io/coalesce_queue.h); all
  // zero with coalescing off. hold_us covers the requests that were held.
  const io::CoalesceStats::Snapshot c = fs.queues().stats();
  fmt::format_to(it,
                 "  \"coalesce\": {{\n"
                 "    \"enabled\": {},\n"
                 "    \"open_disks\": {},\n"
                 "    \"requests_in\": {},\n"
                 "    \"ios_out\": {},\n"
                 "    \"merged\": {},\n"
                 "    \"held\": {},\n"
                 "    \"held_now\": {},\n"
                 "    \"in_flight_now\": {},\n"
                 "    \"barriers\": {},\n"
                 "    \"deadline_flushes\": {},\n"
                 "    \"full_flushes\": {},\n"
                 "    \"hold_us\": {{\n"
                 "      \"p50\": {},\n"
                 "      \"p99\": {},\n"
                 "      \"max\": {}\n"
                 "    }}\n"
                 "  }},\n",
                 fs.queues().enabled(), fs.queues().open_disks(), c.requests_in, c.ios_out,
                 c.merged, c.held, c.held_now, c.in_flight_now, c.barriers,
                 c.deadline_flushes, c.full_flushes, c.hold_us_p50, c.hold_us_p99,
                 c.hold_us_max);
  // How requests reach vsfs: FUSE over io_uring once the kernel took ring entries.
  const UringChannelCounters ring = fs.uring() != nullptr ? fs.uring()->counters()
                                                           : UringChannelCounters{};
  fmt::format_to(it,
                 "  \"fuse\": {{\n"
                 "    \"transport\": \"{}\",\n"
                 "    \"ring_entries\": {},\n"
                 "    \"ring_requests\": {},\n"
                 "    \"direct_io_mmap\": {}\n"
                 "  }},\n",
                 ring.active ? "io_uring" : "dev_fuse", ring.entries, ring.requests,
                 (fs.init_extensions().granted() & InitExtensions::kDirectIoAllowMmap) != 0);
  // Resource queues (DESIGN.md §2): requests that waited for a busy resource.
  auto queue = [&](const char* name, const QueueStats& q, bool last) {
    fmt::format_to(it,
                   "    \"{}\": {{\"waits\": {}, \"waiting_now\": {}, \"wait_us_p50\": {}, "
                   "\"wait_us_p99\": {}, \"wait_us_max\": {}}}{}\n",
                   name, q.waits, q.waiting_now, q.wait_us_p50, q.wait_us_p99, q.wait_us_max,
                   last ? "" : ",");
  };
  fmt::format_to(it, "  \"queues\": {{\n");
  queue("grain", s.grain_queue, false);
  queue("snapshot", s.snapshot_queue, false);
  queue("metadata", s.metadata_queue, false);
  queue("journal", s.journal_queue, false);
  fmt::format_to(it, "    \"device\": {{\"waiting_now\": {}}}\n  }},\n", s.device_queued_now);
  fmt::format_to(it,
                 "  \"release_pending\": {},\n"
                 "  \"generation\": {}\n"
                 "}}\n",
                 s.release_pending, s.generation);
  return out;
}


std::string render_snapshots_json(FuseFs& fs) {
  struct Taker {
    uint64_t snapshots = 0, exclusive_bytes = 0;
  };
  std::map<uint32_t, Taker> takers;
  std::string out = "{\n  \"snapshots\": [";
  bool first = true;
  for (const SnapshotInfo& info : fs.ds().snapshots()) {
    if (info.deleted) continue;
    auto space = fs.ds().snapshot_space(info.id);
    if (!space.ok()) continue;  // deleted meanwhile
    auto path = fs.ds().dir_path(info.base_ino);
    Taker& t = takers[info.taker_uid];
    ++t.snapshots;
    t.exclusive_bytes += space->exclusive_bytes;
    fmt::format_to(std::back_inserter(out),
                   "{}\n    {{\"name\": {}, \"directory\": {}, \"directory_ino\": {}, "
                   "\"changeid\": {}, \"created\": {}, \"taker_uid\": {}, "
                   "\"exclusive_bytes\": {}, \"shared_bytes\": {}, \"referenced_bytes\": {}}}",
                   first ? "" : ",", json_string(info.name),
                   path.ok() ? json_string(*path) : "null", info.base_ino, info.change_id,
                   json_time(info.created_ns), info.taker_uid, space->exclusive_bytes,
                   space->shared_bytes, space->referenced_bytes);
    first = false;
  }
  out += first ? "],\n  \"takers\": [" : "\n  ],\n  \"takers\": [";
  first = true;
  for (const auto& [uid, t] : takers) {
    fmt::format_to(std::back_inserter(out),
                   "{}\n    {{\"uid\": {}, \"snapshots\": {}, \"exclusive_bytes\": {}}}",
                   first ? "" : ",", uid, t.snapshots, t.exclusive_bytes);
    first = false;
  }
  out += first ? "]\n}\n" : "\n  ]\n}\n";
  return out;
}

}  // namespace vsfs::fuse
