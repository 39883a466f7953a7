// Helpers of the Datastore API tests on the simulated device (datastore_test.cc,
// namespace_ops_test.cc, data_path_test.cc): a fresh datastore, open options, and data.
#pragma once

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "device/sim_device.h"
#include "util/aligned_buffer.h"
#include "util/units.h"
#include "vsfs/datastore.h"

namespace vsfs::test {

using device::SimDevice;
using device::SimOptions;

inline std::unique_ptr<SimDevice> fresh_device(uint64_t size = 256ull << 20) {
  SimOptions o;
  o.size_bytes = size;
  auto dev = std::make_unique<SimDevice>(o);
  auto r = mkfs(*dev, {});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return dev;
}

// A fresh datastore on a device whose IOs take up to `max_latency_us` each and
// complete out of order (requests stay in flight long enough to race with something).
inline std::unique_ptr<SimDevice> slow_device(uint32_t max_latency_us) {
  SimOptions o;
  o.size_bytes = 256ull << 20;
  o.max_latency_us = max_latency_us;
  o.reorder_completions = true;
  auto dev = std::make_unique<SimDevice>(o);
  auto r = mkfs(*dev, {});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return dev;
}

inline OpenOptions quiet() {
  OpenOptions o;
  o.start_background = true;
  return o;
}

inline std::unique_ptr<Datastore> open_ds(std::unique_ptr<SimDevice> dev, OpenOptions o = quiet()) {
  auto r = Datastore::open(std::move(dev), o);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// Commits only when asked (an fsync), so that a test decides what is durable.
inline OpenOptions manual_commits() {
  OpenOptions o = quiet();
  o.commit_interval_ms = 60000;
  return o;
}

// The datastore as the next mount finds it on a device image taken after power loss.
inline std::unique_ptr<Datastore> open_after_power_loss(std::unique_ptr<SimDevice> image) {
  OpenOptions o = quiet();
  o.force = true;
  return open_ds(std::move(image), o);
}

// The whole of a file, as read_sync reads it.
inline std::vector<uint8_t> read_all(Datastore& ds, Ino ino) {
  auto a = ds.getattr(ino);
  EXPECT_TRUE(a.ok());
  if (!a.ok()) return {};
  std::vector<uint8_t> v(a->size_bytes);
  EXPECT_TRUE(ds.read_sync(ino, 0, v.size(), v.data()).ok());
  return v;
}

inline std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

}  // namespace vsfs::test
