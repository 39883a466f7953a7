// UringChannel: see uring_channel.h.
//
// The kernel's side of the protocol (fs/fuse/dev_uring.c) in short: REGISTER takes an
// entry's two buffers and the queue it serves; it completes (result 0) when a request
// was written: the in header in the header buffer's first part, the operation's own
// header (fuse_read_in, ...) in its second, everything else in the payload buffer, and
// the payload size and the commit id in its third. COMMIT_AND_FETCH reads the out
// header from the first part and the reply's payload (its size in the third part) for
// the request named by the commit id, then waits for the next request like REGISTER.
// The layout constants below are the kernel's (include/uapi/linux/fuse.h, 7.42); this
// system's header predates them.
#include "fuse/uring_channel.h"

#include <linux/fuse.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "util/assert.h"
#include "util/log.h"

namespace vsfs::fuse {
namespace {

constexpr uint32_t kCmdRegister = 1;               // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;         // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
constexpr size_t kHeaderPage = 4096;               // header buffer + room to lay out
constexpr int kMaxRetries = 64;                    // EAGAIN/EINTR resubmissions in a row

struct RingEntInOut {  // struct fuse_uring_ent_in_out
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};

struct RingHeader {  // struct fuse_uring_req_header
  char in_out[128];  // fuse_in_header, then fuse_out_header
  char op_in[128];   // the operation's own header
  RingEntInOut ent;
};
static_assert(sizeof(RingHeader) == 288);

struct RingCmdReq {  // struct fuse_uring_cmd_req, the command's argument block
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};

// Room left in the header page for the laid-out in header and operation header.
static_assert(sizeof(RingHeader) + sizeof(fuse_in_header) + sizeof(RingHeader::op_in) <=
              kHeaderPage);

thread_local std::span<uint8_t> tl_payload;  // see current_payload()

bool is_retry(int64_t result) { return result == -EAGAIN || result == -EINTR; }

bool is_disconnect(int64_t result) {
  return result == -ENOTCONN || result == -ECONNABORTED || result == -ECANCELED ||
         result == -ENODEV;
}

}  // namespace

Result<std::shared_ptr<UringChannel>> UringChannel::create(device::Device& dev, int fuse_fd,
                                                           const UringChannelOptions& options,
                                                           Dispatch dispatch) {
  VSFS_ASSERT(dev.supports_commands() && options.queues > 0 && options.depth > 0);
  std::shared_ptr<UringChannel> c(new UringChannel(dev, fuse_fd, options, std::move(dispatch)));
  const size_t count = static_cast<size_t>(options.queues) * options.depth;
  void* map = ::mmap(nullptr, count * c->entry_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED) {
    return make_error(errno, ErrorKind::kNoSpace,
                      "cannot map {} FUSE ring entries of {} KiB: {}", count,
                      c->entry_bytes_ / 1024, std::strerror(errno));
  }
  c->map_ = static_cast<uint8_t*>(map);
  c->entries_.resize(count);
  for (size_t i = 0; i < count; ++i) {
    Entry& e = c->entries_[i];
    e.qid = static_cast<uint16_t>(i / options.depth);
    e.mem = c->map_ + i * c->entry_bytes_;
    e.iov[0] = {e.mem, sizeof(RingHeader)};
    e.iov[1] = {e.mem + kHeaderPage, options.payload_bytes};
  }
  return c;
}

UringChannel::UringChannel(device::Device& dev, int fuse_fd, const UringChannelOptions& options,
                           Dispatch dispatch)
    : dev_(dev),
      fd_(fuse_fd),
      options_(options),
      entry_bytes_(kHeaderPage + ((options.payload_bytes + kHeaderPage - 1) & ~(kHeaderPage - 1))),
      dispatch_(std::move(dispatch)) {}

UringChannel::~UringChannel() {
  if (map_ != nullptr) ::munmap(map_, entries_.size() * entry_bytes_);
}

void UringChannel::start() {
  std::lock_guard lk(mu_);
  if (!dispatch_) return;
  for (uint32_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].state == EntryState::kIdle) submit(i, kCmdRegister);
  }
  VSFS_LOG_INFO("FUSE over io_uring: lending {} entries ({} per CPU queue)", entries_.size(),
                options_.depth);
}

// Under mu_.
void UringChannel::submit(uint32_t index, uint32_t op, int retries) {
  Entry& e = entries_[index];
  e.state = EntryState::kWaiting;
  device::DriverCommand c;
  c.fd = fd_;
  c.op = op;
  RingCmdReq req{};
  req.commit_id = op == kCmdCommitAndFetch ? e.commit_id : 0;
  req.qid = e.qid;
  std::memcpy(c.arg.data(), &req, sizeof(req));
  c.iov = e.iov;
  c.iovcnt = 2;
  c.done = [self = shared_from_this(), index, op, retries](int64_t result) {
    if (is_retry(result) && retries < kMaxRetries) {
      std::lock_guard lk(self->mu_);
      if (self->dispatch_) {
        self->submit(index, op, retries + 1);
        return;
      }
    }
    self->on_command_done(index, result);
  };
  dev_.submit_command(std::move(c));
}

