// sim-crash: seeded random workloads on the simulated device, with the power cut during
// the workload in every seed, and again during recovery in many.
//
// A seed runs deterministically: the device completes IOs only when the test asks
// (SimOptions::manual_completions, in a seeded order: completions are reordered), and
// the datastore has no background threads: the committer's rounds, release steps and
// formatter steps are operations the workload draws like any other. So a seed issues
// the same IOs every time. It runs twice: once to count the IOs the workload issues,
// then with the power cut at an IO drawn uniformly from that count. Writes not covered
// by a completed flush are dropped, kept or torn (power_loss kRandom). In about a third
// of the seeds, recovery is itself cut at a uniformly drawn IO of it, up to three times.
// The journal is 1 MiB (256 grains): it wraps every few dozen commits. (A commit that
// finds it full and checkpoints first is rare since transactions are bounded by the
// journal queue; tests/unit/meta/journal_test.cc cuts the power at every IO of such
// commits.) The committer's trigger is skipped now and then, so transactions vary.
//
// The workload includes fallocate mode 0 (with and without KEEP_SIZE): its grains read
// zeros, count as touched for the .cbt check, and a write into them needs no new grain.
// Now and then a large one past the files' data (KEEP_SIZE, megabytes: many pieces, with
// commits between them) lets a cut leave part of a reservation. The closing line counts
// the fallocates run and the cuts that fell inside one.
//
// Symlinks (targets up to 4095 bytes: extra chains of one or two blocks) and xattrs on
// the files (setxattr and removexattr, values up to 4096 bytes) are drawn too.
//
// The oracle is the list of states the datastore passed through since the last
// acknowledged durability point (fsync, a snapshot's creation or deletion, a commit
// round that succeeded) up to the cut. After the final recovery:
//  - every name (file or directory, found by walking the whole tree) is in a state it
//    had in one of them: absent, a directory, or a file whose size is one it had;
//  - every byte of every file holds a value that file had at that offset in one of them
//    (writes are not atomic across grains or sectors, so this is per byte);
//  - every file's xattrs are exactly the set it had in one of them, and every symlink
//    reads back its target whole;
//  - every snapshot exists or not as in one of them, and when it exists reads exactly as
//    frozen, every file, name, symlink and xattr;
//  - the .cbt maps of every pair of snapshots are exact: every grain that differs is
//    listed, and every grain listed was written or unmapped between the two (files made
//    since the older one are listed in full); .cbt/B/full lists every non-zero grain;
//  - fsck finds the image clean after every cut, nested ones included, reading every
//    formatted free block: one past the allocation window that holds data breaks the
//    window rule (the datastore runs with a window of 2 blocks, so that writes pass it
//    and wait for the commit that covers their block; the closing line counts them and
//    the formatted blocks the final recoveries formatted again);
//  - the lifetime counters the recovery finds are at least what the last superblock
//    write before the cut stored and at most what the crashed mount had counted, and
//    the recovery counts itself (and any recovery cut after its first superblock write)
//    as an unclean mount;
//  - the recovered datastore takes writes and closes cleanly.
// A cut's phase: replay when it fell in a recovery; release or format when it fell in
// such a step; else by the IO: a write to a superblock grain is superblock, a write in
// the journal ring journal, a flush commit, any other write during a commit round, an
// fsync, a snapshot operation or a close checkpoint (home locations), and the rest
// (data writes and reads of the data path) data.
//
// VSFS_CRASH_SEEDS=N runs N seeds (default 2000) from VSFS_CRASH_FIRST_SEED (default 1);
// VSFS_CRASH_SEED=S runs only seed S; VSFS_CRASH_TRACE=1 names each seed on stderr.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "device/sim_device.h"
#include "format/format.h"
#include "support/borrowed_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::PowerLossMode;
using device::SimDevice;

constexpr uint64_t kDeviceBytes = 72ull << 20;
constexpr uint64_t kJournalBytes = 1ull << 20;
constexpr uint64_t kMaxFile = 768 * 1024;
constexpr uint64_t kMaxGrains = kMaxFile / kGrainBytes;
constexpr int kOps = 360;
constexpr int kMaxNested = 3;

// ---- the model ------------------------------------------------------------------------

using Bytes = std::vector<uint8_t>;
using Xattrs = std::map<std::string, std::string>;

struct File {
  uint64_t id = 0;                        // the same file under any name
  std::shared_ptr<const Bytes> data = std::make_shared<Bytes>();
  std::shared_ptr<const Xattrs> xattrs = std::make_shared<Xattrs>();
  // Per grain, the operation number that last wrote or unmapped it (0: never).
  std::shared_ptr<const std::vector<uint64_t>> touched =
      std::make_shared<std::vector<uint64_t>>(kMaxGrains, 0);
};

struct Snap {
  uint64_t op = 0;  // operation number at its creation
  std::map<std::string, File> files;
  std::set<std::string> dirs;
  std::map<std::string, std::string> links;
};

struct State {
  std::map<std::string, File> files;  // path -> file
  std::set<std::string> dirs{""};
  std::map<std::string, std::string> links;  // path -> symlink target
  std::map<std::string, Snap> snaps;  // name -> frozen tree
};

std::string parent_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? "" : p.substr(0, s);
}
std::string leaf_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

// ---- coverage -------------------------------------------------------------------------

enum Phase { kData, kJournal, kCommit, kCheckpoint, kSuperblock, kReplay, kRelease, kFormat,
             kPhases };
constexpr std::array<const char*, kPhases> kPhaseNames = {
    "data", "journal", "commit", "checkpoint", "superblock", "replay", "release", "format"};

struct Coverage {
  uint64_t seeds = 0, failures = 0;
  std::array<uint64_t, kPhases> cuts{};
  uint64_t nested = 0, seeds_nested = 0;
  uint64_t wraps = 0, seeds_wrapped = 0;
  // Seeds whose crashed mount had stored counts beyond the open's (the check compared
  // more than zeros).
  uint64_t lifetime_stored = 0;
  uint64_t allocates = 0, cuts_in_allocate = 0;  // fallocate ops run, cuts inside one
  uint64_t far_allocates = 0, cuts_in_far_allocate = 0;  // of those: many-piece ones
  uint64_t symlinks = 0, xattr_ops = 0;  // symlinks made, setxattr and removexattr run
  // The final recoveries: formatted free blocks they moved back to be formatted, of the
  // formatted free blocks they found.
  uint64_t reformatted = 0, formatted_found = 0;
  uint64_t window_waits = 0;  // writes that waited for a commit to cover their block
};

// What the workload is doing, for naming the phase of a cut.
enum class Step { kOp, kMetaOp, kRelease, kFormat };

// ---- driving the datastore ------------------------------------------------------------

class Driver {
 public:
  Driver(Datastore& ds, SimDevice& dev) : ds_(ds), dev_(dev) {}

