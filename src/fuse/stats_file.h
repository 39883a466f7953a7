// `.vsfs/stats`: the read-only JSON file of live counters (DESIGN.md §1).
//
// render_stats_json() takes one snapshot of Datastore::stats() and the FUSE counters.
// An open of the file renders one snapshot into a StatsHandle (the file handle), which
// reads slice; the open is direct_io so readers read to the end of their snapshot.
// Thread-safety: render_stats_json() may run on any thread; a StatsHandle is immutable
// after open. FuseFs::stats_handles() owns it (handles.h): release frees it, and one
// still open when the session ends goes with the FuseFs.
#pragma once

#include <string>

namespace vsfs::fuse {

class FuseFs;

std::string render_stats_json(FuseFs& fs);
// `.vsfs/snapshots`: every live snapshot with where it is, who took it and the space it
// holds (Datastore::snapshot_space: a metadata walk per snapshot), then per taker the
// count and the sum of the bytes their snapshots hold alone.
std::string render_snapshots_json(FuseFs& fs);

struct StatsHandle {
  std::string json;
};

}  // namespace vsfs::fuse