char* UringChannel::lay_out_request(Entry& e, const fuse_in_header& in) {
  const auto* h = reinterpret_cast<const RingHeader*>(e.mem);
  const uint64_t payload = h->ent.payload_sz;
  e.commit_id = h->ent.commit_id;
  if (payload > options_.payload_bytes || in.len < sizeof(in) + payload ||
      in.len - sizeof(in) - payload > sizeof(h->op_in)) {
    VSFS_LOG_ERROR("FUSE ring: malformed request (opcode {}, length {}, payload {})",
                   in.opcode, in.len, payload);
    return nullptr;
  }
  const size_t op_bytes = in.len - sizeof(in) - payload;
  char* start = reinterpret_cast<char*>(e.mem) + kHeaderPage - sizeof(in) - op_bytes;
  std::memcpy(start, &in, sizeof(in));
  std::memcpy(start + sizeof(in), h->op_in, op_bytes);
  return start;
}

void UringChannel::on_command_done(uint32_t index, int64_t result) {
  std::unique_lock lk(mu_);
  Entry& e = entries_[index];
  if (!dispatch_ || result < 0) {
    if (result < 0 && !is_disconnect(result)) {
      if (requests_ == 0 && !refused_logged_) {
        refused_logged_ = true;
        VSFS_LOG_WARN("FUSE over io_uring refused by the kernel ({}); requests stay on /dev/fuse",
                      std::strerror(static_cast<int>(-result)));
      } else if (requests_ > 0) {
        VSFS_LOG_ERROR("FUSE ring entry {} failed: {}", index,
                       std::strerror(static_cast<int>(-result)));
      }
    }
    e.state = EntryState::kGone;
    return;
  }
  e.state = EntryState::kServing;
  ++requests_;
  fuse_in_header in;
  std::memcpy(&in, reinterpret_cast<const RingHeader*>(e.mem)->in_out, sizeof(in));
  char* request = lay_out_request(e, in);
  if (request == nullptr) {
    lk.unlock();
    answer_error(index, in.unique, EIO);
    return;
  }
  serving_.emplace(in.unique, index);
  dispatching_ = true;
  Dispatch* dispatch = &dispatch_;  // stop() waits for !dispatching_ before clearing it
  lk.unlock();
  tl_payload = {e.mem + kHeaderPage, options_.payload_bytes};
  (*dispatch)(request, in.len);
  tl_payload = {};
  lk.lock();
  dispatching_ = false;
  dispatch_cv_.notify_all();
}

void UringChannel::answer_error(uint32_t index, uint64_t unique, int error) {
  fuse_out_header out{sizeof(fuse_out_header), -error, unique};
  std::lock_guard lk(mu_);
  Entry& e = entries_[index];
  auto* h = reinterpret_cast<RingHeader*>(e.mem);
  std::memcpy(h->in_out, &out, sizeof(out));
  h->ent.payload_sz = 0;
  submit(index, kCmdCommitAndFetch);
}

bool UringChannel::reply(const iovec* iov, int count) {
  fuse_out_header out;
  if (count < 1 || iov[0].iov_len < sizeof(out)) return false;
  std::memcpy(&out, iov[0].iov_base, sizeof(out));
  uint32_t index;
  uint8_t* mem;
  {
    std::lock_guard lk(mu_);
    auto it = serving_.find(out.unique);
    if (it == serving_.end()) return false;
    index = it->second;
    serving_.erase(it);
    mem = entries_[index].mem;  // the entry stays ours until the commit is submitted
  }
  size_t payload = 0;
  for (int i = 1; i < count; ++i) payload += iov[i].iov_len;
  auto* h = reinterpret_cast<RingHeader*>(mem);
  if (payload > options_.payload_bytes) {
    VSFS_LOG_ERROR("FUSE ring: a reply of {} bytes exceeds the entry's {}", payload,
                   options_.payload_bytes);
    out.error = -EIO;
    payload = 0;
  } else {
    uint8_t* to = mem + kHeaderPage;
    for (int i = 1; i < count; ++i) {
      if (iov[i].iov_base != to) std::memcpy(to, iov[i].iov_base, iov[i].iov_len);
      to += iov[i].iov_len;
    }
  }
  out.len = static_cast<uint32_t>(sizeof(out) + payload);
  std::memcpy(h->in_out, &out, sizeof(out));
  h->ent.payload_sz = static_cast<uint32_t>(payload);
  std::lock_guard lk(mu_);
  submit(index, kCmdCommitAndFetch);
  return true;
}

void UringChannel::stop() {
  VSFS_ASSERT(!dev_.in_completion_context());
  std::unique_lock lk(mu_);
  dispatch_cv_.wait(lk, [this] { return !dispatching_; });
  dispatch_ = nullptr;
}

std::span<uint8_t> UringChannel::current_payload() { return tl_payload; }

UringChannelCounters UringChannel::counters() const {
  std::lock_guard lk(mu_);
  uint64_t lent = 0;
  for (const Entry& e : entries_) {
    lent += e.state == EntryState::kWaiting || e.state == EntryState::kServing ? 1 : 0;
  }
  return {requests_ > 0, lent, requests_};
}

}  // namespace vsfs::fuse
