// sim-crash: seeded random workloads on the simulated device, with the power cut at a
// random IO. After recovery every fsync-acknowledged byte must be there, bytes changed
// after the last acknowledged fsync must hold their old value or a value written since
// (never a third thing), and fsck must find the datastore clean.
//
// VSFS_CRASH_SEEDS=N runs N seeds (default 3000) from VSFS_CRASH_FIRST_SEED (default 1);
// VSFS_CRASH_SEED=S runs only seed S; VSFS_CRASH_TRACE=1 names each seed on stderr.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>

#include "device/sim_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;

constexpr uint64_t kMaxFile = 1 << 20;

struct ModelFile {
  std::vector<uint8_t> data;  // contents; size = data.size()
};

// What the datastore held at the last acknowledged fsync, and what changed since.
struct Model {
  std::map<std::string, ModelFile> files;  // path -> contents
  std::set<std::string> dirs{""};
};

struct PostWrite {
  uint64_t offset;
  std::vector<uint8_t> data;
};

struct Tracker {
  Model live;      // the current state (every acknowledged operation applied)
  Model durable;   // as of the last acknowledged fsync
  // Snapshots: name -> the files as they were frozen. `durable_snaps` as of the last
  // acknowledged commit; names deleted since are checked loosely.
  std::map<std::string, std::map<std::string, ModelFile>> snaps, durable_snaps;
  std::set<std::string> loose_snaps;
  // Since the last fsync: writes per path (zeros for punch/truncate), and paths whose
  // namespace or size changed (checked loosely).
  std::map<std::string, std::vector<PostWrite>> post;
  std::set<std::string> loose;

  void synced() {
    durable = live;
    durable_snaps = snaps;
    post.clear();
    loose.clear();
    loose_snaps.clear();
  }
};

std::string parent_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? "" : p.substr(0, s);
}
std::string base_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

Result<Ino> resolve(Datastore& ds, const std::string& path) {
  Ino cur = kRootIno;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    VSFS_ASSIGN_OR_RETURN(Attr a, ds.lookup(cur, path.substr(pos, next - pos)));
    cur = a.ino;
    pos = next + 1;
  }
  return cur;
}

class Workload {
 public:
  Workload(Datastore& ds, uint64_t seed) : ds_(ds), rng_(seed) {}

  // Runs until `ops` operations are done or one fails (the device died).
  void run(int ops) {
    for (int i = 0; i < ops; ++i) {
      if (!step()) return;
    }
  }
  Tracker& tracker() { return t_; }

