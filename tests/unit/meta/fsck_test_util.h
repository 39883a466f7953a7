// Helpers of the tests that check a datastore with fsck: a run that must succeed, and
// its messages as one string for failure output.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "vsfs/datastore.h"

namespace vsfs {

// Runs fsck, expecting it to run: its report (an empty one when it could not).
inline FsckReport run_fsck(device::Device& dev, const FsckOptions& options = {}) {
  auto r = fsck(dev, options);
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return r.ok() ? std::move(r).value() : FsckReport{};
}

inline std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

}  // namespace vsfs
