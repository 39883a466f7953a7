// Helpers shared by the fuzz harnesses and the seed corpus generator: the layout of a
// block harness's input, the checks that stop a run, and byte comparison of grains.
//
// A block harness's input is one selector byte (which decoder), one flag byte, then the
// grain's bytes (zero-padded to a whole grain, anything past it ignored). With
// kFlagSeal the harness seals the grain before decoding it, so that the fuzzer reaches
// the field checks behind the crc32c without a special build of the library.
// Thread-safety: none; each harness runs one input at a time.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "format/format.h"
#include "util/endian.h"
#include "util/result.h"

// A property of the harness failed: print where and why, and stop (libFuzzer keeps the
// input as a crash).
#define VSFS_FUZZ_CHECK(cond, ...)                                            \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "vsfs fuzz: check failed at %s:%d: %s\n", __FILE__, \
                   __LINE__, #cond);                                          \
      std::fprintf(stderr, "  " __VA_ARGS__);                                 \
      std::fprintf(stderr, "\n");                                             \
      std::abort();                                                           \
    }                                                                         \
  } while (0)

namespace vsfs::fuzz {

using Buf = std::array<uint8_t, kGrainBytes>;

inline constexpr uint8_t kFlagSeal = 1u << 0;       // seal the grain before decoding
inline constexpr uint8_t kFlagWrongSelf = 1u << 1;  // decode as if read from self + 1
inline constexpr size_t kBlockInputFixed = 2;       // selector, flags

// The format harness's selector (format_fuzz.cc), modulo kCount.
enum class FormatTarget : uint8_t {
  kHeader,
  kSuperblock,
  kTreeNode,
  kInodeLeaf,
  kDirBlock,
  kBlockTable,
  kRefcounts,
  kJournalDesc,
  kJournalCommit,
  kReleaseList,
  kSnapshotList,
  kInodeExtra,
  kSpaceSummary,
  kCount,
};

struct BlockInput {
  uint8_t selector = 0;
  uint8_t flags = 0;
  alignas(8) Buf grain{};
};

inline BlockInput read_block_input(const uint8_t* data, size_t size) {
  BlockInput in;
  if (size > 0) in.selector = data[0];
  if (size > 1) in.flags = data[1];
  if (size > kBlockInputFixed) {
    std::memcpy(in.grain.data(), data + kBlockInputFixed,
                std::min(size - kBlockInputFixed, in.grain.size()));
  }
  if (in.flags & kFlagSeal) format::seal(in.grain);
  return in;
}

// The header fields a decoder is given by its caller: where the block was read from
// and the generation its encoder must be passed again. Taken from the block itself,
// so that a decode that succeeds can be re-encoded with the values it carries.
inline uint64_t header_self(const Buf& g) { return load_le<uint64_t>(g.data() + format::kOffSelf); }
inline uint64_t header_generation(const Buf& g) {
  return load_le<uint64_t>(g.data() + format::kOffGeneration);
}

// An inode leaf's first inode number is its position in the inode table, which the
// caller knows. The harness takes it from the first used record (record i holds
// first_ino + i), so that records the fuzzer makes can be valid.
inline uint64_t derived_first_ino(const Buf& g) {
  for (size_t i = 0; i < format::kInodesPerLeaf; ++i) {
    const uint64_t ino =
        load_le<uint64_t>(g.data() + format::kHeaderBytes + i * format::kInodeBytes);
    if (ino != 0) return ino - i;
  }
  return 0;
}

// A decode error must be one of the decoders' documented kinds, with a message.
inline void check_decode_error(const Error& e, const char* what) {
  VSFS_FUZZ_CHECK(e.kind == ErrorKind::kCorruption || e.kind == ErrorKind::kUnsupported,
                  "%s: unexpected error kind %s: %s", what, error_kind_name(e.kind),
                  e.message.c_str());
  VSFS_FUZZ_CHECK(!e.message.empty(), "%s: error without a message", what);
}

// What a block harness exercised: per target, blocks decoded (and round-tripped) and
// blocks rejected. At exit one line lists them; with VSFS_FUZZ_REQUIRE_ALL set (ctest
// sets it), a target that never decoded or never rejected a block fails the run.
template <size_t N>
class BlockCounts {
 public:
  BlockCounts(const char* harness, std::array<const char*, N> names)
      : harness_(harness), names_(names) {}
  BlockCounts(const BlockCounts&) = delete;
  BlockCounts& operator=(const BlockCounts&) = delete;
  ~BlockCounts() {
    uint64_t total = 0;
    for (size_t i = 0; i < N; ++i) total += decoded_[i] + rejected_[i];
    if (total == 0) return;
    bool all = true;
    std::fprintf(stderr, "%s fuzz: decoded/rejected", harness_);
    for (size_t i = 0; i < N; ++i) {
      std::fprintf(stderr, "%s %s %llu/%llu", i == 0 ? "" : ";", names_[i],
                   static_cast<unsigned long long>(decoded_[i]),
                   static_cast<unsigned long long>(rejected_[i]));
      all = all && decoded_[i] > 0 && rejected_[i] > 0;
    }
    std::fprintf(stderr, "\n");
    if (!all && std::getenv("VSFS_FUZZ_REQUIRE_ALL") != nullptr) {
      std::fprintf(stderr, "%s fuzz: a decoder above never decoded or never rejected\n",
                   harness_);
      std::_Exit(1);
    }
  }
  void decoded(size_t i) { ++decoded_[i]; }
  void rejected(size_t i) { ++rejected_[i]; }

