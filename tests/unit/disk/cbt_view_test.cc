// Changed-block tracking: the .cbt maps are exact. Random writes of many sizes and
// alignments (and unmaps, truncates) between snapshots A and B; applying .cbt/B/A/<disk>
// from B onto a copy of A gives B byte for byte, and no listed grain was left untouched.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "device/sim_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;

std::unique_ptr<SimDevice> device_of(uint64_t seed) {
  device::SimOptions o;
  o.size_bytes = 256ull << 20;
  o.seed = seed;
  auto dev = std::make_unique<SimDevice>(o);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  return dev;
}

std::vector<uint8_t> read_all(Datastore& ds, Ino ino) {
  auto a = ds.getattr(ino);
  EXPECT_TRUE(a.ok()) << a.error().to_string();
  std::vector<uint8_t> v(a->size_bytes);
  if (!v.empty()) {
    EXPECT_TRUE(ds.read_sync(ino, 0, v.size(), v.data()).ok());
  }
  return v;
}

Ino snap_file(Datastore& ds, const std::string& snap, const std::string& name) {
  auto s = ds.lookup(make_ino(kSnapshotsDirView, kRootIno), snap);
  EXPECT_TRUE(s.ok());
  auto f = ds.lookup(s->ino, name);
  EXPECT_TRUE(f.ok());
  return f->ino;
}

struct Extent {
  uint64_t off, len;
  bool data;
};

std::vector<Extent> cbt_map(Datastore& ds, const std::string& b, const std::string& a,
                            const std::string& name) {
  auto root = ds.lookup(kRootIno, kCbtDirName);
  EXPECT_TRUE(root.ok());
  auto bn = ds.lookup(root->ino, b);
  EXPECT_TRUE(bn.ok()) << b;
  auto an = ds.lookup(bn->ino, a);
  EXPECT_TRUE(an.ok()) << a;
  auto f = ds.lookup(an->ino, name);
  EXPECT_TRUE(f.ok()) << name;
  auto text = read_all(ds, f->ino);
  std::istringstream in(std::string(text.begin(), text.end()));
  std::vector<Extent> out;
  uint64_t off, len;
  std::string kind;
  uint64_t last_end = 0;
  while (in >> off >> len >> kind) {
    EXPECT_TRUE(kind == "data" || kind == "zero") << kind;
    EXPECT_GE(off, last_end) << "extents sorted";
    if (!out.empty()) {
      EXPECT_FALSE(out.back().off + out.back().len == off && out.back().data == (kind == "data"))
          << "adjacent extents of one kind are merged";
    }
    last_end = off + len;
    out.push_back(Extent{off, len, kind == "data"});
  }
  return out;
}

// Random changes to a disk; records the grains touched.
void mutate(Datastore& ds, Ino ino, std::mt19937_64& rng, int ops, std::set<uint64_t>& touched) {
  for (int i = 0; i < ops; ++i) {
    const uint64_t size = ds.getattr(ino)->size_bytes;
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 7) {
      const uint64_t len = 512 + rng() % ((kind < 4) ? 8192 : (1 << 20));
      const uint64_t off = rng() % (24 << 20);
      std::vector<uint8_t> d(len);
      for (auto& x : d) x = static_cast<uint8_t>(rng());
      ASSERT_TRUE(ds.write_sync(ino, off, d.data(), d.size()).ok());
      for (uint64_t g = off / 4096; g <= (off + len - 1) / 4096; ++g) touched.insert(g);
    } else if (kind < 9 && size > 0) {
      const uint64_t off = rng() % size, len = 1 + rng() % (3 << 20);
      ASSERT_TRUE(ds.punch_hole_sync(ino, off, len).ok());
      const uint64_t end = std::min(size, off + len);
      for (uint64_t g = off / 4096; g < div_round_up(end, 4096); ++g) touched.insert(g);
    } else {
      const uint64_t ns = rng() % (26 << 20);
      ASSERT_TRUE(ds.truncate_sync(ino, ns).ok());
      if (ns < size) {
        for (uint64_t g = ns / 4096; g < div_round_up(size, 4096); ++g) touched.insert(g);
      }
    }
  }
}

