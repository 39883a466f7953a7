// The lease (meta/lease.h): one writer per datastore whatever the path to its bytes. Two
// holders over one simulated device: a live holder keeps a taker out; a stale one is
// taken over only after the lease time; a holder frozen past its lease is fenced before
// the taker writes, and not one of its IOs reaches the device afterwards.
#include "meta/lease.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "device/sim_device.h"
#include "support/borrowed_device.h"
#include "util/aligned_buffer.h"

namespace vsfs::meta {
namespace {

using device::SimDevice;
using format::LeaseRecord;
using format::LeaseState;
using testing::BorrowedDevice;

constexpr uint32_t kLeaseMs = 1000;  // renewals every 250 ms: room for a loaded machine

std::unique_ptr<SimDevice> device_of(uint64_t bytes = 64ull << 20) {
  device::SimOptions o;
  o.size_bytes = bytes;
  return std::make_unique<SimDevice>(o);
}

LeaseOptions quick(std::vector<std::string>* said = nullptr) {
  LeaseOptions o;
  o.lease_ms = kLeaseMs;
  o.settle_ms = 20;
  if (said) o.say = [said](const std::string& line) { said->push_back(line); };
  return o;
}

void put(SimDevice& dev, const LeaseRecord& r) {
  AlignedBuffer buf(kGrainBytes);
  format::encode_lease(r, format::Grain(buf.data(), kGrainBytes));
  dev.poke(format::kLeaseGrain * kGrainBytes, buf.data(), kGrainBytes);
}

int64_t ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t)
      .count();
}

// A device whose IOs can be held back, as if its process were frozen before issuing
// them; counts the data writes that pass once it opens again.
class GateDevice final : public device::Device {
 public:
  explicit GateDevice(SimDevice& sim) : sim_(sim) {}
  void close() {
    std::lock_guard l(mu_);
    open_ = false;
  }
  void open() {
    {
      std::lock_guard l(mu_);
      open_ = true;
      reopened_ = true;
    }
    cv_.notify_all();
  }
  uint64_t writes_after_reopen() const { return late_writes_.load(); }

  uint64_t size_bytes() const override { return sim_.size_bytes(); }
  uint32_t alignment_bytes() const override { return sim_.alignment_bytes(); }
  bool discard_zeroes() const override { return sim_.discard_zeroes(); }
  void submit(std::span<device::IoRequest> requests) override {
    wait_open(requests);
    sim_.submit(requests);
  }
  device::DeviceCounters counters() const override { return sim_.counters(); }
  std::string describe() const override { return "gate"; }
  bool in_completion_context() const override { return sim_.in_completion_context(); }
  int64_t execute_inline(const device::IoRequest& r) override {
    wait_open(std::span<const device::IoRequest>(&r, 1));
    return sim_.execute_inline(r);
  }

 private:
  void wait_open(std::span<const device::IoRequest> requests) {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return open_; });
    if (!reopened_) return;
    for (const auto& r : requests) {
      // A renewal caught by the freeze may land late: the taker writes over it. A data
      // write may not.
      if (r.kind == device::OpKind::kWrite && r.offset_bytes != format::kLeaseGrain * kGrainBytes) {
        late_writes_.fetch_add(1);
      }
    }
  }
  SimDevice& sim_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true, reopened_ = false;
  std::atomic<uint64_t> late_writes_{0};
};

TEST(Lease, AFreeLeaseIsTakenRenewedAndReleased) {
  auto dev = device_of();
  EXPECT_EQ(read_lease(*dev).value().state, LeaseState::kFree);  // an all-zero grain
  auto lease = Lease::acquire(*dev, quick());
  ASSERT_TRUE(lease.ok()) << lease.error().to_string();
  EXPECT_TRUE((*lease)->valid());
  const LeaseRecord held = read_lease(*dev).value();
  EXPECT_EQ(held.state, LeaseState::kHeld);
  EXPECT_EQ(held.pid, static_cast<uint32_t>(::getpid()));
  std::this_thread::sleep_for(std::chrono::milliseconds(3 * kLeaseMs));
  EXPECT_TRUE((*lease)->valid());
  EXPECT_GE((*lease)->renewals(), 4u);
  EXPECT_GT(read_lease(*dev).value().counter, held.counter);
  ASSERT_TRUE((*lease)->release().ok());
  EXPECT_FALSE((*lease)->valid());  // released: this holder writes nothing more
  EXPECT_EQ(read_lease(*dev).value().state, LeaseState::kFree);
  // The next one takes it without watching anything.
  std::vector<std::string> said;
  auto next = Lease::acquire(*dev, quick(&said));
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(said.empty());
  ASSERT_TRUE((*next)->release().ok());
}