  // Starts an asynchronous operation and runs the device (and, when a write waits for a
  // commit, the committer's round) until it is answered.
  template <typename T>
  Result<T> await(const std::function<void(Done<T>)>& start) {
    std::optional<Result<T>> out;
    start([&out](Result<T> r) { out.emplace(std::move(r)); });
    // A failed round (the power is off) answers the commit waiters it found; one that
    // queued itself while the round ran is answered by the next, as the committer's
    // next round does.
    int failed_rounds = 0;
    for (;;) {
      const uint64_t ran = dev_.run_pending();
      if (out) return std::move(*out);
      auto stepped = ds_.run_background_step(BackgroundStep::kCommitIfWanted);
      if (ran == 0 && !stepped.ok() && ++failed_rounds < 3) continue;
      if (ran == 0 && (!stepped.ok() || !*stepped)) {
        ADD_FAILURE() << "an operation waits for nothing: it would never be answered"
                      << (stepped.ok() ? "" : " (" + stepped.error().to_string() + ")");
        return make_error(EDEADLK, ErrorKind::kIo, "stuck");
      }
    }
  }

  Result<uint64_t> read(Ino ino, uint64_t off, uint64_t len, void* buf) {
    return await<uint64_t>([&](Done<uint64_t> d) { ds_.read(ino, off, len, buf, std::move(d)); });
  }
  Result<uint64_t> write(Ino ino, uint64_t off, const void* data, uint64_t len) {
    return await<uint64_t>(
        [&](Done<uint64_t> d) { ds_.write(ino, off, data, len, std::move(d)); });
  }
  Result<void> punch(Ino ino, uint64_t off, uint64_t len) {
    return await<void>([&](Done<void> d) { ds_.punch_hole(ino, off, len, std::move(d)); });
  }
  Result<void> allocate(Ino ino, uint64_t off, uint64_t len, bool keep_size) {
    return await<void>(
        [&](Done<void> d) { ds_.allocate(ino, off, len, keep_size, std::move(d)); });
  }
  Result<void> truncate(Ino ino, uint64_t size) {
    return await<void>([&](Done<void> d) { ds_.truncate(ino, size, std::move(d)); });
  }
  Result<void> fsync(Ino ino) {
    return await<void>([&](Done<void> d) { ds_.fsync(ino, std::move(d)); });
  }
  Result<uint64_t> clone(Ino src, Ino dst) {
    return await<uint64_t>([&](Done<uint64_t> d) {
      ds_.clone_range(src, 0, dst, 0, UINT64_MAX / 4, std::move(d));
    });
  }

  Result<Ino> resolve(Ino root, const std::string& path) {
    Ino cur = root;
    size_t pos = 0;
    while (pos < path.size()) {
      size_t next = path.find('/', pos);
      if (next == std::string::npos) next = path.size();
      VSFS_ASSIGN_OR_RETURN(Attr a, ds_.lookup(cur, path.substr(pos, next - pos)));
      cur = a.ino;
      pos = next + 1;
    }
    return cur;
  }

  Result<Bytes> read_all(Ino ino) {
    VSFS_ASSIGN_OR_RETURN(Attr a, ds_.getattr(ino));
    Bytes v(a.size_bytes);
    if (!v.empty()) {
      VSFS_ASSIGN_OR_RETURN(uint64_t n, read(ino, 0, v.size(), v.data()));
      if (n != v.size()) return make_error(EIO, ErrorKind::kIo, "short read");
    }
    return v;
  }

  Datastore& ds() { return ds_; }
  bool dead() const { return dev_.dead(); }

 private:
  Datastore& ds_;
  SimDevice& dev_;
};

// ---- the workload ---------------------------------------------------------------------

class Workload {
 public:
  Workload(Driver& d, uint64_t seed, bool verbose)
      : d_(d), rng_(seed), verbose_(verbose) {
    states_.push_back(live_);
  }

  // Runs until `ops` operations are done or one fails (the power is off).
  void run(int ops) {
    for (int i = 0; i < ops; ++i) {
      ++op_;
      step_ = Step::kOp;
      const bool ok = one_op();
      if (verbose_) std::fprintf(stderr, "op %llu: %s%s\n", static_cast<unsigned long long>(op_),
                                 what_.c_str(), ok ? "" : " FAILED");
      states_.push_back(live_);
      if (!ok) return;
      // The committer's trigger: a waiting fsync or a large open transaction. It is late
      // now and then, as a loaded committer is, so that transactions grow large and
      // changes wait for room in them.
      if (pick(10) < 3) continue;
      step_ = Step::kMetaOp;
      auto c = d_.ds().run_background_step(BackgroundStep::kCommitIfWanted);
      if (!c.ok()) return;
      if (*c) {
        if (verbose_) std::fprintf(stderr, "  commit (wanted)\n");
        durable();
      }
    }
  }

  const std::vector<State>& states() const { return states_; }
  uint64_t allocates() const { return allocates_; }
  bool cut_in_allocate() const { return in_allocate_; }
  uint64_t far_allocates() const { return far_allocates_; }
  uint64_t symlinks() const { return symlinks_; }
  uint64_t xattr_ops() const { return xattr_ops_; }
  bool cut_in_far_allocate() const { return in_far_; }
  Step step() const { return step_; }

