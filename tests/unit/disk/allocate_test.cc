// fallocate mode 0 (Datastore::allocate) on the simulated device: allocated grains read
// zeros and count as used, a write into them needs no new grain, punch/truncate/unlink
// release them, snapshots share them, ENOSPC comes up front with nothing changed, and
// fsck finds the datastore clean. Ends with a randomised test against a model.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <random>

#include "device/sim_device.h"
#include "format/format.h"
#include "meta/meta_store.h"
#include "unit/meta/fsck_test_util.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;

struct Opened {
  std::unique_ptr<Datastore> ds;
  SimDevice* dev = nullptr;
};

Opened open_fresh(uint64_t size = 256ull << 20, bool background = true) {
  device::SimOptions so;
  so.size_bytes = size;
  auto dev = std::make_unique<SimDevice>(so);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  Opened o;
  o.dev = dev.get();
  OpenOptions opts;
  opts.start_background = background;
  auto r = Datastore::open(std::move(dev), opts);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  if (r.ok()) o.ds = std::move(r).value();
  return o;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng() | 1);  // never a zero byte
  return v;
}

std::vector<uint8_t> read_range(Datastore& ds, Ino ino, uint64_t off, uint64_t len) {
  std::vector<uint8_t> v(len, 0xee);
  auto r = ds.read_sync(ino, off, len, v.data());
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  if (r.ok()) v.resize(*r);
  return v;
}

