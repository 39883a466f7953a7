// A MetaStore on a fresh simulated device, for the tests of the disk layer's parts that
// need metadata but no datastore (inode_table, change_gates, services).
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "device/sim_device.h"
#include "meta/meta_store.h"
#include "vsfs/datastore.h"

namespace vsfs::test {

struct SimMetaStore {
  std::unique_ptr<device::SimDevice> dev;
  std::unique_ptr<meta::MetaStore> ms;
};

inline SimMetaStore open_sim_meta_store(uint64_t size_bytes = 64ull << 20) {
  SimMetaStore m;
  device::SimOptions o;
  o.size_bytes = size_bytes;
  m.dev = std::make_unique<device::SimDevice>(o);
  EXPECT_TRUE(mkfs(*m.dev, {}).ok());
  auto r = meta::MetaStore::open(*m.dev, meta::MetaOptions{});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  if (r.ok()) m.ms = std::move(r).value();
  return m;
}

}  // namespace vsfs::test