 private:
  uint64_t pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }

  // Everything before now is durable: the oracle forgets older states.
  void durable() {
    states_.clear();
    states_.push_back(live_);
  }

  std::string random_file() {
    auto it = live_.files.begin();
    std::advance(it, pick(live_.files.size()));
    return it->first;
  }
  std::string new_name() { return "f" + std::to_string(counter_++); }

  bool one_op() {
    const uint64_t r = pick(1000);
    if (r < 60 || live_.files.empty()) return op_create();
    if (r < 315) return op_write();
    if (r < 330) return op_symlink();
    if (r < 345) return op_setxattr();
    if (r < 355) return op_removexattr();
    if (r < 365) return op_allocate_far();
    if (r < 400) return op_allocate();
    if (r < 470) return op_overwrite_in_place();
    if (r < 560) return op_fsync();
    if (r < 610) return op_truncate();
    if (r < 670) return op_punch();
    if (r < 720) return op_unlink();
    if (r < 760) return op_rename();
    if (r < 780) return op_mkdir();
    if (r < 810) return op_snapshot();
    if (r < 835) return op_delete_snapshot();
    if (r < 850) return op_clone();
    if (r < 900) return op_commit();
    if (r < 950) return op_release();
    return op_format();
  }

  static void touch(File& f, uint64_t from, uint64_t to, uint64_t op) {
    auto t = std::make_shared<std::vector<uint64_t>>(*f.touched);
    for (uint64_t g = from / kGrainBytes; g < div_round_up(to, kGrainBytes) && g < kMaxGrains; ++g) {
      (*t)[g] = op;
    }
    f.touched = std::move(t);
  }

  bool op_create() {
    auto dir_it = live_.dirs.begin();
    std::advance(dir_it, pick(live_.dirs.size()));
    const std::string dir = *dir_it;
    const std::string path = dir.empty() ? new_name() : dir + "/" + new_name();
    auto parent = d_.resolve(kRootIno, dir);
    if (!parent.ok()) return false;
    File f;
    f.id = ++ids_;
    live_.files[path] = f;
    note("create " + path);
    return d_.ds().create(*parent, leaf_of(path), 0644, 0, 0).ok();
  }

  bool write_at(const std::string& path, uint64_t off, Bytes data) {
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    // The state after it is recorded whether or not it is acknowledged: a write that
    // fails may still have reached the device.
    note("write " + path + " " + std::to_string(off) + "+" + std::to_string(data.size()));
    File& f = live_.files[path];
    auto next = std::make_shared<Bytes>(*f.data);
    if (next->size() < off + data.size()) next->resize(off + data.size(), 0);
    std::copy(data.begin(), data.end(), next->begin() + static_cast<ptrdiff_t>(off));
    f.data = std::move(next);
    touch(f, off, off + data.size(), op_);
    auto w = d_.write(*ino, off, data.data(), data.size());
    return w.ok();
  }

  Bytes random_bytes(uint64_t len) {
    Bytes data(len);
    for (auto& b : data) b = static_cast<uint8_t>(1 + pick(255));
    return data;
  }

  bool op_write() {
    const std::string path = random_file();
    uint64_t len;
    switch (pick(4)) {
      case 0: len = 1 + pick(600); break;
      case 1: len = kGrainBytes; break;
      case 2: len = 1 + pick(3 * kGrainBytes); break;
      default: len = 1 + pick(192 * 1024); break;
    }
    uint64_t off = pick(kMaxFile - len);
    if (pick(2) == 0) off = off / kGrainBytes * kGrainBytes;
    return write_at(path, off, random_bytes(len));
  }

  bool op_overwrite_in_place() {
    const std::string path = random_file();
    const uint64_t size = live_.files[path].data->size();
    if (size < kGrainBytes) return op_write();
    const uint64_t off = pick(size / kGrainBytes) * kGrainBytes;
    return write_at(path, off, random_bytes(kGrainBytes));
  }

  bool op_fsync() {
    step_ = Step::kMetaOp;
    const std::string path = random_file();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    note("fsync " + path);
    if (!d_.fsync(*ino).ok()) return false;
    durable();
    return true;
  }

  bool op_commit() {
    step_ = Step::kMetaOp;
    note("commit");
    auto c = d_.ds().run_background_step(BackgroundStep::kCommit);
    if (!c.ok()) return false;
    durable();
    return true;
  }

  bool op_release() {
    step_ = Step::kRelease;
    note("release step");
    return d_.ds().run_background_step(BackgroundStep::kRelease).ok();
  }

  bool op_format() {
    step_ = Step::kFormat;
    note("format step");
    return d_.ds().run_background_step(BackgroundStep::kFormat).ok();
  }

  bool op_truncate() {
    const std::string path = random_file();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    const uint64_t size = pick(kMaxFile);
    File& f = live_.files[path];
    const uint64_t old = f.data->size();
    auto next = std::make_shared<Bytes>(*f.data);
    next->resize(size, 0);
    f.data = std::move(next);
    // Not growing, it unmaps everything past the new size (reservations past the old
    // end too).
    if (size <= old) touch(f, size, std::max<uint64_t>(old, kMaxFile), op_);
    note("truncate " + path + " " + std::to_string(old) + " -> " + std::to_string(size));
    return d_.truncate(*ino, size).ok();
  }

  // fallocate mode 0: the content stays (allocated grains read zeros); without KEEP_SIZE
  // the size grows to the range's end. The allocation is a change that reads as zeros
  // (.cbt lists it as such): the grains count as touched.
  bool op_allocate() {
    const std::string path = random_file();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    const uint64_t len = 1 + pick(pick(2) == 0 ? 3 * kGrainBytes : 400 * 1024);
    uint64_t off = pick(kMaxFile - len);
    if (pick(2) == 0) off = off / kGrainBytes * kGrainBytes;
    const bool keep = pick(3) == 0;
    File& f = live_.files[path];
    if (!keep && off + len > f.data->size()) {
      auto next = std::make_shared<Bytes>(*f.data);
      next->resize(off + len, 0);
      f.data = std::move(next);
    }
    touch(f, off, off + len, op_);
    ++allocates_;
    in_allocate_ = true;
    note("allocate " + path + " " + std::to_string(off) + "+" + std::to_string(len) +
         (keep ? " keep_size" : ""));
    const bool ok = d_.allocate(*ino, off, len, keep).ok();
    if (ok) in_allocate_ = false;
    return ok;
  }

  // A large reservation past what the model's files ever reach, KEEP_SIZE: many pieces,
  // so that commits (the journal gate's) fall between them and a cut can leave a part.
  // Nothing a reader sees changes; truncation below it and unlink release it. ENOSPC up
  // front changes nothing and is no failure.
  bool op_allocate_far() {
    const std::string path = random_file();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    const uint64_t off = kMaxFile + pick(4096) * kGrainBytes;
    const uint64_t len = (2ull << 20) + pick(4ull << 20);
    ++allocates_;
    ++far_allocates_;
    in_allocate_ = true;
    in_far_ = true;
    note("allocate far " + path + " " + std::to_string(off) + "+" + std::to_string(len));
    auto r = d_.allocate(*ino, off, len, true);
    if (!r.ok() && (r.error().errno_value != ENOSPC || d_.dead())) return false;
    in_allocate_ = false;
    in_far_ = false;
    return true;
  }

  bool op_punch() {
    const std::string path = random_file();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    File& f = live_.files[path];
    if (f.data->empty()) return true;
    const uint64_t off = pick(f.data->size());
    const uint64_t len = 1 + pick(std::min<uint64_t>(f.data->size() - off, 300 * 1024));
    auto next = std::make_shared<Bytes>(*f.data);
    std::fill(next->begin() + static_cast<ptrdiff_t>(off),
              next->begin() + static_cast<ptrdiff_t>(off + len), 0);
    f.data = std::move(next);
    touch(f, off, off + len, op_);
    note("punch " + path + " " + std::to_string(off) + "+" + std::to_string(len));
    return d_.punch(*ino, off, len).ok();
  }

  // A symlink in a random directory; now and then one whose target takes two extra
  // blocks.
  bool op_symlink() {
    auto dir_it = live_.dirs.begin();
    std::advance(dir_it, pick(live_.dirs.size()));
    const std::string dir = *dir_it;
    const std::string path = dir.empty() ? new_name() : dir + "/" + new_name();
    auto parent = d_.resolve(kRootIno, dir);
    if (!parent.ok()) return false;
    std::string target(1 + pick(pick(4) == 0 ? format::kMaxSymlinkBytes : 80), 'x');
    for (char& c : target) c = static_cast<char>('a' + pick(26));
    live_.links[path] = target;
    ++symlinks_;
    note("symlink " + path + " (" + std::to_string(target.size()) + " bytes)");
    return d_.ds().symlink(*parent, leaf_of(path), target, 0, 0).ok();
  }

  bool op_setxattr() {
    const std::string path = random_file();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    static const char* kNames[] = {"user.a", "user.b", "trusted.c", "security.d"};
    const std::string name = kNames[pick(4)];
    std::string value(pick(4) == 0 ? pick(format::kMaxXattrValueBytes + 1) : pick(64), 'v');
    for (char& c : value) c = static_cast<char>(pick(256));
    File& f = live_.files[path];
    auto next = std::make_shared<Xattrs>(*f.xattrs);
    (*next)[name] = value;
    f.xattrs = std::move(next);
    ++xattr_ops_;
    note("setxattr " + path + " " + name + " (" + std::to_string(value.size()) + " bytes)");
    return d_.ds().setxattr(*ino, name, value, 0).ok();
  }

  bool op_removexattr() {
    const std::string path = random_file();
    File& f = live_.files[path];
    if (f.xattrs->empty()) return op_setxattr();
    auto ino = d_.resolve(kRootIno, path);
    if (!ino.ok()) return false;
    auto it = f.xattrs->begin();
    std::advance(it, pick(f.xattrs->size()));
    const std::string name = it->first;
    auto next = std::make_shared<Xattrs>(*f.xattrs);
    next->erase(name);
    f.xattrs = std::move(next);
    ++xattr_ops_;
    note("removexattr " + path + " " + name);
    return d_.ds().removexattr(*ino, name).ok();
  }

  bool op_unlink() {
    if (!live_.links.empty() && pick(3) == 0) {
      auto it = live_.links.begin();
      std::advance(it, pick(live_.links.size()));
      const std::string path = it->first;
      auto parent = d_.resolve(kRootIno, parent_of(path));
      if (!parent.ok()) return false;
      live_.links.erase(it);
      note("unlink symlink " + path);
      return d_.ds().unlink(*parent, leaf_of(path)).ok();
    }
    const std::string path = random_file();
    auto parent = d_.resolve(kRootIno, parent_of(path));
    if (!parent.ok()) return false;
    live_.files.erase(path);
    note("unlink " + path);
    return d_.ds().unlink(*parent, leaf_of(path)).ok();
  }

  bool op_rename() {
    const std::string from = random_file();
    // Into another directory now and then.
    std::string dir = parent_of(from);
    if (pick(3) == 0) {
      auto it = live_.dirs.begin();
      std::advance(it, pick(live_.dirs.size()));
      dir = *it;
    }
    const std::string to = dir.empty() ? new_name() : dir + "/" + new_name();
    auto src = d_.resolve(kRootIno, parent_of(from));
    auto dst = d_.resolve(kRootIno, dir);
    if (!src.ok() || !dst.ok()) return false;
    live_.files[to] = live_.files[from];
    live_.files.erase(from);
    note("rename " + from + " " + to);
    return d_.ds().rename(*src, leaf_of(from), *dst, leaf_of(to), RenameFlags::kNone).ok();
  }

  bool op_mkdir() {
    if (live_.dirs.size() > 5) return op_write();
    const std::string name = "d" + std::to_string(counter_++);
    live_.dirs.insert(name);
    note("mkdir " + name);
    return d_.ds().mkdir(kRootIno, name, 0755, 0, 0).ok();
  }

  bool op_snapshot() {
    if (live_.snaps.size() >= 4) return op_delete_snapshot();
    step_ = Step::kMetaOp;
    const std::string name = "s" + std::to_string(counter_++);
    Snap s;
    s.op = op_;
    s.files = live_.files;
    s.dirs = live_.dirs;
    s.links = live_.links;
    live_.snaps[name] = std::move(s);
    note("snapshot " + name);
    if (!d_.ds().mkdir(make_ino(kSnapshotsDirView, kRootIno), name, 0755, 0, 0).ok()) {
      return false;
    }
    durable();  // taking a snapshot commits everything before it
    return true;
  }

  bool op_delete_snapshot() {
    if (live_.snaps.empty()) return op_snapshot();
    step_ = Step::kMetaOp;
    auto it = live_.snaps.begin();
    std::advance(it, pick(live_.snaps.size()));
    const std::string name = it->first;
    live_.snaps.erase(it);
    note("delete snapshot " + name);
    if (!d_.ds().rmdir(make_ino(kSnapshotsDirView, kRootIno), name).ok()) return false;
    durable();
    return true;
  }

  bool op_clone() {
    // A clone of a live file, or of a file in a snapshot, into a new file at the root.
    Ino src = 0;
    File content;
    if (!live_.snaps.empty() && pick(2) == 0) {
      auto it = live_.snaps.begin();
      std::advance(it, pick(live_.snaps.size()));
      if (it->second.files.empty()) return true;
      auto f = it->second.files.begin();
      std::advance(f, pick(it->second.files.size()));
      auto root = d_.ds().lookup(make_ino(kSnapshotsDirView, kRootIno), it->first);
      if (!root.ok()) return false;
      auto ino = d_.resolve(root->ino, f->first);
      if (!ino.ok()) return false;
      src = *ino;
      content = f->second;
    } else {
      const std::string from = random_file();
      auto ino = d_.resolve(kRootIno, from);
      if (!ino.ok()) return false;
      src = *ino;
      content = live_.files[from];
    }
    const std::string path = new_name();
    File f;
    f.id = ++ids_;
    live_.files[path] = f;
    states_.push_back(live_);  // created, not yet cloned
    auto dst = d_.ds().create(kRootIno, path, 0644, 0, 0);
    if (!dst.ok()) return false;
    f.data = content.data;
    touch(f, 0, kMaxFile, op_);
    note("clone into " + path);
    live_.files[path] = f;
    return d_.clone(src, dst->ino).ok();
  }

  void note(std::string what) { what_ = std::move(what); }

  Driver& d_;
  std::mt19937_64 rng_;
  bool verbose_;
  std::string what_;
  State live_;
  std::vector<State> states_;  // since the last durability point, oldest first
  Step step_ = Step::kOp;
  uint64_t op_ = 0;
  uint64_t counter_ = 0;
  uint64_t ids_ = 0;
  uint64_t allocates_ = 0;     // allocate ops started
  bool in_allocate_ = false;   // the last allocate did not return (the power went)
  uint64_t far_allocates_ = 0;  // of allocates_: large ones past the files (many pieces)
  bool in_far_ = false;         // ... and it was a large one
  uint64_t symlinks_ = 0;
  uint64_t xattr_ops_ = 0;
};