 private:
  uint64_t pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }

  std::string random_file() {
    if (t_.live.files.empty()) return "";
    auto it = t_.live.files.begin();
    std::advance(it, pick(t_.live.files.size()));
    return it->first;
  }

  std::string new_name() { return "f" + std::to_string(counter_++); }

  bool step() {
    const uint64_t r = pick(100);
    if (r < 8 || t_.live.files.empty()) return op_create();
    if (r < 50) return op_write();
    if (r < 62) return op_fsync();
    if (r < 70) return op_truncate();
    if (r < 77) return op_punch();
    if (r < 83) return op_unlink();
    if (r < 88) return op_rename();
    if (r < 90) return op_mkdir();
    if (r < 93) return op_snapshot();
    if (r < 95) return op_delete_snapshot();
    if (r < 97) return op_clone();
    return op_overwrite_same();
  }

  bool op_snapshot() {
    if (t_.snaps.size() >= 4) return op_delete_snapshot();
    const std::string name = "snap" + std::to_string(counter_++);
    auto a = ds_.mkdir(make_ino(kSnapshotsDirView, kRootIno), name, 0755, 0, 0);
    if (!a.ok()) return false;
    t_.snaps[name] = t_.live.files;
    t_.synced();  // taking a snapshot commits everything before it
    return true;
  }

  bool op_delete_snapshot() {
    if (t_.snaps.empty()) return op_snapshot();
    auto it = t_.snaps.begin();
    std::advance(it, pick(t_.snaps.size()));
    const std::string name = it->first;
    t_.loose_snaps.insert(name);
    if (!ds_.rmdir(make_ino(kSnapshotsDirView, kRootIno), name).ok()) return false;
    t_.snaps.erase(name);
    return true;
  }

  bool op_clone() {
    // A clone of a live file, or of a file in a snapshot, into a new file at the root.
    std::string src_path = random_file();
    Ino src = 0;
    const ModelFile* content = nullptr;
    if (!t_.snaps.empty() && pick(2) == 0) {
      auto it = t_.snaps.begin();
      std::advance(it, pick(t_.snaps.size()));
      if (it->second.empty()) return true;
      auto f = it->second.begin();
      std::advance(f, pick(it->second.size()));
      auto root = ds_.lookup(make_ino(kSnapshotsDirView, kRootIno), it->first);
      if (!root.ok()) return false;
      Ino cur = root->ino;
      std::string path = f->first;
      size_t pos = 0;
      while (pos < path.size()) {
        size_t next = path.find('/', pos);
        if (next == std::string::npos) next = path.size();
        auto a = ds_.lookup(cur, path.substr(pos, next - pos));
        if (!a.ok()) return false;
        cur = a->ino;
        pos = next + 1;
      }
      src = cur;
      content = &f->second;
    } else {
      auto ino = resolve(ds_, src_path);
      if (!ino.ok()) return false;
      src = *ino;
      content = &t_.live.files[src_path];
    }
    const std::string path = new_name();
    t_.loose.insert(path);
    auto dst = ds_.create(kRootIno, path, 0644, 0, 0);
    if (!dst.ok()) return false;
    ModelFile copy = *content;
    t_.live.files[path] = ModelFile{};
    auto n = ds_.clone_range_sync(src, 0, dst->ino, 0, UINT64_MAX / 4);
    if (!n.ok()) return false;
    t_.live.files[path] = std::move(copy);
    return true;
  }

  bool op_create() {
    auto dir_it = t_.live.dirs.begin();
    std::advance(dir_it, pick(t_.live.dirs.size()));
    const std::string dir = *dir_it;
    const std::string path = dir.empty() ? new_name() : dir + "/" + new_name();
    auto d = resolve(ds_, dir);
    if (!d.ok()) return false;
    auto a = ds_.create(*d, base_of(path), 0644, 0, 0);
    if (!a.ok()) return false;
    t_.live.files[path] = ModelFile{};
    t_.loose.insert(path);
    return true;
  }

  bool write_at(const std::string& path, uint64_t off, std::vector<uint8_t> data) {
    auto ino = resolve(ds_, path);
    if (!ino.ok()) return false;
    // A write that fails may still have reached the device: it counts as a later write
    // whether or not it is acknowledged.
    t_.post[path].push_back(PostWrite{off, data});
    auto w = ds_.write_sync(*ino, off, data.data(), data.size());
    if (!w.ok()) return false;
    auto& f = t_.live.files[path].data;
    if (f.size() < off + data.size()) f.resize(off + data.size(), 0);
    std::copy(data.begin(), data.end(), f.begin() + off);
    return true;
  }

  bool op_write() {
    const std::string path = random_file();
    uint64_t len;
    switch (pick(4)) {
      case 0: len = 1 + pick(600); break;
      case 1: len = kGrainBytes; break;
      case 2: len = 1 + pick(3 * kGrainBytes); break;
      default: len = 1 + pick(256 * 1024); break;
    }
    uint64_t off = pick(kMaxFile - len);
    if (pick(2) == 0) off = off / kGrainBytes * kGrainBytes;
    std::vector<uint8_t> data(len);
    for (auto& b : data) b = static_cast<uint8_t>(1 + pick(255));
    return write_at(path, off, std::move(data));
  }

  bool op_overwrite_same() {
    // Overwrite an already written grain in place (the in-place path).
    const std::string path = random_file();
    const auto& f = t_.live.files[path].data;
    if (f.size() < kGrainBytes) return op_write();
    uint64_t off = pick(f.size() / kGrainBytes) * kGrainBytes;
    std::vector<uint8_t> data(kGrainBytes);
    for (auto& b : data) b = static_cast<uint8_t>(1 + pick(255));
    return write_at(path, off, std::move(data));
  }

  bool op_fsync() {
    const std::string path = random_file();
    auto ino = resolve(ds_, path);
    if (!ino.ok()) return false;
    if (!ds_.fsync_sync(*ino).ok()) return false;
    t_.synced();
    return true;
  }

  bool op_truncate() {
    const std::string path = random_file();
    auto ino = resolve(ds_, path);
    if (!ino.ok()) return false;
    const uint64_t size = pick(kMaxFile);
    auto& f = t_.live.files[path].data;
    const uint64_t old = f.size();
    if (size < old) {
      t_.post[path].push_back(PostWrite{size, std::vector<uint8_t>(old - size, 0)});
    }
    t_.loose.insert(path);  // size may be either
    if (!ds_.truncate_sync(*ino, size).ok()) return false;
    f.resize(size, 0);
    return true;
  }

  bool op_punch() {
    const std::string path = random_file();
    auto ino = resolve(ds_, path);
    if (!ino.ok()) return false;
    auto& f = t_.live.files[path].data;
    if (f.empty()) return true;
    const uint64_t off = pick(f.size());
    const uint64_t len = 1 + pick(std::min<uint64_t>(f.size() - off, 300 * 1024));
    t_.post[path].push_back(PostWrite{off, std::vector<uint8_t>(len, 0)});
    if (!ds_.punch_hole_sync(*ino, off, len).ok()) return false;
    std::fill(f.begin() + off, f.begin() + off + len, 0);
    return true;
  }

  bool op_unlink() {
    const std::string path = random_file();
    auto d = resolve(ds_, parent_of(path));
    if (!d.ok()) return false;
    t_.loose.insert(path);
    if (!ds_.unlink(*d, base_of(path)).ok()) return false;
    t_.live.files.erase(path);
    return true;
  }

  bool op_rename() {
    const std::string from = random_file();
    const std::string to = parent_of(from).empty() ? new_name() : parent_of(from) + "/" + new_name();
    auto d = resolve(ds_, parent_of(from));
    if (!d.ok()) return false;
    t_.loose.insert(from);
    t_.loose.insert(to);
    if (!ds_.rename(*d, base_of(from), *d, base_of(to), RenameFlags::kNone).ok()) return false;
    t_.live.files[to] = t_.live.files[from];
    t_.live.files.erase(from);
    // The file's post-sync writes follow it (by contents, loosely checked anyway).
    return true;
  }

  bool op_mkdir() {
    if (t_.live.dirs.size() > 4) return true;
    const std::string name = "d" + std::to_string(counter_++);
    if (!ds_.mkdir(kRootIno, name, 0755, 0, 0).ok()) return false;
    t_.live.dirs.insert(name);
    t_.loose.insert(name);
    return true;
  }

  Datastore& ds_;
  std::mt19937_64 rng_;
  Tracker t_;
  uint64_t counter_ = 0;
};

