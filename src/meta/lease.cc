#include "meta/lease.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>

#include "util/aligned_buffer.h"
#include "util/clock.h"
#include "util/log.h"

namespace vsfs::meta {

using format::LeaseRecord;
using format::LeaseState;

namespace {

int64_t boot_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int64_t ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// 32 hexadecimal digits (dashes ignored) from the first line of `path`, or zeros.
std::array<uint8_t, 16> hex_id(const char* path) {
  std::array<uint8_t, 16> id{};
  std::ifstream in(path);
  std::string line, hex;
  std::getline(in, line);
  for (char c : line) {
    if (std::isxdigit(static_cast<unsigned char>(c))) hex += c;
  }
  if (hex.size() != 32) return id;
  for (size_t i = 0; i < 16; ++i) id[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return id;
}

// This process as a holder: its host (machine, boot, pid namespace) and pid.
LeaseRecord me(uint32_t lease_ms) {
  LeaseRecord r;
  r.state = LeaseState::kHeld;
  r.lease_ms = lease_ms;
  r.nonce = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
  if (r.nonce == 0) r.nonce = 1;
  r.machine_id = hex_id("/etc/machine-id");
  r.boot_id = hex_id("/proc/sys/kernel/random/boot_id");
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) == 0) r.pid_ns = st.st_ino;
  r.pid = static_cast<uint32_t>(::getpid());
  char host[format::kLeaseHostnameBytes + 1] = {};
  ::gethostname(host, format::kLeaseHostnameBytes);
  r.hostname = host;
  return r;
}

bool same_host(const LeaseRecord& a, const LeaseRecord& b) {
  return a.machine_id == b.machine_id && a.boot_id == b.boot_id && a.pid_ns == b.pid_ns &&
         a.machine_id != std::array<uint8_t, 16>{};
}

// Whether process `pid` of this pid namespace has exited (a zombie waiting for its
// parent has: it runs no code and its IO has ended).
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t close = line.rfind(')');  // the command may hold spaces and parentheses
  return close != std::string::npos && close + 2 < line.size() &&
         (line[close + 2] == 'Z' || line[close + 2] == 'X');
}

// On this host and its process is gone: certainly not writing.
bool holder_gone(const LeaseRecord& r, const LeaseRecord& self) {
  return same_host(r, self) && r.pid != self.pid && process_gone(static_cast<pid_t>(r.pid));
}

Result<void> write_lease(device::Device& dev, const LeaseRecord& r) {
  AlignedBuffer buf(kGrainBytes);
  format::encode_lease(r, format::Grain(buf.data(), kGrainBytes));
  // Durable by itself (FUA), so that renewing flushes nothing else of the datastore.
  return device::write_durable_sync(dev, format::kLeaseGrain * kGrainBytes, buf.data(),
                                    kGrainBytes);
}

// How long after a successful renewal was issued its holder may write. A taker writes
// no sooner than the lease time and a quarter after its claim, which came at least the
// lease time and a quarter after the last renewal it saw move the counter; a renewal that
// landed just after that (unseen) is found overwritten at the holder's next one. Three
// quarters of the lease time leaves room for renewals slowed by a loaded device.
int64_t valid_window(uint32_t lease_ms) { return int64_t{lease_ms} * 3 / 4; }

Error busy(const std::string& what) { return make_error(EBUSY, ErrorKind::kBusy, "{}", what); }

}  // namespace

std::string heartbeat_age(const LeaseRecord& r) {
  const uint64_t now = realtime_ns();
  if (r.renewed_ns == 0 || r.renewed_ns > now) return "";
  return fmt::format(" (last heartbeat {:.1f} s ago by its clock)", (now - r.renewed_ns) / 1e9);
}