// ---- the oracle -----------------------------------------------------------------------

struct Found {
  std::map<std::string, Ino> files;
  std::set<std::string> dirs;
  std::map<std::string, Ino> links;
};

// Walks a tree (the live one, or a snapshot's) and names everything in it.
std::string walk(Datastore& ds, Ino dir, const std::string& prefix, Found& out, int depth = 0) {
  if (depth > 8) return "directory tree deeper than the workload makes";
  auto entries = ds.readdir(dir);
  if (!entries.ok()) return "readdir " + prefix + ": " + entries.error().to_string();
  for (const auto& e : *entries) {
    if (e.name == "." || e.name == ".." || e.name == kSnapshotsDirName || e.name == kCbtDirName ||
        e.name == ".vsfs") {
      continue;
    }
    const std::string path = prefix.empty() ? e.name : prefix + "/" + e.name;
    if (S_ISDIR(e.mode)) {
      out.dirs.insert(path);
      std::string p = walk(ds, e.ino, path, out, depth + 1);
      if (!p.empty()) return p;
    } else if (S_ISLNK(e.mode)) {
      out.links[path] = e.ino;
    } else {
      out.files[path] = e.ino;
    }
  }
  return "";
}

std::string check_file(Driver& d, const std::string& what, Ino ino,
                       const std::vector<const File*>& versions) {
  auto got = d.read_all(ino);
  if (!got.ok()) return what + ": read failed: " + got.error().to_string();
  bool size_ok = false;
  for (const File* v : versions) size_ok |= v->data->size() == got->size();
  if (!size_ok) {
    std::string sizes;
    for (const File* v : versions) sizes += " " + std::to_string(v->data->size());
    return what + ": size " + std::to_string(got->size()) + " is none it had (" + sizes + " )";
  }
  for (uint64_t i = 0; i < got->size(); ++i) {
    bool ok = false;
    for (const File* v : versions) {
      const uint8_t want = i < v->data->size() ? (*v->data)[i] : 0;
      if (want == (*got)[i]) {
        ok = true;
        break;
      }
    }
    if (!ok) {
      return what + ": byte " + std::to_string(i) + " is " + std::to_string((*got)[i]) +
             ", a value it never had there";
    }
  }
  return "";
}

