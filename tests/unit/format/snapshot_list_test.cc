// The snapshot list block: round trip and decode errors.
#include <gtest/gtest.h>

#include <cstring>

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

// A record taken by a user other than root carries the uid; root's has no taker field,
// so a datastore whose snapshots are all root's reads as before kSnapTaker existed.
TEST(SnapshotList, TakerRoundTripAndSize) {
  SnapshotList l = sample();
  const size_t root_bytes = snapshot_record_bytes(l.records[0]);
  l.records[0].taker_uid = 1000;
  l.records[1].taker_uid = 0xfffffffeu;
  EXPECT_EQ(snapshot_record_bytes(l.records[0]), root_bytes + kSnapshotTakerBytes);
  AlignedBuffer buf(kGrainBytes);
  Grain g(buf.data(), kGrainBytes);
  encode_snapshot_list(l, kSelf, 8, g);
  auto back = decode_snapshot_list(ConstGrain(buf.data(), kGrainBytes), kSelf);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  ASSERT_EQ(back->records.size(), 2u);
  EXPECT_EQ(back->records[0].taker_uid, 1000u);
  EXPECT_EQ(back->records[0].flags, 0);  // kSnapTaker is the encoding's, not the record's
  EXPECT_EQ(back->records[0].name, "nightly-42");
  EXPECT_EQ(back->records[1].taker_uid, 0xfffffffeu);
  EXPECT_EQ(back->records[1].flags, kSnapDeleted);
  EXPECT_EQ(back->records[1].name, std::string(255, 'd'));
  // The first record's flags byte, taker field and reserved word.
  const size_t rec = kHeaderBytes + 16;
  EXPECT_EQ(buf.data()[rec + 43], kSnapTaker);
  uint32_t uid = 0;
  std::memcpy(&uid, buf.data() + rec + kSnapshotFixedBytes, 4);
  EXPECT_EQ(uid, 1000u);
  // A taker field holding uid 0 is damage (root's records have none).
  std::memset(buf.data() + rec + kSnapshotFixedBytes, 0, 4);
  seal(g);
  auto bad = decode_snapshot_list(ConstGrain(buf.data(), kGrainBytes), kSelf);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("uid 0"), std::string::npos) << bad.error().message;
  // So is a nonzero reserved word after it.
  encode_snapshot_list(l, kSelf, 8, g);
  buf.data()[rec + kSnapshotFixedBytes + 5] = 1;
  seal(g);
  EXPECT_FALSE(decode_snapshot_list(ConstGrain(buf.data(), kGrainBytes), kSelf).ok());
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
