// Parsing of rbd: device names (QEMU's form), which needs no cluster. The device itself
// is tested against a real one (tests/ceph/rbd_device_test.cc).
#include "device/rbd_device.h"

#include <gtest/gtest.h>

#include "device/open.h"

namespace vsfs::device {
namespace {

TEST(RbdName, PoolAndImage) {
  auto n = parse_rbd_name("rbd:vms/ds1");
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ("vms", n->pool);
  EXPECT_EQ("", n->name_space);
  EXPECT_EQ("ds1", n->image);
  EXPECT_EQ("", n->id);
  EXPECT_EQ("", n->conf);
  EXPECT_TRUE(n->options.empty());
}

TEST(RbdName, NamespaceUserConfAndOptions) {
  auto n = parse_rbd_name("rbd:vms/tenant/ds1:id=vsfs:conf=/etc/ceph/a.conf:rados_osd_op_timeout=30");
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ("vms", n->pool);
  EXPECT_EQ("tenant", n->name_space);
  EXPECT_EQ("ds1", n->image);
  EXPECT_EQ("vsfs", n->id);
  EXPECT_EQ("/etc/ceph/a.conf", n->conf);
  ASSERT_EQ(1u, n->options.size());
  EXPECT_EQ("30", n->options.at("rados_osd_op_timeout"));
}

TEST(RbdName, BackslashEscapesAColon) {
  auto n = parse_rbd_name("rbd:p/i:conf=/srv/a\\:b/ceph.conf");
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ("/srv/a:b/ceph.conf", n->conf);
}

TEST(RbdName, BadNamesAreRefusedSayingWhy) {
  for (const char* bad : {"rbd:", "rbd:pool", "rbd:pool/", "rbd:/image", "rbd:a/b/c/d",
                          "rbd:pool/image@snap", "rbd:pool/image:novalue", "rbd:pool/image:=x",
                          "rbd:pool/image:rbd_cache=true", "/dev/sda"}) {
    auto n = parse_rbd_name(bad);
    ASSERT_FALSE(n.ok()) << bad;
    EXPECT_EQ(ErrorKind::kInvalidArgument, n.error().kind) << bad;
    EXPECT_NE(std::string::npos, n.error().message.find("rbd:POOL/IMAGE")) << n.error().message;
  }
  // The cache may be named, but only off.
  EXPECT_TRUE(parse_rbd_name("rbd:pool/image:rbd_cache=false").ok());
}

TEST(RbdName, OnlyRbdPrefixedNamesGoToRbd) {
  EXPECT_TRUE(is_rbd_name("rbd:p/i"));
  EXPECT_FALSE(is_rbd_name("/srv/rbd:p/i"));
  EXPECT_FALSE(is_rbd_name("./rbd"));
  // open_device hands a bad rbd: name to the RBD backend, which refuses it before any
  // connection.
  auto d = open_device("rbd:nopool", UringOptions{});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(ErrorKind::kInvalidArgument, d.error().kind);
}

}  // namespace
}  // namespace vsfs::device