namespace {

// Watches a held lease for its lease time (at least `lease_ms`). Returns the record
// when it moved (a live holder; or free now: state kFree), nullopt when it stood still.
Result<std::optional<LeaseRecord>> watch(device::Device& dev, const LeaseRecord& first,
                                          uint32_t lease_ms,
                                          const std::function<void(const std::string&)>& say) {
  const int64_t window = std::max(first.lease_ms, lease_ms) + std::max(first.lease_ms, lease_ms) / 4;
  if (say) {
    say(fmt::format("the datastore's lease is held by {}{}: watching its heartbeat for {:.1f} s",
                    lease_holder_text(first), heartbeat_age(first), window / 1e3));
  }
  const int64_t step = std::clamp<int64_t>(window / 16, 50, 500);
  const int64_t end = boot_ms() + window;
  while (boot_ms() < end) {
    sleep_ms(std::min(step, end - boot_ms()));
    VSFS_ASSIGN_OR_RETURN(LeaseRecord now, read_lease(dev));
    if (now.state != first.state || now.nonce != first.nonce || now.counter != first.counter) {
      return std::optional<LeaseRecord>(now);
    }
  }
  return std::optional<LeaseRecord>();
}

}  // namespace

std::string lease_holder_text(const LeaseRecord& r) {
  const LeaseRecord self = me(0);
  return fmt::format("{} (pid {}{})", r.hostname.empty() ? "an unnamed host" : r.hostname, r.pid,
                     same_host(r, self) ? ", this host" : "");
}

Result<LeaseRecord> read_lease(device::Device& dev) {
  AlignedBuffer buf(kGrainBytes);
  VSFS_TRY(device::read_sync(dev, format::kLeaseGrain * kGrainBytes, buf.data(), kGrainBytes));
  return format::decode_lease(format::ConstGrain(buf.data(), kGrainBytes));
}

Result<std::optional<LeaseRecord>> live_lease_holder(
    device::Device& dev, uint32_t lease_ms, const std::function<void(const std::string&)>& say) {
  VSFS_ASSIGN_OR_RETURN(LeaseRecord r, read_lease(dev));
  if (r.state == LeaseState::kFree || holder_gone(r, me(0))) return std::optional<LeaseRecord>();
  VSFS_ASSIGN_OR_RETURN(auto moved, watch(dev, r, lease_ms, say));
  if (moved && moved->state == LeaseState::kFree) return std::optional<LeaseRecord>();
  return moved;
}

Result<std::unique_ptr<Lease>> Lease::acquire(device::Device& dev, const LeaseOptions& o) {
  VSFS_ASSERT(o.lease_ms >= 40);
  LeaseRecord mine = me(o.lease_ms);
  VSFS_ASSIGN_OR_RETURN(LeaseRecord found, read_lease(dev));
  // How long to wait after the claim before reading it back.
  int64_t wait = o.settle_ms;
  if (found.state == LeaseState::kHeld) {
    if (holder_gone(found, mine)) {
      if (o.say) o.say(fmt::format("the datastore's last holder, {}, is gone: taking its lease", lease_holder_text(found)));
    } else {
      VSFS_ASSIGN_OR_RETURN(auto moved, watch(dev, found, o.lease_ms, o.say));
      if (moved && moved->state == LeaseState::kHeld) {
        return busy(fmt::format("the datastore is in use by {}, which renews its lease{}",
                                lease_holder_text(*moved), heartbeat_age(*moved)));
      }
      if (!moved) {
        const uint32_t lease = std::max(found.lease_ms, o.lease_ms);
        wait = lease + lease / 4;
        if (o.say) {
          o.say(fmt::format("{} stopped renewing the datastore's lease{}; taking it over in "
                            "{:.1f} s (longer than the lease time)",
                            lease_holder_text(found), heartbeat_age(found), wait / 1e3));
        }
      }
    }
  }
  // Claim, keep the claim's heartbeat going while waiting (a watcher sees it move), and
  // read it back: still ours, or someone else's claim came last.
  // A record of the holder this claim replaces that shows up again is a late write of
  // it (issued before it stopped, landed after): that holder's own lease has expired,
  // so the claim is written again rather than given up.
  const uint64_t previous = found.state == LeaseState::kHeld ? found.nonce : 0;
  mine.counter = 1;
  mine.renewed_ns = realtime_ns();
  int64_t last_ok = boot_ms();
  VSFS_TRY(write_lease(dev, mine));
  const int64_t end = boot_ms() + wait;
  for (;;) {
    sleep_ms(std::min<int64_t>(o.lease_ms / 4, end - boot_ms()));
    const int64_t issued = boot_ms();
    VSFS_ASSIGN_OR_RETURN(LeaseRecord now, read_lease(dev));
    if (now.nonce != mine.nonce && (previous == 0 || now.nonce != previous)) {
      return busy(fmt::format("{} took the datastore's lease while this mount waited",
                              lease_holder_text(now)));
    }
    const bool confirmed = issued >= end && now.nonce == mine.nonce;
    ++mine.counter;
    mine.renewed_ns = realtime_ns();
    VSFS_TRY(write_lease(dev, mine));
    last_ok = issued;
    if (confirmed) break;
  }
  std::unique_ptr<Lease> lease(new Lease(dev, o, mine, previous, last_ok + valid_window(o.lease_ms)));
  lease->thread_ = std::thread([l = lease.get()] { l->run(); });
  return lease;
}

