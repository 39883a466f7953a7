// A map entry that leads somewhere other than a data grain in use: a checksum-valid map
// leaf is rewritten on the simulated device so that one slot points at a metadata
// grain, into the fixed region, at a grain of a free storage block, or at a free grain
// of a data block. Reading (or writing) that slot must answer EUCLEAN and hand out none
// of the bytes there; the other slots of the disk, and other disks, keep working.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "device/sim_device.h"
#include "format/format.h"
#include "meta/meta_store.h"
#include "util/aligned_buffer.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs {
namespace {

using device::SimDevice;
using device::SimOptions;
using format::BlockState;
using format::BlockType;
using format::SlotState;

constexpr uint64_t kDeviceBytes = 64ull << 20;
constexpr uint64_t kDiskGrains = 4;  // slots 0..3 written; slot kPoked is poked
constexpr uint64_t kPoked = 8;

std::unique_ptr<Datastore> open_ds(std::unique_ptr<SimDevice> dev) {
  OpenOptions o;
  o.commit_interval_ms = 60000;
  auto r = Datastore::open(std::move(dev), o);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

std::vector<uint8_t> grain_of(SimDevice& dev, uint64_t grain) {
  std::vector<uint8_t> b(kGrainBytes);
  dev.peek(grain * kGrainBytes, b.data(), b.size());
  return b;
}

// What the test found on the device after a clean close.
struct Layout {
  format::Superblock sb;
  uint64_t leaf = 0;        // the map leaf of the disk
  uint64_t data = 0;        // physical grain of slot 0
  uint64_t free_block = 0;  // a formatted free storage block
};

Layout find_layout(SimDevice& dev, Ino ino) {
  Layout l;
  auto sb = meta::read_superblock(dev);
  EXPECT_TRUE(sb.ok());
  l.sb = *sb;
  uint64_t newest = 0;
  for (uint64_t g = l.sb.first_data_block * kGrainsPerBlock;
       g < l.sb.total_blocks * kGrainsPerBlock; ++g) {
    auto b = grain_of(dev, g);
    format::ConstGrain cg(b.data(), b.size());
    auto node = format::decode_tree_node(cg, g);
    if (!node.ok() || node->type != BlockType::kMapLeaf || node->owner != ino) continue;
    // A freed grain may still hold an older copy: the newest generation is the leaf.
    auto header = format::decode_header(cg, BlockType::kMapLeaf, g);
    if (!header.ok() || header->generation < newest) continue;
    newest = header->generation;
    l.leaf = g;
    l.data = node->slots[0].grain;
  }
  for (uint64_t b = l.sb.total_blocks - 1; b >= l.sb.first_data_block && l.free_block == 0; --b) {
    const uint64_t tg = l.sb.block_table_start_grain + b / format::kBlocksPerTableGrain;
    auto buf = grain_of(dev, tg);
    auto t = format::decode_block_table(format::ConstGrain(buf.data(), buf.size()), tg);
    EXPECT_TRUE(t.ok());
    if (t.ok() && t->entries[b % format::kBlocksPerTableGrain].state == BlockState::kFormattedFree) {
      l.free_block = b;
    }
  }
  return l;
}

// Points slot `slot` of the leaf at `target`, with a valid checksum.
void point_slot(SimDevice& dev, uint64_t leaf, uint64_t slot, uint64_t target) {
  auto buf = grain_of(dev, leaf);
  format::ConstGrain cg(buf.data(), buf.size());
  auto header = format::decode_header(cg, BlockType::kMapLeaf, leaf);
  ASSERT_TRUE(header.ok());
  auto node = format::decode_tree_node(cg, leaf);
  ASSERT_TRUE(node.ok());
  node->slots[slot].grain = target;
  node->slots[slot].state = SlotState::kMapped;
  node->slots[slot].stamp = header->generation;
  AlignedBuffer out(kGrainBytes);
  format::encode_tree_node(*node, leaf, header->generation, format::Grain(out.data(), kGrainBytes));
  ASSERT_TRUE(format::decode_tree_node(format::ConstGrain(out.data(), kGrainBytes), leaf).ok());
  dev.poke(leaf * kGrainBytes, out.data(), kGrainBytes);
}

class GrainRole : public ::testing::Test {
 protected:
  // A datastore with one disk of kDiskGrains written grains, closed cleanly.
  void SetUp() override {
    SimOptions o;
    o.size_bytes = kDeviceBytes;
    auto dev = std::make_unique<SimDevice>(o);
    ASSERT_TRUE(mkfs(*dev, {}).ok());
    SimDevice* raw = dev.get();
    auto ds = open_ds(std::move(dev));
    ASSERT_TRUE(ds);
    auto f = ds->create(kRootIno, "vm.img", 0644, 0, 0);
    ASSERT_TRUE(f.ok());
    ino_ = f->ino;
    data_.assign(kDiskGrains * kGrainBytes, 0);
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<uint8_t>(i * 7 + 3);
    ASSERT_TRUE(ds->write_sync(ino_, 0, data_.data(), data_.size()).ok());
    // The disk is as large as the poked slot, which reads zeros until it is poked.
    ASSERT_TRUE(ds->truncate_sync(ino_, (kPoked + 1) * kGrainBytes).ok());
    ASSERT_TRUE(ds->close().ok());
    image_ = raw->clone();
    layout_ = find_layout(*image_, ino_);
    ASSERT_NE(layout_.leaf, 0u);
    ASSERT_NE(layout_.data, 0u);
    ASSERT_NE(layout_.free_block, 0u);
  }

  // Pokes the slot at `target` (whose bytes are first set to a recognisable pattern
  // when `stale`), reopens, and expects reads and writes of the slot to fail with
  // EUCLEAN without handing out the target's bytes, and the written grains to read back.
  void expect_refused(uint64_t target, bool stale, bool warm_refcounts = false) {
    std::vector<uint8_t> stale_bytes(kGrainBytes, 0x5a);
    if (stale) image_->poke(target * kGrainBytes, stale_bytes.data(), kGrainBytes);
    const bool on_device = target < layout_.sb.total_blocks * kGrainsPerBlock;
    const std::vector<uint8_t> target_bytes =
        on_device ? grain_of(*image_, target) : std::vector<uint8_t>();
    point_slot(*image_, layout_.leaf, kPoked, target);
    auto dev = image_->clone();
    SimDevice* raw = dev.get();
    auto ds = open_ds(std::move(dev));
    ASSERT_TRUE(ds);
    if (warm_refcounts) {
      // An in-place overwrite of slot 1 looks up its grain's reference count, which
      // brings that part of the refcount table into the cache.
      std::vector<uint8_t> again(data_.begin() + kGrainBytes, data_.begin() + 2 * kGrainBytes);
      ASSERT_TRUE(ds->write_sync(ino_, kGrainBytes, again.data(), again.size()).ok());
    }
    std::vector<uint8_t> got(kGrainBytes, 0xee);
    auto r = ds->read_sync(ino_, kPoked * kGrainBytes, got.size(), got.data());
    ASSERT_FALSE(r.ok()) << "read of a slot pointing at grain " << target << " succeeded";
    EXPECT_EQ(r.error().errno_value, EUCLEAN) << r.error().to_string();
    EXPECT_EQ(got, std::vector<uint8_t>(kGrainBytes, 0xee)) << "bytes were handed out";
    EXPECT_NE(got, target_bytes);
    // A read that spans good grains and the bad one fails as a whole.
    std::vector<uint8_t> span((kPoked + 1) * kGrainBytes);
    auto rs = ds->read_sync(ino_, 0, span.size(), span.data());
    ASSERT_FALSE(rs.ok());
    EXPECT_EQ(rs.error().errno_value, EUCLEAN);
    // Writes do not follow it either: not in place (which would overwrite what is
    // there), nor to fill a partial grain from it.
    std::vector<uint8_t> w(kGrainBytes, 0x11);
    auto whole = ds->write_sync(ino_, kPoked * kGrainBytes, w.data(), w.size());
    ASSERT_FALSE(whole.ok());
    EXPECT_EQ(whole.error().errno_value, EUCLEAN);
    auto part = ds->write_sync(ino_, kPoked * kGrainBytes + 100, w.data(), 200);
    ASSERT_FALSE(part.ok());
    EXPECT_EQ(part.error().errno_value, EUCLEAN);
    if (on_device) {
      // vsfs itself may rewrite a metadata target (a checkpoint), but never with these.
      const std::vector<uint8_t> now = grain_of(*raw, target);
      EXPECT_NE(now, w) << "grain " << target << " was overwritten in place";
      EXPECT_NE(std::vector<uint8_t>(now.begin() + 100, now.begin() + 300),
                std::vector<uint8_t>(200, 0x11))
          << "grain " << target << " was overwritten in place";
    }
    // The rest of the disk still reads back.
    std::vector<uint8_t> good(data_.size());
    auto rg = ds->read_sync(ino_, 0, good.size(), good.data());
    ASSERT_TRUE(rg.ok()) << rg.error().to_string();
    EXPECT_EQ(good, data_);
    ASSERT_TRUE(ds->close().ok());
  }

  std::unique_ptr<SimDevice> image_;
  Layout layout_;
  Ino ino_ = 0;
  std::vector<uint8_t> data_;
};

TEST_F(GrainRole, SlotPointingAtAMetadataGrainIsRefused) {
  // The leaf itself: a metadata grain in use.
  expect_refused(layout_.leaf, /*stale=*/false);
}

TEST_F(GrainRole, SlotPointingIntoTheFixedRegionIsRefused) {
  // The superblock's copy, in storage block 0.
  expect_refused(format::kSuperblockCopyGrain, /*stale=*/false);
}

TEST_F(GrainRole, SlotPointingAtAFreeBlockIsRefused) {
  // A free block holding old data (as one on the to-be-formatted list would).
  expect_refused(layout_.free_block * kGrainsPerBlock + 3, /*stale=*/true);
}

TEST_F(GrainRole, SlotPointingPastTheEndIsRefused) {
  expect_refused(layout_.sb.total_blocks * kGrainsPerBlock + 5, /*stale=*/false);
}

TEST_F(GrainRole, SlotPointingAtAFreeGrainOfADataBlockIsRefused) {
  // A grain with reference count 0 inside the disk's own data block, in the same
  // part of the refcount table as slot 1's grain (warmed by a write to slot 1).
  const uint64_t per = format::kGrainsPerRefcountGrain;
  const uint64_t block_first = layout_.data / kGrainsPerBlock * kGrainsPerBlock;
  std::optional<uint64_t> target;
  for (uint64_t g = block_first; g < block_first + kGrainsPerBlock && !target; ++g) {
    const bool used = g >= layout_.data && g < layout_.data + kDiskGrains;
    if (!used && g / per == (layout_.data + 1) / per) target = g;
  }
  ASSERT_TRUE(target.has_value());
  expect_refused(*target, /*stale=*/true, /*warm_refcounts=*/true);
}

// Sharing takes a reference on each grain it shares. A damaged slot pointing into a free
// block must make that an error (EUCLEAN), not stop the process: a clone of the slot,
// and the copy of its leaf when a write follows a snapshot.
TEST_F(GrainRole, CloneOfASlotPointingAtAFreeBlockIsRefused) {
  point_slot(*image_, layout_.leaf, kPoked, layout_.free_block * kGrainsPerBlock + 3);
  auto ds = open_ds(image_->clone());
  ASSERT_TRUE(ds);
  auto copy = ds->create(kRootIno, "copy.img", 0644, 0, 0);
  ASSERT_TRUE(copy.ok());
  auto c = ds->clone_range_sync(ino_, kPoked * kGrainBytes, copy->ino, kPoked * kGrainBytes,
                                kGrainBytes);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().errno_value, EUCLEAN) << c.error().to_string();
  std::vector<uint8_t> good(data_.size());
  ASSERT_TRUE(ds->read_sync(ino_, 0, good.size(), good.data()).ok());
  EXPECT_EQ(good, data_);
  ASSERT_TRUE(ds->close().ok());
}

TEST_F(GrainRole, CopyOfALeafWithASlotPointingAtAFreeBlockIsRefused) {
  point_slot(*image_, layout_.leaf, kPoked, layout_.free_block * kGrainsPerBlock + 3);
  auto ds = open_ds(image_->clone());
  ASSERT_TRUE(ds);
  auto snap = ds->mkdir(make_ino(kSnapshotsDirView, kRootIno), "s1", 0755, 0, 0);
  ASSERT_TRUE(snap.ok()) << snap.error().to_string();
  // Slot 0's leaf is shared with the snapshot now: the write copies it.
  std::vector<uint8_t> w(kGrainBytes, 0x22);
  auto r = ds->write_sync(ino_, 0, w.data(), w.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value, EUCLEAN) << r.error().to_string();
  (void)ds->close();
}

}  // namespace
}  // namespace vsfs