bool all_zero(const std::vector<uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

uint64_t used(Datastore& ds) { return ds.space().used_bytes; }
uint64_t allocated(Datastore& ds, Ino ino) { return ds.getattr(ino)->allocated_bytes; }

void expect_clean(SimDevice& dev) {
  FsckOptions fo;
  fo.full_zero_check = true;
  auto r = run_fsck(dev, fo);
  EXPECT_TRUE(r.problems.empty()) << joined(r.problems);
}

uint64_t incompat(SimDevice& dev) {
  auto sb = meta::read_superblock(dev);
  EXPECT_TRUE(sb.ok());
  return sb.ok() ? sb->incompat : ~uint64_t{0};
}

TEST(Allocate, ReadsZerosCountsAsUsedAndWritesInPlace) {
  auto o = open_fresh();
  auto& ds = *o.ds;
  auto f = ds.create(kRootIno, "thick.img", 0644, 0, 0);
  ASSERT_TRUE(f.ok());
  // Grain 0 written first, so the map leaf exists: what follows costs data grains only.
  auto first = pattern(kGrainBytes, 1);
  ASSERT_TRUE(ds.write_sync(f->ino, 0, first.data(), first.size()).ok());
  const uint64_t used0 = used(ds);
  ASSERT_TRUE(ds.allocate_sync(f->ino, 0, 200 * kGrainBytes).ok());
  // Grains 1..199 were reserved: exactly 199 grains more in use; the size grew.
  EXPECT_EQ(used(ds) - used0, 199 * kGrainBytes);
  EXPECT_EQ(allocated(ds, f->ino), 200 * kGrainBytes);
  EXPECT_EQ(ds.getattr(f->ino)->size_bytes, 200 * kGrainBytes);
  // They read zeros and are holes for SEEK_DATA.
  EXPECT_TRUE(all_zero(read_range(ds, f->ino, kGrainBytes, 199 * kGrainBytes)));
  EXPECT_EQ(*ds.seek(f->ino, kGrainBytes, /*data=*/false), kGrainBytes);
  EXPECT_EQ(ds.seek(f->ino, kGrainBytes, /*data=*/true).error().errno_value, ENXIO);
  // A partial write into an allocated grain: in place, no new grain, the rest zeros.
  const uint64_t used1 = used(ds);
  const auto redirected0 = ds.stats().redirected_grain_writes;
  auto part = pattern(1000, 2);
  ASSERT_TRUE(ds.write_sync(f->ino, 3 * kGrainBytes + 100, part.data(), part.size()).ok());
  EXPECT_EQ(used(ds), used1);
  EXPECT_EQ(ds.stats().redirected_grain_writes, redirected0);
  auto back = read_range(ds, f->ino, 3 * kGrainBytes, kGrainBytes);
  EXPECT_TRUE(all_zero(std::vector<uint8_t>(back.begin(), back.begin() + 100)));
  EXPECT_TRUE(std::equal(part.begin(), part.end(), back.begin() + 100));
  EXPECT_TRUE(all_zero(std::vector<uint8_t>(back.begin() + 1100, back.end())));
  EXPECT_EQ(*ds.seek(f->ino, kGrainBytes, /*data=*/true), 3 * kGrainBytes);
  // Writing every allocated grain takes no space at all.
  auto big = pattern(199 * kGrainBytes, 3);
  ASSERT_TRUE(ds.write_sync(f->ino, kGrainBytes, big.data(), big.size()).ok());
  EXPECT_EQ(used(ds), used1);
  EXPECT_EQ(ds.stats().redirected_grain_writes, redirected0);
  EXPECT_EQ(read_range(ds, f->ino, kGrainBytes, big.size()), big);
  // Allocating again over written grains changes nothing.
  ASSERT_TRUE(ds.allocate_sync(f->ino, 0, 200 * kGrainBytes).ok());
  EXPECT_EQ(used(ds), used1);
  ASSERT_TRUE(ds.close().ok());
  EXPECT_EQ(incompat(*o.dev), format::kIncompatAllocated);
  expect_clean(*o.dev);
}

TEST(Allocate, DatastoreWithoutAllocationsKeepsItsFeatureWordsClear) {
  auto o = open_fresh();
  auto f = o.ds->create(kRootIno, "thin.img", 0644, 0, 0);
  auto d = pattern(3 * kGrainBytes, 4);
  ASSERT_TRUE(o.ds->write_sync(f->ino, 0, d.data(), d.size()).ok());
  ASSERT_TRUE(o.ds->allocate_sync(f->ino, 0, 3 * kGrainBytes).ok());  // all mapped already
  ASSERT_TRUE(o.ds->close().ok());
  EXPECT_EQ(incompat(*o.dev), 0u);
}

TEST(Allocate, NoSpaceUpFrontChangesNothing) {
  auto o = open_fresh();
  auto& ds = *o.ds;
  auto f = ds.create(kRootIno, "huge.img", 0644, 0, 0);
  auto d = pattern(kGrainBytes, 5);
  ASSERT_TRUE(ds.write_sync(f->ino, 0, d.data(), d.size()).ok());
  ASSERT_TRUE(ds.fsync_sync(kRootIno).ok());
  const SpaceInfo before = ds.space();
  const Attr attr = *ds.getattr(f->ino);
  auto r = ds.allocate_sync(f->ino, 0, 2ull << 40);  // 2 TiB on 256 MiB
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, ENOSPC);
  // Just over what is free fails the same way.
  auto r2 = ds.allocate_sync(f->ino, kGrainBytes, before.free_bytes + kGrainBytes, true);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().errno_value, ENOSPC);
  EXPECT_EQ(ds.space().used_bytes, before.used_bytes);
  EXPECT_EQ(ds.space().free_bytes, before.free_bytes);
  EXPECT_EQ(ds.getattr(f->ino)->size_bytes, attr.size_bytes);
  EXPECT_EQ(ds.getattr(f->ino)->allocated_bytes, attr.allocated_bytes);
  ASSERT_TRUE(ds.close().ok());
  EXPECT_EQ(incompat(*o.dev), 0u);
  expect_clean(*o.dev);
}

