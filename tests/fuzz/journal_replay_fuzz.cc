// Fuzz harness for journal replay (meta::Journal::replay) on an in-memory device.
//
// A small datastore is made once (mkfs on a SimDevice, with the smallest journal); each
// input lays grains into a copy of its journal ring (fuzz_util.h has the layout) and
// picks the tail to replay from. Properties, beyond no crash or sanitizer report:
//   - replay on a healthy device succeeds (a bad record ends the log; it is never an
//     error, and never an IO the device refuses);
//   - replaying twice leaves the same device as replaying once, with the same result;
//   - replay without apply reports the same and writes nothing;
//   - replay cut by a power loss at any of its IOs, and then run again to the end on
//     what the device kept (all, none, or a random subset of unflushed writes), leaves
//     the same device as one clean replay.
// The device images are compared at every grain replay can write: block 0 (the
// superblock and its copy), every home a desc in the ring names, wherever such a home's
// byte offset lands if it overflows, and the ring grains the input wrote.
//
// At exit one line counts what the run exercised: replays of one and of several
// transactions, logs that wrapped to the ring's start, power cuts before, among and
// after replay's writes, and each way a power loss treats unflushed writes. With
// VSFS_FUZZ_REQUIRE_ALL set (ctest sets it), a count left at zero fails the run.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <iterator>
#include <cstdint>
#include <map>
#include <memory>
#include <set>

#include "device/sim_device.h"
#include "format/format.h"
#include "fuzz_util.h"
#include "meta/journal.h"
#include "util/crc32c.h"
#include "util/log.h"
#include "vsfs/datastore.h"

namespace vsfs::fuzz {
namespace {

using device::PowerLossMode;
using device::SimDevice;

constexpr uint64_t kDeviceBytes = format::kMinDeviceBytes;
constexpr uint64_t kJournalBytes = 4ull << 20;

struct Template {
  std::unique_ptr<SimDevice> dev;
  uint64_t journal_start = 0;
  uint64_t ring = 0;
};

const Template& datastore() {
  static const Template t = [] {
    set_log_level(LogLevel::kError);
    Template t;
    device::SimOptions o;
    o.size_bytes = kDeviceBytes;
    t.dev = std::make_unique<SimDevice>(o);
    auto made = mkfs(*t.dev, MkfsOptions{.journal_bytes = kJournalBytes, .force = true, .progress = {}});
    VSFS_FUZZ_CHECK(made.ok(), "mkfs: %s", made.error().message.c_str());
    alignas(8) Buf g{};
    t.dev->peek(0, g.data(), kGrainBytes);
    auto sb = format::decode_superblock(g);
    VSFS_FUZZ_CHECK(sb.ok(), "superblock: %s", sb.error().message.c_str());
    t.journal_start = sb->journal_start_grain;
    t.ring = sb->journal_grains;
    return t;
  }();
  return t;
}

struct Exercised {
  uint64_t inputs = 0;
  uint64_t replayed_one = 0;      // one transaction or more
  uint64_t replayed_several = 0;  // two or more
  uint64_t wrapped = 0;           // the log went on at the ring's start
  uint64_t cut_before_writes = 0, cut_among_writes = 0, cut_after_writes = 0;
  uint64_t loss_keep = 0, loss_drop = 0, loss_random = 0;

