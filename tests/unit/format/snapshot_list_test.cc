// The snapshot list block: round trip and decode errors.
#include <gtest/gtest.h>

#include "format/format.h"
#include "util/aligned_buffer.h"

namespace vsfs::format {
namespace {

constexpr uint64_t kSelf = 4321;

SnapshotList sample() {
  SnapshotList l;
  l.next = 99;
  SnapshotRecord a;
  a.change_id = 7;
  a.created_ns = 1700000000000000000ull;
  a.inode_root = 5000;
  a.base_ino = 1;
  a.next_ino = 40;
  a.id = 3;
  a.inode_height = 2;
  a.name = "nightly-42";
  SnapshotRecord d = a;
  d.name = std::string(255, 'd');
  d.id = 4;
  d.flags = kSnapDeleted;
  d.inode_root = 0;
  d.inode_height = 0;
  l.records = {a, d};
  return l;
}

TEST(SnapshotList, RoundTrip) {
  AlignedBuffer buf(kGrainBytes);
  Grain g(buf.data(), kGrainBytes);
  encode_snapshot_list(sample(), kSelf, 8, g);
  auto back = decode_snapshot_list(ConstGrain(buf.data(), kGrainBytes), kSelf);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  ASSERT_EQ(back->records.size(), 2u);
  EXPECT_EQ(back->next, 99u);
  EXPECT_EQ(back->records[0].name, "nightly-42");
  EXPECT_EQ(back->records[0].change_id, 7u);
  EXPECT_EQ(back->records[0].inode_root, 5000u);
  EXPECT_EQ(back->records[1].name, std::string(255, 'd'));
  EXPECT_TRUE(back->records[1].flags & kSnapDeleted);
}

Result<SnapshotList> decode_with(const SnapshotList& l) {
  AlignedBuffer buf(kGrainBytes);
  encode_snapshot_list(l, kSelf, 8, Grain(buf.data(), kGrainBytes));
  return decode_snapshot_list(ConstGrain(buf.data(), kGrainBytes), kSelf);
}

TEST(SnapshotList, RejectsBadRecords) {
  auto l = sample();
  l.records[0].name = "full";
  auto r = decode_with(l);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorruption);
  EXPECT_NE(r.error().message.find("snapshot list"), std::string::npos);
  l = sample();
  l.records[0].id = 0xfffd;  // the .cbt view, never a snapshot
  EXPECT_FALSE(decode_with(l).ok());
  l = sample();
  l.records[0].inode_root = 0;  // live but without a tree
  EXPECT_FALSE(decode_with(l).ok());
  l = sample();
  l.records[0].flags = 0x80;
  EXPECT_FALSE(decode_with(l).ok());
}

TEST(SnapshotList, RejectsDamage) {
  AlignedBuffer buf(kGrainBytes);
  encode_snapshot_list(sample(), kSelf, 8, Grain(buf.data(), kGrainBytes));
  buf.data()[200] ^= 1;  // inside a record: the crc catches it
  auto r = decode_snapshot_list(ConstGrain(buf.data(), kGrainBytes), kSelf);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::kCorruption);
}

}  // namespace
}  // namespace vsfs::format