TEST(Allocate, ThickDiskNeverRunsOutWhenAnotherFillsTheDatastore) {
  auto o = open_fresh(128ull << 20);
  auto& ds = *o.ds;
  auto thick = ds.create(kRootIno, "thick.img", 0644, 0, 0);
  auto thin = ds.create(kRootIno, "thin.img", 0644, 0, 0);
  const uint64_t thick_bytes = 64ull << 20;
  ASSERT_TRUE(ds.allocate_sync(thick->ino, 0, thick_bytes).ok());
  // Fill the rest through the thin disk until the datastore is full.
  auto chunk = pattern(1 << 20, 6);
  uint64_t off = 0;
  for (;;) {
    auto w = ds.write_sync(thin->ino, off, chunk.data(), chunk.size());
    if (!w.ok()) {
      EXPECT_EQ(w.error().errno_value, ENOSPC);
      break;
    }
    off += chunk.size();
    ASSERT_LT(off, 256ull << 20);
  }
  EXPECT_GT(off, 16ull << 20);
  // Every byte of the thick disk is writable, in pieces of every shape.
  auto data = pattern(thick_bytes, 7);
  for (uint64_t at = 0; at < thick_bytes;) {
    const uint64_t len = std::min<uint64_t>(thick_bytes - at, (at / 4096) % 3 == 0 ? 12345 : 262144);
    auto w = ds.write_sync(thick->ino, at, data.data() + at, len);
    ASSERT_TRUE(w.ok()) << "at " << at << ": " << w.error().to_string();
    at += len;
  }
  EXPECT_EQ(read_range(ds, thick->ino, 0, thick_bytes), data);
  ASSERT_TRUE(ds.close().ok());
  expect_clean(*o.dev);
}

TEST(Allocate, PunchTruncateAndUnlinkRelease) {
  auto o = open_fresh();
  auto& ds = *o.ds;
  auto f = ds.create(kRootIno, "a.img", 0644, 0, 0);
  const uint64_t used0 = used(ds);
  ASSERT_TRUE(ds.allocate_sync(f->ino, 0, 4ull << 20).ok());  // 1024 grains
  EXPECT_EQ(allocated(ds, f->ino), 4ull << 20);
  EXPECT_GE(used(ds) - used0, 4ull << 20);
  // Punch 100 whole grains: exactly those are freed.
  const uint64_t used1 = used(ds);
  ASSERT_TRUE(ds.punch_hole_sync(f->ino, 10 * kGrainBytes, 100 * kGrainBytes).ok());
  EXPECT_EQ(used1 - used(ds), 100 * kGrainBytes);
  EXPECT_EQ(allocated(ds, f->ino), (1024 - 100) * kGrainBytes);
  // Truncate to 1 MiB frees the rest past it.
  ASSERT_TRUE(ds.truncate_sync(f->ino, 1 << 20).ok());
  EXPECT_EQ(allocated(ds, f->ino), (256 - 100) * kGrainBytes);
  // KEEP_SIZE past the end: allocated but the size stays; truncating below releases.
  ASSERT_TRUE(ds.allocate_sync(f->ino, 2 << 20, 1 << 20, /*keep_size=*/true).ok());
  EXPECT_EQ(ds.getattr(f->ino)->size_bytes, 1u << 20);
  EXPECT_EQ(allocated(ds, f->ino), (256 - 100 + 256) * kGrainBytes);
  // Growing into them keeps every one (the grain at the new end too), and they read zeros.
  ASSERT_TRUE(ds.truncate_sync(f->ino, (2 << 20) + 5 * kGrainBytes + 1).ok());
  EXPECT_EQ(allocated(ds, f->ino), (256 - 100 + 256) * kGrainBytes);
  EXPECT_TRUE(all_zero(read_range(ds, f->ino, 1 << 20, (1 << 20) + 5 * kGrainBytes + 1)));
  ASSERT_TRUE(ds.truncate_sync(f->ino, 1 << 20).ok());
  EXPECT_EQ(allocated(ds, f->ino), 156 * kGrainBytes);  // not growing: all past it go
  ASSERT_TRUE(ds.allocate_sync(f->ino, 2 << 20, 1 << 20, /*keep_size=*/true).ok());
  ASSERT_TRUE(ds.truncate_sync(f->ino, 1 << 20).ok());  // the same size releases them too
  EXPECT_EQ(allocated(ds, f->ino), 156 * kGrainBytes);
  ASSERT_TRUE(ds.allocate_sync(f->ino, 2 << 20, 1 << 20, /*keep_size=*/true).ok());
  ASSERT_TRUE(ds.truncate_sync(f->ino, 512 * 1024).ok());
  EXPECT_EQ(allocated(ds, f->ino), (128 - 100) * kGrainBytes);
  // Unlink releases what is left.
  ASSERT_TRUE(ds.unlink(kRootIno, "a.img").ok());
  ASSERT_TRUE(ds.close().ok());
  expect_clean(*o.dev);
}

