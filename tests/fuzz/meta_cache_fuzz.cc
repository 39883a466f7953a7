// Fuzz harness for the metadata cache's decode (meta::decode_cached) and encode
// (meta::encode_cached): a grain read as the block type the selector byte names, as
// the metadata store reads every block it caches (fuzz_util.h has the input layout).
//
// Properties: no crash or sanitizer report; an error is kCorruption or kUnsupported
// with a message; a decoded block has the type asked for and the owner its header
// carries; and it re-encodes, with the generation and self address the grain carries,
// to the same bytes. The one exception is the all-zero grain read as a reference count
// grain: mkfs leaves the refcount table as zeros (a hole), decode_cached reads that as
// an empty table, and its encoding is a sealed block, not zeros.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "format/format.h"
#include "fuzz_util.h"
#include "meta/meta_cache.h"

namespace vsfs::fuzz {
namespace {

// The block types the cache holds; the others must be refused.
constexpr std::array<format::BlockType, 11> kCacheable = {
    format::BlockType::kMapInterior, format::BlockType::kMapLeaf,
    format::BlockType::kInodeInterior, format::BlockType::kInodeLeaf,
    format::BlockType::kDirBlock, format::BlockType::kBlockTable,
    format::BlockType::kRefcountTable, format::BlockType::kReleaseList,
    format::BlockType::kSnapshotList, format::BlockType::kInodeExtra,
    format::BlockType::kSpaceSummary};
BlockCounts<kCacheable.size()> g_counts(
    "meta cache", {"map interior", "map leaf", "inode interior", "inode leaf", "dir block",
                   "block table", "refcount table", "release list", "snapshot list",
                   "inode extra", "space summary"});

void run(const BlockInput& in) {
  using format::BlockType;
  // Every block type, the ones the cache does not hold included (they must be refused).
  const auto type = static_cast<BlockType>(1 + in.selector % 14);
  const format::ConstGrain g(in.grain.data(), kGrainBytes);
  const uint64_t self = header_self(in.grain) + ((in.flags & kFlagWrongSelf) ? 1 : 0);
  const uint64_t gen = header_generation(in.grain);
  const char* what = format::block_type_name(type);

  auto r = meta::decode_cached(g, self, type, derived_first_ino(in.grain));
  const auto* it = std::find(kCacheable.begin(), kCacheable.end(), type);
  if (it == kCacheable.end()) {
    VSFS_FUZZ_CHECK(!r.ok(), "%s: decoded although the cache holds no such block", what);
    check_decode_error(r.error(), what);
    return;
  }
  const auto index = static_cast<size_t>(it - kCacheable.begin());
  if (!r.ok()) {
    check_decode_error(r.error(), what);
    g_counts.rejected(index);
    return;
  }
  g_counts.decoded(index);
  const meta::CachedBlock& b = *r;
  VSFS_FUZZ_CHECK(b.type == type, "%s: decoded as type %d", what, static_cast<int>(b.type));
  const bool all_zero =
      std::all_of(in.grain.begin(), in.grain.end(), [](uint8_t c) { return c == 0; });
  if (type == BlockType::kRefcountTable && all_zero) {
    const auto& counts = std::get<format::RefcountGrain>(b.v).counts;
    VSFS_FUZZ_CHECK(std::all_of(counts.begin(), counts.end(), [](uint16_t c) { return c == 0; }),
                    "zero refcount grain: nonzero counts");
    return;
  }
  VSFS_FUZZ_CHECK((in.flags & kFlagWrongSelf) == 0,
                  "%s: decoded although read from another grain than its self", what);
  VSFS_FUZZ_CHECK(b.owner == load_le<uint64_t>(in.grain.data() + format::kOffOwner),
                  "%s: owner %llu differs from the header's", what,
                  static_cast<unsigned long long>(b.owner));
  alignas(8) Buf out{};
  meta::encode_cached(b, self, gen, out);
  check_same_grain(in.grain, out, what);
}

}  // namespace
}  // namespace vsfs::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vsfs::fuzz::run(vsfs::fuzz::read_block_input(data, size));
  return 0;
}
