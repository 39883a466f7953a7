// BorrowedDevice: a Device that forwards to a SimDevice it does not own. Datastore::open
// takes its device and frees it when the open fails; a test that cuts the power during
// an open still needs the image afterwards.
#pragma once

#include <span>
#include <string>

#include "device/sim_device.h"

namespace vsfs::testing {

class BorrowedDevice final : public device::Device {
 public:
  explicit BorrowedDevice(device::SimDevice& sim) : sim_(sim) {}
  uint64_t size_bytes() const override { return sim_.size_bytes(); }
  uint32_t alignment_bytes() const override { return sim_.alignment_bytes(); }
  bool discard_zeroes() const override { return sim_.discard_zeroes(); }
  void submit(std::span<device::IoRequest> requests) override { sim_.submit(requests); }
  device::DeviceCounters counters() const override { return sim_.counters(); }
  std::string describe() const override { return sim_.describe(); }
  std::optional<uint64_t> backing_free_bytes() const override { return sim_.backing_free_bytes(); }
  bool in_completion_context() const override { return sim_.in_completion_context(); }
  int64_t execute_inline(const device::IoRequest& r) override { return sim_.execute_inline(r); }

 private:
  device::SimDevice& sim_;
};

}  // namespace vsfs::testing