// Applies the map onto A's contents and compares with B; checks no untouched grain is
// listed (when `touched` is given).
void check_fidelity(Datastore& ds, const std::string& a, const std::string& b,
                    const std::string& name, const std::set<uint64_t>* touched) {
  auto ea = read_all(ds, snap_file(ds, a, name));
  auto eb = read_all(ds, snap_file(ds, b, name));
  auto map = cbt_map(ds, b, a, name);
  std::vector<uint8_t> copy = ea;
  copy.resize(eb.size(), 0);
  for (const auto& e : map) {
    ASSERT_LE(e.off + e.len, eb.size());
    if (e.data) {
      std::memcpy(copy.data() + e.off, eb.data() + e.off, e.len);
    } else {
      std::memset(copy.data() + e.off, 0, e.len);
    }
    if (touched) {
      for (uint64_t g = e.off / 4096; g < div_round_up(e.off + e.len, 4096); ++g) {
        ASSERT_TRUE(touched->count(g)) << "grain " << g << " listed but never changed";
      }
    }
  }
  ASSERT_EQ(copy.size(), eb.size());
  EXPECT_TRUE(copy == eb) << "applying .cbt/" << b << "/" << a << "/" << name << " did not give " << b;
}

Ino snapdir() { return make_ino(kSnapshotsDirView, kRootIno); }

TEST(Cbt, MapsAreExactBetweenSnapshots) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    auto ds = std::move(Datastore::open(device_of(seed), {})).value();
    auto d = ds->create(kRootIno, "disk", 0644, 0, 0);
    std::set<uint64_t> ignore;
    mutate(*ds, d->ino, rng, 30, ignore);
    ASSERT_TRUE(ds->mkdir(snapdir(), "A", 0755, 0, 0).ok());
    std::set<uint64_t> touched;
    mutate(*ds, d->ino, rng, 40, touched);
    auto n = ds->create(kRootIno, "newdisk", 0644, 0, 0);  // created after A: all listed
    std::vector<uint8_t> buf(100000, 7);
    ASSERT_TRUE(ds->write_sync(n->ino, 5000, buf.data(), buf.size()).ok());
    ASSERT_TRUE(ds->mkdir(snapdir(), "B", 0755, 0, 0).ok());
    check_fidelity(*ds, "A", "B", "disk", &touched);
    auto newmap = cbt_map(*ds, "B", "A", "newdisk");
    ASSERT_FALSE(newmap.empty());
    // full lists every allocated extent.
    auto full = cbt_map(*ds, "B", "full", "disk");
    for (const auto& e : full) EXPECT_TRUE(e.data);
    // Still exact after A is deleted: its name and changeId stay on record.
    ASSERT_TRUE(ds->rmdir(snapdir(), "A").ok());
    auto after = cbt_map(*ds, "B", "A", "disk");
    ASSERT_TRUE(ds->mkdir(snapdir(), "A2", 0755, 0, 0).ok());  // same content as B
    auto same = cbt_map(*ds, "A2", "B", "disk");
    EXPECT_TRUE(same.empty()) << "nothing changed between B and A2";
    EXPECT_FALSE(after.empty());
    ASSERT_TRUE(ds->close().ok());
  }
}