// Checks the recovered datastore against the tracker. Returns "" or the first problem.
std::string check_recovered(Datastore& ds, Tracker& t) {
  for (const auto& [path, file] : t.durable.files) {
    if (t.loose.count(path)) continue;
    auto ino = resolve(ds, path);
    if (!ino.ok()) return "durable file " + path + " is missing: " + ino.error().to_string();
    auto attr = ds.getattr(*ino);
    if (!attr.ok()) return "getattr " + path;
    uint64_t max_end = file.data.size();
    auto pw = t.post.find(path);
    if (pw != t.post.end()) {
      for (const auto& w : pw->second) max_end = std::max<uint64_t>(max_end, w.offset + w.data.size());
    }
    if (attr->size_bytes < file.data.size() || attr->size_bytes > max_end) {
      return path + ": size " + std::to_string(attr->size_bytes) + " outside [" +
             std::to_string(file.data.size()) + ", " + std::to_string(max_end) + "]";
    }
    std::vector<uint8_t> got(attr->size_bytes);
    auto r = ds.read_sync(*ino, 0, got.size(), got.data());
    if (!r.ok()) return "read " + path + ": " + r.error().to_string();
    for (uint64_t i = 0; i < got.size(); ++i) {
      const uint8_t base = i < file.data.size() ? file.data[i] : 0;
      if (got[i] == base) continue;
      bool ok = false;
      if (pw != t.post.end()) {
        for (const auto& w : pw->second) {
          if (i >= w.offset && i < w.offset + w.data.size() && w.data[i - w.offset] == got[i]) {
            ok = true;
            break;
          }
        }
      }
      if (!ok) {
        return path + ": byte " + std::to_string(i) + " is " + std::to_string(got[i]) +
               ", durable value " + std::to_string(base) + " and no later write wrote it";
      }
    }
  }
  for (const auto& [name, files] : t.durable_snaps) {
    if (t.loose_snaps.count(name)) continue;
    auto root = ds.lookup(make_ino(kSnapshotsDirView, kRootIno), name);
    if (!root.ok()) return "snapshot " + name + " is missing: " + root.error().to_string();
    for (const auto& [path, file] : files) {
      Ino cur = root->ino;
      size_t pos = 0;
      while (pos < path.size()) {
        size_t next = path.find('/', pos);
        if (next == std::string::npos) next = path.size();
        auto a = ds.lookup(cur, path.substr(pos, next - pos));
        if (!a.ok()) return "snapshot " + name + ": " + path + " is missing";
        cur = a->ino;
        pos = next + 1;
      }
      auto attr = ds.getattr(cur);
      if (!attr.ok() || attr->size_bytes != file.data.size()) {
        return "snapshot " + name + ": " + path + " has the wrong size";
      }
      std::vector<uint8_t> got(file.data.size());
      if (!ds.read_sync(cur, 0, got.size(), got.data()).ok() || got != file.data) {
        return "snapshot " + name + ": " + path + " differs from the frozen copy";
      }
    }
  }
  return "";
}