// The xattrs `ino` has, as a map.
Result<Xattrs> xattrs_of(Datastore& ds, Ino ino) {
  VSFS_ASSIGN_OR_RETURN(auto list, ds.xattrs(ino));
  return Xattrs(list.begin(), list.end());
}

struct Extent {
  uint64_t off, len;
  bool data;
};

Result<std::vector<Extent>> cbt_extents(Driver& d, const std::string& b, const std::string& a,
                                        const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(Ino root, d.resolve(kRootIno, kCbtDirName));
  VSFS_ASSIGN_OR_RETURN(Ino node, d.resolve(root, b + "/" + a + "/" + path));
  VSFS_ASSIGN_OR_RETURN(Bytes text, d.read_all(node));
  std::istringstream in(std::string(text.begin(), text.end()));
  std::vector<Extent> out;
  uint64_t off, len;
  std::string kind;
  while (in >> off >> len >> kind) out.push_back(Extent{off, len, kind == "data"});
  return out;
}

// .cbt/B/A/<path> of every file of B: exact against the model's contents and the
// operations that touched each grain.
std::string check_cbt(Driver& d, const std::string& bname, const Snap& b,
                      const std::string& aname, const Snap& a) {
  std::map<uint64_t, const File*> in_a;
  for (const auto& [p, f] : a.files) in_a[f.id] = &f;
  for (const auto& [path, f] : b.files) {
    const std::string what = ".cbt/" + bname + "/" + aname + "/" + path;
    auto ext = cbt_extents(d, bname, aname, path);
    if (!ext.ok()) return what + ": " + ext.error().to_string();
    const Bytes& bd = *f.data;
    const uint64_t grains = div_round_up(bd.size(), kGrainBytes);
    std::vector<int> listed(grains, 0);  // 0 no, 1 data, 2 zero
    for (const Extent& e : *ext) {
      if (e.off % kGrainBytes != 0 || e.off + e.len > grains * kGrainBytes) {
        return what + ": extent " + std::to_string(e.off) + "+" + std::to_string(e.len) +
               " is not grain-aligned inside the disk";
      }
      for (uint64_t g = e.off / kGrainBytes; g < div_round_up(e.off + e.len, kGrainBytes); ++g) {
        listed[g] = e.data ? 1 : 2;
      }
    }
    auto it = in_a.find(f.id);
    for (uint64_t g = 0; g < grains; ++g) {
      const uint64_t from = g * kGrainBytes, to = std::min<uint64_t>(from + kGrainBytes, bd.size());
      bool zero = true;
      for (uint64_t i = from; i < to; ++i) zero &= bd[i] == 0;
      if (listed[g] == 2 && !zero) return what + ": grain " + std::to_string(g) + " listed zero holds data";
      if (it == in_a.end()) {
        // Made since A: listed in full.
        if (listed[g] == 0) return what + ": a disk made since A misses grain " + std::to_string(g);
        continue;
      }
      const Bytes& ad = *it->second->data;
      bool same = true;
      for (uint64_t i = from; i < to && same; ++i) same = (i < ad.size() ? ad[i] : 0) == bd[i];
      if (!same && listed[g] == 0) return what + ": changed grain " + std::to_string(g) + " is missing";
      if (listed[g] != 0 && (*f.touched)[g] <= a.op) {
        return what + ": grain " + std::to_string(g) + " is listed but was not written since A";
      }
    }
  }
  // .cbt/B/full: every grain that holds data.
  for (const auto& [path, f] : b.files) {
    auto ext = cbt_extents(d, bname, "full", path);
    if (!ext.ok()) return ".cbt/" + bname + "/full/" + path + ": " + ext.error().to_string();
    const Bytes& bd = *f.data;
    for (uint64_t g = 0; g < div_round_up(bd.size(), kGrainBytes); ++g) {
      bool zero = true;
      for (uint64_t i = g * kGrainBytes; i < std::min<uint64_t>((g + 1) * kGrainBytes, bd.size()); ++i) {
        zero &= bd[i] == 0;
      }
      if (zero) continue;
      bool covered = false;
      for (const Extent& e : *ext) covered |= e.data && e.off <= g * kGrainBytes && g * kGrainBytes < e.off + e.len;
      if (!covered) return ".cbt/" + bname + "/full/" + path + ": grain " + std::to_string(g) + " with data is not listed";
    }
  }
  return "";
}