TEST(Allocate, SnapshotsShareAllocatedGrains) {
  auto o = open_fresh();
  auto& ds = *o.ds;
  auto f = ds.create(kRootIno, "a.img", 0644, 0, 0);
  ASSERT_TRUE(ds.allocate_sync(f->ino, 0, 64 * kGrainBytes).ok());
  const uint64_t used0 = used(ds);
  auto snap = ds.mkdir(make_ino(kSnapshotsDirView, kRootIno), "s1", 0755, 0, 0);
  ASSERT_TRUE(snap.ok()) << snap.error().to_string();
  EXPECT_LE(used(ds) - used0, 2 * kGrainBytes);  // its record only: shared, not copied
  // Writes to allocated grains the snapshot shares: the first may go in place while the
  // snapshot shares the map only through the inode table (the snapshot's slot stays
  // allocated and reads zeros); once the live map is its own copy, they are redirected
  // like shared mapped grains. The snapshot keeps its zeros either way.
  const auto redirected0 = ds.stats().redirected_grain_writes;
  auto d = pattern(2 * kGrainBytes, 8);
  ASSERT_TRUE(ds.write_sync(f->ino, 5 * kGrainBytes, d.data(), d.size()).ok());
  ASSERT_TRUE(ds.write_sync(f->ino, 20 * kGrainBytes, d.data(), d.size()).ok());
  EXPECT_EQ(ds.stats().redirected_grain_writes, redirected0 + 2);
  EXPECT_EQ(read_range(ds, f->ino, 5 * kGrainBytes, d.size()), d);
  EXPECT_EQ(read_range(ds, f->ino, 20 * kGrainBytes, d.size()), d);
  auto simg = ds.lookup(snap->ino, "a.img");
  ASSERT_TRUE(simg.ok());
  EXPECT_TRUE(all_zero(read_range(ds, simg->ino, 0, 64 * kGrainBytes)));
  EXPECT_EQ(simg->allocated_bytes, 64 * kGrainBytes);
  // Deleting the snapshot gives its grains back; later writes go in place again.
  ASSERT_TRUE(ds.rmdir(make_ino(kSnapshotsDirView, kRootIno), "s1").ok());
  ASSERT_TRUE(ds.fsync_sync(kRootIno).ok());
  ASSERT_TRUE(ds.write_sync(f->ino, 40 * kGrainBytes, d.data(), d.size()).ok());
  ASSERT_TRUE(ds.close().ok());
  expect_clean(*o.dev);
}

TEST(Allocate, SurvivesPowerLoss) {
  auto o = open_fresh(256ull << 20, false);
  auto& ds = *o.ds;
  auto f = ds.create(kRootIno, "a.img", 0644, 0, 0);
  ASSERT_TRUE(ds.allocate_sync(f->ino, 0, 8ull << 20).ok());
  ASSERT_TRUE(ds.fsync_sync(kRootIno).ok());
  auto img = o.dev->power_loss(device::PowerLossMode::kRandom, 1);
  expect_clean(*img);
  OpenOptions opts;
  opts.force = true;
  auto r = Datastore::open(std::move(img), opts);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  auto& ds2 = **r;
  EXPECT_EQ(ds2.getattr(f->ino)->allocated_bytes, 8ull << 20);
  EXPECT_EQ(ds2.getattr(f->ino)->size_bytes, 8ull << 20);
  EXPECT_TRUE(all_zero(read_range(ds2, f->ino, 0, 8ull << 20)));
  ASSERT_TRUE(ds2.close().ok());
}