TEST(Cbt, TwoBackupChainsInterleaved) {
  std::mt19937_64 rng(42);
  auto ds = std::move(Datastore::open(device_of(42), {})).value();
  auto d = ds->create(kRootIno, "disk", 0644, 0, 0);
  std::set<uint64_t> ignore, since_x1, since_y1;
  mutate(*ds, d->ino, rng, 20, ignore);
  ASSERT_TRUE(ds->mkdir(snapdir(), "x1", 0755, 0, 0).ok());
  mutate(*ds, d->ino, rng, 15, since_x1);
  ASSERT_TRUE(ds->mkdir(snapdir(), "y1", 0755, 0, 0).ok());
  std::set<uint64_t> both;
  mutate(*ds, d->ino, rng, 15, both);
  since_x1.insert(both.begin(), both.end());
  since_y1.insert(both.begin(), both.end());
  ASSERT_TRUE(ds->mkdir(snapdir(), "x2", 0755, 0, 0).ok());
  std::set<uint64_t> more;
  mutate(*ds, d->ino, rng, 15, more);
  since_y1.insert(more.begin(), more.end());
  ASSERT_TRUE(ds->mkdir(snapdir(), "y2", 0755, 0, 0).ok());
  check_fidelity(*ds, "x1", "x2", "disk", &since_x1);
  check_fidelity(*ds, "y1", "y2", "disk", &since_y1);
  // A clone over the disk (a revert) is a wholesale change: listed in full.
  ASSERT_TRUE(ds->truncate_sync(d->ino, 0).ok());
  ASSERT_TRUE(ds->clone_range_sync(snap_file(*ds, "x1", "disk"), 0, d->ino, 0, UINT64_MAX / 4).ok());
  ASSERT_TRUE(ds->mkdir(snapdir(), "x3", 0755, 0, 0).ok());
  check_fidelity(*ds, "x2", "x3", "disk", nullptr);
  ASSERT_TRUE(ds->close().ok());
}

// .cbt texts stay within cbt_text_cache_bytes: the least recently read go and are made
// again, the same, when read; the most recent one stays even when larger than the bound
// (read piece by piece, it is not made again for each piece); a deleted snapshot's
// texts and nodes go with it, and its node numbers are never given out again.
TEST(Cbt, TextsStayWithinTheirBudget) {
  OpenOptions o;
  o.cbt_text_cache_bytes = 1024;
  auto ds = std::move(Datastore::open(device_of(7), o)).value();
  std::vector<std::string> names;
  std::vector<uint8_t> grain(4096, 1);
  // Disk k has 10 * (k + 1) separate extents: texts of about 0.2 to 1 KiB.
  for (int k = 0; k < 6; ++k) {
    names.push_back("disk" + std::to_string(k));
    auto d = ds->create(kRootIno, names.back(), 0644, 0, 0);
    ASSERT_TRUE(d.ok());
    for (int e = 0; e < 10 * (k + 1); ++e) {
      ASSERT_TRUE(ds->write_sync(d->ino, uint64_t(e) * 65536, grain.data(), grain.size()).ok());
    }
  }
  ASSERT_TRUE(ds->mkdir(snapdir(), "B", 0755, 0, 0).ok());
  auto text_ino = [&](const std::string& name) {
    auto root = ds->lookup(kRootIno, kCbtDirName);
    auto b = ds->lookup(root->ino, "B");
    auto a = ds->lookup(b->ino, "full");
    auto f = ds->lookup(a->ino, name);
    EXPECT_TRUE(f.ok()) << name;
    return f->ino;
  };
  auto within = [&] {
    const DatastoreStats s = ds->stats();
    EXPECT_EQ(s.cbt_text_budget_bytes, 1024u);
    EXPECT_TRUE(s.cbt_text_bytes <= 1024 || s.cbt_texts == 1)
        << s.cbt_texts << " texts of " << s.cbt_text_bytes << " bytes";
  };
  std::map<std::string, std::vector<uint8_t>> first;
  for (int round = 0; round < 3; ++round) {
    for (const auto& name : names) {
      auto text = read_all(*ds, text_ino(name));
      ASSERT_FALSE(text.empty());
      if (round == 0) {
        first[name] = text;
      } else {
        EXPECT_EQ(text, first[name]) << name << " made again differs";
      }
      within();
    }
  }
  EXPECT_GT(first["disk5"].size(), 1024u) << "the test needs a text beyond the bound";
  // The largest read in pieces, with the others read between them: the pieces join up.
  const Ino big = text_ino("disk5");
  std::vector<uint8_t> joined;
  for (uint64_t off = 0; off < first["disk5"].size(); off += 700) {
    std::vector<uint8_t> piece(700);
    auto n = ds->read_sync(big, off, piece.size(), piece.data());
    ASSERT_TRUE(n.ok());
    piece.resize(*n);
    joined.insert(joined.end(), piece.begin(), piece.end());
    read_all(*ds, text_ino(names[off / 700 % 5]));
    within();
  }
  EXPECT_EQ(joined, first["disk5"]);
  // The most recent stays although it is beyond the bound.
  read_all(*ds, big);
  EXPECT_EQ(ds->stats().cbt_texts, 1u);
  EXPECT_EQ(ds->stats().cbt_text_bytes, first["disk5"].size());
  // B's nodes: B, B/full and its 6 files; the .cbt root of the root directory stays.
  EXPECT_EQ(ds->stats().cbt_nodes, 1u + 2 + names.size());
  ASSERT_TRUE(ds->rmdir(snapdir(), "B").ok());
  EXPECT_EQ(ds->stats().cbt_texts, 0u);
  EXPECT_EQ(ds->stats().cbt_text_bytes, 0u);
  EXPECT_EQ(ds->stats().cbt_nodes, 1u) << "a deleted snapshot's nodes go with it";
  // The kernel may still hold a node's number: it finds nothing, now and after a new
  // snapshot of the same name (numbers are never reused).
  auto stale = ds->getattr(big);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().errno_value, ENOENT);
  ASSERT_TRUE(ds->mkdir(snapdir(), "B", 0755, 0, 0).ok());
  EXPECT_FALSE(ds->getattr(big).ok());
  EXPECT_NE(text_ino("disk5"), big);
  ASSERT_TRUE(ds->close().ok());
}