std::string check_recovered(Driver& d, const std::vector<State>& states) {
  Datastore& ds = d.ds();
  Found found;
  std::string p = walk(ds, kRootIno, "", found);
  if (!p.empty()) return p;
  std::set<std::string> names;
  for (const State& s : states) {
    for (const auto& [path, f] : s.files) names.insert(path);
    names.insert(s.dirs.begin(), s.dirs.end());
  }
  for (const auto& [path, ino] : found.files) names.insert(path);
  names.insert(found.dirs.begin(), found.dirs.end());
  for (const State& s : states) {
    for (const auto& [path, target] : s.links) names.insert(path);
  }
  for (const auto& [path, ino] : found.links) names.insert(path);
  names.erase("");
  for (const std::string& name : names) {
    const bool is_file = found.files.count(name) != 0;
    const bool is_dir = found.dirs.count(name) != 0;
    // A symlink: one that existed under this name, with its whole target.
    if (auto fl = found.links.find(name); fl != found.links.end()) {
      const std::string* want = nullptr;
      for (const State& s : states) {
        if (auto it = s.links.find(name); it != s.links.end()) want = &it->second;
      }
      if (want == nullptr) return "symlink " + name + " is a state it never had";
      auto got = ds.readlink(fl->second);
      if (!got.ok()) return "readlink " + name + ": " + got.error().to_string();
      if (*got != *want) return "symlink " + name + ": target differs";
      continue;
    }
    bool was_link = false;
    for (const State& s : states) was_link |= s.links.count(name) != 0;
    std::set<uint64_t> ids;  // the file this name named (names are never reused)
    bool had_absent = false, had_dir = false;
    for (const State& s : states) {
      auto f = s.files.find(name);
      if (f != s.files.end()) {
        ids.insert(f->second.id);
      } else if (s.dirs.count(name)) {
        had_dir = true;
      } else if (!s.links.count(name)) {
        had_absent = true;
      }
    }
    if (was_link && !is_file && !is_dir) {
      bool link_absent = false;
      for (const State& s : states) link_absent |= !s.links.count(name);
      if (!link_absent) return "symlink " + name + " is missing";
      continue;
    }
    if (is_dir && !had_dir) return "directory " + name + " is a state it never had";
    if (!is_file && !is_dir && !had_absent) return name + " is missing";
    if (is_file) {
      if (ids.empty()) return "file " + name + " is a state it never had";
      // Its contents are those of the file, under whichever name it had then (a rename
      // may be lost while a later write to the new name survives).
      std::vector<const File*> versions;
      for (const State& s : states) {
        for (const auto& [path, f] : s.files) {
          if (!ids.count(f.id)) continue;
          bool seen = false;  // most states share a file's contents: each one once
          for (const File* v : versions) seen |= v->data == f.data;
          if (!seen) versions.push_back(&f);
        }
      }
      std::string problem = check_file(d, name, found.files[name], versions);
      if (!problem.empty()) return problem;
      // Its xattrs: one set it had (each change is one metadata change).
      auto got = xattrs_of(ds, found.files[name]);
      if (!got.ok()) return name + ": xattrs: " + got.error().to_string();
      bool had = false;
      for (const State& s : states) {
        for (const auto& [path, f] : s.files) had |= ids.count(f.id) && *f.xattrs == *got;
      }
      if (!had) return name + ": its " + std::to_string(got->size()) + " xattrs are a set it never had";
    }
  }
  // Snapshots: exist or not as in some state; when they exist, exactly as frozen.
  std::set<std::string> snap_names;
  for (const State& s : states) {
    for (const auto& [n, snap] : s.snaps) snap_names.insert(n);
  }
  auto listed = ds.readdir(make_ino(kSnapshotsDirView, kRootIno));
  if (!listed.ok()) return "readdir .snapshots: " + listed.error().to_string();
  std::map<std::string, Ino> present;
  for (const auto& e : *listed) {
    if (e.name != "." && e.name != "..") present[e.name] = e.ino;
  }
  for (const auto& [n, ino] : present) snap_names.insert(n);
  std::map<std::string, const Snap*> alive;
  for (const std::string& n : snap_names) {
    const Snap* frozen = nullptr;
    bool had_absent = false;
    for (const State& s : states) {
      auto it = s.snaps.find(n);
      if (it != s.snaps.end()) {
        frozen = &it->second;
      } else {
        had_absent = true;
      }
    }
    auto it = present.find(n);
    if (it == present.end()) {
      if (!had_absent) return "snapshot " + n + " is missing";
      continue;
    }
    if (frozen == nullptr) return "snapshot " + n + " exists but was never taken";
    alive[n] = frozen;
    Found in_snap;
    p = walk(ds, it->second, "", in_snap);
    if (!p.empty()) return "snapshot " + n + ": " + p;
    std::set<std::string> want_dirs = frozen->dirs;
    want_dirs.erase("");
    if (in_snap.dirs != want_dirs) return "snapshot " + n + ": directories differ from the frozen tree";
    if (in_snap.files.size() != frozen->files.size()) {
      return "snapshot " + n + ": " + std::to_string(in_snap.files.size()) + " files, frozen " +
             std::to_string(frozen->files.size());
    }
    for (const auto& [path, f] : frozen->files) {
      auto fi = in_snap.files.find(path);
      if (fi == in_snap.files.end()) return "snapshot " + n + ": " + path + " is missing";
      auto got = d.read_all(fi->second);
      if (!got.ok()) return "snapshot " + n + ": read " + path + ": " + got.error().to_string();
      if (*got != *f.data) return "snapshot " + n + ": " + path + " differs from the frozen copy";
      auto x = xattrs_of(ds, fi->second);
      if (!x.ok() || *x != *f.xattrs) return "snapshot " + n + ": " + path + ": xattrs differ from the frozen ones";
    }
    if (in_snap.links.size() != frozen->links.size()) {
      return "snapshot " + n + ": " + std::to_string(in_snap.links.size()) + " symlinks, frozen " +
             std::to_string(frozen->links.size());
    }
    for (const auto& [path, target] : frozen->links) {
      auto li = in_snap.links.find(path);
      if (li == in_snap.links.end()) return "snapshot " + n + ": symlink " + path + " is missing";
      auto got = ds.readlink(li->second);
      if (!got.ok() || *got != target) return "snapshot " + n + ": symlink " + path + " differs";
    }
  }
  // Changed-block maps between every two snapshots that exist.
  for (const auto& [bn, b] : alive) {
    for (const auto& [an, a] : alive) {
      if (a->op >= b->op) continue;
      std::string problem = check_cbt(d, bn, *b, an, *a);
      if (!problem.empty()) return problem;
    }
  }
  return "";
}

// ---- one seed -------------------------------------------------------------------------

uint64_t env_u64(const char* name, uint64_t dflt) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : dflt;
}

std::unique_ptr<SimDevice> make_device(uint64_t seed) {
  device::SimOptions o;
  o.size_bytes = kDeviceBytes;
  o.seed = seed;
  o.manual_completions = true;
  o.reorder_completions = true;
  auto dev = std::make_unique<SimDevice>(o);
  MkfsOptions mo;
  mo.journal_bytes = kJournalBytes;
  EXPECT_TRUE(mkfs(*dev, mo).ok());
  return dev;
}

OpenOptions stepped_options() {
  OpenOptions o;
  o.start_background = false;
  o.force = true;  // a crashed image is marked mounted
  // A small cache: release steps and commits read metadata back from the device.
  o.meta_cache_bytes = 256 * 1024;
  // A small allocation window, so that the allocator often passes it and writes wait for
  // the commit that covers their block (the window rule is checked after every cut:
  // fsck reads every formatted free block).
  o.alloc_window_blocks = 2;
  return o;
}

Phase phase_of(const device::DeadIo& io, Step step, const format::Superblock& sb) {
  if (step == Step::kRelease) return kRelease;
  if (step == Step::kFormat) return kFormat;
  const uint64_t grain = io.offset_bytes / kGrainBytes;
  const bool write = io.kind == device::OpKind::kWrite;
  if (write && (grain == 0 || grain == format::kSuperblockCopyGrain)) return kSuperblock;
  if (write && grain >= sb.journal_start_grain &&
      grain < sb.journal_start_grain + sb.journal_grains) {
    return kJournal;
  }
  if (io.kind == device::OpKind::kFlush) return kCommit;
  if (write && step == Step::kMetaOp) return kCheckpoint;
  return kData;
}