TEST(Allocate, FsckReportsAllocatedSlotsWithoutTheirFeatureBit) {
  auto o = open_fresh();
  auto f = o.ds->create(kRootIno, "a.img", 0644, 0, 0);
  ASSERT_TRUE(o.ds->allocate_sync(f->ino, 0, 16 * kGrainBytes).ok());
  ASSERT_TRUE(o.ds->close().ok());
  expect_clean(*o.dev);
  // Both superblocks written again without the bit: the maps say more than it does.
  auto sb = meta::read_superblock(*o.dev);
  ASSERT_TRUE(sb.ok());
  sb->incompat &= ~format::kIncompatAllocated;
  std::vector<uint8_t> raw(kGrainBytes);
  for (uint64_t grain : {uint64_t{0}, format::kSuperblockCopyGrain}) {
    format::encode_superblock(*sb, sb->generation, format::Grain(raw.data(), kGrainBytes));
    o.dev->poke(grain * kGrainBytes, raw.data(), kGrainBytes);
  }
  auto r = run_fsck(*o.dev);
  ASSERT_FALSE(r.problems.empty());
  EXPECT_NE(joined(r.problems).find("lacks incompat feature 0x1 (allocated grains)"),
            std::string::npos)
      << joined(r.problems);
}

// Power cuts while a large range is allocated piece by piece, committed often: every
// image is clean, the size is the old one or the new one (set with the last piece,
// which commits after the others), and what is allocated reads zeros.
TEST(Allocate, PowerCutsPartWayLeaveAConsistentPrefix) {
  device::SimOptions so;
  so.size_bytes = 128ull << 20;
  so.max_latency_us = 2000;  // slow commits: the journal gate holds the pieces back
  auto dev = std::make_unique<SimDevice>(so);
  MkfsOptions mo;
  mo.journal_bytes = 4ull << 20;  // a small journal: a commit every few hundred pieces
  ASSERT_TRUE(mkfs(*dev, mo).ok());
  SimDevice* raw = dev.get();
  OpenOptions opts;
  opts.commit_interval_ms = 1;
  auto ds = std::move(Datastore::open(std::move(dev), opts)).value();
  auto f = ds->create(kRootIno, "a.img", 0644, 0, 0);
  ASSERT_TRUE(ds->fsync_sync(kRootIno).ok());
  constexpr uint64_t kBytes = 96ull << 20;
  std::promise<Result<void>> done;
  auto answered = done.get_future();
  ds->allocate(f->ino, 0, kBytes, false, [&](Result<void> r) { done.set_value(std::move(r)); });
  std::vector<std::unique_ptr<SimDevice>> images;
  for (uint64_t i = 0; images.size() < 40; ++i) {
    images.push_back(raw->power_loss(device::PowerLossMode::kRandom, i));
    if (answered.wait_for(std::chrono::milliseconds(1)) == std::future_status::ready) break;
  }
  ASSERT_TRUE(answered.get().ok());
  images.push_back(raw->power_loss(device::PowerLossMode::kRandom, 99));
  ASSERT_TRUE(ds->close().ok());
  uint64_t part_way = 0;
  for (size_t k = 0; k < images.size(); ++k) {
    SCOPED_TRACE(fmt::format("image {} of {}", k, images.size()));
    auto r = run_fsck(*images[k]);
    ASSERT_TRUE(r.problems.empty()) << joined(r.problems);
    OpenOptions o2;
    o2.force = true;
    o2.start_background = false;
    auto opened = Datastore::open(std::move(images[k]), o2);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    auto& d2 = **opened;
    const Attr a = *d2.getattr(f->ino);
    ASSERT_TRUE(a.size_bytes == 0 || a.size_bytes == kBytes) << a.size_bytes;
    if (a.size_bytes == kBytes) {
      EXPECT_EQ(a.allocated_bytes, kBytes);
    }
    if (a.allocated_bytes > 0 && a.allocated_bytes < kBytes) ++part_way;
    // What is allocated past the size is released by a truncate below it.
    ASSERT_TRUE(d2.truncate_sync(f->ino, 0).ok());
    EXPECT_EQ(d2.getattr(f->ino)->allocated_bytes, 0u);
    ASSERT_TRUE(d2.close().ok());
  }
  std::printf("allocate power cuts: %zu images, %llu part way\n", images.size(),
              static_cast<unsigned long long>(part_way));
}

