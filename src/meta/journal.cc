// The journal ring: writing transactions and replaying them.
#include "meta/journal.h"

#include <ctime>

#include "util/clock.h"
#include "util/crc32c.h"
#include "util/log.h"

namespace vsfs::meta {

using format::kJournalDescMax;

namespace {


format::Grain grain_at(AlignedBuffer& buf, uint64_t i) {
  return format::Grain(buf.data() + i * kGrainBytes, kGrainBytes);
}

}  // namespace

Journal::Journal(device::Device& dev, uint64_t start_grain, uint64_t ring_grains,
                 uint64_t tail_grain, uint64_t tail_seq)
    : dev_(dev),
      start_(start_grain),
      ring_(ring_grains),
      head_(tail_grain == ring_grains ? 0 : tail_grain),
      seq_(tail_seq) {}

uint64_t Journal::grains_for(uint64_t images) {
  uint64_t groups = images == 0 ? 1 : div_round_up(images, kJournalDescMax);
  return groups + images + 1;
}

bool Journal::fits(uint64_t images) const {
  uint64_t need = grains_for(images);
  if (need > ring_) return false;
  uint64_t waste = head_ + need > ring_ ? ring_ - head_ : 0;
  return used_ + waste + need <= ring_;
}

uint64_t Journal::capacity_images() const {
  // A transaction must fit in an empty ring: leave room for its descs and commit.
  return ring_ - div_round_up(ring_, kJournalDescMax + 1) - 2;
}

Result<uint64_t> Journal::write_transaction(const std::vector<JournalImage>& images) {
  VSFS_ASSERT(fits(images.size()));
  const uint64_t n = images.size();
  const uint64_t grains = grains_for(n);
  if (head_ + grains > ring_) {
    used_ += ring_ - head_;
    head_ = 0;
  }
  const uint64_t base = start_ + head_;
  AlignedBuffer buf(grains * kGrainBytes, false);
  uint64_t g = 0;
  uint64_t next = 0;
  do {
    format::JournalDesc desc;
    desc.seq = seq_;
    uint64_t count = std::min<uint64_t>(kJournalDescMax, n - next);
    for (uint64_t i = 0; i < count; ++i) desc.homes.push_back(images[next + i].home);
    desc.last = next + count == n;
    format::encode_journal_desc(desc, base + g, grain_at(buf, g));
    ++g;
    for (uint64_t i = 0; i < count; ++i) {
      std::memcpy(buf.data() + g * kGrainBytes, images[next + i].data.data(), kGrainBytes);
      ++g;
    }
    next += count;
  } while (next < n);
  format::JournalCommit commit;
  commit.seq = seq_;
  commit.grains = static_cast<uint32_t>(g);
  commit.payload_crc = crc32c(0, buf.data(), g * kGrainBytes);
  commit.time_ns = realtime_ns();
  format::encode_journal_commit(commit, base + g, grain_at(buf, g));
  ++g;
  VSFS_ASSERT(g == grains);

  VSFS_TRY(device::write_sync(dev_, base * kGrainBytes, buf.data(), grains * kGrainBytes));
  VSFS_TRY(device::flush_sync(dev_));
  // A transaction that ends exactly at the end of the ring leaves the head at offset 0:
  // a checkpoint records the head as the tail, and a tail is always inside the ring.
  head_ = head_ + grains == ring_ ? 0 : head_ + grains;
  used_ += grains;
  ++seq_;
  return grains * kGrainBytes;
}

void Journal::add_pending(std::vector<JournalImage>& images) {
  for (auto& img : images) pending_[img.home] = std::move(img);
  images.clear();
}

void Journal::checkpointed() {
  pending_.clear();
  used_ = 0;
}

namespace {

// Reads and validates one transaction starting at ring offset `pos`. On success fills
// `images` (home, data) and returns the ring offset after its commit record.
Result<uint64_t> read_transaction(device::Device& dev, uint64_t start, uint64_t ring,
                                  uint64_t pos, uint64_t seq,
                                  std::vector<JournalImage>& images) {
  uint32_t crc = 0;
  uint64_t g = pos;
  AlignedBuffer one(kGrainBytes, false);
  for (;;) {
    if (g >= ring) return corruption("journal: transaction runs past the end of the ring");
    VSFS_TRY(device::read_sync(dev, (start + g) * kGrainBytes, one.data(), kGrainBytes));
    VSFS_ASSIGN_OR_RETURN(auto desc, format::decode_journal_desc(
                                         format::ConstGrain(one.data(), kGrainBytes), start + g));
    if (desc.seq != seq) {
      return corruption(fmt::format("journal: desc at {} has sequence {}, expected {}", g,
                                    desc.seq, seq));
    }
    // Home 0 is the superblock (and its copy). Any other home in block 0, past the end
    // of the device or inside the ring cannot be a metadata block: applying it would
    // fail, or overwrite the log being read, so that replaying twice would not equal
    // replaying once. Such a desc ends the log like any record that does not validate.
    const uint64_t device_grains = dev.size_bytes() / kGrainBytes;
    for (uint64_t home : desc.homes) {
      if (home != 0 && (home < kGrainsPerBlock || home >= device_grains ||
                        (home >= start && home - start < ring))) {
        return corruption(fmt::format("journal: desc at {} names home grain {}, outside "
                                      "the grains metadata may live in",
                                      g, home));
      }
    }
    crc = crc32c(crc, one.data(), kGrainBytes);
    ++g;
    uint64_t count = desc.homes.size();
    if (g + count > ring) return corruption("journal: images run past the end of the ring");
    AlignedBuffer imgs(count * kGrainBytes, false);
    VSFS_TRY(device::read_sync(dev, (start + g) * kGrainBytes, imgs.data(), count * kGrainBytes));
    crc = crc32c(crc, imgs.data(), count * kGrainBytes);
    for (uint64_t i = 0; i < count; ++i) {
      JournalImage img;
      img.home = desc.homes[i];
      img.data = AlignedBuffer(kGrainBytes, false);
      std::memcpy(img.data.data(), imgs.data() + i * kGrainBytes, kGrainBytes);
      images.push_back(std::move(img));
    }
    g += count;
    if (desc.last) break;
  }
  if (g >= ring) return corruption("journal: commit record past the end of the ring");
  VSFS_TRY(device::read_sync(dev, (start + g) * kGrainBytes, one.data(), kGrainBytes));
  VSFS_ASSIGN_OR_RETURN(auto commit, format::decode_journal_commit(
                                         format::ConstGrain(one.data(), kGrainBytes), start + g));
  if (commit.seq != seq || commit.grains != g - pos || commit.payload_crc != crc) {
    return corruption(fmt::format("journal: commit record at {} does not seal transaction {}",
                                  g, seq));
  }
  return g + 1;
}

}  // namespace

Result<ReplayResult> Journal::replay(device::Device& dev, uint64_t start_grain,
                                     uint64_t ring_grains, uint64_t tail_grain,
                                     uint64_t tail_seq, bool apply) {
  ReplayResult r;
  // Earlier vsfs could record the end of the ring as the tail: that is offset 0.
  uint64_t pos = tail_grain == ring_grains ? 0 : tail_grain;
  uint64_t seq = tail_seq;
  for (;;) {
    std::vector<JournalImage> images;
    auto next = read_transaction(dev, start_grain, ring_grains, pos, seq, images);
    if (!next.ok() && pos != 0) {
      // A transaction that did not fit before the end of the ring starts at offset 0.
      images.clear();
      next = read_transaction(dev, start_grain, ring_grains, 0, seq, images);
    }
    if (!next.ok()) {
      if (next.error().kind != ErrorKind::kCorruption) return next.take_error();
      break;  // the end of the log
    }
    if (apply) {
      for (auto& img : images) {
        VSFS_TRY(device::write_sync(dev, img.home * kGrainBytes, img.data.data(), kGrainBytes));
        if (img.home == 0) {
          VSFS_TRY(device::write_sync(dev, format::kSuperblockCopyGrain * kGrainBytes,
                                      img.data.data(), kGrainBytes));
        }
      }
    }
    r.images += images.size();
    ++r.transactions;
    pos = *next == ring_grains ? 0 : *next;
    ++seq;
  }
  if (apply && r.transactions > 0) VSFS_TRY(device::flush_sync(dev));
  r.end_grain = pos;
  r.end_seq = seq;
  if (r.transactions > 0) {
    VSFS_LOG_INFO("journal: replayed {} transactions ({} blocks)", r.transactions, r.images);
  }
  return r;
}

}  // namespace vsfs::meta