struct Run {
  std::vector<State> states;
  uint64_t ios = 0, digest = 0;
  uint64_t journal_bytes = 0, commits = 0;
  std::optional<device::DeadIo> dead;
  Step step = Step::kOp;
  LifetimeStats lifetime;  // at the cut
  std::unique_ptr<SimDevice> image;
  uint64_t allocates = 0;        // allocate ops the workload ran
  bool cut_in_allocate = false;  // the cut fell inside one
  uint64_t far_allocates = 0;
  bool cut_in_far_allocate = false;
  uint64_t symlinks = 0, xattr_ops = 0;
  uint64_t window_waits = 0;
};

// Runs the workload of `seed` with the power cut at IO `cut` (0: never).
Run run_workload(uint64_t seed, uint64_t cut) {
  Run run;
  auto dev = make_device(seed);
  SimDevice* raw = dev.get();
  auto opened = Datastore::open(std::move(dev), stepped_options());
  EXPECT_TRUE(opened.ok()) << opened.error().to_string();
  if (!opened.ok()) return run;
  auto ds = std::move(opened).value();
  const uint64_t before = raw->io_count();
  if (cut > 0) raw->die_at_io(cut);
  Driver d(*ds, *raw);
  Workload w(d, seed, cut > 0 && env_u64("VSFS_CRASH_VERBOSE", 0) != 0);
  w.run(kOps);
  raw->run_pending();
  run.ios = raw->io_count() - before;
  run.digest = raw->io_digest();
  run.states = w.states();
  run.step = w.step();
  run.allocates = w.allocates();
  run.cut_in_allocate = w.cut_in_allocate();
  run.far_allocates = w.far_allocates();
  run.symlinks = w.symlinks();
  run.xattr_ops = w.xattr_ops();
  run.cut_in_far_allocate = w.cut_in_far_allocate();
  run.dead = raw->dead_io();
  const DatastoreStats st = ds->stats();
  run.journal_bytes = st.journal_bytes;
  run.commits = st.journal_commits;
  run.lifetime = st.lifetime;
  run.window_waits = st.window_waits;
  if (cut == 0) raw->die_at_io(1);  // the dry run only counts: no clean close
  (void)ds->close();
  raw->run_pending();
  // VSFS_CRASH_LOSS=drop|keep (default: each write dropped, kept or torn at random).
  PowerLossMode mode = PowerLossMode::kRandom;
  if (const char* m = std::getenv("VSFS_CRASH_LOSS")) {
    mode = std::string(m) == "drop" ? PowerLossMode::kDropAll
           : std::string(m) == "keep" ? PowerLossMode::kKeepAll
                                       : PowerLossMode::kRandom;
  }
  run.image = raw->power_loss(mode, seed * 31 + 7);
  return run;
}

// fsck of an image (on a copy: fsck -n does not write, but the copy keeps it so).
// Every formatted free block is read: one past the allocation window that holds data is
// a problem (the window rule), one inside it is expected residue of the cut.
std::string fsck_clean(const SimDevice& image) {
  auto copy = image.clone();
  FsckOptions options;
  options.full_zero_check = true;
  auto report = fsck(*copy, options);
  if (!report.ok()) return "fsck could not run: " + report.error().to_string();
  if (!report->problems.empty()) return "fsck: " + report->problems.front();
  return "";
}

// Opens the image and returns how many IOs its recovery issued (0: it failed).
uint64_t recovery_ios(const SimDevice& image) {
  auto probe = image.clone();
  SimDevice* raw = probe.get();
  auto ds = Datastore::open(std::make_unique<testing::BorrowedDevice>(*raw), stepped_options());
  if (!ds.ok()) return 0;
  const uint64_t n = raw->io_count();
  raw->die_at_io(1);  // no clean close: only the recovery was counted
  (void)(*ds)->close();
  raw->run_pending();
  return n;
}

// The recovered lifetime counters against the crashed mount's: every count is between
// what its last superblock write stored and what it had counted (mounted_seconds is
// the clock's, unclean_mounts the recoveries'). Empty when they are.
std::string check_lifetime(const LifetimeCounts& got, const LifetimeStats& crashed,
                           int nested) {
  struct Field {
    const char* name;
    uint64_t LifetimeCounts::*member;
  };
  static constexpr Field kFields[] = {
      {"read_bytes", &LifetimeCounts::read_bytes},
      {"write_bytes", &LifetimeCounts::write_bytes},
      {"read_errors", &LifetimeCounts::read_errors},
      {"write_errors", &LifetimeCounts::write_errors},
      {"no_space_errors", &LifetimeCounts::no_space_errors},
      {"snapshots_taken", &LifetimeCounts::snapshots_taken},
      {"snapshots_deleted", &LifetimeCounts::snapshots_deleted},
      {"formatted_bytes", &LifetimeCounts::formatted_bytes},
  };
  std::ostringstream out;
  for (const Field& f : kFields) {
    const uint64_t v = got.*f.member, lo = crashed.stored.*f.member,
                   hi = crashed.total.*f.member;
    if (v < lo || v > hi) {
      out << "lifetime " << f.name << " " << v << " after recovery, outside [" << lo << ", "
          << hi << "] (stored before the cut, counted by then)";
      return out.str();
    }
  }
  if (got.mounted_seconds < crashed.stored.mounted_seconds) {
    out << "lifetime mounted_seconds went back: " << got.mounted_seconds << " < "
        << crashed.stored.mounted_seconds;
    return out.str();
  }
  if (got.unclean_mounts < 1 || got.unclean_mounts > 1u + static_cast<uint64_t>(nested)) {
    out << "lifetime unclean_mounts " << got.unclean_mounts << " after " << nested
        << " nested cuts";
    return out.str();
  }
  return "";
}