 private:
  const char* harness_;
  std::array<const char*, N> names_;
  std::array<uint64_t, N> decoded_{};
  std::array<uint64_t, N> rejected_{};
};

// The re-encoded block must be the decoded one, byte for byte.
inline void check_same_grain(const Buf& decoded, const Buf& encoded, const char* what) {
  if (std::memcmp(decoded.data(), encoded.data(), kGrainBytes) == 0) return;
  size_t i = 0;
  while (decoded[i] == encoded[i]) ++i;
  VSFS_FUZZ_CHECK(false, "%s: re-encoding differs at byte %zu (0x%02x decoded, 0x%02x encoded)",
                  what, i, decoded[i], encoded[i]);
}

}  // namespace vsfs::fuzz

namespace vsfs::fuzz {

// The journal replay harness's input (journal_replay_fuzz.cc):
//   u8 flags   bits 0-1: how the power cut leaves unflushed writes (kReplayKeep...);
//              kReplayFixRecords: give each desc and commit its self address, and each
//              commit the grain count and crc of the grains before it, then seal them
//   u8 cut     the power goes off at replay's IO number 1 + cut % (its IOs)
//   u16 tail_grain (taken modulo the ring), u32 tail_seq
//   then segments to the end: u16 ring offset (modulo the ring), u8 grain count, and
//   per grain a u16 length and that many bytes (the rest of the grain is zeros).
inline constexpr uint8_t kReplayLossMask = 3;  // 0, 3 keep all; 1 drop all; 2 random
inline constexpr uint8_t kReplayFixRecords = 1u << 2;
inline constexpr size_t kReplayFixedBytes = 8;
inline constexpr size_t kReplayMaxGrains = 64;  // per input, to keep one run short

// Appends a segment of whole grains, each written without its trailing zeros.
inline void append_replay_segment(std::vector<uint8_t>& out, uint16_t ring_offset,
                                  const std::vector<Buf>& grains) {
  out.push_back(static_cast<uint8_t>(ring_offset));
  out.push_back(static_cast<uint8_t>(ring_offset >> 8));
  out.push_back(static_cast<uint8_t>(grains.size()));
  for (const Buf& g : grains) {
    size_t len = g.size();
    while (len > 0 && g[len - 1] == 0) --len;
    out.push_back(static_cast<uint8_t>(len));
    out.push_back(static_cast<uint8_t>(len >> 8));
    out.insert(out.end(), g.begin(), g.begin() + len);
  }
}

}  // namespace vsfs::fuzz