// ---- randomised, against a model ----

// The model: per disk, its bytes (size = length) and per grain whether the map holds a
// grain there (written or allocated), also past the end (KEEP_SIZE).
struct ModelDisk {
  std::vector<uint8_t> bytes;
  std::map<uint64_t, bool> held;  // grain -> true when written or allocated
  uint64_t held_count() const {
    uint64_t n = 0;
    for (const auto& [g, h] : held) n += h ? 1 : 0;
    return n;
  }
};

TEST(Allocate, RandomOpsMatchTheModel) {
  // VSFS_ALLOC_SEEDS=N runs seeds 1..N (default 3); VSFS_ALLOC_SEED=S runs only S;
  // VSFS_ALLOC_TRACE=1 prints every operation.
  int first = 1;
  int seeds = std::getenv("VSFS_ALLOC_SEEDS") ? std::atoi(std::getenv("VSFS_ALLOC_SEEDS")) : 3;
  if (const char* one = std::getenv("VSFS_ALLOC_SEED")) {
    first = std::atoi(one);
    seeds = first;
  }
  const bool trace = std::getenv("VSFS_ALLOC_TRACE") != nullptr;
  std::map<std::string, uint64_t> counts;
  for (int seed = first; seed <= seeds; ++seed) {
    SCOPED_TRACE(fmt::format("seed {} (VSFS_ALLOC_SEED={} runs it alone)", seed, seed));
    std::mt19937_64 rng(static_cast<uint64_t>(seed));
    auto o = open_fresh(128ull << 20);
    auto& ds = *o.ds;
    constexpr int kDisks = 3;
    constexpr uint64_t kSpanGrains = 1200;  // ops land in the first ~4.7 MiB of a disk
    std::vector<Ino> inos;
    std::vector<ModelDisk> model(kDisks);
    for (int i = 0; i < kDisks; ++i) inos.push_back(ds.create(kRootIno, fmt::format("d{}", i), 0644, 0, 0)->ino);
    struct Snap {
      std::string name;
      std::vector<std::vector<uint8_t>> bytes;
    };
    std::vector<Snap> snaps;
    auto check_disk = [&](int i) {
      const Attr a = *ds.getattr(inos[i]);
      ASSERT_EQ(a.size_bytes, model[i].bytes.size()) << "disk " << i;
      ASSERT_EQ(a.allocated_bytes, model[i].held_count() * kGrainBytes) << "disk " << i;
      ASSERT_EQ(read_range(ds, inos[i], 0, model[i].bytes.size()), model[i].bytes) << "disk " << i;
    };
    for (int step = 0; step < 300; ++step) {
      const int i = static_cast<int>(rng() % kDisks);
      ModelDisk& m = model[i];
      const uint64_t off = (rng() % kSpanGrains) * kGrainBytes + (rng() % 3 == 0 ? rng() % kGrainBytes : 0);
      const uint64_t len = 1 + rng() % (200 * kGrainBytes);
      const uint64_t end = off + len;
      const int op = static_cast<int>(rng() % 10);
      if (trace) {
        std::printf("step %d disk %d op %d off %llu len %llu size %zu held %llu\n", step, i, op,
                    static_cast<unsigned long long>(off), static_cast<unsigned long long>(len),
                    m.bytes.size(), static_cast<unsigned long long>(m.held_count()));
      }
      if (op <= 2) {
        const bool keep = rng() % 3 == 0;
        ASSERT_TRUE(ds.allocate_sync(inos[i], off, len, keep).ok());
        for (uint64_t g = off / kGrainBytes; g < div_round_up(end, kGrainBytes); ++g) m.held[g] = true;
        if (!keep && end > m.bytes.size()) m.bytes.resize(end, 0);
        ++counts[keep ? "allocate keep_size" : "allocate"];
      } else if (op <= 5) {
        auto d = pattern(len, static_cast<uint32_t>(rng()));
        ASSERT_TRUE(ds.write_sync(inos[i], off, d.data(), d.size()).ok());
        if (end > m.bytes.size()) m.bytes.resize(end, 0);
        std::copy(d.begin(), d.end(), m.bytes.begin() + static_cast<long>(off));
        for (uint64_t g = off / kGrainBytes; g < div_round_up(end, kGrainBytes); ++g) m.held[g] = true;
        ++counts["write"];
      } else if (op <= 7) {
        ASSERT_TRUE(ds.punch_hole_sync(inos[i], off, len).ok());
        const uint64_t size = m.bytes.size();
        if (off < size) {
          const uint64_t pend = std::min(end, size);
          std::fill(m.bytes.begin() + static_cast<long>(off), m.bytes.begin() + static_cast<long>(pend), 0);
          // Whole grains inside the file are released; partial ones (also the file's
          // last grain when the size is not whole grains) are zeroed and stay.
          for (uint64_t g = div_round_up(off, kGrainBytes); g < pend / kGrainBytes; ++g) {
            m.held[g] = false;
          }
        }
        ++counts["punch"];
      } else if (op == 8) {
        const uint64_t size = rng() % 2 == 0 ? (rng() % kSpanGrains) * kGrainBytes
                                             : rng() % (kSpanGrains * kGrainBytes);
        if (trace) std::printf("  truncate to %llu\n", static_cast<unsigned long long>(size));
        ASSERT_TRUE(ds.truncate_sync(inos[i], size).ok());
        if (size <= m.bytes.size()) {  // not growing: everything past the size goes
          for (auto& [g, h] : m.held) {
            if (g >= div_round_up(size, kGrainBytes)) h = false;
          }
        }
        m.bytes.resize(size, 0);
        ++counts["truncate"];
      } else {
        if (snaps.size() < 3 && rng() % 2 == 0) {
          Snap s{fmt::format("s{}", step), {}};
          for (const auto& md : model) s.bytes.push_back(md.bytes);
          ASSERT_TRUE(ds.mkdir(make_ino(kSnapshotsDirView, kRootIno), s.name, 0755, 0, 0).ok());
          snaps.push_back(std::move(s));
          ++counts["snapshot"];
        } else if (!snaps.empty()) {
          const size_t k = rng() % snaps.size();
          // The snapshot still reads as it was taken, then goes.
          auto sd = ds.lookup(make_ino(kSnapshotsDirView, kRootIno), snaps[k].name);
          ASSERT_TRUE(sd.ok());
          for (int d = 0; d < kDisks; ++d) {
            auto sf = ds.lookup(sd->ino, fmt::format("d{}", d));
            ASSERT_TRUE(sf.ok());
            ASSERT_EQ(read_range(ds, sf->ino, 0, snaps[k].bytes[d].size()), snaps[k].bytes[d]);
          }
          ASSERT_TRUE(ds.rmdir(make_ino(kSnapshotsDirView, kRootIno), snaps[k].name).ok());
          snaps.erase(snaps.begin() + static_cast<long>(k));
          ++counts["snapshot delete"];
        }
      }
      check_disk(i);
      if (step % 50 == 49) {
        for (int d = 0; d < kDisks; ++d) check_disk(d);
        ASSERT_TRUE(ds.fsync_sync(kRootIno).ok());
        auto img = o.dev->power_loss(device::PowerLossMode::kRandom, rng());
        auto r = run_fsck(*img);
        ASSERT_TRUE(r.problems.empty()) << "step " << step << "\n" << joined(r.problems);
        ++counts["fsck"];
      }
    }
    ASSERT_TRUE(ds.close().ok());
    expect_clean(*o.dev);
  }
  std::string line = "allocate random:";
  for (const auto& [k, v] : counts) line += fmt::format(" {}={}", k, v);
  std::printf("%s\n", line.c_str());
  for (const char* k : {"allocate", "allocate keep_size", "write", "punch", "truncate", "snapshot",
                        "snapshot delete", "fsck"}) {
    EXPECT_GT(counts[k], 0u) << k << " never ran";
  }
}

}  // namespace
}  // namespace vsfs