void run_seed(uint64_t seed, Coverage& cov) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed * 7919 + 13);
  const Run dry = run_workload(seed, 0);
  ASSERT_GT(dry.ios, 0u);
  if (seed % 10 == 0) {
    // Every tenth seed proves that it repeats: the same IOs, in the same order.
    const Run again = run_workload(seed, 0);
    ASSERT_EQ(again.ios, dry.ios) << "the seed does not repeat its IOs";
    ASSERT_EQ(again.digest, dry.digest) << "the seed does not repeat its IOs";
  }
  const uint64_t cut = 1 + rng() % dry.ios;
  Run run = run_workload(seed, cut);
  ASSERT_TRUE(run.image) << "the power cut was not reached";
  ASSERT_TRUE(run.dead.has_value()) << "cut at IO " << cut << " of " << dry.ios
                                    << " never happened: the seed does not repeat its IOs";
  format::Superblock sb;
  sb.journal_start_grain = kGrainsPerBlock;
  sb.journal_grains = kJournalBytes / kGrainBytes;
  ++cov.cuts[phase_of(*run.dead, run.step, sb)];
  const uint64_t ring_bytes = kJournalBytes;
  cov.wraps += run.journal_bytes / ring_bytes;
  cov.allocates += run.allocates;
  cov.cuts_in_allocate += run.cut_in_allocate ? 1 : 0;
  cov.far_allocates += run.far_allocates;
  cov.cuts_in_far_allocate += run.cut_in_far_allocate ? 1 : 0;
  cov.symlinks += run.symlinks;
  cov.xattr_ops += run.xattr_ops;
  cov.window_waits += run.window_waits;
  cov.seeds_wrapped += run.journal_bytes >= ring_bytes ? 1 : 0;


  std::unique_ptr<SimDevice> image = std::move(run.image);
  std::string problem = fsck_clean(*image);
  ASSERT_EQ(problem, "") << "after the cut at IO " << cut;
  // Cut again during recovery: in about a third of the seeds, up to three times.
  int nested = 0;
  while (nested < kMaxNested && rng() % 100 < (nested == 0 ? 35u : 50u)) {
    const uint64_t n = recovery_ios(*image);
    ASSERT_GT(n, 0u) << "recovery failed after " << nested << " nested cuts";
    const uint64_t at = 1 + rng() % n;
    auto dev = image->clone();
    SimDevice* raw = dev.get();
    raw->die_at_io(at);
    {
      auto ds = Datastore::open(std::make_unique<testing::BorrowedDevice>(*raw),
                                stepped_options());
      if (ds.ok()) (void)(*ds)->close();
      raw->run_pending();
    }
    ++nested;
    ++cov.cuts[kReplay];
    image = raw->power_loss(PowerLossMode::kRandom, seed * 131 + nested);
    problem = fsck_clean(*image);
    ASSERT_EQ(problem, "") << "after nested cut " << nested << " at recovery IO " << at;
  }
  cov.nested += nested;
  cov.seeds_nested += nested > 0 ? 1 : 0;

  SimDevice* img = image.get();
  auto re = Datastore::open(std::move(image), stepped_options());
  ASSERT_TRUE(re.ok()) << re.error().to_string();
  auto ds = std::move(re).value();
  {
    const SpaceInfo sp = ds->stats().space;
    ASSERT_TRUE(sp.alloc_window);
    cov.reformatted += sp.crash_reformat_blocks;
    cov.formatted_found += sp.crash_reformat_blocks + sp.formatted_blocks;
  }
  // Before anything this mount counts itself.
  problem = check_lifetime(ds->stats().lifetime.total, run.lifetime, nested);
  ASSERT_EQ(problem, "") << "power cut at IO " << cut << " of " << dry.ios << ", " << nested
                         << " nested cuts";
  cov.lifetime_stored += run.lifetime.stored.write_bytes > 0 ? 1 : 0;
  Driver d(*ds, *img);
  problem = check_recovered(d, run.states);
  ASSERT_EQ(problem, "") << "power cut at IO " << cut << " of " << dry.ios << ", " << nested
                         << " nested cuts";
  // The recovered datastore keeps working and closes cleanly.
  auto f = ds->create(kRootIno, "after-recovery", 0644, 0, 0);
  ASSERT_TRUE(f.ok()) << f.error().to_string();
  Bytes data(10000, 0x5a);
  ASSERT_TRUE(d.write(f->ino, 123, data.data(), data.size()).ok());
  ASSERT_TRUE(d.fsync(f->ino).ok());
  ASSERT_TRUE(ds->close().ok());
}


TEST(SimCrash, PowerCutsDuringWorkloadsAndRecovery) {
  Coverage cov;
  uint64_t first = env_u64("VSFS_CRASH_FIRST_SEED", 1);
  uint64_t seeds = env_u64("VSFS_CRASH_SEEDS", 2000);
  if (const char* one = std::getenv("VSFS_CRASH_SEED")) {
    first = std::strtoull(one, nullptr, 10);
    seeds = 1;
  }
  // VSFS_CRASH_TRACE=1 names each seed on stderr before it runs: a crash of the test
  // process itself (an abort) then still says which seed it was in.
  const bool trace = env_u64("VSFS_CRASH_TRACE", 0) != 0;
  for (uint64_t s = first; s < first + seeds; ++s) {
    if (trace) std::fprintf(stderr, "sim-crash: seed %llu\n", static_cast<unsigned long long>(s));
    run_seed(s, cov);
    ++cov.seeds;
    if (HasFatalFailure() || HasNonfatalFailure()) {
      ++cov.failures;
      ADD_FAILURE() << "reproduce with VSFS_CRASH_SEED=" << s << " build/bin/vsfs_sim_crash";
      break;
    }
  }
  std::string phases;
  for (int p = 0; p < kPhases; ++p) {
    phases += (p ? " " : "") + std::string(kPhaseNames[p]) + "=" + std::to_string(cov.cuts[p]);
  }
  std::printf("sim-crash: %llu seeds, %llu failures; cuts by phase: %s; nested cuts=%llu; "
              "journal wraps=%llu; lifetime counts stored before the cut=%llu; "
              "fallocates=%llu (many-piece %llu), cuts inside one=%llu (many-piece %llu); "
              "symlinks=%llu, xattr changes=%llu; formatted blocks reformatted after the "
              "cut=%llu of %llu; writes that waited for the window=%llu\n",
              static_cast<unsigned long long>(cov.seeds),
              static_cast<unsigned long long>(cov.failures), phases.c_str(),
              static_cast<unsigned long long>(cov.nested),
              static_cast<unsigned long long>(cov.wraps),
              static_cast<unsigned long long>(cov.lifetime_stored),
              static_cast<unsigned long long>(cov.allocates),
              static_cast<unsigned long long>(cov.far_allocates),
              static_cast<unsigned long long>(cov.cuts_in_allocate),
              static_cast<unsigned long long>(cov.cuts_in_far_allocate),
              static_cast<unsigned long long>(cov.symlinks),
              static_cast<unsigned long long>(cov.xattr_ops),
              static_cast<unsigned long long>(cov.reformatted),
              static_cast<unsigned long long>(cov.formatted_found),
              static_cast<unsigned long long>(cov.window_waits));
  std::fflush(stdout);
  // A run long enough to mean something must have reached every part of the space.
  if (cov.failures == 0 && cov.seeds >= 200) {
    for (int p = 0; p < kPhases; ++p) {
      EXPECT_GT(cov.cuts[p], 0u) << "no power cut fell in phase " << kPhaseNames[p];
    }
    EXPECT_GE(cov.seeds_nested * 10, cov.seeds) << "fewer than 10 % of seeds had nested cuts";
    EXPECT_GE(cov.seeds_wrapped * 2, cov.seeds) << "the journal wrapped in fewer than half";
    EXPECT_GT(cov.cuts_in_allocate, 0u) << "no power cut fell inside a fallocate";
    EXPECT_GT(cov.cuts_in_far_allocate, 0u) << "no power cut fell inside a many-piece fallocate";
    EXPECT_GT(cov.symlinks, cov.seeds) << "too few symlinks";
    EXPECT_GT(cov.xattr_ops, cov.seeds) << "too few xattr changes";
    EXPECT_GE(cov.lifetime_stored * 2, cov.seeds)
        << "in fewer than half the seeds did a superblock write store counts before the cut";
  }
}

}  // namespace
}  // namespace vsfs