// A datastore whose disk "disk" fills it, taken in snapshot A, then A deleted and
// released, then filled again: no grain is free, and the grains written before A are
// the disk's alone with stamps older than the generation.
struct FullAfterA {
  SimDevice* raw = nullptr;
  std::unique_ptr<Datastore> ds;
  Ino disk = 0;
  uint64_t size = 0;
  uint64_t grains_at_a = 0;  // grains written before A
};

FullAfterA full_after_a(uint64_t seed) {
  FullAfterA f;
  device::SimOptions so;
  so.size_bytes = 64ull << 20;
  so.seed = seed;
  auto dev = std::make_unique<SimDevice>(so);
  MkfsOptions mo;
  mo.journal_bytes = 4 << 20;
  auto made = mkfs(*dev, mo);
  EXPECT_TRUE(made.ok()) << made.error().to_string();
  f.raw = dev.get();
  f.ds = std::move(Datastore::open(std::move(dev), {})).value();
  Datastore& ds = *f.ds;
  auto d = ds.create(kRootIno, "disk", 0644, 0, 0);
  EXPECT_TRUE(d.ok());
  f.disk = d->ino;
  // 256 KiB writes, then 4 KiB ones, until no grain is left.
  std::mt19937_64 rng(seed);
  auto fill = [&] {
    for (uint64_t bytes : {256u << 10, 4u << 10}) {
      std::vector<uint8_t> chunk(bytes);
      for (;;) {
        for (auto& x : chunk) x = static_cast<uint8_t>(rng());
        auto w = ds.write_sync(f.disk, f.size, chunk.data(), chunk.size());
        if (!w.ok()) {
          EXPECT_EQ(w.error().kind, ErrorKind::kNoSpace) << w.error().to_string();
          break;
        }
        f.size += chunk.size();
      }
    }
    EXPECT_EQ(ds.getattr(f.disk)->size_bytes, f.size) << "a failed write changes nothing";
  };
  fill();
  f.grains_at_a = f.size / 4096;
  EXPECT_TRUE(ds.mkdir(snapdir(), "A", 0755, 0, 0).ok());
  fill();  // what the snapshot's commit made free
  // Shared with A: an overwrite needs a new grain, and there is none.
  std::vector<uint8_t> page(4096, 0x5a);
  auto shared = ds.write_sync(f.disk, 0, page.data(), page.size());
  EXPECT_TRUE(!shared.ok() && shared.error().kind == ErrorKind::kNoSpace)
      << "an overwrite of a grain shared with A found a free grain";
  EXPECT_TRUE(ds.rmdir(snapdir(), "A").ok());
  for (int i = 0; i < 500 && ds.stats().release_pending > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  fill();  // what A's release made free
  return f;
}

struct Change {
  uint64_t off, len;
};

// Whole grains, a partial grain at an odd offset, a range across a grain edge, and the
// last grain (written after A).
std::vector<Change> overwrites(uint64_t size) {
  return {{0, 8192}, {1 << 20, 4096}, {(3 << 20) + 1000, 700}, {(5 << 20) + 4000, 200},
          {size - 4096, 4096}};
}

// A full datastore: after the snapshot that shared a disk's grains is deleted, the disk
// alone holds them again, and overwriting them needs no free grain: they are written in
// place once their new change stamps are committed (not redirected, which needs space).
// The data reads back, the next backup lists exactly what changed, fsck is clean.
TEST(Cbt, FullDatastoreOverwritesInPlaceOnceTheSnapshotIsGone) {
  FullAfterA f = full_after_a(11);
  ASSERT_TRUE(f.ds);
  ASSERT_GT(f.grains_at_a, 2048u);
  Datastore& ds = *f.ds;
  std::mt19937_64 rng(12);
  std::vector<uint8_t> expect = read_all(ds, f.disk);
  ASSERT_EQ(expect.size(), f.size);
  std::set<uint64_t> touched, stale;  // since A; of them, written before A
  for (uint64_t g = f.grains_at_a; g < f.size / 4096; ++g) touched.insert(g);
  for (const auto& c : overwrites(f.size)) {
    std::vector<uint8_t> data(c.len);
    for (auto& x : data) x = static_cast<uint8_t>(rng());
    auto w = ds.write_sync(f.disk, c.off, data.data(), data.size());
    ASSERT_TRUE(w.ok()) << c.off << ": " << w.error().to_string();
    std::memcpy(expect.data() + c.off, data.data(), c.len);
    for (uint64_t g = c.off / 4096; g <= (c.off + c.len - 1) / 4096; ++g) {
      touched.insert(g);
      if (g < f.grains_at_a) stale.insert(g);
    }
  }
  const DatastoreStats st = ds.stats();
  EXPECT_EQ(st.restamped_grain_writes, stale.size());
  EXPECT_EQ(read_all(ds, f.disk), expect);
  // Written again in this generation: plain in place now.
  std::vector<uint8_t> page(4096, 0x5a);
  ASSERT_TRUE(ds.write_sync(f.disk, 0, page.data(), page.size()).ok());
  std::memcpy(expect.data(), page.data(), page.size());
  EXPECT_EQ(ds.stats().restamped_grain_writes, st.restamped_grain_writes);
  // The next backup (since A, deleted but on record) lists exactly the grains written
  // since A: the rewritten ones and those the fills after A added.
  ASSERT_TRUE(ds.mkdir(snapdir(), "B", 0755, 0, 0).ok());
  std::set<uint64_t> listed;
  for (const auto& e : cbt_map(ds, "B", "A", "disk")) {
    EXPECT_TRUE(e.data);
    for (uint64_t g = e.off / 4096; g < div_round_up(e.off + e.len, 4096); ++g) listed.insert(g);
  }
  EXPECT_EQ(listed, touched);
  EXPECT_EQ(read_all(ds, snap_file(ds, "B", "disk")), expect);
  ASSERT_TRUE(ds.close().ok());
  auto image = f.raw->clone();
  f.ds.reset();
  auto rep = fsck(*image, {});
  ASSERT_TRUE(rep.ok());
  std::string problems;
  for (const auto& p : rep->problems) problems += p + "\n";
  EXPECT_TRUE(rep->problems.empty()) << problems;
}

// The same overwrites with the power failing at a random IO: whatever reached the disk,
// the backup since A lists it (the stamp is committed before the grain is written).
TEST(Cbt, OverwritesInPlaceSurvivePowerLoss) {
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE(seed);
    FullAfterA f = full_after_a(20 + seed);
    ASSERT_TRUE(f.ds);
    ASSERT_TRUE(f.ds->fsync_sync(f.disk).ok());
    std::vector<uint8_t> before = read_all(*f.ds, f.disk);  // A, then the fills after it
    std::mt19937_64 rng(seed);
    f.raw->die_at_io(1 + rng() % 12);
    for (const auto& c : overwrites(f.size)) {
      std::vector<uint8_t> data(c.len);
      for (auto& x : data) x = static_cast<uint8_t>(rng());
      (void)f.ds->write_sync(f.disk, c.off, data.data(), data.size());  // may fail: no power
    }
    (void)f.ds->close();
    auto image = f.raw->power_loss(device::PowerLossMode::kRandom, seed);
    f.ds.reset();
    OpenOptions o;
    o.force = true;
    auto ds = std::move(Datastore::open(std::move(image), o)).value();
    ASSERT_TRUE(ds->mkdir(snapdir(), "B", 0755, 0, 0).ok());
    const std::vector<uint8_t> now = read_all(*ds, snap_file(*ds, "B", "disk"));
    ASSERT_EQ(now.size(), before.size());
    // Applying the list since A onto what the disk held before the overwrites gives B.
    std::vector<uint8_t> copy = before;
    for (const auto& e : cbt_map(*ds, "B", "A", "disk")) {
      ASSERT_LE(e.off + e.len, now.size());
      std::memcpy(copy.data() + e.off, now.data() + e.off, e.len);
    }
    EXPECT_TRUE(copy == now) << "a change that reached the disk is not listed";
    ASSERT_TRUE(ds->close().ok());
  }
}

