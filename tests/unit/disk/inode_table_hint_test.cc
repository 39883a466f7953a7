// Where new grains go: a disk fills its current storage block before it takes another,
// whether it is written through an open reference (as vsfs-mount's open files are) or
// through the API without one (each request then finds the disk with no runtime state).
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <numeric>
#include <random>
#include <vector>

#include "device/sim_device.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;
using device::SimOptions;

std::unique_ptr<Datastore> open_ds(uint64_t device_bytes) {
  SimOptions o;
  o.size_bytes = device_bytes;
  auto dev = std::make_unique<SimDevice>(o);
  EXPECT_TRUE(mkfs(*dev, {}).ok());
  auto r = Datastore::open(std::move(dev), OpenOptions{});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// Storage blocks in use (data and metadata).
uint64_t blocks_used(Datastore& ds) {
  const SpaceInfo s = ds.space();
  return s.total_bytes / kBlockBytes - s.formatted_blocks - s.to_format_blocks;
}

// Grain indexes [0, span) in a seeded random order: no two writes in a row are
// contiguous, so each one allocates on its own.
std::vector<uint64_t> scattered(uint64_t span, uint64_t seed) {
  std::vector<uint64_t> v(span);
  std::iota(v.begin(), v.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

class AllocationHint : public ::testing::TestWithParam<bool> {
 protected:
  bool open_refs() const { return GetParam(); }
};

TEST_P(AllocationHint, ScatteredWritesFillTheCurrentBlockFirst) {
  auto ds = open_ds(256ull << 20);
  ASSERT_TRUE(ds);
  constexpr int kDisks = 4;
  constexpr uint64_t kGrainsEach = 600;  // a little over two storage blocks per disk
  std::vector<Ino> disks;
  for (int d = 0; d < kDisks; ++d) {
    auto f = ds->create(kRootIno, "disk" + std::to_string(d) + ".img", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    disks.push_back(f->ino);
    if (open_refs()) {
      ASSERT_TRUE(ds->open_ref(f->ino).ok());
    }
  }
  const uint64_t before = blocks_used(*ds);
  std::vector<std::vector<uint64_t>> order;
  for (int d = 0; d < kDisks; ++d) order.push_back(scattered(4 * kGrainsEach, 10 + d));
  std::vector<uint8_t> grain(kGrainBytes);
  // The disks take turns, one grain each, as VMs writing at once would.
  for (uint64_t i = 0; i < kGrainsEach; ++i) {
    for (int d = 0; d < kDisks; ++d) {
      std::fill(grain.begin(), grain.end(), static_cast<uint8_t>(d * 31 + i));
      auto w = ds->write_sync(disks[d], order[d][i] * kGrainBytes, grain.data(), grain.size());
      ASSERT_TRUE(w.ok()) << "disk " << d << " write " << i << ": " << w.error().to_string();
    }
  }
  // Each disk fills its blocks: ceil(600 / 256) = 3 data blocks each, plus what the
  // maps take (a metadata block, two at most).
  const uint64_t ideal = kDisks * div_round_up(kGrainsEach, kGrainsPerBlock);
  const uint64_t used = blocks_used(*ds) - before;
  EXPECT_LE(used, ideal + 2) << "storage blocks taken for " << kDisks * kGrainsEach
                             << " scattered grains";
  // And every grain reads back.
  for (int d = 0; d < kDisks; ++d) {
    for (uint64_t i = 0; i < kGrainsEach; i += 37) {
      std::vector<uint8_t> got(kGrainBytes);
      ASSERT_TRUE(ds->read_sync(disks[d], order[d][i] * kGrainBytes, got.size(), got.data()).ok());
      EXPECT_EQ(got, std::vector<uint8_t>(kGrainBytes, static_cast<uint8_t>(d * 31 + i)));
    }
  }
  if (open_refs()) {
    for (Ino ino : disks) ds->release_ref(ino);
  }
  ASSERT_TRUE(ds->close().ok());
}

TEST_P(AllocationHint, ScatteredWritesLeaveRoomForMetadata) {
  // Four disks of a 1 GiB datastore written a grain at a time in random order, 64 MiB
  // in all: none may fail. Taking a storage block per write would have taken every
  // block after a thousand writes and left none for the maps, which keep growing.
  auto ds = open_ds(1ull << 30);
  ASSERT_TRUE(ds);
  constexpr int kDisks = 4;
  constexpr uint64_t kSpanGrains = (256ull << 20) / kGrainBytes;  // each disk: 256 MiB
  constexpr uint64_t kWrites = (64ull << 20) / kGrainBytes;
  std::vector<Ino> disks;
  std::vector<std::vector<uint64_t>> order;
  for (int d = 0; d < kDisks; ++d) {
    auto f = ds->create(kRootIno, "fill" + std::to_string(d) + ".img", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    disks.push_back(f->ino);
    order.push_back(scattered(kSpanGrains, 20 + d));
    if (open_refs()) {
      ASSERT_TRUE(ds->open_ref(f->ino).ok());
    }
  }
  const uint64_t before = blocks_used(*ds);
  std::vector<uint8_t> grain(kGrainBytes, 0x3c);
  for (uint64_t i = 0; i < kWrites; ++i) {
    const int d = static_cast<int>(i % kDisks);
    auto w = ds->write_sync(disks[d], order[d][i / kDisks] * kGrainBytes, grain.data(),
                            grain.size());
    ASSERT_TRUE(w.ok()) << "write " << i << " (" << i * kGrainBytes << " bytes written): "
                        << w.error().to_string();
  }
  // 64 data blocks, and the maps: a leaf per 252 grains of span touched, ~4 blocks.
  EXPECT_LE(blocks_used(*ds) - before, 64u + 4 + 4);
  if (open_refs()) {
    for (Ino ino : disks) ds->release_ref(ino);
  }
  ASSERT_TRUE(ds->close().ok());
}

INSTANTIATE_TEST_SUITE_P(, AllocationHint, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "OpenRef" : "NoOpenRef";
                         });

}  // namespace
}  // namespace vsfs