TEST(Lease, ALiveHolderKeepsEveryTakerOut) {
  auto dev = device_of();
  BorrowedDevice path_a(*dev), path_b(*dev);  // two paths to the same bytes
  auto a = Lease::acquire(path_a, quick());
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 3; ++i) {
    const LeaseRecord before = read_lease(*dev).value();
    auto b = Lease::acquire(path_b, quick());
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.error().kind, ErrorKind::kBusy);
    EXPECT_NE(b.error().message.find("in use by"), std::string::npos) << b.error().message;
    EXPECT_NE(b.error().message.find("this host"), std::string::npos) << b.error().message;
    EXPECT_EQ(read_lease(*dev).value().nonce, before.nonce);  // the taker wrote nothing
    auto live = live_lease_holder(path_b, kLeaseMs, {});
    ASSERT_TRUE(live.ok());
    ASSERT_TRUE(live->has_value());
    EXPECT_EQ((*live)->nonce, before.nonce);
  }
  EXPECT_TRUE((*a)->valid());
  ASSERT_TRUE((*a)->release().ok());
  auto live = live_lease_holder(path_b, kLeaseMs, {});
  ASSERT_TRUE(live.ok());
  EXPECT_FALSE(live->has_value());
}

// A record left by a holder on another host that stopped: taken only after the holder's
// lease time has passed twice (watched, then waited out after the claim).
TEST(Lease, AStaleHolderIsTakenOverAfterTheLeaseTime) {
  auto dev = device_of();
  LeaseRecord other;
  other.state = LeaseState::kHeld;
  other.lease_ms = 2 * kLeaseMs;  // its own, longer lease time counts
  other.nonce = 77;
  other.counter = 5;
  other.machine_id[0] = 0xee;
  other.pid = 4242;
  other.hostname = "elsewhere";
  put(*dev, other);
  EXPECT_TRUE(live_lease_holder(*dev, kLeaseMs, {}).value() == std::nullopt);
  std::vector<std::string> said;
  const auto start = std::chrono::steady_clock::now();
  auto lease = Lease::acquire(*dev, quick(&said));
  ASSERT_TRUE(lease.ok()) << lease.error().to_string();
  EXPECT_GE(ms_since(start), 2 * 2 * kLeaseMs);
  ASSERT_EQ(said.size(), 2u);
  EXPECT_NE(said[0].find("elsewhere (pid 4242)"), std::string::npos) << said[0];
  EXPECT_NE(said[1].find("stopped renewing"), std::string::npos) << said[1];
  EXPECT_TRUE((*lease)->valid());
  ASSERT_TRUE((*lease)->release().ok());
}

// A holder on this host whose process is gone is certainly not writing: no wait.
TEST(Lease, AGoneHolderOnThisHostIsTakenAtOnce) {
  auto dev = device_of();
  LeaseRecord gone;
  {
    auto a = Lease::acquire(*dev, quick());
    ASSERT_TRUE(a.ok());
    gone = (*a)->record();
  }  // stops renewing, record left held (a crash)
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  gone.pid = static_cast<uint32_t>(child);
  put(*dev, gone);
  std::vector<std::string> said;
  auto b = Lease::acquire(*dev, quick(&said));
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  ASSERT_EQ(said.size(), 1u);
  EXPECT_NE(said[0].find("is gone"), std::string::npos) << said[0];
  ASSERT_TRUE((*b)->release().ok());
}

// The holder freezes (its IO held back past the lease time), a taker takes over, the
// holder wakes: every IO through its fenced device fails, and none reaches the device.
TEST(Lease, AFrozenHolderIsFencedBeforeTheTakerWrites) {
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    auto dev = device_of();
    auto gate_owned = std::make_unique<GateDevice>(*dev);
    GateDevice* gate = gate_owned.get();
    auto a = Lease::acquire(*gate, quick());
    ASSERT_TRUE(a.ok());
    Lease* a_lease = a->get();
    FencedDevice fenced(std::move(gate_owned), std::move(a).value(), quick());
    AlignedBuffer buf(kGrainBytes);
    std::memset(buf.data(), 0xa1, kGrainBytes);
    ASSERT_TRUE(device::write_sync(fenced, 100 * kGrainBytes, buf.data(), kGrainBytes).ok());

    gate->close();  // frozen
    std::this_thread::sleep_for(std::chrono::milliseconds(round * kLeaseMs / 3));
    BorrowedDevice path_b(*dev);
    auto b = Lease::acquire(path_b, quick());
    ASSERT_TRUE(b.ok()) << b.error().to_string();
    EXPECT_FALSE(a_lease->valid());  // expired before the taker could write
    std::memset(buf.data(), 0xb2, kGrainBytes);
    ASSERT_TRUE(device::write_sync(path_b, 100 * kGrainBytes, buf.data(), kGrainBytes).ok());

    gate->open();  // wakes
    std::memset(buf.data(), 0xa1, kGrainBytes);
    auto w = device::write_sync(fenced, 100 * kGrainBytes, buf.data(), kGrainBytes);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().errno_value, EIO);
    EXPECT_FALSE(device::read_sync(fenced, 0, buf.data(), kGrainBytes).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(kLeaseMs));
    EXPECT_EQ(gate->writes_after_reopen(), 0u);
    EXPECT_TRUE((*b)->valid());
    const LeaseRecord now = read_lease(*dev).value();
    EXPECT_EQ(now.nonce, (*b)->record().nonce);
    dev->peek(100 * kGrainBytes, buf.data(), kGrainBytes);
    EXPECT_EQ(buf.data()[0], 0xb2);
    EXPECT_FALSE(a_lease->lost_reason().empty());
    ASSERT_TRUE((*b)->release().ok());
  }
}

}  // namespace
}  // namespace vsfs::meta