std::unique_ptr<SimDevice> make_device(uint64_t seed) {
  device::SimOptions o;
  o.size_bytes = 96ull << 20;
  o.seed = seed;
  auto dev = std::make_unique<SimDevice>(o);
  MkfsOptions mo;
  mo.journal_bytes = 4ull << 20;  // small ring: checkpoints happen often
  EXPECT_TRUE(mkfs(*dev, mo).ok());
  return dev;
}

void run_seed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed * 7919 + 13);
  auto dev = make_device(seed);
  SimDevice* raw = dev.get();
  OpenOptions oo;
  oo.commit_interval_ms = 50;
  auto opened = Datastore::open(std::move(dev), oo);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto ds = std::move(opened).value();
  // Cut the power somewhere in the first ~400 IOs after mount.
  raw->die_at_io(1 + rng() % 400);
  Workload w(*ds, seed);
  w.run(60);
  (void)ds->close();
  auto image = raw->power_loss(device::PowerLossMode::kRandom, seed);
  ds.reset();

  SimDevice* img = image.get();
  auto report = fsck(*img, FsckOptions{});
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  std::string problems;
  for (const auto& p : report->problems) problems += p + "\n";
  ASSERT_TRUE(report->problems.empty()) << problems;

  OpenOptions ro;
  ro.force = true;  // the image is marked mounted: the daemon "crashed"
  auto re = Datastore::open(std::move(image), ro);
  ASSERT_TRUE(re.ok()) << re.error().to_string();
  auto ds2 = std::move(re).value();
  const std::string problem = check_recovered(*ds2, w.tracker());
  EXPECT_EQ(problem, "");
  // The recovered datastore keeps working and closes cleanly.
  auto f = ds2->create(kRootIno, "after-recovery", 0644, 0, 0);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  std::vector<uint8_t> data(10000, 0x5a);
  ASSERT_TRUE(ds2->write_sync(f->ino, 123, data.data(), data.size()).ok());
  ASSERT_TRUE(ds2->close().ok());
}

uint64_t env_u64(const char* name, uint64_t dflt) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : dflt;
}

TEST(SimCrash, RandomWorkloadsSurvivePowerLoss) {
  if (const char* one = std::getenv("VSFS_CRASH_SEED")) {
    run_seed(std::strtoull(one, nullptr, 10));
    return;
  }
  const uint64_t seeds = env_u64("VSFS_CRASH_SEEDS", 3000);
  const uint64_t first = env_u64("VSFS_CRASH_FIRST_SEED", 1);
  // VSFS_CRASH_TRACE=1 names each seed on stderr before it runs: a crash of the test
  // process itself (an abort) then still says which seed it was in.
  const bool trace = env_u64("VSFS_CRASH_TRACE", 0) != 0;
  for (uint64_t s = first; s < first + seeds; ++s) {
    if (trace) std::fprintf(stderr, "sim-crash: seed %llu\n", static_cast<unsigned long long>(s));
    run_seed(s);
    if (HasFatalFailure() || HasNonfatalFailure()) {
      ADD_FAILURE() << "reproduce with VSFS_CRASH_SEED=" << s;
      return;
    }
  }
}

}  // namespace
}  // namespace vsfs