TEST(Cbt, TrackingSurvivesPowerLoss) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    auto dev = device_of(seed + 100);
    SimDevice* raw = dev.get();
    auto ds = std::move(Datastore::open(std::move(dev), {})).value();
    auto d = ds->create(kRootIno, "disk", 0644, 0, 0);
    std::set<uint64_t> ignore;
    mutate(*ds, d->ino, rng, 20, ignore);
    ASSERT_TRUE(ds->mkdir(snapdir(), "A", 0755, 0, 0).ok());
    std::set<uint64_t> touched;
    mutate(*ds, d->ino, rng, 20, touched);
    raw->die_at_io(1 + rng() % 100);
    std::set<uint64_t> maybe;
    mutate(*ds, d->ino, rng, 5, maybe);  // some of these fail: the power is off
    (void)ds->close();
    auto image = raw->power_loss(device::PowerLossMode::kRandom, seed);
    ds.reset();
    OpenOptions o;
    o.force = true;
    auto ds2 = std::move(Datastore::open(std::move(image), o)).value();
    // No reset: tracking goes on from A across the crash.
    auto d2 = ds2->lookup(kRootIno, "disk");
    ASSERT_TRUE(d2.ok());
    mutate(*ds2, d2->ino, rng, 20, touched);
    ASSERT_TRUE(ds2->mkdir(snapdir(), "B", 0755, 0, 0).ok());
    touched.insert(maybe.begin(), maybe.end());
    check_fidelity(*ds2, "A", "B", "disk", &touched);
    ASSERT_TRUE(ds2->close().ok());
  }
}

}  // namespace
}  // namespace vsfs
