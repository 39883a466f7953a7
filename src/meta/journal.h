// Journal: the redo log of metadata blocks, a ring of grains on the device.
//
// A transaction is written as groups of [desc][images...] followed by one commit record
// that carries the crc32c of every grain before it; a transaction that does not fit
// before the end of the ring starts at ring offset 0. Replay starts at the superblock's
// tail and applies transactions in sequence until a record fails to validate (a torn or
// never-written commit ends the log). Replaying twice gives the same result: images are
// whole blocks written to their homes.
//
// The journal also keeps, for the checkpoint, the latest committed image of every home
// written since the last checkpoint (the home locations themselves are written only by
// checkpoints, so a cache miss must look here first).
// Thread-safety: none; MetaStore serialises commits and checkpoints.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "device/device.h"
#include "format/format.h"
#include "util/aligned_buffer.h"
#include "util/result.h"

namespace vsfs::meta {

struct JournalImage {
  uint64_t home = 0;
  AlignedBuffer data;  // one grain, sealed
};

struct ReplayResult {
  uint64_t transactions = 0;
  uint64_t images = 0;
  uint64_t end_grain = 0;  // ring offset after the last valid transaction
  uint64_t end_seq = 0;    // sequence number the next transaction gets
};

class Journal {
 public:
  Journal(device::Device& dev, uint64_t start_grain, uint64_t ring_grains, uint64_t tail_grain,
          uint64_t tail_seq);

  // Grains a transaction of n images takes in the ring.
  static uint64_t grains_for(uint64_t images);
  // True when a transaction of n images fits without a checkpoint.
  bool fits(uint64_t images) const;
  uint64_t capacity_images() const;
  // Writes one transaction (images in order; later images of a home win) and flushes.
  // The caller has flushed the device first so the data the images point at is durable.
  // The images stay with the caller, who hands them to add_pending() once it returns.
  Result<uint64_t> write_transaction(const std::vector<JournalImage>& images);
  // Latest committed images not yet at home, ordered by home. The owner guards the map
  // (MetaStore: changes under its mutex, so readers holding it see a consistent map).
  std::map<uint64_t, JournalImage>& pending() { return pending_; }
  void add_pending(std::vector<JournalImage>& images);
  // After a checkpoint wrote pending() home and the superblock records the new tail.
  void checkpointed();
  uint64_t head_grain() const { return head_; }
  uint64_t head_seq() const { return seq_; }
  // Any thread (MetaStore reads it under its mutex while a commit writes).
  uint64_t used_grains() const { return used_.load(std::memory_order_relaxed); }
  uint64_t ring_grains() const { return ring_; }

  // Reads the log from (tail_grain, tail_seq) and writes every committed image to its
  // home (the superblock image, home 0, also to its copy), then flushes. Does not touch
  // the superblock's tail: the caller does that last.
  static Result<ReplayResult> replay(device::Device& dev, uint64_t start_grain,
                                     uint64_t ring_grains, uint64_t tail_grain,
                                     uint64_t tail_seq, bool apply);

 private:
  device::Device& dev_;
  uint64_t start_, ring_;
  uint64_t head_;   // ring offset where the next transaction goes
  uint64_t seq_;    // its sequence number
  // Grains written since the last checkpoint (including waste). Changed by the one
  // committing thread; atomic because wants_checkpoint_locked() reads it meanwhile.
  std::atomic<uint64_t> used_{0};
  std::map<uint64_t, JournalImage> pending_;
};

}  // namespace vsfs::meta