Lease::Lease(device::Device& dev, const LeaseOptions& options, const LeaseRecord& mine,
             uint64_t previous_nonce, int64_t valid_until_ms)
    : dev_(dev),
      options_(options),
      mine_(mine),
      previous_nonce_(previous_nonce),
      valid_until_ms_(valid_until_ms) {}

Lease::~Lease() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Lease::valid() const { return boot_ms() < valid_until_ms_.load(std::memory_order_acquire); }

std::string Lease::lost_reason() const {
  std::lock_guard lock(mu_);
  return lost_reason_;
}

void Lease::fence(const std::string& why) {
  valid_until_ms_.store(0, std::memory_order_release);
  std::lock_guard lock(mu_);
  if (lost_reason_.empty()) lost_reason_ = why;
}

void Lease::run() {
  const auto period = std::chrono::milliseconds(options_.lease_ms / 4);
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, period, [&] { return stop_; })) {
    lock.unlock();
    const int64_t issued = boot_ms();
    const int64_t until = valid_until_ms_.load(std::memory_order_acquire);
    std::string lost;
    if (issued >= until) {
      // Late (frozen, or the device too slow): a taker may be waiting already.
      lost = fmt::format("the lease was not renewed in time (its last renewal expired "
                         "{} ms ago)",
                         issued - until);
    } else if (auto now = read_lease(dev_); !now.ok()) {
      VSFS_LOG_WARN("lease: cannot read it to renew: {}", now.error().message);
    } else if (now->nonce != mine_.nonce && (previous_nonce_ == 0 || now->nonce != previous_nonce_)) {
      lost = fmt::format("{} took the lease over", lease_holder_text(*now));
    } else {
      if (now->nonce != mine_.nonce) {
        VSFS_LOG_WARN("lease: a late write of the previous holder's record ({}) landed; "
                      "written over (that holder's lease had expired)",
                      lease_holder_text(*now));
      }
      ++mine_.counter;
      mine_.renewed_ns = realtime_ns();
      if (auto w = write_lease(dev_, mine_); !w.ok()) {
        VSFS_LOG_WARN("lease: renewal failed: {}", w.error().message);
      } else {
        // Only forward, and never once lost.
        int64_t was = until;
        const int64_t want = issued + valid_window(options_.lease_ms);
        while (was != 0 && was < want &&
               !valid_until_ms_.compare_exchange_weak(was, want, std::memory_order_acq_rel)) {
        }
        renewals_.fetch_add(1);
      }
    }
    if (!lost.empty()) {
      fence(lost);
      VSFS_LOG_ERROR("lost the datastore: {}; no IO reaches the device from now on", lost);
      return;
    }
    lock.lock();
  }
}

