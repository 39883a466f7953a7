// Fuzz harness for every decoder of the on-disk format (src/format): the header, the
// superblock, tree nodes, inode leaves, directory blocks, the block table, reference
// counts, journal descs and commits, release lists, snapshot lists and inode extra blocks
// (with the content codec run over the block's piece). The selector
// byte picks the decoder (fuzz_util.h has the input layout).
//
// Properties: no decoder crashes or trips a sanitizer; an error is kCorruption or
// kUnsupported with a message; a block read from another grain than its own does not
// decode; and a block that decodes re-encodes, with the generation and self address it
// carries, to the same bytes, so that every accepted block has one encoding.
#include <cstddef>
#include <cstdint>

#include "format/format.h"
#include "fuzz_util.h"

namespace vsfs::fuzz {
namespace {

using Target = FormatTarget;

const char* target_name(Target t) {
  switch (t) {
    case Target::kHeader: return "header";
    case Target::kSuperblock: return "superblock";
    case Target::kTreeNode: return "tree node";
    case Target::kInodeLeaf: return "inode leaf";
    case Target::kDirBlock: return "dir block";
    case Target::kBlockTable: return "block table";
    case Target::kRefcounts: return "refcounts";
    case Target::kJournalDesc: return "journal desc";
    case Target::kJournalCommit: return "journal commit";
    case Target::kReleaseList: return "release list";
    case Target::kSnapshotList: return "snapshot list";
    case Target::kInodeExtra: return "inode extra";
    case Target::kSpaceSummary: return "space summary";
    case Target::kCount: break;
  }
  return "?";
}

BlockCounts<static_cast<size_t>(Target::kCount)> g_counts(
    "format", {"header", "superblock", "tree node", "inode leaf", "dir block", "block table",
               "refcounts", "journal desc", "journal commit", "release list",
               "snapshot list", "inode extra"});

// Decodes with `decode`, and on success re-encodes with `encode` and compares.
template <typename Decode, typename Encode>
void round_trip(Target target, const Buf& in, const char* what, bool must_fail, Decode decode,
                Encode encode) {
  auto r = decode();
  if (!r.ok()) {
    check_decode_error(r.error(), what);
    g_counts.rejected(static_cast<size_t>(target));
    return;
  }
  g_counts.decoded(static_cast<size_t>(target));
  VSFS_FUZZ_CHECK(!must_fail, "%s: decoded although read from another grain than its self",
                  what);
  alignas(8) Buf out{};
  encode(*r, out);
  check_same_grain(in, out, what);
}

void run(const BlockInput& in) {
  using namespace format;
  const auto target = static_cast<Target>(in.selector % static_cast<uint8_t>(Target::kCount));
  const char* what = target_name(target);
  const ConstGrain g(in.grain.data(), kGrainBytes);
  const uint64_t gen = header_generation(in.grain);
  const bool wrong_self = (in.flags & kFlagWrongSelf) != 0;
  const uint64_t self = header_self(in.grain) + (wrong_self ? 1 : 0);

  switch (target) {
    case Target::kHeader: {
      // Any known type is asked for; the header check must accept only that type.
      const uint16_t raw = load_le<uint16_t>(in.grain.data() + kOffType);
      const auto type = raw >= 1 && raw <= 12 ? static_cast<BlockType>(raw)
                                              : BlockType::kMapLeaf;
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_header(g, type, self); },
                 [&](const MetaHeader& h, Buf& out) {
                   VSFS_FUZZ_CHECK(h.type == type && h.self == self, "header: fields differ");
                   out = in.grain;  // the payload is not the header's
                   encode_header(out, h);
                   seal(out);
                 });
      return;
    }
    case Target::kSuperblock:
      // The superblock's self is 0 at both of its copies.
      round_trip(target, in.grain, what, false, [&] { return decode_superblock(g); },
                 [&](const Superblock& sb, Buf& out) {
                   encode_superblock(sb, gen, out);
                   // A superblock of the short payload (before the lifetime counters)
                   // is written back with the full one, counters zero: compare it cut
                   // back to the short form.
                   if (load_le<uint32_t>(in.grain.data() + kOffLength) ==
                       kSbPayloadEndShort - kHeaderBytes) {
                     VSFS_FUZZ_CHECK(sb.lifetime == LifetimeCounters{},
                                     "superblock: short payload with counters");
                     for (size_t i = kSbPayloadEndShort; i < kSbPayloadEnd; ++i) {
                       VSFS_FUZZ_CHECK(out[i] == 0, "superblock: counters written nonzero");
                     }
                     store_le<uint32_t>(out.data() + kOffLength,
                                        kSbPayloadEndShort - kHeaderBytes);
                     seal(out);
                   }
                 });
      return;
    case Target::kTreeNode:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_tree_node(g, self); },
                 [&](const TreeNode& n, Buf& out) { encode_tree_node(n, self, gen, out); });
      return;
    case Target::kInodeLeaf: {
      const uint64_t first_ino = derived_first_ino(in.grain);
      round_trip(target, in.grain, what, wrong_self,
                 [&] { return decode_inode_leaf(g, self, first_ino); },
                 [&](const InodeLeaf& l, Buf& out) {
                   VSFS_FUZZ_CHECK(l.first_ino == first_ino, "inode leaf: first_ino differs");
                   encode_inode_leaf(l, self, gen, out);
                 });
      return;
    }
    case Target::kDirBlock:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_dir_block(g, self); },
                 [&](const DirBlock& d, Buf& out) { encode_dir_block(d, self, gen, out); });
      return;
    case Target::kBlockTable:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_block_table(g, self); },
                 [&](const BlockTableGrain& t, Buf& out) {
                   encode_block_table(t, self, gen, out);
                 });
      return;
    case Target::kRefcounts:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_refcounts(g, self); },
                 [&](const RefcountGrain& t, Buf& out) { encode_refcounts(t, self, gen, out); });
      return;
    case Target::kJournalDesc:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_journal_desc(g, self); },
                 [&](const JournalDesc& d, Buf& out) { encode_journal_desc(d, self, out); });
      return;
    case Target::kJournalCommit:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_journal_commit(g, self); },
                 [&](const JournalCommit& c, Buf& out) {
                   encode_journal_commit(c, self, out);
                 });
      return;
    case Target::kReleaseList:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_release_list(g, self); },
                 [&](const ReleaseList& l, Buf& out) {
                   encode_release_list(l, self, gen, out);
                 });
      return;
    case Target::kSnapshotList:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_snapshot_list(g, self); },
                 [&](const SnapshotList& l, Buf& out) {
                   encode_snapshot_list(l, self, gen, out);
                 });
      return;
    case Target::kInodeExtra:
      round_trip(target, in.grain, what, wrong_self, [&] { return decode_extra_block(g, self); },
                 [&](const ExtraBlock& b, Buf& out) {
                   encode_extra_block(b, self, gen, out);
                   // The piece as a whole content: what decodes re-encodes to itself.
                   auto content = decode_inode_extra(b.piece, what);
                   if (!content.ok()) {
                     check_decode_error(content.error(), what);
                   } else {
                     VSFS_FUZZ_CHECK(encode_inode_extra(*content) == b.piece,
                                     "inode extra: content re-encodes differently");
                   }
                 });
      return;
    case Target::kSpaceSummary:
      round_trip(target, in.grain, what, wrong_self,
                 [&] { return decode_space_summary(g, self); },
                 [&](const SpaceSummaryGrain& s, Buf& out) {
                   encode_space_summary(s, self, gen, out);
                 });
      return;
    case Target::kCount:
      break;
  }
}

}  // namespace
}  // namespace vsfs::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vsfs::fuzz::run(vsfs::fuzz::read_block_input(data, size));
  return 0;
}
