// Device helpers shared by every backend: op names and the blocking *_sync calls.
//
// The sync helpers submit one request and wait on a future for its completion; on a
// device's completion thread (where that completion could never be delivered) they run
// the IO inline instead.
#include "device/device.h"

#include <algorithm>

#include <cstring>
#include <future>

namespace vsfs::device {

const char* op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kRead: return "read";
    case OpKind::kWrite: return "write";
    case OpKind::kFlush: return "flush";
    case OpKind::kDiscard: return "discard";
    case OpKind::kWriteZeroes: return "write-zeroes";
    case OpKind::kAllocate: return "allocate";
  }
  return "unknown";
}

namespace {

ErrorKind kind_of_errno(int errno_value) {
  switch (errno_value) {
    case EINVAL: return ErrorKind::kInvalidArgument;
    case ENOSPC: return ErrorKind::kNoSpace;
    case EOPNOTSUPP: return ErrorKind::kUnsupported;
    default: return ErrorKind::kIo;
  }
}

// One IO of one buffer, run to its end: submitted and waited for, or executed inline
// (`now`, or on the completion thread, where its completion could never be delivered).
int64_t run_one(Device& dev, OpKind kind, uint64_t offset_bytes, void* buf,
                uint64_t length_bytes, bool now, bool durable = false) {
  iovec iov{buf, static_cast<size_t>(length_bytes)};
  IoRequest request;
  request.kind = kind;
  request.offset_bytes = offset_bytes;
  request.length_bytes = length_bytes;
  if (kind == OpKind::kRead || kind == OpKind::kWrite) {
    request.iov = &iov;
    request.iovcnt = 1;
  }
  request.durable = durable;
  if (now || dev.in_completion_context()) return dev.execute_inline(request);
  auto promise = std::make_shared<std::promise<int64_t>>();
  std::future<int64_t> future = promise->get_future();
  request.done = [promise](int64_t result) { promise->set_value(result); };
  dev.submit_one(std::move(request));
  return future.get();
}

Result<void> run_sync(Device& dev, OpKind kind, uint64_t offset_bytes, void* buf,
                      uint64_t length_bytes, bool now = false, bool durable = false) {
  const int64_t result = run_one(dev, kind, offset_bytes, buf, length_bytes, now, durable);
  if (result < 0) {
    int err = static_cast<int>(-result);
    return make_error(err, kind_of_errno(err), "{}: {} of {} bytes at offset {} failed: {}",
                      dev.describe(), op_kind_name(kind), length_bytes, offset_bytes,
                      std::strerror(err));
  }
  uint64_t expected = kind == OpKind::kFlush ? 0 : length_bytes;
  if (static_cast<uint64_t>(result) != expected) {
    return make_error(EIO, ErrorKind::kIo, "{}: {} of {} bytes at offset {} returned {}",
                      dev.describe(), op_kind_name(kind), length_bytes, offset_bytes, result);
  }
  return ok_result();
}

}  // namespace

int64_t run_io(Device& dev, OpKind kind, uint64_t offset_bytes, void* buf,
               uint64_t length_bytes) {
  return run_one(dev, kind, offset_bytes, buf, length_bytes, /*now=*/false);
}

Result<void> read_sync(Device& dev, uint64_t offset_bytes, void* buf, uint64_t length_bytes) {
  return run_sync(dev, OpKind::kRead, offset_bytes, buf, length_bytes);
}

Result<void> read_now(Device& dev, uint64_t offset_bytes, void* buf, uint64_t length_bytes) {
  return run_sync(dev, OpKind::kRead, offset_bytes, buf, length_bytes, /*now=*/true);
}

Result<void> write_sync(Device& dev, uint64_t offset_bytes, const void* buf,
                        uint64_t length_bytes) {
  // The device only reads from a write's buffer; iovec has no const variant.
  return run_sync(dev, OpKind::kWrite, offset_bytes, const_cast<void*>(buf), length_bytes);
}

Result<void> write_durable_sync(Device& dev, uint64_t offset_bytes, const void* buf,
                                uint64_t length_bytes) {
  return run_sync(dev, OpKind::kWrite, offset_bytes, const_cast<void*>(buf), length_bytes,
                  /*now=*/false, /*durable=*/true);
}

Result<void> flush_sync(Device& dev) {
  return run_sync(dev, OpKind::kFlush, 0, nullptr, 0);
}

Result<void> discard_sync(Device& dev, uint64_t offset_bytes, uint64_t length_bytes) {
  return run_sync(dev, OpKind::kDiscard, offset_bytes, nullptr, length_bytes);
}

Result<void> write_zeroes_sync(Device& dev, uint64_t offset_bytes, uint64_t length_bytes) {
  return run_sync(dev, OpKind::kWriteZeroes, offset_bytes, nullptr, length_bytes);
}

Result<void> zero_range(Device& dev, uint64_t offset_bytes, uint64_t length_bytes, bool discard,
                        const std::function<void(uint64_t done)>& progress) {
  constexpr uint64_t kChunk = 1ull << 30;
  for (uint64_t done = 0; done < length_bytes;) {
    const uint64_t n = std::min(kChunk, length_bytes - done);
    VSFS_TRY(discard ? discard_sync(dev, offset_bytes + done, n)
                     : write_zeroes_sync(dev, offset_bytes + done, n));
    done += n;
    if (progress) progress(done);
  }
  return ok_result();
}

Result<void> allocate_now(Device& dev, uint64_t offset_bytes, uint64_t length_bytes) {
  return run_sync(dev, OpKind::kAllocate, offset_bytes, nullptr, length_bytes, /*now=*/true);
}

}  // namespace vsfs::device