  ~Exercised() {
    if (inputs == 0) return;
    std::fprintf(stderr,
                 "journal replay fuzz: %llu inputs; replayed 1+ transactions %llu, 2+ %llu, "
                 "wrapped %llu; cut before writes %llu, among writes %llu, after writes "
                 "%llu; power loss keep %llu, drop %llu, random %llu\n",
                 u(inputs), u(replayed_one), u(replayed_several), u(wrapped),
                 u(cut_before_writes), u(cut_among_writes), u(cut_after_writes),
                 u(loss_keep), u(loss_drop), u(loss_random));
    const uint64_t counts[] = {replayed_one,     replayed_several, wrapped,
                               cut_before_writes, cut_among_writes, cut_after_writes,
                               loss_keep,        loss_drop,        loss_random};
    if (std::getenv("VSFS_FUZZ_REQUIRE_ALL") != nullptr &&
        std::any_of(std::begin(counts), std::end(counts), [](uint64_t c) { return c == 0; })) {
      std::fprintf(stderr, "journal replay fuzz: a case above was never exercised\n");
      std::_Exit(1);
    }
  }
  static unsigned long long u(uint64_t v) { return static_cast<unsigned long long>(v); }
};
Exercised g_exercised;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  template <typename T>
  T take() {
    T v = 0;
    for (size_t i = 0; i < sizeof(T) && pos_ < size_; ++i, ++pos_) {
      v |= static_cast<T>(static_cast<T>(data_[pos_]) << (8 * i));
    }
    return v;
  }
  void take_bytes(uint8_t* out, size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

bool is_record(const Buf& g, format::BlockType type) {
  return load_le<uint32_t>(g.data() + format::kOffMagic) == format::kMetaMagic &&
         load_le<uint16_t>(g.data() + format::kOffType) == static_cast<uint16_t>(type);
}

// Gives each desc and commit of a segment what a writer would: its address, and for a
// commit the count and crc of the grains since the previous commit (or the segment's
// start).
void fix_records(std::map<uint64_t, Buf>& ring, uint64_t journal_start, uint64_t first,
                 uint64_t last) {
  uint64_t txn_start = first;
  for (uint64_t g = first; g < last; ++g) {
    Buf& b = ring[g];
    if (is_record(b, format::BlockType::kJournalDesc)) {
      store_le<uint64_t>(b.data() + format::kOffSelf, journal_start + g);
      format::seal(b);
    } else if (is_record(b, format::BlockType::kJournalCommit)) {
      uint32_t crc = 0;
      for (uint64_t i = txn_start; i < g; ++i) crc = crc32c(crc, ring[i].data(), kGrainBytes);
      store_le<uint64_t>(b.data() + format::kOffSelf, journal_start + g);
      store_le<uint32_t>(b.data() + format::kHeaderBytes + 8, static_cast<uint32_t>(g - txn_start));
      store_le<uint32_t>(b.data() + format::kHeaderBytes + 12, crc);
      format::seal(b);
      txn_start = g + 1;
    }
  }
}

// Grains replay may write, as device byte offsets.
std::set<uint64_t> watched_offsets(const std::map<uint64_t, Buf>& ring, uint64_t journal_start) {
  std::set<uint64_t> out;
  for (uint64_t g = 0; g < kGrainsPerBlock; ++g) out.insert(g * kGrainBytes);
  for (const auto& [g, b] : ring) {
    out.insert((journal_start + g) * kGrainBytes);
    auto desc = format::decode_journal_desc(b, journal_start + g);
    if (!desc.ok()) continue;
    for (uint64_t home : desc->homes) {
      const uint64_t off = home * kGrainBytes;  // wraps for absurd homes: watch there too
      if (off <= kDeviceBytes - kGrainBytes) out.insert(off);
    }
  }
  return out;
}

void check_same_device(const SimDevice& a, const SimDevice& b, const std::set<uint64_t>& offsets,
                       const char* what) {
  alignas(8) Buf x{}, y{};
  for (uint64_t off : offsets) {
    a.peek(off, x.data(), kGrainBytes);
    b.peek(off, y.data(), kGrainBytes);
    VSFS_FUZZ_CHECK(std::memcmp(x.data(), y.data(), kGrainBytes) == 0,
                    "%s: grain %llu differs from one clean replay", what,
                    static_cast<unsigned long long>(off / kGrainBytes));
  }
}

void check_same_result(const meta::ReplayResult& a, const meta::ReplayResult& b,
                       const char* what) {
  VSFS_FUZZ_CHECK(a.transactions == b.transactions && a.images == b.images &&
                      a.end_grain == b.end_grain && a.end_seq == b.end_seq,
                  "%s: replayed %llu transactions (%llu images) to grain %llu seq %llu, "
                  "one clean replay %llu (%llu) to %llu seq %llu",
                  what, static_cast<unsigned long long>(b.transactions),
                  static_cast<unsigned long long>(b.images),
                  static_cast<unsigned long long>(b.end_grain),
                  static_cast<unsigned long long>(b.end_seq),
                  static_cast<unsigned long long>(a.transactions),
                  static_cast<unsigned long long>(a.images),
                  static_cast<unsigned long long>(a.end_grain),
                  static_cast<unsigned long long>(a.end_seq));
}

void run(const uint8_t* data, size_t size) {
  const Template& t = datastore();
  Reader in(data, size);
  const uint8_t flags = in.take<uint8_t>();
  const uint8_t cut = in.take<uint8_t>();
  const uint64_t tail_grain = in.take<uint16_t>() % t.ring;
  const uint64_t tail_seq = in.take<uint32_t>();

  std::map<uint64_t, Buf> ring;
  size_t placed = 0;
  while (!in.empty() && placed < kReplayMaxGrains) {
    const uint64_t first = in.take<uint16_t>() % t.ring;
    const size_t count = std::min<size_t>(in.take<uint8_t>(), kReplayMaxGrains - placed);
    uint64_t g = first;
    for (size_t i = 0; i < count && g < t.ring && !in.empty(); ++i, ++g, ++placed) {
      Buf& b = ring[g];
      b.fill(0);
      in.take_bytes(b.data(), std::min<size_t>(in.take<uint16_t>(), kGrainBytes));
    }
    if (flags & kReplayFixRecords) fix_records(ring, t.journal_start, first, g);
  }

  auto base = t.dev->clone();
  for (const auto& [g, b] : ring) base->poke((t.journal_start + g) * kGrainBytes, b.data(), kGrainBytes);
  const std::set<uint64_t> offsets = watched_offsets(ring, t.journal_start);
  auto replay = [&](SimDevice& dev, bool apply) {
    return meta::Journal::replay(dev, t.journal_start, t.ring, tail_grain, tail_seq, apply);
  };

  // One clean replay: the reference.
  auto a = base->clone();
  const uint64_t ios_before = a->io_count();
  auto ra = replay(*a, true);
  VSFS_FUZZ_CHECK(ra.ok(), "replay on a healthy device failed: %s", ra.error().message.c_str());
  const uint64_t ios = a->io_count() - ios_before;
  VSFS_FUZZ_CHECK(ios > 0, "replay did no IO");
  const uint64_t writes = a->counters().ops[static_cast<int>(device::OpKind::kWrite)];
  ++g_exercised.inputs;
  if (ra->transactions >= 1) ++g_exercised.replayed_one;
  if (ra->transactions >= 2) ++g_exercised.replayed_several;
  if (ra->transactions >= 1 && ra->end_grain <= tail_grain) ++g_exercised.wrapped;

  // Without apply: the same result, nothing written.
  {
    auto n = base->clone();
    auto rn = replay(*n, false);
    VSFS_FUZZ_CHECK(rn.ok(), "replay without apply failed: %s", rn.error().message.c_str());
    check_same_result(*ra, *rn, "replay without apply");
    check_same_device(*base, *n, offsets, "replay without apply (against the device before)");
  }
  // Twice equals once.
  {
    auto b = base->clone();
    for (int i = 0; i < 2; ++i) {
      auto rb = replay(*b, true);
      VSFS_FUZZ_CHECK(rb.ok(), "replay %d failed: %s", i + 1, rb.error().message.c_str());
      check_same_result(*ra, *rb, i == 0 ? "first of two replays" : "second of two replays");
    }
    check_same_device(*a, *b, offsets, "two replays");
  }
  // Cut at IO k, power loss, replay again to the end.
  {
    auto c = base->clone();
    const uint64_t k = 1 + cut % ios;
    c->die_at_io(k);
    auto rc = replay(*c, true);
    VSFS_FUZZ_CHECK(!rc.ok(), "replay succeeded although the power went off at its IO %llu",
                    static_cast<unsigned long long>(k));
    const uint64_t written = c->counters().ops[static_cast<int>(device::OpKind::kWrite)];
    if (written == 0) {
      ++g_exercised.cut_before_writes;
    } else if (written < writes) {
      ++g_exercised.cut_among_writes;
    } else {
      ++g_exercised.cut_after_writes;
    }
    const uint8_t loss = flags & kReplayLossMask;
    ++(loss == 1 ? g_exercised.loss_drop : loss == 2 ? g_exercised.loss_random : g_exercised.loss_keep);
    const PowerLossMode mode = loss == 1   ? PowerLossMode::kDropAll
                               : loss == 2 ? PowerLossMode::kRandom
                                           : PowerLossMode::kKeepAll;
    auto after = c->power_loss(mode, cut);
    auto rd = replay(*after, true);
    VSFS_FUZZ_CHECK(rd.ok(), "replay after the power loss failed: %s",
                    rd.error().message.c_str());
    check_same_result(*ra, *rd, "replay after a cut replay");
    check_same_device(*a, *after, offsets, "replay after a cut replay");
  }
}

}  // namespace
}  // namespace vsfs::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vsfs::fuzz::run(data, size);
  return 0;
}