Result<void> Lease::release() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!valid()) return make_error(EIO, ErrorKind::kState, "the lease was lost: {}", lost_reason());
  auto now = read_lease(dev_);
  if (!now.ok()) return now.take_error();
  if (now->nonce != mine_.nonce) return ok_result();  // not ours to free
  LeaseRecord free = mine_;
  free.state = LeaseState::kFree;
  ++free.counter;
  free.renewed_ns = realtime_ns();
  VSFS_TRY(write_lease(dev_, free));
  fence("released");
  return ok_result();
}

// ---- FencedDevice ----

FencedDevice::FencedDevice(std::unique_ptr<device::Device> base, std::unique_ptr<Lease> lease,
                           const LeaseOptions& options)
    : base_(std::move(base)), options_(options) {
  lease_.store(lease.get(), std::memory_order_release);
  leases_.push_back(std::move(lease));
}

FencedDevice::~FencedDevice() {
  Lease* lease = lease_.exchange(nullptr);
  if (lease == nullptr) return;
  if (auto r = lease->release(); !r.ok()) VSFS_LOG_WARN("lease: not released: {}", r.error().message);
}

Result<void> FencedDevice::set_writer(bool writer) {
  std::lock_guard lock(leases_mu_);
  Lease* lease = lease_.load(std::memory_order_acquire);
  if (writer) {
    if (lease != nullptr && lease->valid()) return ok_result();
    VSFS_ASSIGN_OR_RETURN(auto taken, Lease::acquire(*base_, options_));
    told_ = false;
    lease_.store(taken.get(), std::memory_order_release);
    leases_.push_back(std::move(taken));
    return ok_result();
  }
  if (lease == nullptr) return ok_result();
  lease_.store(nullptr, std::memory_order_release);
  return lease->release();
}

int FencedDevice::refusal(device::OpKind kind) {
  const Lease* lease = lease_.load(std::memory_order_acquire);
  const bool changes = kind != device::OpKind::kRead && kind != device::OpKind::kFlush;
  if (lease == nullptr) return changes ? -EROFS : 0;
  if (lease->valid()) return 0;
  if (!told_.exchange(true)) {
    const std::string why = lease->lost_reason();
    VSFS_LOG_ERROR("lost the datastore's lease ({}): every IO fails with EIO from now on",
                   why.empty() ? "it expired" : why);
  }
  return -EIO;
}

void FencedDevice::submit(std::span<device::IoRequest> requests) {
  // One check per batch: what reads and what changes get now.
  const int reads = refusal(device::OpKind::kRead);
  const int changes = refusal(device::OpKind::kWrite);
  if (reads == 0 && changes == 0) {
    base_->submit(requests);
    return;
  }
  // A refused request becomes a flush of the device below (it writes nothing) whose
  // completion reports the refusal, so that completions still come the usual way.
  for (auto& r : requests) {
    const bool read = r.kind == device::OpKind::kRead || r.kind == device::OpKind::kFlush;
    const int refused = read ? reads : changes;
    if (refused == 0) {
      base_->submit_one(std::move(r));
      continue;
    }
    fenced_.fetch_add(1);
    device::IoRequest f;
    f.kind = device::OpKind::kFlush;
    f.done = [done = std::move(r.done), refused](int64_t) {
      if (done) done(refused);
    };
    base_->submit_one(std::move(f));
  }
}

int64_t FencedDevice::execute_inline(const device::IoRequest& r) {
  if (const int refused = refusal(r.kind); refused != 0) {
    fenced_.fetch_add(1);
    return refused;
  }
  return base_->execute_inline(r);
}

device::DeviceCounters FencedDevice::counters() const {
  device::DeviceCounters c = base_->counters();
  c.errors += fenced_.load();
  return c;
}

}  // namespace vsfs::meta
